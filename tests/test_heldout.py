"""The held-out builder builds every row, offline and reproducibly, and each checkpoint loads back."""

from __future__ import annotations

import hashlib
import json

import pytest

from tests import heldout

from zoo.tiny import ZOO

ZOO_CLASSES = {row.model_class for row in ZOO.values()}


@pytest.fixture(scope="module")
def built(tmp_path_factory):
    out = tmp_path_factory.mktemp("heldout")
    return {path.name: path for path in heldout.build_all(out)}


def test_table_is_large_distinct_and_spans_the_kinds():
    rows = heldout.rows()
    assert len(rows) >= 28
    assert len({r.name for r in rows}) == len(rows)
    assert len({r.seed for r in rows}) == len(rows)
    classes = " ".join(r.model_class for r in rows)
    for needed in ("ForCausalLM", "ForSequenceClassification", "ForTokenClassification", "ForQuestionAnswering",
                   "ForMaskedLM", "ForConditionalGeneration", "ForImageClassification", "ForCTC", "Wav2Vec2Model",
                   "ConvNextModel", "Dinov2WithRegisters", "WithTeacher", "DebertaV2", "Electra", "Albert",
                   "XLMRoberta"):
        assert needed in classes, needed
    assert any(r.tokenizer or r.processor for r in rows) and any(not (r.tokenizer or r.processor) for r in rows)


def test_every_row_builds_and_loads(built):
    import transformers

    assert set(built) == {r.name for r in heldout.rows()}
    for row in heldout.rows():
        path = built[row.name]
        config = json.loads((path / "config.json").read_text())
        assert row.model_class not in ZOO_CLASSES, row.name  # heads on zoo bases are new classes
        assert config["architectures"] == [row.model_class]
        assert not any(p.suffix == ".bin" for p in path.iterdir())
        model = getattr(transformers, row.model_class).from_pretrained(
            path, local_files_only=True, use_safetensors=True
        )
        assert type(model).__name__ == row.model_class
        assert sum(p.numel() for p in model.parameters()) < 500_000, row.name  # tiny, like the testers


def test_shipped_processors_load_and_the_others_ship_none(built):
    from transformers import AutoFeatureExtractor, AutoImageProcessor, AutoTokenizer

    for row in heldout.rows():
        path = built[row.name]
        files = {p.name for p in path.iterdir()}
        if row.tokenizer:
            tok = AutoTokenizer.from_pretrained(path, local_files_only=True)
            config = json.loads((path / "config.json").read_text())
            assert len(tok) == config["vocab_size"], row.name
            assert tok.model_max_length == row.max_length
            if config.get("pad_token_id") is not None:
                assert tok.pad_token_id == config["pad_token_id"], row.name
        elif row.processor and row.processor[0] == "image":
            assert type(AutoImageProcessor.from_pretrained(path, local_files_only=True)).__name__ == row.processor[1]
        elif row.processor:
            AutoFeatureExtractor.from_pretrained(path, local_files_only=True)
        else:
            assert files - {"generation_config.json"} == {"config.json", "model.safetensors"}, (row.name, files)


def test_builds_are_bit_identical_across_builds(built, tmp_path):
    again = heldout.build_all(tmp_path, only=["qwen2-causal-gqa", "wav2vec2-ctc", "convnext-imgcls"])

    def digest(path):
        return {p.name: hashlib.sha256(p.read_bytes()).hexdigest() for p in sorted(path.iterdir())}

    for path in again:
        assert digest(path) == digest(built[path.name]), path.name


def test_unknown_row_is_refused(tmp_path):
    with pytest.raises(ValueError, match="unknown held-out rows"):
        heldout.build_all(tmp_path, only=["no-such-row"])


# --- the sweep's parsing (tests/heldout_sweep.py) ------------------------------------------------

GROUP_TEXT = """ExceptionGroup: Hypothesis found 2 distinct failures. (2 sub-exceptions)
    +---------------- 1 ----------------
    | Traceback (most recent call last):
    |   File "/x/properties/test_gradients.py", line 85, in test_dropout
    |     check(subject, inputs)
    |   File "/x/.venv/lib/python3.11/site-packages/devices/tolerance.py", line 261, in assert_outputs_close
    |     raise AssertionError(message)
    | AssertionError: [m] gradients: output 'x' differs beyond rtol=0, atol=0
    | Draw 1 (inputs): {'input_values': array([[0.]])}
    +---------------- 2 ----------------
    | Traceback (most recent call last):
    |   File "/x/.venv/lib/python3.11/site-packages/transformers/models/hubert/modeling_hubert.py", line 669, in f
    |     raise ValueError(
    | ValueError: `mask_length` has to be smaller than `sequence_length`
    +------------------------------------
"""


def test_sweep_parses_summary_counts_and_exception_groups():
    from tests import heldout_sweep as sweep

    line, counts = sweep._counts_from_summary("x\n==== 2 failed, 36 passed, 18 skipped, 2 xfailed, 1 error in 32.79s ====\n")
    assert counts == {"failed": 2, "passed": 36, "skipped": 18, "xfailed": 2, "errors": 1}
    assert line.startswith("2 failed")
    subs = sweep._sub_failures(GROUP_TEXT)
    assert [s["first_line"].split(":")[0] for s in subs] == ["AssertionError", "ValueError"]
    assert subs[1]["raised_at"] == "transformers/models/hubert/modeling_hubert.py:669 in f"
    outcome = sweep.Outcome("m", "HubertModel", collected=3, passed=1, failed=2,
                            failures=[{"test": "t", "kind": "failure", "first_line": "boom", "sub": subs}])
    table = sweep.markdown([outcome])
    assert "| m | HubertModel | 3 | 1 | 2 | 0 | 0 | 0 | 0 |" in table and "boom" in table and "mask_length" in table
