"""Every difference between the transformers 5.x releases that hfprops meets, in one place.

The suite runs on transformers 5.0.0 through 5.24.0. Each function here asks the installed release
for the feature (a forward parameter, a class, a method) rather than comparing version numbers, so a
backport or a late rename needs no table of versions; the docstrings say where each one changed.

This module imports only the standard library, torch and transformers, never hfprops:
`properties/artifacts.py` copies its source verbatim into every failure's standalone repro.py.
"""

from __future__ import annotations

import inspect
from typing import Any

import torch
import transformers


def accepts(model: torch.nn.Module, name: str) -> bool:
    """Whether `model.forward` takes a parameter called `name`."""
    return name in inspect.signature(model.forward).parameters


def cache_argument(model: torch.nn.Module) -> str:
    """The forward's name for the KV cache: `cache` in the latest releases (5.24.0 has it; 5.18.0 and
    older take `past_key_values`, which 5.24.0 still accepts with a FutureWarning)."""
    return "cache" if accepts(model, "cache") else "past_key_values"


def cache_kwargs(model: torch.nn.Module, cache: Any) -> dict[str, Any]:
    """`{name: cache}` for `model(**kwargs)` under this release's name of the cache argument."""
    return {cache_argument(model): cache}


def returned_cache(output: Any) -> Any:
    """The KV cache a forward or `generate` returned: `output.cache` in the latest releases,
    `output.past_key_values` before (5.4.0's outputs have no `cache` field at all). None if absent."""
    for name in ("cache", "past_key_values"):
        value = output.get(name) if hasattr(output, "get") else getattr(output, name, None)
        if value is not None:
            return value
    return None


def enable_activation_checkpointing(model: torch.nn.Module, checkpoint_kwargs: dict | None = None) -> None:
    """Turn on activation (gradient) checkpointing: `activation_checkpointing_enable` in the latest
    releases, `gradient_checkpointing_enable` (its deprecated alias there) in 5.18.0 and older.
    `checkpoint_kwargs` go to `torch.utils.checkpoint.checkpoint` (None: the release's default)."""
    enable = getattr(model, "activation_checkpointing_enable", None) or model.gradient_checkpointing_enable
    enable(checkpoint_kwargs)


# The method a subclass overrides to change how checkpointing is enabled, in every 5.x release: the
# latest releases keep an override of the old name as the entry point (`_is_overridden`), older
# releases have only that name.
CHECKPOINTING_ENTRY_POINT = "gradient_checkpointing_enable"


def image_processor_class(model_prefix: str) -> type:
    """The PIL/numpy image processor of a model family (`"ViT"` -> `ViTImageProcessorPil`).

    From 5.4.0 on the PIL one is `<Name>ImageProcessorPil` and `<Name>ImageProcessor` is the
    torchvision one; in 5.0.0 `<Name>ImageProcessor` is the PIL/numpy one (and `...Fast` torchvision).
    """
    pil = getattr(transformers, f"{model_prefix}ImageProcessorPil", None)
    return pil if pil is not None else getattr(transformers, f"{model_prefix}ImageProcessor")

