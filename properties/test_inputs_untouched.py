"""Inputs untouched: a forward pass never modifies the caller's tensors (ids, masks, position ids,
pixel values, features, decoder ids)."""

import torch
from hypothesis import given, strategies as st

from devices.tolerance import difference
from properties.artifacts import judged, record
from strategies.batches import model_inputs

PROPERTY = "inputs untouched"


def check_inputs_untouched(subject, inputs) -> None:
    """After `model(**kwargs)`, every tensor in kwargs has the same shape, dtype and values as before."""
    kwargs = subject.model_kwargs(inputs, hidden_states=True)
    tensors = {name: value for name, value in kwargs.items() if isinstance(value, torch.Tensor)}
    before = {name: (value.clone(), value.dtype, tuple(value.shape)) for name, value in tensors.items()}
    with torch.no_grad():
        subject.model(**kwargs)
    changed = []
    for name, value in tensors.items():
        copy, dtype, shape = before[name]
        if value.dtype != dtype or tuple(value.shape) != shape:
            changed.append(f"{name!r} became {value.dtype} {tuple(value.shape)} (was {dtype} {shape})")
        elif not torch.equal(value, copy):
            changed.append(f"{name!r} was modified in place: {difference(value, copy)}")
    assert not changed, f"[{subject.name}] {PROPERTY}: the forward pass changed its inputs: " + "; ".join(changed)


@given(data=st.data())
def test_inputs_untouched(subject, data):
    inputs = data.draw(model_inputs(subject.spec), label="inputs")
    record(subject, inputs, prop=PROPERTY, replay=lambda: judged("untouched"))
    check_inputs_untouched(subject, inputs)
