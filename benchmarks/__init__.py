"""Throughput and efficiency scripts; each prints a table (see the README's Benchmarks).

Run them as modules from the repository root (`python -m benchmarks.models --help`) or by
path from anywhere (`python benchmarks/models.py --help`). Importing this package, which
both ways do before TensorFlow is imported, selects Keras's TensorFlow backend unless
`KERAS_BACKEND` is set and starts TensorFlow quietly (`training.quiet`).
"""

import os

os.environ.setdefault("KERAS_BACKEND", "tensorflow")

from training import quiet  # noqa: E402

quiet.quiet_tensorflow_startup()
