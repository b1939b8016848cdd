"""tf.data input pipelines: TFDS datasets, offline Fashion-MNIST and image folders.

All three sources produce the same stream, ``(image float32 in [-1, 1], target)``, batched
to the *global* batch size, with the augmentation of ``training.augment``:

* a TFDS name, through ``tfds.builder(...).as_dataset`` (large-image datasets are read as
  encoded bytes so JPEG crops are decoded fused with ``decode_and_crop_jpeg``);
* ``"fashion_mnist"`` from the original idx files (gzipped or not) found in ``data_dir`` or
  Debian's ``/usr/share/datasets/fashion-mnist`` (package ``dataset-fashion-mnist``), else
  through TFDS;
* ``"imagefolder"``: ``root/<class>/*.jpg|jpeg|png`` or ``root/<split>/<class>/...``.
  Unreadable images are found by a header check before the pipeline is built, and are
  counted and listed in ``Datasets.skipped`` instead of crashing training.

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

import concurrent.futures
import dataclasses
import gzip
import os
import pathlib
import struct
from collections.abc import Callable, Sequence

import numpy as np
import tensorflow as tf

from training import augment
from training.model_setup import with_targets
from training.strategy import check_batch_size, padding_for_replicas

AUTOTUNE = tf.data.AUTOTUNE

FASHION_MNIST_CLASS_NAMES = [
    "T-shirt/top",
    "Trouser",
    "Pullover",
    "Dress",
    "Coat",
    "Sandal",
    "Shirt",
    "Sneaker",
    "Bag",
    "Ankle boot",
]
# Where Debian's `dataset-fashion-mnist` package puts the idx files; searched after data_dir.
FASHION_MNIST_DIRS = (pathlib.Path("/usr/share/datasets/fashion-mnist"),)
_FASHION_FILES = {
    "train_images": "train-images-idx3-ubyte",
    "train_labels": "train-labels-idx1-ubyte",
    "test_images": "t10k-images-idx3-ubyte",
    "test_labels": "t10k-labels-idx1-ubyte",
}

IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png")
_SPLIT_FOLDERS = {"train": "train", "val": "validation", "validation": "validation", "test": "test"}
LARGE_IMAGE_SIZE = 224
# Decoded data up to this fraction of physical memory is cached when `cache=None`.
_CACHE_MEMORY_FRACTION = 0.25
_SHUFFLE_BUFFER_LARGE = 4096


@dataclasses.dataclass(frozen=True)
class DataConfig:
    """What to load and how to feed it.

    Args:
        dataset: str. A TFDS name (``"cifar10"``, ``"imagenette"``, ``"imagenet2012"``, ...),
            ``"fashion_mnist"`` or ``"imagefolder"``.
        data_dir: str or None. TFDS ``data_dir``, the folder with the four Fashion-MNIST idx
            files, or the image-folder root. Defaults to None.
        image_size: int or None. Model input side. None: the native size (28 for
            Fashion-MNIST, 32 for CIFAR, 224 for image folders and large TFDS sets).
        channels: int or None. 1 or 3; None keeps the native channels.
        batch_size: int. Global batch size. Defaults to 128.
        train_limit: int or None. Use only the first N training examples.
        val_fraction: float. Held-out fraction of train when the source has no validation
            split. Defaults to 0.1.
        seed: int. Seed of the held-out split, shuffling and augmentation. Defaults to 0.
        deterministic: bool. Same seed, same batches (order and augmentation). Defaults to
            False (random augmentation seeds, parallel map may reorder).
        augment: bool. Random crop/flip/colour on train. Defaults to True.
        flip: bool. Random horizontal flips in that augmentation. Turn them off for data
            whose mirror image is something else: digits, text, many signs. Defaults to
            True.
        pca_lighting: bool. AlexNet PCA lighting noise on train (RGB only). Defaults to False.
        cache: bool or None. Cache decoded (or, for large images, encoded) examples before
            augmentation; None caches when they fit comfortably in memory.
    """

    dataset: str
    data_dir: str | None = None
    image_size: int | None = None
    channels: int | None = None
    batch_size: int = 128
    train_limit: int | None = None
    val_fraction: float = 0.1
    seed: int = 0
    deterministic: bool = False
    augment: bool = True
    flip: bool = True
    pca_lighting: bool = False
    cache: bool | None = None

    def __post_init__(self):
        if not self.dataset:
            raise ValueError(f"dataset must be a non-empty name; received {self.dataset!r}")
        if self.image_size is not None and self.image_size < 8:
            raise ValueError(f"image_size must be >= 8 or None; received {self.image_size}")
        if self.channels not in (None, 1, 3):
            raise ValueError(f"channels must be 1, 3 or None; received {self.channels}")
        if self.batch_size < 1:
            raise ValueError(f"batch_size must be >= 1; received {self.batch_size}")
        if self.train_limit is not None and self.train_limit < 1:
            raise ValueError(f"train_limit must be >= 1 or None; received {self.train_limit}")
        if not 0.0 <= self.val_fraction < 1.0:
            raise ValueError(f"val_fraction must be in [0, 1); received {self.val_fraction}")


@dataclasses.dataclass
class SkipReport:
    """Images that could not be read and were left out: ``(path, reason)`` pairs."""

    files: list[tuple[str, str]] = dataclasses.field(default_factory=list)

    @property
    def count(self) -> int:
        return len(self.files)

    def summary(self, limit: int = 10) -> str:
        if not self.files:
            return "skipped 0 images"
        lines = [f"skipped {self.count} unreadable image(s):"]
        lines += [f"  {path}: {reason}" for path, reason in self.files[:limit]]
        if self.count > limit:
            lines.append(f"  ... and {self.count - limit} more")
        return "\n".join(lines)


@dataclasses.dataclass
class Datasets:
    """The three batched pipelines and what the model needs to know about them."""

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
    # Training examples repeated in every epoch so that its last batch gives every replica
    # at least one (`training.strategy.padding_for_replicas`); 0 on one device.
    train_repeats: int = 0


# --------------------------------------------------------------------------- sources


@dataclasses.dataclass
class _Split:
    ds: tf.data.Dataset  # (x, label int32): x is uint8 image, encoded bytes or a file path
    n: int


@dataclasses.dataclass
class _Source:
    train: _Split
    validation: _Split
    test: _Split
    class_names: list[str]
    kind: str  # "decoded" (uint8 [H, W, C]), "encoded" (image bytes) or "path"
    small: bool  # native side <= 64 px: pad-and-crop recipe instead of the Inception crop
    native_size: int | None  # default image_size; None: LARGE_IMAGE_SIZE
    native_channels: int
    in_memory: bool  # already in memory (from_tensor_slices): never cached again
    cache_bytes: int  # estimated size of what `cache` would hold
    skipped: SkipReport = dataclasses.field(default_factory=SkipReport)


def _holdout(labels: np.ndarray, fraction: float, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Stratified, seeded hold-out: (train indices, held-out indices), both sorted."""
    n = len(labels)
    n_val = round(fraction * n)
    if fraction > 0 and n >= 2:
        n_val = min(max(n_val, 1), n - 1)
    rng = np.random.default_rng(seed)
    classes, counts = np.unique(labels, return_counts=True)
    quota = counts * (n_val / max(n, 1))
    take = np.floor(quota).astype(int)
    # Largest remainder, ties broken at random, so the total is exactly n_val.
    order = np.lexsort((rng.random(len(classes)), -(quota - take)))
    take[order[: n_val - take.sum()]] += 1
    val = []
    for cls, k in zip(classes, take, strict=True):
        members = np.flatnonzero(labels == cls)
        val.append(rng.permutation(members)[:k])
    val_idx = np.sort(np.concatenate(val)) if val else np.zeros([0], int)
    train_idx = np.setdiff1d(np.arange(n), val_idx)
    return train_idx, val_idx


def _limit(n: int, limit: int | None) -> int:
    return n if limit is None else min(n, limit)


# ---- Fashion-MNIST idx files


def read_idx(path: str | os.PathLike, expected_ndim: int | None = None) -> np.ndarray:
    """Reads an idx file (optionally gzipped) of unsigned bytes into a NumPy array.

    Raises:
        ValueError: naming the file when it is corrupt, truncated or not uint8 idx.
    """
    path = pathlib.Path(path)
    try:
        with open(path, "rb") as f:
            raw = f.read()
        if raw[:2] == b"\x1f\x8b":
            raw = gzip.decompress(raw)
    except (OSError, EOFError, gzip.BadGzipFile) as e:
        raise ValueError(f"cannot read idx file {path}: {e}") from e
    if len(raw) < 4 or raw[0] != 0 or raw[1] != 0:
        raise ValueError(f"{path} is not an idx file: bad magic number {raw[:4]!r}")
    dtype_code, ndim = raw[2], raw[3]
    if dtype_code != 0x08:
        raise ValueError(
            f"{path}: expected unsigned-byte idx data (0x08); found 0x{dtype_code:02x}"
        )
    if expected_ndim is not None and ndim != expected_ndim:
        raise ValueError(f"{path}: expected {expected_ndim} dimensions; found {ndim}")
    header = 4 + 4 * ndim
    if len(raw) < header:
        raise ValueError(f"{path} is truncated: {len(raw)} bytes, header needs {header}")
    dims = struct.unpack(f">{ndim}I", raw[4:header])
    size = int(np.prod(dims))
    if len(raw) - header != size:
        raise ValueError(
            f"{path} is truncated or corrupt: shape {dims} needs {size} data bytes; "
            f"found {len(raw) - header}"
        )
    return np.frombuffer(raw, np.uint8, offset=header).reshape(dims)


def _find_idx_files(folder: pathlib.Path) -> dict[str, pathlib.Path] | None:
    """The four idx files in ``folder`` (plain or .gz); None when none is there."""
    found, missing = {}, []
    for key, stem in _FASHION_FILES.items():
        for candidate in (folder / stem, folder / f"{stem}.gz"):
            if candidate.is_file():
                found[key] = candidate
                break
        else:
            missing.append(f"{stem}[.gz]")
    if not found:
        return None
    if missing:
        raise FileNotFoundError(f"{folder} has some Fashion-MNIST idx files but not {missing}")
    return found


def _fashion_mnist(config: DataConfig) -> _Source:
    searched = []
    if config.data_dir is not None:
        data_dir = pathlib.Path(config.data_dir)
        if not data_dir.is_dir():
            raise FileNotFoundError(
                f"data_dir {str(data_dir)!r} for fashion_mnist does not exist; pass the folder "
                "holding train-images-idx3-ubyte.gz, train-labels-idx1-ubyte.gz, "
                "t10k-images-idx3-ubyte.gz and t10k-labels-idx1-ubyte.gz"
            )
        searched.append(data_dir)
    searched += [d for d in FASHION_MNIST_DIRS if d not in searched]
    for folder in searched:
        files = _find_idx_files(folder) if folder.is_dir() else None
        if files is not None:
            return _fashion_mnist_from_idx(files, config)
    try:
        return _tfds(config)
    except FileNotFoundError as e:
        raise FileNotFoundError(
            f"Fashion-MNIST not found: no idx files in {[str(d) for d in searched]} and TFDS "
            f"could not provide it ({e}). Install them with `apt-get install "
            "dataset-fashion-mnist`, or pass --data-dir with the four idx files."
        ) from e


def _fashion_mnist_from_idx(files: dict[str, pathlib.Path], config: DataConfig) -> _Source:
    arrays = {}
    for key, path in files.items():
        arrays[key] = read_idx(path, expected_ndim=3 if key.endswith("images") else 1)
    for split in ("train", "test"):
        images, labels = arrays[f"{split}_images"], arrays[f"{split}_labels"]
        if images.shape[0] != labels.shape[0]:
            raise ValueError(
                f"{files[f'{split}_images']} has {images.shape[0]} images but "
                f"{files[f'{split}_labels']} has {labels.shape[0]} labels"
            )
        if labels.size and labels.max() >= len(FASHION_MNIST_CLASS_NAMES):
            raise ValueError(f"{files[f'{split}_labels']}: label {labels.max()} is not in 0..9")
    train_x, train_y = arrays["train_images"], arrays["train_labels"]
    if train_x.shape[1] != train_x.shape[2]:
        raise ValueError(f"{files['train_images']}: images must be square; found {train_x.shape}")
    train_idx, val_idx = _holdout(train_y, config.val_fraction, config.seed)
    train_idx = train_idx[: _limit(len(train_idx), config.train_limit)]

    def split(x: np.ndarray, y: np.ndarray) -> _Split:
        x = np.ascontiguousarray(x[..., np.newaxis])
        ds = tf.data.Dataset.from_tensor_slices((x, y.astype(np.int32)))
        return _Split(ds, len(y))

    return _Source(
        train=split(train_x[train_idx], train_y[train_idx]),
        validation=split(train_x[val_idx], train_y[val_idx]),
        test=split(arrays["test_images"], arrays["test_labels"]),
        class_names=list(FASHION_MNIST_CLASS_NAMES),
        kind="decoded",
        small=train_x.shape[1] <= augment.SMALL_IMAGE_MAX_SIDE,
        native_size=int(train_x.shape[1]),
        native_channels=1,
        in_memory=True,
        cache_bytes=0,
    )


# ---- TFDS


def _tfds_builder(name: str, data_dir: str | None):
    import tensorflow_datasets as tfds

    try:
        builder = tfds.builder(name, data_dir=data_dir)
    except tfds.core.registered.DatasetNotFoundError as e:
        raise ValueError(
            f"unknown dataset {name!r}: not a TFDS name, 'fashion_mnist' or 'imagefolder'"
        ) from e
    if builder.is_prepared():
        return builder
    download_dir = pathlib.Path(builder._data_dir_root) / "downloads"  # noqa: SLF001
    manual_dir = download_dir / "manual"
    if builder.MANUAL_DOWNLOAD_INSTRUCTIONS and not (
        manual_dir.is_dir() and any(manual_dir.iterdir())
    ):
        raise FileNotFoundError(
            f"{name} must be downloaded by hand and is not prepared in {builder.data_dir}: put "
            f"its files in TFDS's manual_dir {manual_dir} (that is <data_dir>/downloads/manual/"
            f"), then run again.\nTFDS instructions: {builder.MANUAL_DOWNLOAD_INSTRUCTIONS.strip()}"
        )
    if not _network_available():
        raise FileNotFoundError(
            f"{name} is not prepared in {builder.data_dir} and there is no network to download "
            f"it. Prepare it on a machine with internet access (`tfds build {name} "
            "--data_dir=...`) and pass that folder as data_dir."
        )
    try:
        builder.download_and_prepare(download_dir=str(download_dir))
    except Exception as e:  # network errors, checksum errors, missing manual files ...
        raise FileNotFoundError(
            f"{name} is not prepared in {builder.data_dir} and could not be downloaded "
            f"({type(e).__name__}: {e}). Prepare it on a machine with internet access "
            f"(`tfds build {name} --data_dir=...`) and pass that folder as data_dir."
        ) from e
    return builder


def _network_available(host: str = "storage.googleapis.com") -> bool:
    """Fast DNS check, so an offline machine fails at once (TFDS retries for minutes)."""
    import socket

    try:
        socket.getaddrinfo(host, 443)
    except OSError:
        return False
    return True


def _tfds(config: DataConfig) -> _Source:
    import tensorflow_datasets as tfds

    builder = _tfds_builder(config.dataset, config.data_dir)
    info = builder.info
    if not info.supervised_keys or len(info.supervised_keys) != 2:
        raise ValueError(
            f"TFDS dataset {config.dataset!r} has no (image, label) supervised keys; "
            f"received {info.supervised_keys}"
        )
    image_key, label_key = info.supervised_keys
    image_feature, label_feature = info.features[image_key], info.features[label_key]
    shape = tuple(image_feature.shape)
    if len(shape) != 3:
        raise ValueError(f"{config.dataset}: expected [H, W, C] images; found {shape}")
    channels = shape[2] or 3
    small = shape[0] is not None and shape[1] is not None
    small = small and max(shape[:2]) <= augment.SMALL_IMAGE_MAX_SIDE
    decoders = None if small else {image_key: tfds.decode.SkipDecoding()}

    # Splits: metadata may be absent (mocked or unusual builders): assume train/test.
    known = {name: split.num_examples for name, split in info.splits.items()}
    names = set(known) or {"train", "test"}
    if "train" not in names:
        raise ValueError(f"{config.dataset} has no 'train' split; found {sorted(names)}")

    read_config = tfds.ReadConfig(
        shuffle_seed=config.seed if config.deterministic else None,
        try_autocache=False,
    )

    def load(split: str, train: bool = False) -> _Split:
        ds = builder.as_dataset(
            split=split,
            as_supervised=True,
            shuffle_files=train,
            decoders=decoders,
            read_config=read_config,
        )
        n = int(ds.cardinality())
        if n < 0:
            raise ValueError(f"{config.dataset}[{split}]: unknown number of examples")
        return _Split(ds.map(lambda x, y: (x, tf.cast(y, tf.int32))), n)

    def count(split: str) -> int:
        if split in known:
            return known[split]
        return int(builder.as_dataset(split=split, decoders=decoders).cardinality())

    n_train = count("train")
    if "validation" in names:
        train_end, validation = n_train, load("validation")
    else:
        n_val = round(config.val_fraction * n_train)
        train_end = n_train - n_val
        validation = load(f"train[{train_end}:]") if n_val else None
    train = load(f"train[:{_limit(train_end, config.train_limit)}]", train=True)
    test = load("test") if "test" in names else validation
    if validation is None:
        validation = _Split(train.ds.take(0), 0)
        test = test or validation

    if small:
        cache_bytes = (train.n + validation.n + test.n) * int(np.prod(shape[:2])) * channels
    else:
        cache_bytes = int(info.dataset_size or 0)
    if hasattr(label_feature, "names"):
        class_names = list(label_feature.names)
    else:
        class_names = [str(i) for i in range(label_feature.num_classes)]
    return _Source(
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


# ---- image folders


def check_image(path: str) -> tuple[str | None, tuple[int, int]]:
    """Fast check that ``path`` is a JPEG/PNG TF can decode: (reason it is bad or None, (W, H)).

    Reads the header (and, for PNG, verifies the chunk checksums; for JPEG, looks for the
    end-of-image marker, which truncated files lack) without decoding the pixels.
    """
    from PIL import Image

    try:
        with Image.open(path) as image:
            fmt, mode, size = image.format, image.mode, image.size
            if fmt not in ("JPEG", "PNG"):
                return f"unsupported image format {fmt}", size
            if fmt == "JPEG" and mode == "CMYK":
                return "CMYK JPEG (tf.image.decode_jpeg reads gray/RGB only)", size
            if fmt == "PNG":
                image.verify()
        if fmt == "JPEG":
            with open(path, "rb") as f:
                f.seek(max(0, os.path.getsize(path) - 4096))
                if b"\xff\xd9" not in f.read():
                    return "truncated JPEG (no end-of-image marker)", size
    except Exception as e:  # PIL raises OSError, SyntaxError, ValueError, DecompressionBomb...
        return f"cannot read image ({type(e).__name__}: {e})", (0, 0)
    if min(size) < 1:
        return f"empty image {size}", size
    return None, size


def _list_class_folders(folder: pathlib.Path, skipped: SkipReport) -> dict[str, list[str]]:
    """{class: sorted image paths} of ``folder/<class>/**``; stray files are reported."""
    classes = {}
    for entry in sorted(folder.iterdir()):
        if entry.name.startswith("."):
            continue
        if entry.is_file():
            skipped.files.append((str(entry), "file outside any class folder"))
            continue
        files = []
        for path in sorted(entry.rglob("*")):
            if not path.is_file() or path.name.startswith("."):
                continue
            if path.suffix.lower() in IMAGE_EXTENSIONS:
                files.append(str(path))
            else:
                skipped.files.append((str(path), f"not a {'/'.join(IMAGE_EXTENSIONS)} file"))
        classes[entry.name] = files
    return classes


def _image_folder(config: DataConfig) -> _Source:
    if config.data_dir is None:
        raise ValueError("dataset 'imagefolder' needs data_dir (the image-folder root)")
    root = pathlib.Path(config.data_dir)
    if not root.is_dir():
        raise FileNotFoundError(f"image folder root {str(root)!r} does not exist")
    skipped = SkipReport()
    subdirs = [p.name for p in root.iterdir() if p.is_dir() and not p.name.startswith(".")]
    if not subdirs:
        raise ValueError(f"image folder {str(root)!r} has no class folders (root/<class>/*.jpg)")
    split_dirs = [d for d in subdirs if d.lower() in _SPLIT_FOLDERS]
    if any(d.lower() == "train" for d in subdirs):
        if len(split_dirs) != len(subdirs):
            raise ValueError(
                f"image folder {str(root)!r} mixes split folders {sorted(split_dirs)} with "
                f"others {sorted(set(subdirs) - set(split_dirs))}; use root/<class>/ or "
                "root/{train,val,test}/<class>/"
            )
        raw = {_SPLIT_FOLDERS[d.lower()]: _list_class_folders(root / d, skipped) for d in subdirs}
    else:
        raw = {"train": _list_class_folders(root, skipped)}
    class_names = sorted(raw["train"])
    empty = [c for c in class_names if not raw["train"][c]]
    if empty:
        raise ValueError(f"image folder {str(root)!r}: class folder(s) {empty} hold no images")
    for split, classes in raw.items():
        unknown = sorted(set(classes) - set(class_names))
        if unknown:
            raise ValueError(f"{root}/{split}: classes {unknown} are not among train's")

    # Header-check every file in parallel before anything is built on top of it.
    all_files = [(s, c, p) for s, cl in raw.items() for c, ps in cl.items() for p in ps]
    with concurrent.futures.ThreadPoolExecutor(max_workers=2 * (os.cpu_count() or 1)) as pool:
        results = list(pool.map(check_image, [p for _, _, p in all_files]))
    good: dict[str, tuple[list[str], list[int]]] = {s: ([], []) for s in raw}
    sides, total_bytes = [], 0
    for (split, cls, path), (reason, size) in zip(all_files, results, strict=True):
        if reason is not None:
            skipped.files.append((path, reason))
            continue
        good[split][0].append(path)
        good[split][1].append(class_names.index(cls))
        sides.append(max(size))
        total_bytes += os.path.getsize(path)
    if not good["train"][0]:
        raise ValueError(
            f"image folder {str(root)!r}: no readable training images\n{skipped.summary()}"
        )

    def make(paths: list[str], labels: list[int] | np.ndarray) -> _Split:
        ds = tf.data.Dataset.from_tensor_slices(
            (tf.constant(paths, tf.string), tf.constant(np.asarray(labels, np.int32)))
        )
        return _Split(ds, len(paths))

    train_paths, train_labels = good["train"]
    if "validation" in good:
        validation = make(*good["validation"])
    else:
        labels = np.asarray(train_labels)
        train_idx, val_idx = _holdout(labels, config.val_fraction, config.seed)
        validation = make([train_paths[i] for i in val_idx], labels[val_idx])
        train_paths = [train_paths[i] for i in train_idx]
        train_labels = labels[train_idx]
    n_train = _limit(len(train_paths), config.train_limit)
    train = make(train_paths[:n_train], train_labels[:n_train])
    test = make(*good["test"]) if "test" in good else validation

    return _Source(
        train=train,
        validation=validation,
        test=test,
        class_names=class_names,
        kind="path",
        # Small images get the small-image recipe, but the default size stays 224.
        small=max(sides) <= augment.SMALL_IMAGE_MAX_SIDE,
        native_size=None,
        native_channels=3,
        in_memory=False,
        cache_bytes=total_bytes,
        skipped=skipped,
    )


# --------------------------------------------------------------------------- pipeline


def _physical_memory() -> int:
    try:
        return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    except (ValueError, OSError, AttributeError):
        return 8 << 30


def _should_cache(config: DataConfig, source: _Source) -> bool:
    if source.in_memory:
        return False
    if config.cache is not None:
        return config.cache
    return source.cache_bytes <= _CACHE_MEMORY_FRACTION * _physical_memory()


def _build(
    split: _Split,
    source: _Source,
    config: DataConfig,
    *,
    size: int,
    channels: int,
    train: bool,
    cache: bool,
    ten_crop: bool,
    output_names: Sequence[str] | None,
    strategy: tf.distribute.Strategy | None,
) -> tf.data.Dataset:
    small = source.small
    ds = split.ds
    shuffle = train and split.n > 0
    buffer = split.n if (small or source.kind == "path") else _SHUFFLE_BUFFER_LARGE
    # Under MultiWorkerMirroredStrategy every worker runs this whole pipeline and keeps its
    # share of each batch (DATA sharding): their shuffles and element order must agree, or
    # the shares overlap.
    multi_worker = isinstance(strategy, tf.distribute.MultiWorkerMirroredStrategy)
    shuffle_seed = config.seed if config.deterministic or multi_worker else None
    if shuffle and source.kind == "path" and not cache:
        # Shuffle the (cheap) paths before reading, so no image bytes sit in the buffer.
        ds = ds.shuffle(split.n, seed=shuffle_seed, reshuffle_each_iteration=True)
        shuffle = False
    if source.kind == "path":
        ds = ds.map(lambda p, y: (tf.io.read_file(p), y), num_parallel_calls=AUTOTUNE)
    if cache:
        ds = ds.cache()
    if shuffle:
        ds = ds.shuffle(min(buffer, split.n), seed=shuffle_seed, reshuffle_each_iteration=True)

    encoded = source.kind in ("encoded", "path")
    fn = _train_fn(source, config, size, channels, encoded) if train else None
    if fn is not None:
        # One stateless seed pair per example; a fresh sequence every epoch, the same
        # sequence of epochs for the same seed.
        seeds = tf.data.Dataset.random(
            seed=config.seed if config.deterministic else None, rerandomize_each_iteration=True
        ).batch(2, drop_remainder=True)
        ds = tf.data.Dataset.zip(ds, seeds)
        ds = ds.map(lambda xy, s: (fn(xy[0], s), xy[1]), num_parallel_calls=AUTOTUNE)
    else:
        eval_fn = _eval_fn(source, size, channels, encoded, ten_crop)
        ds = ds.map(lambda x, y: (eval_fn(x), y), num_parallel_calls=AUTOTUNE)
    ds = ds.batch(config.batch_size)
    ds = with_targets(ds, output_names)
    ds = ds.prefetch(AUTOTUNE)
    options = tf.data.Options()
    options.deterministic = config.deterministic or not train or multi_worker
    if strategy is not None:
        options.experimental_distribute.auto_shard_policy = (
            tf.data.experimental.AutoShardPolicy.DATA
        )
    return ds.with_options(options)


def _to_image(x: tf.Tensor, channels: int, encoded: bool) -> tf.Tensor:
    """uint8 [H, W, channels] from a decoded image or image bytes."""
    if encoded:
        return augment.decode(x, channels)
    return augment.convert_channels(x, channels)


def _resize_if_needed(image: tf.Tensor, size: int) -> tf.Tensor:
    if image.shape[0] == size and image.shape[1] == size:
        return image
    return tf.cast(tf.clip_by_value(augment.resize(image, size), 0, 255), image.dtype)


def _train_fn(
    source: _Source, config: DataConfig, size: int, channels: int, encoded: bool
) -> Callable | None:
    if not config.augment and not config.pca_lighting:
        return None
    small = source.small

    def small_fn(x, seed):
        crop_seed, flip_seed, pca_seed = augment.split_seed(seed, 3)
        image = _resize_if_needed(_to_image(x, channels, encoded), size)
        image.set_shape([size, size, channels])
        if config.augment:
            pad = augment.small_image_padding(size)
            image = augment.pad_and_random_crop(image, pad, crop_seed)
            if config.flip:
                image = tf.image.stateless_random_flip_left_right(image, flip_seed)
        image = tf.cast(image, tf.float32) / 255.0
        if config.pca_lighting:
            image = augment.pca_lighting(image, pca_seed)
        return augment.to_symmetric(image)

    def large_fn(x, seed):
        crop_seed, flip_seed, color_seed, pca_seed = augment.split_seed(seed, 4)
        if not config.augment:
            image = _eval_large(x, size, channels, encoded)
        else:
            if encoded:
                image = augment.decode_inception_crop(x, crop_seed, channels)
            else:
                image = augment.inception_crop(augment.convert_channels(x, channels), crop_seed)
            image = augment.resize(image, size) / 255.0
            image.set_shape([size, size, channels])
            if config.flip:
                image = tf.image.stateless_random_flip_left_right(image, flip_seed)
            image = augment.distort_color(image, color_seed)
        if config.pca_lighting:
            image = augment.pca_lighting(image, pca_seed)
        return augment.to_symmetric(image)

    return small_fn if small else large_fn


def _eval_large(x: tf.Tensor, size: int, channels: int, encoded: bool) -> tf.Tensor:
    """Central 87.5% crop resized to ``size``: float32 in [0, 1]."""
    if encoded:
        image = augment.decode_central_crop(x, channels)
    else:
        image = augment.central_crop(augment.convert_channels(x, channels))
    image = augment.resize(image, size) / 255.0
    image.set_shape([size, size, channels])
    return image


def _eval_fn(source: _Source, size: int, channels: int, encoded: bool, ten_crop: bool):
    small = source.small

    def fn(x):
        if ten_crop:
            crops = augment.ten_crop(_to_image(x, channels, encoded), size) / 255.0
            crops.set_shape([10, size, size, channels])
            return augment.to_symmetric(crops)
        if small:
            image = _resize_if_needed(_to_image(x, channels, encoded), size)
            image.set_shape([size, size, channels])
            return augment.to_symmetric(tf.cast(image, tf.float32) / 255.0)
        return augment.to_symmetric(_eval_large(x, size, channels, encoded))

    return fn


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
            that leaves a replica empty is refused, and the training split repeats its
            first `Datasets.train_repeats` examples so that no replica gets an empty share
            of its last batch. Defaults to None.
        ten_crop: bool. Test images become ``[batch, 10, H, W, C]`` (4 corners + centre and
            their mirror images). Defaults to False.

    Returns:
        Datasets. ``train`` is shuffled, augmented, batched and prefetched but not repeated.

    Raises:
        FileNotFoundError: the data is not where it was looked for and cannot be downloaded.
        ValueError: a bad config, an unknown dataset, a corrupt idx file, an empty folder.
    """
    name = config.dataset
    if name == "fashion_mnist":
        source = _fashion_mnist(config)
    elif name == "imagefolder":
        source = _image_folder(config)
    else:
        source = _tfds(config)

    size = config.image_size or source.native_size or LARGE_IMAGE_SIZE
    channels = config.channels or source.native_channels
    if config.pca_lighting and channels != 3:
        raise ValueError(f"pca_lighting needs 3 channels; received channels={channels}")
    cache = _should_cache(config, source)
    replicas = strategy.num_replicas_in_sync if strategy is not None else 1
    train_split, repeats = source.train, 0
    if replicas > 1:
        check_batch_size(config.batch_size, replicas)
        repeats = padding_for_replicas(source.train.n, config.batch_size, replicas)
    if repeats:
        # The first examples again: a training step on an empty share makes BN NaN.
        train_split = _Split(
            source.train.ds.concatenate(source.train.ds.take(repeats)), source.train.n + repeats
        )
    common = dict(
        size=size,
        channels=channels,
        cache=cache,
        output_names=output_names,
        strategy=strategy,
    )
    train = _build(train_split, source, config, train=True, ten_crop=False, **common)
    validation = _build(source.validation, source, config, train=False, ten_crop=False, **common)
    test = _build(source.test, source, config, train=False, ten_crop=ten_crop, **common)
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
    )
