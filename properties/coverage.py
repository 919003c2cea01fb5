"""The coverage report: model x property outcomes as JSON, one HTML page and a PNG heatmap.

`pytest properties/ --coverage-report cov/report.json` writes

- `cov/report.json`: one cell per (model under test, property) with its outcome, the tests behind
  it and their reasons, the models (modality, model and processor classes, seconds spent, or why
  they could not be built), totals, and the findings grouped by property and by component;
- `cov/report.html`: one self-contained page (inline CSS and JS) with the heatmap, totals,
  legend, filters and the grouped findings (`properties/coverage_page.py`);
- `cov/report.png`: the heatmap alone.

Outcomes, worst first (a cell shows the worst outcome of its tests):
`failed` (red: a test failed or errored), `not built` (the model could not be built or fed),
`finding` (xfailed: an upstream finding of the findings list, with its reason; grouped by the
component the finding is keyed by, else by the subject's model or processor class), `pass`, `skipped`
(with the reason). A cell with no test (the property does not apply, or was deselected) is empty.

A property is a test function (`test_finite.py::test_finite`), grouped by its file's family
(`finite`); its model is the test's `subject` parameter, so `test_pixel_values[vit-RGBA]` and
`test_pixel_values[vit-RGB]` are two tests of the one cell (vit, pixel_values).

Works under pytest-xdist: each worker attaches what the controller needs to its test reports
(`report.user_properties`, which xdist sends along), and the controller, which sees every report
in `pytest_runtest_logreport`, builds the report. A model that could not be built shows as
`not built` in every column of its row: either its tests skip at setup with a reason starting
"not built" (as `zoo/catalog.py` does), or code reports it with `record_not_built(config, name,
reason)`, on the controller or on a worker (workers send theirs through xdist's `workeroutput`).
A skip whose reason starts "does not apply" leaves the cell empty (see `SKIP_OUTCOMES`).

Shards of a CI matrix (`--shard K/N`) each write their own JSON; merge them with
`python -m properties.coverage merge cov/report.json shard-*/report.json`.
"""

from __future__ import annotations

import datetime
import json
import sys
from collections import Counter, defaultdict
from pathlib import Path
from typing import Any, Iterable

import pytest

from zoo.spec import MODALITIES

SCHEMA = 1
# Worst first: a cell shows the first of these that any of its tests has.
OUTCOMES = ("failed", "not built", "finding", "pass", "skipped")
_PROPERTY = "hfprops_coverage"  # report.user_properties key (travels through xdist)
_WORKER_KEY = "hfprops_coverage_not_built"  # config.workeroutput key
# properties/findings.py attaches the keys ("<component> :: <property>") of the findings a test met
_FINDINGS_PROPERTY = "hfprops_findings"

# Processor properties judge a part of the subject's processor, not the model: the family (test
# file) -> the processor attribute whose class is the component (the processor itself if absent).
PROCESSOR_PARTS = {
    "tokenizers": "tokenizer",
    "image_processors": "image_processor",
    "audio_features": "feature_extractor",
}

# Skips that are not "skipped": a skip reason that starts with one of these (as zoo/catalog.py
# words them when it builds a catalogue model at setup) -> the outcome it stands for; None: the
# property does not apply to the model, so the cell stays empty, as if the test was never made.
SKIP_OUTCOMES = {
    "not built": "not built",
    "does not apply": None,
}

NOT_BUILT = pytest.StashKey[dict]()  # model name -> {"reason": ..., "modality": ..., "model_class": ...}


def record_not_built(config, model_name: str, reason: str, **info: Any) -> None:
    """Report a model that could not be built or fed: its row shows `not built` with the reason.

    Call it from anywhere with the pytest config (a hook, `pytest_generate_tests` through
    `metafunc.config`, a fixture through `request.config`), on the controller or an xdist worker.
    `info` may give `modality`, `model_class` and `family` (model type) for the row.
    Equivalent: `config.stash.setdefault(properties.coverage.NOT_BUILT, {})[name] = {"reason": ...}`.
    """
    config.stash.setdefault(NOT_BUILT, {})[model_name] = {"reason": str(reason), **info}


# -- options and worker-side hooks ---------------------------------------------------------------
def pytest_addoption(parser):
    group = parser.getgroup("hfprops-coverage", "hfprops: coverage report")
    group.addoption(
        "--coverage-report", default=None, metavar="PATH",
        help="write the model x property outcomes to PATH (JSON), PATH with .html (one self-contained "
        "page with the heatmap and the findings) and PATH with .png (the heatmap)",
    )


def _wanted(config) -> bool:
    return bool(config.getoption("coverage_report", None))


def _is_worker(config) -> bool:
    return hasattr(config, "workerinput")


def pytest_configure(config):
    if _wanted(config) and not _is_worker(config):
        config.pluginmanager.register(_Collector(config), "hfprops-coverage-collector")


def model_of(item) -> str | None:
    """The model a test runs on: its `subject` parameter (None for tests that take no model)."""
    callspec = getattr(item, "callspec", None)
    if callspec is not None and "subject" in callspec.params:
        return str(callspec.params["subject"])
    return None


def property_of(item) -> dict:
    """`{"id": "test_finite.py::test_finite", "family": "finite", "name": "finite", "file": ...}`."""
    file = item.nodeid.split("::", 1)[0]
    basename = file.rsplit("/", 1)[-1]
    function = getattr(item, "originalname", None) or item.name.split("[", 1)[0]
    return {
        "id": f"{basename}::{function}",
        "family": basename.removesuffix(".py").removeprefix("test_"),
        "name": function.removeprefix("test_"),
        "file": file,
    }


def _class_name(obj) -> str:
    return type(obj).__name__ if obj is not None else ""


def _describe(item, model: str) -> dict:
    """What the controller needs to know about a test besides its outcome (computed on the worker)."""
    prop = property_of(item)
    info: dict[str, Any] = {"model": model, "property": prop}
    subject = getattr(item, "funcargs", {}).get("subject")
    spec = getattr(subject, "spec", None)
    if spec is not None:
        processor = getattr(subject, "processor", None)
        part = PROCESSOR_PARTS.get(prop["family"])
        model_class = spec.model_class or _class_name(getattr(subject, "model", None))
        info.update(
            modality=spec.modality, family=spec.family, model_class=model_class,
            processor_class=_class_name(processor),
            component=_class_name(getattr(processor, part, processor)) if part else model_class,
        )
    else:  # the subject did not set up: the modality mark is all we know
        info["modality"] = next((m for m in MODALITIES if item.get_closest_marker(m)), "")
    for mark in item.iter_markers("xfail"):  # a finding may say what it is about
        if mark.kwargs.get("component"):
            info["component"] = str(mark.kwargs["component"])
            break
    return info


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item, call):
    outcome = yield
    if not _wanted(item.config):
        return
    model = model_of(item)
    if model is not None:
        outcome.get_result().user_properties.append((_PROPERTY, json.dumps(_describe(item, model))))


def pytest_sessionfinish(session, exitstatus):
    config = session.config
    if _wanted(config) and _is_worker(config):  # the controller's collector merges these
        config.workeroutput[_WORKER_KEY] = json.dumps(config.stash.get(NOT_BUILT, {}))


# -- turning reports into test outcomes ----------------------------------------------------------
def first_line(text: str, limit: int = 300) -> str:
    line = next((part.strip() for part in str(text).splitlines() if part.strip()), "")
    return line if len(line) <= limit else line[: limit - 1] + "…"


def _reason(report) -> str:
    longrepr = report.longrepr
    if longrepr is None:
        return ""
    if isinstance(longrepr, tuple) and len(longrepr) == 3:  # a skip: (path, line, "Skipped: why")
        return first_line(str(longrepr[2]).removeprefix("Skipped: "))
    crash = getattr(longrepr, "reprcrash", None)
    if crash is not None and crash.message:
        return first_line(crash.message)
    return first_line(str(longrepr))


class _Collector:
    """The controller's plugin: collects every phase report of every model test, writes the report."""

    def __init__(self, config):
        self.config = config
        self.phases: dict[str, dict[str, Any]] = defaultdict(dict)
        self.info: dict[str, dict] = {}
        self.seconds: dict[str, float] = defaultdict(float)
        self.remote_not_built: dict[str, dict] = {}
        self.written: list[Path] = []
        self.totals: dict[str, int] = {}

    def pytest_runtest_logreport(self, report):
        # With xdist this runs in the controller for the workers' reports too.
        info = next((json.loads(v) for k, v in report.user_properties if k == _PROPERTY), None)
        if info is None:
            return
        met = [key for k, v in report.user_properties if k == _FINDINGS_PROPERTY for key in v]
        if met:  # group by what the finding is about: its component pattern in the findings list
            info["findings"] = sorted({key.split(" :: ", 1)[0] for key in met})
        # Later phases know more (the subject is set up by then): merge, keep what is known.
        self.info[report.nodeid] = {**self.info.get(report.nodeid, {}), **{k: v for k, v in info.items() if v}}
        self.phases[report.nodeid][report.when] = report
        self.seconds[report.nodeid] += float(getattr(report, "duration", 0.0) or 0.0)

    @pytest.hookimpl(optionalhook=True)
    def pytest_testnodedown(self, node, error):
        """xdist: a worker finished; take the models it could not build."""
        self.remote_not_built.update(json.loads(getattr(node, "workeroutput", {}).get(_WORKER_KEY, "{}")))

    def tests(self) -> list[dict]:
        tests = [{**self.info[nodeid], "nodeid": nodeid, "seconds": self.seconds[nodeid], **test_outcome(phases)}
                 for nodeid, phases in self.phases.items()]
        return [t for t in tests if t["outcome"] is not None]  # None: the property does not apply

    @pytest.hookimpl(trylast=True)
    def pytest_sessionfinish(self, session):
        not_built = {**self.remote_not_built, **self.config.stash.get(NOT_BUILT, {})}
        report = build_report(self.tests(), not_built, meta=_meta(self.config))
        self.written = write_report(report, Path(self.config.getoption("coverage_report")))
        self.totals = report["totals"]["outcomes"]

    def pytest_terminal_summary(self, terminalreporter):
        if self.written:
            counts = ", ".join(f"{self.totals.get(o, 0)} {o}" for o in OUTCOMES)
            terminalreporter.write_line(f"hfprops: coverage report ({counts} cells): "
                                        + ", ".join(str(p) for p in self.written))


def test_outcome(phases: dict[str, Any]) -> dict:
    """One test's outcome and reason from its setup/call/teardown reports."""
    for when in ("setup", "call", "teardown"):
        report = phases.get(when)
        if report is not None and report.failed:
            prefix = "" if when == "call" else f"error in {when}: "
            return {"outcome": "failed", "reason": prefix + _reason(report)}
    for when in ("setup", "call"):
        report = phases.get(when)
        if report is None:
            continue
        if hasattr(report, "wasxfail"):
            if report.skipped:
                return {"outcome": "finding", "reason": first_line(report.wasxfail, limit=2000)}
            return {"outcome": "pass", "xpassed": True,  # a non-strict finding that did not show
                    "reason": f"passed although recorded as a finding: {first_line(report.wasxfail, limit=2000)}"}
        if report.skipped:
            reason = _reason(report)
            prefix = next((p for p in SKIP_OUTCOMES if reason.startswith(p)), None)
            return {"outcome": SKIP_OUTCOMES[prefix] if prefix else "skipped", "reason": reason}
    if "call" in phases:
        return {"outcome": "pass", "reason": ""}
    return {"outcome": "skipped", "reason": "did not run"}


# -- the report ------------------------------------------------------------------------------------
def _meta(config) -> dict:
    from importlib.metadata import version

    from hypothesis import settings

    shard = config.getoption("shard", None) if _has_option(config, "shard") else None
    return {
        "generated": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "transformers": version("transformers"),
        "torch": version("torch"),
        "profile": settings._current_profile,
        "shard": shard,
        "args": [str(a) for a in config.invocation_params.args],
    }


def _has_option(config, name: str) -> bool:
    try:
        config.getoption(name)
    except ValueError:
        return False
    return True


def _cell(tests: list[dict]) -> dict:
    counts = Counter(t["outcome"] for t in tests)
    outcome = next(o for o in OUTCOMES if counts[o])
    shown = next(t for t in tests if t["outcome"] == outcome)
    return {
        "outcome": outcome,
        "reason": shown["reason"],
        "counts": {o: counts[o] for o in OUTCOMES if counts[o]},
        "tests": [{"id": t["nodeid"], "outcome": t["outcome"], "reason": t["reason"],
                   **({"findings": t["findings"]} if t.get("findings") and t["outcome"] == "finding" else {}),
                   **({"xpassed": True} if t.get("xpassed") else {})}
                  for t in tests],
    }


def build_report(tests: Iterable[dict], not_built: dict[str, dict], meta: dict | None = None) -> dict:
    """The report dict from test outcomes (`_Collector.tests()`) and the models that were not built."""
    tests = sorted(tests, key=lambda t: t["nodeid"])
    not_built = dict(not_built)
    properties: dict[str, dict] = {}
    models: dict[str, dict] = {}
    by_cell: dict[tuple[str, str], list[dict]] = defaultdict(list)
    for test in tests:
        prop = test["property"]
        properties.setdefault(prop["id"], prop)
        row = models.setdefault(test["model"], {"name": test["model"], "status": "built", "seconds": 0.0})
        for key in ("modality", "family", "model_class", "processor_class"):
            if test.get(key) and not row.get(key):
                row[key] = test[key]
        row["seconds"] += test.get("seconds", 0.0)
        by_cell[(test["model"], prop["id"])].append(test)
    for test in tests:  # a model whose build failed at setup: its tests say so
        if test["outcome"] == "not built" and test["model"] not in not_built:
            not_built[test["model"]] = {"reason": test["reason"]}
    for name, entry in not_built.items():
        row = models.setdefault(name, {"name": name, "seconds": 0.0})
        row.update({k: v for k, v in entry.items() if k != "reason"}, status="not built", reason=entry["reason"])

    cells: dict[str, dict[str, dict]] = defaultdict(dict)
    for (model, prop), group in by_cell.items():
        cells[model][prop] = _cell(group)
        cells[model][prop]["component"] = next((t["component"] for t in group if t.get("component")),
                                               models[model].get("model_class", ""))
    for name, row in models.items():
        if row["status"] == "not built":  # the whole row: nothing of it could run
            ran = cells.get(name, {})
            cells[name] = {p: {"outcome": "not built", "reason": row["reason"],
                               "counts": dict(Counter(t["outcome"] for t in ran[p]["tests"])) if p in ran else {},
                               "tests": ran[p]["tests"] if p in ran else [],
                               "component": row.get("model_class", "")} for p in properties}
        row["seconds"] = round(row["seconds"], 3)
    report = {
        "schema": SCHEMA,
        "meta": meta or {},
        "properties": [properties[p] for p in sorted(properties, key=lambda p: (properties[p]["family"], p))],
        "models": [models[m] for m in sorted(models, key=lambda m: (_modality_rank(models[m]), m))],
        "cells": {m: dict(sorted(cells[m].items())) for m in sorted(cells)},
    }
    report["totals"] = totals(report)
    report["findings"] = findings(report)
    return report


def _modality_rank(row: dict) -> int:
    modality = row.get("modality", "")
    return MODALITIES.index(modality) if modality in MODALITIES else len(MODALITIES)


def totals(report: dict) -> dict:
    """Cells per outcome: overall, per model (row) and per property (column)."""
    overall, by_model, by_property = Counter(), defaultdict(Counter), defaultdict(Counter)
    for model, row in report["cells"].items():
        for prop, cell in row.items():
            overall[cell["outcome"]] += 1
            by_model[model][cell["outcome"]] += 1
            by_property[prop][cell["outcome"]] += 1
    statuses = Counter(m["status"] for m in report["models"])
    return {
        "outcomes": {o: overall[o] for o in OUTCOMES},
        "models": {"total": len(report["models"]), "built": statuses["built"], "not built": statuses["not built"]},
        "tests": sum(len(c["tests"]) for row in report["cells"].values() for c in row.values()),
        "by_model": {m: dict(by_model[m]) for m in sorted(by_model)},
        "by_property": {p: dict(by_property[p]) for p in sorted(by_property)},
    }


def findings(report: dict) -> dict:
    """The finding cells grouped by property and by component (model or processor class)."""
    by_property, by_component = defaultdict(list), defaultdict(list)
    for model, row in report["cells"].items():
        for prop, cell in row.items():
            if cell["outcome"] != "finding" and not cell["counts"].get("finding"):
                continue
            for test in cell["tests"]:
                if test["outcome"] == "finding":
                    about = test.get("findings") or [cell["component"] or "(unknown)"]
                    entry = {"model": model, "property": prop, "component": ", ".join(about),
                             "class": cell["component"], "test": test["id"], "reason": test["reason"]}
                    by_property[prop].append(entry)
                    for component in about:
                        by_component[component].append(entry)
    return {"by_property": dict(sorted(by_property.items())), "by_component": dict(sorted(by_component.items()))}


def write_report(report: dict, path: Path) -> list[Path]:
    """`path` (JSON), `path` with `.html` and with `.png`; returns the paths written."""
    from properties.coverage_page import write_html, write_png

    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(report, indent=1, ensure_ascii=False) + "\n")
    return [path, write_html(report, path.with_suffix(".html")), write_png(report, path.with_suffix(".png"))]


def merge(reports: Iterable[dict]) -> dict:
    """One report from the reports of several shards (or runs): their tests and not-built models."""
    tests, not_built, metas, seconds = [], {}, [], Counter()
    for report in reports:
        metas.append(report.get("meta", {}))
        props = {p["id"]: p for p in report["properties"]}
        rows = {m["name"]: m for m in report["models"]}
        for row in report["models"]:
            seconds[row["name"]] += row.get("seconds", 0.0)
            if row["status"] == "not built":
                not_built[row["name"]] = {k: v for k, v in row.items() if k not in ("name", "status", "seconds")}
        for model, cells in report["cells"].items():
            info = {k: rows[model].get(k) for k in ("modality", "family", "model_class", "processor_class")}
            for prop, cell in cells.items():
                tests += [{**info, "model": model, "property": props[prop], "component": cell["component"],
                           "nodeid": t["id"], "outcome": t["outcome"], "reason": t["reason"],
                           "findings": t.get("findings", []), "xpassed": t.get("xpassed", False)}
                          for t in cell["tests"]]
    meta = {**(metas[0] if metas else {}), "merged_from": [m.get("shard") for m in metas], "shard": None}
    merged = build_report(tests, not_built, meta=meta)
    for row in merged["models"]:
        row["seconds"] = round(seconds[row["name"]], 3)
    return merged


def main(argv: list[str] | None = None) -> int:
    """`python -m properties.coverage merge OUT.json IN.json...` (e.g. the shards of a CI matrix)."""
    args = list(sys.argv[1:] if argv is None else argv)
    if len(args) < 3 or args[0] != "merge":
        print("usage: python -m properties.coverage merge OUT.json IN.json [IN.json ...]", file=sys.stderr)
        return 2
    merged = merge(json.loads(Path(p).read_text()) for p in args[2:])
    for path in write_report(merged, Path(args[1])):
        print(path)
    return 0


if __name__ == "__main__":
    sys.exit(main())
