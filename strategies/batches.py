"""Complete model inputs for a spec: the dict a subject's forward takes.

`model_inputs` draws a whole batch at once. `items` draws single items and `compose` stacks them
into a padded batch (`Composed`) that remembers which row holds which item, so a property can
compare an item alone with the same item inside a batch, in another order, or under more padding.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace

import numpy as np
from hypothesis import event, strategies as st
from hypothesis.extra.numpy import arrays

from strategies import audio, images, tokens
from strategies.signature import PER_TOKEN, signature_inputs


@st.composite
def model_inputs(draw, spec, *, batch_sizes=(1, 4), padding_side: str | None = None):
    """Every input the spec's model needs, batch 1..4, lengths 1..max, valid ids and values.

    Causal models get left padding (the layout generation uses), everything else right padding,
    unless `padding_side` says otherwise.
    """
    inputs = {}
    batch = None
    if spec.has("text"):
        side = padding_side or default_padding_side(spec)
        inputs.update(
            draw(
                tokens.token_batch(
                    spec.vocab_size, spec.max_length, batch_sizes=batch_sizes,
                    pad_token_id=spec.pad_token_id if spec.pad_token_id is not None else 0,
                    padding_side=side, bos_token_id=spec.bos_token_id, eos_token_id=spec.eos_token_id,
                ),
                label="text",
            )
        )
        batch = inputs["input_ids"].shape[0]
    elif spec.has("waveform"):
        batch = draw(st.integers(*batch_sizes), label="batch size")
        inputs.update(draw(_waveforms(spec, batch), label="waveforms"))
    else:  # image- or spectrogram-only models
        batch = draw(st.integers(*batch_sizes), label="batch size")
    # a dual encoder (CLIP) takes a text batch and an image batch of independent sizes; a
    # vision-language LM or captioner (BLIP) one image per text
    image_rows = draw(st.integers(*batch_sizes), label="image batch size") if spec.dual_encoder else batch
    inputs.update(draw(non_token_inputs(spec, batch, image_rows=image_rows), label="non-token inputs"))
    if spec.extra.get("signature_inputs"):  # what the forward needs beyond these (strategies/signature.py)
        inputs = draw(signature_inputs(spec, inputs), label="signature inputs")
    return inputs


def _waveforms(spec, batch: int):
    """Raw waveforms (and a sample-level mask where the forward takes one) for `batch` items."""
    with_mask = "attention_mask" in spec.extra.get("forward_args", ("attention_mask",))
    return audio.waveform_batch(batch, spec.min_samples, spec.max_samples, with_mask=with_mask)


@st.composite
def non_token_inputs(draw, spec, rows: int, *, image_rows: int | None = None):
    """Pixel values, audio features and decoder ids for `rows` items (`image_rows` images, if given)."""
    inputs = {}
    if spec.has("vision"):
        inputs["pixel_values"] = draw(
            images.pixel_values(image_rows or rows, spec.num_channels, spec.image_size), label="pixels"
        )
    if spec.has("audio"):
        inputs["input_features"] = draw(audio.input_features(rows, spec.num_mel_bins, spec.num_frames), label="features")
    if spec.has("encoder_decoder"):
        inputs["decoder_input_ids"] = draw(
            tokens.decoder_ids(spec.decoder_vocab_size, spec.decoder_max_length, rows, spec.decoder_start_token_id),
            label="decoder",
        )
    return inputs


# -- items and the batches composed from them ------------------------------------------------------
# Batch invariance, batch order and padding amount compare one item alone with the same item inside
# a batch. So the inputs are drawn per item (a batch of one, no padding) and then composed into a
# padded batch that remembers where each item went.


@dataclass(frozen=True)
class Composed:
    """A padded batch built from items, and the items it was built from.

    Row `i` of `inputs` holds `items[i]`; its attention mask marks which text positions are the
    item's real tokens (left padding puts them at the end, right padding at the start).
    """

    inputs: dict[str, np.ndarray]
    items: tuple[dict[str, np.ndarray], ...]
    padding_side: str | None  # None: the spec has no text, so nothing is padded
    # inputs whose leading axis is not one row per item (Qwen2-VL's patch rows: t*h*w per image, with
    # image_grid_thw saying how many): each item's rows are this (start, stop) slice
    spans: dict[str, tuple[tuple[int, int], ...]] = field(default_factory=dict)

    def __len__(self) -> int:
        return len(self.items)

    def _rows(self, key: str, index: int) -> slice:
        return slice(*self.spans[key][index]) if key in self.spans else slice(index, index + 1)

    def row(self, index: int) -> dict[str, np.ndarray]:
        """Row `index` of the batch as a batch of one, its padding kept."""
        return {key: value[self._rows(key, index)] for key, value in self.inputs.items()}

    def permuted(self, order) -> "Composed":
        """The same items in another order: row `i` of the result is row `order[i]` of this batch."""
        order = list(order)
        inputs = {key: np.concatenate([value[self._rows(key, i)] for i in order]) if key in self.spans
                  else value[order] for key, value in self.inputs.items()}
        return Composed(inputs, tuple(self.items[i] for i in order), self.padding_side,
                        {key: _spans([self.items[i][key] for i in order]) for key in self.spans})


def _spans(blocks) -> tuple[tuple[int, int], ...]:
    stops = np.cumsum([len(block) for block in blocks])
    return tuple((int(stop - len(block)), int(stop)) for block, stop in zip(blocks, stops))


def default_padding_side(spec) -> str:
    """Left padding for causal models (the layout generation uses), right padding otherwise."""
    return "left" if spec.has("causal") else "right"


# The inputs `compose` pads to a common length, and what padded positions hold by default.
SEQUENCE_INPUTS = {
    "input_ids": lambda spec: spec.pad_token_id if spec.pad_token_id is not None else 0,
    "input_values": lambda spec: 0.0,  # silence, as feature extractors pad waveforms
}


def compose(spec, items, *, padding_side: str | None = None, extra_padding: int = 0,
            filler: int | None = None) -> Composed:
    """Stack `items` (each a batch of one) into one batch, padding text to the longest plus `extra_padding`.

    Padded positions hold `filler` (the pad token by default) and are masked out; every other
    input (pixels, features, decoder ids) is stacked as it is.
    """
    sequence = next((key for key in SEQUENCE_INPUTS if key in items[0]), None)
    if sequence is None:
        inputs = {key: np.concatenate([item[key] for item in items]) for key in items[0]}
        spans = {key: _spans([item[key] for item in items]) for key in items[0]
                 if any(len(item[key]) != 1 for item in items)}
        return Composed(inputs, tuple(items), None, spans)
    side = padding_side or default_padding_side(spec)
    if filler is None:
        filler = SEQUENCE_INPUTS[sequence](spec)
    width = max(item[sequence].shape[1] for item in items) + extra_padding
    values = np.full((len(items), width), filler, dtype=items[0][sequence].dtype)
    mask = np.zeros((len(items), width), dtype=np.int64)
    for row, item in enumerate(items):
        n = item[sequence].shape[1]
        real = slice(width - n, width) if side == "left" else slice(0, n)
        values[row, real] = item[sequence][0]
        mask[row, real] = 1
    inputs = {sequence: values}
    if "attention_mask" in items[0]:
        inputs["attention_mask"] = mask
    for key in PER_TOKEN:  # indexed (batch, token, ...): padded with the text, zeros under the mask
        if key in items[0] and sequence == "input_ids":
            padded = np.zeros((len(items), width, *items[0][key].shape[2:]), dtype=items[0][key].dtype)
            for row, item in enumerate(items):
                n = item[sequence].shape[1]
                padded[row, slice(width - n, width) if side == "left" else slice(0, n)] = item[key][0]
            inputs[key] = padded
    spans = {}
    for key in items[0]:
        if key not in inputs:
            inputs[key] = np.concatenate([item[key] for item in items])
            if any(len(item[key]) != 1 for item in items):
                spans[key] = _spans([item[key] for item in items])
    return Composed(inputs, tuple(items), side, spans)


def takes_attention_mask(spec) -> bool:
    """Whether the model's forward takes an attention mask (xLSTM's does not: padding is text to it)."""
    return "attention_mask" in spec.extra.get("forward_args", ("attention_mask",))


@st.composite
def items(draw, spec, count: int, *, max_length: int | None = None):
    """`count` single items for the spec (each a batch of one, no padding), sharing one decoder length.

    Text lengths run 1..`max_length` (the spec's maximum by default) independently per item, or are
    cut to the shortest where the forward takes no attention mask.
    """
    drawn = [{} for _ in range(count)]
    if spec.has("text"):
        for i, item in enumerate(drawn):
            one = draw(
                tokens.token_batch(
                    spec.vocab_size, max_length or spec.max_length, batch_sizes=(1, 1), pad_token_id=None,
                    bos_token_id=spec.bos_token_id, eos_token_id=spec.eos_token_id,
                ),
                label=f"item {i} text",
            )
            item["input_ids"], item["attention_mask"] = one["input_ids"], one["attention_mask"]
        if not takes_attention_mask(spec):  # nothing could tell it padding from text: one length for all
            shortest = min(item["input_ids"].shape[1] for item in drawn)
            for item in drawn:
                item["input_ids"], item["attention_mask"] = item["input_ids"][:, :shortest], item["attention_mask"][:, :shortest]
    elif spec.has("waveform"):
        for i, item in enumerate(drawn):
            item.update(draw(_waveforms(spec, 1), label=f"item {i} waveform"))
    # The other inputs are drawn for all items at once and split into rows.
    stacked = draw(non_token_inputs(spec, count), label="non-token inputs")
    for key, value in stacked.items():
        for i, item in enumerate(drawn):
            item[key] = value[i : i + 1]
    if spec.extra.get("signature_inputs"):  # each item complete on its own, as model_inputs makes a batch
        # (placeholder runs, an eos at the end, per-token boxes: a batch then holds what each item held)
        drawn = [draw(signature_inputs(spec, item), label=f"item {i} signature inputs") for i, item in enumerate(drawn)]
    return drawn


def special_ids(spec) -> list[int]:
    """The special ids the spec knows (pad, bos, eos and the tokenizer's other special tokens)."""
    return sorted(i for i in {spec.pad_token_id, spec.bos_token_id, spec.eos_token_id, *spec.special_token_ids}
                  if i is not None)


def media_placeholder_ids(spec) -> set[int]:
    """The ids that stand for media features in input_ids (image/audio tokens): the model counts them
    to place its features, so they are never padding, and a call that takes features takes all of them."""
    return {i for i in (*spec.extra.get("reserved_ids", ()), spec.extra.get("image_token_id")) if i is not None}


def padding_special_ids(spec) -> list[int]:
    """The special ids padding may hold: all but media placeholders, so padding holding one is not a
    malformed input."""
    placeholders = media_placeholder_ids(spec)
    return [i for i in special_ids(spec) if i not in placeholders]


def fillers(spec, *, special: bool = False):
    """What padded positions hold: None (the pad token) or one ordinary id; with `special`, a special id.

    Whatever sits under the mask must not matter. Ordinary and special fillers are drawn by separate
    tests because some models read special ids outside attention (CLIP pools the hidden state at the
    first eos id in `input_ids`): that finding is recorded against the special-filler test alone
    (properties/findings.toml) instead of failing every padding test of the model. Media placeholder
    ids are neither: the model counts them, masked or not, to place its image features, so padding
    holding one is a malformed input (LightOnOCR, PaliGemma: "Image features and image tokens do not match").
    """
    reserved = set(special_ids(spec)) | media_placeholder_ids(spec)
    if special:
        return st.sampled_from(padding_special_ids(spec))
    ordinary = st.integers(0, spec.vocab_size - 1).filter(lambda i: i not in reserved)
    return st.none() | ordinary


@st.composite
def composed_batches(draw, spec, *, batch_sizes=(2, 4), max_length: int | None = None):
    """A batch of `batch_sizes` items of at most `max_length` tokens (the spec's maximum by default)
    padded the spec's way (see `compose`), padding holding a `fillers` id."""
    count = draw(st.integers(*batch_sizes), label="batch size")
    drawn = draw(items(replace(spec, max_length=max_length) if max_length else spec, count), label="items")
    filler = draw(fillers(spec), label="filler id (None: pad token)") if spec.has("text") else None
    if filler is not None:
        event("padding holds an ordinary id")
    batch = compose(spec, drawn, filler=filler)
    if batch.padding_side and not batch.inputs.get("attention_mask", np.ones(1)).all():
        event(f"padding: {batch.padding_side}")
    return batch


@st.composite
def reordered_batches(draw, spec, *, batch_sizes=(2, 4)):
    """`(batch, order)`: a composed batch and a permutation of its rows (never the identity)."""
    batch = draw(composed_batches(spec, batch_sizes=batch_sizes), label="batch")
    identity = list(range(len(batch)))
    order = draw(st.permutations(identity).filter(lambda order: order != identity), label="order")
    return batch, order


@st.composite
def padding_amounts(draw, spec, *, batch_sizes=(1, 4), special_fillers: bool = False):
    """`(tight, padded)`: the same items padded to the longest item, and with 1.. more masked positions.

    Items are drawn one token short of the maximum so that at least one extra position fits. With
    `special_fillers` the extra padding holds a special id (bos, eos, pad) instead of an ordinary one.
    """
    count = draw(st.integers(*batch_sizes), label="batch size")
    # one token short of the maximum, placeholder runs included (they are cut to the spec's max_length)
    drawn = draw(items(replace(spec, max_length=spec.max_length - 1), count), label="items")
    tight = compose(spec, drawn)
    room = spec.max_length - tight.inputs["input_ids"].shape[1]
    extra = draw(st.integers(1, room), label="extra padding")
    filler = draw(fillers(spec, special=special_fillers), label="filler id (None: pad token)")
    if extra == room:
        event("padded to the model maximum")
    return tight, compose(spec, drawn, extra_padding=extra, filler=filler)


# -- malformed inputs ------------------------------------------------------------------------------
BAD_INPUT_KINDS = ("id outside the vocab", "too long", "mask shape mismatch", "zero length", "empty batch")
# Kinds for which no output can be right, so a model must raise: an id that has no embedding, a mask
# that cannot say which tokens are real. The others may also be answered with finite outputs of the
# contract's shape (relative or rotary positions run past max_position_embeddings; an empty batch or
# sequence can give empty outputs).
MUST_REFUSE = frozenset({"id outside the vocab", "mask shape mismatch"})


def bad_input_kinds(spec) -> tuple[str, ...]:
    """The malformed inputs that apply to the spec: the text ones need text (a mask of the wrong shape,
    a forward that takes an attention mask); any model can get an empty batch."""
    if not spec.has("text"):
        return ("empty batch",)
    return tuple(k for k in BAD_INPUT_KINDS if k != "mask shape mismatch" or takes_attention_mask(spec))


@st.composite
def empty_batches(draw, spec):
    """Every input the spec's model needs, with zero rows: a valid input cut to none of its rows.

    Cut from a valid input, not built from the spec's sizes, so that what the forward needs beyond
    the main inputs (an image grid beside pre-patched pixels, decoder inputs, bbox) is there too,
    empty: only the batch size is wrong."""
    valid = draw(model_inputs(spec, batch_sizes=(1, 1)), label="valid inputs")
    return {name: array[:0] if array.ndim else array for name, array in valid.items()}


@dataclass(frozen=True)
class BadInput:
    kind: str  # one of BAD_INPUT_KINDS
    inputs: dict[str, np.ndarray]

    @property
    def must_refuse(self) -> bool:
        return self.kind in MUST_REFUSE


@st.composite
def bad_inputs(draw, spec, kinds: tuple[str, ...] | None = None):
    """A valid input (`model_inputs`, batch 1..2: the size is not what is wrong) with one thing wrong,
    of a kind drawn from `kinds`."""
    kind = draw(st.sampled_from(kinds or bad_input_kinds(spec)), label="kind")
    event(f"bad input: {kind}")
    if kind == "empty batch":
        return BadInput(kind, draw(empty_batches(spec), label="empty batch"))
    inputs = dict(draw(model_inputs(spec, batch_sizes=(1, 2)), label="valid inputs"))
    ids = inputs["input_ids"].copy()
    # a forward that takes no mask gets none (OmniASRModel: its inputs are cut to the names it takes)
    masked = "attention_mask" in inputs
    mask = inputs["attention_mask"] if masked else np.ones_like(ids)
    batch, length = ids.shape
    if kind == "id outside the vocab":
        row, col = draw(st.sampled_from([tuple(int(i) for i in p) for p in np.argwhere(mask == 1)]), label="where")
        rows = max(spec.vocab_size, spec.extra.get("embedding_rows", 0))  # the first id without an embedding
        above = st.integers(rows, rows + 1000)
        ids[row, col] = draw(above | st.integers(-1000, -1), label="bad id")
        inputs["input_ids"] = ids
    elif kind == "too long":
        longer = draw(st.integers(spec.max_length + 1, spec.max_length + 16), label="length")
        inputs["input_ids"] = draw(
            arrays(np.int64, (batch, longer), elements=st.integers(0, spec.vocab_size - 1)), label="ids"
        )
        if masked:
            inputs["attention_mask"] = np.ones((batch, longer), dtype=np.int64)
    elif kind == "mask shape mismatch":
        rows = draw(st.sampled_from(sorted({batch, batch + 1, max(batch - 1, 1)})), label="mask rows")
        cols = draw(st.integers(max(length - 3, 0), length + 3).filter(lambda c: (rows, c) != (batch, length)),
                    label="mask columns")
        inputs["attention_mask"] = np.ones((rows, cols), dtype=np.int64)
    elif kind == "zero length":
        inputs["input_ids"] = ids[:, :0]
        if masked:
            inputs["attention_mask"] = mask[:, :0]
    return BadInput(kind, inputs)
