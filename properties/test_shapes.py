"""Shape contract: every output's shape follows from the input shapes and the config."""

import dataclasses

from hypothesis import given, strategies as st

from properties.artifacts import record
from strategies.batches import model_inputs
from zoo.subject import flatten_outputs

PROPERTY = "shape contract"


def check_shapes(subject, inputs) -> None:
    """Outputs are exactly those of the contract (hidden-state layers included), each of its shape."""
    raw = subject.raw_forward(inputs, hidden_states=True)
    got = {name: tuple(t.shape) for name, t in flatten_outputs(raw).items()}
    contract = subject.contract(inputs, hidden_states=True)
    # The output class actually returned decides which fields exist (some forwards annotate another
    # class than they return, e.g. ElectraModel); its fields without a rule stay unchecked.
    returned = [f.name for f in dataclasses.fields(raw)] if dataclasses.is_dataclass(raw) else list(getattr(raw, "keys", list)())
    contract.fit_returned(returned, got)
    wrong = contract.problems(got)
    input_shapes = {k: tuple(v.shape) for k, v in inputs.items()}
    assert not wrong, f"[{subject.name}] {PROPERTY} (inputs {input_shapes}): " + "; ".join(wrong)


@given(data=st.data())
def test_shapes(subject, data):
    inputs = data.draw(model_inputs(subject.spec), label="inputs")
    record(subject, inputs, prop=PROPERTY)
    check_shapes(subject, inputs)
