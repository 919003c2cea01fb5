"""pytest hooks for performance baselines (loaded by conftest.py through `pytest_plugins`)."""
