"""The engines of `benchmarks.inference`: each engine's spec (`ENGINES`), our model and
each engine's predict function, the torch process's handle, and the timing of engines:
`Row.run` times calls of one engine, `measure` interleaves the engines' timed calls.

An engine of ours runs in this process (`LocalRunner`: our model in torchvision's layout,
`tf.function` of it, or the file of `training.deploy.write_model_file` run by
`training.runtimes.load_predict`); a torch engine runs in the child process
`benchmarks/torch_inference_worker.py` (`InferencePeer`, `TorchRunner`), which times its
own calls and its own CPU time. A failing engine does not stop the others: its `Row`
keeps the failure as its note (`Row.fail`).

Example:

```python
with tempfile.TemporaryDirectory() as folder:
    rows = prepare_model("googlenet", ["tf_function", "onnxruntime"], folder, None, None,
                         size=32, width_multiplier=0.125, seed=0, threads=2)
    measure(rows, 1, warmup=1, calls=3, rounds=1, record=lambda row: row.latencies,
            rewarm=True)
print([row.table_row(batch_size=2)["batch-1 p50 ms"] for row in rows])
```
"""

from __future__ import annotations

import dataclasses
import math
import os
import subprocess
import sys
import time
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

import keras
import numpy as np
import tensorflow as tf

import keras_inception as ki
from benchmarks import common
from benchmarks.torch_inference_worker import inputs as torch_inputs
from benchmarks.torch_inference_worker import raw_pixels
from benchmarks.torch_worker import TorchPeer
from keras_inception.pretrained import torchvision as torchvision_layout
from training.deploy import write_model_file
from training.runtimes import load_predict

CLASSES = 1000
CALIBRATION_IMAGES = 16  # random images that calibrate litert_int8
WORKER = Path(__file__).resolve().with_name("torch_inference_worker.py")


@dataclasses.dataclass(frozen=True)
class EngineSpec:
    """How an engine runs: whose it is, its precision, the format it exports to (ours:
    `training.deploy.FORMATS`, torch: the `torch_inference_worker.ENGINES` way), and
    the note of its row."""

    side: str  # "ours" or "torch"
    precision: str
    runs: str  # ours: "keras", "tf_function", "tf_xla" or a format; torch: a worker way
    note: str


ENGINES: Mapping[str, EngineSpec] = {
    "keras_predict": EngineSpec("ours", "fp32", "keras", "model.predict(x, batch_size=len(x))"),
    "tf_function": EngineSpec("ours", "fp32", "tf_function", "tf.function(model), graph mode"),
    "tf_xla": EngineSpec("ours", "fp32", "tf_xla", "tf.function(model, jit_compile=True)"),
    "saved_model": EngineSpec("ours", "fp32", "saved_model", "tf.saved_model.load, serve"),
    "onnxruntime": EngineSpec("ours", "fp32", "onnx", "Keras's ONNX export, ORT CPU provider"),
    "litert": EngineSpec("ours", "fp32", "litert", "LiteRT, XNNPACK"),
    "litert_int8": EngineSpec(
        "ours",
        "int8",
        "litert",
        f"LiteRT full int8, calibrated on {CALIBRATION_IMAGES} random images (random "
        "weights: latency only)",
    ),
    "openvino": EngineSpec("ours", "fp32", "openvino", "OpenVINO CPU, precision hint f32"),
    "openvino_bf16": EngineSpec("ours", "bf16", "openvino", "OpenVINO CPU, precision hint bf16"),
    "torch_eager": EngineSpec("torch", "fp32", "eager", "eager, NCHW"),
    "torch_channels_last": EngineSpec("torch", "fp32", "channels_last", "eager, channels_last"),
    "torch_compile": EngineSpec(
        "torch", "fp32", "compile", "torch.compile (inductor, freezing), channels_last"
    ),
    "torch_onnxruntime": EngineSpec(
        "torch", "fp32", "onnx", "torch.onnx.export (TorchScript exporter), ORT CPU provider"
    ),
}


def latency_ms(seconds: Sequence[float]) -> tuple[float, float]:
    """p50 and p90 in milliseconds of per-call `seconds` (NumPy's linear interpolation);
    NaNs for no calls.

    Example:
    >>> latency_ms([0.004, 0.001, 0.003, 0.002, 0.005])
    (3.0, 4.6)
    """
    if not len(seconds):
        return float("nan"), float("nan")
    p50, p90 = np.percentile(np.asarray(seconds, dtype=np.float64) * 1e3, [50, 90])
    return round(float(p50), 9), round(float(p90), 9)


def split_calls(total: int, rounds: int) -> list[int]:
    """`total` calls shared among `rounds` rounds as evenly as they go, the larger shares
    first (a round may get none).

    Example:
    >>> split_calls(52, 5)
    [11, 11, 10, 10, 10]
    """
    if total < 0 or rounds < 1:
        raise ValueError(f"need total >= 0 and rounds >= 1; received {total}, {rounds}")
    share, extra = divmod(total, rounds)
    return [share + (i < extra) for i in range(rounds)]


@dataclasses.dataclass
class Timing:
    """One run of calls: each call's wall seconds, the CPU and wall seconds over all
    (of the process that ran them), and the last output's shape."""

    seconds: list[float]
    cpu: float
    wall: float
    shape: tuple[int, ...]


class LocalRunner:
    """An engine in this process: `predict` on fixed inputs by batch size."""

    def __init__(self, predict: Callable[[np.ndarray], Any], images: Callable[[int], np.ndarray]):
        self.predict, self.images, self.cache = predict, images, {}

    def run(self, batch: int, calls: int) -> Timing:
        if batch not in self.cache:
            self.cache[batch] = self.images(batch)
        x, usage, seconds, output = self.cache[batch], common.CpuTime(), [], None
        start = usage.mark()
        for _ in range(calls):
            begin = time.perf_counter()
            output = self.predict(x)  # every predict returns a NumPy array: work is done
            seconds.append(time.perf_counter() - begin)
        usage.add(start, usage.mark())
        return Timing(seconds, usage.cpu, usage.wall, tuple(np.shape(output)))


class TorchRunner:
    """An engine of the torch process, kept there under `key`."""

    def __init__(self, peer: TorchPeer, key: str):
        self.peer, self.key = peer, key

    def run(self, batch: int, calls: int) -> Timing:
        reply = self.peer.request("run", id=self.key, batch=batch, calls=calls)
        shape = tuple(reply["output_shape"] or ())
        return Timing(reply["seconds"], reply["cpu_seconds"], reply["wall_seconds"], shape)


@dataclasses.dataclass
class Row:
    """One engine on one model: its runner, and what was measured."""

    model: str
    engine: str
    runner: LocalRunner | TorchRunner | None = None
    note: str = ""
    latencies: list[float] = dataclasses.field(default_factory=list)  # batch-1 seconds
    batch_seconds: list[float] = dataclasses.field(default_factory=list)
    usage: common.CpuTime = dataclasses.field(default_factory=common.CpuTime)
    error: str | None = None

    def fail(self, what: str, err: BaseException | str) -> None:
        text = str(err).strip().splitlines()
        reason = text[-1] if text else type(err).__name__
        self.error = f"{what} failed: {reason}"[:200]
        self.runner = None

    def run(self, batch: int, calls: int, *, timed: bool) -> list[float]:
        """`calls` calls at `batch`; a timed run's CPU time and wall go to `usage`.

        Raises:
            RuntimeError: the output is not `batch` rows of `CLASSES` values.
        """
        timing = self.runner.run(batch, calls)
        if len(timing.shape) != 2 or timing.shape != (batch, CLASSES):
            raise RuntimeError(f"output shape {timing.shape}; expected {(batch, CLASSES)}")
        if timed:
            self.usage.add_seconds(timing.cpu, timing.wall)
        return timing.seconds

    def table_row(self, batch_size: int) -> dict:
        spec = ENGINES[self.engine]
        p50, p90 = latency_ms(self.latencies)
        images = batch_size * len(self.batch_seconds)
        total = sum(self.batch_seconds)
        return {
            "model": self.model,
            "engine": self.engine,
            "side": spec.side,
            "precision": spec.precision,
            "batch-1 p50 ms": p50,
            "batch-1 p90 ms": p90,
            f"batch-{batch_size} img/s": images / total if total > 0 else math.nan,
            common.CPU_COLUMN: self.usage.ratio,
            "note": self.error or self.note or spec.note,
            "batch-1 calls": len(self.latencies),
            f"batch-{batch_size} calls": len(self.batch_seconds),
        }


class InferencePeer(TorchPeer):
    """The torch process of this script: `benchmarks/torch_inference_worker.py` run by
    path with `threads` threads, spoken to as `TorchPeer` speaks (`request`, `close`),
    with `OMP_WAIT_POLICY=PASSIVE` unless the environment sets it, as `TorchPeer`'s."""

    def __init__(self, threads: int):
        self.process = subprocess.Popen(
            [sys.executable, str(WORKER), str(threads)],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
            env={"OMP_WAIT_POLICY": "PASSIVE", **os.environ},
        )


def describe_torch(info: Mapping[str, Any]) -> str:
    return (
        f"torch {info['torch']}, torchvision {info['torchvision']} (separate process); "
        f"threads: intra-op {info['threads']}, inter-op {info['interop_threads']}, "
        f"OMP_WAIT_POLICY={info['omp_wait_policy']}; oneDNN (mkldnn) "
        f"{'available' if info['mkldnn'] else 'unavailable'}"
    )


def build_ours(model: str, size: int, width_multiplier: float, seed: int) -> keras.Model:
    """Our `model` in torchvision's layout, random weights (seeded), `size`x`size`x3 raw
    pixels in (torchvision's normalization inside), softmax over `CLASSES`."""
    keras.utils.set_random_seed(seed)
    kwargs = torchvision_layout.builder_kwargs(
        model, input_shape=(size, size, 3), classifier_activation="softmax", classes=CLASSES
    )
    return ki.get_model(
        model, **kwargs, width_multiplier=width_multiplier, include_preprocessing="torch"
    )


def our_predict(
    engine: str,
    model: keras.Model,
    folder: str,
    files: dict[str, str],
    *,
    threads: int,
    seed: int,
) -> Callable[[np.ndarray], Any]:
    """The predict function of our `engine`; exported files are written into `folder`
    once per format (`files`: format -> path, shared by the engines of one model)."""
    runs = ENGINES[engine].runs
    if runs == "keras":
        return lambda x: model.predict(x, batch_size=len(x), verbose=0)
    if runs in ("tf_function", "tf_xla"):
        signature = [tf.TensorSpec((None, *model.input_shape[1:]), tf.float32)]
        function = tf.function(
            lambda x: model(x, training=False),
            input_signature=signature,
            jit_compile=runs == "tf_xla",
        )
        return lambda x: function(x).numpy()
    key = "litert_int8" if engine == "litert_int8" else runs
    if key not in files:
        calibration = None
        if engine == "litert_int8":
            calibration = raw_pixels(model.input_shape[1], CALIBRATION_IMAGES, seed + 1)
        files[key] = write_model_file(
            model, runs, os.path.join(folder, key), calibration=calibration
        )
    precision = "bf16" if engine == "openvino_bf16" else "fp32"
    return load_predict(runs, files[key], precision=precision, threads=threads)


def prepare_model(
    model_name: str,
    engines: Sequence[str],
    folder: str,
    peer: TorchPeer | None,
    torch_note: str | None,
    *,
    size: int,
    width_multiplier: float,
    seed: int,
    threads: int,
) -> list[Row]:
    """A row per engine of `model_name`, each with its runner ready (or its failure).

    Args:
        model_name: str. "googlenet" or "inception_v3".
        engines: sequence of str. Names of `ENGINES`, in the rows' order.
        folder: str. Where exported files are written (a folder per model below it).
        peer: TorchPeer or None. The torch process; None where torch does not run.
        torch_note: str or None. The torch rows' note where `peer` is None.
        size: int. The input side in pixels.
        width_multiplier: float. Our conv widths' scale (torch's stay full).
        seed: int. Seed of the weights and the images.
        threads: int. Threads of every runtime of ours.
    """
    model = build_ours(model_name, size, width_multiplier, seed)
    # A folder per model: LiteRT and OpenVINO map their files while they run them.
    folder = os.path.join(folder, model_name)
    files: dict[str, str] = {}
    rows = []
    for engine in engines:
        spec = ENGINES[engine]
        row = Row(model_name, engine)
        rows.append(row)
        try:
            if spec.side == "ours":
                dtype = np.uint8 if engine == "litert_int8" else np.float32
                predict = our_predict(engine, model, folder, files, threads=threads, seed=seed)
                row.runner = LocalRunner(
                    predict, lambda b, d=dtype: raw_pixels(size, b, seed).astype(d)
                )
            elif peer is None:
                row.error = torch_note
            elif spec.runs == "onnx":
                path = os.path.join(folder, f"torch_{model_name}.onnx")
                peer.request("export_onnx", model=model_name, size=size, seed=seed, path=path)
                predict = load_predict("onnx", path, threads=threads)
                row.runner = LocalRunner(predict, lambda b: torch_inputs(size, b, seed))
            else:
                key = f"{model_name}/{engine}"
                peer.request(
                    "build", id=key, model=model_name, engine=spec.runs, size=size, seed=seed
                )
                row.runner = TorchRunner(peer, key)
        except Exception as err:  # noqa: BLE001 (an engine that fails is a row's note)
            if row.error is None:
                row.fail("preparing", err)
    return rows


def measure(
    rows: Sequence[Row],
    batch: int,
    *,
    warmup: int,
    calls: int,
    rounds: int,
    record: Callable[[Row], list[float]],
    rewarm: bool,
) -> None:
    """Warms every live row up at `batch` (`warmup` calls), then runs `calls` timed calls
    of each, interleaved over `rounds` rounds; adds each call's seconds to `record(row)`.
    With `rewarm`, a row's share in a round starts with one untimed call. A row that
    raises is marked failed and left out from then on."""

    def attempt(row: Row, what: str, step: Callable[[], None]) -> None:
        if row.runner is None:
            return
        try:
            step()
        except Exception as err:  # noqa: BLE001 (torch.compile fails at its first call)
            row.fail(what, err)

    for row in rows:
        attempt(row, f"warm-up at batch {batch}", lambda r=row: r.run(batch, warmup, timed=False))
    for share in split_calls(calls, rounds):
        if share == 0:
            continue
        for row in rows:

            def step(r: Row = row, n: int = share) -> None:
                if rewarm:
                    r.run(batch, 1, timed=False)
                record(r).extend(r.run(batch, n, timed=True))

            attempt(row, f"timing at batch {batch}", step)
