"""The core properties on drawn configs and call styles (mark `configs`).

Each test draws config overrides for the subject's zoo family (`strategies.configs`: flags and
sizes that change the forward's code path, shrinking to the default config), builds that variant
once (`zoo.config_variants.VARIANTS`, an LRU cache bounded by bytes), draws a call style
(`strategies.call_styles`: explicit or default position ids, cache object kind, return_dict,
generate settings, padding side) and runs the existing properties' own check functions on it:
finite, shape contract, batch invariance, padding amount, cache equivalence, eager vs sdpa.
A failure names the drawn overrides and call style in its message and in the failure artifact
(`record(..., config=..., call_style=...)`). Checkpoints have a fixed config: only zoo models run.

Selected with `pytest properties/ -m configs`; see the README section "Configs and call styles".
"""

from __future__ import annotations

from contextlib import contextmanager
from dataclasses import replace

import pytest
import torch
from hypothesis import given, strategies as st

from properties import test_attention_backends as backends
from properties.artifacts import record
from properties.test_attention_backends import check_backend_agrees
from properties.test_batching import check_batch_invariance, check_padding_amount
from properties.test_cache import MAX_CACHED_STEPS, MAX_NEW_TOKENS, check_cached_decoding, check_generate_cache
from properties.test_call_forms import check_tuple_outputs
from properties.test_finite import check_finite
from properties.test_shapes import check_shapes
from strategies.batches import compose, fillers, items, model_inputs
from strategies.call_styles import call_styles
from strategies.config_rules import DRAWN_TOGETHER
from strategies.configs import config_overrides
from zoo.config_variants import VARIANTS, accepted_cache_kinds, styled
from zoo.generation import decoded_key
from zoo.tiny import ZOO

pytestmark = pytest.mark.configs

GENERATE_DEFAULTS = "generate defaults"


# -- drawing a case: config overrides, the variant, a call style -------------------------------------
def zoo_name(subject) -> str:
    if subject.spec.source != "zoo" or subject.name not in ZOO:
        pytest.skip(f"{subject.name} is a checkpoint: its config is fixed (config strategies need a zoo row)")
    return subject.name


def draw_case(data, subject, *, together=()):
    """`(overrides, style, styled variant)` for the subject's zoo family (`together`: see config_overrides)."""
    name = zoo_name(subject)
    row = ZOO[name]
    overrides = data.draw(config_overrides(row.config_class, row.config, together=together), label="config overrides")
    style = data.draw(call_styles(subject.spec, cache_kinds=accepted_cache_kinds(name)), label="call style")
    record(subject, {}, prop="config builds", config=overrides, call_style=style.as_dict())  # if the build fails
    with drawn(overrides, style):
        variant = VARIANTS(name, overrides)
    return overrides, style, styled(variant, style)


@contextmanager
def drawn(overrides: dict, style):
    """Adds the drawn config and call style to the message of any failure raised inside (the
    findings list matches messages, so a finding can name the config that shows it)."""
    try:
        yield
    except Exception as exc:
        context = (f"\n  drawn config overrides: {overrides or '{} (the default config)'}"
                   f"\n  call style: {style}")
        try:
            wrapped = type(exc)(f"{exc}{context}")
        except Exception:  # an exception type that takes other arguments: keep it, add a note
            exc.add_note(context)
            raise
        raise wrapped.with_traceback(exc.__traceback__) from None


def _record(variant, inputs, overrides, style, **details):
    record(variant, inputs, config=overrides, call_style=style.as_dict(), **details)


# -- a check of call styles themselves -----------------------------------------------------------------
def check_generate_defaults(subject, inputs, max_new_tokens: int) -> None:
    """`generate` given only the inputs and `max_new_tokens` gives the sequences of `generate` with the
    generation config's settings passed explicitly (greedy or sampling, beams, cache, pad and eos ids)."""
    config = subject.model.generation_config
    if config.do_sample:
        return  # sampling: the two calls draw different random numbers
    kwargs = subject.model_kwargs({k: v for k, v in inputs.items() if k != "decoder_input_ids"})
    for explicit in ("return_dict", "position_ids", "use_cache"):  # generate derives them itself
        kwargs.pop(explicit, None)
    settings = {"do_sample": False, "num_beams": config.num_beams or 1, "use_cache": config.use_cache,
                "pad_token_id": config.pad_token_id, "eos_token_id": config.eos_token_id}
    with torch.no_grad():
        by_default = subject.model.generate(**kwargs, max_new_tokens=max_new_tokens)
        explicit = subject.model.generate(**kwargs, max_new_tokens=max_new_tokens, **settings)
    assert by_default.tolist() == explicit.tolist(), (
        f"[{subject.name}] {GENERATE_DEFAULTS}: generate() with its defaults gave {by_default.tolist()}, "
        f"with the generation config's settings passed explicitly ({settings}) {explicit.tolist()}"
    )


# -- strategies for inputs padded on the style's side --------------------------------------------------
@st.composite
def padded_batches(draw, spec, side):
    count = draw(st.integers(2, 4), label="batch size")
    drawn_items = draw(items(spec, count), label="items")
    filler = draw(fillers(spec), label="filler id (None: pad token)") if spec.has("text") else None
    return compose(spec, drawn_items, padding_side=side, filler=filler)


@st.composite
def padding_pairs(draw, spec, side):
    count = draw(st.integers(1, 4), label="batch size")
    drawn_items = draw(items(spec, count, max_length=spec.max_length - 1), label="items")
    tight = compose(spec, drawn_items, padding_side=side)
    extra = draw(st.integers(1, spec.max_length - tight.inputs["input_ids"].shape[1]), label="extra padding")
    filler = draw(fillers(spec), label="filler id (None: pad token)")
    return tight, compose(spec, drawn_items, padding_side=side, extra_padding=extra, filler=filler)


# -- the tests -------------------------------------------------------------------------------------------
@given(data=st.data())
def test_configs_forward(subject, data):
    """Finite outputs, the shape contract and return_dict on a drawn config and call style."""
    overrides, style, variant = draw_case(data, subject, together=DRAWN_TOGETHER)
    inputs = data.draw(model_inputs(variant.spec, padding_side=style.padding_side), label="inputs")
    _record(variant, inputs, overrides, style, prop="finite")
    with drawn(overrides, style):
        check_finite(variant, inputs)
        check_shapes(variant, inputs)
        if not style.return_dict:
            check_tuple_outputs(variant, inputs)


@given(data=st.data())
def test_configs_batch_invariance(subject, data):
    overrides, style, variant = draw_case(data, subject)
    batch = data.draw(padded_batches(variant.spec, style.padding_side), label="batch")
    _record(variant, batch.inputs, overrides, style, prop="batch invariance", items=batch.items)
    with drawn(overrides, style):
        check_batch_invariance(variant, batch)


@pytest.mark.needs("text")
@given(data=st.data())
def test_configs_padding_amount(subject, data):
    overrides, style, variant = draw_case(data, subject)
    tight, padded = data.draw(padding_pairs(variant.spec, style.padding_side), label="tight and padded")
    _record(variant, tight.inputs, overrides, style, prop="padding amount", other_inputs=padded.inputs)
    with drawn(overrides, style):
        check_padding_amount(variant, (tight, padded))


@pytest.mark.needs("cache")
@given(data=st.data())
def test_configs_cached_decoding(subject, data):
    overrides, style, variant = draw_case(data, subject)
    steps = data.draw(st.integers(1, MAX_CACHED_STEPS), label="cached steps")
    inputs = data.draw(model_inputs(variant.spec, padding_side=style.padding_side), label="inputs")
    prefix = max(1, inputs[decoded_key(variant.spec)].shape[1] - steps)
    _record(variant, inputs, overrides, style, prop="cache equivalence", prefix_length=prefix)
    with drawn(overrides, style):
        check_cached_decoding(variant, inputs, prefix)


@pytest.mark.needs("cache")
@given(data=st.data())
def test_configs_generate(subject, data):
    """Greedy generate with and without the cache, and with the generation config's defaults."""
    overrides, style, variant = draw_case(data, subject)
    new_tokens = data.draw(st.integers(1, MAX_NEW_TOKENS), label="max new tokens")
    spec = variant.spec
    room = spec.max_length - new_tokens if spec.has("causal") else spec.max_length
    inputs = data.draw(model_inputs(replace(spec, max_length=room), padding_side=style.padding_side), label="prompt")
    _record(variant, inputs, overrides, style, prop="cache equivalence", max_new_tokens=new_tokens)
    with drawn(overrides, style):
        if style.generate == "defaults":
            check_generate_defaults(variant, inputs, new_tokens)
        else:
            check_generate_cache(variant, inputs, new_tokens)


@given(data=st.data())
def test_configs_eager_vs_sdpa(subject, data):
    overrides, style, variant = draw_case(data, subject)
    inputs = data.draw(model_inputs(variant.spec, padding_side=style.padding_side), label="inputs")
    _record(variant, inputs, overrides, style, prop="attention back ends", backend="sdpa", replay={
        "kind": "compare", "actual": {"attn_implementation": "sdpa"},
        "expected": {"attn_implementation": "eager"}, "real_tokens_only": True,
    })
    try:
        with drawn(overrides, style):
            check_backend_agrees(variant, "sdpa", inputs)
    finally:  # the back-end copies are per subject: a drawn variant's must not outlive its example
        for implementation in ("eager", "sdpa"):
            backends._COPIES.pop((id(variant), implementation), None)
