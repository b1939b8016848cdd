"""The training application: input pipeline, strategies, fit, tuning, command line.

Not built yet: the training pipeline is tracked in its own issue. Importing a submodule
that does not exist yet fails loudly.
"""
