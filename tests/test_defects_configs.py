"""Planted defects for configs, call styles and load paths (issue 12).

Each defect hides where the suite's fixed config and call never look: behind a config flag, behind
a default call (no position ids), behind a tokenizer attribute, behind a half-precision load. Each
is fed through the property's own check function and must be caught; the healthy (or default)
case must pass. The config search must shrink to the one flag that matters.
"""

from __future__ import annotations

import copy
from dataclasses import replace

import pytest
import torch
from hypothesis import find, strategies as st

from properties import test_attention_backends as backends
from properties.test_attention_backends import check_backend_agrees
from properties.test_cache import MAX_CACHED_STEPS, check_cached_decoding
from properties.test_load_paths import check_head_load, saved
from properties.test_tokenizers import check_sides, template, tokenizer_of
from strategies.batches import model_inputs
from strategies.call_styles import CallStyle, tokenizer_styles
from strategies.configs import config_overrides, dimensions
from strategies.text import texts
from tests.planted import expect_caught, expect_passes, healthy
from zoo.config_variants import VARIANTS, VariantCache, styled
from zoo.generation import decoded_key
from zoo.tiny import ZOO

# -- a flag honoured by eager attention and ignored by sdpa ------------------------------------------
def _sdpa_ignoring_scaling(module, query, key, value, attention_mask, scaling=None, **kwargs):
    """sdpa that drops the module's `scaling` (uses 1/sqrt(head_dim)): right for the default config only."""
    from transformers.integrations.sdpa_attention import sdpa_attention_forward

    return sdpa_attention_forward(module, query, key, value, attention_mask, **kwargs)


DEFECTIVE_SDPA = "sdpa_ignoring_scaling"


def _register_defective_sdpa():
    from transformers import AttentionInterface
    from transformers.masking_utils import AttentionMaskInterface, sdpa_mask

    AttentionInterface.register(DEFECTIVE_SDPA, _sdpa_ignoring_scaling)
    AttentionMaskInterface.register(DEFECTIVE_SDPA, sdpa_mask)  # a new name gets no mask unless registered


def _check_defective_sdpa(name, case) -> None:
    """The attention property's own check, on the drawn variant, with the defective sdpa as candidate."""
    overrides, inputs = case
    variant = VARIANTS(name, overrides)
    try:
        check_backend_agrees(variant, DEFECTIVE_SDPA, inputs)
    finally:
        for implementation in ("eager", DEFECTIVE_SDPA):
            backends._COPIES.pop((id(variant), implementation), None)


def test_flag_only_defect_shrinks_to_the_flag():
    """An sdpa that ignores the attention scaling hides on the default GPT-2 config; the config search
    finds it and shrinks the overrides to one scaling flag."""
    _register_defective_sdpa()
    row, spec = ZOO["gpt2"], healthy("gpt2").spec
    cases = st.tuples(config_overrides(row.config_class, row.config), model_inputs(spec))
    failure = expect_caught(_check_defective_sdpa, cases, "gpt2", says=("attention back ends",))
    overrides = failure.example[0]
    assert len(overrides) == 1 and set(overrides) <= {"scale_attn_weights", "scale_attn_by_inverse_layer_idx"}, (
        f"the shrunk config should differ from the default in one scaling flag, got {overrides}"
    )


def test_flag_only_defect_hides_on_the_default_config():
    """The control: on the default config the defective sdpa agrees with eager (only a drawn flag finds it)."""
    _register_defective_sdpa()
    expect_passes(_check_defective_sdpa, st.tuples(st.just({}), model_inputs(healthy("gpt2").spec)), "gpt2")


# -- positions the model computes itself when none are passed ------------------------------------------
def _positions_ignore_cache(model):
    """When no position ids are passed, number the new tokens from 0 (forgetting the cached length)."""

    def hook(module, args, kwargs):
        if kwargs.get("position_ids") is None and kwargs.get("input_ids") is not None:
            length = kwargs["input_ids"].shape[1]
            kwargs["position_ids"] = torch.arange(length).unsqueeze(0).expand(kwargs["input_ids"].shape[0], -1)
        return args, kwargs

    model.register_forward_pre_hook(hook, with_kwargs=True)
    return model


@st.composite
def _decodings(draw, spec, side):
    steps = draw(st.integers(1, MAX_CACHED_STEPS))
    inputs = draw(model_inputs(spec, padding_side=side))
    return inputs, max(1, inputs[decoded_key(spec)].shape[1] - steps)


def _cached(subject, case):
    check_cached_decoding(subject, *case)


def test_default_positions_defect_is_caught_by_a_default_call():
    original = healthy("llama")
    broken = original.with_model(_positions_ignore_cache(copy.deepcopy(original.model)))
    default_call = CallStyle(positions="default", padding_side="right")
    expect_caught(_cached, _decodings(broken.spec, "right"), styled(broken, default_call),
                  says=("cache equivalence", "llama"))
    # the suite's explicit call never reaches the defect; a healthy model passes the default call
    expect_passes(_cached, _decodings(broken.spec, None), styled(broken, CallStyle()))
    expect_passes(_cached, _decodings(original.spec, "right"), styled(original, default_call))


# -- a tokenizer that ignores its padding_side attribute ------------------------------------------------
def _ignores_padding_attribute(tokenizer):
    broken = copy.deepcopy(tokenizer)

    class IgnoresPaddingSide(type(tokenizer)):
        padding_side = property(lambda self: "right", lambda self, value: None)

    broken.__class__ = IgnoresPaddingSide
    return broken


def _side_cases(subject):
    tokenizer = tokenizer_of(subject)
    prefix, suffix = template(tokenizer)
    return st.tuples(texts(1, 4, max_size=40), tokenizer_styles(),
                     st.integers(len(prefix) + len(suffix), subject.spec.max_length))


def test_padding_attribute_defect_is_caught():
    original = healthy("bert")
    broken = replace(original, processor=_ignores_padding_attribute(original.processor))
    failure = expect_caught(check_sides, _side_cases(broken), broken, says=("tokenizer sides as attributes",))
    _, style, _ = failure.example
    assert style.how == "attribute" and style.padding_side == "left", failure.example
    expect_passes(check_sides, _side_cases(original), original)


# -- a head left uninitialised by a half-precision load -------------------------------------------------
def _head_zeroed_in_half(head_class):
    class HeadZeroedInHalf(head_class):
        def _init_weights(self, module):
            super()._init_weights(module)
            weight = getattr(module, "weight", None)
            if isinstance(weight, torch.Tensor) and weight.dtype in (torch.float16, torch.bfloat16):
                with torch.no_grad():
                    weight.zero_()

    HeadZeroedInHalf.__name__ = f"{head_class.__name__}ZeroedInHalf"
    return HeadZeroedInHalf


def _bert_base_checkpoint():
    """The zoo BERT, its base model saved as a checkpoint, and that checkpoint's state dict."""
    subject = healthy("bert")
    return subject, saved(subject, "base"), subject.model.base_model.state_dict()


def test_head_not_initialised_on_half_load_is_caught():
    from transformers import BertForSequenceClassification

    subject, directory, checkpoint = _bert_base_checkpoint()
    broken = _head_zeroed_in_half(BertForSequenceClassification)
    check_head_load(subject, broken, directory, checkpoint, torch.float32)  # fp32: the defect hides
    with pytest.raises(AssertionError, match="not initialised"):
        check_head_load(subject, broken, directory, checkpoint, torch.float16)
    check_head_load(subject, BertForSequenceClassification, directory, checkpoint, torch.float16)


# -- the strategies and the cache themselves ----------------------------------------------------------------
def test_config_overrides_shrink_to_the_default():
    row = ZOO["llama"]
    assert find(config_overrides(row.config_class, row.config), lambda _: True) == {}
    names = {d.name for d in dimensions(row.config_class, row.config)}
    assert {"num_key_value_heads", "head_dim", "rope_parameters", "attention_bias", "hidden_act"} <= names


def test_variant_cache_is_bounded_and_builds_once():
    cache = VariantCache(budget=1)
    first = cache("bert", {})
    assert cache("bert", {}) is first and cache.builds == 1
    cache("bert", {"num_hidden_layers": 1})
    assert len(cache) == 1 and cache.builds == 2  # over budget: the least recently used went


# -- a weight a half-precision load leaves in fp32 ------------------------------------------------------
def _with_fp32_buffer(model_class):
    class WithFp32Buffer(model_class):
        """A class that creates one buffer in fp32 on purpose (like a router's bias or a rotary inv_freq)."""

        def __init__(self, config):
            super().__init__(config)
            self.register_buffer("kept_scale", torch.linspace(0.1, 1.0, 7, dtype=torch.float32))

    return WithFp32Buffer


def _half_load(model, keep_fp32=()):
    """`model` cast to fp16 as a half load gives it, the named tensors left in fp32."""
    half = copy.deepcopy(model).to(torch.float16)
    for name in keep_fp32:
        owner, _, attr = name.rpartition(".")
        module = half.get_submodule(owner) if owner else half
        value = dict(model.named_parameters(), **dict(model.named_buffers()))[name].detach().clone()
        if isinstance(getattr(module, attr), torch.nn.Parameter):
            setattr(module, attr, torch.nn.Parameter(value))
        else:
            module.register_buffer(attr, value)
    return half


def test_weight_left_in_fp32_by_a_half_load_is_caught():
    from properties.test_load_paths import _same_weights

    subject = healthy("bert")
    _same_weights(subject, _half_load(subject.model), subject.model, "dtype=float16", torch.float16)
    with pytest.raises(AssertionError, match=r"embeddings.word_embeddings.weight \(torch.float32\)"):
        _same_weights(subject, _half_load(subject.model, ["embeddings.word_embeddings.weight"]), subject.model,
                      "dtype=float16", torch.float16)
    declared = _with_fp32_buffer(type(subject.model))(copy.deepcopy(subject.model.config)).eval()
    _same_weights(subject, _half_load(declared, ["kept_scale"]), declared, "dtype=float16", torch.float16)


def test_a_checkpoint_config_saved_in_fp32_is_not_a_class_building_fp32(tmp_path):
    """A loaded checkpoint's config says `dtype: float32`; a half load overrides it, so no tensor of a plain
    model counts as built in fp32 (only an explicit `dtype=torch.float32` in the class's code does).
    A Llama sequence classifier built under a half default dtype from such a config came out fp32 whole."""
    from transformers import LlamaForSequenceClassification

    from zoo.fp32 import built_in_fp32

    torch.manual_seed(0)
    LlamaForSequenceClassification(copy.deepcopy(healthy("llama").model.config)).save_pretrained(tmp_path)
    model = LlamaForSequenceClassification.from_pretrained(tmp_path)
    assert not [key for key in model.state_dict() if built_in_fp32(model, key, torch.float16)]
    declared = _with_fp32_buffer(type(model))(copy.deepcopy(model.config))
    assert built_in_fp32(declared, "kept_scale", torch.float16)


# -- new head parameters a class declares absent from checkpoints, and ones a leaked pattern hides -------
def _head_declaring(head_class, pattern: str, *, on_class: bool):
    """`head_class` whose `_keys_to_ignore_on_load_missing` covers `pattern`: declared by the class itself
    (PocketTTS's training-only loss_weighting), or only merged into the instance after post_init, as a
    submodel's unprefixed pattern is (Seamless's t2u_model 'vocoder' hiding the top-level vocoder)."""
    class Declaring(head_class):
        _keys_to_ignore_on_load_missing = [pattern] if on_class else None

        def post_init(self):
            super().post_init()
            if not on_class:
                self._keys_to_ignore_on_load_missing.add(pattern)

    Declaring.__name__ = f"{head_class.__name__}{'Declaring' if on_class else 'Leaking'}"
    return Declaring


def test_head_keys_declared_not_missing_pass_and_leaked_ones_are_caught():
    from transformers import BertForSequenceClassification

    subject, directory, checkpoint = _bert_base_checkpoint()
    declared = _head_declaring(BertForSequenceClassification, r"classifier\.", on_class=True)
    check_head_load(subject, declared, directory, checkpoint, torch.float32)
    leaked = _head_declaring(BertForSequenceClassification, r"classifier\.", on_class=False)
    with pytest.raises(AssertionError, match=r"new parameters not reported missing: \['classifier\.bias'"):
        check_head_load(subject, leaked, directory, checkpoint, torch.float32)


@pytest.mark.parametrize("name", ["t5", "bart"])
def test_static_cache_reaches_encoder_decoders_whose_encoder_runs_first(name):
    """Cached decoding runs the encoder once and passes its output (as generate does); the static cache's
    cross-attention half is then sized from that output. Sized from the call's input_ids, which such a
    call no longer has, it was empty, the probe raised, and the static kind silently left the draw."""
    from zoo.config_variants import accepted_cache_kinds

    assert "static" in accepted_cache_kinds(name)
