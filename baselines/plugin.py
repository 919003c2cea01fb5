"""pytest hooks for performance baselines (loaded by conftest.py through `pytest_plugins`).

`--update-baselines` records the latency and peak memory figures of this run into the baseline
file of this machine's fingerprint; otherwise the perf properties compare with it.
`--perf-report PATH` writes a markdown report (and a PNG plot beside it). Figures travel from
the checks to here through each test report's `user_properties`, so both work under xdist.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from baselines import results
from baselines.fingerprint import fingerprint
from baselines.store import DATA, Baselines

_PROPERTY = "hfprops_perf"
NOTES = pytest.StashKey[list]()


def pytest_addoption(parser):
    group = parser.getgroup("hfprops-perf", "hfprops: performance baselines")
    group.addoption("--update-baselines", action="store_true",
                    help="record latency and peak memory baselines for this machine instead of comparing")
    group.addoption("--baselines-dir", default=str(DATA), metavar="DIR",
                    help=f"where baseline files live (default: {DATA.relative_to(DATA.parent.parent)})")
    group.addoption("--perf-report", default=None, metavar="PATH",
                    help="write a markdown performance report to PATH and a PNG plot beside it")


def _store(config) -> Baselines:
    import torch  # noqa: F401  (conftest has set the thread count the fingerprint records)

    store = Baselines.load(fingerprint("cpu"), directory=Path(config.getoption("baselines_dir")),
                           updating=config.getoption("update_baselines"))
    # a registry sweep has no baselines: measuring each id's latency only to skip it cost 2.8 of the
    # sweep's 77 minutes of test time, which the other workers spent waiting (see `baselines/quiet.py`)
    store.measure_missing = bool(config.getoption("perf_report"))
    return store


def pytest_configure(config):
    config.stash[NOTES] = []


def pytest_report_header(config):
    store = _store(config)
    where = store.path
    if store.updating:
        state = f"recording into {where}"
    elif store.entries:
        state = f"{len(store.entries)} stored sizes in {where}"
    else:
        state = f"none stored for this machine ({where} missing): latency and memory comparisons are reported as skips"
    return [f"hfprops perf: baselines {store.id}: {state}"]


@pytest.fixture(scope="session")
def perf_baselines(request) -> Baselines:
    """This machine's stored baselines (recording instead when `--update-baselines` is given)."""
    return _store(request.config)


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item, call):
    outcome = yield
    notes = results.drain()
    if notes:
        outcome.get_result().user_properties.append((_PROPERTY, json.dumps(notes)))


def pytest_runtest_logreport(report):
    # Runs in the controller for every report (with xdist, for the workers' reports too).
    for name, value in report.user_properties:
        if name == _PROPERTY:
            _collected.extend(json.loads(value))


_collected: list[dict] = []


def pytest_sessionfinish(session):
    config = session.config
    if hasattr(config, "workerinput"):  # an xdist worker: the controller writes
        return
    notes = list(_collected)
    if config.getoption("update_baselines") and notes:
        store = _store(config)
        store.updating = True
        for note in notes:
            if note["kind"] == "latency":
                store.put(note["key"], "latency", {k: note[k] for k in ("ratio", "ms", "iqr_ms", "calibration_ms")})
            elif note["kind"] == "memory":
                store.put(note["key"], "memory", {"peak_bytes": note["peak_bytes"]})
        config.stash[NOTES] = [f"baselines recorded: {store.save()} ({len(store.entries)} sizes)"]
    path = config.getoption("perf_report")
    if path:
        from baselines.report import write_report

        written = write_report(notes, Path(path), _store(config))
        config.stash[NOTES] = config.stash.get(NOTES, []) + [f"perf report: {', '.join(map(str, written))}"]


def pytest_terminal_summary(terminalreporter, config):
    for line in config.stash.get(NOTES, []):
        terminalreporter.write_line(f"hfprops perf: {line}")
