"""The training application: input pipeline, strategies, fit, evaluation, command line.

`python -m training train --help` lists every flag; `train_and_evaluate(config, workdir)`
is the library entry point.
"""
