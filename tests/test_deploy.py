"""`python -m training export --format ...` (training.deploy, training.runtimes): every
format of every model, checked by its own runtime; int8; the errors."""

import json
import os
import pathlib

import keras
import numpy as np
import pytest
from PIL import Image

import keras_inception as ki
from training import deploy, runtimes
from training.cli import main as cli_main
from training.evaluate import load_inference_model

# Each family at a tiny width and its smallest input (GoogLeNet: `make demo`'s shape and
# stem): the exports' costs are the converters' fixed costs, not the model's size.
MODELS = {
    "googlenet": (28, 1, {"stem": "small_pool"}),
    "inception_v2": (75, 3, {}),
    "inception_v3": (75, 3, {}),
}
FLOAT_FORMATS = ("saved_model", "onnx", "litert", "openvino")


class _Lazy(dict):
    """A dict that makes each missing value with `make(key)` on first use."""

    def __init__(self, make):
        super().__init__()
        self._make = make

    def __missing__(self, key):
        self[key] = value = self._make(key)
        return value


@pytest.fixture(scope="module")
def model_files(tmp_path_factory):
    """A `.keras` file per model (raw pixels in, Inception preprocessing, 7 classes),
    GoogLeNet's with class names; each written when a test first asks for it."""
    folder = tmp_path_factory.mktemp("models")

    def write(name):
        size, channels, options = MODELS[name]
        model = ki.get_model(
            name,
            weights=None,
            input_shape=(size, size, channels),
            classes=7,
            width_multiplier=0.125,
            min_depth=4,
            include_preprocessing="inception",
            **options,
        )
        path = str(folder / f"{name}.keras")
        model.save(path)
        if name == "googlenet":
            ki.write_class_names(path, [f"class {k}" for k in range(7)])
        return path

    return _Lazy(write)


@pytest.fixture(scope="module")
def loaded(model_files):
    """The inference model of each file, loaded once (as `export` loads it)."""
    return _Lazy(lambda name: load_inference_model(model_files[name]))


@pytest.fixture(scope="module")
def exported(model_files, loaded, tmp_path_factory):
    """`exported(name, fmt, int8=False)`: the export's folder and metadata, written once
    per module, in `ROOT/runs/demo/export-FMT` (GoogLeNet: docs/deploy.md's paths)."""
    root = tmp_path_factory.mktemp("exports")
    done = {}

    def export(name, fmt, *, int8=False):
        if (name, fmt, int8) not in done:
            folder = "export-" + fmt + ("-int8" if int8 else "")
            output = str(root / ("runs/demo" if name == "googlenet" else name) / folder)
            metadata = deploy.export(
                model_files[name], fmt, output, int8=int8, calibration_images=16,
                check_images=8, model=loaded[name],
            )  # fmt: skip
            done[name, fmt, int8] = output, metadata
        return done[name, fmt, int8]

    export.root = root
    return export


# GoogLeNet in every format in `make test`; BN-Inception and InceptionV3 in every format
# in `make test-large` (5-20 s an export on 2 cores: the converters' costs grow with the layer count,
# not the width) in `make test-large`, so that the suite stays under 8 minutes.
# The SavedModel of a real run, checked on its test images, is test_training's
# test_cli_export.
FAST = {("googlenet", fmt) for fmt in ("onnx", "litert", "openvino")}
MATRIX = [
    pytest.param(name, fmt, marks=() if (name, fmt) in FAST else pytest.mark.large)
    for name in sorted(MODELS)
    for fmt in FLOAT_FORMATS
]


@pytest.mark.parametrize(("name", "fmt"), MATRIX)
def test_every_format_of_every_model_equals_keras(exported, loaded, name, fmt):
    output, metadata = exported(name, fmt)
    check = metadata["check"]
    assert check["passed"] and check["max_abs_difference"] <= 1e-4
    assert check["images"].startswith("8 random images")
    size, channels, _ = MODELS[name]
    assert metadata["input"] == {
        "name": "images",
        "shape": [None, size, size, channels],
        "dtype": "float32",
        "layout": "NHWC",
        "range": [0, 255],
    }
    assert (metadata["format"], metadata["classes"], metadata["preprocessing"]) == (
        fmt,
        7,
        "inception",
    )
    with open(os.path.join(output, "metadata.json")) as f:
        assert json.load(f) == json.loads(json.dumps(metadata))
    # The file runs on its own, on raw pixels, without Keras's help.
    file = os.path.join(output, metadata["file"])
    images = np.random.default_rng(1).integers(0, 256, (3, size, size, channels))
    expected = keras.ops.convert_to_numpy(loaded[name](images.astype("float32")))
    got = runtimes.load_predict(fmt, file)(images.astype("float32"))
    np.testing.assert_allclose(got, expected, atol=1e-4)
    has_labels = os.path.exists(os.path.join(output, "labels.txt"))
    assert has_labels == (name == "googlenet")


def test_int8_litert_takes_uint8_pixels_and_reports_agreement(exported):
    output, metadata = exported("googlenet", "litert", int8=True)
    assert metadata["format"] == "litert-int8" and metadata["input"]["dtype"] == "uint8"
    assert metadata["calibration"].startswith("16 random images")
    check = metadata["check"]
    assert set(check) == {"images", "top1_agreement"}  # no labels: no accuracy drop
    from ai_edge_litert.interpreter import Interpreter

    interpreter = Interpreter(model_path=os.path.join(output, "model.tflite"))
    (source,) = interpreter.get_input_details()
    assert source["dtype"] == np.uint8 and source["quantization"] == (1.0, 0)  # pixels as they are
    operations = {op["op_name"] for op in interpreter._get_ops_details()}
    assert "CONV_2D" in operations and not any(op.startswith("Flex") for op in operations)
    with open(os.path.join(output, "labels.txt")) as f:
        assert f.read().splitlines() == [f"class {k}" for k in range(7)]


def test_a_file_that_differs_from_keras_fails_naming_the_difference(
    model_files, loaded, tmp_path, monkeypatch
):
    real = runtimes.load_predict

    def off_by(fmt, path, **kwargs):
        predict = real(fmt, path, **kwargs)
        return lambda images: predict(images) + 3e-3

    monkeypatch.setattr(deploy, "load_predict", off_by)
    output = str(tmp_path / "onnx")
    with pytest.raises(
        RuntimeError, match=r"differs from Keras: max abs difference 0\.003 over 8 random"
    ):
        deploy.export(
            model_files["googlenet"],
            "onnx",
            output,
            check_images=8,
            model=loaded["googlenet"],
        )
    with open(os.path.join(output, "metadata.json")) as f:
        assert json.load(f)["check"]["passed"] is False


def test_a_failing_export_names_the_layer(loaded, tmp_path, monkeypatch):
    real = deploy._export

    def no_dense(model, fmt, path, **options):
        if any(isinstance(layer, keras.layers.Dense) for layer in model.layers):
            raise ValueError("op MatMul:\nno converter for MatMul")
        return real(model, fmt, path, **options)

    monkeypatch.setattr(deploy, "_export", no_dense)
    with pytest.raises(RuntimeError) as info:
        deploy.write_model_file(loaded["googlenet"], "onnx", str(tmp_path))
    assert str(info.value) == (
        "the onnx export fails on layer 'predictions' (Dense): no converter for MatMul"
    )


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"fmt": "tflite"}, "unknown export format 'tflite'"),
        ({"fmt": "onnx", "int8": True}, "use --format litert; received --format onnx"),
        ({"fmt": "onnx", "check_images": 0}, "check_images must be a positive integer; received 0"),
    ],
)
def test_bad_arguments_are_named(model_files, kwargs, message, tmp_path):
    with pytest.raises(ValueError, match=message):
        deploy.export(model_files["googlenet"], output=str(tmp_path), **kwargs)
    assert not os.listdir(tmp_path)


def test_a_model_file_needs_an_output_folder(model_files):
    with pytest.raises(ValueError, match="pass --output: .*googlenet.keras' is a model file"):
        deploy.export(model_files["googlenet"], "onnx")


def test_a_missing_runtime_names_the_extra(monkeypatch):
    real = runtimes.importlib.util.find_spec
    monkeypatch.setattr(
        runtimes.importlib.util,
        "find_spec",
        lambda name: None if name == "openvino" else real(name),
    )
    with pytest.raises(
        ImportError,
        match=r"openvino export needs openvino: pip install 'keras-inception\[deploy\]'",
    ):
        runtimes.check_runtime("openvino")
    runtimes.check_runtime("onnx")


def test_bf16_is_openvino_only(tmp_path):
    with pytest.raises(ValueError, match="received 'bf16' for onnx"):
        runtimes.load_predict("onnx", tmp_path, precision="bf16")


def _python_blocks(path):
    text = pathlib.Path(path).read_text()
    return [block.split("```", 1)[0] for block in text.split("```python\n")[1:]]


def test_the_deploy_docs_snippets_run(exported, monkeypatch):
    """docs/deploy.md's Python, in order, on a demo-shaped model's exports: each snippet
    labels the same image with the same class."""
    for fmt, int8 in (("onnx", False), ("litert", True), ("openvino", False)):
        exported("googlenet", fmt, int8=int8)
    monkeypatch.chdir(exported.root)
    rng = np.random.default_rng(0)
    Image.fromarray(rng.integers(0, 256, (40, 30), dtype=np.uint8)).save("shoe.png")
    blocks = _python_blocks(os.path.join(os.path.dirname(__file__), "..", "docs", "deploy.md"))
    assert len(blocks) == 3
    printed = []
    namespace = {"print": printed.append}
    for block in blocks:
        exec(compile(block, "docs/deploy.md", "exec"), namespace)
    assert len(printed) == 3 and printed[0] in {f"class {k}" for k in range(7)}
    assert printed[2] == printed[0]  # OpenVINO float labels as ONNX Runtime does


def test_cli_flags_reach_the_export_and_the_check_is_printed(monkeypatch, capsys):
    """The command line's part (the export itself: the tests above, and the SavedModel of
    a real run in test_training's test_cli_export)."""
    seen = {}

    def fake_export(path, fmt, output, **kwargs):
        seen.update(path=path, fmt=fmt, output=output, **kwargs)
        check = {"images": "4 random images", "top1_agreement": 0.75}
        return {"format": "litert-int8", "output": "out", "check": check}

    monkeypatch.setattr(deploy, "export", fake_export)
    argv = ["export", "m.keras", "--format", "litert", "--int8", "--output", "out"]
    assert cli_main([*argv, "--calibration-images", "8", "--check-images", "4"]) == 0
    assert seen == {
        "path": "m.keras", "fmt": "litert", "output": "out", "int8": True,
        "calibration_images": 8, "check_images": 4,
    }  # fmt: skip
    assert capsys.readouterr().out.splitlines() == [
        "litert-int8 export written to out",
        "check: 4 random images: top-1 agreement with float Keras 75.00%",
    ]
