"""`python -m training predict`: the top classes of images, from a trained or converted model.

A model is a training workdir (its inference.keras), a `.keras` file, or published weights
converted on the fly: `torchvision:FILE` (a torchvision GoogLeNet or InceptionV3 state
dict, with `transform_input` as torchvision's pretrained models) or `slim:FILE` (a TF-Slim
checkpoint; 1001 classes, "background" at 0), named with ImageNet's classes
(`keras_inception.class_names`). Class names come from the `.keras` file
(`keras_inception.class_names_of`), else the workdir's labels.txt, else the class indices.

Images are files and folders (searched recursively for the extensions that the
image-folder loader reads, `training.sources.folder.IMAGE_EXTENSIONS`), of any size and
format Pillow reads, decoded as that loader decodes them and resized and centre-cropped as
in evaluation (`training.preprocess.eval_fn`: resized only for models of 64 px or less,
else the central 87.5% crop). An image that cannot be read is reported (its row's `error`,
and stderr) and counted; the others are labelled.

Example:

```python
rows = predict(load_predictor("runs/flowers"), list_images(["photos/"]), top=3)
write_csv(rows, "labels.csv", top=3)
```
"""

from __future__ import annotations

import csv
import json
import os
import sys
from collections.abc import Iterable, Sequence
from typing import Any, NamedTuple

import keras
import numpy as np
import tensorflow as tf
from PIL import Image

import keras_inception as ki
from keras_inception.metadata import read_labels
from keras_inception.pretrained import slim, torchvision
from training import augment, preprocess
from training.evaluate import inference_model_path, load_inference_model
from training.sources import folder

# A progress bar past this many images.
PROGRESS_MIN_IMAGES = 300
PRETRAINED_PREFIXES = ("torchvision:", "slim:")


class Predictor(NamedTuple):
    """A model that takes raw pixels, and the name of each of its outputs' classes."""

    model: keras.Model
    class_names: tuple[str, ...]


class Prediction(NamedTuple):
    """One image's result: `top` is `[(class name, score), ...]` best first, or empty with
    `error` saying why the image could not be read."""

    path: str
    top: list[tuple[str, float]]
    error: str | None = None


def _pretrained(source: str) -> Predictor:
    kind, path = source.split(":", 1)
    converter = (torchvision if kind == "torchvision" else slim).CONVERTER
    name = converter.detect(converter.read(path))  # FileNotFoundError for a missing file
    if name is None:
        raise ValueError(f"{path!r} holds no {kind} network that keras_inception converts")
    if kind == "torchvision":
        model = ki.from_torchvision(
            name, path, transform_input=True, classifier_activation="softmax"
        )
        model = ki.with_preprocessing(model, "torch")
    else:
        model = ki.with_preprocessing(
            ki.from_slim(name, path, classifier_activation="softmax"), "inception"
        )
    return Predictor(model, tuple(ki.class_names(model.output_shape[-1])))


def load_predictor(source: str) -> Predictor:
    """The model and class names of `source`: a workdir, a `.keras` file,
    `torchvision:FILE` or `slim:FILE`.

    Raises:
        FileNotFoundError, ValueError: no such model, or one that is not a classifier.
    """
    if source.startswith(PRETRAINED_PREFIXES):
        return _pretrained(source)
    model = load_inference_model(source)
    if len(model.output_shape) != 2:
        raise ValueError(
            f"{source!r} is not a classifier: its output shape is {model.output_shape}"
        )
    classes = model.output_shape[-1]
    names = ki.class_names_of(inference_model_path(source))
    labels = os.path.join(source, "labels.txt")
    if names is None and os.path.isdir(source) and os.path.exists(labels):
        names = read_labels(labels)
    if names is None or len(names) != classes:
        names = [str(i) for i in range(classes)]
    return Predictor(model, tuple(names))


def list_images(paths: Iterable[str]) -> list[str]:
    """The images named by `paths`: each file as given, and the files of each folder
    (recursively, sorted, hidden ones left out) whose extension the image-folder loader
    reads.

    Raises:
        FileNotFoundError: a path that does not exist.
    """
    images = []
    for path in paths:
        if os.path.isfile(path):
            images.append(path)
        elif os.path.isdir(path):
            for root, dirs, files in os.walk(path):
                dirs[:] = sorted(d for d in dirs if not d.startswith("."))
                images.extend(
                    os.path.join(root, f)
                    for f in sorted(files)
                    if not f.startswith(".")
                    and os.path.splitext(f)[1].lower() in folder.IMAGE_EXTENSIONS
                )
        else:
            raise FileNotFoundError(f"no such image file or folder: {path!r}")
    return images


def load_image(path: str, size: int, channels: int) -> np.ndarray:
    """One image as evaluation sees it: float32 `[size, size, channels]` pixels in [0, 255].

    Raises:
        ValueError: the file cannot be read as an image (the message says why).
    """
    check = folder.check_image(path)
    if check.problem:
        raise ValueError(check.problem)
    small = size <= augment.SMALL_IMAGE_MAX_SIDE
    try:
        if check.tf_decodes:
            fn = preprocess.eval_fn(
                small=small, encoded=True, size=size, channels=channels, ten_crop=False
            )
            return fn(tf.io.read_file(path)).numpy()

        with Image.open(path) as image:
            pixels = np.asarray(folder.pipeline_pixels(image))
        if pixels.ndim == 2:
            pixels = pixels[..., None]
        fn = preprocess.eval_fn(
            small=small, encoded=False, size=size, channels=channels, ten_crop=False
        )
        return fn(tf.constant(pixels)).numpy()
    except (tf.errors.OpError, OSError, ValueError) as err:
        message = getattr(err, "message", None) or str(err)
        raise ValueError(f"cannot decode image ({type(err).__name__}: {message})") from None


def predict(
    predictor: Predictor, paths: Sequence[str], *, top: int = 5, batch_size: int = 32
) -> list[Prediction]:
    """The `top` classes of each image of `paths`, in order; unreadable images get their
    `error` (also printed to stderr).

    Args:
        predictor: `Predictor`. From `load_predictor`.
        paths: list of str. Image files.
        top: int. Classes per image, at most the model's. Defaults to 5.
        batch_size: int. Images per model call. Defaults to 32.

    Raises:
        ValueError: `top` or `batch_size` out of range.
    """
    classes = len(predictor.class_names)
    if isinstance(top, bool) or not isinstance(top, int) or not 1 <= top <= classes:
        raise ValueError(f"top must be an integer in [1, {classes}]; received {top!r}")
    if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1:
        raise ValueError(f"batch_size must be a positive integer; received {batch_size!r}")
    height, width, channels = predictor.model.input_shape[1:]
    size = height or width or 224
    results: list[Prediction | None] = [None] * len(paths)
    progress = keras.utils.Progbar(len(paths)) if len(paths) > PROGRESS_MIN_IMAGES else None
    batch: list[tuple[int, np.ndarray]] = []

    def flush() -> None:
        probs = np.asarray(predictor.model.predict_on_batch(np.stack([x for _, x in batch])))
        for (index, _), row in zip(batch, probs, strict=True):
            best = np.argsort(-row, kind="stable")[:top]
            top_k = [(predictor.class_names[i], float(row[i])) for i in best]
            results[index] = Prediction(paths[index], top_k)
        batch.clear()

    for index, path in enumerate(paths):
        try:
            batch.append((index, load_image(path, size, channels)))
        except ValueError as err:
            results[index] = Prediction(path, [], str(err))
            print(f"unreadable image {path}: {err}", file=sys.stderr)
        if len(batch) == batch_size:
            flush()
        if progress is not None:
            progress.update(index + 1)
    if batch:
        flush()
    return results  # type: ignore[return-value]


def csv_header(top: int) -> list[str]:
    """`path,label,score,label_2,score_2,...` up to `top`, then `error`.

    Example:
    >>> csv_header(2)
    ['path', 'label', 'score', 'label_2', 'score_2', 'error']
    """
    columns = ["path", "label", "score"]
    for k in range(2, top + 1):
        columns += [f"label_{k}", f"score_{k}"]
    return [*columns, "error"]


def write_csv(rows: Sequence[Prediction], path: str, *, top: int) -> None:
    """One line per image under `csv_header(top)`; an unreadable image has empty labels and
    scores and its `error`."""
    with open(path, "w", newline="", encoding="utf-8") as f:
        writer = csv.writer(f)
        writer.writerow(csv_header(top))
        for row in rows:
            cells: list[Any] = [row.path]
            for k in range(top):
                cells += list(row.top[k]) if k < len(row.top) else ["", ""]
            writer.writerow([*cells, row.error or ""])


def as_json(rows: Sequence[Prediction]) -> dict[str, Any]:
    """`{"images": [{"path", "predictions": [{"label", "score"}...]} or {"path", "error"}],
    "unreadable": count}`."""
    images = []
    for row in rows:
        if row.error is not None:
            images.append({"path": row.path, "error": row.error})
        else:
            predictions = [{"label": label, "score": score} for label, score in row.top]
            images.append({"path": row.path, "predictions": predictions})
    return {"images": images, "unreadable": sum(row.error is not None for row in rows)}


def format_table(rows: Sequence[Prediction]) -> list[str]:
    """The printed table: the path, then each class and score, best first.

    Example:
    >>> for line in format_table([Prediction("a.png", [("cat", 0.75), ("dog", 0.25)]),
    ...                           Prediction("b.png", [], "truncated")]):
    ...     print(line)
    path   top classes (score)
    a.png  cat (0.7500)  dog (0.2500)
    b.png  unreadable: truncated
    """
    width = max([len("path"), *(len(row.path) for row in rows)])
    lines = [f"{'path':<{width}}  top classes (score)"]
    for row in rows:
        if row.error is not None:
            found = f"unreadable: {row.error}"
        else:
            found = "  ".join(f"{label} ({score:.4f})" for label, score in row.top)
        lines.append(f"{row.path:<{width}}  {found}")
    return lines


def run_predict(
    model: str,
    images: Sequence[str],
    *,
    top: int = 5,
    output: str | None = None,
    batch_size: int = 32,
) -> list[Prediction]:
    """The `predict` command: labels the images, prints the table and a count, writes
    `output` (`.csv` or `.json`) when given; returns the rows.

    Raises:
        ValueError: an `output` that is neither `.csv` nor `.json`; see `predict`.
    """
    if output is not None and not output.lower().endswith((".csv", ".json")):
        raise ValueError(f"--output must end with .csv or .json; received {output!r}")
    paths = list_images(images)
    if not paths:
        raise ValueError(f"no images found in {list(images)}")
    predictor = load_predictor(model)
    classes = len(predictor.class_names)
    if top > classes:
        note = f"note: --top {top} is more than the model's {classes} classes; showing {classes}"
        print(note, file=sys.stderr)
        top = classes
    rows = predict(predictor, paths, top=top, batch_size=batch_size)
    print(*format_table(rows), sep="\n")
    unreadable = sum(row.error is not None for row in rows)
    print(f"{len(rows) - unreadable} images labelled, {unreadable} unreadable")
    if output is not None:
        if output.lower().endswith(".csv"):
            write_csv(rows, output, top=top)
        else:
            with open(output, "w", encoding="utf-8") as f:
                json.dump(as_json(rows), f, indent=2)
        print(f"written to {output}")
    return rows
