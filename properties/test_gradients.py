"""Gradients: one training step is sound.

In train mode the loss's backward gives a finite gradient to every trainable parameter;
activation (gradient) checkpointing gives the same gradients as running without it; and dropout
with the same seed is reproducible. The loss is the model's own (`labels`) for language models
and the mean square of the outputs for encoders (see `zoo/training.py`).
"""

from contextlib import contextmanager

import numpy as np
import pytest
import torch
from hypothesis import given, strategies as st

from devices.tolerance import assert_outputs_close, nonfinite, tolerance
from properties.artifacts import compared, judged, pair, record, side
from strategies.batches import model_inputs
from zoo.storage import aligned_inputs
from zoo.training import TrainingRefused, gradients, train_mode_outputs, training_copy

PROPERTY = "gradients"
SEED = 1234  # dropout seed of both runs being compared


def one_token_longer(subject, inputs):
    """`inputs` with every array shaped like `input_ids` one position longer (its last column repeated),
    or None: no token ids, or already the longest the model takes."""
    ids = inputs.get("input_ids")
    if ids is None or np.ndim(ids) != 2 or ids.shape[1] >= subject.spec.max_length:
        return None
    return {key: np.concatenate([value, value[:, -1:]], axis=1) if np.shape(value) == ids.shape else value
            for key, value in inputs.items()}


def never_reached(subject, inputs, missing: list[str]) -> list[str]:
    """Those of `missing` that get no gradient on the input one token longer either: a recurrent decay
    (RWKV's time_decay) only carries state to the next token, so a one-token input cannot reach it."""
    longer = one_token_longer(subject, inputs) if missing else None
    if longer is None:
        return missing
    _, again = gradients(training_copy(subject), longer, seed=SEED)
    return [name for name in missing if again.get(name) is None]


def check_finite_gradients(subject, inputs) -> None:
    """After one backward in train mode every trainable parameter has a gradient (on this input or, for
    one that only acts on later tokens, on it one token longer), and all are finite."""
    trained = training_copy(subject)
    loss, grads = gradients(trained, inputs, seed=SEED)
    prop = f"[{subject.name}] {PROPERTY}"
    assert torch.isfinite(loss), f"{prop}: the loss is {loss.item()}"
    missing = never_reached(subject, inputs, sorted(name for name, grad in grads.items() if grad is None))
    assert not missing, f"{prop}: {len(missing)} trainable parameters received no gradient: {missing[:8]}"
    bad = {name: problem for name, g in grads.items() if g is not None and (problem := nonfinite(g))}
    assert not bad, f"{prop}: non-finite gradients in {len(bad)} parameters (loss {loss.item():.4g}): " + "; ".join(
        f"{name}: {detail}" for name, detail in list(bad.items())[:5]
    )


def check_checkpointing(subject, inputs) -> None:
    """With activation checkpointing every trainable parameter gets the same gradient as without it."""
    _, plain = gradients(training_copy(subject), aligned_inputs(inputs), seed=SEED)
    _, checkpointed = gradients(training_copy(subject, checkpointing=True), aligned_inputs(inputs), seed=SEED)
    prop = f"{PROPERTY} (activation checkpointing vs none)"
    lost = sorted(name for name in plain if plain[name] is not None and checkpointed.get(name) is None)
    assert not lost, (
        f"[{subject.name}] {prop}: {len(lost)} parameters get a gradient without checkpointing but none with it: "
        f"{lost[:8]}"
    )
    # Exact by construction on any CPU: both training copies are deep copies of one model (each weight in
    # fresh allocator storage at the same offset), both runs get their inputs in fresh 64-byte aligned
    # storage and run on one thread count, and recomputing a checkpointed layer replays the same kernels
    # with the same dropout masks (the RNG state is restored). What remains, the order in which autograd
    # accumulates a weight's gradient, follows the graph, not the CPU. Measured bit-identical on all ten
    # zoo models.
    assert_outputs_close(
        {f"grad of {k}": v for k, v in checkpointed.items() if v is not None},
        {f"grad of {k}": v for k, v in plain.items() if v is not None},
        tolerance(subject.dtype, "exact"), model=subject.name, prop=prop,
    )


def check_dropout_reproducible(subject, inputs) -> None:
    """In train mode two forwards after the same `torch.manual_seed` give bit-identical outputs."""
    trained = training_copy(subject)
    # exact by construction: one model, one thread count, both runs' inputs in fresh aligned storage
    first = train_mode_outputs(trained, aligned_inputs(inputs), seed=SEED)
    second = train_mode_outputs(trained, aligned_inputs(inputs), seed=SEED)
    assert_outputs_close(
        second, first, tolerance(subject.dtype, "exact"), model=subject.name,
        prop=f"{PROPERTY} (dropout with the same seed twice)",
    )


@contextmanager
def refusal_skipped():
    """A model that refuses to train without targets the suite cannot make is skipped with its reason."""
    try:
        yield
    except TrainingRefused as exc:
        pytest.skip(f"not applicable: {exc}")


@given(data=st.data())
def test_finite_gradients(subject, data):
    inputs = data.draw(model_inputs(subject.spec), label="inputs")
    record(subject, inputs, prop=PROPERTY, mode="train", seed=SEED,
           replay=lambda: judged("finite_gradients", run_as=side(seed=SEED)))
    with refusal_skipped():
        check_finite_gradients(subject, inputs)


@given(data=st.data())
def test_checkpointing_same_gradients(subject, data):
    if not subject.model.supports_gradient_checkpointing:
        pytest.skip(f"{type(subject.model).__name__} does not support activation checkpointing")
    inputs = data.draw(model_inputs(subject.spec), label="inputs")
    record(subject, inputs, prop=PROPERTY, mode="train", seed=SEED, compare="activation checkpointing vs none",
           tolerance=str(tolerance(subject.dtype, "exact")), replay=lambda: compared(pair(
               side(run="gradients", seed=SEED, checkpointing=True), side(run="gradients", seed=SEED),
               what="activation checkpointing vs none")))
    with refusal_skipped():
        check_checkpointing(subject, inputs)


@given(data=st.data())
def test_dropout_reproducible(subject, data):
    inputs = data.draw(model_inputs(subject.spec), label="inputs")
    record(subject, inputs, prop=PROPERTY, mode="train", seed=SEED, tolerance=str(tolerance(subject.dtype, "exact")),
           replay=lambda: compared(pair(side(run="train_outputs", seed=SEED), side(run="train_outputs", seed=SEED),
                                        what="dropout with the same seed twice")))
    with refusal_skipped():
        check_dropout_reproducible(subject, inputs)
