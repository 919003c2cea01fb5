"""`Subject`: a model under test plus its calling convention.

Properties never branch on model type; they ask the subject. The subject knows which inputs the
model takes, which outputs exist, how big each output must be (the shape contract), and how to
rebuild itself around another model object (reloaded, converted, or deliberately broken).
"""

from __future__ import annotations

import copy
import inspect
import weakref
from dataclasses import dataclass, field, replace
from typing import Any, Mapping

import numpy as np
import torch

from zoo.fp32 import cast_as_loaded, declared_fp32
from zoo.spec import ModelSpec

# Outputs that are not numerical results of the forward pass.
_SKIPPED_OUTPUTS = {"past_key_values", "cache", "loss"}
# Outputs indexed by (text item, image item) or (image item, text item): both axes are batch axes.
_PAIRWISE_OUTPUTS = {"logits_per_text", "logits_per_image"}
# Per-token outputs with no feature axis (question answering); other 2-D outputs are pooled.
_TOKEN_OUTPUTS_2D = {"start_logits", "end_logits"}
_DECODER_INPUTS = ("decoder_input_ids", "decoder_inputs_embeds")
# Inputs holding media that a model may embed as tokens of its stream.
_MEDIA_INPUTS = ("pixel_values", "input_features", "input_values", "pixel_values_videos")
# Per model object: the media tokens its stream holds beside the text, and whether first (Subject.media_stream).
_MEDIA_STREAM: "weakref.WeakKeyDictionary[torch.nn.Module, tuple[int, bool]]" = weakref.WeakKeyDictionary()
_BATCHED_INPUTS = ("input_ids", "attention_mask", "inputs_embeds", "pixel_values", "input_values", "input_features")


def nested_list(name: str) -> bool:
    """Whether a flattened output name is an element of a list inside a sub-output
    (image_outputs.pooler_output.2, vision_model_output.hidden_states.0; not hidden_states.0)."""
    parts = name.split(".")
    return len(parts) >= 3 and any(part.isdigit() for part in parts[2:])


def follows_batch(alone: torch.Tensor | None) -> bool:
    """Whether an output of a batch of one (None: not returned there) has the batch as its leading axis."""
    return alone is not None and alone.dim() > 0 and alone.shape[0] == 1


def input_rows(inputs: Mapping[str, Any]) -> int | None:
    """The batch size of model inputs (None when no batched input is there)."""
    return next((int(np.shape(inputs[key])[0]) for key in _BATCHED_INPUTS if key in inputs), None)


def flatten_outputs(output: Any, prefix: str = "") -> dict[str, torch.Tensor]:
    """A model output as a flat `{name: tensor}` dict: tuples become `name.i`, nested outputs `a.b`."""
    flat: dict[str, torch.Tensor] = {}
    items = output.items() if isinstance(output, Mapping) else enumerate(output)
    for key, value in items:
        name = f"{prefix}{key}"
        if key in _SKIPPED_OUTPUTS or value is None:
            continue
        if isinstance(value, torch.Tensor):
            flat[name] = value
        elif isinstance(value, (tuple, list, Mapping)):
            flat.update(flatten_outputs(value, prefix=name + "."))
    return flat


def to_tensors(inputs: Mapping[str, Any]) -> dict[str, torch.Tensor]:
    """Strategy draws (numpy arrays) as tensors the model owns: copies, so the draw stays intact."""
    out = {}
    for key, value in inputs.items():
        if isinstance(value, np.ndarray):
            out[key] = torch.from_numpy(np.ascontiguousarray(value).copy())
        elif isinstance(value, torch.Tensor):
            out[key] = value
        else:
            out[key] = torch.as_tensor(value)
    return out


def positions_from_mask(attention_mask: torch.Tensor) -> torch.Tensor:
    """Position ids that count only real tokens, as `generate` does for left-padded batches."""
    positions = attention_mask.long().cumsum(-1) - 1
    return positions.clamp(min=0)


def accepted_arguments(model: torch.nn.Module) -> frozenset[str]:
    """The keyword arguments `model.forward` takes: those it names, and where it hands its **kwargs on
    to its base model (GraniteMoeForCausalLM: `self.model(..., **kwargs)`) the `use_cache` that base
    model names, as a plain forward would otherwise build a cache (and masking_utils, seeing one, stop
    reading packed items off position_ids). Not where the head's forward sets use_cache itself
    (ReformerForMaskedLM: `self.reformer(..., use_cache=False, **kwargs)`): a second one would collide."""
    params = inspect.signature(model.forward).parameters
    accepts = set(params)
    base = getattr(model, "base_model", model)
    if (base is not model and any(p.kind is p.VAR_KEYWORD for p in params.values())
            and "use_cache" not in _source(type(model).forward)):
        accepts |= {"use_cache"} & set(inspect.signature(base.forward).parameters)
    return frozenset(accepts)


def _source(function) -> str:
    try:
        return inspect.getsource(function)
    except (OSError, TypeError):
        return "use_cache"  # unreadable: assume it may set use_cache itself


@dataclass
class Subject:
    """A model in eval mode, its spec and the processor a user would use with it."""

    spec: ModelSpec
    model: torch.nn.Module
    processor: Any = None
    _accepts: frozenset[str] = field(default=frozenset(), repr=False)

    def __post_init__(self):
        self.model.eval()
        self._accepts = accepted_arguments(self.model)

    def __repr__(self) -> str:  # Hypothesis prints arguments of failing examples: keep it short
        return f"Subject({self.spec.name}, {type(self.model).__name__}, {self.spec.source})"

    def _repr_pretty_(self, printer, cycle) -> None:  # Hypothesis' pretty printer ignores __repr__ of dataclasses
        printer.text(repr(self))

    @property
    def name(self) -> str:
        return self.spec.name

    def with_model(self, model: torch.nn.Module, **spec_changes) -> "Subject":
        """The same calling convention around another model (reloaded, converted, defective)."""
        spec = replace(self.spec, **spec_changes) if spec_changes else self.spec
        return Subject(spec, model, self.processor)

    def converted(self, *, dtype: torch.dtype | None = None, device: str | torch.device | None = None) -> "Subject":
        """A copy of this subject with its model cast to `dtype` and/or moved to `device`.

        The session's subject is never moved or cast in place: other tests share it. A cast keeps in
        fp32 what `from_pretrained(dtype=...)` keeps there (`zoo.fp32`), so the copy is the model a user
        gets in that dtype.
        """
        model = copy.deepcopy(self.model).to(device=device, dtype=dtype)
        if dtype is not None:
            cast_as_loaded(model, self.model, dtype)
        return self.with_model(model)

    @property
    def device(self) -> torch.device:
        return next(self.model.parameters()).device

    @property
    def dtype(self) -> torch.dtype:
        """The dtype most of the model's floating weights hold (its compute dtype): a half-precision load
        keeps some modules in fp32 (`_keep_in_fp32_modules`: embeddings, norms, MoE routers), which may
        come first, or outweigh the rest in a tiny model (a speech LM's whole audio tower), so the
        declared fp32-kept ones count only where nothing else is floating."""
        counts: dict[torch.dtype, int] = {}
        kept: dict[torch.dtype, int] = {}
        for name, parameter in self.model.named_parameters():
            if parameter.is_floating_point():
                tally = kept if declared_fp32(self.model, name) else counts
                tally[parameter.dtype] = tally.get(parameter.dtype, 0) + parameter.numel()
        counts = counts or kept
        return max(counts, key=counts.get) if counts else next(self.model.parameters()).dtype

    # -- calling convention -------------------------------------------------------------------
    def model_kwargs(self, inputs: Mapping[str, Any], *, hidden_states: bool = False, **extra) -> dict:
        """Keyword arguments for `model(**kwargs)` from drawn inputs, on the model's device and dtype."""
        device, dtype = self.device, self.dtype
        kwargs = {
            key: value.to(device=device, dtype=dtype if value.is_floating_point() else None)
            for key, value in to_tensors(inputs).items()
        }
        if (
            self.spec.has("causal")
            and "attention_mask" in kwargs
            and "position_ids" not in kwargs
            and "position_ids" in self._accepts
        ):
            # GPT-2 does not derive positions from the mask; left padding needs them explicitly.
            kwargs["position_ids"] = positions_from_mask(kwargs["attention_mask"])
        if "use_cache" in self._accepts:
            kwargs.setdefault("use_cache", False)
        if hidden_states and self.spec.has("hidden_states"):
            kwargs["output_hidden_states"] = True
        kwargs["return_dict"] = True
        kwargs.update(extra)
        return kwargs

    def raw_forward(self, inputs: Mapping[str, Any], **kwargs):
        with torch.no_grad():
            return self.model(**self.model_kwargs(inputs, **kwargs))

    def forward(self, inputs: Mapping[str, Any], **kwargs) -> dict[str, torch.Tensor]:
        """Run the model without gradients and return its outputs as a flat `{name: tensor}` dict.

        An output field named after a tensor argument of the call hands that argument back (Qwen2-Audio
        returns the attention_mask it consumed, padding and all): an input, not a result of the forward,
        so it is left out like the cache."""
        call = self.model_kwargs(inputs, **kwargs)
        with torch.no_grad():
            outputs = flatten_outputs(self.model(**call))
        echoed = {key for key, value in call.items() if isinstance(value, torch.Tensor)}
        return {name: tensor for name, tensor in outputs.items() if name.split(".", 1)[0] not in echoed}

    def real_token_masks(self, outputs: Mapping[str, torch.Tensor], inputs: Mapping[str, Any]) -> dict:
        """For each output indexed by (batch, input token), a bool mask of its real (unpadded) tokens.

        Pass it as `masks=` to `devices.tolerance.assert_outputs_close` to compare real positions only.
        Decoder-side outputs of encoder-decoder models and image-side outputs have no padding.
        """
        if "attention_mask" not in inputs:
            return {}
        mask = to_tensors({"m": inputs["attention_mask"]})["m"].bool()
        if "input_values" in inputs:  # a sample-level mask: real frames are those of the real samples
            mask = self.frame_mask(mask)
        masks = {}
        media = None  # (tokens, first): asked of the model only when an output is longer than the text
        for name, tensor in outputs.items():
            # everything but the encoder_* outputs of an encoder-decoder follows decoder_input_ids (unpadded);
            # without them the model shifts input_ids into its decoder (BART's sequence classifier), padding too
            decoder_side = self.spec.has("encoder_decoder") and not name.startswith("encoder_") and any(
                key in inputs for key in _DECODER_INPUTS)
            image_side = name.startswith("vision_model_output") or name in ("image_embeds", "logits_per_image")
            # A pooled (batch, width) output can match the mask's shape by chance: only per-token outputs count.
            per_token = tensor.dim() >= 3 or name.rsplit(".", 1)[-1] in _TOKEN_OUTPUTS_2D
            if decoder_side or image_side or not per_token or tensor.shape[0] != mask.shape[0]:
                continue
            extra = tensor.shape[1] - mask.shape[1]
            if extra > 0:  # media tokens beside the text (GIT's image): real in every row, never padding
                media = self.media_stream(inputs) if media is None else media
                if extra != media[0]:
                    continue  # not the text's stream (a fixed-size image output): no padding in it
                beside = torch.ones(mask.shape[0], extra, dtype=torch.bool)
                masks[name] = torch.cat([beside, mask] if media[1] else [mask, beside], dim=1).to(tensor.device)
            elif extra == 0:
                masks[name] = mask.to(tensor.device)
        return masks

    def media_stream(self, inputs: Mapping[str, Any]) -> tuple[int, bool]:
        """`(tokens, first)`: how many media tokens the model's token stream holds beside the text of
        these inputs (0: none, or the media fill placeholder ids in the text), and whether they come
        before the text (GIT) or after it.

        Asked of the model once per model object, on the first inputs that hold media and no placeholder
        runs: the embedding output (`hidden_states.0`) is longer than the text by the media tokens, and
        changing the first text token of row 0 to another id moves it at that token's stream position only. A model without hidden states is not asked: its outputs stay unmasked."""
        media = any(key in inputs for key in _MEDIA_INPUTS) and "input_ids" in inputs
        if not media or self.spec.extra.get("image_tokens") or not self.spec.has("hidden_states"):
            return 0, False
        if self.model not in _MEDIA_STREAM:
            _MEDIA_STREAM[self.model] = self._probe_media_stream(inputs)
        return _MEDIA_STREAM[self.model]

    def _probe_media_stream(self, inputs: Mapping[str, Any]) -> tuple[int, bool]:
        ids = np.array(inputs["input_ids"])
        stream = self.forward(inputs, hidden_states=True).get("hidden_states.0")
        tokens = stream.shape[1] - ids.shape[1] if stream is not None and stream.dim() >= 3 else 0
        if tokens <= 0:
            return 0, False
        # the first text token to another id (not a media placeholder: the model counts those): any
        # other id moves the embedding output there, padding or special ids included
        placeholders = {self.spec.extra.get("image_token_id"), *self.spec.extra.get("reserved_ids", ())}
        others = [i for i in range(self.spec.vocab_size) if i not in placeholders and i != ids[0, 0]]
        if not others:
            return 0, False  # nothing to change to: the stream's layout stays unknown, its outputs unmasked
        changed = ids.copy()
        changed[0, 0] = others[0]
        after = self.forward({**inputs, "input_ids": changed}, hidden_states=True)["hidden_states.0"]
        moved = torch.nonzero((stream[0] != after[0]).flatten(1).any(-1)).flatten()
        if not len(moved):
            return 0, False
        return tokens, int(moved[0]) > 0  # at 0: the text comes first

    def frame_mask(self, sample_mask: torch.Tensor) -> torch.Tensor:
        """Which output frames of a right-padded waveform batch come from real samples only."""
        from zoo.contract import conv_frames

        layers = self.spec.extra.get("contract", {}).get("conv_layers", [])
        total = conv_frames(sample_mask.shape[1], layers)
        real = [conv_frames(int(n), layers) for n in sample_mask.sum(-1)]
        return torch.arange(total)[None, :] < torch.tensor(real)[:, None]

    def select_rows(self, outputs: Mapping[str, torch.Tensor], rows, batch: int | None = None,
                    alone: Mapping[str, torch.Tensor] | None = None) -> dict[str, torch.Tensor]:
        """The outputs of batch rows `rows`, in that order (pairwise outputs such as CLIP's
        `logits_per_text` are indexed on both batch axes). Given the `batch` size, outputs whose leading
        axis is not the batch are left out: they cannot be split by row (per-image lists such as
        LLaVA's image_outputs.pooler_output.i, each (image tokens, hidden)), and so are lists nested in
        a sub-output (a tower's output inside the model's): per image or per layer, the names cannot
        tell, and four merged tokens per image in a batch of four would pass for a batch axis.

        `alone` (the outputs of one of the rows run as a batch of one) rules out the leading axes that
        match the batch size by chance: a per-layer stack such as RF-DETR's intermediate_hidden_states,
        (decoder layers, batch, queries, hidden), keeps its layer count there instead of 1."""
        index = torch.as_tensor(list(rows), dtype=torch.long)
        picked = {}
        for name, tensor in outputs.items():
            if batch is not None and (tensor.dim() == 0 or tensor.shape[0] != batch or nested_list(name)):
                continue
            if alone is not None and not follows_batch(alone.get(name)):
                continue
            tensor = tensor[index.to(tensor.device)]
            if name.rsplit(".", 1)[-1] in _PAIRWISE_OUTPUTS:
                tensor = tensor[:, index.to(tensor.device)]
            picked[name] = tensor
        return picked

    def unsplit_outputs(self, outputs: Mapping[str, torch.Tensor], inputs: Mapping[str, Any]) -> set[str]:
        """The outputs of a batch that are not indexed by its rows, so `row_outputs` leaves them out
        (Pixtral-style towers pack every image of the batch into one (1, patches, hidden) sequence). A row
        compared with another forward leaves them out on the other side too: a batch of one passes any
        leading axis of 1 for its row."""
        return set(outputs) - set(self.select_rows(outputs, [0], batch=input_rows(inputs)))

    def row_outputs(self, outputs: Mapping[str, torch.Tensor], inputs: Mapping[str, Any], row: int) -> dict:
        """Row `row` of batched outputs, per-token outputs cut to that row's real tokens.

        The result has the shapes the row's item gives when run alone without padding.
        """
        masks = self.real_token_masks(outputs, inputs)
        picked = self.select_rows(outputs, [row], batch=input_rows(inputs))
        for name, mask in masks.items():
            if name in picked:
                picked[name] = picked[name][:, mask[row]]
        return picked

    def with_attention(self, implementation: str) -> "Subject":
        """A copy of this subject whose model runs `implementation` ("eager", "sdpa", or any name
        registered in transformers' `AttentionInterface`)."""
        model = copy.deepcopy(self.model)
        model.set_attn_implementation(implementation)
        return self.with_model(model)

    # -- shape contract -------------------------------------------------------------------------
    def contract(self, inputs: Mapping[str, Any], *, hidden_states: bool = False):
        """The shape contract (`zoo.contract.Contract`) for these inputs, from the class and config alone."""
        from zoo.contract import contract

        sizes = {k: tuple(np.shape(v)) for k, v in inputs.items()}
        return contract(self.spec, sizes, hidden_states=hidden_states)

    def expected_shapes(self, inputs: Mapping[str, Any], *, hidden_states: bool = False) -> dict[str, Any]:
        """The shape each output must have (None axes: any size), derived from the input shapes and the config."""
        return self.contract(inputs, hidden_states=hidden_states).shapes


def save_and_reload(subject: Subject, directory) -> tuple[Subject, dict]:
    """`save_pretrained` (safetensors) into `directory`, then `from_pretrained` with the same class.

    Returns the reloaded subject and transformers' loading info (missing, unexpected and
    mismatched keys): transformers 5 renames keys on save, so the files are judged by whether
    loading them finds every weight, not by comparing key names with the live state dict.
    """
    subject.model.save_pretrained(directory)
    reloaded, info = type(subject.model).from_pretrained(
        directory, local_files_only=True, use_safetensors=True, output_loading_info=True
    )
    return subject.with_model(reloaded.eval()), info


def shared_parameters(model: torch.nn.Module) -> list[tuple[str, ...]]:
    """Groups of parameter names that share one storage (tied weights), each group sorted."""
    by_storage: dict[int, list[str]] = {}
    for name, param in model.named_parameters(remove_duplicate=False):
        by_storage.setdefault(param.data_ptr(), []).append(name)
    return sorted(tuple(sorted(names)) for names in by_storage.values() if len(names) > 1)
