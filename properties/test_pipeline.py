"""Pipeline API: `pipeline(task)` on the model works offline and agrees with a direct forward."""

import pytest
from hypothesis import given, strategies as st

from devices.tolerance import assert_outputs_close, tolerance
from strategies.audio import waveforms
from strategies.images import pil_images
from strategies.text import text
from properties.artifacts import record
from zoo import pipelines

PROPERTY = "pipeline agrees with forward"
pytestmark = pytest.mark.needs("pipeline")

RAW_INPUTS = {
    "text": text(min_size=1, max_size=40),
    "image": pil_images(),
    "audio": waveforms(),
}


def check_pipeline_agrees(subject, pipe, raw) -> None:
    """The pipeline's answer equals the processor + model answer for the same raw input."""
    raw = pipelines.fit_raw_input(subject, raw)
    via_pipeline = pipelines.through_pipeline(subject, pipe, raw)
    via_forward = pipelines.direct(subject, raw)
    ref = next(iter(via_forward.values()))
    kind = "reordered" if ref.is_floating_point() else "exact"
    tol = tolerance(ref.dtype if ref.is_floating_point() else "float32", kind)
    assert_outputs_close(via_pipeline, via_forward, tol, model=subject.name, prop=PROPERTY)


@pytest.fixture(scope="session")
def pipe(subject):
    """The subject's pipeline, built once per model from its own model and processor."""
    return pipelines.build_pipeline(subject)


@given(data=st.data())
def test_pipeline_agrees(subject, pipe, data):
    raw = data.draw(RAW_INPUTS[pipelines.raw_input_kind(subject)], label="raw input")
    record(subject, {}, prop=PROPERTY, raw_input=raw)
    check_pipeline_agrees(subject, pipe, raw)
