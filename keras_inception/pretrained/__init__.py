"""Published ImageNet weights in keras_inception models, output for output.

Each source module exposes the interface of the command line
`python -m keras_inception.convert`: `convert(name, path, **kwargs) -> (keras.Model,
skipped tensor names)` and `builder_call(name, **kwargs) -> str`. Nothing is downloaded:
users fetch the files.
"""

from keras_inception.pretrained.slim import from_slim

__all__ = ["from_slim"]
