"""Batching multimodal models: what a row comparison holds beside the text.

- Media tokens a model puts beside the text in its token stream (GIT prepends its image) are real in
  every row: `Subject.real_token_masks` learns how many and on which side, and compares them.
- Outputs a batch does not index by row (a Pixtral-style tower packs every image of the batch into one
  sequence) are left out on both sides of a row comparison, never on one side only.
- An output field named after a tensor argument of the call hands that input back (Qwen2-Audio's
  attention_mask): it is no result of the forward.
- Padding never holds a media placeholder id: the model counts those to place its features.

Each rule has a planted defect that the same check still catches.
"""

from __future__ import annotations

import copy
from dataclasses import replace

import numpy as np
import pytest
import torch
from hypothesis import given, settings, strategies as st

from properties import test_batching as batching
from strategies.batches import composed_batches, fillers, padding_amounts
from tests.planted import expect_caught, expect_passes, healthy, on_output
from zoo import catalog
from zoo.subject import Subject

MIX = 0.1  # as tests/test_catalog.py: tiny seeded heads give outputs of about 1e-2


def fresh(name: str) -> Subject:
    subject = catalog.build_catalog_subject(name)
    return subject.with_model(copy.deepcopy(subject.model))


# -- padding never holds a media placeholder ---------------------------------------------------------
@settings(max_examples=200, deadline=None, database=None)
@given(data=st.data())
def test_padding_fillers_never_hold_media_placeholders(data):
    spec = healthy("bert").spec
    spec = replace(spec, extra={**spec.extra, "image_token_id": 7, "reserved_ids": (8,)})
    filler = data.draw(fillers(spec))
    assert filler not in (7, 8)


# -- media tokens beside the text (GIT) ---------------------------------------------------------------
def test_media_tokens_before_the_text_are_learned_and_masked_real():
    subject = catalog.build_catalog_subject("git-base")
    inputs = {"input_ids": np.array([[3, 4, 5], [6, 0, 0]]), "attention_mask": np.array([[1, 1, 1], [1, 0, 0]]),
              "pixel_values": np.zeros((2, 3, 32, 32), np.float32)}
    outputs = subject.forward(inputs, hidden_states=True)
    tokens, first = subject.media_stream(inputs)
    assert (tokens, first) == (outputs["last_hidden_state"].shape[1] - 3, True)
    mask = subject.real_token_masks(outputs, inputs)["last_hidden_state"]
    assert mask[:, :tokens].all() and mask[:, tokens:].tolist() == [[True] * 3, [True, False, False]]


@pytest.mark.parametrize("name", ["git-base", "qwen2_audio-base"])  # media beside the text; an echoed mask
def test_healthy_models_pass_batching(name):
    subject = catalog.build_catalog_subject(name)
    expect_passes(batching.check_batch_invariance, composed_batches(subject.spec), subject)
    expect_passes(batching.check_padding_amount, padding_amounts(subject.spec), subject)


def test_padding_reaching_media_tokens_is_caught():
    """The media tokens are compared, not left out: padding that moves them fails."""
    subject = fresh("git-base")
    text = {}

    def remember(module, args, kwargs):
        text["mask"] = kwargs["attention_mask"]

    def media_see_padding(out, kwargs):
        if out.dim() < 3 or out.shape[1] == text["mask"].shape[1]:
            return out
        padded = (text["mask"] == 0).sum(-1).to(out.dtype)[:, None, None]
        media = out.shape[1] - text["mask"].shape[1]
        return torch.cat([out[:, :media] + MIX * padded, out[:, media:]], dim=1)

    subject.model.register_forward_pre_hook(remember, with_kwargs=True)
    on_output(subject.model, media_see_padding)
    expect_caught(batching.check_padding_amount, padding_amounts(subject.spec), subject,
                  says=("[git-base] padding amount", "last_hidden_state' differs beyond"))


# -- outputs packed over the batch's images (Pixtral towers) ------------------------------------------
def test_packed_image_outputs_are_left_out_on_both_sides():
    subject = catalog.build_catalog_subject("mistral_large4-cond-gen")
    expect_passes(batching.check_batch_invariance, composed_batches(subject.spec), subject)


@pytest.mark.parametrize("name", ["mistral_large4-cond-gen", "qwen2_audio-base"])  # packed image outputs; an echoed mask
def test_items_mixing_is_caught(name):
    subject = fresh(name)
    on_output(subject.model, lambda out, kwargs: out + MIX * out.mean(dim=0, keepdim=True))
    expect_caught(batching.check_batch_invariance, composed_batches(subject.spec), subject,
                  says=(f"[{name}] batch invariance", "max abs diff"))


def test_output_missing_from_a_batch_is_still_caught():
    """Only outputs the batch returned but cannot split are left out: one it does not return is missing."""
    subject = fresh("mistral_large4-cond-gen")

    def drop_logits_of_batches(module, args, kwargs, output):
        if kwargs["input_ids"].shape[0] > 1:
            output["logits"] = None
        return output

    subject.model.register_forward_hook(drop_logits_of_batches, with_kwargs=True)
    expect_caught(batching.check_batch_invariance, composed_batches(subject.spec), subject,
                  says=("outputs missing on one side", "logits"))


# -- outputs echoing an input (Qwen2-Audio's attention_mask) -------------------------------------------
class _Echo(torch.nn.Module):
    """Embeds ids; returns the attention mask it was given and a computed `labels` score."""

    def __init__(self):
        super().__init__()
        self.embed = torch.nn.Embedding(99, 4)

    def forward(self, input_ids, attention_mask=None, labels=None, return_dict=True):
        hidden = self.embed(input_ids)
        return {"last_hidden_state": hidden, "attention_mask": attention_mask, "labels": hidden.sum(-1)}


def test_outputs_echoing_a_passed_argument_are_left_out():
    subject = Subject(healthy("bert").spec, _Echo())
    outputs = subject.forward({"input_ids": np.array([[1, 2]]), "attention_mask": np.array([[1, 1]])})
    assert set(outputs) == {"last_hidden_state", "labels"}  # labels was not passed: computed, kept
