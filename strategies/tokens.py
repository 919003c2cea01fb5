"""Token-id batches within a spec's vocabulary, with attention masks for right or left padding."""

from __future__ import annotations

import numpy as np
from hypothesis import event, strategies as st
from hypothesis.extra.numpy import arrays


def lengths(max_length: int, batch: int, *, min_length: int = 1):
    """Per-item real lengths; shrinks toward one short item."""
    return st.lists(st.integers(min_length, max_length), min_size=batch, max_size=batch)


@st.composite
def token_batch(draw, vocab_size: int, max_length: int, *, batch_sizes=(1, 4), pad_token_id: int | None = 0,
                padding_side: str = "right", bos_token_id: int | None = None, eos_token_id: int | None = None,
                min_length: int = 1):
    """`{"input_ids", "attention_mask"}` as int64 arrays of shape (batch, longest item).

    Items shorter than the longest are padded on `padding_side` with `pad_token_id` and masked out.
    Optionally the real tokens start with `bos_token_id` and end with `eos_token_id`, as a
    tokenizer's template would put them.
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
    return {"input_ids": ids, "attention_mask": mask}


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
