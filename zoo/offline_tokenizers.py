"""Tokenizers trained offline, in milliseconds, from the corpus shipped in `zoo/corpus.txt`.

Three families, as in the real models: WordPiece (BERT, DistilBERT), byte-level BPE (GPT-2,
RoBERTa, BART, LLaMA, CLIP, Whisper) and Unigram (T5). Each recipe fixes the special tokens and
their ids, so the configs in `zoo/tiny.py` can name them.

WordPiece and Unigram training is not deterministic across processes (the `tokenizers` trainers
iterate hash maps), and replaying a failure needs the same vocabulary everywhere, so the trained
tokenizers are kept in `zoo/tokenizers/*.json`. `python -m zoo.offline_tokenizers` retrains them.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

from tokenizers import Tokenizer, decoders, models, normalizers, pre_tokenizers, processors, trainers

CORPUS = Path(__file__).with_name("corpus.txt")
TRAINED = Path(__file__).with_name("tokenizers")


@dataclass(frozen=True)
class TokenizerRecipe:
    kind: str  # "wordpiece", "bpe" or "unigram"
    specials: tuple[str, ...]  # in id order: specials[i] gets id i
    vocab_size: int
    template: str  # post-processor template, "$A" is the text
    roles: tuple[tuple[str, str], ...]  # (transformers role, token): ("pad_token", "[PAD]")


RECIPES = {
    "wordpiece": TokenizerRecipe(
        "wordpiece",
        ("[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"),
        320,
        "[CLS] $A [SEP]",
        (("pad_token", "[PAD]"), ("unk_token", "[UNK]"), ("cls_token", "[CLS]"),
         ("sep_token", "[SEP]"), ("mask_token", "[MASK]")),
    ),
    "roberta": TokenizerRecipe(
        "bpe",
        ("<s>", "<pad>", "</s>", "<unk>", "<mask>"),
        384,
        "<s> $A </s>",
        (("bos_token", "<s>"), ("pad_token", "<pad>"), ("eos_token", "</s>"),
         ("unk_token", "<unk>"), ("mask_token", "<mask>"), ("cls_token", "<s>"), ("sep_token", "</s>")),
    ),
    "gpt2": TokenizerRecipe(
        "bpe",
        ("<|endoftext|>",),
        384,
        "$A",
        (("bos_token", "<|endoftext|>"), ("eos_token", "<|endoftext|>"), ("unk_token", "<|endoftext|>"),
         ("pad_token", "<|endoftext|>")),
    ),
    "llama": TokenizerRecipe(
        "bpe",
        ("<unk>", "<s>", "</s>", "<pad>"),
        384,
        "<s> $A",
        (("unk_token", "<unk>"), ("bos_token", "<s>"), ("eos_token", "</s>"), ("pad_token", "<pad>")),
    ),
    "clip": TokenizerRecipe(
        "bpe",
        ("<|startoftext|>", "<|endoftext|>", "<pad>"),
        384,
        "<|startoftext|> $A <|endoftext|>",
        (("bos_token", "<|startoftext|>"), ("eos_token", "<|endoftext|>"), ("unk_token", "<|endoftext|>"),
         ("pad_token", "<pad>")),
    ),
    "whisper": TokenizerRecipe(
        "bpe",
        ("<|endoftext|>", "<|startoftranscript|>", "<|en|>", "<|transcribe|>", "<|notimestamps|>"),
        384,
        "$A",
        (("bos_token", "<|endoftext|>"), ("eos_token", "<|endoftext|>"), ("unk_token", "<|endoftext|>"),
         ("pad_token", "<|endoftext|>")),
    ),
    "t5": TokenizerRecipe(
        "unigram",
        ("<pad>", "</s>", "<unk>"),
        300,
        "$A </s>",
        (("pad_token", "<pad>"), ("eos_token", "</s>"), ("unk_token", "<unk>")),
    ),
}


def _corpus_lines() -> list[str]:
    return CORPUS.read_text(encoding="utf-8").splitlines()


def _train_backend(recipe: TokenizerRecipe) -> Tokenizer:
    specials = list(recipe.specials)
    if recipe.kind == "wordpiece":
        tok = Tokenizer(models.WordPiece(unk_token="[UNK]"))
        tok.normalizer = normalizers.BertNormalizer(lowercase=True)
        tok.pre_tokenizer = pre_tokenizers.BertPreTokenizer()
        tok.decoder = decoders.WordPiece()
        trainer = trainers.WordPieceTrainer(
            vocab_size=recipe.vocab_size, special_tokens=specials, limit_alphabet=200, show_progress=False
        )
    elif recipe.kind == "bpe":
        tok = Tokenizer(models.BPE())
        tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
        tok.decoder = decoders.ByteLevel()
        trainer = trainers.BpeTrainer(
            vocab_size=recipe.vocab_size,
            special_tokens=specials,
            initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
            show_progress=False,
        )
    elif recipe.kind == "unigram":
        tok = Tokenizer(models.Unigram())
        tok.normalizer = normalizers.NFKC()
        tok.pre_tokenizer = pre_tokenizers.Metaspace()
        tok.decoder = decoders.Metaspace()
        trainer = trainers.UnigramTrainer(
            vocab_size=recipe.vocab_size, special_tokens=specials, unk_token="<unk>", show_progress=False
        )
    else:  # pragma: no cover - the table above is closed
        raise ValueError(recipe.kind)
    tok.train_from_iterator(_corpus_lines(), trainer=trainer)
    ids = {t: tok.token_to_id(t) for t in specials}
    expected = {t: i for i, t in enumerate(specials)}
    if ids != expected:  # the configs in zoo/tiny.py rely on these ids
        raise RuntimeError(f"special token ids moved: {ids} != {expected}")
    template = recipe.template
    tokens_in_template = [t for t in template.split() if t != "$A"]
    if tokens_in_template:
        tok.post_processor = processors.TemplateProcessing(
            single=template,
            pair=template + " $B:1" + (" " + tokens_in_template[-1] + ":1" if template.endswith(tokens_in_template[-1]) else ""),
            special_tokens=[(t, ids[t]) for t in dict.fromkeys(tokens_in_template)],
        )
    return tok


@lru_cache(maxsize=None)
def _trained(recipe_name: str) -> str:
    """The trained tokenizer as JSON, from `zoo/tokenizers/` (trained afresh if the file is missing)."""
    path = TRAINED / f"{recipe_name}.json"
    if path.is_file():
        return path.read_text(encoding="utf-8")
    return _train_backend(RECIPES[recipe_name]).to_str()


def build_tokenizer(recipe_name: str):
    """A transformers fast tokenizer for the recipe, ready for `save_pretrained` and pipelines."""
    from transformers import PreTrainedTokenizerFast

    recipe = RECIPES[recipe_name]
    if recipe_name == "whisper":
        return _whisper_tokenizer(recipe)
    backend = Tokenizer.from_str(_trained(recipe_name))
    return PreTrainedTokenizerFast(tokenizer_object=backend, **dict(recipe.roles))


def _whisper_tokenizer(recipe: TokenizerRecipe):
    """Whisper's pipeline needs `WhisperTokenizer` (its ASR decoding); it is built from vocab + merges."""
    import json

    from transformers import WhisperTokenizer

    bpe = json.loads(_trained("whisper"))["model"]
    merges = [tuple(m) if isinstance(m, list) else tuple(m.split(" ")) for m in bpe["merges"]]
    return WhisperTokenizer(vocab=bpe["vocab"], merges=merges, pad_token=dict(recipe.roles)["pad_token"],
                            extra_special_tokens=list(recipe.specials[1:]))


def vocab_size(recipe_name: str) -> int:
    return Tokenizer.from_str(_trained(recipe_name)).get_vocab_size()


def retrain_all() -> None:
    """Retrain every recipe from the corpus and store it in `zoo/tokenizers/`."""
    TRAINED.mkdir(exist_ok=True)
    for name, recipe in RECIPES.items():
        (TRAINED / f"{name}.json").write_text(_train_backend(recipe).to_str(pretty=True), encoding="utf-8")
        print(f"trained {name}: {recipe.kind}, {vocab_size(name)} tokens")


if __name__ == "__main__":
    _trained.cache_clear()
    retrain_all()
