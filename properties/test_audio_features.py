"""Audio feature extractors: any waveform gives finite features of the documented shape, and a wrong
sampling rate raises a clear error.

Runs on the feature extractor of every audio subject (`processor.feature_extractor` or the
processor), on raw waveforms from `strategies.audio`: 0 samples to beyond one chunk, silence, DC
offset, clipping, impulses, sine sweeps and noise, as float32, float64 and int16.
"""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, strategies as st

from devices.tolerance import nonfinite
from properties.artifacts import processed, record
from properties.clear_errors import describe, unclear
from strategies.audio import raw_waveforms, sampling_rates

pytestmark = pytest.mark.needs("audio", "feature_extractor")


def feature_extractor_of(subject):
    return getattr(subject.processor, "feature_extractor", subject.processor)


def chunk_samples(extractor) -> int:
    """Samples in one window of the extractor (Whisper: `n_samples`, chunk_length seconds)."""
    return int(getattr(extractor, "n_samples", 0) or extractor.sampling_rate)


def expected_shape(subject) -> tuple[int, int, int]:
    """(batch 1, mel bins, frames): the model's `num_mel_bins` and the input frames its encoder requires."""
    return (1, subject.spec.num_mel_bins, subject.spec.num_frames)


def _features(extractor, waveform, sampling_rate) -> np.ndarray:
    out = extractor(waveform, sampling_rate=sampling_rate, return_tensors="np")
    return np.asarray(out[getattr(extractor, "model_input_names", ["input_features"])[0]])


def describe_waveform(waveform: np.ndarray) -> str:
    peak = float(np.abs(waveform.astype(np.float64)).max()) if waveform.size else 0.0
    return f"waveform of {waveform.size} samples, {waveform.dtype}, peak {peak:.3g}"


# -- features ------------------------------------------------------------------------------------
FEATURES = "audio features"


def check_features(subject, waveform: np.ndarray) -> None:
    """Features have shape (1, mel bins, frames) and are finite for any waveform, silence included."""
    extractor = feature_extractor_of(subject)
    what = describe_waveform(waveform)
    try:
        features = _features(extractor, waveform, extractor.sampling_rate)
    except Exception as exc:
        raise AssertionError(f"[{subject.name}] {FEATURES}: a valid {what} was rejected: {describe(exc)}") from exc
    assert features.shape == expected_shape(subject), (
        f"[{subject.name}] {FEATURES}: shape {features.shape} for a {what}, expected {expected_shape(subject)}"
    )
    problem = nonfinite(features)
    assert problem is None, f"[{subject.name}] {FEATURES}: features of a {what}: {problem}"


def _features_call(subject, rate: int) -> dict:
    """The feature extractor call of `_features` on the stored waveform (repro.py's "processor" replay)."""
    name = getattr(feature_extractor_of(subject), "model_input_names", ["input_features"])[0]
    return {"part": "feature_extractor", "args": [{"raw": "raw_input"}],
            "kwargs": {"sampling_rate": rate, "return_tensors": "np"}, "take": [name]}


def waveforms_for(subject):
    extractor = feature_extractor_of(subject)
    return raw_waveforms(extractor.sampling_rate, chunk_samples(extractor))


@given(data=st.data())
def test_features(subject, data):
    waveform = data.draw(waveforms_for(subject), label="waveform")
    record(subject, {}, prop=FEATURES, raw_input=waveform, replay=lambda: processed([{"call": _features_call(
        subject, feature_extractor_of(subject).sampling_rate), "shape": list(expected_shape(subject)), "finite": True,
        "what": FEATURES}]))
    check_features(subject, waveform)


# -- sampling rate -------------------------------------------------------------------------------
RATE = "audio sampling rate checked"


def check_wrong_rate(subject, case: tuple[np.ndarray, int]) -> None:
    """A waveform at another sampling rate than the extractor's raises a clear error naming the rates."""
    waveform, rate = case
    extractor = feature_extractor_of(subject)
    try:
        features = _features(extractor, waveform, rate)
    except Exception as exc:
        problem = unclear(exc)
        assert problem is None, f"[{subject.name}] {RATE}: sampling_rate={rate} raised {describe(exc)}: {problem}"
        assert str(extractor.sampling_rate) in str(exc), (
            f"[{subject.name}] {RATE}: the error for sampling_rate={rate} does not name the expected rate "
            f"{extractor.sampling_rate}: {describe(exc)}"
        )
    else:
        raise AssertionError(
            f"[{subject.name}] {RATE}: a {describe_waveform(waveform)} at sampling_rate={rate} (the extractor "
            f"expects {extractor.sampling_rate}) was accepted silently, giving features of shape {features.shape}"
        )


@given(data=st.data())
def test_wrong_sampling_rate(subject, data):
    extractor = feature_extractor_of(subject)
    waveform = data.draw(raw_waveforms(extractor.sampling_rate, chunk_samples(extractor), max_chunks=0.25),
                         label="waveform")
    rate = data.draw(sampling_rates(extractor.sampling_rate, right=False), label="sampling rate")
    record(subject, {}, prop=RATE, raw_input=waveform, sampling_rate=rate, replay=lambda: processed([{
        "call": _features_call(subject, rate), "refuse": "must", "names": str(extractor.sampling_rate), "what": RATE}]))
    check_wrong_rate(subject, (waveform, rate))
