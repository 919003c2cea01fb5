"""`--model` on bad input: one clear line, exit status 4 (usage error), no traceback.

Each case runs `pytest properties/ --model ... --collect-only` in a fresh process, as a user would.
"""

import json
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from tests.planted import healthy

ROOT = Path(__file__).resolve().parents[1]


def run_suite(*args: str, timeout: int = 240) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "pytest", "properties/test_finite.py", "-q", "-p", "no:randomly", *args],
        cwd=ROOT, capture_output=True, text=True, timeout=timeout,
    )


def assert_one_line_error(result: subprocess.CompletedProcess, *phrases: str) -> None:
    output = result.stdout + result.stderr
    assert result.returncode == 4, f"exit {result.returncode}, expected 4 (usage error):\n{output}"
    assert "Traceback" not in output, output
    errors = [line for line in output.splitlines() if line.startswith("ERROR:")]
    assert len(errors) == 1, output
    for phrase in phrases:
        assert phrase in errors[0], errors[0]


@pytest.fixture(scope="module")
def bert_checkpoint(tmp_path_factory) -> Path:
    """A valid user checkpoint: the zoo BERT saved with its tokenizer."""
    directory = tmp_path_factory.mktemp("user-bert")
    subject = healthy("bert")
    subject.model.save_pretrained(directory)
    subject.processor.save_pretrained(directory)
    return directory


def test_missing_path():
    assert_one_line_error(run_suite("--model", "./no/such/checkpoint"), "no such file or directory")


def test_directory_without_config(tmp_path):
    (tmp_path / "weights.safetensors").write_bytes(b"")
    assert_one_line_error(run_suite("--model", str(tmp_path)), "has no config.json")


def test_unknown_model_type(tmp_path):
    (tmp_path / "config.json").write_text(json.dumps({"model_type": "not-a-real-model"}))
    assert_one_line_error(run_suite("--model", str(tmp_path)), "model type 'not-a-real-model' is not known")


def test_remote_code_is_named(tmp_path):
    config = {"model_type": "my-custom", "auto_map": {"AutoModel": "modeling_custom.MyModel"}}
    (tmp_path / "config.json").write_text(json.dumps(config))
    assert_one_line_error(run_suite("--model", str(tmp_path)), "remote code", "never runs")


def test_pickle_only_checkpoint_is_refused_then_allowed(tmp_path, bert_checkpoint):
    pickled = tmp_path / "pickled-bert"
    pickled.mkdir()
    for item in bert_checkpoint.iterdir():
        if item.suffix != ".safetensors":
            (pickled / item.name).write_bytes(item.read_bytes())
    torch.save(healthy("bert").model.state_dict(), pickled / "pytorch_model.bin")
    assert_one_line_error(run_suite("--model", str(pickled)), "only pickle weights", "--allow-pickle")
    allowed = run_suite("--model", str(pickled), "--allow-pickle", "--hypothesis-profile=ci")
    assert allowed.returncode == 0, allowed.stdout + allowed.stderr
    assert "test_finite[pickled-bert]" in run_suite("--model", str(pickled), "--allow-pickle", "--collect-only").stdout


def test_uncached_hub_id_is_not_downloaded():
    assert_one_line_error(run_suite("--model", "someone/not-cached-model"), "not in the local Hugging Face cache")


def test_unknown_name():
    assert_one_line_error(run_suite("--model", "bertt"), "unknown model", "bert, gpt2")


def test_user_checkpoint_runs(bert_checkpoint):
    result = run_suite("--model", str(bert_checkpoint), "--model", "gpt2", "--hypothesis-profile=ci", "-vv")
    assert result.returncode == 0, result.stdout + result.stderr
    assert f"test_finite[{bert_checkpoint.name}] PASSED" in result.stdout
    assert "test_finite[gpt2] PASSED" in result.stdout
