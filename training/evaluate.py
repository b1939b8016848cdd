"""Evaluating and exporting a saved model: single-crop and GoogLeNet's 10-crop."""

from __future__ import annotations

import os
import time

import keras
import numpy as np

import keras_inception as ki
from training import data as data_lib

CROPS = ("single", "ten")


def load_inference_model(path: str) -> keras.Model:
    """A `.keras` file, or a workdir holding `inference.keras`; auxiliary heads stripped."""
    if os.path.isdir(path):
        path = os.path.join(path, "inference.keras")
    if not os.path.exists(path):
        raise FileNotFoundError(f"model file not found: {path!r}")
    if not path.endswith(".keras"):
        raise ValueError(f"expected a .keras model file or a workdir; received {path!r}")
    return ki.strip_aux_heads(keras.saving.load_model(path, compile=False, safe_mode=True))


def _top_k_hits(probabilities: np.ndarray, labels: np.ndarray, k: int) -> int:
    k = min(k, probabilities.shape[-1])
    top = np.argsort(-probabilities, axis=-1)[:, :k]
    return int(np.sum(np.any(top == labels[:, None], axis=-1)))


def evaluate_model(model: keras.Model, dataset, *, ten_crop: bool = False) -> dict[str, float]:
    """Top-1, top-5 and cross-entropy of `model` over `(images, labels)` batches (or
    `(images, labels, weights)`, where the examples of weight 0 are left out).

    With `ten_crop`, images are `[batch, 10, H, W, C]` and the ten softmax outputs of each
    image are averaged (GoogLeNet, section 7).
    """
    hits1 = hits5 = count = 0
    nll = 0.0
    start = time.perf_counter()
    for images, labels, *weights in dataset:
        images = np.asarray(images)
        labels = np.asarray(labels).reshape(-1)
        if ten_crop:
            batch, crops = images.shape[:2]
            flat = images.reshape((batch * crops, *images.shape[2:]))
            probs = np.asarray(model.predict_on_batch(flat), dtype="float64")
            probs = probs.reshape(batch, crops, -1).mean(axis=1)
        else:
            probs = np.asarray(model.predict_on_batch(images), dtype="float64")
        if weights:  # repeats that pad the split for the replicas (`Datasets.eval_padding`)
            keep = np.asarray(weights[0]).reshape(-1) > 0
            probs, labels = probs[keep], labels[keep]
        hits1 += _top_k_hits(probs, labels, 1)
        hits5 += _top_k_hits(probs, labels, 5)
        nll -= float(np.sum(np.log(np.maximum(probs[np.arange(len(labels)), labels], 1e-12))))
        count += len(labels)
    if count == 0:
        raise ValueError("the evaluation dataset is empty")
    seconds = time.perf_counter() - start
    return {
        "top1": hits1 / count,
        "top5": hits5 / count,
        "loss": nll / count,
        "images": count,
        "images_per_sec": count / seconds,
    }


def evaluate_saved_model(
    path: str,
    *,
    dataset: str,
    data_dir: str | None = None,
    batch_size: int = 128,
    crops: tuple[str, ...] = CROPS,
) -> dict[str, dict[str, float]]:
    """Evaluates a saved model on a dataset's test split, per crop mode."""
    unknown = [c for c in crops if c not in CROPS]
    if unknown:
        raise ValueError(f"crops must be among {list(CROPS)}; received {unknown}")
    model = load_inference_model(path)
    height, _, channels = model.input_shape[1:]
    results = {}
    for crop in crops:
        datasets = data_lib.load_datasets(
            data_lib.DataConfig(
                dataset=dataset,
                data_dir=data_dir,
                image_size=height,
                channels=channels,
                batch_size=batch_size,
                augment=False,
            ),
            ten_crop=crop == "ten",
        )
        results[crop] = evaluate_model(model, datasets.test, ten_crop=crop == "ten")
        if datasets.skipped.count:
            results[crop]["skipped_files"] = datasets.skipped.count
    return results


def export_saved_model(path: str, output: str) -> str:
    """Writes a SavedModel of the inference model (auxiliary heads stripped)."""
    model = load_inference_model(path)
    model.export(output, verbose=False)
    return output
