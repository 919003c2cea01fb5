"""Image inputs: model-ready pixel values, and raw images (PIL or numpy) for image processors.

Raw images come in every form a user may hand to a processor: PIL images of modes L, RGB, RGBA,
I;16 and F, numpy arrays channels-last or channels-first in uint8, float32 or float64 (0..255, or
already scaled to 0..1), sizes from 1x1 to several hundred pixels with extreme aspect ratios, and
black, white, constant, noise or gradient content. Pixels are computed from a few drawn numbers
(a seed for noise), never element by element, so large images stay cheap to draw and to shrink.
Failures shrink toward a 1x1 black RGB PIL image.
"""

from __future__ import annotations

import numpy as np
from hypothesis import event, strategies as st

from strategies.arrays import dense_floats

MODES = ("RGB", "L", "RGBA", "I;16", "F")  # PIL modes; numpy arrays take RGB, L and RGBA
ARRAY_MODES = ("RGB", "L", "RGBA")
LAYOUTS = ("pil", "channels_last", "channels_first")
ARRAY_DTYPES = ("uint8", "float32", "float64", "float in [0, 1]")
CONTENTS = ("black", "white", "constant", "noise", "gradient")
CHANNELS = {"RGB": 3, "L": 1, "RGBA": 4, "I;16": 1, "F": 1}
EXTREME_ASPECT = 8  # a side at least this many times the other counts as an extreme aspect ratio
LARGE_SIDE = 200  # "several hundred pixels"


def pixel_values(batch: int, channels: int, size: int):
    """Normalized pixel values (batch, channels, size, size) in the range processors produce."""
    return dense_floats((batch, channels, size, size), -3.0, 3.0)


def batch_sizes(low: int = 1, high: int = 4):
    return st.integers(low, high)


@st.composite
def image_sizes(draw, min_side: int = 1, max_side: int = 320):
    """(height, width): free, square or an extreme aspect ratio (a side >= 8x the other), tagged."""
    shape = draw(st.sampled_from(("free", "square", "extreme")), label="aspect")
    if shape == "extreme" and max_side >= EXTREME_ASPECT * min_side:
        short = draw(st.integers(min_side, max_side // EXTREME_ASPECT), label="short side")
        long = draw(st.integers(EXTREME_ASPECT * short, max_side), label="long side")
        height, width = (long, short) if draw(st.booleans(), label="tall") else (short, long)
    else:
        height = draw(st.integers(min_side, max_side), label="height")
        width = height if shape == "square" else draw(st.integers(min_side, max_side), label="width")
    if (height, width) == (1, 1):
        event("image size: 1x1")
    if max(height, width) >= EXTREME_ASPECT * min(height, width):
        event("image size: extreme aspect ratio")
    if max(height, width) >= LARGE_SIDE:
        event(f"image size: side >= {LARGE_SIDE}")
    return height, width


@st.composite
def _pixels(draw, height: int, width: int, channels: int) -> np.ndarray:
    """uint8 pixels (height, width, channels) of one content kind."""
    kind = draw(st.sampled_from(CONTENTS), label="content")
    event(f"image content: {kind}")
    shape = (height, width, channels)
    if kind == "black":
        return np.zeros(shape, np.uint8)
    if kind == "white":
        return np.full(shape, 255, np.uint8)
    if kind == "constant":
        return np.full(shape, draw(st.integers(0, 255), label="value"), np.uint8)
    if kind == "noise":
        rng = np.random.default_rng(draw(st.integers(0, 2**32 - 1), label="seed"))
        return rng.integers(0, 256, size=shape, dtype=np.uint8)
    # gradient: a ramp along rows, columns reversed per channel so channels differ
    rows = np.linspace(0, 255, height)[:, None, None]
    cols = np.linspace(0, 255, width)[None, :, None]
    mix = np.linspace(0, 1, channels)[None, None, :]
    return np.rint(rows * (1 - mix) + cols[:, ::-1] * mix).astype(np.uint8)


def _as_pil(pixels: np.ndarray, mode: str):
    from PIL import Image

    if mode == "RGB" or mode == "RGBA":
        return Image.fromarray(pixels)
    gray = pixels[..., 0]
    if mode == "L":
        return Image.fromarray(gray)
    if mode == "I;16":
        return Image.fromarray(gray.astype(np.uint16) * 257)  # full 16-bit range
    return Image.fromarray(gray.astype(np.float32))  # "F": 0..255 as floats


def _as_array(pixels: np.ndarray, layout: str, dtype: str) -> np.ndarray:
    array = pixels if layout == "channels_last" else np.moveaxis(pixels, -1, 0)
    if dtype == "uint8":
        return np.ascontiguousarray(array)
    if dtype == "float in [0, 1]":
        return np.ascontiguousarray(array, dtype=np.float32) / np.float32(255)
    return np.ascontiguousarray(array, dtype=np.dtype(dtype))


@st.composite
def images(draw, min_side: int = 1, max_side: int = 320, modes=MODES, layouts=LAYOUTS, dtypes=ARRAY_DTYPES):
    """A valid image: a PIL image or a numpy array, of any size, mode, dtype, layout and content."""
    forms = [(layout, mode) for layout in layouts for mode in modes if layout == "pil" or mode in ARRAY_MODES]
    if not forms:
        raise ValueError(f"no image form has a layout in {layouts} and a mode in {modes}")
    layout, mode = draw(st.sampled_from(forms), label="layout and mode")
    event(f"image layout: {layout}")
    event(f"image mode: {mode}")
    height, width = draw(image_sizes(min_side, max_side), label="size")
    pixels = draw(_pixels(height, width, CHANNELS[mode]), label="pixels")
    if layout == "pil":
        return _as_pil(pixels, mode)
    dtype = draw(st.sampled_from(dtypes), label="dtype")
    event(f"image dtype: {dtype}")
    return _as_array(pixels, layout, dtype)


def pil_images(min_side: int = 1, max_side: int = 64):
    """RGB PIL images of any size from `min_side` to `max_side` pixels a side."""
    return images(min_side, max_side, modes=("RGB",), layouts=("pil",))


@st.composite
def empty_images(draw, max_side: int = 16):
    """Images without pixels: a side of length 0, as a PIL image or a numpy array of either layout."""
    layout = draw(st.sampled_from(LAYOUTS), label="layout")
    other = draw(st.integers(0, max_side), label="other side")
    height, width = (0, other) if draw(st.booleans(), label="zero height") else (other, 0)
    event(f"empty image: {layout}")
    pixels = np.zeros((height, width, 3), np.uint8)
    if layout == "pil":
        from PIL import Image

        return Image.new("RGB", (width, height))
    return _as_array(pixels, layout, "uint8")


def unusable_images(max_side: int = 16):
    """Inputs that are no image a processor can take: wrong channel counts, wrong ranks, wrong types."""
    side = st.integers(1, max_side)
    wrong_channels = st.tuples(side, side, st.sampled_from((2, 5, 7))).map(lambda s: np.zeros(s, np.uint8))
    wrong_rank = st.sampled_from((1, 5)).flatmap(
        lambda rank: st.tuples(*[st.integers(1, 4)] * rank).map(lambda s: np.zeros(s, np.uint8))
    )
    no_channel_axis = st.tuples(side, side).map(lambda s: np.zeros(s, np.uint8))
    not_an_image = st.sampled_from((None, 3, 2.5, "not an image", b"\x89PNG", [], {}))
    kinds = {
        "wrong channel count": wrong_channels,
        "wrong rank": wrong_rank,
        "2-D array (no channel axis)": no_channel_axis,
        "not an image": not_an_image,
    }

    @st.composite
    def build(draw):
        kind = draw(st.sampled_from(list(kinds)), label="kind")
        event(f"unusable image: {kind}")
        return draw(kinds[kind], label=kind)

    return build()
