"""The `pipeline(...)` API on a subject, and the direct forward it must agree with.

One entry per task: how to build the pipeline from the subject's own model and processor (no
hub access), how to call it on a raw input (text, PIL image, waveform), and how to get the same
answer from the processor and the model directly. Both sides return `{name: tensor}` so the
property can compare them through the tolerance policy.
"""

from __future__ import annotations

from typing import Any, Callable

import torch

from zoo.subject import Subject

GENERATE = dict(max_new_tokens=4, do_sample=False)
LABELS = ("a photo of a cat", "a photo of a dog", "noise")


def _tokenizer(subject: Subject):
    return getattr(subject.processor, "tokenizer", subject.processor)


def _pipeline_kwargs(subject: Subject) -> dict[str, Any]:
    processor = subject.processor
    kwargs: dict[str, Any] = {}
    for attr, key in (("tokenizer", "tokenizer"), ("image_processor", "image_processor"),
                      ("feature_extractor", "feature_extractor")):
        if hasattr(processor, attr):
            kwargs[key] = getattr(processor, attr)
    if not kwargs:
        key = "image_processor" if subject.spec.has("vision") else "tokenizer"
        kwargs[key] = processor
    return kwargs


def build_pipeline(subject: Subject):
    from transformers import pipeline

    return pipeline(subject.spec.pipeline_task, model=subject.model, device="cpu", **_pipeline_kwargs(subject))


def _features_pipe(pipe, raw) -> dict[str, torch.Tensor]:
    return {"last_hidden_state": pipe(raw, return_tensors=True)}


def _features_direct(subject: Subject, raw) -> dict[str, torch.Tensor]:
    if subject.spec.has("vision"):
        inputs = subject.processor(images=raw, return_tensors="pt")
    else:
        inputs = subject.processor(raw, return_tensors="pt")
    return {"last_hidden_state": subject.forward(dict(inputs))["last_hidden_state"]}


def _generate_pipe(pipe, raw) -> dict[str, torch.Tensor]:
    out = pipe(raw, return_tensors=True, **GENERATE)
    return {"generated_token_ids": torch.tensor(out[0]["generated_token_ids"])}


def _generate_direct(subject: Subject, raw) -> dict[str, torch.Tensor]:
    inputs = _tokenizer(subject)(raw, return_tensors="pt")
    with torch.no_grad():
        ids = subject.model.generate(**inputs, **GENERATE, pad_token_id=subject.spec.pad_token_id)
    return {"generated_token_ids": ids[0]}


def _zero_shot_pipe(pipe, raw) -> dict[str, torch.Tensor]:
    scores = {row["label"]: row["score"] for row in pipe(raw, candidate_labels=list(LABELS))}
    return {"scores": torch.tensor([scores[label] for label in LABELS], dtype=torch.float32)}


def _zero_shot_direct(subject: Subject, raw) -> dict[str, torch.Tensor]:
    # the pipeline's default hypothesis_template is "This is a photo of {}."
    texts = [f"This is a photo of {label}." for label in LABELS]
    inputs = subject.processor(text=texts, images=raw, return_tensors="pt", padding=True)
    logits = subject.forward(dict(inputs))["logits_per_image"]
    return {"scores": logits.softmax(-1)[0]}


def _asr_pipe(pipe, raw) -> dict[str, torch.Tensor]:
    text = pipe({"raw": raw, "sampling_rate": 16000}, generate_kwargs=GENERATE)["text"]
    return {"text_bytes": torch.tensor(list(text.encode("utf-8")), dtype=torch.int64)}


def _asr_direct(subject: Subject, raw) -> dict[str, torch.Tensor]:
    features = subject.processor.feature_extractor(raw, sampling_rate=16000, return_tensors="pt")
    with torch.no_grad():
        ids = subject.model.generate(features.input_features, **GENERATE)
    text = subject.processor.tokenizer.decode(ids[0], skip_special_tokens=True)
    return {"text_bytes": torch.tensor(list(text.encode("utf-8")), dtype=torch.int64)}


# task -> (raw input kind, call through the pipeline, direct processor + model call)
TASKS: dict[str, tuple[str, Callable, Callable]] = {
    "feature-extraction": ("text", _features_pipe, _features_direct),
    "text-generation": ("text", _generate_pipe, _generate_direct),
    "image-feature-extraction": ("image", _features_pipe, _features_direct),
    "zero-shot-image-classification": ("image", _zero_shot_pipe, _zero_shot_direct),
    "automatic-speech-recognition": ("audio", _asr_pipe, _asr_direct),
}


def fit_raw_input(subject: Subject, raw):
    """Cut text so its tokens (plus generated ones) fit the model; other inputs pass unchanged.

    The pipeline property compares two ways of running one valid input; over-long inputs are the
    bad-input property's business.
    """
    if not isinstance(raw, str):
        return raw
    tokenizer = _tokenizer(subject)
    budget = subject.spec.max_length - (GENERATE["max_new_tokens"] if subject.spec.has("causal") else 0)
    while raw and len(tokenizer(raw)["input_ids"]) > budget:
        raw = raw[: max(0, min(len(raw) - 1, len(raw) * budget // len(tokenizer(raw)["input_ids"])))]
    return raw


def raw_input_kind(subject: Subject) -> str:
    return TASKS[subject.spec.pipeline_task][0]


def through_pipeline(subject: Subject, pipe, raw) -> dict[str, torch.Tensor]:
    return TASKS[subject.spec.pipeline_task][1](pipe, raw)


def direct(subject: Subject, raw) -> dict[str, torch.Tensor]:
    return TASKS[subject.spec.pipeline_task][2](subject, raw)
