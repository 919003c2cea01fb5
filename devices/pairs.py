"""The comparisons the cross-device property makes: a reference run against a candidate run.

A `Side` says where and how a forward runs (device, dtype, thread count, deterministic mode); a
`Pair` puts a candidate side against a reference side and names the policy row that judges it.
Every machine has the CPU reference pairs (fp32 against the float64 oracle, one thread against
several), so CPU-only CI runs the same code path that judges an accelerator against the CPU.
Devices are named by torch strings ("cuda:0"); `devices.discovery` says which exist.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Mapping

import torch

from devices.discovery import Device
from devices.placement import copy_on, deterministic_algorithms, full_fp32, num_threads
from devices.tolerance import Tolerance, tolerance

_SHORT = {torch.float64: "fp64", torch.float32: "fp32", torch.float16: "fp16", torch.bfloat16: "bf16"}


def several_threads() -> int:
    """The 'several' of one-vs-several threads: every core, at least 2 (so it differs from 1), at most 8."""
    return max(2, min(8, os.cpu_count() or 2))


@dataclass(frozen=True)
class Side:
    device: str = "cpu"
    dtype: torch.dtype = torch.float32
    threads: int | None = None  # None: whatever the process uses
    deterministic: bool = False

    def __str__(self) -> str:
        text = f"{self.device} {_SHORT.get(self.dtype, self.dtype)}"
        if self.threads is not None:
            text += f" {self.threads} thread" + ("s" if self.threads > 1 else "")
        return text + (" deterministic" if self.deterministic else "")


@dataclass(frozen=True)
class Pair:
    id: str  # the test id: "cpu-fp32-vs-fp64", "cuda:0-fp16"
    reference: Side
    candidate: Side
    kind: str  # the policy's property kind
    device_pair: str  # the policy's device pair
    device_kinds: tuple[str, ...] = ()  # accelerator kinds involved (become pytest marks)

    @property
    def tolerance(self) -> Tolerance:
        return tolerance(self.candidate.dtype, self.kind, self.device_pair)

    def __str__(self) -> str:
        return f"{self.candidate} vs {self.reference}"


def reference_pairs() -> list[Pair]:
    """The pair every machine has at full rate: CPU fp32 against the float64 oracle."""
    return [Pair("cpu-fp32-vs-fp64", Side(dtype=torch.float64), Side(), "precision", "cpu")]


def threads_pair() -> Pair:
    """CPU with one intra-op thread against several (costly on a busy machine: run fewer examples)."""
    return Pair("cpu-1-vs-n-threads", Side(threads=1), Side(threads=several_threads()), "device", "cpu:1/cpu:N")


def accelerator_pairs(device: Device) -> list[Pair]:
    """An accelerator against the CPU fp32 reference: fp32, then each half type it runs natively.

    CUDA and ROCm also run twice under `torch.use_deterministic_algorithms(True)` and must agree
    bit for bit.
    """
    cpu = Side()
    marks = (device.kind,)
    pairs = [Pair(f"{device.name}-fp32", cpu, Side(device.name), "device", f"cpu/{device.kind}", marks)]
    pairs += [
        Pair(f"{device.name}-{_SHORT[half]}", cpu, Side(device.name, half), "precision", f"cpu/{device.kind}", marks)
        for half in device.half_dtypes
    ]
    if device.kind in ("cuda", "rocm"):
        strict = Side(device.name, deterministic=True)
        pairs.append(Pair(f"{device.name}-deterministic", strict, strict, "exact", device.kind, marks))
    return pairs


def comparison_pairs(devices: list[Device]) -> list[Pair]:
    """Every pair for the selected devices (the CPU reference pairs when the CPU is selected)."""
    pairs = reference_pairs() if any(d.kind == "cpu" for d in devices) else []
    for device in devices:
        if device.is_accelerator:
            pairs += accelerator_pairs(device)
    return pairs


def run_side(subject, inputs: Mapping, side: Side) -> dict[str, torch.Tensor]:
    """The subject's outputs run as `side` says (on a cached converted copy), on the CPU in float64."""
    return outputs_on_cpu(copy_on(subject, side.device, side.dtype), inputs, side)


def outputs_on_cpu(runner, inputs: Mapping, side: Side = Side()) -> dict[str, torch.Tensor]:
    """`runner.forward` (hidden states included) under `side`'s settings, moved to the CPU in float64.

    fp32 runs without TF32; float64 holds every lower-precision value exactly, so the two sides
    compare without a cast on either one changing the verdict.
    """
    with num_threads(side.threads), deterministic_algorithms(side.deterministic), full_fp32():
        outputs = runner.forward(inputs, hidden_states=True)
    return {
        name: t.detach().to("cpu", torch.float64 if t.is_floating_point() else None) for name, t in outputs.items()
    }
