"""Memory-saving execution changes nothing: feed-forward chunking and CPU/disk offload.

Layers that carry a `chunk_size_feed_forward` (copied from the config when the model is built, and
read by `apply_chunking_to_forward`) give the same outputs when their feed-forward runs in chunks of
the sequence. A model loaded with a `device_map` that keeps half of its modules in CPU memory and
offloads the other half to disk (accelerate's hooks load them per forward) gives the plain
model's outputs. Both run on private copies; the session's model is never changed.
"""

from __future__ import annotations

import copy
import importlib.util
import weakref

import pytest
import torch
from hypothesis import given, settings, strategies as st

from devices.tolerance import assert_outputs_close, tolerance
from properties.artifacts import compared, pair, record, side
from properties.examples import examples
from strategies.batches import model_inputs
from zoo.subject import flatten_outputs

CHUNKING = "feed-forward chunking"
OFFLOAD = "cpu/disk offload"
FEWER = settings(max_examples=examples(max(5, settings().max_examples // 3)))


# -- feed-forward chunking -------------------------------------------------------------------------
def chunking_layers(model: torch.nn.Module) -> list[torch.nn.Module]:
    """The modules that honour chunking: those holding a `chunk_size_feed_forward` attribute."""
    return [module for module in model.modules() if hasattr(module, "chunk_size_feed_forward")]


_CHUNKED: "weakref.WeakKeyDictionary[torch.nn.Module, torch.nn.Module]" = weakref.WeakKeyDictionary()


def chunked_copy(subject, chunk_size: int):
    """A subject around a private copy of the model (one per model) with every layer chunking by `chunk_size`."""
    if subject.model not in _CHUNKED:
        _CHUNKED[subject.model] = copy.deepcopy(subject.model)
    model = _CHUNKED[subject.model]
    for layer in chunking_layers(model):
        layer.chunk_size_feed_forward = chunk_size
    return subject.with_model(model)


def divisors(n: int) -> list[int]:
    """`apply_chunking_to_forward` asserts that the chunk size divides the sequence length."""
    return [d for d in range(1, n + 1) if n % d == 0]


def check_chunking(subject, inputs, chunk_size: int) -> None:
    """Running the feed-forward in chunks of `chunk_size` positions gives the unchunked outputs (real tokens)."""
    reference = subject.forward(inputs, hidden_states=True)
    chunked = chunked_copy(subject, chunk_size).forward(inputs, hidden_states=True)
    assert_outputs_close(
        chunked, reference, tolerance(subject.dtype, "reordered", subject.device.type), model=subject.name,
        prop=f"{CHUNKING} (chunk_size_feed_forward={chunk_size} vs 0)",
        masks=subject.real_token_masks(reference, inputs),
    )


@FEWER
@given(data=st.data())
def test_feed_forward_chunking_changes_nothing(subject, data):
    if not chunking_layers(subject.model):
        pytest.skip(f"no layer of {type(subject.model).__name__} reads chunk_size_feed_forward")
    if not subject.spec.has("text"):
        pytest.skip("chunk sizes are drawn from divisors of the text length; this model reads no text")
    inputs = data.draw(model_inputs(subject.spec), label="inputs")
    chunk_size = data.draw(st.sampled_from(divisors(inputs["input_ids"].shape[1])), label="chunk size")
    record(subject, inputs, prop=CHUNKING, chunk_size=str(chunk_size), replay=lambda: compared(pair(
        side(chunk_size=chunk_size), side(), real_tokens="expected", what=f"chunk_size_feed_forward={chunk_size} vs 0")))
    check_chunking(subject, inputs, chunk_size)


# -- CPU/disk offload ------------------------------------------------------------------------------
def half_offload_map(model: torch.nn.Module) -> dict[str, str]:
    """A `device_map` with the first half of the tensor-owning modules (in definition order) on "cpu" and
    the rest on "disk". A module that owns tensors keeps its whole subtree (a device_map key places every
    descendant); tied weights stay with their first owner; the root module's own tensors go to "cpu"."""
    owners: list[str] = []
    for name, module in model.named_modules(remove_duplicate=False):
        owns = next(module.parameters(recurse=False), None) is not None or next(module.buffers(recurse=False), None) is not None
        if name and owns and not any(name.startswith(owner + ".") for owner in owners):
            owners.append(name)

    def key_of(name: str) -> str | None:
        return next((owner for owner in owners if name == owner or name.startswith(owner + ".")), None)

    device_map = {name: "cpu" if i < len(owners) // 2 else "disk" for i, name in enumerate(owners)}
    first_owner: dict[int, str] = {}
    for name, module in model.named_modules(remove_duplicate=False):
        for param in module.parameters(recurse=False):
            tied_to = key_of(first_owner.setdefault(param.data_ptr(), name))
            if key_of(name) is not None and tied_to is not None:
                device_map[key_of(name)] = device_map[tied_to]
    for name, _ in list(model.named_parameters(recurse=False)) + list(model.named_buffers(recurse=False)):
        device_map[name] = "cpu"
    return device_map


def load_offloaded(subject, directory) -> torch.nn.Module:
    """The subject's model saved into `directory` and reloaded with `half_offload_map` (needs accelerate)."""
    subject.model.save_pretrained(directory)
    model = type(subject.model).from_pretrained(
        directory, local_files_only=True, use_safetensors=True,
        device_map=half_offload_map(subject.model), offload_folder=str(directory / "offload"),
    )
    return model.eval()


@pytest.fixture(scope="session")
def offloaded(subject, tmp_path_factory):
    """The subject's model reloaded with CPU/disk offload, built once per model."""
    if importlib.util.find_spec("accelerate") is None:
        pytest.skip("device_map offload needs accelerate (pip install -e '.[offload]')")
    return load_offloaded(subject, tmp_path_factory.mktemp(f"offload-{subject.name}"))


def check_offload(subject, offloaded_model, inputs) -> None:
    """The offloaded model gives the plain model's outputs (real tokens) on the same inputs."""
    reference = subject.forward(inputs, hidden_states=True)
    with torch.no_grad():
        outputs = flatten_outputs(offloaded_model(**subject.model_kwargs(inputs, hidden_states=True)))
    placed = sorted(set(getattr(offloaded_model, "hf_device_map", {}).values()))
    assert_outputs_close(
        outputs, reference, tolerance(subject.dtype, "reordered", subject.device.type), model=subject.name,
        prop=f"{OFFLOAD} (device_map over {placed} vs the plain model)",
        masks=subject.real_token_masks(reference, inputs),
    )


@FEWER
@given(data=st.data())
def test_offload_matches_plain_model(subject, offloaded, data):
    inputs = data.draw(model_inputs(subject.spec), label="inputs")
    record(subject, inputs, prop=OFFLOAD)
    check_offload(subject, offloaded, inputs)
