"""What this machine's GPUs do: training images/s under mixed_float16, with and without
XLA, one GPU and MirroredStrategy over all of them, and the JPEG pipeline that feeds them.

Run it with `make gpu-check` (or `python -m benchmarks.gpu_check`). Most of its time goes
to building the models and compiling their training steps (XLA's the longest), not to
the timed steps; so that a run stays under 8 minutes, no training row starts after
`--time-budget-minutes` (5; a skipped row says so), and the elapsed time is printed.
On a machine without a GPU it prints the machine line and one line saying so, builds
nothing, and exits with status 0 (in seconds).

What it prints: the machine line (CPU, GPUs, versions), each GPU's name, compute
capability and memory, a line per row as it finishes, then a table:

* training images/s of GoogLeNet at 224x224 (per-GPU batch 128) and InceptionV3 at
  299x299 (per-GPU batch 64), 1000 classes, on one GPU, each with `jit_compile=False`
  and `jit_compile=True` (XLA). The models are built and compiled as
  `benchmarks.models` builds them (random weights, no auxiliary heads, softmax outputs,
  SGD with momentum, sparse cross-entropy) under Keras's `mixed_float16` policy (float16
  compute, float32 weights; Keras scales the loss), and train by `train_on_batch` on
  one fixed random batch held in GPU memory: `--warmup-steps` untimed steps (tracing,
  XLA compilation, autotuning), then `--steps` timed ones;
* the same under `tf.distribute.MirroredStrategy()` over all visible GPUs, one row per
  model, with the XLA setting that was faster on one GPU: each replica trains on the
  per-GPU batch (the global batch is per-GPU batch x replicas), the same batch, which
  lives on the first GPU and is copied to the others each step, as a pipeline's batches
  would be from the host;
* training's tf.data pipeline (`training.data.load_datasets` on a folder of generated
  400x300 JPEGs: read, JPEG decode fused with the Inception crop, resize, flip, colour)
  alone, at the input size and global batch of the fastest training row, and its
  images/s over that row's: above 1, the pipeline can feed it (here the CPU does nothing
  else; in training it also drives the GPUs).

A row that fails (out of GPU memory, an XLA compilation error) prints its error in the
"note" column, and the other rows still run. "peak GPU GiB" is the most GPU memory
TensorFlow's allocator held during the row's timed steps (the largest over the GPUs).

Example:

```
make gpu-check
python -m benchmarks.gpu_check --models googlenet --steps 20
python -m benchmarks.gpu_check --googlenet-batch-size 256 --v3-batch-size 128
```
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import gc
import math
import os
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path

if not __package__:  # run by path (`python benchmarks/gpu_check.py`): import from the repo root,
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
    # and set the process up before TensorFlow is imported (benchmarks/__init__.py).
    import benchmarks  # noqa: F401

import keras  # noqa: E402
import tensorflow as tf  # noqa: E402

from benchmarks import common, pipeline  # noqa: E402
from benchmarks import models as model_bench  # noqa: E402
from training import data as data_lib  # noqa: E402

MODELS = ("googlenet", "inception_v3")
POLICY = "mixed_float16"
NO_GPU = (
    "no GPU: tf.config.list_physical_devices('GPU') is empty; "
    "gpu-check measures nothing on this machine"
)
COLUMNS = (
    "measure",
    "model",
    "input",
    "batch",
    "XLA",
    "policy",
    "img/s",
    "train TFLOP/s",
    "peak GPU GiB",
    "seconds",
    common.CPU_COLUMN,
    "note",
)
PIPELINE = "tf.data JPEG pipeline"


def visible_gpus() -> list[tf.config.PhysicalDevice]:
    """The GPUs TensorFlow sees (`tf.config.list_physical_devices("GPU")`)."""
    return tf.config.list_physical_devices("GPU")


def memory_gib_by_index() -> dict[int, float]:
    """Each GPU's total memory in GiB by index, from `nvidia-smi`; empty without it, and
    where CUDA_VISIBLE_DEVICES is set (nvidia-smi's indices are then not TensorFlow's)."""
    if shutil.which("nvidia-smi") is None or os.environ.get("CUDA_VISIBLE_DEVICES"):
        return {}
    try:
        out = subprocess.run(
            ["nvidia-smi", "--query-gpu=index,memory.total", "--format=csv,noheader,nounits"],
            capture_output=True,
            text=True,
            timeout=20,
            check=True,
        ).stdout
    except (OSError, subprocess.SubprocessError):
        return {}
    return parse_memory(out)


def parse_memory(text: str) -> dict[int, float]:
    """`nvidia-smi --query-gpu=index,memory.total --format=csv,noheader,nounits` (MiB) as
    GiB by index; lines that are not two numbers are skipped.

    Example:
    >>> parse_memory("0, 81559\\n1, 81559\\n")
    {0: 79.6474609375, 1: 79.6474609375}
    """
    result = {}
    for line in text.splitlines():
        fields = [f.strip() for f in line.split(",")]
        if len(fields) == 2 and fields[0].isdigit() and fields[1].isdigit():
            result[int(fields[0])] = int(fields[1]) / 1024
    return result


def describe_gpus(gpus: Sequence[tf.config.PhysicalDevice]) -> str:
    """One line per GPU: its TensorFlow name, device name, compute capability (from
    `tf.config.experimental.get_device_details`) and total memory (`nvidia-smi`)."""
    memory = memory_gib_by_index()
    lines = []
    for index, device in enumerate(gpus):
        details = tf.config.experimental.get_device_details(device)
        parts = [details.get("device_name", "unknown GPU")]
        capability = details.get("compute_capability")
        if capability:
            parts.append(f"compute capability {'.'.join(str(c) for c in capability)}")
        if index in memory:
            parts.append(f"{memory[index]:.1f} GiB")
        lines.append(f"{device.name.removeprefix('/physical_device:')}: {', '.join(parts)}")
    return "\n".join(lines)


@dataclasses.dataclass(frozen=True)
class TrainRow:
    """One training measurement: `model` at `size` x `size`, `batch` images per GPU
    (per replica), with or without XLA, on one GPU or under MirroredStrategy."""

    model: str
    size: int
    batch: int
    jit_compile: bool
    mirrored: bool = False

    @property
    def measure(self) -> str:
        return "train, MirroredStrategy" if self.mirrored else "train, 1 GPU"


def size_and_batch(model: str, args: argparse.Namespace) -> tuple[int, int]:
    """The input side and per-GPU batch of `model` from the command line."""
    if model == "googlenet":
        return args.googlenet_image_size, args.googlenet_batch_size
    if model == "inception_v3":
        return args.v3_image_size, args.v3_batch_size
    raise ValueError(f"unknown gpu-check model {model!r}; choose from {list(MODELS)}")


def single_gpu_rows(args: argparse.Namespace) -> list[TrainRow]:
    """Each model of `args.models` without, then with XLA, on one GPU."""
    rows = []
    for model in dict.fromkeys(args.models):
        size, batch = size_and_batch(model, args)
        rows.extend(TrainRow(model, size, batch, jit) for jit in (False, True))
    return rows


def mirrored_rows(args: argparse.Namespace, measured: Sequence[dict]) -> list[TrainRow]:
    """One MirroredStrategy row per model, with the XLA setting of its fastest measured
    single-GPU row (`measured`: table rows; XLA off where no row of it succeeded)."""
    rows = []
    for model in dict.fromkeys(args.models):
        size, batch = size_and_batch(model, args)
        rows.append(TrainRow(model, size, batch, faster_xla(measured, model), mirrored=True))
    return rows


def faster_xla(rows: Sequence[dict], model: str) -> bool:
    """Whether XLA was on in `model`'s fastest single-GPU row of `rows` that has images/s;
    False where none has.

    Example:
    >>> rows = [{"measure": "train, 1 GPU", "model": "googlenet", "XLA": "off", "img/s": 10.0},
    ...         {"measure": "train, 1 GPU", "model": "googlenet", "XLA": "on", "img/s": 12.0}]
    >>> faster_xla(rows, "googlenet"), faster_xla(rows, "inception_v3")
    (True, False)
    """
    timed = [
        r
        for r in rows
        if r.get("measure") == "train, 1 GPU" and r.get("model") == model and "img/s" in r
    ]
    return bool(timed) and max(timed, key=lambda r: r["img/s"])["XLA"] == "on"


def error_note(error: BaseException, limit: int = 160) -> str:
    """The exception's type and the first line of its message, at most `limit` characters.

    Example:
    >>> error_note(ValueError("bad width\\nmore detail"))
    'ValueError: bad width'
    """
    message = str(getattr(error, "message", "") or error).strip().splitlines()
    text = f"{type(error).__name__}: {message[0] if message else ''}".rstrip(": ")
    return text if len(text) <= limit else text[: limit - 3] + "..."


def gpu_names() -> list[str]:
    """The logical GPUs' names as `tf.config.experimental.get_memory_info` takes them
    ("GPU:0", ...); empty on a machine without one."""
    return [d.name.removeprefix("/device:") for d in tf.config.list_logical_devices("GPU")]


def reset_peak_memory() -> None:
    for name in gpu_names():
        tf.config.experimental.reset_memory_stats(name)


def peak_memory_gib() -> float:
    """The largest peak, over the GPUs, of TensorFlow's allocator since the last reset;
    NaN without a GPU."""
    peaks = [tf.config.experimental.get_memory_info(n)["peak"] for n in gpu_names()]
    return max(peaks) / 2**30 if peaks else float("nan")


def row_head(row: TrainRow) -> dict:
    """The columns of `row`'s table row known before it runs; "batch" is the global batch
    (per-GPU batch x `replicas()` under MirroredStrategy).

    Example:
    >>> row_head(TrainRow("googlenet", 224, 128, jit_compile=True))
    {'measure': 'train, 1 GPU', 'model': 'googlenet', 'input': '224x224', 'batch': 128, 'XLA': 'on'}
    """
    return {
        "measure": row.measure,
        "model": row.model,
        "input": f"{row.size}x{row.size}",
        "batch": row.batch * (replicas() if row.mirrored else 1),
        "XLA": "on" if row.jit_compile else "off",
    }


def replicas() -> int:
    """The replicas of `tf.distribute.MirroredStrategy()` here: one per GPU, else the CPU."""
    return max(1, len(gpu_names()))


def train_row(row: TrainRow, args: argparse.Namespace) -> dict:
    """Builds, compiles and times `row` (see the module docstring); returns its table row.
    Any error (out of memory, XLA) goes to the row's note instead of propagating."""
    start = time.perf_counter()
    usage = common.CpuTime()
    result = row_head(row)
    try:
        keras.config.set_dtype_policy(POLICY)  # each row: clear_session resets the policy
        result.update(_train(row, args, usage))
    except Exception as error:  # a failed row is reported, not raised
        result["note"] = error_note(error)
    finally:
        keras.backend.clear_session()
        gc.collect()
    result["seconds"] = time.perf_counter() - start
    return result


def _train(row: TrainRow, args: argparse.Namespace, usage: common.CpuTime) -> dict:
    strategy = tf.distribute.MirroredStrategy() if row.mirrored else None
    with strategy.scope() if strategy else contextlib.nullcontext():
        bench = model_bench.prepare(
            row.model,
            row.size,
            row.batch,
            classes=args.classes,
            width=args.width_multiplier,
            seed=args.seed,
        )
        bench.model.jit_compile = row.jit_compile  # before the train function is made
    names = gpu_names()
    with tf.device(names[0] if names else "/CPU:0"):  # the batch in (the first) GPU memory
        x, y = tf.nest.map_structure(tf.identity, (bench.x, bench.y))
    replicas = strategy.num_replicas_in_sync if strategy else 1

    def step():
        return bench.model.train_on_batch(x, y, return_dict=True)

    for _ in range(args.warmup_steps):
        step()
    reset_peak_memory()
    rate = common.rate(step, args.steps, row.batch * replicas, usage)
    result = {
        "policy": model_bench.conv_policy(bench.model),
        "img/s": rate,
        "train TFLOP/s": rate * 6 * bench.macs / 1e12,
        "peak GPU GiB": peak_memory_gib(),
        common.CPU_COLUMN: usage.ratio,
    }
    if row.jit_compile and not bench.model.jit_compile:
        result["note"] = "Keras refused XLA for this model (ran without)"
    return result


def pipeline_row(args: argparse.Namespace, measured: Sequence[dict]) -> dict:
    """Images/s of training's JPEG pipeline at the input size and global batch of the
    fastest row of `measured`, and its ratio to that row's images/s."""
    timed = [r for r in measured if "img/s" in r]
    fastest = max(timed, key=lambda r: r["img/s"]) if timed else None
    model = fastest["model"] if fastest else next(iter(dict.fromkeys(args.models)))
    size, batch = size_and_batch(model, args)
    batch = fastest["batch"] if fastest else batch
    start = time.perf_counter()
    usage = common.CpuTime()
    result = {"measure": PIPELINE, "model": model, "input": f"{size}x{size}", "batch": batch}
    try:
        # Whole batches only: each of the `batches` timed ones holds `batch` images.
        images = batch * math.ceil(args.images / batch)
        with tempfile.TemporaryDirectory(prefix="gpu-check-jpeg-") as root:
            pipeline.write_jpeg_folder(root, images, seed=args.seed)
            config = data_lib.DataConfig(
                "imagefolder", data_dir=root, image_size=size, batch_size=batch, val_fraction=0.0
            )
            consumer = pipeline.Consumer(data_lib.load_datasets(config).train, batch)
            rate = consumer.measure(args.pipeline_batches, usage)
    except Exception as error:  # a failed row is reported, not raised
        result["note"] = error_note(error)
    else:
        result.update({"img/s": rate, common.CPU_COLUMN: usage.ratio})
        if fastest:
            result["note"] = feed_note(rate, fastest)
    result["seconds"] = time.perf_counter() - start
    return result


def feed_note(rate: float, fastest: dict) -> str:
    """Whether a pipeline at `rate` images/s can feed the training row `fastest`.

    Example:
    >>> feed_note(3000.0, {"measure": "train, 1 GPU", "XLA": "on", "img/s": 1500.0})
    '2.00x the fastest training row (train, 1 GPU, XLA on): can feed it'
    """
    ratio = rate / fastest["img/s"]
    verdict = "can feed it" if ratio >= 1 else "cannot feed it: training would wait for data"
    which = f"{fastest['measure']}, XLA {fastest['XLA']}"
    return f"{ratio:.2f}x the fastest training row ({which}): {verdict}"


def run(args: argparse.Namespace) -> list[dict]:
    """Prints the GPUs, measures every row (see the module docstring) under `POLICY`,
    printing each as it finishes; returns the table rows. The global dtype policy is
    restored afterwards."""
    print(describe_gpus(visible_gpus()), flush=True)
    start = time.perf_counter()
    budget = args.time_budget_minutes * 60
    previous = keras.config.dtype_policy()
    rows: list[dict] = []
    try:
        keras.utils.set_random_seed(args.seed)
        for single in (True, False):  # the mirrored rows take the single rows' XLA
            for row in single_gpu_rows(args) if single else mirrored_rows(args, rows):
                if time.perf_counter() - start > budget:
                    rows.append(skipped_row(row, args.time_budget_minutes))
                else:
                    rows.append(train_row(row, args))
                report(rows[-1], time.perf_counter() - start)
    finally:
        keras.config.set_dtype_policy(previous)
    rows.append(pipeline_row(args, rows))
    report(rows[-1], time.perf_counter() - start)
    return rows


def skipped_row(row: TrainRow, minutes: float) -> dict:
    """The table row of `row` not started because the run passed its time budget."""
    return {**row_head(row), "note": f"skipped: the run passed --time-budget-minutes {minutes:g}"}


def report(row: dict, elapsed: float) -> None:
    """One progress line: the row's name and its images/s or its note."""
    what = f"{row['img/s']:,.0f} img/s" if "img/s" in row else row.get("note", "")
    xla = f", XLA {row['XLA']}" if "XLA" in row else ""
    print(
        f"[{elapsed:4.0f} s] {row['measure']}, {row['model']} {row['input']}{xla}: {what}",
        flush=True,
    )


def build_parser() -> argparse.ArgumentParser:
    parser = common.new_parser("gpu_check", __doc__)
    common.add_models(parser, MODELS, MODELS)
    parser.add_argument(
        "--googlenet-image-size", type=common.positive_int, default=224, help="GoogLeNet's input"
    )
    parser.add_argument(
        "--v3-image-size", type=common.positive_int, default=299, help="InceptionV3's input"
    )
    parser.add_argument(
        "--googlenet-batch-size", type=common.positive_int, default=128, help="per GPU"
    )
    parser.add_argument("--v3-batch-size", type=common.positive_int, default=64, help="per GPU")
    parser.add_argument("--classes", type=common.positive_int, default=1000, help="classes")
    common.add_width_multiplier(parser)
    parser.add_argument(
        "--warmup-steps", type=common.positive_int, default=5, help="untimed steps a row"
    )
    parser.add_argument("--steps", type=common.positive_int, default=40, help="timed steps a row")
    parser.add_argument(
        "--images", type=common.positive_int, default=512, help="JPEGs made (whole batches)"
    )
    parser.add_argument(
        "--pipeline-batches", type=common.positive_int, default=20, help="timed pipeline batches"
    )
    parser.add_argument(
        "--time-budget-minutes",
        type=common.positive_float,
        default=5.0,
        help="no training row starts after this; the pipeline row always runs",
    )
    parser.add_argument("--seed", type=int, default=0, help="seed of the weights and the batch")
    return parser


def describe(args: argparse.Namespace, seconds: float) -> str:
    """The lines above the table: the run's settings and how long it took."""
    return (
        f"policy {POLICY}; per-GPU batch and input: "
        f"googlenet {args.googlenet_batch_size} at {args.googlenet_image_size}, "
        f"inception_v3 {args.v3_batch_size} at {args.v3_image_size}; {args.warmup_steps} "
        f"warm-up then {args.steps} timed steps a row; MirroredStrategy rows: per-GPU batch "
        f"x replicas, XLA as the faster single-GPU row. Elapsed: {seconds:.0f} s.\n"
        + common.FLOP_CONVENTION
    )


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    return build_parser().parse_args(argv)


def main(argv: Sequence[str] | None = None) -> list[dict]:
    """Parses `argv`; without a GPU prints the machine line and `NO_GPU` and returns no
    rows; else measures and prints the table (`common.run_and_report`) and returns it."""
    args = parse_args(argv)
    if not visible_gpus():
        print(common.machine_description())
        print(NO_GPU)
        return []
    return common.run_and_report(args, run, COLUMNS, describe)


if __name__ == "__main__":
    main(sys.argv[1:])
