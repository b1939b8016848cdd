"""Evaluating and exporting a saved model: single-crop, single-crop with its mirror image
("flip", test-time augmentation) and GoogLeNet's 10-crop, with a confusion matrix and
per-class accuracy (where the model is wrong)."""

from __future__ import annotations

import os
import time
from collections.abc import Sequence
from typing import Any

import keras
import numpy as np

import keras_inception as ki
from training import data as data_lib
from training.config import TrainConfig
from training.metrics import batch_sums, means
from training.plots import plot_confusion
from training.workdir import read_run_config

CROPS = ("single", "flip", "ten")


def inference_model_path(path: str) -> str:
    """The `.keras` file of `path`: itself, or a workdir's `inference.keras`.

    Raises:
        FileNotFoundError, ValueError: no such file, or not a `.keras` file.
    """
    if os.path.isdir(path):
        path = os.path.join(path, "inference.keras")
    if not os.path.exists(path):
        raise FileNotFoundError(f"model file not found: {path!r}")
    if not path.endswith(".keras"):
        raise ValueError(f"expected a .keras model file or a workdir; received {path!r}")
    return path


def load_inference_model(path: str) -> keras.Model:
    """A `.keras` file, or a workdir holding `inference.keras`; auxiliary heads stripped.

    The model takes raw pixels in [0, 255]: a file saved before models carried their
    preprocessing (no "preprocessing" layer; inputs were scaled to [-1, 1]) gets
    `keras_inception.with_preprocessing(model, "inception")` in front.
    """
    path = inference_model_path(path)
    # Files hold plain BatchNormalization; ki.load_model puts the fused kernel back.
    model = ki.strip_aux_heads(ki.load_model(path, compile=False, safe_mode=True))
    return ki.with_preprocessing(model, "inception")


def per_class_accuracy(confusion: np.ndarray) -> list[float | None]:
    """Accuracy of each true class (row) of a confusion matrix; None for a class with no
    examples.

    Example:
    >>> per_class_accuracy(np.array([[3, 1], [0, 0]]))
    [0.75, None]
    """
    confusion = np.asarray(confusion)
    totals = confusion.sum(axis=1)
    return [float(confusion[i, i] / total) if total else None for i, total in enumerate(totals)]


def evaluate_model(
    model: keras.Model, dataset, *, ten_crop: bool = False, flip: bool = False
) -> dict[str, Any]:
    """Top-1, top-5, cross-entropy and the confusion matrix of `model` over
    `(images, labels)` batches (or `(images, labels, weights)`, where the examples of
    weight 0 are left out), computed by `training.metrics` (Keras's semantics: a top-1
    tie goes to the lower class index; a label tied at the fifth place is a top-5 hit).

    With `ten_crop`, images are `[batch, 10, H, W, C]` and the ten softmax outputs of each
    image are averaged (GoogLeNet, section 7). With `flip`, each image's softmax output
    is averaged with that of its mirror image.

    Returns:
        dict. `top1`, `top5`, `loss` (means over the kept examples), `images` (their
        count), `images_per_sec`, `confusion` (list of lists of int, `[true][predicted]`,
        as many classes as the model's outputs) and `per_class` (accuracy per true label;
        None for a label with no examples).

    Raises:
        ValueError: the dataset is empty, holds a label outside the model's classes, or
            both `ten_crop` and `flip` are asked for (the ten crops hold mirror images).
    """
    if ten_crop and flip:
        raise ValueError("ten_crop already holds mirror images; received flip=True as well")
    totals: dict[str, np.ndarray] = {}
    start = time.perf_counter()
    for images, labels, *weights in dataset:
        images = np.asarray(images)
        if ten_crop:
            batch, crops = images.shape[:2]
            flat = images.reshape((batch * crops, *images.shape[2:]))
            probs = np.asarray(model.predict_on_batch(flat), dtype="float32")
            probs = probs.reshape(batch, crops, -1).mean(axis=1)
        else:
            probs = np.asarray(model.predict_on_batch(images), dtype="float32")
            if flip:  # images are [batch, H, W, C]: mirror the W axis
                mirrored = np.asarray(model.predict_on_batch(images[:, :, ::-1]), "float32")
                probs = (probs + mirrored) / 2
        num_classes = probs.shape[-1]
        _check_labels(np.asarray(labels).reshape(-1), weights, num_classes)
        # Weight 0: padding for the replicas (`training.replicas.pad_with_zero_weights`).
        sums = batch_sums(labels, probs, weights[0] if weights else None, num_classes=num_classes)
        for key, value in sums.items():
            totals[key] = totals.get(key, 0.0) + np.asarray(value, np.float64)
    if not totals:
        raise ValueError("the evaluation dataset is empty")
    seconds = time.perf_counter() - start
    result = means(totals)
    confusion = np.rint(totals["confusion"]).astype("int64")
    count = int(round(result.pop("count")))
    return {
        **result,
        "images": count,
        "images_per_sec": count / seconds,
        "per_class": per_class_accuracy(confusion),
        "confusion": confusion.tolist(),
    }


def _check_labels(labels: np.ndarray, weights: list, num_classes: int) -> None:
    """Raises ValueError for a label (of an example that counts) outside the classes."""
    if weights:
        labels = labels[np.asarray(weights[0]).reshape(-1) > 0]
    bad = labels[(labels < 0) | (labels >= num_classes)]
    if bad.size:
        raise ValueError(
            f"labels must be in [0, {num_classes}) for a model of {num_classes} "
            f"outputs; received {sorted(set(bad.tolist()))}"
        )


def format_per_class(
    per_class: Sequence[float | None],
    confusion: Sequence[Sequence[int]],
    class_names: Sequence[str],
) -> list[str]:
    """The per-class table, one line per class under a header: images, correct, accuracy
    and the class its images are most often mistaken for (`-` when never).

    Args:
        per_class: list of float or None. Accuracy per class (`evaluate_model`'s).
        confusion: list of lists of int. `[true][predicted]` counts.
        class_names: list of str. Class names, by label.

    Example:
    >>> for line in format_per_class([0.75, None], [[3, 1], [0, 0]], ["cat", "dog"]):
    ...     print(line)
    class  name  images  correct  accuracy  most confused with (count)
        0  cat        4        3    0.7500  dog (1)
        1  dog        0        0         -  -
    """
    matrix = np.asarray(confusion, dtype="int64")
    n = len(class_names)
    if matrix.shape != (n, n) or len(per_class) != n:
        raise ValueError(
            f"per_class, confusion and class_names must cover the same classes; received "
            f"{len(per_class)} accuracies, a confusion matrix of shape {matrix.shape} and "
            f"{n} class names"
        )
    width = max([len("name"), *(len(name) for name in class_names)])
    lines = [f"class  {'name':<{width}}  images  correct  accuracy  most confused with (count)"]
    for i, name in enumerate(class_names):
        errors = matrix[i].copy()
        errors[i] = 0
        worst = int(errors.argmax())
        confused = f"{class_names[worst]} ({errors[worst]})" if errors[worst] else "-"
        accuracy = "-" if per_class[i] is None else f"{per_class[i]:.4f}"
        lines.append(
            f"{i:>5}  {name:<{width}}  {matrix[i].sum():>6}  {matrix[i, i]:>7}  "
            f"{accuracy:>8}  {confused}"
        )
    return lines


def plot_dir_for(path: str) -> str:
    """Where `evaluate` writes its plots by default: the workdir when `path` is one, else
    the folder of the `.keras` file."""
    if os.path.isdir(path):
        return path
    return os.path.dirname(os.path.abspath(path))


def eval_data_config(
    path: str,
    model: keras.Model,
    *,
    dataset: str | None = None,
    data_dir: str | None = None,
    batch_size: int | None = None,
) -> tuple[data_lib.DataConfig, TrainConfig | None, list[str]]:
    """The test data to evaluate the model at `path` on: `(DataConfig, the run's
    TrainConfig or None, notes)`.

    For a training workdir, its run's config.json gives the dataset, data_dir, seed,
    hold-out fraction, train limit and batch size, so that the test images are the run's
    own (a flat image folder's hold-out depends on the seed: another one would overlap
    the training images); `dataset` and `data_dir` override them, and each override is
    named in a note. The image size and channels are the model's input.

    Raises:
        ValueError: a `.keras` file (no run) and no `dataset`.
    """
    run = read_run_config(path) if os.path.isdir(path) else None
    notes = []
    if run is None and dataset is None:
        raise ValueError(
            f"{path!r} is not a training workdir with a config.json, so the data is unknown: "
            "pass --dataset (and --data-dir)"
        )
    if run is not None:
        for name, value in (("dataset", dataset), ("data_dir", data_dir)):
            if value is not None and value != getattr(run, name):
                notes.append(
                    f"note: --{name.replace('_', '-')} {value} differs from the run's "
                    f"{getattr(run, name)!r}: these are not the run's test images"
                )
        if not run.flip:
            notes.append(
                "note: the run trained with --no-flip, so mirror images (flip and ten crops) "
                "are not images of its classes"
            )
    height, _, channels = model.input_shape[1:]
    base = run or TrainConfig()
    config = data_lib.DataConfig(
        dataset=dataset or base.dataset,
        data_dir=data_dir if data_dir is not None else (run.data_dir if run else None),
        image_size=height,
        channels=channels,
        batch_size=batch_size or (run.batch_size if run else 128),
        train_limit=base.train_limit if run else None,
        val_fraction=base.val_fraction,
        seed=base.seed,
        augment=False,
        flip=base.flip,
    )
    return config, run, notes


def evaluate_saved_model(
    path: str,
    *,
    dataset: str | None = None,
    data_dir: str | None = None,
    batch_size: int | None = None,
    crops: tuple[str, ...] | None = None,
    plot_dir: str | None = None,
) -> dict[str, dict[str, Any]]:
    """Evaluates a saved model on its test images, per crop mode.

    `path` is a training workdir (its inference.keras, on its run's test images:
    `eval_data_config`) or a `.keras` file (on `dataset`'s test split). `crops` defaults
    to single and ten, or single alone for a run trained without flips.

    Returns one `evaluate_model` dict per crop, with the dataset's `class_names` added
    (and `skipped_files` when images could not be read, `non_image_files` when files
    that are not images were left out). Writes the confusion matrix of
    each crop mode to `plot_dir/confusion_<crop>.png` (default `plot_dir_for(path)`) and
    adds its path as `confusion_plot`.
    """
    if crops is not None:
        unknown = [c for c in crops if c not in CROPS]
        if unknown:
            raise ValueError(f"crops must be among {list(CROPS)}; received {unknown}")
    model = load_inference_model(path)
    data_config, run, notes = eval_data_config(
        path, model, dataset=dataset, data_dir=data_dir, batch_size=batch_size
    )
    if crops is None:
        crops = ("single", "ten") if run is None or run.flip else ("single",)
    plot_dir = plot_dir or plot_dir_for(path)
    try:  # before the evaluation: a bad folder fails at once
        os.makedirs(plot_dir, exist_ok=True)
    except OSError as err:
        raise ValueError(f"cannot write plots to {plot_dir!r}: {err}") from None
    for note in notes:
        print(note)
    results = {}
    for crop in crops:
        datasets = data_lib.load_datasets(data_config, ten_crop=crop == "ten")
        result = evaluate_model(model, datasets.test, ten_crop=crop == "ten", flip=crop == "flip")
        result["class_names"] = list(datasets.class_names)
        if datasets.skipped.count:
            result["skipped_files"] = datasets.skipped.count
        if datasets.skipped.non_images:
            result["non_image_files"] = len(datasets.skipped.non_images)
        result["confusion_plot"] = os.path.join(plot_dir, f"confusion_{crop}.png")
        plot_confusion(
            result["confusion"],
            result["class_names"],
            result["confusion_plot"],
            title=f"{data_config.dataset} test, {crop} crop: top-1 {result['top1']:.4f}",
        )
        results[crop] = result
    return results
