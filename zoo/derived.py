"""Copies of a subject's model derived once per model object: cast, quantized, in train mode.

Properties compare a subject with a derived copy of its model on every example; deep-copying a
model per example would cost more than the forward passes. The copies are keyed on the model
object (weakly), so a broken private copy of a model gets its own derived copies.
"""

from __future__ import annotations

import weakref
from typing import Callable

import torch

from zoo.subject import Subject

_DERIVED: "weakref.WeakKeyDictionary[torch.nn.Module, dict]" = weakref.WeakKeyDictionary()


def derived(subject: Subject, key: str, make: Callable[[Subject], Subject]) -> Subject:
    """`make(subject)`, built on first use for this model object and `key`, then reused."""
    per_model = _DERIVED.setdefault(subject.model, {})
    if key not in per_model:
        per_model[key] = make(subject)
    return per_model[key]
