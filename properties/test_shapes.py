"""Shape contract: every output's shape follows from the input shapes and the config."""

from hypothesis import given, strategies as st

from properties.artifacts import record
from strategies.batches import model_inputs

PROPERTY = "shape contract"


def check_shapes(subject, inputs) -> None:
    """Outputs are exactly those of the contract (hidden-state layers included), each of its shape."""
    got = {name: tuple(t.shape) for name, t in subject.forward(inputs, hidden_states=True).items()}
    want = subject.expected_shapes(inputs, hidden_states=True)
    wrong = [f"{n}: got {got[n]}, expected {want[n]}" for n in want if n in got and got[n] != want[n]]
    missing = sorted(set(want) - set(got))
    extra = sorted(set(got) - set(want))
    if missing:
        wrong.append(f"missing outputs {missing}")
    if extra:
        wrong.append(f"outputs outside the contract {extra}")
    input_shapes = {k: tuple(v.shape) for k, v in inputs.items()}
    assert not wrong, f"[{subject.name}] {PROPERTY} (inputs {input_shapes}): " + "; ".join(wrong)


@given(data=st.data())
def test_shapes(subject, data):
    inputs = data.draw(model_inputs(subject.spec), label="inputs")
    record(subject, inputs, prop=PROPERTY)
    check_shapes(subject, inputs)
