"""Save/load round trip: safetensors `save_pretrained` then `from_pretrained` changes nothing."""

import pytest
from hypothesis import given, strategies as st

from devices.tolerance import assert_outputs_close, tolerance
from properties.artifacts import record
from strategies.batches import model_inputs
from zoo.subject import save_and_reload, shared_parameters

PROPERTY = "save/load round trip"


def check_saved_tensors(subject, directory, loading_info) -> None:
    """The checkpoint is safetensors only, and loading it finds every weight: none missing, unexpected or resized."""
    files = sorted(p.name for p in directory.iterdir())
    assert any(f.endswith(".safetensors") for f in files), f"[{subject.name}] {PROPERTY}: no safetensors in {files}"
    pickles = [f for f in files if f.endswith((".bin", ".pt", ".pth", ".pkl"))]
    assert not pickles, f"[{subject.name}] {PROPERTY}: pickle files written: {pickles}"
    problems = {k: sorted(map(str, v)) for k, v in loading_info.items() if k != "error_msgs" and v}
    assert not problems, f"[{subject.name}] {PROPERTY}: reloading the saved files reports {problems}"


def check_same_structure(original, reloaded) -> None:
    """The reloaded model has the same state-dict keys and the same tied-weight groups."""
    before, after = set(original.model.state_dict()), set(reloaded.model.state_dict())
    assert before == after, (
        f"[{original.name}] {PROPERTY}: state-dict keys differ: lost {sorted(before - after)}, "
        f"gained {sorted(after - before)}"
    )
    tied_before, tied_after = shared_parameters(original.model), shared_parameters(reloaded.model)
    assert tied_before == tied_after, (
        f"[{original.name}] {PROPERTY}: tied weights differ: before {tied_before}, after {tied_after}"
    )


def check_same_outputs(original, reloaded, inputs) -> None:
    """The reloaded model's outputs are bit-identical to the original's."""
    before = original.forward(inputs, hidden_states=True)
    after = reloaded.forward(inputs, hidden_states=True)
    dtype = next(iter(before.values())).dtype
    assert_outputs_close(after, before, tolerance(dtype, "exact"), model=original.name, prop=PROPERTY)


@pytest.fixture(scope="session")
def saved(subject, tmp_path_factory):
    """(directory, reloaded subject, loading info): one round trip per model per session."""
    directory = tmp_path_factory.mktemp(f"saved-{subject.name}")
    return (directory, *save_and_reload(subject, directory))


def test_saved_tensors(subject, saved):
    check_saved_tensors(subject, saved[0], saved[2])


def test_same_structure(subject, saved):
    check_same_structure(subject, saved[1])


@given(data=st.data())
def test_same_outputs(subject, saved, data):
    inputs = data.draw(model_inputs(subject.spec), label="inputs")
    record(subject, inputs, prop=PROPERTY, reloaded_from=str(saved[0]))
    check_same_outputs(subject, saved[1], inputs)
