"""Generation: every decoding mode that should equal greedy decoding does, and the rest behave.

Static cache, assisted decoding (the model as its own assistant), prompt-lookup decoding and beam
search with one beam give greedy's tokens and step logits; several beams give finite scores
sorted best first; sampling with one seed is reproducible; `logits_to_keep=k` gives the last k
logits of the full forward; continuing `generate` from its returned sequences and cache gives one
longer `generate`. Causal and encoder-decoder models (capability `cache`).
"""

from __future__ import annotations

import contextlib

import inspect
from dataclasses import replace

import pytest
from hypothesis import event, given, settings, strategies as st

from devices.tolerance import EXACT, assert_outputs_close, nonfinite, tolerance
from properties.artifacts import compared, pair, record, side
from properties.examples import examples
from strategies.batches import model_inputs
from zoo.generation import NO_EOS, Generated, decoded_key, generate_continued, generate_output, generated

pytestmark = pytest.mark.needs("cache")

STATIC = "static cache"
ASSISTED = "assisted decoding"
LOOKUP = "prompt-lookup decoding"
ONE_BEAM = "beam search with one beam"
BEAMS = "beam search scores"
SAMPLING = "seeded sampling"
KEEP = "logits_to_keep"
CONTINUED = "generate continued from its cache"

MAX_NEW_TOKENS = 4
# Each example runs 2-3 generate calls (~10 ms each); a third of the profile's examples (8 in ci) keeps
# the file's 40 tests to ~13 s in ci (measured, one thread), and exhaustive still runs 166 per test.
FEWER = settings(max_examples=examples(max(5, settings().max_examples // 3)))


def _room_for(spec, new_tokens: int):
    """The spec with prompts short enough that the prompt and the new tokens share the positions."""
    return replace(spec, max_length=spec.max_length - new_tokens) if spec.has("causal") else spec


@st.composite
def prompts(draw, spec, *, batch_sizes=(1, 4), most_new_tokens: int = MAX_NEW_TOKENS):
    """`(inputs, max_new_tokens)`: conditioning inputs (prompt, encoder inputs) and how many tokens to generate."""
    new_tokens = draw(st.integers(1, most_new_tokens), label="max new tokens")
    return draw(model_inputs(_room_for(spec, MAX_NEW_TOKENS), batch_sizes=batch_sizes), label="inputs"), new_tokens


def assert_same_decoding(subject, prop: str, got: Generated, ref: Generated) -> None:
    """Two decodings agree row by row: step logits close, tokens equal except after a near-tie.

    Where the logits agree within tolerance but the argmax differs, the two tokens were tied within
    rounding: both continuations are correct, so the comparison of that row stops there.
    """
    tol = tolerance(subject.dtype, "reordered", subject.device.type)
    assert len(got.tokens) == len(ref.tokens), (
        f"[{subject.name}] {prop}: {len(got.tokens)} sequences, expected {len(ref.tokens)}"
    )
    for row, (got_tokens, ref_tokens) in enumerate(zip(got.tokens, ref.tokens)):
        for step in range(min(len(got_tokens), len(ref_tokens))):
            name = f"logits of item {row} at generated step {step} (tokens so far {ref_tokens[:step]})"
            assert_outputs_close({name: got.logits[row, step]}, {name: ref.logits[row, step]}, tol,
                                 model=subject.name, prop=prop)
            if got_tokens[step] != ref_tokens[step]:
                event("greedy tie within tolerance")
                break
        else:
            assert got_tokens == ref_tokens, (
                f"[{subject.name}] {prop}: item {row} generated {got_tokens}, greedy generated {ref_tokens}"
            )


def _versus_greedy(subject, new_tokens: int, what: str, **options) -> dict:
    """Standalone replay: `generate` with `options` against greedy, step logits within `reordered`, ties allowed."""
    return compared(pair(side(run="greedy", max_new_tokens=new_tokens, generate=options),
                         side(run="greedy", max_new_tokens=new_tokens), judge="greedy", what=what))


def greedy(subject, inputs, max_new_tokens: int) -> Generated:
    return generated(subject, generate_output(subject, inputs, max_new_tokens=max_new_tokens))


def check_static_cache(subject, inputs, max_new_tokens: int) -> None:
    """Greedy `generate` with a static cache gives the tokens and step logits of the dynamic cache."""
    static = generated(subject, generate_output(subject, inputs, max_new_tokens=max_new_tokens,
                                                cache_implementation="static"))
    assert_same_decoding(subject, f"{STATIC} vs dynamic cache", static, greedy(subject, inputs, max_new_tokens))


def check_assisted(subject, inputs, max_new_tokens: int) -> None:
    """Assisted decoding with the model as its own assistant gives greedy's tokens and step logits."""
    assisted = generated(subject, generate_output(subject, inputs, max_new_tokens=max_new_tokens,
                                                  assistant_model=subject.model))
    assert_same_decoding(subject, f"{ASSISTED} (own assistant) vs greedy", assisted,
                         greedy(subject, inputs, max_new_tokens))


def check_prompt_lookup(subject, inputs, max_new_tokens: int) -> None:
    """Prompt-lookup decoding (candidates copied from the prompt, verified by the model) gives greedy's tokens."""
    looked_up = generated(subject, generate_output(subject, inputs, max_new_tokens=max_new_tokens,
                                                   prompt_lookup_num_tokens=2))
    assert_same_decoding(subject, f"{LOOKUP} vs greedy", looked_up, greedy(subject, inputs, max_new_tokens))


def _nonfinite_scores(subject, prop: str, scores) -> None:
    for step, tensor in enumerate(scores):
        problem = nonfinite(tensor.masked_fill(tensor == float("-inf"), 0.0))  # -inf: a token ruled out
        assert problem is None, f"[{subject.name}] {prop}: scores at step {step}: {problem}"


def check_one_beam(subject, inputs, max_new_tokens: int) -> None:
    """`num_beams=1` gives greedy's tokens and step logits, and its step scores are finite (or -inf: ruled out)."""
    out = generate_output(subject, inputs, max_new_tokens=max_new_tokens, num_beams=1, output_scores=True)
    _nonfinite_scores(subject, ONE_BEAM, out.scores)
    assert_same_decoding(subject, f"{ONE_BEAM} vs greedy", generated(subject, out), greedy(subject, inputs, max_new_tokens))


def check_beam_scores(subject, inputs, max_new_tokens: int, beams: int) -> None:
    """With several beams and as many returned sequences, each item's `sequences_scores` are finite and
    sorted best first."""
    out = generate_output(subject, inputs, max_new_tokens=max_new_tokens, num_beams=beams,
                          num_return_sequences=beams, output_scores=True, output_logits=False)
    prop = f"{BEAMS} ({beams} beams)"
    problem = nonfinite(out.sequences_scores)
    assert problem is None, f"[{subject.name}] {prop}: sequences_scores {problem}"
    for item, scores in enumerate(out.sequences_scores.view(-1, beams).tolist()):
        assert scores == sorted(scores, reverse=True), (
            f"[{subject.name}] {prop}: item {item}'s sequences_scores are not sorted best first: {scores}"
        )


def check_seeded_sampling(subject, inputs, max_new_tokens: int, seed: int) -> None:
    """Sampling twice with the same seed gives the same tokens and bit-identical step logits."""
    first, second = (
        generated(subject, generate_output(subject, inputs, max_new_tokens=max_new_tokens, do_sample=True, seed=seed))
        for _ in range(2)
    )
    assert first.tokens == second.tokens, (
        f"[{subject.name}] {SAMPLING} (seed {seed}): sampled {first.tokens}, then {second.tokens}"
    )
    assert_outputs_close({"step logits": second.logits}, {"step logits": first.logits}, EXACT,
                         model=subject.name, prop=f"{SAMPLING} (seed {seed})")


def check_logits_to_keep(subject, inputs, keep: int) -> None:
    """`logits_to_keep=keep` returns the last `keep` positions' logits of the full forward."""
    full = subject.forward(inputs)["logits"]
    kept = subject.forward(inputs, logits_to_keep=keep)["logits"]
    assert_outputs_close({"logits": kept}, {"logits": full[:, -keep:]}, tolerance(subject.dtype, "reordered"),
                         model=subject.name, prop=f"{KEEP}={keep} vs the last {keep} of the full forward's logits")


def check_continued(subject, inputs, first: int, then: int) -> None:
    """`first` tokens, then `then` more from the returned sequences and cache, equal one call of `first + then`."""
    continued = generate_continued(subject, inputs, first=first, then=then)
    once = generated(subject, generate_output(subject, inputs, max_new_tokens=first + then, **NO_EOS),
                     cut_at_eos=False)
    assert_same_decoding(subject, f"{CONTINUED} ({first} then {then} tokens vs {first + then} at once)",
                         continued, once)


@FEWER
@given(data=st.data())
def test_static_cache_matches_dynamic(subject, data):
    inputs, new_tokens = data.draw(prompts(subject.spec), label="prompt")
    record(subject, inputs, prop=STATIC, max_new_tokens=new_tokens, tolerance=str(tolerance(subject.dtype, "reordered")),
           replay=lambda: _versus_greedy(subject, new_tokens, "static vs dynamic cache", cache_implementation="static"))
    check_static_cache(subject, inputs, new_tokens)


def _skip_stateful(subject) -> None:
    """Candidate-verifying decoding rolls the cache back; up to 5.24.x transformers refuses it for stateful
    models (recurrent and SSM layers, `_is_stateful`) with a clear ValueError: a documented limit, not a
    defect. 5.25.0 keeps the recurrent states it needs to roll back and drops `_is_stateful`: judged there."""
    if getattr(subject.model, "_is_stateful", False):
        pytest.skip(f"{type(subject.model).__name__} is stateful: transformers does not run assisted decoding on it")


# 5.25.0's own refusals, raised before any token is verified: a cache it cannot roll back (DeepSeek-V4's
# compressed attention: ValueError "... requires a cache that can be cropped ...") or no Cache object at
# all (xLSTM and RWKV keep their own state: RuntimeError "Assisted decoding requires a cache").
UNCROPPABLE = "Assisted decoding requires a cache"


# 5.25.0's refusal of beam search on a cache it cannot reorder (RWKV's recurrent state, a plain list):
# ValueError "... cannot use beam search with a cache currently, as the cache cannot be reordered".
UNREORDERABLE = "cannot use beam search with a cache currently"


@contextlib.contextmanager
def _refusal_skipped(subject, refusal: str, what: str):
    """Skip, with transformers' own message, where `generate` refuses `what` with an error containing `refusal`;
    any other error is raised."""
    try:
        yield
    except (ValueError, RuntimeError) as error:
        if refusal not in str(error):
            raise
        pytest.skip(f"{type(subject.model).__name__}: transformers refuses {what}: {str(error).splitlines()[0]}")


def _uncroppable_cache_skipped(subject):
    return _refusal_skipped(subject, UNCROPPABLE, "assisted decoding")


@FEWER
@given(data=st.data())
def test_assisted_decoding_matches_greedy(subject, data):
    _skip_stateful(subject)
    inputs, new_tokens = data.draw(prompts(subject.spec, batch_sizes=(1, 1)), label="prompt")  # assisted: batch 1
    record(subject, inputs, prop=ASSISTED, max_new_tokens=new_tokens, tolerance=str(tolerance(subject.dtype, "reordered")),
           replay=lambda: _versus_greedy(subject, new_tokens, "own assistant vs greedy", assistant_model="self"))
    with _uncroppable_cache_skipped(subject):
        check_assisted(subject, inputs, new_tokens)


@FEWER
@given(data=st.data())
def test_prompt_lookup_matches_greedy(subject, data):
    _skip_stateful(subject)
    inputs, new_tokens = data.draw(prompts(subject.spec, batch_sizes=(1, 1)), label="prompt")  # batch 1 only
    record(subject, inputs, prop=LOOKUP, max_new_tokens=new_tokens, tolerance=str(tolerance(subject.dtype, "reordered")),
           replay=lambda: _versus_greedy(subject, new_tokens, "prompt lookup vs greedy", prompt_lookup_num_tokens=2))
    with _uncroppable_cache_skipped(subject):
        check_prompt_lookup(subject, inputs, new_tokens)


@FEWER
@given(data=st.data())
def test_one_beam_matches_greedy(subject, data):
    inputs, new_tokens = data.draw(prompts(subject.spec), label="prompt")
    record(subject, inputs, prop=ONE_BEAM, max_new_tokens=new_tokens, tolerance=str(tolerance(subject.dtype, "reordered")),
           replay=lambda: _versus_greedy(subject, new_tokens, "one beam vs greedy", num_beams=1))
    check_one_beam(subject, inputs, new_tokens)


@FEWER
@given(data=st.data())
def test_beam_scores_sorted_and_finite(subject, data):
    inputs, new_tokens = data.draw(prompts(subject.spec), label="prompt")
    beams = data.draw(st.integers(2, 3), label="beams")
    record(subject, inputs, prop=BEAMS, max_new_tokens=new_tokens, beams=str(beams))
    with _refusal_skipped(subject, UNREORDERABLE, "beam search"):
        check_beam_scores(subject, inputs, new_tokens, beams)


@FEWER
@given(data=st.data())
def test_seeded_sampling_reproducible(subject, data):
    inputs, new_tokens = data.draw(prompts(subject.spec), label="prompt")
    seed = data.draw(st.integers(0, 2**32 - 1), label="seed")
    record(subject, inputs, prop=SAMPLING, max_new_tokens=new_tokens, seed=str(seed), tolerance=str(EXACT),
           replay=lambda: compared(pair(*[side(run="greedy", max_new_tokens=new_tokens, generate={"do_sample": True},
                                               seed=seed)] * 2, judge="greedy", what=f"seed {seed} twice")))
    check_seeded_sampling(subject, inputs, new_tokens, seed)


@st.composite
def kept_logits(draw, spec):
    """`(inputs, keep)`: model inputs and 1..length of the decoded sequence (the decoder's ids of an
    encoder-decoder: its logits follow them, whatever else the forward takes)."""
    inputs = draw(model_inputs(spec), label="inputs")
    return inputs, draw(st.integers(1, inputs[decoded_key(spec)].shape[1]), label="logits to keep")


@given(data=st.data())
def test_logits_to_keep_keeps_last_logits(subject, data):
    if "logits_to_keep" not in inspect.signature(subject.model.forward).parameters:
        pytest.skip(f"{type(subject.model).__name__}.forward takes no logits_to_keep")
    inputs, keep = data.draw(kept_logits(subject.spec), label="inputs and logits to keep")
    record(subject, inputs, prop=KEEP, logits_to_keep=str(keep))
    check_logits_to_keep(subject, inputs, keep)


@FEWER
@given(data=st.data())
def test_continued_generate_matches_one_call(subject, data):
    inputs, first = data.draw(prompts(subject.spec, most_new_tokens=MAX_NEW_TOKENS - 1), label="prompt")
    then = data.draw(st.integers(1, MAX_NEW_TOKENS - first), label="then")
    record(subject, inputs, prop=CONTINUED, first=str(first), then=str(then))
    check_continued(subject, inputs, first, then)
