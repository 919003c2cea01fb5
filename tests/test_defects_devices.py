"""Planted defects for the cross-device property, and the device plumbing it relies on.

A model whose output depends on the thread count, on its dtype or on its device must fail the
cross-device check through the property's own strategy; healthy models pass the same search.
Discovery, `--device`, the skip reasons and the release of device copies are checked here too.
"""

import subprocess
import sys
from pathlib import Path

import pytest
import torch
from hypothesis import find, settings

from devices import placement, plugin
from devices.discovery import (
    Device,
    DeviceArgError,
    available_devices,
    parse_device_arg,
    select_devices,
)
from devices.pairs import accelerator_pairs, comparison_pairs, reference_pairs, threads_pair
from properties.test_cross_device import check_cross_device
from strategies.batches import model_inputs
from tests.planted import CONTROL, breakable, expect_caught, expect_passes, failure_of, healthy, on_output
from zoo.tiny import ZOO_NAMES

ROOT = Path(__file__).resolve().parents[1]

# One model per modality (text, causal text, vision, audio, multimodal): the defects are planted in
# every output, so more models only cost time (one vs several threads is slow on a busy machine).
MODELS = ["bert", "gpt2", "vit", "whisper", "clip"]
ORACLE = reference_pairs()[0]
THREADS = threads_pair()
ACCELERATOR_PAIRS = [pair for device in available_devices() if device.is_accelerator for pair in accelerator_pairs(device)]
NO_ACCELERATOR = pytest.param(None, marks=pytest.mark.skip(reason="no accelerator present: this defect needs one to show"))


@pytest.mark.parametrize("name", ["llama"])  # one model: several threads are slow on a busy machine
def test_cross_device_catches_thread_dependent_output(name):
    """A kernel whose result shifts by 1e-3 as soon as it runs on more than one thread."""
    subject = breakable(name)
    on_output(subject.model, lambda out, kwargs: out + 1e-3 * (torch.get_num_threads() > 1))
    failure = expect_caught(check_cross_device, model_inputs(subject.spec), subject, THREADS,
                            says=(f"[{name}] cross-device (cpu fp32 {THREADS.candidate.threads} threads vs cpu fp32 "
                                  "1 thread)", "differs beyond rtol=1e-05, atol=1e-05", "max abs diff 0.001"))
    assert max(v.shape[0] for v in failure.example.values()) == 1  # shrunk: any input shows it


@pytest.mark.parametrize("name", MODELS)
def test_cross_device_catches_dtype_dependent_shortcut(name):
    """A 'fast path' that silently rounds fp32 activations through bfloat16 (float64 is left alone)."""
    subject = breakable(name)

    def bf16_shortcut(out, kwargs):
        return out.to(torch.bfloat16).to(out.dtype) if out.dtype == torch.float32 else out

    on_output(subject.model, bf16_shortcut)
    expect_caught(check_cross_device, model_inputs(subject.spec), subject, ORACLE,
                  says=(f"[{name}] cross-device (cpu fp32 vs cpu fp64)", "max abs diff", "outside"))


@pytest.mark.parametrize("pair", [p for p in ACCELERATOR_PAIRS if p.kind == "device"] or [NO_ACCELERATOR],
                         ids=lambda p: getattr(p, "id", p))
def test_cross_device_catches_device_dependent_output(pair):
    """A kernel that is off by 5% of the output's magnitude on accelerators only."""
    subject = breakable("bert")
    on_output(subject.model, lambda out, kwargs: out + 0.05 * out.abs().max() * (out.device.type != "cpu"))
    expect_caught(check_cross_device, model_inputs(subject.spec), subject, pair,
                  says=(f"[bert] cross-device ({pair.candidate} vs cpu fp32)",))


@pytest.mark.parametrize("pair", [p for p in ACCELERATOR_PAIRS if p.kind == "exact"] or [NO_ACCELERATOR],
                         ids=lambda p: getattr(p, "id", p))
def test_deterministic_run_catches_nondeterminism_on_the_accelerator(pair):
    """A kernel that adds a little noise on the GPU (as atomics-based reductions can) breaks bit-reproducibility."""
    subject = breakable("bert")
    on_output(subject.model, lambda out, kwargs: out + 1e-3 * torch.rand_like(out) * (out.device.type != "cpu"))
    expect_caught(check_cross_device, model_inputs(subject.spec), subject, pair,
                  says=("[bert] cross-device", "rtol=0, atol=0"))


def test_cross_device_passes_healthy_models():
    for name in ZOO_NAMES:
        for pair in [ORACLE, *ACCELERATOR_PAIRS]:
            expect_passes(check_cross_device, model_inputs(healthy(name).spec), healthy(name), pair)
        # the same search, shorter: several threads are slow on a busy machine
        found = failure_of(check_cross_device, model_inputs(healthy(name).spec), healthy(name), THREADS,
                           search=settings(CONTROL, max_examples=5))
        assert found is None, found.message


# The CPU standing in for a CUDA device: the accelerator pairs' code path (half copies, deterministic
# mode, the cpu/cuda policy rows) runs end to end on machines without one.
STAND_IN = Device("cpu", "cuda", "the CPU standing in for a CUDA device", (torch.float16, torch.bfloat16))


@pytest.mark.parametrize("pair", accelerator_pairs(STAND_IN), ids=lambda p: p.id)
def test_accelerator_pairs_run_end_to_end_with_a_stand_in(pair):
    for name in ["bert", "clip"]:
        found = failure_of(check_cross_device, model_inputs(healthy(name).spec), healthy(name), pair,
                           search=settings(CONTROL, max_examples=10))
        assert found is None, found.message
    assert placement.cached_copies() in ([], [("cpu", pair.candidate.dtype)])


# -- the shared subject stays where it is; copies are released -----------------------------------------
def smallest_inputs(subject):
    return find(model_inputs(subject.spec), lambda inputs: True)


def test_checks_leave_the_shared_subject_alone_and_copies_are_released():
    subject = healthy("gpt2")
    before = {k: v.clone() for k, v in subject.model.state_dict().items()}
    check_cross_device(subject, ORACLE, smallest_inputs(subject))
    assert (subject.device, subject.dtype) == (torch.device("cpu"), torch.float32)
    assert all(torch.equal(before[k], v) for k, v in subject.model.state_dict().items())
    assert placement.cached_copies() == [("cpu", torch.float64)]
    check_cross_device(healthy("bert"), ORACLE, smallest_inputs(healthy("bert")))
    assert placement.cached_copies() == [("cpu", torch.float64)]  # gpt2's copy went with the switch
    placement.release_copies()
    assert placement.cached_copies() == []


def test_thread_count_is_restored_even_when_the_run_fails():
    before = torch.get_num_threads()
    with pytest.raises(RuntimeError):
        with placement.num_threads(before + 1):
            assert torch.get_num_threads() == before + 1
            raise RuntimeError("boom")
    assert torch.get_num_threads() == before


def test_deterministic_mode_is_restored():
    before = torch.are_deterministic_algorithms_enabled()
    with placement.deterministic_algorithms():
        assert torch.are_deterministic_algorithms_enabled()
    assert torch.are_deterministic_algorithms_enabled() == before


# -- discovery and selection ------------------------------------------------------------------------
CUDA0 = Device("cuda:0", "cuda", "NVIDIA H100, compute capability 9.0", (torch.float16, torch.bfloat16))
CUDA1 = Device("cuda:1", "cuda", "NVIDIA H100, compute capability 9.0", (torch.float16, torch.bfloat16))
CPU = Device("cpu", "cpu", "1 torch thread")


def test_discovery_lists_the_cpu_first():
    devices = available_devices()
    assert devices[0].kind == "cpu" and devices[0].name == "cpu"
    assert sum(d.kind in ("cuda", "rocm") for d in devices) == torch.cuda.device_count()


@pytest.mark.parametrize("arg, parsed", [("cpu", ("cpu", None)), ("CUDA:1", ("cuda", 1)), ("rocm", ("rocm", None))])
def test_device_arg_parsing(arg, parsed):
    assert parse_device_arg(arg) == parsed


@pytest.mark.parametrize("arg", ["gpu", "cuda:x", "cpu:0", "tpu"])
def test_bad_device_arg_names_the_choices(arg):
    with pytest.raises(DeviceArgError, match="expected one of cpu, cuda, rocm, mps, xpu"):
        parse_device_arg(arg)


def test_selection_defaults_to_every_present_device_and_reports_absent_ones():
    present = [CPU, CUDA0, CUDA1]
    assert select_devices([], present) == (present, [])
    assert select_devices(["cuda:1"], present) == ([CUDA1], [])
    selected, missing = select_devices(["cpu", "mps", "cuda:3"], present)
    assert selected == [CPU]
    assert "--device mps requested but absent: no mps device" in missing[0]
    assert "no cuda:3: present cuda devices are cuda:0, cuda:1" in missing[1]


def test_accelerators_get_fp32_half_and_deterministic_pairs_with_their_mark():
    pairs = comparison_pairs([CPU, CUDA0])
    assert [p.id for p in pairs] == [
        "cpu-fp32-vs-fp64", "cuda:0-fp32", "cuda:0-fp16", "cuda:0-bf16", "cuda:0-deterministic"
    ]
    assert all(p.device_kinds == ("cuda",) for p in pairs[1:])
    deterministic = pairs[-1]
    assert deterministic.reference == deterministic.candidate and deterministic.candidate.deterministic
    assert deterministic.tolerance.rtol == deterministic.tolerance.atol == 0
    for pair in pairs:  # every pair has a policy row
        assert pair.tolerance.why


# -- the command line -------------------------------------------------------------------------------
def run_pytest(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "pytest", "properties/test_cross_device.py", "--model", "bert", "-rs", *args],
        cwd=ROOT, capture_output=True, text=True, timeout=240,
    )


def test_header_lists_the_devices_and_a_missing_one_is_a_skip_with_reason():
    if torch.cuda.is_available():
        pytest.skip("this machine has CUDA: the absent-device path needs a machine without it")
    result = run_pytest("--device", "cuda", "--hypothesis-profile=ci")
    output = result.stdout + result.stderr
    assert result.returncode == 0, output
    assert "hfprops: devices present: cpu (" in output and "hfprops: devices tested: none" in output
    assert "--device cuda requested but absent: no cuda device: torch.cuda.is_available() is False" in output
    assert "passed" not in output.splitlines()[-1]  # nothing ran: the skips are not coverage


def test_bad_device_is_one_usage_error():
    result = run_pytest("--device", "gpu", "--collect-only", "-q")
    output = result.stdout + result.stderr
    assert result.returncode == 4 and "Traceback" not in output, output
    assert [line for line in output.splitlines() if line.startswith("ERROR:")] == [
        "ERROR: --device gpu: expected one of cpu, cuda, rocm, mps, xpu, optionally with an index (cuda:1, xpu:0)"
    ]


class FakeConfig:
    """What the plugin reads from pytest's config: the stash and the `--device` option."""

    def __init__(self, selected, missing=(), device_args=()):
        self.stash = {plugin.SELECTED: list(selected), plugin.MISSING: list(missing)}
        self.device_args = list(device_args)

    def getoption(self, name):
        assert name == "device"
        return self.device_args


def marks_of(param) -> set[str]:
    return {mark.name for mark in param.marks}


def test_accelerator_runs_carry_their_device_mark():
    params = plugin._pair_params(FakeConfig([CPU, CUDA0]))
    assert [(p.id, marks_of(p)) for p in params] == [
        ("cpu-fp32-vs-fp64", set()), ("cuda:0-fp32", {"cuda"}), ("cuda:0-fp16", {"cuda"}),
        ("cuda:0-bf16", {"cuda"}), ("cuda:0-deterministic", {"cuda"}),
    ]
    groups = plugin._group_params(FakeConfig([CPU, CUDA0, CUDA1]))
    assert [(p.id, marks_of(p), [d.name for d in p.values[0]]) for p in groups] == [
        ("cudax2", {"cuda"}, ["cuda:0", "cuda:1"])
    ]


def test_missing_accelerators_are_skips_with_reasons_not_passes():
    params = plugin._pair_params(FakeConfig([CPU]))
    assert [p.id for p in params] == ["cpu-fp32-vs-fp64", "accelerators"]
    (skip,) = params[-1].marks
    assert skip.name == "skip" and "no accelerator present" in skip.kwargs["reason"]
    (single,) = plugin._group_params(FakeConfig([CPU, CUDA0]))
    assert "needs two or more accelerators of one kind" in single.marks[0].kwargs["reason"]
