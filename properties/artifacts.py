"""Failure artifacts, replay and shared example databases (a pytest plugin loaded by conftest.py).

Every property test calls `record(subject, inputs, prop=..., **details)` right after drawing.
Hypothesis runs the shrunk failing example last, so when a test fails the last record holds the
minimal failing input. This plugin then writes `<--failure-dir>/<test id>/`:

- `inputs.safetensors`: the drawn tensors (plus derived forward inputs such as `position_ids`, and
  tensor details under `<detail>.<name>`);
- `meta.json`: test id, property, how to replay it, the model (zoo config + seed, or checkpoint
  path), dtype, device, tolerance, the observed failure (message and parsed differences), the
  Hypothesis reproduction blob, seeds, library versions, and readable inputs (token ids, decoded
  text, raw text as UTF-8);
- `repro.py`: a copy of `properties/repro.py`, standalone (torch, transformers, safetensors).

`pytest properties/ --replay DIR` reruns exactly that case in the suite: it selects the test,
feeds Hypothesis the stored choice sequence through a one-entry example database (reuse phase
only, so a fixed model passes instead of raising `DidNotReproduce`), and checks that the drawn
inputs equal `inputs.safetensors`.

How a property replays standalone is `meta["replay"]`, a recipe it declares in `record(replay=...)`
with the builders below (the foundation properties are mapped in `FOUNDATION_REPLAYS`). There is one
replay per kind of comparison in `properties/repro.py`, so a new property gets a repro by declaring:

- `compared(pair(actual=side(...), expected=side(...)), ...)`: two runs compared within the
  tolerance (batching, batch order, padding, cache vs full, back ends, precision, devices, ...);
- `judged("finite", "shapes", ...)`: one run judged alone (finite, shapes, bad input, untouched);
- `processed(...)`: a processor rerun from the stored raw input and the saved processor;
- `measured(...)`: a timing or memory figure re-measured against the stored baseline.

A kind of its own is registered with `register_replay(kind, function)`. zoo/compat.py (the differences
between transformers 5.x releases) is copied into every repro.py, so one repro.py runs on each release.
"""

from __future__ import annotations

import dataclasses
import inspect
import json
import platform
import re
import shutil
import tempfile
import time
from pathlib import Path
from typing import Any, Callable, Mapping

import numpy as np
import pytest
import torch

DEFAULT_FAILURE_DIR = ".hfprops/failures"
REPRO_TEMPLATE = Path(__file__).with_name("repro.py")
REGISTERED_MARKER = "# -- replay kinds registered by properties"
ZOO_WEIGHTS = "weights.safetensors"  # a zoo model's weights, beside its config and seed
SEEDED_SOURCES = ("zoo", "registry")  # built here from a config and a seed (no checkpoint to load)
ARTIFACT_PROPERTY = "hfprops_failure_artifact"  # report.user_properties key (travels through xdist)

# property name -> replay recipe (a kind that properties/repro.py implements)
FOUNDATION_REPLAYS: dict[str, dict] = {
    "finite": {"kind": "judge", "checks": ["finite"]},
    "determinism": {"kind": "same_twice"},
    "shape contract": {"kind": "judge", "checks": ["shapes"]},
    "save/load round trip": {"kind": "save_load"},
    "pipeline agrees with forward": {"kind": "pipeline"},
}

# The most recent example of the running test: Hypothesis replays the shrunk example last,
# so on failure this holds the minimal failing input.
_LAST: dict[str, Any] = {}
# kind -> function whose source is written into repro.py (see register_replay)
_REGISTERED: dict[str, Callable] = {}
# Set while replaying an artifact: the stored drawn inputs, checked against the replayed draw.
_REPLAY_EXPECTED: dict[str, torch.Tensor] | None = None


class ReplayMismatch(Exception):
    """The replayed choice sequence drew other inputs than the artifact holds (strategies changed)."""


def record(subject, inputs: Mapping[str, Any], **details: Any) -> None:
    """Remember the subject and inputs of the current example (plus property-specific details).

    Details: `prop=` (the property name), `replay=` (how repro.py reruns it, see module doc),
    `dtype=`/`device=` (when the property ran a converted copy), `tolerance=`, and anything else
    needed to replay: arrays (or dicts of arrays) are stored in inputs.safetensors, strings as
    UTF-8 text in meta.json.
    """
    _LAST.clear()
    _LAST.update(subject=subject, inputs=inputs, details=details)
    if _REPLAY_EXPECTED is not None:
        _check_replayed(inputs)


def last_recorded() -> dict[str, Any]:
    return dict(_LAST)


def register_replay(kind: str, function: Callable) -> None:
    """Teach repro.py a new replay kind: `function(meta, tensors) -> list of problem strings`.

    The function's source is copied into the artifact's repro.py, so it must be self-contained:
    it may use torch, transformers, safetensors and repro.py's helpers (`load_model`, `input_set`,
    `forward`, `compare`, `difference`, `real_token_masks`, `row_outputs`), never hfprops modules.
    """
    _REGISTERED[kind] = function


# -- declaring a replay (what `record(replay=...)` takes) --------------------------------------------
def side(**how: Any) -> dict:
    """One run of a comparison (see `repro.run_side`): `inputs=` (a stored input set: "" the drawn
    inputs, "items.2", "other_inputs"), `dtype=`, `device=`, `attn_implementation=`, `quantize="qint8"`,
    `threads=`, `deterministic=`, `run=` ("forward", "full_logits", "cached_logits", "greedy",
    "gradients", "train_outputs") with its `prefix_length=`/`max_new_tokens=`/`use_cache=`/`seed=`/
    `checkpointing=`, `call=` (extra JSON forward kwargs), `mask_4d=`,
    `row=`/`row_mask=`, `rows=`."""
    return {key: _jsonable(str(value).removeprefix("torch.") if isinstance(value, torch.dtype) else value)
            for key, value in how.items() if value is not None}


def device_side(run_as) -> dict:
    """A `devices.pairs.Side` (device, dtype, threads, deterministic) as a replay side."""
    return side(device=run_as.device, dtype=run_as.dtype, threads=run_as.threads,
                deterministic=run_as.deterministic or None)


def pair(actual: dict | None = None, expected: dict | None = None, *, real_tokens: str | None = None,
         finite: bool = False, judge: str = "close", rows=None, what: str | None = None) -> dict:
    """Two sides compared within the artifact's tolerance; `real_tokens="expected"|"actual"`: compare only
    the real (unpadded) tokens of that side's inputs; `finite`: the actual side must be finite first;
    `judge="greedy"`: two greedy decodings (tokens and step logits, ties allowed), `rows=[a, e]` or "each"."""
    out = {"actual": actual or {}, "expected": expected or {}}
    if real_tokens:
        out["real_tokens"] = real_tokens
    if finite:
        out["finite"] = True
    if judge != "close":
        out["judge"], out["rows"] = judge, "each" if rows is None else list(rows)
    if what:
        out["what"] = what
    return out


def compared(*pairs: dict) -> dict:
    """Replay recipe: the pairs compared in order, the first that differs is the failure."""
    return {"kind": "compare", "pairs": list(pairs)}


def per_row(rows: int, make: Callable[[int], dict]) -> list[dict]:
    """`[make(0), ..., make(rows - 1)]`: one pair per batch row."""
    return [make(row) for row in range(rows)]


def judged(*checks: str, run_as: dict | None = None, **arguments: Any) -> dict:
    """Replay recipe: one run judged alone by `checks` ("finite", "shapes", "untouched", "bad_input",
    "clear_refusal", "finite_gradients"); "shapes" and "bad_input" get the subject's contract stored."""
    return {"kind": "judge", "checks": list(checks), "side": run_as or {}, **_jsonable(arguments)}


def processed(steps: list[dict]) -> dict:
    """Replay recipe: processor calls on the stored raw input with the saved processor, each judged by its
    expectation (`same_as`, `equals`, `at_most`, `shape`/`finite`/`range`, `round_trip`, `offsets_within`,
    `refuse`; see `repro.replay_processor`)."""
    return {"kind": "processor", "steps": _jsonable(steps)}


def measured(metric: str, **arguments: Any) -> dict:
    """Replay recipe: `metric` re-measured on the stored inputs against the stored baseline figure."""
    return {"kind": "perf", "metric": metric, **_jsonable(arguments)}


class Draws:
    """Stand-in for the `data` argument of a property test, for `@example`: `data.draw(..., label=L)`
    returns the value given for label L (`@example(data=Draws(inputs={"input_ids": ...}))`).

    Hypothesis cannot fill `st.data()` in an explicit example; this fills it with fixed draws, so a
    shrunk input (from the failure output or an artifact's meta.json) becomes a permanent example.
    """

    def __init__(self, **by_label: Any):
        self.by_label = by_label

    def draw(self, strategy, label: str | None = None):
        if label not in self.by_label:
            raise KeyError(f"Draws has no value for the draw labelled {label!r}; it has {sorted(self.by_label)}")
        return self.by_label[label]

    def __repr__(self) -> str:
        return f"Draws({', '.join(sorted(self.by_label))})"

    @classmethod
    def from_artifact(cls, path: str | Path) -> "Draws":
        """The drawn inputs of an artifact folder, as `Draws(inputs=...)` (numpy arrays, as strategies draw)."""
        _, meta, tensors = load_artifact(path)
        return cls(inputs={name: tensors[name].numpy() for name in meta["inputs"]})


# -- the artifact -------------------------------------------------------------------------------
def folder_name(nodeid: str) -> str:
    """A file-system friendly folder name for a test id: `test_finite.py-test_finite-bert`."""
    return re.sub(r"[^A-Za-z0-9_.-]+", "-", nodeid.rsplit("/", 1)[-1]).strip("-")


def write_artifact(root: Path, nodeid: str, recorded: Mapping[str, Any], error: BaseException) -> Path:
    """Write the artifact folder of a failed test from its last recorded example; returns the folder."""
    from safetensors.torch import save_file

    subject, inputs, details = recorded["subject"], recorded["inputs"], dict(recorded["details"])
    root.mkdir(parents=True, exist_ok=True)
    folder = root / folder_name(nodeid)
    tensors, call = _forward_tensors(subject, inputs)
    detail_meta = {}
    details = {key: value() if callable(value) and key != "replay" else value for key, value in details.items()}
    for key, value in details.items():  # a callable detail is declared lazily: computed only for a failure
        if key == "replay":
            continue
        stored, described = _store_detail(key, value)
        tensors.update(stored)
        detail_meta[key] = described
    meta = {
        "test_id": nodeid,
        "property": details.get("prop", nodeid),
        "replay": _replay_recipe(subject, inputs, details),
        "model": _model_meta(subject),
        "spec": _jsonable(dataclasses.asdict(subject.spec)),
        # media tokens the model's stream holds beside the text, and whether first (Subject.media_stream)
        "media_stream": list(subject.media_stream(inputs)) if "attention_mask" in inputs else [0, False],
        # the model as the suite holds it; a property that ran a converted copy says so in details / replay
        "dtype": str(subject.dtype).removeprefix("torch."),
        "device": str(subject.device),
        "tolerance": _tolerance_meta(details.get("tolerance"), error),
        "observed": observed(error),
        "inputs": {name: _describe(tensors[name]) for name in inputs},
        "text": _texts(subject, inputs, details),
        "call": call,
        "details": detail_meta,
        "seeds": _seeds(subject),
        "hypothesis": _hypothesis_meta(error),
        "versions": versions(),
        "created": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
    }
    meta["commands"] = {
        "replay in the suite": f"pytest properties/ --replay {folder}",
        "standalone": f"python {folder / 'repro.py'}",
    }
    # Write beside the final folder, then swap it in: a reader never sees half an artifact.
    staging = Path(tempfile.mkdtemp(prefix=f".{folder.name}.", dir=root))
    # clone: safetensors refuses tensors sharing memory (a detail may hold the very arrays of the inputs)
    save_file({k: v.detach().to("cpu").clone().contiguous() for k, v in tensors.items()},
              str(staging / "inputs.safetensors"))
    (staging / "meta.json").write_text(json.dumps(_jsonable(meta), indent=2, ensure_ascii=False, allow_nan=False)
                                       + "\n",
                                       encoding="utf-8")
    (staging / "repro.py").write_text(repro_source(meta["replay"]["kind"]), encoding="utf-8")
    if subject.spec.source in SEEDED_SOURCES:
        # The weights themselves: a seeded init is the same only within one transformers release (init
        # code changes between releases), and a bisect runs repro.py on many. Tiny models: some 100 KiB.
        # Read off the parameters and buffers themselves, not `state_dict()` (which a defect may override).
        weights = {**dict(subject.model.named_parameters()), **dict(subject.model.named_buffers())}
        save_file({k: v.detach().to("cpu").clone().contiguous() for k, v in weights.items()}, str(staging / ZOO_WEIGHTS))
    if meta["replay"]["kind"] in ("pipeline", "processor") and subject.processor is not None:
        subject.processor.save_pretrained(staging / "processor")  # the processor replays need it
    if folder.exists():
        shutil.rmtree(folder)
    staging.rename(folder)
    return folder


COMPAT_MODULE = Path(__file__).resolve().parents[1] / "zoo" / "compat.py"
COMPAT_MARKER = "# -- zoo/compat.py (copied in)"


def compat_source() -> str:
    """zoo/compat.py as it stands now, ready to paste into repro.py ('' while it does not exist)."""
    if not COMPAT_MODULE.is_file():
        return ""
    lines = COMPAT_MODULE.read_text(encoding="utf-8").splitlines()
    # repro.py starts with its own `from __future__` import; a second one mid-file is a SyntaxError
    return "\n".join(line for line in lines if not line.startswith("from __future__ import")) + "\n"


def repro_source(kind: str) -> str:
    """repro.py for one artifact: the template, zoo/compat.py copied in, and the registered replay kind it needs."""
    source = REPRO_TEMPLATE.read_text(encoding="utf-8")
    compat = compat_source()
    if compat:
        source = source.replace(COMPAT_MARKER, f"{COMPAT_MARKER}: {COMPAT_MODULE.name} as of "
                                f"{time.strftime('%Y-%m-%d', time.gmtime())}\n{compat}\n# -- end of zoo/compat.py", 1)
    if kind not in _REGISTERED:
        return source
    function = _REGISTERED[kind]
    added = f"{REGISTERED_MARKER}\n\n{inspect.getsource(function)}\n\nREPLAYS[{kind!r}] = {function.__name__}\n"
    return source.replace(next(line for line in source.splitlines() if line.startswith(REGISTERED_MARKER)),
                          added.rstrip("\n"), 1)


def _forward_tensors(subject, inputs) -> tuple[dict[str, torch.Tensor], dict]:
    """The drawn tensors plus what the subject derives for the forward (position ids), and the call flags."""
    from zoo.subject import to_tensors

    tensors = dict(to_tensors(inputs))
    call = {}
    for key, value in subject.model_kwargs(inputs, hidden_states=True).items():
        if isinstance(value, torch.Tensor):
            tensors.setdefault(key, value)
        else:
            call[key] = value
    return tensors, call


def _has_arrays(value: Any) -> bool:
    if isinstance(value, (np.ndarray, torch.Tensor)) or type(value).__module__.startswith("PIL."):
        return True
    if isinstance(value, Mapping):
        return any(_has_arrays(v) for v in value.values())
    return isinstance(value, (list, tuple)) and any(_has_arrays(v) for v in value)


def _store_detail(key: str, value: Any) -> tuple[dict[str, torch.Tensor], Any]:
    """Split one detail into tensors for inputs.safetensors and a JSON description for meta.json.

    Arrays (also inside dicts and lists) become tensors named by their path (`other_inputs.input_ids`,
    `items.1.attention_mask`); repro.py's `input_set("items.1")` gives one stored set back.
    """
    if isinstance(value, (np.ndarray, torch.Tensor)):
        tensor = torch.as_tensor(np.ascontiguousarray(value)) if isinstance(value, np.ndarray) else value
        return {f"{key}.value": tensor}, {"stored_as": f"{key}.value", **_describe(tensor)}
    if type(value).__module__.startswith("PIL."):
        tensor = torch.as_tensor(np.asarray(value).copy())
        return {f"{key}.value": tensor}, {"stored_as": f"{key}.value", "type": "PIL.Image", "mode": value.mode,
                                          "size": list(value.size)}
    if not _has_arrays(value):
        return {}, _jsonable(value)
    pairs = value.items() if isinstance(value, Mapping) else enumerate(value)
    tensors, described = {}, {}
    for name, item in pairs:
        if isinstance(item, (np.ndarray, torch.Tensor)):  # a named input of a set: stored under its own name
            tensors[f"{key}.{name}"] = torch.as_tensor(np.ascontiguousarray(item)) if isinstance(item, np.ndarray) \
                else item
            described[str(name)] = {"stored_as": f"{key}.{name}", **_describe(tensors[f"{key}.{name}"])}
        else:
            stored, described[str(name)] = _store_detail(f"{key}.{name}", item)
            tensors.update(stored)
    return tensors, described if isinstance(value, Mapping) else list(described.values())


def _describe(tensor: torch.Tensor) -> dict:
    """dtype, shape and (for ids and small tensors) the values, so meta.json reads without tools."""
    out = {"dtype": str(tensor.dtype).removeprefix("torch."), "shape": list(tensor.shape)}
    if not tensor.is_floating_point() or tensor.numel() <= 64:
        out["values"] = tensor.tolist()
    elif tensor.numel():
        t = tensor.detach().double()
        out.update(min=float(t.min()), max=float(t.max()), mean=float(t.mean()))
    return out


# Details holding raw text the property fed the model (tokenized into meta.json); other strings are metadata.
TEXT_DETAILS = ("raw_input", "text", "prompt")


def _is_text_detail(key: str, value: Any) -> bool:
    return isinstance(value, str) and (key in TEXT_DETAILS or key.endswith("_text"))


def _tokenizer(subject):
    processor = getattr(subject, "processor", None)
    tokenizer = getattr(processor, "tokenizer", processor)
    return tokenizer if hasattr(tokenizer, "decode") else None


def _texts(subject, inputs, details) -> dict:
    """Text in and around the failing input: decoded token ids per row, raw strings with their ids."""
    tokenizer, texts = _tokenizer(subject), {}
    if tokenizer is None:
        return {key: {"text": value} for key, value in details.items() if _is_text_detail(key, value)}
    for name in ("input_ids", "decoder_input_ids"):
        if name in inputs:
            ids = np.asarray(inputs[name])
            mask = np.asarray(inputs["attention_mask"]).astype(bool) if name == "input_ids" and \
                "attention_mask" in inputs else np.ones_like(ids, dtype=bool)
            texts[name] = [tokenizer.decode(row[keep].tolist()) for row, keep in zip(ids, mask)]
    for key, value in details.items():
        if _is_text_detail(key, value):
            texts[key] = {"text": value, "token_ids": tokenizer(value)["input_ids"]}
    return texts


def _model_meta(subject) -> dict:
    spec, model = subject.spec, subject.model
    meta = {"name": spec.name, "model_class": type(model).__name__, "config_class": type(model.config).__name__,
            "config": model.config.to_dict()}
    if spec.source == "zoo":
        return {**meta, "source": "zoo", "seed": spec.seed, "arg": spec.name}
    if spec.source == "registry":  # `--model registry:<its type>` selects it again, not the whole registry
        from zoo.catalog import split_id
        return {**meta, "source": "registry", "seed": spec.seed, "arg": f"registry:{split_id(spec.name)[0]}"}
    return {**meta, "source": "checkpoint", "path": spec.source, "arg": spec.source}


def _replay_recipe(subject, inputs, details) -> dict:
    recipe = details.get("replay") or FOUNDATION_REPLAYS.get(details.get("prop"), {"kind": "suite-only"})
    if callable(recipe):  # declared lazily (`replay=lambda: compared(...)`): built only for a failure
        recipe = recipe()
    recipe = {"kind": recipe} if isinstance(recipe, str) else dict(recipe)
    if recipe["kind"] == "shapes" or (recipe["kind"] == "judge" and {"shapes", "bad_input"} & set(recipe["checks"])):
        recipe.setdefault("contract", _contract_meta(subject, inputs))
    return _jsonable(recipe)


def _contract_meta(subject, inputs) -> dict | None:
    """The shape contract for these inputs as JSON (required, optional, unchecked); None if it has none."""
    try:
        found = subject.contract(inputs, hidden_states=True)
    except Exception:  # bad input may have no contract at all (an empty batch): judged on finiteness only
        return None
    def shapes(table):
        return {name: [list(w) for w in want] if isinstance(want, list) else list(want) for name, want in table.items()}
    return {"required": shapes(found.required), "optional": shapes(found.optional),
            "unchecked": sorted(found.unchecked)}


_TOLERANCE = re.compile(r"rtol=(?P<rtol>[-+.\deE]+), atol=(?P<atol>[-+.\deE]+)(?P<scaled> x max\(1, max\|ref\|\))?")


def _tolerance_meta(given, error: BaseException) -> dict:
    """rtol/atol as the property stated them, else as its failure message stated them, else exact."""
    if given is not None and hasattr(given, "rtol"):
        return {"rtol": given.rtol, "atol": given.atol, "scale_atol": given.scale_atol, "text": str(given),
                "why": given.why}
    match = _TOLERANCE.search(str(given) if given is not None else _message(_last_error(error)))
    if match is None:
        return {"rtol": 0.0, "atol": 0.0, "scale_atol": False, "text": "rtol=0, atol=0"}
    return {"rtol": float(match["rtol"]), "atol": float(match["atol"]), "scale_atol": bool(match["scaled"]),
            "text": match[0]}


# -- the observed failure -------------------------------------------------------------------------
_DIFFERS = re.compile(
    r"output '(?P<output>[^']+)' differs beyond (?P<tolerance>[^\n]+)\n"
    r"max abs diff (?P<max_abs>\S+) at (?P<where>\([^)]*\)), max rel diff (?P<max_rel>\S+), "
    r"(?P<outside>\S+)% of elements outside"
)
_NONFINITE = re.compile(
    r"(?P<output>[\w.]+): (?P<count>\d+) of (?P<total>\d+) non-finite "
    r"\(NaN (?P<nan>\d+), Inf (?P<inf>\d+)\), first at (?P<where>\([^)]*\))"
)
_BLOB = re.compile(r"@reproduce_failure\('(?P<version>[^']+)', b'(?P<blob>[^']+)'\)")


def _last_error(error: BaseException) -> BaseException:
    """The failure Hypothesis replayed last (the last of a group when it reports several bugs)."""
    while isinstance(error, BaseExceptionGroup) and error.exceptions:
        error = error.exceptions[-1]
    return error


def _message(error: BaseException) -> str:
    """The property's own message, without the `assert ...` explanation pytest's rewriting appends."""
    return re.split(r"\nassert ", str(error), maxsplit=1)[0]


def _number(text: str) -> float | str:
    """A parsed figure; inf and nan stay strings so that meta.json is strict JSON."""
    value = float(text)
    return value if np.isfinite(value) else text


def observed(error: BaseException) -> dict:
    """The failure as the suite saw it: exception type, message, and the differences it reports."""
    last = _last_error(error)
    message = _message(last)
    differences = [
        {"output": m["output"], "max_abs": _number(m["max_abs"]), "max_rel": _number(m["max_rel"]),
         "where": m["where"], "percent_outside": _number(m["outside"]), "tolerance": m["tolerance"]}
        for m in _DIFFERS.finditer(message)
    ] + [
        {"output": m["output"], "non_finite": int(m["count"]), "of": int(m["total"]), "nan": int(m["nan"]),
         "inf": int(m["inf"]), "first_at": m["where"]}
        for m in _NONFINITE.finditer(message)
    ]
    return {"exception": type(last).__name__, "message": message, "differences": differences}


def reproduction_blob(error: BaseException) -> tuple[str, str] | None:
    """(Hypothesis version, blob) of the `@reproduce_failure` note Hypothesis attached, if any."""
    notes = [note for e in (error, _last_error(error)) for note in getattr(e, "__notes__", ())]
    found = [m for note in notes for m in _BLOB.finditer(note)]
    return (found[-1]["version"], found[-1]["blob"]) if found else None


def _hypothesis_meta(error: BaseException) -> dict:
    import hypothesis

    blob = reproduction_blob(error)
    return {
        "version": hypothesis.__version__,
        "profile": hypothesis.settings._current_profile,
        "reproduce_failure": f"@reproduce_failure({blob[0]!r}, b{blob[1]!r})" if blob else None,
        "blob": blob[1] if blob else None,
        "blob_version": blob[0] if blob else None,
    }


def _seeds(subject) -> dict:
    import hypothesis

    current = hypothesis.settings.default
    return {"model_init": subject.spec.seed if subject.spec.source in SEEDED_SOURCES else None,
            "hypothesis_derandomize": current.derandomize, "torch_initial_seed": torch.initial_seed()}


def versions() -> dict:
    import hypothesis
    import safetensors
    import transformers

    return {"python": platform.python_version(), "platform": platform.platform(), "torch": torch.__version__,
            "transformers": transformers.__version__, "safetensors": safetensors.__version__,
            "numpy": np.__version__, "hypothesis": hypothesis.__version__}


def _jsonable(value: Any) -> Any:
    """`value` as strict JSON: containers walked, numpy scalars unwrapped, paths as text, others by repr."""
    if isinstance(value, np.generic):
        return _jsonable(value.item())
    if isinstance(value, (Path, torch.dtype, torch.device)):
        return str(value)
    if isinstance(value, (frozenset, set)):
        return sorted(value)
    if isinstance(value, Mapping):
        return {str(k): _jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_jsonable(v) for v in value]
    if isinstance(value, float) and not np.isfinite(value):
        return str(value)  # "nan", "inf", "-inf": meta.json stays strict JSON
    if isinstance(value, (str, int, float, bool)) or value is None:
        return value
    return repr(value)


# -- replay -----------------------------------------------------------------------------------------
def load_artifact(path: str | Path) -> tuple[Path, dict, dict[str, torch.Tensor]]:
    """(folder, meta, tensors) of an artifact folder (or of its meta.json)."""
    from safetensors.torch import load_file

    folder = Path(path)
    folder = folder.parent if folder.name == "meta.json" else folder
    if not (folder / "meta.json").is_file():
        raise pytest.UsageError(f"--replay {path}: no meta.json there; give a failure artifact folder")
    meta = json.loads((folder / "meta.json").read_text(encoding="utf-8"))
    return folder, meta, load_file(str(folder / "inputs.safetensors"))


def _check_replayed(inputs: Mapping[str, Any]) -> None:
    from zoo.subject import to_tensors

    drawn = to_tensors(inputs)
    stored = _REPLAY_EXPECTED
    same = set(drawn) == set(stored) and all(
        drawn[k].shape == stored[k].shape and torch.equal(drawn[k], stored[k].to(drawn[k].dtype)) for k in stored
    )
    if not same:
        raise ReplayMismatch(
            "replay drew other inputs than the artifact's inputs.safetensors: the strategies or Hypothesis "
            "changed since it was written; run the artifact's repro.py instead"
        )


def _replay_database(choices_blob: str):
    """A one-entry example database holding the failing choice sequence for whichever test asks."""
    from hypothesis.core import decode_failure
    from hypothesis.database import ExampleDatabase, choices_to_bytes

    value = choices_to_bytes(decode_failure(choices_blob.encode()))

    class ReplayDatabase(ExampleDatabase):
        def fetch(self, key: bytes):
            if not key.endswith((b".secondary", b".pareto")):
                yield value

        def save(self, key: bytes, value: bytes) -> None:  # replay never changes the artifact
            pass

        def delete(self, key: bytes, value: bytes) -> None:
            pass

    return ReplayDatabase()


def examples_database(where: str):
    """A Hypothesis example database from `--examples-db`: a directory, or redis://host:port[/db]."""
    from hypothesis.database import DirectoryBasedExampleDatabase

    if where.startswith("redis://"):
        try:
            import redis
            from hypothesis.extra.redis import RedisExampleDatabase
        except ImportError:
            raise pytest.UsageError(f"--examples-db {where}: needs the redis package (pip install -e '.[team]')")
        return RedisExampleDatabase(redis.Redis.from_url(where))
    return DirectoryBasedExampleDatabase(where)


# -- pytest hooks -----------------------------------------------------------------------------------
def pytest_addoption(parser):
    group = parser.getgroup("hfprops-failures", "hfprops: failure artifacts, replay, shared examples")
    group.addoption("--failure-dir", default=DEFAULT_FAILURE_DIR, metavar="DIR",
                    help=f"where failing properties write their artifact folders (default {DEFAULT_FAILURE_DIR}/)")
    group.addoption("--replay", default=None, metavar="PATH",
                    help="rerun exactly the failing case stored in an artifact folder (selects its test)")
    group.addoption("--examples-db", default=None, metavar="DIR|redis://HOST:PORT",
                    help="Hypothesis example database shared by workers and machines (a shared directory or "
                         "a Redis server); failures found by one run are replayed first by the others")


@pytest.hookimpl(tryfirst=True)
def pytest_configure(config):
    """Runs before conftest's: a replay without --model selects the artifact's model."""
    replay = config.getoption("replay", None)
    session = FailureArtifacts(config)
    if replay:
        session.replay = load_artifact(replay)
        if not config.getoption("model"):
            config.option.model = [session.replay[1]["model"]["arg"]]
    config.pluginmanager.register(session, "hfprops-failure-artifacts")


class FailureArtifacts:
    """Per-session state: where artifacts go, which ones were written, the artifact being replayed."""

    def __init__(self, config):
        self.config = config
        self.root = Path(config.invocation_params.dir, config.getoption("failure_dir", DEFAULT_FAILURE_DIR))
        self.replay: tuple[Path, dict, dict] | None = None
        self.written: list[str] = []
        self.replay_outcome: str | None = None

    def pytest_sessionstart(self, session):
        # After Hypothesis' plugin has loaded the profile, before test modules capture it.
        where = self.config.getoption("examples_db", None)
        if where:
            from hypothesis import settings

            base = settings._current_profile or "default"
            settings.register_profile(f"{base}+shared", parent=settings.default, database=examples_database(where))
            settings.load_profile(f"{base}+shared")

    def pytest_ignore_collect(self, collection_path, config):
        """While replaying, import only the artifact's test file (not every property module)."""
        if self.replay is None or collection_path.suffix != ".py" or not collection_path.name.startswith("test_"):
            return None
        wanted = Path(config.rootpath, self.replay[1]["test_id"].split("::", 1)[0]).resolve()
        return True if collection_path.resolve() != wanted else None

    def pytest_collection_modifyitems(self, config, items):
        if self.replay is None:
            return
        global _REPLAY_EXPECTED
        folder, meta, tensors = self.replay
        chosen = [item for item in items if item.nodeid == meta["test_id"]]
        if not chosen:
            raise pytest.UsageError(
                f"--replay {folder}: test {meta['test_id']} was not collected; run from the repository root "
                f"with the same --model ({meta['model']['arg']}) and the test's file or folder"
            )
        config.hook.pytest_deselected(items=[item for item in items if item not in chosen])
        items[:] = chosen
        item, blob = chosen[0], meta["hypothesis"]["blob"]
        if blob and hasattr(item.obj, "hypothesis"):
            from hypothesis import Phase, settings

            # What @settings(...) sets on a @given test; a settings decorator already applied is kept as parent.
            item.obj._hypothesis_internal_use_settings = settings(
                item.obj._hypothesis_internal_use_settings, database=_replay_database(blob), phases=(Phase.reuse,)
            )
            _REPLAY_EXPECTED = {name: tensors[name] for name in meta["inputs"]}

    @pytest.hookimpl(wrapper=True)
    def pytest_runtest_call(self, item):
        _LAST.clear()  # a test that records nothing must not inherit the previous test's example
        return (yield)

    @pytest.hookimpl(wrapper=True, tryfirst=True)
    def pytest_runtest_makereport(self, item, call):
        report = yield
        if call.when != "call" or self.replay is not None:
            return report
        if report.failed and call.excinfo is not None and _LAST:
            try:
                folder = write_artifact(self.root, item.nodeid, _LAST, call.excinfo.value)
            except Exception as exc:  # never let the artifact hide the property's own failure
                report.sections.append(("hfprops failure artifact", f"could not be written: {exc!r}"))
                return report
            if folder.is_relative_to(self.config.invocation_params.dir):  # show it as the user typed it
                folder = folder.relative_to(self.config.invocation_params.dir)
            report.user_properties.append((ARTIFACT_PROPERTY, str(folder)))
            report.sections.append((
                "hfprops failure artifact",
                f"{folder}\n  replay in the suite: pytest properties/ --replay {folder}\n"
                f"  standalone:          python {folder / 'repro.py'}",
            ))
        return report

    def pytest_runtest_logreport(self, report):
        self.written += [value for key, value in report.user_properties if key == ARTIFACT_PROPERTY]
        if self.replay is not None and report.when == "call":
            if report.failed and ReplayMismatch.__name__ in str(report.longrepr):
                self.replay_outcome = "could not be replayed: the test now draws other inputs; run its repro.py"
            else:
                self.replay_outcome = "reproduces" if report.failed else f"does not reproduce ({report.outcome})"

    @pytest.hookimpl(wrapper=True, tryfirst=True)
    def pytest_terminal_summary(self, terminalreporter):
        """One line after pytest's short test summary (outside its wrapper), before the final counts."""
        result = yield
        if self.replay is not None:
            terminalreporter.write_line(f"hfprops: replayed {self.replay[0]}: the failure "
                                        f"{self.replay_outcome or 'was not run'}")
        elif self.written:
            terminalreporter.write_line(
                f"hfprops: failure artifacts (inputs.safetensors, meta.json, repro.py): {', '.join(self.written)}"
            )
        return result
