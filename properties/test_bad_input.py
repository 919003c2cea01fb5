"""Bad input: ids outside the vocabulary and attention masks of the wrong shape must raise (no output
can be right for them); sequences longer than the model's table, zero-length sequences and empty
batches either raise a Python exception or give finite outputs of the contract's shape. Accepting
bad input silently (finite garbage, wrong shapes) fails.

A second property records how the model refuses: with a clear error (`properties.clear_errors`:
a `ValueError` or `TypeError` about the input, as an input check raises) or with a low-level tensor
error from deep inside the forward (a reshape `RuntimeError`, an embedding `IndexError`). Models
that refuse unhelpfully meet the finding recorded in `properties/findings.toml`.
"""

import traceback

import torch
from hypothesis import given, strategies as st

from devices.tolerance import nonfinite_outputs
from properties.artifacts import judged, record
from properties.clear_errors import describe, unclear
from strategies.batches import bad_inputs
from zoo.derived import derived

HANDLED = "bad input"
CLEAR = "bad input message"


def outcome(subject, bad):
    """Run `bad` through a private copy of the subject: `(exception, None)` if it raised, `(None, outputs)` otherwise.

    A forward that raises may leave its model changed (transformers 5.0.0-5.1.x leave every layer's
    forward monkey-patched when a forward asked for hidden states raises), so the session's shared
    subject never sees bad input.
    """
    private = derived(subject, "bad input", lambda s: s.converted())
    try:
        return None, private.forward(bad.inputs, hidden_states=True)
    except Exception as exc:  # raising is one of the two acceptable answers; the caller judges it
        return exc, None


def check_bad_input_handled(subject, bad) -> None:
    """Malformed input raises a Python exception or gives finite outputs of the shape the contract says."""
    error, outputs = outcome(subject, bad)
    if error is not None:
        return
    contract = subject.contract(bad.inputs, hidden_states=True)
    problems = [p for p in contract.problems({n: tuple(t.shape) for n, t in outputs.items()})
                if not p.startswith(("missing", "outputs outside"))]
    problems += nonfinite_outputs(outputs)
    if bad.must_refuse:
        problems.insert(0, "no output can be right for this input, so it must raise")
    shapes = {key: tuple(value.shape) for key, value in bad.inputs.items()}
    assert not problems, (
        f"[{subject.name}] {HANDLED} ({bad.kind}, inputs {shapes}): accepted silently: "
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
        f"({why}), raised in {raising_module(error)} at {where.filename.rsplit('site-packages/', 1)[-1]}:"
        f"{where.lineno}: {describe(error)}"
    )


def raising_module(error: BaseException) -> str:
    """The class of the innermost torch module whose forward was running when `error` was raised."""
    tb, found = error.__traceback__, "the model's forward"
    while tb is not None:
        owner = tb.tb_frame.f_locals.get("self")
        if isinstance(owner, torch.nn.Module):
            found = type(owner).__name__
        tb = tb.tb_next
    return found


@given(data=st.data())
def test_bad_input_handled(subject, data):
    bad = data.draw(bad_inputs(subject.spec), label="bad input")
    record(subject, bad.inputs, prop=HANDLED, kind=bad.kind,
           replay=lambda: judged("bad_input", must_refuse=bad.must_refuse, what=bad.kind))
    check_bad_input_handled(subject, bad)


@given(data=st.data())
def test_bad_input_refused_clearly(subject, data):
    bad = data.draw(bad_inputs(subject.spec), label="bad input")
    record(subject, bad.inputs, prop=CLEAR, kind=bad.kind, replay=lambda: judged("clear_refusal", what=bad.kind))
    check_refused_clearly(subject, bad)
