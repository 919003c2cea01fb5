"""Timed tests measure alone under pytest-xdist (loaded by conftest.py through `pytest_plugins`).

The perf properties time this thread's CPU clock, which ignores a neighbour's share of the cores but
not its pull on the shared caches and memory bandwidth. In the registry sweep (`-n 2` on 2 cores)
glm5_next's batch throughput read 0.74-0.89x beside the other worker, under the 0.9x floor on every
retry, and passed 3 of 3 alone. So with more than one worker, a test marked `timed` runs its call
phase (where it measures) while no other test of the run is running:

- every test holds a shared lock on one file of this run from setup to teardown;
- a timed test's call gives its shared lock up and takes the lock exclusively; the other workers
  finish the test they are in and wait at the next;
- a second file, a turnstile every test passes before taking the shared lock, is held by the timed
  test while it waits, so a stream of short tests on the other workers cannot starve it.

The controller makes the lock directory and hands it to each worker (`pytest_configure_node`); without
xdist nothing is locked. flock locks die with their process, so a crashed worker frees them.

Why flock by hand: it is two system calls per test and the kernel frees it with the process;
filelock's ReadWriteLock (3.21+) is a SQLite transaction per test and refuses a change of mode in
one thread, which is what a timed test does. flock is POSIX only: on Windows nothing is locked.
"""

from __future__ import annotations

import shutil
import tempfile
from contextlib import contextmanager
from pathlib import Path

import pytest

try:
    import fcntl
except ImportError:  # Windows: timed tests share the machine, as without xdist
    fcntl = None

MARK = "timed"
_KEY = "hfprops_timing_locks"
_LOCKS = pytest.StashKey[tuple]()  # (room fd, turnstile fd) in a worker of a parallel run
_DIR = pytest.StashKey[Path]()  # the controller's lock directory


def pytest_configure(config):
    config.addinivalue_line("markers", f"{MARK}: measures time; under pytest-xdist its call runs with no other test running")
    directory = getattr(config, "workerinput", {}).get(_KEY)
    if fcntl is not None and directory and Path(directory).is_dir():  # not there: a worker on another machine (`--tx ssh=...`)
        config.stash[_LOCKS] = tuple(open(Path(directory) / name, "a+") for name in ("room", "turnstile"))


@pytest.hookimpl(optionalhook=True)
def pytest_configure_node(node):
    """xdist controller: every worker of this run locks the same two files."""
    config = node.config
    if _DIR not in config.stash:
        config.stash[_DIR] = Path(tempfile.mkdtemp(prefix="hfprops-timing-"))
    node.workerinput[_KEY] = str(config.stash[_DIR])


def pytest_unconfigure(config):
    if _DIR in config.stash:
        shutil.rmtree(config.stash[_DIR], ignore_errors=True)
    for handle in config.stash.get(_LOCKS, ()):
        handle.close()


def _lock(handle, mode: int) -> None:
    fcntl.flock(handle.fileno(), mode)


@contextmanager
def _shared(room, turnstile):
    _lock(turnstile, fcntl.LOCK_EX)  # wait behind a timed test that is waiting for the room
    _lock(room, fcntl.LOCK_SH)
    _lock(turnstile, fcntl.LOCK_UN)
    try:
        yield
    finally:
        _lock(room, fcntl.LOCK_UN)


@contextmanager
def _alone(room, turnstile):
    # The shared lock goes first: holding it while waiting at the turnstile would deadlock two timed tests.
    _lock(room, fcntl.LOCK_UN)
    _lock(turnstile, fcntl.LOCK_EX)
    _lock(room, fcntl.LOCK_EX)
    try:
        yield
    finally:
        _lock(room, fcntl.LOCK_SH)  # back to shared for teardown, before the turnstile lets others in
        _lock(turnstile, fcntl.LOCK_UN)


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_protocol(item, nextitem):
    locks = item.config.stash.get(_LOCKS, None)
    if locks is None:
        yield
        return
    with _shared(*locks):
        yield


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_call(item):
    locks = item.config.stash.get(_LOCKS, None)
    if locks is None or item.get_closest_marker(MARK) is None:
        yield
        return
    with _alone(*locks):
        yield
