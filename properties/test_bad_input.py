"""Bad input: ids outside the vocabulary, sequences longer than the model accepts, attention masks
of the wrong shape, zero-length sequences and empty batches either raise a Python exception or give
finite outputs of the right shape, never NaN or Inf silently.

A second property records how the model refuses: with a clear error (`properties.clear_errors`:
a `ValueError` or `TypeError` about the input, as an input check raises) or with a low-level tensor
error from deep inside the forward (a reshape `RuntimeError`, an embedding `IndexError`). Models
that refuse unhelpfully are listed in `properties/xfails.toml`.
"""

import traceback

from hypothesis import given, strategies as st

from devices.tolerance import nonfinite_outputs
from properties.artifacts import record
from properties.clear_errors import describe, unclear
from strategies.batches import bad_inputs

HANDLED = "bad input"
CLEAR = "bad input message"


def outcome(subject, bad):
    """Run `bad` through the subject: `(exception, None)` if it raised, `(None, outputs)` otherwise."""
    try:
        return None, subject.forward(bad.inputs, hidden_states=True)
    except Exception as exc:  # raising is one of the two acceptable answers; the caller judges it
        return exc, None


def check_bad_input_handled(subject, bad) -> None:
    """Malformed input raises a Python exception or gives finite outputs of the shape the contract says."""
    error, outputs = outcome(subject, bad)
    if error is not None:
        return
    want = subject.expected_shapes(bad.inputs, hidden_states=True)
    problems = [
        f"{name}: shape {tuple(outputs[name].shape)}, expected {shape}"
        for name, shape in want.items() if name in outputs and tuple(outputs[name].shape) != shape
    ]
    problems += nonfinite_outputs(outputs)
    shapes = {key: tuple(value.shape) for key, value in bad.inputs.items()}
    assert not problems, (
        f"[{subject.name}] {HANDLED} ({bad.kind}, inputs {shapes}): accepted silently with bad outputs: "
        + "; ".join(problems)
    )


def check_refused_clearly(subject, bad) -> None:
    """If the model refuses malformed input, it does so with a clear error about the input."""
    error, _ = outcome(subject, bad)
    why = unclear(error) if error is not None else None
    if why is None:
        return
    where = traceback.extract_tb(error.__traceback__)[-1]
    shapes = {key: tuple(value.shape) for key, value in bad.inputs.items()}
    raise AssertionError(
        f"[{subject.name}] {CLEAR} ({bad.kind}, inputs {shapes}): refused with a low-level error "
        f"({why}), raised at {where.filename.rsplit('site-packages/', 1)[-1]}:{where.lineno}: {describe(error)}"
    )


@given(data=st.data())
def test_bad_input_handled(subject, data):
    bad = data.draw(bad_inputs(subject.spec), label="bad input")
    record(subject, bad.inputs, prop=HANDLED, kind=bad.kind)
    check_bad_input_handled(subject, bad)


@given(data=st.data())
def test_bad_input_refused_clearly(subject, data):
    bad = data.draw(bad_inputs(subject.spec), label="bad input")
    record(subject, bad.inputs, prop=CLEAR, kind=bad.kind)
    check_refused_clearly(subject, bad)
