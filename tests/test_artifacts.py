"""Failure artifacts, replay and shared example databases, end to end in fresh processes.

The planted defect is a user checkpoint: the zoo BERT whose embedding rows for the letters a-z
are NaN (a fine-tune that left rows uninitialised). The suite loads it with `--model DIR`, and so
does the artifact's repro.py, so both see the same broken weights; removing the defect means
saving the healthy weights over them.
"""

from __future__ import annotations

import importlib.util
import json
import os
import re
import shutil
import socket
import string
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch
from hypothesis import Phase, example, given, settings, strategies as st

from properties import artifacts
from properties.test_finite import check_finite
from strategies.batches import model_inputs
from tests.planted import healthy

ROOT = Path(__file__).resolve().parents[1]
TIMEOUT = 300


class PlantedCheckpoint:
    """The zoo BERT saved as a checkpoint directory, with or without the NaN embedding rows."""

    def __init__(self, directory: Path):
        self.directory = directory
        subject = healthy("bert")
        self.letter_ids = sorted({i for c in string.ascii_lowercase
                                  for i in subject.processor(c, add_special_tokens=False)["input_ids"]})
        subject.processor.save_pretrained(directory)
        self.plant()

    def _save(self, broken: bool) -> None:
        model = healthy("bert").model
        state = {k: v.clone() for k, v in model.state_dict().items()}
        if broken:
            state["embeddings.word_embeddings.weight"][self.letter_ids] = float("nan")
        model.save_pretrained(self.directory, state_dict=state)

    def plant(self) -> None:
        self._save(broken=True)

    def repair(self) -> None:
        self._save(broken=False)

    def __str__(self) -> str:
        return str(self.directory)


def run_all(*commands: tuple[str, ...]) -> list[subprocess.CompletedProcess]:
    """Run `python *args` for each command, side by side, each in a fresh process."""
    env = {k: v for k, v in os.environ.items() if k != "HYPOTHESIS_PROFILE"}
    processes = [subprocess.Popen([sys.executable, *args], cwd=ROOT, env=env, text=True,
                                  stdout=subprocess.PIPE, stderr=subprocess.PIPE) for args in commands]
    results = []
    for args, process in zip(commands, processes):
        stdout, stderr = process.communicate(timeout=TIMEOUT)
        result = subprocess.CompletedProcess(args, process.returncode, stdout, stderr)
        result.output = stdout + stderr
        results.append(result)
    return results


def run(*args: str) -> subprocess.CompletedProcess:
    return run_all(args)[0]


def suite(*args: str) -> tuple[str, ...]:
    return ("-m", "pytest", "-q", "-p", "no:randomly", *args)


def run_suite(*args: str) -> subprocess.CompletedProcess:
    return run(*suite(*args))


@pytest.fixture(scope="module")
def planted(tmp_path_factory) -> PlantedCheckpoint:
    return PlantedCheckpoint(tmp_path_factory.mktemp("nan-rows-bert"))


FAILING_RUN = ("properties/test_finite.py", "properties/test_determinism.py", "properties/test_pipeline.py",
               "properties/test_save_load.py::test_same_outputs")


@pytest.fixture(scope="module")
def failed_run(planted, tmp_path_factory):
    """One ci run of four properties on the planted checkpoint, two xdist workers sharing an example
    database directory: (result, {property: artifact folder}, the run's arguments)."""
    failures, shared = tmp_path_factory.mktemp("failures"), tmp_path_factory.mktemp("shared-examples")
    args = ("-n", "2", "--model", str(planted), "--hypothesis-profile=ci", "--examples-db", str(shared),
            "--hypothesis-show-statistics", "--failure-dir", str(failures))
    result = run_suite(*FAILING_RUN, *args)
    folders = {}
    for folder in failures.iterdir():
        meta = json.loads((folder / "meta.json").read_text(encoding="utf-8"))
        folders[meta["property"]] = folder
    return result, folders, args


def test_failures_write_artifacts_and_name_them_at_the_end(failed_run):
    result, folders, _ = failed_run
    assert result.returncode == 1, result.output
    assert set(folders) == {"finite", "determinism", "pipeline agrees with forward", "save/load round trip"}
    for folder in folders.values():
        assert {"inputs.safetensors", "meta.json", "repro.py"} <= {p.name for p in folder.iterdir()}
    summary = [line for line in result.stdout.splitlines() if line.startswith("hfprops: failure artifacts")]
    assert len(summary) == 1, result.stdout
    assert all(str(folder) in summary[0] for folder in folders.values()), summary[0]


def test_artifact_of_a_text_failure_reads_by_hand(failed_run, planted):
    """Raw text, its token ids and the observed difference are in meta.json as written, in UTF-8."""
    from safetensors.torch import load_file
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(str(planted))
    _, folders, _ = failed_run
    pipeline = folders["pipeline agrees with forward"]
    assert (pipeline / "processor" / "tokenizer.json").is_file()  # the pipeline replay needs it
    raw = (pipeline / "meta.json").read_text(encoding="utf-8")
    meta = json.loads(raw)
    text = meta["details"]["raw_input"]
    assert json.dumps(text, ensure_ascii=False) in raw  # stored as UTF-8 text, not \u escapes
    assert meta["text"]["raw_input"] == {"text": text, "token_ids": tokenizer(text)["input_ids"]}
    assert set(meta["text"]["raw_input"]["token_ids"]) & set(planted.letter_ids)  # the text hits a NaN row
    (difference,) = meta["observed"]["differences"]
    assert difference["output"] == "last_hidden_state" and difference["max_abs"] == "inf"
    assert f"max abs diff inf at {difference['where']}" in meta["observed"]["message"]

    finite = json.loads((folders["finite"] / "meta.json").read_text(encoding="utf-8"))
    ids, mask = finite["inputs"]["input_ids"]["values"], finite["inputs"]["attention_mask"]["values"]
    assert finite["text"]["input_ids"] == [
        tokenizer.decode([t for t, m in zip(row, keep) if m]) for row, keep in zip(ids, mask)
    ]
    assert finite["observed"]["differences"][0]["nan"] > 0
    assert finite["model"]["path"] == str(planted) and finite["versions"]["transformers"]
    assert finite["hypothesis"]["reproduce_failure"].startswith("@reproduce_failure(")

    repro = _load_repro(pipeline)  # the standalone pipeline replay finds the same difference
    meta["folder"] = str(pipeline)
    (problem,) = repro.REPLAYS["pipeline"](meta, load_file(str(pipeline / "inputs.safetensors")))
    assert problem.splitlines() == meta["observed"]["message"].splitlines()[:2]


def test_replay_and_repro_reproduce_until_the_defect_is_removed(failed_run, planted):
    """`--replay` and repro.py (fresh processes) report the suite's numbers on the broken checkpoint, and
    pass once it is fixed; the comparison replays (determinism, save/load) report the suite's max abs diff."""
    from safetensors.torch import load_file

    _, folders, _ = failed_run
    finite = folders["finite"]
    finite_said = json.loads((finite / "meta.json").read_text())["observed"]["message"].splitlines()[0]
    checks = (suite("properties/", "--replay", str(finite)), (str(finite / "repro.py"),))

    replay, repro = run_all(*checks)
    assert replay.returncode == 1, replay.output
    assert finite_said in replay.output and "1 failed" in replay.output
    assert f"hfprops: replayed {finite}: the failure reproduces" in replay.stdout
    assert repro.returncode == 1, repro.output
    assert finite_said in repro.stdout.splitlines()  # the same counts, the same first position
    for name in ("determinism", "save/load round trip"):
        meta = json.loads((folders[name] / "meta.json").read_text())
        (problem,) = _load_repro(folders[name]).REPLAYS[meta["replay"]["kind"]](
            meta, load_file(str(folders[name] / "inputs.safetensors")))
        # model, property, output, tolerance; then max abs/rel diff, where, share outside the tolerance
        assert problem.splitlines() == meta["observed"]["message"].splitlines()[:2]

    planted.repair()
    try:
        replay, repro = run_all(*checks)
    finally:
        planted.plant()
    assert replay.returncode == 0, replay.output
    assert f"hfprops: replayed {finite}: the failure does not reproduce (passed)" in replay.stdout
    assert repro.returncode == 0 and "NOT REPRODUCED" in repro.stdout, repro.output


def _load_repro(folder: Path):
    spec = importlib.util.spec_from_file_location(f"repro_{folder.name.replace('.', '_')}", folder / "repro.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _artifact(tmp_path, subject, inputs, **details):
    """Write the artifact of a failed example of `subject` and load it with its own repro.py."""
    from safetensors.torch import load_file

    recorded = {"subject": subject, "inputs": inputs, "details": details}
    folder = artifacts.write_artifact(tmp_path, "properties/test_x.py::test_x[gpt2]", recorded, AssertionError("x"))
    meta = json.loads((folder / "meta.json").read_text(encoding="utf-8"))
    return folder, meta, load_file(str(folder / "inputs.safetensors")), _load_repro(folder)


def test_repro_rebuilds_zoo_models_and_replays_every_foundation_kind(tmp_path):
    """A zoo artifact's repro.py rebuilds the exact zoo weights; each replay kind passes on the healthy model."""
    subject = healthy("gpt2")
    inputs = {"input_ids": torch.tensor([[0, 5, 7], [3, 1, 2]]).numpy(),
              "attention_mask": torch.tensor([[0, 1, 1], [1, 1, 1]]).numpy()}
    for prop, kind in (("finite", "judge"), ("determinism", "same_twice"), ("shape contract", "judge"),
                       ("save/load round trip", "save_load")):
        folder, meta, tensors, repro = _artifact(tmp_path / kind, subject, inputs, prop=prop)
        assert meta["replay"]["kind"] == kind
        assert repro.REPLAYS[kind](meta, tensors) == [], kind
    rebuilt = repro.load_model(meta).state_dict()
    assert all(torch.equal(rebuilt[k], v) for k, v in subject.model.state_dict().items())
    assert torch.equal(tensors["position_ids"], torch.tensor([[0, 0, 1], [0, 1, 2]]))  # derived for GPT-2

    # a two-sided comparison another property could declare: eager attention against sdpa
    recipe = {"kind": "compare", "actual": {"attn_implementation": "eager"}, "expected": {}, "real_tokens_only": True}
    folder, meta, tensors, repro = _artifact(tmp_path / "compare", subject, inputs, prop="attention",
                                             replay=recipe, tolerance="rtol=1e-05, atol=1e-05")
    assert meta["tolerance"]["rtol"] == 1e-5 and repro.REPLAYS["compare"](meta, tensors) == []
    meta["tolerance"] = {"rtol": 0.0, "atol": 1e-12, "text": "rtol=0, atol=1e-12"}  # too strict for a reordering
    (problem,) = repro.REPLAYS["compare"](meta, tensors)
    assert "[gpt2] attention: output" in problem and "max abs diff" in problem


@pytest.mark.parametrize("name", ["fsmt-cond-gen", "llama-causal-lm"])
def test_repro_rebuilds_registry_models_offline(tmp_path, name):
    """A registry artifact's repro.py rebuilds the tiny seeded model (no hub lookup), and its suite
    replay selects that model type, not the whole registry."""
    from zoo.catalog import build_catalog_subject

    subject = build_catalog_subject(name)
    inputs = {"input_ids": torch.tensor([[0, 5, 7]]).numpy(), "attention_mask": torch.tensor([[1, 1, 1]]).numpy()}
    folder, meta, tensors, repro = _artifact(tmp_path, subject, inputs, prop="determinism")
    assert meta["model"]["arg"] == f"registry:{name.split('-')[0]}"
    rebuilt = repro.load_model(meta).state_dict()
    assert all(torch.equal(rebuilt[k], v) for k, v in subject.model.state_dict().items())
    assert repro.REPLAYS["same_twice"](meta, tensors) == []


@pytest.mark.parametrize("name, raw", [
    ("bert", "Hello wörld 👍"), ("gpt2", "the cat sat"), ("vit", "image"), ("clip", "image"), ("whisper", "audio"),
])
def test_repro_replays_the_pipeline_property(tmp_path, name, raw):
    """The pipeline replay (processor saved in the artifact) agrees with the healthy model for each raw kind."""
    from PIL import Image

    raw = {"image": Image.new("RGB", (40, 30), (200, 30, 90)), "audio": np.sin(np.arange(8000) / 9.0)}.get(raw, raw)
    folder, meta, tensors, repro = _artifact(tmp_path, healthy(name), {}, prop="pipeline agrees with forward",
                                             raw_input=raw)
    meta["folder"] = str(folder)
    assert meta["replay"]["kind"] == "pipeline" and (folder / "processor").is_dir()
    assert repro.REPLAYS["pipeline"](meta, tensors) == []


def _replay_first_row_is_finite(meta, tensors):
    model = load_model(meta)  # noqa: F821 (defined in repro.py, where this source is copied)
    outputs = forward(model, {k: v[:1] for k, v in input_set(tensors).items()}, meta["call"])  # noqa: F821
    return [f"{name} is not finite" for name, t in outputs.items() if not t.isfinite().all()]


def test_properties_register_their_own_replay(tmp_path, monkeypatch):
    monkeypatch.setattr(artifacts, "_REGISTERED", {})
    artifacts.register_replay("first_row_finite", _replay_first_row_is_finite)
    inputs = {"input_ids": torch.tensor([[2, 30, 3]]).numpy(), "attention_mask": torch.tensor([[1, 1, 1]]).numpy()}
    folder, meta, tensors, repro = _artifact(tmp_path, healthy("bert"), inputs, prop="p", replay="first_row_finite")
    assert "def _replay_first_row_is_finite" in (folder / "repro.py").read_text()
    assert repro.REPLAYS["first_row_finite"](meta, tensors) == []


def test_record_costs_nothing_per_example():
    """record() only keeps references: far below a forward (about 1 ms)."""
    subject, inputs = healthy("bert"), {"input_ids": torch.zeros(4, 64, dtype=torch.long).numpy()}
    start = time.perf_counter()
    for _ in range(10_000):
        artifacts.record(subject, inputs, prop="finite")
    per_call = (time.perf_counter() - start) / 10_000
    assert per_call < 2e-5, f"record() takes {per_call * 1e6:.1f} us per example"
    check_finite(subject, inputs)  # the recorded example is a valid one for the property


# -- shared example databases ------------------------------------------------------------------------
def _reuse_phase(output: str, test_id: str) -> str:
    """The 'during reuse phase' block of a test in Hypothesis' statistics, or '' when there is none."""
    block = output.split(f"{test_id}:", 1)[1] if f"{test_id}:" in output else ""
    block = re.split(r"\n\S", block, maxsplit=1)[0]
    match = re.search(r"during reuse phase.*?\n(?:\s+-.*\n)*", block)
    return match[0] if match else ""


def test_shared_directory_database_replays_a_failure_first_across_xdist_workers(failed_run):
    """The failing run (-n 2) stored its failures in the shared directory; the next -n 2 run replays them first."""
    first, _, args = failed_run
    test_id = "properties/test_finite.py::test_finite[{}]".format(Path(args[args.index("--model") + 1]).name)
    assert "1 failing" not in _reuse_phase(first.output, test_id), first.output  # found by generating
    second = run_suite("properties/test_finite.py", *args)
    assert second.returncode == 1, second.output
    assert re.search(r"\b0 passing, 1 failing", _reuse_phase(second.output, test_id)), second.output


@pytest.fixture
def redis_server(tmp_path):
    """A throwaway Redis server on 127.0.0.1 (stands in for a team's shared one)."""
    server, missing = shutil.which("redis-server"), []
    if server is None:
        missing.append("redis-server is not installed (apt-get install redis-server)")
    if importlib.util.find_spec("redis") is None:
        missing.append("the redis package is not installed (pip install -e '.[team]')")
    if missing:
        # CI sets HFPROPS_REQUIRE_REDIS=1 so that a missing server fails there instead of skipping.
        (pytest.fail if os.environ.get("HFPROPS_REQUIRE_REDIS") else pytest.skip)("; ".join(missing))
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    process = subprocess.Popen([server, "--port", str(port), "--bind", "127.0.0.1", "--save", "",
                                "--appendonly", "no", "--dir", str(tmp_path)], stdout=subprocess.DEVNULL)
    import redis

    client = redis.Redis(port=port)
    for _ in range(100):
        try:
            client.ping()
            break
        except redis.ConnectionError:
            time.sleep(0.05)
    yield f"redis://127.0.0.1:{port}", client
    process.terminate()
    process.wait(timeout=10)


def test_redis_database_shares_a_failure_between_machines(tmp_path, redis_server):
    """Two 'machines' (separate working folders) share only the Redis server; the second replays the failure first."""
    url, client = redis_server
    planted = PlantedCheckpoint(tmp_path / "ckpt")
    test_id = "properties/test_finite.py::test_finite[ckpt]"
    results = []
    for machine in ("one", "two"):
        results.append(run_suite(
            "properties/test_finite.py", "--model", str(planted), "--hypothesis-profile=ci", "--examples-db", url,
            "--hypothesis-show-statistics", "--failure-dir", str(tmp_path / machine),
        ))
        assert results[-1].returncode == 1, results[-1].output
        assert client.dbsize() > 0
    assert "1 failing" not in _reuse_phase(results[0].output, test_id)
    assert re.search(r"\b0 passing, 1 failing", _reuse_phase(results[1].output, test_id)), results[1].output


# -- a shrunk input as a permanent @example ------------------------------------------------------------
SHRUNK = {"input_ids": np.array([[23]]), "attention_mask": np.array([[1]])}
SEEN: list[dict] = []


@settings(max_examples=1, database=None, phases=[Phase.explicit])
@given(data=st.data())
@example(data=artifacts.Draws(inputs=SHRUNK))
def _property_with_a_pinned_example(data):
    inputs = data.draw(model_inputs(healthy("bert").spec), label="inputs")
    SEEN.append(inputs)
    check_finite(healthy("bert"), inputs)


def test_a_shrunk_input_becomes_an_explicit_example(tmp_path):
    SEEN.clear()
    _property_with_a_pinned_example()
    assert SEEN == [SHRUNK]
    inputs = {"input_ids": torch.tensor([[2, 23, 3]]).numpy(), "attention_mask": torch.tensor([[1, 1, 1]]).numpy()}
    folder, *_ = _artifact(tmp_path, healthy("bert"), inputs, prop="finite")
    pinned = artifacts.Draws.from_artifact(folder)
    assert all(np.array_equal(pinned.draw(None, label="inputs")[k], v) for k, v in inputs.items())
    with pytest.raises(KeyError, match="no value for the draw labelled 'padding'"):
        pinned.draw(None, label="padding")


def test_replay_refuses_inputs_other_than_the_artifacts(monkeypatch):
    """If the strategies changed since the artifact was written, --replay says so instead of testing something else."""
    stored = {"input_ids": torch.tensor([[2, 23, 3]]), "attention_mask": torch.tensor([[1, 1, 1]])}
    monkeypatch.setattr(artifacts, "_REPLAY_EXPECTED", stored)
    artifacts.record(healthy("bert"), {k: v.numpy() for k, v in stored.items()}, prop="finite")  # the same: fine
    with pytest.raises(artifacts.ReplayMismatch, match="other inputs than the artifact"):
        artifacts.record(healthy("bert"), {"input_ids": np.array([[2, 24, 3]]), "attention_mask": np.array([[1, 1, 1]])})
