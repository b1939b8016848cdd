"""Reading TensorFlow checkpoints (the TF-Slim files) as flat state dicts.

TensorFlow is imported only when a file is read (`tf.train.load_checkpoint`); the
converted Keras weights load without it.
"""

from __future__ import annotations

import os
import re

import numpy as np

from keras_inception.pretrained.common import one_line

_DATA_SHARD = re.compile(r"\.data-\d+-of-\d+$")


def _import_tensorflow(path: str):
    try:
        import tensorflow as tf
    except ImportError as err:
        raise ImportError(
            f"reading the TF-Slim checkpoint {path!r} needs TensorFlow (`pip install "
            "tensorflow`); the converted Keras weights (`python -m keras_inception.convert "
            "slim ...`) load without it"
        ) from err
    return tf


def checkpoint_prefix(path: str | os.PathLike) -> str:
    """The path TensorFlow reads a checkpoint by.

    Accepts a V1 single file (`inception_v3.ckpt`, as in the published tarballs), a V2
    prefix (`model.ckpt`, with `model.ckpt.index` beside it), one of the V2 files
    (`model.ckpt.index`, `model.ckpt.data-00000-of-00001`), or a directory holding a
    `checkpoint` state file.

    Raises:
        FileNotFoundError: naming `path`, if none of these exists.
    """
    path = os.fspath(path)
    if os.path.isdir(path):
        latest = _import_tensorflow(path).train.latest_checkpoint(path)
        if latest is None:
            raise FileNotFoundError(f"TF-Slim checkpoint not found: directory {path!r} holds none")
        return latest
    prefix = path
    if prefix.endswith(".index"):
        prefix = prefix[: -len(".index")]
    prefix = _DATA_SHARD.sub("", prefix)
    if os.path.isfile(prefix) or os.path.isfile(prefix + ".index"):
        return prefix
    raise FileNotFoundError(
        f"TF-Slim checkpoint not found: {path!r} (neither a checkpoint file nor the "
        f"prefix of {prefix + '.index'!r})"
    )


def read_checkpoint(path: str | os.PathLike) -> dict[str, np.ndarray]:
    """Every tensor of a TensorFlow checkpoint, as numpy arrays (float32 for floats).

    Args:
        path: str or PathLike. See `checkpoint_prefix` for the accepted forms.

    Returns:
        dict of variable name (e.g. `"InceptionV3/Conv2d_1a_3x3/weights"`) to array.

    Raises:
        FileNotFoundError: if there is no checkpoint at `path`.
        ImportError: if TensorFlow is not installed.
        ValueError: one line naming the file (and the tensor, if one fails to read) for
            a file that is not a readable checkpoint.

    Example:
    >>> state = read_checkpoint("inception_v3.ckpt")  # doctest: +SKIP
    >>> state["InceptionV3/Conv2d_1a_3x3/weights"].shape  # doctest: +SKIP
    (3, 3, 3, 32)
    """
    path = os.fspath(path)
    if not os.path.isdir(path):
        checkpoint_prefix(path)  # FileNotFoundError before TensorFlow is needed
        if path.lower().endswith((".tar.gz", ".tgz", ".tar")):
            raise ValueError(
                f"{path!r} is an archive: unpack it (`tar xzf`) and pass the "
                "inception_vN.ckpt inside"
            )
    tf = _import_tensorflow(path)
    prefix = checkpoint_prefix(path)
    try:
        reader = tf.train.load_checkpoint(prefix)
        names = sorted(reader.get_variable_to_shape_map())
    except Exception as err:  # noqa: BLE001 - TF's many error types become one line
        raise ValueError(
            f"could not read {path!r} as a TensorFlow checkpoint: {one_line(err)}"
        ) from None
    state = {}
    for name in names:
        try:
            value = np.asarray(reader.get_tensor(name))
        except Exception as err:  # noqa: BLE001
            raise ValueError(
                f"could not read tensor {name!r} from {path!r} (truncated or corrupt "
                f"checkpoint?): {one_line(err)}"
            ) from None
        if np.issubdtype(value.dtype, np.floating):
            value = value.astype("float32")
        state[name] = value
    if not state:
        raise ValueError(f"{path!r} holds no tensors")
    return state
