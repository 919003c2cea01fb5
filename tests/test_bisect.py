"""Release bisect: cached per-release environments and the search over releases.

The real example: since v5, CLIP's sub-models dropped the hidden states (and attentions) they had
collected (huggingface/transformers#43618, fixed by #43657). A seeded tiny CLIP checkpoint (the
zoo's CLIP config with `projection_dim` equal to the hidden size, so that the nested pooler outputs
have one shape in every release) makes the suite's shape contract fail on 5.1.0: `CLIPModel`'s
`text_model_output` and `vision_model_output` come without hidden states. Bisecting 5.0.0..5.24.0
names 5.2.0 (measured: 7 releases run, 169 s with most release folders cached); this test bisects
over 5.0.0, 5.1.0 and 5.2.0 only. Building the three release folders costs pip time once (about
10-40 s each here); they are cached under `$HFPROPS_RELEASES` (CI keeps that folder between runs).

The search itself is also checked without pip, on a stand-in for repro.py's exit codes.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from properties import bisect as bisecting
from properties import releases
from tests.planted import healthy

ROOT = Path(__file__).resolve().parents[1]


# -- the search, on stand-in exit codes -------------------------------------------------------------------
VERSIONS = ["5.0.0", "5.1.0", "5.2.0", "5.3.0", "5.4.0", "5.5.0", "5.6.0", "5.7.0"]


def fake_runs(monkeypatch, codes: dict[str, int | None]):
    tried = []

    def run(artifact, version, *, timeout, log=print):
        tried.append(version)
        code = codes[version]
        verdict = bisecting.VERDICTS.get(code, f"skip (exit {code})")
        return bisecting.Step(version, code, verdict, 0.0)

    monkeypatch.setattr(bisecting, "run_repro", run)
    return tried


@pytest.mark.parametrize("first", ["5.1.0", "5.4.0", "5.7.0"])
def test_bisect_finds_the_first_release_that_reproduces(monkeypatch, tmp_path, first):
    tried = fake_runs(monkeypatch, {v: int(v >= first) for v in VERSIONS})
    result = bisecting.bisect(tmp_path, "5.0.0", "5.7.0", versions=VERSIONS, log=lambda line: None)
    assert (result.change, result.first) == ("regression", first)
    assert result.last_before == VERSIONS[VERSIONS.index(first) - 1]
    assert len(tried) <= 2 + 3  # both ends, then log2(8) steps


def test_bisect_finds_a_fix_and_steps_over_releases_it_cannot_judge(monkeypatch, tmp_path):
    codes = {v: 1 if v < "5.4.0" else 0 for v in VERSIONS}
    codes["5.3.0"] = 2  # cannot run there: skipped, a neighbour is tried instead
    fake_runs(monkeypatch, codes)
    lines = []
    result = bisecting.bisect(tmp_path, "5.0.0", "5.7.0", versions=VERSIONS, log=lines.append)
    assert (result.change, result.first, result.last_before) == ("fix", "5.4.0", "5.2.0")
    assert result.untested_between == ["5.3.0"]
    assert any("5.3.0: exit 2 -> skip" in line for line in lines), lines
    assert "could not judge ['5.3.0']" in result.message


def test_bisect_reports_no_change(monkeypatch, tmp_path):
    fake_runs(monkeypatch, {v: 1 for v in VERSIONS})
    result = bisecting.bisect(tmp_path, "5.0.0", "5.7.0", versions=VERSIONS, log=lambda line: None)
    assert result.first is None and "no change to bisect" in result.message


def test_a_release_folder_pins_the_installed_optional_packages_the_release_would_import(monkeypatch, tmp_path):
    """transformers 5.0.0 imports `kernels` whenever it is installed; kernels 0.19 breaks it (<0.11 asked)."""
    info = tmp_path / "transformers-5.0.0.dist-info"
    info.mkdir()
    (info / "METADATA").write_text("\n".join([
        "Name: transformers", "Version: 5.0.0", "Requires-Dist: huggingface-hub<2.0,>=1.3.0",
        "Provides-Extra: hub-kernels", "Requires-Dist: kernels<0.11,>=0.10.2; extra == \"hub-kernels\"",
        "Provides-Extra: testing", "Requires-Dist: pytest<9.0.0,>=7.2.0; extra == \"testing\"",
        "Provides-Extra: vision", "Requires-Dist: Pillow<=15.0,>=10.0.1; extra == \"vision\"",
    ]) + "\n")
    installed = {"huggingface-hub": "2.4.0", "kernels": "0.19.1", "pytest": "9.2.0"}  # no Pillow here
    monkeypatch.setattr(releases, "_installed_version", installed.get)
    assert releases._missing(tmp_path) == {
        "huggingface-hub<2.0,>=1.3.0": "installed 2.4.0",  # required
        "kernels<0.11,>=0.10.2": "installed 0.19.1",  # optional, installed, imported: pinned (no marker)
    }  # pytest (a developers' extra) and Pillow (not installed) are left alone


def test_released_versions_reads_the_index_in_order(monkeypatch):
    listing = "transformers (5.25.0)\nAvailable versions: 5.25.0, 5.24.0, 5.10.1, 5.9.0, 5.2.0rc1, 5.0.0, 4.57.6\n"
    monkeypatch.setattr(releases, "_pip", lambda *args: subprocess.CompletedProcess(args, 0, listing, ""))
    monkeypatch.setattr(releases, "UNUSABLE", {"5.25.0": "does not install here"})
    assert releases.released_versions("5.0.0", "5.25.0") == ["5.0.0", "5.9.0", "5.10.1", "5.24.0"]  # 5.25.0 unusable
    assert releases.released_versions("5.9.0", "5.10.1") == ["5.9.0", "5.10.1"]


# -- the real example ---------------------------------------------------------------------------------------
REAL = ["5.0.0", "5.1.0", "5.2.0"]


@pytest.fixture(scope="module")
def release_folders():
    """The three release folders (built once, cached); a skip if the package registry is unreachable."""
    try:
        return {version: releases.release_dir(version) for version in REAL}
    except releases.ReleaseError as exc:
        if os.environ.get("HFPROPS_REQUIRE_RELEASES"):
            raise
        pytest.skip(f"cannot build the release folders (package registry unreachable?): {str(exc).splitlines()[0]}")


def test_bisect_names_the_release_that_gave_clip_its_nested_hidden_states_back(tmp_path, release_folders):
    import torch
    import transformers

    checkpoint = tmp_path / "tiny-clip-p32"
    zoo_clip = healthy("clip")  # the zoo's offline tokenizer + image processor ship with the checkpoint
    config = transformers.CLIPConfig.from_dict({**zoo_clip.model.config.to_dict(), "projection_dim": 32})
    torch.manual_seed(0)
    transformers.CLIPModel(config).save_pretrained(checkpoint)
    zoo_clip.processor.save_pretrained(checkpoint)
    failures = tmp_path / "failures"
    env = {k: v for k, v in os.environ.items() if k != "HYPOTHESIS_PROFILE"}
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(release_folders["5.1.0"]), env.get("PYTHONPATH")]))
    # The behaviour is a recorded finding (CLIPModel, versions < 5.2): run without the findings list,
    # as a user meeting it for the first time does, so the suite fails and writes its artifact.
    empty = tmp_path / "no-findings.toml"
    empty.write_text("")
    env["HFPROPS_FINDINGS"] = str(empty)
    suite = subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-p", "no:randomly", "properties/test_shapes.py", "--model",
         str(checkpoint), "--hypothesis-profile=ci", "--failure-dir", str(failures)],
        cwd=ROOT, env=env, capture_output=True, text=True, timeout=600,
    )
    assert suite.returncode == 1, suite.stdout + suite.stderr
    (artifact,) = failures.iterdir()
    meta = json.loads((artifact / "meta.json").read_text(encoding="utf-8"))
    assert meta["versions"]["transformers"] == "5.1.0"
    assert "missing outputs ['text_model_output.hidden_states.0'" in meta["observed"]["message"]

    lines = []
    result = bisecting.bisect(artifact, REAL[0], REAL[-1], versions=REAL, log=lines.append)
    assert (result.change, result.first, result.last_before) == ("fix", "5.2.0", "5.1.0"), "\n".join(lines)
    assert [step.exit_code for step in result.steps] == [1, 0, 1]  # both ends first, then the middle
