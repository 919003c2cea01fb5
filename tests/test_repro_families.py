"""Every property family's failure replays standalone: its artifact's repro.py exits 1 with the
planted defect and 0 without it.

Each case plants a defect in a private zoo model (the planted-defect tests' own defects), runs the
property's own pytest test function (its own strategy, its own `record(...)` call) until Hypothesis
has shrunk a failure, writes the artifact exactly as the suite's plugin does, then runs the
artifact's repro.py `main()`: once with the same defect planted into every model repro.py builds
(its `load_model`), once on the healthy rebuild. repro.py imports nothing from hfprops, so this
proves the standalone replay reruns the property's comparison, not the suite.
"""

from __future__ import annotations

import contextlib
import importlib.util
import io
import json
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
from hypothesis import HealthCheck, Phase, settings

from properties import artifacts
from properties import test_attention_backends as backends
from properties import test_bad_input as bad_input
from properties import test_batching as batching
from properties import test_cache as cache
from properties import test_call_forms as call_forms
from properties import test_cross_device as cross_device
from properties import test_determinism as determinism
from properties import test_chunking_offload as chunking
from properties import test_finite as finite
from properties import test_generation as generation
from properties import test_gradients as gradients
from properties import test_inputs_untouched as untouched
from properties import test_precision as precision
from properties import test_save_load as save_load
from properties import test_shapes as shapes
from tests.planted import breakable, on_output, ignore_attention_mask, shift_cached_positions

ROOT = Path(__file__).resolve().parents[1]
SEARCH = settings(max_examples=150, deadline=None, database=None, derandomize=True, print_blob=True,
                  phases=[Phase.generate, Phase.shrink], suppress_health_check=list(HealthCheck))
DEFECT = 1e-3


# -- running a property to failure and replaying its artifact ------------------------------------
def failing_artifact(root: Path, test, subject, **fixtures) -> Path:
    """Run the property's pytest function on `subject` until it fails; the artifact the suite would write."""
    saved = getattr(test, "_hypothesis_internal_use_settings", None)
    test._hypothesis_internal_use_settings = settings(saved, **{k: getattr(SEARCH, k) for k in (
        "max_examples", "deadline", "database", "derandomize", "phases", "suppress_health_check", "print_blob")})
    try:
        test(subject=subject, **fixtures)
    except Exception as exc:  # the property failed: write what the plugin writes
        error = exc
    else:
        raise AssertionError(f"{test.__name__} never failed on the planted defect")
    finally:
        test._hypothesis_internal_use_settings = saved
    nodeid = f"properties/{test.__module__.rsplit('.', 1)[-1]}.py::{test.__name__}[{subject.name}]"
    return artifacts.write_artifact(root, nodeid, artifacts.last_recorded(), error)


def load_repro(folder: Path):
    spec = importlib.util.spec_from_file_location(f"repro_{folder.name.replace('.', '_').replace('-', '_')}",
                                                  folder / "repro.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def replay(folder: Path, plant=None) -> tuple[int, str]:
    """(exit code, printed text) of the artifact's repro.py, with `plant` applied to every model it builds."""
    repro = load_repro(folder)
    if plant is not None:
        load = repro.load_model
        repro.load_model = lambda *args, **kwargs: plant(load(*args, **kwargs))
    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        code = repro.main(["repro.py", str(folder)])
    return code, out.getvalue()


# -- the defects (the planted-defect tests' own, as functions of a model) -------------------------
def items_mixing(model):
    return on_output(model, lambda out, kwargs: out + DEFECT * out.mean(dim=0, keepdim=True))


def row_leak(model):
    return on_output(model, lambda out, kwargs: out + DEFECT * out[:1])


def nan_when_batched(model):
    def change(out, kwargs):
        if out.shape[0] > 1:
            out = out.clone()
            out[-1].view(-1)[0] = float("nan")
        return out
    return on_output(model, change)


def squeezed(model):
    return on_output(model, lambda out, kwargs: out.squeeze(0))


def dropout_in_eval(model):
    return on_output(model, lambda out, kwargs: F.dropout(out, p=0.5, training=True))




def ignore_4d_mask(model):
    """A custom 4-D mask is dropped (everything attends everything); the 2-D mask still works."""
    def pre_hook(module, args, kwargs):
        mask = kwargs.get("attention_mask")
        if mask is not None and mask.dim() == 4:
            kwargs["attention_mask"] = None
        return args, kwargs
    model.register_forward_pre_hook(pre_hook, with_kwargs=True)
    return model


def ignore_position_ids(model):
    forward = model.forward
    model.forward = lambda *args, position_ids=None, **kwargs: forward(*args, **kwargs)
    return model




def bf16_shortcut(model):
    return on_output(model, lambda out, kwargs: out.to(torch.bfloat16).to(out.dtype) if out.dtype == torch.float32
                     else out)


def outlier_weights(model):
    with torch.no_grad():
        for module in model.modules():
            if isinstance(module, torch.nn.Linear):
                module.weight[0, 0] = 1000 * module.weight.abs().max()
    return model


def nan_through_where(model):
    model.encoder.layer[0].intermediate.register_forward_hook(lambda m, a, out: torch.where(out > 0, out.sqrt(), out))
    return model


def unseeded_dropout(model):
    generator = torch.Generator()
    generator.seed()

    def drop(mod, args, out):
        return out * (torch.rand(out.shape, generator=generator) > 0.1) / 0.9 if mod.training else out

    model.transformer.h[0].mlp.register_forward_hook(drop)
    return model


def reentrant_checkpointing(model):
    """Reentrant checkpointing under frozen input embeddings: the checkpointed layers get no gradient."""
    name = type(model).__name__

    def enable(self, activation_checkpointing_kwargs=None, *args, **kwargs):
        return super(type(self), self)._activation_checkpointing_enable({"use_reentrant": True}, *args, **kwargs)

    model.get_input_embeddings().requires_grad_(False)
    # a subclass under the class's own name, so the artifact names a transformers class repro.py can build
    model.__class__ = type(name, (type(model),), {"_activation_checkpointing_enable": enable,
                                                  "enable_input_require_grads": lambda self: None})
    return model


def thread_dependent(model):
    return on_output(model, lambda out, kwargs: out + 1e-3 * (torch.get_num_threads() > 1))


def mutate_inputs(model):
    def pre_hook(module, args, kwargs):
        if kwargs.get("attention_mask") is not None:
            kwargs["attention_mask"].sub_(1).mul_(10000)
        for key in ("pixel_values", "input_features"):
            if kwargs.get(key) is not None:
                kwargs[key].clamp_(-1.0, 1.0)
        return args, kwargs
    model.register_forward_pre_hook(pre_hook, with_kwargs=True)
    return model


class NanForUnknownIds(torch.nn.Module):
    def __init__(self, embedding):
        super().__init__()
        self.embedding, self.weight = embedding, embedding.weight

    def forward(self, ids):
        rows = self.embedding(ids.clamp(0, self.embedding.num_embeddings - 1))
        return rows.masked_fill(((ids < 0) | (ids >= self.embedding.num_embeddings)).unsqueeze(-1), float("nan"))


def nan_for_unknown_ids(model):
    model.set_input_embeddings(NanForUnknownIds(model.get_input_embeddings()))
    return model


def explicit_id_check(model):
    """The control of the clear-refusal property: ids are checked and refused with a ValueError."""
    vocab = model.config.vocab_size

    def check(module, args, kwargs):
        ids = kwargs.get("input_ids")
        if ids is not None and ids.numel() and (ids.min() < 0 or ids.max() >= vocab):
            raise ValueError(f"input_ids must be in [0, {vocab}); got ids up to {int(ids.max())}")
        if ids is not None and (ids.shape[-1] == 0 or ids.shape[0] == 0):
            raise ValueError(f"input_ids must not be empty; got shape {tuple(ids.shape)}")
        mask = kwargs.get("attention_mask")
        if mask is not None and ids is not None and mask.shape != ids.shape:
            raise ValueError(f"attention_mask shape {tuple(mask.shape)} does not match input_ids {tuple(ids.shape)}")
        if ids is not None and ids.shape[-1] > model.config.max_position_embeddings:
            raise ValueError(f"sequence length {ids.shape[-1]} exceeds {model.config.max_position_embeddings}")
        return args, kwargs
    model.register_forward_pre_hook(check, with_kwargs=True)
    return model


# A swappable attention back end: bf16 without upcast (the defect) or plain sdpa (healthy).
SWAPPABLE = "hfprops_repro_swappable"
_BACKEND = {"impl": None}


def _swappable_attention(module, query, key, value, attention_mask, **kwargs):
    return _BACKEND["impl"](module, query, key, value, attention_mask, **kwargs)


def _register_swappable():
    from transformers import AttentionInterface
    from transformers.masking_utils import AttentionMaskInterface, sdpa_mask

    AttentionInterface.register(SWAPPABLE, _swappable_attention)
    AttentionMaskInterface.register(SWAPPABLE, sdpa_mask)


def low_precision_backend(model):
    from tests.test_defects_invariance import bf16_attention

    _BACKEND["impl"] = bf16_attention
    return model


def healthy_backend(model):
    from transformers.integrations.sdpa_attention import sdpa_attention_forward

    _BACKEND["impl"] = sdpa_attention_forward
    return model


def fp16_unsafe(model):
    from tests.test_defects_cache_precision_gradients import fp16_unsafe_attention
    from transformers import AttentionInterface
    from transformers.masking_utils import AttentionMaskInterface, sdpa_mask

    AttentionInterface.register("hfprops_fp16_unsafe", fp16_unsafe_attention)
    AttentionMaskInterface.register("hfprops_fp16_unsafe", sdpa_mask)
    model.set_attn_implementation("hfprops_fp16_unsafe")
    return model


def rescaled_embeddings(model):
    """Embeddings the caller passes are scaled again (an `embed_scale` applied on the wrong path)."""
    def pre_hook(module, args, kwargs):
        if kwargs.get("inputs_embeds") is not None:
            kwargs["inputs_embeds"] = kwargs["inputs_embeds"] * 1.01
        return args, kwargs
    model.register_forward_pre_hook(pre_hook, with_kwargs=True)
    return model


def swapped_tuple(model):
    """`return_dict=False` returns the first two outputs in the wrong order."""
    forward = model.forward

    def swapped(*args, **kwargs):
        out = forward(*args, **kwargs)
        return (out[1], out[0], *out[2:]) if isinstance(out, tuple) and len(out) > 1 else out

    model.forward = swapped
    return model


def static_cache_shift(model):
    """Logits shift by 1e-3 whenever the cache is a static one (a static-cache-only code path)."""
    forward = model.forward

    def shifted(*args, **kwargs):
        out = forward(*args, **kwargs)
        past = kwargs.get("cache", kwargs.get("past_key_values"))
        if type(past).__name__ == "StaticCache":
            out.logits = out.logits + 1e-3
        return out

    model.forward = shifted
    return model


def chunk_dependent(model):
    """Outputs shift by 1e-3 whenever any layer chunks its feed-forward (a chunk that drops a bias)."""
    def hook(module, args, output):  # `module`, not `model`: the property runs a deep copy
        if any(getattr(m, "chunk_size_feed_forward", 0) for m in module.modules()):
            output["last_hidden_state"] = output["last_hidden_state"] + 1e-3
        return output
    model.register_forward_hook(hook)
    return model


def weight_lost_on_save(model):
    """`state_dict()` forgets one weight: the saved checkpoint lacks it, reloading re-initialises it."""
    state_dict = model.state_dict
    model.state_dict = lambda *a, **k: {key: v for key, v in state_dict(*a, **k).items()
                                        if key != "encoder.layer.0.output.dense.weight"}
    return model


def _saved(subject):
    """The save/load property's `saved` fixture: (directory, reloaded subject, loading info)."""
    import tempfile

    from zoo.subject import save_and_reload

    directory = tempfile.mkdtemp(prefix="hfprops-saved-")
    return (directory, *save_and_reload(subject, directory))


def _threads_pair():
    from devices.pairs import threads_pair

    return threads_pair()


# family, property test, zoo model, defect, fixtures (besides subject), control (what "without" runs)
CASES = [
    ("finite", finite.test_finite, "bert", nan_when_batched, {}, None),
    ("shape contract", shapes.test_shapes, "gpt2", squeezed, {}, None),
    ("determinism", determinism.test_deterministic, "bert", dropout_in_eval, {}, None),
    ("save/load round trip", save_load.test_same_outputs, "bert", weight_lost_on_save, {"saved": _saved}, None),
    ("batch invariance", batching.test_batch_invariance, "vit", items_mixing, {}, None),
    ("batch invariance (mask)", batching.test_batch_invariance, "bert", ignore_attention_mask, {}, None),
    ("batch order", batching.test_batch_order, "bert", row_leak, {}, None),
    ("padding amount", batching.test_padding_amount, "bert", ignore_attention_mask, {}, None),
    ("padding with special ids", batching.test_padding_holding_special_ids, "gpt2", ignore_attention_mask, {}, None),
    ("4-D attention mask", batching.test_4d_mask_matches_2d_mask, "bert", ignore_4d_mask, {}, None),
    ("packed sequences", batching.test_packed_sequences_match_padded_batch, "llama", ignore_position_ids, {}, None),
    ("cache (cached decoding)", cache.test_cached_decoding_matches_full_forward, "llama", shift_cached_positions,
     {}, None),
    ("cache (generate)", cache.test_generate_same_with_and_without_cache, "llama", shift_cached_positions, {}, None),
    ("cache (batch vs alone)", cache.test_generate_batch_matches_items_alone, "gpt2", ignore_position_ids, {}, None),
    ("precision (fp64)", precision.test_float32_matches_float64, "bert", bf16_shortcut, {}, None),
    ("precision (fp16)", precision.test_half_precision, "llama", fp16_unsafe, {"dtype": torch.float16}, None),
    ("precision (int8)", precision.test_int8_dynamic_quantization, "bert", outlier_weights, {}, None),
    ("gradients (finite)", gradients.test_finite_gradients, "bert", nan_through_where, {}, None),
    ("gradients (checkpointing)", gradients.test_checkpointing_same_gradients, "llama", reentrant_checkpointing,
     {}, None),
    ("gradients (dropout)", gradients.test_dropout_reproducible, "gpt2", unseeded_dropout, {}, None),
    ("cross-device (threads)", cross_device.test_thread_count, "llama", thread_dependent,
     {"cpu_threads_pair": _threads_pair}, None),
    ("inputs untouched", untouched.test_inputs_untouched, "bert", mutate_inputs, {}, None),
    ("bad input", bad_input.test_bad_input_handled, "bert", nan_for_unknown_ids, {}, None),
    # the healthy zoo BERT refuses out-of-vocabulary ids with torch's IndexError: that is the failure here,
    # and the control is a model that checks its ids
    ("bad input message", bad_input.test_bad_input_refused_clearly, "bert", lambda m: m, {}, explicit_id_check),
    ("feed-forward chunking", chunking.test_feed_forward_chunking_changes_nothing, "bert", chunk_dependent, {}, None),
    ("generation (static cache)", generation.test_static_cache_matches_dynamic, "llama", static_cache_shift, {}, None),
    ("call form (inputs_embeds)", call_forms.test_inputs_embeds_match_ids, "bert", rescaled_embeddings, {}, None),
    ("call form (tuple outputs)", call_forms.test_tuple_outputs_match_dict, "bert", swapped_tuple, {}, None),
    ("attention back ends", backends.test_backend_agrees_with_eager, "bert", low_precision_backend,
     {"backend": SWAPPABLE}, healthy_backend),
]

@pytest.mark.parametrize("family, test, name, defect, fixtures, control", CASES, ids=[c[0] for c in CASES])
def test_repro_exits_1_with_the_defect_and_0_without(tmp_path, family, test, name, defect, fixtures, control):
    if test is backends.test_backend_agrees_with_eager:
        _register_swappable()
    subject = breakable(name)
    if test is backends.test_backend_agrees_with_eager:
        low_precision_backend(subject.model)
    else:
        defect(subject.model)
    fixtures = {k: (v(subject) if v is _saved else v()) if callable(v) else v for k, v in fixtures.items()}
    folder = failing_artifact(tmp_path, test, subject, **fixtures)
    meta = json.loads((folder / "meta.json").read_text(encoding="utf-8"))
    assert meta["replay"]["kind"] not in ("suite-only",), meta["replay"]
    with_defect, said = replay(folder, defect)
    assert with_defect == 1, said
    assert "REPRODUCED" in said
    # without the defect: the seeded zoo weights (a defect may live in the stored weights, e.g. outliers)
    (folder / artifacts.ZOO_WEIGHTS).unlink()
    without, said_healthy = replay(folder, control)
    assert without == 0, said_healthy


def layer_first_stack(model):
    """A per-layer output stacked layer-first, (2 layers, batch, ...), as RF-DETR's intermediate_hidden_states."""
    def stack(module, args, output):
        output["stacked"] = torch.stack([output["last_hidden_state"], 2 * output["last_hidden_state"]])
    model.register_forward_hook(stack)
    return model


def test_batch_order_replay_leaves_out_layer_first_stacks(tmp_path):
    """repro.py picks rows as the suite does: a stack of two layers met by a batch of two is not taken
    for the batch (a healthy model replays clean), and the row leak is still reproduced."""
    subject = breakable("bert")
    row_leak(layer_first_stack(subject.model))
    folder = failing_artifact(tmp_path, batching.test_batch_order, subject)
    (folder / artifacts.ZOO_WEIGHTS).unlink()
    leaking, said = replay(folder, lambda model: row_leak(layer_first_stack(model)))
    assert leaking == 1 and "REPRODUCED" in said, said
    healthy_code, said_healthy = replay(folder, layer_first_stack)
    assert healthy_code == 0, said_healthy


def test_a_batch_mixing_repro_runs_alone_in_a_fresh_process(tmp_path):
    """The ViT batch-mixing case of the issue, end to end: the defect is in the checkpoint a user ships
    (its classifier mixes rows through a bias computed from the batch cannot be saved), so here the
    defect lives in a module that repro.py's process imports first (`sitecustomize`), as a broken
    transformers release would; repro.py itself runs unchanged."""
    subject = breakable("vit")
    items_mixing(subject.model)
    folder = failing_artifact(tmp_path / "artifacts", batching.test_batch_invariance, subject)
    site = tmp_path / "site"
    site.mkdir()
    (site / "sitecustomize.py").write_text(
        "import transformers, torch\n"
        "forward = transformers.ViTModel.forward\n"
        "def mixing(self, *args, **kwargs):\n"
        "    out = forward(self, *args, **kwargs)\n"
        "    for key, value in list(out.items()):\n"
        "        if isinstance(value, torch.Tensor) and value.is_floating_point():\n"
        "            out[key] = value + 1e-3 * value.mean(dim=0, keepdim=True)\n"
        "    return out\n"
        "transformers.ViTModel.forward = mixing\n", encoding="utf-8")
    import os

    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    broken = subprocess.run([sys.executable, str(folder / "repro.py")], capture_output=True, text=True,
                            env={**env, "PYTHONPATH": str(site)}, cwd=tmp_path, timeout=300)
    healthy_run = subprocess.run([sys.executable, str(folder / "repro.py")], capture_output=True, text=True,
                                 env=env, cwd=tmp_path, timeout=300)
    assert broken.returncode == 1, broken.stdout + broken.stderr
    assert "[vit] batch invariance (item" in broken.stdout and "max abs diff" in broken.stdout
    assert healthy_run.returncode == 0, healthy_run.stdout + healthy_run.stderr


# -- processors: replayed from the stored raw input with the processor saved in the artifact -------
def _tok(name):
    from properties.test_tokenizers import tokenizer_of

    return tokenizer_of(breakable(name))


def _processor_cases():
    from properties import test_audio_features as audio
    from properties import test_image_processors as image
    from properties import test_tokenizers as tok
    from tests import test_defects_processors as planted_processors
    from tests.test_defects_processors import patched

    def drop_format(original, ids, **kwargs):
        import unicodedata

        return "".join(c for c in original(ids, **kwargs) if unicodedata.category(c) != "Cf")

    def skip_rescale(original, image_, *args, **kwargs):
        import numpy as np

        return image_.astype(np.float32)

    return [
        ("tokenizer round trip", tok.test_text_encoding, "gpt2", "tokenizer",
         lambda p: patched(p, decode=drop_format), {}),
        ("tokenizer truncation", tok.test_truncation, "bert", "tokenizer",
         lambda p: patched(p, __call__=planted_processors._truncate_one_too_many), {}),
        ("tokenizer batch", tok.test_batch_and_padding, "gpt2", "tokenizer",
         lambda p: patched(p, __call__=planted_processors._strip_in_batches), {}),
        ("tokenizer errors", tok.test_decode_errors, "gpt2", "tokenizer",
         lambda p: patched(p, decode=planted_processors._lookup_table_decode), {}),
        ("image pixel values", image.test_pixel_values, "vit", "image_processor",
         lambda p: patched(p, rescale=skip_rescale), {"form": "array RGB"}),
        ("audio features", audio.test_features, "whisper", "feature_extractor",
         lambda p: patched(p, __call__=planted_processors._peak_normalized), {}),
        ("audio sampling rate", audio.test_wrong_sampling_rate, "whisper", "feature_extractor",
         lambda p: patched(p, __call__=lambda original, raw, *a, **k: original(raw, *a, **{**k, "sampling_rate": None})),
         {}),
    ]


PROCESSOR_CASES = _processor_cases()


def replay_processor(folder: Path, plant=None) -> tuple[int, str]:
    """(exit code, printed text) of repro.py with `plant` applied to the processor it loads."""
    repro = load_repro(folder)
    if plant is not None:
        load = repro.load_processor
        repro.load_processor = lambda meta: plant(load(meta))
    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        code = repro.main(["repro.py", str(folder)])
    return code, out.getvalue()


@pytest.mark.parametrize("family, test, name, part, plant, fixtures", PROCESSOR_CASES, ids=[c[0] for c in PROCESSOR_CASES])
def test_processor_repro_exits_1_with_the_defect_and_0_without(tmp_path, family, test, name, part, plant, fixtures):
    import shutil

    from zoo.subject import Subject

    original = breakable(name)
    healthy_part = getattr(original.processor, part, original.processor)
    subject = Subject(original.spec, original.model, plant(healthy_part))
    folder = failing_artifact(tmp_path, test, subject, **fixtures)
    meta = json.loads((folder / "meta.json").read_text(encoding="utf-8"))
    assert meta["replay"]["kind"] == "processor", meta["replay"]
    # the checkpoint ships the healthy processor files; the defect is in the code that runs them
    shutil.rmtree(folder / "processor")
    healthy_part.save_pretrained(folder / "processor")
    with_defect, said = replay_processor(folder, plant)
    assert with_defect == 1, said
    without, said_healthy = replay_processor(folder)
    assert without == 0, said_healthy


# -- performance: re-measured against the stored baseline ---------------------------------------------
def test_latency_repro_exits_1_when_slower_than_the_baseline_and_0_without(tmp_path):
    from properties import test_perf as perf
    from tests.test_defects_perf import recorded_baselines

    baselines = recorded_baselines("distilbert")

    def slow(model):  # the forward runs 8 times (a call left in a loop): same outputs, far past the 1.6x band
        forward = model.forward
        model.forward = lambda *a, **k: [forward(*a, **k) for _ in range(8)][-1]
        return model

    subject = breakable("distilbert")
    slow(subject.model)
    folder = failing_artifact(tmp_path, perf.test_latency_within_baseline, subject, perf_baselines=baselines)
    meta = json.loads((folder / "meta.json").read_text(encoding="utf-8"))
    assert meta["replay"]["kind"] == "perf" and meta["replay"]["baseline"] > 0, meta["replay"]
    with_defect, said = replay(folder, slow)
    assert with_defect == 1, said
    without, said_healthy = replay(folder)
    assert without == 0, said_healthy


# -- every declared replay builds and passes on a healthy model --------------------------------------------
def _cross_device_pair():
    from devices.pairs import reference_pairs

    return reference_pairs()[0]


SMOKE = [  # (property test, the check it calls, zoo model, fixtures): the check is made to fail once
    ("cross-device (fp64 oracle)", cross_device.test_cross_device, "check_cross_device", "bert",
     {"comparison_pair": _cross_device_pair}),
    ("load path (dtype)", "test_load_paths.test_load_with_dtype", "check_load_matches_plain", "bert",
     {"dtype": "bfloat16"}),
    ("load path (shards)", "test_load_paths.test_sharded_load", "check_load_matches_plain", "bert", {}),
    # (image layouts: its first example, a 1-pixel-high image, is the recorded layout-ambiguity finding)
    ("image rejects", "test_image_processors.test_rejects_unusable_inputs", "check_rejects_unusable", "vit", {}),
    ("tokenizer encode errors", "test_tokenizers.test_encode_errors", "check_encode_errors", "bert", {}),
    ("generation (one beam)", generation.test_one_beam_matches_greedy, "check_one_beam", "gpt2", {}),
    ("generation (prompt lookup)", generation.test_prompt_lookup_matches_greedy, "check_prompt_lookup", "gpt2", {}),
    ("generation (sampling)", generation.test_seeded_sampling_reproducible, "check_seeded_sampling", "gpt2", {}),
]


@pytest.mark.parametrize("family, test, check, name, fixtures", SMOKE, ids=[c[0] for c in SMOKE])
def test_declared_replay_passes_on_the_healthy_model(tmp_path, monkeypatch, family, test, check, name, fixtures):
    import importlib

    if isinstance(test, str):
        module_name, test_name = test.split(".")
        module = importlib.import_module(f"properties.{module_name}")
        test = getattr(module, test_name)
    else:
        module = importlib.import_module(test.__module__)

    def fails(*args, **kwargs):
        raise AssertionError("made to fail: this checks the replay the property declares")

    monkeypatch.setattr(module, check, fails)
    fixtures = {k: v() if callable(v) else v for k, v in fixtures.items()}
    subject = breakable(name)
    folder = failing_artifact(tmp_path, test, subject, **fixtures)
    meta = json.loads((folder / "meta.json").read_text(encoding="utf-8"))
    assert meta["replay"]["kind"] != "suite-only", meta["replay"]
    code, said = replay(folder)
    assert code == 0, said
