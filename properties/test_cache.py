"""Cache equivalence: decoding with the KV cache gives what the full computation gives.

Step-by-step decoding with the cache gives the same logits as one full forward; greedy
`generate` gives the same tokens with and without the cache; and the items of a padded batch
get the same tokens as each item generated alone. Causal and encoder-decoder models only.
"""

from dataclasses import replace

import numpy as np
import pytest
from hypothesis import event, given, strategies as st

from devices.tolerance import assert_outputs_close, tolerance
from properties.artifacts import compared, pair, record, side
from strategies.batches import composed_batches, media_placeholder_ids, model_inputs
from zoo.generation import cached_logits, decoded_key, full_logits, generate_greedy

pytestmark = pytest.mark.needs("cache")

PROPERTY = "cache equivalence"
MAX_NEW_TOKENS = 3  # generation is the slow part of the suite: a few greedy steps find position bugs
MAX_CACHED_STEPS = 16  # single-token cached calls per example (each is a model call)


@st.composite
def decoding(draw, spec):
    """`(inputs, prefix_length)`: model inputs and how many decoded tokens the first call takes.

    The remaining tokens (1..`MAX_CACHED_STEPS`, fewer if the sequence is shorter) are then fed one
    per call with the cache. The number of cached steps is drawn first, so that it shrinks on its own.
    """
    steps = draw(st.integers(1, MAX_CACHED_STEPS), label="cached steps")
    inputs = draw(model_inputs(spec), label="inputs")
    tokens = inputs[decoded_key(spec)]
    length = tokens.shape[1]
    # the shortest first call holds every media placeholder: the features go with it, as in generation
    placeholders = np.flatnonzero(np.isin(tokens, list(media_placeholder_ids(spec))).any(axis=0))
    first = int(placeholders[-1]) + 1 if placeholders.size and decoded_key(spec) == "input_ids" else 1
    return inputs, max(first, length - steps) if first < length else length


def _room_for(spec, new_tokens: int):
    """The spec with prompts short enough that the prompt and the new tokens share the positions."""
    return replace(spec, max_length=spec.max_length - new_tokens) if spec.has("causal") else spec


@st.composite
def prompts(draw, spec):
    """`(inputs, max_new_tokens)`: conditioning inputs (prompt, encoder inputs) and how many tokens to generate."""
    new_tokens = draw(st.integers(1, MAX_NEW_TOKENS), label="max new tokens")
    return draw(model_inputs(_room_for(spec, new_tokens)), label="inputs"), new_tokens


@st.composite
def batched_prompts(draw, spec):
    """`(batch, max_new_tokens)`: a padded batch of 2..4 items that remembers each item alone (`Composed`)."""
    new_tokens = draw(st.integers(1, MAX_NEW_TOKENS), label="max new tokens")
    return draw(composed_batches(_room_for(spec, new_tokens)), label="batch"), new_tokens


def check_cached_decoding(subject, inputs, prefix_length: int) -> None:
    """Feeding the first `prefix_length` tokens, then one token per call with the cache, gives the full forward's logits."""
    expected = {"logits": full_logits(subject, inputs)}
    actual = {"logits": cached_logits(subject, inputs, prefix_length)}
    assert_outputs_close(
        actual, expected, tolerance(subject.dtype, "reordered"), model=subject.name,
        prop=f"{PROPERTY} (cached decoding after a {prefix_length}-token prefix vs full forward)",
        masks=subject.real_token_masks(expected, inputs),
    )


def _assert_same_greedy(subject, what: str, got, got_row: int, ref, ref_row: int) -> None:
    """Two greedy decodings agree: logits close at every step, tokens equal except after a near-tie.

    Where the logits agree within tolerance but the argmax differs, the two tokens were tied within
    rounding: both continuations are correct, so the comparison stops there.
    """
    tol = tolerance(subject.dtype, "reordered")
    got_tokens, ref_tokens = got.tokens[got_row], ref.tokens[ref_row]
    for step in range(min(len(got_tokens), len(ref_tokens))):
        name = f"logits at generated step {step} (tokens so far {ref_tokens[:step]})"
        assert_outputs_close(
            {name: got.logits[got_row, step]}, {name: ref.logits[ref_row, step]}, tol,
            model=subject.name, prop=f"{PROPERTY} ({what})",
        )
        if got_tokens[step] != ref_tokens[step]:
            event("greedy tie within tolerance")
            return
    assert got_tokens == ref_tokens, (
        f"[{subject.name}] {PROPERTY} ({what}): generated {got_tokens}, expected {ref_tokens}"
    )


def check_generate_cache(subject, inputs, max_new_tokens: int) -> None:
    """Greedy `generate` gives the same tokens (and step logits) with the cache as without it."""
    without = generate_greedy(subject, inputs, max_new_tokens=max_new_tokens, use_cache=False)
    cached = generate_greedy(subject, inputs, max_new_tokens=max_new_tokens, use_cache=True)
    for row in range(len(without.tokens)):
        _assert_same_greedy(subject, f"generate with vs without cache, item {row}", cached, row, without, row)


def check_generate_batch(subject, batch, max_new_tokens: int) -> None:
    """Greedy `generate` on a padded batch gives each item the tokens it gets when generated alone."""
    batched = generate_greedy(subject, batch.inputs, max_new_tokens=max_new_tokens, use_cache=True)
    for row, item in enumerate(batch.items):
        alone = generate_greedy(subject, item, max_new_tokens=max_new_tokens, use_cache=True)
        _assert_same_greedy(
            subject, f"generate in a batch of {len(batch)} ({batch.padding_side} padding) vs alone, item {row}",
            batched, row, alone, 0,
        )


@given(data=st.data())
def test_cached_decoding_matches_full_forward(subject, data):
    inputs, prefix_length = data.draw(decoding(subject.spec), label="decoding")
    record(subject, inputs, prop=PROPERTY, prefix_length=prefix_length,
           tolerance=str(tolerance(subject.dtype, "reordered")), replay=lambda: compared(pair(
               side(run="cached_logits", prefix_length=prefix_length), side(run="full_logits"), real_tokens="expected",
               what=f"cached decoding after a {prefix_length}-token prefix vs full forward")))
    check_cached_decoding(subject, inputs, prefix_length)


@given(data=st.data())
def test_generate_same_with_and_without_cache(subject, data):
    inputs, max_new_tokens = data.draw(prompts(subject.spec), label="prompt")
    record(subject, inputs, prop=PROPERTY, max_new_tokens=max_new_tokens, compare="use_cache=True vs False",
           tolerance=str(tolerance(subject.dtype, "reordered")), replay=lambda: compared(pair(
               side(run="greedy", max_new_tokens=max_new_tokens, use_cache=True),
               side(run="greedy", max_new_tokens=max_new_tokens, use_cache=False), judge="greedy",
               what="generate with vs without cache")))
    check_generate_cache(subject, inputs, max_new_tokens)


@given(data=st.data())
def test_generate_batch_matches_items_alone(subject, data):
    batch, max_new_tokens = data.draw(batched_prompts(subject.spec), label="prompts")
    record(subject, batch.inputs, prop=PROPERTY, max_new_tokens=max_new_tokens,
           compare="padded batch vs each item alone", items=list(batch.items),
           tolerance=str(tolerance(subject.dtype, "reordered")), replay=lambda: compared(*[pair(
               side(run="greedy", max_new_tokens=max_new_tokens), side(inputs=f"items.{row}", run="greedy",
               max_new_tokens=max_new_tokens), judge="greedy", rows=(row, 0), what=f"generate in a batch vs alone, "
               f"item {row}") for row in range(len(batch))]))
    check_generate_batch(subject, batch, max_new_tokens)
