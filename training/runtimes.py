"""Each export format run by its own runtime: a `predict(images) -> probabilities`
function per file, for the export check (`training.deploy`) and `benchmarks/inference.py`.

- `saved_model`: TensorFlow (`tf.saved_model.load`, the `serve` endpoint);
- `onnx`: ONNX Runtime's CPU provider;
- `litert`: `ai_edge_litert.interpreter.Interpreter` (XNNPACK, LiteRT's default CPU path);
- `openvino`: OpenVINO's CPU plugin, at float32 unless `precision="bf16"` (OpenVINO picks
  bf16 by itself on CPUs with AVX512-BF16 or AMX, which a check at 1e-4 cannot pass).

The runtimes are the `deploy` extra (`pip install 'keras-inception[deploy]'`); a missing
one is named with the command that installs it.

Example:
>>> RUNTIME_PACKAGES["litert"]
('ai_edge_litert',)
"""

from __future__ import annotations

import importlib.util
import os
from collections.abc import Callable

import numpy as np

Predict = Callable[[np.ndarray], np.ndarray]

# The module each format's runtime (and, for ONNX, Keras's exporter) imports.
RUNTIME_PACKAGES = {
    "saved_model": ("tensorflow",),
    "onnx": ("onnxruntime", "tf2onnx"),
    "litert": ("ai_edge_litert",),
    "openvino": ("openvino",),
}
PRECISIONS = ("fp32", "bf16")


def check_runtime(fmt: str) -> None:
    """Raises ValueError for an unknown format and ImportError naming the missing
    packages (and the extra that installs them) for a format whose runtime is absent."""
    if fmt not in RUNTIME_PACKAGES:
        raise ValueError(f"unknown export format {fmt!r}; available: {sorted(RUNTIME_PACKAGES)}")
    missing = [name for name in RUNTIME_PACKAGES[fmt] if importlib.util.find_spec(name) is None]
    if missing:
        raise ImportError(
            f"the {fmt} export needs {', '.join(missing)}: pip install 'keras-inception[deploy]'"
        )


def load_predict(
    fmt: str, path: str | os.PathLike, *, precision: str = "fp32", threads: int | None = None
) -> Predict:
    """A function running the exported model at `path` with `fmt`'s runtime.

    Args:
        fmt: str. One of `RUNTIME_PACKAGES`.
        path: str. The file (`.onnx`, `.tflite`, `.xml`) or SavedModel folder.
        precision: str. "fp32", or "bf16" (OpenVINO only). Defaults to "fp32".
        threads: int or None. Intra-op threads (None: the runtime's default, every core).

    Returns:
        A function from a batch of images (NHWC, the dtype the export takes) to the
        model's outputs as a numpy array.

    Raises:
        FileNotFoundError: no file at `path`.
        ValueError: an unknown format or precision.
    """
    check_runtime(fmt)
    path = os.fspath(path)
    if not os.path.exists(path):
        raise FileNotFoundError(f"exported model not found: {path!r}")
    if precision not in PRECISIONS or (precision == "bf16" and fmt != "openvino"):
        raise ValueError(
            f"precision must be one of {PRECISIONS} (bf16: openvino only); received "
            f"{precision!r} for {fmt}"
        )
    loader = {
        "saved_model": _saved_model,
        "onnx": _onnx,
        "litert": _litert,
        "openvino": _openvino,
    }[fmt]
    return loader(path, precision=precision, threads=threads)


def _saved_model(path: str, *, precision: str, threads: int | None) -> Predict:
    import tensorflow as tf

    serve = tf.saved_model.load(path).signatures["serving_default"]

    def predict(images: np.ndarray) -> np.ndarray:
        (output,) = serve(tf.constant(images)).values()
        return output.numpy()

    return predict


def _onnx(path: str, *, precision: str, threads: int | None) -> Predict:
    import onnxruntime

    options = onnxruntime.SessionOptions()
    if threads:
        options.intra_op_num_threads = threads
    session = onnxruntime.InferenceSession(path, options, providers=["CPUExecutionProvider"])
    name = session.get_inputs()[0].name

    def predict(images: np.ndarray) -> np.ndarray:
        return session.run(None, {name: images})[0]

    return predict


def _litert(path: str, *, precision: str, threads: int | None) -> Predict:
    from ai_edge_litert.interpreter import Interpreter

    interpreter = Interpreter(model_path=path, num_threads=threads or os.cpu_count())
    (source,) = interpreter.get_input_details()
    shape = [None]

    def predict(images: np.ndarray) -> np.ndarray:
        if shape[0] != images.shape:  # a new batch size: resize once, then reuse
            interpreter.resize_tensor_input(source["index"], images.shape)
            interpreter.allocate_tensors()
            shape[0] = images.shape
        interpreter.set_tensor(source["index"], images)
        interpreter.invoke()
        (target,) = interpreter.get_output_details()
        return interpreter.get_tensor(target["index"]).copy()

    return predict


def _openvino(path: str, *, precision: str, threads: int | None) -> Predict:
    import openvino

    config = {"INFERENCE_PRECISION_HINT": "bf16" if precision == "bf16" else "f32"}
    if threads:
        config["INFERENCE_NUM_THREADS"] = threads
    compiled = openvino.Core().compile_model(path, "CPU", config)
    request = compiled.create_infer_request()

    def predict(images: np.ndarray) -> np.ndarray:
        return np.array(request.infer([images])[compiled.output(0)])

    return predict
