"""Attention back ends: every attention implementation gives the outputs eager attention gives, on
real tokens.

What an implementation leaves at padded positions is free (eager and sdpa differ there), so only
unmasked positions are compared. The back ends checked are `sdpa` by default; set
`HFPROPS_ATTENTION` to a comma-separated list (for example `sdpa,flex_attention`) to check others.
`flex_attention` is not in the default list because on the CPU it compiles every new input shape
(10-60 s each on the tiny models).
"""

import os

import pytest
from hypothesis import given, strategies as st

from devices.tolerance import assert_outputs_close, tolerance
from properties.artifacts import record
from strategies.batches import model_inputs

PROPERTY = "attention back ends"
REFERENCE = "eager"


def backends() -> list[str]:
    """The attention implementations compared with eager (from `HFPROPS_ATTENTION`, default sdpa)."""
    return [name.strip() for name in os.environ.get("HFPROPS_ATTENTION", "sdpa").split(",") if name.strip()]


# One copy per (subject, implementation), built on first use: properties never change the
# session's subject, and rebuilding per example would dominate the run time.
_COPIES: dict[tuple[int, str], tuple[object, object]] = {}


def running(subject, implementation: str):
    """`subject` with its model switched to `implementation` (a cached copy)."""
    key = (id(subject), implementation)
    if key not in _COPIES:
        _COPIES[key] = (subject, subject.with_attention(implementation))  # holding subject keeps its id unique
    return _COPIES[key][1]


def check_backend_agrees(subject, backend: str, inputs) -> None:
    """On real tokens, `backend` gives the outputs that eager attention gives (hidden states included)."""
    reference = running(subject, REFERENCE).forward(inputs, hidden_states=True)
    candidate = running(subject, backend).forward(inputs, hidden_states=True)
    dtype = next(t.dtype for t in reference.values() if t.is_floating_point())
    assert_outputs_close(
        candidate, reference, tolerance(dtype, "reordered", subject.device.type),
        model=subject.name, prop=f"{PROPERTY} ({backend} vs {REFERENCE})",
        masks=subject.real_token_masks(reference, inputs),
    )


@pytest.mark.parametrize("backend", backends())
@given(data=st.data())
def test_backend_agrees_with_eager(subject, backend, data):
    try:
        running(subject, backend)
    except (ValueError, ImportError) as exc:  # transformers refuses back ends a model does not implement
        pytest.skip(f"{subject.name} does not run attention back end {backend!r}: {str(exc).splitlines()[0]}")
    inputs = data.draw(model_inputs(subject.spec), label="inputs")
    record(subject, inputs, prop=PROPERTY, backend=backend, reference=REFERENCE, replay={
        "kind": "compare", "actual": {"attn_implementation": backend},
        "expected": {"attn_implementation": REFERENCE}, "real_tokens_only": True,
    })
    check_backend_agrees(subject, backend, inputs)
