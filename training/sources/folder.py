"""Image folders: ``root/<class>/<images>`` or ``root/{train,val,test}/<class>/<images>``.

Every file is sorted into one of four kinds before any pipeline is built:

* Images TensorFlow decodes as Pillow does (JPEG in gray or RGB, cameras' multi-picture
  JPEG (MPO) included; PNG in every mode and bit depth: gray, gray+alpha, palette with or without transparency, RGB, RGBA, 16-bit): the
  pipeline reads the file itself with TensorFlow's decoders, JPEG crops fused with the
  decoder.
* Every other image Pillow reads (CMYK JPEG, BMP, GIF, WebP, TIFF, PPM/PGM, ...): decoded
  once by Pillow and written as a PNG to a conversion cache, which the pipeline reads
  instead (`convert_image`).
* Unreadable images (truncated, empty, a ``.jpg`` that holds text): found by `check_image`
  (header check; the converted ones are also fully decoded), left out, counted and listed
  in ``SkipReport.files`` instead of crashing training.
* Files that are not images (``notes.txt``, ``Thumbs.db``), hidden files and folders
  (``.DS_Store``, ``.thumbs/``; never classes) and files outside any class folder: left out
  unread and listed apart, in ``SkipReport.non_images``.

A file is an image when its extension, in any case (``.jpg``, ``.JPG``, ``.Png``), is one
of Pillow's readers' (`IMAGE_EXTENSIONS`); its content, not its extension, then says how it
is read.

Pixels are those of torchvision's ``ImageFolder`` (Pillow's ``convert("RGB")``; JPEGs that
TensorFlow decodes differ from Pillow's decoding by a few levels): alpha is dropped, not
composited; animations and multi-page files give their first frame; CMYK becomes RGB by
Pillow's conversion. Gray images stay gray until the pipeline makes them RGB (three equal
channels). 16-bit images keep the high byte of each value, as TensorFlow's PNG decoder
does with 16-bit PNGs. EXIF orientation is not applied (nor is it by torchvision).

The conversion cache is ``cache_dir``, else ``$KERAS_INCEPTION_IMAGE_CACHE``, else
``$XDG_CACHE_HOME/keras_inception/images`` (``~/.cache/keras_inception/images``), and never
inside the image folder. It holds one PNG per converted file, named by a hash of the file's
absolute path, modification time and size, so an edited file is converted again (the old
entry stays until the folder is deleted). Nothing is written when no file needs converting.
"""

from __future__ import annotations

import concurrent.futures
import hashlib
import os
import pathlib
import tempfile
from typing import NamedTuple

import numpy as np
from PIL import Image, ImageFile

from training import augment
from training.sources.base import SkipReport, Source, Split, holdout, limit_count, tensor_split

SPLIT_FOLDERS = {"train": "train", "val": "validation", "validation": "validation", "test": "test"}
CACHE_ENV = "KERAS_INCEPTION_IMAGE_CACHE"
# Part of every cache key: raise it when `pipeline_pixels` changes what it writes.
CACHE_VERSION = 1
# JPEG modes tf.io.decode_jpeg reads (CMYK and YCCK it refuses); it reads every PNG. MPO
# (cameras' JPEG holding several pictures, the main one first) it reads as that first one.
JPEG_FORMATS = ("JPEG", "MPO")
TF_JPEG_MODES = ("L", "RGB")
# Pillow modes of 16-bit values (PPM/PGM with maxval > 255 open as "I", scaled to 16 bits).
SIXTEEN_BIT_MODES = ("I", "I;16", "I;16L", "I;16B", "I;16N")
GRAY_MODES = ("1", "L", "LA", "La", "F")
# Registered readers that are not pictures: MPEG is video (Pillow reads its header only).
_NOT_PICTURES = ("MPEG",)


def _pillow_extensions() -> tuple[str, ...]:
    """Lower-case extensions of Pillow's readers, less its stubs (BUFR, GRIB, HDF5, WMF:
    they identify a file but cannot decode it) and `_NOT_PICTURES`."""
    Image.init()
    extensions = []
    for extension, fmt in Image.registered_extensions().items():
        factory = Image.OPEN.get(fmt, (None,))[0]
        if factory is None or fmt in _NOT_PICTURES:
            continue
        if isinstance(factory, type) and issubclass(factory, ImageFile.StubImageFile):
            continue
        extensions.append(extension.lower())
    return tuple(sorted(set(extensions)))


# Every extension Pillow can read, plugins loaded at import time included.
IMAGE_EXTENSIONS = _pillow_extensions()


class ImageCheck(NamedTuple):
    """What `check_image` found.

    Attributes:
        problem: str or None. Why the image cannot be read; None when it can.
        size: (int, int). Width and height ((0, 0) when unknown).
        tf_decodes: bool. TensorFlow's decoders read it as Pillow's ``convert("RGB")``
            does (JPEG or MPO in gray or RGB, any PNG); otherwise `convert_image` converts
            it.
    """

    problem: str | None
    size: tuple[int, int]
    tf_decodes: bool


def check_image(path: str) -> ImageCheck:
    """Fast check of one image: can it be read, its size, can TensorFlow decode it.

    Reads the header without decoding the pixels; for PNG also verifies the chunk
    checksums, for JPEG looks for the end-of-image marker, which truncated files lack.
    (The images that `convert_image` converts are fully decoded there.)
    """
    try:
        with Image.open(path) as image:
            fmt, mode, size = image.format, image.mode, image.size
            if fmt == "PNG":
                image.verify()
        if min(size) < 1:
            return ImageCheck(f"empty image {size}", size, False)
        if fmt in JPEG_FORMATS:
            with open(path, "rb") as f:
                f.seek(max(0, os.path.getsize(path) - 4096))
                if b"\xff\xd9" not in f.read():
                    return ImageCheck("truncated JPEG (no end-of-image marker)", size, False)
    except Exception as e:  # PIL raises OSError, SyntaxError, ValueError, DecompressionBomb...
        return ImageCheck(f"cannot read image ({type(e).__name__}: {e})", (0, 0), False)
    tf_decodes = fmt == "PNG" or (fmt in JPEG_FORMATS and mode in TF_JPEG_MODES)
    return ImageCheck(None, size, tf_decodes)


def default_cache_dir() -> str:
    """``$KERAS_INCEPTION_IMAGE_CACHE``, else ``$XDG_CACHE_HOME/keras_inception/images``
    (``~/.cache/keras_inception/images``)."""
    if os.environ.get(CACHE_ENV):
        return os.environ[CACHE_ENV]
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return os.path.join(base, "keras_inception", "images")


def cached_path(path: str, cache_dir: str) -> str:
    """Where `convert_image` writes ``path``: named by its absolute path, mtime and size."""
    stat = os.stat(path)
    key = f"v{CACHE_VERSION}\0{os.path.abspath(path)}\0{stat.st_mtime_ns}\0{stat.st_size}"
    digest = hashlib.sha256(key.encode("utf-8", "surrogateescape")).hexdigest()
    return os.path.join(cache_dir, digest[:2], f"{digest}.png")


def pipeline_pixels(image: Image.Image) -> Image.Image:
    """The 8-bit gray (mode L) or RGB image the pipeline gets for a Pillow image: its
    ``convert("RGB")``, except that gray stays gray and 16-bit values keep their high byte."""
    if image.mode in SIXTEEN_BIT_MODES:
        values = np.clip(np.asarray(image).astype(np.int64), 0, 65535) >> 8
        return Image.fromarray(values.astype(np.uint8))
    if image.mode in GRAY_MODES:
        return image.convert("L")
    if image.mode == "P" and "transparency" in image.info:
        # The same colours as convert("RGB"), without Pillow's warning about palette alpha.
        image = image.convert("RGBA")
    return image.convert("RGB")


def convert_image(path: str, cache_dir: str) -> tuple[str | None, str]:
    """Decodes ``path`` with Pillow (first frame) and writes `pipeline_pixels` as a PNG to
    `cached_path`, unless it is there already: (why it cannot be decoded or None, the PNG).

    Raises:
        OSError: the cache folder cannot be written.
    """
    target = cached_path(path, cache_dir)
    if os.path.exists(target):
        return None, target
    try:
        with Image.open(path) as image:
            pixels = pipeline_pixels(image)
    except Exception as e:  # truncated or corrupt data, unsupported mode...
        return f"cannot decode image ({type(e).__name__}: {e})", target
    directory = os.path.dirname(target)
    os.makedirs(directory, exist_ok=True)
    # Written aside, then renamed: a reader (another worker) never sees half a file.
    with tempfile.NamedTemporaryFile(dir=directory, suffix=".tmp", delete=False) as f:
        try:
            pixels.save(f, format="PNG", compress_level=1)
        except BaseException:
            f.close()
            os.unlink(f.name)
            raise
    os.replace(f.name, target)
    return None, target


def _list_class_folder(folder: pathlib.Path, skipped: SkipReport) -> list[str]:
    """Sorted image paths under ``folder`` (any depth); the rest goes to ``non_images``."""
    files = []
    for path in sorted(folder.rglob("*")):
        parts = path.relative_to(folder).parts
        hidden = [i for i, part in enumerate(parts) if part.startswith(".")]
        if hidden:
            if hidden[0] == len(parts) - 1:  # the hidden entry itself, not what it holds
                kind = "folder" if path.is_dir() else "file"
                skipped.non_images.append((str(path), f"hidden {kind}"))
            continue
        if not path.is_file():
            continue
        if path.suffix.lower() in IMAGE_EXTENSIONS:
            files.append(str(path))
        else:
            kind = f"{path.suffix!r} file" if path.suffix else "file without extension"
            skipped.non_images.append((str(path), f"not an image ({kind})"))
    return files


def _list_folders(folder: pathlib.Path, skipped: SkipReport) -> dict[str, pathlib.Path]:
    """{name: path} of the visible subfolders; hidden entries and files go to ``non_images``."""
    folders = {}
    for entry in sorted(folder.iterdir()):
        if entry.name.startswith("."):
            kind = "folder" if entry.is_dir() else "file"
            skipped.non_images.append((str(entry), f"hidden {kind}"))
        elif entry.is_dir():
            folders[entry.name] = entry
        else:
            skipped.non_images.append((str(entry), "file outside any class folder"))
    return folders


def _list_class_folders(folder: pathlib.Path, skipped: SkipReport) -> dict[str, list[str]]:
    """{class: sorted image paths} of ``folder/<class>/**``; the rest is reported."""
    return {
        name: _list_class_folder(path, skipped)
        for name, path in _list_folders(folder, skipped).items()
    }


def _check_and_convert(
    paths: list[str], cache_dir: str | None, root: pathlib.Path
) -> list[tuple[str | None, tuple[int, int], str]]:
    """(problem or None, (W, H), the path the pipeline reads) of each of ``paths``:
    header-checked in parallel, then those TensorFlow cannot decode converted."""
    workers = 2 * (os.cpu_count() or 1)
    with concurrent.futures.ThreadPoolExecutor(max_workers=workers) as pool:
        checks = list(pool.map(check_image, paths))
        to_convert = [i for i, c in enumerate(checks) if c.problem is None and not c.tf_decodes]
        results = [(c.problem, c.size, path) for c, path in zip(checks, paths, strict=True)]
        if not to_convert:
            return results
        cache = pathlib.Path(cache_dir or default_cache_dir()).expanduser().resolve()
        if cache == root.resolve() or root.resolve() in cache.parents:
            raise ValueError(
                f"the image conversion cache {str(cache)!r} lies inside the image folder "
                f"{str(root)!r}; pass another cache_dir or set ${CACHE_ENV}"
            )
        converted = pool.map(lambda i: convert_image(paths[i], str(cache)), to_convert)
        for i, (problem, cached) in zip(to_convert, converted, strict=True):
            results[i] = (problem, checks[i].size, cached)
    return results


def load(
    data_dir: str | None,
    *,
    val_fraction: float,
    seed: int,
    train_limit: int | None,
    cache_dir: str | None = None,
) -> Source:
    """An image folder: ``root/<class>/*`` (a stratified hold-out of it validates and tests)
    or ``root/{train,val,test}/<class>/*``.

    Every image is checked (`check_image`) first, and those TensorFlow cannot decode are
    converted (`convert_image`); the unreadable ones are left out and listed in
    ``Source.skipped.files``, the files that are not images in ``Source.skipped.non_images``.

    Args:
        data_dir: str. The root.
        val_fraction: float. Held-out fraction of train when there is no val folder.
        seed: int. Seed of the hold-out.
        train_limit: int or None. Keep only the first N training images.
        cache_dir: str or None. The conversion cache. Defaults to `default_cache_dir()`.

    Raises:
        FileNotFoundError: the root does not exist.
        ValueError: no class folders, empty classes, unknown classes, no readable image,
            a conversion cache inside the root.
        OSError: the conversion cache cannot be written.
    """
    if data_dir is None:
        raise ValueError("dataset 'imagefolder' needs data_dir (the image-folder root)")
    root = pathlib.Path(data_dir)
    if not root.is_dir():
        raise FileNotFoundError(f"image folder root {str(root)!r} does not exist")
    skipped = SkipReport()
    subdirs = list(_list_folders(root, skipped))
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
        raw = {"train": {c: _list_class_folder(root / c, skipped) for c in subdirs}}
    class_names = sorted(raw["train"])
    empty = [c for c in class_names if not raw["train"][c]]
    if empty:
        raise ValueError(f"image folder {str(root)!r}: class folder(s) {empty} hold no images")
    for split, classes in raw.items():
        unknown = sorted(set(classes) - set(class_names))
        if unknown:
            raise ValueError(f"{root}/{split}: classes {unknown} are not among train's")

    # Check (and convert) every image before anything is built on top of it.
    all_files = [(s, c, p) for s, cl in raw.items() for c, ps in cl.items() for p in ps]
    results = _check_and_convert([p for _, _, p in all_files], cache_dir, root)
    good: dict[str, tuple[list[str], list[int]]] = {s: ([], []) for s in raw}
    sides, total_bytes = [], 0
    for (split, cls, path), (problem, size, read_path) in zip(all_files, results, strict=True):
        if problem is not None:
            skipped.files.append((path, problem))
            continue
        good[split][0].append(read_path)
        good[split][1].append(class_names.index(cls))
        sides.append(max(size))
        total_bytes += os.path.getsize(read_path)
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
