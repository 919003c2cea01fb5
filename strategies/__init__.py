"""Hypothesis strategies for the inputs of models and processors.

Pure strategies: they take plain numbers or a `zoo.spec.ModelSpec`, never a model. Draws are
numpy arrays (or str / PIL images for processors); subjects turn them into tensors.
"""
