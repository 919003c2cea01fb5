"""Determinism: in eval mode the same input twice gives bit-identical outputs."""

from hypothesis import given, strategies as st

from devices.tolerance import assert_outputs_close, tolerance
from properties.artifacts import record
from strategies.batches import model_inputs
from zoo.storage import aligned_inputs

PROPERTY = "determinism"


def check_deterministic(subject, inputs) -> None:
    """Two forwards of the same input in eval mode agree bit for bit."""
    # Exact by construction on any CPU: one model (the same weight storage), one thread count, and each
    # run's inputs in fresh 64-byte aligned storage (kernels may take another path for data at another
    # alignment, and two numpy conversions of one draw need not share theirs), so only nondeterminism
    # in the model or its kernels can make the two runs differ.
    first = subject.forward(aligned_inputs(inputs), hidden_states=True)
    second = subject.forward(aligned_inputs(inputs), hidden_states=True)
    dtype = next(iter(first.values())).dtype
    assert_outputs_close(second, first, tolerance(dtype, "exact"), model=subject.name, prop=PROPERTY)


@given(data=st.data())
def test_deterministic(subject, data):
    inputs = data.draw(model_inputs(subject.spec), label="inputs")
    record(subject, inputs, prop=PROPERTY)
    check_deterministic(subject, inputs)
