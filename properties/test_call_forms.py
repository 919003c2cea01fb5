"""Call forms: the same inputs passed another way give the same outputs.

Token ids replaced by their embeddings (`inputs_embeds`, `decoder_inputs_embeds`) give what the
ids give, on the real tokens; `return_dict=False` gives the very tensors of the dict output, in
the order of `ModelOutput.to_tuple()`.
"""

from __future__ import annotations

import inspect
from typing import Mapping

import pytest
import torch
from hypothesis import given, strategies as st

from devices.tolerance import EXACT, assert_outputs_close, tolerance
from properties.artifacts import compared, pair, record, side
from strategies.batches import model_inputs
from zoo.subject import flatten_outputs

EMBEDS = "inputs_embeds call form"
TUPLE = "tuple outputs"
# which ids input each embeddings argument stands for
EMBEDS_FOR_IDS = {"input_ids": "inputs_embeds", "decoder_input_ids": "decoder_inputs_embeds"}


def accepts(subject, argument: str) -> bool:
    """Whether the subject's forward takes `argument`."""
    return argument in inspect.signature(subject.model.forward).parameters


def embedding_module(model: torch.nn.Module, ids_key: str) -> torch.nn.Module:
    """The embedding a forward applies to `ids_key`: the decoder's for decoder ids."""
    if not ids_key.startswith("decoder_"):
        return model.get_input_embeddings()
    decoder = model.get_decoder()
    getter = getattr(decoder, "get_input_embeddings", None)
    if getter is not None:
        return getter()
    # a decoder that is a bare nn.Module (FSMTDecoder): transformers' own lookup rule, applied to it
    from transformers.modeling_utils import EmbeddingAccessMixin

    return EmbeddingAccessMixin.get_input_embeddings(decoder)


def embeddable(subject) -> list[str]:
    """The ids inputs of this subject that its forward also takes as embeddings."""
    return [ids for ids, embeds in EMBEDS_FOR_IDS.items() if accepts(subject, embeds)]


def check_inputs_embeds(subject, inputs) -> None:
    """Passing the embeddings of the ids instead of the ids gives the same outputs on the real tokens."""
    reference = subject.forward(inputs, hidden_states=True)
    kwargs = subject.model_kwargs(inputs, hidden_states=True)
    swapped = [ids for ids in embeddable(subject) if ids in kwargs]
    with torch.no_grad():
        for ids in swapped:
            kwargs[EMBEDS_FOR_IDS[ids]] = embedding_module(subject.model, ids)(kwargs.pop(ids))
        try:
            outputs = flatten_outputs(subject.model(**kwargs))
        except NotImplementedError as exc:  # a clear refusal (BART's classifier pools at eos ids): not a defect
            pytest.skip(f"{type(subject.model).__name__} refuses inputs_embeds: {exc}")
    assert_outputs_close(
        outputs, reference, tolerance(subject.dtype, "reordered", subject.device.type), model=subject.name,
        prop=f"{EMBEDS} ({', '.join(EMBEDS_FOR_IDS[i] for i in swapped)} instead of {', '.join(swapped)})",
        masks=subject.real_token_masks(reference, inputs),
    )


def positional(output):
    """An output with every nested `ModelOutput` (a mapping) replaced by its `to_tuple()`, recursively."""
    if isinstance(output, Mapping):
        output = tuple(output.values())
    if isinstance(output, (tuple, list)):
        return tuple(positional(value) for value in output)
    return output


def check_tuple_outputs(subject, inputs) -> None:
    """`return_dict=False` returns the dict output's tensors, bit-identical, in `to_tuple()` order."""
    kwargs = subject.model_kwargs(inputs, hidden_states=True)
    with torch.no_grad():
        as_dict = subject.model(**kwargs)
        as_tuple = subject.model(**dict(kwargs, return_dict=False))
    names = list(as_dict.keys())
    assert isinstance(as_tuple, tuple), (
        f"[{subject.name}] {TUPLE}: return_dict=False returned {type(as_tuple).__name__}, expected a tuple"
    )
    assert len(as_tuple) == len(names), (
        f"[{subject.name}] {TUPLE}: return_dict=False returned {len(as_tuple)} entries, "
        f"the dict output has {len(names)} ({names})"
    )
    # named by the dict's keys, then by position inside nested outputs: a reordered tuple shows as a mismatch
    assert_outputs_close(
        flatten_outputs(dict(zip(names, positional(as_tuple)))),
        flatten_outputs(dict(zip(names, positional(as_dict)))), EXACT, model=subject.name,
        prop=f"{TUPLE} (return_dict=False vs the dict output's to_tuple() order {names})",
    )


@given(data=st.data())
def test_inputs_embeds_match_ids(subject, data):
    if not embeddable(subject):
        pytest.skip(f"{type(subject.model).__name__}.forward takes no inputs_embeds nor decoder_inputs_embeds")
    inputs = data.draw(model_inputs(subject.spec), label="inputs")
    record(subject, inputs, prop=EMBEDS, tolerance=str(tolerance(subject.dtype, "reordered")), replay=lambda: compared(
        pair(side(embeds=[i for i in embeddable(subject) if i in inputs]), side(), real_tokens="expected")))
    check_inputs_embeds(subject, inputs)


@given(data=st.data())
def test_tuple_outputs_match_dict(subject, data):
    inputs = data.draw(model_inputs(subject.spec), label="inputs")
    record(subject, inputs, prop=TUPLE, tolerance=str(EXACT), replay=lambda: compared(
        pair(side(run="tuple"), side(run="dict_positional"))))
    check_tuple_outputs(subject, inputs)
