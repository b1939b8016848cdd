"""tf.data input pipelines: TFDS datasets, offline Fashion-MNIST and image folders.

All three sources (`training.sources`) produce the same stream, ``(image float32 pixels in
[0, 255], target)`` (the models normalize inside: ``include_preprocessing``), batched to the *global* batch size, with the augmentation of
``training.augment``:

* a TFDS name, through ``tfds.builder(...).as_dataset`` (large-image datasets are read as
  encoded bytes so JPEG crops are decoded fused with ``decode_and_crop_jpeg``);
* ``"fashion_mnist"`` from the original idx files (gzipped or not) found in ``data_dir`` or
  Debian's ``/usr/share/datasets/fashion-mnist`` (package ``dataset-fashion-mnist``), else
  through TFDS;
* ``"imagefolder"``: ``root/<class>/<images>`` or ``root/<split>/<class>/...`` in any
  format Pillow reads (JPEG and PNG decoded by TensorFlow; the others converted once to
  PNG in a cache, see `training.sources.folder`). Unreadable images are found before the
  pipeline is built and are counted and listed in ``Datasets.skipped`` instead of
  crashing training; files that are not images are listed apart, in
  ``Datasets.skipped.non_images``.

A source without a validation split holds out a stratified ``val_fraction`` of train.

Under MultiWorkerMirroredStrategy, ``Datasets.distribute`` builds one pipeline per worker
that reads, decodes and augments only that worker's share of the examples.

Examples:

```python
config = DataConfig("fashion_mnist", batch_size=256, deterministic=True, seed=1)
data = load_datasets(config, output_names=output_names_of(model))  # training.model_setup
model.fit(data.train, validation_data=data.validation, epochs=10)
print(data.skipped.summary())
```

No TF op runs when this module is imported (MirroredStrategy needs the logical devices
configured first).
"""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Sequence

import numpy as np
import tensorflow as tf

from training import preprocess
from training.data_config import DataConfig
from training.model_setup import with_targets
from training.replicas import (
    check_batch_size,
    check_divisible_batch,
    pad_with_zero_weights,
    padding_for_replicas,
)
from training.sources import folder, idx, shard
from training.sources import tfds as tfds_source
from training.sources.base import SkipReport, Source
from training.sources.folder import IMAGE_EXTENSIONS, check_image
from training.sources.idx import FASHION_MNIST_CLASS_NAMES, FASHION_MNIST_DIRS, read_idx

__all__ = [
    "FASHION_MNIST_CLASS_NAMES",
    "FASHION_MNIST_DIRS",
    "IMAGE_EXTENSIONS",
    "LARGE_IMAGE_SIZE",
    "SPLITS",
    "DataConfig",
    "Datasets",
    "SkipReport",
    "check_image",
    "load_datasets",
    "read_idx",
]

AUTOTUNE = tf.data.AUTOTUNE
LARGE_IMAGE_SIZE = 224
SPLITS = ("train", "validation", "test")
# Decoded data up to this fraction of physical memory is cached when `cache=None`.
_CACHE_MEMORY_FRACTION = 0.25
_SHUFFLE_BUFFER_LARGE = 4096


@dataclasses.dataclass(frozen=True)
class _Pipeline:
    """How `load_datasets` turns a source's records into batches; kept by `Datasets` to
    build the per-worker pipelines."""

    source: Source
    config: DataConfig
    size: int
    channels: int
    cache: bool
    output_names: Sequence[str] | None
    ten_crop: bool


@dataclasses.dataclass
class Datasets:
    """The three batched pipelines and what the model needs to know about them.

    Under MultiWorkerMirroredStrategy, train with the per-worker pipelines of
    `distribute` (or `worker_dataset`): each worker reads and decodes only its share.
    Every worker's share of a split has the same size, so every worker runs the same
    number of steps (the collectives hang otherwise): ``ceil(n / workers)`` examples (a few
    more for training when a worker has several replicas, so that none of them gets an
    empty share of the last step), topped up with its own first examples again at sample
    weight 0 (`training.replicas.pad_with_zero_weights`, the project's one padding
    convention); its elements are always ``(image, label, weight)``. The plain
    ``train``/``validation``/``test`` then hold every example once.

    Attributes:
        train: tf.data.Dataset. Shuffled, augmented, batched, prefetched, not repeated.
        validation: tf.data.Dataset. Batched, in order.
        test: tf.data.Dataset. Batched, in order (ten crops when asked).
        num_classes: int. Number of classes.
        class_names: list of str. Class names, by label.
        image_shape: tuple of int. ``(size, size, channels)`` of the model input.
        num_train: int. Training examples (before any repeat).
        num_validation: int. Validation examples.
        num_test: int. Test examples.
        skipped: SkipReport. Unreadable images and, apart, non-image files left out.
        train_repeats: int. Padding examples of the training split in every epoch (weight
            0, counted in no loss or metric): with MirroredStrategy over several replicas,
            ``eval_padding["train"]``; with MultiWorkerMirroredStrategy, the padding of
            every worker's share in `distribute`, summed. 0 on one device.
        eval_padding: dict. ``{"train": k, "validation": k, "test": k}``: with
            MirroredStrategy over several replicas, a split whose last batch would leave a
            replica without an example ends with its first ``k`` examples again, and that
            split's elements are ``(image, label, weight)`` with weight 0.0 on the padding
            (1.0 elsewhere, `training.replicas.pad_with_zero_weights`), which Keras's
            `fit`/`evaluate` and `training.evaluate.evaluate_model` honour. An empty share
            is not only wasted: a training step on one makes batch norm NaN, and with
            oneDNN (TensorFlow's CPU kernels) a convolution over an empty batch fails
            ("input depth must be evenly divisible by filter depth"). 0 elsewhere (plain
            ``(image, label)``).
    """

    train: tf.data.Dataset
    validation: tf.data.Dataset
    test: tf.data.Dataset
    num_classes: int
    class_names: list[str]
    image_shape: tuple[int, int, int]
    num_train: int
    num_validation: int
    num_test: int
    skipped: SkipReport
    train_repeats: int = 0
    eval_padding: dict = dataclasses.field(
        default_factory=lambda: {"train": 0, "validation": 0, "test": 0}
    )
    # Set by `load_datasets`; hand-made Datasets have none and cannot shard.
    _pipeline: _Pipeline | None = dataclasses.field(default=None, repr=False, compare=False)

    def worker_dataset(self, split: str, context: tf.distribute.InputContext) -> tf.data.Dataset:
        """This worker's pipeline of ``split``: for `distribute_datasets_from_function`.

        The worker takes the contiguous ``context.input_pipeline_id``-th of
        ``context.num_input_pipelines`` shares of the split's examples, reads and decodes
        only those (plus its padding, see the class docstring), shuffles them with seed
        ``seed + worker`` when the config is deterministic, and batches them to the
        per-replica batch, ``batch_size // context.num_replicas_in_sync``.

        Args:
            split: str. ``"train"``, ``"validation"`` or ``"test"``.
            context: tf.distribute.InputContext. This worker's place in the cluster.

        Raises:
            ValueError: an unknown split; a global batch size that is not a multiple of
                the replicas; Datasets not made by `load_datasets`.
        """
        pipeline = self._require_pipeline()
        positions, pad = self.worker_share(split, context)
        train = split == "train"
        records = shard.worker_records(getattr(pipeline.source, split), positions, pad)
        config, worker = pipeline.config, context.input_pipeline_id
        seed = config.seed + worker if config.deterministic else None
        return _build(
            records,
            len(positions) + pad,
            pipeline,
            train=train,
            ten_crop=pipeline.ten_crop and split == "test",
            batch_size=context.get_per_replica_batch_size(config.batch_size),
            shuffle_seed=seed,
            augment_seed=seed,
            ordered=config.deterministic or not train,
            shard_policy=tf.data.experimental.AutoShardPolicy.OFF,
        )

    def worker_share(
        self, split: str, context: tf.distribute.InputContext
    ) -> tuple[np.ndarray, int]:
        """(positions of this worker's examples of ``split``, examples appended to them).

        Args:
            split: str. ``"train"``, ``"validation"`` or ``"test"``.
            context: tf.distribute.InputContext. This worker's place in the cluster.
        """
        _check_split(split)
        pipeline = self._require_pipeline()
        n = getattr(pipeline.source, split).n
        return shard.shard_plan(n, pipeline.config.batch_size, context, train=split == "train")

    def distribute(
        self, split: str, strategy: tf.distribute.Strategy
    ) -> tf.distribute.DistributedDataset:
        """``strategy.distribute_datasets_from_function`` over `worker_dataset`.

        Args:
            split: str. ``"train"``, ``"validation"`` or ``"test"``.
            strategy: tf.distribute.Strategy. Usually MultiWorkerMirroredStrategy.
        """
        self._require_pipeline()
        _check_split(split)
        check_divisible_batch(self._pipeline.config.batch_size, strategy.num_replicas_in_sync)
        return strategy.distribute_datasets_from_function(
            lambda context: self.worker_dataset(split, context)
        )

    def _require_pipeline(self) -> _Pipeline:
        if self._pipeline is None:
            raise ValueError(
                "these Datasets were not made by load_datasets, so they cannot build "
                "per-worker pipelines"
            )
        return self._pipeline


def _check_split(split: str) -> None:
    if split not in SPLITS:
        raise ValueError(f"split must be one of {SPLITS}; received {split!r}")


def _num_workers(strategy: tf.distribute.Strategy) -> int:
    """Workers (input pipelines) of a MultiWorkerMirroredStrategy: chief and workers."""
    spec = strategy.cluster_resolver.cluster_spec().as_dict()
    return max(1, len(spec.get("chief", [])) + len(spec.get("worker", [])))


# --------------------------------------------------------------------------- pipeline


def _physical_memory() -> int:
    try:
        return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    except (ValueError, OSError, AttributeError):
        return 8 << 30


def _should_cache(config: DataConfig, source: Source) -> bool:
    if source.in_memory:
        return False
    if config.cache is not None:
        return config.cache
    return source.cache_bytes <= _CACHE_MEMORY_FRACTION * _physical_memory()


def _build(
    ds: tf.data.Dataset,
    n: int,
    pipeline: _Pipeline,
    *,
    train: bool,
    ten_crop: bool,
    batch_size: int,
    shuffle_seed: int | None,
    augment_seed: int | None,
    ordered: bool,
    shard_policy: tf.data.experimental.AutoShardPolicy | None,
) -> tf.data.Dataset:
    """Batches of ``n`` records ``ds`` (``(x, y)`` or, padded, ``(x, y, weight)``): read,
    cache, shuffle, decode and augment (train) or decode and crop (evaluation), targets,
    prefetch. A weight travels with its example."""
    source, config, cache = pipeline.source, pipeline.config, pipeline.cache
    size, channels = pipeline.size, pipeline.channels
    small = source.small
    shuffle = train and n > 0
    buffer = n if (small or source.kind == "path") else _SHUFFLE_BUFFER_LARGE
    if shuffle and source.kind == "path" and not cache:
        # Shuffle the (cheap) paths before reading, so no image bytes sit in the buffer.
        ds = ds.shuffle(n, seed=shuffle_seed, reshuffle_each_iteration=True)
        shuffle = False
    if source.kind == "path":
        ds = ds.map(lambda p, *rest: (tf.io.read_file(p), *rest), num_parallel_calls=AUTOTUNE)
    if cache:
        ds = ds.cache()
    if shuffle:
        ds = ds.shuffle(min(buffer, n), seed=shuffle_seed, reshuffle_each_iteration=True)

    encoded = source.kind in ("encoded", "path")
    fn = None
    if train:
        fn = preprocess.train_fn(
            small=small, encoded=encoded, size=size, channels=channels,
            augment_images=config.augment, flip=config.flip, pca_lighting=config.pca_lighting,
            random_erasing=config.random_erasing,
        )  # fmt: skip
    if fn is not None:
        # One stateless seed pair per example; a fresh sequence every epoch, the same
        # sequence of epochs for the same seed.
        seeds = tf.data.Dataset.random(seed=augment_seed, rerandomize_each_iteration=True).batch(
            2, drop_remainder=True
        )
        ds = tf.data.Dataset.zip(ds, seeds)
        ds = ds.map(lambda xy, s: (fn(xy[0], s), *xy[1:]), num_parallel_calls=AUTOTUNE)
    else:
        eval_fn = preprocess.eval_fn(
            small=small, encoded=encoded, size=size, channels=channels, ten_crop=ten_crop
        )
        ds = ds.map(lambda x, *rest: (eval_fn(x), *rest), num_parallel_calls=AUTOTUNE)
    ds = ds.batch(batch_size)
    ds = with_targets(ds, pipeline.output_names)
    ds = ds.prefetch(AUTOTUNE)
    options = tf.data.Options()
    options.deterministic = ordered
    if shard_policy is not None:
        options.experimental_distribute.auto_shard_policy = shard_policy
    return ds.with_options(options)


def _load_source(config: DataConfig) -> Source:
    """The source that ``config.dataset`` names."""
    common = dict(val_fraction=config.val_fraction, seed=config.seed)
    common["train_limit"] = config.train_limit
    if config.dataset == "imagefolder":
        return folder.load(config.data_dir, **common)
    if config.dataset != "fashion_mnist":
        return tfds_source.load(
            config.dataset, config.data_dir, deterministic=config.deterministic, **common
        )
    searched = idx.search_folders(config.data_dir, FASHION_MNIST_DIRS)
    source = idx.load(searched, **common)
    if source is not None:
        return source
    try:
        return tfds_source.load(
            config.dataset, config.data_dir, deterministic=config.deterministic, **common
        )
    except FileNotFoundError as e:
        raise FileNotFoundError(
            f"Fashion-MNIST not found: no idx files in {[str(d) for d in searched]} and TFDS "
            f"could not provide it ({e}). Install them with `apt-get install "
            "dataset-fashion-mnist`, or pass --data-dir with the four idx files."
        ) from e


def load_datasets(
    config: DataConfig,
    *,
    output_names: Sequence[str] | None = None,
    strategy: tf.distribute.Strategy | None = None,
    ten_crop: bool = False,
) -> Datasets:
    """Builds the train, validation and test pipelines described by ``config``.

    Args:
        config: DataConfig. What to load.
        output_names: sequence of str or None. When given, each target is
            ``{name: label for name in output_names}`` (multi-output models, e.g. GoogLeNet
            with auxiliary heads; see ``output_names_of``); else an int32 label.
        strategy: tf.distribute.Strategy or None. When given, every dataset shards by DATA
            (the batch size is already global); with more than one replica, a batch size
            that leaves a replica empty is refused, and a split whose last batch would
            leave a replica without an example is padded at weight 0
            (`Datasets.eval_padding`). Under MultiWorkerMirroredStrategy the batch size
            must be a multiple of the replicas, the plain pipelines are not padded (every
            worker orders them alike, for DATA sharding), and ``train_repeats`` counts the
            padding of `Datasets.distribute`, the pipelines to train with. Defaults to None.
        ten_crop: bool. Test images become ``[batch, 10, H, W, C]`` (4 corners + centre and
            their mirror images). Defaults to False.

    Returns:
        Datasets. ``train`` is shuffled, augmented, batched and prefetched but not repeated.

    Raises:
        FileNotFoundError: the data is not where it was looked for and cannot be downloaded.
        ValueError: a bad config, an unknown dataset, a corrupt idx file, an empty folder, a
            batch size that does not divide over the replicas.
    """
    multi_worker = isinstance(strategy, tf.distribute.MultiWorkerMirroredStrategy)
    replicas = strategy.num_replicas_in_sync if strategy is not None else 1
    if multi_worker:
        check_divisible_batch(config.batch_size, replicas)
    elif replicas > 1:
        check_batch_size(config.batch_size, replicas)
    source = _load_source(config)

    size = config.image_size or source.native_size or LARGE_IMAGE_SIZE
    channels = config.channels or source.native_channels
    if config.pca_lighting and channels != 3:
        raise ValueError(f"pca_lighting needs 3 channels; received channels={channels}")
    pipeline = _Pipeline(
        source=source,
        config=config,
        size=size,
        channels=channels,
        cache=_should_cache(config, source),
        output_names=output_names,
        ten_crop=ten_crop,
    )
    padding = {"train": 0, "validation": 0, "test": 0}
    repeats = 0
    if multi_worker:
        workers = _num_workers(strategy)
        contexts = [tf.distribute.InputContext(workers, i, replicas) for i in range(workers)]
        repeats = sum(
            shard.shard_plan(source.train.n, config.batch_size, c, train=True)[1] for c in contexts
        )
    elif replicas > 1:
        # Padding at weight 0: a step on an empty share makes BN NaN (`training.replicas`).
        for name in SPLITS:
            n = getattr(source, name).n
            padding[name] = padding_for_replicas(n, config.batch_size, replicas)
        repeats = padding["train"]
    # Under MultiWorkerMirroredStrategy every worker runs the plain pipelines whole and
    # keeps its share of each batch (DATA sharding): their shuffles and element order must
    # agree, or the shares overlap.
    policy = tf.data.experimental.AutoShardPolicy.DATA if strategy is not None else None
    common = dict(
        batch_size=config.batch_size,
        augment_seed=config.seed if config.deterministic else None,
        shard_policy=policy,
    )

    def records(name: str) -> tuple[tf.data.Dataset, int]:
        split, pad = getattr(source, name), padding[name]
        if not pad:
            return split.read(), split.n
        return pad_with_zero_weights(split.read(), split.n, pad), split.n + pad

    shared_seed = config.seed if config.deterministic or multi_worker else None
    train_ordered = config.deterministic or multi_worker
    train = _build(
        *records("train"), pipeline, train=True, ten_crop=False, shuffle_seed=shared_seed,
        ordered=train_ordered, **common,
    )  # fmt: skip
    evaluation = dict(train=False, shuffle_seed=None, ordered=True, **common)
    validation = _build(*records("validation"), pipeline, ten_crop=False, **evaluation)
    test = _build(*records("test"), pipeline, ten_crop=ten_crop, **evaluation)
    return Datasets(
        train=train,
        validation=validation,
        test=test,
        num_classes=len(source.class_names),
        class_names=source.class_names,
        image_shape=(size, size, channels),
        num_train=source.train.n,
        num_validation=source.validation.n,
        num_test=source.test.n,
        skipped=source.skipped,
        train_repeats=repeats,
        eval_padding=padding,
        _pipeline=pipeline,
    )
