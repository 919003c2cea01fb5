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
from properties.artifacts import compared, pair, record, side
from properties.examples import examples
from strategies.batches import model_inputs
from zoo.subject import flatten_outputs

pytestmark = pytest.mark.compile

COMPILE = "torch.compile vs eager"
EXPORT = "torch.export vs eager"
# Measured on the zoo (ci profile, 3 examples, 1 thread, shared 2-core machine): compile 14-208 s per model
# (llama 208, whisper 192, clip 138, gpt2 87, bert 73, t5 ~70 for its first shape, vit 42, roberta 32,
# distilbert 14), export 1.3-4.5 s per model. A few examples per model keep `-m compile` to minutes.
FEW = settings(max_examples=examples(max(3, settings().max_examples // 8)))


@pytest.fixture(autouse=True)
def _opt_in(request):
    selected = "compile" in (request.config.getoption("markexpr") or "")
    if not selected and settings._current_profile != "exhaustive":
        pytest.skip("opt-in: compiling costs 10-60 s per model on CPU; run with -m compile or "
                    "--hypothesis-profile=exhaustive")


def graphs_compiled() -> int:
    """How many graphs dynamo has captured in this process (since the last `torch._dynamo.reset()`)."""
    from torch._dynamo.utils import counters

    return counters["stats"]["unique_graphs"]


_GRAPHS_BEFORE: dict[str, int] = {}


@pytest.fixture(scope="session")
def compiled(subject):
    """The subject's model under `torch.compile(dynamic=True)` (shares its weights; built once per model).

    Dynamo's caches are reset first: decorator wrappers shared by every model's forward otherwise reach
    the recompile limit after a few models, and dynamo then runs the rest eagerly without a word
    (measured: t5 and bart "compiled" in 0.1 s after eight others)."""
    torch._dynamo.reset()
    _GRAPHS_BEFORE[subject.name] = graphs_compiled()
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
    record(subject, inputs, prop=COMPILE, replay=lambda: compared(pair(side(compile=True), side(), real_tokens="expected")))
    check_compiled(subject, compiled, inputs)
    assert graphs_compiled() > _GRAPHS_BEFORE[subject.name], (
        f"[{subject.name}] {COMPILE}: dynamo captured no graph (the model ran eagerly), so nothing was compared"
    )


@FEW
@given(data=st.data())
def test_export_matches_eager(subject, data):
    inputs = data.draw(model_inputs(subject.spec), label="inputs")
    record(subject, inputs, prop=EXPORT)
    check_exported(subject, inputs)
