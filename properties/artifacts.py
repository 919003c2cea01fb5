"""Failure artifacts (loaded by conftest.py through `pytest_plugins`).

Every property test calls `record(subject, inputs, ...)` right after drawing, so that when the
test fails the inputs of the final (shrunk) example are known and can be written out.
"""

from __future__ import annotations

from typing import Any, Mapping

# The most recent example of the running test: Hypothesis replays the shrunk example last,
# so on failure this holds the minimal failing input.
_LAST: dict[str, Any] = {}


def record(subject, inputs: Mapping[str, Any], **details: Any) -> None:
    """Remember the subject and inputs of the current example (plus property-specific details)."""
    _LAST.clear()
    _LAST.update(subject=subject, inputs=inputs, details=details)


def last_recorded() -> dict[str, Any]:
    return dict(_LAST)
