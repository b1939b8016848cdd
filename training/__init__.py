"""The training application: input pipeline, strategies, fit, evaluation, command line.

`python -m training train --help` lists every flag; `train_and_evaluate(config, workdir)`
(`training.train`) is the library entry point. Three thin drivers (the `fit` driver, the
multi-worker loop and the tuner's trials) share one run kit: `training.config`,
`training.runkit`, `training.model_setup` and `training.workdir`.
"""

import os
import platform

# oneDNN is decided once, when TensorFlow loads: TensorFlow 2.21 leaves it off on x86 CPUs
# without AVX512-VNNI/BF16, AVX-VNNI or AMX (AMD Zen 1-3, many Xeons), where it halves our
# training speed (issue 13). Importing `training` before TensorFlow turns it on there
# unless the environment already says otherwise; `training.machine` reports the outcome.
ONEDNN_VARIABLE = "TF_ENABLE_ONEDNN_OPTS"
ONEDNN_USER_SETTING = os.environ.get(ONEDNN_VARIABLE)
if platform.machine().lower() in ("x86_64", "amd64"):
    os.environ.setdefault(ONEDNN_VARIABLE, "1")
