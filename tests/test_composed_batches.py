"""Self-tests of `strategies.batches.compose`: each row holds its item's tokens at the real positions."""

import numpy as np
import pytest
from hypothesis import given, settings, strategies as st

from strategies.batches import bad_input_kinds, bad_inputs, compose, composed_batches, padding_amounts, reordered_batches
from tests.planted import healthy
from zoo.tiny import ZOO, ZOO_NAMES

SPECS = {name: healthy(name).spec for name in ("bert", "gpt2", "t5", "clip", "whisper", "vit")}
FEW = settings(max_examples=30, deadline=None, database=None)


def _real_ids(batch, row):
    return batch.inputs["input_ids"][row][batch.inputs["attention_mask"][row] == 1]


@pytest.mark.parametrize("name", SPECS)
@FEW
@given(data=st.data())
def test_rows_hold_their_items(name, data):
    spec = SPECS[name]
    batch = data.draw(composed_batches(spec))
    for row, item in enumerate(batch.items):
        for key, value in batch.row(row).items():
            if key not in ("input_ids", "attention_mask"):
                np.testing.assert_array_equal(value, item[key])
        if spec.has("text"):
            np.testing.assert_array_equal(_real_ids(batch, row), item["input_ids"][0])
            mask = batch.inputs["attention_mask"][row]
            real = np.flatnonzero(mask)
            assert real[-1] - real[0] + 1 == len(real)  # one contiguous run of real tokens
            # causal models pad on the left (real tokens end the row), the others on the right
            assert (real[-1] == len(mask) - 1) if spec.has("causal") else (real[0] == 0)


@pytest.mark.parametrize("name", SPECS)
@FEW
@given(data=st.data())
def test_permuted_batch_reorders_rows_and_items(name, data):
    batch, order = data.draw(reordered_batches(SPECS[name]))
    permuted = batch.permuted(order)
    assert order != sorted(order)
    for new_row, old_row in enumerate(order):
        assert permuted.items[new_row] is batch.items[old_row]
        for key in batch.inputs:
            np.testing.assert_array_equal(permuted.row(new_row)[key], batch.row(old_row)[key])


@pytest.mark.parametrize("name", ["bert", "gpt2", "t5", "clip"])
@FEW
@given(data=st.data())
def test_more_padding_keeps_real_tokens(name, data):
    spec = SPECS[name]
    tight, padded = data.draw(padding_amounts(spec))
    assert padded.inputs["input_ids"].shape[1] > tight.inputs["input_ids"].shape[1]
    assert padded.inputs["input_ids"].shape[1] <= spec.max_length
    for row in range(len(tight)):
        np.testing.assert_array_equal(_real_ids(padded, row), _real_ids(tight, row))


def test_compose_pads_with_the_filler():
    spec = SPECS["bert"]
    items = [{"input_ids": np.array([[5, 6, 7]]), "attention_mask": np.ones((1, 3), np.int64)},
             {"input_ids": np.array([[8]]), "attention_mask": np.ones((1, 1), np.int64)}]
    batch = compose(spec, items, extra_padding=2, filler=9)
    np.testing.assert_array_equal(batch.inputs["input_ids"], [[5, 6, 7, 9, 9], [8, 9, 9, 9, 9]])
    np.testing.assert_array_equal(batch.inputs["attention_mask"], [[1, 1, 1, 0, 0], [1, 0, 0, 0, 0]])
    left = compose(spec, items, padding_side="left")
    np.testing.assert_array_equal(left.inputs["input_ids"], [[5, 6, 7], [spec.pad_token_id] * 2 + [8]])


def test_compose_pads_per_token_inputs_with_the_text():
    """Layout boxes (batch, token, 4) and token type ids follow their tokens; padded positions hold zeros."""
    spec = SPECS["bert"]
    items = [{"input_ids": np.array([[5, 6]]), "attention_mask": np.ones((1, 2), np.int64),
              "bbox": np.array([[[1, 2, 3, 4], [5, 6, 7, 8]]]), "token_type_ids": np.array([[1, 1]])},
             {"input_ids": np.array([[8]]), "attention_mask": np.ones((1, 1), np.int64),
              "bbox": np.array([[[9, 9, 9, 9]]]), "token_type_ids": np.array([[1]])}]
    left = compose(spec, items, padding_side="left")
    np.testing.assert_array_equal(left.inputs["bbox"], [[[1, 2, 3, 4], [5, 6, 7, 8]], [[0, 0, 0, 0], [9, 9, 9, 9]]])
    np.testing.assert_array_equal(left.inputs["token_type_ids"], [[1, 1], [0, 1]])


def test_ragged_inputs_keep_each_items_rows():
    """Patch rows (Qwen2-VL: t*h*w rows per image, image_grid_thw one row each) are concatenated; a row
    of the batch and a permuted batch take each item's own block of them."""
    spec = SPECS["bert"]
    items = [{"input_ids": np.array([[5, 6]]), "attention_mask": np.ones((1, 2), np.int64),
              "pixel_values": np.full((4, 3), 1.0), "image_grid_thw": np.array([[1, 2, 2]])},
             {"input_ids": np.array([[8]]), "attention_mask": np.ones((1, 1), np.int64),
              "pixel_values": np.full((2, 3), 2.0), "image_grid_thw": np.array([[1, 1, 2]])}]
    batch = compose(spec, items)
    assert batch.inputs["pixel_values"].shape == (6, 3)
    np.testing.assert_array_equal(batch.row(1)["pixel_values"], items[1]["pixel_values"])
    np.testing.assert_array_equal(batch.row(1)["image_grid_thw"], items[1]["image_grid_thw"])
    swapped = batch.permuted([1, 0])
    np.testing.assert_array_equal(swapped.inputs["pixel_values"][:2], items[1]["pixel_values"])
    np.testing.assert_array_equal(swapped.row(1)["pixel_values"], items[0]["pixel_values"])


@pytest.mark.parametrize("name", ZOO_NAMES)
@FEW
@given(data=st.data())
def test_bad_inputs_have_exactly_one_thing_wrong(name, data):
    spec = healthy(name).spec
    bad = data.draw(bad_inputs(spec))
    assert bad.kind in bad_input_kinds(spec)
    ids, mask = bad.inputs.get("input_ids"), bad.inputs.get("attention_mask")
    if bad.kind == "empty batch":
        assert all(value.shape[0] == 0 for value in bad.inputs.values())
    elif bad.kind == "id outside the vocab":
        assert ((ids < 0) | (ids >= spec.vocab_size)).sum() == 1
    elif bad.kind == "too long":
        assert ids.shape[1] > spec.max_length
    elif bad.kind == "mask shape mismatch":
        assert mask.shape != ids.shape
    elif bad.kind == "zero length":
        assert ids.shape[1] == 0 and ids.shape[0] > 0
    assert "text" in ZOO[name].capabilities or bad.kind == "empty batch"


def _maskless(spec):
    """`spec` as a model whose forward names no attention_mask and whose inputs are cut to the names it
    takes (OmniASRModel: input_ids, inputs_embeds, input_values, padding_mask, **kwargs)."""
    from dataclasses import replace

    return replace(spec, extra={**spec.extra, "forward_args": ("input_ids", "kwargs"), "accepts": ("input_ids",),
                                "signature_inputs": ("reserved_ids",), "reserved_ids": ()})


@FEW
@given(data=st.data())
def test_batches_of_a_model_without_attention_mask(data):
    spec = _maskless(SPECS["gpt2"])
    batch = data.draw(composed_batches(spec))
    assert "attention_mask" not in batch.inputs
    assert len({item["input_ids"].shape[1] for item in batch.items}) == 1  # nothing could mark padding
    assert "mask shape mismatch" not in bad_input_kinds(spec)
    bad = data.draw(bad_inputs(spec))
    assert "attention_mask" not in bad.inputs
    if bad.kind == "id outside the vocab":  # the defect is still planted, exactly once
        ids = bad.inputs["input_ids"]
        assert ((ids < 0) | (ids >= spec.vocab_size)).sum() == 1
