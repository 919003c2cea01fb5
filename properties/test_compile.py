"""Compiled and exported models agree with eager: `torch.compile` and `torch.export` change no output.

Opt-in (mark `compile`): compiling costs seconds to a minute per model and shape on CPU, so these
run only with `-m compile` or under the `exhaustive` profile, and are skipped (with that reason)
otherwise. `torch.compile` (inductor, dynamic shapes) is built once per model; `torch.export`
traces each drawn input's shapes (non-strict) and runs the exported module.
"""

from __future__ import annotations

import torch
import pytest
from hypothesis import given, settings, strategies as st

from devices.tolerance import assert_outputs_close, tolerance
from properties.artifacts import record
from strategies.batches import model_inputs
from zoo.subject import flatten_outputs

pytestmark = pytest.mark.compile

COMPILE = "torch.compile vs eager"
EXPORT = "torch.export vs eager"
# Measured on the zoo, 1 CPU thread: the first compile of a model takes 17-58 s and a new shape 11-24 s;
# an export takes 0.4-1.5 s per shape. A few examples per model keep `-m compile` to minutes.
FEW = settings(max_examples=max(3, settings().max_examples // 8))


@pytest.fixture(autouse=True)
def _opt_in(request):
    selected = "compile" in (request.config.getoption("markexpr") or "")
    if not selected and settings._current_profile != "exhaustive":
        pytest.skip("opt-in: compiling costs 10-60 s per model on CPU; run with -m compile or "
                    "--hypothesis-profile=exhaustive")


@pytest.fixture(scope="session")
def compiled(subject):
    """The subject's model under `torch.compile(dynamic=True)` (shares its weights; built once per model)."""
    return torch.compile(subject.model, dynamic=True)


def _compare(subject, outputs, reference, inputs, prop: str) -> None:
    assert_outputs_close(
        outputs, reference, tolerance(subject.dtype, "reordered", subject.device.type), model=subject.name,
        prop=prop, masks=subject.real_token_masks(reference, inputs),
    )


def check_compiled(subject, compiled_model, inputs) -> None:
    """The compiled model's outputs equal eager's on the real tokens (inductor fuses and reorders: `reordered`)."""
    reference = subject.forward(inputs, hidden_states=True)
    with torch.no_grad():
        outputs = flatten_outputs(compiled_model(**subject.model_kwargs(inputs, hidden_states=True)))
    _compare(subject, outputs, reference, inputs, COMPILE)


def check_exported(subject, inputs) -> None:
    """A module exported for these inputs' shapes gives eager's outputs on them (real tokens)."""
    kwargs = subject.model_kwargs(inputs, hidden_states=True)
    reference = subject.forward(inputs, hidden_states=True)
    with torch.no_grad():
        program = torch.export.export(subject.model, args=(), kwargs=kwargs, strict=False)
        outputs = flatten_outputs(program.module()(**kwargs))
    _compare(subject, outputs, reference, inputs, EXPORT)


@FEW
@given(data=st.data())
def test_compile_matches_eager(subject, compiled, data):
    inputs = data.draw(model_inputs(subject.spec), label="inputs")
    record(subject, inputs, prop=COMPILE)
    check_compiled(subject, compiled, inputs)


@FEW
@given(data=st.data())
def test_export_matches_eager(subject, data):
    inputs = data.draw(model_inputs(subject.spec), label="inputs")
    record(subject, inputs, prop=EXPORT)
    check_exported(subject, inputs)
