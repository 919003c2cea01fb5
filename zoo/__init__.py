"""The models under test: ten tiny offline models and user checkpoints, each wrapped in a `Subject`."""
