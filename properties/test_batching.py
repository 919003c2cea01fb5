"""Batching: an item's outputs do not depend on the batch around it, on its row, or on how much
masked padding it gets.

Items are drawn one by one and composed into padded batches (`strategies.batches.compose`): left
padding for causal models, whose position ids then come from the mask, right padding otherwise.
Only an item's real tokens are compared; what the model puts at masked positions is free.
"""

import pytest
from hypothesis import given, strategies as st

from devices.tolerance import assert_outputs_close, tolerance
from properties.artifacts import record
from strategies.batches import composed_batches, padding_amounts, reordered_batches

INVARIANCE = "batch invariance"
ORDER = "batch order"
PADDING = "padding amount"


def reordered_tolerance(subject, outputs):
    """The policy's tolerance for the same math in another shape, for these outputs on this device."""
    dtype = next(t.dtype for t in outputs.values() if t.is_floating_point())
    return tolerance(dtype, "reordered", subject.device.type)


def check_batch_invariance(subject, batch) -> None:
    """Each item's outputs inside a padded batch of other items equal its outputs alone (real tokens)."""
    batched = subject.forward(batch.inputs, hidden_states=True)
    tol = reordered_tolerance(subject, batched)
    for row, item in enumerate(batch.items):
        alone = subject.forward(item, hidden_states=True)
        assert_outputs_close(
            subject.row_outputs(batched, batch.inputs, row), alone, tol,
            model=subject.name, prop=f"{INVARIANCE} (item {row} of {len(batch)}, padding {batch.padding_side})",
        )


def check_batch_order(subject, reordering) -> None:
    """Permuting the rows of a batch permutes the outputs the same way (real tokens)."""
    batch, order = reordering
    outputs = subject.forward(batch.inputs, hidden_states=True)
    permuted = batch.permuted(order)
    permuted_outputs = subject.forward(permuted.inputs, hidden_states=True)
    assert_outputs_close(
        permuted_outputs, subject.select_rows(outputs, order), reordered_tolerance(subject, outputs),
        model=subject.name, prop=f"{ORDER} (rows reordered as {order})",
        masks=subject.real_token_masks(permuted_outputs, permuted.inputs),
    )


def check_padding_amount(subject, pair) -> None:
    """More masked padding (holding any id) leaves every item's outputs on its real tokens unchanged."""
    tight, padded = pair
    tight_outputs = subject.forward(tight.inputs, hidden_states=True)
    padded_outputs = subject.forward(padded.inputs, hidden_states=True)
    tol = reordered_tolerance(subject, tight_outputs)
    extra = padded.inputs["input_ids"].shape[1] - tight.inputs["input_ids"].shape[1]
    for row in range(len(tight)):
        assert_outputs_close(
            subject.row_outputs(padded_outputs, padded.inputs, row),
            subject.row_outputs(tight_outputs, tight.inputs, row), tol,
            model=subject.name, prop=f"{PADDING} (item {row}, {extra} more {padded.padding_side} padding)",
        )


@given(data=st.data())
def test_batch_invariance(subject, data):
    batch = data.draw(composed_batches(subject.spec), label="batch")
    record(subject, batch.inputs, prop=INVARIANCE, items=batch.items)
    check_batch_invariance(subject, batch)


@given(data=st.data())
def test_batch_order(subject, data):
    batch, order = data.draw(reordered_batches(subject.spec), label="batch and order")
    record(subject, batch.inputs, prop=ORDER, order=order)
    check_batch_order(subject, (batch, order))


@pytest.mark.needs("text")
@given(data=st.data())
def test_padding_amount(subject, data):
    tight, padded = data.draw(padding_amounts(subject.spec), label="tight and padded")
    record(subject, tight.inputs, prop=PADDING, other_inputs=padded.inputs)
    check_padding_amount(subject, (tight, padded))


@pytest.mark.needs("text")
@given(data=st.data())
def test_padding_holding_special_ids(subject, data):
    tight, padded = data.draw(padding_amounts(subject.spec, special_fillers=True), label="tight and padded")
    record(subject, tight.inputs, prop=PADDING, other_inputs=padded.inputs)
    check_padding_amount(subject, (tight, padded))
