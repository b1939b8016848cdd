"""The tf.data input pipeline alone, against the model's training rate in the same run.

Rows:

* the training pipeline of `training.data.load_datasets` on a generated JPEG folder
  (realistic 400x300 photos-like images): JPEG decode fused with the Inception crop,
  resize, flip, colour distortion, at 224 and at 299; each against the training images/s
  of the model that eats it (GoogLeNet at 224, InceptionV3 at 299), measured interleaved
  in the same run. The pipeline must not be the bottleneck: `pipeline / model` > 1
  (target: >= 3 for GoogLeNet at 224);
* the small-image path (Fashion-MNIST in memory, pad-and-crop + flip) against the demo's
  GoogLeNet (small stem, width 1/8) at 28x28;
* `decode_and_crop_jpeg` against `decode_jpeg` then crop, on the same files with the same
  crop windows (no resize): the saving of decoding only the window.

Each row's CPU time / wall is the process's over both of its timed measurements.

Example:

```
python -m benchmarks.pipeline --images 256 --rounds 3
```
"""

from __future__ import annotations

import argparse
import dataclasses
import sys
import tempfile
from collections.abc import Callable, Sequence
from pathlib import Path

if not __package__:  # run by path (`python benchmarks/pipeline.py`): import from the repo root,
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
    # and set the process up before TensorFlow is imported (benchmarks/__init__.py).
    import benchmarks  # noqa: F401

import keras  # noqa: E402
import numpy as np  # noqa: E402
import tensorflow as tf  # noqa: E402

from benchmarks import common  # noqa: E402
from benchmarks import models as model_bench  # noqa: E402
from training import augment  # noqa: E402
from training import data as data_lib  # noqa: E402

COLUMNS = (
    "pipeline",
    "input",
    "pipeline img/s",
    "against",
    "against img/s",
    "ratio",
    common.CPU_COLUMN,
)
# A measurement: `usage` (the row's `CpuTime`) -> images/s; its timed region goes to `usage`.
Measure = Callable[[common.CpuTime], float]


def write_jpeg_folder(
    root: str, images: int, width: int = 400, height: int = 300, classes: int = 2, seed: int = 0
) -> list[str]:
    """Writes `images` JPEGs (quality 90) of smooth random content in `root/<class>/`."""
    rng = np.random.default_rng(seed)
    paths = []
    for i in range(images):
        # Low-frequency colour fields plus fine noise: JPEG sizes like photos (~30-60 KB).
        coarse = rng.uniform(0, 255, (height // 16 + 1, width // 16 + 1, 3))
        img = np.kron(coarse, np.ones((16, 16, 1)))[:height, :width]
        img = np.clip(img + rng.normal(0, 12, img.shape), 0, 255).astype(np.uint8)
        folder = f"{root}/class{i % classes}"
        tf.io.gfile.makedirs(folder)
        path = f"{folder}/img{i:05d}.jpg"
        tf.io.write_file(path, tf.io.encode_jpeg(img, quality=90))
        paths.append(path)
    return paths


class Consumer:
    """Images/s of a `tf.data` pipeline over one timed window.

    Each measurement opens a fresh iterator, takes `warm` batches untimed (threads start,
    buffers fill), times the next `batches`, and closes the iterator: no prefetching runs
    in the background while something else is being measured, and no batch prefetched
    while the clock was stopped is counted.
    """

    def __init__(self, ds: tf.data.Dataset, batch: int, warm: int = 2):
        self.ds = ds.repeat()
        self.batch = batch
        self.warm = warm

    def measure(self, batches: int, usage: common.CpuTime | None = None) -> float:
        it = iter(self.ds)
        for _ in range(self.warm):
            next(it)
        return common.rate(lambda: next(it)[0], batches, self.batch, usage)  # `it` closes


@dataclasses.dataclass
class Pair:
    """A pipeline and the rate it is compared against, measured alternately; `usage`:
    the CPU time / wall of both."""

    label: str
    size: int
    pipeline: Measure
    against_name: str
    against: Measure
    a: list[float] = dataclasses.field(default_factory=list)
    b: list[float] = dataclasses.field(default_factory=list)
    usage: common.CpuTime = dataclasses.field(default_factory=common.CpuTime)


def trainer(name: str, size: int, batch: int, **build_kw) -> Callable[..., float]:
    """A function `(steps, usage) -> training images/s` of model `name` on a fixed batch."""
    bench = model_bench.prepare(
        name, size, batch, classes=build_kw.pop("classes", 1000), **build_kw
    )
    bench.model.train_on_batch(bench.x, bench.y)  # trace
    return lambda steps, usage: common.rate(
        lambda: bench.model.train_on_batch(bench.x, bench.y), steps, batch, usage
    )


def small_model(size: int, batch: int) -> Callable[..., float]:
    """The `make demo` GoogLeNet (small stem, width 1/8, gray) training rate at `size`."""
    import keras_inception as ki

    model = ki.build_googlenet(
        input_shape=(size, size, 1), classes=10, stem="small", width_multiplier=0.125, min_depth=8
    )
    model.compile(
        optimizer=keras.optimizers.SGD(0.01, momentum=0.9),
        loss=keras.losses.SparseCategoricalCrossentropy(),
        jit_compile=False,
    )
    x = tf.random.uniform([batch, size, size, 1], -1, 1)
    y = tf.zeros([batch], tf.int32)
    model.train_on_batch(x, y)
    return lambda steps, usage: common.rate(lambda: model.train_on_batch(x, y), steps, batch, usage)


def crop_windows(paths: Sequence[str], seed: int) -> tuple[tf.Tensor, tf.Tensor]:
    """The encoded files and one fixed Inception crop window `[y, x, h, w]` per file."""
    encoded, windows = [], []
    for i, path in enumerate(paths):
        data = tf.io.read_file(path)
        begin, size = augment._distorted_box(  # noqa: SLF001  the pipeline's own sampler
            tf.image.extract_jpeg_shape(data), tf.constant([seed, i])
        )
        encoded.append(data)
        windows.append(tf.stack([begin[0], begin[1], size[0], size[1]]))
    return tf.stack(encoded), tf.stack(windows)


def decode_fused(data: tf.Tensor, window: tf.Tensor) -> tf.Tensor:
    return tf.image.decode_and_crop_jpeg(data, window, channels=3)


def decode_then_crop(data: tf.Tensor, window: tf.Tensor) -> tf.Tensor:
    image = tf.io.decode_jpeg(data, channels=3)
    return tf.slice(image, [window[0], window[1], 0], [window[2], window[3], 3])


def run(args: argparse.Namespace) -> list[dict]:
    """Measures the pipelines and their consumers alternately; returns the table rows."""
    keras.utils.set_random_seed(args.seed)
    tmp = tempfile.TemporaryDirectory(prefix="bench-jpeg-")
    try:
        paths = write_jpeg_folder(tmp.name, args.images, seed=args.seed)
        return _measure(args, tmp.name, paths)
    finally:
        tmp.cleanup()


def _measure(args: argparse.Namespace, root: str, paths: list[str]) -> list[dict]:
    batch, batches, steps = args.batch_size, args.batches, args.steps
    pairs = []
    consumers = [(args.googlenet_image_size, "googlenet")]
    if not args.no_v3:
        consumers.append((args.v3_image_size, "inception_v3"))
    for size, model_name in consumers:
        config = data_lib.DataConfig(
            "imagefolder", data_dir=root, image_size=size, batch_size=batch, val_fraction=0.0
        )
        consumer = Consumer(data_lib.load_datasets(config).train, batch)
        train = trainer(model_name, size, batch, width=args.width_multiplier, seed=args.seed)
        pairs.append(
            Pair(
                "JPEG folder: decode+crop, resize, flip, colour",
                size,
                lambda usage, c=consumer: c.measure(batches, usage),
                f"{model_name} training",
                lambda usage, t=train: t(steps, usage),
            )
        )

    small_config = data_lib.DataConfig(
        "fashion_mnist", batch_size=args.small_batch_size, train_limit=args.small_images
    )
    try:
        small = data_lib.load_datasets(small_config)
        small_label = "Fashion-MNIST in memory: pad-crop, flip"
    except FileNotFoundError:  # no offline copy: generated 28x28 gray images, same recipe
        small = _generated_small(args)
        small_label = "generated 28x28 in memory: pad-crop, flip"
    small_consumer = Consumer(small.train, args.small_batch_size)
    small_train = small_model(small.image_shape[0], args.small_batch_size)
    pairs.append(
        Pair(
            small_label,
            small.image_shape[0],
            lambda usage: small_consumer.measure(batches, usage),
            "demo googlenet (small stem, 1/8 width) training",
            lambda usage: small_train(steps, usage),
        )
    )

    encoded, windows = crop_windows(paths, args.seed)
    decoders = {}
    for name, fn in (("fused", decode_fused), ("separate", decode_then_crop)):
        ds = tf.data.Dataset.from_tensor_slices((encoded, windows))
        ds = ds.map(fn, num_parallel_calls=tf.data.AUTOTUNE).ragged_batch(batch).prefetch(1)
        decoders[name] = Consumer(ds.map(lambda x: (x, 0)), batch)
    pairs.append(
        Pair(
            "decode_and_crop_jpeg (fused)",
            0,
            lambda usage: decoders["fused"].measure(batches, usage),
            "decode_jpeg then crop",
            lambda usage: decoders["separate"].measure(batches, usage),
        )
    )

    for _ in range(args.rounds):
        for pair in pairs:
            pair.a.append(pair.pipeline(pair.usage))
            pair.b.append(pair.against(pair.usage))

    rows = []
    for pair in pairs:
        rows.append(
            {
                "pipeline": pair.label,
                "input": f"{pair.size}x{pair.size}" if pair.size else "400x300 crop",
                "pipeline img/s": common.median(pair.a),
                "against": pair.against_name,
                "against img/s": common.median(pair.b),
                "ratio": common.median([a / b for a, b in zip(pair.a, pair.b, strict=True)]),
                common.CPU_COLUMN: pair.usage.ratio,
            }
        )
    return rows


def _generated_small(args: argparse.Namespace) -> data_lib.Datasets:
    """A stand-in for Fashion-MNIST: random 28x28 gray images through the small recipe."""
    rng = np.random.default_rng(args.seed)
    images = rng.integers(0, 256, (args.small_images, 28, 28, 1), dtype=np.uint8)
    ds = tf.data.Dataset.from_tensor_slices(images)
    pad = augment.small_image_padding(28)

    def fn(image, seed):
        crop_seed, flip_seed = augment.split_seed(seed, 2)
        image = augment.pad_and_random_crop(image, pad, crop_seed)
        image = tf.image.stateless_random_flip_left_right(image, flip_seed)
        return augment.to_symmetric(tf.cast(image, tf.float32) / 255.0), 0

    seeds = tf.data.Dataset.random(seed=args.seed).batch(2, drop_remainder=True)
    train = tf.data.Dataset.zip(ds, seeds).map(fn, num_parallel_calls=tf.data.AUTOTUNE)
    train = train.batch(args.small_batch_size).prefetch(tf.data.AUTOTUNE)
    return data_lib.Datasets(
        train, train, train, 10, [str(i) for i in range(10)], (28, 28, 1), args.small_images,
        0, 0, data_lib.SkipReport(),
    )  # fmt: skip


def build_parser() -> argparse.ArgumentParser:
    parser = common.new_parser("pipeline", __doc__)
    parser.add_argument("--images", type=common.positive_int, default=256, help="JPEGs made")
    parser.add_argument(
        "--batch-size", type=common.positive_int, default=16, help="batch of the JPEG rows"
    )
    parser.add_argument("--batches", type=common.positive_int, default=16, help="per round")
    parser.add_argument("--steps", type=common.positive_int, default=2, help="model steps")
    parser.add_argument(
        "--rounds", type=common.positive_int, default=3, help="pipeline, model rounds"
    )
    common.add_image_size(
        parser, "--googlenet-image-size", 224, "the GoogLeNet row", old="--googlenet-size"
    )
    common.add_image_size(parser, "--v3-image-size", 299, "the InceptionV3 row", old="--v3-size")
    parser.add_argument("--no-v3", action="store_true", help="skip the 299 / InceptionV3 row")
    common.add_width_multiplier(
        parser,
        help="scale every conv width of the JPEG rows' models: max(int(w * m), min_depth)",
    )
    parser.add_argument(
        "--small-batch-size",
        type=common.positive_int,
        default=128,
        help="batch of the small-image row",
    )
    parser.add_argument(
        "--small-images", type=common.positive_int, default=8192, help="Fashion-MNIST images used"
    )
    parser.add_argument("--seed", type=int, default=0, help="seed of the images and the weights")
    return parser


# The line above the table: the run's settings and how long it took.
DESCRIPTION = (
    "{images} generated 400x300 JPEGs, batch {batch_size}, {rounds} rounds (pipeline "
    "{batches} batches, then model {steps} steps); medians; ratio = pipeline / against, "
    "per round. {seconds:.0f} s."
)
SCRIPT = common.Script(build_parser, run, COLUMNS, DESCRIPTION)
parse_args, main = SCRIPT.parse_args, SCRIPT.main


if __name__ == "__main__":
    main(sys.argv[1:])
