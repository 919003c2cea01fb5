"""Decoding a subject: step by step with the cache, in one full forward, and greedy `generate`.

The subject knows which sequence a model decodes (`input_ids` of a causal LM, `decoder_input_ids`
of an encoder-decoder) and which inputs condition it; properties compare the decodings without
knowing the model type. The latest 5.x releases rename the forward's `past_key_values` argument and
output to `cache`; `zoo.compat` gives this release's name.
"""

from __future__ import annotations

import inspect
from dataclasses import dataclass
from typing import Any, Mapping

import torch
from transformers.modeling_outputs import BaseModelOutput

from strategies.signature import PER_TOKEN
from zoo.compat import cache_kwargs, returned_cache
from zoo.spec import ModelSpec
from zoo.subject import Subject, to_tensors


def decoded_key(spec: ModelSpec) -> str:
    """The input that holds the decoded sequence: the decoder's ids for encoder-decoders."""
    return "decoder_input_ids" if spec.has("encoder_decoder") else "input_ids"


def full_logits(subject: Subject, inputs: Mapping[str, Any]) -> torch.Tensor:
    """Logits for every position of the decoded sequence from one forward without the cache."""
    return subject.forward(inputs)["logits"]


# what `generate` keeps away from the encoder (GenerationMixin._prepare_text_encoder_decoder_kwargs_for_generation)
NOT_FOR_THE_ENCODER = ("decoder_", "cross_attn", "use_cache", "cache", "past_key_values")


def encode_once(model, kwargs: Mapping[str, Any]):
    """The encoder's output for a call's `kwargs`, computed once before decoding as `generate` does.

    None for a model without a separate encoder (decoder-only). The encoder gets the call's arguments
    less the decoder's and the cache's; a stack that is not a decoder refuses `use_cache=True` (Switch
    Transformers), so one full call with the cache is not how `generate` runs an encoder-decoder.
    """
    if not getattr(model.config, "is_encoder_decoder", False) or not hasattr(model, "get_encoder"):
        return None
    encoder = model.get_encoder()
    wanted = {k: v for k, v in kwargs.items() if not k.startswith(NOT_FOR_THE_ENCODER)}
    params = inspect.signature(encoder.forward).parameters
    if not any(p.kind is inspect.Parameter.VAR_KEYWORD for p in params.values()):
        wanted = {k: v for k, v in wanted.items() if k in params}
    with torch.no_grad():
        return encoder(**{**wanted, "return_dict": True})


def generate_drops_mask(model, ids: torch.Tensor, mask: torch.Tensor, cache: Any) -> bool:
    """Whether `generate` calls `model` without the attention mask on a cached step (`ids` so far, `mask` over them).

    Asks the model's own `prepare_inputs_for_generation` (Mamba, FalconMamba and Mamba2 set the mask
    to None once the cache holds the state: their forward masks only the call's own tokens, and a
    mask over past and new tokens broadcasts the one new token to the mask's length).
    """
    prepare = getattr(model, "prepare_inputs_for_generation", None)
    if prepare is None:
        return False
    # next_sequence_length from 5.2x; cache_position (the new token's position) up to then (5.0.0 slices by it)
    prepared = prepare(
        ids, next_sequence_length=1, cache_position=torch.arange(ids.shape[1] - 1, ids.shape[1]),
        attention_mask=mask, use_cache=True, is_first_iteration=False, **cache_kwargs(model, cache),
    )
    return prepared.get("attention_mask") is None


def cached_logits(subject: Subject, inputs: Mapping[str, Any], prefix_length: int) -> torch.Tensor:
    """Logits from the first `prefix_length` decoded tokens in one call, then one token per call with the cache.

    Each call passes only the new tokens, the cache returned by the previous call, the attention
    mask up to the current length and (for causal models) the position ids the full forward
    would use at those positions, as `generate` does for a left-padded batch; a model whose
    `generate` drops the mask once the cache is filled (`generate_drops_mask`) gets the mask over the call's own tokens only. An encoder-decoder's
    encoder runs once first (`encode_once`) and every decoding call gets its output, as in `generate`.
    """
    key = decoded_key(subject.spec)
    tensors = to_tensors(inputs)
    sequence = tensors[key]
    causal_mask = tensors.get("attention_mask") if key == "input_ids" else None
    bounds = [0, prefix_length] + list(range(prefix_length + 1, sequence.shape[1] + 1))
    cache, pieces = None, []
    encoder_outputs = encode_once(subject.model, subject.model_kwargs(tensors)) if key != "input_ids" else None
    for start, stop in zip(bounds, bounds[1:]):
        step = dict(tensors, **{key: sequence[:, start:stop]})
        for name in PER_TOKEN:  # indexed by token (token types, boxes): the call's own tokens
            if name in step and key == "input_ids":
                step[name] = tensors[name][:, start:stop]
        if start > 0 and encoder_outputs is None:
            # as `generate` does: media inputs go with the first call, which holds their placeholders
            step = {k: v for k, v in step.items() if k in (key, "attention_mask", *PER_TOKEN)}
        extra: dict[str, Any] = {"use_cache": True, **cache_kwargs(subject.model, cache)}
        if causal_mask is not None:
            step["attention_mask"] = causal_mask[:, :stop]
            if start > 0 and generate_drops_mask(subject.model, sequence[:, :stop], step["attention_mask"], cache):
                # generate's cached steps hold no padding; a drawn one may: mask the call's own tokens
                step["attention_mask"] = causal_mask[:, start:stop]
        if encoder_outputs is not None:
            # as `generate` does: the encoder ran once; later calls reuse its output (and its mask)
            step = {k: v for k, v in step.items() if k in (key, "attention_mask")}
            extra["encoder_outputs"] = encoder_outputs
        kwargs = subject.model_kwargs(step, **extra)
        if "position_ids" in kwargs:  # derived from the mask so far: keep the new tokens' positions
            kwargs["position_ids"] = kwargs["position_ids"][:, start:stop]
        with torch.no_grad():
            out = subject.model(**kwargs)
        cache = returned_cache(out)
        if encoder_outputs is None and out.get("encoder_last_hidden_state") is not None:
            encoder_outputs = BaseModelOutput(last_hidden_state=out.encoder_last_hidden_state)
        pieces.append(out.logits)
    return torch.cat(pieces, dim=1)


@dataclass
class Generated:
    """Greedy `generate` output: new tokens per item (cut after the first EOS) and each step's logits."""

    tokens: list[list[int]]
    logits: torch.Tensor  # (batch, steps, vocab)


def generate_greedy(subject: Subject, inputs: Mapping[str, Any], *, max_new_tokens: int, use_cache: bool) -> Generated:
    """Greedy decoding with `generate` from the conditioning inputs (prompt, encoder inputs).

    For encoder-decoders the drawn `decoder_input_ids` are dropped: `generate` starts from the
    decoder start token. Each item's tokens end at its first EOS, where `generate` stops it.
    """
    conditioning = {k: v for k, v in inputs.items() if k != "decoder_input_ids"}
    kwargs = subject.model_kwargs(conditioning, use_cache=use_cache)
    for unused in ("return_dict", "position_ids"):  # generate derives positions from the mask itself
        kwargs.pop(unused, None)
    with torch.no_grad():
        out = subject.model.generate(
            **kwargs, max_new_tokens=max_new_tokens, do_sample=False, num_beams=1,
            return_dict_in_generate=True, output_logits=True,
        )
    new = out.sequences[:, out.sequences.shape[1] - len(out.logits) :]  # after the prompt or start token
    eos = subject.model.generation_config.eos_token_id
    eos = set(eos if isinstance(eos, (list, tuple)) else [eos] if eos is not None else [])
    tokens = []
    for row in new.tolist():
        cut = next((i + 1 for i, t in enumerate(row) if t in eos), len(row))
        tokens.append(row[:cut])
    return Generated(tokens, torch.stack(out.logits, dim=1))


# -- generate with any options (issue 14): other decoding modes compared with greedy -------------------
# `generate_greedy` above is the cache property's; these take any `generate` option and keep the raw
# output (beam scores, the returned cache) for the generation properties.


def generate_output(subject: Subject, inputs: Mapping[str, Any], *, max_new_tokens: int, seed: int | None = None,
                    **options):
    """transformers' `generate` output (dict form, step logits kept) from the conditioning inputs.

    Greedy with the cache unless `options` say otherwise (`cache_implementation="static"`,
    `assistant_model=`, `prompt_lookup_num_tokens=`, `num_beams=`, `do_sample=True`, ...). With
    `seed`, sampling runs under `torch.manual_seed(seed)` inside a forked RNG (the global one is untouched).
    """
    conditioning = {k: v for k, v in inputs.items() if k != "decoder_input_ids"}
    kwargs = subject.model_kwargs(conditioning, use_cache=options.pop("use_cache", True))
    for unused in ("return_dict", "position_ids"):  # generate derives positions from the mask itself
        kwargs.pop(unused, None)
    settings = dict(do_sample=False, num_beams=1, return_dict_in_generate=True, output_logits=True)
    settings.update(options)
    with torch.no_grad(), torch.random.fork_rng(devices=[]):
        if seed is not None:
            torch.manual_seed(seed)
        return subject.model.generate(**kwargs, **settings, max_new_tokens=max_new_tokens)


def generated(subject: Subject, out, *, cut_at_eos: bool = True) -> Generated:
    """A `generate` output as `Generated`: new tokens per row (cut after the first EOS) and step logits."""
    new = out.sequences[:, out.sequences.shape[1] - len(out.logits) :]
    eos = subject.model.generation_config.eos_token_id
    eos = set(eos if isinstance(eos, (list, tuple)) else [eos] if eos is not None else []) if cut_at_eos else set()
    tokens = [row[: next((i + 1 for i, t in enumerate(row) if t in eos), len(row))] for row in new.tolist()]
    return Generated(tokens, torch.stack(out.logits, dim=1))


# EOS and forced EOS off: a continued generation must not stop, or be forced to stop, where the first call ended
NO_EOS = dict(eos_token_id=None, forced_eos_token_id=None)


_EXTENDED_WITH = {"attention_mask": 1, "mm_token_type_ids": 0}


def _prompt_continued(tensors: dict[str, torch.Tensor], new_tokens: int) -> dict[str, torch.Tensor]:
    """A causal prompt's text inputs for a `generate` call continuing from the cache, `new_tokens` longer.

    Media inputs (pixel values, ...) are dropped: their placeholders are in the cached prefix, so the
    second call's uncached tokens hold none (passing them again fails: "Image features and image
    tokens do not match, tokens: 0"). The attention mask grows by ones, `mm_token_type_ids` by zeros
    and other per-token inputs by their last column, as `generate` extends them between its own steps.
    """
    kept = {}
    for name in ("attention_mask", *PER_TOKEN):
        if name in tensors:
            value = tensors[name]
            if name in _EXTENDED_WITH:  # the mask by ones, media token types by zeros (text)
                tail = torch.full((value.shape[0], new_tokens), _EXTENDED_WITH[name], dtype=value.dtype)
            else:
                tail = value[:, -1:].expand(-1, new_tokens, *value.shape[2:])
            kept[name] = torch.cat([value, tail.to(value.device)], dim=1)
    return kept


def generate_continued(subject: Subject, inputs: Mapping[str, Any], *, first: int, then: int) -> Generated:
    """`first` greedy tokens, then `then` more from a second `generate` fed the returned sequences and cache.

    The second call gets the first call's sequences (as the prompt of a causal model, with its
    text inputs extended over the new tokens and its media left in the cache, `_prompt_continued`;
    as the decoder's ids of an encoder-decoder, whose encoder inputs are passed again) and the
    returned cache. EOS is off in both calls (`NO_EOS`).
    """
    out = generate_output(subject, inputs, max_new_tokens=first, **NO_EOS)
    # the returned cache (and generate's argument) is named `cache` in recent 5.x, `past_key_values` before
    cache_name = "cache" if "cache" in out else "past_key_values"
    tensors = to_tensors({k: v for k, v in inputs.items() if k != "decoder_input_ids"})
    if subject.spec.has("encoder_decoder"):
        more = {"decoder_input_ids": out.sequences}
    else:
        tensors = _prompt_continued(tensors, first)
        more = {"input_ids": out.sequences}
    kwargs = subject.model_kwargs({**tensors, **more}, use_cache=True)
    for unused in ("return_dict", "position_ids"):
        kwargs.pop(unused, None)
    with torch.no_grad():
        rest = subject.model.generate(
            **kwargs, **{cache_name: out[cache_name]}, max_new_tokens=then, do_sample=False, num_beams=1,
            return_dict_in_generate=True, output_logits=True, **NO_EOS,
        )
    both = torch.cat([out.sequences, rest.sequences[:, out.sequences.shape[1]:]], dim=1)
    steps = torch.stack(out.logits + rest.logits, dim=1)
    return Generated(both[:, both.shape[1] - steps.shape[1]:].tolist(), steps)
