"""Reading a state dict and assigning it to a Keras model, strictly.

A state dict is a flat mapping of tensor names to arrays. `read_state_dict` reads one
from a PyTorch `.pth` file (through `torch.load(weights_only=True)`, so torch must be
installed), from `.safetensors` (the `safetensors` package, no torch) or from `.npz`
(numpy only). `assign` copies it into a model by an explicit plan: every Keras weight
gets a source tensor of the right shape, and every source tensor is used or named as
skipped. Nothing is assigned unless everything fits; the error names the file and the
first tensor that does not.
"""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Callable, Mapping

import keras
import numpy as np

TORCH_SUFFIXES = (".pth", ".pt", ".bin")
FORMATS = {
    **dict.fromkeys(TORCH_SUFFIXES, "torch"),
    ".safetensors": "safetensors",
    ".npz": "npz",
}


def one_line(err: BaseException, limit: int = 300) -> str:
    """An exception as one line of at most `limit` characters, its type first."""
    text = " ".join(str(err).split())
    if len(text) > limit:
        text = text[: limit - 3] + "..."
    return f"{type(err).__name__}: {text}" if text else type(err).__name__


def _file_format(path: str) -> str:
    for suffix, kind in FORMATS.items():
        if path.lower().endswith(suffix):
            return kind
    raise ValueError(f"unknown state dict file type {path!r}; expected one of {sorted(FORMATS)}")


def _read_torch(path: str) -> Mapping:
    try:
        import torch
    except ImportError as err:
        raise ImportError(
            f"reading {path!r} needs PyTorch (`pip install torch`); without it, save the "
            "state dict as .safetensors (`safetensors.torch.save_file`) or .npz "
            "(`numpy.savez`) on a machine that has torch, and pass that file"
        ) from err
    state = torch.load(path, map_location="cpu", weights_only=True)
    # Training checkpoints nest the model's state dict.
    for key in ("state_dict", "model"):
        if isinstance(state, Mapping) and isinstance(state.get(key), Mapping):
            state = state[key]
    if not isinstance(state, Mapping):
        raise ValueError(f"holds a {type(state).__name__}, not a state dict")
    arrays = {}
    for name, value in state.items():
        if not isinstance(value, torch.Tensor):
            raise ValueError(f"entry {name!r} is a {type(value).__name__}, not a tensor")
        if value.is_floating_point():
            value = value.float()
        arrays[name] = value.detach().cpu().numpy()
    return arrays


def _read_safetensors(path: str) -> Mapping:
    try:
        from safetensors.numpy import load_file
    except ImportError as err:
        raise ImportError(f"reading {path!r} needs `pip install safetensors`") from err
    return load_file(path)


def _read_npz(path: str) -> Mapping:
    with np.load(path, allow_pickle=False) as data:
        return {name: data[name] for name in data.files}


def read_state_dict(path: str | os.PathLike) -> dict[str, np.ndarray]:
    """Reads a state dict from `.pth`/`.pt`/`.bin` (torch), `.safetensors` or `.npz`.

    Floating-point tensors come back as float32 numpy arrays; a leading `module.` (a
    `DataParallel` model) is removed from every name.

    Args:
        path: str or PathLike. The file.

    Returns:
        dict of tensor name to numpy array.

    Raises:
        FileNotFoundError: if `path` does not exist.
        ImportError: for a `.pth` file when torch is not installed.
        ValueError: for an unknown suffix or a file that cannot be read (one line,
            naming the file).

    Example:
    >>> state = read_state_dict("googlenet-1378be20.pth")  # doctest: +SKIP
    >>> state["conv1.conv.weight"].shape  # doctest: +SKIP
    (64, 3, 7, 7)
    """
    path = os.fspath(path)
    kind = _file_format(path)
    if not os.path.isfile(path):
        raise FileNotFoundError(f"state dict file not found: {path!r}")
    reader = {"torch": _read_torch, "safetensors": _read_safetensors, "npz": _read_npz}[kind]
    try:
        state = reader(path)
    except ImportError:
        raise
    except Exception as err:  # noqa: BLE001 - every reader's failure becomes one line
        raise ValueError(
            f"could not read {path!r} as a {kind} state dict: {one_line(err)}"
        ) from None
    state = {name: np.asarray(value) for name, value in state.items()}
    state = {
        name: value.astype("float32") if np.issubdtype(value.dtype, np.floating) else value
        for name, value in state.items()
    }
    if state and all(name.startswith("module.") for name in state):
        state = {name[len("module.") :]: value for name, value in state.items()}
    if not state:
        raise ValueError(f"{path!r} holds no tensors")
    return state


@dataclasses.dataclass(frozen=True)
class Source:
    """Where one Keras weight comes from.

    Args:
        key: str. Name of the source tensor.
        transform: callable or None. Maps the source array to the Keras layout (e.g. a
            conv kernel's `(out, in, kh, kw)` to `(kh, kw, in, out)`).
        fill: float or None. The constant the weight takes when the file has no `key`
            (TF-Slim's batch norm has no gamma: 1). None: the tensor is required.
        keep: bool. When the file has no `key`, the weight keeps its value (the
            classifier, from a keras.applications file without the top). Defaults to
            False.
    """

    key: str
    transform: Callable[[np.ndarray], np.ndarray] | None = None
    fill: float | None = None
    keep: bool = False


def assign(
    model: keras.Model,
    state: Mapping[str, np.ndarray],
    plan: Mapping[str, Source | None],
    *,
    path: str,
    skip: Callable[[str], bool],
    description: str,
) -> list[str]:
    """Assigns `state` to `model` by `plan`, strictly; returns the skipped tensor names.

    Every weight of `model` (by `variable.path`, e.g. `"conv1_conv/kernel"`) must have
    an entry in `plan`, its source tensor must be in `state` and must convert to the
    weight's shape. Every tensor of `state` must be used or accepted by `skip`. Nothing
    is assigned unless all of this holds. A weight planned as None (a layer the source
    does not have, such as an auxiliary head) keeps its value.

    Args:
        model: keras.Model. The model to fill.
        state: mapping. Source tensor name -> array.
        plan: mapping. Keras weight path -> `Source`, or None to keep the weight.
        path: str. The file `state` came from, for messages.
        skip: callable. True for a source tensor that is deliberately left out.
        description: str. What the file should be, e.g. "a torchvision googlenet state
            dict", for messages.

    Returns:
        Sorted names of the skipped source tensors.

    Raises:
        ValueError: one line naming `path` and the first tensor that does not fit.
    """
    values = []
    used = set()
    for variable in model.weights:
        if variable.path not in plan:
            raise ValueError(
                f"{path!r}: no source tensor is planned for Keras weight {variable.path!r} "
                f"of {model.name}"
            )
        source = plan[variable.path]
        if source is None:
            continue
        expected = tuple(variable.shape)
        if source.key not in state:
            if source.keep:
                continue
            if source.fill is not None:
                values.append((variable, np.full(expected, source.fill, "float32")))
                continue
            raise ValueError(
                f"{path!r} is not {description}, or is truncated: tensor {source.key!r} "
                f"(for Keras weight {variable.path!r}) is missing"
            )
        array = state[source.key]
        value = source.transform(array) if source.transform else array
        if tuple(value.shape) != expected:
            raise ValueError(
                f"{path!r}: tensor {source.key!r} has shape {tuple(array.shape)}, which "
                f"does not fit Keras weight {variable.path!r} of shape {expected}"
            )
        if not np.all(np.isfinite(value)):
            raise ValueError(f"{path!r}: tensor {source.key!r} holds NaN or infinite values")
        values.append((variable, value))
        used.add(source.key)
    skipped = sorted(name for name in state if name not in used and skip(name))
    unexpected = [name for name in state if name not in used and not skip(name)]
    if unexpected:
        raise ValueError(
            f"{path!r} is not {description}: tensor {unexpected[0]!r} "
            f"{tuple(np.shape(state[unexpected[0]]))} has no place in the model "
            f"({len(unexpected)} such tensors)"
        )
    for variable, value in values:
        variable.assign(np.asarray(value, dtype=variable.dtype))
    return skipped


def conv_kernel(array: np.ndarray) -> np.ndarray:
    """torch `(out, in, kh, kw)` -> Keras `(kh, kw, in, out)`."""
    if array.ndim != 4:
        return array  # the shape check reports it
    return np.transpose(array, (2, 3, 1, 0))


def dense_kernel(array: np.ndarray) -> np.ndarray:
    """torch `(out, in)` -> Keras `(in, out)`."""
    if array.ndim != 2:
        return array
    return array.T
