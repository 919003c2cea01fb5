"""Token-id batches within a spec's vocabulary, with attention masks for right or left padding.

Lengths run from 1 up to exactly the model's maximum (the maximum is drawn on purpose, not left to
chance); the real tokens may start and end with the special ids a tokenizer's template puts
there; position ids, when asked for, count real tokens only, as `generate` does.
"""

from __future__ import annotations

import numpy as np
from hypothesis import event, strategies as st
from hypothesis.extra.numpy import arrays


@st.composite
def lengths(draw, max_length: int, batch: int, *, min_length: int = 1):
    """Per-item real lengths; shrinks toward short items, and reaches exactly `max_length` often.

    The maximum is forced by a separate boolean draw (shrinks to False) rather than by
    `integers | just(max)`: Hypothesis shrinks a `one_of` toward its simplest branch, and `just`
    needs fewer choices, so that form shrinks every failure to the longest input.
    """
    items = draw(st.lists(st.integers(min_length, max_length), min_size=batch, max_size=batch), label="item lengths")
    if draw(st.booleans(), label="one item at the model maximum"):
        items[draw(st.integers(0, batch - 1), label="which item")] = max_length
    return items


def position_ids(attention_mask: np.ndarray) -> np.ndarray:
    """Positions that count only real tokens (0 on padding), consistent with either padding side.

    The numpy twin of `zoo.subject.positions_from_mask` (strategies stay free of torch).
    """
    return np.clip(np.cumsum(attention_mask, axis=-1) - 1, 0, None).astype(np.int64)


@st.composite
def token_batch(draw, vocab_size: int, max_length: int, *, batch_sizes=(1, 4), pad_token_id: int | None = 0,
                padding_side: str = "right", bos_token_id: int | None = None, eos_token_id: int | None = None,
                min_length: int = 1, with_position_ids: bool = False):
    """`{"input_ids", "attention_mask"}` as int64 arrays of shape (batch, longest item).

    Items shorter than the longest are padded on `padding_side` with `pad_token_id` and masked out.
    Optionally the real tokens start with `bos_token_id` and end with `eos_token_id`, as a
    tokenizer's template would put them. `with_position_ids` adds `position_ids` consistent
    with the padding.
    """
    batch = draw(st.integers(*batch_sizes), label="batch size")
    item_lengths = draw(lengths(max_length, batch, min_length=min_length), label="lengths")
    longest = max(item_lengths)
    ids = draw(arrays(np.int64, (batch, longest), elements=st.integers(0, vocab_size - 1)), label="ids")
    with_specials = draw(st.booleans(), label="special tokens at the ends")
    mask = np.zeros((batch, longest), dtype=np.int64)
    for row, n in enumerate(item_lengths):
        real = slice(longest - n, longest) if padding_side == "left" else slice(0, n)
        mask[row, real] = 1
        if with_specials:
            start, stop = real.start, real.stop
            if bos_token_id is not None:
                ids[row, start] = bos_token_id
            if eos_token_id is not None and n > 1:
                ids[row, stop - 1] = eos_token_id
    if pad_token_id is not None:
        ids[mask == 0] = pad_token_id
    event(f"padding: {'none' if mask.all() else padding_side}")
    if longest == max_length:
        event("length: model maximum")
    if min(item_lengths) == 1:
        event("length: 1")
    if with_specials and (bos_token_id is not None or eos_token_id is not None):
        event("special ids at the ends")
    out = {"input_ids": ids, "attention_mask": mask}
    if with_position_ids:
        out["position_ids"] = position_ids(mask)
    return out


def decoder_ids(vocab_size: int, max_length: int, batch: int, start_token_id: int | None):
    """Decoder input ids for an encoder-decoder model, starting with its decoder start token."""

    @st.composite
    def build(draw):
        length = draw(st.integers(1, max_length), label="decoder length")
        ids = draw(arrays(np.int64, (batch, length), elements=st.integers(0, vocab_size - 1)), label="decoder ids")
        if start_token_id is not None:
            ids[:, 0] = start_token_id
        return ids

    return build()


@st.composite
def id_lists(draw, vocab_size: int, *, max_length: int = 16):
    """Token-id lists for `decode`: ids in the vocab, and ids outside it (negative, >= vocab, huge)."""
    classes = {
        "in vocab": st.integers(0, vocab_size - 1),
        "negative": st.integers(-(2**63), -1),
        ">= vocab size": st.integers(vocab_size, 2**31),
        ">= 2**63": st.integers(2**63, 2**70),
    }
    kinds = draw(st.lists(st.sampled_from(list(classes)), max_size=max_length), label="id kinds")
    for kind in dict.fromkeys(kinds):
        event(f"token id: {kind}")
    return [draw(classes[kind], label=kind) for kind in kinds]
