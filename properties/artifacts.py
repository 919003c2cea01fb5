"""Failure artifacts (loaded by conftest.py through `pytest_plugins`)."""
