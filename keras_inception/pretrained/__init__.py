"""Published ImageNet weights in keras_inception models, output for output.

Each source module (`torchvision`, `slim`) exposes the same interface, which the command
line `python -m keras_inception.convert` uses:

- `convert(name, path, **kwargs) -> (keras.Model, skipped tensor names)`;
- `builder_call(name, **kwargs) -> str`: the Python expression that builds the same
  architecture (load the converted weights with `weights=`).

Nothing is downloaded: users fetch the files. torch is imported only to read `.pth`
files, TensorFlow only to read TF-Slim checkpoints.
"""

from keras_inception.pretrained.preprocessing import (
    class_names,
    decode_predictions,
    preprocess_input,
)
from keras_inception.pretrained.slim import from_slim
from keras_inception.pretrained.torchvision import from_torchvision

__all__ = [
    "class_names",
    "decode_predictions",
    "from_slim",
    "from_torchvision",
    "preprocess_input",
]
