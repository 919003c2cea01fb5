"""One cached environment per transformers release, sharing the installed torch (for replays and bisects).

    from properties.releases import release_dir, release_env, released_versions
    env = release_env("5.4.0")                      # builds ~/.cache/hfprops/releases/5.4.0 once
    subprocess.run([sys.executable, "repro.py"], env=env)

A release folder is `pip install --no-deps --target DIR transformers==VERSION`, plus each of that
release's own requirements (its METADATA `Requires-Dist`: the unconditional ones, and those of its
run-time extras for packages installed here) whose installed version falls outside the range it asks
for, also `--no-deps`. torch is never installed there: every release runs on
the torch of this interpreter. Run with `PYTHONPATH=DIR` so the folder shadows the installed
transformers. Folders live under `$HFPROPS_RELEASES` (default `~/.cache/hfprops/releases`), are built
in a staging folder and renamed into place (a reader never sees half a release), and are reused.

Only the package registry is contacted (pip), and only to build a missing folder or list releases.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
from importlib import metadata
from pathlib import Path
from typing import Callable

from packaging.requirements import Requirement
from packaging.utils import canonicalize_name
from packaging.version import InvalidVersion, Version

RELEASES_ENV = "HFPROPS_RELEASES"
PACKAGE = "transformers"
DONE = "hfprops-release.json"  # written last: its presence marks a complete folder
NEVER_INSTALL = {"torch"}  # every release shares the interpreter's torch (never a second one)
# Releases that exist on the index but cannot be installed or run here (measured; see DESIGN.md).
UNUSABLE: dict[str, str] = {}


class ReleaseError(RuntimeError):
    """A release folder could not be built or the list of releases could not be read."""


def releases_root() -> Path:
    return Path(os.environ.get(RELEASES_ENV) or Path.home() / ".cache" / "hfprops" / "releases")


def _pip(*args: str) -> subprocess.CompletedProcess:
    command = [sys.executable, "-m", "pip", "--disable-pip-version-check", "--no-input", *args]
    return subprocess.run(command, capture_output=True, text=True)


# Extras that only the release's own developers install (test runners, linters, docs builders).
_TOOLING_EXTRA = re.compile(r"dev|test|quality|docs")


def _requirements(info: Path, *, optional: bool = False) -> list[Requirement]:
    """The requirements (markers for this interpreter) of one dist-info folder: unconditional ones, and
    with `optional` also those of its run-time extras, for packages this interpreter has installed.

    An installed optional package is imported by the release whenever it is present (transformers
    5.0.0 imports `kernels` at `import transformers.activations`), so a version outside the range
    that release asks for breaks it as surely as a wrong required one (kernels 0.19 for 5.0.0's <0.11).
    """
    requirements = []
    for line in (info / "METADATA").read_text(encoding="utf-8").splitlines():
        if not line.startswith("Requires-Dist:"):
            continue
        requirement = Requirement(line.split(":", 1)[1].strip())
        if requirement.marker is None or requirement.marker.evaluate({"extra": ""}):
            requirements.append(requirement)
        elif optional and _installed_version(requirement.name) and any(
                requirement.marker.evaluate({"extra": extra}) for extra in _runtime_extras(info)):
            requirements.append(requirement)
    return requirements


def _runtime_extras(info: Path) -> list[str]:
    lines = (info / "METADATA").read_text(encoding="utf-8").splitlines()
    extras = [line.split(":", 1)[1].strip() for line in lines if line.startswith("Provides-Extra:")]
    return [extra for extra in extras if not _TOOLING_EXTRA.search(extra)]


def _installed_version(name: str) -> str | None:
    try:
        return metadata.version(name)
    except metadata.PackageNotFoundError:
        return None


def _installed_in(folder: Path) -> dict[str, tuple[str, Path]]:
    """canonical name -> (version, dist-info folder) of what pip put in `folder`."""
    found = {}
    for info in folder.glob("*.dist-info"):
        name, _, version = info.name[: -len(".dist-info")].rpartition("-")
        found[canonicalize_name(name)] = (version, info)
    return found


def _outside(requirement: Requirement, staged: dict) -> str | None:
    """Why neither the folder nor the interpreter satisfies `requirement` (None when one does)."""
    name = canonicalize_name(requirement.name)
    installed = staged[name][0] if name in staged else _installed_version(requirement.name)
    if installed is None:
        return "not installed"
    if requirement.specifier and not requirement.specifier.contains(installed, prereleases=True):
        return f"installed {installed}"
    return None


def _missing(folder: Path) -> dict[str, str]:
    """Requirements of everything in `folder` that neither the folder nor the interpreter meets."""
    staged, missing = _installed_in(folder), {}
    for name, (_, info) in staged.items():
        for requirement in _requirements(info, optional=name == PACKAGE):
            if canonicalize_name(requirement.name) not in NEVER_INSTALL:
                why = _outside(requirement, staged)
                if why:
                    missing.setdefault(f"{requirement.name}{requirement.specifier}", why)  # marker evaluated
    return missing


def release_dir(version: str, *, log: Callable[[str], None] = lambda line: None) -> Path:
    """The cached folder holding transformers `version` (built on first use); put it first on PYTHONPATH."""
    Version(version)  # refuse junk before calling pip
    if version in UNUSABLE:
        raise ReleaseError(f"transformers {version} {UNUSABLE[version]}")
    root = releases_root()
    folder = root / version
    if (folder / DONE).is_file() and not _missing(folder):
        return folder  # complete, and still met by this interpreter (an upgrade here can break it: rebuilt)
    root.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{version}.", dir=root))
    try:
        started = time.perf_counter()
        log(f"building {folder}: pip install --no-deps --target ... {PACKAGE}=={version}")
        done = _pip("install", "--no-deps", "--no-compile", "--quiet", "--target", str(staging),
                    f"{PACKAGE}=={version}")
        if done.returncode:
            raise ReleaseError(f"pip could not install {PACKAGE}=={version}:\n{done.stderr.strip()[-2000:]}")
        extras: dict[str, str] = {}
        for _ in range(6):  # --no-deps, so walk the requirements of what was added until nothing is missing
            missing = {r: why for r, why in _missing(staging).items() if r not in extras}
            if not missing:
                break
            log("  plus requirements the installed versions do not meet: "
                + ", ".join(f"{r} ({why})" for r, why in missing.items()))
            done = _pip("install", "--no-deps", "--no-compile", "--quiet", "--target", str(staging), *missing)
            if done.returncode:
                raise ReleaseError(f"pip could not install {sorted(missing)} for {PACKAGE} {version}:\n"
                                   f"{done.stderr.strip()[-2000:]}")
            extras.update(missing)
        seconds = time.perf_counter() - started
        (staging / DONE).write_text(json.dumps({
            "version": version, "extra_requirements": extras, "python": sys.executable,
            "seconds": round(seconds, 1), "built": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        }, indent=2) + "\n", encoding="utf-8")
        log(f"  built in {seconds:.1f} s")
        if folder.exists():  # a half-built folder, or one this interpreter's packages no longer meet
            shutil.rmtree(folder)
        try:
            staging.rename(folder)
        except OSError:  # another process finished the same release first
            if not (folder / DONE).is_file():
                raise
    finally:
        if staging.exists():
            shutil.rmtree(staging, ignore_errors=True)
    return folder


def release_env(version: str, base: dict | None = None, **kwargs) -> dict[str, str]:
    """Environment variables that run a Python subprocess on transformers `version` (PYTHONPATH first)."""
    env = dict(os.environ if base is None else base)
    paths = [str(release_dir(version, **kwargs))] + ([env["PYTHONPATH"]] if env.get("PYTHONPATH") else [])
    env["PYTHONPATH"] = os.pathsep.join(paths)
    env.setdefault("HF_HUB_OFFLINE", "1")  # replays never download
    return env


_AVAILABLE = re.compile(r"Available versions: (?P<list>.+)")
_FROM_VERSIONS = re.compile(r"\(from versions: (?P<list>[^)]*)\)")


def _index_versions() -> list[str]:
    """Every version of transformers on the package index (`pip index versions`, else `pip download`'s error)."""
    done = _pip("index", "versions", PACKAGE)
    match = _AVAILABLE.search(done.stdout)
    if match is None:  # older pips without `index`: ask for an impossible version, read the list it offers
        with tempfile.TemporaryDirectory() as scratch:
            done = _pip("download", "--no-deps", "--dest", scratch, f"{PACKAGE}==0.0.0.dev0")
        match = _FROM_VERSIONS.search(done.stderr)
    if match is None:
        raise ReleaseError(f"could not list {PACKAGE} releases from the package index:\n{done.stderr.strip()[-1000:]}")
    return [v.strip() for v in match["list"].split(",") if v.strip()]


def released_versions(good: str = "5.0.0", bad: str = "5.24.0", *, major: int = 5) -> list[str]:
    """The final releases `good <= v <= bad` of transformers `major`.x, oldest first (no pre-releases)."""
    low, high = Version(good), Version(bad)
    found = set()
    for text in _index_versions():
        try:
            version = Version(text)
        except InvalidVersion:
            continue
        if version.major == major and not version.is_prerelease and low <= version <= high \
                and text not in UNUSABLE:
            found.add(version)
    return [str(v) for v in sorted(found)]


def main(argv: list[str] | None = None) -> int:
    """`python -m properties.releases 5.0.0 5.4.0 ...`: build (or show) the release folders."""
    import argparse

    parser = argparse.ArgumentParser(prog="python -m properties.releases", description=main.__doc__)
    parser.add_argument("versions", nargs="*", help="releases to build (default: list 5.0.0..5.24.0)")
    args = parser.parse_args(argv)
    if not args.versions:
        print(" ".join(released_versions()))
        return 0
    for version in args.versions:
        print(release_dir(version, log=print))
    return 0


if __name__ == "__main__":
    sys.exit(main())
