"""Fresh processes of one fixed training step: how many run on the whole CPU (issue 31).

On 2-core machines some TensorFlow training processes run, for their whole life, with
their CPU time equal to their wall time: one core works at a time, at about half the
speed. This probe starts `--processes` fresh processes of each model, one after the other
(never two at once), and each reports its training images/s over `--steps` steps after
`--warmup` steps, and its CPU time / wall over those steps (`resource.getrusage`). The
table lists every process; the summary counts, per model, the processes within 10% of the
fastest ("fast") and those whose CPU time/wall is under 1.3 on a machine of more than one
core ("one core").

Models: `googlenet_224` (GoogLeNet with auxiliary heads at 224x224, batch 16, SGD
momentum 0.9: the issue's probe) and `demo` (the demo GoogLeNet of `make demo`, 28x28,
1/8 width, auxiliary heads, batch 128, SGD).

    python -m benchmarks.threads --processes 20
    python -m benchmarks.threads --processes 5 --models demo
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
from collections.abc import Sequence
from pathlib import Path

if not __package__:  # run by path (`python benchmarks/threads.py`): import from the repo root,
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
    # and set the process up before TensorFlow is imported (benchmarks/__init__.py).
    import benchmarks  # noqa: F401

from benchmarks.common import CPU_COLUMN, HelpFormatter, format_table, positive_int  # noqa: E402
from training.cpu_mode import ONE_CORE_BELOW  # noqa: E402  (training's run-time verdict)

ROOT = Path(__file__).resolve().parents[1]
MODELS = {"googlenet_224": 16, "demo": 128}  # name: batch size
FAST_WITHIN = 0.10  # a process within 10% of the fastest of its model is "fast"


def worker(model_name: str, warmup: int, steps: int, seed: int) -> dict:
    """One process's measurement: builds and compiles the model, trains `warmup` steps,
    then times `steps` more; returns images/s and CPU time / wall of the timed steps."""
    import keras
    import numpy as np

    import keras_inception as ki
    from benchmarks import common
    from benchmarks import models as model_bench

    batch = MODELS[model_name]
    if model_name == "googlenet_224":
        bench = model_bench.prepare("googlenet_aux", 224, batch, 1000, 1.0, seed)
        model, x, y = bench.model, bench.x, bench.y
    else:
        model = common.build_demo("googlenet_demo_aux")
        names = list(model.output)
        loss = keras.losses.SparseCategoricalCrossentropy()
        model.compile(
            optimizer=keras.optimizers.SGD(0.01, momentum=0.9),
            loss={k: loss for k in names},
            loss_weights=ki.default_loss_weights(model),
            jit_compile=False,
        )
        rng = np.random.default_rng(seed)
        x = rng.uniform(-1, 1, (batch, 28, 28, 1)).astype("float32")
        labels = rng.integers(0, 10, batch).astype("int32")
        y = {k: labels for k in names}
    for _ in range(warmup):
        model.train_on_batch(x, y)
    usage = common.CpuTime()
    images_per_sec = common.rate(lambda: model.train_on_batch(x, y), steps, batch, usage)
    return {"images_per_sec": images_per_sec, "cpu_per_wall": usage.ratio, "pid": os.getpid()}


def measure_process(model_name: str, warmup: int, steps: int, seed: int) -> dict:
    """Runs `worker` in a fresh Python process; returns its measurement."""
    command = [sys.executable, "-m", "benchmarks.threads", "--worker", model_name]
    command += ["--warmup", str(warmup), "--steps", str(steps), "--seed", str(seed)]
    result = subprocess.run(command, cwd=ROOT, capture_output=True, text=True, timeout=900)
    if result.returncode != 0:
        raise RuntimeError(f"the {model_name} process failed:\n{result.stderr[-3000:]}")
    return json.loads(result.stdout.strip().splitlines()[-1])


def classify(rows: list[dict], cores: int) -> list[dict]:
    """Adds to each row its share of its model's fastest rate (`% of best`) and its `mode`:
    "fast" (within 10% of the best), "one core" (CPU time/wall under 1.3 where `cores` >
    1) or "slower"; returns the rows.

    Example:
    >>> rows = [{"model": "demo", "images_per_sec": 100.0, "cpu_per_wall": 1.9},
    ...         {"model": "demo", "images_per_sec": 52.0, "cpu_per_wall": 1.0}]
    >>> [r["mode"] for r in classify(rows, cores=2)]
    ['fast', 'one core']
    """
    best: dict[str, float] = {}
    for row in rows:
        best[row["model"]] = max(best.get(row["model"], 0.0), row["images_per_sec"])
    for row in rows:
        share = row["images_per_sec"] / best[row["model"]] if best[row["model"]] else 0.0
        row["% of best"] = 100.0 * share
        if share >= 1.0 - FAST_WITHIN:
            row["mode"] = "fast"
        elif cores > 1 and row["cpu_per_wall"] < ONE_CORE_BELOW:
            row["mode"] = "one core"
        else:
            row["mode"] = "slower"
    return rows


def summarize(rows: list[dict]) -> list[dict]:
    """Per model: processes, fast ones, one-core ones, best and median images/s."""
    out = []
    for model_name in dict.fromkeys(r["model"] for r in rows):
        mine = [r for r in rows if r["model"] == model_name]
        rates = sorted(r["images_per_sec"] for r in mine)
        out.append(
            {
                "model": model_name,
                "processes": len(mine),
                "fast": sum(r["mode"] == "fast" for r in mine),
                "one core": sum(r["mode"] == "one core" for r in mine),
                "best img/s": rates[-1],
                "median img/s": rates[len(rates) // 2],
            }
        )
    return out


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m benchmarks.threads",
        description="Fresh training processes, one at a time: images/s and CPU time/wall.",
        formatter_class=HelpFormatter,
    )
    parser.add_argument(
        "--processes", type=positive_int, default=20, help="fresh processes per model"
    )
    parser.add_argument(
        "--models", nargs="+", choices=list(MODELS), default=list(MODELS), help="models"
    )
    parser.add_argument("--warmup", type=positive_int, default=3, help="untimed steps first")
    parser.add_argument("--steps", type=positive_int, default=6, help="timed steps")
    parser.add_argument("--seed", type=int, default=0, help="seed of weights and batch")
    parser.add_argument("--worker", choices=list(MODELS), help=argparse.SUPPRESS)
    return parser


def main(argv: Sequence[str] | None = None) -> list[dict]:
    args = build_parser().parse_args(argv)
    if args.worker:
        print(json.dumps(worker(args.worker, args.warmup, args.steps, args.seed)))
        return []
    from benchmarks.common import machine_description

    print(machine_description(), flush=True)
    cores = len(os.sched_getaffinity(0))
    rows = []
    for model_name in args.models:
        for index in range(args.processes):
            row = {"model": model_name, "process": index + 1}
            row.update(measure_process(model_name, args.warmup, args.steps, args.seed))
            rows.append(row)
            print(
                f"{model_name} process {index + 1}/{args.processes}: "
                f"{row['images_per_sec']:.1f} img/s, CPU time/wall {row['cpu_per_wall']:.2f}",
                flush=True,
            )
    classify(rows, cores)
    table = [
        {"model": r["model"], "process": r["process"], "img/s": r["images_per_sec"],
         CPU_COLUMN: r["cpu_per_wall"], "% of best": r["% of best"], "mode": r["mode"]}
        for r in rows
    ]  # fmt: skip
    print(format_table(table))
    print(format_table(summarize(rows)))
    return rows


if __name__ == "__main__":
    main()
