"""Published ImageNet weights in keras_inception models, output for output.

One `keras_inception.pretrained.converter.Converter` per weight source: `torchvision`
(GoogLeNet, InceptionV3 state dicts), `slim` (TF-Slim's inception_v1/v2/v3 checkpoints)
and `keras_applications` (`keras.applications.InceptionV3` files, which
`build_inception_v3(weights=...)` loads). The command line
`python -m keras_inception.convert` runs the first two; `preprocessing` holds each
source's input scaling and the ImageNet class names.

Nothing is downloaded but keras.applications' own file (through Keras's cache): users
fetch the files. torch is imported only to read `.pth` files, TensorFlow only to read
TF-Slim checkpoints.

`from_slim` and `from_torchvision` are imported on first use: the converters import the
model builders, and `inception_v3` imports `keras_applications` from this package.
"""

from __future__ import annotations

import importlib
from typing import Any

from keras_inception.pretrained.preprocessing import (
    class_names,
    decode_predictions,
    preprocess_input,
)

_LAZY = {
    "from_slim": "keras_inception.pretrained.slim",
    "from_torchvision": "keras_inception.pretrained.torchvision",
}

__all__ = [
    "class_names",
    "decode_predictions",
    "from_slim",
    "from_torchvision",
    "preprocess_input",
]


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
