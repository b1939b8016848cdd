"""Training and inference throughput of the models, against same-run baselines.

For each model: training images/s and inference images/s at one batch size and input
size, parameters, forward multiply-adds, the achieved training GFLOP/s, and that as a
fraction of this machine's fp32 matmul rate measured in the same run, and the process's
CPU time / wall over the model's timed training and inference steps. Baselines, timed
interleaved with the models (round 1: A B C D, round 2: A B C D, ...; medians reported):

* `keras.applications.InceptionV3(weights=None)` for our InceptionV3 (same topology; ours
  built with `aux_logits=False, dropout=0.0`, so the two graphs match layer for layer);
* GoogLeNet without auxiliary heads for GoogLeNet with them (the cost of the aux heads).

All models are compiled alike: SGD with momentum, sparse categorical cross-entropy,
`jit_compile=False`, softmax outputs, random weights, one fixed random batch, under one
Keras dtype policy: float32 by default; `--mixed-precision`, as in training, the machine's
mixed policy (mixed_float16 on GPU; mixed_bfloat16 on CPU, which computes in bfloat16, on
the bf16 units of CPUs with AVX512-BF16 or AMX), or `--mixed-precision POLICY` that policy
on any machine. The matmul rate is measured in the policy's compute dtype too.

Example:

```
python -m benchmarks.models --batch-size 16 --rounds 3 --steps 2
python -m benchmarks.models --models inception_v3 --mixed-precision
```
"""

from __future__ import annotations

import argparse
import dataclasses
import sys
from pathlib import Path

if not __package__:  # run by path (`python benchmarks/models.py`): import from the repo root,
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
    # and set the process up before TensorFlow is imported (benchmarks/__init__.py).
    import benchmarks  # noqa: F401

import keras  # noqa: E402
import numpy as np  # noqa: E402
import tensorflow as tf  # noqa: E402

import keras_inception as ki  # noqa: E402
from benchmarks import common  # noqa: E402

MODELS = ("inception_v3", "keras_inception_v3", "googlenet", "googlenet_aux", "inception_v2")
DEFAULT_MODELS = ("inception_v3", "keras_inception_v3", "googlenet", "googlenet_aux")
# model -> the baseline its ratios are against.
BASELINE_OF = {
    "inception_v3": "keras_inception_v3",
    "keras_inception_v3": "keras_inception_v3",
    "googlenet": "googlenet",
    "googlenet_aux": "googlenet",
    "inception_v2": "keras_inception_v3",
}
COLUMNS = (
    "model",
    "input",
    "batch",
    "policy",
    "params",
    "GMACs",
    "train img/s",
    "train ratio",
    "infer img/s",
    "infer ratio",
    "baseline",
    "train GFLOP/s",
    "train % matmul",
    "infer % matmul",
    common.CPU_COLUMN,
)


@dataclasses.dataclass
class Bench:
    """One model under test: its compiled Keras model, a fixed batch, timings per round."""

    name: str
    size: int
    model: keras.Model
    x: tf.Tensor
    y: object
    macs: int
    train: list[float] = dataclasses.field(default_factory=list)
    infer: list[float] = dataclasses.field(default_factory=list)
    usage: common.CpuTime = dataclasses.field(default_factory=common.CpuTime)


def build(name: str, size: int, classes: int, width: float = 1.0) -> keras.Model:
    """The model `name` of `MODELS` at `size` x `size` x 3 with softmax outputs."""
    shape = (size, size, 3)
    if name == "keras_inception_v3":
        if width != 1.0:
            raise ValueError(f"keras_inception_v3 has no width multiplier; received {width}")
        return keras.applications.InceptionV3(weights=None, input_shape=shape, classes=classes)
    common_kw = dict(input_shape=shape, classes=classes, width_multiplier=width)
    if name == "inception_v3":
        return ki.build_inception_v3(aux_logits=False, dropout=0.0, **common_kw)
    if name == "inception_v2":
        return ki.build_inception_v2(aux_logits=False, **common_kw)
    if name in ("googlenet", "googlenet_aux"):
        return ki.build_googlenet(aux_logits=name == "googlenet_aux", **common_kw)
    raise ValueError(f"unknown benchmark model {name!r}; choose from {list(MODELS)}")


def conv_policy(model: keras.Model) -> str:
    """The dtype policy the model's convolutions were built under (the run's policy)."""
    conv = next(layer for layer in model.layers if isinstance(layer, keras.layers.Conv2D))
    return conv.dtype_policy.name


def prepare(name: str, size: int, batch: int, classes: int, width: float, seed: int) -> Bench:
    model = build(name, size, classes, width)
    loss = keras.losses.SparseCategoricalCrossentropy()
    outputs = model.output
    names = list(outputs) if isinstance(outputs, dict) else None
    model.compile(
        optimizer=keras.optimizers.SGD(0.01, momentum=0.9),
        loss={k: loss for k in names} if names else loss,
        loss_weights=ki.default_loss_weights(model) if names else None,
        jit_compile=False,
    )
    rng = np.random.default_rng(seed)
    x = tf.constant(rng.uniform(-1, 1, (batch, size, size, 3)).astype(np.float32))
    labels = tf.constant(rng.integers(0, classes, batch).astype(np.int32))
    y = {k: labels for k in names} if names else labels
    return Bench(name, size, model, x, y, ki.analysis.macs(model))


def run(args: argparse.Namespace) -> list[dict]:
    """Measures every model of `args.models` under the dtype policy `args.policy` (set
    by `--mixed-precision`); returns the table rows (see `COLUMNS`). The global policy is
    restored afterwards."""
    previous = keras.config.dtype_policy()
    keras.config.set_dtype_policy(args.policy)
    try:
        return _run(args)
    finally:
        keras.config.set_dtype_policy(previous)


def _run(args: argparse.Namespace) -> list[dict]:
    keras.utils.set_random_seed(args.seed)
    names = list(dict.fromkeys(args.models))
    for name in names:
        if name not in MODELS:
            raise ValueError(f"unknown benchmark model {name!r}; choose from {list(MODELS)}")
    # Each model's baseline is measured in the same run, even when not asked for.
    for name in list(names):
        if BASELINE_OF[name] not in names:
            names.append(BASELINE_OF[name])
    size_of = {
        n: args.googlenet_image_size if n.startswith("googlenet") else args.v3_image_size
        for n in names
    }
    width = args.width_multiplier
    if width != 1.0:
        names = [n for n in names if n != "keras_inception_v3"]
    benches = [
        prepare(n, size_of[n], args.batch_size, args.classes, width, args.seed) for n in names
    ]
    matmul_dtype = keras.config.dtype_policy().compute_dtype
    matmul = common.MatmulRate(args.matmul_size, dtype=matmul_dtype)
    for bench in benches:  # trace and warm up
        for _ in range(args.warmup):
            bench.model.train_on_batch(bench.x, bench.y)
            bench.model.predict_on_batch(bench.x)

    matmul_rates, matmul_usage = [], common.CpuTime()
    for _ in range(args.rounds):
        matmul_rates.append(matmul.measure(matmul_usage))
        for bench in benches:
            bench.train.append(
                common.rate(
                    lambda b=bench: b.model.train_on_batch(b.x, b.y, return_dict=True),
                    args.steps,
                    args.batch_size,
                    bench.usage,
                )
            )
            bench.infer.append(
                common.rate(
                    lambda b=bench: b.model.predict_on_batch(b.x),
                    args.steps,
                    args.batch_size,
                    bench.usage,
                )
            )
    matmul_gflops = common.median(matmul_rates)

    by_name = {b.name: b for b in benches}
    rows = []
    for bench in benches:
        base = by_name.get(BASELINE_OF[bench.name])
        # Ratios per round (same round, adjacent in time), then the median. No baseline
        # (keras_inception_v3 has no --width-multiplier): no ratio.
        train_ratio = infer_ratio = float("nan")
        if base is not None:
            train_ratio = common.median(
                [a / b for a, b in zip(bench.train, base.train, strict=True)]
            )
            infer_ratio = common.median(
                [a / b for a, b in zip(bench.infer, base.infer, strict=True)]
            )
        train_rate, infer_rate = common.median(bench.train), common.median(bench.infer)
        train_gflops = train_rate * 6 * bench.macs / 1e9
        infer_gflops = infer_rate * 2 * bench.macs / 1e9
        rows.append(
            {
                "model": bench.name,
                "input": f"{bench.size}x{bench.size}",
                "batch": args.batch_size,
                "policy": conv_policy(bench.model),
                "params": bench.model.count_params(),
                "GMACs": bench.macs / 1e9,
                "train img/s": train_rate,
                "train ratio": train_ratio,
                "infer img/s": infer_rate,
                "infer ratio": infer_ratio,
                "baseline": base.name if base is not None else "-",
                "train GFLOP/s": train_gflops,
                "train % matmul": 100 * train_gflops / matmul_gflops,
                "infer % matmul": 100 * infer_gflops / matmul_gflops,
                common.CPU_COLUMN: bench.usage.ratio,
            }
        )
    label = {"float32": "fp32", "bfloat16": "bf16", "float16": "fp16"}[matmul_dtype]
    rows.append(
        {
            "model": f"{label} matmul {args.matmul_size}^2",
            "train GFLOP/s": matmul_gflops,
            common.CPU_COLUMN: matmul_usage.ratio,
        }
    )
    return rows


def build_parser() -> argparse.ArgumentParser:
    parser = common.new_parser("models", __doc__)
    common.add_models(
        parser, MODELS, DEFAULT_MODELS, help="models to run; each one's baseline is added"
    )
    parser.add_argument("--batch-size", type=common.positive_int, default=16, help="batch size")
    common.add_image_size(parser, "--v3-image-size", 299, "the V3s and V2", old="--v3-size")
    common.add_image_size(
        parser, "--googlenet-image-size", 224, "the GoogLeNets", old="--googlenet-size"
    )
    parser.add_argument("--classes", type=common.positive_int, default=1000, help="classes")
    common.add_width_multiplier(
        parser,
        help="scale every conv width of our models: max(int(w * m), min_depth); "
        "keras_inception_v3 has no multiplier and is left out unless it is 1",
    )
    parser.add_argument("--warmup", type=common.positive_int, default=1, help="untimed steps")
    parser.add_argument("--rounds", type=common.positive_int, default=3, help="A B A B rounds")
    parser.add_argument("--steps", type=common.positive_int, default=2, help="steps per round")
    parser.add_argument(
        "--matmul-size",
        type=common.positive_int,
        default=2048,
        help="side of the matmul's matrices",
    )
    common.add_mixed_precision(parser)
    common.add_retired_policy(parser)
    parser.add_argument("--seed", type=int, default=0, help="seed of the weights and the batch")
    return parser


# The lines above the table: the run's settings and conventions.
DESCRIPTION = (
    "policy {policy}; batch {batch_size}; {rounds} rounds x {steps} steps after {warmup} "
    "warm-up; medians; ratios are per round against the baseline column.\n" + common.FLOP_CONVENTION
)
SCRIPT = common.Script(build_parser, run, COLUMNS, DESCRIPTION)
parse_args, main = SCRIPT.parse_args, SCRIPT.main


if __name__ == "__main__":
    main(sys.argv[1:])
