"""The Keras-to-torch translator of `benchmarks.peers`: a functional Keras graph as a torch
module with the same layers, widths, strides, paddings and parameters.

Two halves, one per process:

* the Keras side (the TensorFlow process): `describe_graph` turns a functional model into
  a plain JSON-able description, `export_weights` writes its weights to an .npz file;
* the torch side (the torch process, `benchmarks/torch_worker.py`): `torch_twin` builds
  the torch module of a description, `load_keras_weights` copies the .npz weights into it.

The module imports only NumPy at load (torch where a torch-side function runs): it loads
in both processes, and torch and TensorFlow must never load in one (they crash after a
torch forward pass: two OpenMP runtimes).

Example (the two halves, in their two processes):

```python
graph = describe_graph(model)  # TensorFlow process; sent to the torch process as JSON
export_weights(model, "weights.npz")
twin = torch_twin(graph)  # torch process
load_keras_weights(twin, graph, dict(np.load("weights.npz")))
```
"""

from __future__ import annotations

import functools
import json
import os
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING

import numpy as np

if TYPE_CHECKING:  # annotations only: this module never imports Keras
    import keras

# Keras layer classes the translation knows (`FusedBatchNormalization` reports Keras's
# class name, "BatchNormalization": same arguments and numbers).
TORCH_LAYERS = (
    "InputLayer",
    "Conv2D",
    "BatchNormalization",
    "Activation",
    "MaxPooling2D",
    "AveragePooling2D",
    "ZeroPadding2D",
    "Concatenate",
    "GlobalAveragePooling2D",
    "AdaptiveAveragePooling2D",
    "Flatten",
    "Dense",
    "Dropout",
)


def describe_graph(model: keras.Model) -> dict:
    """A plain (JSON-able) description of a functional Keras model, for `torch_twin`:
    its layers in topological order, each with class name, config, inbound layer names,
    input and output shapes; and its outputs, by output name (a model whose output is a
    tensor or a list: by `model.output_names`, the keys of `default_loss_weights`).

    Raises:
        TypeError: for a model that is not functional (a Sequential, a subclass).
        ValueError: for a layer class `torch_twin` does not translate (`TORCH_LAYERS`),
            or a layer called more than once.
    """
    operations = getattr(model, "operations", None)
    if operations is None:
        raise TypeError(
            f"describe_graph needs a functional keras.Model; received {type(model).__name__}"
        )
    layers, seen = [], set()
    for layer in operations:
        kind = type(layer).__name__
        if kind not in TORCH_LAYERS:
            raise ValueError(
                f"layer {layer.name!r} ({kind}) has no torch counterpart in benchmarks.keras_to_torch; "
                f"translated: {list(TORCH_LAYERS)}"
            )
        nodes = layer._inbound_nodes
        if len(nodes) != 1:
            raise ValueError(
                f"layer {layer.name!r} is called {len(nodes)} times; benchmarks.peers "
                "translates graphs whose layers are called once"
            )
        node = nodes[0]
        inbound = [t._keras_history.operation.name for t in node.input_tensors]
        if not set(inbound) <= seen:
            raise ValueError(f"layer {layer.name!r} comes before its inputs {inbound}")
        seen.add(layer.name)
        layers.append(
            {
                "name": layer.name,
                "class": kind,
                "config": json.loads(json.dumps(layer.get_config(), default=str)),
                "inbound": inbound,
                "input_shapes": [list(t.shape) for t in node.input_tensors],
                "output_shape": list(node.output_tensors[0].shape),
            }
        )
    if isinstance(model.output, dict):
        outputs = model.output
    else:
        tensors = model.output if isinstance(model.output, list | tuple) else [model.output]
        outputs = dict(zip(model.output_names, tensors, strict=True))
    return {
        "name": model.name,
        "layers": layers,
        "outputs": {key: t._keras_history.operation.name for key, t in outputs.items()},
    }


def export_weights(model: keras.Model, path: str | os.PathLike) -> None:
    """Every weight of `model` into an .npz file, keyed `"{layer name}/{weight name}"`
    (Keras layouts: conv kernels HWIO, dense kernels (in, out)); `load_keras_weights`
    reads it into the twin."""
    arrays = {
        f"{layer.name}/{variable.name}": np.asarray(variable.numpy())
        for layer in model.layers
        for variable in layer.weights
    }
    np.savez(path, **arrays)


def same_padding(size: int, kernel: int, stride: int) -> tuple[int, int]:
    """TensorFlow's "same" padding of one axis: (before, after), the extra one after."""
    out = -(-size // stride)
    total = max((out - 1) * stride + kernel - size, 0)
    return total // 2, total - total // 2


def torch_ceil_output(size: int, kernel: int, stride: int, pad: int) -> int:
    """Output length of torch's pooling with `ceil_mode=True` and `pad` on each side."""
    out = -(-(size + 2 * pad - kernel) // stride) + 1
    if (out - 1) * stride >= size + pad:  # the last window must start inside
        out -= 1
    return out


@functools.cache
def _torch_classes() -> tuple[type, type]:
    """(Concat, KerasTwin): nn.Module classes, defined once torch is imported."""
    import torch
    from torch import nn

    class Concat(nn.Module):
        def __init__(self, dim: int):
            super().__init__()
            self.dim = dim

        def forward(self, inputs):
            return torch.cat(inputs, self.dim)

        def extra_repr(self) -> str:
            return f"dim={self.dim}"

    class KerasTwin(nn.Module):
        """A translated Keras graph: one module per Keras layer (`ops`, by layer name),
        run in the graph's order. Returns a dict of outputs; outputs whose Keras layer
        ends in a softmax return logits (`softmax_outputs` names them)."""

        def __init__(self, graph: Mapping, ops: Mapping[str, nn.Module], softmax_outputs):
            super().__init__()
            self.ops = nn.ModuleDict(ops)
            self.input_name = graph["layers"][0]["name"]
            self.plan = [(entry["name"], entry["inbound"]) for entry in graph["layers"][1:]]
            self.multi = {name for name, module in ops.items() if isinstance(module, Concat)}
            self.outputs = dict(graph["outputs"])
            self.softmax_outputs = frozenset(softmax_outputs)

        def forward(self, x):
            values = {self.input_name: x}
            for name, inbound in self.plan:
                if name in self.multi:
                    values[name] = self.ops[name]([values[i] for i in inbound])
                else:
                    values[name] = self.ops[name](values[inbound[0]])
            return {key: values[name] for key, name in self.outputs.items()}

    return Concat, KerasTwin


def _pair(value) -> tuple[int, int]:
    return (value, value) if isinstance(value, int) else (int(value[0]), int(value[1]))


def torch_twin(graph: Mapping):
    """The torch module of a `describe_graph` description: the same layers, widths,
    strides and paddings (TensorFlow's "same" padding reproduced: in the layer where it
    is symmetric, by `ceil_mode` for max pools padded one more at the end, else by an
    explicit pad), the same trainable parameters. `googlenet_demo`'s 3x3/2 max pools,
    for example: 28 -> 14 and 14 -> 7 pad 0 before and 1 after (`ceil_mode`), 7 -> 4
    pads 1 on each side (`padding=1`).

    Deviations, none of which changes a parameter count or (with `load_keras_weights`)
    an output: dense layers after a `Flatten` read channels-first (torch's flatten);
    outputs whose Keras layer ends in a softmax return logits (trained with torch's
    `cross_entropy`); the running-statistics momentum is `1 - momentum` (torch's
    convention); ReLUs that follow a conv, batch norm or dense layer used nowhere else
    run in place (as torchvision's).
    """
    from torch import nn

    Concat, KerasTwin = _torch_classes()
    layers = graph["layers"]
    if not layers or layers[0]["class"] != "InputLayer":
        raise ValueError(f"{graph.get('name')}: the first layer must be the input")
    kinds = {entry["name"]: entry["class"] for entry in layers}
    consumers: dict[str, int] = {}
    for entry in layers:
        for name in entry["inbound"]:
            consumers[name] = consumers.get(name, 0) + 1
    for name in graph["outputs"].values():
        consumers[name] = consumers.get(name, 0) + 1
    output_layers = set(graph["outputs"].values())

    ops: dict[str, nn.Module] = {}
    softmax_outputs = []
    for entry in layers[1:]:
        name, kind, config = entry["name"], entry["class"], entry["config"]
        shape = entry["input_shapes"][0]  # channels-last, batch first
        if config.get("data_format", "channels_last") != "channels_last":
            raise ValueError(f"layer {name!r}: only channels_last Keras layers are translated")

        def activation(module, act, *, name=name):
            """A conv or dense layer's own activation: ReLU in place; softmax: logits."""
            if act == "linear":
                return module
            if act == "relu":
                return nn.Sequential(module, nn.ReLU(inplace=True))
            if act == "softmax" and name in output_layers:
                softmax_outputs.append(name)
                return module  # logits; cross_entropy applies the softmax
            raise ValueError(f"layer {name!r}: activation {act!r} is not translated")

        if kind == "Conv2D":
            kernel, strides = _pair(config["kernel_size"]), _pair(config["strides"])
            if _pair(config["dilation_rate"]) != (1, 1):
                raise ValueError(f"layer {name!r}: dilated convolutions are not translated")
            pads = [(0, 0), (0, 0)]
            if config["padding"] == "same":
                pads = [same_padding(shape[1 + i], kernel[i], strides[i]) for i in range(2)]
            symmetric = all(before == after for before, after in pads)
            conv = nn.Conv2d(
                shape[-1],
                config["filters"],
                kernel,
                stride=strides,
                padding=tuple(p[0] for p in pads) if symmetric else 0,
                groups=config.get("groups", 1),
                bias=config["use_bias"],
            )
            if not symmetric:
                (top, bottom), (left, right) = pads
                conv = nn.Sequential(nn.ZeroPad2d((left, right, top, bottom)), conv)
            ops[name] = activation(conv, config["activation"])
        elif kind == "BatchNormalization":
            if config.get("renorm") or config["axis"] not in (-1, 3, [-1], [3]):
                raise ValueError(f"layer {name!r}: only channel-axis batch norm is translated")
            bn = nn.BatchNorm2d(shape[-1], eps=config["epsilon"], momentum=1 - config["momentum"])
            if not config["scale"]:
                bn.weight.requires_grad_(False)  # Keras has no gamma: fixed at one
            if not config["center"]:
                bn.bias.requires_grad_(False)
            ops[name] = bn
        elif kind == "Activation":
            act = config["activation"]
            producer = entry["inbound"][0]
            in_place = consumers[producer] == 1 and kinds[producer] in (
                "Conv2D",
                "BatchNormalization",
                "Dense",
            )
            if act == "relu":
                ops[name] = nn.ReLU(inplace=in_place)
            elif act == "softmax":
                ops[name] = nn.Softmax(dim=1)
            elif act == "linear":
                ops[name] = nn.Identity()
            else:
                raise ValueError(f"layer {name!r}: activation {act!r} is not translated")
        elif kind in ("MaxPooling2D", "AveragePooling2D"):
            ops[name] = _pool(name, kind, config, shape)
        elif kind == "ZeroPadding2D":
            (top, bottom), (left, right) = config["padding"]
            ops[name] = nn.ZeroPad2d((left, right, top, bottom))
        elif kind == "Concatenate":
            rank = len(entry["output_shape"])
            axis = config["axis"] % rank
            dim = {1: 1} if rank == 2 else {3: 1, 1: 2, 2: 3}
            if axis not in dim:
                raise ValueError(f"layer {name!r}: concatenation on axis {axis} of rank {rank}")
            ops[name] = Concat(dim[axis])
        elif kind == "GlobalAveragePooling2D":
            pool = nn.AdaptiveAvgPool2d(1)
            ops[name] = pool if config.get("keepdims") else nn.Sequential(pool, nn.Flatten(1))
        elif kind == "AdaptiveAveragePooling2D":
            ops[name] = nn.AdaptiveAvgPool2d(config["output_size"])
        elif kind == "Flatten":
            ops[name] = nn.Flatten(1)
        elif kind == "Dense":
            if len(shape) != 2:
                raise ValueError(f"layer {name!r}: dense layers on rank-{len(shape)} inputs")
            linear = nn.Linear(shape[-1], config["units"], bias=config["use_bias"])
            ops[name] = activation(linear, config["activation"])
        elif kind == "InputLayer":
            raise ValueError(f"layer {name!r}: a second input; one input is translated")
        elif kind == "Dropout":
            if config.get("noise_shape") is not None:
                raise ValueError(f"layer {name!r}: dropout with a noise_shape is not translated")
            ops[name] = nn.Dropout(config["rate"])
        else:
            raise ValueError(
                f"layer {name!r} ({kind}) has no torch counterpart in benchmarks.keras_to_torch; "
                f"translated: {list(TORCH_LAYERS)}"
            )
    return KerasTwin(graph, ops, softmax_outputs)


def _pool(name: str, kind: str, config: Mapping, shape: Sequence[int]):
    """Max or average pooling with Keras's window, stride and padding."""
    from torch import nn

    kernel = _pair(config["pool_size"])
    strides = _pair(config["strides"] or kernel)
    size = (shape[1], shape[2])
    if config["padding"] == "valid":
        pads = [(0, 0), (0, 0)]
    else:
        pads = [same_padding(size[i], kernel[i], strides[i]) for i in range(2)]
    before = tuple(p[0] for p in pads)
    fits = all(b <= k // 2 for b, k in zip(before, kernel, strict=True))  # torch's limit
    if kind == "AveragePooling2D":
        # Keras's "same" average ignores the padding: count_include_pad=False.
        if all(b == a for b, a in pads) and fits:
            return nn.AvgPool2d(kernel, strides, padding=before, count_include_pad=False)
        raise ValueError(
            f"layer {name!r}: average pooling with asymmetric padding {pads} is not translated"
        )
    if all(b == a for b, a in pads) and fits:
        return nn.MaxPool2d(kernel, strides, padding=before)
    # One more at the end (stride-2 "same" pools on even sizes): ceil_mode gives the same
    # windows where it gives as many of them.
    wanted = [-(-size[i] // strides[i]) for i in range(2)]
    ceil = [torch_ceil_output(size[i], kernel[i], strides[i], before[i]) for i in range(2)]
    if fits and ceil == wanted:
        return nn.MaxPool2d(kernel, strides, padding=before, ceil_mode=True)
    (top, bottom), (left, right) = pads
    return nn.Sequential(
        nn.ConstantPad2d((left, right, top, bottom), float("-inf")), nn.MaxPool2d(kernel, strides)
    )


def _weighted(module):
    """The conv, batch norm or linear module of a translated layer (past its pad/ReLU)."""
    from torch import nn

    if isinstance(module, nn.Sequential):
        for part in module:
            if isinstance(part, nn.Conv2d | nn.Linear):
                return part
    return module


def _flatten_source(graph: Mapping, name: str) -> list[int] | None:
    """The (h, w, c) shape a dense layer's input was flattened from, through dropouts."""
    entries = {entry["name"]: entry for entry in graph["layers"]}
    entry = entries[entries[name]["inbound"][0]]
    while entry["class"] == "Dropout":
        entry = entries[entry["inbound"][0]]
    if entry["class"] == "Flatten":
        return entry["input_shapes"][0][1:]
    return None


def load_keras_weights(twin, graph: Mapping, arrays: Mapping[str, np.ndarray]) -> int:
    """Copies `export_weights`'s arrays into `twin`: conv kernels HWIO -> OIHW, dense
    kernels (in, out) -> (out, in) (rows permuted after a `Flatten`, which torch reads
    channels-first), BN gamma/beta/moving mean/variance. Returns the arrays copied;
    ValueError for a layer's weights that do not fit or an array left over."""
    import torch

    used = 0
    with torch.no_grad():
        for entry in graph["layers"]:
            name, kind = entry["name"], entry["class"]
            if kind not in ("Conv2D", "Dense", "BatchNormalization"):
                continue
            module = _weighted(twin.ops[name])
            if kind == "Conv2D":
                pairs = {"kernel": (module.weight, lambda a: a.transpose(3, 2, 0, 1))}
            elif kind == "Dense":
                source = _flatten_source(graph, name)

                def dense(a, source=source):
                    if source is not None:  # keras rows (h, w, c) -> torch rows (c, h, w)
                        a = a.reshape(*source, -1).transpose(2, 0, 1, 3).reshape(a.shape)
                    return a.T

                pairs = {"kernel": (module.weight, dense)}
            else:
                pairs = {
                    "gamma": (module.weight, None),
                    "beta": (module.bias, None),
                    "moving_mean": (module.running_mean, None),
                    "moving_variance": (module.running_var, None),
                }
            if kind != "BatchNormalization" and module.bias is not None:
                pairs["bias"] = (module.bias, None)
            for weight_name, (target, transform) in pairs.items():
                key = f"{name}/{weight_name}"
                if key not in arrays:
                    continue  # e.g. a Keras batch norm without gamma
                array = arrays[key] if transform is None else transform(arrays[key])
                if tuple(array.shape) != tuple(target.shape):
                    raise ValueError(
                        f"{key}: shape {tuple(array.shape)} does not fit {tuple(target.shape)}"
                    )
                target.copy_(torch.from_numpy(np.ascontiguousarray(array)))
                used += 1
    if used != len(arrays):
        raise ValueError(f"{len(arrays) - used} of {len(arrays)} Keras arrays were not copied")
    return used
