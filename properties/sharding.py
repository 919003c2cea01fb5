"""`--shard K/N`: run part K of N of the collected tests, split by model (a pytest plugin).

All tests of one model land in the same shard, so each shard builds only its own models (once per
process); the models are spread so that the shards hold about the same number of tests (largest
model first, each to the shard with the fewest tests so far; ties by name, so every process and
every CI job computes the same split). Tests that take no model are grouped by file. Runs after
`-k`/`-m` deselection, so a shard splits what would have run.

Why not a plugin from PyPI: pytest-shard (0.1.2, 2020) splits by a hash of each test id and
pytest-split balances by stored durations; neither keeps a model's tests together.
"""

from __future__ import annotations

import re

import pytest

from properties.coverage import model_of


def pytest_addoption(parser):
    group = parser.getgroup("hfprops-shard", "hfprops: splitting a run over CI jobs")
    group.addoption(
        "--shard", default=None, metavar="K/N",
        help="run only part K of N (1 <= K <= N) of the selected tests, split by model and balanced "
        "by test count (for a CI matrix: one job per K)",
    )


def parse_shard(text: str) -> tuple[int, int]:
    """`"2/4"` -> (2, 4); a clear `pytest.UsageError` otherwise."""
    match = re.fullmatch(r"\s*(\d+)\s*/\s*(\d+)\s*", text or "")
    if not match:
        raise pytest.UsageError(f"--shard {text}: expected K/N, e.g. --shard 1/4")
    k, n = int(match[1]), int(match[2])
    if not 1 <= k <= n:
        raise pytest.UsageError(f"--shard {text}: K must be between 1 and N (got K={k}, N={n})")
    return k, n


def group_of(item) -> str:
    """The unit a shard keeps together: the model under test, or the file of a test without one."""
    model = model_of(item)
    return f"model:{model}" if model is not None else f"file:{item.nodeid.split('::', 1)[0]}"


def assign(sizes: dict[str, int], n: int) -> dict[str, int]:
    """Group -> shard index (0-based): largest group first, each to the shard with the fewest tests."""
    load = [0] * n
    shard_of = {}
    for group in sorted(sizes, key=lambda g: (-sizes[g], g)):
        target = min(range(n), key=lambda s: (load[s], s))
        shard_of[group] = target
        load[target] += sizes[group]
    return shard_of


def pytest_configure(config):
    if config.getoption("shard"):
        parse_shard(config.getoption("shard"))  # fail at once, before collecting


@pytest.hookimpl(trylast=True)  # after -k/-m and the other plugins' deselection
def pytest_collection_modifyitems(config, items):
    text = config.getoption("shard")
    if not text:
        return
    k, n = parse_shard(text)
    groups = [group_of(item) for item in items]
    sizes: dict[str, int] = {}
    for group in groups:
        sizes[group] = sizes.get(group, 0) + 1
    shard_of = assign(sizes, n)
    keep = [item for item, group in zip(items, groups) if shard_of[group] == k - 1]
    dropped = [item for item, group in zip(items, groups) if shard_of[group] != k - 1]
    mine = sorted(g.removeprefix("model:") for g in sizes if shard_of[g] == k - 1 and g.startswith("model:"))
    config.stash[_SUMMARY] = (f"hfprops: shard {k}/{n}: {len(keep)} of {len(items)} tests, "
                              f"{len(mine)} models ({', '.join(mine[:12])}{', ...' if len(mine) > 12 else ''})")
    if dropped:
        config.hook.pytest_deselected(items=dropped)
    items[:] = keep


_SUMMARY = pytest.StashKey[str]()


def pytest_report_header(config):
    if config.getoption("shard"):
        k, n = parse_shard(config.getoption("shard"))
        return [f"hfprops: shard {k}/{n} (tests split by model, balanced by test count)"]
    return []


def pytest_report_collectionfinish(config, start_path, items):
    return [config.stash[_SUMMARY]] if _SUMMARY in config.stash else []
