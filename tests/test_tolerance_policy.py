"""The tolerance policy's own invariants, over every row of `devices.tolerance.POLICY`.

Lower precision is never stricter, a comparison across devices is never stricter than the same
comparison on one device, the lookup and the measured difference are symmetric in their
arguments, every row says why (with a figure), and every fp32 row fails a 1e-3 defect.
"""

import ast
import re
from itertools import combinations
from pathlib import Path

import numpy as np
import pytest
import torch
from hypothesis import given, strategies as st
from hypothesis.extra.numpy import array_shapes, arrays

from devices import tolerance as policy
from devices.discovery import ACCELERATOR_KINDS
from devices.tolerance import EXACT, POLICY, PROPERTY_KINDS, Tolerance, assert_outputs_close, difference, tolerance

# Highest precision first; quantized int8 is the lowest.
PRECISION_ORDER = ["float64", "float32", "float16", "bfloat16", "qint8"]
DEVICE_PAIRS = {"*", "cpu", "cpu/*", "cpu:1/cpu:N", "split", *ACCELERATOR_KINDS,
                *(f"cpu/{kind}" for kind in ACCELERATOR_KINDS)}
MAGNITUDES = [0.0, 1e-3, 1.0, 10.0, 1e4]
ROWS = sorted(POLICY.items())


def allowed(tol: Tolerance, magnitude: float) -> float:
    """The largest difference `tol` accepts for a reference element of `magnitude` (also the output's max)."""
    reference = torch.tensor([magnitude], dtype=torch.float64)
    rtol, atol = tol.for_reference(reference)
    return atol + rtol * magnitude


def row_id(key) -> str:
    return "-".join(key)


@pytest.mark.parametrize("key, tol", ROWS, ids=[row_id(k) for k, _ in ROWS])
def test_every_row_is_well_formed_and_says_why_with_a_figure(key, tol):
    dtype, pair, kind = key
    assert dtype in PRECISION_ORDER, f"{key}: unknown dtype"
    assert kind in PROPERTY_KINDS, f"{key}: unknown property kind"
    assert pair in DEVICE_PAIRS, f"{key}: device pair not one of {sorted(DEVICE_PAIRS)}"
    assert tol.rtol >= 0 and tol.atol >= 0
    assert len(tol.why.split()) >= 5, f"{key}: a justification is a sentence, got {tol.why!r}"
    if tol.rtol or tol.atol:
        assert re.search(r"\d(\.\d+)?e-\d+|\d+(\.\d+)?\s*%|\d\.\d", tol.why), f"{key}: no figure in {tol.why!r}"


@pytest.mark.parametrize("dtype", PRECISION_ORDER[:4])
def test_exact_means_bit_identical(dtype):
    assert (tolerance(dtype, "exact").rtol, tolerance(dtype, "exact").atol) == (0.0, 0.0)


def _same_pair_and_kind():
    groups: dict[tuple[str, str], dict[str, Tolerance]] = {}
    for (dtype, pair, kind), tol in POLICY.items():
        if pair.startswith("cpu/") and kind in ("device", "precision"):
            kind = "device or precision"  # an accelerator's half run vs the CPU includes its fp32 device error
        groups.setdefault((pair, kind), {})[dtype] = tol
    for (pair, kind), by_dtype in sorted(groups.items()):
        ranked = sorted(by_dtype, key=PRECISION_ORDER.index)
        for higher, lower in combinations(ranked, 2):
            yield pytest.param(by_dtype[higher], by_dtype[lower], id=f"{pair}-{kind}-{lower}-vs-{higher}")


@pytest.mark.parametrize("higher, lower", list(_same_pair_and_kind()))
def test_lower_precision_is_never_stricter(higher, lower):
    for magnitude in MAGNITUDES:
        assert allowed(lower, magnitude) >= allowed(higher, magnitude), (
            f"at |ref|={magnitude}: {lower} accepts less than {higher}"
        )


def _across_devices():
    for (dtype, pair, kind), tol in sorted(POLICY.items()):
        # two devices (or thread counts) reorder the same math at least as much as one device does
        same_math = "reordered" if kind == "device" else kind
        if pair != "cpu" and pair != "*" and (dtype, "cpu", same_math) in POLICY:
            yield pytest.param(POLICY[(dtype, "cpu", same_math)], tol, id=f"{dtype}-{kind}-{pair}")


@pytest.mark.parametrize("one_device, two_devices", list(_across_devices()))
def test_across_devices_is_never_stricter_than_on_one(one_device, two_devices):
    for magnitude in MAGNITUDES:
        assert allowed(two_devices, magnitude) >= allowed(one_device, magnitude)


@pytest.mark.parametrize("key", [k for k in POLICY if "/" in k[1] and "*" not in k[1]], ids=row_id)
def test_lookup_is_symmetric_in_the_device_pair(key):
    dtype, pair, kind = key
    first, second = pair.split("/")
    assert tolerance(dtype, kind, f"{second}/{first}") is tolerance(dtype, kind, pair) is POLICY[key]


@pytest.mark.parametrize("kind", ACCELERATOR_KINDS)
def test_every_accelerator_has_fp32_and_half_rows_in_either_order(kind):
    for dtype, prop in [("float32", "device"), ("float16", "precision"), ("bfloat16", "precision")]:
        assert tolerance(dtype, prop, f"cpu/{kind}") is tolerance(dtype, prop, f"{kind}/cpu")


@pytest.mark.parametrize(
    "key", [k for k, t in POLICY.items() if k[0] == "float32" and (t.rtol or t.atol)], ids=row_id
)
def test_every_fp32_row_fails_a_1e_3_defect(key):
    reference = {"out": torch.linspace(-1.0, 1.0, 64)}
    defective = {"out": reference["out"] + 1e-3}
    with pytest.raises(AssertionError, match=r"\[m\] p: output 'out' differs beyond"):
        assert_outputs_close(defective, reference, POLICY[key], model="m", prop="p")


def test_unknown_rows_are_named_in_the_error():
    with pytest.raises(KeyError, match="unknown property kind 'fuzzy'"):
        tolerance("float32", "fuzzy")
    with pytest.raises(KeyError, match="no tolerance for dtype=int64, devices=cpu, property=reordered"):
        tolerance(torch.int64, "reordered")


def test_no_row_is_written_twice():
    """A dict literal silently keeps the last of two equal keys: parallel edits must not collide."""
    tree = ast.parse(Path(policy.__file__).read_text())
    (table,) = [
        node.value for node in ast.walk(tree)
        if isinstance(node, ast.AnnAssign) and getattr(node.target, "id", None) == "POLICY"
    ]
    keys = [ast.literal_eval(key) for key in table.keys]
    assert len(keys) == len(set(keys)), [k for k in keys if keys.count(k) > 1]


# -- the comparison --------------------------------------------------------------------------------
pairs_of_arrays = array_shapes(min_dims=1, max_dims=3, max_side=5).flatmap(
    lambda shape: st.tuples(
        *[arrays(np.float32, shape, elements=st.floats(-1e3, 1e3, width=32)) for _ in range(2)]
    )
)
SOME_TOLERANCES = st.sampled_from([EXACT, *POLICY.values()])


@given(pairs_of_arrays, SOME_TOLERANCES)
def test_difference_is_symmetric_and_reports_the_worst_element(arrays_, tol):
    a, b = (torch.from_numpy(x) for x in arrays_)
    forward, backward = difference(a, b, tol), difference(b, a, tol)
    assert forward.max_abs == backward.max_abs and forward.where == backward.where
    gap = (a.double() - b.double()).abs()
    assert forward.max_abs == float(gap.max()) == float(gap[forward.where])


@given(pairs_of_arrays, SOME_TOLERANCES)
def test_difference_counts_the_elements_assert_close_rejects(arrays_, tol):
    actual, expected = (torch.from_numpy(x).double() for x in arrays_)
    rtol, atol = tol.for_reference(expected)
    found = difference(actual, expected, tol)
    rejected = ~torch.isclose(actual, expected, rtol=rtol, atol=atol)
    assert found.mismatched == pytest.approx(float(rejected.double().mean()))
    if found.mismatched == 0:
        torch.testing.assert_close(actual, expected, rtol=rtol, atol=atol)
    else:
        with pytest.raises(AssertionError):
            torch.testing.assert_close(actual, expected, rtol=rtol, atol=atol)


@given(st.floats(1.0, 1e4))
def test_scaled_atol_grows_with_the_reference_magnitude(magnitude):
    tol = Tolerance(0.0, 1e-2, "a scaled row for this test, 1e-2 x max|ref|", scale_atol=True)
    assert allowed(tol, magnitude) == pytest.approx(1e-2 * magnitude)
    assert allowed(tol, 0.5) == pytest.approx(1e-2)  # never below the unscaled atol


def test_nan_on_both_sides_is_named_not_only_an_infinite_difference():
    nan = torch.tensor([[float("nan"), 1.0]])
    with pytest.raises(AssertionError, match=r"non-finite values: actual 1 of 2 non-finite \(NaN 1, Inf 0\).*; "
                                             r"expected 1 of 2 non-finite"):
        assert_outputs_close({"x": nan}, {"x": nan.clone()}, tolerance(torch.float32, "reordered"), model="m", prop="p")
    with pytest.raises(AssertionError) as caught:
        assert_outputs_close({"x": torch.ones(2)}, {"x": torch.zeros(2)}, EXACT, model="m", prop="p")
    assert "non-finite" not in str(caught.value)
