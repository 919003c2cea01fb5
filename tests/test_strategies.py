"""Self-tests of the input strategies: they produce valid inputs for every zoo processor and model,
and the `ci` profile (25 examples) reaches every edge-case class they tag with `event()`."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings

import strategies.arrays
import strategies.audio
import strategies.images
import strategies.text
import strategies.tokens
from properties import test_audio_features as audio_props
from properties import test_image_processors as image_props
from properties import test_tokenizers as tok_props
from strategies.audio import CONTENTS as AUDIO_CONTENTS, DTYPES as AUDIO_DTYPES, raw_waveforms, sampling_rates
from strategies.images import (ARRAY_DTYPES, CONTENTS as IMAGE_CONTENTS, LARGE_SIDE, LAYOUTS, MODES, empty_images,
                               images, unusable_images)
from strategies.text import TEXT_CLASSES, non_text_inputs, text
from strategies.tokens import id_lists, position_ids, token_batch
from tests.planted import healthy
from zoo.tiny import ZOO_NAMES

CI = settings.get_profile("ci")
TAGGING_MODULES = (strategies.text, strategies.tokens, strategies.images, strategies.audio, strategies.arrays)


@pytest.fixture
def events(monkeypatch):
    """The set of `event()` values the strategies tag while the test runs."""
    seen: set[str] = set()
    for module in TAGGING_MODULES:
        real = module.event

        def recording(value, payload="", real=real):
            seen.add(value)
            return real(value, payload)

        monkeypatch.setattr(module, "event", recording)
    return seen


def run_ci(strategy, check=lambda value: None):
    """Run `check` on the `ci` profile's examples of `strategy`."""
    @CI
    @given(strategy)
    def run(value):
        check(value)

    run()


def assert_reached(events: set[str], expected: list[str]) -> None:
    missing = sorted(set(expected) - events)
    assert not missing, f"the ci profile never reached {missing}; reached {sorted(events)}"


# -- text ----------------------------------------------------------------------------------------
def test_text_reaches_every_class(events):
    run_ci(text(max_size=tok_props.MAX_CHARS))
    assert_reached(events, [f"text: {c}" for c in TEXT_CLASSES] + ["text: empty"])


def test_text_respects_sizes_and_shrinks_to_short_ascii():
    from hypothesis import find

    run_ci(text(min_size=3, max_size=10), lambda s: (isinstance(s, str) and 3 <= len(s) <= 10) or pytest.fail(repr(s)))
    assert find(text(), lambda s: len(s) >= 1, settings=CI) == "0"
    assert find(text(), lambda s: True, settings=CI) == ""


def test_special_tokens_are_drawn():
    from hypothesis import find

    assert "<|mine|>" in find(text(special_tokens=("<|mine|>",)), lambda s: "<|mine|>" in s, settings=CI)


@pytest.mark.parametrize("name", [n for n in ZOO_NAMES if n != "vit"])
def test_every_zoo_tokenizer_encodes_drawn_text(name):
    tokenizer = tok_props.tokenizer_of(healthy(name))
    run_ci(tok_props._texts_for(tokenizer), lambda s: tokenizer(s) and tokenizer.decode(tokenizer(s)["input_ids"]))


def test_non_text_inputs_reach_every_kind(events):
    run_ci(non_text_inputs())
    kinds = ["empty batch", "None", "number", "bytes", "list with a non-string", "nested list", "dict",
             "numpy array", "lone surrogate"]
    assert_reached(events, [f"non-text input: {k}" for k in kinds])


# -- token ids -----------------------------------------------------------------------------------
@pytest.mark.parametrize("name", [n for n in ZOO_NAMES if healthy(n).spec.has("text")])
@pytest.mark.parametrize("side", ["right", "left"])
def test_token_batches_are_valid_for_every_zoo_model(name, side, events):
    spec = healthy(name).spec

    def valid(batch):
        ids, mask, positions = batch["input_ids"], batch["attention_mask"], batch["position_ids"]
        assert ids.dtype == np.int64 and ids.min() >= 0 and ids.max() < spec.vocab_size
        assert 1 <= ids.shape[1] <= spec.max_length and ids.shape == mask.shape == positions.shape
        for row in mask:
            real = int(row.sum())
            assert real >= 1
            expected = [1] * real + [0] * (len(row) - real) if side == "right" else [0] * (len(row) - real) + [1] * real
            assert row.tolist() == expected
        assert (positions[mask == 1] == (np.cumsum(mask, axis=1) - 1)[mask == 1]).all()
        assert (ids[mask == 0] == spec.pad_token_id).all()

    run_ci(token_batch(spec.vocab_size, spec.max_length, pad_token_id=spec.pad_token_id, padding_side=side,
                       bos_token_id=spec.bos_token_id, eos_token_id=spec.eos_token_id, with_position_ids=True), valid)
    assert_reached(events, [f"padding: {side}", "padding: none", "length: model maximum", "length: 1"]
                   + (["special ids at the ends"] if spec.bos_token_id is not None or spec.eos_token_id is not None else []))


def test_position_ids_match_the_subject_convention():
    import torch

    from zoo.subject import positions_from_mask

    mask = np.array([[0, 0, 1, 1, 1], [1, 1, 1, 0, 0], [1, 1, 1, 1, 1]])
    assert position_ids(mask).tolist() == positions_from_mask(torch.from_numpy(mask)).tolist()


def test_id_lists_reach_every_kind(events):
    run_ci(id_lists(100))
    assert_reached(events, [f"token id: {k}" for k in ("in vocab", "negative", ">= vocab size", ">= 2**63")])


# -- images --------------------------------------------------------------------------------------
def test_images_reach_every_class(events):
    run_ci(images())
    assert_reached(events, [f"image mode: {m}" for m in MODES] + [f"image layout: {layout}" for layout in LAYOUTS]
                   + [f"image dtype: {d}" for d in ARRAY_DTYPES] + [f"image content: {c}" for c in IMAGE_CONTENTS]
                   + ["image size: 1x1", "image size: extreme aspect ratio", f"image size: side >= {LARGE_SIDE}"])


@pytest.mark.parametrize("mode", MODES)
def test_pil_images_have_their_mode_and_size(mode):
    def valid(image):
        assert image.mode == mode and 1 <= min(image.size) and max(image.size) <= 320

    run_ci(images(modes=(mode,), layouts=("pil",)), valid)


@pytest.mark.parametrize("name", ["vit", "clip"])
def test_drawn_rgb_images_are_valid_for_every_zoo_image_processor(name):
    """Every RGB image the strategy draws (PIL or array of either layout, stated) goes through the processor."""
    processor = image_props.image_processor_of(healthy(name))
    expected = image_props.expected_shape(healthy(name))
    cases = image_props.image_cases("RGB") | image_props.image_cases("array RGB")

    def valid(case):
        image, layout = case
        assert image_props._pixel_values(processor, image, layout).shape == expected

    run_ci(cases, valid)


def test_empty_and_unusable_images_reach_every_kind(events):
    run_ci(empty_images())
    run_ci(unusable_images())
    assert_reached(events, [f"empty image: {layout}" for layout in LAYOUTS]
                   + [f"unusable image: {k}" for k in ("wrong channel count", "wrong rank", "2-D array (no channel axis)",
                                                         "not an image")])


def test_empty_images_have_no_pixels():
    run_ci(empty_images(), lambda image: 0 in (image.size if hasattr(image, "mode") else image.shape) or pytest.fail(image))


# -- audio ---------------------------------------------------------------------------------------
def test_waveforms_reach_every_class(events):
    run_ci(raw_waveforms(16000, 16000))
    assert_reached(events, [f"waveform content: {c}" for c in AUDIO_CONTENTS] + [f"waveform dtype: {d}" for d in AUDIO_DTYPES]
                   + [f"waveform length: {k}" for k in ("0", "shorter than a chunk", "exactly one chunk", "beyond one chunk")])


def test_drawn_waveforms_are_valid_for_the_zoo_feature_extractor():
    subject = healthy("whisper")
    extractor = audio_props.feature_extractor_of(subject)

    def valid(waveform):
        assert waveform.ndim == 1 and waveform.dtype in (np.float32, np.float64, np.int16)
        if waveform.dtype != np.int16:
            assert np.abs(waveform).max(initial=0) <= 1
        assert audio_props._features(extractor, waveform, extractor.sampling_rate).shape == audio_props.expected_shape(subject)

    run_ci(audio_props.waveforms_for(subject), valid)


def test_sampling_rates_right_and_wrong():
    run_ci(sampling_rates(16000, right=True), lambda r: r == 16000 or pytest.fail(r))
    run_ci(sampling_rates(16000, right=False), lambda r: r != 16000 or pytest.fail(r))


def test_model_input_strategies_keep_their_contract():
    """The foundation's strategies (used by every model property) still draw what they did."""
    from strategies.audio import input_features, waveforms
    from strategies.images import pil_images, pixel_values

    run_ci(pixel_values(2, 3, 8), lambda a: a.shape == (2, 3, 8, 8) and a.dtype == np.float32 or pytest.fail(a.shape))
    run_ci(input_features(1, 4, 6), lambda a: a.shape == (1, 4, 6) or pytest.fail(a.shape))
    run_ci(waveforms(100), lambda w: 1 <= w.size <= 100 and w.dtype == np.float32 or pytest.fail(w.size))
    run_ci(pil_images(), lambda im: im.mode == "RGB" and max(im.size) <= 64 or pytest.fail(im))
