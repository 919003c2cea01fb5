"""The held-out set: tiny seeded checkpoints of architectures outside the zoo, built offline in seconds.

The zoo (bert, gpt2, clip, llama, whisper, t5, vit, roberta, distilbert, bart) is what the suite was
tuned on; these checkpoints are what a user would point `--model DIR` at. They span the kinds of
issue 10 item 2: causal LMs with GQA, sliding window, ALiBi, partial rotary and multi-query
attention; DeBERTa-v2, ELECTRA, ALBERT and XLM-R encoders; the heads users fine-tune (sequence
and token classification, question answering, masked and causal LM, conditional generation,
image and audio classification, CTC); encoders with extra tokens (DeiT's distillation token,
Dinov2's registers); CNN backbones (feature maps and pooled outputs, no tokens); raw-waveform
audio encoders (`input_values`, convolutional downsampling).

The builder is generic: one table of rows (model class, config kwargs, processor recipe, seed),
sizes like transformers' tiny testers. Some rows ship a real tokenizer or processor (the
committed offline tokenizers of `zoo/tokenizers/`, one byte-level BPE trained here from
`zoo/corpus.txt`, image processors and a waveform feature extractor built small); the others
deliberately ship none, so the suite must fall back to model-level properties.

This set is held out: rows are not tuned to make the suite pass. Failures it shows are either
the suite's fault (to fix in a general mechanism) or real findings (to record).

    python -m tests.heldout OUTDIR        # builds every row into OUTDIR/<name>/
"""

from __future__ import annotations

import json
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
TOKENIZER_DIR = ROOT / "zoo" / "tokenizers"
CORPUS = ROOT / "zoo" / "corpus.txt"

HIDDEN, LAYERS, HEADS, FFN = 32, 2, 4, 37
MAX_POS = 64
IMAGE = 32
SMALL_VOCAB = 99  # rows without a tokenizer (transformers' testers use 99)


@dataclass(frozen=True)
class Tok:
    """A config value resolved from the row's tokenizer: the id of `token`."""

    token: str


VOCAB = "<vocab>"  # config value resolved to the row's tokenizer vocabulary size


@dataclass(frozen=True)
class TokenizerRecipe:
    """A fast tokenizer: a committed `zoo/tokenizers/*.json` file or a BPE trained here, plus its roles."""

    source: str  # "file:<name>" or "bpe"
    roles: tuple[tuple[str, str], ...]
    specials: tuple[str, ...] = ()  # for "bpe": special tokens in id order
    vocab_size: int = 0  # for "bpe"


TOKENIZERS: dict[str, TokenizerRecipe] = {
    "wordpiece": TokenizerRecipe(
        "file:wordpiece",
        (("pad_token", "[PAD]"), ("unk_token", "[UNK]"), ("cls_token", "[CLS]"), ("sep_token", "[SEP]"),
         ("mask_token", "[MASK]")),
    ),
    "roberta": TokenizerRecipe(
        "file:roberta",
        (("bos_token", "<s>"), ("pad_token", "<pad>"), ("eos_token", "</s>"), ("unk_token", "<unk>"),
         ("mask_token", "<mask>"), ("cls_token", "<s>"), ("sep_token", "</s>")),
    ),
    "gpt2": TokenizerRecipe(
        "file:gpt2",
        (("bos_token", "<|endoftext|>"), ("eos_token", "<|endoftext|>"), ("unk_token", "<|endoftext|>"),
         ("pad_token", "<|endoftext|>")),
    ),
    "llama": TokenizerRecipe(
        "file:llama",
        (("unk_token", "<unk>"), ("bos_token", "<s>"), ("eos_token", "</s>"), ("pad_token", "<pad>")),
    ),
    "t5": TokenizerRecipe(
        "file:t5", (("pad_token", "<pad>"), ("eos_token", "</s>"), ("unk_token", "<unk>")),
    ),
    # a tokenizer the zoo never saw: Qwen-style specials, no template, pad distinct from eos
    "qwen_bpe": TokenizerRecipe(
        "bpe",
        (("eos_token", "<|endoftext|>"), ("pad_token", "<|pad|>"), ("unk_token", "<|endoftext|>")),
        specials=("<|endoftext|>", "<|im_start|>", "<|im_end|>", "<|pad|>"),
        vocab_size=320,
    ),
}


@dataclass(frozen=True)
class Row:
    """One held-out checkpoint: how to build it and what (if anything) it ships for preprocessing."""

    name: str
    model_class: str  # a class in `transformers`; its `config_class` builds the config
    config: dict  # kwargs; Tok(...) and VOCAB are resolved from the tokenizer
    kind: str  # the issue 10 item 2 kind this row stands for (documentation, grouping in the sweep)
    seed: int
    tokenizer: str | None = None  # key in TOKENIZERS
    processor: tuple | None = None  # ("image", class name, kwargs) | ("waveform", kwargs) | ("ctc", kwargs)
    max_length: int = MAX_POS  # tokenizer.model_max_length (the longest input_ids the model takes)
    notes: str = ""


_ENC = dict(hidden_size=HIDDEN, num_hidden_layers=LAYERS, num_attention_heads=HEADS, intermediate_size=FFN,
            max_position_embeddings=MAX_POS)
_DEC = dict(_ENC, num_key_value_heads=2)
_S2S = dict(d_model=HIDDEN, encoder_layers=LAYERS, decoder_layers=LAYERS, encoder_attention_heads=HEADS,
            decoder_attention_heads=HEADS, encoder_ffn_dim=FFN, decoder_ffn_dim=FFN, max_position_embeddings=MAX_POS)
_VIT = dict(hidden_size=HIDDEN, num_hidden_layers=LAYERS, num_attention_heads=HEADS, intermediate_size=FFN,
            image_size=IMAGE, patch_size=8, num_channels=3)
_CNN = dict(num_channels=3, hidden_sizes=[10, 20, 30, 40], depths=[1, 1, 2, 1])
# transformers' Wav2Vec2 tester: three conv layers, stride 4, kernel 8 (about 64x downsampling)
_WAVE = dict(hidden_size=HIDDEN, num_hidden_layers=LAYERS, num_attention_heads=HEADS, intermediate_size=FFN,
             conv_dim=(32, 32, 32), conv_stride=(4, 4, 4), conv_kernel=(8, 8, 8), num_conv_pos_embeddings=16,
             num_conv_pos_embedding_groups=2)
_WORDPIECE_IDS = dict(vocab_size=VOCAB, pad_token_id=Tok("[PAD]"))
_ROBERTA_IDS = dict(vocab_size=VOCAB, pad_token_id=Tok("<pad>"), bos_token_id=Tok("<s>"), eos_token_id=Tok("</s>"))
_IMG = ("image", "ViTImageProcessorPil", dict(size={"height": IMAGE, "width": IMAGE}))
_WAVE_FE = ("waveform", dict(feature_size=1, sampling_rate=16000, padding_value=0.0, do_normalize=True,
                             return_attention_mask=True))


def rows() -> list[Row]:
    return [
        # --- causal LMs -------------------------------------------------------------------------
        Row("qwen2-causal-gqa", "Qwen2ForCausalLM",
            dict(_DEC, vocab_size=VOCAB, eos_token_id=Tok("<|endoftext|>"), pad_token_id=Tok("<|pad|>"),
                 bos_token_id=None, tie_word_embeddings=True),
            "causal LM, GQA", 201, tokenizer="qwen_bpe"),
        Row("mistral-causal-sliding", "MistralForCausalLM",
            dict(_DEC, vocab_size=SMALL_VOCAB, sliding_window=8, bos_token_id=1, eos_token_id=2, pad_token_id=0),
            "causal LM, GQA + sliding window (8 < max length)", 202),
        Row("bloom-causal-alibi", "BloomForCausalLM",
            dict(vocab_size=VOCAB, hidden_size=HIDDEN, n_layer=LAYERS, n_head=HEADS, unk_token_id=Tok("<unk>"),
                 bos_token_id=Tok("<s>"), eos_token_id=Tok("</s>"), pad_token_id=Tok("<pad>")),
            "causal LM, ALiBi", 203, tokenizer="llama"),
        Row("mpt-causal-alibi", "MptForCausalLM",
            dict(vocab_size=SMALL_VOCAB, d_model=HIDDEN, n_layers=LAYERS, n_heads=HEADS, expansion_ratio=2,
                 max_seq_len=MAX_POS, pad_token_id=0, bos_token_id=1, eos_token_id=2),
            "causal LM, ALiBi, no positions", 204),
        Row("falcon-causal-mqa", "FalconForCausalLM",
            dict(vocab_size=SMALL_VOCAB, hidden_size=HIDDEN, num_hidden_layers=LAYERS, num_attention_heads=HEADS,
                 multi_query=True, new_decoder_architecture=False, parallel_attn=True, alibi=False,
                 max_position_embeddings=MAX_POS, bos_token_id=1, eos_token_id=2, pad_token_id=0),
            "causal LM, multi-query, parallel attention", 205),
        Row("gptneox-causal-partial-rotary", "GPTNeoXForCausalLM",
            dict(_ENC, vocab_size=VOCAB, rotary_pct=0.25, bos_token_id=Tok("<|endoftext|>"),
                 eos_token_id=Tok("<|endoftext|>"), pad_token_id=Tok("<|endoftext|>")),
            "causal LM, partial rotary (25%)", 206, tokenizer="gpt2"),
        Row("phi-causal-partial-rotary", "PhiForCausalLM",
            dict(_ENC, vocab_size=SMALL_VOCAB, partial_rotary_factor=0.5, bos_token_id=1, eos_token_id=2,
                 pad_token_id=0),
            "causal LM, partial rotary (50%), parallel block", 207),
        Row("opt-causal", "OPTForCausalLM",
            dict(vocab_size=SMALL_VOCAB, hidden_size=HIDDEN, num_hidden_layers=LAYERS, num_attention_heads=HEADS,
                 ffn_dim=FFN, word_embed_proj_dim=HIDDEN, max_position_embeddings=MAX_POS, pad_token_id=1,
                 bos_token_id=2, eos_token_id=2),
            "causal LM, learned positions with offset 2", 208),
        Row("gemma-causal", "GemmaForCausalLM",
            dict(_DEC, head_dim=8, vocab_size=SMALL_VOCAB, pad_token_id=0, bos_token_id=2, eos_token_id=1),
            "causal LM, scaled embeddings, GQA", 209),
        # --- encoders (base models) -------------------------------------------------------------
        Row("deberta-v2-base", "DebertaV2Model",
            dict(_ENC, **_WORDPIECE_IDS, relative_attention=True, position_biased_input=False,
                 pos_att_type=["c2p", "p2c"], max_relative_positions=-1, position_buckets=16),
            "encoder, disentangled relative attention", 210, tokenizer="wordpiece"),
        Row("electra-base", "ElectraModel",
            dict(_ENC, vocab_size=SMALL_VOCAB, embedding_size=16, pad_token_id=0),
            "encoder, embedding projection", 211),
        Row("albert-base", "AlbertModel",
            dict(_ENC, **_WORDPIECE_IDS, embedding_size=16, num_hidden_groups=1, inner_group_num=1),
            "encoder, shared layers, pooler", 212, tokenizer="wordpiece"),
        Row("xlm-roberta-base", "XLMRobertaModel",
            dict(_ENC, **_ROBERTA_IDS, max_position_embeddings=MAX_POS + 2),
            "encoder, RoBERTa positions", 213, tokenizer="roberta"),
        # --- heads users fine-tune --------------------------------------------------------------
        Row("bert-seqcls", "BertForSequenceClassification",
            dict(_ENC, **_WORDPIECE_IDS, num_labels=3), "sequence classification (encoder)", 214,
            tokenizer="wordpiece"),
        Row("gpt2-seqcls", "GPT2ForSequenceClassification",
            dict(vocab_size=VOCAB, n_embd=HIDDEN, n_layer=LAYERS, n_head=HEADS, n_inner=FFN, n_positions=MAX_POS,
                 num_labels=3, bos_token_id=Tok("<|endoftext|>"), eos_token_id=Tok("<|endoftext|>"),
                 pad_token_id=Tok("<|endoftext|>")),
            "sequence classification (decoder-only, pools last non-pad)", 215, tokenizer="gpt2"),
        Row("llama-seqcls", "LlamaForSequenceClassification",
            dict(_DEC, vocab_size=SMALL_VOCAB, num_labels=2, pad_token_id=0, bos_token_id=1, eos_token_id=2),
            "sequence classification (decoder-only)", 216),
        Row("electra-tokcls", "ElectraForTokenClassification",
            dict(_ENC, **_WORDPIECE_IDS, embedding_size=16, num_labels=5), "token classification", 217,
            tokenizer="wordpiece"),
        Row("qwen2-tokcls", "Qwen2ForTokenClassification",
            dict(_DEC, vocab_size=SMALL_VOCAB, num_labels=4, pad_token_id=0, bos_token_id=1, eos_token_id=2),
            "token classification (decoder-only)", 218),
        Row("deberta-v2-qa", "DebertaV2ForQuestionAnswering",
            dict(_ENC, **_WORDPIECE_IDS, relative_attention=True, position_buckets=16),
            "question answering", 219, tokenizer="wordpiece"),
        Row("albert-qa", "AlbertForQuestionAnswering",
            dict(_ENC, vocab_size=SMALL_VOCAB, embedding_size=16, pad_token_id=0),
            "question answering", 220),
        Row("xlm-roberta-mlm", "XLMRobertaForMaskedLM",
            dict(_ENC, **_ROBERTA_IDS, max_position_embeddings=MAX_POS + 2), "masked LM", 221, tokenizer="roberta"),
        Row("albert-mlm", "AlbertForMaskedLM",
            dict(_ENC, vocab_size=SMALL_VOCAB, embedding_size=16, pad_token_id=0, bos_token_id=2, eos_token_id=3),
            "masked LM, embedding projection", 222),
        # --- conditional generation -------------------------------------------------------------
        Row("mbart-cg", "MBartForConditionalGeneration",
            dict(_S2S, **_ROBERTA_IDS, decoder_start_token_id=Tok("</s>"), forced_eos_token_id=Tok("</s>")),
            "conditional generation, pre-norm", 223, tokenizer="roberta"),
        Row("pegasus-cg", "PegasusForConditionalGeneration",
            dict(_S2S, vocab_size=VOCAB, pad_token_id=Tok("<pad>"), eos_token_id=Tok("</s>"),
                 decoder_start_token_id=Tok("<pad>"), forced_eos_token_id=Tok("</s>")),
            "conditional generation, sinusoidal positions", 224, tokenizer="t5"),
        Row("marian-mt", "MarianMTModel",
            dict(_S2S, vocab_size=SMALL_VOCAB, pad_token_id=1, eos_token_id=0, decoder_start_token_id=1,
                 forced_eos_token_id=0),
            "conditional generation, scaled embeddings", 225),
        # --- vision ---------------------------------------------------------------------------------
        Row("vit-imgcls", "ViTForImageClassification", dict(_VIT, num_labels=5), "image classification (tokens)",
            226, processor=_IMG, max_length=0),
        Row("convnext-imgcls", "ConvNextForImageClassification", dict(_CNN, image_size=IMAGE, num_labels=5),
            "image classification (CNN)", 227,
            processor=("image", "ConvNextImageProcessorPil", dict(size={"shortest_edge": IMAGE}, crop_pct=1.0)),
            max_length=0),
        Row("deit-distilled", "DeiTForImageClassificationWithTeacher", dict(_VIT, num_labels=5),
            "extra tokens: CLS + distillation", 228,
            processor=("image", "DeiTImageProcessorPil",
                       dict(size={"height": IMAGE, "width": IMAGE}, crop_size={"height": IMAGE, "width": IMAGE})),
            max_length=0),
        Row("dinov2-registers", "Dinov2WithRegistersModel", dict(_VIT, num_register_tokens=4, mlp_ratio=2),
            "extra tokens: CLS + 4 registers", 229,
            processor=("image", "BitImageProcessorPil",
                       dict(size={"shortest_edge": IMAGE}, crop_size={"height": IMAGE, "width": IMAGE})),
            max_length=0),
        Row("beit-base", "BeitModel", dict(_VIT, use_relative_position_bias=True, use_mean_pooling=True),
            "vision encoder, relative position bias, mean pooling", 230, max_length=0),
        Row("convnext-base", "ConvNextModel", dict(_CNN, image_size=IMAGE), "CNN backbone: feature map + pooled",
            231, max_length=0),
        Row("resnet-base", "ResNetModel", dict(_CNN, embedding_size=10, layer_type="basic"),
            "CNN backbone: feature map + pooled", 232,
            processor=("image", "ConvNextImageProcessorPil", dict(size={"shortest_edge": IMAGE}, crop_pct=1.0)),
            max_length=0),
        Row("regnet-base", "RegNetModel", dict(_CNN, embedding_size=10, groups_width=10),
            "CNN backbone: feature map + pooled", 233, max_length=0),
        # --- raw-waveform audio ---------------------------------------------------------------------
        Row("wav2vec2-base", "Wav2Vec2Model", dict(_WAVE, feat_extract_norm="layer", do_stable_layer_norm=True),
            "waveform encoder, sample-level mask", 234, processor=_WAVE_FE, max_length=0),
        Row("hubert-base", "HubertModel", dict(_WAVE, feat_extract_norm="group"),
            "waveform encoder, group norm (no mask)", 235, max_length=0),
        Row("wavlm-base", "WavLMModel", dict(_WAVE, feat_extract_norm="layer", num_buckets=32, max_bucket_distance=64),
            "waveform encoder, gated relative positions", 236, processor=_WAVE_FE, max_length=0),
        Row("wav2vec2-ctc", "Wav2Vec2ForCTC",
            dict(_WAVE, feat_extract_norm="layer", do_stable_layer_norm=True, vocab_size=32, pad_token_id=0,
                 bos_token_id=1, eos_token_id=2, ctc_loss_reduction="mean"),
            "CTC head on waveforms", 237, processor=("ctc", dict(_WAVE_FE[1])), max_length=0),
        Row("wav2vec2-audiocls", "Wav2Vec2ForSequenceClassification",
            dict(_WAVE, feat_extract_norm="group", num_labels=3, classifier_proj_size=16),
            "audio classification (mean-pooled frames)", 238, max_length=0),
    ]


# --- tokenizers and processors ------------------------------------------------------------------


def _backend(recipe: TokenizerRecipe):
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers

    if recipe.source.startswith("file:"):
        return Tokenizer.from_file(str(TOKENIZER_DIR / f"{recipe.source[5:]}.json"))
    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=recipe.vocab_size, special_tokens=list(recipe.specials),
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet(), show_progress=False)
    tok.train_from_iterator(CORPUS.read_text(encoding="utf-8").splitlines(), trainer=trainer)
    return tok


def build_tokenizer(key: str, max_length: int):
    from transformers import PreTrainedTokenizerFast

    recipe = TOKENIZERS[key]
    tokenizer = PreTrainedTokenizerFast(tokenizer_object=_backend(recipe), **dict(recipe.roles))
    tokenizer.model_max_length = max_length
    return tokenizer


def _ctc_processor(outdir: Path, features: dict):
    from transformers import Wav2Vec2CTCTokenizer, Wav2Vec2FeatureExtractor, Wav2Vec2Processor

    letters = ["<pad>", "<s>", "</s>", "<unk>", "|"] + [chr(c) for c in range(ord("a"), ord("z") + 1)] + ["'"]
    vocab_file = outdir / "vocab.json"
    vocab_file.write_text(json.dumps({t: i for i, t in enumerate(letters)}), encoding="utf-8")
    tokenizer = Wav2Vec2CTCTokenizer(str(vocab_file), unk_token="<unk>", pad_token="<pad>", bos_token="<s>",
                                     eos_token="</s>", word_delimiter_token="|")
    return Wav2Vec2Processor(feature_extractor=Wav2Vec2FeatureExtractor(**features), tokenizer=tokenizer)


def build_processor(row: Row, outdir: Path):
    """What the checkpoint ships for preprocessing (None: nothing, deliberately)."""
    import transformers

    if row.processor is None:
        return build_tokenizer(row.tokenizer, row.max_length) if row.tokenizer else None
    kind, *args = row.processor
    if kind == "image":
        class_name, kwargs = args
        return getattr(transformers, class_name)(**kwargs)
    if kind == "waveform":
        return transformers.Wav2Vec2FeatureExtractor(**args[0])
    if kind == "ctc":
        return _ctc_processor(outdir, args[0])
    raise ValueError(f"{row.name}: unknown processor kind {kind!r}")


# --- building -----------------------------------------------------------------------------------


def _resolve(value, tokenizer):
    if isinstance(value, Tok):
        token_id = tokenizer.convert_tokens_to_ids(value.token)
        if token_id is None or token_id == tokenizer.unk_token_id and value.token != tokenizer.unk_token:
            raise ValueError(f"token {value.token!r} is not in the tokenizer")
        return token_id
    if value == VOCAB:
        return len(tokenizer)
    if isinstance(value, dict):
        return {k: _resolve(v, tokenizer) for k, v in value.items()}
    return value


def build_row(row: Row, outdir: Path) -> Path:
    """Build one row into `outdir/<name>/` (config, safetensors weights, processor files if any)."""
    import torch
    import transformers

    target = Path(outdir) / row.name
    target.mkdir(parents=True, exist_ok=True)
    processor = build_processor(row, target)
    tokenizer = getattr(processor, "tokenizer", processor) if row.tokenizer else None
    config_kwargs = {k: _resolve(v, tokenizer) for k, v in row.config.items()}
    model_class = getattr(transformers, row.model_class)
    config = model_class.config_class(**config_kwargs)
    torch.manual_seed(row.seed)
    model = model_class(config).eval()
    _check_ids(row, config)
    model.save_pretrained(target, safe_serialization=True)
    if processor is not None:
        processor.save_pretrained(target)
    return target


def _check_ids(row: Row, config) -> None:
    """Special ids must sit inside the vocabulary (a tiny vocab makes hub ids like 50256 break)."""
    vocab = getattr(config, "vocab_size", None)
    if not vocab:
        return
    for key in ("pad_token_id", "bos_token_id", "eos_token_id", "decoder_start_token_id", "unk_token_id"):
        value = getattr(config, key, None)
        if isinstance(value, int) and not 0 <= value < vocab:
            raise ValueError(f"{row.name}: {key}={value} outside vocab_size={vocab}")


def build_all(outdir, only: list[str] | None = None) -> list[Path]:
    """Build every row (or those named in `only`) into `outdir`; returns the checkpoint directories."""
    import transformers

    transformers.logging.set_verbosity_error()
    transformers.logging.disable_progress_bar()
    selected = [r for r in rows() if not only or r.name in only]
    if only and len(selected) != len(set(only)):
        unknown = sorted(set(only) - {r.name for r in selected})
        raise ValueError(f"unknown held-out rows: {unknown}")
    outdir = Path(outdir)
    outdir.mkdir(parents=True, exist_ok=True)
    return [build_row(row, outdir) for row in selected]


def main(argv: list[str] | None = None) -> int:
    import argparse

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("outdir", type=Path)
    parser.add_argument("--only", nargs="+", metavar="NAME")
    args = parser.parse_args(argv)
    start = time.perf_counter()
    paths = build_all(args.outdir, args.only)
    by_name = {r.name: r for r in rows()}
    for path in paths:
        row = by_name[path.name]
        ships = row.processor[0] if row.processor else (f"tokenizer {row.tokenizer}" if row.tokenizer else "nothing")
        print(f"{path.name:32} {row.model_class:40} ships {ships:20} {row.kind}")
    print(f"built {len(paths)} checkpoints in {time.perf_counter() - start:.1f} s into {args.outdir}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
