"""Measure clean differences of the comparison pairs on the zoo (the figures behind the policy).

    python -m devices.measure                       # every pair on this machine, all ten zoo models
    python -m devices.measure --device cuda --examples 25 --model bert --model gpt2

For each model and pair it draws inputs with the property's own strategy, runs both sides and
prints the largest max abs difference over real (unpadded) positions, that difference relative to
the reference's largest magnitude, the largest outputs, and the time taken. This is how the
POLICY rows' figures were measured; run it on new hardware before changing a row.
"""

from __future__ import annotations

import argparse
import time

import torch
from hypothesis import HealthCheck, given, settings, strategies as st

from devices.discovery import DeviceArgError, available_devices, release_memory, select_devices
from devices.pairs import Pair, comparison_pairs, run_side, threads_pair
from devices.placement import release_copies
from devices.tolerance import difference
from strategies.batches import model_inputs
from zoo.build import build_zoo_subject
from zoo.tiny import ZOO_NAMES


def measure(subject, pair: Pair, examples: int) -> dict:
    """Worst clean difference of `pair` on `subject` over `examples` drawn inputs."""
    worst = {"max_abs": 0.0, "scaled": 0.0, "max_rel": 0.0, "output": "", "examples": 0}

    @settings(max_examples=examples, derandomize=True, database=None, deadline=None,
              suppress_health_check=list(HealthCheck))
    @given(data=st.data())
    def run(data):
        inputs = data.draw(model_inputs(subject.spec))
        reference = run_side(subject, inputs, pair.reference)
        candidate = run_side(subject, inputs, pair.candidate)
        masks = subject.real_token_masks(reference, inputs)
        worst["examples"] += 1
        for name, ref in reference.items():
            got = candidate[name]
            if name in masks:
                got, ref = got[masks[name]], ref[masks[name]]
            if not ref.is_floating_point() or not ref.numel():
                continue
            diff = difference(got, ref)
            scaled = diff.max_abs / max(1.0, float(ref.abs().max()))
            if diff.max_abs >= worst["max_abs"]:
                worst.update(max_abs=diff.max_abs, output=name)
            worst["scaled"] = max(worst["scaled"], scaled)
            worst["max_rel"] = max(worst["max_rel"], diff.max_rel)

    start = time.perf_counter()
    run()
    worst["seconds"] = time.perf_counter() - start
    return worst


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", action="append", default=[], help="cpu, cuda, cuda:1, rocm, mps, xpu")
    parser.add_argument("--model", action="append", default=[], help="zoo model (default: all ten)")
    parser.add_argument("--examples", type=int, default=25)
    args = parser.parse_args(argv)
    torch.set_num_threads(1)
    try:
        devices, missing = select_devices(args.device, available_devices())
    except DeviceArgError as exc:
        parser.error(str(exc))
    for line in missing:
        print("skipped:", line)
    print("devices:", "; ".join(map(str, devices)))
    print(f"{'model':10} {'pair':22} {'max abs':>9} {'/max|ref|':>9} {'max rel':>9} {'secs':>6}  worst output")
    for name in args.model or ZOO_NAMES:
        subject = build_zoo_subject(name)
        cpu = [threads_pair()] if any(d.kind == "cpu" for d in devices) else []
        for pair in comparison_pairs(devices) + cpu:
            w = measure(subject, pair, args.examples)
            print(f"{name:10} {pair.id:22} {w['max_abs']:9.2e} {w['scaled']:9.2e} {w['max_rel']:9.2e} "
                  f"{w['seconds']:6.2f}  {w['output']}", flush=True)
        release_copies()
        del subject
        release_memory()


if __name__ == "__main__":
    main()
