"""float32 against mixed precision: training images/s and accuracy after a short schedule.

On CPU: `float32` against `mixed_bfloat16`; with a GPU, `mixed_float16` too. Each policy
trains the same model from the same seed on the same data with the project's own
`training.train.build_model` / `compile_model` (preset "default": AdamW, cosine decay,
warmup, label smoothing 0.1); the epochs of the policies alternate (fp32 epoch 1, bf16
epoch 1, fp32 epoch 2, ...), so machine load drifts hit both alike. Images/s is the
median over epochs of the timed batches (the first epoch's first batches, which trace the
graph, are left out); accuracy is top-1 on the last epoch's training batches (training
mode, as `fit` reports it) and on the test split after the last epoch (inference mode: it
needs enough steps for batch norm's moving averages, momentum 0.99, to forget their
initial values, hence many small batches rather than a few large ones).

Data: Fashion-MNIST (offline idx files, see `training.data`), or, when absent, generated
learnable 28x28 images (a class template plus noise).

Example:

```
python -m benchmarks.precision --epochs 4 --train-limit 2048 --batch-size 32
```
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

if not __package__:  # run by path (`python benchmarks/precision.py`): import from the repo root,
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
    # and set the process up before TensorFlow is imported (benchmarks/__init__.py).
    import benchmarks  # noqa: F401

import keras  # noqa: E402
import numpy as np  # noqa: E402
import tensorflow as tf  # noqa: E402

from benchmarks import common  # noqa: E402
from training import data as data_lib  # noqa: E402
from training import model_setup  # noqa: E402
from training.config import TrainConfig  # noqa: E402

COLUMNS = (
    "policy",
    "data",
    "train img/s",
    "ratio to float32",
    "train accuracy",
    "test accuracy",
    "Δ test accuracy",
    common.CPU_COLUMN,
)


class BatchTimer(keras.callbacks.Callback):
    """Times each epoch's batches after the first `skip`: images/s per epoch (`rates`),
    from the end of batch `skip` to the end of the last one; those regions go to `usage`.

    Args:
        batch_size: int. Images per batch.
        skip: int. Untimed first batches of each epoch.
        usage: CpuTime. Where the timed regions go (its wall clock times them). Defaults
            to a new `CpuTime()`.

    Example:
    >>> cpu, wall = iter([0.0, 1.0, 2.0, 5.0]), iter([0.0, 1.0, 2.0, 3.0])
    >>> timer = BatchTimer(8, skip=1, usage=common.CpuTime(cpu.__next__, wall.__next__))
    >>> timer.on_epoch_begin(0)
    >>> for batch in range(4):
    ...     timer.on_train_batch_end(batch)
    >>> timer.on_epoch_end(0)
    >>> timer.rates, timer.usage.ratio  # 2 batches of 8 in 2 s, 4 CPU seconds
    ([8.0], 2.0)
    """

    def __init__(self, batch_size: int, skip: int, usage: common.CpuTime | None = None):
        super().__init__()
        self.batch_size, self.skip = batch_size, skip
        self.usage = usage if usage is not None else common.CpuTime()
        self.rates: list[float] = []
        self.marks: list[common.Mark] = []

    def on_epoch_begin(self, epoch, logs=None):
        self.marks = []

    def on_train_batch_end(self, batch, logs=None):
        self.marks.append(self.usage.mark())

    def on_epoch_end(self, epoch, logs=None):
        marks = self.marks[self.skip :]
        if len(marks) >= 2:
            seconds = self.usage.add(marks[0], marks[-1])
            self.rates.append((len(marks) - 1) * self.batch_size / seconds)


def policies() -> list[str]:
    """float32 and mixed_bfloat16; plus mixed_float16 when a GPU is visible."""
    result = ["float32", "mixed_bfloat16"]
    if tf.config.list_physical_devices("GPU"):
        result.append("mixed_float16")
    return result


def generated_data(args: argparse.Namespace) -> data_lib.Datasets:
    """Learnable stand-in for Fashion-MNIST: 10 random 28x28 templates plus noise, as
    pixels in [0, 255] (the pipeline's scale)."""
    rng = np.random.default_rng(args.seed)
    templates = rng.uniform(-1, 1, (10, 28, 28, 1)).astype(np.float32)

    def make(n: int, seed: int) -> tf.data.Dataset:
        r = np.random.default_rng(seed)
        labels = r.integers(0, 10, n).astype(np.int32)
        x = templates[labels] + r.normal(0, 1.0, (n, 28, 28, 1)).astype(np.float32)
        pixels = (np.clip(x, -1, 1) + 1) * 127.5  # raw pixels: the model scales them
        return tf.data.Dataset.from_tensor_slices((pixels, labels)).batch(args.batch_size)

    train = make(args.train_limit, args.seed + 1).shuffle(64, seed=args.seed)
    test = make(args.test_limit, args.seed + 2)
    return data_lib.Datasets(
        train, test, test, 10, [str(i) for i in range(10)], (28, 28, 1), args.train_limit,
        args.test_limit, args.test_limit, data_lib.SkipReport(),
    )  # fmt: skip


def load(args: argparse.Namespace) -> tuple[data_lib.Datasets, str]:
    config = data_lib.DataConfig(
        "fashion_mnist",
        batch_size=args.batch_size,
        train_limit=args.train_limit,
        seed=args.seed,
        deterministic=True,
    )
    try:
        if args.generated:
            raise FileNotFoundError("--generated")
        return data_lib.load_datasets(config), "fashion_mnist"
    except FileNotFoundError:
        return generated_data(args), "generated"


def run(args: argparse.Namespace) -> list[dict]:
    """Trains one model per policy, epochs interleaved; returns the table rows."""
    data, source = load(args)
    test = data.test.take(max(1, args.test_limit // args.batch_size))
    config = TrainConfig(
        model=args.model,
        dataset="fashion_mnist",
        batch_size=args.batch_size,
        epochs=args.epochs,
        stem="small",
        width_multiplier=args.width_multiplier,
        min_depth=8,
        aux=False,
        seed=args.seed,
    )
    runs = {}
    for policy in args.policies:
        keras.config.set_dtype_policy(policy)
        try:
            keras.utils.set_random_seed(args.seed)
            model = model_setup.build_model(config, data.image_shape, data.num_classes)
            model_setup.compile_model(model, config, num_train=data.num_train)
        finally:
            keras.config.set_dtype_policy("float32")
        runs[policy] = (model, BatchTimer(args.batch_size, skip=0))
    train_accuracy = {}
    for epoch in range(args.epochs):
        for policy, (model, timer) in runs.items():
            timer.skip = args.skip if epoch == 0 else 0
            history = model.fit(
                data.train,
                initial_epoch=epoch,
                epochs=epoch + 1,
                callbacks=[timer],
                shuffle=False,  # the pipeline shuffles
                verbose=0,
            )
            train_accuracy[policy] = float(history.history["accuracy"][-1])

    base_rates = runs["float32"][1].rates if "float32" in runs else None
    accuracy = {
        p: float(m.evaluate(test, return_dict=True, verbose=0)["accuracy"])
        for p, (m, _) in runs.items()
    }
    rows = []
    for policy, (_, timer) in runs.items():
        ratio = float("nan")
        if base_rates and len(base_rates) == len(timer.rates):
            ratio = common.median([a / b for a, b in zip(timer.rates, base_rates, strict=True)])
        rows.append(
            {
                "policy": policy,
                "data": source,
                "train img/s": common.median(timer.rates),
                "ratio to float32": ratio,
                "train accuracy": train_accuracy[policy],
                "test accuracy": accuracy[policy],
                "Δ test accuracy": accuracy[policy] - accuracy.get("float32", float("nan")),
                common.CPU_COLUMN: timer.usage.ratio,
            }
        )
    return rows


def build_parser() -> argparse.ArgumentParser:
    parser = common.new_parser("precision", __doc__)
    parser.add_argument("--model", default="googlenet", help="model name")
    common.add_width_multiplier(parser, default=0.125)
    parser.add_argument("--batch-size", type=common.positive_int, default=32, help="batch size")
    parser.add_argument("--epochs", type=common.positive_int, default=4, help="epochs to train")
    parser.add_argument(
        "--train-limit", type=common.positive_int, default=2048, help="training images"
    )
    parser.add_argument("--test-limit", type=common.positive_int, default=2048, help="test images")
    parser.add_argument("--skip", type=int, default=3, help="untimed first batches")
    parser.add_argument(
        "--policies",
        nargs="+",
        default=policies(),
        help="the Keras dtype policies compared, each trained in the same run (default: "
        "this machine's, %(default)s)",
    )
    parser.add_argument("--generated", action="store_true", help="generated data, no MNIST")
    parser.add_argument(
        "--seed", type=int, default=0, help="seed of the weights, data order and data"
    )
    return parser


# The line above the table: the run's settings and how long it took.
DESCRIPTION = (
    "{model} (small stem, width multiplier {width_multiplier}), batch {batch_size}, "
    "{epochs} epochs of {train_limit} images, epochs interleaved across policies; "
    "accuracy on {test_limit} test images. {seconds:.0f} s."
)
SCRIPT = common.Script(build_parser, run, COLUMNS, DESCRIPTION)
parse_args, main = SCRIPT.parse_args, SCRIPT.main


if __name__ == "__main__":
    main(sys.argv[1:])
