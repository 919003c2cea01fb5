"""Batching: an item's outputs do not depend on the batch around it, on its row, or on how much
masked padding it gets.

Items are drawn one by one and composed into padded batches (`strategies.batches.compose`): left
padding for causal models, whose position ids then come from the mask, right padding otherwise.
Only an item's real tokens are compared; what the model puts at masked positions is free.

The same batch written another way gives the same outputs too: packed padding-free into one row
whose `position_ids` restart at each item (no attention mask), or with a 4-D attention mask
equivalent to the 2-D one.
"""

import functools
import inspect
import re
import weakref

import numpy as np
import pytest
import torch
from hypothesis import given, strategies as st

from devices.tolerance import assert_outputs_close, tolerance
from zoo.compat import recurrent_layers
from properties.artifacts import compared, pair, per_row, record, side
from strategies.batches import (composed_batches, media_placeholder_ids, padding_amounts, padding_special_ids,
                                reordered_batches, special_ids, takes_attention_mask)
from strategies.signature import PER_TOKEN

INVARIANCE = "batch invariance"
ORDER = "batch order"
PADDING = "padding amount"
PACKED = "packed sequences"
MASK_4D = "4-D attention mask"


def reordered_tolerance(subject, outputs):
    """The policy's tolerance for the same math in another shape, for these outputs on this device."""
    dtype = next(t.dtype for t in outputs.values() if t.is_floating_point())
    return tolerance(dtype, "reordered", subject.device.type)


def check_batch_invariance(subject, batch) -> None:
    """Each item's outputs inside a padded batch of other items equal its outputs alone (real tokens)."""
    batched = subject.forward(batch.inputs, hidden_states=True)
    tol = reordered_tolerance(subject, batched)
    unsplit = subject.unsplit_outputs(batched, batch.inputs)  # packed over the batch's images: no rows to compare
    for row, item in enumerate(batch.items):
        alone = subject.row_outputs(subject.forward(item, hidden_states=True), item, 0)  # batch-indexed outputs
        alone = {name: tensor for name, tensor in alone.items() if name not in unsplit}
        assert_outputs_close(
            subject.row_outputs(batched, batch.inputs, row), alone, tol,
            model=subject.name, prop=f"{INVARIANCE} (item {row} of {len(batch)}, padding {batch.padding_side})",
        )


def check_batch_order(subject, reordering) -> None:
    """Permuting the rows of a batch permutes the outputs the same way (real tokens)."""
    batch, order = reordering
    outputs = subject.forward(batch.inputs, hidden_states=True)
    permuted = batch.permuted(order)
    permuted_outputs = subject.forward(permuted.inputs, hidden_states=True)
    alone = subject.forward(batch.items[0], hidden_states=True)  # which leading axes follow the batch size
    assert_outputs_close(
        permuted_outputs, subject.select_rows(outputs, order, batch=len(order), alone=alone),
        reordered_tolerance(subject, outputs),
        model=subject.name, prop=f"{ORDER} (rows reordered as {order})",
        masks=subject.real_token_masks(permuted_outputs, permuted.inputs),
    )


def check_padding_amount(subject, pair) -> None:
    """More masked padding (holding any id) leaves every item's outputs on its real tokens unchanged."""
    tight, padded = pair
    tight_outputs = subject.forward(tight.inputs, hidden_states=True)
    padded_outputs = subject.forward(padded.inputs, hidden_states=True)
    tol = reordered_tolerance(subject, tight_outputs)
    extra = padded.inputs["input_ids"].shape[1] - tight.inputs["input_ids"].shape[1]
    for row in range(len(tight)):
        assert_outputs_close(
            subject.row_outputs(padded_outputs, padded.inputs, row),
            subject.row_outputs(tight_outputs, tight.inputs, row), tol,
            model=subject.name, prop=f"{PADDING} (item {row}, {extra} more {padded.padding_side} padding)",
        )


def packed(batch) -> tuple[dict[str, np.ndarray], list[slice]]:
    """The batch's items concatenated into one row, `position_ids` restarting at 0 for each item, no
    attention mask; and each item's slice of the row."""
    lengths = [item["input_ids"].shape[1] for item in batch.items]
    starts = np.cumsum([0] + lengths)
    inputs = {key: np.concatenate([item[key] for item in batch.items], axis=1)
              for key in ("input_ids", *PER_TOKEN) if key in batch.inputs}  # per-token inputs travel with their ids
    inputs["position_ids"] = np.concatenate([np.arange(n)[None] for n in lengths], axis=1)
    return inputs, [slice(a, b) for a, b in zip(starts, starts[1:])]


def unpackable_inputs(batch) -> list[str]:
    """The batch's inputs one packed row cannot carry: media (GIT's pixel_values, a VLM's images) belong
    to an item, not to a span of the row."""
    return sorted(set(batch.inputs) - {"input_ids", "attention_mask", "position_ids", *PER_TOKEN})


def check_packed_sequences(subject, batch) -> None:
    """Items packed padding-free into one row with restarting `position_ids` get the outputs of the padded batch."""
    padded = subject.forward(batch.inputs, hidden_states=True)
    row_inputs, segments = packed(batch)
    packed_outputs = subject.forward(row_inputs, hidden_states=True)
    tol = reordered_tolerance(subject, padded)
    blind = mask_ignores_positions(subject.model)
    for row, segment in enumerate(segments):
        # the item's segment as the "real tokens" of the packed row
        in_segment = np.zeros_like(row_inputs["input_ids"])
        in_segment[0, segment] = 1
        assert_outputs_close(
            subject.row_outputs(packed_outputs, {"attention_mask": in_segment}, 0),
            subject.row_outputs(padded, batch.inputs, row), tol, model=subject.name,
            prop=f"{PACKED} (item {row} of {len(batch)} at packed positions {segment.start}..{segment.stop - 1} "
            f"vs row {row} of the {batch.padding_side}-padded batch)" + (f"; {blind}" if blind else ""),
        )


def mask_ignores_positions(model) -> str | None:
    """Why the model cannot see packing (None: it can): its modeling file builds its causal mask
    without masking_utils, or calls create_causal_mask without position_ids, from which masking_utils
    reads where packed items start."""
    return _module_ignores_positions(type(model).__module__)


@functools.lru_cache(maxsize=None)  # one read of each modeling file's source, not one per example
def _module_ignores_positions(module_name: str) -> str | None:
    import sys

    module = sys.modules.get(module_name)
    try:
        source = inspect.getsource(module) if module else ""
    except (OSError, TypeError):
        return None
    # causal mask builder calls: masking_utils' create_*causal_mask, called by name or through a variable
    # (BigBird: `mask_function = create_causal_mask if is_decoder else ...`), always with a config
    calls = [call for match in re.finditer(r"\b(create_\w*causal_mask|\w*mask_function)\(", source)
             if re.search(r"\bconfig=|[\"']config[\"']", call := mask_call_arguments(source, match.end()))]
    if "create_causal_mask" not in source:
        return f"{module.__name__} builds its causal mask without position_ids (its own mask code, not masking_utils)"
    if any("position_ids" not in call for call in calls):
        return f"{module.__name__} builds its causal mask without position_ids"
    return None


def mask_call_arguments(source: str, start: int) -> str:
    """The arguments of a mask builder call whose opening parenthesis ends at `start`; a call spreading a
    dict (AFMoE, Gemma 2: `create_causal_mask(**mask_kwargs)`) gets that dict's literal and the
    `mask_kwargs["key"] = ...` lines that add to it."""
    text = call_text(source, start)
    spread = re.fullmatch(r"\s*\*\*(\w+)\s*\)", text)
    if not spread:
        return text
    name = re.escape(spread.group(1))
    literals = [call_text(source, m.end()) for m in re.finditer(rf"\b{name}\s*=\s*[{{(]|\b{name}\s*=\s*dict\(", source)]
    additions = re.findall(rf"\b{name}\[[^\]]+\]\s*=", source)
    return "\n".join(literals + additions)


def call_text(source: str, start: int) -> str:
    """The argument text of a call (or the body of a literal) whose opening bracket ends at `start`."""
    depth, i = 1, start
    while depth and i < len(source):
        depth += {"(": 1, "[": 1, "{": 1, ")": -1, "]": -1, "}": -1}.get(source[i], 0)
        i += 1
    return source[start:i]


def _probe_inputs(subject, batch, variant: int) -> dict:
    """An item of the batch whole (its images and their placeholder runs too) with one token after the first
    set to one of two ordinary ids; else a fixed 4-token text ending in one of them (`_probe_text`).

    The token is the item's last ordinary one (neither special nor a media placeholder), or failing that
    its last special one: a special id in the middle of a text is still valid input, while a placeholder
    must stay, as the model counts placeholders against its media features. The first item that has
    such a token serves, so the probe never depends on which batch came first (its answer is cached)."""
    spec = subject.spec
    placeholders = media_placeholder_ids(spec)
    reserved = set(special_ids(spec)) | placeholders
    ordinary = [i for i in range(1, spec.vocab_size) if i not in reserved][:2]
    for item in batch.items:
        ids = item["input_ids"][0]
        texts = [p for p in range(1, len(ids)) if int(ids[p]) not in placeholders]
        if texts:
            plain = [p for p in texts if int(ids[p]) not in reserved]
            probe = {key: value.copy() for key, value in item.items()}
            probe["input_ids"][0, (plain or texts)[-1]] = ordinary[variant]
            return probe
    return _probe_text(batch.items[0], [ordinary[0]] * 3 + [ordinary[variant]], bool(placeholders))


def _probe_text(item: dict, ids: list[int], drop_media: bool) -> dict:
    """`ids` as a text item beside `item`'s other inputs: per-token inputs (token types, boxes) zeros
    along it; media inputs dropped where the model places them at placeholder ids (the text has none)."""
    probe = {"input_ids": np.array([ids]), "attention_mask": np.ones((1, len(ids)), dtype=np.int64)}
    for key, value in item.items():
        if key in probe:
            continue
        if key in PER_TOKEN:
            probe[key] = np.zeros((1, len(ids), *value.shape[2:]), dtype=value.dtype)
        elif not drop_media:
            probe[key] = value.copy()
    return probe


_CAUSAL: "weakref.WeakKeyDictionary[torch.nn.Module, bool]" = weakref.WeakKeyDictionary()


def attends_causally(subject, batch) -> bool:
    """Whether the subject's text attention is causal: changing the last token leaves the first token's
    outputs unchanged. Asked of the model (once per model object), so no list of model types is needed.

    Unchanged within the `reordered` tolerance, not bit for bit: a mixture-of-experts layer groups the
    tokens by expert for its matmuls (grouped_mm), so another last token regroups them and moves the
    first token's outputs in the last bit; attending to that token moves them by orders more."""
    if subject.model not in _CAUSAL:
        outputs = [subject.forward(_probe_inputs(subject, batch, variant), hidden_states=True) for variant in (0, 1)]
        masks = subject.real_token_masks(outputs[0], _probe_inputs(subject, batch, 0))
        tol = tolerance(subject.dtype, "reordered")

        def same(a, b) -> bool:
            rtol, atol = tol.for_reference(b)
            return bool(torch.allclose(a, b, rtol=rtol, atol=atol))

        _CAUSAL[subject.model] = all(same(outputs[1][n][:, 0], outputs[0][n][:, 0]) for n in masks)
    return _CAUSAL[subject.model]


def mask_4d(subject, batch) -> torch.Tensor:
    """The additive (batch, 1, query, key) mask equivalent to the batch's 2-D mask: 0 where a query may
    attend a key (a real key, and not a later one if the model is causal), the dtype's minimum elsewhere."""
    keys = torch.from_numpy(batch.inputs["attention_mask"]).bool()
    rows, length = keys.shape
    allowed = keys[:, None, None, :].expand(rows, 1, length, length)
    if attends_causally(subject, batch):
        allowed = allowed & torch.ones(length, length, dtype=torch.bool).tril()
    return torch.zeros(allowed.shape, dtype=subject.dtype).masked_fill(~allowed, torch.finfo(subject.dtype).min)


def check_4d_mask(subject, batch) -> None:
    """A custom 4-D attention mask equivalent to the 2-D mask gives the same outputs on the real tokens."""
    two_d = subject.forward(batch.inputs, hidden_states=True)  # an output echoing the mask is left out (Subject.forward)
    four_d = subject.forward(batch.inputs, hidden_states=True, attention_mask=mask_4d(subject, batch))
    assert_outputs_close(
        four_d, two_d, reordered_tolerance(subject, two_d), model=subject.name,
        prop=f"{MASK_4D} ({'causal' if attends_causally(subject, batch) else 'bidirectional'} 4-D mask vs the 2-D mask, "
        f"{batch.padding_side} padding)",
        masks=subject.real_token_masks(two_d, batch.inputs),
    )


@given(data=st.data())
def test_batch_invariance(subject, data):
    batch = data.draw(composed_batches(subject.spec), label="batch")
    record(subject, batch.inputs, prop=INVARIANCE, items=batch.items, replay=lambda: compared(*per_row(
        len(batch), lambda r: pair(side(row=r), side(inputs=f"items.{r}", row=0), what=f"item {r} of {len(batch)}"))))
    check_batch_invariance(subject, batch)


@given(data=st.data())
def test_batch_order(subject, data):
    batch, order = data.draw(reordered_batches(subject.spec), label="batch and order")
    record(subject, batch.inputs, prop=ORDER, order=order, permuted=lambda: batch.permuted(order).inputs,
           replay=lambda: compared(pair(side(inputs="permuted"), side(rows=order), real_tokens="actual",
                                        what=f"rows reordered as {order}")))
    check_batch_order(subject, (batch, order))


def _skip_without_mask(subject) -> None:
    if not takes_attention_mask(subject.spec):
        pytest.skip(f"{type(subject.model).__name__}.forward takes no attention_mask: nothing marks positions as padding")


@pytest.mark.needs("text")
@given(data=st.data())
def test_padding_amount(subject, data):
    _skip_without_mask(subject)
    tight, padded = data.draw(padding_amounts(subject.spec), label="tight and padded")
    record(subject, tight.inputs, prop=PADDING, other_inputs=padded.inputs, replay=lambda: compared(*per_row(
        len(tight), lambda r: pair(side(inputs="other_inputs", row=r), side(row=r), what=f"item {r}"))))
    check_padding_amount(subject, (tight, padded))


@pytest.mark.needs("text")
@given(data=st.data())
def test_padding_holding_special_ids(subject, data):
    _skip_without_mask(subject)
    if not padding_special_ids(subject.spec):
        pytest.skip("the model has no special ids padding may hold (no pad, bos or eos id in its vocab)")
    tight, padded = data.draw(padding_amounts(subject.spec, special_fillers=True), label="tight and padded")
    record(subject, tight.inputs, prop=PADDING, other_inputs=padded.inputs, replay=lambda: compared(*per_row(
        len(tight), lambda r: pair(side(inputs="other_inputs", row=r), side(row=r), what=f"item {r}"))))
    check_padding_amount(subject, (tight, padded))


@pytest.mark.needs("causal")
@given(data=st.data())
def test_packed_sequences_match_padded_batch(subject, data):
    # transformers' masking_utils (create_causal_mask) reads packing off restarting position ids when no
    # attention mask is given; models that take no position_ids cannot be told where an item starts
    if "position_ids" not in inspect.signature(subject.model.forward).parameters:
        pytest.skip(f"{type(subject.model).__name__}.forward takes no position_ids")
    if recurrent_layers(subject.model):  # transformers packs those with seq_idx / cu_seq_lens, not positions
        pytest.skip(f"{type(subject.model).__name__} has recurrent layers (SSM / linear attention): their state "
                    "runs on across a packed row whatever position_ids say")
    # the packed row holds every item: it must fit the model maximum too
    batch = data.draw(composed_batches(subject.spec, max_length=max(1, subject.spec.max_length // 4)), label="batch")
    if unpackable_inputs(batch):
        pytest.skip(f"the items carry {unpackable_inputs(batch)}: one packed row holds token ids and per-token inputs only")
    record(subject, batch.inputs, prop=PACKED, items=batch.items, packed=packed(batch)[0], replay=lambda: compared(
        *[pair(side(inputs="packed", row=0, row_mask=[[int(s.start <= i < s.stop) for i in range(segments[-1].stop)]]),
               side(row=r), what=f"item {r}") for segments in [packed(batch)[1]] for r, s in enumerate(segments)]))
    check_packed_sequences(subject, batch)


def no_generic_4d_masks(subject) -> str | None:
    """Why a custom 4-D mask cannot stand for the 2-D one on this model (None: it can).

    Models that build their masks through transformers' masking_utils take a ready 4-D mask in
    its place; others (ALiBi, DeBERTa's own mask format) do not, and a sliding or local window (or an
    attention chunk) would have to be encoded in the 4-D mask too.
    """
    import sys

    module = sys.modules.get(type(subject.model).__module__)
    names = vars(module) if module else {}
    if not any(n in names for n in ("create_causal_mask", "create_bidirectional_mask")):
        return f"{type(subject.model).__name__} does not build its masks through masking_utils (no 4-D mask input)"
    text_config = subject.model.config.get_text_config()
    # Mistral-style sliding windows; Longformer's local windows (whose layers take a (batch, length) mask);
    # Llama 4's chunked attention (a query sees only its own attention_chunk_size block)
    window = next((name for name in ("sliding_window", "attention_window", "attention_chunk_size")
                   if getattr(text_config, name, None)), None)
    if window:
        return f"local-window attention ({window}): an equivalent 4-D mask would have to encode the window"
    if recurrent_layers(subject.model):
        return ("recurrent layers (SSM / linear attention) take the padding from the 2-D mask: a 4-D mask "
                "speaks to the attention layers only")
    return None


@pytest.mark.needs("text")
@given(data=st.data())
def test_4d_mask_matches_2d_mask(subject, data):
    if subject.spec.has("encoder_decoder"):
        pytest.skip("one 2-D mask serves the encoder's self-attention and the decoder's cross-attention "
                    "(other query lengths): no single 4-D mask is equivalent")
    _skip_without_mask(subject)  # no 2-D mask to compare a 4-D one with
    why_not = no_generic_4d_masks(subject)
    if why_not:
        pytest.skip(why_not)
    batch = data.draw(composed_batches(subject.spec), label="batch")
    record(subject, batch.inputs, prop=MASK_4D, replay=lambda: compared(pair(
        side(mask_4d="causal" if attends_causally(subject, batch) else "bidirectional"), side(),
        real_tokens="expected")))
    check_4d_mask(subject, batch)
