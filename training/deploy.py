"""`python -m training export`: a trained model as a SavedModel, ONNX, LiteRT (float or
int8) or OpenVINO file, checked against Keras after writing, every time.

The conversion is Keras's own (`Model.export(format=...)`); this module gives it the
input contract, runs the written file with its own runtime (`training.runtimes`) on real
images, and writes what a deployment needs beside the file:

    DIR/model.onnx | model.tflite | model.xml + model.bin | saved_model.pb + variables/
    DIR/labels.txt       one class name a line, by label
    DIR/metadata.json    model, classes, input, preprocessing, weights, versions, check

Every export takes raw pixels: NHWC at the run's image size, values 0-255, float32 (the
int8 LiteRT file: uint8). The normalization the weights expect is inside the model.

The check runs `CHECK_IMAGES` test images of the run (random images when the run's data
is absent or the model is a bare `.keras` file) through Keras and through the file: a
float export must give Keras's probabilities to `TOLERANCE` (max abs difference), or the
command fails naming the difference. `--int8` is LiteRT post-training full-integer
quantization calibrated on training images; its check reports top-1 agreement with float
Keras and the accuracy drop on the test split (up to `INT8_CHECK_LIMIT` images).
"""

from __future__ import annotations

import json
import os
import platform
import tempfile
from importlib import metadata
from typing import Any

import keras
import numpy as np
import tensorflow as tf

import keras_inception as ki
from keras_inception.metadata import write_labels
from training import data as data_lib
from training.evaluate import eval_data_config, inference_model_path, load_inference_model
from training.runtimes import Predict, check_runtime, load_predict
from training.workdir import read_run_config

FORMATS = ("saved_model", "onnx", "litert", "openvino")
# The file each format writes inside the export folder (a SavedModel is the folder).
MODEL_FILES = {
    "saved_model": "",
    "onnx": "model.onnx",
    "litert": "model.tflite",
    "openvino": "model.xml",
}
KERAS_FORMATS = {"saved_model": "tf_saved_model"}
TOLERANCE = 1e-4
CHECK_IMAGES = 64
CALIBRATION_IMAGES = 256
INT8_CHECK_LIMIT = 10_000
INPUT_NAME = "images"


def default_output(path: str, fmt: str, *, int8: bool = False) -> str:
    """`WORKDIR/export` for a SavedModel (as `train` writes it), `WORKDIR/export-FMT`
    (`export-litert-int8`) for the others.

    Raises:
        ValueError: `path` is a model file: it needs an explicit output folder.

    >>> default_output("runs/demo", "litert", int8=True)
    'runs/demo/export-litert-int8'
    """
    if not os.path.isdir(path):
        raise ValueError(f"pass --output: {path!r} is a model file, not a training workdir")
    name = "export" if fmt == "saved_model" else f"export-{fmt}" + ("-int8" if int8 else "")
    return os.path.join(path, name)


def input_signature(model: keras.Model) -> list:
    """The exports' one input: raw pixels, any batch, the model's image size, float32.
    (A model of several inputs, such as `describe_failure`'s one-layer probes, gets one
    spec each, as a list: Keras's structure for a model called on a list.)"""
    if len(model.inputs) > 1:
        return [[tf.TensorSpec((None, *t.shape[1:]), t.dtype) for t in model.inputs]]
    return [tf.TensorSpec((None, *model.input_shape[1:]), tf.float32, name=INPUT_NAME)]


def int8_options(calibration: np.ndarray) -> dict[str, Any]:
    """`TFLiteConverter` settings of post-training full-integer quantization: every op
    int8, calibrated on `calibration` (raw-pixel images), uint8 pixels in, float32
    probabilities out."""

    def representative_dataset():
        for image in calibration:
            yield [image[None].astype(np.float32)]

    return {
        "optimizations": [tf.lite.Optimize.DEFAULT],
        "representative_dataset": representative_dataset,
        "target_spec": {"supported_ops": [tf.lite.OpsSet.TFLITE_BUILTINS_INT8]},
        "inference_input_type": tf.uint8,
        "inference_output_type": tf.float32,
    }


def write_model_file(
    model: keras.Model, fmt: str, folder: str, *, calibration: np.ndarray | None = None
) -> str:
    """Writes `model` in `fmt` into `folder` (int8 LiteRT when `calibration` is given);
    returns the file's path.

    Raises:
        ValueError: an unknown format, or calibration for another format than litert.
        ImportError: the format's runtime is not installed.
        RuntimeError: Keras's exporter failed; names the first layer that fails alone.
    """
    if fmt not in FORMATS:
        raise ValueError(f"unknown export format {fmt!r}; available: {list(FORMATS)}")
    if calibration is not None and fmt != "litert":
        raise ValueError(f"int8 quantization is for --format litert; received --format {fmt}")
    check_runtime(fmt)
    os.makedirs(folder, exist_ok=True)
    path = os.path.join(folder, MODEL_FILES[fmt]) if MODEL_FILES[fmt] else folder
    options = int8_options(calibration) if calibration is not None else {}
    try:
        _export(model, fmt, path, **options)
    except Exception as err:  # noqa: BLE001 (any converter error: find the layer)
        raise RuntimeError(describe_failure(model, fmt, err)) from err
    return path


def _export(model: keras.Model, fmt: str, path: str, **options: Any) -> None:
    model.export(
        path,
        format=KERAS_FORMATS.get(fmt, fmt),
        verbose=False,
        input_signature=input_signature(model),
        **options,
    )


def describe_failure(model: keras.Model, fmt: str, err: Exception) -> str:
    """What failed: the first layer kind of `model` that does not export to `fmt` alone
    (one layer in a model of its own), or, when each does, the model as a whole."""
    reason = str(err).strip().splitlines()[-1] if str(err).strip() else type(err).__name__
    seen = set()
    with tempfile.TemporaryDirectory() as folder:
        for layer in model.layers:
            if isinstance(layer, keras.layers.InputLayer) or type(layer) in seen:
                continue
            seen.add(type(layer))
            inputs = keras.tree.map_structure(
                lambda t: keras.Input(t.shape[1:], dtype=t.dtype), layer.input
            )
            probe = keras.Model(inputs, layer(inputs))
            target = os.path.join(folder, f"{len(seen)}_{MODEL_FILES[fmt] or 'sm'}")
            try:
                _export(probe, fmt, target)
            except Exception as layer_err:  # noqa: BLE001
                last = str(layer_err).strip().splitlines() or [type(layer_err).__name__]
                return (
                    f"the {fmt} export fails on layer {layer.name!r} "
                    f"({type(layer).__name__}): {last[-1]}"
                )
    return f"the {fmt} export of {model.name!r} failed (every layer exports alone): {reason}"


def run_data(path: str, model: keras.Model) -> tuple[data_lib.Datasets | None, str]:
    """The run's datasets (unaugmented) and its dataset's name; or None and why not (a
    bare `.keras` file, or the run's data is gone). Loaded once per export."""
    try:
        config, _, _ = eval_data_config(path, model)
        return data_lib.load_datasets(config), config.dataset
    except (ValueError, FileNotFoundError) as err:
        return None, str(err)


def check_data(
    data: tuple[data_lib.Datasets | None, str],
    model: keras.Model,
    *,
    split: str,
    count: int,
    random_count: int | None = None,
    seed: int = 0,
) -> tuple[np.ndarray, np.ndarray | None, str]:
    """Up to `count` images of `data`'s (`run_data`) `split` ("train" or "test") as uint8
    raw pixels, their labels, and where they came from; `random_count` (default `count`)
    random images, without labels, when there are no datasets."""
    datasets, about = data
    if datasets is None:
        count = random_count or count
        generator = np.random.default_rng(seed)
        shape = (count, *model.input_shape[1:])
        images = generator.integers(0, 256, shape, dtype=np.uint8)
        return images, None, f"{count} random images ({about})"
    images, labels, taken = [], [], 0
    for batch in getattr(datasets, split):
        images.append(batch[0].numpy())
        labels.append(batch[1].numpy())
        taken += len(images[-1])
        if taken >= count:
            break
    pixels = np.clip(np.round(np.concatenate(images)[:count]), 0, 255).astype(np.uint8)
    return pixels, np.concatenate(labels)[:count], f"{len(pixels)} {split} images of {about}"


def in_batches(predict: Predict, images: np.ndarray, dtype: type, size: int = 64) -> np.ndarray:
    """`predict` over `images` as `dtype`, `size` at a time, concatenated."""
    batches = (images[i : i + size].astype(dtype) for i in range(0, len(images), size))
    return np.concatenate([predict(batch) for batch in batches])


def keras_probabilities(model: keras.Model, images: np.ndarray) -> np.ndarray:
    """The model's outputs on `images`, eagerly (no graph to trace)."""
    return in_batches(
        lambda batch: keras.ops.convert_to_numpy(model(batch, training=False)), images, np.float32
    )


def check_float(fmt: str, file: str, model: keras.Model, images: np.ndarray, source: str) -> dict:
    """Runs `images` through the file and Keras: their max abs difference, whether it is
    within `TOLERANCE`, and their top-1 agreement."""
    got = in_batches(load_predict(fmt, file), images, np.float32)
    expected = keras_probabilities(model, images)
    difference = float(np.max(np.abs(got - expected)))
    return {
        "images": source,
        "max_abs_difference": difference,
        "tolerance": TOLERANCE,
        "top1_agreement": float(np.mean(got.argmax(-1) == expected.argmax(-1))),
        "passed": difference <= TOLERANCE,
    }


def check_int8(
    file: str, model: keras.Model, images: np.ndarray, labels: np.ndarray | None, source: str
) -> dict:
    """Top-1 agreement of the int8 file with float Keras, and the accuracy drop when
    `labels` are known."""
    got = in_batches(load_predict("litert", file), images, np.uint8).argmax(-1)
    expected = keras_probabilities(model, images).argmax(-1)
    check = {"images": source, "top1_agreement": float(np.mean(got == expected))}
    if labels is not None:
        check["keras_top1"] = float(np.mean(expected == labels))
        check["int8_top1"] = float(np.mean(got == labels))
        check["top1_drop_points"] = 100 * (check["keras_top1"] - check["int8_top1"])
    return check


def _versions(fmt: str) -> dict[str, str]:
    versions = {
        "python": platform.python_version(),
        "keras": keras.__version__,
        "tensorflow": tf.__version__,
    }
    runtime = {"onnx": "onnxruntime", "litert": "ai_edge_litert", "openvino": "openvino"}.get(fmt)
    if runtime:
        package = {"ai_edge_litert": "ai-edge-litert"}.get(runtime, runtime)
        versions[runtime] = metadata.version(package)
    return versions


def describe_model(path: str, model: keras.Model) -> dict[str, Any]:
    """Model name, weight source and preprocessing of the model at `path`."""
    run = read_run_config(path) if os.path.isdir(path) else None
    weights = {"file": os.path.abspath(inference_model_path(path))}
    if run is not None:
        weights.update(workdir=os.path.abspath(path), init_weights=run.init_weights)
    return {
        "model": run.model if run is not None else model.name,
        "weights": weights,
        "preprocessing": ki.preprocessing_of(model),
    }


def export(
    path: str,
    fmt: str = "saved_model",
    output: str | None = None,
    *,
    int8: bool = False,
    calibration_images: int = CALIBRATION_IMAGES,
    check_images: int = CHECK_IMAGES,
    model: keras.Model | None = None,
) -> dict[str, Any]:
    """Exports the inference model of `path` (a workdir or a `.keras` file) to `output`,
    checks the file with its runtime, and writes labels.txt and metadata.json; returns
    the metadata.

    Args:
        path: str. A training workdir or a `.keras` file.
        fmt: str. One of `FORMATS`. Defaults to "saved_model".
        output: str or None. The export folder (default: `default_output`).
        int8: bool. LiteRT full-integer quantization (`fmt` "litert" only).
        calibration_images: int. Training images that calibrate int8.
        check_images: int. Test images of the float check.
        model: keras.Model or None. The inference model of `path`, when the caller has it
            loaded already (`training.evaluate.load_inference_model(path)`).

    Raises:
        ValueError, FileNotFoundError: bad arguments, no model.
        ImportError: the format's runtime is missing.
        RuntimeError: the export failed, or a float file differs from Keras past
            `TOLERANCE` (the folder is kept, its metadata.json records the check).
    """
    if fmt not in FORMATS:
        raise ValueError(f"unknown export format {fmt!r}; available: {list(FORMATS)}")
    if int8 and fmt != "litert":
        raise ValueError(
            f"--int8 is LiteRT quantization: use --format litert; received --format {fmt}"
        )
    for name, value in (("calibration_images", calibration_images), ("check_images", check_images)):
        if value < 1:
            raise ValueError(f"{name} must be a positive integer; received {value!r}")
    check_runtime(fmt)
    output = output or default_output(path, fmt, int8=int8)
    model = model or load_inference_model(path)
    data = run_data(path, model)
    calibration = None
    if int8:
        calibration, _, calibration_source = check_data(
            data, model, split="train", count=calibration_images
        )
    file = write_model_file(model, fmt, output, calibration=calibration)
    names = ki.class_names_of(inference_model_path(path))
    if names is not None:
        write_labels(output, names)
    metadata = {
        **describe_model(path, model),
        "format": fmt + ("-int8" if int8 else ""),
        "output": output,
        "file": os.path.relpath(file, output) if file != output else ".",
        "classes": int(model.output_shape[-1]),
        "class_names": names,
        "input": {
            "name": INPUT_NAME,
            "shape": [None, *model.input_shape[1:]],
            "dtype": "uint8" if int8 else "float32",
            "layout": "NHWC",
            "range": [0, 255],
        },
        "versions": _versions(fmt),
    }
    if int8:
        images, labels, source = check_data(
            data, model, split="test", count=INT8_CHECK_LIMIT, random_count=check_images
        )
        metadata["calibration"] = calibration_source
        metadata["check"] = check_int8(file, model, images, labels, source)
    else:
        images, _, source = check_data(data, model, split="test", count=check_images)
        metadata["check"] = check_float(fmt, file, model, images, source)
    with open(os.path.join(output, "metadata.json"), "w", encoding="utf-8") as f:
        json.dump(metadata, f, indent=2)
    check = metadata["check"]
    if not int8 and not check["passed"]:
        raise RuntimeError(
            f"the {fmt} file {file} differs from Keras: max abs difference "
            f"{check['max_abs_difference']:.3g} over {check['images']} (tolerance {TOLERANCE:g})"
        )
    return metadata


def format_check(metadata: dict[str, Any]) -> str:
    """One line: what the check measured."""
    check = metadata["check"]
    if "max_abs_difference" in check:
        return (
            f"check: {check['images']}: max abs difference from Keras "
            f"{check['max_abs_difference']:.2g} (tolerance {check['tolerance']:g}), "
            f"top-1 agreement {100 * check['top1_agreement']:.1f}%"
        )
    line = f"check: {check['images']}: top-1 agreement with float Keras {100 * check['top1_agreement']:.2f}%"
    if "top1_drop_points" in check:
        line += (
            f", top-1 {100 * check['int8_top1']:.2f}% against Keras's "
            f"{100 * check['keras_top1']:.2f}% (drop {check['top1_drop_points']:.2f} points)"
        )
    return line
