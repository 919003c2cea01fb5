"""Putting a subject on a device: cached converted copies, thread counts, deterministic mode.

The session's subject is shared by every test, so it is never moved or cast: a run elsewhere uses
a converted copy (`Subject.converted`). Copies are cached for the subject in use and dropped,
with the accelerator's cached memory, as soon as another subject asks or `release_copies()` is
called (the devices plugin calls it after every test), so one model at a time lives on a device.
"""

from __future__ import annotations

import copy
import os
from contextlib import contextmanager
from typing import Iterator

import torch

from devices.discovery import release_memory

_owner = None  # the subject whose copies are cached (a strong reference: ids are never reused)
_copies: dict[tuple[str, torch.dtype], object] = {}


def _cached(subject, key, make):
    global _owner
    if _owner is not subject:
        release_copies()
        _owner = subject
    if key not in _copies:
        _copies[key] = make()
    return _copies[key]


def copy_on(subject, device: str, dtype: torch.dtype):
    """`subject` itself if it already lives on `device` in `dtype`, else a cached converted copy."""
    if subject.device == torch.device(device) and subject.dtype == dtype:
        return subject
    return _cached(subject, (device, dtype), lambda: subject.converted(device=device, dtype=dtype))


def release_copies() -> None:
    """Drop every cached copy and free the accelerator memory they held."""
    global _owner
    on_accelerator = any(not str(device).startswith("cpu") for device, _ in _copies)
    _copies.clear()
    _owner = None
    if on_accelerator:  # a full gc pass costs ~0.5 s: only worth it when device memory is held
        release_memory()


def cached_copies() -> list[tuple[str, torch.dtype]]:
    """(device, dtype) of the copies alive now (for tests of the release)."""
    return list(_copies)


@contextmanager
def num_threads(threads: int | None) -> Iterator[None]:
    """Run with `threads` intra-op threads (None: leave as is), restoring the previous count."""
    before = torch.get_num_threads()
    if threads is not None:
        torch.set_num_threads(threads)
    try:
        yield
    finally:
        torch.set_num_threads(before)


# cuBLAS needs a fixed workspace to be deterministic; it reads this before its first use in the
# process, so the devices plugin also sets it at start-up when a CUDA device is selected.
CUBLAS_WORKSPACE = ":4096:8"


@contextmanager
def deterministic_algorithms(enabled: bool = True) -> Iterator[None]:
    """`torch.use_deterministic_algorithms(True)` for the block (errors on nondeterministic ops)."""
    if not enabled:
        yield
        return
    os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", CUBLAS_WORKSPACE)
    before = torch.are_deterministic_algorithms_enabled()
    warn_only = torch.is_deterministic_algorithms_warn_only_enabled()
    benchmark = torch.backends.cudnn.benchmark
    torch.use_deterministic_algorithms(True)
    torch.backends.cudnn.benchmark = False
    try:
        yield
    finally:
        torch.use_deterministic_algorithms(before, warn_only=warn_only)
        torch.backends.cudnn.benchmark = benchmark


@contextmanager
def full_fp32() -> Iterator[None]:
    """fp32 means fp32 for the block: no TF32 in matmuls or cuDNN convolutions (Ampere and later)."""
    matmul, cudnn = torch.get_float32_matmul_precision(), torch.backends.cudnn.allow_tf32
    torch.set_float32_matmul_precision("highest")
    torch.backends.cudnn.allow_tf32 = False
    try:
        yield
    finally:
        torch.set_float32_matmul_precision(matmul)
        torch.backends.cudnn.allow_tf32 = cudnn


def split_across(subject, devices: list[str]):
    """A cached copy of `subject` whose layers are spread over `devices` (accelerate's `dispatch_model`)."""
    return _cached(subject, ("+".join(devices), subject.dtype), lambda: _split(subject, devices))


def _split(subject, devices: list[str]):
    # The first devices get room for a share of the weights only, so even a tiny model is really split.
    # Needs the `accelerate` package, as transformers' own `device_map` loading does.
    from accelerate import dispatch_model, infer_auto_device_map

    model = copy.deepcopy(subject.model)
    size = sum(p.numel() * p.element_size() for p in model.parameters())
    indices = [torch.device(d).index for d in devices]
    budget = {index: size // len(devices) for index in indices[:-1]} | {indices[-1]: 2 * size}
    device_map = infer_auto_device_map(
        model, max_memory=budget, no_split_module_classes=list(getattr(model, "_no_split_modules", None) or [])
    )
    if len(set(device_map.values())) < 2:
        raise RuntimeError(f"[{subject.name}] split: accelerate placed the whole model on one device: {device_map}")
    return subject.with_model(dispatch_model(model, device_map=device_map))
