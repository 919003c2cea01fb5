"""The figures measured during the running test, for the perf report and `--update-baselines`.

Checks call `note(...)`; the plugin drains the notes after each test into the test report
(so they reach the controller under pytest-xdist too) and gathers them for the session.
"""

from __future__ import annotations

from typing import Any

_NOTES: list[dict[str, Any]] = []


def note(kind: str, model: str, **figures: Any) -> None:
    """Remember one measurement: `kind` is latency, memory, leak, scaling or throughput."""
    _NOTES.append({"kind": kind, "model": model, **figures})


def drain() -> list[dict[str, Any]]:
    notes = list(_NOTES)
    _NOTES.clear()
    return notes
