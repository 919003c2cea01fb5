"""Planted defect for the pipeline property: a pipeline that runs stale weights."""

import pytest
import torch

from properties import test_pipeline as pipeline_property
from tests.planted import breakable, expect_caught, expect_passes, healthy
from zoo import pipelines

FLOAT_TASK_MODELS = ("bert", "roberta", "distilbert", "vit", "clip")  # outputs compared as floats


@pytest.mark.parametrize("name", FLOAT_TASK_MODELS)
def test_pipeline_catches_stale_weights(name):
    """The pipeline was built from a copy of the model whose weights drifted by 1e-3."""
    subject = healthy(name)
    stale = breakable(name)
    with torch.no_grad():
        for param in stale.model.parameters():
            param.add_(1e-3)
    pipe = pipelines.build_pipeline(stale)
    strategy = pipeline_property.RAW_INPUTS[pipelines.raw_input_kind(subject)]
    expect_caught(
        pipeline_property.check_pipeline_agrees,
        strategy, subject, pipe, says=(f"[{name}] pipeline agrees with forward", "max abs diff"),
    )


@pytest.mark.parametrize("name", ("gpt2", "llama"))
def test_pipeline_catches_different_generation(name):
    """Generation compares token ids exactly: a pipeline on other weights disagrees."""
    subject = healthy(name)
    other = breakable(name)
    torch.manual_seed(0)
    with torch.no_grad():
        for param in other.model.parameters():
            param.normal_(0, 0.5)
    pipe = pipelines.build_pipeline(other)
    strategy = pipeline_property.RAW_INPUTS[pipelines.raw_input_kind(subject)]
    expect_caught(
        pipeline_property.check_pipeline_agrees,
        strategy, subject, pipe, says=(f"[{name}] pipeline agrees with forward",),
    )


@pytest.mark.parametrize("name", ("bert", "gpt2", "vit", "clip", "whisper"))
def test_pipeline_passes_healthy_models(name):
    subject = healthy(name)
    pipe = pipelines.build_pipeline(subject)
    strategy = pipeline_property.RAW_INPUTS[pipelines.raw_input_kind(subject)]
    expect_passes(
        pipeline_property.check_pipeline_agrees,
        strategy, subject, pipe,
    )
