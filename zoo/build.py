"""Building subjects: zoo rows from their configs, and the spec of any built model.

One derivation (`spec_for`) serves zoo models and user checkpoints alike: capabilities and sizes
are read off the config and the model object, so a checkpoint of a known family gets the same
properties as its zoo twin.
"""

from __future__ import annotations

import torch

from zoo.spec import ModelSpec
from zoo.subject import Subject
from zoo.tiny import SAMPLING_RATE, ZOO

# Pipeline tasks that work offline on each family's base/LM class (transformers 5.24 has no
# text2text-generation pipeline, so T5 and BART have none).
PIPELINE_TASKS = {
    "bert": "feature-extraction",
    "roberta": "feature-extraction",
    "distilbert": "feature-extraction",
    "gpt2": "text-generation",
    "llama": "text-generation",
    "vit": "image-feature-extraction",
    "clip": "zero-shot-image-classification",
    "whisper": "automatic-speech-recognition",
}


def _first(config, *names, default=0):
    for name in names:
        value = getattr(config, name, None)
        if value is not None:
            return value
    return default


def _token_id(value):
    return value[0] if isinstance(value, (list, tuple)) else value


def _embeddings_tied(model: torch.nn.Module) -> bool:
    try:
        out_emb, in_emb = model.get_output_embeddings(), model.get_input_embeddings()
    except NotImplementedError:  # dual encoders (CLIP) have no single input embedding
        return False
    return out_emb is not None and in_emb is not None and out_emb.weight is in_emb.weight


def spec_for(name: str, model: torch.nn.Module, *, source: str = "zoo", seed: int = 0,
             pipeline_task: str | None = None, max_length: int | None = None) -> ModelSpec:
    """Read a spec off a built model: modality, capabilities and sizes from its config."""
    config = model.config
    text_config = config.get_text_config() if hasattr(config, "get_text_config") else config
    vision_config = getattr(config, "vision_config", None)
    main_input = getattr(model, "main_input_name", "input_ids")
    cls = type(model).__name__
    caps: set[str] = set()
    has_text = main_input == "input_ids" or vision_config is not None
    if has_text:
        caps.add("text")
    if main_input == "pixel_values" or vision_config is not None:
        caps.add("vision")
    if main_input == "input_features":
        caps.add("audio")
    encoder_decoder = bool(getattr(config, "is_encoder_decoder", False))
    if encoder_decoder:
        caps.add("encoder_decoder")
    elif cls.endswith(("ForCausalLM", "LMHeadModel")):
        caps.add("causal")
    if (encoder_decoder or "causal" in caps) and getattr(text_config, "use_cache", False):
        caps.add("cache")
    if getattr(model, "pooler", None) is not None:
        caps.add("pooler")
    if _embeddings_tied(model):
        caps.add("tied_embeddings")
    caps.add("hidden_states")
    if pipeline_task:
        caps.add("pipeline")
    modality = (
        "multimodal" if {"text", "vision"} <= caps else "vision" if "vision" in caps
        else "audio" if "audio" in caps else "text"
    )
    if max_length is None:
        max_length = _first(text_config, "max_position_embeddings", "n_positions", "max_target_positions",
                            default=512)
        if text_config.model_type in ("roberta", "xlm-roberta", "camembert"):
            max_length -= 2  # positions start after pad_token_id + 1
    vocab = _first(text_config, "vocab_size")
    extra = {}
    if vision_config is not None:
        extra.update(vision_hidden_size=vision_config.hidden_size, patch_size=vision_config.patch_size,
                     projection_dim=getattr(config, "projection_dim", 0))
    elif "vision" in caps:
        extra["patch_size"] = config.patch_size
    vision_source = vision_config or config
    num_frames = 2 * config.max_source_positions if "audio" in caps else 0
    return ModelSpec(
        name=name,
        family=config.model_type,
        modality=modality,
        capabilities=frozenset(caps),
        seed=seed,
        source=source,
        model_class=cls,
        vocab_size=vocab if has_text or encoder_decoder else 0,
        max_length=max_length if has_text else 0,
        pad_token_id=_token_id(_first(text_config, "pad_token_id", default=None)),
        bos_token_id=_token_id(_first(text_config, "bos_token_id", default=None)),
        eos_token_id=_token_id(_first(text_config, "eos_token_id", default=None)),
        decoder_vocab_size=vocab if encoder_decoder else 0,
        decoder_max_length=_first(config, "max_target_positions", "max_position_embeddings", default=64)
        if encoder_decoder else 0,
        decoder_start_token_id=_token_id(_first(config, "decoder_start_token_id", default=None)),
        image_size=getattr(vision_source, "image_size", 0) if "vision" in caps else 0,
        num_channels=getattr(vision_source, "num_channels", 0) if "vision" in caps else 0,
        num_mel_bins=getattr(config, "num_mel_bins", 0),
        num_frames=num_frames,
        sampling_rate=SAMPLING_RATE if "audio" in caps else 0,
        hidden_size=_first(text_config, "hidden_size", "d_model", "n_embd", "dim"),
        num_layers=_first(text_config, "num_hidden_layers", "num_layers", "n_layer", "n_layers", "encoder_layers"),
        pipeline_task=pipeline_task,
        extra=extra,
    )


def build_zoo_model(name: str) -> torch.nn.Module:
    """The tiny model of a zoo row, with weights seeded from the row (identical in every process)."""
    import transformers

    row = ZOO[name]
    config = getattr(transformers, row.config_class)(**row.config)
    torch.manual_seed(row.seed)
    model = getattr(transformers, row.model_class)(config)
    return model.eval()


def build_zoo_subject(name: str) -> Subject:
    from zoo.processors import build_processor

    row = ZOO[name]
    model = build_zoo_model(name)
    spec = spec_for(name, model, seed=row.seed, pipeline_task=row.pipeline_task,
                    max_length=row.max_length)
    return Subject(spec, model, build_processor(row))
