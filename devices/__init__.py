"""Devices: which exist, moving models and inputs between them, and the one tolerance policy."""
