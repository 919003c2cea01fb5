"""Planted defects for cache equivalence, precision and gradients: each property must catch its defect.

Every test breaks a private copy of a zoo model the way real code goes wrong (an off-by-one cache
position, a leftover autocast, an fp16 attention without upcasting, an outlier weight that int8
cannot hold, a NaN-gradient `where`, reentrant checkpointing under frozen embeddings, a dropout with
its own RNG), runs the property's own check and strategy until it fails, and checks the message and
the shrunk input. Each control runs the same search on the healthy model and finds nothing.
"""


import numpy as np
import pytest
import torch
from transformers import AttentionInterface
from transformers.masking_utils import AttentionMaskInterface, sdpa_mask

from properties import test_cache as cache
from properties import test_gradients as grads
from properties import test_precision as precision
from strategies.batches import model_inputs
from tests.planted import breakable, expect_caught, expect_passes, healthy, shift_cached_positions
from zoo.catalog import build_catalog_subject
from zoo.compat import CHECKPOINTING_ENTRY_POINT


# -- adapters: the cache and half-precision checks take more than one drawn value ---------------------
def cached_decoding(subject, case):
    cache.check_cached_decoding(subject, *case)


def generate_cache(subject, case):
    cache.check_generate_cache(subject, *case)


def generate_batch(subject, case):
    cache.check_generate_batch(subject, *case)


def float16(subject, inputs):
    precision.check_half_precision(subject, inputs, torch.float16)


def _subclass(model, name: str, **methods):
    """Swap the model's class for a subclass overriding `methods` (survives the deep copies checks make)."""
    model.__class__ = type(type(model).__name__ + name, (type(model),), methods)
    return model


# -- cache equivalence ------------------------------------------------------------------------------


def _shift_cached_decoder_positions(model):
    """The same bug in a learned decoder position embedding: on cached calls it looks one position ahead."""
    embed = model.get_decoder().embed_positions
    forward = embed.forward

    def shifted(input_ids, cache_length=0, position_ids=None):
        if cache_length and position_ids is not None:
            position_ids = position_ids + 1
        return forward(input_ids, cache_length, position_ids=position_ids)

    embed.forward = shifted
    return model


@pytest.mark.parametrize("name, plant", [("llama", shift_cached_positions), ("bart", _shift_cached_decoder_positions)])
def test_cache_catches_wrong_cached_positions(name, plant):
    subject = breakable(name)
    plant(subject.model)
    failure = expect_caught(cached_decoding, cache.decoding(subject.spec), subject,
                            says=(f"[{name}] cache equivalence (cached decoding after a", "'logits' differs beyond",
                                  "rtol=1e-05, atol=1e-05", "max abs diff"))
    inputs, prefix_length = failure.example
    assert inputs[cache.decoded_key(subject.spec)].shape == (1, prefix_length + 1)  # shrunk: one item, one cached step
    expect_caught(generate_cache, cache.prompts(subject.spec), subject,
                  says=(f"[{name}] cache equivalence (generate with vs without cache", "logits at generated step 1"))


@pytest.mark.parametrize("name", ["llama", "bart"])
def test_cache_passes_healthy_models(name):
    subject = healthy(name)
    expect_passes(cached_decoding, cache.decoding(subject.spec), subject)
    expect_passes(generate_cache, cache.prompts(subject.spec), subject)
    expect_passes(generate_batch, cache.batched_prompts(subject.spec), subject)


def _encoder_refuses_cache(model, calls: list):
    """Switch Transformers' forward hands `use_cache` to its encoder stack, which refuses `True`: here the
    same refusal on a whole-model call that runs the encoder with the cache on; `calls` counts encoder runs."""
    model.get_encoder().register_forward_hook(lambda module, args, out: calls.append(1))

    def forward(self, *args, use_cache=None, encoder_outputs=None, **kwargs):
        if use_cache and encoder_outputs is None:
            raise ValueError("`use_cache` can only be set to `True` if the stack is used as a decoder")
        return type(self).__mro__[1].forward(self, *args, use_cache=use_cache, encoder_outputs=encoder_outputs, **kwargs)

    return _subclass(model, "EncoderRefusesCache", forward=forward)


def test_cached_decoding_runs_the_encoder_once_as_generate():
    """An encoder-decoder's encoder runs once, without the cache flag, and every decoding call reuses its
    output (as `generate` does): an encoder that refuses `use_cache` passes, a cache bug is still caught."""
    subject, calls = breakable("bart"), []
    _encoder_refuses_cache(subject.model, calls)
    inputs = {"input_ids": np.array([[5, 6, 7]]), "attention_mask": np.ones((1, 3), dtype=np.int64),
              "decoder_input_ids": np.array([[2, 8, 9, 10]])}
    cache.check_cached_decoding(subject, inputs, 1)  # the full forward runs the encoder too
    assert len(calls) == 2, f"the encoder ran {len(calls) - 1} times for 3 cached calls, expected once"
    expect_passes(cached_decoding, cache.decoding(subject.spec), subject)
    _shift_cached_decoder_positions(subject.model)
    expect_caught(cached_decoding, cache.decoding(subject.spec), subject,
                  says=("[bart] cache equivalence (cached decoding after a", "'logits' differs beyond"))


def test_cached_decoding_passes_switch_transformers():
    """The registry's Switch Transformers (its encoder stack refuses `use_cache=True`) passes cached decoding."""
    subject = build_catalog_subject("switch_transformers-cond-gen")
    expect_passes(cached_decoding, cache.decoding(subject.spec), subject)


def test_generate_batch_catches_positions_ignoring_padding():
    """GPT-2 without position ids derived from the mask: left padding shifts every real token's position."""
    subject = breakable("gpt2")
    forward = subject.model.forward
    subject.model.forward = lambda *args, position_ids=None, **kwargs: forward(*args, **kwargs)
    failure = expect_caught(generate_batch, cache.batched_prompts(subject.spec), subject,
                            says=("[gpt2] cache equivalence (generate in a batch of", "left padding) vs alone"))
    batch, _ = failure.example
    assert len(batch) == 2  # shrunk to the smallest batch that has padding


# -- precision --------------------------------------------------------------------------------------
def _leftover_autocast(model):
    """A forward left inside `torch.autocast(bfloat16)` (a debugging leftover): fp32 matmuls run in bf16.

    Autocast leaves float64 alone, so the float64 reference stays exact.
    """

    def forward(self, *args, **kwargs):
        with torch.autocast("cpu", dtype=torch.bfloat16):
            return super(type(self), self).forward(*args, **kwargs)

    return _subclass(model, "WithAutocast", forward=forward)


def test_float64_reference_catches_leftover_autocast():
    subject = breakable("bert")
    _leftover_autocast(subject.model)
    failure = expect_caught(precision.check_float64_reference, model_inputs(subject.spec), subject,
                            says=("[bert] precision (torch.float32 vs float64)", "x max(1, max|ref|)", "max abs diff"))
    assert failure.example["input_ids"].shape == (1, 1)  # shrunk: a single token shows it


def fp16_unsafe_attention(module, query, key, value, attention_mask, scaling=None, dropout=0.0, **kwargs):
    """Attention in the model's dtype with no upcast: a -1e9 mask constant and a softmax in fp16.

    In fp32 this is ordinary eager attention. In fp16, -1e9 overflows to -inf, a fully masked row
    (a left-padding query) becomes NaN, and the NaN reaches real tokens through the values.
    """
    groups = query.shape[1] // key.shape[1]
    key, value = key.repeat_interleave(groups, 1), value.repeat_interleave(groups, 1)
    scores = (query @ key.transpose(2, 3)) * scaling
    if attention_mask is not None:
        scores = scores + (~attention_mask[..., : key.shape[-2]]).to(scores.dtype) * -1e9
    probs = scores.softmax(dim=-1)
    return (probs @ value).transpose(1, 2).contiguous(), probs


def test_half_precision_catches_attention_without_upcast():
    AttentionInterface.register("hfprops_fp16_unsafe", fp16_unsafe_attention)
    AttentionMaskInterface.register("hfprops_fp16_unsafe", sdpa_mask)  # boolean masks, True = attend
    subject = breakable("llama")
    subject.model.set_attn_implementation("hfprops_fp16_unsafe")
    expect_passes(precision.check_float64_reference, model_inputs(subject.spec), subject)  # fine in fp32
    failure = expect_caught(float16, model_inputs(subject.spec), subject,
                            says=("[llama] precision (torch.float16 vs torch.float32)", "non-finite"))
    mask = failure.example["attention_mask"]
    assert mask.shape[0] == 2 and not mask.all()  # shrunk: two items, one of them left-padded


def test_quantized_catches_outlier_weights():
    """One weight per matrix 1000x the others (LLM.int8's outlier features, found in every layer of large
    models): per-tensor int8 scales then round every other weight to zero."""
    subject = breakable("bert")
    with torch.no_grad():
        for module in subject.model.modules():
            if isinstance(module, torch.nn.Linear):
                module.weight[0, 0] = 1000 * module.weight.abs().max()
    expect_passes(precision.check_float64_reference, model_inputs(subject.spec), subject)  # fine in fp32
    failure = expect_caught(precision.check_quantized, model_inputs(subject.spec), subject,
                            says=("[bert] precision (dynamic int8 vs torch.float32)", "atol=0.4 x max(1, max|ref|)"))
    assert failure.example["input_ids"].shape[0] == 1  # shrunk to a batch of one


def _with_fp32_gate(subject, explicit: bool):
    """The subject's model with a router-like gate that upcasts its input to fp32 and multiplies it with
    its own weight (Inkling2's router), the weight built in fp32 on purpose (`explicit`) or in the
    default dtype (a gate that only works while the whole model is fp32)."""
    base = type(subject.model)

    class WithGate(base):
        def __init__(self, config):
            super().__init__(config)
            size = config.hidden_size
            self.gate = torch.nn.Parameter(torch.eye(size, dtype=torch.float32 if explicit else None) * 0.5)

        def forward(self, *args, **kwargs):
            out = super().forward(*args, **kwargs)
            hidden = out.last_hidden_state
            out.last_hidden_state = hidden + (hidden.float() @ self.gate.T).to(hidden.dtype)
            return out

    model = WithGate(subject.model.config).eval()
    model.load_state_dict(subject.model.state_dict(), strict=False)
    return subject.with_model(model)


def test_half_copy_keeps_what_the_class_builds_in_fp32():
    """A half copy is cast as `from_pretrained(dtype=...)` casts it: a tensor the class builds in fp32
    and the `_keep_in_fp32_modules(_strict)` entries of the dtype stay fp32, the rest is cast; a gate
    that needs fp32 but is not built so still breaks the half copy."""
    subject = _with_fp32_gate(healthy("bert"), explicit=True)
    half = subject.converted(dtype=torch.float16)
    assert half.model.gate.dtype == torch.float32 and half.dtype == torch.float16
    assert half.model.embeddings.word_embeddings.weight.dtype == torch.float16
    assert subject.converted(dtype=torch.float64).model.gate.dtype == torch.float32  # as a float64 load
    expect_passes(float16, model_inputs(subject.spec), subject)
    expect_passes(precision.check_float64_reference, model_inputs(subject.spec), subject)
    subject.model._keep_in_fp32_modules_strict = {"pooler"}  # post_init gathers the class lists per instance
    assert subject.converted(dtype=torch.bfloat16).model.pooler.dense.weight.dtype == torch.float32
    assert subject.converted(dtype=torch.float64).model.pooler.dense.weight.dtype == torch.float64
    broken = _with_fp32_gate(healthy("bert"), explicit=False)
    with pytest.raises(RuntimeError, match="same dtype"):
        float16(broken, {"input_ids": [[1, 2]], "attention_mask": [[1, 1]]})


def test_compute_dtype_is_judged_without_declared_fp32_modules():
    """A half load keeps the declared fp32 modules in fp32, and in a tiny model they may outweigh the
    rest (nemo_speechlm's audio tower and projector: 63788 of 114414 weights, transformers 5.25.0): the
    compute dtype (Subject.dtype, repro's mirror) is the rest's. A load that left undeclared modules in
    fp32 (ignoring `dtype=`) still reads fp32, and a model kept wholly in fp32 reads fp32."""
    from properties.repro import compute_dtype

    subject = breakable("bert")
    subject.model._keep_in_fp32_modules_strict = {"embeddings", "encoder"}  # 26570 of 27626 weights
    half = subject.converted(dtype=torch.bfloat16)
    assert half.model.encoder.layer[0].output.dense.weight.dtype == torch.float32
    assert half.model.pooler.dense.weight.dtype == torch.bfloat16
    assert half.dtype == compute_dtype(half.model) == torch.bfloat16
    ignored = breakable("bert").converted(dtype=torch.bfloat16)
    ignored.model.embeddings.float()  # undeclared, and outweighs the pooler
    ignored.model.encoder.float()
    assert ignored.dtype == compute_dtype(ignored.model) == torch.float32
    whole = breakable("bert")
    whole.model._keep_in_fp32_modules_strict = {"embeddings", "encoder", "pooler"}
    assert whole.dtype == compute_dtype(whole.model) == torch.float32
    assert whole.converted(dtype=torch.bfloat16).dtype == compute_dtype(subject.model) == torch.float32


@pytest.mark.parametrize("name", ["bert", "llama"])
def test_precision_passes_healthy_models(name):
    subject = healthy(name)
    for check in (precision.check_float64_reference, float16, precision.check_quantized):
        expect_passes(check, model_inputs(subject.spec), subject)


# -- gradients --------------------------------------------------------------------------------------
def test_finite_gradients_catch_nan_through_where():
    """A 'safe' sqrt activation `where(x > 0, x.sqrt(), x)`: finite forward, NaN gradient for x <= 0."""
    subject = breakable("bert")
    subject.model.encoder.layer[0].intermediate.register_forward_hook(
        lambda module, args, out: torch.where(out > 0, out.sqrt(), out)
    )
    failure = expect_caught(grads.check_finite_gradients, model_inputs(subject.spec), subject,
                            says=("[bert] gradients: non-finite gradients in", "NaN"))
    assert failure.example["input_ids"].shape == (1, 1)  # shrunk: a single token shows it


def test_finite_gradients_catch_detached_layer():
    """A `.detach()` left in a block's output (a debugging or feature-freezing leftover): the weights
    below it silently stop learning."""
    subject = breakable("bert")
    subject.model.encoder.layer[0].intermediate.register_forward_hook(lambda module, args, out: out.detach())
    failure = expect_caught(grads.check_finite_gradients, model_inputs(subject.spec), subject,
                            says=("[bert] gradients: 2 trainable parameters received no gradient",
                                  "encoder.layer.0.intermediate.dense.weight"))
    assert failure.example["input_ids"].shape == (1, 1)


def _carried_to_next_token(model):
    """A decay that only acts from the second token on (RWKV's time_decay carries state forward): a
    one-token input leaves it without a gradient although the model uses it."""

    class CarriedDecay(type(model)):
        def __init__(self, config):
            super().__init__(config)
            self.decay = torch.nn.Parameter(torch.full((config.hidden_size,), 0.5))

        def forward(self, *args, **kwargs):
            out = super().forward(*args, **kwargs)
            hidden = out.last_hidden_state
            if hidden.shape[1] > 1:  # a one-token input never reaches the decay (as RWKV's state update)
                carried = torch.cat([torch.zeros_like(hidden[:, :1]), hidden[:, :-1] * self.decay], dim=1)
                out.last_hidden_state = hidden + carried
            return out

    carried = CarriedDecay(model.config)
    carried.load_state_dict(model.state_dict(), strict=False)
    return carried


def test_finite_gradients_judge_a_carried_parameter_on_a_longer_input():
    """A parameter that only acts on later tokens is judged on the input one token longer; one that never
    gets a gradient (a detached layer) is still caught on that longer input too."""
    subject = healthy("bert")
    carried = subject.with_model(_carried_to_next_token(subject.model))
    one = {"input_ids": np.array([[5]]), "attention_mask": np.array([[1]])}
    assert grads.gradients(grads.training_copy(carried), one, seed=grads.SEED)[1]["decay"] is None
    assert grads.one_token_longer(carried, one)["input_ids"].shape == (1, 2)
    expect_passes(grads.check_finite_gradients, model_inputs(carried.spec), carried)
    detached = subject.with_model(_carried_to_next_token(subject.model))  # training copies are cached per model
    detached.model.encoder.layer[0].intermediate.register_forward_hook(lambda module, args, out: out.detach())
    failure = expect_caught(grads.check_finite_gradients, model_inputs(detached.spec), detached,
                            says=("encoder.layer.0.intermediate.dense.weight",))
    assert "'decay'" not in failure.message


def _reentrant_checkpointing(model):
    """Checkpointing as transformers < 4.35 (and much custom model code) did it: reentrant, and without
    `enable_input_require_grads`. With frozen input embeddings (the usual adapter fine-tuning setup) no
    input of a checkpointed layer requires grad, so the layers' weights silently get no gradient."""

    def enable(self, gradient_checkpointing_kwargs=None, *args, **kwargs):
        return getattr(super(type(self), self), CHECKPOINTING_ENTRY_POINT)({"use_reentrant": True}, *args, **kwargs)

    model.get_input_embeddings().requires_grad_(False)
    return _subclass(model, "Reentrant", **{CHECKPOINTING_ENTRY_POINT: enable},
                     enable_input_require_grads=lambda self: None)


@pytest.mark.filterwarnings("ignore:None of the inputs have requires_grad=True")
def _refusing_training(model, message: str):
    """The model's class with a `duration_labels` argument, whose training forward raises `message`."""

    class RefusesTraining(type(model)):
        def forward(self, input_ids=None, attention_mask=None, duration_labels=None, **kwargs):
            if self.training and duration_labels is None:
                raise ValueError(message)
            return super().forward(input_ids=input_ids, attention_mask=attention_mask, **kwargs)

    refusing = RefusesTraining(model.config)
    refusing.load_state_dict(model.state_dict())
    return refusing


def test_a_model_refusing_to_train_without_its_labels_is_skipped_and_other_errors_are_not():
    """A training forward that asks for labels the suite does not make (FastSpeech2Conformer: 'All labels
    must be provided to run in training mode.') skips the gradient properties with the model's words; a
    ValueError about anything else stays an error."""
    subject = healthy("bert")
    inputs = {"input_ids": np.array([[5, 6]]), "attention_mask": np.array([[1, 1]])}
    refusing = subject.with_model(_refusing_training(subject.model, "All labels must be provided to run in training mode."))
    with pytest.raises(pytest.skip.Exception, match="refuses a training forward without \\['duration_labels'\\]"):
        with grads.refusal_skipped():
            grads.check_finite_gradients(refusing, inputs)
    broken = subject.with_model(_refusing_training(subject.model, "shapes do not match"))
    with pytest.raises(ValueError, match="shapes do not match"):
        with grads.refusal_skipped():
            grads.check_finite_gradients(broken, inputs)


def test_checkpointing_catches_dropped_gradients():
    subject = breakable("llama")
    _reentrant_checkpointing(subject.model)
    failure = expect_caught(grads.check_checkpointing, model_inputs(subject.spec), subject,
                            says=("[llama] gradients (activation checkpointing vs none):",
                                  "get a gradient without checkpointing but none with it", "model.layers.0."))
    assert failure.example["input_ids"].shape == (1, 1)  # shrunk: a single token shows it


def _unseeded_dropout(module):
    """Dropout drawing from its own generator, seeded once from the OS: `torch.manual_seed` does not reach it."""
    generator = torch.Generator()
    generator.seed()

    def drop(mod, args, out):
        if not mod.training:
            return out
        keep = torch.rand(out.shape, generator=generator) > 0.1
        return out * keep / 0.9

    module.register_forward_hook(drop)


def test_dropout_reproducibility_catches_unseeded_dropout():
    subject = breakable("gpt2")
    _unseeded_dropout(subject.model.transformer.h[0].mlp)
    failure = expect_caught(grads.check_dropout_reproducible, model_inputs(subject.spec), subject,
                            says=("[gpt2] gradients (dropout with the same seed twice)", "rtol=0, atol=0"))
    assert failure.example["input_ids"].shape == (1, 1)  # shrunk: a single token shows it


@pytest.mark.parametrize("name", ["bert", "llama", "gpt2"])
def test_gradients_pass_healthy_models(name):
    subject = healthy(name)
    for check in (grads.check_finite_gradients, grads.check_checkpointing, grads.check_dropout_reproducible):
        expect_passes(check, model_inputs(subject.spec), subject)


def _shift_cached_tokens(model):
    """A state-space model that reads the wrong token on every call continuing from a cache."""

    def forward(self, input_ids=None, *args, cache=None, **kwargs):
        if cache is not None:
            input_ids = (input_ids + 1) % self.config.vocab_size
        return type(self).__mro__[1].forward(self, input_ids, *args, cache=cache, **kwargs)

    return _subclass(model, "ShiftedCachedTokens", forward=forward)


def test_cached_decoding_drops_the_mask_where_generate_does():
    """Mamba's `generate` passes no attention mask once the cache holds the state (its forward masks only
    the call's tokens: a mask over past and new tokens broadcasts one new token to the mask's length);
    cached decoding then masks only the call's own tokens and passes (left padding included), Llama still
    gets its full mask, and a cache bug is still caught."""
    from zoo.generation import cached_logits, generate_drops_mask

    subject = build_catalog_subject("mamba-causal-lm")
    inputs = {"input_ids": np.array([[3, 4, 5, 6, 7, 8]]), "attention_mask": np.ones((1, 6), dtype=np.int64)}
    assert cached_logits(subject, inputs, 4).shape == (1, 6, subject.model.config.vocab_size)
    expect_passes(cached_decoding, cache.decoding(subject.spec), subject)
    llama = healthy("llama")
    ids, mask = torch.tensor([[3, 4, 5]]), torch.ones(1, 3, dtype=torch.long)
    with torch.no_grad():
        out = llama.model(input_ids=ids[:, :2], use_cache=True)
    assert not generate_drops_mask(llama.model, ids, mask, out.cache)
    _shift_cached_tokens(subject.model)
    expect_caught(cached_decoding, cache.decoding(subject.spec), subject,
                  says=("[mamba-causal-lm] cache equivalence (cached decoding after a", "'logits' differs beyond"))
