"""Text inputs for tokenizers and text pipelines: strings that stress tokenizers.

A drawn text is a few segments glued together, each from one edge-case class (whitespace of every
kind, control characters, combining marks in NFC or NFD, right-to-left and mixed scripts, CJK,
emoji with ZWJ sequences and skin tones, very long words, repeated characters, special-token
strings such as `[CLS]`, `</s>` or `<|endoftext|>`, ordinary sentences, arbitrary Unicode).
Each segment's class is tagged with `event()`. Plain ASCII is the first class, so failures shrink
toward short ASCII text and, below that, toward the empty string.
"""

from __future__ import annotations

import unicodedata
from functools import lru_cache

from hypothesis import event, strategies as st

# Unicode text without surrogates (not encodable as UTF-8).
_characters = st.characters(codec="utf-8")

WHITESPACE = (
    " ", "\t", "\n", "\r", "\u00a0",  # NBSP
    "\u2009", "\u3000",  # thin space, ideographic space
    "\u200b", "\u200c", "\u200d", "\u2060", "\ufeff",  # zero-width space / non-joiner / joiner, word joiner, BOM
)
# Special-token strings of the common families; a model's own come in through `special_tokens`.
SPECIAL_STRINGS = (
    "[CLS]", "[SEP]", "[PAD]", "[UNK]", "[MASK]", "<s>", "</s>", "<pad>", "<unk>", "<mask>",
    "<|endoftext|>", "<|startoftext|>",
)
WORDS = (
    "the", "a", "cat", "sat", "on", "mat", "I", "don't", "Hello", "world", "New", "York", "2024",
    "e-mail", "U.S.A.", ",", ".", "?", "!", "(", ")", "\"", "'s", "tokenizer",
)
ACCENTED = "éèêàüñçåøÅÉÖĀǅẞﬁ²"  # precomposed letters, a titlecase digraph, a ligature, a superscript
SCRIPTS = (
    "שלום", "مرحبا", "سلام", "Привет", "γειά", "नमस्ते", "สวัสดี", "abc", "123",
    "\u200f", "\u200e", "\u202e", "\u2066",  # RTL / LTR marks, RTL override, LTR isolate
)
KANA_HANGUL = "。、「」ひらがなカタカナ한국어ｱｲｳ"  # includes half-width katakana (NFKC changes them)
EMOJI = ("😀", "👍", "👩", "💻", "🏳", "❤", "🇺", "🇸", "🧑", "🔥")
SKIN_TONES = tuple(chr(c) for c in range(0x1F3FB, 0x1F400))
ZWJ, VS16 = "\u200d", "\ufe0f"


def _emoji_sequence():
    """Emoji, optionally with a skin tone or variation selector, joined by ZWJ into one glyph."""
    one = st.tuples(st.sampled_from(EMOJI), st.sampled_from(("",) + SKIN_TONES + (VS16,))).map("".join)
    return st.lists(one, min_size=1, max_size=4).map(ZWJ.join)


def _normal_form_pair():
    """Accented text in NFC or NFD (the same text as two different code point sequences)."""
    return st.tuples(
        st.text(st.sampled_from(ACCENTED + "aeo"), min_size=1, max_size=6), st.sampled_from(("NFC", "NFD"))
    ).map(lambda pair: unicodedata.normalize(pair[1], pair[0]))


@lru_cache(maxsize=64)  # building character strategies is slow (about 10 ms): once per special-token set
def _segment_classes(special_tokens: tuple[str, ...]) -> dict[str, st.SearchStrategy[str]]:
    specials = tuple(dict.fromkeys(tuple(special_tokens) + SPECIAL_STRINGS))
    return {
        "ascii": st.text(st.characters(min_codepoint=32, max_codepoint=126), min_size=1, max_size=12),
        "sentence": st.lists(st.sampled_from(WORDS), min_size=1, max_size=8).map(" ".join),
        "whitespace": st.text(st.sampled_from(WHITESPACE), min_size=1, max_size=6),
        "control": st.text(st.characters(categories=["Cc"]), min_size=1, max_size=4),
        "combining marks": st.text(st.characters(categories=["Mn", "Me"]), min_size=1, max_size=3),
        "NFC/NFD": _normal_form_pair(),
        "RTL / mixed scripts": st.lists(st.sampled_from(SCRIPTS), min_size=1, max_size=4).map("".join),
        "CJK": st.text(st.characters(min_codepoint=0x4E00, max_codepoint=0x9FFF) | st.sampled_from(KANA_HANGUL),
                       min_size=1, max_size=8),
        "emoji ZWJ / skin tone": _emoji_sequence(),
        "long word": st.text(st.characters(categories=["Ll", "Lu"], max_codepoint=0x24F), min_size=40, max_size=160),
        "repeated character": st.tuples(_characters, st.integers(2, 160)).map(lambda p: p[0] * p[1]),
        "special token": st.sampled_from(specials),
        "unicode": st.text(_characters, min_size=1, max_size=12),
    }


TEXT_CLASSES: tuple[str, ...] = tuple(_segment_classes(()))


@st.composite
def text(draw, min_size: int = 0, max_size: int = 64, special_tokens: tuple[str, ...] = ()):
    """A string of `min_size..max_size` characters made of edge-case segments.

    `special_tokens`: the model's own special-token strings (`tokenizer.all_special_tokens`), so
    text can contain them; the common families' strings are always among the candidates.
    """
    classes = _segment_classes(tuple(special_tokens))
    names = list(classes)
    pieces = []
    count = draw(st.integers(0 if min_size == 0 else 1, 6), label="segments")
    # Distinct classes per text spread the classes over few examples; each shrinks toward the
    # first class, plain ASCII.
    order = draw(st.lists(st.sampled_from(names), min_size=count, max_size=count, unique=True), label="text classes")
    for name in order:
        event(f"text: {name}")
        pieces.append(draw(classes[name], label=name))
        pieces.append(draw(st.sampled_from(("", " ")), label="separator"))
    result = "".join(pieces)[:max_size]
    if len(result) < min_size:
        result += "a" * (min_size - len(result))
    if not result:
        event("text: empty")
    return result


def texts(min_items: int = 1, max_items: int = 4, **kwargs):
    """A batch of texts (a list), each drawn by `text(**kwargs)`."""
    return st.lists(text(**kwargs), min_size=min_items, max_size=max_items)


def non_text_inputs():
    """Inputs that are not text or a batch of texts, for the tokenizer's error handling.

    Empty batches, `None`, numbers, bytes, nested or mixed lists, dicts, numpy arrays of strings,
    and strings holding lone surrogates (valid Python `str`, not valid Unicode text).
    """
    import numpy as np

    kinds = {
        "empty batch": st.just([]),
        "None": st.just(None),
        "number": st.integers() | st.floats(),
        "bytes": st.binary(max_size=8),
        "list with a non-string": st.lists(st.none() | st.integers() | st.just("a"), min_size=1, max_size=3).filter(
            lambda items: any(not isinstance(i, str) for i in items)
        ),
        "nested list": st.lists(st.lists(st.just("a"), max_size=2), min_size=1, max_size=3),
        "dict": st.dictionaries(st.sampled_from(("text", "a")), st.just("a"), max_size=1),
        "numpy array": st.lists(st.just("a"), max_size=3).map(np.array),
        "lone surrogate": st.text(st.characters(categories=["Cs"]), min_size=1, max_size=2),
    }

    @st.composite
    def build(draw):
        kind = draw(st.sampled_from(list(kinds)), label="kind")
        event(f"non-text input: {kind}")
        return draw(kinds[kind], label=kind)

    return build()
