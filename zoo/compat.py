"""Every difference between the transformers 5.x releases that hfprops meets, in one place.

The suite runs on transformers 5.0.0 through 5.25.0. Each function here asks the installed release
for the feature (a forward parameter, a class, a method, the forward's code) rather than comparing
version numbers, so a backport or a late rename needs no table of versions; the docstrings say where
each one changed (bisected over the installed releases).

This module imports only the standard library, torch and transformers, never hfprops:
`properties/artifacts.py` copies its source verbatim into every failure's standalone repro.py.
"""

from __future__ import annotations

import functools
import inspect
from typing import Any

import torch
import transformers


def accepts(model: torch.nn.Module, name: str) -> bool:
    """Whether `model.forward` takes a parameter called `name`."""
    return name in inspect.signature(model.forward).parameters


def cache_argument(model: torch.nn.Module) -> str:
    """The forward's name for the KV cache: `cache` from 5.24.0, `past_key_values` up to 5.23.x."""
    return "cache" if accepts(model, "cache") else "past_key_values"


def cache_kwargs(model: torch.nn.Module, cache: Any) -> dict[str, Any]:
    """`{name: cache}` for `model(**kwargs)` under this release's name of the cache argument."""
    return {cache_argument(model): cache}


def returned_cache(output: Any) -> Any:
    """The KV cache a forward or `generate` returned: `output.cache` from 5.24.0, `output.past_key_values`
    up to 5.23.x (whose outputs have no `cache` field at all). None if absent."""
    for name in ("cache", "past_key_values"):
        value = output.get(name) if hasattr(output, "get") else getattr(output, name, None)
        if value is not None:
            return value
    return None


# Cache layer kinds that hold a recurrent state (transformers 5.25's cache_utils layer types).
RECURRENT_LAYER_TYPES = frozenset({"linear_attention", "conv", "hybrid", "hybrid_sliding", "mamba"})


def recurrent_layers(model: torch.nn.Module) -> bool:
    """Whether some token mixers carry a recurrent state (SSM, linear attention, short convolutions)
    instead of attending over keys: the class's `_is_stateful` up to 5.24.x, the decoder config's
    `layer_types` naming a recurrent cache layer (linear_attention, hybrid, ...) from 5.25.0."""
    if getattr(type(model), "_is_stateful", False):
        return True
    config = model.config.get_text_config(decoder=True)
    return bool(RECURRENT_LAYER_TYPES & set(getattr(config, "layer_types", None) or ()))


def enable_activation_checkpointing(model: torch.nn.Module, checkpoint_kwargs: dict | None = None) -> None:
    """Turn on activation (gradient) checkpointing: `activation_checkpointing_enable` from 5.23.0,
    `gradient_checkpointing_enable` (its deprecated alias from then on) up to 5.22.x.
    `checkpoint_kwargs` go to `torch.utils.checkpoint.checkpoint` (None: the release's default)."""
    enable = getattr(model, "activation_checkpointing_enable", None) or model.gradient_checkpointing_enable
    enable(checkpoint_kwargs)


# The method a subclass overrides to change how checkpointing is enabled, in every 5.x release: from
# 5.23.0 an override of the old name stays the entry point (`_is_overridden`); before, it is the only one.
CHECKPOINTING_ENTRY_POINT = "gradient_checkpointing_enable"


@functools.lru_cache(maxsize=None)
def towers_pool_to_projection(model_class: type) -> bool:
    """Whether a dual encoder (CLIP-style) returns each tower's `pooler_output` already projected.

    From 5.6.0 its forward goes through `get_text_features`/`get_image_features`, which replace the
    tower's `pooler_output` with its projection (projection_dim wide); in 5.5.x and older the towers'
    `pooler_output` is the pooled hidden state (hidden size wide).
    """
    source = inspect.getsource(model_class.forward)
    return "self.get_text_features(" in source or "self.get_image_features(" in source


def image_processor_class(model_prefix: str) -> type:
    """The PIL/numpy image processor of a model family (`"ViT"` -> `ViTImageProcessorPil`).

    From 5.4.0 on the PIL one is `<Name>ImageProcessorPil` and `<Name>ImageProcessor` is the
    torchvision one; up to 5.3.x `<Name>ImageProcessor` is the PIL/numpy one (`...Fast` torchvision).
    """
    pil = getattr(transformers, f"{model_prefix}ImageProcessorPil", None)
    return pil if pil is not None else getattr(transformers, f"{model_prefix}ImageProcessor")

