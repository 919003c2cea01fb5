"""Finite: no NaN or Inf in any floating output, for any valid input."""

from hypothesis import given, strategies as st

from devices.tolerance import nonfinite_outputs
from properties.artifacts import record
from strategies.batches import model_inputs

PROPERTY = "finite"


def check_finite(subject, inputs) -> None:
    """Every floating-point output (hidden states included) is free of NaN and Inf."""
    problems = nonfinite_outputs(subject.forward(inputs, hidden_states=True))
    assert not problems, f"[{subject.name}] {PROPERTY}: " + "; ".join(problems)


@given(data=st.data())
def test_finite(subject, data):
    inputs = data.draw(model_inputs(subject.spec), label="inputs")
    record(subject, inputs, prop=PROPERTY)
    check_finite(subject, inputs)
