"""pytest hooks for devices (loaded by conftest.py through `pytest_plugins`)."""
