"""The training application: input pipeline, strategies, fit, evaluation, command line.

`python -m training train --help` lists every flag; `train_and_evaluate(config, workdir)`
(`training.train`) is the library entry point. Three thin drivers (the `fit` driver, the
multi-worker loop and the tuner's trials) share one run kit: `training.config`,
`training.runkit`, `training.model_setup` and `training.workdir`.
"""
