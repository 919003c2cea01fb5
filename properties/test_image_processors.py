"""Image processors: any valid image gives finite pixel values of the model's shape in the normalized
range; the layout of an array does not change the result; an unusable image gets a clear error.

Runs on the image processor of every vision subject (`processor.image_processor` or the processor),
on raw images from `strategies.images`: PIL modes L, RGB, RGBA, I;16 and F, numpy arrays of 1, 3
or 4 channels in uint8 / float32 / float64, 1x1 up to several hundred pixels, extreme aspect ratios,
black, white, constant, noise and gradient content.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch
from hypothesis import given, strategies as st

from devices.tolerance import assert_outputs_close, nonfinite, tolerance
from properties.artifacts import processed, record
from properties.clear_errors import describe, short, unclear
from strategies.images import MODES, empty_images, images, unusable_images

pytestmark = pytest.mark.needs("vision", "image_processor")

# PIL images of each mode, and numpy arrays of each channel count (layout and dtype drawn, and
# stated to the processor: inferring the layout is `test_layouts_agree`'s business).
FORMS = MODES + ("array RGB", "array L", "array RGBA")
LAYOUT_MAX_SIDE = 16  # layout inference is about small heights/widths; large images add nothing


def image_processor_of(subject):
    return getattr(subject.processor, "image_processor", subject.processor)


def _pixel_values(processor, image, input_data_format=None) -> np.ndarray:
    kwargs = {"input_data_format": input_data_format} if input_data_format else {}
    return np.asarray(processor(images=image, return_tensors="np", **kwargs)["pixel_values"])


def expected_shape(subject) -> tuple[int, ...]:
    return (1, subject.spec.num_channels, subject.spec.image_size, subject.spec.image_size)


def normalized_range(processor) -> tuple[np.ndarray, np.ndarray]:
    """Per-channel (low, high) of pixel values for inputs in 0..255 after rescaling and normalizing."""
    top = 255.0 * (processor.rescale_factor if getattr(processor, "do_rescale", False) else 1.0)
    if getattr(processor, "do_normalize", False):
        mean = np.asarray(processor.image_mean, dtype=np.float64)
        std = np.asarray(processor.image_std, dtype=np.float64)
    else:
        mean, std = np.zeros(1), np.ones(1)
    return (0.0 - mean) / std, (top - mean) / std


# -- standalone replays (repro.py's "processor" kind) on the stored image --------------------------------
def _pixels_call(input_data_format=None, layout=None) -> dict:
    image = {"raw": "raw_input", **({"layout": layout} if layout else {})}
    kwargs = {"images": image, "return_tensors": "np", **({"input_data_format": input_data_format}
                                                           if input_data_format else {})}
    return {"part": "image_processor", "kwargs": kwargs, "take": ["pixel_values"]}


def _storable(value) -> bool:
    """Whether the artifact holds `value` exactly (arrays, PIL images, JSON values)."""
    import json

    if isinstance(value, np.ndarray) or type(value).__module__.startswith("PIL."):
        return True
    try:
        return json.loads(json.dumps(value)) == value
    except (TypeError, ValueError):
        return False


def _pixels_replay(subject, input_data_format=None) -> dict:
    low, high = normalized_range(image_processor_of(subject))
    channels = subject.spec.num_channels
    return processed([{"call": _pixels_call(input_data_format), "what": PIXELS, "shape": list(expected_shape(subject)),
                       "finite": True, "range": [np.broadcast_to(low, (channels,)).tolist(),
                                                 np.broadcast_to(high, (channels,)).tolist()]}])


def describe_image(image) -> str:
    if isinstance(image, np.ndarray):
        return f"array {image.shape} {image.dtype}"
    if hasattr(image, "mode") and hasattr(image, "size"):
        return f"PIL {image.mode} {image.size[0]}x{image.size[1]} (w x h)"
    return short(image)


# -- any valid image -----------------------------------------------------------------------------
PIXELS = "image processor pixel values"


def check_pixel_values(subject, case) -> None:
    """`pixel_values` has the model's shape (1, C, H, W), is finite and lies in the normalized range."""
    image, input_data_format = case
    processor = image_processor_of(subject)
    what = describe_image(image) + (f", input_data_format={input_data_format}" if input_data_format else "")
    try:
        values = _pixel_values(processor, image, input_data_format)
    except Exception as exc:
        raise AssertionError(f"[{subject.name}] {PIXELS}: a valid image ({what}) was rejected: {describe(exc)}") from exc
    assert values.shape == expected_shape(subject), (
        f"[{subject.name}] {PIXELS}: shape {values.shape} for {what}, expected {expected_shape(subject)}"
    )
    problem = nonfinite(values)
    assert problem is None, f"[{subject.name}] {PIXELS}: values for {what}: {problem}"
    low, high = normalized_range(processor)
    low = np.broadcast_to(low, (values.shape[1],))[None, :, None, None]
    high = np.broadcast_to(high, (values.shape[1],))[None, :, None, None]
    slack = 8 * np.finfo(np.float32).eps * np.maximum(np.abs(low), np.abs(high))  # float32 rounding
    outside = (values < low - slack) | (values > high + slack)
    if outside.any():
        where = tuple(int(i) for i in np.argwhere(outside)[0])
        raise AssertionError(
            f"[{subject.name}] {PIXELS}: {int(outside.sum())} of {values.size} values outside the normalized "
            f"range for {what}: value {values[where]:.6g} at {where}, channel range "
            f"[{float(low[0, where[1], 0, 0]):.6g}, {float(high[0, where[1], 0, 0]):.6g}]"
        )


def image_cases(form: str):
    """(image, input_data_format) of one form: a PIL mode, or an array of one channel count."""
    if form in MODES:
        return images(modes=(form,), layouts=("pil",)).map(lambda image: (image, None))
    mode = form.split()[1]
    return st.one_of(
        *(images(modes=(mode,), layouts=(layout,)).map(lambda array, layout=layout: (array, layout))
          for layout in ("channels_last", "channels_first"))
    )


@pytest.mark.parametrize("form", FORMS)
@given(data=st.data())
def test_pixel_values(subject, form, data):
    case = data.draw(image_cases(form), label="image, input_data_format")
    record(subject, {}, prop=PIXELS, raw_input=case[0], input_data_format=case[1],
           replay=lambda: _pixels_replay(subject, case[1]))
    check_pixel_values(subject, case)


# -- layout inference ----------------------------------------------------------------------------
LAYOUTS = "image processor layouts agree"


def check_layouts_agree(subject, pixels: np.ndarray) -> None:
    """One RGB image as a PIL image, a channels-last and a channels-first uint8 array (layout left to
    the processor to infer) gives bit-identical pixel values."""
    from PIL import Image

    processor = image_processor_of(subject)
    reference = torch.from_numpy(_pixel_values(processor, Image.fromarray(pixels)))
    for layout, array in (("channels_last", pixels), ("channels_first", np.ascontiguousarray(np.moveaxis(pixels, -1, 0)))):
        prop = f"{LAYOUTS} (PIL vs {layout} array {array.shape})"
        try:
            got = torch.from_numpy(_pixel_values(processor, array))
        except Exception as exc:
            raise AssertionError(f"[{subject.name}] {prop}: the array was rejected: {describe(exc)}") from exc
        assert_outputs_close({"pixel_values": got}, {"pixel_values": reference}, tolerance(torch.float32, "exact"),
                             model=subject.name, prop=prop)


@given(data=st.data())
def test_layouts_agree(subject, data):
    image = data.draw(images(max_side=LAYOUT_MAX_SIDE, modes=("RGB",), layouts=("channels_last",), dtypes=("uint8",)),
                      label="pixels (height, width, 3)")
    record(subject, {}, prop=LAYOUTS, raw_input=image, replay=lambda: processed([
        {"call": _pixels_call(layout=layout), "same_as": _pixels_call(layout="pil"), "what": f"{LAYOUTS} (PIL vs {layout})"}
        for layout in ("channels_last", "channels_first")]))
    check_layouts_agree(subject, image)


# -- unusable images -----------------------------------------------------------------------------
REJECTS = "image processor rejects unusable images clearly"


def check_rejects_empty(subject, image) -> None:
    """An image without pixels gets a clear ValueError/TypeError, never made-up pixel values."""
    processor = image_processor_of(subject)
    try:
        values = _pixel_values(processor, image)
    except Exception as exc:
        problem = unclear(exc)
        assert problem is None, f"[{subject.name}] {REJECTS}: {describe_image(image)} raised {describe(exc)}: {problem}"
    else:
        raise AssertionError(
            f"[{subject.name}] {REJECTS}: an image without pixels ({describe_image(image)}) was accepted and gave "
            f"pixel values of shape {values.shape}"
        )


def check_rejects_unusable(subject, value) -> None:
    """An input that is no usable image gets a clear ValueError/TypeError, or else pixel values of the
    model's shape (never a wrong shape)."""
    processor = image_processor_of(subject)
    try:
        values = _pixel_values(processor, value)
    except Exception as exc:
        problem = unclear(exc)
        assert problem is None, f"[{subject.name}] {REJECTS}: {describe_image(value)} raised {describe(exc)}: {problem}"
    else:
        assert values.shape == expected_shape(subject), (
            f"[{subject.name}] {REJECTS}: {describe_image(value)} was accepted with the wrong shape {values.shape} "
            f"(expected {expected_shape(subject)})"
        )


@given(data=st.data())
def test_rejects_empty_images(subject, data):
    image = data.draw(empty_images(), label="empty image")
    record(subject, {}, prop=REJECTS, raw_input=image, replay=lambda: processed([
        {"call": _pixels_call(), "refuse": "must", "what": REJECTS}]) if _storable(image) else "suite-only")
    check_rejects_empty(subject, image)


@given(data=st.data())
def test_rejects_unusable_inputs(subject, data):
    value = data.draw(unusable_images(), label="input")
    record(subject, {}, prop=REJECTS, raw_input=value, replay=lambda: processed([
        {"call": _pixels_call(), "refuse": "may", "shape": list(expected_shape(subject)), "what": REJECTS}])
        if _storable(value) else "suite-only")
    check_rejects_unusable(subject, value)
