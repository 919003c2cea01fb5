"""pytest hooks for devices (loaded by conftest.py through `pytest_plugins`).

- `--device` (repeatable: cpu, cuda, cuda:1, rocm, mps, xpu) chooses the devices to test; by
  default every device present. The pytest header lists what is present and what is tested.
- Tests that take the `comparison_pair` fixture run once per comparison pair of the selected devices
  (`devices.pairs`), `cpu_threads_pair` once when the CPU is selected, `accelerator_group` once per
  kind with two or more accelerators. Each parameter carries the mark of its device kind
  (`cuda`, `rocm`, `mps`, `xpu`), so `-m cuda` selects the CUDA runs.
- A requested device that is absent, or a missing accelerator, shows as a skip with the reason.
- Converted model copies are dropped, with the accelerator memory they held, after every test.
"""

from __future__ import annotations

import os

import pytest

from devices.discovery import (
    ACCELERATOR_KINDS,
    Device,
    DeviceArgError,
    absence_reason,
    available_devices,
    select_devices,
)
from devices.pairs import comparison_pairs, threads_pair
from devices.placement import CUBLAS_WORKSPACE, release_copies

PRESENT = pytest.StashKey[list]()
SELECTED = pytest.StashKey[list]()
MISSING = pytest.StashKey[list]()


def pytest_addoption(parser):
    group = parser.getgroup("hfprops-devices", "hfprops: devices")
    group.addoption(
        "--device",
        action="append",
        default=[],
        metavar="DEVICE",
        help="device to test (repeatable): cpu, cuda, cuda:N, rocm, mps, xpu. Default: every device present.",
    )


def pytest_configure(config):
    present = available_devices()
    try:
        selected, missing = select_devices(config.getoption("device"), present)
    except DeviceArgError as exc:
        raise pytest.UsageError(str(exc)) from None
    if any(d.kind in ("cuda", "rocm") for d in selected):
        # cuBLAS reads this once, before its first use: deterministic runs need it set up front.
        os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", CUBLAS_WORKSPACE)
    config.stash[PRESENT], config.stash[SELECTED], config.stash[MISSING] = present, selected, missing


def pytest_report_header(config):
    present = config.stash.get(PRESENT, [])
    selected = config.stash.get(SELECTED, [])
    lines = [
        "hfprops: devices present: " + "; ".join(map(str, present)),
        "hfprops: devices tested: " + (", ".join(d.name for d in selected) or "none"),
    ]
    lines += [f"hfprops: {reason}" for reason in config.stash.get(MISSING, [])]
    return lines


def _skip(reason: str, id: str):
    return pytest.param(None, marks=pytest.mark.skip(reason=reason), id=id)


def _no_accelerator_reason() -> str:
    return "no accelerator present (" + "; ".join(absence_reason(k) for k in ("cuda", "mps", "xpu")) + ")"


def _pair_params(config) -> list:
    selected, missing = config.stash[SELECTED], config.stash[MISSING]
    params = [
        pytest.param(pair, marks=[getattr(pytest.mark, kind) for kind in pair.device_kinds], id=pair.id)
        for pair in comparison_pairs(selected)
    ]
    params += [_skip(reason, id=f"absent-{i}") for i, reason in enumerate(missing)]
    if not config.getoption("device") and not any(d.is_accelerator for d in selected):
        # Not coverage: say plainly that the accelerator pairs did not run on this machine.
        params.append(_skip(_no_accelerator_reason() + ": only the CPU reference pairs ran", id="accelerators"))
    return params


def _group_params(config) -> list:
    selected: list[Device] = config.stash[SELECTED]
    params = []
    for kind in ACCELERATOR_KINDS:
        group = [d for d in selected if d.kind == kind]
        if len(group) >= 2:
            params.append(pytest.param(group, marks=[getattr(pytest.mark, kind)], id=f"{kind}x{len(group)}"))
    if not params:
        found = ", ".join(d.name for d in selected) or "none"
        params.append(_skip(f"needs two or more accelerators of one kind for a device_map split; selected: {found}",
                            id="single-device"))
    return params


def pytest_generate_tests(metafunc):
    config = metafunc.config
    if "comparison_pair" in metafunc.fixturenames:
        metafunc.parametrize("comparison_pair", _pair_params(config))
    if "cpu_threads_pair" in metafunc.fixturenames:
        if any(d.kind == "cpu" for d in config.stash[SELECTED]):
            metafunc.parametrize("cpu_threads_pair", [pytest.param(threads_pair(), id=threads_pair().id)])
        else:
            metafunc.parametrize("cpu_threads_pair", [_skip("the cpu is not among the --device choices", id="no-cpu")])
    if "accelerator_group" in metafunc.fixturenames:
        metafunc.parametrize("accelerator_group", _group_params(config))


def pytest_runtest_teardown(item, nextitem):
    # One model at a time on a device: the next test may use another model or no device at all.
    release_copies()
