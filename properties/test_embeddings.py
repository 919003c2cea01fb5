"""Resizing the token embeddings: growing the vocabulary keeps what was there.

After `resize_token_embeddings(n)` with `n` above the old vocabulary, every old row of the input
(and output) embedding is bit-identical, the outputs on old ids are unchanged (vocabulary-sized
outputs compared on their old columns), and a head tied to the input embedding is still tied.
Runs on a private copy: the session's model is never resized.
"""

from __future__ import annotations

import copy

import pytest
from transformers import PreTrainedModel
from hypothesis import given, settings, strategies as st

from devices.tolerance import EXACT, assert_outputs_close, tolerance
from properties.artifacts import record
from properties.examples import examples
from strategies.batches import model_inputs
from zoo.build import input_embedding

PROPERTY = "resize token embeddings"
MAX_GROWTH = 64


def refused_up_front(model, exc: NotImplementedError) -> bool:
    """Whether `exc` was raised in the body of the model class's own `resize_token_embeddings` override.

    Composites (EncoderDecoderModel, SpeechEncoderDecoderModel) and I-BERT override the method only
    to refuse with words naming what to resize instead: a documented refusal, not a defect. A
    NotImplementedError raised deeper, midway through PreTrainedModel's resize (an unhandled
    `set_input_embeddings`), is not a refusal and still fails."""
    tb = exc.__traceback__
    while tb.tb_next is not None:
        tb = tb.tb_next
    own = getattr(type(model).resize_token_embeddings, "__code__", None)
    return tb.tb_frame.f_code is own and own is not PreTrainedModel.resize_token_embeddings.__code__


def resized(subject, new_size: int, pad_to_multiple_of: int | None):
    """A copy of the subject whose model's vocabulary is resized to `new_size` (rounded up to the multiple).

    Skips, with the model's own words, where its class refuses resizing up front (`refused_up_front`)."""
    model = copy.deepcopy(subject.model)
    try:
        model.resize_token_embeddings(new_size, pad_to_multiple_of=pad_to_multiple_of)
    except NotImplementedError as exc:
        if not refused_up_front(model, exc):
            raise
        pytest.skip(f"{type(model).__name__} refuses resize_token_embeddings: {exc}")
    return subject.with_model(model.eval())


def _old_columns(outputs: dict, reference: dict) -> dict:
    """Vocabulary-sized outputs (only their last axis grew) cut to the reference's columns.

    The head may have had fewer rows than the input embedding (Mllama embeds its image tokens
    past the vocabulary that its head scores), so the reference's own width is the old one."""
    def cut(name, t):
        old = reference.get(name)
        grew = old is not None and t.ndim == old.ndim and t.shape[:-1] == old.shape[:-1] and t.shape[-1] > old.shape[-1]
        return t[..., :old.shape[-1]] if grew else t
    return {name: cut(name, t) for name, t in outputs.items()}


def check_resize(subject, inputs, new_size: int, pad_to_multiple_of: int | None = None) -> None:
    """Old embedding rows bit-identical, outputs on old ids unchanged, tied heads still tied."""
    before = input_embedding(subject.model).weight.detach().clone()
    old_vocab = before.shape[0]
    head = subject.model.get_output_embeddings()
    old_head = head.weight.detach().clone() if head is not None else None
    grown = resized(subject, new_size, pad_to_multiple_of)
    prop = f"{PROPERTY} ({old_vocab} -> {new_size}" + (f", multiple of {pad_to_multiple_of})" if pad_to_multiple_of else ")")
    after = input_embedding(grown.model).weight
    new_vocab = after.shape[0]
    assert new_vocab >= new_size, f"[{subject.name}] {prop}: input embedding has {new_vocab} rows, expected >= {new_size}"
    assert_outputs_close({"input embedding rows": after[:old_vocab]}, {"input embedding rows": before}, EXACT,
                         model=subject.name, prop=f"{prop}: old rows kept")
    new_head = grown.model.get_output_embeddings()
    if old_head is not None:
        assert new_head.weight.shape[0] == new_vocab, (
            f"[{subject.name}] {prop}: output embedding has {new_head.weight.shape[0]} rows, input embedding {new_vocab}"
        )
        assert_outputs_close({"output embedding rows": new_head.weight[:old_head.shape[0]]},
                             {"output embedding rows": old_head}, EXACT,
                             model=subject.name, prop=f"{prop}: old head rows kept")
    if subject.spec.has("tied_embeddings"):
        assert new_head is not None and new_head.weight is input_embedding(grown.model).weight, (
            f"[{subject.name}] {prop}: the output head is no longer tied to the input embedding"
        )
    reference = subject.forward(inputs, hidden_states=True)
    outputs = _old_columns(grown.forward(inputs, hidden_states=True), reference)
    assert_outputs_close(outputs, reference, tolerance(subject.dtype, "reordered", subject.device.type),
                         model=subject.name, prop=f"{prop}: outputs on old ids",
                         masks=subject.real_token_masks(reference, inputs))


@settings(max_examples=examples(max(5, settings().max_examples // 3)))  # a model copy per example
@given(data=st.data())
def test_resize_keeps_old_embeddings(subject, data):
    if input_embedding(subject.model) is None:
        pytest.skip(f"{type(subject.model).__name__} has no single token embedding to resize")
    inputs = data.draw(model_inputs(subject.spec), label="inputs")
    old = input_embedding(subject.model).weight.shape[0]
    new_size = data.draw(st.integers(old + 1, old + MAX_GROWTH), label="new vocabulary size")
    multiple = data.draw(st.none() | st.sampled_from([8, 64]), label="pad to multiple of")
    record(subject, inputs, prop=PROPERTY, new_size=str(new_size), pad_to_multiple_of=str(multiple))
    check_resize(subject, inputs, new_size, multiple)
