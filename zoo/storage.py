"""Where tensors sit in memory: copies of a model's weights and of inputs in storage of a chosen alignment.

CPU kernels may take another code path for data that is not 64-byte aligned (MKL documents that
its results can change with the arrays' alignment and asks for 64-byte alignment for reproducible
results). `from_pretrained` memory-maps safetensors, so reloaded weights sit at 8-byte offsets,
and where MKL's path depends on it (measured: an AMD EPYC without AVX-512; this machine with
`MKL_ENABLE_INSTRUCTIONS=AVX`, which makes MKL run its SSE4.2 kernels) outputs change in the last
bit although every weight is bit-identical. A comparison that claims bit-identity therefore runs
both sides with their data in storage of the same alignment: `aligned(subject)` for the weights,
`aligned_inputs` for the inputs.
`relocated(model, offset)` plants the misaligned case for the suite's own tests.
"""

from __future__ import annotations

import copy
from typing import Any, Mapping

import torch

from zoo.derived import derived
from zoo.subject import Subject, to_tensors

ALIGNMENT = 64  # bytes: the CPU allocator's alignment (c10::gAlignment) and a cache line


def misalignment(tensor: torch.Tensor) -> int:
    """How many bytes `tensor`'s data sits past a 64-byte boundary (0: aligned)."""
    return tensor.data_ptr() % ALIGNMENT


def planted_offset(tensor: torch.Tensor, offset: int) -> int:
    """Where `relocated(..., offset)` puts `tensor`: `offset` rounded up to a multiple of its element size."""
    size = tensor.element_size()
    rounded = -(-offset // size) * size
    if offset and rounded % ALIGNMENT == 0:
        raise ValueError(f"offset {offset} rounds to an aligned address for {tensor.dtype}")
    return rounded


def _moved(tensor: torch.Tensor, offset: int) -> torch.Tensor:
    """A copy of `tensor` (same values, shape and strides) whose data starts `offset` bytes past a 64-byte
    boundary (rounded up to a multiple of the element size)."""
    offset = planted_offset(tensor, offset)
    if offset == 0:
        return tensor.detach().clone(memory_format=torch.preserve_format)  # fresh allocator storage
    size = tensor.element_size()
    extent = 1 + sum((n - 1) * s for n, s in zip(tensor.shape, tensor.stride())) if tensor.numel() else 0
    pad = (2 * ALIGNMENT + offset) // size
    buffer = torch.empty(extent + pad, dtype=tensor.dtype, device=tensor.device)
    start = (-misalignment(buffer) % ALIGNMENT + offset) // size
    moved = buffer.as_strided(tensor.shape, tensor.stride(), start)
    moved.copy_(tensor.detach())
    return moved


def relocated(model: torch.nn.Module, offset: int = 0) -> torch.nn.Module:
    """A deep copy of `model` whose every parameter and buffer lives in fresh storage `offset` bytes past a
    64-byte boundary (0: allocator-aligned; rounded up to a multiple of each tensor's element size, so an
    int64 buffer asked for 4 sits at 8). Tensors that shared storage (tied weights) share it again."""
    model = copy.deepcopy(model)
    moved: dict[tuple, torch.Tensor] = {}

    def move(tensor: torch.Tensor) -> torch.Tensor:
        key = (tensor.data_ptr(), tensor.dtype, tuple(tensor.shape), tensor.stride())
        if key not in moved:
            moved[key] = _moved(tensor, offset)
        return moved[key]

    with torch.no_grad():
        for param in model.parameters():  # each Parameter object once; tied modules hold the same object
            param.data = move(param.data)
        for module in model.modules():
            for name, buffer in module._buffers.items():
                if buffer is not None:
                    module._buffers[name] = move(buffer)
    return model


def aligned(subject: Subject) -> Subject:
    """The subject around a copy of its model with every weight in fresh, 64-byte aligned storage (cached per model)."""
    return derived(subject, "aligned storage", lambda s: s.with_model(relocated(s.model).eval()))


def aligned_inputs(inputs: Mapping[str, Any]) -> dict[str, torch.Tensor]:
    """The inputs as tensors in fresh, 64-byte aligned storage of their own (a drawn numpy array's data
    sits wherever numpy's allocator put it, which may differ between two conversions of one draw)."""
    return {key: _moved(value, 0) for key, value in to_tensors(inputs).items()}
