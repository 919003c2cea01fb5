"""Planted defects for the batching, inputs-untouched, attention back-end and bad-input properties.

Each test breaks a private copy of a zoo model the way real models break (an attention mask that is
ignored, batch items that leak into each other, an input normalized in place, attention computed in
bfloat16 without upcasting, NaN for unknown ids), lets the property's own strategy search for a
failing input through the property's own check, and checks the shrunk input and the message. The
controls run the same searches on the healthy models and find nothing.
"""

import pytest
import torch
from transformers import AttentionInterface
from transformers.integrations.sdpa_attention import sdpa_attention_forward
from transformers.masking_utils import AttentionMaskInterface, sdpa_mask

from properties import test_attention_backends as backends
from properties import test_bad_input as bad_input
from properties import test_batching as batching
from properties import test_inputs_untouched as untouched
from strategies.batches import bad_input_kinds, bad_inputs, composed_batches, model_inputs, padding_amounts, reordered_batches
from tests.planted import breakable, expect_caught, expect_passes, healthy, on_output, ignore_attention_mask
from zoo.tiny import ZOO_NAMES

# Text models whose input embeddings transformers exposes (CLIPModel does not: get_input_embeddings raises).
EMBEDDING_MODELS = ["bert", "gpt2", "llama", "t5", "roberta", "distilbert", "bart"]
DEFECT = 1e-3  # the size of shift the reordered tolerance must catch


def longest_item(batch) -> int:
    """Tokens in the longest item of a composed batch (0 for models without text)."""
    return max((item["input_ids"].shape[1] for item in batch.items if "input_ids" in item), default=0)




# -- batch invariance ------------------------------------------------------------------------------
@pytest.mark.parametrize("name", ZOO_NAMES)
def test_batch_invariance_catches_items_mixing(name):
    """Every item receives 0.1% of the batch mean (a normalization over the wrong axis)."""
    subject = breakable(name)
    on_output(subject.model, lambda out, kwargs: out + DEFECT * out.mean(dim=0, keepdim=True))
    failure = expect_caught(batching.check_batch_invariance, composed_batches(subject.spec), subject,
                            says=(f"[{name}] batch invariance", "max abs diff", "rtol=1e-05, atol=1e-05"))
    assert longest_item(failure.example) <= 1  # shrunk to one-token items


@pytest.mark.parametrize("name", ["bert", "gpt2"])
def test_batch_invariance_catches_ignored_attention_mask(name):
    subject = breakable(name)
    ignore_attention_mask(subject.model)
    failure = expect_caught(batching.check_batch_invariance, composed_batches(subject.spec), subject,
                            says=(f"[{name}] batch invariance", "max abs diff"))
    assert not failure.example.inputs["attention_mask"].all()  # only padding shows it


def test_batch_invariance_passes_healthy_models():
    for name in ZOO_NAMES:
        expect_passes(batching.check_batch_invariance, composed_batches(healthy(name).spec), healthy(name))


# -- batch order -----------------------------------------------------------------------------------
@pytest.mark.parametrize("name", ZOO_NAMES)
def test_batch_order_catches_row_leak(name):
    """Every row receives 0.1% of the first row (state kept from the first item of the batch)."""
    subject = breakable(name)
    on_output(subject.model, lambda out, kwargs: out + DEFECT * out[:1])
    failure = expect_caught(batching.check_batch_order, reordered_batches(subject.spec), subject,
                            says=(f"[{name}] batch order", "rows reordered as", "max abs diff"))
    assert longest_item(failure.example[0]) <= 1


def test_batch_order_passes_healthy_models():
    for name in ZOO_NAMES:
        expect_passes(batching.check_batch_order, reordered_batches(healthy(name).spec), healthy(name))


def layer_first_stack(out):
    """A per-layer output stacked layer-first, (2 layers, batch, ...) as RF-DETR's intermediate_hidden_states."""
    return torch.stack([out, 2 * out])


def test_batch_order_leaves_out_layer_first_stacks():
    """A batch of two rows meets a stack of two layers: its leading axis is not the batch (it stays 2 for a
    batch of one), so it is not reordered as rows; the row leak is still caught in the other outputs."""
    subject = breakable("bert")
    subject.model.register_forward_hook(
        lambda module, args, output: output.__setitem__("stacked", layer_first_stack(output["last_hidden_state"])))
    expect_passes(batching.check_batch_order, reordered_batches(subject.spec), subject)
    on_output(subject.model, lambda out, kwargs: out + DEFECT * out[:1])
    expect_caught(batching.check_batch_order, reordered_batches(subject.spec), subject,
                  says=("[bert] batch order", "'last_hidden_state'", "max abs diff"))


def test_select_rows_keeps_outputs_that_follow_the_batch():
    """Without `alone` a leading axis equal to the batch size is taken for the batch; with it only the
    outputs whose leading axis is 1 for a batch of one are."""
    subject = healthy("bert")
    outputs = {"rows": torch.arange(6.0).reshape(2, 3), "layers": torch.arange(12.0).reshape(2, 2, 3)}
    alone = {"rows": torch.zeros(1, 3), "layers": torch.zeros(2, 1, 3)}
    assert set(subject.select_rows(outputs, [1, 0], batch=2)) == {"rows", "layers"}
    picked = subject.select_rows(outputs, [1, 0], batch=2, alone=alone)
    assert set(picked) == {"rows"} and torch.equal(picked["rows"], outputs["rows"][[1, 0]])


# -- padding amount --------------------------------------------------------------------------------
# Not clip: its text tower is causal, so right padding is invisible to real tokens even unmasked.
@pytest.mark.parametrize("name", ["bert", "gpt2", "llama", "t5", "roberta", "distilbert", "bart"])
def test_padding_amount_catches_ignored_attention_mask(name):
    subject = breakable(name)
    ignore_attention_mask(subject.model)
    failure = expect_caught(batching.check_padding_amount, padding_amounts(subject.spec), subject,
                            says=(f"[{name}] padding amount", "more", "max abs diff"))
    tight, padded = failure.example
    assert len(tight) == 1 and padded.inputs["input_ids"].shape[1] == tight.inputs["input_ids"].shape[1] + 1


def test_padding_amount_passes_healthy_models():
    for name in ZOO_NAMES:
        if not healthy(name).spec.has("text"):
            continue
        expect_passes(batching.check_padding_amount, padding_amounts(healthy(name).spec), healthy(name))


# -- inputs untouched ------------------------------------------------------------------------------
def mutate_inputs_in_place(model):
    """The classic in-place bugs: the additive mask built in the caller's `attention_mask`, or
    pixel values / features clipped in place."""

    def pre_hook(module, args, kwargs):
        if kwargs.get("attention_mask") is not None:
            kwargs["attention_mask"].sub_(1).mul_(10000)  # (mask - 1) * 10000, written into the caller's tensor
        for key in ("pixel_values", "input_features"):
            if kwargs.get(key) is not None:
                kwargs[key].clamp_(-1.0, 1.0)
        return args, kwargs

    model.register_forward_pre_hook(pre_hook, with_kwargs=True)
    return model


@pytest.mark.parametrize("name", ZOO_NAMES)
def test_inputs_untouched_catches_in_place_changes(name):
    subject = breakable(name)
    mutate_inputs_in_place(subject.model)
    expect_caught(untouched.check_inputs_untouched, model_inputs(subject.spec), subject,
                  says=(f"[{name}] inputs untouched", "modified in place", "max abs diff"))


def test_inputs_untouched_passes_healthy_models():
    for name in ZOO_NAMES:
        expect_passes(untouched.check_inputs_untouched, model_inputs(healthy(name).spec), healthy(name))


# -- attention back ends ---------------------------------------------------------------------------
LOW_PRECISION = "bf16_sdpa_no_upcast"


def bf16_attention(module, query, key, value, attention_mask, **kwargs):
    """sdpa on bfloat16 copies of q, k, v (scores and softmax in bf16), the result cast back: no upcast."""
    low = {name: t.to(torch.bfloat16) for name, t in kwargs.items() if torch.is_tensor(t) and t.is_floating_point()}
    if attention_mask is not None and attention_mask.is_floating_point():
        attention_mask = attention_mask.to(torch.bfloat16)
    out, weights = sdpa_attention_forward(
        module, query.to(torch.bfloat16), key.to(torch.bfloat16), value.to(torch.bfloat16), attention_mask,
        **{**kwargs, **low},
    )
    return out.to(query.dtype), weights


AttentionInterface.register(LOW_PRECISION, bf16_attention)
AttentionMaskInterface.register(LOW_PRECISION, sdpa_mask)


@pytest.mark.parametrize("name", ZOO_NAMES)
def test_attention_backends_catch_low_precision_attention(name):
    subject = breakable(name)
    failure = expect_caught(backends.check_backend_agrees, model_inputs(subject.spec), subject, LOW_PRECISION,
                            says=(f"[{name}] attention back ends ({LOW_PRECISION} vs eager)", "max abs diff"))
    assert max(value.shape[0] for value in failure.example.values()) == 1


def test_attention_backends_pass_healthy_models():
    for name in ZOO_NAMES:
        expect_passes(backends.check_backend_agrees, model_inputs(healthy(name).spec), healthy(name), "sdpa")


# -- bad input -------------------------------------------------------------------------------------
class NanForUnknownIds(torch.nn.Module):
    """Input embeddings that clamp ids into the vocabulary and give NaN rows for ids outside it."""

    def __init__(self, embedding: torch.nn.Embedding):
        super().__init__()
        self.embedding = embedding
        self.weight = embedding.weight  # models read `.weight` of their input embeddings

    def forward(self, ids):
        rows = self.embedding(ids.clamp(0, self.embedding.num_embeddings - 1))
        return rows.masked_fill(((ids < 0) | (ids >= self.embedding.num_embeddings)).unsqueeze(-1), float("nan"))


@pytest.mark.parametrize("name", EMBEDDING_MODELS)
def test_bad_input_catches_nan_for_unknown_ids(name):
    subject = breakable(name)
    subject.model.set_input_embeddings(NanForUnknownIds(subject.model.get_input_embeddings()))
    failure = expect_caught(bad_input.check_bad_input_handled, bad_inputs(subject.spec, ("id outside the vocab",)),
                            subject, says=(f"[{name}] bad input (id outside the vocab", "non-finite"))
    assert failure.example.inputs["input_ids"].shape == (1, 1)


def test_bad_input_passes_healthy_models():
    """The control, on the kinds no recorded finding covers: masks of the wrong shape are accepted
    silently by transformers' masking_utils (a finding in properties/findings.toml, see below)."""
    for name in ZOO_NAMES:
        spec = healthy(name).spec
        kinds = tuple(k for k in bad_input_kinds(spec) if k != "mask shape mismatch")
        expect_passes(bad_input.check_bad_input_handled, bad_inputs(spec, kinds), healthy(name))


def test_bad_input_catches_a_mask_of_the_wrong_shape_accepted_silently():
    """The recorded finding itself: BERT accepts an all-ones mask of another length without a word."""
    subject = healthy("bert")
    expect_caught(bad_input.check_bad_input_handled, bad_inputs(subject.spec, ("mask shape mismatch",)), subject,
                  says=("[bert] bad input (mask shape mismatch", "accepted silently", "must raise"))


def test_bad_input_message_catches_low_level_errors():
    """The healthy zoo's out-of-vocabulary refusal is torch's embedding IndexError: unhelpful."""
    subject = healthy("bert")
    expect_caught(bad_input.check_refused_clearly, bad_inputs(subject.spec, ("id outside the vocab",)), subject,
                  says=("[bert] bad input message (id outside the vocab", "low-level error", "IndexError: index out of range"))


def test_bad_input_message_passes_explicit_checks():
    """The control: a model that checks its ids and raises a ValueError naming the problem passes."""
    subject = breakable("bert")
    vocab = subject.spec.vocab_size

    def check_ids(module, args, kwargs):
        ids = kwargs["input_ids"]
        if ids.numel() and (ids.min() < 0 or ids.max() >= vocab):
            raise ValueError(f"input_ids must lie in [0, {vocab}); got {int(ids.min())}..{int(ids.max())}")
        return args, kwargs

    subject.model.register_forward_pre_hook(check_ids, with_kwargs=True)
    expect_passes(bad_input.check_refused_clearly, bad_inputs(subject.spec, ("id outside the vocab",)), subject)
    # clip's too-long check is an explicit one in transformers itself
    expect_passes(bad_input.check_refused_clearly, bad_inputs(healthy("clip").spec, ("too long",)), healthy("clip"))
