"""Which tensors a model keeps in fp32 when transformers loads it in another dtype.

`from_pretrained(dtype=...)` does not cast every tensor: it keeps the `_keep_in_fp32_modules`
entries in fp32 for float16 and the `_keep_in_fp32_modules_strict` entries for float16 and
bfloat16 (its dtype plan), and it builds the model under the requested default dtype, so a tensor
the class creates with an explicit `dtype=torch.float32` stays fp32 for any dtype (an MoE router's
weight and bias, an SSM's `A_log`). Modeling code relies on both (a router that upcasts its input
to fp32 and multiplies it with its own weight). A copy "in another dtype" is therefore cast as such
a load casts it (`cast_as_loaded`), not by a blanket `model.to(dtype)`.
"""

from __future__ import annotations

import copy
import weakref
from itertools import chain

import torch

_BUILT_FP32: dict[tuple[type, torch.dtype], frozenset[str]] = {}


def built_in_fp32(model, name: str, dtype) -> bool:
    """Whether the class itself creates this tensor in fp32 when built under a default dtype of `dtype`,
    as `from_pretrained(dtype=...)` builds it: an explicit `dtype=torch.float32` in its code (Zaya's router
    `balancing_biases`, an SSM's `A_log`, Inkling2's router weight), so a load keeps it in fp32 by design."""
    key = (type(model), dtype)
    if key not in _BUILT_FP32:
        previous = torch.get_default_dtype()
        try:
            torch.set_default_dtype(dtype)
            with torch.device("meta"):
                probe = type(model)(_config_in(model.config, dtype))
            _BUILT_FP32[key] = frozenset(n for n, t in probe.state_dict().items() if t.dtype == torch.float32)
        except Exception:  # noqa: BLE001 - a class that cannot be built on meta keeps no such exception
            _BUILT_FP32[key] = frozenset()
        finally:
            torch.set_default_dtype(previous)
    return name in _BUILT_FP32[key]


_FP32_ENTRIES: "weakref.WeakKeyDictionary[torch.nn.Module, frozenset[str]]" = weakref.WeakKeyDictionary()


def _listed_fp32(model) -> frozenset[str]:
    """Every `_keep_in_fp32_modules` / `_keep_in_fp32_modules_strict` entry of the model and its parts
    (a composite's sub-models, its language model, keep their own)."""
    if model not in _FP32_ENTRIES:
        _FP32_ENTRIES[model] = frozenset(
            entry for part in model.modules() for attr in ("_keep_in_fp32_modules", "_keep_in_fp32_modules_strict")
            for entry in (getattr(part, attr, None) or ()))
    return _FP32_ENTRIES[model]


def _names_inside(name: str, entries) -> bool:
    # an entry names a module or a dotted path inside one ("mlp.gate.linear.weight", "e_score_correction_bias")
    return any(f".{entry}." in f".{name}." for entry in entries)


def declared_fp32(model, name: str) -> bool:
    """Whether the tensor `name` lies in a `_keep_in_fp32_modules(_strict)` entry of the model or a part."""
    return _names_inside(name, _listed_fp32(model))


def may_stay_fp32(model, name: str, dtype) -> bool:
    """Whether a half (or `"auto"`) load may leave the tensor `name` in fp32: a keep-in-fp32 entry of any
    list (releases differ on which half types keep which list: 5.24 fp16 only for the plain one, 5.0 bf16
    too, so either is accepted), or a tensor the class builds in fp32 itself."""
    return declared_fp32(model, name) or (isinstance(dtype, torch.dtype)
                                                       and built_in_fp32(model, name, dtype))


def _config_in(config, dtype):
    """A copy of `config` (and its sub-configs) that asks for `dtype`: a loaded checkpoint's config
    carries the dtype it was saved in (`"dtype": "float32"`), which the constructor would honour,
    while `from_pretrained(dtype=...)` overrides it."""
    config = copy.deepcopy(config)
    pending = [config]
    while pending:
        cfg = pending.pop()
        if getattr(cfg, "dtype", None) is not None:
            cfg.dtype = dtype
        pending += [value for value in vars(cfg).values() if hasattr(value, "to_dict") and hasattr(value, "dtype")]
    return config


def planned_fp32(model, dtype) -> frozenset[str]:
    """The module entries the load's dtype plan keeps in fp32 for `dtype` (the model's own rule where
    it has one, `PreTrainedModel._get_dtype_plan`; the two class lists otherwise)."""
    plan = getattr(model, "_get_dtype_plan", None)
    if plan is not None:
        return frozenset(entry for entry, kept in plan(dtype).items() if kept == torch.float32)
    entries = set()
    if dtype == torch.float16:
        entries |= set(getattr(model, "_keep_in_fp32_modules", None) or ())
    if dtype in (torch.float16, torch.bfloat16):
        entries |= set(getattr(model, "_keep_in_fp32_modules_strict", None) or ())
    return frozenset(entries)


def loaded_in_fp32(model, name: str, dtype, planned: frozenset[str] | None = None) -> bool:
    """Whether `from_pretrained(dtype=dtype)` leaves the tensor `name` (a state-dict key) in fp32
    (`planned`: `planned_fp32(model, dtype)`, when the caller asks for many names)."""
    planned = planned_fp32(model, dtype) if planned is None else planned
    return _names_inside(name, planned) or built_in_fp32(model, name, dtype)


def cast_as_loaded(model: torch.nn.Module, source: torch.nn.Module, dtype: torch.dtype) -> torch.nn.Module:
    """`model` (already `.to(dtype)`, a copy of `source`) with the tensors a `dtype` load keeps in fp32
    set back to `source`'s fp32 values, in place."""
    originals = dict(chain(source.named_parameters(), source.named_buffers()))
    state_names = set(source.state_dict())
    planned = planned_fp32(source, dtype)  # once per copy, not once per tensor
    for name, tensor in chain(model.named_parameters(), model.named_buffers()):
        original = originals.get(name)
        if (original is not None and original.dtype == torch.float32 and tensor.dtype != torch.float32
                and name in state_names and loaded_in_fp32(source, name, dtype, planned)):
            tensor.data = original.detach().to(device=tensor.device, copy=True)
    return model
