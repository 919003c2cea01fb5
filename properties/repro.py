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


# -- the model and its inputs -------------------------------------------------------------------
def load_model(meta: dict, *, dtype: str | None = None, device: str | None = None) -> torch.nn.Module:
    """The model under test: a zoo model rebuilt from config + seed, or the checkpoint it came from."""
    spec = meta["model"]
    model_class = getattr(transformers, spec["model_class"])
    if spec["source"] == "zoo":
        config = getattr(transformers, spec["config_class"]).from_dict(spec["config"])
        torch.manual_seed(spec["seed"])  # zoo weights are the seeded random init (zoo/build.py)
        model = model_class(config)
    else:
        model = model_class.from_pretrained(spec["path"], local_files_only=True, trust_remote_code=False)
    device = device or meta["device"]
    if device != "cpu" and not _device_available(device):
        raise CannotRun(f"this failure ran on {device}, which this machine does not have")
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
    return {k[len(prefix):]: v for k, v in tensors.items() if k.startswith(prefix)}


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


def forward(model: torch.nn.Module, inputs: dict[str, torch.Tensor], call: dict) -> dict[str, torch.Tensor]:
    """One forward without gradients, with the suite's calling convention (stored in meta.json)."""
    device, dtype = next(model.parameters()).device, next(model.parameters()).dtype
    kwargs = {k: v.to(device=device, dtype=dtype if v.is_floating_point() else None) for k, v in inputs.items()}
    with torch.no_grad():
        return flatten_outputs(model(**kwargs, **call))


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


def compare(actual: dict, expected: dict, tol: dict, meta: dict, masks: dict | None = None) -> list[str]:
    """The first output of `expected` that `actual` misses or does not match within `tol` (suite wording)."""
    head = f"[{meta['model']['name']}] {meta['property']}"
    missing = sorted(set(expected) - set(actual))
    if missing:
        return [f"{head}: outputs missing on one side: {missing}"]
    for name, ref in expected.items():  # the first mismatch, as assert_outputs_close reports it
        got = actual[name]
        if masks and name in masks:
            got, ref = got[masks[name]], ref[masks[name]]
        if got.shape != ref.shape:
            return [f"{head}: output {name!r} has shape {tuple(got.shape)}, expected {tuple(ref.shape)}"]
        rtol, atol = tol["rtol"], tol["atol"]
        if tol.get("scale_atol") and ref.numel():
            atol *= max(1.0, float(ref.detach().abs().max().double()))
        try:
            torch.testing.assert_close(got, ref, rtol=rtol, atol=atol, equal_nan=False, check_device=False)
        except AssertionError:
            return [f"{head}: output {name!r} differs beyond {tol['text']}\n{difference(got, ref, rtol, atol)}"]
    return []


PAIRWISE_OUTPUTS = {"logits_per_text", "logits_per_image"}  # as zoo/subject.py
TOKEN_OUTPUTS_2D = {"start_logits", "end_logits"}


def real_token_masks(outputs: dict, inputs: dict, meta: dict) -> dict:
    """Bool masks of the unpadded token positions per output (as Subject.real_token_masks)."""
    if "attention_mask" not in inputs:
        return {}
    mask = inputs["attention_mask"].bool()
    encoder_decoder = "encoder_decoder" in meta["spec"]["capabilities"]
    masks = {}
    for name, tensor in outputs.items():
        decoder_side = encoder_decoder and (name == "logits" or name.startswith("decoder_"))
        image_side = name.startswith("vision_model_output") or name in ("image_embeds", "logits_per_image")
        per_token = tensor.dim() >= 3 or name.rsplit(".", 1)[-1] in TOKEN_OUTPUTS_2D
        if decoder_side or image_side or not per_token or tuple(tensor.shape[:2]) != tuple(mask.shape):
            continue
        masks[name] = mask.to(tensor.device)
    return masks


def row_outputs(outputs: dict, inputs: dict, row: int, meta: dict) -> dict:
    """Row `row` of batched outputs, per-token outputs cut to its real tokens (as Subject.row_outputs)."""
    masks = real_token_masks(outputs, inputs, meta)
    picked = {}
    for name, tensor in outputs.items():
        tensor = tensor[row : row + 1]
        if name.rsplit(".", 1)[-1] in PAIRWISE_OUTPUTS:
            tensor = tensor[:, row : row + 1]
        picked[name] = tensor[:, masks[name][row]] if name in masks else tensor
    return picked


# -- replay kinds: how each property reruns (meta["replay"]["kind"]) ----------------------------
def replay_finite(meta, tensors) -> list[str]:
    """finite: no NaN or Inf in any floating output."""
    outputs = forward(load_model(meta), input_set(tensors), meta["call"])
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
    return [f"[{meta['model']['name']}] {meta['property']}: " + "; ".join(problems)] if problems else []


def replay_same_twice(meta, tensors) -> list[str]:
    """determinism: two forwards of the same input agree within the (exact) tolerance."""
    model, inputs = load_model(meta), input_set(tensors)
    first = forward(model, inputs, meta["call"])
    second = forward(model, inputs, meta["call"])
    return compare(second, first, meta["tolerance"], meta)


def replay_shapes(meta, tensors) -> list[str]:
    """shape contract: the outputs are exactly the stored expected names and shapes."""
    outputs = forward(load_model(meta), input_set(tensors), meta["call"])
    got = {name: list(t.shape) for name, t in outputs.items()}
    want = meta["replay"]["expected_shapes"]
    wrong = [f"{n}: got {tuple(got[n])}, expected {tuple(want[n])}" for n in want if n in got and got[n] != want[n]]
    if sorted(set(want) - set(got)):
        wrong.append(f"missing outputs {sorted(set(want) - set(got))}")
    if sorted(set(got) - set(want)):
        wrong.append(f"outputs outside the contract {sorted(set(got) - set(want))}")
    shapes = {k: tuple(v.shape) for k, v in input_set(tensors).items() if k in meta["inputs"]}
    return [f"[{meta['model']['name']}] {meta['property']} (inputs {shapes}): " + "; ".join(wrong)] if wrong else []


def replay_save_load(meta, tensors) -> list[str]:
    """save/load: save_pretrained (safetensors) then from_pretrained gives the same outputs."""
    model, inputs = load_model(meta), input_set(tensors)
    before = forward(model, inputs, meta["call"])
    with tempfile.TemporaryDirectory() as directory:
        model.save_pretrained(directory)
        reloaded = type(model).from_pretrained(directory, local_files_only=True, use_safetensors=True)
        after = forward(reloaded.eval().to(next(model.parameters()).device), inputs, meta["call"])
    return compare(after, before, meta["tolerance"], meta)


def _side(meta, tensors, side: dict) -> tuple[dict, dict]:
    model = load_model(meta, dtype=side.get("dtype"), device=side.get("device"))
    if side.get("attn_implementation"):
        model.set_attn_implementation(side["attn_implementation"])
    inputs = input_set(tensors, side.get("inputs", ""))
    outputs = forward(model, inputs, {**meta["call"], **side.get("call", {})})
    if "row" in side:
        outputs = row_outputs(outputs, inputs, side["row"], meta)
        inputs = {k: v[side["row"] : side["row"] + 1] for k, v in inputs.items()}
    return outputs, inputs


def replay_compare(meta, tensors) -> list[str]:
    """Any two-sided comparison: each side = (input set, dtype, device, attention, call kwargs, batch row).

    `meta["replay"]` = {"kind": "compare", "actual": SIDE, "expected": SIDE, "real_tokens_only": bool};
    a SIDE is a dict with optional keys `inputs` (stored input set name), `dtype`, `device`,
    `attn_implementation`, `call` (extra forward kwargs) and `row` (keep one batch row, cut to its real
    tokens, to compare with that item run alone).
    """
    recipe = meta["replay"]
    actual, _ = _side(meta, tensors, recipe.get("actual", {}))
    expected, expected_inputs = _side(meta, tensors, recipe.get("expected", {}))
    masks = real_token_masks(expected, expected_inputs, meta) if recipe.get("real_tokens_only") else None
    return compare(actual, expected, meta["tolerance"], meta, masks)


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


REPLAYS = {
    "finite": replay_finite,
    "same_twice": replay_same_twice,
    "shapes": replay_shapes,
    "save_load": replay_save_load,
    "compare": replay_compare,
    "pipeline": replay_pipeline,
}

# -- replay kinds registered by properties (properties.artifacts.register_replay) ----------------


def main(argv: list[str]) -> int:
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
