"""Measuring a forward: latency with `torch.utils.benchmark`, peak and live memory.

Latency: `torch.utils.benchmark.Timer.blocked_autorange` (warm-up, blocks of runs, median and IQR
over blocks; it synchronises accelerators itself). Each model time comes with a calibration time:
a fixed matmul + softmax workload timed in the same process right before and after the model, so
`ratio = model / calibration` cancels the speed of the machine and most of its momentary load.

Memory: on accelerators the allocator's own peak (`torch.cuda.max_memory_allocated`); on CPU the
process resident set (Linux `VmHWM`, reset through `/proc/self/clear_refs`), because `tracemalloc`
does not see tensor storage. Leaks: the bytes of live tensors (every tensor the garbage collector
can reach) plus, on accelerators, the allocator's live bytes.
"""

from __future__ import annotations

import contextlib
import ctypes
import ctypes.util
import gc
import statistics
import time
import timeit
from dataclasses import dataclass
from typing import Callable

import torch
from torch.utils import benchmark

# Shortest total measuring time per figure. Blocks of runs are taken until this much time has
# passed; the tiny models run ~1-3 ms per forward, so this gives ~20-100 runs in >= 5 blocks.
MODEL_RUN_TIME = 0.08
CALIBRATION_RUN_TIME = 0.03


def clock_for(device: torch.device) -> Callable[[], float]:
    """The clock to time work on `device` with.

    CPU: the CPU time of this thread (one torch thread) or of the process (several). On a shared
    machine wall time also counts the slices other processes were scheduled in; CPU time counts
    only the work done, which is what a regression changes. Accelerators: wall time (the Timer
    synchronises the device), since the work is not done by this process's CPU.
    """
    if device.type != "cpu":
        return timeit.default_timer
    return time.thread_time if torch.get_num_threads() == 1 else time.process_time


@dataclass(frozen=True)
class Timing:
    """Median and interquartile range (seconds) of one `blocked_autorange`."""

    median: float
    iqr: float
    runs: int

    @classmethod
    def of(cls, measurement: benchmark.Measurement) -> "Timing":
        return cls(measurement.median, measurement.iqr, len(measurement.times))

    def __str__(self) -> str:
        return f"{self.median * 1e3:.3f} ms (IQR {self.iqr * 1e3:.3f} ms, {self.runs} blocks)"


def time_call(fn: Callable[[], object], *, min_run_time: float = MODEL_RUN_TIME,
              device: torch.device = torch.device("cpu")) -> Timing:
    """Time `fn()` with `torch.utils.benchmark` (one warm-up call, then blocked autorange).

    The clock is `clock_for(device)`.
    """
    fn()  # warm-up: lazy initialisation, first-call caches, allocator growth
    timer = benchmark.Timer(stmt="fn()", globals={"fn": fn}, num_threads=torch.get_num_threads(), timer=clock_for(device))
    return Timing.of(timer.blocked_autorange(min_run_time=min_run_time))


class Calibration:
    """The fixed reference workload: an attention-like matmul + softmax + matmul of fixed size.

    Its shapes are of the same order as a tiny model's layers (so it suffers the same cache and
    dispatch overheads) and its inputs are seeded, so it is the same work in every process.
    """

    def __init__(self, device: str | torch.device = "cpu", dtype: torch.dtype = torch.float32):
        self.device = torch.device(device)
        g = torch.Generator().manual_seed(0)
        self.q = torch.randn(4, 64, 32, generator=g).to(device=device, dtype=dtype)
        self.k = torch.randn(4, 64, 32, generator=g).to(device=device, dtype=dtype)

    def __call__(self) -> torch.Tensor:
        scores = torch.softmax(self.q @ self.k.transpose(1, 2), dim=-1)
        return scores @ self.k

    def time(self) -> Timing:
        return time_call(self, min_run_time=CALIBRATION_RUN_TIME, device=self.device)


@dataclass(frozen=True)
class Latency:
    """A model's time, the calibration time around it, and their ratio (machine-independent)."""

    model: Timing
    calibration: Timing

    @property
    def ratio(self) -> float:
        return self.model.median / self.calibration.median

    def __str__(self) -> str:
        return f"{self.model} = {self.ratio:.2f}x calibration ({self.calibration.median * 1e3:.3f} ms)"


def measure_latency(fn: Callable[[], object], calibration: Calibration) -> Latency:
    """Time `fn` between two calibration timings; the calibration figure is their mean."""
    before = calibration.time()
    model = time_call(fn, device=calibration.device)
    after = calibration.time()
    mean = Timing((before.median + after.median) / 2, (before.iqr + after.iqr) / 2, before.runs + after.runs)
    return Latency(model, mean)


# -- memory ------------------------------------------------------------------------------------
def _status_kib(field: str) -> int:
    with open("/proc/self/status") as status:
        for line in status:
            if line.startswith(field + ":"):
                return int(line.split()[1])
    raise RuntimeError(f"/proc/self/status has no {field}")


def _trim_heap() -> None:
    # Freed heap pages stay resident in glibc's arenas and a later forward reuses them without a
    # new page fault, so its working memory would not show in the resident set. malloc_trim hands
    # them back first (no library exposes it; ctypes calls glibc directly).
    if _LIBC is not None:
        _LIBC.malloc_trim(0)


def _load_libc():
    try:
        return ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
    except OSError:
        return None


_LIBC = _load_libc()


def _reset_rss_peak() -> None:
    # Writing 5 to clear_refs resets the peak resident set (VmHWM) to the current one (Linux >= 4.0).
    with open("/proc/self/clear_refs", "w") as clear_refs:
        clear_refs.write("5")


def peak_memory(fn: Callable[[], object], device: torch.device) -> int:
    """Bytes by which one `fn()` raises the peak above the memory in use before it.

    Accelerators: the allocator's peak. CPU: the peak resident set of the process.
    """
    fn()  # warm-up: first-call caches are not the forward's working memory
    if device.type == "cuda":
        torch.cuda.synchronize(device)
        torch.cuda.reset_peak_memory_stats(device)
        start = torch.cuda.memory_allocated(device)
        fn()
        torch.cuda.synchronize(device)
        return torch.cuda.max_memory_allocated(device) - start
    _trim_heap()
    _reset_rss_peak()
    start = _status_kib("VmRSS")
    fn()
    return (_status_kib("VmHWM") - start) * 1024


def rss_bytes() -> int:
    return _status_kib("VmRSS") * 1024


@contextlib.contextmanager
def frozen_heap():
    """Move every object alive now out of the collector's sight while the block runs.

    Collections and `gc.get_objects()` then walk only the objects created inside the block, so a
    leak check costs milliseconds instead of a walk over the whole test session's heap.

    Only the young generations are collected first (the last test's garbage): a full collection
    walks every object of the session, 0.5 s at 0.9 M objects and more as a sweep's models pile up
    (it was the largest cost of the leak test over the registry). Older garbage frozen with the rest
    is invisible inside the block, so it changes no count, and is collected after it.
    """
    gc.collect(1)
    gc.freeze()
    try:
        yield
    finally:
        gc.unfreeze()


def live_tensor_bytes(device: torch.device | None = None) -> tuple[int, int]:
    """(count, bytes) of the tensors the garbage collector can reach, after a collection.

    Inside `frozen_heap()` only tensors created in the block count.

    Storage shared by several tensors (views) is counted once. On accelerators the allocator's
    live bytes are used instead, which also see tensors held only by C++.
    """
    gc.collect()
    if device is not None and device.type == "cuda":
        torch.cuda.synchronize(device)
        return -1, torch.cuda.memory_allocated(device)
    storages = {}
    count = 0
    for obj in gc.get_objects():
        if issubclass(type(obj), torch.Tensor) and obj.device.type != "meta":  # type(): no __class__ lookups
            count += 1
            storage = obj.untyped_storage()
            storages[storage.data_ptr()] = storage.nbytes()
    return count, sum(storages.values())


def spread(values: list[float]) -> str:
    """'median m (min a, max b)' of a few re-measured figures."""
    return f"median {statistics.median(values):.3g} (min {min(values):.3g}, max {max(values):.3g})"
