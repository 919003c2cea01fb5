"""Call-style strategies: how a model is called, drawn like its inputs and shrinking to the suite's default.

A `CallStyle` says how a forward is called: position ids explicit (derived from the mask, as
`generate` does) or left to the model's own default; which cache object a cached call starts
with (a `DynamicCache`, a `StaticCache`, or the legacy tuple of tensors where the release still
accepts it); `return_dict`; how `generate` is configured (its generation-config defaults, or
greedy settings passed explicitly); and the side the batch is padded on. A `TokenizerStyle` says
whether a tokenizer's padding/truncation side is set as an attribute or passed as an argument.

Strategies take plain data (a spec's capabilities, the cache kinds a model accepts) and never a
model; `zoo.config_variants.styled` applies a style to a subject.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

from hypothesis import strategies as st

CACHE_KINDS = ("dynamic", "static", "legacy")  # the first is the default
GENERATE_STYLES = ("explicit", "defaults")


@dataclass(frozen=True)
class CallStyle:
    positions: str = "explicit"  # "explicit": position ids from the mask; "default": none passed
    cache: str = "dynamic"  # the cache object a cached call starts with (CACHE_KINDS)
    return_dict: bool = True
    generate: str = "explicit"  # "explicit": greedy settings passed; "defaults": the generation config's
    padding_side: str | None = None  # None: the spec's default (left for causal models, right otherwise)

    def as_dict(self) -> dict:
        return asdict(self)

    def __str__(self) -> str:
        changed = {k: v for k, v in self.as_dict().items() if v != getattr(DEFAULT_STYLE, k)}
        return "default call style" if not changed else ", ".join(f"{k}={v!r}" for k, v in changed.items())


DEFAULT_STYLE = CallStyle()


@st.composite
def call_styles(draw, spec, *, cache_kinds: tuple[str, ...] = ("dynamic",)) -> CallStyle:
    """A call style that applies to `spec`'s model; `cache_kinds`: the cache objects it accepts.

    Left padding needs position ids from the mask: without them a model with absolute positions
    (GPT-2, and every encoder here, whose subjects pass none) shifts each padded item, as
    transformers documents (pad on the right or pass position ids). So causal models draw left
    (explicit positions) or right padding, default positions pad on the right, and other models
    keep the right padding of their spec. Every dimension shrinks to `DEFAULT_STYLE`.
    """
    causal, cached = spec.has("causal"), spec.has("cache")
    positions = draw(st.sampled_from(("explicit", "default")), label="positions") if causal else "explicit"
    kinds = [k for k in CACHE_KINDS if k in cache_kinds]
    cache = draw(st.sampled_from(kinds), label="cache object") if cached and kinds else "dynamic"
    return_dict = not draw(st.booleans(), label="return_dict=False")
    generate = draw(st.sampled_from(GENERATE_STYLES), label="generate") if cached else "explicit"
    side = None  # the spec's side: left for causal models (positions from the mask), right otherwise
    if causal and positions == "default":
        side = "right"
    elif causal:
        side = draw(st.sampled_from((None, "right")), label="padding side")
    return CallStyle(positions, cache, return_dict, generate, side)


@dataclass(frozen=True)
class TokenizerStyle:
    padding_side: str = "right"
    truncation_side: str = "right"
    how: str = "argument"  # "argument": passed to the call; "attribute": set on the tokenizer first

    def as_dict(self) -> dict:
        return asdict(self)


def tokenizer_styles() -> st.SearchStrategy[TokenizerStyle]:
    """Sides (right first) set either way (argument first)."""
    sides = st.sampled_from(("right", "left"))
    return st.builds(TokenizerStyle, sides, sides, st.sampled_from(("argument", "attribute")))
