"""The one tolerance policy: `(dtype, device pair, property kind) -> (rtol, atol)`, and the comparison.

Only this module decides what "close enough" means. The verdict comes from
`torch.testing.assert_close`; this module adds the policy lookup, scaling by output magnitude
where a fixed atol is wrong, and a failure message that names the model, the property, the
output, the tolerance and the observed max abs / rel difference and where.

Property kinds:
- ``exact``: the same computation twice (determinism, save/load): bit-identical, no tolerance.
- ``reordered``: the same math with a different reduction order or shape (batched vs alone,
  padded vs not, cached vs full, eager vs sdpa, 1 vs N threads).
- ``precision``: a lower-precision run against a higher-precision reference of the same weights.
- ``quantized``: dynamic int8 against fp32.
- ``device``: the same dtype on two devices.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Mapping

import torch

PROPERTY_KINDS = ("exact", "reordered", "precision", "quantized", "device")


@dataclass(frozen=True)
class Tolerance:
    rtol: float
    atol: float
    why: str
    # atol is multiplied by max(1, max |reference|): error in low precision grows with magnitude
    scale_atol: bool = False

    def for_reference(self, reference: torch.Tensor) -> tuple[float, float]:
        atol = self.atol
        if self.scale_atol and reference.numel():
            atol *= max(1.0, float(reference.detach().abs().max().double()))
        return self.rtol, atol

    def __str__(self) -> str:
        scaled = " x max(1, max|ref|)" if self.scale_atol else ""
        return f"rtol={self.rtol:g}, atol={self.atol:g}{scaled}"


EXACT = Tolerance(0.0, 0.0, "the same computation on the same device must be bit-identical")

# (dtype, device pair, property kind) -> Tolerance. A device pair is "cpu" (both sides on the CPU)
# or "cpu/<accelerator kind>"; "*" matches any pair. Lookup tries the exact pair first.
POLICY: dict[tuple[str, str, str], Tolerance] = {
    ("float32", "*", "exact"): EXACT,
    ("float64", "*", "exact"): EXACT,
    ("float16", "*", "exact"): EXACT,
    ("bfloat16", "*", "exact"): EXACT,
    ("float32", "cpu", "reordered"): Tolerance(
        1e-5, 1e-5,
        "measured clean: batched vs alone, cached vs full, eager vs sdpa differ by 1e-7..1e-6 on the tiny "
        "fp32 models; 1e-5 leaves 10x headroom and still fails a 1e-4 defect",
    ),
    ("float64", "cpu", "reordered"): Tolerance(1e-10, 1e-10, "float64 reorderings differ by ~1e-15"),
}


def tolerance(dtype: torch.dtype | str, property_kind: str, device_pair: str = "cpu") -> Tolerance:
    """The policy's tolerance for comparing outputs of `dtype` under `property_kind` on `device_pair`."""
    name = str(dtype).removeprefix("torch.")
    if property_kind not in PROPERTY_KINDS:
        raise KeyError(f"unknown property kind {property_kind!r}; expected one of {PROPERTY_KINDS}")
    for pair in (device_pair, "*"):
        if (name, pair, property_kind) in POLICY:
            return POLICY[(name, pair, property_kind)]
    raise KeyError(f"no tolerance for dtype={name}, devices={device_pair}, property={property_kind}")


@dataclass(frozen=True)
class Difference:
    """How far `actual` is from `expected`: max abs / rel difference, worst position, share out of tolerance."""

    max_abs: float
    max_rel: float
    where: tuple[int, ...]
    mismatched: float  # fraction of elements outside the tolerance
    rtol: float
    atol: float

    def __str__(self) -> str:
        return (
            f"max abs diff {self.max_abs:.3g} at {self.where}, max rel diff {self.max_rel:.3g}, "
            f"{self.mismatched:.1%} of elements outside rtol={self.rtol:g}, atol={self.atol:g}"
        )


def difference(actual: torch.Tensor, expected: torch.Tensor, tol: Tolerance = EXACT) -> Difference:
    """Measure the difference of two same-shaped tensors (compared in float64 on the CPU)."""
    rtol, atol = tol.for_reference(expected)
    a = actual.detach().to("cpu", torch.float64)
    e = expected.detach().to("cpu", torch.float64)
    if a.numel() == 0:
        return Difference(0.0, 0.0, (), 0.0, rtol, atol)
    abs_diff = (a - e).abs().nan_to_num(nan=float("inf"))
    rel_diff = abs_diff / e.abs().clamp_min(torch.finfo(torch.float64).tiny)
    flat = int(abs_diff.argmax())
    where = tuple(int(i) for i in torch.unravel_index(torch.tensor(flat), a.shape))
    outside = abs_diff > atol + rtol * e.abs()
    return Difference(
        float(abs_diff.max()), float(rel_diff.max()), where, float(outside.double().mean()), rtol, atol
    )


def assert_outputs_close(
    actual: Mapping[str, torch.Tensor],
    expected: Mapping[str, torch.Tensor],
    tol: Tolerance,
    *,
    model: str,
    prop: str,
    masks: Mapping[str, torch.Tensor] | None = None,
) -> None:
    """Fail unless every output in `expected` is present in `actual` and close within `tol`.

    `masks` optionally restricts an output to the positions where its boolean mask is true
    (for example the unmasked tokens of a padded batch).
    """
    missing = sorted(set(expected) - set(actual))
    if missing:
        raise AssertionError(f"[{model}] {prop}: outputs missing on one side: {missing}")
    for name, ref in expected.items():
        got = actual[name]
        if masks is not None and name in masks:
            got, ref = got[masks[name]], ref[masks[name]]
        if got.shape != ref.shape:
            raise AssertionError(
                f"[{model}] {prop}: output {name!r} has shape {tuple(got.shape)}, expected {tuple(ref.shape)}"
            )
        rtol, atol = tol.for_reference(ref)
        header = f"[{model}] {prop}: output {name!r} differs beyond {tol}"

        def message(detail: str, header=header, got=got, ref=ref) -> str:
            return f"{header}\n{difference(got, ref, tol)}\n({tol.why})\n{detail}"

        torch.testing.assert_close(got, ref, rtol=rtol, atol=atol, equal_nan=False, check_device=False, msg=message)
