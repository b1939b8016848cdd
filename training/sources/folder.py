"""Image folders: ``root/<class>/*.jpg|jpeg|png`` or ``root/<split>/<class>/...``.

Unreadable images are found by a header check before any pipeline is built, and are
counted and listed in the source's `SkipReport` instead of crashing training.
"""

from __future__ import annotations

import concurrent.futures
import os
import pathlib

import numpy as np
from PIL import Image

from training import augment
from training.sources.base import SkipReport, Source, Split, holdout, limit_count, tensor_split

IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png")
SPLIT_FOLDERS = {"train": "train", "val": "validation", "validation": "validation", "test": "test"}


def check_image(path: str) -> tuple[str | None, tuple[int, int]]:
    """Fast check that ``path`` is a JPEG/PNG TF can decode: (reason it is bad or None, (W, H)).

    Reads the header (and, for PNG, verifies the chunk checksums; for JPEG, looks for the
    end-of-image marker, which truncated files lack) without decoding the pixels.
    """
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


def load(
    data_dir: str | None, *, val_fraction: float, seed: int, train_limit: int | None
) -> Source:
    """An image folder: ``root/<class>/*`` (a stratified hold-out of it validates and tests)
    or ``root/{train,val,test}/<class>/*``.

    Every file is header-checked (`check_image`) first; the unreadable ones are left out
    and listed in ``Source.skipped``.

    Args:
        data_dir: str. The root.
        val_fraction: float. Held-out fraction of train when there is no val folder.
        seed: int. Seed of the hold-out.
        train_limit: int or None. Keep only the first N training images.

    Raises:
        FileNotFoundError: the root does not exist.
        ValueError: no class folders, empty classes, unknown classes, no readable image.
    """
    if data_dir is None:
        raise ValueError("dataset 'imagefolder' needs data_dir (the image-folder root)")
    root = pathlib.Path(data_dir)
    if not root.is_dir():
        raise FileNotFoundError(f"image folder root {str(root)!r} does not exist")
    skipped = SkipReport()
    subdirs = [p.name for p in root.iterdir() if p.is_dir() and not p.name.startswith(".")]
    if not subdirs:
        raise ValueError(f"image folder {str(root)!r} has no class folders (root/<class>/*.jpg)")
    split_dirs = [d for d in subdirs if d.lower() in SPLIT_FOLDERS]
    if any(d.lower() == "train" for d in subdirs):
        if len(split_dirs) != len(subdirs):
            raise ValueError(
                f"image folder {str(root)!r} mixes split folders {sorted(split_dirs)} with "
                f"others {sorted(set(subdirs) - set(split_dirs))}; use root/<class>/ or "
                "root/{train,val,test}/<class>/"
            )
        raw = {SPLIT_FOLDERS[d.lower()]: _list_class_folders(root / d, skipped) for d in subdirs}
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

    def make(paths: list[str], labels: list[int] | np.ndarray) -> Split:
        return tensor_split(np.asarray(paths, dtype=str), np.asarray(labels))

    train_paths, train_labels = good["train"]
    if "validation" in good:
        validation = make(*good["validation"])
    else:
        labels = np.asarray(train_labels)
        train_idx, val_idx = holdout(labels, val_fraction, seed)
        validation = make([train_paths[i] for i in val_idx], labels[val_idx])
        train_paths = [train_paths[i] for i in train_idx]
        train_labels = labels[train_idx]
    n_train = limit_count(len(train_paths), train_limit)
    train = make(train_paths[:n_train], train_labels[:n_train])
    test = make(*good["test"]) if "test" in good else validation

    return Source(
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
