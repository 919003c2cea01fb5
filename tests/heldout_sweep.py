"""Run the property suite on every held-out checkpoint, one pytest process each, and tabulate the outcome.

    python -m tests.heldout_sweep OUTDIR [--only NAME ...] [--timeout S] [--pytest-args "..."]

OUTDIR holds the checkpoints of `tests/heldout.py` (missing ones are built first). For each one
this runs `python -m pytest properties/ --model OUTDIR/NAME --hypothesis-profile=ci -q -rfEsxX
-p no:cacheprovider` under a per-checkpoint timeout, keeps the full output and a JUnit XML in
OUTDIR/logs/, writes OUTDIR/sweep.json and prints a markdown table (collected, passed, failed,
errors, skipped, xfailed, wall seconds) followed by, per checkpoint, the grouped skip reasons and
the first line of each failure and error. The sweep only reports; it never judges a failure.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shlex
import signal
import subprocess
import sys
import time
import xml.etree.ElementTree as ET
from collections import Counter
from dataclasses import asdict, dataclass, field
from pathlib import Path

from tests import heldout

ROOT = heldout.ROOT
PYTEST_ARGS = ("--hypothesis-profile=ci", "-q", "-rfEsxX", "-p", "no:cacheprovider")
_COUNT = re.compile(r"(\d+) (passed|failed|errors?|skipped|xfailed|xpassed|deselected|warnings?)")


@dataclass
class Outcome:
    name: str
    model_class: str
    returncode: int | None = None
    timed_out: bool = False
    wall_s: float = 0.0
    collected: int = 0
    passed: int = 0
    failed: int = 0
    errors: int = 0
    skipped: int = 0
    xfailed: int = 0
    xpassed: int = 0
    skip_reasons: dict[str, int] = field(default_factory=dict)
    failures: list[dict] = field(default_factory=list)  # {"test", "kind": failure|error, "first_line"}
    summary_line: str = ""
    hfprops_lines: list[str] = field(default_factory=list)  # lines starting "hfprops" (the suite's own notes)
    sections: dict[str, list[str]] = field(default_factory=dict)  # summary sections the suite adds (findings met)
    log: str = ""


def _first_line(text: str | None) -> str:
    for line in (text or "").splitlines():
        if line.strip():
            return line.strip()[:300]
    return ""


_FRAME = re.compile(r"^(\S+\.py):(\d+): ?(.*)$")
_OWN = ("properties/", "zoo/", "strategies/", "devices/", "baselines/", "conftest.py")


def _frames(text: str | None) -> dict:
    """Where a failure was raised and the deepest hfprops frame on the way (for triage), and its draws."""
    frames = [m.group(1, 2, 3) for m in map(_FRAME.match, (text or "").splitlines()) if m]
    own = [f for f in frames if f[0].startswith(_OWN)]
    draws = [line.strip() for line in (text or "").splitlines() if line.lstrip().startswith("Draw ")]
    short = lambda f: f"{f[0].rsplit('site-packages/', 1)[-1]}:{f[1]} {f[2]}".strip()
    return {"raised_at": short(frames[-1]) if frames else "", "hfprops_frame": short(own[-1]) if own else "",
            "draws": [d[:300] for d in draws[:4]]}


_SUB = re.compile(r"\+-+ \d+ -+")
_PY_FRAME = re.compile(r'File "([^"]+)", line (\d+), in (\S+)')
_EXC = re.compile(r"^\s*\|?\s*((?:[\w.]+\.)?[A-Z]\w*(?:Error|Exception|Exceeded|Failure|Flaky|Unsatisfiable|Warning)\w*)(:.*)?$")


def _sub_failures(text: str | None) -> list[dict]:
    """The distinct failures inside a Hypothesis ExceptionGroup: first line and where each was raised."""
    subs = []
    for chunk in _SUB.split(text or "")[1:]:
        lines = chunk.splitlines()
        frames = [(i, m.group(1, 2, 3)) for i, line in enumerate(lines) for m in [_PY_FRAME.search(line)] if m]
        after = frames[-1][0] + 1 if frames else 0
        first = next((m.group(1) + (m.group(2) or "") for line in lines[after:] for m in [_EXC.match(line)] if m), "")
        own = [f for _, f in frames if "/site-packages/" not in f[0] and "/hypothesis/" not in f[0]]
        short = lambda f: f"{f[0].rsplit('site-packages/', 1)[-1].replace(str(ROOT) + '/', '')}:{f[1]} in {f[2]}"
        subs.append({"first_line": first.strip()[:300], "raised_at": short(frames[-1][1]) if frames else "",
                     "hfprops_frame": short(own[-1]) if own else ""})
    return subs


_SECTION = re.compile(r"^=+ (.+?) =+$")
_STANDARD_SECTIONS = ("FAILURES", "ERRORS", "short test summary info", "warnings summary", "Hypothesis Statistics",
                      "slowest", "test session starts", "XFAIL", "XPASS", "PASSES", "captured", "Captured")


def _suite_sections(text: str, limit: int = 40) -> dict[str, list[str]]:
    """Sections the suite adds to pytest's terminal summary (e.g. the findings a run met), by title."""
    sections: dict[str, list[str]] = {}
    current = None
    for line in text.splitlines():
        m = _SECTION.match(line)
        if m:
            title = m.group(1)
            standard = title.startswith(_STANDARD_SECTIONS) or _COUNT.search(title) or "no tests ran" in title
            current = None if standard else sections.setdefault(title, [])
        elif current is not None and line.strip() and len(current) < limit:
            current.append(line.rstrip()[:300])
    return sections


def _counts_from_summary(text: str) -> tuple[str, dict[str, int]]:
    """The last `== N failed, M passed ... in Xs ==` line and its counts (errors/warnings singular or not)."""
    for line in reversed(text.splitlines()):
        if re.search(r"\bin [\d.]+s\b", line) and _COUNT.search(line):
            counts: Counter = Counter()
            for number, word in _COUNT.findall(line):
                counts[{"error": "errors", "warning": "warnings"}.get(word, word)] += int(number)
            return line.strip("= ").strip(), dict(counts)
    return "", {}


def _from_junit(path: Path, outcome: Outcome) -> None:
    """Per-test details (failure first lines, skip reasons) from pytest's JUnit XML."""
    if not path.is_file():
        return
    try:
        tree = ET.parse(path)
    except ET.ParseError:
        return
    reasons: Counter = Counter()
    tests = set()
    for case in tree.iter("testcase"):
        test = f"{case.get('classname', '').replace('.', '/')}.py::{case.get('name')}"
        internal = case.get("classname") == "pytest" and case.get("name") == "internal"
        if not internal and not any(child.get("message") == "collection failure" for child in case):
            tests.add(test)  # a test that errors in setup was collected too; a file that fails to import was not
        for child in case:
            if child.tag in ("failure", "error"):
                message = child.get("message") or child.text
                outcome.failures.append({"test": test, "kind": child.tag, "first_line": _first_line(message),
                                         **_frames(child.text), "sub": _sub_failures(child.text)})
            elif child.tag == "skipped" and child.get("type") != "pytest.xfail":
                reasons[_first_line(child.get("message")) or "(no reason)"] += 1
    outcome.skip_reasons = dict(reasons.most_common())
    outcome.collected = max(outcome.collected, len(tests))


def run_one(checkpoint: Path, logs: Path, *, timeout: float, extra: list[str]) -> Outcome:
    config = json.loads((checkpoint / "config.json").read_text(encoding="utf-8"))
    outcome = Outcome(checkpoint.name, ",".join(config.get("architectures") or ["?"]))
    junit = logs / f"{checkpoint.name}.xml"
    log = logs / f"{checkpoint.name}.txt"
    cmd = [sys.executable, "-m", "pytest", "properties/", "--model", str(checkpoint), *PYTEST_ARGS,
           f"--junitxml={junit}", *extra]
    env = dict(os.environ, COLUMNS="250")  # summary lines keep the failure's first line
    start = time.perf_counter()
    proc = subprocess.Popen(cmd, cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                            text=True, start_new_session=True)
    try:
        text, _ = proc.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGTERM)  # the pytest process and anything it started, nothing else
        try:
            text, _ = proc.communicate(timeout=20)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            text, _ = proc.communicate()
        outcome.timed_out = True
    outcome.wall_s = round(time.perf_counter() - start, 1)
    outcome.returncode = proc.returncode
    log.write_text(f"$ {shlex.join(cmd)}\n{text}", encoding="utf-8")
    outcome.log = str(log)
    outcome.summary_line, counts = _counts_from_summary(text)
    outcome.hfprops_lines = [line.strip() for line in text.splitlines() if line.lower().startswith("hfprops")][:40]
    outcome.sections = _suite_sections(text)
    for key in ("passed", "failed", "errors", "skipped", "xfailed", "xpassed"):
        setattr(outcome, key, counts.get(key, 0))
    outcome.collected = sum(counts.get(k, 0) for k in ("passed", "failed", "skipped", "xfailed", "xpassed"))
    _from_junit(junit, outcome)
    internal = [line[len("INTERNALERROR>"):] for line in text.splitlines() if line.startswith("INTERNALERROR>")]
    if internal:  # a crash of the suite's own hooks: name the exception and the frame that raised it
        frames = [m.group(1, 2, 3) for line in internal for m in [_PY_FRAME.search(line)] if m]
        where = f"{frames[-1][0].replace(str(ROOT) + '/', '')}:{frames[-1][1]} in {frames[-1][2]}" if frames else ""
        outcome.failures = [f for f in outcome.failures if f["test"] != "pytest.py::internal"]
        outcome.failures.append({"test": "(internal error)", "kind": "error", "first_line": internal[-1].strip()[:300],
                                 "raised_at": where, "hfprops_frame": where, "draws": [], "sub": []})
    if not outcome.failures and (outcome.timed_out or proc.returncode not in (0, 1, 5)):
        outcome.failures.append({"test": "(run)", "kind": "error",
                                 "first_line": _why_no_result(outcome, text)})
    return outcome


def _why_no_result(outcome: Outcome, text: str) -> str:
    if outcome.timed_out:
        return f"timed out after {outcome.wall_s} s"
    if outcome.returncode is not None and outcome.returncode < 0:  # e.g. -9: the kernel's OOM killer
        return f"killed by signal {-outcome.returncode} (SIGKILL is usually out of memory) | {_last_lines(text, 1)}"
    return _last_lines(text)


def _last_lines(text: str, n: int = 3) -> str:
    return " | ".join(line.strip() for line in text.strip().splitlines()[-n:])[:300]


_KINDS = {r.name: r.kind for r in heldout.rows()}


def markdown(outcomes: list[Outcome]) -> str:
    head = "| checkpoint | class | collected | passed | failed | errors | skipped | xfailed | xpassed | wall s |"
    lines = [head, "|---|---|---:|---:|---:|---:|---:|---:|---:|---:|"]
    for o in outcomes:
        mark = " (timed out)" if o.timed_out else ""
        lines.append(f"| {o.name}{mark} | {o.model_class} | {o.collected} | {o.passed} | {o.failed} | {o.errors} | "
                     f"{o.skipped} | {o.xfailed} | {o.xpassed} | {o.wall_s} |")
    total = {k: sum(getattr(o, k) for o in outcomes) for k in ("collected", "passed", "failed", "errors", "skipped",
                                                                 "xfailed", "xpassed")}
    lines.append(f"| **total** ({len(outcomes)}) | | {total['collected']} | {total['passed']} | {total['failed']} | "
                 f"{total['errors']} | {total['skipped']} | {total['xfailed']} | {total['xpassed']} | "
                 f"{round(sum(o.wall_s for o in outcomes), 1)} |")
    for o in outcomes:
        lines += ["", f"### {o.name} ({o.model_class}, {_KINDS.get(o.name, '?')}): {o.summary_line or 'no summary line'}"]
        for title, body in o.sections.items():
            lines.append(f"{title}: " + " / ".join(b.strip() for b in body[:12]))
        if o.skip_reasons:
            lines.append("skipped: " + "; ".join(f"{n}x {r}" for r, n in o.skip_reasons.items()))
        for f in o.failures:
            where = f" (raised at {f['raised_at']})" if f.get("raised_at") else ""
            lines.append(f"- {f['kind'].upper()} `{f['test']}`: {f['first_line']}{where}")
            for sub in f.get("sub", []):
                lines.append(f"  - {sub['first_line']} (raised at {sub['raised_at']})")
    return "\n".join(lines)


def checkpoints(outdir: Path, only: list[str] | None) -> list[Path]:
    """The held-out checkpoints in `outdir` (built first where missing), in table order."""
    names = only or [r.name for r in heldout.rows()]
    missing = [n for n in names if not (outdir / n / "config.json").is_file()]
    if missing:
        heldout.build_all(outdir, missing)
    return [outdir / n for n in names]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("outdir", type=Path)
    parser.add_argument("--only", nargs="+", metavar="NAME")
    parser.add_argument("--timeout", type=float, default=900.0, help="seconds per checkpoint (default 900)")
    parser.add_argument("--pytest-args", default="", help="extra pytest arguments, e.g. \"-x -k finite\"")
    args = parser.parse_args(argv)
    outdir = args.outdir.resolve()
    logs = outdir / "logs"
    logs.mkdir(parents=True, exist_ok=True)
    outcomes = []
    for checkpoint in checkpoints(outdir, args.only):
        outcome = run_one(checkpoint, logs, timeout=args.timeout, extra=shlex.split(args.pytest_args))
        outcomes.append(outcome)
        print(f"{outcome.name}: {outcome.summary_line or 'rc=' + str(outcome.returncode)} "
              f"({outcome.wall_s} s{', timed out' if outcome.timed_out else ''})", file=sys.stderr, flush=True)
        (outdir / "sweep.json").write_text(json.dumps([asdict(o) for o in outcomes], indent=1), encoding="utf-8")
    print(markdown(outcomes))
    return 0


if __name__ == "__main__":
    sys.exit(main())
