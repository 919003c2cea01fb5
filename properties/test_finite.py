"""Finite: no NaN or Inf in any floating output, for any valid input."""

import torch
from hypothesis import given, strategies as st

from properties.artifacts import record
from strategies.batches import model_inputs

PROPERTY = "finite"


def check_finite(subject, inputs) -> None:
    """Every floating-point output (hidden states included) is free of NaN and Inf."""
    outputs = subject.forward(inputs, hidden_states=True)
    problems = []
    for name, tensor in outputs.items():
        if not tensor.is_floating_point():
            continue
        bad = ~torch.isfinite(tensor)
        if bad.any():
            first = tuple(int(i) for i in bad.nonzero()[0])
            problems.append(
                f"{name}: {int(bad.sum())} of {tensor.numel()} non-finite "
                f"(NaN {int(tensor.isnan().sum())}, Inf {int(tensor.isinf().sum())}), first at {first}"
            )
    assert not problems, f"[{subject.name}] {PROPERTY}: " + "; ".join(problems)


@given(data=st.data())
def test_finite(subject, data):
    inputs = data.draw(model_inputs(subject.spec), label="inputs")
    record(subject, inputs, prop=PROPERTY)
    check_finite(subject, inputs)
