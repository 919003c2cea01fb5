"""Audio inputs: model-ready log-mel features (waveforms come with the processor strategies)."""

from __future__ import annotations

from strategies.arrays import dense_floats


def input_features(batch: int, mel_bins: int, frames: int):
    """Log-mel features (batch, mel_bins, frames) in the range Whisper's extractor produces (about -1.5..1.5)."""
    return dense_floats((batch, mel_bins, frames), -1.5, 1.5)


def waveforms(max_samples: int = 16000, min_samples: int = 1):
    """Mono float32 waveforms in [-1, 1] of `min_samples..max_samples` samples."""
    import numpy as np
    from hypothesis import strategies as st

    from strategies.arrays import dense_floats

    return st.integers(min_samples, max_samples).flatmap(lambda n: dense_floats((n,), -1.0, 1.0, dtype=np.float32))
