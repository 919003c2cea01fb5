"""Text inputs for tokenizers and text pipelines."""

from __future__ import annotations

from hypothesis import strategies as st

# Unicode text without surrogates (not encodable as UTF-8); shrinks toward short ASCII.
_characters = st.characters(codec="utf-8")


def text(min_size: int = 0, max_size: int = 64):
    """Arbitrary UTF-8 text of `min_size..max_size` characters."""
    return st.text(_characters, min_size=min_size, max_size=max_size)
