"""Find the transformers release where a failure artifact's behaviour changed.

    python -m properties.bisect ARTIFACT --good 5.0.0 --bad 5.24.0

runs the artifact's `repro.py` on the released versions between the two (oldest first), each in
its own cached environment sharing this interpreter's torch (`properties.releases`), and bisects:
exit 1 "reproduces", 0 "does not", anything else (2: cannot run there, a crash, a timeout) is a
skip and the search tries a neighbour. Both ends are run first. If the old end passes and the new
end fails, the answer is the first release that reproduces (a regression); if the old end fails and
the new end passes, the first release that no longer reproduces (a fix). Each step is printed, and
`--json FILE` writes them with the answer. Only the package registry is contacted, to build a
release folder that is not cached yet.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

from properties.releases import ReleaseError, release_env, released_versions

REPRODUCES, PASSES = 1, 0
VERDICTS = {REPRODUCES: "reproduces", PASSES: "does not reproduce"}


@dataclass
class Step:
    version: str
    exit_code: int | None  # None: the release could not be installed
    verdict: str  # "reproduces", "does not reproduce" or "skip (...)"
    seconds: float
    last_line: str = ""


@dataclass
class Result:
    artifact: str
    versions: list[str]
    steps: list[Step] = field(default_factory=list)
    change: str | None = None  # "regression" | "fix" | None
    first: str | None = None  # the first release with the new behaviour
    last_before: str | None = None  # the last release with the old behaviour
    untested_between: list[str] = field(default_factory=list)  # skipped releases the answer may be among
    message: str = ""


def run_repro(artifact: Path, version: str, *, timeout: float, log=print) -> Step:
    """repro.py of `artifact` on transformers `version` (exit code, verdict, time taken)."""
    started = time.perf_counter()
    try:
        env = release_env(version, log=lambda line: log(f"    {line}"))
    except ReleaseError as exc:
        return Step(version, None, f"skip (not installable: {str(exc).splitlines()[0]})", time.perf_counter() - started)
    try:
        done = subprocess.run([sys.executable, str(artifact / "repro.py"), str(artifact)], env=env, cwd=artifact,
                              capture_output=True, text=True, timeout=timeout)
    except subprocess.TimeoutExpired:
        return Step(version, None, f"skip (timed out after {timeout:g} s)", time.perf_counter() - started)
    lines = [line for line in (done.stdout + done.stderr).splitlines() if line.strip()]
    verdict = VERDICTS.get(done.returncode, f"skip (exit {done.returncode})")
    return Step(version, done.returncode, verdict, time.perf_counter() - started, lines[-1] if lines else "")


def bisect(artifact: str | Path, good: str, bad: str, *, timeout: float = 600, log=print,
           versions: list[str] | None = None) -> Result:
    """Bisect `artifact`'s repro.py over the releases `good`..`bad` (see the module docstring)."""
    artifact = Path(artifact).resolve()
    if artifact.name in ("repro.py", "meta.json"):
        artifact = artifact.parent
    versions = versions or released_versions(good, bad)
    result = Result(str(artifact), versions)
    if len(versions) < 2:
        result.message = f"need at least two releases between {good} and {bad}; found {versions}"
        return result
    log(f"bisecting {artifact.name} over {len(versions)} transformers releases {versions[0]}..{versions[-1]}")
    outcome: dict[int, int | None] = {}  # index -> REPRODUCES / PASSES / None (skip)

    def try_(index: int) -> int | None:
        step = run_repro(artifact, versions[index], timeout=timeout, log=log)
        result.steps.append(step)
        log(f"  step {len(result.steps)}: transformers {step.version}: exit {step.exit_code} -> {step.verdict} "
            f"({step.seconds:.1f} s)")
        outcome[index] = step.exit_code if step.exit_code in VERDICTS else None
        return outcome[index]

    old, new = try_(0), try_(len(versions) - 1)
    if old is None or new is None or old == new:
        said = {REPRODUCES: "reproduces", PASSES: "does not reproduce", None: "cannot be judged"}
        result.message = (f"no change to bisect: {versions[0]} {said[old]}, {versions[-1]} {said[new]}")
        log(result.message)
        return result
    result.change = "regression" if new == REPRODUCES else "fix"
    lo, hi = 0, len(versions) - 1  # lo has the old behaviour, hi the new one
    while True:
        between = [i for i in range(lo + 1, hi) if outcome.get(i, "untried") == "untried"]
        if not between:
            break
        middle = (lo + hi) / 2
        index = min(between, key=lambda i: (abs(i - middle), i))
        verdict = try_(index)
        if verdict is None:
            continue  # skipped: the next try is the closest untried neighbour
        if verdict == old:
            lo = index
        else:
            hi = index
    result.first, result.last_before = versions[hi], versions[lo]
    result.untested_between = [versions[i] for i in range(lo + 1, hi)]
    what = "reproduces" if result.change == "regression" else "no longer reproduces"
    result.message = (f"first release where repro.py {what}: transformers {result.first} "
                      f"(last release before it: {result.last_before}; {result.change}, "
                      f"{len(result.steps)} releases run)")
    if result.untested_between:
        result.message += f"; could not judge {result.untested_between}, the change may be in one of them"
    log(result.message)
    return result


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m properties.bisect", description=__doc__.split("\n\n")[0])
    parser.add_argument("artifact", help="failure artifact folder (holding repro.py, meta.json, inputs.safetensors)")
    parser.add_argument("--good", default="5.0.0", help="oldest release to consider (default 5.0.0)")
    parser.add_argument("--bad", default="5.24.0", help="newest release to consider (default 5.24.0)")
    parser.add_argument("--timeout", type=float, default=600, help="seconds one repro.py run may take (default 600)")
    parser.add_argument("--json", metavar="FILE", help="also write the steps and the answer as JSON")
    args = parser.parse_args(argv)
    started = time.perf_counter()
    result = bisect(args.artifact, args.good, args.bad, timeout=args.timeout)
    print(f"done in {time.perf_counter() - started:.0f} s")
    if args.json:
        Path(args.json).write_text(json.dumps(asdict(result), indent=2) + "\n", encoding="utf-8")
    return 0 if result.first else 2


if __name__ == "__main__":
    sys.exit(main())
