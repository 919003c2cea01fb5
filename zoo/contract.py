"""The shape contract: which outputs a model returns and each one's shape, from its class, its
forward's output class and its config, as one table of rules per output field.

Nothing here runs a model. `contract_facts(model)` reads the plain numbers a contract needs off the
model object once (head kind from transformers' own auto mappings, output class from the forward's
return annotation, sizes from the config, extra tokens from the embedding's learned token
parameters); they live in `spec.extra["contract"]`. `contract(spec, input_shapes)` then gives the
expected shapes for any input. An axis that the config cannot say (a hierarchical vision model's
token count, a CNN's stride without a rule) is `None` and matches any size; the batch axis is
always known. A field of the output class that no rule covers is listed as unchecked, never failed:
that is the suite not knowing, not the model being wrong.

A new head or output kind is a new row in `HEAD_LOGITS`, `FIELD_RULES` or `CNN_STRIDES`, never a
branch on the model type.
"""

from __future__ import annotations

import dataclasses
import typing
from dataclasses import dataclass, field

# -- head kinds: read from transformers' auto mappings (first match wins, specific before generic) --
HEAD_MAPPINGS = (
    ("MODEL_FOR_QUESTION_ANSWERING_MAPPING_NAMES", "question_answering"),
    ("MODEL_FOR_TOKEN_CLASSIFICATION_MAPPING_NAMES", "token_classification"),
    ("MODEL_FOR_SEQUENCE_CLASSIFICATION_MAPPING_NAMES", "sequence_classification"),
    ("MODEL_FOR_IMAGE_CLASSIFICATION_MAPPING_NAMES", "image_classification"),
    ("MODEL_FOR_AUDIO_CLASSIFICATION_MAPPING_NAMES", "sequence_classification"),
    ("MODEL_FOR_CTC_MAPPING_NAMES", "ctc"),
    ("MODEL_FOR_SPEECH_SEQ_2_SEQ_MAPPING_NAMES", "seq2seq_lm"),
    ("MODEL_FOR_SEQ_TO_SEQ_CAUSAL_LM_MAPPING_NAMES", "seq2seq_lm"),
    ("MODEL_FOR_CAUSAL_LM_MAPPING_NAMES", "causal_lm"),
    ("MODEL_FOR_MASKED_LM_MAPPING_NAMES", "masked_lm"),
    ("MODEL_FOR_ZERO_SHOT_IMAGE_CLASSIFICATION_MAPPING_NAMES", "dual_encoder"),
    ("MODEL_MAPPING_NAMES", "base"),
)
# Class-name endings for classes the mappings do not list (e.g. DeiT's teacher head, GPT-2's LM head).
HEAD_SUFFIXES = (
    ("ForQuestionAnswering", "question_answering"),
    ("ForTokenClassification", "token_classification"),
    ("ForSequenceClassification", "sequence_classification"),
    ("ForAudioClassification", "sequence_classification"),
    ("ForImageClassification", "image_classification"),
    ("ForImageClassificationWithTeacher", "image_classification"),
    ("ForCTC", "ctc"),
    ("ForConditionalGeneration", "seq2seq_lm"),
    ("ForCausalLM", "causal_lm"),
    ("LMHeadModel", "causal_lm"),
    ("ForMaskedLM", "masked_lm"),
    ("Model", "base"),
)

# What a head's `logits` are indexed by. Axis names are resolved by `_axes`.
HEAD_LOGITS = {
    "sequence_classification": ("batch", "labels"),
    "image_classification": ("batch", "labels"),
    "token_classification": ("batch", "tokens", "labels"),
    "masked_lm": ("batch", "tokens", "vocab"),
    "causal_lm": ("batch", "tokens", "vocab"),
    "ctc": ("batch", "tokens", "vocab"),
    "seq2seq_lm": ("batch", "decoder_tokens", "vocab"),
}

# Learned token vectors that a vision embedding puts before the patches: (1, n, hidden) or (n, hidden)
# tensors count n tokens, a single (hidden,) vector (CLIP's class_embedding) one. Only parameters of an
# embedding module count: a pooling head's cls_token (AIMv2) is not in the stream. mask_token replaces
# patches: not counted.
EXTRA_TOKEN_PARAMETERS = ("cls_token", "class_embedding", "distillation_token", "register_tokens", "detection_tokens",
                          "cls_register_token")
# Config attributes counting hyper-connection streams (DeepSeek-V4 style): the layers carry n copies of
# the residual stream, so hidden states are (batch, tokens, n, hidden) or flattened (batch, tokens, n * hidden).
HYPER_CONNECTION_COUNTS = ("hc_mult", "hc_count")
# Config attributes of vision towers whose token count the patch grid does not give: grouping stages
# merge tokens (GroupViT). The token axis is then not checked.
TOKEN_MERGING = ("num_output_groups",)
# Output-class fields that mean `hidden_states` gathers several towers' states (MaskFormer: pixel
# decoder and transformer decoder): no single stream shape covers it.
COMPOSITE_STATES = ("pixel_decoder_hidden_states", "transformer_decoder_hidden_states")

# Outputs that are not numerical results of a plain forward, or that the suite never requests.
NOT_JUDGED = frozenset({"loss", "past_key_values", "cache", "attentions", "cross_attentions",
                        "encoder_attentions", "decoder_attentions", "reshaped_hidden_states",
                        "decoder_past_key_values", "router_logits", "aux_loss"})


def _cnn_stride_resnet(config, stages):
    return 4 * 2 ** (stages - 1) * (2 if getattr(config, "downsample_in_first_stage", False) else 1)


# A CNN's total downsampling from its config: (config attributes that identify the rule, stride, why).
CNN_STRIDES = (
    (("patch_size", "hidden_sizes", "depths"), lambda c, n: c.patch_size * 2 ** (n - 1),
     "patchify stem of patch_size, then each later stage halves (ConvNeXt-style)"),
    (("embedding_size", "groups_width"), lambda c, n: 2 * 2 ** n if c.downsample_in_first_stage else 2 ** n,
     "stride-2 stem, then every stage halves when downsample_in_first_stage (RegNet-style)"),
    (("embedding_size", "layer_type", "hidden_sizes"), _cnn_stride_resnet,
     "stride-2 conv and stride-2 max pool, then each later stage halves (ResNet-style)"),
)


def head_kind(model_class_name: str) -> str:
    """The head a model class puts on its backbone, from transformers' own auto mappings."""
    from transformers.models.auto import modeling_auto

    for mapping_name, kind in HEAD_MAPPINGS:
        for value in getattr(modeling_auto, mapping_name, {}).values():
            names = value if isinstance(value, (tuple, list)) else (value,)
            if model_class_name in names:
                return kind
    for suffix, kind in HEAD_SUFFIXES:
        if model_class_name.endswith(suffix):
            return kind
    return "other"


def output_class(model) -> type | None:
    """The ModelOutput class the forward declares it returns (`-> tuple | SequenceClassifierOutput`)."""
    from transformers.utils import ModelOutput

    try:
        annotation = typing.get_type_hints(type(model).forward).get("return")
    except Exception:  # unresolvable forward references: fall back to the runtime class
        return None
    candidates = typing.get_args(annotation) or (annotation,)
    for candidate in candidates:
        if isinstance(candidate, type) and issubclass(candidate, ModelOutput):
            return candidate
    return None


def _conv_layers(config) -> list[tuple[int, int]]:
    kernels, strides = getattr(config, "conv_kernel", None), getattr(config, "conv_stride", None)
    if kernels is None or strides is None:
        return []
    return [(int(k), int(s)) for k, s in zip(kernels, strides)]


def conv_frames(samples: int, layers: list[tuple[int, int]]) -> int:
    """Frames a stack of unpadded 1-D convolutions makes of `samples` (as `_get_feat_extract_output_lengths`)."""
    for kernel, stride in layers:
        samples = (samples - kernel) // stride + 1
    return samples


def contract_facts(model, *, hidden_size: int, num_layers: int) -> dict:
    """The plain numbers the contract of `model` needs, read once off the model and its config."""
    config = model.config
    out_cls = output_class(model)
    fields = [f.name for f in dataclasses.fields(out_cls)] if out_cls else []
    # an image model whose output class has no attentions is a CNN: (batch, channels, h, w) feature maps
    layout = "feature_map" if out_cls and "NoAttention" in out_cls.__name__ and (
        getattr(config, "hidden_sizes", None) or model.main_input_name == "pixel_values") else "tokens"
    facts = {
        "head": head_kind(type(model).__name__),
        "output_class": out_cls.__name__ if out_cls else None,
        "output_fields": fields,
        "layout": layout,
        "num_labels": int(getattr(config, "num_labels", 0) or 0),
        "hidden_size": hidden_size,
        "num_layers": num_layers,
    }
    extra = 0
    for name, param in model.named_parameters():
        module, _, leaf = name.rpartition(".")
        if leaf in EXTRA_TOKEN_PARAMETERS and "embed" in module.rsplit(".", 1)[-1] and param.dim() in (1, 2, 3):
            extra += 1 if param.dim() == 1 else param.shape[0] if param.dim() == 2 else param.shape[1]
        elif leaf in EXTRA_TOKEN_PARAMETERS and not module and param.dim() in (1, 3):  # top-level (ViT-like towers)
            extra += param.shape[1] if param.dim() == 3 else 1
    facts["extra_tokens"] = extra
    text_config = config.get_text_config() if hasattr(config, "get_text_config") else config
    streams = next((getattr(text_config, a) for a in HYPER_CONNECTION_COUNTS if isinstance(getattr(text_config, a, None), int)), 0)
    if streams > 1:
        facts["residual_streams"] = int(streams)
    if isinstance(getattr(config, "mask_ratio", None), float) and 0 < config.mask_ratio < 1:
        facts["mask_ratio"] = float(config.mask_ratio)  # ViT-MAE keeps int(patches * (1 - ratio)) patches
    if any(getattr(c, a, None) for c in (config, getattr(config, "vision_config", None)) if c is not None
           for a in TOKEN_MERGING):
        facts["merges_tokens"] = True
    # blocks the stack really runs: the longest ModuleList of *Layer / *Block modules. Some configs count
    # otherwise (LongCat-Flash's num_hidden_layers counts two sub-layers per layer), so both counts are allowed.
    facts["layer_modules"] = max((len(m) for m in model.modules() if type(m).__name__ == "ModuleList"
                                  and len(m) and type(m[0]).__name__.endswith(("Layer", "Block"))), default=None)
    facts["hierarchical"] = bool(getattr(config, "depths", None)) and layout == "tokens"
    if layout == "feature_map" and (not getattr(config, "hidden_sizes", None) or getattr(config, "neck_hidden_sizes", None)):
        # no per-stage widths in the config (MobileNet), or hidden_sizes that are the transformer
        # blocks' widths while the maps' channels follow neck_hidden_sizes with stem entries (MobileViT)
        facts["stage_channels"] = None  # shapes' ranks only
    elif layout == "feature_map":
        stages = len(config.depths) if getattr(config, "depths", None) else len(config.hidden_sizes)
        facts["num_layers"] = stages
        facts["stage_channels"] = list(config.hidden_sizes)
        facts["stride"], facts["stride_rule"] = None, "no rule in zoo.contract.CNN_STRIDES"
        for attributes, rule, why in CNN_STRIDES:
            if all(hasattr(config, a) for a in attributes):
                facts["stride"], facts["stride_rule"] = int(rule(config, stages)), why
                break
    elif facts["hierarchical"]:
        facts["num_layers"] = len(config.depths)
        facts["blocks"] = sum(int(d) for d in config.depths)
        # the last stage's width: timm's num_features where the model keeps it (Swin doubles per stage,
        # so config.hidden_size of a shrunk config need not say it), else the config's last stage width
        width = getattr(model, "num_features", None) or (list(getattr(config, "hidden_sizes", None) or [])[-1:] or [None])[0]
        facts["final_width"] = int(width) if isinstance(width, int) else None
    conv = _conv_layers(config)
    if conv:
        facts["conv_layers"] = conv
        facts["conv_dim"] = int(list(config.conv_dim)[-1])
    if getattr(config, "max_source_positions", None) and model.main_input_name == "input_features":
        facts["encoder_tokens"] = int(config.max_source_positions)
        # an average pool over time at the top (Qwen2-Audio's encoder) shortens the last state by its stride
        pools = [m for m in model.modules() if type(m).__name__ == "AvgPool1d"]
        if pools:
            stride = pools[0].stride
            facts["pooled_tokens"] = int(config.max_source_positions) // int(stride[0] if isinstance(stride, tuple) else stride)
    return facts


@dataclass
class Contract:
    """Required and optional output shapes and the fields left unchecked.

    A shape is a tuple whose None axes match any size, or a list of alternative tuples.
    """

    required: dict[str, tuple] = field(default_factory=dict)
    optional: dict[str, tuple] = field(default_factory=dict)  # judged when the model returns them
    unchecked: set[str] = field(default_factory=set)
    notes: list[str] = field(default_factory=list)

    @property
    def shapes(self) -> dict[str, tuple]:
        return {**self.optional, **self.required}

    def leave_unchecked(self, fields: set[str], why: str) -> None:
        """Drop every rule of these output fields: the suite cannot say their shapes (`why`)."""
        for table in (self.required, self.optional):
            for name in [n for n in table if _field_of(n) in fields]:
                del table[name]
        self.unchecked |= fields
        self.notes.append(f"{', '.join(sorted(fields))}: not checked ({why})")

    def fit_returned(self, returned_fields, got_names) -> None:
        """Adjust to what the forward really returned: the returned output class (some forwards annotate
        another) says which fields exist, and a field returned as nested tuples (per-stage tuples of
        states, MaskFormer-Swin) is not one stream of states."""
        returned = set(returned_fields)
        if returned:
            self.required = {n: s for n, s in self.required.items() if _field_of(n) in returned}
        ruled = {_field_of(n) for n in self.shapes}
        self.unchecked |= {f for f in returned if f not in ruled and f not in NOT_JUDGED}
        # `field.i.j` (both indices), not a tower's `vision_model_output.hidden_states.0`
        nested = {p[0] for p in (n.split(".") for n in got_names) if len(p) == 3 and p[1].isdigit() and p[2].isdigit()}
        if nested:
            self.leave_unchecked(nested, "returned as nested tuples")

    def problems(self, got: dict[str, tuple]) -> list[str]:
        """What is wrong with outputs of shapes `got` (empty when they keep the contract)."""
        wrong = [f"{name}: got {got[name]}, expected {_show(want)}" for name, want in self.shapes.items()
                 if name in got and not shape_matches(got[name], want)]
        missing = sorted(set(self.required) - set(got))
        if missing:
            wrong.append(f"missing outputs {missing}")
        extra = sorted(n for n in set(got) - set(self.shapes)
                       if _field_of(n) not in self.unchecked and _field_of(n) not in NOT_JUDGED)
        if extra:
            wrong.append(f"outputs outside the contract {extra}")
        return wrong


def _field_of(name: str) -> str:
    """The output-class field an output name belongs to (`hidden_states.3` -> `hidden_states`)."""
    head = name.split(".", 1)[0]
    return head


def _show(want) -> str:
    """A wanted shape as text (`*`: any size); alternatives joined by `or`."""
    if isinstance(want, list):
        return " or ".join(_show(w) for w in want)
    return "(" + ", ".join("*" if d is None else str(d) for d in want) + (",)" if len(want) == 1 else ")")


def shape_matches(got: tuple, want) -> bool:
    """`got` fits `want` (a shape whose None axes match any size, or a list of such alternatives)."""
    if isinstance(want, list):
        return any(shape_matches(got, w) for w in want)
    return len(got) == len(want) and all(w is None or g == w for g, w in zip(got, want))


def _patch_grid(spec, pixel_shape) -> tuple[int, int] | None:
    """The (rows, columns) of patches an image of `pixel_shape` makes, or None when it is not a whole grid."""
    patch = spec.extra.get("patch_size") or 0
    ph, pw = (tuple(patch)[-2:] if isinstance(patch, (list, tuple)) else (patch, patch)) if patch else (0, 0)
    if not (ph and pw) or pixel_shape[-2] % ph or pixel_shape[-1] % pw:
        return None
    return pixel_shape[-2] // ph, pixel_shape[-1] // pw


def _vision_tokens(spec, facts, pixel_shape) -> int | None:
    grid = _patch_grid(spec, pixel_shape)
    if facts.get("hierarchical") or facts.get("merges_tokens") or grid is None:
        return None
    patches = grid[0] * grid[1]
    if "mask_ratio" in facts:  # random masking keeps this many patches (ViTMAEEmbeddings.random_masking)
        patches = int(patches * (1 - facts["mask_ratio"]))
    return patches + facts.get("extra_tokens", 0)


def _stream_alternatives(stream, spec, facts, pixel_shape):
    """Other layouts of the same token stream: a ViT tower without extra tokens may keep its patch
    grid as a map (SAM, ViTDet: (batch, rows, cols, hidden) or (batch, hidden, rows, cols))."""
    if pixel_shape is None or not isinstance(stream, tuple) or facts.get("extra_tokens") or facts.get("hierarchical"):
        return stream
    grid = _patch_grid(spec, pixel_shape)
    batch, _, width = stream
    if grid is None:  # no patch grid in the config (SAM 3's tower sits in a backbone config): any map
        return [stream, (batch, None, None, width), (batch, width, None, None)]
    return [stream, (batch, *grid, width), (batch, width, *grid)]


def _layer_states(prefix: str, count: int, facts: dict, shape, result: "Contract") -> None:
    """One state per layer plus the embeddings' (count + 1). Where the model runs another number of
    layer modules than the config counts, the states up to the smaller count are required, the rest optional."""
    counts = {count, facts.get("layer_modules") or count}
    result.required.update({f"{prefix}.{i}": shape for i in range(min(counts) + 1)})
    result.optional.update({f"{prefix}.{i}": shape for i in range(min(counts) + 1, max(counts) + 1)})


def contract(spec, input_shapes: dict[str, tuple], *, hidden_states: bool = False) -> Contract:
    """The contract of `spec`'s model for inputs of `input_shapes` (`hidden_states`: as requested)."""
    facts = spec.extra.get("contract") or {}
    result = Contract()
    with_layers = hidden_states and spec.has("hidden_states")
    # the forward's main input decides the encoder's token axis (PP-FormulaNet reads images, not its input_ids)
    main = spec.main_input if spec.main_input in input_shapes else next(
        (k for k in ("input_ids", "pixel_values", "input_features", "input_values") if k in input_shapes), None)
    if main is None:
        return result
    batch = input_shapes[main][0]
    axes = {"batch": batch, "hidden": spec.hidden_size or None, "labels": facts.get("num_labels") or None,
            "vocab": spec.decoder_vocab_size or spec.vocab_size or None}
    if main == "input_ids":
        # image features fill placeholder ids in the text (LLaVA, Qwen-VL); a model without placeholders
        # puts them beside the text (GIT prepends them): the stream is longer by a count the config does not say
        beside_text = "pixel_values" in input_shapes and not spec.extra.get("image_tokens")
        axes["tokens"] = None if beside_text else input_shapes["input_ids"][1]
    elif main == "pixel_values":
        axes["tokens"] = _vision_tokens(spec, facts, input_shapes["pixel_values"])
    elif main == "input_values":
        axes["tokens"] = conv_frames(input_shapes["input_values"][1], facts.get("conv_layers", []))
    else:
        axes["tokens"] = facts.get("encoder_tokens")
    takes_decoder_ids = "decoder_input_ids" in (spec.extra.get("forward_args") or ("decoder_input_ids",))
    if "decoder_input_ids" in input_shapes and takes_decoder_ids:  # a TTS decoder's length is predicted
        axes["decoder_tokens"] = input_shapes["decoder_input_ids"][1]

    def resolve(names):
        return tuple(axes.get(n) for n in names)

    layers = facts.get("num_layers", spec.num_layers)
    # dual encoder (CLIP-style): two towers, pairwise logits (ModelSpec.dual_encoder)
    if spec.dual_encoder:
        _dual_encoder(spec, input_shapes, result, with_layers)
        return result
    if facts.get("layout") == "feature_map":
        _feature_map(spec, facts, input_shapes["pixel_values"], batch, result, with_layers)
    else:
        side = "decoder_tokens" if spec.has("encoder_decoder") else "tokens"
        pixels = input_shapes.get("pixel_values") if main == "pixel_values" else None
        stream = _stream_alternatives(resolve(("batch", side, "hidden")), spec, facts,
                                      None if spec.has("encoder_decoder") else pixels)
        if facts.get("pooled_tokens") and main == "input_features":
            stream = [stream, (batch, facts["pooled_tokens"], axes["hidden"])]
        if facts.get("hierarchical"):
            # hierarchical towers return a token stream (Swin) or a feature map (SegFormer, PVTv2); the
            # config does not say which, so either is allowed, at the last stage's width
            width = facts.get("final_width") or spec.hidden_size
            stream = [(batch, None, width), (batch, width, None, None)]
        head = facts.get("head", "base")
        if head == "base":
            result.required["last_hidden_state"] = stream
            pooled = spec.extra.get("pooled_size") or (facts.get("final_width") if facts.get("hierarchical") else None)
            result.optional["pooler_output"] = (batch, pooled or spec.hidden_size)
        if with_layers:
            shape = [(batch, None, None), (batch, None, None, None)] if facts.get("hierarchical") else stream
            if facts.get("residual_streams") and isinstance(stream, tuple):
                n = facts["residual_streams"]  # the layers carry n residual streams (hyper-connections)
                shape = [stream, (*stream[:2], n, stream[2]), (*stream[:2], n * stream[2] if stream[2] else None)]
            prefix = "decoder_hidden_states" if spec.has("encoder_decoder") else "hidden_states"
            count = spec.extra.get("decoder_layers", layers) if spec.has("encoder_decoder") else layers
            if facts.get("hierarchical"):
                # one state per stage, with or without the embeddings' state, or one per block (PVT):
                # the first `count` are required, the rest optional
                result.required.update({f"{prefix}.{i}": shape for i in range(count)})
                result.optional.update({f"{prefix}.{i}": shape for i in range(count, facts.get("blocks", 0) + 1)})
            else:
                _layer_states(prefix, count, facts if not spec.has("encoder_decoder") else {}, shape, result)
        if spec.has("encoder_decoder"):
            encoder = _stream_alternatives(resolve(("batch", "tokens", "hidden")), spec, facts, pixels)
            result.required["encoder_last_hidden_state"] = encoder
            if with_layers:
                count = spec.extra.get("encoder_layers", layers)
                result.required.update({f"encoder_hidden_states.{i}": encoder for i in range(count + 1)})
        if head in HEAD_LOGITS:
            result.required["logits"] = resolve(HEAD_LOGITS[head])
        elif head == "question_answering":
            result.required.update(start_logits=resolve(("batch", "tokens")), end_logits=resolve(("batch", "tokens")))
        result.optional.update(cls_logits=resolve(("batch", "labels")), distillation_logits=resolve(("batch", "labels")))
        if "conv_dim" in facts:
            result.optional["extract_features"] = (batch, axes["tokens"], facts["conv_dim"])
        if head != "base" and "last_hidden_state" in facts.get("output_fields", ()):
            result.optional["last_hidden_state"] = stream
    fields = set(facts.get("output_fields") or ())
    if fields:  # never require a field the output class does not declare (DPR's encoders pool only)
        result.required = {n: s for n, s in result.required.items() if _field_of(n) in fields}
    if fields & set(COMPOSITE_STATES):
        result.leave_unchecked({"hidden_states"}, "hidden_states gathers several towers' states")
    result.unchecked = {f for f in fields if f not in NOT_JUDGED} - {_field_of(n) for n in result.shapes}
    if not fields:  # no declared output class: judge what has a rule, leave the rest unchecked
        result.unchecked = {"*"}
    return result


def _feature_map(spec, facts, pixel_shape, batch, result: Contract, with_layers: bool) -> None:
    """CNN back bones: (batch, channels, height / stride, width / stride) feature maps, pooled output."""
    channels = facts["stage_channels"]
    head = facts.get("head", "base")
    if channels is None:  # widths unknown: the ranks of the maps and of the pooled output are still known
        if head == "base":
            result.required["last_hidden_state"] = (batch, None, None, None)
            result.optional["pooler_output"] = [(batch, None), (batch, None, 1, 1)]
        if head in HEAD_LOGITS:
            result.required["logits"] = (batch, facts.get("num_labels") or None)
        # hidden_states stay unchecked: how many maps, and how wide, the config does not say
        result.notes.append("feature maps: no per-stage widths in the config; ranks checked only")
        return
    stride = facts.get("stride")
    height, width = pixel_shape[-2:]
    if stride and height % stride == 0 and width % stride == 0:
        spatial = (height // stride, width // stride)
    else:
        spatial = (None, None)
        result.notes.append(f"feature-map size not checked: {facts.get('stride_rule')}")
    final = (batch, channels[-1], *spatial)
    if head == "base":
        result.required["last_hidden_state"] = final
        # pooled over the spatial axes; some CNNs keep them as 1x1 (ResNet), others drop them (ConvNeXt)
        result.optional["pooler_output"] = [(batch, channels[-1]), (batch, channels[-1], 1, 1)]
    if head in HEAD_LOGITS:
        result.required["logits"] = (batch, facts.get("num_labels") or None)
    if with_layers:
        # one map per stage, after the stem's map (ConvNeXt, ResNet) or without it (PoolFormer): map i
        # is stage i's or stage i+1's; the last stage's map is the final one either way
        count = facts["num_layers"]
        for i in range(count):
            result.required[f"hidden_states.{i}"] = [(batch, c, None, None) for c in
                                                     dict.fromkeys(([channels[i - 1]] if i else [None]) + [channels[i]])]
        result.optional[f"hidden_states.{count}"] = final


def _dual_encoder(spec, input_shapes, result: Contract, with_layers: bool) -> None:
    """Text and image towers with pairwise logits (CLIP-style); each tower pools to its projection."""
    facts = spec.extra.get("contract") or {}
    text, pixels = input_shapes["input_ids"], input_shapes["pixel_values"]
    # no projection_dim (SigLIP): the towers' pooled states are the embeddings, hidden_size wide
    bt, bi, proj = text[0], pixels[0], spec.extra["projection_dim"] or spec.hidden_size
    layers = spec.num_layers
    import transformers

    from zoo.compat import towers_pool_to_projection

    # the towers' pooler_output is their projection from transformers 5.6.0 on, the pooled state before
    projected = not spec.model_class or towers_pool_to_projection(getattr(transformers, spec.model_class))
    towers = (("text_model_output.", bt, text[1], spec.hidden_size, layers),
              ("vision_model_output.", bi, _vision_tokens(spec, facts, pixels), spec.extra["vision_hidden_size"],
               spec.extra.get("vision_layers", layers)))
    for prefix, batch, length, width, layers in towers:
        result.required[f"{prefix}last_hidden_state"] = (batch, length, width)
        result.required[f"{prefix}pooler_output"] = (batch, proj if projected else width)
        if with_layers:
            result.required.update({f"{prefix}hidden_states.{i}": (batch, length, width) for i in range(layers + 1)})
    result.required.update(text_embeds=(bt, proj), image_embeds=(bi, proj),
                           logits_per_image=(bi, bt), logits_per_text=(bt, bi))
    fields = set(facts.get("output_fields") or ())
    result.unchecked = {f for f in fields if f not in NOT_JUDGED} - {_field_of(n) for n in result.shapes}
