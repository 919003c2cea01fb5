"""The ten tiny offline models: one table, one row per family.

Sizes follow transformers' own tiny testers (hidden 32, 2 layers, 4 heads, intermediate 37) so a
forward takes about a millisecond; vocabularies are those of the offline tokenizers in
`zoo/offline_tokenizers.py`. Every row is built with `torch.manual_seed(seed)` so the weights are
the same in every process (replaying a failure depends on it).
"""

from __future__ import annotations

from dataclasses import dataclass, field

from zoo.offline_tokenizers import RECIPES, vocab_size

HIDDEN, LAYERS, HEADS, FFN = 32, 2, 4, 37
MAX_LEN = 64  # sequence length limit of the text models (strategies draw 1..MAX_LEN)
IMAGE_SIZE, PATCH = 32, 8
MEL_BINS, WHISPER_SOURCE_POSITIONS = 16, 50  # pairs with WhisperFeatureExtractor(chunk_length=1)
SAMPLING_RATE = 16000


@dataclass(frozen=True)
class TinyModel:
    """One row of the zoo: how to build the config, the model and what a user would use with it."""

    name: str
    family: str
    model_class: str
    config_class: str
    config: dict  # config kwargs; token ids come from the tokenizer recipe
    modality: str
    capabilities: frozenset[str]
    tokenizer: str | None  # recipe name in offline_tokenizers.RECIPES
    processor: str | None = None  # "vit", "clip" or "whisper" (see zoo/processors.py)
    pipeline_task: str | None = None
    max_length: int = MAX_LEN
    seed: int = 0
    spec_extra: dict = field(default_factory=dict)


def _ids(recipe: str, **roles: str) -> dict[str, int]:
    """Config token ids (`pad_token_id=...`) looked up by token in the recipe's fixed special ids."""
    specials = RECIPES[recipe].specials
    return {key: specials.index(token) for key, token in roles.items()}


_TEXT_ENCODER = frozenset({"text", "pooler", "pipeline", "hidden_states"})
_CAUSAL = frozenset({"text", "causal", "cache", "pipeline", "tied_embeddings", "hidden_states"})
_SEQ2SEQ = frozenset({"text", "encoder_decoder", "cache", "tied_embeddings", "hidden_states"})


def _rows() -> list[TinyModel]:
    common = dict(hidden_size=HIDDEN, num_hidden_layers=LAYERS, num_attention_heads=HEADS, intermediate_size=FFN)
    return [
        TinyModel(
            "bert", "bert", "BertModel", "BertConfig",
            dict(common, vocab_size=vocab_size("wordpiece"), max_position_embeddings=MAX_LEN,
                 **_ids("wordpiece", pad_token_id="[PAD]")),
            "text", _TEXT_ENCODER, "wordpiece", pipeline_task="feature-extraction", seed=101,
        ),
        TinyModel(
            "gpt2", "gpt2", "GPT2LMHeadModel", "GPT2Config",
            dict(vocab_size=vocab_size("gpt2"), n_embd=HIDDEN, n_layer=LAYERS, n_head=HEADS, n_inner=FFN,
                 n_positions=MAX_LEN,
                 **_ids("gpt2", bos_token_id="<|endoftext|>", eos_token_id="<|endoftext|>",
                        pad_token_id="<|endoftext|>")),
            "text", _CAUSAL, "gpt2", pipeline_task="text-generation", seed=102,
        ),
        TinyModel(
            "clip", "clip", "CLIPModel", "CLIPConfig",
            dict(
                text_config=dict(common, vocab_size=vocab_size("clip"), max_position_embeddings=32,
                                 **_ids("clip", bos_token_id="<|startoftext|>", eos_token_id="<|endoftext|>",
                                        pad_token_id="<pad>")),
                vision_config=dict(common, image_size=IMAGE_SIZE, patch_size=PATCH, num_channels=3),
                projection_dim=16,
            ),
            "multimodal", frozenset({"text", "vision", "pipeline", "hidden_states"}), "clip", processor="clip",
            pipeline_task="zero-shot-image-classification", max_length=32, seed=103,
        ),
        TinyModel(
            "llama", "llama", "LlamaForCausalLM", "LlamaConfig",
            dict(common, num_key_value_heads=2, vocab_size=vocab_size("llama"), max_position_embeddings=MAX_LEN,
                 tie_word_embeddings=True,
                 **_ids("llama", bos_token_id="<s>", eos_token_id="</s>", pad_token_id="<pad>")),
            "text", _CAUSAL, "llama", pipeline_task="text-generation", seed=104,
        ),
        TinyModel(
            "whisper", "whisper", "WhisperForConditionalGeneration", "WhisperConfig",
            dict(vocab_size=vocab_size("whisper"), num_mel_bins=MEL_BINS, d_model=HIDDEN,
                 encoder_layers=LAYERS, decoder_layers=LAYERS, encoder_attention_heads=HEADS,
                 decoder_attention_heads=HEADS, encoder_ffn_dim=FFN, decoder_ffn_dim=FFN,
                 max_source_positions=WHISPER_SOURCE_POSITIONS, max_target_positions=32,
                 begin_suppress_tokens=None, suppress_tokens=None,
                 **_ids("whisper", pad_token_id="<|endoftext|>", bos_token_id="<|endoftext|>",
                        eos_token_id="<|endoftext|>", decoder_start_token_id="<|startoftranscript|>")),
            "audio", frozenset({"audio", "encoder_decoder", "cache", "pipeline", "tied_embeddings", "hidden_states"}),
            "whisper", processor="whisper", pipeline_task="automatic-speech-recognition", max_length=32, seed=105,
        ),
        TinyModel(
            "t5", "t5", "T5ForConditionalGeneration", "T5Config",
            dict(vocab_size=vocab_size("t5"), d_model=HIDDEN, d_kv=8, d_ff=FFN, num_layers=LAYERS,
                 num_decoder_layers=LAYERS, num_heads=HEADS, relative_attention_num_buckets=8,
                 **_ids("t5", pad_token_id="<pad>", eos_token_id="</s>", decoder_start_token_id="<pad>")),
            "text", _SEQ2SEQ, "t5", seed=106,
        ),
        TinyModel(
            "vit", "vit", "ViTModel", "ViTConfig",
            dict(common, image_size=IMAGE_SIZE, patch_size=PATCH, num_channels=3),
            "vision", frozenset({"vision", "pooler", "pipeline", "hidden_states"}), None, processor="vit",
            pipeline_task="image-feature-extraction", max_length=0, seed=107,
        ),
        TinyModel(
            "roberta", "roberta", "RobertaModel", "RobertaConfig",
            # RoBERTa's positions start after pad_token_id + 1: usable length is max_position_embeddings - 2.
            dict(common, vocab_size=vocab_size("roberta"), max_position_embeddings=MAX_LEN + 2,
                 **_ids("roberta", pad_token_id="<pad>", bos_token_id="<s>", eos_token_id="</s>")),
            "text", _TEXT_ENCODER, "roberta", pipeline_task="feature-extraction", seed=108,
        ),
        TinyModel(
            "distilbert", "distilbert", "DistilBertModel", "DistilBertConfig",
            dict(vocab_size=vocab_size("wordpiece"), dim=HIDDEN, n_layers=LAYERS, n_heads=HEADS, hidden_dim=FFN,
                 max_position_embeddings=MAX_LEN, **_ids("wordpiece", pad_token_id="[PAD]")),
            "text", _TEXT_ENCODER - {"pooler"}, "wordpiece", pipeline_task="feature-extraction", seed=109,
        ),
        TinyModel(
            "bart", "bart", "BartForConditionalGeneration", "BartConfig",
            dict(vocab_size=vocab_size("roberta"), d_model=HIDDEN, encoder_layers=LAYERS, decoder_layers=LAYERS,
                 encoder_attention_heads=HEADS, decoder_attention_heads=HEADS, encoder_ffn_dim=FFN,
                 decoder_ffn_dim=FFN, max_position_embeddings=MAX_LEN,
                 **_ids("roberta", pad_token_id="<pad>", bos_token_id="<s>", eos_token_id="</s>",
                        decoder_start_token_id="</s>", forced_eos_token_id="</s>")),
            "text", _SEQ2SEQ, "roberta", seed=110,
        ),
    ]


ZOO: dict[str, TinyModel] = {row.name: row for row in _rows()}
ZOO_NAMES: tuple[str, ...] = tuple(ZOO)
