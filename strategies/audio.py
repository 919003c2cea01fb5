"""Audio inputs: model-ready log-mel features, and raw waveforms for feature extractors.

Raw waveforms run from 0 samples to beyond one chunk (the extractor's window, e.g. 30 s for
Whisper), with silence, a DC offset, clipping at +/-1, impulses, sine sweeps or noise, as float32,
float64 or int16. Samples are computed from a few drawn numbers (a seed for noise), never element
by element, so a chunk of 480000 samples stays cheap. Failures shrink toward a short float32 silence.
"""

from __future__ import annotations

import numpy as np
from hypothesis import event, strategies as st

from strategies.arrays import dense_floats

CONTENTS = ("silence", "DC offset", "clipping", "impulse", "sine sweep", "noise")
DTYPES = ("float32", "float64", "int16")
COMMON_RATES = (8000, 11025, 16000, 22050, 24000, 32000, 44100, 48000)


def input_features(batch: int, mel_bins: int, frames: int):
    """Log-mel features (batch, mel_bins, frames) in the range Whisper's extractor produces (about -1.5..1.5)."""
    return dense_floats((batch, mel_bins, frames), -1.5, 1.5)


def waveforms(max_samples: int = 16000, min_samples: int = 1):
    """Mono float32 waveforms in [-1, 1] of `min_samples..max_samples` samples."""
    return st.integers(min_samples, max_samples).flatmap(lambda n: dense_floats((n,), -1.0, 1.0, dtype=np.float32))


@st.composite
def lengths(draw, chunk_samples: int, *, max_chunks: float = 1.5):
    """Sample counts from 0 to `max_chunks` chunks; 0, 1, exactly one chunk and one more are drawn on purpose."""
    longest = int(chunk_samples * max_chunks)
    n = draw(st.integers(0, longest) | st.sampled_from((0, 1, chunk_samples, chunk_samples + 1)), label="samples")
    if n == 0:
        event("waveform length: 0")
    elif n < chunk_samples:
        event("waveform length: shorter than a chunk")
    elif n == chunk_samples:
        event("waveform length: exactly one chunk")
    else:
        event("waveform length: beyond one chunk")
    return n


@st.composite
def _signal(draw, n: int, sampling_rate: int) -> np.ndarray:
    """float64 samples in [-1, 1] of one content kind."""
    kind = draw(st.sampled_from(CONTENTS), label="content")
    event(f"waveform content: {kind}")
    t = np.arange(n) / sampling_rate
    if kind == "silence":
        return np.zeros(n)
    if kind == "DC offset":
        return np.full(n, draw(st.floats(-1, 1, allow_nan=False), label="offset"))
    if kind == "clipping":  # a loud tone hard-clipped at +/-1
        return np.clip(4 * np.sin(2 * np.pi * 440 * t), -1, 1)
    if kind == "impulse":
        signal = np.zeros(n)
        if n:
            signal[draw(st.integers(0, n - 1), label="at")] = draw(st.sampled_from((1.0, -1.0)), label="sign")
        return signal
    if kind == "sine sweep":  # a linear chirp from 20 Hz to Nyquist
        duration = max(n / sampling_rate, 1 / sampling_rate)
        f0, f1 = 20.0, sampling_rate / 2
        return np.sin(2 * np.pi * (f0 * t + (f1 - f0) * t**2 / (2 * duration)))
    rng = np.random.default_rng(draw(st.integers(0, 2**32 - 1), label="seed"))
    return rng.uniform(-1, 1, size=n)


def _as_dtype(signal: np.ndarray, dtype: str) -> np.ndarray:
    if dtype == "int16":
        return np.rint(signal * 32767).astype(np.int16)
    return signal.astype(np.dtype(dtype))


@st.composite
def raw_waveforms(draw, sampling_rate: int, chunk_samples: int, *, dtypes=DTYPES, max_chunks: float = 1.5):
    """A mono waveform as a user hands it to a feature extractor: any length, content and dtype."""
    n = draw(lengths(chunk_samples, max_chunks=max_chunks), label="length")
    signal = draw(_signal(n, sampling_rate), label="signal")
    dtype = draw(st.sampled_from(dtypes), label="dtype")
    event(f"waveform dtype: {dtype}")
    return _as_dtype(signal, dtype)


def sampling_rates(expected: int, *, right: bool):
    """The extractor's own sampling rate (`right=True`) or a wrong one (common rates, and off by one)."""
    if right:
        return st.just(expected)
    wrong = tuple(r for r in dict.fromkeys(COMMON_RATES + (expected // 2, expected + 1, 2 * expected)) if r != expected)
    return st.sampled_from(wrong)


@st.composite
def waveform_batch(draw, batch: int, min_samples: int, max_samples: int, *, with_mask: bool = True):
    """`{"input_values", "attention_mask"}` for a raw-waveform model: `batch` waveforms of their own
    lengths, right-padded with zeros to the longest, and a sample-level mask (1 on real samples)."""
    sizes = draw(st.lists(st.integers(min_samples, max_samples), min_size=batch, max_size=batch), label="samples")
    width = max(sizes)
    values = draw(dense_floats((batch, width), -1.0, 1.0, dtype=np.float32), label="waveforms")
    mask = (np.arange(width)[None, :] < np.asarray(sizes)[:, None]).astype(np.int64)
    values = np.where(mask == 1, values, np.float32(0.0)).astype(np.float32)
    if len(set(sizes)) > 1:
        event("waveforms of different lengths (zero padded)")
    return {"input_values": values, "attention_mask": mask} if with_mask else {"input_values": values}
