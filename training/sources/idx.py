"""Fashion-MNIST from its original idx files (gzipped or not).

The files are looked for in ``data_dir``, then in Debian's ``/usr/share/datasets/fashion-mnist``
(package ``dataset-fashion-mnist``); `training.data` falls back to TFDS when neither has them.
"""

from __future__ import annotations

import gzip
import os
import pathlib
import struct
from collections.abc import Sequence

import numpy as np

from training import augment
from training.sources.base import Source, holdout, limit_count, tensor_split

FASHION_MNIST_CLASS_NAMES = [
    "T-shirt/top",
    "Trouser",
    "Pullover",
    "Dress",
    "Coat",
    "Sandal",
    "Shirt",
    "Sneaker",
    "Bag",
    "Ankle boot",
]
# Where Debian's `dataset-fashion-mnist` package puts the idx files; searched after data_dir.
FASHION_MNIST_DIRS = (pathlib.Path("/usr/share/datasets/fashion-mnist"),)
IDX_FILES = {
    "train_images": "train-images-idx3-ubyte",
    "train_labels": "train-labels-idx1-ubyte",
    "test_images": "t10k-images-idx3-ubyte",
    "test_labels": "t10k-labels-idx1-ubyte",
}


def read_idx(path: str | os.PathLike, expected_ndim: int | None = None) -> np.ndarray:
    """Reads an idx file (optionally gzipped) of unsigned bytes into a NumPy array.

    Args:
        path: str or path. The file.
        expected_ndim: int or None. Refuse any other number of dimensions. Defaults to None.

    Raises:
        ValueError: naming the file when it is corrupt, truncated or not uint8 idx.
    """
    path = pathlib.Path(path)
    try:
        with open(path, "rb") as f:
            raw = f.read()
        if raw[:2] == b"\x1f\x8b":
            raw = gzip.decompress(raw)
    except (OSError, EOFError, gzip.BadGzipFile) as e:
        raise ValueError(f"cannot read idx file {path}: {e}") from e
    if len(raw) < 4 or raw[0] != 0 or raw[1] != 0:
        raise ValueError(f"{path} is not an idx file: bad magic number {raw[:4]!r}")
    dtype_code, ndim = raw[2], raw[3]
    if dtype_code != 0x08:
        raise ValueError(
            f"{path}: expected unsigned-byte idx data (0x08); found 0x{dtype_code:02x}"
        )
    if expected_ndim is not None and ndim != expected_ndim:
        raise ValueError(f"{path}: expected {expected_ndim} dimensions; found {ndim}")
    header = 4 + 4 * ndim
    if len(raw) < header:
        raise ValueError(f"{path} is truncated: {len(raw)} bytes, header needs {header}")
    dims = struct.unpack(f">{ndim}I", raw[4:header])
    size = int(np.prod(dims))
    if len(raw) - header != size:
        raise ValueError(
            f"{path} is truncated or corrupt: shape {dims} needs {size} data bytes; "
            f"found {len(raw) - header}"
        )
    return np.frombuffer(raw, np.uint8, offset=header).reshape(dims)


def find_idx_files(folder: pathlib.Path) -> dict[str, pathlib.Path] | None:
    """The four idx files in ``folder`` (plain or .gz); None when none is there.

    Raises:
        FileNotFoundError: some of the four are there but not all, naming the missing.
    """
    found, missing = {}, []
    for key, stem in IDX_FILES.items():
        for candidate in (folder / stem, folder / f"{stem}.gz"):
            if candidate.is_file():
                found[key] = candidate
                break
        else:
            missing.append(f"{stem}[.gz]")
    if not found:
        return None
    if missing:
        raise FileNotFoundError(f"{folder} has some Fashion-MNIST idx files but not {missing}")
    return found


def search_folders(data_dir: str | None, defaults: Sequence[pathlib.Path]) -> list[pathlib.Path]:
    """``data_dir`` (which must exist when given), then ``defaults``.

    Raises:
        FileNotFoundError: ``data_dir`` is given but is not a folder.
    """
    searched = []
    if data_dir is not None:
        folder = pathlib.Path(data_dir)
        if not folder.is_dir():
            raise FileNotFoundError(
                f"data_dir {str(folder)!r} for fashion_mnist does not exist; pass the folder "
                "holding train-images-idx3-ubyte.gz, train-labels-idx1-ubyte.gz, "
                "t10k-images-idx3-ubyte.gz and t10k-labels-idx1-ubyte.gz"
            )
        searched.append(folder)
    return searched + [pathlib.Path(d) for d in defaults if pathlib.Path(d) not in searched]


def load(
    folders: Sequence[pathlib.Path], *, val_fraction: float, seed: int, train_limit: int | None
) -> Source | None:
    """Fashion-MNIST from the first of ``folders`` holding the idx files; None when none does.

    Args:
        folders: sequence of paths. Searched in order.
        val_fraction: float. Held-out fraction of the train file (stratified).
        seed: int. Seed of the hold-out.
        train_limit: int or None. Keep only the first N training examples.

    Raises:
        ValueError: a corrupt or inconsistent file, naming it.
        FileNotFoundError: a folder holds some of the four files but not all.
    """
    for folder in folders:
        files = find_idx_files(folder) if folder.is_dir() else None
        if files is not None:
            return _from_files(files, val_fraction, seed, train_limit)
    return None


def _from_files(
    files: dict[str, pathlib.Path], val_fraction: float, seed: int, train_limit: int | None
) -> Source:
    arrays = {}
    for key, path in files.items():
        arrays[key] = read_idx(path, expected_ndim=3 if key.endswith("images") else 1)
    for split in ("train", "test"):
        images, labels = arrays[f"{split}_images"], arrays[f"{split}_labels"]
        if images.shape[0] != labels.shape[0]:
            raise ValueError(
                f"{files[f'{split}_images']} has {images.shape[0]} images but "
                f"{files[f'{split}_labels']} has {labels.shape[0]} labels"
            )
        if labels.size and labels.max() >= len(FASHION_MNIST_CLASS_NAMES):
            raise ValueError(f"{files[f'{split}_labels']}: label {labels.max()} is not in 0..9")
    train_x, train_y = arrays["train_images"], arrays["train_labels"]
    if train_x.shape[1] != train_x.shape[2]:
        raise ValueError(f"{files['train_images']}: images must be square; found {train_x.shape}")
    train_idx, val_idx = holdout(train_y, val_fraction, seed)
    train_idx = train_idx[: limit_count(len(train_idx), train_limit)]

    def split(x: np.ndarray, y: np.ndarray):
        return tensor_split(np.ascontiguousarray(x[..., np.newaxis]), y)

    return Source(
        train=split(train_x[train_idx], train_y[train_idx]),
        validation=split(train_x[val_idx], train_y[val_idx]),
        test=split(arrays["test_images"], arrays["test_labels"]),
        class_names=list(FASHION_MNIST_CLASS_NAMES),
        kind="decoded",
        small=train_x.shape[1] <= augment.SMALL_IMAGE_MAX_SIDE,
        native_size=int(train_x.shape[1]),
        native_channels=1,
        in_memory=True,
        cache_bytes=0,
    )
