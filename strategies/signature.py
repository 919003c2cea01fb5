"""Inputs a model's forward needs beyond the base draws, keyed by forward-argument name.

Two halves, one table (`RULES`):
- `signature_plan(model) -> dict` (called from `zoo.build.spec_for`, stored in `spec.extra`) reads
  the forward's argument names and the config into plain data: which extra inputs to supply and
  their sizes (pixel layout, bbox range, waveform length, image placeholder runs, ...).
- `signature_inputs(spec, inputs)` (called from `strategies.batches.model_inputs` for the names in
  `spec.extra["signature_inputs"]`) is a strategy that completes an already drawn batch from that
  plain data alone; it never sees the model. It is idempotent: what is already right stays.

Each rule says why the input is needed. Image placeholder runs are measured once at plan time
(`zoo.catalog.placeholder_tokens`: how many image features one image gives), because the count
depends on the vision tower, projector and pooling in ways no config attribute states.
"""

from __future__ import annotations

import inspect

import numpy as np
from hypothesis import event, strategies as st
from hypothesis.extra.numpy import arrays

from strategies.arrays import dense_floats

DEFAULT_IMAGE = 32  # pixel side for vision models whose config has no image_size (CNN back bones)
WAVEFORM_MAX = 4000  # samples of a raw waveform (1/4 s at 16 kHz): enough frames, cheap forward
# Forward arguments that are part of the base draws (strategies.batches), or that a forward
# accepts only to change its return value.
_BASE = {"input_ids", "attention_mask", "pixel_values", "input_features", "decoder_input_ids"}


def _params(model) -> dict:
    return dict(inspect.signature(model.forward).parameters)


def _cfg(config, *names, default=None):
    for name in names:
        value = config.__dict__.get(name)
        if value is not None:
            return value
    return default


def _vision_config(config):
    vision = getattr(config, "vision_config", None)
    return vision if vision is not None else config


def _pixel_shape(model) -> tuple[int, int, int]:
    vision = _vision_config(model.config)
    size = _cfg(vision, "image_size", "pretrain_image_size", default=DEFAULT_IMAGE)
    size = size[0] if isinstance(size, (list, tuple)) else size
    channels = _cfg(vision, "num_channels", "in_channels", default=3)
    return (int(channels), int(size), int(size))


def _conv_receptive_field(config) -> int:
    """Samples a convolutional feature encoder needs for one output frame."""
    kernels, strides = config.__dict__.get("conv_kernel"), config.__dict__.get("conv_stride")
    if not kernels or not strides:
        return 400
    field, jump = 1, 1
    for k, s in zip(kernels, strides):
        field += (k - 1) * jump
        jump *= s
    return field


# -- the table: argument name -> (applies to the model?, plan data) -----------------------------------
def _plan_pixel_values(model, params):
    main = getattr(model, "main_input_name", "")
    if "pixel_values" in params and (main == "pixel_values" or getattr(model.config, "vision_config", None) is not None):
        return {"pixel_shape": _pixel_shape(model)}  # the configured size, also where the config has none
    return None


def _plan_patch_grid(model, params):
    """Qwen-VL style towers take images as flat patch rows plus a (t, h, w) grid per image; h and w
    are multiples of the spatial merge, each row holds channels x temporal patch x patch x patch values."""
    if "image_grid_thw" not in params:
        return None
    vision = _vision_config(model.config)
    patch = int(_cfg(vision, "patch_size", default=8))
    temporal = int(_cfg(vision, "temporal_patch_size", default=1))
    merge = int(_cfg(vision, "spatial_merge_size", "merge_size", default=1))
    channels = int(_cfg(vision, "in_channels", "num_channels", "in_chans", default=3))
    return {"patch_grid": (1, 2 * merge, 2 * merge), "patch_dim": channels * temporal * patch * patch}


def _plan_mm_token_types(model, params):
    return {} if "mm_token_type_ids" in params else None  # 1 where an image token sits (M-RoPE positions)


def _plan_pixel_mask(model, params):
    return {} if "pixel_mask" in params and "pixel_values" in params else None  # DETR family: all pixels real


def _plan_image_sizes(model, params):
    return {} if "image_sizes" in params and "pixel_values" in params else None  # LLaVA-NeXT family: (H, W) per image


def _plan_bbox(model, params):
    if "bbox" not in params:
        return None  # layout models: one box (x0, y0, x1, y1) per token, inside the 2-D position table
    top = _cfg(model.config, "max_2d_position_embeddings", default=1024)
    return {"bbox_max": int(top) - 1}


def _plan_input_values(model, params):
    if "input_values" not in params or getattr(model, "main_input_name", "") != "input_values":
        return None  # raw-waveform encoders: the conv feature encoder needs its receptive field at least
    low = _conv_receptive_field(model.config)
    return {"waveform_samples": (low, max(WAVEFORM_MAX, 4 * low))}


def _plan_placeholders(model, params, plan):
    """Multimodal LMs: the text must hold one image-token id per image feature, per image."""
    config = model.config
    token = _cfg(config, "image_token_id", "image_token_index")
    if token is None or "pixel_values" not in params or "input_ids" not in params:
        return None
    from zoo.catalog import placeholder_tokens  # measured once with the model (see the module docstring)

    # image_sizes is optional for most towers (LLaVA reads it only for Pixtral): give it only where
    # the model cannot do without it
    planned = plan["signature_inputs_so_far"]
    without = {**plan, "signature_inputs_so_far": tuple(n for n in planned if n != "image_sizes")}
    count, drop = placeholder_tokens(model, trial_images(without)), ("image_sizes",)
    if count is None and "image_sizes" in planned:
        count, drop = placeholder_tokens(model, trial_images(plan)), ()
    if not count:
        return None
    out = {"image_token_id": int(token), "image_tokens": int(count), "drop_signature_inputs": drop}
    start, end = _cfg(config, "vision_start_token_id"), _cfg(config, "vision_end_token_id")
    if start is not None:  # Qwen-VL style: the run sits between vision start and end ids
        out["image_run_prefix"] = (int(start),)
        out["image_run_suffix"] = (int(end),) if end is not None else ()
    return out


def _plan_noise(model, params, plan):
    """A forward that takes `noise` and draws it itself when not given (ViT-MAE's random patch masking)
    answers differently on every call: feed it the noise, drawn with the inputs. Its shape (one item)
    is measured once at plan time (`zoo.catalog.drawn_noise_shape`): no config attribute states it."""
    if "noise" not in params or "pixel_shape" not in plan:
        return None
    from zoo.catalog import drawn_noise_shape

    shape = drawn_noise_shape(model, trial_images(plan))
    return None if shape is None else {"noise_shape": shape[1:]}


def _plan_eos(model, params):
    """Encoder-decoder sequence classifiers pool at the last eos token: every item must hold one."""
    name = type(model).__name__
    if not name.endswith("ForSequenceClassification") or not getattr(model.config, "is_encoder_decoder", False):
        return None
    eos = _cfg(model.config, "eos_token_id")
    eos = eos[0] if isinstance(eos, (list, tuple)) else eos
    return None if eos is None else {"eos_token_id": int(eos)}


RULES = {
    "pixel_values": _plan_pixel_values,
    "image_grid_thw": _plan_patch_grid,
    "pixel_mask": _plan_pixel_mask,
    "image_sizes": _plan_image_sizes,
    "bbox": _plan_bbox,
    "input_values": _plan_input_values,
    "image_placeholders": _plan_placeholders,
    "eos_at_end": _plan_eos,
    "mm_token_type_ids": _plan_mm_token_types,
    "noise": _plan_noise,
}
_NEEDS_PLAN = {"image_placeholders", "noise"}  # rules that read what the earlier rules planned


def trial_images(plan: dict) -> dict:
    """One all-zero image in the layout the plan draws (for measuring placeholder counts)."""
    if "patch_grid" in plan:
        t, h, w = plan["patch_grid"]
        return {"pixel_values": np.zeros((t * h * w, plan["patch_dim"]), np.float32),
                "image_grid_thw": np.array([[t, h, w]], dtype=np.int64)}
    c, h, w = plan["pixel_shape"]
    out = {"pixel_values": np.zeros((1, c, h, w), np.float32)}
    if "image_sizes" in plan["signature_inputs_so_far"]:
        out["image_sizes"] = np.array([[h, w]], dtype=np.int64)
    if "pixel_mask" in plan["signature_inputs_so_far"]:
        out["pixel_mask"] = np.ones((1, h, w), dtype=np.int64)
    return out
# Ids the text must not hold unless the matching media is given (their mismatch is refused).
RESERVED_ID_NAMES = ("image_token_id", "image_token_index", "video_token_id", "video_token_index",
                     "audio_token_id", "audio_token_index", "boi_token_index", "eoi_token_index",
                     "image_start_token_id", "image_end_token_id", "vision_start_token_id", "vision_end_token_id")


def signature_plan(model) -> dict:
    """Plain data for `signature_inputs`: the extra inputs this model's forward needs and their sizes."""
    params = _params(model)
    names = [p for p, v in params.items() if v.kind not in (v.VAR_KEYWORD, v.VAR_POSITIONAL)]
    plan: dict = {"accepts": tuple(names)}
    wanted = []
    for name, rule in RULES.items():
        plan["signature_inputs_so_far"] = tuple(wanted)
        data = rule(model, params, plan) if name in _NEEDS_PLAN else rule(model, params)
        if data is not None:
            wanted.append(name)
            plan.update(data)
    del plan["signature_inputs_so_far"]
    dropped = plan.pop("drop_signature_inputs", ())
    wanted = [n for n in wanted if n not in dropped]
    config = model.config
    reserved = {int(v) for n in RESERVED_ID_NAMES for c in (config, getattr(config, "text_config", None)) if c is not None
                for v in [c.__dict__.get(n)] if isinstance(v, int) and not isinstance(v, bool)}
    if reserved:
        plan["reserved_ids"] = tuple(sorted(reserved))
        wanted.append("reserved_ids")
    plan["signature_inputs"] = tuple(wanted)
    return plan


# -- strategies: plain data in, inputs out -----------------------------------------------------------
def _rows(inputs) -> int | None:
    for key in ("input_ids", "pixel_values", "input_values", "input_features"):
        if key in inputs:
            return int(np.shape(inputs[key])[0])
    return None


def _insert_runs(ids, mask, run, side: str, limit: int | None = None):
    """Put the ids `run` in front of each row's real tokens, keeping the padding side; the text is cut
    so that a row stays within `limit` tokens (the model maximum)."""
    rows, width = ids.shape
    keep = max(1, limit - len(run)) if limit else None
    real = [ids[r][mask[r] == 1][:keep] for r in range(rows)]
    longest = max(len(x) for x in real) + len(run)
    new_ids = np.full((rows, longest), ids[mask == 0][0] if (mask == 0).any() else 0, dtype=np.int64)
    new_mask = np.zeros((rows, longest), dtype=np.int64)
    for r, tokens in enumerate(real):
        row = np.concatenate([np.asarray(run, dtype=np.int64), tokens])
        where = slice(longest - len(row), longest) if side == "left" else slice(0, len(row))
        new_ids[r, where], new_mask[r, where] = row, 1
    return new_ids, new_mask


@st.composite
def signature_inputs(draw, spec, inputs: dict):
    """`inputs` completed with the extra inputs of `spec.extra["signature_inputs"]` (a new dict)."""
    extra = spec.extra
    names = extra.get("signature_inputs", ())
    out = dict(inputs)
    accepts = extra.get("accepts")
    if accepts:
        out = {k: v for k, v in out.items() if k in accepts}
    rows = _rows(out) or draw(st.integers(1, 4), label="batch size")
    if "input_values" in names and "input_values" not in out:
        low, high = extra["waveform_samples"]
        n = draw(st.integers(low, high), label="waveform samples")
        out["input_values"] = draw(dense_floats((rows, n), -1.0, 1.0), label="waveform")
        event("signature: raw waveform")
    if "image_grid_thw" in names:
        t, h, w = extra["patch_grid"]
        if "image_grid_thw" not in out:
            out["pixel_values"] = draw(dense_floats((rows * t * h * w, extra["patch_dim"]), -3.0, 3.0),
                                       label="patch rows (signature)")
            out["image_grid_thw"] = np.tile(np.array([[t, h, w]], dtype=np.int64), (rows, 1))
    elif "pixel_values" in names:
        shape = tuple(extra["pixel_shape"])
        current = out.get("pixel_values")
        if current is None or tuple(np.shape(current)[1:]) != shape or (
            "image_placeholders" in names and np.shape(current)[0] != rows
        ):
            out["pixel_values"] = draw(dense_floats((rows, *shape), -3.0, 3.0), label="pixels (signature)")
    images = rows if "image_grid_thw" in names else int(np.shape(out["pixel_values"])[0]) if "pixel_values" in out else rows
    if "pixel_mask" in names and "pixel_values" in out:
        _, h, w = np.shape(out["pixel_values"])[1:]
        out["pixel_mask"] = np.ones((images, h, w), dtype=np.int64)
    if "image_sizes" in names and "pixel_values" in out:
        h, w = np.shape(out["pixel_values"])[2:]
        out["image_sizes"] = np.tile(np.array([[h, w]], dtype=np.int64), (images, 1))
    if "input_ids" in out and "reserved_ids" in names:
        ids = np.array(out["input_ids"], copy=True)
        reserved = np.isin(ids, extra["reserved_ids"])
        if reserved.any():  # a placeholder id without its media is refused: use an ordinary id instead
            ordinary = next(i for i in range(spec.vocab_size) if i not in extra["reserved_ids"])
            ids[reserved] = ordinary
        out["input_ids"] = ids
    if "image_placeholders" in names and "input_ids" in out:
        token, count = extra["image_token_id"], extra["image_tokens"]
        ids, mask = out["input_ids"], out.get("attention_mask", np.ones_like(out["input_ids"]))
        if (ids == token).sum() != count * rows:
            side = "left" if (mask[:, 0] == 0).any() else "right"
            run = (*extra.get("image_run_prefix", ()), *[token] * count, *extra.get("image_run_suffix", ()))
            out["input_ids"], new_mask = _insert_runs(ids, mask, run, side, spec.max_length or None)
            if "attention_mask" in out:
                out["attention_mask"] = new_mask
            event("signature: image placeholder run")
    if "eos_at_end" in names and "input_ids" in out:
        ids, mask = np.array(out["input_ids"], copy=True), out.get("attention_mask", np.ones_like(out["input_ids"]))
        eos = extra["eos_token_id"]
        # exactly one eos per item, at its end, as a tokenizer writes it (the head refuses unequal counts)
        ordinary = next(i for i in range(spec.vocab_size) if i not in (eos, spec.pad_token_id))
        ids[ids == eos] = ordinary
        for r in range(ids.shape[0]):
            last = np.flatnonzero(mask[r])[-1]
            ids[r, last] = eos
        out["input_ids"] = ids
        # the head pools the decoder's states at input_ids' eos positions, so the decoder must read
        # input_ids itself: called as users call it, without decoder_input_ids (the model shifts input_ids)
        out.pop("decoder_input_ids", None)
    if "mm_token_type_ids" in names and "input_ids" in out and "image_token_id" in extra:
        out["mm_token_type_ids"] = (out["input_ids"] == extra["image_token_id"]).astype(np.int64)
    if "noise" in names and np.shape(out.get("noise", ())) != (rows, *extra["noise_shape"]):
        out["noise"] = draw(noise(rows, tuple(extra["noise_shape"])), label="noise")
        event("signature: noise")
    if "bbox" in names and "input_ids" in out:
        b, length = np.shape(out["input_ids"])
        corners = draw(arrays(np.int64, (b, length, 2, 2), elements=st.integers(0, extra["bbox_max"])), label="bbox")
        lo, hi = corners.min(axis=2), corners.max(axis=2)  # x0 <= x1, y0 <= y1
        out["bbox"] = np.concatenate([lo, hi], axis=-1)
    return out


@st.composite
def noise(draw, rows: int, shape: tuple[int, ...]):
    """`rows` noise tensors of `shape` in [0, 1), as `torch.rand` gives: each a permutation of k/n,
    so no two values tie, not even cast to bf16 (spacing 1/n is at least bf16's step below 1 for
    n <= 256) where a forward argsorts them. Shrinks toward the identity permutation."""
    n = int(np.prod(shape))
    perms = [draw(st.permutations(range(n)), label=f"noise order {r}") for r in range(rows)]
    return (np.array(perms, dtype=np.float32) / n).reshape(rows, *shape)


# Inputs indexed by (batch, token) that a batch composer must pad with the text (bbox, per token).
PER_TOKEN = ("bbox", "token_type_ids", "mm_token_type_ids")
