"""Planted defects for the general contract (issue 10): heads, CNN back bones, raw-waveform encoders
and component-keyed findings. Each defect goes through the property's own check function and
strategy; each control (the healthy model) passes the same search.

The models are built here from small configs (architectures outside the zoo), through the same
`spec_for` a user checkpoint goes through.
"""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from functools import cache
from pathlib import Path

import pytest
import torch
import transformers

from properties import test_batching as batching
from properties import test_shapes as shapes
from strategies.batches import composed_batches, model_inputs
from tests.planted import expect_caught, expect_passes, on_output
from zoo.build import spec_for
from zoo.subject import Subject

ROOT = Path(__file__).resolve().parents[1]
TEXT = dict(hidden_size=32, num_hidden_layers=2, num_attention_heads=4, intermediate_size=37, vocab_size=99,
            max_position_embeddings=32)
WAVE = dict(hidden_size=32, num_hidden_layers=2, num_attention_heads=4, intermediate_size=37, conv_dim=(16, 16),
            conv_stride=(5, 2), conv_kernel=(10, 3), num_conv_pos_embeddings=16, num_conv_pos_embedding_groups=2,
            feat_extract_norm="layer", vocab_size=40)
MODELS = {
    "bert-seq-cls": ("BertForSequenceClassification", "BertConfig", dict(TEXT, num_labels=3)),
    "bert-token-cls": ("BertForTokenClassification", "BertConfig", dict(TEXT, num_labels=5)),
    "convnext": ("ConvNextModel", "ConvNextConfig", dict(hidden_sizes=[8, 16, 24, 32], depths=[1, 1, 1, 1],
                                                          image_size=32)),
    "deit-teacher": ("DeiTForImageClassificationWithTeacher", "DeiTConfig",
                     dict(hidden_size=32, num_hidden_layers=2, num_attention_heads=4, intermediate_size=37,
                          image_size=32, patch_size=8)),
    "wav2vec2": ("Wav2Vec2Model", "Wav2Vec2Config", WAVE),
    # a dual encoder: each tower's output (its hidden states too) comes back nested in the model's
    "clip": ("CLIPModel", "CLIPConfig", dict(
        text_config=dict(TEXT, projection_dim=16), projection_dim=16,
        vision_config=dict(hidden_size=32, num_hidden_layers=2, num_attention_heads=4, intermediate_size=37,
                           image_size=32, patch_size=8, projection_dim=16))),
    # hierarchical: the width doubles per stage (8 -> 16), so the config's hidden_size is not the output's
    "swin": ("SwinModel", "SwinConfig", dict(image_size=32, patch_size=4, embed_dim=8, depths=[1, 1], num_heads=[2, 2],
                                             window_size=2, hidden_size=8)),
}


@cache
def _built(name: str) -> Subject:
    model_class, config_class, config = MODELS[name]
    torch.manual_seed(7)
    model = getattr(transformers, model_class)(getattr(transformers, config_class)(**config)).eval()
    return Subject(spec_for(name, model, source="test"), model)


def healthy(name: str) -> Subject:
    return _built(name)


def breakable(name: str) -> Subject:
    import copy

    subject = _built(name)
    return subject.with_model(copy.deepcopy(subject.model))


@pytest.mark.parametrize("name", sorted(MODELS))
def test_healthy_models_keep_the_contract(name):
    expect_passes(shapes.check_shapes, model_inputs(healthy(name).spec), healthy(name))


@pytest.mark.parametrize("name", ["bert-seq-cls", "deit-teacher"])
def test_head_logits_losing_a_dimension_are_caught(name):
    """A classification head whose logits lose the label axis ((batch, labels) -> (batch,))."""
    subject = breakable(name)
    on_output(subject.model, lambda out, kwargs: out[..., 0] if out.dim() == 2 else out)
    expect_caught(shapes.check_shapes, model_inputs(subject.spec), subject,
                  says=(f"[{name}] shape contract", "logits: got (1,), expected (1, 2)" if name == "deit-teacher"
                        else "logits: got (1,), expected (1, 3)"))


def test_token_logits_losing_the_token_axis_are_caught():
    """A token-classification head that pools: (batch, tokens, labels) -> (batch, labels)."""
    subject = breakable("bert-token-cls")
    on_output(subject.model, lambda out, kwargs: out[:, 0] if out.dim() == 3 and out.shape[-1] == 5 else out)
    expect_caught(shapes.check_shapes, model_inputs(subject.spec), subject,
                  says=("[bert-token-cls] shape contract", "logits: got (1, 5), expected (1, 1, 5)"))


def test_cnn_feature_map_with_the_wrong_stride_is_caught():
    """The last ConvNeXt stage keeps its resolution (a 1x1 stride-1 conv instead of the 2x2 stride-2 one)."""
    subject = breakable("convnext")
    stage = subject.model.encoder.stages[-1]
    old = stage.downsampling_layer[1]
    stage.downsampling_layer[1] = torch.nn.Conv2d(old.in_channels, old.out_channels, kernel_size=1, stride=1)
    expect_caught(shapes.check_shapes, model_inputs(subject.spec), subject,
                  says=("[convnext] shape contract", "last_hidden_state: got (1, 32, 2, 2), expected (1, 32, 1, 1)"))


def test_hierarchical_tower_losing_its_last_stage_width_is_caught():
    """A Swin whose last stage comes out at the first stage's width (16 channels cut to 8)."""
    subject = breakable("swin")
    on_output(subject.model, lambda out, kwargs: out[..., :8] if out.shape[-1] == 16 else out)
    expect_caught(shapes.check_shapes, model_inputs(subject.spec), subject,
                  says=("[swin] shape contract", "pooler_output: got (1, 8), expected (1, 16)"))


def test_tower_state_losing_a_channel_is_caught():
    """CLIP's vision tower returns hidden states one channel short (32 -> 31); they reach the user
    only nested, as vision_model_output.hidden_states.i, which the contract must still check."""
    subject = breakable("clip")

    def cut_channel(module, args, kwargs, output):
        output.hidden_states = tuple(state[..., :-1] for state in output.hidden_states)
        return output

    subject.model.vision_model.register_forward_hook(cut_channel, with_kwargs=True)
    expect_caught(shapes.check_shapes, model_inputs(subject.spec), subject,
                  says=("[clip] shape contract", "vision_model_output.hidden_states.0: got (1, 17, 31), "
                        "expected (1, 17, 32)"))


def test_waveform_mask_ignored_is_caught():
    """A raw-waveform encoder that drops the sample-level attention mask: a zero-padded item then
    differs from the same item alone."""
    subject = breakable("wav2vec2")

    def drop_mask(module, args, kwargs):
        kwargs.pop("attention_mask", None)
        return args, kwargs

    subject.model.register_forward_pre_hook(drop_mask, with_kwargs=True)
    expect_caught(batching.check_batch_invariance, composed_batches(subject.spec), subject,
                  says=("[wav2vec2] batch invariance", "padding right"))


def test_waveform_mask_honoured_passes():
    expect_passes(batching.check_batch_invariance, composed_batches(healthy("wav2vec2").spec), healthy("wav2vec2"))


# -- findings keyed by component --------------------------------------------------------------------
_CONFTEST = """
    import pytest, torch
    pytest_plugins = ["properties.findings"]

    class _Spec:
        source = "checkpoint"

        def has(self, *capabilities):
            return not capabilities

    class _Subject:
        name, processor, spec = "m", None, _Spec()
        model = torch.nn.Sequential(torch.nn.Embedding(3, 2))

    def pytest_generate_tests(metafunc):
        if "subject" in metafunc.fixturenames:
            metafunc.parametrize("subject", ["m"])

    def pytest_collection_modifyitems(config, items):
        from properties.findings import mark_findings
        mark_findings(config, items, lambda name: _Subject())
"""
_TESTS = """
    def test_lookup(subject):
        raise IndexError("index out of range in self")

    def test_other(subject):
        assert False, "a new bug: outputs changed"
"""
_FINDINGS = """
    [[finding]]
    component = "Embedding"
    property = "test_*"
    match = "IndexError"
    reason = "planted: Embedding refuses with IndexError"
    input = "[[3]]"
"""


def test_a_finding_never_swallows_a_failure_it_does_not_describe(tmp_path):
    """One finding covers both tests of a component (by pattern); only the failure it describes is
    an xfail, the other stays red and says why."""
    for name, text in (("conftest.py", _CONFTEST), ("test_planted.py", _TESTS), ("findings.toml", _FINDINGS)):
        (tmp_path / name).write_text(textwrap.dedent(text))
    env = dict(os.environ, HFPROPS_FINDINGS=str(tmp_path / "findings.toml"), PYTHONPATH=str(ROOT))
    result = subprocess.run([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "-rfx", str(tmp_path)],
                            cwd=tmp_path, env=env, capture_output=True, text=True, timeout=120)
    out = result.stdout
    assert "1 failed" in out and "1 xfailed" in out, out
    assert "XFAIL test_planted.py::test_lookup[m]" in out, out
    assert "NOT the recorded finding" in out and "Embedding :: test_*" in out, out
    assert "recorded upstream findings met in this run" in out and "Embedding :: test_*: 1 test(s)" in out, out
