"""The `--model registry` catalogue: shrink rules, selection, seeding, and planted defects.

The planted-defect tests show that the generic builder and feeder cannot hide a defect: a
catalogue model with items leaking into each other, or with a NaN in its outputs, fails the same
property check functions (`check_batch_invariance`, `check_finite`) a zoo model fails, through
the same search (`tests/planted.py`); the healthy catalogue models pass the same searches.
"""

from __future__ import annotations

import copy
import math
from types import SimpleNamespace

import pytest
import torch

from properties import test_batching as batching
from properties import test_cache as cache
from properties import test_determinism as determinism
from properties import test_finite as finite
from properties import test_shapes as shapes
from strategies.batches import composed_batches
from tests.planted import expect_caught, expect_passes, on_output
from tests.test_defects_cache_precision_gradients import _shift_cached_decoder_positions
from zoo import build, catalog

# One per way of being fed: plain text (GQA causal LM), a CNN without image_size, a seq-cls head,
# bbox for a layout model, image placeholder runs for a multimodal LM.
TEXT_AND_VISION = ["mistral-causal-lm", "convnext-img-cls", "electra-seq-cls"]
SIGNATURE_FED = ["layoutlm-base", "paligemma-cond-gen"]
# Items leak 10% of the batch mean into each other: tiny seeded heads give logits of about 1e-2, so
# the zoo's 0.1% leak would sit below the fp32 tolerance's absolute floor (1e-5) on them.
MIX = 0.1


def fresh(name: str):
    """A private copy of a catalogue subject that a test may break."""
    subject = catalog.build_catalog_subject(name)
    return subject.with_model(copy.deepcopy(subject.model))


# -- planted defects -------------------------------------------------------------------------------
@pytest.mark.parametrize("name", TEXT_AND_VISION)
def test_registry_model_with_items_mixing_fails_batch_invariance(name):
    subject = fresh(name)
    on_output(subject.model, lambda out, kwargs: out + MIX * out.mean(dim=0, keepdim=True))
    expect_caught(batching.check_batch_invariance, composed_batches(subject.spec), subject,
                  says=(f"[{name}] batch invariance", "max abs diff"))


@pytest.mark.parametrize("name", TEXT_AND_VISION)
def test_healthy_registry_model_passes_batch_invariance(name):
    subject = catalog.build_catalog_subject(name)
    expect_passes(batching.check_batch_invariance, composed_batches(subject.spec), subject)


def _nan_at_first_row(out, kwargs):
    out = out.clone()
    out.view(out.shape[0], -1)[0, 0] = math.nan
    return out


@pytest.mark.parametrize("name", TEXT_AND_VISION + SIGNATURE_FED)
def test_registry_model_with_nan_fails_finite(name):
    subject = fresh(name)
    on_output(subject.model, _nan_at_first_row)
    expect_caught(finite.check_finite, catalog.inputs_strategy(subject.spec), subject,
                  says=(f"[{name}] finite", "NaN"))


@pytest.mark.parametrize("name", SIGNATURE_FED)
def test_healthy_signature_fed_model_passes_finite(name):
    subject = catalog.build_catalog_subject(name)
    expect_passes(finite.check_finite, catalog.inputs_strategy(subject.spec), subject)


def test_signature_feeding_supplies_what_the_model_needs():
    layout = catalog.build_catalog_subject("layoutlm-base").spec
    assert "bbox" in layout.extra["signature_inputs"]
    vlm = catalog.build_catalog_subject("paligemma-cond-gen").spec
    assert vlm.extra["image_tokens"] > 0 and vlm.extra["image_token_id"] < vlm.vocab_size
    inputs = catalog.smoke_inputs(vlm)
    assert (inputs["input_ids"] == vlm.extra["image_token_id"]).sum() == vlm.extra["image_tokens"] * len(
        inputs["pixel_values"])
    box = catalog.smoke_inputs(layout)["bbox"]
    assert (box[..., 0] <= box[..., 2]).all() and (box[..., 1] <= box[..., 3]).all()
    assert box.max() <= layout.extra["bbox_max"]


# A forward that takes `noise` and draws it itself when not given (ViT-MAE's random patch masking).
NOISE_FED = "vit_mae-base"


def test_noise_taking_forward_is_fed_seeded_noise():
    spec = catalog.build_catalog_subject(NOISE_FED).spec
    assert "noise" in spec.extra["signature_inputs"] and spec.extra["noise_shape"] == (16,)  # 4x4 patches
    noise = catalog.smoke_inputs(spec)["noise"]
    assert noise.shape == (len(catalog.smoke_inputs(spec)["pixel_values"]), 16)
    assert len(set(noise[0].tolist())) == 16  # no ties for the forward's argsort


def test_forward_drawing_no_noise_is_fed_none():
    """Hiera's base model takes `noise` but masks only in pre-training: it draws nothing, gets nothing."""
    assert "noise" not in catalog.build_catalog_subject("hiera-base").spec.extra["signature_inputs"]


def test_healthy_noise_fed_model_passes_determinism_and_batch_invariance():
    subject = catalog.build_catalog_subject(NOISE_FED)
    expect_passes(determinism.check_deterministic, catalog.inputs_strategy(subject.spec), subject)
    expect_passes(batching.check_batch_invariance, composed_batches(subject.spec), subject)


def _ignore_noise(model):
    """The planted defect: the model drops the noise it is given and draws its own."""
    model.register_forward_pre_hook(lambda m, args, kwargs: (args, {**kwargs, "noise": None}), with_kwargs=True)
    return model


def test_noise_fed_model_ignoring_its_noise_fails_determinism():
    subject = fresh(NOISE_FED)
    _ignore_noise(subject.model)
    expect_caught(determinism.check_deterministic, catalog.inputs_strategy(subject.spec), subject,
                  says=(f"[{NOISE_FED}] determinism",))


def test_noise_fed_model_with_items_mixing_fails_batch_invariance():
    subject = fresh(NOISE_FED)
    on_output(subject.model, lambda out, kwargs: out + MIX * out.mean(dim=0, keepdim=True))
    expect_caught(batching.check_batch_invariance, composed_batches(subject.spec), subject,
                  says=(f"[{NOISE_FED}] batch invariance", "max abs diff"))


# -- shrink rules ----------------------------------------------------------------------------------
SHRUNK_TYPES = ["llama", "mistral", "qwen2_moe", "gemma3", "bert", "t5", "whisper", "llava", "swin", "deepseek_v3"]


def _configs(config):
    yield config
    for _, sub in catalog._sub_configs(config):
        yield from _configs(sub)


@pytest.mark.parametrize("model_type", SHRUNK_TYPES)
def test_shrink_keeps_sizes_consistent(model_type):
    for cfg in _configs(catalog.tiny_config(model_type)):
        d = cfg.__dict__
        hidden = next((d[k] for k in ("hidden_size", "d_model", "n_embd", "embed_dim") if isinstance(d.get(k), int)), None)
        heads = next((d[k] for k in ("num_attention_heads", "encoder_attention_heads", "num_heads", "n_head")
                      if isinstance(d.get(k), int)), None)
        if hidden and heads:
            assert hidden % heads == 0, f"{type(cfg).__name__}: heads {heads} do not divide hidden {hidden}"
            assert hidden <= catalog.HIDDEN
        kv = d.get("num_key_value_heads")
        if isinstance(kv, int) and heads:
            assert heads % kv == 0, f"{type(cfg).__name__}: kv heads {kv} do not divide heads {heads}"
        if isinstance(d.get("head_dim"), int) and hidden and heads and "qk_rope_head_dim" not in d:
            assert d["head_dim"] == hidden // heads
        vocab = d.get("vocab_size")
        if isinstance(vocab, int):
            assert vocab <= catalog.VOCAB
            for key, value in d.items():
                ids = value if isinstance(value, (list, tuple)) else [value]
                if key.endswith(catalog.ID_SUFFIXES) and not key.startswith("num_") and all(
                        isinstance(i, int) and not isinstance(i, bool) for i in ids):
                    assert all(i < vocab for i in ids), f"{type(cfg).__name__}.{key}={value} outside vocab {vocab}"
        layers = catalog._layer_count(d)
        if layers:
            assert layers <= catalog.LAYERS
            if isinstance(d.get("layer_types"), (list, tuple)):
                assert len(d["layer_types"]) == layers


def test_hybrid_layer_schedule_keeps_each_kind():
    """A hybrid's tiny layer schedule keeps one layer of each kind (its first layers are all linear)."""
    assert catalog.tiny_config("bailing_hybrid").layer_types == ["linear_attention", "full_attention"]
    assert catalog._cut_per_layer(["a", "a", "a", "b", "c"]) == ["a", "b"]
    assert catalog._cut_per_layer([4, 4, 8]) == [4, 4]  # numbers per layer are sizes, not kinds: cut only


def test_repeated_pattern_of_layer_kinds_keeps_each_kind():
    """A pattern of kinds the config repeats over its stack (RecurrentGemma's block_types, 3 entries
    over 26 layers) keeps one layer of each kind: cut to its first two it held recurrent layers only,
    and the all-recurrent cache made every cached call raise in get_mask_sizes."""
    config = catalog.tiny_config("recurrent_gemma")
    assert set(config.layers_block_type) == {"linear_attention", "sliding_attention"}
    assert catalog._shrink_value("block_types", ["r", "r", "a"], 26) == ["r", "a"]
    # not a pattern: distinct names (one per stage), numbers, or a list no longer than the tiny stack
    assert catalog._shrink_value("out_features", ["s1", "s2", "s3"], 26) == ["s1", "s2", "s3"]
    assert catalog._shrink_value("strides", [2, 2, 1], 26) == [2, 2, 1]
    assert catalog._shrink_value("kinds", ["r", "r"], 26) == ["r", "r"]


def test_vanishing_init_std_is_raised_so_the_tower_sees_its_input():
    """A config whose init std vanishes (BLIP's vision tower defaults to 1e-10) is built with a usable
    one: at 1e-10 every image gave the same ~0 embedding (norm 9.3e-6, NaN logits in fp16 once its norm
    underflowed) and nothing on the image path was tested. Ordinary stds are left alone."""
    assert catalog.tiny_config("blip").vision_config.initializer_range == catalog.INIT_STD
    assert catalog._shrink_value("initializer_range", 1e-10, 2) == catalog.INIT_STD
    assert catalog._shrink_value("vision_initializer_range", 1e-10, 2) == catalog.INIT_STD
    for kept in (0.02, 1e-3, 0.0):
        assert catalog._shrink_value("initializer_range", kept, 2) == kept
    model = catalog.build_catalog_subject("blip-base").model
    ids, mask = torch.tensor([[0]]), torch.tensor([[1]])
    with torch.no_grad():
        logits = [model(input_ids=ids, attention_mask=mask, pixel_values=torch.full((1, 3, 32, 32), v)).logits_per_image
                  for v in (0.0, 0.7)]
    assert (logits[0] - logits[1]).abs().item() > 1e-3  # the image reaches the logits


def _special_ids(config, prefix=""):
    ids = {prefix + k: v for k, v in config.__dict__.items() if catalog._id_values(k, v)}
    for key, sub in catalog._sub_configs(config):
        ids.update(_special_ids(sub, f"{prefix}{key}."))
    return ids


@pytest.mark.parametrize("model_type", ["hy_v4_vl", "lfm3_vl", "mllama"])
def test_special_ids_of_sub_configs_stay_distinct(model_type):
    """The image token of a multimodal config and the pad id of its text config are remapped
    together: they stay inside the tiny vocab and never become the same id."""
    default, tiny = _special_ids(catalog.default_config(model_type)), _special_ids(catalog.tiny_config(model_type))
    for a in tiny:
        for b in tiny:
            if a < b and catalog._is_int(tiny[a]) and catalog._is_int(tiny[b]):
                assert (tiny[a] == tiny[b]) == (default[a] == default[b]), (a, b, tiny)


def test_a_list_of_special_ids_stays_inside_the_vocab():
    """Ovis2's visual_indicator_token_ids (151666..151670 by default) move inside the tiny vocab, distinct from
    its image token: left outside, its inputs_embeds path looks each one up in the text embedding (IndexError)."""
    assert catalog._id_values("visual_indicator_token_ids", (5, 6)) == [5, 6]
    assert catalog._id_values("local_layer_ids", [0, 1]) == []  # layer indices, not token ids
    config = catalog.tiny_config("ovis2")
    indicators = list(config.visual_indicator_token_ids)
    assert max(indicators) < config.text_config.vocab_size
    assert len(set(indicators)) == 5 and config.image_token_id not in indicators


@pytest.mark.parametrize("model_type", ["encoder-decoder", "vision-encoder-decoder", "speech-encoder-decoder"])
def test_composite_encoder_decoder_gets_a_decoder(model_type):
    """As `from_encoder_decoder_configs` makes it: the decoder is causal and attends to the encoder."""
    decoder = catalog.tiny_config(model_type).decoder
    assert decoder.is_decoder and decoder.add_cross_attention


def test_nemotron_h_mamba_mixer_is_tiny():
    """NemotronH names its Mamba2 head count `mamba_num_heads`: it is shrunk like the other head counts, with
    its default n_groups still dividing it."""
    config = catalog.tiny_config("nemotron_h")
    assert config.mamba_num_heads == 8 and config.mamba_num_heads % config.n_groups == 0


def test_longformer_window_fits_the_position_table():
    """Longformer pads every input to a multiple of attention_window: a window beyond the tiny position table
    (512 of 64 by default) made every inputs_embeds call index past it."""
    config = catalog.tiny_config("longformer")
    assert config.attention_window == 16 < config.max_position_embeddings
    assert catalog._shrink_value("attention_window", [512, 512], None) == [16, 16]


def test_gqa_keeps_grouping():
    assert catalog.tiny_config("mistral").num_key_value_heads == 2  # 8 of 32 in the default: grouped
    assert catalog.tiny_config("llama").num_key_value_heads == 4  # equal to heads by default: not grouped


def test_same_weights_in_every_build():
    first, second = catalog._build("mistral-causal-lm"), catalog._build("mistral-causal-lm")
    for (name, a), (_, b) in zip(first.state_dict().items(), second.state_dict().items()):
        assert torch.equal(a, b), name
    assert catalog.seed_for("mistral") == catalog.seed_for("mistral") != catalog.seed_for("llama")


# -- selection ---------------------------------------------------------------------------------------
def test_glob_selects_model_types_with_their_heads():
    names = [ref.name for ref in catalog.expand_registry_arg("registry:llama*")]
    assert {"llama-base", "llama-causal-lm", "llama-seq-cls"} <= set(names)
    assert all(catalog.split_id(n)[0].startswith("llama") for n in names)


def test_modality_and_variant_selection():
    vision = catalog.expand_registry_arg("registry:vision@base")
    assert vision and all(catalog.entries()[r.model_type].modality == "vision" and r.variant == "base" for r in vision)
    every = catalog.expand_registry_arg("registry@base")
    assert len(every) >= 450 and len({r.model_type for r in every}) == len(every)


def test_a_large_selection_without_a_named_profile_runs_the_sweep_profile():
    """`pytest properties/ --model registry` as the README writes it: 100 examples per test over ~1,100
    ids would take days, so a selection past SWEEP_ABOVE models takes `sweep` unless a profile is named."""
    import os
    import subprocess
    import sys
    from pathlib import Path

    root = Path(__file__).resolve().parents[1]
    env = {k: v for k, v in os.environ.items() if k not in ("HYPOTHESIS_PROFILE", "CI")}
    run = subprocess.run([sys.executable, "-m", "pytest", "properties/test_finite.py", "--model", "registry:vision@base",
                          "--collect-only", "-p", "no:cacheprovider"], cwd=root, env=env, capture_output=True,
                         text=True, timeout=300)
    header = next(line for line in run.stdout.splitlines() if line.startswith("hfprops: profile="))
    count = len(catalog.expand_registry_arg("registry:vision@base"))
    assert count > 50
    assert header.startswith(f"hfprops: profile=sweep (chosen for {count} models; --hypothesis-profile overrides)"), header


@pytest.mark.parametrize("arg", ["registry:no_such_model*", "registry@no-such-head", "registryx"])
def test_bad_registry_arg_is_one_clear_error(arg):
    from zoo.checkpoints import ModelArgError

    with pytest.raises(ModelArgError, match=r"^--model registry"):
        catalog.resolve_model_args([arg])


def test_registry_args_mix_with_zoo_names():
    refs = catalog.resolve_model_args(["bert", "registry:gpt2"])
    assert [r.name for r in refs][:1] == ["bert"] and refs[0].is_zoo
    assert all(catalog.is_catalog_ref(r) for r in refs[1:]) and len(refs) > 1


# -- a broken build is one clear skip ----------------------------------------------------------------
class _Item:
    """The parts of a pytest item that `setup_catalog_item` reads."""

    def __init__(self, name, needs=()):
        self.callspec = type("CallSpec", (), {"params": {"subject": name}})()
        self._needs = [pytest.mark.needs(*needs).mark] if needs else []
        self.config = None

    def iter_markers(self, name):
        return iter(self._needs if name == "needs" else [])


def _registry(*names):
    from zoo.registry import SubjectRegistry

    return SubjectRegistry([ref for n in names for ref in catalog.expand_registry_arg(f"registry:{catalog.split_id(n)[0]}")
                            if ref.name == n])


def test_model_needing_a_missing_dependency_is_skipped_with_the_reason():
    registry = _registry("conditional_detr-base")
    with pytest.raises(pytest.skip.Exception, match=r"not built \(build\): missing optional dependency: timm"):
        catalog.setup_catalog_item(_Item("conditional_detr-base"), registry)


def test_property_that_does_not_apply_is_skipped_with_what_is_missing():
    registry = _registry("mistral-base")
    with pytest.raises(pytest.skip.Exception, match=r"does not apply: mistral-base lacks causal"):
        catalog.setup_catalog_item(_Item("mistral-base", needs=("causal",)), registry)
    catalog.setup_catalog_item(_Item("mistral-base", needs=("text",)), registry)  # applies: no skip


def test_primary_is_one_id_per_type_preferring_an_lm_head():
    refs = catalog.expand_registry_arg("registry:llama*@primary")
    assert len(refs) == len({r.model_type for r in refs})
    assert "llama-causal-lm" in [r.name for r in refs]


# -- the contract's general rules cannot hide a wrong shape ------------------------------------------
def _on_hidden_states(model, change):
    """Plant a defect in every layer's hidden state (the tuple `on_output` leaves alone)."""

    def hook(module, args, kwargs, output):
        if getattr(output, "hidden_states", None) is not None:
            output["hidden_states"] = tuple(change(h) for h in output.hidden_states)
        return output

    model.register_forward_hook(hook, with_kwargs=True)


def test_vision_language_model_losing_its_hidden_axis_is_caught():
    """A VLM takes text and images but is no dual encoder (its output class has no logits_per_image):
    it keeps the text's token stream, so a last state that loses a channel fails the contract."""
    subject = fresh("paligemma-base")
    assert not subject.spec.dual_encoder
    on_output(subject.model, lambda out, kwargs: out[..., :-1] if out.dim() == 3 else out)
    expect_caught(shapes.check_shapes, catalog.inputs_strategy(subject.spec), subject,
                  says=("[paligemma-base] shape contract", "last_hidden_state: got", "31), expected"))


def test_hyper_connection_states_losing_streams_are_caught():
    """DeepSeek-V4's layers carry hc_mult residual streams: (batch, tokens, 4, hidden) is allowed,
    a state that keeps 2 of the 4 streams is not."""
    subject = fresh("deepseek_v4-base")
    assert subject.spec.extra["contract"]["residual_streams"] == 4
    _on_hidden_states(subject.model, lambda h: h[..., :2, :] if h.dim() == 4 else h)
    expect_caught(shapes.check_shapes, catalog.inputs_strategy(subject.spec), subject,
                  says=("[deepseek_v4-base] shape contract", "hidden_states.0: got (1, 1, 2, 32)"))


def test_windowed_vision_map_with_the_wrong_grid_is_caught():
    """SAM's tower returns its patch grid as maps ((batch, rows, cols, hidden) states, a
    (batch, hidden, rows, cols) neck): a map that loses a row of the grid fails the contract."""
    subject = fresh("sam_vision_model-base")
    on_output(subject.model, lambda out, kwargs: out[..., :-1, :] if out.dim() == 4 else out)
    expect_caught(shapes.check_shapes, catalog.inputs_strategy(subject.spec), subject,
                  says=("[sam_vision_model-base] shape contract", "last_hidden_state: got (1, 32, 3, 4)"))


@pytest.mark.parametrize("name", ["paligemma-base", "deepseek_v4-base", "sam_vision_model-base"])
def test_healthy_models_of_the_general_rules_keep_the_contract(name):
    subject = catalog.build_catalog_subject(name)
    expect_passes(shapes.check_shapes, catalog.inputs_strategy(subject.spec), subject)


# -- an image encoder-decoder whose forward still lists input_ids (PP-FormulaNet) ----------------------
def _config(**fields):
    return SimpleNamespace(vision_config=object(), text_config=object(), **fields)


def test_an_image_encoder_decoders_fallback_ids_are_no_text_input():
    """`input_ids` beside `decoder_input_ids` in an encoder-decoder whose main input is pixels only stand in
    for the decoder's ids (generate moves them there): the spec reads its text as the decoder's. Models whose
    main input is ids (Florence-2) and decoder-only vision-language models keep reading text."""
    ids_and_decoder = ("pixel_values", "input_ids", "decoder_input_ids")
    assert build._main_input_capabilities("pixel_values", _config(is_encoder_decoder=True), ids_and_decoder) == {"vision"}
    assert build._main_input_capabilities("input_ids", _config(is_encoder_decoder=True), ids_and_decoder) >= {"text"}
    assert build._main_input_capabilities("pixel_values", _config(is_encoder_decoder=False),
                                          ("pixel_values", "input_ids")) == {"text", "vision"}
    spec = catalog.build_catalog_subject("pp_formulanet-cond-gen").spec
    assert spec.has("vision", "encoder_decoder", "cache") and not spec.has("text")
    assert "input_ids" not in catalog.smoke_inputs(spec) and "decoder_input_ids" in catalog.smoke_inputs(spec)


def test_image_encoder_decoder_generation_still_catches_a_cache_defect():
    """Fed pixels and decoder ids only, greedy generate passes on the healthy model and still fails one whose
    learned decoder positions look one ahead on cached calls."""
    subject = catalog.build_catalog_subject("pp_formulanet-cond-gen")
    expect_passes(lambda s, case: cache.check_generate_cache(s, *case), cache.prompts(subject.spec), subject)
    broken = fresh("pp_formulanet-cond-gen")
    _shift_cached_decoder_positions(broken.model)
    expect_caught(lambda s, case: cache.check_generate_cache(s, *case), cache.prompts(broken.spec), broken,
                  says=("[pp_formulanet-cond-gen] cache equivalence (generate with vs without cache",))
