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
import importlib.util
import json
import math
import sys
import tempfile
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

if not __package__:  # run by path (`python benchmarks/inference.py`): import from the repo
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
    # root, and set the process up before TensorFlow is imported (benchmarks/__init__.py).
    import benchmarks  # noqa: F401

import tensorflow as tf  # noqa: E402

from benchmarks import common  # noqa: E402
from benchmarks.inference_engines import (  # noqa: E402
    ENGINES,
    InferencePeer,
    describe_torch,
    measure,
    prepare_model,
)
from training import machine  # noqa: E402

MODELS = ("googlenet", "inception_v3")
# Each model's ImageNet side, smallest side, and its option's dest.
IMAGE_SIZES: Mapping[str, int] = {"googlenet": 224, "inception_v3": 299}
MIN_IMAGE_SIZES: Mapping[str, int] = {"googlenet": 32, "inception_v3": 75}
SIZE_OPTIONS: Mapping[str, str] = {
    "googlenet": "--googlenet-image-size",
    "inception_v3": "--v3-image-size",
}
TARGET = 1.5  # our fastest / the fastest torch path, batch-1 latency (issue 34)
MIN_CALLS = 50  # timed batch-1 calls behind a verdict
BATCH_WARMUP = 2  # untimed calls at the batch size, per engine
BF16_FLAGS = ("avx512_bf16", "amx_bf16")  # /proc/cpuinfo flags of bf16 arithmetic
TORCH_MISSING = "{} not installed: make install-torch"
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


def image_size(args: argparse.Namespace, model: str) -> int:
    return getattr(args, SIZE_OPTIONS[model].removeprefix("--").replace("-", "_"))


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
                for row in prepare_model(
                    model_name,
                    engines,
                    folder,
                    peer,
                    torch_note,
                    size=image_size(args, model_name),
                    width_multiplier=args.width_multiplier,
                    seed=args.seed,
                    threads=args.threads,
                )
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
