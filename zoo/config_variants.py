"""Zoo models built from drawn config overrides (`strategies.configs.config_overrides`).

`variant(name, overrides)` builds the zoo row `name` with `{dotted name: value}` overrides applied
to its config kwargs, weights seeded from the row exactly as `zoo.build.build_zoo_model` does (so
`repro.py` rebuilds it from the stored config and seed), and wraps it as a `Subject` whose spec is
read off the built model. Built models are kept in an LRU cache bounded by bytes of parameters and
buffers (`HFPROPS_CONFIG_CACHE_MB`, default 256), so each config is built once while it stays in
the budget, and a long search never holds every model it drew.
"""

from __future__ import annotations

import json
import os
from collections import OrderedDict
from dataclasses import dataclass, replace
from functools import lru_cache

import torch

from strategies.configs import apply_overrides
from zoo.compat import cache_argument
from zoo.subject import Subject
from zoo.tiny import ZOO

BUDGET_BYTES = int(float(os.environ.get("HFPROPS_CONFIG_CACHE_MB", "256")) * 2**20)


def variant_kwargs(name: str, overrides: dict) -> dict:
    """The config kwargs of zoo row `name` with `overrides` applied."""
    return apply_overrides(ZOO[name].config, overrides)


def build_variant_model(name: str, overrides: dict, *, attn_implementation: str | None = None) -> torch.nn.Module:
    """The zoo row's model with `overrides` applied to its config, seeded from the row, in eval mode."""
    import transformers

    row = ZOO[name]
    config = getattr(transformers, row.config_class)(**variant_kwargs(name, overrides))
    torch.manual_seed(row.seed)  # after the config, right before the weights: as build_zoo_model
    model = getattr(transformers, row.model_class)(config)
    if attn_implementation is not None:
        model.set_attn_implementation(attn_implementation)
    return model.eval()


@lru_cache(maxsize=None)
def _processor(name: str):
    from zoo.processors import build_processor

    return build_processor(ZOO[name])


def build_variant(name: str, overrides: dict, *, attn_implementation: str | None = None) -> Subject:
    """A subject around `build_variant_model(...)`; `spec.extra["config_overrides"]` holds the overrides."""
    from zoo.build import spec_for

    row = ZOO[name]
    model = build_variant_model(name, overrides, attn_implementation=attn_implementation)
    processor = _processor(name)
    spec = spec_for(name, model, seed=row.seed, pipeline_task=row.pipeline_task, max_length=row.max_length,
                    processor=processor)
    spec = replace(spec, extra={**spec.extra, "config_overrides": dict(overrides)})
    return Subject(spec, model, processor)


def model_bytes(model: torch.nn.Module) -> int:
    tensors = list(model.parameters()) + list(model.buffers())
    return sum({t.data_ptr(): t.numel() * t.element_size() for t in tensors}.values())


class VariantCache:
    """Built variants by (name, overrides, attention), least recently used dropped past `budget` bytes."""

    def __init__(self, budget: int = BUDGET_BYTES):
        self.budget = budget
        self._subjects: OrderedDict[str, tuple[Subject, int]] = OrderedDict()
        self.builds = 0  # how many models were built (the cache's own tests read it)

    @staticmethod
    def key(name: str, overrides: dict, attn_implementation: str | None) -> str:
        return json.dumps([name, overrides, attn_implementation], sort_keys=True, default=str)

    def __call__(self, name: str, overrides: dict, *, attn_implementation: str | None = None) -> Subject:
        key = self.key(name, overrides, attn_implementation)
        if key in self._subjects:
            self._subjects.move_to_end(key)
            return self._subjects[key][0]
        subject = build_variant(name, overrides, attn_implementation=attn_implementation)
        self.builds += 1
        self._subjects[key] = (subject, model_bytes(subject.model))
        while len(self._subjects) > 1 and self.held_bytes() > self.budget:
            self._subjects.popitem(last=False)
        return subject

    def held_bytes(self) -> int:
        return sum(size for _, size in self._subjects.values())

    def __len__(self) -> int:
        return len(self._subjects)


VARIANTS = VariantCache()  # the process-wide cache the properties use


# -- call styles (strategies.call_styles.CallStyle) applied to a subject ----------------------------
def new_cache(subject: Subject, kind: str, kwargs: dict):
    """A fresh cache object of `kind` for a cached call with `kwargs` (None: let the model make one)."""
    from transformers.cache_utils import DynamicCache, EncoderDecoderCache, StaticCache

    config, spec = subject.model.config, subject.spec
    encoder_decoder = spec.has("encoder_decoder")
    if kind == "dynamic":
        return EncoderDecoderCache(DynamicCache(config=config), DynamicCache(config=config)) if encoder_decoder \
            else DynamicCache(config=config)
    if kind == "static":
        length = spec.decoder_max_length if encoder_decoder else spec.max_length
        cache = StaticCache(config=config, max_cache_len=length)
        if not encoder_decoder:
            return cache
        # cross-attention holds exactly the encoder's positions (as generate sizes it): those of the
        # encoder output when the encoder ran first (as in generate), else of the call's own inputs
        encoded = kwargs.get("encoder_outputs")
        source = (encoded[0].shape[1] if encoded is not None else
                  kwargs["input_ids"].shape[1] if "input_ids" in kwargs else spec.num_frames // 2)
        return EncoderDecoderCache(cache, StaticCache(config=config, max_cache_len=source))
    return None  # "legacy": the first call makes a cache, later calls pass it back as tuples


def _legacy(cache):
    to_legacy = getattr(cache, "to_legacy_cache", None)
    if to_legacy is None:
        raise TypeError(f"{type(cache).__name__} has no to_legacy_cache() in this transformers release")
    return to_legacy()


@dataclass(repr=False)
class StyledSubject(Subject):
    """A subject called in a drawn `CallStyle`: the same model, other keyword arguments.

    Only the call changes (`model_kwargs`): default positions drop the position ids the subject
    derives from the mask; a cached call starts with a cache object of the style's kind. Return
    types (`return_dict`) and `generate` settings are applied by the properties that judge them.
    """

    style: object = None

    def model_kwargs(self, inputs, *, hidden_states: bool = False, **extra) -> dict:
        kwargs = super().model_kwargs(inputs, hidden_states=hidden_states, **extra)
        style = self.style
        if style is None:
            return kwargs
        if style.positions == "default":
            kwargs.pop("position_ids", None)
        name = cache_argument(self.model)  # `cache`, or `past_key_values` before 5.24
        if kwargs.get("use_cache") and name in kwargs:
            if kwargs[name] is None:
                kwargs[name] = new_cache(self, style.cache, kwargs)
            elif style.cache == "legacy":
                kwargs[name] = _legacy(kwargs[name])
        return kwargs

    def with_model(self, model, **spec_changes) -> "StyledSubject":
        spec = replace(self.spec, **spec_changes) if spec_changes else self.spec
        return StyledSubject(spec, model, self.processor, style=self.style)


def styled(subject: Subject, style) -> StyledSubject:
    """`subject` called in `style` (shares the model; nothing is copied)."""
    return StyledSubject(subject.spec, subject.model, subject.processor, style=style)


@lru_cache(maxsize=None)
def accepted_cache_kinds(name: str) -> tuple[str, ...]:
    """The cache kinds zoo row `name`'s model accepts in a cached call (tried once per process)."""
    from strategies.call_styles import CACHE_KINDS, CallStyle
    from zoo.generation import cached_logits

    subject = VARIANTS(name, {})
    if not subject.spec.has("cache"):
        return ()
    import numpy as np

    inputs = {"input_ids": np.full((1, 3), 5), "attention_mask": np.ones((1, 3), dtype=np.int64)}
    if subject.spec.has("encoder_decoder"):
        inputs["decoder_input_ids"] = np.full((1, 3), 5)
    if subject.spec.has("audio"):
        inputs = {"input_features": np.zeros((1, subject.spec.num_mel_bins, subject.spec.num_frames), np.float32),
                  "decoder_input_ids": np.full((1, 3), 5)}
    accepted = []
    for kind in CACHE_KINDS:
        try:
            cached_logits(styled(subject, CallStyle(cache=kind)), inputs, 1)
        except (TypeError, AttributeError, ValueError):
            continue
        accepted.append(kind)
    return tuple(accepted)


# -- the README table: `python -m zoo.config_variants` ---------------------------------------------
def drawn_table() -> str:
    """A markdown table: per zoo family, the config dimensions and call styles the properties draw."""
    from strategies.configs import describe

    lines = ["| family | config dimensions drawn (source) | call styles drawn |", "|---|---|---|"]
    for name, row in ZOO.items():
        dims = "; ".join(f"{source}: {', '.join(f'`{n}`' for n in names)}"
                         for source, names in describe(row.config_class, row.config).items())
        spec = VARIANTS(name, {}).spec
        styles = ["return_dict"]
        if spec.has("causal"):
            styles += ["positions explicit/default", "padding left/right"]
        kinds = accepted_cache_kinds(name)
        if kinds:
            styles += [f"cache {'/'.join(kinds)}", "generate defaults/explicit"]
        tokenizer = getattr(_processor(name), "tokenizer", _processor(name))
        if getattr(tokenizer, "pad_token_id", None) is not None:
            styles += ["tokenizer sides as attribute/argument"]
        lines.append(f"| {name} | {dims} | {', '.join(styles)} |")
    return "\n".join(lines)


if __name__ == "__main__":
    import warnings

    warnings.simplefilter("ignore")
    print(drawn_table())
