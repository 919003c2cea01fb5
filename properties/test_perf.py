"""Performance: a model does not get slower, fatter or leakier, and scales as its architecture allows.

Hypothesis draws the sizes (batch sizes, sequence lengths); `torch.utils.benchmark` measures
(see `baselines/measure.py`). Latency and peak memory are compared with the stored baselines of
this machine (`baselines/data/`, `--update-baselines` records them); a missing baseline is
reported as a skip naming the machine fingerprint, never as a failure. The length exponent,
batch throughput and leak properties need no baseline: they compare the model with itself.
The tests that time are marked `timed`: under pytest-xdist they measure with no other test running
(`baselines/quiet.py`).
"""

from __future__ import annotations

from functools import lru_cache

import numpy as np
import pytest
import torch
from hypothesis import given, settings, strategies as st

from baselines.compare import LATENCY_BAND, RECORDED_TAKES, Attempts, latency_limit, memory_limit, remeasured
from baselines.measure import Calibration, frozen_heap, live_tensor_bytes, measure_latency, peak_memory, rss_bytes, time_call
from baselines.results import note
from baselines.store import Baselines, entry_key, sizes_of
from properties.artifacts import measured, record
from properties.examples import examples
from strategies.signature import signature_inputs

pytestmark = pytest.mark.perf

# Every example measures for a fraction of a second, so the perf tests take few examples (the
# profile's 25 would cost ~10x the perf budget); the size space they draw from is small anyway.
PERF_EXAMPLES = examples(2)
# The baseline comparisons draw from two stored sizes: two examples cover both (derandomized).
BASELINE_EXAMPLES = examples(2)

# Self-attention costs O(length^2) per layer and everything else O(length): no architecture in the
# zoo allows a latency exponent above 2. The tiny models measure 0.0-0.5 (fixed overheads dominate);
# 0.3 is the allowance for timing noise on a ladder spanning a factor of two.
ARCHITECTURE_EXPONENT = 2.0
EXPONENT_NOISE = 0.3
# Throughput at the larger batch (at least twice the smaller) may not fall below 90 % of the
# smaller batch's: the tiny models measure 1.5-1.9x more items per second when the batch doubles.
THROUGHPUT_FLOOR = 0.9
# Exponent and throughput compare a model with itself, with wide margins: shorter timings do.
SHAPE_RUN_TIME = 0.04
# Leak: forwards per window; a leak must grow live tensor memory in every window.
LEAK_FORWARDS = 30


# -- inputs of a given size -------------------------------------------------------------------------
def longest(spec) -> int:
    """The length the size draws run up to: text length, or decoder length for audio models."""
    if spec.has("text"):
        return spec.max_length
    if spec.has("waveform"):
        return spec.max_samples
    return spec.decoder_max_length if spec.has("encoder_decoder") else 0


def inputs_of_size(spec, batch: int, length: int, seed: int = 0) -> dict[str, np.ndarray]:
    """Inputs of exactly `batch` items of `length` tokens, unpadded, contents from `seed`.

    Timing and memory depend on the sizes, not on which token ids or pixel values are fed, so
    the strategies draw only sizes (Hypothesis then shrinks a handful of numbers, each step a
    fresh measurement) and the contents come from a fixed seed.
    """
    rng = np.random.default_rng(seed)
    inputs: dict[str, np.ndarray] = {}
    if spec.has("text"):
        inputs["input_ids"] = rng.integers(0, spec.vocab_size, (batch, length), dtype=np.int64)
        inputs["attention_mask"] = np.ones((batch, length), dtype=np.int64)
    if spec.has("vision"):
        inputs["pixel_values"] = rng.random((batch, spec.num_channels, spec.image_size, spec.image_size),
                                            dtype=np.float32)
    if spec.has("audio"):
        inputs["input_features"] = rng.standard_normal((batch, spec.num_mel_bins, spec.num_frames), dtype=np.float32)
    if spec.has("waveform"):  # `length` counts samples
        samples = max(length, spec.min_samples)
        inputs["input_values"] = rng.uniform(-1, 1, (batch, samples)).astype(np.float32)
        inputs["attention_mask"] = np.ones((batch, samples), dtype=np.int64)
    if spec.has("encoder_decoder"):
        decoder_length = min(length, spec.decoder_max_length)
        ids = rng.integers(0, spec.decoder_vocab_size or spec.vocab_size, (batch, decoder_length), dtype=np.int64)
        if spec.decoder_start_token_id is not None:
            ids[:, 0] = spec.decoder_start_token_id
        inputs["decoder_input_ids"] = ids
    return inputs


def baseline_sizes(spec) -> list[tuple[int, int]]:
    """The (batch, length) grid the baselines are recorded at: one small and one full input."""
    full = longest(spec)
    return [(1, max(1, full // 2)), (4, full)]


@st.composite
def baseline_inputs(draw, spec):
    """Inputs at one of the baseline sizes (so a stored baseline can exist for them)."""
    batch, length = draw(st.sampled_from(baseline_sizes(spec)), label="baseline size")
    return _completed(draw, spec, inputs_of_size(spec, batch, length))


def _completed(draw, spec, inputs):
    """`inputs` with what the forward needs beyond them (an eos per item, placeholders, bbox: see
    strategies/signature.py), as every other property feeds the model."""
    if not spec.extra.get("signature_inputs"):
        return inputs
    return draw(signature_inputs(spec, inputs), label="signature inputs")


@st.composite
def length_ladders(draw, spec):
    """`{length: inputs}` at lengths top/2, 3top/4 and top (top drawn in the upper half), one batch size.

    The ladder sits at the long end, where the dominant term shows: at the short end the fixed
    per-call overhead of a tiny model flattens every curve.
    """
    full = longest(spec)
    top = draw(st.integers(max(4, full // 2), full), label="longest length")
    batch = draw(st.integers(1, 4), label="batch size")
    return {length: _completed(draw, spec, inputs_of_size(spec, batch, length)) for length in (top // 2, (3 * top) // 4, top)}


@st.composite
def batch_pairs(draw, spec):
    """`{batch: inputs}` for a batch size and one at least twice as large (up to 8), one length."""
    small = draw(st.integers(1, 4), label="smaller batch")
    large = draw(st.integers(2 * small, 8), label="larger batch")
    full = longest(spec)
    length = draw(st.integers(max(1, full // 4), full), label="length") if full else 0
    return {batch: _completed(draw, spec, inputs_of_size(spec, batch, length)) for batch in (small, large)}


# -- measuring a subject ----------------------------------------------------------------------------
def forward_call(subject, inputs):
    """A no-argument callable running one forward (inputs converted once, outside the timing)."""
    kwargs = subject.model_kwargs(inputs)
    model = subject.model

    def forward():
        with torch.no_grad():
            return model(**kwargs)

    return forward


@lru_cache(maxsize=None)
def calibration(device: str) -> Calibration:
    return Calibration(device)


def _key(subject, inputs) -> str:
    return entry_key(subject.name, sizes_of(inputs), str(subject.dtype).removeprefix("torch."))


def _median_time(subject, inputs) -> float:
    return time_call(forward_call(subject, inputs), device=subject.device, min_run_time=SHAPE_RUN_TIME).median


# -- properties ---------------------------------------------------------------------------------------
MISSING = "no baseline"


def check_latency(subject, inputs, baselines: Baselines) -> str:
    """The calibrated latency (model time / calibration time) stays within the baseline's band.

    Returns "recorded" (updating), MISSING (nothing stored for this key) or "within band". Without a
    stored baseline the latency is measured only where the perf report wants it (`measure_missing`).
    """
    key = _key(subject, inputs)
    stored = None if baselines.updating else baselines.get(key, "latency")
    if stored is None and not baselines.updating and not baselines.measure_missing:
        return MISSING
    forward, cal = forward_call(subject, inputs), calibration(str(subject.device))
    limit = latency_limit(stored["ratio"]) if stored else float("inf")
    if baselines.updating:  # a stored figure is compared against for good: the median of several takes
        takes = sorted((measure_latency(forward, cal) for _ in range(RECORDED_TAKES)), key=lambda m: m.ratio)
        latency = takes[len(takes) // 2]
        attempts = Attempts(tuple(m.ratio for m in takes), failed=False)
    else:
        latency, attempts = remeasured(lambda: measure_latency(forward, cal), lambda m: m.ratio, lambda r: r > limit)
    figures = {"ratio": latency.ratio, "ms": latency.model.median * 1e3, "iqr_ms": latency.model.iqr * 1e3,
               "calibration_ms": latency.calibration.median * 1e3}
    note("latency", subject.name, key=key, sizes=sizes_of(inputs), baseline=stored, attempts=list(attempts.figures),
         **figures)
    if baselines.updating:
        baselines.put(key, "latency", figures)
        return "recorded"
    if stored is None:
        return MISSING
    assert not attempts.failed, (
        f"[{subject.name}] latency: {latency.ratio / stored['ratio']:.2f}x the baseline at {key} "
        f"(calibrated ratio {latency.ratio:.1f} vs {stored['ratio']:.1f}; band <= {LATENCY_BAND}x = {limit:.1f}); "
        f"{attempts.describe()}; now {latency.model}, baseline {stored['ms']:.3f} ms; "
        f"calibration {latency.calibration.median * 1e3:.3f} ms now, {stored['calibration_ms']:.3f} ms then"
    )
    return "within band"


def check_peak_memory(subject, inputs, baselines: Baselines) -> str:
    """The peak memory one forward adds stays within the baseline's band (see `baselines/compare.py`)."""
    key = _key(subject, inputs)
    forward = forward_call(subject, inputs)
    stored = None if baselines.updating else baselines.get(key, "memory")
    limit = memory_limit(stored["peak_bytes"]) if stored else float("inf")
    peak, attempts = remeasured(lambda: peak_memory(forward, subject.device), float, lambda b: b > limit)
    note("memory", subject.name, key=key, sizes=sizes_of(inputs), peak_bytes=peak, baseline=stored,
         attempts=list(attempts.figures))
    if baselines.updating:
        baselines.put(key, "memory", {"peak_bytes": peak})
        return "recorded"
    if stored is None:
        return MISSING
    assert not attempts.failed, (
        f"[{subject.name}] peak memory: one forward at {key} adds {peak / 2**20:.2f} MiB, baseline "
        f"{stored['peak_bytes'] / 2**20:.2f} MiB (band <= {limit / 2**20:.2f} MiB); "
        f"{attempts.describe(' MiB', scale=1 / 2**20)}"
    )
    return "within band"


def check_no_leak(subject, inputs) -> None:
    """Repeating the same forward many times does not grow the memory held by live tensors."""
    forward = forward_call(subject, inputs)
    for _ in range(3):  # warm-up: lazily built caches fill once, a leak keeps growing
        forward()

    def window() -> tuple[int, int, int]:
        count, held = live_tensor_bytes(subject.device)
        rss = rss_bytes()
        for _ in range(LEAK_FORWARDS):
            forward()
        after_count, after_held = live_tensor_bytes(subject.device)
        return after_held - held, after_count - count, rss_bytes() - rss

    with frozen_heap():
        (grown, counted, rss), attempts = remeasured(window, lambda g: g[0], lambda held: held > 0)
    note("leak", subject.name, sizes=sizes_of(inputs), growth_bytes=grown, growth_tensors=counted, rss_growth=rss)
    assert not attempts.failed, (
        f"[{subject.name}] leak: {LEAK_FORWARDS} forwards at {sizes_of(inputs)} left {grown} more bytes in "
        f"{counted} more live tensors ({grown / LEAK_FORWARDS:.0f} B per forward; resident set +{rss / 2**20:.2f} MiB); "
        f"growth per window, {attempts.describe(' KiB', scale=1 / 1024)}; expected 0"
    )


def length_exponent(times: dict[int, float]) -> float:
    """Slope of log(latency) against log(length): the exponent of a power law through the points."""
    lengths = sorted(times)
    return float(np.polyfit(np.log(lengths), np.log([times[n] for n in lengths]), 1)[0])


def check_length_scaling(subject, ladder: dict) -> None:
    """Latency grows with sequence length no faster than length^2 (self-attention's exponent)."""
    limit = ARCHITECTURE_EXPONENT + EXPONENT_NOISE

    def measure() -> dict[int, float]:
        return {length: _median_time(subject, inputs) for length, inputs in ladder.items()}

    times, attempts = remeasured(measure, length_exponent, lambda k: k > limit)
    batch = next(iter(ladder.values()))["input_ids"].shape[0]
    note("scaling", subject.name, batch=batch, ms={n: t * 1e3 for n, t in times.items()},
         exponent=attempts.figures[-1])
    assert not attempts.failed, (
        f"[{subject.name}] length scaling: latency grows as length^{attempts.figures[-1]:.2f} over lengths "
        f"{sorted(times)} at batch {batch} (times " + ", ".join(f"{n}: {t * 1e3:.2f} ms" for n, t in sorted(times.items()))
        + f"); the architecture allows at most ^{ARCHITECTURE_EXPONENT:g} (+{EXPONENT_NOISE} noise); "
        f"exponent {attempts.describe()}"
    )


def check_batch_throughput(subject, pair: dict) -> None:
    """Items per second do not drop when the batch grows (to at least twice the size)."""
    small, large = sorted(pair)

    def measure() -> dict[int, float]:
        return {batch: _median_time(subject, inputs) for batch, inputs in pair.items()}

    def gain(times):
        return (large / times[large]) / (small / times[small])

    times, attempts = remeasured(measure, gain, lambda g: g < THROUGHPUT_FLOOR)
    note("throughput", subject.name, ms={b: t * 1e3 for b, t in times.items()},
         sizes=sizes_of(pair[large]), gain=attempts.figures[-1])
    assert not attempts.failed, (
        f"[{subject.name}] batch throughput: batch {large} runs {large / times[large]:.0f} items/s, batch {small} "
        f"{small / times[small]:.0f} items/s ({attempts.figures[-1]:.2f}x, floor {THROUGHPUT_FLOOR}x; times "
        f"{times[small] * 1e3:.2f} ms and {times[large] * 1e3:.2f} ms); gain {attempts.describe('x')}"
    )


# -- tests --------------------------------------------------------------------------------------------
def _stored_latency(baselines: Baselines, subject, inputs) -> dict:
    """The stored calibrated ratio and its limit, for the standalone latency replay."""
    stored = baselines.get(_key(subject, inputs), "latency")
    return {"baseline": stored["ratio"], "limit": latency_limit(stored["ratio"])} if stored else {"baseline": None}


def _missing(baselines: Baselines, subject, inputs) -> None:
    pytest.skip(f"no baseline for {_key(subject, inputs)} on this machine ({baselines.id}): "
                f"record one with --update-baselines")


@pytest.mark.timed
@settings(max_examples=BASELINE_EXAMPLES)
@given(data=st.data())
def test_latency_within_baseline(subject, perf_baselines, data):
    inputs = data.draw(baseline_inputs(subject.spec), label="inputs")
    record(subject, inputs, prop="latency", baseline=perf_baselines.id, replay=lambda: measured(
        "latency", **_stored_latency(perf_baselines, subject, inputs)))
    if check_latency(subject, inputs, perf_baselines) == MISSING:
        _missing(perf_baselines, subject, inputs)


@settings(max_examples=BASELINE_EXAMPLES)
@given(data=st.data())
def test_peak_memory_within_baseline(subject, perf_baselines, data):
    inputs = data.draw(baseline_inputs(subject.spec), label="inputs")
    record(subject, inputs, prop="peak memory", baseline=perf_baselines.id, replay=lambda: measured("peak memory"))
    if check_peak_memory(subject, inputs, perf_baselines) == MISSING:
        _missing(perf_baselines, subject, inputs)


@settings(max_examples=examples(2))  # each example runs 60+ forwards and two heap walks
@given(data=st.data())
def test_no_leak(subject, data):
    inputs = data.draw(baseline_inputs(subject.spec), label="inputs")
    record(subject, inputs, prop="leak")
    check_no_leak(subject, inputs)


@pytest.mark.timed
@pytest.mark.needs("text")
@settings(max_examples=PERF_EXAMPLES)
@given(data=st.data())
def test_length_scaling(subject, data):
    ladder = data.draw(length_ladders(subject.spec), label="length ladder")
    record(subject, ladder[max(ladder)], prop="length scaling", lengths=sorted(ladder))
    check_length_scaling(subject, ladder)


@pytest.mark.timed
@settings(max_examples=PERF_EXAMPLES)
@given(data=st.data())
def test_batch_throughput(subject, data):
    pair = data.draw(batch_pairs(subject.spec), label="batch sizes")
    record(subject, pair[max(pair)], prop="batch throughput", batches=sorted(pair))
    check_batch_throughput(subject, pair)
