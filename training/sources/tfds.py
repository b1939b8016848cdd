"""TensorFlow Datasets: prepared in ``data_dir`` or downloaded, with fast offline checks.

Images are always read as encoded bytes and decoded only after the examples are chosen,
so that a hold-out or a worker's share decodes nothing it does not keep. Large-image sets
stay encoded (the pipeline decodes its JPEG crop fused with `decode_and_crop_jpeg`).
Without a validation split, a stratified hold-out of train validates: only the labels are
read to choose it.
"""

from __future__ import annotations

import pathlib
import socket

import numpy as np
import tensorflow as tf
import tensorflow_datasets as tfds

from training import augment
from training.sources.base import Source, Split, holdout, limit_count

_LABEL_BATCH = 8192


def builder(name: str, data_dir: str | None) -> tfds.core.DatasetBuilder:
    """The prepared TFDS builder of ``name``, downloading and preparing it when possible.

    Raises:
        ValueError: ``name`` is not a TFDS name.
        FileNotFoundError: not prepared and cannot be (manual download, no network, error),
            with what to do.
    """
    try:
        found = tfds.builder(name, data_dir=data_dir)
    except tfds.core.registered.DatasetNotFoundError as e:
        raise ValueError(
            f"unknown dataset {name!r}: not a TFDS name, 'fashion_mnist' or 'imagefolder'"
        ) from e
    if found.is_prepared():
        return found
    download_dir = pathlib.Path(found._data_dir_root) / "downloads"  # noqa: SLF001
    manual_dir = download_dir / "manual"
    if found.MANUAL_DOWNLOAD_INSTRUCTIONS and not (
        manual_dir.is_dir() and any(manual_dir.iterdir())
    ):
        raise FileNotFoundError(
            f"{name} must be downloaded by hand and is not prepared in {found.data_dir}: put "
            f"its files in TFDS's manual_dir {manual_dir} (that is <data_dir>/downloads/manual/"
            f"), then run again.\nTFDS instructions: {found.MANUAL_DOWNLOAD_INSTRUCTIONS.strip()}"
        )
    if not _network_available():
        raise FileNotFoundError(
            f"{name} is not prepared in {found.data_dir} and there is no network to download "
            f"it. Prepare it on a machine with internet access (`tfds build {name} "
            "--data_dir=...`) and pass that folder as data_dir."
        )
    try:
        found.download_and_prepare(download_dir=str(download_dir))
    except Exception as e:  # network errors, checksum errors, missing manual files ...
        raise FileNotFoundError(
            f"{name} is not prepared in {found.data_dir} and could not be downloaded "
            f"({type(e).__name__}: {e}). Prepare it on a machine with internet access "
            f"(`tfds build {name} --data_dir=...`) and pass that folder as data_dir."
        ) from e
    return found


def _network_available(host: str = "storage.googleapis.com") -> bool:
    """Fast DNS check, so an offline machine fails at once (TFDS retries for minutes)."""
    try:
        socket.getaddrinfo(host, 443)
    except OSError:
        return False
    return True


class _Reader:
    """Reads chosen records of TFDS splits, decoding the images only of those it keeps."""

    def __init__(self, found, image_key: str, small: bool, seed: int | None):
        self.builder = found
        self.image_feature = found.info.features[image_key]
        self.decoders = {image_key: tfds.decode.SkipDecoding()}
        self.small = small
        self.read_config = tfds.ReadConfig(shuffle_seed=seed, try_autocache=False)

    def _as_dataset(self, split: str, shuffle_files: bool) -> tf.data.Dataset:
        return self.builder.as_dataset(
            split=split,
            as_supervised=True,
            shuffle_files=shuffle_files,
            decoders=self.decoders,
            read_config=self.read_config,
        )

    def count(self, split: str) -> int:
        known = self.builder.info.splits
        if split in known and known[split].num_examples:
            return int(known[split].num_examples)
        n = int(self._as_dataset(split, False).cardinality())
        if n < 0:
            raise ValueError(f"{self.builder.name}[{split}]: unknown number of examples")
        return n

    def labels(self, split: str) -> np.ndarray:
        """Every label of ``split`` in record order; the images are not decoded."""
        ds = self._as_dataset(split, False).map(lambda x, y: y).batch(_LABEL_BATCH)
        parts = list(ds.as_numpy_iterator())
        return np.concatenate(parts) if parts else np.zeros([0], np.int64)

    def split(self, name: str, records: np.ndarray, *, shuffle_files: bool = False) -> Split:
        """The records (sorted indices) of split ``name`` as a `Split`."""
        records = np.asarray(records, np.int64)

        def reader(positions: np.ndarray) -> tf.data.Dataset:
            return self._read(name, records[positions], shuffle_files)

        return Split(len(records), reader)

    def _read(self, name: str, records: np.ndarray, shuffle_files: bool) -> tf.data.Dataset:
        if not len(records):
            ds = self._as_dataset(name, False).take(0)
        else:
            lo, hi = int(records[0]), int(records[-1]) + 1
            contiguous = hi - lo == len(records)
            # Only the covering slice is read; TFDS's slices read only the files they need.
            ds = self._as_dataset(f"{name}[{lo}:{hi}]", shuffle_files and contiguous)
            if not contiguous:
                keep = np.zeros(hi - lo, bool)
                keep[records - lo] = True
                keep = tf.constant(keep)
                ds = ds.enumerate().filter(lambda i, xy: keep[i]).map(lambda i, xy: xy)
            # No more than asked for, whatever the slice gave (TFDS's mock ignores slices).
            ds = ds.take(len(records))
        if self.small:
            decode = self.image_feature.decode_example
            return ds.map(
                lambda x, y: (decode(x), tf.cast(y, tf.int32)), num_parallel_calls=tf.data.AUTOTUNE
            )
        return ds.map(lambda x, y: (x, tf.cast(y, tf.int32)))


def load(
    name: str,
    data_dir: str | None,
    *,
    val_fraction: float,
    seed: int,
    deterministic: bool,
    train_limit: int | None,
) -> Source:
    """A TFDS dataset with ``(image, label)`` supervised keys as a `Source`.

    Args:
        name: str. The TFDS name.
        data_dir: str or None. TFDS's data_dir.
        val_fraction: float. Held-out fraction of train when there is no validation split.
        seed: int. Seed of the hold-out (and of the file order when ``deterministic``).
        deterministic: bool. Seeded file order.
        train_limit: int or None. Keep only the first N training examples.

    Raises:
        ValueError: an unknown name, no supervised keys, images that are not [H, W, C], no
            train split.
        FileNotFoundError: the dataset is not prepared and cannot be (see `builder`).
    """
    found = builder(name, data_dir)
    info = found.info
    if not info.supervised_keys or len(info.supervised_keys) != 2:
        raise ValueError(
            f"TFDS dataset {name!r} has no (image, label) supervised keys; "
            f"received {info.supervised_keys}"
        )
    image_key, label_key = info.supervised_keys
    image_feature, label_feature = info.features[image_key], info.features[label_key]
    shape = tuple(image_feature.shape)
    if len(shape) != 3:
        raise ValueError(f"{name}: expected [H, W, C] images; found {shape}")
    channels = shape[2] or 3
    small = shape[0] is not None and shape[1] is not None
    small = small and max(shape[:2]) <= augment.SMALL_IMAGE_MAX_SIDE

    # Splits: metadata may be absent (mocked or unusual builders): assume train/test.
    names = set(info.splits.keys()) or {"train", "test"}
    if "train" not in names:
        raise ValueError(f"{name} has no 'train' split; found {sorted(names)}")
    reader = _Reader(found, image_key, small, seed if deterministic else None)

    n_train = reader.count("train")
    if "validation" in names:
        train_records = np.arange(n_train)
        validation = reader.split("validation", np.arange(reader.count("validation")))
    else:
        train_records, val_records = holdout(reader.labels("train"), val_fraction, seed)
        validation = reader.split("train", val_records)
    train_records = train_records[: limit_count(len(train_records), train_limit)]
    train = reader.split("train", train_records, shuffle_files=True)
    test = reader.split("test", np.arange(reader.count("test"))) if "test" in names else validation

    if small:
        cache_bytes = (train.n + validation.n + test.n) * int(np.prod(shape[:2])) * channels
    else:
        cache_bytes = int(info.dataset_size or 0)
    if hasattr(label_feature, "names"):
        class_names = list(label_feature.names)
    else:
        class_names = [str(i) for i in range(label_feature.num_classes)]
    return Source(
        train=train,
        validation=validation,
        test=test,
        class_names=class_names,
        kind="decoded" if small else "encoded",
        small=small,
        native_size=max(shape[:2]) if small else None,
        native_channels=channels,
        in_memory=False,
        cache_bytes=cache_bytes,
    )
