"""Shape contract: every output's shape follows from the input shapes and the config."""

from hypothesis import given, strategies as st

from properties.artifacts import record
from strategies.batches import model_inputs
from zoo.contract import NOT_JUDGED
from zoo.subject import flatten_outputs

PROPERTY = "shape contract"


def check_shapes(subject, inputs) -> None:
    """Outputs are exactly those of the contract (hidden-state layers included), each of its shape."""
    raw = subject.raw_forward(inputs, hidden_states=True)
    got = {name: tuple(t.shape) for name, t in flatten_outputs(raw).items()}
    contract = subject.contract(inputs, hidden_states=True)
    # The output class actually returned decides which fields exist (some forwards annotate another
    # class than they return, e.g. ElectraModel); its fields without a rule stay unchecked.
    ruled = {name.split(".", 1)[0] for name in contract.shapes}
    contract.unchecked |= {f for f in getattr(raw, "keys", lambda: [])() if f not in ruled and f not in NOT_JUDGED}
    wrong = contract.problems(got)
    input_shapes = {k: tuple(v.shape) for k, v in inputs.items()}
    assert not wrong, f"[{subject.name}] {PROPERTY} (inputs {input_shapes}): " + "; ".join(wrong)


@given(data=st.data())
def test_shapes(subject, data):
    inputs = data.draw(model_inputs(subject.spec), label="inputs")
    record(subject, inputs, prop=PROPERTY)
    check_shapes(subject, inputs)
