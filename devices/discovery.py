"""Which devices this machine has: the CPU and any CUDA, ROCm, MPS or XPU accelerators.

A `Device` carries what the suite needs to choose, mark and describe it: its torch name
(``cuda:0``), its kind (ROCm GPUs are ``cuda:N`` to torch but ``rocm`` here, detected through
``torch.version.hip``), a one-line description (name and compute capability) and the half
types it runs natively.
"""

from __future__ import annotations

import gc
from dataclasses import dataclass

import torch

KINDS = ("cpu", "cuda", "rocm", "mps", "xpu")
ACCELERATOR_KINDS = KINDS[1:]


@dataclass(frozen=True)
class Device:
    name: str  # what torch calls it: "cpu", "cuda:0", "mps", "xpu:0"
    kind: str  # one of KINDS; a ROCm GPU is "cuda:N" to torch and "rocm" here
    description: str
    half_dtypes: tuple[torch.dtype, ...] = ()

    @property
    def is_accelerator(self) -> bool:
        return self.kind != "cpu"

    def __str__(self) -> str:
        return f"{self.name} ({self.description})"


def _cuda_devices() -> list[Device]:
    if not torch.cuda.is_available():
        return []
    kind = "rocm" if torch.version.hip else "cuda"
    devices = []
    for index in range(torch.cuda.device_count()):
        props = torch.cuda.get_device_properties(index)
        if kind == "rocm":
            arch = getattr(props, "gcnArchName", "") or f"gfx capability {props.major}.{props.minor}"
            description = f"{props.name}, {arch}, HIP {torch.version.hip}"
        else:
            description = f"{props.name}, compute capability {props.major}.{props.minor}, CUDA {torch.version.cuda}"
        halves = (torch.float16, torch.bfloat16) if torch.cuda.is_bf16_supported() else (torch.float16,)
        devices.append(Device(f"cuda:{index}", kind, description, halves))
    return devices


def _mps_devices() -> list[Device]:
    mps = getattr(torch.backends, "mps", None)
    if mps is None or not mps.is_available():
        return []
    return [Device("mps", "mps", "Apple Metal Performance Shaders", (torch.float16,))]


def _xpu_devices() -> list[Device]:
    xpu = getattr(torch, "xpu", None)
    if xpu is None or not xpu.is_available():
        return []
    return [
        Device(f"xpu:{i}", "xpu", f"{xpu.get_device_name(i)}, Intel XPU", (torch.float16, torch.bfloat16))
        for i in range(xpu.device_count())
    ]


def available_devices() -> list[Device]:
    """Every device present, the CPU first."""
    cpu = Device("cpu", "cpu", f"torch threads: {torch.get_num_threads()}, torch {torch.__version__}")
    return [cpu, *_cuda_devices(), *_mps_devices(), *_xpu_devices()]


def absence_reason(kind: str) -> str:
    """Why no device of `kind` is present, in words a user can act on."""
    if kind in ("cuda", "rocm"):
        if not torch.cuda.is_available():
            build = "CPU-only build" if torch.version.cuda is None and torch.version.hip is None else "no GPU visible"
            return f"no {kind} device: torch.cuda.is_available() is False (torch {torch.__version__}, {build})"
        other = "cuda" if kind == "rocm" else "rocm"
        return f"no {kind} device: this torch build drives {other} GPUs (torch.version.hip={torch.version.hip!r})"
    if kind == "mps":
        return "no mps device: torch.backends.mps.is_available() is False (Apple silicon only)"
    if kind == "xpu":
        return "no xpu device: torch.xpu.is_available() is False"
    return f"no {kind} device"


class DeviceArgError(ValueError):
    """A `--device` value that names no device kind or index this suite knows."""


def parse_device_arg(arg: str) -> tuple[str, int | None]:
    """`cuda` -> ("cuda", None), `cuda:1` -> ("cuda", 1); raises DeviceArgError for anything else."""
    kind, _, index = arg.strip().lower().partition(":")
    if kind not in KINDS or (index and not index.isdigit()) or (kind in ("cpu", "mps") and index):
        raise DeviceArgError(
            f"--device {arg}: expected one of {', '.join(KINDS)}, optionally with an index (cuda:1, xpu:0)"
        )
    return kind, int(index) if index else None


def select_devices(args: list[str], present: list[Device]) -> tuple[list[Device], list[str]]:
    """The present devices that `args` name (all present ones when `args` is empty).

    Returns the selected devices and, for each requested device that is absent, a skip reason.
    """
    if not args:
        return list(present), []
    selected: list[Device] = []
    missing: list[str] = []
    for arg in args:
        kind, index = parse_device_arg(arg)
        matches = [
            d for d in present if d.kind == kind and (index is None or d.name.endswith(f":{index}"))
        ]
        if not matches:
            reason = absence_reason(kind)
            if index is not None and any(d.kind == kind for d in present):
                reason = f"no {arg}: present {kind} devices are " + ", ".join(d.name for d in present if d.kind == kind)
            missing.append(f"--device {arg} requested but absent: {reason}")
        selected += [d for d in matches if d not in selected]
    return selected, missing


def release_memory() -> None:
    """Free cached accelerator memory after the last reference to a model copy is dropped."""
    gc.collect()
    if torch.cuda.is_available():
        torch.cuda.empty_cache()
    mps = getattr(torch, "mps", None)
    if mps is not None and getattr(torch.backends, "mps", None) and torch.backends.mps.is_available():
        mps.empty_cache()
    xpu = getattr(torch, "xpu", None)
    if xpu is not None and xpu.is_available():
        xpu.empty_cache()
