"""Every architecture transformers ships, built tiny: the `--model registry` catalogue.

The catalogue walks transformers' auto mappings (`MODEL_MAPPING_NAMES` and the head mappings
in `HEADS`), shrinks each model type's default config with one set of generic rules
(`shrink_config`: sizes by attribute name, kept consistent; sub-configs recursively; special
ids inside the tiny vocab), seeds the weights from the model type (`seed_for`) so every process
builds the same model, and reports every model type it cannot build or feed with the reason
(`python -m zoo.catalog --probe`). Exceptions live in one table, `zoo/catalog_overrides.py`.

Ids: `<model_type>-<variant>` where variant is a key of `HEADS` (`llama-base`, `llama-causal-lm`,
`llama-seq-cls`, ...). Selection (`expand_registry_arg`):
    registry                 every model type, every variant it has
    registry:llama*          glob over model types (all variants of each match)
    registry:vision          a modality: text, vision, audio, multimodal (also timeseries, other)
    registry:...@base        only the listed variants (comma separated), e.g. registry@base,causal-lm
    registry@primary         one id per model type: its LM head if it has one, else its base model
"""

from __future__ import annotations

import dataclasses
import fnmatch
import gc
import importlib
import json
import re
import sys
import time
import zlib
from collections import OrderedDict
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

from zoo.catalog_overrides import OVERRIDES

# -- what is listed --------------------------------------------------------------------------------
# variant id -> the auto mappings whose class it takes (first that has the model type wins)
HEADS: dict[str, tuple[str, ...]] = {
    "base": ("MODEL_MAPPING_NAMES",),
    "causal-lm": ("MODEL_FOR_CAUSAL_LM_MAPPING_NAMES",),
    "cond-gen": (
        "MODEL_FOR_SEQ_TO_SEQ_CAUSAL_LM_MAPPING_NAMES",
        "MODEL_FOR_SPEECH_SEQ_2_SEQ_MAPPING_NAMES",
        "MODEL_FOR_IMAGE_TEXT_TO_TEXT_MAPPING_NAMES",
        "MODEL_FOR_MULTIMODAL_LM_MAPPING_NAMES",
    ),
    "seq-cls": ("MODEL_FOR_SEQUENCE_CLASSIFICATION_MAPPING_NAMES",),
    "img-cls": ("MODEL_FOR_IMAGE_CLASSIFICATION_MAPPING_NAMES",),
    "audio-cls": ("MODEL_FOR_AUDIO_CLASSIFICATION_MAPPING_NAMES",),
}
# `@primary`: one id per model type, the first of these it has (generation and cache properties
# need an LM head; a base model is next best)
PRIMARY_ORDER = ("cond-gen", "causal-lm", "base", "img-cls", "audio-cls", "seq-cls")
MODALITY_NAMES = ("text", "vision", "audio", "multimodal", "timeseries", "other")

# -- the generic shrink rules ----------------------------------------------------------------------
HIDDEN, LAYERS, HEADS_N, FFN, VOCAB = 32, 2, 4, 37, 99
MAX_POSITIONS, IMAGE, PATCH = 64, 32, 8
# exact attribute name -> target (a size is only ever made smaller: min(value, target))
SIZE_RULES: dict[str, int] = {
    **dict.fromkeys(("hidden_size", "d_model", "n_embd", "embed_dim", "dim", "embedding_size", "word_embed_proj_dim",
                     "projection_dim", "text_hidden_size", "vision_hidden_size", "audio_hidden_size",
                     "encoder_hidden_size", "decoder_hidden_size", "out_hidden_size", "output_hidden_size",
                     "projector_hidden_size", "d_latents", "emb_dim", "embedding_dim", "conv_dim",
                     "classifier_proj_size", "xvector_output_dim", "pooler_output_size", "mlp_dim",
                     "fusion_hidden_size", "output_dim", "latent_dim", "codevector_dim",
                     "proj_codevector_dim", "text_config_hidden_size", "backbone_hidden_size",
                     "encoder_hidden_dim", "decoder_hidden_dim", "d_inner"), HIDDEN),
    **dict.fromkeys(("num_hidden_layers", "num_layers", "n_layer", "n_layers", "encoder_layers", "decoder_layers",
                     "num_decoder_layers", "num_encoder_layers", "depth", "speech_encoder_layers",
                     "decoder_num_layers", "num_self_attends_per_block", "pred_num_hidden_layers",
                     "num_spatial_layers", "conf_num_hidden_layers", "l_layers", "x_layers", "r_layers"), LAYERS),
    **dict.fromkeys(("num_attention_heads", "n_head", "n_heads", "num_heads", "encoder_attention_heads",
                     "decoder_attention_heads", "attention_heads", "speech_encoder_attention_heads",
                     "decoder_num_attention_heads", "num_encoder_attention_heads", "num_decoder_attention_heads",
                     "pred_num_attention_heads", "cross_num_attention_heads", "index_n_heads",
                     "linear_num_value_heads", "linear_num_key_heads", "mamba_n_heads"), HEADS_N),
    **dict.fromkeys(("intermediate_size", "ffn_dim", "encoder_ffn_dim", "decoder_ffn_dim", "d_ff", "n_inner",
                     "moe_intermediate_size", "shared_expert_intermediate_size", "ffn_hidden_size",
                     "speech_encoder_intermediate_size", "decoder_intermediate_size", "intermediate_size_mlp",
                     "moe_shared_expert_intermediate_size", "dim_feedforward", "encoder_feedforward_dim",
                     "expert_ffn_hidden_size", "dense_intermediate_size", "shared_intermediate_size",
                     "projection_intermediate_size", "feed_forward_size", "dff", "moe_hidden_size"), FFN),
    **dict.fromkeys(("num_experts", "num_local_experts", "n_routed_experts", "moe_num_experts"), 4),
    **dict.fromkeys(("num_experts_per_tok", "moe_topk", "n_group", "topk_group"), 2),
    **dict.fromkeys(("kv_lora_rank", "q_lora_rank", "o_lora_rank", "laurel_rank", "adapter_rank",
                     "time_step_rank", "embedding_rank"), 16),
    **dict.fromkeys(("qk_rope_head_dim", "qk_nope_head_dim", "v_head_dim", "index_head_dim",
                     "linear_key_head_dim", "linear_value_head_dim", "mamba_head_dim", "d_kv", "d_head",
                     "attention_head_size", "resampler_head_dim", "dim_head", "swa_head_dim"), 8),
    **dict.fromkeys(("max_position_embeddings", "n_positions", "max_target_positions", "n_ctx",
                     "max_2d_position_embeddings", "max_text_positions", "context_length",
                     "model_max_length"), MAX_POSITIONS),
    **dict.fromkeys(("mamba_d_state", "state_size", "ssm_state_size", "d_state"), 16),
    # NemotronH's Mamba2 head count (128 by default; 8 keeps its default n_groups=8 dividing it): left at 128,
    # each item's chunked scan is 128 heads x 128 x 128 elementwise work that dwarfs the rest of the tiny model
    "mamba_num_heads": 8,
    "max_source_positions": 50,  # audio encoders: input frames = 2 x this (see zoo/tiny.py)
    "num_mel_bins": 16,
    "image_size": IMAGE,
    "patch_size": PATCH,
    "sliding_window": 16,
    # Longformer/LED pad every input to a multiple of the window; a window beyond the position table
    # numbers that padding past it (inputs_embeds: IndexError on a one-token input)
    "attention_window": 16,
    "num_query_tokens": 8,
    "num_queries": 8,
    "image_seq_length": 16,
    "mm_tokens_per_image": 16,
    "num_codebooks": 4,
    "codebook_size": 64,
    "num_conv_pos_embeddings": 16,
    "num_conv_pos_embedding_groups": 4,
    "num_codevectors_per_group": 8,
    "relative_attention_num_buckets": 8,
    "relative_attention_max_distance": 16,
    "pretrain_image_size": IMAGE,
    "rotary_dim": 8,  # at most head_dim (32 / 4 heads)
    "num_groups": 2,  # group norms over the tiny channel counts (8, 16, ...)
}
# Mixture-of-experts widths: grouped matmuls need 16-byte strides, so expert widths are a multiple
# of 4 (37 would fail with "strides should be multiple of 16 bytes").
MOE_FFN = 32
EXPERT_COUNTS = ("num_experts", "num_local_experts", "n_routed_experts", "moe_num_experts")
# Per-stage lists of CNN/hierarchical vision models: stage count kept, each value made small.
STAGE_LIST_RULES: dict[str, object] = {
    "depths": lambda i, v: min(v, 2),
    "hidden_sizes": lambda i, v: min(v, 16 * (i + 1)),
    "embed_dims": lambda i, v: min(v, 16 * (i + 1)),
    "embed_dim_per_stage": lambda i, v: min(v, 16 * (i + 1)),
    "neck_hidden_sizes": lambda i, v: min(v, 16 * (i + 1)),
    "num_heads": lambda i, v: min(v, 2),
    "num_attention_heads": lambda i, v: min(v, 2),
    "num_attention_heads_per_stage": lambda i, v: min(v, 2),
    "attention_window": lambda i, v: min(v, SIZE_RULES["attention_window"]),  # per layer (Longformer)
    "conv_dim": lambda i, v: min(v, HIDDEN),
    "tdnn_dim": lambda i, v: min(v, HIDDEN),
}
# Layer schedules of hybrid stacks ("every n-th layer is full attention / MoE / global"): a period is
# cut to the tiny layer count and an offset to its last layer, so the tiny stack keeps both kinds.
SCHEDULE_PERIODS = ("layer_group_size", "attn_layer_period", "expert_layer_period", "no_rope_layer_interval",
                    "global_attn_every_n_layers", "cross_attention_frequency")
SCHEDULE_OFFSETS = ("attn_layer_offset", "expert_layer_offset")
VOCAB_SUFFIX = "vocab_size"
# special ids: must stay inside the vocab (a list of them too: Ovis2's visual_indicator_token_ids)
ID_SUFFIXES = ("_token_id", "_token_index", "token_id", "_id", "_token_ids")
NOT_SIZES = {"type_vocab_size"}  # already tiny, and not a size of the embedding
# A vanishing init std (BLIP-family and SAM vision configs default initializer_range to 1e-10: their
# towers are only ever loaded from checkpoints) makes a from-scratch tower's weights ~0, so its output
# is the same ~0 vector for every input and the tiny model exercises nothing on that path (tiny BlipModel:
# image_embeds before normalisation of norm 9.3e-6 for zeros, 0.7 and randn images alike). Raised to this.
INIT_STD, INIT_STD_FLOOR = 0.02, 1e-4
MAX_PARAMS = 4_000_000  # a tiny build above this was not shrunk: refuse it with the biggest tensor named


def seed_for(model_type: str) -> int:
    """The weight-init seed of a model type: the same in every process and on every machine."""
    return zlib.crc32(model_type.encode()) % (2**31)


# -- listing ---------------------------------------------------------------------------------------
@dataclass(frozen=True)
class Entry:
    """One model type of the catalogue and the classes of its variants."""

    model_type: str
    config_class: str
    variants: tuple[tuple[str, str], ...]  # (variant id, class name)
    modality: str

    def ids(self, variants=None) -> list[str]:
        if variants and "primary" in variants:  # one id per type: the head most properties apply to
            have = dict(self.variants)
            variants = (*[v for v in variants if v != "primary"], next(v for v in PRIMARY_ORDER if v in have))
        return [f"{self.model_type}-{v}" for v, _ in self.variants if variants is None or v in variants]


def _class_name(value) -> str:
    return value[0] if isinstance(value, (list, tuple)) else value


def _auto():
    from transformers.models.auto import configuration_auto, modeling_auto

    return modeling_auto, configuration_auto


def _sub_kind(cfg) -> str:
    """What a (sub-)config describes, read off its own attributes."""
    d = cfg.__dict__
    if any(k in d for k in ("image_size", "patch_size", "hidden_sizes", "depths", "num_channels")) and "vocab_size" not in d:
        return "vision"
    if any(k in d for k in ("num_mel_bins", "conv_kernel", "sampling_rate", "feature_size")) and "vocab_size" not in d:
        return "audio"
    if "vocab_size" in d:
        return "text"
    return "other"


def _sub_configs(cfg):
    from transformers import PreTrainedConfig

    for key, value in cfg.__dict__.items():
        if isinstance(value, PreTrainedConfig):
            yield key, value


AUDIO_INPUTS = ("input_features", "input_values", "audio_values", "input_audio", "audio_input")
VISION_INPUTS = ("pixel_values", "pixel_values_videos", "images")
TIMESERIES_INPUTS = ("past_values", "past_time_features", "inputs_embeds_ts")


def modality_of(model_class, config) -> str:
    """text / vision / audio / multimodal / timeseries / other, from the model's main input and its sub-configs."""
    main = getattr(model_class, "main_input_name", "input_ids")
    kinds = {_sub_kind(sub) for _, sub in _sub_configs(config)}
    has_vocab = "vocab_size" in config.__dict__ or "text" in kinds
    if main in TIMESERIES_INPUTS:
        return "timeseries"
    if main in AUDIO_INPUTS:
        return "audio"
    if main in VISION_INPUTS:
        return "multimodal" if has_vocab and main != "pixel_values" or "text" in kinds else "vision"
    if main == "input_ids":
        return "multimodal" if kinds & {"vision", "audio"} else "text"
    return "other"


@lru_cache(maxsize=1)
def entries() -> dict[str, Entry]:
    """Every model type with an auto model class, and its variants; modality from the default config."""
    modeling_auto, configuration_auto = _auto()
    types: dict[str, dict[str, str]] = {}
    for variant, mappings in HEADS.items():
        for mapping in mappings:
            for model_type, cls in getattr(modeling_auto, mapping).items():
                seen = types.setdefault(model_type, {})
                name = _class_name(cls)
                if variant not in seen and name not in seen.values():
                    seen[variant] = name
    out = {}
    for model_type in sorted(types):
        config_name = configuration_auto.CONFIG_MAPPING_NAMES.get(model_type, "")
        variants = tuple((v, types[model_type][v]) for v in HEADS if v in types[model_type])
        out[model_type] = Entry(model_type, config_name, variants, _modality_quiet(model_type, variants))
    return out


def _modality_quiet(model_type: str, variants) -> str:
    try:
        config = default_config(model_type)
        return modality_of(model_class(model_type, variants[0][1]), config)
    except Exception:  # noqa: BLE001 - an unbuildable type is still listed; its reason shows at build
        return "other"


def model_class(model_type: str, class_name: str):
    """The model class, imported from its own module (so a missing optional dependency names itself)."""
    import transformers

    return getattr(transformers, class_name)


@lru_cache(maxsize=None)
def default_config(model_type: str):
    from transformers import CONFIG_MAPPING

    return CONFIG_MAPPING[model_type]()


# -- shrinking -------------------------------------------------------------------------------------
def _declared_defaults(cls) -> dict:
    """Each dataclass field's declared default (None where post-init derives it from other sizes)."""
    out = {}
    for f in dataclasses.fields(cls):
        if f.default is not dataclasses.MISSING:
            out[f.name] = f.default
        elif f.default_factory is not dataclasses.MISSING:
            try:
                out[f.name] = f.default_factory()
            except Exception:  # noqa: BLE001
                pass
    return out


def _is_int(v) -> bool:
    return isinstance(v, int) and not isinstance(v, bool)


def _shrink_value(name: str, value, layers_before: int | None, list_lengths=frozenset()):
    """The tiny value of one attribute, or `value` unchanged when no rule applies."""
    if _is_init_std(name) and isinstance(value, float) and 0 < value < INIT_STD_FLOOR:
        return INIT_STD
    if _is_int(value):
        if name in NOT_SIZES:
            return value
        if name in SCHEDULE_PERIODS and value > LAYERS:
            return LAYERS
        if name in SCHEDULE_OFFSETS and value > LAYERS - 1:
            return LAYERS - 1
        if name in SIZE_RULES:
            target = SIZE_RULES[name]
            if target == HEADS_N:  # heads must divide the hidden size
                return HEADS_N if value >= HEADS_N or HIDDEN % value else value
            return min(value, target)
        if name.endswith(VOCAB_SUFFIX):
            return min(value, VOCAB)
        if name.endswith(("_intermediate_size", "_ffn_dim")):
            return min(value, FFN)
        if name.endswith(("_hidden_size", "_hidden_dim", "_embed_dim", "_channels")) and value > HIDDEN:
            return HIDDEN
        if name.endswith("_head_dim") and value > 8:
            return 8
        if name.endswith(("_dim", "_size")) and value > 2 * MAX_POSITIONS and not name.startswith(("max_", "vocab")):
            return HIDDEN  # some other width (projector in/out, adapter, codebook): far larger than the tiny model
        if name.endswith(("_num_layers", "_layers")) and not name.startswith(("max_", "first_")) and value > LAYERS:
            return LAYERS if value not in list_lengths else value  # a count of a list's entries stays
        return value
    if isinstance(value, (list, tuple)) and value and all(_is_int(v) for v in value):
        if name in ("image_size", "patch_size", "pretrain_image_size") and len(value) <= 3:
            target = IMAGE if name != "patch_size" else PATCH
            return type(value)(min(v, target) for v in value)
        if name in STAGE_LIST_RULES:
            rule = STAGE_LIST_RULES[name]
            return type(value)(rule(i, v) for i, v in enumerate(value))
    if isinstance(value, (list, tuple)) and layers_before and len(value) == layers_before and layers_before > LAYERS:
        return type(value)(_cut_per_layer(list(value)))  # a per-layer list: cut to the layer count
    if _is_kind_pattern(value, layers_before):
        return type(value)(_cut_per_layer(list(value)))
    return value


def _is_init_std(name: str) -> bool:
    """Whether `name` is a config's weight-init standard deviation."""
    return name == "initializer_range" or name.endswith("_initializer_range")


def _is_kind_pattern(value, layers_before: int | None) -> bool:
    """A pattern of layer kinds that the config repeats over its stack (RecurrentGemma's block_types
    ("recurrent", "recurrent", "attention") over 26 layers): longer than the tiny stack, its first
    LAYERS entries would hold one kind only, so it is cut like a per-layer schedule."""
    return (isinstance(value, (list, tuple)) and bool(layers_before) and LAYERS < len(value) < layers_before
            and all(isinstance(v, str) for v in value) and len(set(value)) < len(value))


def _cut_per_layer(value: list) -> list:
    """A per-layer list cut to LAYERS entries. A schedule of layer kinds (hybrid models' "linear" and
    "full" attention, "dense" and "sparse" MLPs) keeps one layer of each kind where it can: the first
    LAYERS layers of a hybrid are often all of one kind, and the tiny model would lose the other."""
    head = value[:LAYERS]
    if not all(isinstance(v, str) for v in value):
        return head
    kinds = list(dict.fromkeys(value))
    missing = [k for k in kinds if k not in head]
    while missing and len(set(head)) < len(head):
        # replace the last repeated kind by the first missing one, keeping the order of the full schedule
        index = max(i for i, v in enumerate(head) if head.count(v) > 1)
        head[index] = missing.pop(0)
    return head


def _layer_count(d: dict) -> int | None:
    for key in ("num_hidden_layers", "num_layers", "n_layer", "n_layers", "decoder_layers", "encoder_layers"):
        if _is_int(d.get(key)):
            return d[key]
    return None


def _id_values(key: str, value) -> list[int]:
    """The special ids a config entry holds (one, or a list of them)."""
    if not key.endswith(ID_SUFFIXES) or key.startswith("num_"):
        return []
    if _is_int(value):
        return [value]
    if isinstance(value, (list, tuple)) and value and all(_is_int(v) for v in value):
        return list(value)
    return []


class IdMap:
    """One remapping of out-of-vocab special ids for a config and all its sub-configs.

    A multimodal config keeps its image token id at the top and its pad id in `text_config`;
    remapped level by level both became 98, so every pad token counted as an image placeholder.
    Shared over the tree, distinct ids stay distinct and equal ids stay equal.
    """

    def __init__(self, config):
        self.used: set[int] = set()
        self.mapping: dict[int, int] = {}
        stack = [config]
        while stack:
            level = stack.pop()
            for key, value in level.__dict__.items():
                self.used.update(_id_values(key, value))
            stack.extend(sub for _, sub in _sub_configs(level))

    def fix(self, v: int, vocab: int) -> int:
        if v < vocab:
            return v
        if v not in self.mapping:
            taken = self.used | set(self.mapping.values())
            self.mapping[v] = next(i for i in range(vocab - 1, 2, -1) if i not in taken)
        return self.mapping[v]


def _remap_ids(kwargs: dict, current: dict, vocab: int, ids: IdMap) -> None:
    """Special ids at or above the tiny vocab move to distinct small ids counted down from vocab-1."""
    for key, value in current.items():
        values = _id_values(key, value)
        if values and max(values) >= vocab:
            kwargs[key] = ids.fix(value, vocab) if _is_int(value) else type(value)(ids.fix(v, vocab) for v in values)


def _rope(value, head_dim: int):
    """rope parameters at the tiny sizes: an mrope section (parts of head_dim / 2) scaled, per-frequency
    factor lists (longrope) cut to head_dim / 2, the original context no longer than the tiny one."""
    if not isinstance(value, dict):
        return value
    out = dict(value)
    half = head_dim // 2
    if "mrope_section" in out and out["mrope_section"]:
        section = list(out["mrope_section"])
        total = sum(section)
        scaled = [max(1, s * half // total) for s in section]
        scaled[-1] += half - sum(scaled)
        out["mrope_section"] = scaled
    for key in ("short_factor", "long_factor"):
        if isinstance(out.get(key), (list, tuple)) and len(out[key]) > half:
            out[key] = list(out[key][:half])
    if _is_int(out.get("original_max_position_embeddings")) and out["original_max_position_embeddings"] > MAX_POSITIONS:
        out["original_max_position_embeddings"] = MAX_POSITIONS // 2
    return out if out != value else value


def shrink_kwargs(config, overrides: dict | None = None, ids: IdMap | None = None) -> dict:
    """Config kwargs that make `config` (a default config instance) tiny by the generic rules."""
    ids = ids or IdMap(config)
    cls = type(config)
    declared = _declared_defaults(cls)
    current = dict(config.__dict__)
    layers_before = _layer_count(current)
    # lengths of the config's non-per-layer lists (conv stacks): counts of their entries are kept
    lengths = frozenset(len(v) for v in current.values() if isinstance(v, (list, tuple)) and len(v) != layers_before)
    kwargs: dict = {}
    for name, value in current.items():
        if name.startswith("_") or name in ("id2label", "label2id", "architectures", "transformers_version"):
            continue
        schedule = (isinstance(value, (list, tuple)) and len(value) == layers_before
                    and all(isinstance(v, str) for v in value))
        if name in declared and declared[name] is None and not isinstance(value, dict) and not schedule:
            continue  # post-init derives it (head_dim, kv heads): let it see the tiny sizes
        # a derived schedule of layer kinds (Qwen3.5's layer_types: full attention every 4th layer) is
        # cut here instead, keeping one layer of each kind: derived for 2 layers it holds only the first
        new = _shrink_value(name, value, layers_before, lengths)
        if new is not value and new != value:
            kwargs[name] = new
    if any(_is_int(current.get(k)) and current[k] > 1 for k in EXPERT_COUNTS):
        for key, value in kwargs.items():
            if value == FFN:
                kwargs[key] = MOE_FFN
    merged = {**current, **kwargs}
    vocab = merged.get("vocab_size") if _is_int(merged.get("vocab_size")) else VOCAB
    _remap_ids(kwargs, merged, vocab, ids)
    heads = merged.get("num_attention_heads") if _is_int(merged.get("num_attention_heads")) else None
    hidden = next((merged[k] for k in ("hidden_size", "d_model", "n_embd", "embed_dim", "dim") if _is_int(merged.get(k))), None)
    if heads and hidden:
        kv = current.get("num_key_value_heads")
        if _is_int(kv) and declared.get("num_key_value_heads") is not None or _is_int(kv) and kv != current.get("num_attention_heads"):
            orig_heads = current.get("num_attention_heads") or kv
            kwargs["num_key_value_heads"] = heads if kv == orig_heads else 1 if kv == 1 else max(1, heads // 2)
        if _is_int(current.get("head_dim")) and (declared.get("head_dim") is not None or "head_dim" not in declared):
            kwargs["head_dim"] = hidden // heads
        if "rope_parameters" in current:
            kwargs["rope_parameters"] = _rope(current["rope_parameters"], kwargs.get("head_dim", hidden // heads))
            if kwargs["rope_parameters"] is current["rope_parameters"]:
                del kwargs["rope_parameters"]
    depths, window = merged.get("depths"), merged.get("window_size")
    if isinstance(depths, (list, tuple)) and _is_int(window) and _is_int(merged.get("patch_size")):
        # Windowed hierarchical towers (Swin) halve the resolution per stage and break when a stage is
        # smaller than the window: window 2, and a patch that makes the last stage one window wide.
        kwargs["window_size"] = window = 2
        kwargs["patch_size"] = max(1, IMAGE // (window * 2 ** (len(depths) - 1)))
    if "mrope_section" in getattr(cls, "ignore_keys_at_rope_validation", ()) and heads and hidden:
        # M-RoPE configs whose modeling code defaults the section to the full-size [16, 24, 24]
        rope = dict(kwargs.get("rope_parameters", current.get("rope_parameters") or {}))
        rope.setdefault("mrope_section", [16, 24, 24])
        kwargs["rope_parameters"] = _rope(rope, kwargs.get("head_dim", hidden // heads))
    for key, sub in _sub_configs(config):
        nested = (overrides or {}).get(key)
        kwargs[key] = shrink_config(sub, nested if isinstance(nested, dict) else None, ids)
    return kwargs


def shrink_config(config, overrides: dict | None = None, ids: IdMap | None = None):
    """A tiny copy of `config` (sub-configs shrunk by the same rules), `overrides` applied last."""
    kwargs = shrink_kwargs(config, overrides, ids)
    subs = dict(_sub_configs(config))
    for key, value in (overrides or {}).items():
        if not (isinstance(value, dict) and key in subs):  # sub-config edits were applied inside
            kwargs[key] = value
    return type(config)(**kwargs)


class NotBuilt(Exception):
    """A catalogue model that cannot be built or fed here; `stage` says where, the message why."""

    def __init__(self, stage: str, reason: str):
        super().__init__(f"not built ({stage}): {reason}")
        self.stage, self.reason = stage, reason


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    lines = [x.strip() for x in text.splitlines() if x.strip()]
    line = lines[0] if lines else ""
    if line.startswith("Class validation error") and len(lines) > 1:  # @strict configs: the validator's own words
        line = f"{line.split(chr(39))[1] if chr(39) in line else 'validation'}: {lines[1]}"
    return f"{type(exc).__name__}: {line[:300]}"


def reason_of(exc: BaseException) -> str:
    """A short reason class for an exception: missing dependency, needs a GPU kernel, ... or the error."""
    text = f"{type(exc).__name__}: {exc}"
    missing = re.search(r"requires? the (\w[\w-]*) librar", text) or re.search(r"No module named '([\w.]+)'", text)
    if missing:
        return f"missing optional dependency: {missing.group(1)}"
    if re.search(r"cuda|CUDA|flash_attn|triton|GPU", text):
        return f"needs a GPU kernel: {_first_line(exc)}"
    if re.search(r"from_pretrained|hf_hub|huggingface.co|local_files_only|offline", text):
        return f"needs remote files: {_first_line(exc)}"
    return _first_line(exc)


@lru_cache(maxsize=None)
def tiny_config(model_type: str):
    """The tiny config of a model type: generic shrink, then its override row (if any)."""
    row = OVERRIDES.get(model_type, {})
    if "skip" in row:
        raise NotBuilt("listed", row["skip"])
    try:
        base = default_config(model_type)
    except Exception as exc:  # noqa: BLE001
        raise NotBuilt("config", reason_of(exc)) from exc
    try:
        config = shrink_config(base, row.get("config"))
    except Exception as exc:  # noqa: BLE001
        raise NotBuilt("config", reason_of(exc)) from exc
    _compose_decoder(config)
    return config


def _compose_decoder(config) -> None:
    """A composite encoder-decoder (EncoderDecoderModel, its vision and speech kin) is made by
    `from_encoder_decoder_configs`, which turns its decoder into one: causal, with cross-attention.
    Its default config skips that step, which leaves a bidirectional decoder that ignores the encoder."""
    if hasattr(type(config), "from_encoder_decoder_configs") and hasattr(config, "decoder"):
        config.decoder.is_decoder = True
        config.decoder.add_cross_attention = True


def _variant_class(ref_name: str):
    model_type, variant = split_id(ref_name)
    entry = entries()[model_type]
    return model_type, variant, dict(entry.variants)[variant]


def split_id(name: str) -> tuple[str, str]:
    """`llama-causal-lm` -> ("llama", "causal-lm"); the longest variant suffix wins."""
    for variant in sorted(HEADS, key=len, reverse=True):
        if name.endswith("-" + variant) and name[: -len(variant) - 1] in entries():
            return name[: -len(variant) - 1], variant
    raise KeyError(f"not a catalogue id: {name}")


_FAILED: dict[str, NotBuilt] = {}  # every failure is kept: a broken model costs its build once per process
KEEP_BUILT = 8  # built subjects kept per process (a sweep holds hundreds of models: memory, not time, binds)


def build_model(name: str):
    """The tiny seeded model of a catalogue id, in eval mode (a fresh build; subjects are cached)."""
    if name in _FAILED:
        raise _FAILED[name]
    try:
        return _build(name)
    except NotBuilt as exc:
        _FAILED[name] = exc
        raise


def _pad_for_classifier(config) -> None:
    """Sequence classifiers of decoder-only models pool at the last non-pad token and raise for
    batches > 1 without a pad id (transformers refuses); give them eos as pad, as GPT-2 users do."""
    for cfg in {id(c): c for c in (config, config.get_text_config())}.values():
        if cfg.__dict__.get("pad_token_id") is None:
            eos = cfg.__dict__.get("eos_token_id")
            cfg.pad_token_id = (eos[0] if isinstance(eos, (list, tuple)) else eos) if eos is not None else 0


def _decoder_start_from_pad(config) -> None:
    """Encoder-decoder sequence classifiers are called without decoder inputs (they shift input_ids
    right, from decoder_start_token_id), and `generate` starts the decoder from it. A config without
    one gets what `generate` falls back to (GenerationConfig.from_model_config, then
    _prepare_special_tokens): the decoder sub-config's start id, else the bos id (T5Gemma: 2, not its
    pad id 0, which its decoder masks), and failing that the pad id, which T5's and Switch
    Transformers' checkpoints hold."""
    if config.is_encoder_decoder and getattr(config, "decoder_start_token_id", None) is None:
        # an EncoderDecoderModel's own config holds no ids: its decoder's do
        decoder = config.get_text_config(decoder=True)
        config.decoder_start_token_id = next(
            (getattr(c, k, None) for c, k in ((decoder, "decoder_start_token_id"), (config, "bos_token_id"),
                                               (decoder, "bos_token_id"), (config, "pad_token_id"),
                                               (decoder, "pad_token_id"))
             if getattr(c, k, None) is not None), None)


def _decoder_for_causal_lm(config) -> None:
    """An encoder's causal-LM head (BertLMHeadModel, RobertaForCausalLM, ...) is a decoder only with
    `is_decoder=True`, as its docs tell users to load it; without it the model attends both ways."""
    if not config.is_encoder_decoder and hasattr(config, "is_decoder"):
        config.is_decoder = True


# variant -> config changes every model of that variant needs (each function says why)
VARIANT_CONFIG = {"seq-cls": (_pad_for_classifier, _decoder_start_from_pad),
                  "cond-gen": (_decoder_start_from_pad,),
                  "causal-lm": (_decoder_for_causal_lm,)}


def variant_config(model_type: str, variant: str):
    """The tiny config of one variant: the type's tiny config, with the variant's rule applied to a copy."""
    import copy

    config = copy.deepcopy(tiny_config(model_type))  # models keep (and some edit) their config: never share it
    for change in VARIANT_CONFIG.get(variant, ()):
        change(config)
    return config


def _build(name: str):
    import torch

    model_type, variant, class_name = _variant_class(name)
    config = variant_config(model_type, variant)
    try:
        cls = model_class(model_type, class_name)
    except Exception as exc:  # noqa: BLE001
        raise NotBuilt("import", reason_of(exc)) from exc
    try:
        with torch.device("meta"):
            probe = cls(config)
        sizes = {n: p.numel() for n, p in probe.named_parameters()}
        del probe
    except Exception as exc:  # noqa: BLE001
        raise NotBuilt("build", reason_of(exc)) from exc
    total = sum(sizes.values())
    if total > MAX_PARAMS:
        biggest = max(sizes, key=sizes.get)
        raise NotBuilt("build", f"not shrunk: {total:,} parameters (largest {biggest}: {sizes[biggest]:,})")
    torch.manual_seed(seed_for(model_type))
    try:
        model = cls(config)
    except Exception as exc:  # noqa: BLE001
        raise NotBuilt("build", reason_of(exc)) from exc
    return model.eval()


# -- selection -------------------------------------------------------------------------------------
def is_registry_arg(arg: str) -> bool:
    return arg == "registry" or arg.startswith(("registry:", "registry@"))


def select(selector: str = "*", variants: tuple[str, ...] | None = None) -> list[str]:
    """Catalogue ids for a glob over model types or a modality name, optionally only some variants."""
    out = []
    for model_type, entry in entries().items():
        if selector in MODALITY_NAMES:
            if entry.modality != selector:
                continue
        elif not fnmatch.fnmatchcase(model_type, selector):
            continue
        out.extend(entry.ids(variants))
    return out


def parse_registry_arg(arg: str) -> tuple[str, tuple[str, ...] | None]:
    """`registry[:SELECTOR][@VARIANT,...]` -> (selector, variants or None for all)."""
    rest = arg[len("registry"):]
    variants = None
    if "@" in rest:
        rest, _, names = rest.partition("@")
        variants = tuple(v.strip() for v in names.split(",") if v.strip())
        unknown = [v for v in variants if v not in HEADS and v != "primary"]
        if unknown:
            raise ValueError(f"--model {arg}: unknown variant(s) {unknown}; expected some of {', '.join(HEADS)}")
    selector = rest[1:] if rest.startswith(":") else "*"
    if rest and not rest.startswith(":"):
        raise ValueError(f"--model {arg}: expected registry, registry:GLOB_OR_MODALITY or registry...@VARIANTS")
    return selector or "*", variants


@dataclass(frozen=True)
class CatalogRef:
    """A `--model registry...` selection of one catalogue id (ModelRef-like: `name`, `is_zoo`, `path`)."""

    name: str
    model_type: str
    variant: str
    path: None = None
    allow_pickle: bool = False
    catalog: bool = True

    @property
    def is_zoo(self) -> bool:
        return False


def expand_registry_arg(arg: str) -> list[CatalogRef]:
    """The refs one `--model registry...` argument selects (ValueError with a one-line reason if none)."""
    selector, variants = parse_registry_arg(arg)
    names = select(selector, variants)
    if not names:
        known = ", ".join(MODALITY_NAMES)
        raise ValueError(f"--model {arg}: selects no model type (a glob over model types, or one of {known})")
    return [CatalogRef(n, *split_id(n)) for n in names]


# -- subjects and the smoke ------------------------------------------------------------------------
def inputs_strategy(spec):
    """The suite's own model inputs for a spec, completed from its signature plan."""
    from strategies.batches import model_inputs
    from strategies.signature import signature_inputs

    strategy = model_inputs(spec)
    if spec.extra.get("signature_inputs"):  # idempotent: harmless once model_inputs applies it itself
        strategy = strategy.flatmap(lambda inputs: signature_inputs(spec, inputs))
    return strategy


def smoke_inputs(spec):
    """The one deterministic example the smoke feeds: the minimal draw of the suite's own strategy."""
    from hypothesis import HealthCheck, find, settings

    return find(inputs_strategy(spec), lambda _: True,
                settings=settings(database=None, derandomize=True, max_examples=1,
                                  suppress_health_check=list(HealthCheck)))


def _spec_for(name, model):
    from strategies.signature import signature_plan
    from zoo.build import spec_for

    model_type, _ = split_id(name)
    spec = spec_for(name, model, source="registry", seed=seed_for(model_type))
    if "signature_inputs" not in spec.extra:  # until spec_for calls signature_plan itself
        spec.extra.update(signature_plan(model))
    return spec


class _Captured(Exception):
    pass


def placeholder_tokens(model, images: dict) -> int | None:
    """How many image-token ids one image (`images`: its arrays, see `trial_images`) needs in the text, measured with one trial
    forward (transformers' `get_placeholder_mask` compares the features with the ids); None if the
    trial cannot reach that check, 0 if the model needs none."""
    import inspect

    import torch

    counted: list[int] = []
    patched = []

    def wrap(original):
        def capture(*args, **kwargs):
            names = list(inspect.signature(original).parameters)
            bound = dict(zip(names, args), **kwargs)
            feats, embeds = bound.get("image_features"), bound.get("inputs_embeds")
            if isinstance(feats, (list, tuple)):
                feats = torch.cat([f.reshape(-1, f.shape[-1]) for f in feats])
            if feats is not None and embeds is not None:
                counted.append(feats.numel() // embeds.shape[-1])
            raise _Captured
        return capture

    for module in model.modules():
        if hasattr(type(module), "get_placeholder_mask"):
            patched.append(module)
            module.get_placeholder_mask = wrap(module.get_placeholder_mask)
    # two text positions: some models (Aria) skip the image tower for a one-token step, as in cached decoding
    kwargs = {"input_ids": torch.zeros(1, 2, dtype=torch.long), **{k: torch.from_numpy(v) for k, v in images.items()}}
    try:
        with torch.no_grad():
            model(**kwargs)
        return 0
    except _Captured:
        return counted[0] if counted else None
    except Exception:  # noqa: BLE001 - the smoke reports the real forward's error
        return None
    finally:
        for module in patched:
            del module.get_placeholder_mask


_RANDOM_FACTORIES = ("rand", "randn")


def drawn_noise_shape(model, inputs: dict) -> tuple[int, ...] | None:
    """The shape of the first random tensor (`torch.rand`/`torch.randn`) the forward draws on one
    trial item (`inputs`: arrays, batch 1), measured by watching the call; None if it draws none or
    the trial fails. A forward that takes `noise` (ViT-MAE, Hiera's MAE) draws it itself when not given."""
    import torch
    from torch.overrides import TorchFunctionMode

    shapes: list[tuple[int, ...]] = []

    class Watch(TorchFunctionMode):
        def __torch_function__(self, func, types, args=(), kwargs=None):
            if getattr(func, "__name__", None) in _RANDOM_FACTORIES and getattr(func, "__module__", "torch") in ("torch", None):
                size = (kwargs or {}).get("size") or (args[0] if args and isinstance(args[0], (tuple, list)) else args)
                shapes.append(tuple(int(n) for n in size))
            return func(*args, **(kwargs or {}))

    kwargs = {k: torch.from_numpy(v) for k, v in inputs.items()}
    try:
        with torch.no_grad(), Watch():
            model(**kwargs)
    except Exception:  # noqa: BLE001 - the smoke reports the real forward's error
        return None
    return shapes[0] if shapes and shapes[0] and shapes[0][0] == 1 else None


_SUBJECTS: "OrderedDict[str, object]" = OrderedDict()


def build_catalog_subject(name: str, *, keep: bool = True):
    """The subject of a catalogue id after a smoke (build + one forward on the suite's own inputs).

    Raises NotBuilt with the stage (config, import, build, spec, inputs, forward) and the reason.
    Failures are kept for the whole process; the last `KEEP_BUILT` subjects are kept (tests of one
    model run together, `--dist loadgroup` under xdist), so a sweep's memory stays flat.
    """
    if name in _FAILED:
        raise _FAILED[name]
    if name in _SUBJECTS:
        _SUBJECTS.move_to_end(name)
        return _SUBJECTS[name]
    try:
        subject = _smoked_subject(name)
    except NotBuilt as exc:
        _FAILED[name] = exc
        raise
    if keep:
        _SUBJECTS[name] = subject
        while len(_SUBJECTS) > KEEP_BUILT:
            _SUBJECTS.popitem(last=False)
    return subject


def _smoked_subject(name: str):
    from zoo.subject import Subject

    model = build_model(name)
    try:
        spec = _spec_for(name, model)
    except Exception as exc:  # noqa: BLE001
        raise NotBuilt("spec", reason_of(exc)) from exc
    subject = Subject(spec, model, None)
    try:
        inputs = smoke_inputs(spec)
    except Exception as exc:  # noqa: BLE001
        raise NotBuilt("inputs", reason_of(exc)) from exc
    try:
        subject.forward(inputs, hidden_states=True)
    except Exception as exc:  # noqa: BLE001
        raise NotBuilt("forward", f"{feeding_gap(model, inputs)}: {reason_of(exc)}") from exc
    return subject


def feeding_gap(model, inputs) -> str:
    """Why the suite's inputs do not fit a model: the forward arguments it may need and did not get."""
    import inspect

    params = inspect.signature(model.forward).parameters
    wanted = [n for n in ("pixel_values", "input_values", "input_features", "decoder_input_ids", "bbox",
                          "image_grid_thw", "pixel_mask", "visual_embeds", "past_values", "image_sizes",
                          "input_features_mask", "spatial_shapes", "pixel_attention_mask")
              if n in params and n not in inputs]
    image_tokens = any(k in model.config.__dict__ for k in ("image_token_id", "image_token_index"))
    if image_tokens and "pixel_values" in inputs:
        return "image placeholder tokens" + (f" (not given: {', '.join(wanted)})" if wanted else "")
    return f"not given: {', '.join(wanted)}" if wanted else "inputs given"


# -- the probe -------------------------------------------------------------------------------------
def probe(names: list[str], *, forward: bool = True, progress=None) -> dict:
    """Build (and smoke) every id; {id: {"stage": ok|<stage>, "reason": ..., "seconds": ...}}."""
    results = {}
    for i, name in enumerate(names):
        start = time.perf_counter()
        try:
            built = build_catalog_subject(name, keep=False).model if forward else build_model(name)
            row = {"stage": "ok", "parameters": sum(p.numel() for p in built.parameters())}
            del built
        except NotBuilt as exc:
            row = {"stage": exc.stage, "reason": exc.reason}
        except Exception as exc:  # noqa: BLE001 - the probe must list everything, never stop
            row = {"stage": "error", "reason": reason_of(exc)}
        row["seconds"] = round(time.perf_counter() - start, 4)
        gc.collect()
        row["modality"] = entries()[split_id(name)[0]].modality
        results[name] = row
        if progress:
            progress(i, name, row)
    return results


def totals(results: dict) -> dict:
    """Counts per stage (reached), per failing stage, and per reason class."""
    from collections import Counter

    stages = Counter(r["stage"] for r in results.values())
    reasons = Counter(f"{r['stage']}: {_reason_class(r.get('reason', ''))}" for r in results.values() if r["stage"] != "ok")
    types_ok = {split_id(n)[0] for n, r in results.items() if r["stage"] == "ok"}
    return {
        "ids": len(results),
        "model_types": len({split_id(n)[0] for n in results}),
        "model_types_fed": len(types_ok),
        "stages": dict(stages.most_common()),
        "reasons": dict(reasons.most_common()),
    }


def _reason_class(reason: str) -> str:
    reason = re.sub(r"\d[\d,]*", "N", reason)
    return reason[:120]


def main(argv=None) -> int:
    import argparse

    parser = argparse.ArgumentParser(prog="python -m zoo.catalog", description=__doc__.splitlines()[0])
    parser.add_argument("selector", nargs="?", default="registry", help="registry[:GLOB|MODALITY][@VARIANTS]")
    parser.add_argument("--probe", action="store_true", help="build every id and run the smoke forward")
    parser.add_argument("--build-only", action="store_true", help="with --probe: build, no forward")
    parser.add_argument("--json", default="catalog.json", help="where to write the listing / probe results")
    args = parser.parse_args(argv)
    import torch
    import transformers

    torch.set_num_threads(1)
    transformers.logging.set_verbosity_error()
    import warnings

    warnings.filterwarnings("ignore")
    selector = args.selector if args.selector.startswith("registry") else f"registry:{args.selector}"
    refs = expand_registry_arg(selector)
    names = [r.name for r in refs]
    listing = {t: {"modality": e.modality, "config": e.config_class, "variants": dict(e.variants)}
               for t, e in entries().items() if any(r.model_type == t for r in refs)}
    report = {"transformers": transformers.__version__, "selector": selector, "listed_model_types": len(listing),
              "listed_ids": len(names), "modalities": dict(__import__("collections").Counter(
                  e["modality"] for e in listing.values())), "model_types": listing}
    print(f"listed: {len(listing)} model types, {len(names)} ids; by modality {report['modalities']}")
    if args.probe:
        start = time.perf_counter()

        def progress(i, name, row):
            if row["stage"] != "ok":
                print(f"[{i + 1}/{len(names)}] {name}: {row['stage']}: {row.get('reason', '')[:160]}", flush=True)

        results = probe(names, forward=not args.build_only, progress=progress)
        report["results"] = results
        report["totals"] = totals(results)
        report["seconds"] = round(time.perf_counter() - start, 1)
        print(json.dumps(report["totals"], indent=1))
        print(f"probe: {report['seconds']} s")
    Path(args.json).write_text(json.dumps(report, indent=1, sort_keys=False))
    print(f"wrote {args.json}")
    return 0


if __name__ == "__main__":
    sys.exit(main())


# -- pytest wiring (called from conftest.py) -------------------------------------------------------
def resolve_model_args(args, *, allow_pickle: bool = False) -> list:
    """All refs of the `--model` values: `registry...` expands here, the rest goes to resolve_model_arg."""
    from zoo.checkpoints import ModelArgError, resolve_model_arg

    refs = []
    for arg in args:
        if is_registry_arg(arg):
            try:
                refs.extend(expand_registry_arg(arg))
            except ValueError as exc:
                raise ModelArgError(str(exc)) from None
        else:
            refs.append(resolve_model_arg(arg, allow_pickle=allow_pickle))
    return refs


def is_catalog_ref(ref) -> bool:
    return bool(getattr(ref, "catalog", False))


def catalog_param(name: str):
    """The pytest parameter of a catalogue id, made without building it (building waits for first use).

    Marks: the id, its modality, and an xdist group per id (`-n 2 --dist loadgroup` then builds
    each model in one worker only).
    """
    import pytest

    model_type, _ = split_id(name)
    modality = entries()[model_type].modality
    marks = [getattr(pytest.mark, re.sub(r"\W", "_", name)), pytest.mark.xdist_group(name)]
    if modality in ("text", "vision", "audio", "multimodal"):
        marks.append(getattr(pytest.mark, modality))
    return pytest.param(name, marks=marks, id=name)


def setup_catalog_item(item, registry, mark_findings=None) -> None:
    """Before a test on a catalogue model: build it (with its smoke), skip with the reason if it is
    not built or lacks what the test needs, then apply the recorded findings to it."""
    import pytest

    callspec = getattr(item, "callspec", None)
    name = callspec.params.get("subject") if callspec else None
    if not isinstance(name, str) or not is_catalog_ref(registry.refs.get(name)):
        return
    try:
        subject = registry[name]
    except NotBuilt as exc:
        pytest.skip(str(exc))
    needs = [cap for mark in item.iter_markers("needs") for cap in mark.args]
    missing = [cap for cap in needs if not subject.spec.has(cap)]
    if missing:
        pytest.skip(f"does not apply: {name} lacks {', '.join(missing)}")
    if mark_findings is not None:
        mark_findings(item.config, [item], lambda n: registry[n])
