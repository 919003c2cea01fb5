"""Load paths: every way people load a checkpoint gives the model the plain fp32 load gives (mark `configs`).

The subject's model is saved once per process (safetensors) and loaded back with `dtype=` float16 /
bfloat16 / "auto", sharded (`max_shard_size`), with `device_map="cpu"` (needs accelerate), and,
from its base model, into every head class of its family (the start of every fine-tune: the
encoder weights arrive unchanged, the new head is initialised and reported as missing keys).
Each load is compared with the plain fp32 load: weights bit-identical (cast the same way for half
types), outputs finite and within the policy (`devices.tolerance`): for an fp32 load, bit-identical
once both models' weights sit in equally aligned storage, within `reordered` as loaded.
"""

from __future__ import annotations

import atexit
import re
import shutil
import tempfile
from pathlib import Path

import pytest
import torch
from hypothesis import given, settings, strategies as st

from devices.tolerance import EXACT, assert_outputs_close, nonfinite_outputs, tolerance
from properties.artifacts import compared, pair, record, side
from properties.examples import examples
from strategies.batches import model_inputs
from zoo.fp32 import may_stay_fp32
from zoo.storage import aligned, aligned_inputs

pytestmark = pytest.mark.configs

PROPERTY = "load path"
HEADS = "head class load"
SHARD_SIZE = "20KB"  # the tiny models are ~100-400 KB: several shards each
AS_LOADED = tolerance(torch.float32, "reordered")  # an fp32 load as from_pretrained maps it (see below)
LOAD_EXAMPLES = settings(max_examples=examples(5))  # the loads are the test; a few inputs judge each


# -- saved checkpoints, one per (model, kind) per process --------------------------------------------
_ROOT = Path(tempfile.mkdtemp(prefix="hfprops-load-paths-"))
atexit.register(shutil.rmtree, _ROOT, ignore_errors=True)
_SAVED: dict[tuple[int, str], tuple[object, Path]] = {}
_LOADED: dict[tuple[int, str], tuple[object, object]] = {}


def saved(subject, kind: str = "plain") -> Path:
    """The subject's model saved once: "plain", "sharded" (`max_shard_size`) or "base" (its base model)."""
    key = (id(subject), kind)
    if key not in _SAVED:
        directory = _ROOT / f"{subject.name}-{kind}"
        model = subject.model.base_model if kind == "base" else subject.model
        model.save_pretrained(directory, **({"max_shard_size": SHARD_SIZE} if kind == "sharded" else {}))
        _SAVED[key] = (subject, directory)  # holding subject keeps its id unique
    return _SAVED[key][1]


def load(cls, directory: Path, **kwargs):
    """`cls.from_pretrained` offline, safetensors only; returns (model in eval mode, loading info)."""
    model, info = cls.from_pretrained(directory, local_files_only=True, use_safetensors=True,
                                      output_loading_info=True, **kwargs)
    return model.eval(), info


def loaded(subject, how: str, kind: str = "plain", **kwargs):
    """The subject reloaded one way (built once per process), as a subject."""
    key = (id(subject), how)
    if key not in _LOADED:
        model, _ = load(type(subject.model), saved(subject, kind), **kwargs)
        _LOADED[key] = (subject, subject.with_model(model))
    return _LOADED[key][1]


def _expected_dtype(model, name: str, tensor: torch.Tensor, dtype, loaded: torch.Tensor) -> torch.dtype:
    if dtype is None or not tensor.is_floating_point():
        return tensor.dtype
    if loaded.dtype == torch.float32 and may_stay_fp32(model, name, dtype):
        return torch.float32
    return dtype


def _same_weights(subject, actual, reference, what: str, dtype=None) -> None:
    """Every parameter and buffer of `actual` has the requested dtype (fp32 where the class keeps it)
    and equals `reference`'s cast to it, bit for bit."""
    expected = reference.state_dict()
    differ = []
    for name, tensor in actual.state_dict().items():
        want = expected[name]
        want = want.to(_expected_dtype(actual, name, want, dtype, tensor))
        if tensor.shape != want.shape or tensor.dtype != want.dtype or not torch.equal(tensor.cpu(), want):
            differ.append(f"{name} ({tensor.dtype})")
    assert not differ, f"[{subject.name}] {PROPERTY} ({what}): weights differ from the plain load in {differ[:8]}"


def check_load_matches_plain(subject, variant, reference, inputs, what: str) -> None:
    """`variant` (another load path) gives finite outputs within the policy of the plain fp32 load's."""
    expected = reference.forward(inputs, hidden_states=True)
    actual = variant.forward(inputs, hidden_states=True)
    problems = nonfinite_outputs(actual)
    assert not problems, f"[{subject.name}] {PROPERTY} ({what}): " + "; ".join(problems)
    masks = reference.real_token_masks(expected, inputs)
    dtype = variant.dtype
    if dtype == reference.dtype:
        # Same weights (checked bit for bit), but each load path memory-maps them at its own offsets,
        # which may change the kernels' reduction order (transformers 5.25: sharded vs single file,
        # 7.5e-9 on bert). Copied into equally aligned storage the two are one computation, so exact
        # holds by construction (as in test_save_load); as loaded, the `reordered` row bounds them.
        same_storage = aligned_inputs(inputs)
        assert_outputs_close(aligned(variant).forward(same_storage, hidden_states=True),
                             aligned(reference).forward(same_storage, hidden_states=True), EXACT,
                             model=subject.name, prop=f"{PROPERTY} ({what} vs plain fp32 load, aligned copies)",
                             masks=masks)
    tol = tolerance(dtype, "reordered") if dtype == reference.dtype else tolerance(dtype, "precision")
    actual = {k: t.to(expected[k].dtype) if t.is_floating_point() else t for k, t in actual.items()}
    assert_outputs_close(actual, expected, tol, model=subject.name, prop=f"{PROPERTY} ({what} vs plain fp32 load)",
                         masks=masks)


# -- dtype=, shards, device_map ---------------------------------------------------------------------
DTYPES = {"float16": torch.float16, "bfloat16": torch.bfloat16, "auto": "auto"}


@pytest.mark.parametrize("dtype", list(DTYPES))
@LOAD_EXAMPLES
@given(data=st.data())
def test_load_with_dtype(subject, dtype, data):
    """`from_pretrained(dtype=...)` gives the weights of the fp32 load cast to that dtype ("auto": the
    checkpoint's own, float32) and outputs within the policy of the fp32 load's."""
    reference = loaded(subject, "plain")
    variant = loaded(subject, f"dtype={dtype}", dtype=DTYPES[dtype])
    want = torch.float32 if dtype == "auto" else DTYPES[dtype]
    assert variant.dtype == want, f"[{subject.name}] {PROPERTY}: dtype={dtype!r} loaded {variant.dtype}, expected {want}"
    _same_weights(subject, variant.model, reference.model, f"dtype={dtype}", dtype=want)
    inputs = data.draw(model_inputs(subject.spec), label="inputs")
    record(variant, inputs, prop=PROPERTY, load=f"dtype={dtype}", tolerance=str(
        tolerance(variant.dtype, "reordered" if variant.dtype == reference.dtype else "precision")), replay=lambda: compared(pair(
        side(reload={"dtype": dtype}), side(reload={}), real_tokens="expected", finite=True, what=f"dtype={dtype}")))
    check_load_matches_plain(subject, variant, reference, inputs, f"dtype={dtype}")


@LOAD_EXAMPLES
@given(data=st.data())
def test_sharded_load(subject, data):
    """A checkpoint saved in shards (`max_shard_size`) loads the weights and outputs of the single file."""
    shards = list(saved(subject, "sharded").glob("*.safetensors"))
    assert len(shards) > 1, f"[{subject.name}] {PROPERTY}: max_shard_size={SHARD_SIZE} wrote {len(shards)} file(s)"
    reference, variant = loaded(subject, "plain"), loaded(subject, "sharded", kind="sharded")
    _same_weights(subject, variant.model, reference.model, f"{len(shards)} shards")
    inputs = data.draw(model_inputs(subject.spec), label="inputs")
    record(variant, inputs, prop=PROPERTY, load=f"sharded ({len(shards)} files)", tolerance=AS_LOADED, replay=lambda: compared(pair(
        side(reload={"max_shard_size": SHARD_SIZE}), side(reload={}), real_tokens="expected", finite=True)))
    check_load_matches_plain(subject, variant, reference, inputs, f"{len(shards)} shards")


@LOAD_EXAMPLES
@given(data=st.data())
def test_device_map_cpu_load(subject, data):
    """`device_map="cpu"` (accelerate's dispatch) loads the weights and outputs of the plain load."""
    from transformers.utils import is_accelerate_available

    if not is_accelerate_available():
        pytest.skip('device_map="cpu" needs accelerate (pip install accelerate); it is not installed')
    reference, variant = loaded(subject, "plain"), loaded(subject, "device_map=cpu", device_map="cpu")
    _same_weights(subject, variant.model, reference.model, 'device_map="cpu"')
    inputs = data.draw(model_inputs(subject.spec), label="inputs")
    record(variant, inputs, prop=PROPERTY, load='device_map="cpu"', tolerance=AS_LOADED, replay=lambda: compared(pair(
        side(reload={"device_map": "cpu"}), side(reload={}), real_tokens="expected", finite=True)))
    check_load_matches_plain(subject, variant, reference, inputs, 'device_map="cpu"')


# -- a base checkpoint into each head class ----------------------------------------------------------
def head_classes(model_type: str) -> list[str]:
    """Every class of transformers' auto mappings for `model_type` except the bare base model."""
    from transformers.models.auto import modeling_auto

    names = set()
    for attr, mapping in vars(modeling_auto).items():
        if attr.startswith("MODEL_FOR_") and attr.endswith("_MAPPING_NAMES") and model_type in mapping:
            value = mapping[model_type]
            names.update(value if isinstance(value, (list, tuple)) else [value])
    base = modeling_auto.MODEL_MAPPING_NAMES.get(model_type)
    return sorted(n for n in names - {base} - {None} if _same_config_class(n, model_type))


def _same_config_class(class_name: str, model_type: str) -> bool:
    """The head takes this family's config: some mappings pair a model type with a class of another
    family (built from a full-size default config: gigabytes), and some heads need extra config
    (segmentation heads' out_indices) that a plain checkpoint of the family does not have."""
    import transformers
    from transformers import CONFIG_MAPPING

    head = getattr(transformers, class_name, None)
    config_class = getattr(head, "config_class", None)
    return head is not None and config_class is CONFIG_MAPPING[model_type] and not class_name.endswith(
        ("ForSemanticSegmentation", "ForDepthEstimation", "ForObjectDetection", "ForUniversalSegmentation",
         "ForInstanceSegmentation", "ForKeypointDetection"))


def _base_key(head, key: str, base_state: dict) -> str | None:
    """The base-model key a head-model key holds (base-model prefix stripped or added), or None."""
    prefix = getattr(head, "base_model_prefix", "") + "."
    for candidate in (key, key.removeprefix(prefix), prefix + key):
        if candidate in base_state:
            return candidate
    return None


def declared_not_missing(head, key: str) -> bool:
    """Whether a class in `head` declares `key` absent from checkpoints on purpose (its
    `_keys_to_ignore_on_load_missing`: PocketTTS's training-only loss_weighting), so transformers
    leaves it out of the missing keys. A submodule's pattern covers only that submodule's own keys;
    transformers merges them unprefixed into the whole model, which is not what the class declares."""
    for path, module in head.named_modules():
        patterns = getattr(type(module), "_keys_to_ignore_on_load_missing", None) or ()  # the class, not post_init's merge
        prefix = f"{path}." if path else ""
        if key.startswith(prefix) and any(re.search(p, key[len(prefix):]) for p in patterns):
            return True
    return False


class HeadRefused(Exception):
    """`from_pretrained` of a head class refused the base checkpoint's config with a ValueError."""


def check_head_load(subject, head_class, directory: Path, base_state: dict, dtype: torch.dtype) -> None:
    """Loading the base checkpoint in `directory` into `head_class` with `dtype` keeps every base
    weight (`base_state`, the live base model's, cast to `dtype`) and gives the head's new
    parameters finite values, not all zero, reported as missing keys. The values are judged, not
    transformers' `_is_hf_initialized` flags."""
    try:
        head, info = load(head_class, directory, dtype=dtype)
    except ValueError as exc:  # the head needs a config value the base checkpoint lacks, and says so
        raise HeadRefused(f"{head_class.__name__}: {str(exc).strip().splitlines()[0][:160]}") from exc
    missing = set(info["missing_keys"])
    buffers = {name for name, _ in head.named_buffers()}
    loaded_ptrs, new, wrong = set(), {}, []
    for key, tensor in head.state_dict().items():
        source = _base_key(head, key, base_state)
        if source is None:
            new[key] = tensor
            continue
        loaded_ptrs.add(tensor.data_ptr())
        want = base_state[source].to(_expected_dtype(head, key, base_state[source], dtype, tensor))
        if tensor.shape != want.shape or tensor.dtype != want.dtype or not torch.equal(tensor, want):
            wrong.append(f"{key} ({tensor.dtype}{', re-initialised: reported missing' if key in missing else ''})")
    where = f"{head_class.__name__} from {type(subject.model.base_model).__name__}'s checkpoint, dtype={dtype}"
    assert not wrong, f"[{subject.name}] {HEADS} ({where}): base weights changed on load: {wrong[:8]}"
    # tied to a loaded weight, or a buffer (never a checkpoint key: BART's final_logits_bias)
    new = {k: t for k, t in new.items() if t.data_ptr() not in loaded_ptrs and k not in buffers}
    unreported = sorted(k for k in new if k not in missing and not declared_not_missing(head, k))
    assert not unreported, f"[{subject.name}] {HEADS} ({where}): new parameters not reported missing: {unreported[:8]}"
    bad = [f"{k} not finite" for k, t in new.items() if t.is_floating_point() and not torch.isfinite(t).all()]
    # zero is a designed init for single vectors (ViT's mask_token, biases); the new weight matrices
    # together must not all be zero
    matrices = {k: t for k, t in new.items() if t.is_floating_point() and t.dim() >= 2}
    if matrices and not any(t.any() for t in matrices.values()):
        bad.append(f"every new weight matrix is all zero ({sorted(matrices)[:4]})")
    assert not bad, f"[{subject.name}] {HEADS} ({where}): the new head is not initialised: {bad}"


@pytest.mark.parametrize("dtype", ["float32", "float16", "bfloat16"])
def test_base_checkpoint_into_head_classes(subject, dtype):
    """A base checkpoint loads into every head class of its family: base weights kept, head initialised."""
    import transformers

    directory = saved(subject, "base")
    base_state = subject.model.base_model.state_dict()
    classes = [getattr(transformers, name) for name in head_classes(subject.model.config.model_type)
               if hasattr(transformers, name)]
    if not classes:
        pytest.skip(f"{subject.name}: transformers lists no head classes for {subject.model.config.model_type}")
    problems, refused = [], []
    for head_class in classes:  # every class is judged, then every problem reported together
        try:
            check_head_load(subject, head_class, directory, base_state, getattr(torch, dtype))
        except AssertionError as exc:
            problems.append(str(exc).split("\nassert ")[0])  # without pytest's rewritten expression
        except HeadRefused as exc:  # a clear refusal (Wav2Vec2ForCTC without vocab_size): what a user should get
            refused.append(str(exc))
    assert not problems, "\n".join(problems)
    if len(refused) == len(classes):
        pytest.skip(f"{subject.name}: every head class refuses this base config clearly: {'; '.join(refused)}")
