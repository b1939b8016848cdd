"""Training speed with FusedBatchNormalization against Keras's BatchNormalization.

For each model, two copies with the same weights: one as built (Keras's
`BatchNormalization`, a chain of small ops on TensorFlow), and its clone with every
`BatchNormalization` swapped for `keras_inception.FusedBatchNormalization`
(`keras.models.clone_model(..., clone_function=fuse_batch_norm)`), which runs
TensorFlow's `FusedBatchNormV3` kernel forward and backward. Both are compiled alike
(`jit_compile=False`; SGD with momentum, or AdamW) under one Keras dtype policy (float32;
`--mixed-precision`, as in training, mixed_float16 on GPU and mixed_bfloat16 on CPU;
`--mixed-precision POLICY` that policy on any machine) and trained on one fixed random
batch; their timed rounds are interleaved (round 1: unfused, fused; round 2: fused,
unfused; ...), and the speedup is the median over rounds of fused images/s over unfused
images/s in the same round (above 1: the fused layer is faster). The process's CPU time /
wall is over both copies' timed steps.

Models:

* `inception_v3`: `build_inception_v3(aux_logits=False, dropout=0.0)` at
  `--image-size` (299: the paper's), `--batch-size` images;
* `googlenet_demo`: `make demo`'s model: GoogLeNet, stem "small_pool" (stage 3 at
  14x14), width 1/8, min_depth 16, dropout 0, no auxiliary heads, 28x28x1, 10 classes,
  `--demo-batch-size` (256) images;
* `googlenet_demo_aux`: the demo's model before it (kept so that numbers measured on it
  stay reproducible): small stem (stage 3 at 28x28), width 1/8, min_depth 8, both
  auxiliary heads, 28x28x1, 10 classes, `--demo-aux-batch-size` (128) images; not run
  by default;
* `keras_inception_v3`: `keras.applications.InceptionV3(weights=None)` (its BN has no
  gamma: `scale=False`), at `--image-size`, `--batch-size` images.

As a check that the two copies compute the same thing, the table also gives the
difference between their inference-mode losses on the batch before training, from the
same weights (training-mode outputs are not compared here: dropout draws differ between
the copies, and at tiny batches, where a late BN layer normalizes a handful of values,
float rounding grows layer after layer; tests/test_fused_batchnorm.py compares training).

Example:

```
python -m benchmarks.fused_bn --rounds 5 --steps 3
python -m benchmarks.fused_bn --models googlenet_demo --rounds 1 --steps 1 --demo-batch-size 8
python -m benchmarks.fused_bn --models googlenet_demo googlenet_demo_aux
python -m benchmarks.fused_bn --models inception_v3 --rounds 5 --steps 3 --mixed-precision
```
"""

from __future__ import annotations

import argparse
import dataclasses
import sys
from collections.abc import Sequence
from pathlib import Path

if not __package__:  # run by path (`python benchmarks/fused_bn.py`): import from the repo root,
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
    # and set the process up before TensorFlow is imported (benchmarks/__init__.py).
    import benchmarks  # noqa: F401

import keras  # noqa: E402
import numpy as np  # noqa: E402
import tensorflow as tf  # noqa: E402

import keras_inception as ki  # noqa: E402
from benchmarks import common  # noqa: E402

MODELS = ("inception_v3", "googlenet_demo", "googlenet_demo_aux", "keras_inception_v3")
DEFAULT_MODELS = ("inception_v3", "googlenet_demo")
COLUMNS = (
    "model",
    "input",
    "batch",
    "BN layers",
    "fused",
    "unfused ms/step",
    "fused ms/step",
    "unfused img/s",
    "fused img/s",
    "speedup",
    "loss diff",
    common.CPU_COLUMN,
)


@dataclasses.dataclass
class Pair:
    """One model under test: the model as built and its fused clone, a fixed batch."""

    name: str
    size: int
    channels: int
    batch: int
    unfused: keras.Model
    fused: keras.Model
    x: tf.Tensor
    y: object
    rates: dict[str, list[float]] = dataclasses.field(
        default_factory=lambda: {"unfused": [], "fused": []}
    )
    loss_diff: float = float("nan")
    usage: common.CpuTime = dataclasses.field(default_factory=common.CpuTime)


def build(name: str, size: int) -> tuple[keras.Model, int, int]:
    """The model `name` of `MODELS` (softmax outputs) with Keras's own BatchNormalization
    (`fused_batch_norm=False`; `prepare` makes the fused clone); with its input size and
    channels."""
    if name in common.DEMO_MODELS:
        return common.build_demo(name, fused_batch_norm=False), 28, 1
    if name == "inception_v3":
        model = ki.build_inception_v3(
            aux_logits=False,
            dropout=0.0,
            input_shape=(size, size, 3),
            classes=1000,
            fused_batch_norm=False,
        )
        return model, size, 3
    if name == "keras_inception_v3":
        model = keras.applications.InceptionV3(weights=None, input_shape=(size, size, 3))
        return model, size, 3
    raise ValueError(f"unknown benchmark model {name!r}; choose from {list(MODELS)}")


def batch_norm_counts(model: keras.Model) -> tuple[int, int]:
    """(BatchNormalization layers, those of them that run the fused kernel)."""
    found = [layer for layer in model.layers if isinstance(layer, keras.layers.BatchNormalization)]
    fused = [
        layer
        for layer in found
        if isinstance(layer, ki.FusedBatchNormalization) and layer.uses_fused_kernel(layer.input)
    ]
    return len(found), len(fused)


def compile_model(model: keras.Model, optimizer: str) -> None:
    loss = keras.losses.SparseCategoricalCrossentropy()
    names = list(model.output) if isinstance(model.output, dict) else None
    if optimizer == "sgd":
        opt = keras.optimizers.SGD(0.01, momentum=0.9)
    else:
        opt = keras.optimizers.AdamW(1e-3, weight_decay=1e-4)
    model.compile(
        optimizer=opt,
        loss={k: loss for k in names} if names else loss,
        loss_weights=ki.default_loss_weights(model) if names else None,
        jit_compile=False,
    )


def prepare(name: str, args: argparse.Namespace) -> Pair:
    keras.utils.set_random_seed(args.seed)
    unfused, size, channels = build(name, args.image_size)
    fused = keras.models.clone_model(unfused, clone_function=ki.fuse_batch_norm)
    fused.set_weights(unfused.get_weights())
    batch = {
        "googlenet_demo": args.demo_batch_size,
        "googlenet_demo_aux": args.demo_aux_batch_size,
    }.get(name, args.batch_size)
    classes = unfused.outputs[0].shape[-1]
    for model in (unfused, fused):
        compile_model(model, args.optimizer)
    rng = np.random.default_rng(args.seed)
    x = tf.constant(rng.uniform(-1, 1, (batch, size, size, channels)).astype(np.float32))
    labels = tf.constant(rng.integers(0, classes, batch).astype(np.int32))
    y = {k: labels for k in unfused.output} if isinstance(unfused.output, dict) else labels
    return Pair(name, size, channels, batch, unfused, fused, x, y)


def run(args: argparse.Namespace) -> list[dict]:
    """Measures every model of `args.models` under the dtype policy `args.policy` (set by
    `--mixed-precision`); returns the table rows (see `COLUMNS`)."""
    keras.config.set_dtype_policy(args.policy)
    names = list(dict.fromkeys(args.models))
    for name in names:
        if name not in MODELS:
            raise ValueError(f"unknown benchmark model {name!r}; choose from {list(MODELS)}")
    pairs = [prepare(name, args) for name in names]
    for pair in pairs:  # same weights: same inference loss; then trace and warm up
        losses = [
            float(model.test_on_batch(pair.x, pair.y, return_dict=True)["loss"])
            for model in (pair.unfused, pair.fused)
        ]
        pair.loss_diff = abs(losses[1] - losses[0])
        for model in (pair.unfused, pair.fused):
            for _ in range(args.warmup):
                model.train_on_batch(pair.x, pair.y, return_dict=True)

    for round_index in range(args.rounds):
        order = ("unfused", "fused") if round_index % 2 == 0 else ("fused", "unfused")
        for pair in pairs:
            for kind in order:
                model = getattr(pair, kind)
                pair.rates[kind].append(
                    common.rate(
                        lambda m=model, p=pair: m.train_on_batch(p.x, p.y, return_dict=True),
                        args.steps,
                        pair.batch,
                        pair.usage,
                    )
                )

    rows = []
    for pair in pairs:
        unfused_rate = common.median(pair.rates["unfused"])
        fused_rate = common.median(pair.rates["fused"])
        layers, fused_layers = batch_norm_counts(pair.fused)
        rows.append(
            {
                "model": pair.name,
                "input": f"{pair.size}x{pair.size}x{pair.channels}",
                "batch": pair.batch,
                "BN layers": layers,
                "fused": fused_layers,
                "unfused ms/step": 1000 * pair.batch / unfused_rate,
                "fused ms/step": 1000 * pair.batch / fused_rate,
                "unfused img/s": unfused_rate,
                "fused img/s": fused_rate,
                "speedup": common.median(
                    [f / u for f, u in zip(pair.rates["fused"], pair.rates["unfused"], strict=True)]
                ),
                "loss diff": pair.loss_diff,
                common.CPU_COLUMN: pair.usage.ratio,
            }
        )
    return rows


def build_parser() -> argparse.ArgumentParser:
    parser = common.new_parser("fused_bn", __doc__)
    common.add_models(parser, MODELS, DEFAULT_MODELS)
    parser.add_argument(
        "--batch-size", type=common.positive_int, default=32, help="InceptionV3's batch"
    )
    parser.add_argument(
        "--image-size", type=common.positive_int, default=299, help="InceptionV3's input"
    )
    common.add_demo_batch_sizes(parser)
    parser.add_argument(
        "--optimizer",
        choices=("sgd", "adamw"),
        default="sgd",
        help="SGD(0.01, momentum 0.9) or AdamW(1e-3, weight decay 1e-4)",
    )
    common.add_mixed_precision(parser)
    common.add_retired_policy(parser)
    parser.add_argument("--warmup", type=common.positive_int, default=2, help="untimed steps")
    parser.add_argument("--rounds", type=common.positive_int, default=5, help="A B B A rounds")
    parser.add_argument("--steps", type=common.positive_int, default=3, help="steps per round")
    parser.add_argument("--seed", type=int, default=0, help="seed of the weights and the batch")
    return parser


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.image_size < 75 and set(args.models) & {"inception_v3", "keras_inception_v3"}:
        parser.error(
            f"--image-size must be at least 75 for InceptionV3; received {args.image_size}"
        )
    return args


def describe(args: argparse.Namespace, seconds: float) -> str:
    """The line above the table: the run's settings."""
    return (
        f"policy {args.policy}, optimizer {args.optimizer}, jit_compile=False; "
        f"{args.rounds} rounds x {args.steps} training steps after {args.warmup} warm-up; "
        "medians; speedup: fused img/s / unfused img/s, per round, then the median."
    )


def main(argv: Sequence[str] | None = None) -> list[dict]:
    """Parses `argv`, runs, prints the machine lines and the table; returns the rows."""
    return common.run_and_report(parse_args(argv), run, COLUMNS, describe)


if __name__ == "__main__":
    main(sys.argv[1:])
