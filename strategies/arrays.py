"""Dense float arrays for pixel values and audio features.

Real images and spectrograms are dense, so element-wise `arrays()` draws (which Hypothesis keeps
mostly at the fill value) are only one of the content kinds; the others are constant arrays
(the shrink target) and seeded noise, drawn as (seed, scale) so the draw stays small and replayable.
"""

from __future__ import annotations

import numpy as np
from hypothesis import event, strategies as st
from hypothesis.extra.numpy import arrays

CONTENT_KINDS = ("constant", "sparse", "noise", "gradient")


@st.composite
def dense_floats(draw, shape: tuple[int, ...], low: float, high: float, dtype=np.float32):
    """A float array of `shape` with values in [low, high]: constant, sparse, noise or a gradient."""
    kind = draw(st.sampled_from(CONTENT_KINDS), label="content")
    event(f"content: {kind}")
    values = st.floats(low, high, width=32, allow_nan=False, allow_infinity=False)
    if kind == "constant":
        return np.full(shape, draw(values, label="value"), dtype=dtype)
    if kind == "sparse":
        return draw(arrays(dtype, shape, elements=values, fill=values), label="array")
    if kind == "noise":
        seed = draw(st.integers(0, 2**32 - 1), label="seed")
        rng = np.random.default_rng(seed)
        return rng.uniform(low, high, size=shape).astype(dtype)
    ramp = np.linspace(low, high, num=int(np.prod(shape)), dtype=np.float64)
    return ramp.reshape(shape).astype(dtype)
