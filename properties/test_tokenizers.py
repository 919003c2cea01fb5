"""Tokenizers: round trips, offsets, truncation, batching, padding, templates and clear errors.

Runs on every subject whose processor has a tokenizer (`processor.tokenizer` or the processor
itself), on raw text from `strategies.text`: whitespace of every kind, control characters,
combining marks, RTL and CJK scripts, emoji sequences, long words, the model's own special-token
strings. The template (the special ids put before and after the text) is read off the tokenizer
once, from a reference text, and must then hold for every text.
"""

from __future__ import annotations

import re

import pytest
from hypothesis import given, strategies as st

from properties.artifacts import processed, record
from properties.clear_errors import describe, short, unclear
from strategies.call_styles import tokenizer_styles
from strategies.text import non_text_inputs, text, texts
from strategies.tokens import id_lists

pytestmark = pytest.mark.needs("tokenizer")  # only tokenizers the checkpoint ships

MAX_CHARS = 160  # long enough to pass the zoo's 32/64-token limits with most scripts
REFERENCE_TEXT = "hello world"


# -- reading the tokenizer ---------------------------------------------------------------------------
def tokenizer_of(subject):
    """The subject's tokenizer (`processor.tokenizer` or the processor), or None."""
    from transformers import PreTrainedTokenizerBase

    candidate = getattr(subject.processor, "tokenizer", subject.processor)
    return candidate if isinstance(candidate, PreTrainedTokenizerBase) else None


def max_length_of(subject) -> int:
    """The longest input_ids the model takes (the decoder's, for a speech model's tokenizer)."""
    return subject.spec.max_length or subject.spec.decoder_max_length


def template(tokenizer) -> tuple[list[int], list[int]]:
    """The ids the tokenizer puts before and after a text (its post-processing template)."""
    full = tokenizer(REFERENCE_TEXT)["input_ids"]
    plain = tokenizer(REFERENCE_TEXT, add_special_tokens=False)["input_ids"]
    for start in range(len(full) - len(plain) + 1):
        if full[start:start + len(plain)] == plain:
            return full[:start], full[start + len(plain):]
    raise AssertionError(f"the ids of {REFERENCE_TEXT!r} with special tokens {full} do not contain those without {plain}")


def _backend(tokenizer):
    return getattr(tokenizer, "backend_tokenizer", None)


def is_byte_level(tokenizer) -> bool:
    """Byte-level BPE (GPT-2, RoBERTa, LLaMA 3, Whisper ...): every string has an exact round trip."""
    from tokenizers import decoders

    backend = _backend(tokenizer)
    return backend is not None and isinstance(backend.decoder, decoders.ByteLevel)


def normalized_form(tokenizer, raw: str) -> str:
    """`raw` as the tokenizer's normalizer sees it; added tokens (`[CLS]`, `</s>`) are matched before
    normalization, so they stay as they are."""
    backend = _backend(tokenizer)
    normalizer = backend.normalizer if backend is not None else None
    if normalizer is None:
        return raw
    added = sorted({str(t) for t in tokenizer.added_tokens_decoder.values()}, key=len, reverse=True)
    if not added:
        return normalizer.normalize_str(raw)
    parts = re.split("(" + "|".join(map(re.escape, added)) + ")", raw)
    return "".join(part if part in added else normalizer.normalize_str(part) for part in parts)


def _tokenizer_or_skip(subject):
    tokenizer = tokenizer_of(subject)
    if tokenizer is None:
        pytest.skip(f"{subject.name} has no tokenizer")
    return tokenizer


def _texts_for(tokenizer, **kwargs):
    return text(max_size=MAX_CHARS, special_tokens=tuple(tokenizer.all_special_tokens), **kwargs)


# -- round trip --------------------------------------------------------------------------------------
ROUND_TRIP = "tokenizer round trip"
# Metaspace (SentencePiece) turns spaces into U+2581 and back: both count as whitespace.
_WHITESPACE = re.compile(r"[\s\u2581]+")


def _compact(value: str) -> str:
    return _WHITESPACE.sub("", value)


def check_round_trip(subject, raw: str) -> None:
    """decode(encode(text)) is the text itself for byte-level BPE, and the normalizer's form of the
    text for other families (whitespace aside, each unknown token standing for what the vocab lacks)."""
    tokenizer = tokenizer_of(subject)
    ids = tokenizer(raw, add_special_tokens=False)["input_ids"]
    decoded = tokenizer.decode(ids, skip_special_tokens=False, clean_up_tokenization_spaces=False)
    expected = normalized_form(tokenizer, raw)
    unk = tokenizer.unk_token_id
    if is_byte_level(tokenizer) and unk not in ids:
        assert decoded == expected, (
            f"[{subject.name}] {ROUND_TRIP}: byte-level BPE must decode back to the exact text\n"
            f"text    {raw!r}\ndecoded {decoded!r}\nids     {ids}"
        )
        return
    pieces = _compact(decoded).split(str(tokenizer.unk_token)) if unk in ids else [_compact(decoded)]
    pattern = "(?s)" + ".*?".join(map(re.escape, pieces))
    assert re.fullmatch(pattern, _compact(expected)), (
        f"[{subject.name}] {ROUND_TRIP}: decode(encode(text)) is not the normalizer's form of the text "
        f"(whitespace ignored, {tokenizer.unk_token!s} standing for unknown characters)\n"
        f"text       {raw!r}\nnormalized {expected!r}\ndecoded    {decoded!r}\nids        {ids}"
    )


# -- offsets -----------------------------------------------------------------------------------------
OFFSETS = "tokenizer offsets"


def check_offsets(subject, raw: str) -> None:
    """Every token's (start, end) offsets lie inside the text, and they never go backwards."""
    tokenizer = tokenizer_of(subject)
    enc = tokenizer(raw, return_offsets_mapping=True, return_special_tokens_mask=True)
    previous = (0, 0)
    for position, ((start, end), special) in enumerate(zip(enc["offset_mapping"], enc["special_tokens_mask"])):
        where = f"token {position} (id {enc['input_ids'][position]}) of {len(enc['input_ids'])}"
        assert 0 <= start <= end <= len(raw), (
            f"[{subject.name}] {OFFSETS}: {where} has offsets ({start}, {end}) outside the text of "
            f"{len(raw)} characters\ntext {raw!r}\noffsets {enc['offset_mapping']}"
        )
        if special:
            continue
        assert (start, end) >= previous and end >= previous[1], (
            f"[{subject.name}] {OFFSETS}: {where} goes backwards: ({start}, {end}) after {previous}\n"
            f"text {raw!r}\noffsets {enc['offset_mapping']}"
        )
        previous = (start, end)


# -- truncation --------------------------------------------------------------------------------------
TRUNCATION = "tokenizer truncation"


def check_truncation(subject, case: tuple[str, int | None]) -> None:
    """`truncation=True, max_length=m` gives at most m ids: the template's special ids around the
    text's first ids. Without `max_length`, the model's own maximum applies."""
    raw, max_length = case
    tokenizer = tokenizer_of(subject)
    limit = max_length if max_length is not None else max_length_of(subject)
    kwargs = {"max_length": max_length} if max_length is not None else {}
    got = tokenizer(raw, truncation=True, **kwargs)["input_ids"]
    how = f"truncation=True, max_length={max_length}" if max_length is not None else (
        f"truncation=True without max_length (model maximum {limit}, tokenizer.model_max_length="
        f"{tokenizer.model_max_length})")
    assert len(got) <= limit, (
        f"[{subject.name}] {TRUNCATION}: {how} gave {len(got)} ids, more than {limit}\ntext {raw!r}\nids {got}"
    )
    prefix, suffix = template(tokenizer)
    budget = limit - len(prefix) - len(suffix)
    if budget >= 0:
        plain = tokenizer(raw, add_special_tokens=False)["input_ids"]
        expected = prefix + plain[:budget] + suffix
        assert got == expected, (
            f"[{subject.name}] {TRUNCATION}: {how} must keep the template {prefix} ... {suffix} around the "
            f"first {budget} ids of the text\ntext     {raw!r}\nexpected {expected}\ngot      {got}"
        )


def truncation_cases(subject, *, below_template: bool):
    """(text, max_length): max_length from the template's size up to the model's maximum (or None,
    the model's maximum); `below_template`: max_length from 0 up to the template's size."""
    tokenizer = tokenizer_of(subject)
    prefix, suffix = template(tokenizer)
    specials = len(prefix) + len(suffix)
    if below_template:  # only max_length matters here: short plain text keeps shrinking quick
        return st.tuples(st.text(max_size=8), st.integers(0, specials))
    lengths = st.none() | st.integers(specials, max_length_of(subject)) | st.just(max_length_of(subject))
    return st.tuples(_texts_for(tokenizer), lengths)


@given(data=st.data())
def test_truncation(subject, data):
    _tokenizer_or_skip(subject)
    case = data.draw(truncation_cases(subject, below_template=False), label="text, max_length")
    record(subject, {}, prop=TRUNCATION, raw_input=case[0], max_length=case[1],
           replay=lambda: _truncation_steps(subject, *case))
    check_truncation(subject, case)


@given(data=st.data())
def test_truncation_to_tiny_lengths(subject, data):
    """max_length at or below the number of template tokens (0 included) must still be respected."""
    _tokenizer_or_skip(subject)
    case = data.draw(truncation_cases(subject, below_template=True), label="text, max_length")
    record(subject, {}, prop=TRUNCATION, raw_input=case[0], max_length=case[1],
           replay=lambda: _truncation_steps(subject, *case))
    check_truncation(subject, case)


# -- batch vs items, padding -------------------------------------------------------------------------
BATCH = "tokenizer batch equals items"
PADDING = "tokenizer padding"


def check_batch_matches_items(subject, batch: list[str]) -> None:
    """Encoding a batch gives each text the ids it gets when encoded alone."""
    tokenizer = tokenizer_of(subject)
    together = tokenizer(batch)["input_ids"]
    for i, raw in enumerate(batch):
        alone = tokenizer(raw)["input_ids"]
        assert together[i] == alone, (
            f"[{subject.name}] {BATCH}: item {i} of {len(batch)} encodes differently in the batch\n"
            f"text     {raw!r}\nalone    {alone}\nin batch {together[i]}"
        )


def check_padding(subject, case: tuple[list[str], str]) -> None:
    """With `padding=True` and a padding side, every row holds its item's ids on the real side, pad ids
    on the other, and the attention mask is 1 exactly on the real ids."""
    batch, side = case
    tokenizer = tokenizer_of(subject)
    if tokenizer.pad_token_id is None:
        with pytest.raises(Exception) as raised:
            tokenizer(batch, padding=True, padding_side=side)
        problem = unclear(raised.value)
        assert problem is None, (
            f"[{subject.name}] {PADDING}: without a pad token, padding must fail clearly, but it raised "
            f"{describe(raised.value)}: {problem}"
        )
        return
    enc = tokenizer(batch, padding=True, padding_side=side)
    items = [tokenizer(raw)["input_ids"] for raw in batch]
    longest = max(len(ids) for ids in items)
    pad = tokenizer.pad_token_id
    for i, ids in enumerate(items):
        fill = longest - len(ids)
        real = [1] * len(ids)
        expected_ids = ids + [pad] * fill if side == "right" else [pad] * fill + ids
        expected_mask = real + [0] * fill if side == "right" else [0] * fill + real
        row, mask = list(enc["input_ids"][i]), list(enc["attention_mask"][i])
        context = f"item {i} of {len(batch)}, padding_side={side!r}, pad id {pad}\ntext {batch[i]!r}"
        assert row == expected_ids, (
            f"[{subject.name}] {PADDING}: ids differ from the item's ids padded on the {side}\n{context}\n"
            f"expected {expected_ids}\ngot      {row}"
        )
        assert mask == expected_mask, (
            f"[{subject.name}] {PADDING}: attention mask is not 1 exactly on the real ids\n{context}\n"
            f"ids      {row}\nexpected {expected_mask}\ngot      {mask}"
        )




# -- sides set as attributes (issue 12) ---------------------------------------------------------------
SIDES = "tokenizer sides as attributes"


def check_sides(subject, case) -> None:
    """Sides set as attributes (`tokenizer.padding_side = "left"`) act as the call's argument does:
    truncation keeps the template around the text's ids on the other side, padding goes on the drawn
    side as `tokenizer.pad(..., padding_side=...)` puts it; the attributes are restored after.
    `truncation_side` is set as an attribute in both forms: transformers 5's call takes no such argument."""
    batch, style, max_length = case
    tokenizer = tokenizer_of(subject)
    before = (tokenizer.padding_side, tokenizer.truncation_side)
    prefix, suffix = template(tokenizer)
    budget = max_length - len(prefix) - len(suffix)
    items = []
    for raw in batch:
        plain = tokenizer(raw, add_special_tokens=False)["input_ids"]
        kept = plain if len(plain) <= budget else plain[len(plain) - budget:] if style.truncation_side == "left" \
            else plain[:budget]
        items.append(prefix + kept + suffix)
    expected = tokenizer.pad({"input_ids": items}, padding=True, padding_side=style.padding_side)
    kwargs = {"padding": True, "truncation": True, "max_length": max_length}
    try:
        tokenizer.truncation_side = style.truncation_side
        if style.how == "attribute":
            tokenizer.padding_side = style.padding_side
        else:
            kwargs["padding_side"] = style.padding_side
        got = tokenizer(batch, **kwargs)
    finally:
        tokenizer.padding_side, tokenizer.truncation_side = before
    for key in ("input_ids", "attention_mask"):
        for i, raw in enumerate(batch):
            assert list(got[key][i]) == list(expected[key][i]), (
                f"[{subject.name}] {SIDES}: {key} of item {i} differ with padding_side={style.padding_side!r} "
                f"({style.how}), truncation_side={style.truncation_side!r} (attribute), max_length={max_length}\n"
                f"text     {raw!r}\nexpected {list(expected[key][i])}\ngot      {list(got[key][i])}"
            )


@given(data=st.data())
def test_sides_as_attributes(subject, data):
    tokenizer = _tokenizer_or_skip(subject)
    if tokenizer.pad_token_id is None:
        pytest.skip(f"{subject.name}'s tokenizer has no pad token")
    prefix, suffix = template(tokenizer)
    batch = data.draw(texts(1, 4, max_size=MAX_CHARS, special_tokens=tuple(tokenizer.all_special_tokens)),
                      label="texts")
    style = data.draw(tokenizer_styles(), label="sides")
    max_length = data.draw(st.integers(len(prefix) + len(suffix), max_length_of(subject)), label="max_length")
    record(subject, {}, prop=SIDES, raw_input=batch, call_style=style.as_dict(), max_length=max_length)
    check_sides(subject, (batch, style, max_length))


# -- special tokens ----------------------------------------------------------------------------------
SPECIALS = "tokenizer special tokens"


def check_special_tokens(subject, raw: str) -> None:
    """With special tokens, the ids are the template's special ids around the text's own ids, and the
    special-tokens mask marks exactly those."""
    tokenizer = tokenizer_of(subject)
    prefix, suffix = template(tokenizer)
    enc = tokenizer(raw, return_special_tokens_mask=True)
    plain = tokenizer(raw, add_special_tokens=False)["input_ids"]
    specials = set(tokenizer.all_special_ids)
    not_special = [i for i in prefix + suffix if i not in specials]
    assert not not_special, (
        f"[{subject.name}] {SPECIALS}: the template {prefix} ... {suffix} holds ids {not_special} that are "
        f"not special ids {sorted(specials)}"
    )
    expected = prefix + plain + suffix
    assert enc["input_ids"] == expected, (
        f"[{subject.name}] {SPECIALS}: special tokens are not where the template puts them\n"
        f"text     {raw!r}\nexpected {expected}\ngot      {enc['input_ids']}"
    )
    expected_mask = [1] * len(prefix) + [0] * len(plain) + [1] * len(suffix)
    assert enc["special_tokens_mask"] == expected_mask, (
        f"[{subject.name}] {SPECIALS}: the special-tokens mask does not mark the template's tokens\n"
        f"text {raw!r}\nids      {enc['input_ids']}\nexpected {expected_mask}\ngot      {enc['special_tokens_mask']}"
    )


# -- standalone replays (repro.py's "processor" kind): the calls each check makes, on the stored raw input
RAW = {"raw": "raw_input"}


def _call(method="__call__", *args, take=(), **kwargs) -> dict:
    return {"part": "tokenizer", "method": method, "args": list(args) or [RAW], "kwargs": kwargs, "take": list(take)}


def _encoding_steps(subject, raw: str) -> dict:
    """Round trip (against the normalizer's form), offsets and template (against the stored template)."""
    tokenizer = tokenizer_of(subject)
    ids = tokenizer(raw, add_special_tokens=False)["input_ids"]
    prefix, suffix = template(tokenizer)
    steps = [{"call": _call("decode_encode"), "what": ROUND_TRIP, "round_trip": {
        "expected": normalized_form(tokenizer, raw), "unk": tokenizer.unk_token,
        "exact": is_byte_level(tokenizer) and tokenizer.unk_token_id not in ids}}]
    if tokenizer.is_fast:
        steps.append({"call": _call(return_offsets_mapping=True, return_special_tokens_mask=True), "what": OFFSETS,
                      "offsets_within": len(raw)})
    steps += [{"call": _call(take=["input_ids"]), "what": SPECIALS, "equals": prefix + ids + suffix},
              {"call": _call(take=["special_tokens_mask"], return_special_tokens_mask=True), "what": SPECIALS,
               "equals": [1] * len(prefix) + [0] * len(ids) + [1] * len(suffix)}]
    return processed(steps)


def _truncation_steps(subject, raw: str, max_length) -> dict:
    tokenizer = tokenizer_of(subject)
    limit = max_length if max_length is not None else max_length_of(subject)
    kwargs = {"max_length": max_length} if max_length is not None else {}
    prefix, suffix = template(tokenizer)
    budget = limit - len(prefix) - len(suffix)
    step = {"call": _call(take=["input_ids"], truncation=True, **kwargs), "what": TRUNCATION, "at_most": limit}
    if budget >= 0:
        step["equals"] = prefix + tokenizer(raw, add_special_tokens=False)["input_ids"][:budget] + suffix
    return processed([step])


def _batch_steps(subject, batch: list[str], side: str) -> dict:
    tokenizer = tokenizer_of(subject)
    steps = [{"call": _call(take=["input_ids", i]), "same_as": _call("__call__", {**RAW, "item": i}, take=["input_ids"]),
              "what": f"{BATCH}, item {i}"} for i in range(len(batch))]
    if tokenizer.pad_token_id is None:
        steps.append({"call": _call(padding=True, padding_side=side), "refuse": "must", "what": PADDING})
        return processed(steps)
    items = [tokenizer(raw)["input_ids"] for raw in batch]
    longest, pad = max(len(ids) for ids in items), tokenizer.pad_token_id
    for i, ids in enumerate(items):
        fill = [pad] * (longest - len(ids))
        real, none = [1] * len(ids), [0] * (longest - len(ids))
        steps += [{"call": _call(take=["input_ids", i], padding=True, padding_side=side), "what": f"{PADDING}, item {i}",
                   "equals": ids + fill if side == "right" else fill + ids},
                  {"call": _call(take=["attention_mask", i], padding=True, padding_side=side),
                   "what": f"{PADDING} mask, item {i}", "equals": real + none if side == "right" else none + real}]
    return processed(steps)


def _error_steps(method: str, value, valid: bool) -> dict:
    import json

    try:  # only values meta.json holds exactly can be fed again
        same = json.loads(json.dumps(value)) == value
    except (TypeError, ValueError):
        same = False
    return processed([{"call": _call(method), "refuse": "may", "valid": valid, "what": ERRORS}]) if same \
        else {"kind": "suite-only"}


# -- the tests: one draw feeds every check that takes the same kind of input (the ci budget) -------
@given(data=st.data())
def test_text_encoding(subject, data):
    """Round trip, offsets and template on one drawn text."""
    tokenizer = _tokenizer_or_skip(subject)
    raw = data.draw(_texts_for(tokenizer), label="text")
    record(subject, {}, prop=f"{ROUND_TRIP}, {OFFSETS}, {SPECIALS}", raw_input=raw,
           replay=lambda: _encoding_steps(subject, raw))
    check_round_trip(subject, raw)
    if tokenizer.is_fast:  # slow tokenizers have no offsets
        check_offsets(subject, raw)
    check_special_tokens(subject, raw)


@given(data=st.data())
def test_batch_and_padding(subject, data):
    """A batch encodes as its items, and pads them on the drawn side with a matching mask."""
    tokenizer = _tokenizer_or_skip(subject)
    batch = data.draw(texts(1, 4, max_size=MAX_CHARS, special_tokens=tuple(tokenizer.all_special_tokens)),
                      label="texts")
    side = data.draw(st.sampled_from(("right", "left")), label="padding side")
    record(subject, {}, prop=f"{BATCH}, {PADDING}", raw_input=batch, padding_side=side,
           replay=lambda: _batch_steps(subject, batch, side))
    check_batch_matches_items(subject, batch)
    check_padding(subject, (batch, side))


# -- errors ------------------------------------------------------------------------------------------
ERRORS = "tokenizer errors are clear"


def _is_text(value) -> bool:
    def ok(s):
        return isinstance(s, str) and not any("\ud800" <= c <= "\udfff" for c in s)

    return ok(value) or (isinstance(value, list) and len(value) > 0 and all(ok(v) for v in value))


def check_encode_errors(subject, value) -> None:
    """Encoding text never raises; encoding anything else works or raises a clear ValueError/TypeError."""
    tokenizer = tokenizer_of(subject)
    try:
        tokenizer(value)
    except Exception as exc:  # the property is about which exceptions escape
        assert not _is_text(value), (
            f"[{subject.name}] {ERRORS}: encoding valid text {short(value)} raised {describe(exc)}"
        )
        problem = unclear(exc)
        assert problem is None, (
            f"[{subject.name}] {ERRORS}: tokenizer({short(value)}) raised {describe(exc)}: {problem}"
        )


def check_decode_errors(subject, ids: list[int]) -> None:
    """Decoding ids in the vocab gives a string; any other id decodes or raises a clear ValueError/TypeError."""
    tokenizer = tokenizer_of(subject)
    try:
        decoded = tokenizer.decode(ids)
    except Exception as exc:
        valid = all(0 <= i < len(tokenizer) for i in ids)
        assert not valid, f"[{subject.name}] {ERRORS}: decode({short(ids)}) of ids in the vocab raised {describe(exc)}"
        problem = unclear(exc)
        assert problem is None, f"[{subject.name}] {ERRORS}: decode({short(ids)}) raised {describe(exc)}: {problem}"
    else:
        assert isinstance(decoded, str), f"[{subject.name}] {ERRORS}: decode({short(ids)}) returned {short(decoded)}"


@given(data=st.data())
def test_encode_errors(subject, data):
    tokenizer = _tokenizer_or_skip(subject)
    value = data.draw(_texts_for(tokenizer) | texts(1, 3, max_size=20) | non_text_inputs(), label="input")
    record(subject, {}, prop=ERRORS, raw_input=value, replay=lambda: _error_steps("__call__", value, _is_text(value)))
    check_encode_errors(subject, value)


@given(data=st.data())
def test_decode_errors(subject, data):
    tokenizer = _tokenizer_or_skip(subject)
    ids = data.draw(id_lists(len(tokenizer)), label="ids")
    record(subject, {}, prop=ERRORS, raw_input=ids, replay=lambda: _error_steps(
        "decode", ids, all(0 <= i < len(tokenizer) for i in ids)))
    check_decode_errors(subject, ids)
