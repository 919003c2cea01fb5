"""Example counts of tests that take fewer than the profile's, scaled down with profiles below `ci`.

A test that sets its own count (perf timings, load paths, generation) keeps it under `ci` and above;
under a smaller profile (`sweep`, for every architecture) it takes the same share of the profile, at
least one, so cutting the sweep's examples cuts every test's, never a property.
"""

from __future__ import annotations

from hypothesis import settings

CI_EXAMPLES = 25  # the ci profile's count (conftest.py), which the counts below are set against


def examples(count: int) -> int:
    """`count` under ci and larger profiles; under a smaller one `count` x profile / ci, at least 1."""
    profile = settings.default.max_examples
    return count if profile >= CI_EXAMPLES else max(1, round(count * profile / CI_EXAMPLES))
