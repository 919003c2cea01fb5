"""Planted defects for the foundation properties: each property must catch its defect.

Every test breaks a private copy of a zoo model, lets the property's own strategy search for a
failing input, and checks the shrunk input and the message. The control runs the same search on
the healthy model and finds nothing.
"""

import pytest
import torch
import torch.nn.functional as F

from properties import test_determinism as determinism
from properties import test_finite as finite
from properties import test_save_load as save_load
from properties import test_shapes as shapes
from strategies.batches import model_inputs
from tests.planted import breakable, expect_caught, expect_passes, healthy, on_output
from zoo.tiny import ZOO_NAMES
from zoo.subject import save_and_reload, shared_parameters


def _largest_batch(inputs):
    return max(value.shape[0] for value in inputs.values())


@pytest.mark.parametrize("name", ZOO_NAMES)
def test_finite_catches_nan_in_batches(name):
    """A model that emits NaN whenever it sees a batch of two or more."""
    subject = breakable(name)

    def nan_when_batched(out, kwargs):
        if out.shape[0] > 1:
            out = out.clone()
            out[-1].view(-1)[0] = float("nan")
        return out

    on_output(subject.model, nan_when_batched)
    failure = expect_caught(finite.check_finite, model_inputs(subject.spec), subject,
                            says=(f"[{name}] finite", "non-finite", "NaN 1"))
    assert _largest_batch(failure.example) == 2  # shrunk to the smallest batch that fails


def test_finite_passes_healthy_models():
    for name in ZOO_NAMES:
        expect_passes(finite.check_finite, model_inputs(healthy(name).spec), healthy(name))


@pytest.mark.parametrize("name", ZOO_NAMES)
def test_shapes_catch_squeezed_batch(name):
    """The classic `.squeeze()` bug: a batch of one loses its batch dimension."""
    subject = breakable(name)
    on_output(subject.model, lambda out, kwargs: out.squeeze(0))
    failure = expect_caught(shapes.check_shapes, model_inputs(subject.spec), subject,
                            says=(f"[{name}] shape contract", "expected"))
    assert _largest_batch(failure.example) == 1


def test_shapes_catch_missing_hidden_state_layer():
    subject = breakable("bert")
    forward = subject.model.forward

    def drop_last_layer(*args, **kwargs):
        out = forward(*args, **kwargs)
        if out.hidden_states is not None:
            out.hidden_states = out.hidden_states[:-1]
        return out

    subject.model.forward = drop_last_layer
    expect_caught(shapes.check_shapes, model_inputs(subject.spec), subject,
                  says=("missing outputs ['hidden_states.2']",))


def test_shapes_pass_healthy_models():
    for name in ZOO_NAMES:
        expect_passes(shapes.check_shapes, model_inputs(healthy(name).spec), healthy(name))


@pytest.mark.parametrize("name", ZOO_NAMES)
def test_determinism_catches_dropout_in_eval(name):
    """Dropout that stays active in eval mode (functional dropout with training=True)."""
    subject = breakable(name)
    on_output(subject.model, lambda out, kwargs: F.dropout(out, p=0.5, training=True))
    expect_caught(determinism.check_deterministic, model_inputs(subject.spec), subject,
                  says=(f"[{name}] determinism", "max abs diff", "rtol=0, atol=0"))


def test_determinism_passes_healthy_models():
    for name in ZOO_NAMES:
        expect_passes(determinism.check_deterministic, model_inputs(healthy(name).spec), healthy(name))


def _drop_on_save(model, victim):
    state_dict = model.state_dict
    model.state_dict = lambda *a, **k: {key: v for key, v in state_dict(*a, **k).items() if key != victim}
    return model


@pytest.mark.parametrize("name", ZOO_NAMES)
def test_save_load_catches_weight_lost_on_save(name, tmp_path):
    """`state_dict()` forgets one weight, so the saved checkpoint lacks it and reloading re-initializes it."""
    subject = breakable(name)
    tied = {key for group in shared_parameters(subject.model) for key in group}
    victim = [key for key, p in subject.model.named_parameters() if p.dim() == 2 and key not in tied][-1]
    _drop_on_save(subject.model, victim)
    reloaded, info = save_and_reload(subject, tmp_path)
    with pytest.raises(AssertionError, match=rf"\[{name}\] save/load round trip: reloading the saved files reports .*missing_keys"):
        save_load.check_saved_tensors(subject, tmp_path, info)
    expect_caught(save_load.check_same_outputs, model_inputs(subject.spec), subject, reloaded,
                  says=(f"[{name}] save/load round trip", "differs beyond rtol=0, atol=0"))


def test_save_load_catches_untied_weights(tmp_path):
    """A reload that unties the LM head from the input embeddings."""
    subject = healthy("gpt2")
    reloaded, _ = save_and_reload(subject, tmp_path)
    head = reloaded.model.get_output_embeddings()
    head.weight = torch.nn.Parameter(head.weight.detach().clone())
    with pytest.raises(AssertionError, match=r"\[gpt2\] save/load round trip: tied weights differ"):
        save_load.check_same_structure(subject, reloaded)


def test_save_load_passes_healthy_models(tmp_path):
    for name in ZOO_NAMES:
        subject = healthy(name)
        reloaded, info = save_and_reload(subject, tmp_path / name)
        save_load.check_saved_tensors(subject, tmp_path / name, info)
        save_load.check_same_structure(subject, reloaded)
        save_load.check_same_weights(subject, reloaded)
        expect_passes(save_load.check_same_outputs, model_inputs(subject.spec), subject, reloaded)
