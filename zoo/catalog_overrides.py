"""Per-architecture exceptions to the generic tiny builder (`zoo/catalog.py`), one table.

A row exists only where the generic shrink rules cannot work; each says why. `config` entries
are config kwargs applied after the generic shrink (a nested dict edits a sub-config of that
name); `skip` marks a model type that cannot run here at all, with the reason the catalogue
reports.
"""

from __future__ import annotations

# model_type -> {"config": {...}, "reason": "..."} or {"skip": "reason"}
OVERRIDES: dict[str, dict] = {}
