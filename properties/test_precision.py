"""Precision: lower precisions of the same weights agree with a higher-precision run.

fp32 agrees with a float64 run within a bound that scales with the output's magnitude; bf16 and
fp16 copies stay finite and agree with fp32 within the policy; dynamic int8 quantization
(`torch.ao.quantization.quantize_dynamic`) agrees within its own, looser bound. Only real
(unpadded) token positions are compared. The bounds are rows of `devices.tolerance.POLICY`.
"""

import copy
import warnings

import pytest
import torch
from hypothesis import given, strategies as st

from devices.tolerance import assert_outputs_close, nonfinite_outputs, tolerance
from properties.artifacts import compared, pair, record, side
from strategies.batches import model_inputs
from zoo.derived import derived

PROPERTY = "precision"
HALF_DTYPES = (torch.bfloat16, torch.float16)


def converted_copy(subject, dtype: torch.dtype):
    """The subject cast to `dtype` (a deep copy, made once per model)."""
    return derived(subject, f"dtype={dtype}", lambda s: s.converted(dtype=dtype))


def quantized_copy(subject):
    """The subject with every `nn.Linear` dynamically quantized to int8 (a deep copy, made once per model)."""

    def quantize(original):
        with warnings.catch_warnings():  # torch 2.13 deprecates torch.ao.quantization in favour of torchao
            warnings.simplefilter("ignore", DeprecationWarning)
            warnings.filterwarnings("ignore", message=".*quantized tensor creation functions", category=UserWarning)
            model = torch.ao.quantization.quantize_dynamic(
                copy.deepcopy(original.model), {torch.nn.Linear}, dtype=torch.qint8
            )
        return original.with_model(model)

    return derived(subject, "quantized=qint8", quantize)


def _compare(subject, lower, reference, inputs, tol, what: str) -> None:
    """`lower`'s outputs (finite, cast up) against `reference`'s on real token positions within `tol`."""
    expected = reference.forward(inputs, hidden_states=True)
    actual = lower.forward(inputs, hidden_states=True)
    problems = nonfinite_outputs(actual)
    assert not problems, f"[{subject.name}] {PROPERTY} ({what}): " + "; ".join(problems)
    actual = {name: t.to(expected[name].dtype) if t.is_floating_point() else t for name, t in actual.items()}
    assert_outputs_close(
        actual, expected, tol, model=subject.name, prop=f"{PROPERTY} ({what})",
        masks=reference.real_token_masks(expected, inputs),
    )


def check_float64_reference(subject, inputs) -> None:
    """The subject's outputs agree with a float64 copy of the same weights within the precision bound."""
    reference = converted_copy(subject, torch.float64)
    _compare(subject, subject, reference, inputs, tolerance(subject.dtype, "precision"), f"{subject.dtype} vs float64")


def check_half_precision(subject, inputs, dtype: torch.dtype) -> None:
    """A copy cast to `dtype` (bf16, fp16) gives finite outputs that agree with the subject within the policy."""
    half = converted_copy(subject, dtype)
    _compare(subject, half, subject, inputs, tolerance(dtype, "precision"), f"{dtype} vs {subject.dtype}")


def check_quantized(subject, inputs) -> None:
    """A dynamically int8-quantized copy gives finite outputs that agree with the subject within the quantized bound."""
    _compare(subject, quantized_copy(subject), subject, inputs, tolerance("qint8", "quantized"),
             f"dynamic int8 vs {subject.dtype}")


@given(data=st.data())
def test_float32_matches_float64(subject, data):
    inputs = data.draw(model_inputs(subject.spec), label="inputs")
    record(subject, inputs, prop=PROPERTY, dtype="float64", tolerance=str(tolerance(subject.dtype, "precision")),
           replay=lambda: compared(pair(side(), side(dtype="float64"), real_tokens="expected", finite=True,
                                        what=f"{subject.dtype} vs float64")))
    check_float64_reference(subject, inputs)


@pytest.mark.parametrize("dtype", HALF_DTYPES, ids=lambda d: str(d).removeprefix("torch."))
@given(data=st.data())
def test_half_precision(subject, dtype, data):
    inputs = data.draw(model_inputs(subject.spec), label="inputs")
    record(subject, inputs, prop=PROPERTY, dtype=str(dtype).removeprefix("torch."), replay=lambda: compared(pair(
               side(dtype=dtype), side(), real_tokens="expected", finite=True, what=f"{dtype} vs {subject.dtype}")),
           tolerance=str(tolerance(dtype, "precision")))
    check_half_precision(subject, inputs, dtype)


@given(data=st.data())
def test_int8_dynamic_quantization(subject, data):
    inputs = data.draw(model_inputs(subject.spec), label="inputs")
    record(subject, inputs, prop=PROPERTY, quantization="torch.ao.quantization.quantize_dynamic qint8 nn.Linear",
           replay=lambda: compared(pair(side(quantize="qint8"), side(), real_tokens="expected", finite=True,
                                        what=f"dynamic int8 vs {subject.dtype}")),
           tolerance=str(tolerance("qint8", "quantized")))
    check_quantized(subject, inputs)
