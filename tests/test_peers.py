"""benchmarks/peers.py: the torch twins are our models (`benchmarks.keras_to_torch`), and
the script runs end to end.

The torch side runs in its own process (`benchmarks/torch_worker.py`): torch and
TensorFlow in one process crash after a torch forward pass. Each test starts TensorFlow
and a torch process, and the script's run traces two Keras training graphs, so all are
`large` (`make test-large`). The driver's helpers that need no torch are tested in
tests/test_benchmarks.py.
"""

import importlib.util
import math
import os
from pathlib import Path

import pytest

pytest.importorskip("torch", reason="the twins are torch modules")

import keras  # noqa: E402
import numpy as np  # noqa: E402

import keras_inception  # noqa: E402
from benchmarks import common, peers  # noqa: E402
from benchmarks import keras_to_torch as translator  # noqa: E402
from benchmarks.torch_worker import LAYOUTS, TorchPeer  # noqa: E402

pytestmark = pytest.mark.large


@pytest.fixture(scope="module")
def peer():
    with TorchPeer() as torch_peer:
        yield torch_peer


def randomize_batch_norm(model: keras.Model, x: np.ndarray, seed: int) -> None:
    """Batch norm far from the identity, its moving statistics those of `x` (so that
    activations keep their scale through the network and outputs depend on the images)."""
    rng = np.random.default_rng(seed)
    found = [layer for layer in model.layers if isinstance(layer, keras.layers.BatchNormalization)]
    for layer in found:
        n = layer.gamma.shape[0]
        layer.gamma.assign(rng.uniform(0.5, 1.5, n).astype("float32"))
        layer.beta.assign(rng.normal(0, 0.2, n).astype("float32"))
        layer.momentum = 0.0  # one training-mode call sets the moving statistics
    model(x, training=True)
    for layer in found:
        layer.momentum = 0.99


def twin_outputs(peer, model: keras.Model, x: np.ndarray, tmp_path: Path) -> tuple[dict, dict]:
    """The twin's outputs with `model`'s weights on `x` (NHWC), and the `infer` reply."""
    weights, inputs, outputs = (tmp_path / f"{n}.npz" for n in ("weights", "inputs", "outputs"))
    translator.export_weights(model, weights)
    np.savez(inputs, x=x)
    reply = peer.request(
        "infer",
        graph=translator.describe_graph(model),
        weights=str(weights),
        inputs=str(inputs),
        outputs=str(outputs),
    )
    with np.load(outputs) as data:
        return {key: data[key] for key in data.files}, reply


@pytest.mark.parametrize(
    "name, params, outputs",
    [
        # One output (a tensor); "same" 3x3/2 max pools 28 -> 14 and 14 -> 7 (0 before,
        # 1 after), 7 -> 4 (1 each side); no dropout layer.
        ("googlenet_demo", 167_210, ["predictions"]),
        ("googlenet_demo_aux", 4_344_314, ["aux1", "aux2", "main"]),
    ],
)
def test_demo_twin_has_our_parameters_and_outputs(peer, tmp_path, name, params, outputs):
    keras.utils.set_random_seed(0)
    model = peers.build_ours(name)
    x = np.random.default_rng(2).uniform(-1, 1, (4, 28, 28, 1)).astype("float32")
    randomize_batch_norm(model, x, seed=1)
    ours = model(x, training=False)
    if not isinstance(ours, dict):
        ours = {model.output_names[0]: ours}
    ours = {key: value.numpy() for key, value in ours.items()}
    assert sorted(ours) == sorted(keras_inception.default_loss_weights(model)) == outputs

    theirs, reply = twin_outputs(peer, model, x, tmp_path)

    assert reply["trainable_params"] == peers.trainable_params(model) == params
    assert reply["copied"] == len(model.weights)
    assert sorted(theirs) == outputs
    for key, value in ours.items():
        assert theirs[key].shape == value.shape == (4, 10)
        np.testing.assert_allclose(theirs[key].sum(axis=1), 1.0, rtol=1e-5)  # probabilities
        assert np.abs(theirs[key] - value).max() < 1e-4, key
        assert value.std(axis=0).max() > 1e-2  # the images change the outputs


def test_twin_reproduces_same_padding_everywhere(peer, tmp_path):
    """TensorFlow's "same" padding in each of its torch forms: symmetric (in the layer),
    one more at the end for a max pool (ceil_mode), asymmetric (explicit pad, -inf for a
    max pool, zeros before a conv); and a dense layer after a channels-last flatten."""
    inputs = keras.Input((9, 8, 3))
    x = keras.layers.Conv2D(6, 3, strides=2, padding="same", use_bias=True)(inputs)  # 5x4
    x = keras.layers.BatchNormalization(momentum=0.9, epsilon=1e-3)(x)  # negative values
    a = keras.layers.MaxPooling2D(4, strides=1, padding="same")(x)  # pads 1, 2: -inf
    b = keras.layers.MaxPooling2D(3, strides=2, padding="same")(x)  # 3x2: ceil_mode
    b = keras.layers.ZeroPadding2D(((1, 1), (1, 1)))(b)  # 5x4
    c = keras.layers.AveragePooling2D(3, strides=1, padding="same")(x)
    x = keras.layers.Activation("relu")(keras.layers.Concatenate()([a, b, c]))
    head = keras.layers.Dense(5, activation="relu")(keras.layers.Flatten()(x))
    pooled = keras.layers.GlobalAveragePooling2D()(x)
    model = keras.Model(inputs, {"flat": head, "pooled": keras.layers.Dense(2)(pooled)})
    x = np.random.default_rng(4).normal(size=(3, 9, 8, 3)).astype("float32")
    randomize_batch_norm(model, x, seed=3)
    ours = {key: value.numpy() for key, value in model(x, training=False).items()}

    theirs, reply = twin_outputs(peer, model, x, tmp_path)

    assert reply["trainable_params"] == peers.trainable_params(model)
    for key, value in ours.items():
        scale = np.abs(value).max()
        assert scale > 0.1, key
        assert np.abs(theirs[key] - value).max() < 1e-5 * max(scale, 1.0), key


def test_same_padding_of_the_demo_pools():
    """TensorFlow's "same" 3x3/2 pools at googlenet_demo's sizes, and the torch form of
    those padded one more at the end (`ceil_mode`: as many windows as TensorFlow's)."""
    assert translator.same_padding(7, 3, 2) == (1, 1)  # 7 -> 4
    assert translator.same_padding(14, 3, 2) == (0, 1)  # 14 -> 7
    assert translator.same_padding(28, 3, 2) == (0, 1)  # 28 -> 14
    assert translator.torch_ceil_output(14, 3, 2, 0) == 7
    assert translator.torch_ceil_output(28, 3, 2, 0) == 14
    assert translator.torch_ceil_output(7, 3, 2, 0) == 3  # too few: 7 -> 4 pads in the layer


def test_describe_graph_names_a_layer_it_cannot_translate():
    inputs = keras.Input((8, 8, 3))
    x = keras.layers.Conv2D(4, 3, name="conv")(inputs)
    model = keras.Model(inputs, keras.layers.Conv2DTranspose(4, 3, name="up")(x))
    with pytest.raises(ValueError, match=r"layer 'up' \(Conv2DTranspose\) has no torch"):
        translator.describe_graph(model)
    with pytest.raises(TypeError, match="functional keras.Model; received Sequential"):
        translator.describe_graph(keras.Sequential([inputs, keras.layers.Flatten()]))


def test_table_for_both_models(capsys):
    rows = peers.main(
        ["--rounds", "1", "--steps", "1", "--warmup", "1", "--demo-batch-size", "8",
         "--batch-size", "2"]
    )  # fmt: skip
    out = capsys.readouterr().out
    assert "machine:" in out and "oneDNN" in out and "torch " in out and "OMP_WAIT_POLICY=" in out
    assert [row["model"] for row in rows] == ["googlenet_demo", "googlenet_224"]
    for row in rows:
        assert set(peers.COLUMNS) <= set(row)
        assert row["params"] == row["torch params"]  # torchvision's GoogLeNet is ours too
        assert math.isfinite(row["ratio"]) and row["ratio"] > 0
        assert row["met"] == ("yes" if row["ratio"] >= 1.5 else "no")
    assert [row["batch"] for row in rows] == [8, 2]
    assert rows[1]["params"] > rows[0]["params"]
    assert f"| {rows[0]['model']} " in out
    header = next(line for line in out.splitlines() if line.startswith("| model "))
    assert f"| {common.CPU_COLUMN} | torch CPU time/wall |" in header
    cores = len(os.sched_getaffinity(0))
    for row in rows:  # ours measured here; the twin's by the torch process itself
        assert 0 < row[common.CPU_COLUMN] <= cores + 0.5
        assert 0 < row["torch CPU time/wall"] <= cores + 0.5


def test_mixed_precision_runs_both_sides_in_bfloat16(capsys):
    args = peers.parse_args(
        ["--models", "googlenet_demo", "--demo-batch-size", "8", "--mixed-precision",
         "mixed_bfloat16"]
    )  # fmt: skip
    with TorchPeer() as peer:
        bench = peers.prepare("googlenet_demo", args, peer)
        replies = [peer.request("train", id=bench.torch_id(layout), steps=1) for layout in LAYOUTS]
    convs = [layer for layer in bench.model.layers if isinstance(layer, keras.layers.Conv2D)]
    assert {layer.compute_dtype for layer in convs} == {"bfloat16"}
    assert bench.model.output.dtype == "float32"  # the softmax output stays float32
    assert keras.config.dtype_policy().name == "float32"  # restored after the build
    for reply in replies:
        assert reply["output_dtype"] == "bfloat16" and math.isfinite(reply["loss"])
        assert 0 < reply["cpu_seconds"] <= reply["seconds"] * (os.cpu_count() + 0.5)
    assert peers.precision_label(args.policy) == "mixed_bfloat16 / autocast bfloat16"


def test_each_model_has_its_batch_option():
    args = peers.parse_args([])
    assert args.models == ["googlenet_demo", "googlenet_224"]
    assert [peers.batch_size(name, args) for name in peers.MODELS] == [256, 128, 16]
    args = peers.parse_args(["--demo-batch-size", "5", "--demo-aux-batch-size", "7"])
    assert [peers.batch_size(name, args) for name in peers.MODELS] == [5, 7, 16]


def test_unknown_model_is_named():
    args = peers.parse_args(["--rounds", "1"])
    args.models = ["googlenet_demo", "resnet50"]
    with pytest.raises(ValueError, match="'resnet50'"):
        peers.run(args)


def test_missing_torch_says_how_to_install(monkeypatch):
    find_spec = importlib.util.find_spec
    monkeypatch.setattr(
        importlib.util, "find_spec", lambda name, *a: None if name == "torch" else find_spec(name)
    )
    with pytest.raises(SystemExit, match=r"needs torch .*pip install -e '\.\[torch\]'"):
        peers.main(["--models", "googlenet_demo"])
