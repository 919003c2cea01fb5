"""Timed tests measure alone under pytest-xdist (`baselines/quiet.py`).

An inner run of 60 sleeping tests on two workers, every tenth marked `timed`, logs when each test's
body ran (CLOCK_MONOTONIC, one clock for every process). With the plugin no other test runs while a
timed one does; without it they overlap, so the check can fail.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

pytest_plugins = ["pytester"]

ROOT = Path(__file__).resolve().parent.parent

CONFTEST = '''
import os
pytest_plugins = ["baselines.quiet"] if os.environ["QUIET_PLUGIN"] == "1" else []
'''

TESTS = '''
import json, os, time
import pytest

def span(kind, seconds):
    start = time.monotonic()
    time.sleep(seconds)
    with open(os.environ["QUIET_LOG"], "a") as log:
        log.write(json.dumps([kind, start, time.monotonic()]) + "\\n")

@pytest.mark.parametrize("i", [pytest.param(i, marks=pytest.mark.timed) if i % 10 == 3 else i for i in range(60)])
def test_sleep(request, i):
    timed = request.node.get_closest_marker("timed") is not None
    span("timed" if timed else "plain", 0.25 if timed else 0.03)
'''


def spans(pytester, monkeypatch, plugin: bool) -> list[tuple[str, float, float]]:
    log = pytester.path / "spans.jsonl"
    monkeypatch.setenv("PYTHONPATH", str(ROOT) + os.pathsep + os.environ.get("PYTHONPATH", ""))
    monkeypatch.setenv("QUIET_LOG", str(log))
    monkeypatch.setenv("QUIET_PLUGIN", "1" if plugin else "0")
    pytester.makeconftest(CONFTEST)
    pytester.makepyfile(test_sleep=TESTS)
    marker = [] if plugin else ["-o", "markers=timed: unlocked control run"]
    result = pytester.runpytest_subprocess("-n", "2", "-p", "no:cacheprovider", *marker, timeout=120)
    result.assert_outcomes(passed=60)
    return [tuple(json.loads(line)) for line in log.read_text().splitlines()]


def overlaps(rows) -> list[tuple]:
    """Pairs of test bodies that ran at the same time, at least one of them timed."""
    timed = [r for r in rows if r[0] == "timed"]
    return [(t, r) for t in timed for r in rows if r is not t and r[1] < t[2] and t[1] < r[2]]


def test_timed_tests_run_with_no_other_test_running(pytester, monkeypatch):
    rows = spans(pytester, monkeypatch, plugin=True)
    assert sum(r[0] == "timed" for r in rows) == 6
    assert overlaps(rows) == []


def test_without_the_plugin_timed_tests_share_the_machine(pytester, monkeypatch):
    """The control: the same run unlocked does overlap, so the check above can fail."""
    rows = spans(pytester, monkeypatch, plugin=False)
    assert overlaps(rows), "expected a timed test to overlap another test without the lock"


def test_without_xdist_nothing_is_locked(pytester, monkeypatch):
    monkeypatch.setenv("PYTHONPATH", str(ROOT) + os.pathsep + os.environ.get("PYTHONPATH", ""))
    monkeypatch.setenv("QUIET_PLUGIN", "1")
    monkeypatch.setenv("QUIET_LOG", str(pytester.path / "spans.jsonl"))
    pytester.makeconftest(CONFTEST)
    pytester.makepyfile(test_sleep=TESTS.replace("range(60)", "range(12)"))
    pytester.runpytest("-p", "no:cacheprovider").assert_outcomes(passed=12)


@pytest.mark.parametrize("perf_test", ["test_latency_within_baseline", "test_length_scaling", "test_batch_throughput"])
def test_the_perf_tests_that_time_are_marked(perf_test):
    from properties import test_perf

    marks = {m.name for m in getattr(getattr(test_perf, perf_test), "pytestmark", [])}
    assert "timed" in marks


def test_without_flock_a_worker_locks_nothing(tmp_path, monkeypatch):
    """Windows has no fcntl: a worker there runs as without xdist instead of failing to import."""
    from types import SimpleNamespace

    from baselines import quiet

    monkeypatch.setattr(quiet, "fcntl", None)
    config = SimpleNamespace(stash=pytest.Stash(), workerinput={quiet._KEY: str(tmp_path)},
                             addinivalue_line=lambda *args: None)
    quiet.pytest_configure(config)
    assert quiet._LOCKS not in config.stash
