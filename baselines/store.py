"""Stored baselines: one JSON file per machine fingerprint under `baselines/data/`.

A file holds the fingerprint it was recorded under and one entry per (model, input size, dtype),
each with the figures of every metric recorded for it (`latency`, `memory`). Absolute figures
(milliseconds, bytes) are kept beside the calibrated ratio that comparisons use.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path

from baselines.fingerprint import fingerprint_id

DATA = Path(__file__).with_name("data")


def entry_key(model: str, sizes: str, dtype: str) -> str:
    """`bert|attention_mask=4x64,input_ids=4x64|float32`."""
    return f"{model}|{sizes}|{dtype}"


def sizes_of(inputs) -> str:
    """The input size part of a key: every input's shape, by name."""
    return ",".join(f"{name}={'x'.join(map(str, value.shape))}" for name, value in sorted(inputs.items()))


@dataclass
class Baselines:
    """The baselines of one fingerprint; `updating` means this run records instead of comparing."""

    fingerprint: dict[str, str]
    entries: dict[str, dict[str, dict]] = field(default_factory=dict)
    path: Path | None = None
    updating: bool = False
    # measure a figure that has no stored baseline (the perf report shows it); off when nothing would read it
    measure_missing: bool = True

    @classmethod
    def load(cls, fingerprint: dict[str, str], *, directory: Path = DATA, updating: bool = False) -> "Baselines":
        path = Path(directory) / f"{fingerprint_id(fingerprint)}.json"
        entries = {}
        if path.exists():
            stored = json.loads(path.read_text())
            if stored.get("fingerprint") != fingerprint:
                raise ValueError(f"{path}: recorded under another fingerprint {stored.get('fingerprint')}")
            entries = stored.get("entries", {})
        return cls(fingerprint, entries, path, updating)

    @property
    def id(self) -> str:
        return fingerprint_id(self.fingerprint)

    def get(self, key: str, metric: str) -> dict | None:
        return self.entries.get(key, {}).get(metric)

    def put(self, key: str, metric: str, figures: dict) -> None:
        self.entries.setdefault(key, {})[metric] = figures

    def save(self) -> Path:
        assert self.path is not None, "an in-memory store has no file"
        self.path.parent.mkdir(parents=True, exist_ok=True)
        document = {"fingerprint": self.fingerprint, "entries": dict(sorted(self.entries.items()))}
        self.path.write_text(json.dumps(document, indent=1, sort_keys=False) + "\n")
        return self.path
