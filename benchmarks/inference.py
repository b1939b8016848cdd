"""CPU inference speed of GoogLeNet and InceptionV3 in each of our deployment formats and in
torch, one table, every row measured in the same run.

For each model (`--models`; GoogLeNet at 224x224, InceptionV3 at 299x299, 1000 classes,
random weights), each engine (`--engines`) gives its batch-1 latency (p50 and p90 over
`--calls` timed calls after `--warmup` untimed ones) and its throughput at
`--batch-size` (images/s over several timed calls):

* ours, built in torchvision's layout (`keras_inception.pretrained.torchvision`'s
  builder options: the same network as the torch rows, multiply-add for multiply-add),
  taking raw pixels (the normalization is inside the model), softmax output:
  `keras_predict` (`model.predict`), `tf_function` (`tf.function` of the model, graph
  mode), `tf_xla` (the same, `jit_compile=True`), and the files of
  `python -m training export` (`training.deploy.write_model_file`), each run by its own
  runtime (`training.runtimes.load_predict`): `saved_model` (TensorFlow), `onnxruntime`
  (ONNX Runtime's CPU provider), `litert` (LiteRT, XNNPACK, float32), `litert_int8`
  (LiteRT full-integer int8, uint8 pixels in, calibrated on random images: with random
  weights its row is a latency, not an accuracy), `openvino` (OpenVINO CPU, f32) and
  `openvino_bf16` (OpenVINO's bf16 inference precision; only on CPUs whose
  /proc/cpuinfo flags include avx512_bf16 or amx_bf16);
* torch (the `torch` extra: `make install-torch`): torchvision's model
  (`weights=None, aux_logits=False, init_weights=True`, eval mode, under
  `torch.inference_mode()`) on normalized NCHW inputs: `torch_eager` (NCHW),
  `torch_channels_last`, `torch_compile` (`torch.compile` of the channels_last model,
  inductor with `freezing`; its failure is noted in its row), and `torch_onnxruntime`
  (`torch.onnx.export`'s file run by ONNX Runtime exactly as ours is). Without torch the
  torch rows say "torch not installed: make install-torch".

torch and TensorFlow in one process crash (two OpenMP runtimes), so torch runs in a
child process, `benchmarks/torch_inference_worker.py`, spoken to in JSON lines; it times
its own calls and its own CPU time. Every runtime gets `--threads` threads. As in
`benchmarks.peers`, torch runs with `OMP_WAIT_POLICY=PASSIVE` unless the environment sets
it: spinning OpenMP threads on cores another process takes make a call many times as
long (on 2 shared cores, GoogLeNet at 32x32 took 1.3 s a call instead of a few ms). On an
idle machine, run again with `OMP_WAIT_POLICY=ACTIVE` and keep the faster torch rows. The engines
are interleaved: each of `--rounds` rounds runs a share of every engine's timed calls in
turn (batch 1 first, then the batch), and a round's batch-1 share starts with one untimed
call, so that the previous engine's spinning threads do not land in the figures.

The ratio column is the fastest torch row's batch-1 p50 / the row's: above 1, faster
than every torch path. The last lines say, for each model, whether our fastest engine is
at least `TARGET` times the fastest torch path at batch 1 (issue 34), as measured in the
run; a run with fewer than `MIN_CALLS` timed calls reports its ratio but no verdict.

A full run (both models, every engine, defaults) takes an estimated 15-25 minutes on a
2-core Zen 4 EPYC, about half of it exports, XLA and `torch.compile`, most of the rest
InceptionV3 at batch 32: an estimate from the models' multiply-adds and the tiny run of
the last example (every row, 4 minutes on 2 shared cores), not a measurement.

Example:

```
python -m benchmarks.inference                    # torch rows: make install-torch
python -m benchmarks.inference --models googlenet --engines onnxruntime openvino torch_eager
python -m benchmarks.inference --googlenet-image-size 32 --v3-image-size 75 \\
    --width-multiplier 0.125 --calls 3 --warmup 1 --rounds 2 --batch-size 2 --batch-calls 2
```
"""

from __future__ import annotations

import argparse
import dataclasses
import importlib.util
import json
import math
import os
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

if not __package__:  # run by path (`python benchmarks/inference.py`): import from the repo
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
    # root, and set the process up before TensorFlow is imported (benchmarks/__init__.py).
    import benchmarks  # noqa: F401

import keras  # noqa: E402
import numpy as np  # noqa: E402
import tensorflow as tf  # noqa: E402

import keras_inception as ki  # noqa: E402
from benchmarks import common  # noqa: E402
from benchmarks.torch_inference_worker import inputs as torch_inputs  # noqa: E402
from benchmarks.torch_inference_worker import raw_pixels  # noqa: E402
from benchmarks.torch_worker import TorchPeer  # noqa: E402
from keras_inception.pretrained import torchvision as torchvision_layout  # noqa: E402
from training import machine  # noqa: E402
from training.deploy import write_model_file  # noqa: E402
from training.runtimes import load_predict  # noqa: E402

MODELS = ("googlenet", "inception_v3")
# Each model's ImageNet side, smallest side, and its option's dest.
IMAGE_SIZES: Mapping[str, int] = {"googlenet": 224, "inception_v3": 299}
MIN_IMAGE_SIZES: Mapping[str, int] = {"googlenet": 32, "inception_v3": 75}
SIZE_OPTIONS: Mapping[str, str] = {
    "googlenet": "--googlenet-image-size",
    "inception_v3": "--v3-image-size",
}
CLASSES = 1000
TARGET = 1.5  # our fastest / the fastest torch path, batch-1 latency (issue 34)
MIN_CALLS = 50  # timed batch-1 calls behind a verdict
CALIBRATION_IMAGES = 16  # random images that calibrate litert_int8
BATCH_WARMUP = 2  # untimed calls at the batch size, per engine
BF16_FLAGS = ("avx512_bf16", "amx_bf16")  # /proc/cpuinfo flags of bf16 arithmetic
TORCH_MISSING = "{} not installed: make install-torch"
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
RATIO_COLUMN = "vs fastest torch"


def columns(batch_size: int) -> tuple[str, ...]:
    """The table's columns; the throughput one names the batch size."""
    return (
        "model",
        "engine",
        "precision",
        "batch-1 p50 ms",
        "batch-1 p90 ms",
        f"batch-{batch_size} img/s",
        RATIO_COLUMN,
        common.CPU_COLUMN,
        "note",
    )


# --- pure helpers ------------------------------------------------------------------------


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


def bf16_flags(flags: str) -> list[str]:
    """Which of `BF16_FLAGS` (bf16 arithmetic) a /proc/cpuinfo "flags" value lists.

    Example:
    >>> bf16_flags("fpu avx2 avx512f avx512_bf16")
    ['avx512_bf16']
    """
    present = set(flags.split())
    return [flag for flag in BF16_FLAGS if flag in present]


def select_engines(names: Sequence[str], *, bf16: bool) -> tuple[list[str], list[str]]:
    """`names` without repeats, in `ENGINES` order, and notes on those left out:
    `openvino_bf16` on a CPU without bf16 arithmetic (`bf16` False).

    Raises:
        ValueError: naming an unknown engine.
    """
    for name in names:
        if name not in ENGINES:
            raise ValueError(f"unknown engine {name!r}; choose from {list(ENGINES)}")
    chosen = [name for name in ENGINES if name in names]
    notes = []
    if "openvino_bf16" in chosen and not bf16:
        chosen.remove("openvino_bf16")
        notes.append(
            "openvino_bf16 left out: this CPU's flags have neither avx512_bf16 nor amx_bf16"
        )
    return chosen, notes


def missing_torch(find_spec: Callable[[str], Any] = importlib.util.find_spec) -> str | None:
    """The torch rows' note when torch or torchvision is not installed (looked up, not
    imported: torch must not load into this process); None when both are."""
    for package in ("torch", "torchvision"):
        if find_spec(package) is None:
            return TORCH_MISSING.format(package)
    return None


def add_ratios(rows: list[dict]) -> None:
    """Sets each row's `RATIO_COLUMN`: the fastest torch row of its model's batch-1 p50
    over the row's (NaN where either is missing)."""
    for row in rows:
        torch_p50 = fastest(rows, row["model"], "torch")
        p50 = row["batch-1 p50 ms"]
        row[RATIO_COLUMN] = torch_p50["batch-1 p50 ms"] / p50 if torch_p50 and p50 > 0 else math.nan


def fastest(rows: Sequence[dict], model: str, side: str) -> dict | None:
    """The row of `model` and `side` with the lowest batch-1 p50; None if none measured."""
    measured = [
        row
        for row in rows
        if row["model"] == model and row["side"] == side and not math.isnan(row["batch-1 p50 ms"])
    ]
    return min(measured, key=lambda row: row["batch-1 p50 ms"]) if measured else None


def verdict(rows: Sequence[dict], model: str, calls: int) -> str:
    """The final line for `model`: is our fastest engine at least `TARGET` times the
    fastest torch path at batch 1 (p50)? No verdict from fewer than `MIN_CALLS` calls.

    Example:
    >>> rows = [{"model": "googlenet", "engine": e, "side": s, "batch-1 p50 ms": p}
    ...         for e, s, p in [("openvino", "ours", 4.0), ("torch_eager", "torch", 7.0)]]
    >>> verdict(rows, "googlenet", calls=50)
    'googlenet: our fastest, openvino (4.00 ms), is 1.75x the fastest torch path, torch_eager (7.00 ms), at batch 1 (p50): target 1.5x met'
    """
    ours, torch = fastest(rows, model, "ours"), fastest(rows, model, "torch")
    if ours is None or torch is None:
        missing = "ours" if ours is None else "torch"
        return f"{model}: no verdict: no {missing} row was measured"
    ratio = torch["batch-1 p50 ms"] / ours["batch-1 p50 ms"]
    line = (
        f"{model}: our fastest, {ours['engine']} ({ours['batch-1 p50 ms']:.2f} ms), is "
        f"{ratio:.2f}x the fastest torch path, {torch['engine']} "
        f"({torch['batch-1 p50 ms']:.2f} ms), at batch 1 (p50): "
    )
    if calls < MIN_CALLS:
        return line + f"no verdict from {calls} calls (the target needs >= {MIN_CALLS})"
    return line + f"target {TARGET}x {'met' if ratio >= TARGET else 'NOT met'}"


# --- engines -----------------------------------------------------------------------------


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


def image_size(args: argparse.Namespace, model: str) -> int:
    return getattr(args, SIZE_OPTIONS[model].removeprefix("--").replace("-", "_"))


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
    args: argparse.Namespace,
    folder: str,
    peer: TorchPeer | None,
    torch_note: str | None,
) -> list[Row]:
    """A row per engine of `model_name`, each with its runner ready (or its failure)."""
    size = image_size(args, model_name)
    model = build_ours(model_name, size, args.width_multiplier, args.seed)
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
                predict = our_predict(
                    engine, model, folder, files, threads=args.threads, seed=args.seed
                )
                row.runner = LocalRunner(
                    predict, lambda b, d=dtype: raw_pixels(size, b, args.seed).astype(d)
                )
            elif peer is None:
                row.error = torch_note
            elif spec.runs == "onnx":
                path = os.path.join(folder, f"torch_{model_name}.onnx")
                peer.request("export_onnx", model=model_name, size=size, seed=args.seed, path=path)
                predict = load_predict("onnx", path, threads=args.threads)
                row.runner = LocalRunner(predict, lambda b: torch_inputs(size, b, args.seed))
            else:
                key = f"{model_name}/{engine}"
                peer.request(
                    "build", id=key, model=model_name, engine=spec.runs, size=size, seed=args.seed
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


def run(args: argparse.Namespace, notes: list[str] | None = None) -> list[dict]:
    """Measures every engine of `args.engines` on every model of `args.models`; returns
    the table rows (`columns`, plus "side" and the call counts). Lines for the text above
    the table (engines left out, torch's versions) are appended to `notes`."""
    notes = notes if notes is not None else []
    engines, left_out = select_engines(args.engines, bf16=bool(bf16_flags(cpu_flags())))
    notes.extend(left_out)
    torch_engines = [engine for engine in engines if ENGINES[engine].side == "torch"]
    torch_note = missing_torch() if torch_engines else None
    if torch_note:
        notes.append(f"torch rows: {torch_note}")
    peer = InferencePeer(args.threads) if torch_engines and not torch_note else None
    try:
        with tempfile.TemporaryDirectory(prefix="inference-") as folder:
            rows = [
                row
                for model_name in dict.fromkeys(args.models)
                for row in prepare_model(model_name, engines, args, folder, peer, torch_note)
            ]
            if peer is not None:
                notes.append(describe_torch(peer.request("info")))
            measure(
                rows, 1, warmup=args.warmup, calls=args.calls, rounds=args.rounds,
                record=lambda row: row.latencies, rewarm=True,
            )  # fmt: skip
            measure(
                rows, args.batch_size, warmup=BATCH_WARMUP, calls=args.batch_calls,
                rounds=args.rounds, record=lambda row: row.batch_seconds, rewarm=False,
            )  # fmt: skip
            for row in rows:
                row.runner = None  # let go of sessions before their files go
    finally:
        if peer is not None:
            peer.close()
    table = [row.table_row(args.batch_size) for row in rows]
    add_ratios(table)
    return table


def cpu_flags() -> str:
    """This CPU's /proc/cpuinfo flags ("" where there is none)."""
    return machine.read_cpuinfo().get("flags", "")


def describe(args: argparse.Namespace, seconds: float, notes: Sequence[str] = ()) -> str:
    """The lines above the table: what each side runs, how the figures were taken."""
    sizes = ", ".join(f"{m} {image_size(args, m)}x{image_size(args, m)}" for m in args.models)
    flags = bf16_flags(cpu_flags())
    lines = [
        f"CPU bf16 flags: {' '.join(flags) or 'none'} (of {' '.join(BF16_FLAGS)}); "
        f"{args.threads} threads for every runtime.",
        f"{sizes}; random weights (seed {args.seed}); ours in torchvision's layout, width "
        f"{args.width_multiplier:g}, raw pixels in; torch: torchvision's models, "
        "normalized NCHW in.",
        f"batch 1: {args.warmup} warm-up calls, then {args.calls} timed calls per engine, "
        f"engines interleaved over {args.rounds} rounds (each round's share after one "
        f"untimed call); p50/p90 over the timed calls. batch {args.batch_size}: "
        f"{BATCH_WARMUP} warm-up calls, then {args.batch_calls} timed calls, interleaved "
        f"likewise; img/s = images / seconds. {RATIO_COLUMN}: the fastest torch row's "
        f"batch-1 p50 / the row's. Run took {seconds:.0f} s.",
        *notes,
    ]
    if args.width_multiplier != 1:
        lines.append(
            f"note: ours at width {args.width_multiplier:g}, torch's at full width: the "
            "ratios compare different networks."
        )
    if args.calls < MIN_CALLS:
        lines.append(f"note: {args.calls} timed calls (< {MIN_CALLS}): no verdict.")
    return "\n".join(lines)


def check_args(args: argparse.Namespace) -> None:
    """Raises ValueError naming an image side below its model's smallest."""
    for model in args.models:
        size, least = image_size(args, model), MIN_IMAGE_SIZES[model]
        if size < least:
            raise ValueError(
                f"{SIZE_OPTIONS[model]} must be at least {least} for {model}; received {size}"
            )


def build_parser() -> argparse.ArgumentParser:
    parser = common.new_parser("inference", __doc__)
    common.add_models(parser, MODELS, MODELS)
    parser.add_argument(
        "--engines", nargs="+", choices=list(ENGINES), default=list(ENGINES), metavar="ENGINE",
        help=f"engines to run, of {', '.join(ENGINES)} (openvino_bf16 only on CPUs with "
        "avx512_bf16 or amx_bf16)",
    )  # fmt: skip
    parser.add_argument(
        "--calls", type=common.positive_int, default=MIN_CALLS,
        help=f"timed batch-1 calls per engine (a verdict needs >= {MIN_CALLS})",
    )  # fmt: skip
    parser.add_argument(
        "--warmup", type=common.positive_int, default=10, help="untimed batch-1 calls first"
    )
    parser.add_argument(
        "--batch-size", type=common.positive_int, default=32, help="the throughput batch"
    )
    parser.add_argument(
        "--batch-calls", type=common.positive_int, default=5,
        help="timed calls per engine at --batch-size",
    )  # fmt: skip
    parser.add_argument(
        "--rounds", type=common.positive_int, default=5,
        help="rounds the timed calls are interleaved over",
    )  # fmt: skip
    parser.add_argument(
        "--threads", type=common.positive_int, default=machine.usable_cores(),
        help="threads of every runtime; the default is the usable cores",
    )  # fmt: skip
    for model, option in SIZE_OPTIONS.items():
        parser.add_argument(
            option, type=common.positive_int, default=IMAGE_SIZES[model],
            help=f"input side of {model} in pixels",
        )  # fmt: skip
    common.add_width_multiplier(parser, help="scale our conv widths (torch's stay full)")
    parser.add_argument("--seed", type=int, default=0, help="seed of the weights and images")
    parser.add_argument(
        "--output", metavar="FILE.json",
        help="also write the rows, verdicts and machine as JSON (default: no file)",
    )  # fmt: skip
    return parser


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        check_args(args)
    except ValueError as err:
        parser.error(str(err))
    return args


def set_tf_threads(threads: int) -> None:
    """TensorFlow's intra-op threads, where they differ from its default (the cores)."""
    if threads != machine.usable_cores():
        tf.config.threading.set_intra_op_parallelism_threads(threads)


def write_json(path: str, args: argparse.Namespace, rows: list[dict], lines: list[str]) -> None:
    def plain(value):
        return None if isinstance(value, float) and math.isnan(value) else value

    report = {
        "machine": machine.info(),
        "args": vars(args),
        "rows": [{key: plain(value) for key, value in row.items()} for row in rows],
        "verdicts": lines,
    }
    with open(path, "w", encoding="utf-8") as f:
        json.dump(report, f, indent=2)


def main(argv: Sequence[str] | None = None) -> list[dict]:
    """Parses `argv`, runs, prints the machine lines, the table and the verdicts; returns
    the rows."""
    args = parse_args(argv)
    set_tf_threads(args.threads)
    notes: list[str] = []
    rows = common.run_and_report(
        args,
        lambda a: run(a, notes),
        columns(args.batch_size),
        lambda a, seconds: describe(a, seconds, notes),
    )
    lines = [verdict(rows, model, args.calls) for model in dict.fromkeys(args.models)]
    print("\n".join(lines))
    if args.output:
        write_json(args.output, args, rows, lines)
    return rows


if __name__ == "__main__":
    main(sys.argv[1:])
