"""Building subjects: zoo rows from their configs, and the spec of any built model.

One derivation (`spec_for`) serves zoo models and user checkpoints alike: capabilities and sizes
are read off the config and the model object, so a checkpoint of a known family gets the same
properties as its zoo twin.
"""

from __future__ import annotations

import inspect

import torch

from zoo.spec import ModelSpec
from zoo.subject import Subject
from zoo.tiny import SAMPLING_RATE, ZOO

# The pipeline task whose output `zoo/pipelines.py` can compare with a direct forward, by what the
# model is: (head kind, capability the model needs, processor part the pipeline needs) -> task.
# transformers 5.x has no text2text-generation pipeline, so encoder-decoder text models get none;
# heads on encoders return logits, not the hidden states feature-extraction compares.
PIPELINE_RULES = (
    (("base", "vision", "image_processor"), "image-feature-extraction"),
    (("base", "text", "tokenizer"), "feature-extraction"),
    (("causal_lm", "causal", "tokenizer"), "text-generation"),
    (("dual_encoder", "vision", "image_processor"), "zero-shot-image-classification"),
    (("seq2seq_lm", "audio", "feature_extractor"), "automatic-speech-recognition"),
)


def pipeline_task_for(spec, processor) -> str | None:
    """The pipeline task a checkpoint gets (None: no comparable pipeline, or no processor to run it)."""
    if processor is None:
        return None
    for (head, capability, part), task in PIPELINE_RULES:
        if spec.head == head and spec.has(capability, part) and not spec.has("encoder_decoder", "text"):
            return task
    return None


def _first(config, *names, default=0):
    for name in names:
        value = getattr(config, name, None)
        if value is not None:
            return value
    return default


def _side_config(config, side: str):
    """The encoder's or decoder's sub-config where the config nests one, else the config itself."""
    from transformers import PretrainedConfig

    sub = getattr(config, side, None)
    return sub if isinstance(sub, PretrainedConfig) else config


def _token_id(value):
    return value[0] if isinstance(value, (list, tuple)) else value


def _in_vocab(value, vocab: int):
    """A config's special token id, or None when it has none inside the vocabulary.

    Configs often keep a default id from the full-size model (GPT-2's 50256) that a small vocabulary
    has no row for; such an id cannot be a valid input, so the strategies must not draw it.
    """
    value = _token_id(value)
    return value if value is not None and 0 <= value < (vocab or 0) else None


def _embeddings_tied(model: torch.nn.Module) -> bool:
    try:
        out_emb, in_emb = model.get_output_embeddings(), model.get_input_embeddings()
    except NotImplementedError:  # dual encoders (CLIP) have no single input embedding
        return False
    return out_emb is not None and in_emb is not None and out_emb.weight is in_emb.weight


# Config attribute names for each size, first found wins (configs name the same size differently).
SIZE_NAMES = {
    "hidden": ("hidden_size", "d_model", "n_embd", "dim", "embed_dim"),
    "layers": ("num_hidden_layers", "num_layers", "n_layer", "n_layers", "encoder_layers"),
    "max_length": ("max_position_embeddings", "n_positions", "max_seq_len", "seq_length", "max_target_positions",
                   "model_max_length"),
}
DEFAULT_IMAGE_SIZE = 32  # for CNN configs without image_size: any size works, small is fast
DEFAULT_MAX_SAMPLES = 16000  # one second at 16 kHz: the longest waveform drawn for input_values models
FREE_LENGTH_FRAMES = 64  # spectrogram frames for audio encoders of any input length (no max_source_positions)


def _main_input_capabilities(main_input: str, config, forward_args) -> set[str]:
    caps = {"input_ids": {"text"}, "pixel_values": {"vision"}, "input_features": {"audio"},
            "input_values": {"waveform"}}.get(main_input, set())
    if getattr(config, "vision_config", None) is not None and getattr(config, "text_config", None) is not None:
        # a dual-encoder config's image classifier (SigLIP, MetaCLIP 2) keeps the text config but takes no text
        caps |= {"text", "vision"} if _reads_text(main_input, config, forward_args) else {"vision"}
    return caps


def _reads_text(main_input: str, config, forward_args) -> bool:
    """The forward reads token ids of its own (beside the decoder's).

    An encoder-decoder whose main input is not ids (PP-FormulaNet: an image encoder, a text decoder in
    `text_config`) may still list `input_ids`, only as a fallback for the decoder's ids; `generate`
    moves any `input_ids` into `decoder_input_ids` (`_prepare_decoder_input_ids_for_generation`), so a
    drawn prompt there would be a decoder prompt the spec never sized. Its text is the decoder's.
    """
    if "input_ids" not in forward_args:
        return False
    return main_input == "input_ids" or not getattr(config, "is_encoder_decoder", False)


def _generate_needs_more(model) -> bool:
    """`generate` is overridden with a required argument (Pop2Piano's input_features): the suite's
    generic calls (prompt ids, encoder inputs by keyword) cannot drive it."""
    generate = getattr(model, "generate", None)
    if generate is None:
        return False
    return any(p.default is p.empty and p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD, p.KEYWORD_ONLY)
               for p in inspect.signature(generate).parameters.values())


def processor_capabilities(processor) -> set[str]:
    """Which processor properties apply: the parts the checkpoint really ships."""
    if processor is None:
        return set()
    parts = {"tokenizer": getattr(processor, "tokenizer", None),
             "image_processor": getattr(processor, "image_processor", None),
             "feature_extractor": getattr(processor, "feature_extractor", None)}
    from transformers import FeatureExtractionMixin, PreTrainedTokenizerBase

    try:
        from transformers import BaseImageProcessor
    except ImportError:  # pragma: no cover - every 5.x has it
        BaseImageProcessor = ()
    if isinstance(processor, PreTrainedTokenizerBase):
        parts["tokenizer"] = processor
    elif BaseImageProcessor and isinstance(processor, BaseImageProcessor):
        parts["image_processor"] = processor
    elif isinstance(processor, FeatureExtractionMixin):
        parts["feature_extractor"] = processor
    return {name for name, part in parts.items() if part is not None}


def _position_offset(model: torch.nn.Module) -> int:
    """Positions a RoBERTa-style embedding reserves: its position table has a padding_idx, and
    position ids start after it (padding_idx + 1), so the usable length is that much shorter."""
    for name, module in model.named_modules():
        # any embedding-like module, not only torch's (I-BERT's QuantEmbedding keeps a padding_idx too)
        if name.endswith("position_embeddings") and isinstance(getattr(module, "padding_idx", None), int):
            return module.padding_idx + 1
    return 0


def _side(image_size) -> int:
    """One image side from a config's image_size (an int, a [height, width] pair, or unset)."""
    if isinstance(image_size, (list, tuple)):
        image_size = image_size[0]
    return int(image_size or DEFAULT_IMAGE_SIZE)


def _waveform_range(facts: dict) -> tuple[int, int]:
    from zoo.contract import conv_frames

    layers = facts.get("conv_layers", [])
    shortest = 1
    while conv_frames(shortest, layers) < 1:
        shortest += 1
    return shortest, max(DEFAULT_MAX_SAMPLES // 8, shortest * 8)


def spec_for(name: str, model: torch.nn.Module, *, source: str = "zoo", seed: int = 0,
             pipeline_task: str | None = None, max_length: int | None = None, processor=None) -> ModelSpec:
    """Read a spec off a built model: modality, capabilities and sizes from its class and config."""
    from zoo.contract import contract_facts, head_kind

    config = model.config
    text_config = config.get_text_config() if hasattr(config, "get_text_config") else config
    vision_config = getattr(config, "vision_config", None)
    main_input = getattr(model, "main_input_name", "input_ids")
    cls = type(model).__name__
    head = head_kind(cls)
    caps = _main_input_capabilities(main_input, config, inspect.signature(model.forward).parameters)
    encoder_decoder = bool(getattr(config, "is_encoder_decoder", False))
    if encoder_decoder:
        caps.add("encoder_decoder")
    elif head == "causal_lm" and "text" in caps:
        caps.add("causal")
    # "cache" means generates with a cache: a head that `generate` drives (not BartModel, not a classifier)
    generates = getattr(type(model), "can_generate", lambda: True)() and not _generate_needs_more(model)
    if (encoder_decoder or "causal" in caps) and generates and getattr(text_config, "use_cache", False):
        caps.add("cache")
    if getattr(model, "pooler", None) is not None:
        caps.add("pooler")
    if _embeddings_tied(model):
        caps.add("tied_embeddings")
    caps.add("hidden_states")
    caps |= processor_capabilities(processor)
    if "tokenizer" in caps and not caps & {"text", "encoder_decoder"}:
        # a CTC head's tokenizer decodes outputs (merging repeats by design); the model reads no ids
        caps.discard("tokenizer")
    if pipeline_task:
        caps.add("pipeline")
    modality = (
        "multimodal" if {"text", "vision"} <= caps else "vision" if "vision" in caps
        else "audio" if caps & {"audio", "waveform"} else "text"
    )
    has_text = "text" in caps
    if max_length is None:
        max_length = _first(text_config, *SIZE_NAMES["max_length"], default=512)
        max_length -= _position_offset(model)
        # A model without a position table (ALiBi, relative) has no limit of its own: the shipped
        # tokenizer's model_max_length is then what users feed it.
        tokenizer_limit = getattr(getattr(processor, "tokenizer", processor), "model_max_length", None)
        if isinstance(tokenizer_limit, int) and 0 < tokenizer_limit < max_length:
            max_length = tokenizer_limit
    vocab = _first(text_config, "vocab_size")
    hidden = _first(text_config, *SIZE_NAMES["hidden"])
    if getattr(config, "hidden_sizes", None) and not hasattr(config, "hidden_size"):
        hidden = config.hidden_sizes[-1]  # CNN back bones: channels of the last stage
    layers = _first(text_config, *SIZE_NAMES["layers"])
    extra = {}
    if vision_config is not None:
        extra.update(vision_hidden_size=vision_config.hidden_size, patch_size=vision_config.patch_size,
                     projection_dim=getattr(config, "projection_dim", 0),
                     vision_layers=_first(vision_config, *SIZE_NAMES["layers"]))
    elif "vision" in caps:
        extra["patch_size"] = getattr(config, "patch_size", 0)
    if encoder_decoder:  # each side's own config where the model has one (EncoderDecoderModel, T5Gemma)
        # (or the text config's, where a vision-encoder-decoder keeps them there: PP-FormulaNet)
        for side, names in (("encoder", ("encoder_layers", "num_layers", "num_hidden_layers")),
                            ("decoder", ("decoder_layers", "num_decoder_layers", "num_layers", "num_hidden_layers"))):
            extra[f"{side}_layers"] = (_first(_side_config(config, side), *names, default=None)
                                       or _first(text_config, *names, default=None) or layers)
    rows = getattr(input_embedding(model), "num_embeddings", 0)
    if vocab and rows > vocab:  # ids past the vocab that still have an embedding (Mllama's image tokens)
        extra["embedding_rows"] = rows
    facts = contract_facts(model, hidden_size=hidden, num_layers=layers)
    extra["contract"] = facts
    extra["forward_args"] = tuple(inspect.signature(model.forward).parameters)
    from strategies.signature import signature_plan  # extra inputs the forward needs (bbox, placeholders, ...)

    extra.update(signature_plan(model))
    vision_source = vision_config or config
    # Whisper-style encoders take exactly 2 x max_source_positions frames (a 30 s window, shrunk);
    # encoders without it (conformers: Parakeet, LASR, ...) take any length
    source_positions = _first(config, "max_source_positions", default=None)
    num_frames = (2 * source_positions if source_positions else FREE_LENGTH_FRAMES) if "audio" in caps else 0
    min_samples, max_samples = _waveform_range(facts) if "waveform" in caps else (0, 0)
    sampling_rate = getattr(getattr(processor, "feature_extractor", processor), "sampling_rate", None)
    return ModelSpec(
        name=name,
        family=config.model_type,
        modality=modality,
        capabilities=frozenset(caps),
        seed=seed,
        source=source,
        model_class=cls,
        main_input=main_input,
        head=head,
        vocab_size=vocab if has_text or encoder_decoder or head == "ctc" else 0,
        max_length=max_length if has_text else 0,
        pad_token_id=_in_vocab(_first(text_config, "pad_token_id", default=None), vocab),
        bos_token_id=_in_vocab(_first(text_config, "bos_token_id", default=None), vocab),
        eos_token_id=_in_vocab(_first(text_config, "eos_token_id", default=None), vocab),
        decoder_vocab_size=vocab if encoder_decoder else 0,
        decoder_max_length=_first(config, "max_target_positions", "max_position_embeddings", default=64)
        if encoder_decoder else 0,
        decoder_start_token_id=_token_id(_first(config, "decoder_start_token_id", default=None)),
        image_size=_side(getattr(vision_source, "image_size", None)) if "vision" in caps else 0,
        num_channels=getattr(vision_source, "num_channels", 3) if "vision" in caps else 0,
        num_mel_bins=getattr(config, "num_mel_bins", 0),
        num_frames=num_frames,
        sampling_rate=(sampling_rate or SAMPLING_RATE) if caps & {"audio", "waveform"} else 0,
        min_samples=min_samples,
        max_samples=max_samples,
        hidden_size=hidden,
        num_layers=facts.get("num_layers", layers),
        pipeline_task=pipeline_task,
        extra=extra,
    )


def input_embedding(model: torch.nn.Module):
    """The model's token embedding, or None where there is no single one (dual encoders) or it embeds no
    tokens (a vision model's patch embedding)."""
    try:
        embedding = model.get_input_embeddings()
    except NotImplementedError:
        return None
    return embedding if isinstance(embedding, torch.nn.Embedding) else None


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
    processor = build_processor(row)
    spec = spec_for(name, model, seed=row.seed, pipeline_task=row.pipeline_task,
                    max_length=row.max_length, processor=processor)
    return Subject(spec, model, processor)
