"""Image inputs: model-ready pixel values (processor-level images come with the processor strategies)."""

from __future__ import annotations

from hypothesis import strategies as st

from strategies.arrays import dense_floats


def pixel_values(batch: int, channels: int, size: int):
    """Normalized pixel values (batch, channels, size, size) in the range processors produce."""
    return dense_floats((batch, channels, size, size), -3.0, 3.0)


def batch_sizes(low: int = 1, high: int = 4):
    return st.integers(low, high)


def pil_images(min_side: int = 1, max_side: int = 64):
    """RGB PIL images of any size from `min_side` to `max_side` pixels a side."""
    import numpy as np
    from hypothesis.extra.numpy import arrays
    from PIL import Image

    @st.composite
    def build(draw):
        height = draw(st.integers(min_side, max_side), label="height")
        width = draw(st.integers(min_side, max_side), label="width")
        pixels = draw(arrays(np.uint8, (height, width, 3)), label="pixels")
        return Image.fromarray(pixels, mode="RGB")

    return build()
