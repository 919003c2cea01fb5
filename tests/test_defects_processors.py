"""Planted defects for the processor properties: each property must catch its defect.

Every test copies a zoo processor, breaks one method the way real preprocessing code breaks
(a decode that drops invisible characters, offsets counted in bytes, truncation off by one, a
batch path that strips whitespace, a mask derived from `ids != pad_id`, an image resize that keeps
the aspect ratio, normalization by the image's own std, a feature extractor that stops padding),
lets the property's own strategy search for a failing input and checks the shrunk input and the
message. The controls run the same searches on the healthy processors and find nothing.
"""

from __future__ import annotations

import copy
import unicodedata

import numpy as np
import pytest
from hypothesis import strategies as st

from properties import test_audio_features as audio_props
from properties import test_image_processors as image_props
from properties import test_tokenizers as tok_props
from strategies.images import empty_images, images, unusable_images
from tests.planted import expect_caught, expect_passes, failure_of, healthy
from zoo.subject import Subject


def patched(obj, **methods):
    """A deep copy of `obj` whose class overrides `methods`; each override gets the original bound
    method first: `patched(tok, decode=lambda original, ids, **kw: ...)`."""
    broken = copy.deepcopy(obj)
    namespace = {}
    for name, override in methods.items():
        def method(self, *args, _name=name, _override=override, **kwargs):
            return _override(getattr(super(broken_class, self), _name), *args, **kwargs)

        namespace[name] = method
    broken_class = type(f"Broken{type(obj).__name__}", (type(obj),), namespace)
    broken.__class__ = broken_class
    return broken


def with_processor(name: str, processor) -> Subject:
    """The zoo subject `name` (model shared, untouched) with another processor."""
    subject = healthy(name)
    return Subject(subject.spec, subject.model, processor)


def tokenizer(name: str):
    return tok_props.tokenizer_of(healthy(name))


def image_processor(name: str):
    return image_props.image_processor_of(healthy(name))


# -- tokenizers ----------------------------------------------------------------------------------
def test_round_trip_catches_decode_dropping_invisible_characters():
    """A decode 'cleanup' that drops format characters (zero-width space, ZWJ, soft hyphen ...)."""
    def drop_format(original, ids, **kwargs):
        return "".join(c for c in original(ids, **kwargs) if unicodedata.category(c) != "Cf")

    subject = with_processor("gpt2", patched(tokenizer("gpt2"), decode=drop_format))
    failure = expect_caught(tok_props.check_round_trip, tok_props._texts_for(subject.processor), subject,
                            says=("[gpt2] tokenizer round trip", "byte-level BPE must decode back to the exact text"))
    assert len(failure.example) == 1 and unicodedata.category(failure.example) == "Cf", failure.example


def test_round_trip_catches_normalizer_form_mismatch():
    """WordPiece: a decode that upper-cases, so the text no longer matches its (lower-cased) normalized form."""
    subject = with_processor("bert", patched(tokenizer("bert"), decode=lambda original, ids, **kw: original(ids, **kw).upper()))
    failure = expect_caught(tok_props.check_round_trip, tok_props._texts_for(subject.processor), subject,
                            says=("[bert] tokenizer round trip", "normalizer's form"))
    assert failure.example.lower() != failure.example.upper()


def _byte_offsets(original, text=None, *args, **kwargs):
    """Offsets counted in UTF-8 bytes instead of characters (a classic of byte-level tokenizers)."""
    enc = original(text, *args, **kwargs)
    if kwargs.get("return_offsets_mapping") and isinstance(text, str):
        to_bytes = [len(text[:i].encode("utf-8")) for i in range(len(text) + 1)]
        enc["offset_mapping"] = [(to_bytes[s], to_bytes[e]) for s, e in enc["offset_mapping"]]
    return enc


def test_offsets_catch_byte_offsets():
    subject = with_processor("roberta", patched(tokenizer("roberta"), __call__=_byte_offsets))
    failure = expect_caught(tok_props.check_offsets, tok_props._texts_for(subject.processor), subject,
                            says=("[roberta] tokenizer offsets", "outside the text"))
    assert len(failure.example) == 1 and ord(failure.example) > 127  # one non-ASCII character


def test_offsets_pass_healthy_tokenizers():
    for name in ("bert", "gpt2", "t5", "whisper"):
        expect_passes(tok_props.check_offsets, tok_props._texts_for(tokenizer(name)), healthy(name))


def _truncate_one_too_many(original, text=None, *args, **kwargs):
    if kwargs.get("truncation") and kwargs.get("max_length"):
        kwargs["max_length"] += 1
    return original(text, *args, **kwargs)


def test_truncation_catches_off_by_one():
    subject = with_processor("bert", patched(tokenizer("bert"), __call__=_truncate_one_too_many))
    failure = expect_caught(tok_props.check_truncation, tok_props.truncation_cases(subject, below_template=False),
                            subject, says=("[bert] tokenizer truncation", "more than"))
    text, max_length = failure.example
    assert max_length is not None


def test_truncation_catches_missing_model_max_length():
    """A tokenizer saved without model_max_length: truncation=True then cuts nothing."""
    broken = copy.deepcopy(tokenizer("llama"))
    broken.model_max_length = int(1e30)
    subject = with_processor("llama", broken)
    failure = expect_caught(tok_props.check_truncation, tok_props.truncation_cases(subject, below_template=False),
                            subject, says=("[llama] tokenizer truncation", "without max_length", "more than 64"))
    assert failure.example[1] is None


def test_truncation_passes_healthy_tokenizers():
    for name in ("bert", "gpt2", "clip", "t5", "whisper"):
        expect_passes(tok_props.check_truncation, tok_props.truncation_cases(healthy(name), below_template=False),
                      healthy(name))


def _strip_in_batches(original, text=None, *args, **kwargs):
    if isinstance(text, list):
        text = [t.strip() for t in text]
    return original(text, *args, **kwargs)


def test_batch_catches_batch_only_cleaning():
    subject = with_processor("gpt2", patched(tokenizer("gpt2"), __call__=_strip_in_batches))
    failure = expect_caught(tok_props.check_batch_matches_items, tok_props.texts(1, 4, max_size=tok_props.MAX_CHARS),
                            subject, says=("[gpt2] tokenizer batch equals items", "encodes differently in the batch"))
    [text] = failure.example  # shrunk to one short text with whitespace at an end, e.g. ['0 ']
    assert text != text.strip() and len(text) <= 2


def _mask_from_pad_id(original, text=None, *args, **kwargs):
    """The attention mask recomputed as `ids != pad_id`: wrong when pad == eos and the text holds eos."""
    enc = original(text, *args, **kwargs)
    pad = kwargs.get("pad_id", 0)
    if kwargs.get("padding"):
        enc["attention_mask"] = [[int(i != pad) for i in row] for row in enc["input_ids"]]
    return enc


def test_padding_catches_mask_from_pad_id():
    subject = with_processor("gpt2", patched(tokenizer("gpt2"), __call__=_mask_from_pad_id))
    cases = st.tuples(tok_props.texts(1, 4, max_size=tok_props.MAX_CHARS, special_tokens=("<|endoftext|>",)),
                      st.sampled_from(("right", "left")))
    failure = expect_caught(tok_props.check_padding, cases, subject,
                            says=("[gpt2] tokenizer padding", "attention mask is not 1 exactly on the real ids"))
    batch, side = failure.example
    assert any("<|endoftext|>" in text for text in batch)


def test_batch_and_padding_pass_healthy_tokenizers():
    for name in ("bert", "gpt2", "llama", "t5", "whisper"):
        batches = tok_props.texts(1, 4, max_size=tok_props.MAX_CHARS)
        expect_passes(tok_props.check_batch_matches_items, batches, healthy(name))
        expect_passes(tok_props.check_padding, st.tuples(batches, st.sampled_from(("right", "left"))), healthy(name))


def _no_closing_token_for_empty_text(original, text=None, *args, **kwargs):
    enc = original(text, *args, **kwargs)
    if text == "" and kwargs.get("add_special_tokens", True):
        for key in list(enc.keys()):
            enc[key] = enc[key][:-1]
    return enc


def test_special_tokens_catch_template_skipped_for_empty_text():
    subject = with_processor("bert", patched(tokenizer("bert"), __call__=_no_closing_token_for_empty_text))
    failure = expect_caught(tok_props.check_special_tokens, tok_props._texts_for(subject.processor), subject,
                            says=("[bert] tokenizer special tokens", "not where the template puts them"))
    assert failure.example == ""


def test_round_trip_and_special_tokens_pass_healthy_tokenizers():
    for name in ("bert", "gpt2", "clip", "llama", "t5", "roberta", "whisper"):
        texts = tok_props._texts_for(tokenizer(name))
        expect_passes(tok_props.check_round_trip, texts, healthy(name))
        expect_passes(tok_props.check_special_tokens, texts, healthy(name))


def _panics_on_nul(original, text=None, *args, **kwargs):
    if isinstance(text, str) and "\x00" in text:
        raise RuntimeError("called `Option::unwrap()` on a `None` value")  # a native panic surfacing
    return original(text, *args, **kwargs)


def test_encode_errors_catch_a_crash_on_valid_text():
    subject = with_processor("t5", patched(tokenizer("t5"), __call__=_panics_on_nul))
    failure = expect_caught(tok_props.check_encode_errors, tok_props._texts_for(subject.processor), subject,
                            says=("[t5] tokenizer errors are clear", "encoding valid text", "RuntimeError"))
    assert "\x00" in failure.example and len(failure.example) <= 2  # e.g. '\x00' or '0\x00'


def test_encode_errors_on_healthy_tokenizers_are_only_the_recorded_finding():
    """The control: on the healthy tokenizer the only failure is the empty batch (see findings.toml)."""
    failure = failure_of(tok_props.check_encode_errors,
                         tok_props._texts_for(tokenizer("bert")) | tok_props.non_text_inputs(), healthy("bert"))
    assert failure is not None and failure.example == [] and "IndexError" in failure.message
    expect_passes(tok_props.check_encode_errors,
                  tok_props._texts_for(tokenizer("bert")) | tok_props.non_text_inputs().filter(lambda v: v != []),
                  healthy("bert"))


def _lookup_table_decode(original, ids, *args, **kwargs):
    table = original.__self__.convert_ids_to_tokens(list(range(len(original.__self__))))
    return "".join(table[i] for i in ids)  # IndexError past the vocab


def test_decode_errors_catch_index_error():
    subject = with_processor("gpt2", patched(tokenizer("gpt2"), decode=_lookup_table_decode))
    ids = st.lists(st.integers(0, 2 * len(subject.processor)), max_size=8)
    failure = expect_caught(tok_props.check_decode_errors, ids, subject,
                            says=("[gpt2] tokenizer errors are clear", "IndexError", "neither a ValueError nor a TypeError"))
    assert failure.example == [len(subject.processor)]


def test_decode_errors_pass_healthy_tokenizers_on_32_bit_ids():
    """The control (ids below 0 or from 2**32 on are the recorded OverflowError finding)."""
    for name in ("bert", "gpt2", "t5"):
        ids = st.lists(st.integers(0, 2**32 - 1), max_size=8)
        expect_passes(tok_props.check_decode_errors, ids, healthy(name))


# -- image processors ----------------------------------------------------------------------------
def _keep_aspect_resize(original, image, size, *args, **kwargs):
    """Resize the height to the target and scale the width with it (no crop): non-square images come out non-square."""
    from transformers.image_utils import SizeDict

    height, width = image.shape[-2:] if image.shape[0] in (1, 3, 4) else image.shape[:2]
    new_width = max(1, round(size.height * width / height))
    return original(image, SizeDict(height=size.height, width=new_width), *args, **kwargs)


def test_pixel_values_catch_wrong_size_for_non_square_images():
    subject = with_processor("vit", patched(image_processor("vit"), resize=_keep_aspect_resize))
    failure = expect_caught(image_props.check_pixel_values, image_props.image_cases("RGB"), subject,
                            says=("[vit] image processor pixel values", "expected (1, 3, 32, 32)"))
    width, height = failure.example[0].size
    assert width != height and max(width, height) <= 2  # shrunk to 1x2 or 2x1


def _per_image_normalize(original, image, *args, **kwargs):
    """Standardize by the image's own mean and std: 0/0 on constant images."""
    with np.errstate(invalid="ignore", divide="ignore"):
        return ((image - image.mean()) / image.std()).astype(np.float32)


def test_pixel_values_catch_nan_on_constant_images():
    subject = with_processor("clip", patched(image_processor("clip"), normalize=_per_image_normalize))
    failure = expect_caught(image_props.check_pixel_values, image_props.image_cases("RGB"), subject,
                            says=("[clip] image processor pixel values", "non-finite"))
    assert np.ptp(np.asarray(failure.example[0])) == 0  # a constant image


def test_pixel_values_catch_skipped_rescale():
    """`do_rescale=True` in the config, but rescale does nothing: values land far outside the range."""
    subject = with_processor("vit", patched(image_processor("vit"), rescale=lambda original, image, *a, **k: image.astype(np.float32)))
    failure = expect_caught(image_props.check_pixel_values, image_props.image_cases("array RGB"), subject,
                            says=("[vit] image processor pixel values", "outside the normalized range"))
    assert np.asarray(failure.example[0]).max() > 0


def test_pixel_values_pass_healthy_processors():
    for name in ("vit", "clip"):
        for form in ("RGB", "array RGB"):
            expect_passes(image_props.check_pixel_values, image_props.image_cases(form), healthy(name))
    for form in image_props.FORMS:  # CLIP converts every mode except float RGBA arrays (findings.toml)
        if form != "array RGBA":
            expect_passes(image_props.check_pixel_values, image_props.image_cases(form), healthy("clip"))


def _transposing_array_reader(original, images=None, *args, **kwargs):
    """Arrays read as (width, height, channels): a swapped-axes bug that only arrays hit."""
    if isinstance(images, np.ndarray) and images.ndim == 3 and images.shape[-1] == 3:
        images = np.ascontiguousarray(np.swapaxes(images, 0, 1))
    return original(images, *args, **kwargs)


# Heights and widths of 5 or more: clear of the recorded ambiguity of heights 1, 3 and 4 (findings.toml).
UNAMBIGUOUS = images(min_side=5, max_side=image_props.LAYOUT_MAX_SIDE, modes=("RGB",), layouts=("channels_last",),
                     dtypes=("uint8",))


def test_layouts_catch_swapped_axes():
    subject = with_processor("vit", patched(image_processor("vit"), __call__=_transposing_array_reader))
    failure = expect_caught(image_props.check_layouts_agree, UNAMBIGUOUS, subject,
                            says=("[vit] image processor layouts agree", "PIL vs channels_last", "max abs diff"))
    assert not np.array_equal(failure.example, np.swapaxes(failure.example, 0, 1))


def test_layouts_pass_healthy_processors_on_unambiguous_sizes():
    for name in ("vit", "clip"):
        expect_passes(image_props.check_layouts_agree, UNAMBIGUOUS, healthy(name))


def _rejects_empty(original, images=None, *args, **kwargs):
    """The fix for the recorded finding: refuse an image without pixels before processing it."""
    size = images.size if hasattr(images, "mode") else np.shape(images)
    if 0 in tuple(size):
        raise ValueError(f"image has no pixels (size {tuple(size)})")
    return original(images, *args, **kwargs)


def test_empty_images_caught_and_fixed():
    """Upstream ViT makes up pixel values for an empty image (caught); the fixed processor passes."""
    failure = expect_caught(image_props.check_rejects_empty, empty_images(), healthy("vit"),
                            says=("[vit] image processor rejects unusable images clearly", "was accepted"))
    assert 0 in failure.example.size
    fixed = with_processor("vit", patched(image_processor("vit"), __call__=_rejects_empty))
    expect_passes(image_props.check_rejects_empty, empty_images(), fixed)


def _two_channel_passthrough(original, images=None, *args, **kwargs):
    """Two-channel arrays slip through unchecked and come out with two channels."""
    if isinstance(images, np.ndarray) and images.ndim == 3 and images.shape[-1] == 2:
        from transformers import BatchFeature

        return BatchFeature({"pixel_values": np.zeros((1, 2, 32, 32), np.float32)})
    return original(images, *args, **kwargs)


NOT_EMPTY_LIST = unusable_images().filter(lambda v: not (isinstance(v, list) and v == []))  # [] is recorded


def test_unusable_inputs_catch_wrong_shape():
    subject = with_processor("vit", patched(image_processor("vit"), __call__=_two_channel_passthrough))
    failure = expect_caught(image_props.check_rejects_unusable, NOT_EMPTY_LIST, subject,
                            says=("[vit] image processor rejects unusable images clearly", "wrong shape (1, 2, 32, 32)"))
    assert failure.example.shape[-1] == 2


def test_unusable_inputs_pass_healthy_processors():
    for name in ("vit", "clip"):
        expect_passes(image_props.check_rejects_unusable, NOT_EMPTY_LIST, healthy(name))


# -- audio feature extractors --------------------------------------------------------------------
def extractor():
    return audio_props.feature_extractor_of(healthy("whisper"))


def test_features_catch_unpadded_short_waveforms():
    """Padding to the longest item instead of to one chunk: short waveforms give too few frames."""
    broken = patched(extractor(), __call__=lambda original, raw, *a, **k: original(raw, *a, **{**k, "padding": "longest"}))
    subject = with_processor("whisper", broken)
    failure = expect_caught(audio_props.check_features, audio_props.waveforms_for(subject), subject,
                            says=("[whisper] audio features",))
    assert failure.example.size < audio_props.chunk_samples(broken)
    # longer than the STFT window, so that unpadded features exist and come out too short
    longer = audio_props.raw_waveforms(broken.sampling_rate, audio_props.chunk_samples(broken)).filter(
        lambda w: w.size > broken.n_fft)
    expect_caught(audio_props.check_features, longer, subject, says=("expected (1, 16, 100)",))


def _peak_normalized(original, raw, *args, **kwargs):
    """Normalize to peak 1 before the STFT: silence divides by zero."""
    raw = np.asarray(raw, dtype=np.float32)
    with np.errstate(invalid="ignore", divide="ignore"):
        raw = raw / np.abs(raw).max(initial=0.0)
    return original(raw, *args, **kwargs)


def test_features_catch_nan_on_silence():
    subject = with_processor("whisper", patched(extractor(), __call__=_peak_normalized))
    failure = expect_caught(audio_props.check_features, audio_props.waveforms_for(subject), subject,
                            says=("[whisper] audio features", "non-finite"))
    assert not np.any(failure.example)  # silence (all zeros)


def test_wrong_rate_caught_when_ignored():
    broken = patched(extractor(), __call__=lambda original, raw, *a, **k: original(raw, *a, **{**k, "sampling_rate": None}))
    subject = with_processor("whisper", broken)
    fe = extractor()
    cases = st.tuples(audio_props.raw_waveforms(fe.sampling_rate, audio_props.chunk_samples(fe), max_chunks=0.25),
                      audio_props.sampling_rates(fe.sampling_rate, right=False))
    failure = expect_caught(audio_props.check_wrong_rate, cases, subject,
                            says=("[whisper] audio sampling rate checked", "accepted silently"))
    assert failure.example[1] != fe.sampling_rate


def test_audio_properties_pass_healthy_extractor():
    subject = healthy("whisper")
    fe = extractor()
    expect_passes(audio_props.check_features, audio_props.waveforms_for(subject), subject)
    cases = st.tuples(audio_props.raw_waveforms(fe.sampling_rate, audio_props.chunk_samples(fe), max_chunks=0.25),
                      audio_props.sampling_rates(fe.sampling_rate, right=False))
    expect_passes(audio_props.check_wrong_rate, cases, subject)


@pytest.mark.parametrize("name", ["bert", "roberta", "clip", "llama", "t5", "whisper"])
def test_truncation_below_template_is_the_recorded_finding(name):
    """Upstream: max_length below the template size is ignored (recorded in findings.toml); the check sees it."""
    failure = expect_caught(tok_props.check_truncation, tok_props.truncation_cases(healthy(name), below_template=True),
                            healthy(name), says=(f"[{name}] tokenizer truncation", "more than"))
    assert failure.example[1] < sum(map(len, tok_props.template(tokenizer(name))))
