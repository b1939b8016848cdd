"""The torch process of `benchmarks.inference`: torchvision's GoogLeNet and InceptionV3
timed at inference, run by path.

torch and TensorFlow in one process crash after a torch forward pass (two OpenMP
runtimes), so the torch rows run in a child process: `python
benchmarks/torch_inference_worker.py [THREADS]`, which imports torch, torchvision, NumPy
and its sibling `cpu_time`, and never TensorFlow, Keras or the `benchmarks` package
(whose import starts TensorFlow). The driver (`benchmarks.inference_engines.InferencePeer`, a
`benchmarks.torch_worker.TorchPeer` started on this file) sends one JSON line a request
on the child's stdin; each reply is one JSON line on its stdout: `{"ok": true, ...}` or
`{"ok": false, "error": ...}`. Commands:

* `info`: torch's and torchvision's versions, threads, oneDNN;
* `build` (`id`, `model`, `engine`, `size`, `seed`): the model of `model` in `ENGINES`'s
  way `engine`, with its random inputs, kept under `id`;
* `run` (`id`, `batch`, `calls`): `calls` forward passes on a batch of `batch` images;
  replies each call's wall `seconds`, and this process's CPU seconds and wall seconds
  over them (`cpu_time.CpuTime`), and the output's shape;
* `export_onnx` (`model`, `size`, `seed`, `path`): the model, NCHW, written to `path` by
  `torch.onnx.export` with a dynamic batch (the driver runs it with ONNX Runtime);
* `quit`.

Every model is `torchvision.models.<model>(weights=None, aux_logits=False,
init_weights=True)` in eval mode, called under `torch.inference_mode()`, seeded with
`torch.manual_seed(seed)`. The inputs are `inputs(size, batch, seed)`: the driver's
random raw pixels, normalized as torchvision's weights expect, NCHW.
"""

from __future__ import annotations

import os
import time
import warnings
from collections.abc import Mapping
from typing import TextIO

import numpy as np

if __package__:  # benchmarks.torch_inference_worker: imported by the driver, for `inputs`
    from benchmarks.cpu_time import CpuTime
    from benchmarks.torch_worker import answer, torch_info, worker_main
else:  # the torch process, run by path: its siblings are top-level modules
    from cpu_time import CpuTime
    from torch_worker import answer, torch_info, worker_main

MODELS = ("googlenet", "inception_v3")
# The torch ways of running a model: engine -> (memory format, torch.compile).
ENGINES: Mapping[str, tuple[str, bool]] = {
    "eager": ("nchw", False),
    "channels_last": ("channels_last", False),
    "compile": ("channels_last", True),
}
# torchvision's ImageNet normalization (its weights' `transforms`).
MEAN = (0.485, 0.456, 0.406)
STD = (0.229, 0.224, 0.225)


def raw_pixels(size: int, batch: int, seed: int) -> np.ndarray:
    """The benchmark's images: `batch` random raw pixels, uint8, NHWC, `size` x `size` x 3.

    Example:
    >>> raw_pixels(4, 2, seed=0).shape, raw_pixels(4, 2, seed=0).dtype
    ((2, 4, 4, 3), dtype('uint8'))
    """
    return np.random.default_rng(seed).integers(0, 256, (batch, size, size, 3), dtype=np.uint8)


def inputs(size: int, batch: int, seed: int) -> np.ndarray:
    """`raw_pixels` as torchvision's models take them: `(x / 255 - MEAN) / STD` per
    channel, NCHW, float32.

    Example:
    >>> x = inputs(4, 2, seed=0)
    >>> x.shape, x.dtype
    ((2, 3, 4, 4), dtype('float32'))
    """
    pixels = raw_pixels(size, batch, seed).astype(np.float32) / 255.0
    normalized = (pixels - np.float32(MEAN)) / np.float32(STD)
    return np.ascontiguousarray(normalized.transpose(0, 3, 1, 2), dtype=np.float32)


def torchvision_model(name: str, seed: int):
    """torchvision's `name` with random weights (`init_weights`), no aux head, eval mode."""
    import torch
    import torchvision

    if name not in MODELS:
        raise ValueError(f"unknown model {name!r}; choose from {list(MODELS)}")
    torch.manual_seed(seed)
    build = getattr(torchvision.models, name)
    return build(weights=None, aux_logits=False, init_weights=True).eval()


class Runner:
    """One model in one engine of `ENGINES`, and its inputs by batch size."""

    def __init__(self, request: Mapping):
        import torch

        engine = request["engine"]
        if engine not in ENGINES:
            raise ValueError(f"unknown torch engine {engine!r}; choose from {list(ENGINES)}")
        layout, compiled = ENGINES[engine]
        self.memory_format = (
            torch.channels_last if layout == "channels_last" else torch.contiguous_format
        )
        self.size, self.seed = int(request["size"]), int(request["seed"])
        model = torchvision_model(request["model"], self.seed).to(memory_format=self.memory_format)
        if compiled:
            import torch._inductor.config as inductor

            # Intel's CPU inference recipe: constant-fold the weights (oneDNN prepacked).
            inductor.freezing = True
            model = torch.compile(model, dynamic=False)
        self.model = model
        self.batches: dict[int, object] = {}

    def batch(self, size: int):
        import torch

        if size not in self.batches:
            x = torch.from_numpy(inputs(self.size, size, self.seed))
            self.batches[size] = x.contiguous(memory_format=self.memory_format)
        return self.batches[size]

    def run(self, batch: int, calls: int) -> dict:
        """`calls` forward passes: each one's wall seconds, the CPU time and wall over all."""
        import torch

        x = self.batch(batch)
        usage, seconds, output = CpuTime(), [], None
        with torch.inference_mode():
            start = usage.mark()
            for _ in range(calls):
                begin = time.perf_counter()
                output = self.model(x)  # torch on CPU is synchronous: the result is ready
                seconds.append(time.perf_counter() - begin)
            usage.add(start, usage.mark())
        return {
            "seconds": seconds,
            "cpu_seconds": usage.cpu,
            "wall_seconds": usage.wall,
            "output_shape": list(output.shape) if output is not None else None,
        }


def export_onnx(request: Mapping) -> dict:
    """The `export_onnx` command: torch's ONNX file of the model, batch axis dynamic.

    The TorchScript-based exporter (`dynamo=False`): the torch.export-based one needs
    onnxscript, which the `torch` extra does not install."""
    import torch

    model = torchvision_model(request["model"], int(request["seed"]))
    example = torch.from_numpy(inputs(int(request["size"]), 1, int(request["seed"])))
    os.makedirs(os.path.dirname(request["path"]), exist_ok=True)  # torch alone: no folder yet
    with torch.no_grad(), warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)  # "legacy exporter": chosen
        torch.onnx.export(
            model,
            (example,),
            request["path"],
            dynamo=False,
            input_names=["images"],
            output_names=["logits"],
            dynamic_axes={"images": {0: "batch"}, "logits": {0: "batch"}},
        )
    return {"path": request["path"]}


def serve(requests: TextIO, replies: TextIO, threads: int = 0) -> None:
    """Answers the driver's requests, one JSON line each, until `quit` or end of input,
    on `threads` threads (0: the usable cores)."""
    import torch

    torch.set_num_threads(threads or len(os.sched_getaffinity(0)))
    runners: dict[str, Runner] = {}

    def handle(cmd: str, request: Mapping) -> dict:
        if cmd == "info":
            return torch_info()
        if cmd == "build":
            runners[request["id"]] = Runner(request)
            return {}
        if cmd == "run":
            return runners[request["id"]].run(int(request["batch"]), int(request["calls"]))
        if cmd == "export_onnx":
            return export_onnx(request)
        raise ValueError(f"unknown command {cmd!r}")

    answer(requests, replies, handle)


if __name__ == "__main__":
    worker_main(serve)
