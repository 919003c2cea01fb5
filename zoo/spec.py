"""`ModelSpec`: what the strategies and properties may know about a model under test.

A spec is plain data (numbers, names, capability flags). Strategies size their draws from it;
properties pick what applies from `capabilities`. It never holds the model itself.
"""

from __future__ import annotations

from dataclasses import dataclass, field

# Capability flags a spec may carry. Properties select on these, never on the model type.
CAPABILITIES = frozenset(
    {
        "text",  # takes input_ids / attention_mask
        "vision",  # takes pixel_values
        "audio",  # takes input_features (spectrogram frames)
        "waveform",  # takes input_values (raw samples), optionally with a sample-level attention_mask
        "causal",  # decoder-only language model with logits
        "encoder_decoder",  # needs decoder_input_ids
        "cache",  # supports past_key_values / use_cache
        "pooler",  # returns a pooled output
        "pipeline",  # has a transformers pipeline task that works offline
        "tied_embeddings",  # input embeddings shared with the output head
        "hidden_states",  # honours output_hidden_states=True
        # processors the checkpoint ships (never a blank default: see zoo/checkpoints.py)
        "tokenizer",
        "image_processor",
        "feature_extractor",
    }
)

MODALITIES = ("text", "vision", "audio", "multimodal")


@dataclass(frozen=True)
class ModelSpec:
    """Everything about a subject that is known without running it."""

    name: str
    family: str  # the transformers model_type ("bert", "gpt2", ...)
    modality: str  # one of MODALITIES
    capabilities: frozenset[str]
    seed: int = 0  # weight-init seed for zoo models (replay depends on it)
    source: str = "zoo"  # "zoo", or the checkpoint directory of a user model
    model_class: str = ""  # transformers class name used to build or load the model
    main_input: str = "input_ids"  # the forward's main input: input_ids, pixel_values, input_features, input_values
    head: str = "base"  # what the model puts on its backbone (zoo.contract.head_kind)
    # text
    vocab_size: int = 0
    max_length: int = 0  # longest input_ids the model accepts
    pad_token_id: int | None = None
    bos_token_id: int | None = None
    eos_token_id: int | None = None
    special_token_ids: tuple[int, ...] = ()
    # decoder side of encoder-decoder models
    decoder_vocab_size: int = 0
    decoder_max_length: int = 0
    decoder_start_token_id: int | None = None
    # vision
    image_size: int = 0
    num_channels: int = 0
    # audio
    num_mel_bins: int = 0
    num_frames: int = 0  # input_features length the encoder requires
    sampling_rate: int = 0
    min_samples: int = 0  # shortest raw waveform (input_values) that gives at least one output frame
    max_samples: int = 0
    # sizes for the shape contract
    hidden_size: int = 0
    num_layers: int = 0
    pipeline_task: str | None = None
    extra: dict = field(default_factory=dict, compare=False, hash=False)

    def __post_init__(self):
        unknown = set(self.capabilities) - CAPABILITIES
        if unknown:
            raise ValueError(f"{self.name}: unknown capabilities {sorted(unknown)}")
        if self.modality not in MODALITIES:
            raise ValueError(f"{self.name}: modality {self.modality!r} not in {MODALITIES}")

    def has(self, *capabilities: str) -> bool:
        return all(c in self.capabilities for c in capabilities)

    @property
    def dual_encoder(self) -> bool:
        """Text and image towers with pairwise logits (CLIP): known by the output class, not by taking
        text and images (a vision-language LM takes both and returns one token stream)."""
        fields = (self.extra.get("contract") or {}).get("output_fields")
        return ("logits_per_image" in fields) if fields else self.has("text", "vision")
