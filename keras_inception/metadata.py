"""Class names inside a `.keras` file, as keras-hub presets keep theirs in metadata.json.

A `.keras` file is a zip archive of `config.json`, `model.weights.h5` and `metadata.json`
(Keras version, date). `write_class_names` adds a `"class_names"` list to that
metadata.json; `keras.saving.load_model` reads only its own keys, so the file still loads
in plain Keras, and `class_names_of` reads the names back without building the model.
"""

from __future__ import annotations

import json
import os
import tempfile
import zipfile
from collections.abc import Sequence

METADATA_MEMBER = "metadata.json"
CLASS_NAMES_KEY = "class_names"


def _check_archive(path: str) -> None:
    if not os.path.isfile(path):
        raise FileNotFoundError(f"model file not found: {path!r}")
    if not zipfile.is_zipfile(path):
        raise ValueError(f"expected a .keras file (a zip archive); received {path!r}")


def write_class_names(path: str | os.PathLike, class_names: Sequence[str]) -> None:
    """Records `class_names` (by label) in the metadata.json of the `.keras` file at `path`.

    The archive is rewritten next to itself and moved into place, so an interrupted call
    leaves the old file.

    Args:
        path: str. A file written by `model.save(...)`.
        class_names: sequence of str. One name per class, by label.

    Raises:
        FileNotFoundError, ValueError: no file, not a `.keras` archive, or names that
            are not strings.

    Example:
    >>> import keras
    >>> path = os.path.join(tempfile.mkdtemp(), "m.keras")
    >>> keras.Sequential([keras.Input((2,)), keras.layers.Dense(2)]).save(path)
    >>> write_class_names(path, ["cat", "dog"])
    >>> class_names_of(path)
    ['cat', 'dog']
    """
    path = os.fspath(path)
    names = list(class_names)
    if not all(isinstance(name, str) for name in names):
        raise ValueError(f"class_names must be strings; received {names!r}")
    _check_archive(path)
    with zipfile.ZipFile(path) as archive:
        members = [(info, archive.read(info.filename)) for info in archive.infolist()]
    metadata = {}
    for info, data in members:
        if info.filename == METADATA_MEMBER:
            metadata = json.loads(data)
    metadata[CLASS_NAMES_KEY] = names
    folder = os.path.dirname(os.path.abspath(path))
    handle, temporary = tempfile.mkstemp(suffix=".keras", dir=folder)
    os.close(handle)
    try:
        with zipfile.ZipFile(temporary, "w") as archive:
            for info, data in members:
                if info.filename != METADATA_MEMBER:
                    archive.writestr(info, data)
            archive.writestr(METADATA_MEMBER, json.dumps(metadata, indent=2))
        os.replace(temporary, path)
    except BaseException:
        os.remove(temporary)
        raise


def class_names_of(path: str | os.PathLike) -> list[str] | None:
    """The class names recorded in the `.keras` file at `path` (`write_class_names`), or
    None when it records none.

    Raises:
        FileNotFoundError, ValueError: no file, or not a `.keras` archive.
    """
    path = os.fspath(path)
    _check_archive(path)
    with zipfile.ZipFile(path) as archive:
        if METADATA_MEMBER not in archive.namelist():
            return None
        metadata = json.loads(archive.read(METADATA_MEMBER))
    names = metadata.get(CLASS_NAMES_KEY)
    return list(names) if names is not None else None


def write_labels(folder: str | os.PathLike, class_names: Sequence[str]) -> str:
    """Writes `folder/labels.txt`, one class name a line (by label); returns its path."""
    path = os.path.join(folder, "labels.txt")
    with open(path, "w", encoding="utf-8") as f:
        f.writelines(f"{name}\n" for name in class_names)
    return path


def read_labels(path: str | os.PathLike) -> list[str]:
    """The class names of a `labels.txt` written by `write_labels`."""
    with open(path, encoding="utf-8") as f:
        return [line.rstrip("\n") for line in f]
