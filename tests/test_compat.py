"""zoo.compat: each release difference is answered from the installed transformers, and the module
stays copyable into a standalone repro.py (standard library, torch and transformers only).

Run on another release with `PYTHONPATH=<release folder> pytest tests/test_compat.py` (see
`properties/releases.py`); CI runs the zoo on the oldest and the newest supported release.
"""

from __future__ import annotations

import ast
import sys
from pathlib import Path

import pytest
import torch
import transformers
from PIL import Image

from zoo import compat
from tests.planted import breakable, healthy

SOURCE = Path(compat.__file__).read_text(encoding="utf-8")


def test_imports_only_the_standard_library_torch_and_transformers():
    allowed = set(sys.stdlib_module_names) | {"torch", "transformers", "__future__"}
    imported = set()
    for node in ast.walk(ast.parse(SOURCE)):
        if isinstance(node, ast.Import):
            imported |= {alias.name.split(".")[0] for alias in node.names}
        elif isinstance(node, ast.ImportFrom):
            imported.add((node.module or "").split(".")[0])
    assert imported <= allowed, f"zoo/compat.py imports {sorted(imported - allowed)}"


def test_source_runs_on_its_own():
    """As properties/artifacts.py pastes it into repro.py: without its `from __future__` line, in a fresh namespace."""
    namespace: dict = {}
    exec(compile("\n".join(l for l in SOURCE.splitlines() if not l.startswith("from __future__")), "compat", "exec"),
         namespace)
    public = {"accepts", "cache_argument", "cache_kwargs", "returned_cache", "enable_activation_checkpointing",
              "image_processor_class", "CHECKPOINTING_ENTRY_POINT"}
    assert public <= set(namespace)


class _New(torch.nn.Module):
    def forward(self, input_ids, cache=None, use_cache=False):
        return input_ids


class _Old(torch.nn.Module):
    def forward(self, input_ids, past_key_values=None, use_cache=False):
        return input_ids


def test_cache_argument_follows_the_forward_signature():
    assert compat.cache_argument(_New()) == "cache" and compat.cache_kwargs(_New(), 7) == {"cache": 7}
    assert compat.cache_argument(_Old()) == "past_key_values"
    assert compat.cache_kwargs(_Old(), None) == {"past_key_values": None}
    assert compat.accepts(_Old(), "use_cache") and not compat.accepts(_Old(), "cache")


def test_returned_cache_reads_either_name():
    from transformers.utils import ModelOutput

    assert compat.returned_cache({"cache": 1, "past_key_values": None}) == 1
    assert compat.returned_cache({"past_key_values": 2}) == 2
    assert compat.returned_cache(ModelOutput(logits=torch.zeros(1))) is None

    class Attributes:  # an object without `.get`
        past_key_values = 3

    assert compat.returned_cache(Attributes()) == 3


@pytest.mark.parametrize("name", ["gpt2", "bart"])
def test_cached_call_on_the_installed_release(name):
    """The cache goes in under this release's name and comes back; a second step continues it."""
    model = healthy(name).model
    ids = torch.tensor([[3, 4, 5]])
    seq2seq = model.config.is_encoder_decoder
    with torch.no_grad():
        if seq2seq:
            first = model(input_ids=ids, decoder_input_ids=ids[:, :2], use_cache=True)
            step = {"decoder_input_ids": ids[:, 2:], "encoder_outputs": (first.encoder_last_hidden_state,)}
        else:
            first = model(input_ids=ids[:, :2], use_cache=True)
            step = {"input_ids": ids[:, 2:]}
        cache = compat.returned_cache(first)
        assert cache is not None and cache.get_seq_length() == 2
        second = model(**step, use_cache=True, **compat.cache_kwargs(model, cache))
    assert compat.returned_cache(second).get_seq_length() == 3


def test_activation_checkpointing_is_enabled_under_either_name():
    subject = breakable("bert")
    assert not subject.model.is_gradient_checkpointing
    compat.enable_activation_checkpointing(subject.model, {"use_reentrant": False})
    assert subject.model.is_gradient_checkpointing


def test_checkpointing_entry_point_is_what_enabling_calls():
    """A subclass overriding CHECKPOINTING_ENTRY_POINT sees the call on every release, and can pass it on."""
    subject = breakable("llama")
    calls = []

    def enable(self, gradient_checkpointing_kwargs=None, *args, **kwargs):
        calls.append(gradient_checkpointing_kwargs)
        return getattr(super(type(self), self), compat.CHECKPOINTING_ENTRY_POINT)(
            {"use_reentrant": True}, *args, **kwargs)

    model = subject.model
    model.__class__ = type(type(model).__name__ + "Spy", (type(model),), {compat.CHECKPOINTING_ENTRY_POINT: enable})
    compat.enable_activation_checkpointing(model)
    assert calls == [None] and model.is_gradient_checkpointing


@pytest.mark.parametrize("prefix", ["ViT", "CLIP"])
def test_image_processor_class_is_the_pil_one(prefix):
    cls = compat.image_processor_class(prefix)
    assert cls.__name__ in (f"{prefix}ImageProcessorPil", f"{prefix}ImageProcessor")
    if hasattr(transformers, f"{prefix}ImageProcessorPil"):
        assert cls.__name__.endswith("Pil")
    assert not any("Fast" in c.__name__ or "Torchvision" in c.__name__ for c in cls.__mro__), cls.__mro__
    sizes = {"ViT": {"size": {"height": 8, "width": 8}},
             "CLIP": {"size": {"shortest_edge": 8}, "crop_size": {"height": 8, "width": 8}}}[prefix]
    out = cls(**sizes)(images=Image.new("RGB", (13, 9), (10, 200, 30)), return_tensors="np")
    assert out["pixel_values"].shape == (1, 3, 8, 8)


@pytest.mark.parametrize("config, recurrent", [
    ("LlamaConfig", False), ("Gemma3TextConfig", False),  # attention only (sliding windows too)
    ("BambaConfig", True), ("JambaConfig", True), ("MambaConfig", True),  # SSM layers (all, or mixed in)
])
def test_recurrent_layers_are_told_from_the_class_or_the_layer_types(config, recurrent):
    with torch.device("meta"):
        model = transformers.AutoModel.from_config(getattr(transformers, config)())
    assert compat.recurrent_layers(model) is recurrent

