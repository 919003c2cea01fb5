"""The coverage report (`--coverage-report`) and `--shard K/N`.

Two kinds of inner runs: a synthetic suite (fake subjects, every outcome, in-process or a cheap
subprocess, no model) checks each cell, the page, the PNG, xdist and shards exactly; a real run
on two zoo models and three property files checks the same end to end.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from properties.coverage import main as coverage_main
from properties.sharding import assign

pytest_plugins = ["pytester"]

ROOT = Path(__file__).resolve().parent.parent
TIMEOUT = 300

# -- a synthetic suite: two models that build, one that does not, every outcome ------------------
CONFTEST = '''
from types import SimpleNamespace
import pytest
from properties.coverage import record_not_built

pytest_plugins = ["properties.coverage", "properties.sharding"]
MODELS = {"alpha": "text", "beta": "vision", "delta": "text", "epsilon": "text"}
FINDINGS = {  # node id -> reason, as the findings list marks them
    "test_core.py::test_finding[beta]": "upstream: beta drops the mask",
    "test_tokenizers.py::test_roundtrip[alpha]": "upstream: AlphaTok loses spaces",
}

class AlphaTok: pass
class Processor:
    tokenizer = AlphaTok()

def pytest_generate_tests(metafunc):
    if "subject" in metafunc.fixturenames:
        record_not_built(metafunc.config, "gamma", "needs timm", modality="audio", model_class="GammaModel")
        params = [pytest.param(name, marks=getattr(pytest.mark, MODELS[name])) for name in MODELS]
        metafunc.parametrize("subject", params, indirect=True, scope="session")

def pytest_configure(config):
    for modality in ("text", "vision"):
        config.addinivalue_line("markers", modality)

@pytest.fixture(scope="session")
def subject(request):
    name = request.param
    if name == "epsilon":  # as zoo/catalog.py skips the tests of a model it cannot build
        pytest.skip("not built (build): ValueError: head_dim 7 does not divide 32")
    spec = SimpleNamespace(name=name, modality=MODELS[name], family=name, model_class=name.title() + "Model")
    return SimpleNamespace(spec=spec, processor=Processor(), model=None)

@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item, call):  # as properties/findings.py says which finding a test met
    report = (yield).get_result()
    if item.nodeid == "test_core.py::test_finding[beta]" and call.when == "call":
        report.user_properties.append(("hfprops_findings", ["Beta*Attention :: test_finding"]))

def pytest_collection_modifyitems(config, items):
    for item in items:
        if item.nodeid in FINDINGS:
            item.add_marker(pytest.mark.xfail(reason=FINDINGS[item.nodeid], strict=True))
        if item.nodeid == "test_core.py::test_ok[delta]":  # a non-strict finding that does not show
            item.add_marker(pytest.mark.xfail(reason="upstream: delta may drop the mask", strict=False))
'''

TEST_CORE = '''
import pytest

def test_ok(subject):
    pass

def test_finding(subject):
    assert subject.spec.name != "beta", "beta drops the mask"

def test_fails(subject):
    assert subject.spec.name != "alpha", "[alpha] finite: NaN in logits"

def test_skips(subject):
    pytest.skip("no CUDA device")

@pytest.mark.parametrize("form", ["a", "b"])
def test_forms(subject, form):
    if form == "b" and subject.spec.name == "alpha":
        pytest.skip("form b needs vision")

def test_cache_only(subject):
    if subject.spec.name != "beta":  # as zoo/catalog.py skips a property a model lacks the capability for
        pytest.skip(f"does not apply: {subject.spec.name} lacks cache")

def test_no_model():
    pass
'''

TEST_TOKENIZERS = '''
def test_roundtrip(subject):
    assert subject.spec.name != "alpha", "spaces lost"
'''

EXPECTED = {  # model -> property -> (outcome, reason, counts)
    "alpha": {
        "test_core.py::test_fails": ("failed", "AssertionError: [alpha] finite: NaN in logits", {"failed": 1}),
        "test_core.py::test_finding": ("pass", "", {"pass": 1}),
        "test_core.py::test_forms": ("pass", "", {"pass": 1, "skipped": 1}),
        "test_core.py::test_ok": ("pass", "", {"pass": 1}),
        "test_core.py::test_skips": ("skipped", "no CUDA device", {"skipped": 1}),
        "test_tokenizers.py::test_roundtrip": ("finding", "upstream: AlphaTok loses spaces", {"finding": 1}),
    },
    "beta": {
        "test_core.py::test_cache_only": ("pass", "", {"pass": 1}),
        "test_core.py::test_fails": ("pass", "", {"pass": 1}),
        "test_core.py::test_finding": ("finding", "upstream: beta drops the mask", {"finding": 1}),
        "test_core.py::test_forms": ("pass", "", {"pass": 2}),
        "test_core.py::test_ok": ("pass", "", {"pass": 1}),
        "test_core.py::test_skips": ("skipped", "no CUDA device", {"skipped": 1}),
        "test_tokenizers.py::test_roundtrip": ("pass", "", {"pass": 1}),
    },
}


@pytest.fixture
def synthetic(pytester, monkeypatch):
    monkeypatch.setenv("PYTHONPATH", str(ROOT) + os.pathsep + os.environ.get("PYTHONPATH", ""))
    pytester.makeconftest(CONFTEST)
    pytester.makepyfile(test_core=TEST_CORE, test_tokenizers=TEST_TOKENIZERS)
    return pytester


def comparable(report: dict) -> dict:
    """A report without what differs between equal runs (time, command line, seconds)."""
    report = json.loads(json.dumps(report))
    report.pop("meta")
    for row in report["models"]:
        row.pop("seconds")
    return report


def read(path: Path) -> dict:
    return json.loads(path.read_text())


def test_cells_models_findings_and_totals(synthetic):
    out = synthetic.path / "cov" / "report.json"
    result = synthetic.runpytest("-p", "no:cacheprovider", "--coverage-report", str(out))
    result.assert_outcomes(passed=15, failed=1, skipped=14, xfailed=2, xpassed=1)
    report = read(out)
    cells = report["cells"]
    for model, expected in EXPECTED.items():
        got = {prop: (c["outcome"], c["reason"], c["counts"]) for prop, c in cells[model].items()}
        assert got == expected, model
    assert "test_core.py::test_cache_only" not in cells["delta"]  # "does not apply": an empty cell
    assert cells["delta"]["test_core.py::test_ok"]["tests"] == [{
        "id": "test_core.py::test_ok[delta]", "outcome": "pass", "xpassed": True,
        "reason": "passed although recorded as a finding: upstream: delta may drop the mask"}]
    # models that could not be built (reported, or skipped at setup): every property of the row
    for name, reason in (("gamma", "needs timm"), ("epsilon", "not built (build): ValueError: head_dim 7 does not divide 32")):
        assert {c["outcome"] for c in cells[name].values()} == {"not built"}
        assert set(cells[name]) == set(EXPECTED["beta"])
        assert {c["reason"] for c in cells[name].values()} == {reason}
    rows = {row["name"]: row for row in report["models"]}
    assert rows["gamma"] == {"name": "gamma", "seconds": 0.0, "modality": "audio", "model_class": "GammaModel",
                             "status": "not built", "reason": "needs timm"}
    assert rows["alpha"]["model_class"] == "AlphaModel" and rows["alpha"]["processor_class"] == "Processor"
    assert rows["epsilon"]["status"] == "not built" and rows["epsilon"]["modality"] == "text"
    assert [row["name"] for row in report["models"]] == ["alpha", "delta", "epsilon", "beta", "gamma"]  # by modality
    # components: the one the findings list keys the finding by; else the model class, or the
    # tokenizer's class for a tokenizer property
    assert report["findings"]["by_component"] == {
        "AlphaTok": [{"model": "alpha", "property": "test_tokenizers.py::test_roundtrip", "component": "AlphaTok",
                      "class": "AlphaTok", "test": "test_tokenizers.py::test_roundtrip[alpha]",
                      "reason": "upstream: AlphaTok loses spaces"}],
        "Beta*Attention": [{"model": "beta", "property": "test_core.py::test_finding", "component": "Beta*Attention",
                            "class": "BetaModel", "test": "test_core.py::test_finding[beta]",
                            "reason": "upstream: beta drops the mask"}],
    }
    assert sorted(report["findings"]["by_property"]) == ["test_core.py::test_finding", "test_tokenizers.py::test_roundtrip"]
    assert report["totals"]["outcomes"] == {"failed": 1, "not built": 14, "finding": 2, "pass": 13, "skipped": 3}
    assert report["totals"]["models"] == {"total": 5, "built": 3, "not built": 2}
    assert "test_no_model" not in json.dumps(report)  # a test that takes no model has no cell
    result.stdout.fnmatch_lines(["hfprops: coverage report (1 failed, 14 not built, 2 finding, 13 pass, 3 skipped cells): *"])


def test_page_is_self_contained_and_png_is_written(synthetic):
    out = synthetic.path / "report.json"
    synthetic.runpytest("-p", "no:cacheprovider", "--coverage-report", str(out))
    page = out.with_suffix(".html").read_text()
    assert "<style>" in page and "<script>" in page
    assert not re.search(r"<link|<img|<iframe|@import|url\(|\b(src|href)\s*=\s*[\"'](?!#)", page, re.I), \
        "the page must load nothing: no external CSS, JS, images or fonts"
    assert "http://" not in page and "https://" not in page
    # hover text of a red cell carries the failure's first line; legend and filters are there
    assert 'title="alpha \u00d7 core / fails: failed\nAssertionError: [alpha] finite: NaN in logits"' in page
    for text in ("not built", "Findings by property", "Findings by component", "did not show",
                 "upstream: delta may drop the mask", 'id="q"', 'id="mod"', 'id="out"'):
        assert text in page
    assert out.with_suffix(".png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_xdist_gives_the_same_report(synthetic):
    one, two = synthetic.path / "one.json", synthetic.path / "two.json"
    synthetic.runpytest("-p", "no:cacheprovider", "--coverage-report", str(one))
    result = synthetic.runpytest_subprocess("-p", "no:cacheprovider", "-n", "2", "--coverage-report", str(two),
                                            timeout=TIMEOUT)
    result.assert_outcomes(passed=15, failed=1, skipped=14, xfailed=2, xpassed=1)
    assert comparable(read(two)) == comparable(read(one))


def test_shards_are_disjoint_by_model_and_merge_to_the_whole(synthetic):
    whole = synthetic.path / "whole.json"
    synthetic.runpytest("-p", "no:cacheprovider", "--coverage-report", str(whole))
    parts = []
    for k in (1, 2):
        part = synthetic.path / f"shard{k}" / "report.json"
        result = synthetic.runpytest("-p", "no:cacheprovider", "--shard", f"{k}/2", "--coverage-report", str(part))
        assert result.ret in (0, 1)
        parts.append(read(part))
    models = [{m for m, row in p["cells"].items() if any(c["tests"] for c in row.values())} for p in parts]
    assert models[0] and models[1] and not models[0] & models[1], "each model's tests run in exactly one shard"
    ids = [{t["id"] for row in p["cells"].values() for c in row.values() for t in c["tests"]} for p in parts]
    assert not ids[0] & ids[1]
    assert ids[0] | ids[1] == {t["id"] for row in read(whole)["cells"].values() for c in row.values() for t in c["tests"]}
    merged = synthetic.path / "merged.json"
    assert coverage_main(["merge", str(merged), *(str(synthetic.path / f"shard{k}" / "report.json") for k in (1, 2))]) == 0
    assert comparable(read(merged)) == comparable(read(whole))
    assert merged.with_suffix(".html").exists() and merged.with_suffix(".png").exists()


def test_shard_balances_by_test_count_and_is_deterministic():
    sizes = {"model:a": 5, "model:b": 3, "model:c": 3, "model:d": 1, "file:x.py": 2}
    shards = assign(sizes, 2)
    load = [sum(n for g, n in sizes.items() if shards[g] == s) for s in range(2)]
    assert sorted(load) == [7, 7]
    assert assign(dict(reversed(list(sizes.items()))), 2) == shards  # the order of collection does not matter
    assert set(assign(sizes, 8).values()) == set(range(5))  # more shards than groups: some stay empty


@pytest.mark.parametrize("bad", ["0/2", "3/2", "two", "1/0"])
def test_bad_shard_is_one_clear_error(synthetic, bad):
    result = synthetic.runpytest("-p", "no:cacheprovider", "--shard", bad)
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    assert f"--shard {bad}:" in result.stderr.str()


# -- end to end on two zoo models -----------------------------------------------------------------
REAL = ("properties/test_finite.py", "properties/test_shapes.py", "properties/test_image_processors.py::test_pixel_values")
MODELS = ("--model", "bert", "--model", "vit")


def run_suite(*args: str) -> subprocess.CompletedProcess:
    """An inner pytest in the repository (fresh process, ci profile unless told otherwise)."""
    env = {k: v for k, v in os.environ.items() if k != "HYPOTHESIS_PROFILE"}
    return subprocess.run([sys.executable, "-m", "pytest", "-q", "-p", "no:randomly", *args], cwd=ROOT, env=env,
                          text=True, capture_output=True, timeout=TIMEOUT)


@pytest.fixture(scope="module")
def zoo_report(tmp_path_factory) -> tuple[dict, Path, str]:
    """One run under xdist (-n 2): the real subjects' details must cross from the workers too.
    (That -n 2 gives the one-process report exactly is checked on the synthetic suite above.)"""
    folder = tmp_path_factory.mktemp("coverage")
    path = folder / "report.json"
    result = run_suite(*REAL, *MODELS, "--hypothesis-profile=ci", "-n", "2", "-rA",
                       "--failure-dir", str(folder / "failures"), "--coverage-report", str(path))
    # 1: some test failed (the report shows it red); anything else is a broken run
    assert result.returncode in (0, 1), result.stdout[-3000:] + result.stderr[-3000:]
    return read(path), path, result.stdout


def test_zoo_report_cells(zoo_report):
    report, path, summary = zoo_report
    cells = report["cells"]
    assert cells["bert"]["test_finite.py::test_finite"]["outcome"] == "pass"
    assert cells["vit"]["test_shapes.py::test_shapes"]["outcome"] == "pass"
    assert "test_image_processors.py::test_pixel_values" not in cells["bert"]  # bert reads no images
    pixels = cells["vit"]["test_image_processors.py::test_pixel_values"]
    assert len(pixels["tests"]) > 1  # one cell for every image form: test_pixel_values[vit-RGBA], ...
    assert all("[vit-" in t["id"] for t in pixels["tests"])
    assert pixels["counts"].get("finding"), "ViT's image processor findings (RGBA, L, ...) show in the report"
    assert pixels["component"].startswith("ViTImageProcessor")
    assert cells["vit"]["test_finite.py::test_finite"]["component"] == "ViTModel"
    # every test's outcome is the one pytest reported (-rA: PASSED / XFAIL / FAILED <id>)
    # a non-strict finding that did not show (XPASS) is a pass cell
    words = {"PASSED": "pass", "XFAIL": "finding", "FAILED": "failed", "XPASS": "pass"}
    reported = {m[2]: words[m[1]] for m in re.finditer(r"^(PASSED|XFAIL|FAILED|XPASS) (.+?)(?: - .*)?$", summary, re.M)}
    ours = {t["id"]: t["outcome"] for row in cells.values() for c in row.values() for t in c["tests"]
            if t["outcome"] != "skipped"}  # -rA names no test id on its SKIPPED lines
    assert reported and ours == reported
    rows = {row["name"]: row for row in report["models"]}
    assert rows["bert"]["modality"] == "text" and rows["vit"]["model_class"] == "ViTModel"
    assert rows["vit"]["seconds"] > 0
    assert path.with_suffix(".html").exists() and path.with_suffix(".png").exists()


def collected(*args: str) -> list[str]:
    result = run_suite(*REAL, *MODELS, "--collect-only", *args)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    return [line for line in result.stdout.splitlines() if "::" in line]


def test_zoo_shard_keeps_whole_models(zoo_report):
    """Shard 1 of 2 holds every test of its models and none of the others' (that the shards are
    disjoint and cover everything is checked on the synthetic suite, with the same split)."""
    whole = {t["id"] for row in zoo_report[0]["cells"].values() for c in row.values() for t in c["tests"]}
    part = set(collected("--shard", "1/2"))
    models = {re.search(r"\[(bert|vit)", test)[1] for test in part}
    assert len(models) == 1
    model = models.pop()
    assert part == {t for t in whole if f"[{model}" in t}
