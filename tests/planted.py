"""Helpers for planted-defect tests: fresh zoo subjects to break, and running a property to failure.

A planted-defect test feeds a deliberately broken subject through the property's own check
function, lets Hypothesis search the property's own strategy for an input that makes it fail,
and returns the shrunk input with the failure message, so the test can assert both that the
property fails and that its message says the right thing.
"""

from __future__ import annotations

import functools

import copy
from dataclasses import dataclass
from functools import lru_cache
from typing import Any, Callable

import torch
from hypothesis import HealthCheck, find, settings
from hypothesis.errors import NoSuchExample

from zoo.build import build_zoo_subject
from zoo.subject import Subject

SEARCH = settings(
    max_examples=200, deadline=None, database=None, derandomize=True,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large, HealthCheck.large_base_example],
)
CONTROL = settings(SEARCH, max_examples=25)  # healthy models: the same search, shorter


@lru_cache(maxsize=None)
def _pristine(name: str) -> Subject:
    return build_zoo_subject(name)


def healthy(name: str) -> Subject:
    """The zoo subject, built once per process; do not modify it (use `breakable`)."""
    return _pristine(name)


def breakable(name: str) -> Subject:
    """A private copy of a zoo subject that a test may break."""
    original = _pristine(name)
    return original.with_model(copy.deepcopy(original.model))


@dataclass
class Failure:
    example: Any  # the shrunk input
    message: str


def failure_of(check: Callable, strategy, *args, search: settings = SEARCH) -> Failure | None:
    """Search `strategy` for an input on which `check(*args, input)` fails; the shrunk failure or None.

    The message is the one the check raised on the returned example: `find` ends by replaying the
    shrunk example through the condition, so the last failure seen belongs to it. Re-running the check
    afterwards, outside Hypothesis, would not do for timed checks: a forward runs measurably faster
    there (about 1.25x for a tiny model, see tests/test_defects_perf.py), so a 2x defect measured
    against a baseline taken inside Hypothesis can pass the replay (a CI run failed that way).
    """
    last_failure: list = []  # [(example, message)] of the latest failing call

    def fails(example) -> bool:
        try:
            check(*args, example)
        except AssertionError as exc:
            last_failure[:] = [(example, str(exc))]
            return True
        return False

    try:
        example = find(strategy, fails, settings=search)
    except NoSuchExample:
        return None
    failed_on, message = last_failure[0]
    assert failed_on is example, "find returned an example its last failing call did not see"
    return Failure(example, message)


def expect_caught(check: Callable, strategy, *args, says: tuple[str, ...] = ()) -> Failure:
    """Assert that the property fails on the defective subject and that its message contains `says`."""
    failure = failure_of(check, strategy, *args)
    assert failure is not None, f"{check.__name__} never failed on the planted defect"
    for phrase in says:
        assert phrase in failure.message, f"message lacks {phrase!r}:\n{failure.message}"
    return failure


def expect_passes(check: Callable, strategy, *args) -> None:
    """The control: on the healthy subject the same search finds no failing input."""
    failure = failure_of(check, strategy, *args, search=CONTROL)
    assert failure is None, f"{check.__name__} fails on a healthy model:\n{failure.message}"


def on_output(model: torch.nn.Module, change: Callable[[torch.Tensor, tuple], torch.Tensor]) -> torch.nn.Module:
    """Plant a defect in every top-level floating output (`change(tensor, inputs) -> tensor`)."""

    def hook(module, args, kwargs, output):
        for key, value in list(output.items()):
            if isinstance(value, torch.Tensor) and value.is_floating_point():
                output[key] = change(value, kwargs)
        return output

    model.register_forward_hook(hook, with_kwargs=True)
    return model


# -- defects shared by several planted-defect tests ----------------------------------------------------
def ignore_attention_mask(model: torch.nn.Module) -> torch.nn.Module:
    """The model attends to padding: its attention mask is replaced by ones before the forward."""

    def pre_hook(module, args, kwargs):
        if kwargs.get("attention_mask") is not None:
            kwargs["attention_mask"] = torch.ones_like(kwargs["attention_mask"])
        return args, kwargs

    model.register_forward_pre_hook(pre_hook, with_kwargs=True)
    return model


def shift_cached_positions(model: torch.nn.Module) -> torch.nn.Module:
    """Off-by-one cache offset: a call that continues a cache numbers its tokens from cache length + 1."""
    forward = model.forward

    @functools.wraps(forward)  # keeps the forward's signature: the subject reads it (e.g. the cache's name)
    def shifted(*args, position_ids=None, **kwargs):
        past = kwargs.get("cache", kwargs.get("past_key_values"))
        if past is not None and past.get_seq_length() > 0 and position_ids is not None:
            position_ids = position_ids + 1
        return forward(*args, position_ids=position_ids, **kwargs)

    model.forward = shifted
    return model
