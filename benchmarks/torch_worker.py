"""The torch process of `benchmarks.peers`: this file run by path, and `TorchPeer`, the
driver's handle on it.

torch and TensorFlow in one process crash after a torch forward pass (two OpenMP
runtimes), so the PyTorch twins train in a child process: `python
benchmarks/torch_worker.py [THREADS]`, which imports torch, torchvision, NumPy and its two
sibling modules (`keras_to_torch`, `cpu_time`) and never TensorFlow, Keras or the
`benchmarks` package (whose import starts TensorFlow). The driver talks to it in JSON
lines over the child's stdin and stdout (`TorchPeer`); each `train` reply carries the
worker's own CPU time and wall time over the steps (`cpu_time.CpuTime`), so that the
driver's table gives the torch rows' CPU time/wall too.

Example:

```python
with TorchPeer() as peer:
    print(peer.request("info")["torch"])
```
"""

from __future__ import annotations

import contextlib
import json
import os
import subprocess
import sys
import traceback
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import TextIO

import numpy as np

if __package__:  # benchmarks.torch_worker: the driver's process, for `TorchPeer`
    from benchmarks import keras_to_torch
    from benchmarks.cpu_time import CpuTime
else:  # the torch process, run by path: its folder is sys.path[0], and its siblings are
    # imported as top-level modules, never through the `benchmarks` package
    import keras_to_torch
    from cpu_time import CpuTime

LAYOUTS = ("nchw", "channels_last")
OPTIMIZER_NAMES = ("adamw", "sgd")


class TorchPeer:
    """The torch process (this file run by path), spoken to in JSON lines.

    Each request is one line `{"cmd": ..., ...}` on the child's stdin, each reply one line
    on its stdout: `{"ok": true, ...}`, or `{"ok": false, "error": ...}`, which `request`
    raises as RuntimeError. Commands (`serve` answers them):

    * `info`: torch's version, threads, oneDNN; torchvision's version if installed;
    * `build` (`id`, `model`, `twin`, `graph`, `layout`, `batch`, `input_shape`,
      `classes`, `optimizer`, `loss_weights`, `seed`, `autocast`: null or "bfloat16"): a
      model and its optimizer and fixed batch, kept under `id`; replies its trainable
      parameter count;
    * `train` (`id`, `steps`): `steps` training steps; replies their wall `seconds`, the
      torch process's CPU seconds over them (`cpu_seconds`), the last `loss`, and the
      dtype of the main (or only) logits (`output_dtype`: bfloat16 under autocast);
    * `infer` (`graph`, `weights`, `inputs`, `outputs`): the twin of `graph` with the
      Keras weights of the .npz `weights` (`keras_to_torch.export_weights`), in eval mode, on the NHWC
      batch `x` of .npz `inputs`; writes its outputs as Keras gives them (softmax
      probabilities) to .npz `outputs`;
    * `quit`.

    The child's stderr is ours; what it prints on stdout goes to stderr too (the
    protocol has its own descriptor).
    """

    def __init__(self, threads: int = 0):
        """Starts the torch process with `threads` threads (0: the usable cores) and, unless
        the environment sets it, `OMP_WAIT_POLICY=PASSIVE` (see `benchmarks.peers`)."""
        env = {**os.environ}
        env.setdefault("OMP_WAIT_POLICY", "PASSIVE")
        self.process = subprocess.Popen(
            [sys.executable, str(Path(__file__).resolve()), str(threads)],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
            env=env,
        )

    def request(self, cmd: str, **fields) -> dict:
        line = json.dumps({"cmd": cmd, **fields})
        try:
            self.process.stdin.write(line + "\n")
            self.process.stdin.flush()
            reply = self.process.stdout.readline()
        except BrokenPipeError:
            reply = ""
        if not reply:
            status = self.process.wait(timeout=60)
            raise RuntimeError(
                f"the torch process exited (status {status}) on request {cmd!r}; its "
                "messages are above"
            )
        answer = json.loads(reply)
        if not answer.pop("ok"):
            raise RuntimeError(f"torch process, request {cmd!r}: {answer['error']}")
        return answer

    def close(self) -> None:
        if self.process.poll() is None:
            with contextlib.suppress(RuntimeError, OSError):
                self.request("quit")
            try:
                self.process.wait(timeout=60)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        for stream in (self.process.stdin, self.process.stdout):
            stream.close()

    def __enter__(self) -> TorchPeer:
        return self

    def __exit__(self, *exc) -> None:
        self.close()


def fixed_batch(
    input_shape: Sequence[int], classes: int, batch: int, seed: int
) -> tuple[np.ndarray, np.ndarray]:
    """The random batch both sides train on (NHWC images in [-1, 1], int labels)."""
    rng = np.random.default_rng(seed)
    x = rng.uniform(-1, 1, (batch, *input_shape)).astype(np.float32)
    return x, rng.integers(0, classes, batch).astype(np.int64)


class TorchBench:
    """A torch model, its optimizer and fixed batch, in one memory layout."""

    def __init__(self, request: Mapping):
        import torch

        torch.manual_seed(request["seed"])
        if request["twin"] == "translated":
            model = keras_to_torch.torch_twin(request["graph"])
        elif request["twin"] == "torchvision_googlenet":
            import torchvision

            model = torchvision.models.googlenet(weights=None, aux_logits=True, init_weights=True)
        else:
            raise ValueError(f"unknown twin {request['twin']!r} for {request['model']!r}")
        if request["layout"] not in LAYOUTS:
            raise ValueError(f"unknown layout {request['layout']!r}; choose from {list(LAYOUTS)}")
        memory_format = (
            torch.channels_last if request["layout"] == "channels_last" else torch.contiguous_format
        )
        self.model = model.to(memory_format=memory_format).train()
        x, y = fixed_batch(
            request["input_shape"], request["classes"], request["batch"], request["seed"]
        )
        self.x = torch.from_numpy(x.transpose(0, 3, 1, 2).copy()).contiguous(
            memory_format=memory_format
        )
        self.y = torch.from_numpy(y)
        self.loss_weights = dict(request["loss_weights"])
        autocast = request.get("autocast")
        if autocast not in (None, "bfloat16"):
            raise ValueError(f"unknown autocast dtype {autocast!r}; choose from [None, 'bfloat16']")
        self.autocast = autocast
        self.optimizer = torch_optimizer(self.model.parameters(), request["optimizer"])
        self.trainable_params = sum(p.numel() for p in self.model.parameters() if p.requires_grad)

    def outputs(self):
        out = self.model(self.x)
        if isinstance(out, dict):
            return out
        # torchvision's GoogLeNetOutputs(logits, aux_logits2, aux_logits1) in training.
        return {"main": out.logits, "aux1": out.aux_logits1, "aux2": out.aux_logits2}

    def step(self):
        import torch
        from torch.nn import functional as F

        self.optimizer.zero_grad(set_to_none=True)
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=self.autocast is not None):
            outputs = self.outputs()
            loss = sum(
                w * F.cross_entropy(outputs[k], self.y) for k, w in self.loss_weights.items()
            )
        loss.backward()
        self.optimizer.step()
        main = outputs["main"] if "main" in outputs else next(iter(outputs.values()))
        self.output_dtype = str(main.dtype).removeprefix("torch.")
        return loss

    def train(self, steps: int) -> dict:
        """`steps` training steps: their wall and this process's CPU seconds, the last loss
        and the main logits' dtype."""
        usage = CpuTime()
        start = usage.mark()
        loss = None
        for _ in range(steps):
            loss = self.step()
        value = float(loss.item())  # torch on CPU is synchronous; this reads the result
        return {
            "seconds": usage.add(start, usage.mark()),
            "cpu_seconds": usage.cpu,
            "loss": value,
            "output_dtype": self.output_dtype,
        }


def torch_optimizer(parameters, settings: Mapping):
    import torch

    if settings["name"] == "adamw":
        return torch.optim.AdamW(
            parameters, lr=settings["learning_rate"], weight_decay=settings["weight_decay"]
        )
    if settings["name"] == "sgd":
        return torch.optim.SGD(
            parameters, lr=settings["learning_rate"], momentum=settings["momentum"]
        )
    raise ValueError(f"unknown optimizer {settings['name']!r}; choose from {list(OPTIMIZER_NAMES)}")


def torch_info() -> dict:
    import torch

    try:
        import torchvision

        vision = torchvision.__version__
    except ImportError:
        vision = None
    return {
        "torch": torch.__version__,
        "torchvision": vision,
        "threads": torch.get_num_threads(),
        "interop_threads": torch.get_num_interop_threads(),
        "omp_wait_policy": os.environ.get("OMP_WAIT_POLICY", "unset"),
        "mkldnn": bool(torch.backends.mkldnn.is_available()),
    }


def infer(request: Mapping) -> dict:
    """The `infer` command: the twin with Keras's weights, eval mode, Keras's outputs."""
    import torch

    graph = request["graph"]
    twin = keras_to_torch.torch_twin(graph).eval()
    with np.load(request["weights"]) as data:
        copied = keras_to_torch.load_keras_weights(
            twin, graph, {key: data[key] for key in data.files}
        )
    with np.load(request["inputs"]) as data:
        x = torch.from_numpy(data["x"].transpose(0, 3, 1, 2).copy())
    with torch.no_grad():
        outputs = twin(x)
    arrays = {
        key: (torch.softmax(value, 1) if graph["outputs"][key] in twin.softmax_outputs else value)
        for key, value in outputs.items()
    }
    np.savez(request["outputs"], **{key: value.numpy() for key, value in arrays.items()})
    trainable = sum(p.numel() for p in twin.parameters() if p.requires_grad)
    return {"trainable_params": trainable, "copied": copied}


def answer(requests: TextIO, replies: TextIO, handle: Callable[[str, Mapping], dict]) -> None:
    """The torch workers' loop: for each request line, one reply line, `handle(cmd,
    request)`'s dict with `"ok": true`, or the error with `"ok": false` (its traceback on
    stderr: the parent reports it), until `quit` or the end of input."""
    for line in requests:
        request = json.loads(line)
        cmd = request.get("cmd")
        try:
            reply = {} if cmd == "quit" else handle(cmd, request)
            reply["ok"] = True
        except Exception as e:  # reported to the parent
            traceback.print_exc()
            reply = {"ok": False, "error": f"{type(e).__name__}: {e}"}
        replies.write(json.dumps(reply) + "\n")
        replies.flush()
        if cmd == "quit":
            return


def serve(requests: TextIO, replies: TextIO, threads: int = 0) -> None:
    """Answers `TorchPeer`'s requests, one JSON line each, until `quit` or end of input,
    on `threads` threads (0: the usable cores)."""
    import torch

    torch.set_num_threads(threads or len(os.sched_getaffinity(0)))
    benches: dict[str, TorchBench] = {}

    def handle(cmd: str, request: Mapping) -> dict:
        if cmd == "info":
            return torch_info()
        if cmd == "build":
            bench = benches[request["id"]] = TorchBench(request)
            return {"trainable_params": bench.trainable_params}
        if cmd == "train":
            return benches[request["id"]].train(int(request["steps"]))
        if cmd == "infer":
            return infer(request)
        raise ValueError(f"unknown command {cmd!r}")

    answer(requests, replies, handle)


def worker_main(serve_requests: Callable[[TextIO, TextIO, int], None] = serve) -> None:
    """A torch process (this file's, or another worker's `serve_requests`): replies on
    the original stdout; all other output to stderr."""
    replies = os.fdopen(os.dup(sys.stdout.fileno()), "w")
    os.dup2(sys.stderr.fileno(), sys.stdout.fileno())
    sys.stdout = sys.stderr
    serve_requests(sys.stdin, replies, int(sys.argv[1]) if len(sys.argv) > 1 else 0)


if __name__ == "__main__":
    worker_main()
