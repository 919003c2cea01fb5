"""Tiny processors a user would pair with the zoo models: tokenizers, image processors, feature
extractors, sized to match `zoo/tiny.py`."""

from __future__ import annotations

from zoo.compat import image_processor_class
from zoo.offline_tokenizers import build_tokenizer
from zoo.tiny import IMAGE_SIZE, MEL_BINS, SAMPLING_RATE, TinyModel


def build_processor(row: TinyModel):
    """The tokenizer or processor for a zoo row (None for a model that takes no preprocessing)."""
    tokenizer = build_tokenizer(row.tokenizer) if row.tokenizer else None
    if tokenizer is not None:
        # the longest input_ids the model takes: `truncation=True` cuts there, as on the hub
        tokenizer.model_max_length = row.max_length
    if row.processor is None:
        return tokenizer
    if row.processor == "vit":
        return image_processor_class("ViT")(size={"height": IMAGE_SIZE, "width": IMAGE_SIZE})
    if row.processor == "clip":
        from transformers import CLIPProcessor

        images = image_processor_class("CLIP")(
            size={"shortest_edge": IMAGE_SIZE}, crop_size={"height": IMAGE_SIZE, "width": IMAGE_SIZE}
        )
        return CLIPProcessor(image_processor=images, tokenizer=tokenizer)
    if row.processor == "whisper":
        from transformers import WhisperFeatureExtractor, WhisperProcessor

        # chunk_length=1 s at 16 kHz, hop 160 -> 100 frames == 2 x max_source_positions (50)
        features = WhisperFeatureExtractor(feature_size=MEL_BINS, chunk_length=1, sampling_rate=SAMPLING_RATE)
        return WhisperProcessor(feature_extractor=features, tokenizer=tokenizer)
    raise ValueError(f"unknown processor kind {row.processor!r}")
