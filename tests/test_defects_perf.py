"""Planted defects for the performance properties: each timed property must catch its regression.

Each test breaks a private copy of a zoo model in a way that really happens (a duplicated forward,
a debugging cache that keeps every output, a cubic pairwise term, an oversized temporary, a per-item
loop over the whole batch), then lets the property's own size strategy search for an input on which
the property's own check fails. Baselines are recorded from the healthy model into an in-memory
store first, as `--update-baselines` would. The controls run the same checks on the healthy model.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import time

import pytest
import torch
from hypothesis import HealthCheck, Phase, find, settings, strategies as st
from hypothesis.errors import FlakyFailure

from baselines import compare, results
from baselines.fingerprint import fingerprint
from baselines.store import Baselines
from properties import test_perf as perf
from tests.planted import breakable, failure_of, healthy

pytestmark = pytest.mark.perf
ROOT = Path(__file__).resolve().parents[1]

# Timed checks cost a fraction of a second each: a short search. Shrinking replays the check once
# per step; the perf strategies draw only sizes, so it takes a few steps. Defects whose cost depends
# on the size (cubic length, per-item loop) fail only above some size, and shrinking walks to that
# boundary, where a timing passes on one replay and fails on the next (Hypothesis then reports a
# FlakyFailure): those searches stop at the first failing size instead.
PERF_SEARCH = settings(
    max_examples=30, deadline=None, database=None, derandomize=True,
    phases=(Phase.generate, Phase.shrink), suppress_health_check=list(HealthCheck),
)
PERF_FIRST_FAILURE = settings(PERF_SEARCH, phases=(Phase.generate,))
PERF_CONTROL = settings(PERF_SEARCH, max_examples=3)


REAL_PAUSES = compare.PAUSES  # captured before `no_pauses` patches them


@pytest.fixture(autouse=True)
def no_pauses(monkeypatch):
    """Re-measure as often as in a real run, without the pauses: a planted defect is not a burst."""
    monkeypatch.setattr("baselines.compare.PAUSES", (0.0,) * len(compare.PAUSES))


def caught(check, strategy, *args, says: tuple[str, ...], search: settings = PERF_SEARCH):
    """The defect fails the check. Hypothesis replays the failing example once more; on a busy machine
    a timing near the bound can pass that replay (FlakyFailure), so the search is then tried again
    (at most three times in all)."""
    for attempt in range(3):
        try:
            failure = failure_of(check, strategy, *args, search=search)
            break
        except FlakyFailure:
            if attempt == 2:
                raise
    assert failure is not None, f"{check.__name__} never failed on the planted defect"
    for phrase in says:
        assert phrase in failure.message, f"message lacks {phrase!r}:\n{failure.message}"
    return failure


def passes(check, strategy, *args) -> None:
    """The healthy control re-measures with the suite's real pauses: a neighbour's burst is not a failure.

    A failure that does not reproduce when Hypothesis replays it (FlakyFailure) is timing noise by
    definition; the search is then repeated once, and only a second failure counts. (Seen here: after
    the cross-device tests have run in the same process, a tiny model's forward can run ~1.6x slower
    for a few seconds.)
    """
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr("baselines.compare.PAUSES", REAL_PAUSES)
        try:
            failure = failure_of(check, strategy, *args, search=PERF_CONTROL)
        except FlakyFailure:
            failure = failure_of(check, strategy, *args, search=PERF_CONTROL)
    assert failure is None, f"{check.__name__} fails on a healthy model:\n{failure.message}"


def recorded_baselines(name: str) -> Baselines:
    """Latency and memory baselines of the healthy model at every baseline size (in memory).

    Recorded inside a Hypothesis run, as `--update-baselines` records them and as the checks below
    measure: code runs measurably slower inside a Hypothesis test than outside it (about 1.25x for
    a tiny model's forward, measured here), so a baseline taken outside would not be comparable.
    """
    subject, store = healthy(name), Baselines(fingerprint("cpu"), updating=True)

    def record_all(_) -> bool:
        for batch, length in perf.baseline_sizes(subject.spec):
            inputs = perf.inputs_of_size(subject.spec, batch, length)
            perf.check_latency(subject, inputs, store)
            perf.check_peak_memory(subject, inputs, store)
        return True

    find(st.none(), record_all, settings=settings(PERF_CONTROL, max_examples=1, phases=(Phase.generate,)))
    return Baselines(store.fingerprint, store.entries)


# The checks take (subject, inputs, baselines); `failure_of` appends the drawn input last.
def latency(subject, baselines, inputs):
    perf.check_latency(subject, inputs, baselines)


def peak_memory(subject, baselines, inputs):
    perf.check_peak_memory(subject, inputs, baselines)


def _wrap_forward(model: torch.nn.Module, wrapper) -> torch.nn.Module:
    forward = model.forward
    model.forward = lambda *args, **kwargs: wrapper(forward, *args, **kwargs)
    return model


# -- latency ----------------------------------------------------------------------------------------
@pytest.mark.parametrize("name", ["distilbert", "vit"])
def test_latency_catches_model_made_three_times_as_slow(name):
    """The forward runs three times (a call duplicated in a refactor, twice): three times the time, same outputs.

    Three, not two: on this 2-core VM one take of the same forward moves by up to 1.7x (thread CPU
    time, 0.60-1.14 ms for distilbert at 1x32, measured here), so a 2x slowdown passes one of the
    four takes often enough to make the search miss it (vit: about 2 searches in 5). A 3x one fails
    every take. The band's limit stays 1.6x (see baselines/compare.py).
    """
    baselines = recorded_baselines(name)
    subject = breakable(name)
    _wrap_forward(subject.model, lambda forward, *a, **k: [forward(*a, **k) for _ in range(3)][-1])
    failure = caught(latency, perf.baseline_inputs(subject.spec), subject, baselines,
                     says=(f"[{name}] latency", "x the baseline", "band <= 1.6x", "measured 4 times"))
    ratio = float(failure.message.split(": ", 1)[1].split("x the baseline")[0])
    assert 1.6 < ratio < 6, failure.message  # three times the work shows as about three times the time (noise allowed)


def test_latency_passes_healthy_models(tmp_path):
    """Control, as a user runs it: record baselines in one process, compare in a fresh one: no failure.

    A fresh process, because latency measured in a long test session depends on what ran before
    it there (seen here: ~1.6x slower for seconds after the cross-device tests), which a stored
    baseline never sees.
    """
    def run(*extra: str) -> subprocess.CompletedProcess:
        command = [sys.executable, "-m", "pytest", "properties/test_perf.py", "-m", "perf", "-q",
                   "-k", "latency_within_baseline", "--model", "distilbert", "--model", "vit",
                   "--hypothesis-profile=ci", "--baselines-dir", str(tmp_path), *extra]
        return subprocess.run(command, cwd=ROOT, capture_output=True, text=True, timeout=300)

    recorded = run("--update-baselines")
    assert recorded.returncode == 0, recorded.stdout + recorded.stderr
    compared = run()
    assert compared.returncode == 0, compared.stdout + compared.stderr
    assert "2 passed" in compared.stdout and "skipped" not in compared.stdout, compared.stdout


def test_missing_baseline_is_reported_not_failed():
    subject = healthy("bert")
    inputs = perf.inputs_of_size(subject.spec, 1, 32)
    empty = Baselines(fingerprint("cpu"))
    assert perf.check_latency(subject, inputs, empty) == perf.MISSING
    assert perf.check_peak_memory(subject, inputs, empty) == perf.MISSING
    results.drain()
    # without a perf report to feed, a missing baseline is not measured at all
    assert perf.check_latency(subject, inputs, Baselines(fingerprint("cpu"), measure_missing=False)) == perf.MISSING
    assert results.drain() == []


# -- peak memory ------------------------------------------------------------------------------------
@pytest.mark.parametrize("name", ["bert", "gpt2"])
def test_peak_memory_catches_oversized_temporary(name):
    """The forward materialises a (batch, length, length, 256) pairwise tensor and reduces it."""
    baselines = recorded_baselines(name)
    subject = breakable(name)

    def pairwise(forward, *args, **kwargs):
        batch, length = kwargs["input_ids"].shape
        torch.ones(batch, length, length, 256).sum()
        return forward(*args, **kwargs)

    _wrap_forward(subject.model, pairwise)
    caught(peak_memory, perf.baseline_inputs(subject.spec), subject, baselines,
           says=(f"[{name}] peak memory", "MiB, baseline", "band <="))


def test_peak_memory_passes_healthy_models():
    for name in ("bert", "gpt2"):
        passes(peak_memory, perf.baseline_inputs(healthy(name).spec), healthy(name), recorded_baselines(name))


# -- leak -------------------------------------------------------------------------------------------
@pytest.mark.parametrize("name", ["gpt2", "whisper", "clip"])
def test_leak_catches_output_kept_per_forward(name):
    """A debugging cache on the model keeps one output tensor of every forward."""
    subject = breakable(name)
    kept = []
    subject.model.register_forward_hook(lambda module, args, output: kept.append(next(iter(output.values()))))
    failure = caught(perf.check_no_leak, perf.baseline_inputs(subject.spec), subject,
                     says=(f"[{name}] leak", "more live tensors", "expected 0"))
    grown_tensors = int(failure.message.split(" more live tensors")[0].rsplit(" ", 1)[1])
    assert grown_tensors >= perf.LEAK_FORWARDS, failure.message  # at least one per forward


def test_no_leak_passes_healthy_models():
    for name in ("gpt2", "whisper", "clip"):
        passes(perf.check_no_leak, perf.baseline_inputs(healthy(name).spec), healthy(name))


# -- length scaling ---------------------------------------------------------------------------------
@pytest.mark.parametrize("name", ["bert"])
def test_length_scaling_catches_cubic_cost(name):
    """A cost cubic in the length (a triplet interaction over every three positions): 2 us x length^3
    of this thread's CPU time, the clock the suite times with (8 ms at 16 tokens, 0.5 s at 64).

    (A computed triplet term flattened: at 1024 features it cost about as much as the tiny forward at
    the ladder's short end, and larger matmuls run more efficiently, so the measured exponent sat near
    the bound, 2.2-2.5, and the search missed it on some runs. Spinning on the CPU clock is cubic by
    construction, on any machine.)"""
    subject = breakable(name)

    def triplets(forward, *args, **kwargs):
        length = kwargs["input_ids"].shape[1]
        until = time.thread_time() + 2e-6 * length**3
        while time.thread_time() < until:
            pass
        return forward(*args, **kwargs)

    _wrap_forward(subject.model, triplets)
    failure = caught(perf.check_length_scaling, perf.length_ladders(subject.spec), subject,
                     says=(f"[{name}] length scaling", "the architecture allows at most ^2"), search=PERF_FIRST_FAILURE)
    exponent = float(failure.message.split("latency grows as length^")[1].split()[0])
    assert exponent > perf.ARCHITECTURE_EXPONENT + perf.EXPONENT_NOISE


def test_length_scaling_passes_healthy_models():
    for name in ("bert", "llama", "t5"):
        passes(perf.check_length_scaling, perf.length_ladders(healthy(name).spec), healthy(name))


# -- batch throughput -------------------------------------------------------------------------------
@pytest.mark.parametrize("name", ["distilbert", "gpt2"])
def test_batch_throughput_catches_per_item_loop_over_whole_batch(name):
    """Each item is computed by a pass over the whole batch: cost batch x batch.

    (Re-running the tiny model itself per item is not enough: its forward costs about the same at
    every batch size, so items per second then stay flat instead of dropping, and the search found
    a failing size only on some runs.)"""
    subject = breakable(name)

    def per_item(forward, *args, **kwargs):
        batch = next(v for v in kwargs.values() if isinstance(v, torch.Tensor)).shape[0]
        rows = torch.ones(batch, 2048, 1024)
        for _ in range(batch):  # one pass over every item's row, for each item
            rows.mul(rows).sum()
        return forward(*args, **kwargs)

    _wrap_forward(subject.model, per_item)
    failure = caught(perf.check_batch_throughput, perf.batch_pairs(subject.spec), subject,
                     says=(f"[{name}] batch throughput", "items/s", f"floor {perf.THROUGHPUT_FLOOR}x"),
                     search=PERF_FIRST_FAILURE)
    small, large = sorted(failure.example)
    assert large >= 2 * small


def test_batch_throughput_passes_healthy_models():
    for name in ("distilbert", "gpt2", "vit", "whisper"):
        passes(perf.check_batch_throughput, perf.batch_pairs(healthy(name).spec), healthy(name))
