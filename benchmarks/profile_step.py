"""Where a training step's time goes: a short `tf.profiler` trace, summed by op type.

Traces a few training steps of one model with `tf.profiler.experimental`, then reads the
trace's XPlane file directly (TensorFlow's own `xplane_pb2`; no TensorBoard profile plugin
needed) and sums the host-side TensorFlow op durations by op type. Ops run in parallel on
the cores, so the shares are of summed op time, not of wall time. The wall-time row gives
the process's CPU time / wall over the traced steps (the one timed region: every op row
comes from it).

Example:

```
python -m benchmarks.profile_step --model inception_v3 --batch-size 16 --steps 2
```
"""

from __future__ import annotations

import argparse
import collections
import glob
import os
import re
import sys
import tempfile
from collections.abc import Sequence
from pathlib import Path

if not __package__:  # run by path (`python benchmarks/profile_step.py`): import from the repo root,
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
    # and set the process up before TensorFlow is imported (benchmarks/__init__.py).
    import benchmarks  # noqa: F401

import tensorflow as tf  # noqa: E402

from benchmarks import common  # noqa: E402
from benchmarks import models as model_bench  # noqa: E402

COLUMNS = ("op type", "ms / step", "share %", "calls / step", common.CPU_COLUMN)


def op_times(xplane_path: str) -> dict[str, tuple[float, int]]:
    """Total duration (ms) and count of TensorFlow op events per op type in one trace."""
    from tensorflow.tsl.profiler.protobuf import xplane_pb2

    space = xplane_pb2.XSpace()
    with open(xplane_path, "rb") as f:
        space.ParseFromString(f.read())
    totals: dict[str, list] = collections.defaultdict(lambda: [0.0, 0])
    for plane in space.planes:
        if not plane.name.startswith("/host:CPU"):
            continue
        for line in plane.lines:
            for event in line.events:
                name = plane.event_metadata[event.metadata_id].name
                # TF op events are named "scope/op_name:OpType" on the host plane.
                # ("ExecutorState::Process" and the like are the executor's, not ops.)
                if ":" not in name or "::" in name:
                    continue
                op_type = name.rsplit(":", 1)[1]
                if not re.fullmatch(r"_?[A-Z]\w*", op_type):
                    continue
                totals[op_type][0] += event.duration_ps / 1e9
                totals[op_type][1] += 1
    return {k: (v[0], v[1]) for k, v in totals.items()}


def run(args: argparse.Namespace) -> list[dict]:
    bench = model_bench.prepare(
        args.model, args.image_size, args.batch_size, args.classes, args.width_multiplier, args.seed
    )
    for _ in range(2):  # trace the graph and warm up outside the profile
        bench.model.train_on_batch(bench.x, bench.y)
    logdir = args.logdir or tempfile.mkdtemp(prefix="bench-profile-")
    tf.profiler.experimental.start(logdir)
    usage = common.CpuTime()
    start = usage.mark()
    for _ in range(args.steps):
        bench.model.train_on_batch(bench.x, bench.y)
    wall = usage.add(start, usage.mark()) / args.steps
    tf.profiler.experimental.stop()
    files = sorted(glob.glob(os.path.join(logdir, "**", "*.xplane.pb"), recursive=True))
    if not files:
        raise FileNotFoundError(f"tf.profiler wrote no .xplane.pb under {logdir}")
    totals = op_times(files[-1])
    total = sum(ms for ms, _ in totals.values()) or float("nan")
    rows = [
        {
            "op type": op,
            "ms / step": ms / args.steps,
            "share %": 100 * ms / total,
            "calls / step": count // args.steps,
        }
        for op, (ms, count) in sorted(totals.items(), key=lambda kv: -kv[1][0])
    ][: args.top]
    rows.append({"op type": "(all ops, summed over threads)", "ms / step": total / args.steps})
    rows.append(
        {"op type": "(wall time per step)", "ms / step": wall * 1e3, common.CPU_COLUMN: usage.ratio}
    )
    print(f"trace: {files[-1]}")
    return rows


def build_parser() -> argparse.ArgumentParser:
    parser = common.new_parser("profile_step", __doc__)
    parser.add_argument(
        "--model", default="inception_v3", choices=model_bench.MODELS, help="model to profile"
    )
    common.add_image_size(parser, "--image-size", 299, "the model", old="--size")
    parser.add_argument("--batch-size", type=common.positive_int, default=16, help="batch size")
    parser.add_argument("--steps", type=common.positive_int, default=2, help="steps traced")
    parser.add_argument("--classes", type=common.positive_int, default=1000, help="classes")
    common.add_width_multiplier(parser)
    parser.add_argument("--top", type=common.positive_int, default=15, help="rows shown")
    parser.add_argument(
        "--logdir",
        default=None,
        help="keep the trace here, for TensorBoard (default: a temporary folder)",
    )
    parser.add_argument("--seed", type=int, default=0, help="seed of the weights and the batch")
    return parser


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    return build_parser().parse_args(argv)


def describe(args: argparse.Namespace, seconds: float) -> str:
    """The line above the table: the model, input, batch and steps traced."""
    size = args.image_size
    return f"{args.model} {size}x{size}, batch {args.batch_size}, {args.steps} steps"


def main(argv: Sequence[str] | None = None) -> list[dict]:
    """Parses `argv`, runs, prints the machine line and the table; returns the rows."""
    return common.run_and_report(parse_args(argv), run, COLUMNS, describe)


if __name__ == "__main__":
    main(sys.argv[1:])
