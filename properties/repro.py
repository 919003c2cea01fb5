#!/usr/bin/env python
"""Reproduce one hfprops failure outside the suite: needs torch, transformers and safetensors only
(plus pillow for an image pipeline failure, as transformers' image processors do).

This file is copied into every failure artifact folder beside `meta.json` and
`inputs.safetensors`. It rebuilds the model (a zoo model from its config and seed, or the
checkpoint directory it was loaded from), loads the shrunk inputs, reruns the property's
comparison and prints the difference in the suite's own words.

    python repro.py [ARTIFACT_DIR]      # default: the folder holding this script

Exit status: 1 the failure reproduces, 0 it does not (so `git bisect run` / release bisection
works), 2 it cannot be run here (missing device, unknown replay kind).

It deliberately imports nothing from hfprops: a few helpers (flattening outputs, the difference
report) mirror `zoo/subject.py` and `devices/tolerance.py` so that the numbers printed here are
the numbers the suite printed.
"""

from __future__ import annotations

import json
import re
import sys
import tempfile
from pathlib import Path

import torch
import transformers
from safetensors.torch import load_file

SKIPPED_OUTPUTS = {"past_key_values", "cache", "loss"}  # as zoo/subject.py
CANNOT_RUN = 2


class CannotRun(Exception):
    """The failure cannot be replayed on this machine (a device or replay kind is missing)."""


# -- compatibility across transformers releases ---------------------------------------------
# properties/artifacts.py copies zoo/compat.py below these fallbacks when it writes the artifact (one
# place for the differences between 5.x releases; its definitions win); the fallbacks keep the
# template runnable on its own.


def accepts(model, name: str) -> bool:
    import inspect

    return name in inspect.signature(model.forward).parameters


def cache_argument(model) -> str:
    """The forward's name for the KV cache: `cache` from the late 5.2x releases, `past_key_values` before."""
    return "cache" if accepts(model, "cache") else "past_key_values"


def returned_cache(output):
    for name in ("cache", "past_key_values"):
        value = output.get(name) if hasattr(output, "get") else getattr(output, name, None)
        if value is not None:
            return value
    return None


def enable_activation_checkpointing(model, checkpoint_kwargs=None) -> None:
    """Activation checkpointing under the release's name (`gradient_checkpointing_enable` before the rename)."""
    enable = getattr(model, "activation_checkpointing_enable", None) or model.gradient_checkpointing_enable
    enable(checkpoint_kwargs)


# -- zoo/compat.py (copied in)


# -- the model and its inputs -------------------------------------------------------------------
def load_model(meta: dict, *, dtype: str | None = None, device: str | None = None,
               attn_implementation: str | None = None) -> torch.nn.Module:
    """The model under test: a zoo or registry model rebuilt from config + seed, or the checkpoint it came from."""
    spec = meta["model"]
    model_class = getattr(transformers, spec["model_class"])
    if spec["source"] in ("zoo", "registry"):
        config = getattr(transformers, spec["config_class"]).from_dict(spec["config"])
        torch.manual_seed(spec["seed"])  # zoo weights are the seeded random init (zoo/build.py)
        model = model_class(config)
        stored = Path(meta.get("folder", "."), "weights.safetensors")
        if stored.is_file():  # the exact weights: another release may initialise differently from the same seed
            missing, unexpected = model.load_state_dict(load_file(str(stored)), strict=False)
            if [k for k in missing if k in dict(model.named_parameters())]:
                raise CannotRun(f"the stored weights lack parameters of this release's {spec['model_class']}: "
                                f"{missing[:5]}")
    else:
        model = model_class.from_pretrained(spec["path"], local_files_only=True, trust_remote_code=False)
    device = device or meta["device"]
    if device != "cpu" and not _device_available(device):
        raise CannotRun(f"this failure ran on {device}, which this machine does not have")
    if attn_implementation:
        model.set_attn_implementation(attn_implementation)
    return model.eval().to(device=device, dtype=getattr(torch, dtype or meta["dtype"]))


def _device_available(device: str) -> bool:
    kind = torch.device(device).type
    backend = getattr(torch, kind, None)
    return bool(backend is not None and hasattr(backend, "is_available") and backend.is_available())


def input_set(tensors: dict, name: str = "") -> dict[str, torch.Tensor]:
    """The stored tensors of one input set: the drawn inputs (`name=""`) or a detail such as `other_inputs`."""
    if not name:
        return {k: v for k, v in tensors.items() if "." not in k}
    prefix = name + "."
    return {k[len(prefix):]: v for k, v in tensors.items() if k.startswith(prefix) and "." not in k[len(prefix):]}


def flatten_outputs(output, prefix: str = "") -> dict[str, torch.Tensor]:
    """A model output as `{name: tensor}`: tuples become `name.i`, nested outputs `a.b` (as the suite)."""
    flat = {}
    items = output.items() if hasattr(output, "items") else enumerate(output)
    for key, value in items:
        name = f"{prefix}{key}"
        if key in SKIPPED_OUTPUTS or value is None:
            continue
        if isinstance(value, torch.Tensor):
            flat[name] = value
        elif isinstance(value, (tuple, list, dict)) or hasattr(value, "items"):
            flat.update(flatten_outputs(value, prefix=name + "."))
    return flat


def compute_dtype(model) -> torch.dtype:
    """The dtype most floating weights hold (as Subject.dtype: fp32-kept modules may come first or
    outweigh the rest, so the declared `_keep_in_fp32_modules(_strict)` ones count only if nothing else
    is floating)."""
    entries = {entry for part in model.modules() for attr in ("_keep_in_fp32_modules", "_keep_in_fp32_modules_strict")
               for entry in (getattr(part, attr, None) or ())}
    counts: dict = {}
    kept: dict = {}
    for name, parameter in model.named_parameters():
        if parameter.is_floating_point():
            tally = kept if any(f".{entry}." in f".{name}." for entry in entries) else counts
            tally[parameter.dtype] = tally.get(parameter.dtype, 0) + parameter.numel()
    counts = counts or kept
    return max(counts, key=counts.get) if counts else next(model.parameters()).dtype


def model_kwargs(model, inputs: dict, call: dict, meta: dict | None = None) -> dict:
    """`model(**kwargs)` arguments as the suite builds them (Subject.model_kwargs): fresh copies on the
    model's device and dtype, position ids from the mask for causal models, the stored call flags."""
    device, dtype = next(model.parameters()).device, compute_dtype(model)
    kwargs = {k: v.to(device=device, dtype=dtype if v.is_floating_point() else None, copy=True)
              for k, v in inputs.items()}
    causal = meta is not None and "causal" in meta["spec"]["capabilities"]
    if causal and "attention_mask" in kwargs and "position_ids" not in kwargs and accepts(model, "position_ids"):
        kwargs["position_ids"] = (kwargs["attention_mask"].long().cumsum(-1) - 1).clamp(min=0)
    kwargs.update(call)
    return kwargs


def forward(model: torch.nn.Module, inputs: dict[str, torch.Tensor], call: dict,
            meta: dict | None = None) -> dict[str, torch.Tensor]:
    """One forward without gradients, with the suite's calling convention (stored in meta.json)."""
    kwargs = model_kwargs(model, inputs, call, meta)
    with torch.no_grad():
        outputs = flatten_outputs(model(**kwargs))
    # an output field named after a tensor argument hands that input back (as Subject.forward): left out
    echoed = {key for key, value in kwargs.items() if isinstance(value, torch.Tensor)}
    return {name: tensor for name, tensor in outputs.items() if name.split(".", 1)[0] not in echoed}


# -- comparing (mirrors devices/tolerance.py) ----------------------------------------------------
def difference(actual: torch.Tensor, expected: torch.Tensor, rtol: float, atol: float) -> str:
    a = actual.detach().to("cpu", torch.float64)
    e = expected.detach().to("cpu", torch.float64)
    if a.numel() == 0:
        return f"max abs diff 0 at (), max rel diff 0, 0.0% of elements outside rtol={rtol:g}, atol={atol:g}"
    abs_diff = (a - e).abs().nan_to_num(nan=float("inf"), posinf=float("inf"))
    rel_diff = torch.where(abs_diff == 0, 0.0, abs_diff / e.abs()).nan_to_num(nan=float("inf"), posinf=float("inf"))
    where = tuple(int(i) for i in torch.unravel_index(torch.tensor(int(abs_diff.argmax())), a.shape))
    outside = float((~torch.isclose(a, e, rtol=rtol, atol=atol)).double().mean())
    return (
        f"max abs diff {float(abs_diff.max()):.3g} at {where}, max rel diff {float(rel_diff.max()):.3g}, "
        f"{outside:.1%} of elements outside rtol={rtol:g}, atol={atol:g}"
    )


def _head(meta: dict, what: str | None = None) -> str:
    return f"[{meta['model']['name']}] {meta['property']}" + (f" ({what})" if what else "")


def compare(actual: dict, expected: dict, tol: dict, meta: dict, masks: dict | None = None,
            what: str | None = None) -> list[str]:
    """The first output of `expected` that `actual` misses or does not match within `tol` (suite wording)."""
    head = _head(meta, what)
    expected = {name: t for name, t in expected.items() if t is not None}  # None: a gradient nobody got
    missing = sorted(name for name in expected if actual.get(name) is None)
    if missing:
        return [f"{head}: {len(missing)} outputs missing on one side: {missing[:8]}"]
    for name, ref in expected.items():  # the first mismatch, as assert_outputs_close reports it
        got = actual[name]
        if masks and name in masks:
            got, ref = got[masks[name]], ref[masks[name]]
        if got.shape != ref.shape:
            return [f"{head}: output {name!r} has shape {tuple(got.shape)}, expected {tuple(ref.shape)}"]
        if got.is_floating_point() and ref.is_floating_point():  # a lower precision is judged cast up
            wide = torch.promote_types(got.dtype, ref.dtype)
            got, ref = got.to(wide), ref.to(wide)
        rtol, atol = tol["rtol"], tol["atol"]
        if tol.get("scale_atol") and ref.numel():
            atol *= max(1.0, float(ref.detach().abs().max().double()))
        try:
            torch.testing.assert_close(got, ref, rtol=rtol, atol=atol, equal_nan=False, check_device=False,
                                       check_dtype=False)
        except AssertionError:
            return [f"{head}: output {name!r} differs beyond {tol['text']}\n{difference(got, ref, rtol, atol)}"]
    return []


def nonfinite(outputs: dict) -> list[str]:
    """`name: n of N non-finite (NaN a, Inf b), first at (...)` for each floating output with NaN/Inf."""
    problems = []
    for name, tensor in outputs.items():
        if not tensor.is_floating_point():
            continue
        bad = ~torch.isfinite(tensor)
        if bad.any():
            first = tuple(int(i) for i in bad.nonzero()[0])
            problems.append(
                f"{name}: {int(bad.sum())} of {tensor.numel()} non-finite "
                f"(NaN {int(tensor.isnan().sum())}, Inf {int(tensor.isinf().sum())}), first at {first}"
            )
    return problems


PAIRWISE_OUTPUTS = {"logits_per_text", "logits_per_image"}  # as zoo/subject.py
TOKEN_OUTPUTS_2D = {"start_logits", "end_logits"}


def _conv_frames(samples: int, layers) -> int:
    for kernel, stride in layers:  # as zoo.contract.conv_frames
        samples = (samples - kernel) // stride + 1
    return samples


def real_token_masks(outputs: dict, inputs: dict, meta: dict) -> dict:
    """Bool masks of the unpadded token positions per output (as Subject.real_token_masks)."""
    if "attention_mask" not in inputs:
        return {}
    mask = inputs["attention_mask"].bool()
    if "input_values" in inputs:  # a sample-level mask: real frames are those of the real samples
        layers = meta["spec"].get("extra", {}).get("contract", {}).get("conv_layers", [])
        total = _conv_frames(mask.shape[1], layers)
        real = [_conv_frames(int(n), layers) for n in mask.sum(-1)]
        mask = torch.arange(total)[None, :] < torch.tensor(real)[:, None]
    encoder_decoder = "encoder_decoder" in meta["spec"]["capabilities"]
    masks = {}
    for name, tensor in outputs.items():
        decoder_side = encoder_decoder and not name.startswith("encoder_") and (  # as Subject.real_token_masks
            "decoder_input_ids" in inputs or "decoder_inputs_embeds" in inputs)
        image_side = name.startswith("vision_model_output") or name in ("image_embeds", "logits_per_image")
        per_token = tensor.dim() >= 3 or name.rsplit(".", 1)[-1] in TOKEN_OUTPUTS_2D
        if decoder_side or image_side or not per_token or tensor.shape[0] != mask.shape[0]:
            continue
        extra = tensor.shape[1] - mask.shape[1]
        media, first = meta.get("media_stream") or (0, False)  # media tokens beside the text, as the suite learned
        if extra > 0 and extra == media:
            beside = torch.ones(mask.shape[0], extra, dtype=torch.bool)
            masks[name] = torch.cat([beside, mask] if first else [mask, beside], dim=1).to(tensor.device)
        elif extra == 0:
            masks[name] = mask.to(tensor.device)
    return masks


BATCHED_INPUTS = ("input_ids", "attention_mask", "inputs_embeds", "pixel_values", "input_values", "input_features")


def input_rows(inputs: dict) -> int | None:
    """The batch size of model inputs (as zoo.subject.input_rows)."""
    return next((int(inputs[key].shape[0]) for key in BATCHED_INPUTS if key in inputs), None)


def select_rows(outputs: dict, rows, batch: int | None = None, alone: dict | None = None) -> dict:
    """The outputs of batch rows `rows`, in that order (pairwise outputs on both axes; outputs whose
    leading axis is not the `batch` left out, and, given one row's outputs `alone`, those whose leading
    axis is not 1 there, such as a layer-first stack; as Subject.select_rows)."""
    index = torch.as_tensor(list(rows), dtype=torch.long)
    picked = {}
    for name, tensor in outputs.items():
        parts = name.split(".")  # lists nested in a sub-output are left out too (as zoo.subject.nested_list)
        if batch is not None and (tensor.dim() == 0 or tensor.shape[0] != batch
                                  or (len(parts) >= 3 and any(p.isdigit() for p in parts[2:]))):
            continue
        if alone is not None and (alone.get(name) is None or alone[name].dim() == 0 or alone[name].shape[0] != 1):
            continue
        tensor = tensor[index.to(tensor.device)]
        if name.rsplit(".", 1)[-1] in PAIRWISE_OUTPUTS:
            tensor = tensor[:, index.to(tensor.device)]
        picked[name] = tensor
    return picked


class RowOutputs(dict):
    """One row's outputs, and the names of the batch's outputs not indexed by its rows (`unsplit`)."""

    unsplit: frozenset = frozenset()


def row_outputs(outputs: dict, inputs: dict, row: int, meta: dict) -> dict:
    """Row `row` of batched outputs, per-token outputs cut to its real tokens (as Subject.row_outputs)."""
    masks = real_token_masks(outputs, inputs, meta)
    picked = RowOutputs(select_rows(outputs, [row], input_rows(inputs)))
    picked.unsplit = frozenset(set(outputs) - set(picked))  # as Subject.unsplit_outputs
    for name, mask in masks.items():
        if name in picked:
            picked[name] = picked[name][:, mask[row]]
    return picked


# -- running one side of a comparison ---------------------------------------------------------------
class _Settings:
    """Thread count, deterministic algorithms and no TF32 for one side (restored afterwards)."""

    def __init__(self, side: dict):
        self.threads, self.deterministic = side.get("threads"), bool(side.get("deterministic"))

    def __enter__(self):
        self.saved = (torch.get_num_threads(), torch.are_deterministic_algorithms_enabled(),
                      torch.backends.cuda.matmul.allow_tf32)
        if self.threads:
            torch.set_num_threads(int(self.threads))
        torch.use_deterministic_algorithms(self.deterministic or self.saved[1])
        torch.backends.cuda.matmul.allow_tf32 = False
        return self

    def __exit__(self, *exc):
        torch.set_num_threads(self.saved[0])
        torch.use_deterministic_algorithms(self.saved[1])
        torch.backends.cuda.matmul.allow_tf32 = self.saved[2]


def side_model(meta: dict, side: dict) -> torch.nn.Module:
    """The model one side runs: reloaded, converted, attention switched, quantized, chunked, compiled or in
    train mode as the side says."""
    # a load path starts from the plain fp32 checkpoint (save_pretrained of the fp32 model)
    model = load_model(meta, dtype="float32" if "reload" in side else side.get("dtype"), device=side.get("device"),
                       attn_implementation=side.get("attn_implementation"))
    if "reload" in side:  # save_pretrained, then from_pretrained with these arguments (a load path)
        options = dict(side["reload"])
        shard = options.pop("max_shard_size", None)
        with tempfile.TemporaryDirectory() as directory:
            model.save_pretrained(directory, **({"max_shard_size": shard} if shard else {}))
            options = {k: getattr(torch, v) if k == "dtype" and v != "auto" else v for k, v in options.items()}
            model = type(model).from_pretrained(directory, local_files_only=True, **options).eval()
    if side.get("chunk_size"):
        for module in model.modules():
            if hasattr(module, "chunk_size_feed_forward"):
                module.chunk_size_feed_forward = int(side["chunk_size"])
    if side.get("quantize"):
        import warnings

        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            model = torch.ao.quantization.quantize_dynamic(model, {torch.nn.Linear}, dtype=getattr(torch, side["quantize"]))
    if side.get("checkpointing"):
        enable_activation_checkpointing(model)
    if side.get("compile"):
        model = torch.compile(model, **side["compile"] if isinstance(side["compile"], dict) else {})
    if side.get("train") or side.get("run") in ("gradients", "train_outputs"):
        model.train()
    return model


def _labels(meta, inputs):
    """Labels for the model's own loss, padding ignored (as zoo.training.labels_for); None: generic loss."""
    caps = meta["spec"]["capabilities"]
    if meta["spec"].get("head") != "seq2seq_lm" and "causal" not in caps:
        return None
    if "encoder_decoder" in caps and "decoder_input_ids" in inputs:
        return inputs["decoder_input_ids"].clone()
    if "causal" in caps:
        labels = inputs["input_ids"].clone()
        if "attention_mask" in inputs:
            labels[inputs["attention_mask"] == 0] = -100
        return labels if (labels[:, 1:] != -100).any() else None
    return None


def _gradients(model, inputs, call, meta, seed):
    """(loss, {trainable parameter: grad or None}) after one backward with dropout seeded (as zoo.training)."""
    call = {k: v for k, v in call.items() if k != "output_hidden_states"}
    labels = _labels(meta, inputs)
    model.zero_grad(set_to_none=True)
    with torch.random.fork_rng():
        torch.manual_seed(seed)
        extra = {} if labels is None else {"labels": labels.to(next(model.parameters()).device)}
        output = model(**model_kwargs(model, inputs, {**call, **extra}, meta))
        if labels is not None:
            loss = output.loss
        else:
            loss = sum(t.float().pow(2).mean() for t in flatten_outputs(output).values() if t.is_floating_point())
        loss.backward()
    return loss.detach(), {name: p.grad for name, p in model.named_parameters() if p.requires_grad}


def _decoded_key(meta) -> str:
    return "decoder_input_ids" if "encoder_decoder" in meta["spec"]["capabilities"] else "input_ids"


def _encode_once(model, kwargs: dict):
    """An encoder-decoder's encoder output, computed once before decoding as `generate` does (as
    zoo.generation.encode_once); None without a separate encoder."""
    import inspect
    if not getattr(model.config, "is_encoder_decoder", False) or not hasattr(model, "get_encoder"):
        return None
    encoder = model.get_encoder()
    skip = ("decoder_", "cross_attn", "use_cache", "cache", "past_key_values")
    wanted = {k: v for k, v in kwargs.items() if not k.startswith(skip)}
    params = inspect.signature(encoder.forward).parameters
    if not any(p.kind is inspect.Parameter.VAR_KEYWORD for p in params.values()):
        wanted = {k: v for k, v in wanted.items() if k in params}
    with torch.no_grad():
        return encoder(**{**wanted, "return_dict": True})


def _cached_logits(model, inputs, call, meta, prefix_length: int) -> torch.Tensor:
    """The first `prefix_length` decoded tokens in one call, then one per call with the cache (as zoo.generation)."""
    key = _decoded_key(meta)
    sequence = inputs[key]
    causal_mask = inputs.get("attention_mask") if key == "input_ids" else None
    bounds = [0, prefix_length] + list(range(prefix_length + 1, sequence.shape[1] + 1))
    cache, pieces = None, []
    call = {k: v for k, v in call.items() if k not in ("output_hidden_states", "use_cache")}
    encoder_outputs = _encode_once(model, model_kwargs(model, inputs, call, meta)) if key != "input_ids" else None
    for start, stop in zip(bounds, bounds[1:]):
        step = dict(inputs, **{key: sequence[:, start:stop]})
        extra = {"use_cache": True, cache_argument(model): cache}
        if causal_mask is not None:
            step["attention_mask"] = causal_mask[:, :stop]
        if encoder_outputs is not None:
            step = {k: v for k, v in step.items() if k in (key, "attention_mask")}
            extra["encoder_outputs"] = encoder_outputs
        step.pop("position_ids", None)
        kwargs = model_kwargs(model, step, {**call, **extra}, meta)
        if "position_ids" in kwargs:
            kwargs["position_ids"] = kwargs["position_ids"][:, start:stop]
        with torch.no_grad():
            out = model(**kwargs)
        cache = returned_cache(out)
        if encoder_outputs is None and out.get("encoder_last_hidden_state") is not None:
            encoder_outputs = transformers.modeling_outputs.BaseModelOutput(
                last_hidden_state=out.encoder_last_hidden_state)
        pieces.append(out.logits)
    return torch.cat(pieces, dim=1)


def _greedy(model, inputs, call, meta, max_new_tokens: int, use_cache: bool, options: dict | None = None,
            seed: int | None = None) -> dict:
    """`generate` (greedy unless `options` say otherwise; `"assistant_model": "self"` is the model itself):
    new tokens per row (cut after the first EOS) and each step's logits (as zoo.generation)."""
    conditioning = {k: v for k, v in inputs.items() if k not in ("decoder_input_ids", "position_ids")}
    kwargs = model_kwargs(model, conditioning, {"use_cache": use_cache}, meta)
    kwargs.pop("position_ids", None)
    settings = dict(do_sample=False, num_beams=1, return_dict_in_generate=True, output_logits=True)
    settings.update({k: model if v == "self" else v for k, v in (options or {}).items()})
    with torch.no_grad(), torch.random.fork_rng():
        if seed is not None:
            torch.manual_seed(seed)
        out = model.generate(**kwargs, **settings, max_new_tokens=max_new_tokens)
    new = out.sequences[:, out.sequences.shape[1] - len(out.logits):]
    eos = model.generation_config.eos_token_id
    eos = set(eos if isinstance(eos, (list, tuple)) else [eos] if eos is not None else [])
    tokens = [row[: next((i + 1 for i, t in enumerate(row) if t in eos), len(row))] for row in new.tolist()]
    return {"tokens": tokens, "logits": torch.stack(out.logits, dim=1)}


def _mask_4d(inputs, causal: bool, dtype) -> torch.Tensor:
    """The additive 4-D mask equivalent to the 2-D one (as properties/test_batching.mask_4d)."""
    keys = inputs["attention_mask"].bool()
    rows, length = keys.shape
    allowed = keys[:, None, None, :].expand(rows, 1, length, length)
    if causal:
        allowed = allowed & torch.ones(length, length, dtype=torch.bool).tril()
    return torch.zeros(allowed.shape, dtype=dtype).masked_fill(~allowed, torch.finfo(dtype).min)


def _first_row_alone(model, inputs: dict, call: dict, meta: dict, run: str) -> dict | None:
    """The first row's forward outputs as a batch of one (which leading axes follow the batch), or None
    where it cannot be cut from the stored batch (media stored per image); the rows are then picked by
    size alone."""
    rows = input_rows(inputs)
    if run != "forward" or not rows:
        return None
    first = {k: v[:1] if torch.is_tensor(v) and v.dim() and v.shape[0] == rows else v for k, v in inputs.items()}
    try:
        return forward(model, first, call, meta)
    except Exception:  # noqa: BLE001 - a per-image input whose count is not the row count
        return None


def run_side(meta: dict, tensors: dict, side: dict) -> tuple[dict, dict]:
    """One side of a comparison: `(outputs, inputs)`.

    A SIDE is a dict; every key is optional:
      inputs       stored input set ("" the drawn inputs, "items.2", "other_inputs", ...)
      dtype, device, attn_implementation, quantize ("qint8"), threads, deterministic
      run          "forward" (default), "full_logits", "cached_logits" (+ prefix_length),
                   "greedy" (+ max_new_tokens, use_cache), "gradients" / "train_outputs" (+ seed, checkpointing)
      call         extra forward keyword arguments (JSON values); mask_4d: "causal" | "bidirectional"
      row          keep one batch row, per-token outputs cut to its real tokens (row_mask: another 0/1 mask)
      rows         keep these batch rows, in this order
    """
    model = side_model(meta, side)
    inputs = input_set(tensors, side.get("inputs", ""))
    call = {**meta["call"], **side.get("call", {})}
    if side.get("mask_4d"):
        call["attention_mask"] = _mask_4d(inputs, side["mask_4d"] == "causal", compute_dtype(model))
    run = side.get("run", "forward")
    with _Settings(side):
        if run == "forward" and side.get("embeds"):  # ids passed as their embeddings (the call-form property)
            kwargs = model_kwargs(model, inputs, call, meta)
            with torch.no_grad():
                for ids in side["embeds"]:
                    embed = model.get_decoder().get_input_embeddings() if ids.startswith("decoder_") \
                        else model.get_input_embeddings()
                    kwargs[ids.replace("input_ids", "inputs_embeds")] = embed(kwargs.pop(ids))
                outputs = flatten_outputs(model(**kwargs))
        elif run == "forward":
            outputs = forward(model, inputs, call, meta)
        elif run == "tuple":  # return_dict=False, named by the dict output's keys, nested outputs by position
            kwargs = model_kwargs(model, inputs, call, meta)
            with torch.no_grad():
                names = list(model(**kwargs).keys())
                as_tuple = model(**dict(kwargs, return_dict=False))
            if not isinstance(as_tuple, tuple):
                raise TypeError(f"return_dict=False returned {type(as_tuple).__name__}, expected a tuple")

            def positional(output):
                if hasattr(output, "keys") and hasattr(output, "values"):
                    output = tuple(output.values())
                return tuple(positional(v) for v in output) if isinstance(output, (tuple, list)) else output

            outputs = flatten_outputs(dict(zip(names, positional(as_tuple))))
            outputs["tuple length"] = torch.tensor(len(as_tuple))  # compared with the dict output's count
        elif run == "dict_positional":  # the dict output read the same way (the tuple run's reference)
            with torch.no_grad():
                as_dict = model(**model_kwargs(model, inputs, call, meta))

            def positional(output):
                if hasattr(output, "keys") and hasattr(output, "values"):
                    output = tuple(output.values())
                return tuple(positional(v) for v in output) if isinstance(output, (tuple, list)) else output

            outputs = flatten_outputs(dict(zip(list(as_dict.keys()), positional(as_dict))))
            outputs["tuple length"] = torch.tensor(len(as_dict.keys()))
        elif run == "full_logits":
            outputs = {"logits": forward(model, inputs, {k: v for k, v in call.items()
                                                         if k != "output_hidden_states"}, meta)["logits"]}
        elif run == "cached_logits":
            outputs = {"logits": _cached_logits(model, inputs, call, meta, int(side["prefix_length"]))}
        elif run == "greedy":
            outputs = _greedy(model, inputs, call, meta, int(side["max_new_tokens"]), bool(side.get("use_cache", True)),
                              side.get("generate"), side.get("seed"))
        elif run == "gradients":
            loss, grads = _gradients(model, inputs, call, meta, int(side.get("seed", 0)))
            outputs = {"loss": loss, **{f"grad of {k}": v for k, v in grads.items()}}
        elif run == "train_outputs":
            with torch.random.fork_rng(), torch.no_grad():
                torch.manual_seed(int(side.get("seed", 0)))
                outputs = flatten_outputs(model(**model_kwargs(
                    model, inputs, {k: v for k, v in call.items() if k != "output_hidden_states"}, meta)))
        else:
            raise CannotRun(f"unknown side run {run!r}")
    if "row_mask" in side:
        mask = torch.tensor(side["row_mask"])
        outputs = row_outputs(outputs, {"attention_mask": mask}, side.get("row", 0), meta)
    elif "row" in side:
        outputs = row_outputs(outputs, inputs, side["row"], meta)
        inputs = {k: v[side["row"]: side["row"] + 1] for k, v in inputs.items()}
    if "rows" in side:
        outputs = select_rows(outputs, side["rows"], input_rows(inputs), _first_row_alone(model, inputs, call, meta, run))
        inputs = {k: v[list(side["rows"])] for k, v in inputs.items()}
    return outputs, inputs


# -- replay kinds: how each property reruns (meta["replay"]["kind"]) ----------------------------
def _greedy_problems(got: dict, ref: dict, rows, tol, meta, what) -> list[str]:
    """Two greedy decodings agree: step logits close, tokens equal until a near-tie (as the cache property)."""
    got_tokens, ref_tokens = got["tokens"][rows[0]], ref["tokens"][rows[1]]
    for step in range(min(len(got_tokens), len(ref_tokens))):
        name = f"logits at generated step {step} (tokens so far {ref_tokens[:step]})"
        problems = compare({name: got["logits"][rows[0], step]}, {name: ref["logits"][rows[1], step]}, tol, meta,
                           what=what)
        if problems:
            return problems
        if got_tokens[step] != ref_tokens[step]:
            return []  # tied within rounding: both continuations are right
    return [] if got_tokens == ref_tokens else [f"{_head(meta, what)}: generated {got_tokens}, expected {ref_tokens}"]


def replay_compare(meta, tensors) -> list[str]:
    """Two runs compared within the tolerance, for every pair the property declared.

    `meta["replay"]` = {"kind": "compare", "pairs": [PAIR, ...]} (or one pair's keys at the top level);
    a PAIR = {"actual": SIDE, "expected": SIDE, "real_tokens": "expected" | "actual" | None,
    "finite": bool (the actual side must be finite first), "judge": "close" | "greedy",
    "rows": [actual row, expected row] or "each" (greedy), "what": text for the message}.
    See `run_side` for a SIDE. The first pair that differs is reported.
    """
    recipe = meta["replay"]
    pairs = recipe.get("pairs") or [recipe]
    tol = meta["tolerance"]
    for pair in pairs:
        actual, actual_inputs = run_side(meta, tensors, pair.get("actual", {}))
        expected, expected_inputs = run_side(meta, tensors, pair.get("expected", {}))
        # a batch's outputs not indexed by its rows are left out on the other side too (as check_batch_invariance)
        unsplit = set(getattr(actual, "unsplit", ())) | set(getattr(expected, "unsplit", ()))
        actual, expected = ({k: v for k, v in side.items() if k not in unsplit} for side in (actual, expected))
        what = pair.get("what")
        if pair.get("judge") == "greedy":
            rows = pair.get("rows", "each")
            rows = [(r, r) for r in range(len(expected["tokens"]))] if rows == "each" else [tuple(rows)]
            problems = [p for r in rows for p in _greedy_problems(actual, expected, r, tol, meta, what)][:1]
        else:
            if pair.get("finite"):
                bad = nonfinite(actual)
                if bad:
                    return [f"{_head(meta, what)}: " + "; ".join(bad)]
            masks = None
            real = pair.get("real_tokens", "expected" if recipe.get("real_tokens_only") else None)
            if real == "expected":
                masks = real_token_masks(expected, expected_inputs, meta)
            elif real == "actual":
                masks = real_token_masks(actual, actual_inputs, meta)
            problems = compare(actual, expected, tol, meta, masks, what=what)
        if problems:
            return problems
    return []


def _shape_matches(got, want) -> bool:
    if want and isinstance(want[0], list):  # alternatives (as zoo.contract.shape_matches)
        return any(_shape_matches(got, w) for w in want)
    return len(got) == len(want) and all(w is None or g == w for g, w in zip(got, want))


def _show(want) -> str:
    if want and isinstance(want[0], list):
        return " or ".join(_show(w) for w in want)
    return "(" + ", ".join("*" if d is None else str(d) for d in want) + (",)" if len(want) == 1 else ")")


def contract_problems(outputs: dict, contract: dict) -> list[str]:
    """What is wrong with the output shapes under the stored contract (as zoo.contract.Contract.problems)."""
    got = {name: list(t.shape) for name, t in outputs.items()}
    shapes = {**contract.get("optional", {}), **contract["required"]}
    wrong = [f"{n}: got {tuple(got[n])}, expected {_show(w)}" for n, w in shapes.items()
             if n in got and not _shape_matches(got[n], w)]
    missing = sorted(set(contract["required"]) - set(got))
    if missing:
        wrong.append(f"missing outputs {missing}")
    unchecked = set(contract.get("unchecked", ()))
    extra = sorted(n for n in set(got) - set(shapes) if n.split(".", 1)[0] not in unchecked)
    if extra:
        wrong.append(f"outputs outside the contract {extra}")
    return wrong


def _untouched(model, inputs, call, meta) -> list[str]:
    """The forward leaves every tensor argument as it was (shape, dtype, values)."""
    kwargs = model_kwargs(model, inputs, call, meta)
    tensors = {k: v for k, v in kwargs.items() if isinstance(v, torch.Tensor)}
    before = {k: (v.clone(), v.dtype, tuple(v.shape)) for k, v in tensors.items()}
    with torch.no_grad():
        model(**kwargs)
    changed = []
    for name, value in tensors.items():
        copy, dtype, shape = before[name]
        if value.dtype != dtype or tuple(value.shape) != shape:
            changed.append(f"{name!r} became {value.dtype} {tuple(value.shape)} (was {dtype} {shape})")
        elif not torch.equal(value, copy):
            changed.append(f"{name!r} was modified in place: "
                           f"{difference(value.double(), copy.double(), 0.0, 0.0)}")
    return changed


def replay_judge(meta, tensors) -> list[str]:
    """One run judged alone: `meta["replay"]` = {"kind": "judge", "checks": [...], "side": SIDE, ...}.

    Checks: "finite" (no NaN/Inf), "shapes" (outputs keep the stored `contract`), "untouched" (the
    forward leaves its inputs alone), "bad_input" (a raise is fine; else finite outputs within the
    contract, and `must_refuse` inputs must raise), "clear_refusal" (a raise must be a clear error),
    "finite_gradients" (a gradient for every trainable parameter, all finite).
    """
    recipe = meta["replay"]
    checks, side = recipe.get("checks", ["finite"]), recipe.get("side", {})
    shapes = {k: tuple(v.shape) for k, v in input_set(tensors, side.get("inputs", "")).items()}
    head = _head(meta, (f"{recipe['what']}, " if recipe.get("what") else "") + f"inputs {shapes}"
                 if {"shapes", "bad_input", "clear_refusal"} & set(checks) else recipe.get("what"))
    if "untouched" in checks:
        changed = _untouched(side_model(meta, side), input_set(tensors, side.get("inputs", "")),
                             {**meta["call"], **side.get("call", {})}, meta)
        if changed:
            return [f"{head}: the forward pass changed its inputs: " + "; ".join(changed)]
    if "finite_gradients" in checks:
        outputs, _ = run_side(meta, tensors, {"run": "gradients", **side})
        loss = outputs.pop("loss")
        if not torch.isfinite(loss):
            return [f"{head}: the loss is {loss.item()}"]
        missing = sorted(n.removeprefix("grad of ") for n, g in outputs.items() if g is None)
        if missing:
            return [f"{head}: {len(missing)} trainable parameters received no gradient: {missing[:8]}"]
        bad = nonfinite({n: g for n, g in outputs.items() if g is not None})
        return [f"{head}: non-finite gradients in {len(bad)} parameters: " + "; ".join(bad[:5])] if bad else []
    if not {"finite", "shapes", "bad_input", "clear_refusal"} & set(checks):
        return []
    try:
        outputs, _ = run_side(meta, tensors, side)
    except CannotRun:
        raise
    except Exception as exc:
        if "clear_refusal" in checks:
            why = _unclear(exc)
            return [f"{head}: refused with a low-level error ({why}): {type(exc).__name__}: "
                    f"{str(exc).strip().splitlines()[0][:160] if str(exc).strip() else ''}"] if why else []
        if "bad_input" in checks:
            return []  # refusing bad input is an acceptable answer
        raise
    problems = []
    if "shapes" in checks or "bad_input" in checks:
        wrong = contract_problems(outputs, recipe["contract"])
        if "bad_input" in checks:
            wrong = [p for p in wrong if not p.startswith(("missing", "outputs outside"))]
        problems += wrong
    if "finite" in checks or "bad_input" in checks:
        problems += nonfinite(outputs)
    if "bad_input" in checks and recipe.get("must_refuse"):
        problems.insert(0, "no output can be right for this input, so it must raise")
    if "bad_input" in checks and problems:
        return [f"{head}: accepted silently with bad outputs: " + "; ".join(problems)]
    return [f"{head}: " + "; ".join(problems)] if problems else []


# Clear errors (mirrors properties/clear_errors.py: a ValueError/TypeError about the input).
_INTERNAL = re.compile("|".join((
    r"index out of range", r"object is not iterable", r"has no len\(\)", r"object is not subscriptable",
    r"cannot be interpreted as an integer", r"unhashable type", r"object has no attribute",
    r"too (large|small) to (convert|fit)", r"division by zero", r"unsupported operand type",
    r"takes \d+ positional arguments? but \d+ (was|were) given", r"cannot reshape array",
    r"operands could not be broadcast",
)))


def _unclear(exc: BaseException) -> str | None:
    if not isinstance(exc, (ValueError, TypeError)):
        return f"{type(exc).__name__} is neither a ValueError nor a TypeError"
    message = str(exc).strip()
    if not message:
        return "the message is empty"
    internal = _INTERNAL.search(message)
    return f"the message ({internal.group(0)!r}) is the interpreter's, not about the input" if internal else None


def replay_finite(meta, tensors) -> list[str]:
    """finite: no NaN or Inf in any floating output."""
    return replay_judge({**meta, "replay": {**meta["replay"], "checks": ["finite"]}}, tensors)


def replay_shapes(meta, tensors) -> list[str]:
    """shape contract: the outputs keep the stored contract (names and shapes)."""
    recipe = dict(meta["replay"])
    if "contract" not in recipe:  # artifacts written before contracts had optional outputs
        recipe["contract"] = {"required": recipe["expected_shapes"]}
    return replay_judge({**meta, "replay": {**recipe, "checks": ["shapes"]}}, tensors)


def replay_same_twice(meta, tensors) -> list[str]:
    """determinism: two forwards of the same input agree within the (exact) tolerance."""
    model, inputs = load_model(meta), input_set(tensors)
    first = forward(model, inputs, meta["call"], meta)
    second = forward(model, inputs, meta["call"], meta)
    return compare(second, first, meta["tolerance"], meta)


def replay_save_load(meta, tensors) -> list[str]:
    """save/load: save_pretrained (safetensors) then from_pretrained gives the same outputs."""
    model, inputs = load_model(meta), input_set(tensors)
    before = forward(model, inputs, meta["call"], meta)
    with tempfile.TemporaryDirectory() as directory:
        model.save_pretrained(directory)
        reloaded = type(model).from_pretrained(directory, local_files_only=True, use_safetensors=True)
        with torch.no_grad():  # fresh aligned storage, as the suite compares: memory-mapped weights at 8-byte
            for tensor in [*reloaded.parameters(), *reloaded.buffers()]:  # offsets may take other CPU kernels
                tensor.data = tensor.data.clone()
        after = forward(reloaded.eval().to(next(model.parameters()).device), inputs, meta["call"], meta)
    return compare(after, before, meta["tolerance"], meta)


# pipeline: mirrors zoo/pipelines.py (the pipeline against processor + model for one raw input)
GENERATE = dict(max_new_tokens=4, do_sample=False)
LABELS = ("a photo of a cat", "a photo of a dog", "noise")


def _raw_input(meta, tensors):
    """The raw input as the property drew it: text (meta.json), a PIL image or a waveform (tensors)."""
    described = meta["details"]["raw_input"]
    if isinstance(described, str):
        return described
    array = tensors[described["stored_as"]].numpy()
    if described.get("type") == "PIL.Image":
        from PIL import Image  # image processors need pillow anyway

        return Image.fromarray(array, mode=described["mode"])
    return array


def _fit_text(raw, tokenizer, budget: int):
    """Cut text so its tokens fit the model (as zoo.pipelines.fit_raw_input)."""
    while raw and len(tokenizer(raw)["input_ids"]) > budget:
        raw = raw[: max(0, min(len(raw) - 1, len(raw) * budget // len(tokenizer(raw)["input_ids"])))]
    return raw


def replay_pipeline(meta, tensors) -> list[str]:
    """pipeline: `pipeline(task)` on the model agrees with the processor + model forward."""
    model = load_model(meta)
    processor = transformers.AutoProcessor.from_pretrained(Path(meta["folder"], "processor"), local_files_only=True)
    tokenizer = getattr(processor, "tokenizer", processor)
    task, spec = meta["spec"]["pipeline_task"], meta["spec"]
    call = {k: v for k, v in meta["call"].items() if k != "output_hidden_states"}
    raw = _raw_input(meta, tensors)
    if isinstance(raw, str):
        causal = "causal" in spec["capabilities"]
        raw = _fit_text(raw, tokenizer, spec["max_length"] - (GENERATE["max_new_tokens"] if causal else 0))
    parts = {key: getattr(processor, key) for key in ("tokenizer", "image_processor", "feature_extractor")
             if hasattr(processor, key)} or {("image_processor" if "vision" in spec["capabilities"] else "tokenizer"): processor}
    pipe = transformers.pipeline(task, model=model, device="cpu", **parts)
    if task in ("feature-extraction", "image-feature-extraction"):
        via_pipe = {"last_hidden_state": pipe(raw, return_tensors=True)}
        inputs = processor(images=raw, return_tensors="pt") if "vision" in spec["capabilities"] else \
            processor(raw, return_tensors="pt")
        via_direct = {"last_hidden_state": forward(model, dict(inputs), call)["last_hidden_state"]}
    elif task == "text-generation":
        via_pipe = {"generated_token_ids": torch.tensor(pipe(raw, return_tensors=True, **GENERATE)[0]["generated_token_ids"])}
        with torch.no_grad():
            ids = model.generate(**tokenizer(raw, return_tensors="pt"), **GENERATE, pad_token_id=spec["pad_token_id"])
        via_direct = {"generated_token_ids": ids[0]}
    elif task == "zero-shot-image-classification":
        scores = {row["label"]: row["score"] for row in pipe(raw, candidate_labels=list(LABELS))}
        via_pipe = {"scores": torch.tensor([scores[label] for label in LABELS], dtype=torch.float32)}
        texts = [f"This is a photo of {label}." for label in LABELS]  # the pipeline's default template
        inputs = processor(text=texts, images=raw, return_tensors="pt", padding=True)
        via_direct = {"scores": forward(model, dict(inputs), call)["logits_per_image"].softmax(-1)[0]}
    elif task == "automatic-speech-recognition":
        text = pipe({"raw": raw, "sampling_rate": 16000}, generate_kwargs=GENERATE)["text"]
        via_pipe = {"text_bytes": torch.tensor(list(text.encode("utf-8")), dtype=torch.int64)}
        features = processor.feature_extractor(raw, sampling_rate=16000, return_tensors="pt")
        with torch.no_grad():
            ids = model.generate(features.input_features, **GENERATE)
        text = processor.tokenizer.decode(ids[0], skip_special_tokens=True)
        via_direct = {"text_bytes": torch.tensor(list(text.encode("utf-8")), dtype=torch.int64)}
    else:
        raise CannotRun(f"no standalone replay for the pipeline task {task!r}")
    return compare(via_pipe, via_direct, meta["tolerance"], meta)


# -- processors: rerun from the stored raw input with the processor saved in the artifact ----------
def load_processor(meta):
    """The processor the checkpoint ships, as saved into the artifact folder (`processor/`)."""
    folder = Path(meta["folder"], "processor")
    if not folder.is_dir():
        raise CannotRun("the artifact holds no saved processor")
    return transformers.AutoProcessor.from_pretrained(folder, local_files_only=True)


def _argument(meta, tensors, arg):
    """One call argument: a JSON literal, or the stored raw input (`{"raw": "raw_input", "item": i,
    "layout": "pil" | "channels_first" | "channels_last"}`)."""
    if not (isinstance(arg, dict) and "raw" in arg):
        return arg
    described = meta["details"][arg["raw"]]
    if isinstance(described, dict) and "stored_as" in described:
        value = tensors[described["stored_as"]].numpy()
        if described.get("type") == "PIL.Image":
            from PIL import Image

            value = Image.fromarray(value, mode=described["mode"])
    elif isinstance(described, list) and described and isinstance(described[0], dict) and "stored_as" in described[0]:
        value = [tensors[d["stored_as"]].numpy() for d in described]
    else:
        value = described
    if "item" in arg:
        value = value[arg["item"]]
    layout = arg.get("layout")
    if layout == "pil":
        from PIL import Image

        value = Image.fromarray(value)
    elif layout == "channels_first":
        import numpy

        value = numpy.ascontiguousarray(numpy.moveaxis(value, -1, 0))
    return value


def _processor_call(meta, tensors, processor, call):
    """`getattr(processor.<part>, method)(*args, **kwargs)`, then `take` (a key path) of the result."""
    part = getattr(processor, call["part"], processor) if call.get("part") else processor
    if call.get("method") == "decode_encode":  # the round trip: decode(encode(text)) without special tokens
        ids = part(_argument(meta, tensors, call["args"][0]), add_special_tokens=False)["input_ids"]
        return part.decode(ids, skip_special_tokens=False, clean_up_tokenization_spaces=False)
    function = getattr(part, call.get("method", "__call__"))
    result = function(*[_argument(meta, tensors, a) for a in call.get("args", [])],
                      **{k: _argument(meta, tensors, v) for k, v in call.get("kwargs", {}).items()})
    for key in call.get("take", []):
        result = result[key]
    if hasattr(result, "keys") and not call.get("take"):
        return {key: result[key] for key in result.keys()}
    return result.tolist() if hasattr(result, "tolist") else result


def _show_short(value, limit=160):
    text = repr(value)
    return text if len(text) <= limit else text[: limit - 3] + "..."


def replay_processor(meta, tensors) -> list[str]:
    """A processor property rerun: `meta["replay"]` = {"kind": "processor", "steps": [STEP, ...]}.

    A STEP is {"call": CALL, "what": text} plus one expectation:
      "same_as": CALL          both calls give equal results (the batch vs each item, layouts, ...)
      "equals": value          the call gives this value (computed by the suite from the tokenizer's template)
      "shape": [...], "finite": bool, "range": [[low...], [high...]]   an array's shape, finiteness, range
      "round_trip": {"expected": text, "exact": bool, "unk": token}    decode(encode(raw)) gives the text
      "refuse": "must" | "may", "valid": bool, "names": text   a raise must be a clear error (naming `names`);
                               "must": not raising is the failure; `valid`: the input is valid, raising fails
    A CALL is {"part": "tokenizer"|"image_processor"|"feature_extractor", "method": name, "args": [...],
    "kwargs": {...}, "take": [key, ...]}; arguments `{"raw": detail}` are the stored raw input.
    """
    import numpy

    processor = load_processor(meta)
    for step in meta["replay"]["steps"]:
        head = _head(meta, step.get("what"))
        call = step["call"]
        try:
            got = _processor_call(meta, tensors, processor, call)
        except Exception as exc:
            if "refuse" not in step:
                return [f"{head}: raised {type(exc).__name__}: {str(exc).strip()[:160]}"]
            if step.get("valid"):
                return [f"{head}: valid input raised {type(exc).__name__}: {str(exc).strip()[:160]}"]
            why = _unclear(exc)
            if why:
                return [f"{head}: raised {type(exc).__name__}: {str(exc).strip()[:160]}: {why}"]
            if step.get("names") and step["names"] not in str(exc):
                return [f"{head}: the error does not name {step['names']}: {type(exc).__name__}: {exc}"]
            continue
        if step.get("refuse") == "must":
            return [f"{head}: accepted silently, giving {_show_short(numpy.shape(got))}"]
        if "same_as" in step:
            ref = _processor_call(meta, tensors, processor, step["same_as"])
            if numpy.shape(got) != numpy.shape(ref) or not numpy.array_equal(numpy.asarray(got), numpy.asarray(ref)):
                return [f"{head}: got {_show_short(got)}, expected {_show_short(ref)}"]
        if "at_most" in step and len(got) > step["at_most"]:
            return [f"{head}: {len(got)} ids, more than {step['at_most']}: {_show_short(got)}"]
        if "offsets_within" in step:
            previous = (0, 0)
            for position, ((start, end), special) in enumerate(zip(got["offset_mapping"], got["special_tokens_mask"])):
                if not 0 <= start <= end <= step["offsets_within"]:
                    return [f"{head}: token {position} has offsets ({start}, {end}) outside the text of "
                            f"{step['offsets_within']} characters"]
                if special:
                    continue
                if (start, end) < previous or end < previous[1]:
                    return [f"{head}: token {position} goes backwards: ({start}, {end}) after {previous}"]
                previous = (start, end)
        if "equals" in step and got != step["equals"]:
            return [f"{head}: got {_show_short(got)}, expected {_show_short(step['equals'])}"]
        if "shape" in step and list(numpy.shape(got)) != list(step["shape"]):
            return [f"{head}: shape {tuple(numpy.shape(got))}, expected {tuple(step['shape'])}"]
        if step.get("finite") and not numpy.isfinite(numpy.asarray(got, dtype=float)).all():
            return [f"{head}: non-finite values"]
        if "range" in step:
            values = numpy.asarray(got, dtype=numpy.float64)
            low = numpy.asarray(step["range"][0])[None, :, None, None]
            high = numpy.asarray(step["range"][1])[None, :, None, None]
            slack = 8 * numpy.finfo(numpy.float32).eps * numpy.maximum(abs(low), abs(high))
            outside = (values < low - slack) | (values > high + slack)
            if outside.any():
                return [f"{head}: {int(outside.sum())} of {values.size} values outside the normalized range"]
        if "round_trip" in step:
            want, unk = step["round_trip"], step["round_trip"].get("unk")
            squeeze = re.compile(r"\s+")
            if want.get("exact"):
                if got != want["expected"]:
                    return [f"{head}: decoded {got!r}, expected {want['expected']!r}"]
            else:
                pieces = squeeze.sub("", got).split(str(unk)) if unk and str(unk) in got else [squeeze.sub("", got)]
                if not re.fullmatch("(?s)" + ".*?".join(map(re.escape, pieces)), squeeze.sub("", want["expected"])):
                    return [f"{head}: decoded {got!r}, normalized text {want['expected']!r}"]
    return []


# -- performance: re-measured against the baseline figure stored in the artifact ----------------------
class _Calibration:
    """The suite's fixed reference workload (mirrors baselines/measure.Calibration): seeded q, k of
    (4, 64, 32), softmax(q k^T) k. Model time over its time is comparable across machines."""

    def __init__(self):
        g = torch.Generator().manual_seed(0)
        self.q, self.k = torch.randn(4, 64, 32, generator=g), torch.randn(4, 64, 32, generator=g)

    def __call__(self):
        return torch.softmax(self.q @ self.k.transpose(1, 2), dim=-1) @ self.k


def _median_seconds(fn, min_run_time: float) -> float:
    from torch.utils import benchmark

    fn()  # warm-up, as baselines/measure.time_call
    timer = benchmark.Timer(stmt="fn()", globals={"fn": fn}, num_threads=torch.get_num_threads())
    return timer.blocked_autorange(min_run_time=min_run_time).median


def replay_perf(meta, tensors) -> list[str]:
    """`meta["replay"]` = {"kind": "perf", "metric": "latency", "baseline": ratio, "limit": ratio}: the
    calibrated latency (model time / calibration time, as baselines/measure) re-measured here must stay
    within `limit`; as in the suite, a figure over the limit is measured again after a pause and only
    a figure over it every time reproduces. Other metrics need the suite's hooks: `pytest --replay`."""
    import time

    recipe = meta["replay"]
    if recipe["metric"] != "latency" or recipe.get("baseline") is None:
        raise CannotRun(f"{recipe['metric']} is measured with the suite's own hooks; use pytest --replay")
    model, calibration = load_model(meta), _Calibration()
    call = {k: v for k, v in meta["call"].items() if k != "output_hidden_states"}  # as test_perf.forward_call
    kwargs = model_kwargs(model, input_set(tensors), call, meta)

    def forward():
        with torch.no_grad():
            return model(**kwargs)

    ratios = []
    for pause in (0.0, 0.5, 1.0, 2.0):  # baselines/compare.PAUSES
        time.sleep(pause)
        before = _median_seconds(calibration, 0.2)
        took = _median_seconds(forward, float(recipe.get("min_run_time", 0.2)))
        ratios.append(took / ((before + _median_seconds(calibration, 0.2)) / 2))
        if ratios[-1] <= recipe["limit"]:
            break
    print(f"calibrated latency {', '.join(f'{r:.1f}' for r in ratios)}; baseline {recipe['baseline']:.1f}, "
          f"limit {recipe['limit']:.1f}")
    if all(r > recipe["limit"] for r in ratios):
        return [f"{_head(meta)}: calibrated latency {min(ratios):.1f} exceeds the limit {recipe['limit']:.1f} "
                f"({min(ratios) / recipe['baseline']:.2f}x the baseline {recipe['baseline']:.1f}) in every try"]
    return []


REPLAYS = {
    "finite": replay_finite,
    "same_twice": replay_same_twice,
    "shapes": replay_shapes,
    "save_load": replay_save_load,
    "compare": replay_compare,
    "judge": replay_judge,
    "pipeline": replay_pipeline,
    "processor": replay_processor,
    "perf": replay_perf,
}

# -- replay kinds registered by properties (properties.artifacts.register_replay) ----------------


def main(argv: list[str]) -> int:
    try:  # loading bars would bury the verdict (a bisect prints each release's last line)
        transformers.utils.logging.disable_progress_bar()
    except AttributeError:
        pass
    folder = Path(argv[1]) if len(argv) > 1 else Path(__file__).resolve().parent
    meta = json.loads((folder / "meta.json").read_text(encoding="utf-8"))
    meta["folder"] = str(folder)
    tensors = load_file(str(folder / "inputs.safetensors"))
    kind = meta["replay"]["kind"]
    print(f"{meta['test_id']}: replaying {meta['property']!r} ({kind}) on {meta['model']['name']}, "
          f"torch {torch.__version__}, transformers {transformers.__version__}")
    print(f"recorded: {meta['observed']['message'].splitlines()[0] if meta['observed']['message'] else '-'}")
    if kind not in REPLAYS:
        print(f"cannot replay: no standalone replay for kind {kind!r}; use `pytest --replay {folder}`")
        return CANNOT_RUN
    try:
        problems = REPLAYS[kind](meta, tensors)
    except CannotRun as exc:
        print(f"cannot replay: {exc}")
        return CANNOT_RUN
    except Exception as exc:  # the property's failure may itself be an exception (a crash)
        recorded = meta["observed"]["exception"]
        print(f"REPRODUCED: {type(exc).__name__}: {exc}" if type(exc).__name__ == recorded
              else f"cannot judge: raised {type(exc).__name__}: {exc} (the suite recorded {recorded})")
        return 1 if type(exc).__name__ == recorded else CANNOT_RUN
    if problems:
        print("REPRODUCED")
        print("\n".join(problems))
        return 1
    print("NOT REPRODUCED: the property holds on these inputs")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
