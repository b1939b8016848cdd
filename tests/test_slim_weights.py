"""TF-Slim checkpoints -> keras_inception, compared output for output with TF-Slim itself.

`tests/slim_reference.py` builds TF-Slim's inception_v1/v2/v3 in a subprocess (graph
mode), with random variables (BN statistics and beta included, so the logits are far
from zero), saves them with `tf.compat.v1.train.Saver` and writes their logits for fixed
images. Each test converts a checkpoint and compares at relative 1e-4 (of the largest
reference logit).
"""

from __future__ import annotations

import importlib.util
import os
import subprocess
import sys

import keras
import numpy as np
import pytest

import keras_inception as ki
from keras_inception.pretrained import common, slim

# Not imported here: tf-slim and tf-keras run only in the reference subprocess.
for _package in ("tf_slim", "tf_keras"):
    if importlib.util.find_spec(_package) is None:
        pytest.skip(
            f"{_package} is not installed: the TF-Slim reference needs tf-slim 1.1.0 and "
            "tf-keras 2.21 (the test extra)",
            allow_module_level=True,
        )

import tensorflow as tf  # noqa: E402  (reads and writes checkpoints; tf-slim needs it)

REFERENCE = os.path.join(os.path.dirname(__file__), "slim_reference.py")
RELATIVE = 1e-4


@pytest.fixture(scope="module")
def reference(tmp_path_factory):
    """Folder with `<name>.ckpt` and `<name>.npz` for the three nets (one subprocess)."""
    folder = tmp_path_factory.mktemp("slim")
    result = subprocess.run(
        [sys.executable, REFERENCE, str(folder)],
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    return folder


def _max_difference(output, expected) -> tuple[float, float]:
    diff = float(np.max(np.abs(np.asarray(output) - expected)))
    return diff, diff / float(np.max(np.abs(expected)))


def _assert_close(output, expected, label: str) -> None:
    assert np.asarray(output).shape == expected.shape, label
    diff, relative = _max_difference(output, expected)
    assert relative <= RELATIVE, f"{label}: max abs difference {diff:.3g} (relative {relative:.3g})"


def _save_checkpoint(state: dict, prefix) -> str:
    """Writes `state` as a name-based V2 checkpoint, as TF-Slim's Saver does."""
    names = sorted(state)
    tf.raw_ops.SaveV2(
        prefix=str(prefix),
        tensor_names=names,
        shape_and_slices=[""] * len(names),
        tensors=[state[name] for name in names],
    )
    return str(prefix)


@pytest.fixture(scope="module")
def inception_v2(reference):
    """inception_v2 converted without the background class, and its skipped tensors."""
    return slim.convert("inception_v2", reference / "inception_v2.ckpt", include_background=False)


@pytest.fixture(scope="module")
def inception_v1(reference):
    # The published inception_v1 file is a V1-format checkpoint; so is this one.
    return ki.from_slim("inception_v1", reference / "inception_v1.ckpt")


def test_inception_v1_equals_slim(reference, inception_v1):
    data = np.load(reference / "inception_v1.npz")
    model = inception_v1
    assert model.output.shape == (None, 1001)
    _assert_close(model(data["images"], training=False), data["logits"], "inception_v1")
    # TF-Slim's batch norm has no gamma: the Keras gamma is 1.
    gamma = model.get_layer("conv1_bn").gamma
    np.testing.assert_array_equal(np.asarray(gamma), 1.0)


def test_inception_v1_needs_the_2x2_pool_before_stage_5(reference, inception_v1):
    """Negative control: the paper's 3x3/2 pool (pool5_kernel=3) with the same weights
    is far from TF-Slim."""
    data = np.load(reference / "inception_v1.npz")
    paper_pool = ki.build_googlenet(branch5x5_kernel=3, classes=1001, classifier_activation=None)
    paper_pool.set_weights(inception_v1.get_weights())
    _, relative = _max_difference(paper_pool(data["images"], training=False), data["logits"])
    assert relative > 100 * RELATIVE


def test_inception_v2_equals_slim_without_background(reference, inception_v2):
    data = np.load(reference / "inception_v2.npz")
    model, skipped = inception_v2
    assert model.output.shape == (None, 1000)
    assert model.get_layer("conv1a_conv").depth_multiplier == 8  # separable 7x7 stem
    _assert_close(model(data["images"], training=False), data["logits"][:, 1:], "inception_v2")
    # A training checkpoint's step and optimizer slot are named, not silently dropped.
    assert skipped == ["InceptionV2/Conv2d_1a_7x7/depthwise_weights/Momentum", "global_step"]
    assert slim.CONVERTER.summarize(skipped) == "Momentum x1, global_step x1"


def test_inception_v3_equals_slim_with_aux_logits(reference):
    data = np.load(reference / "inception_v3.npz")
    model, skipped = slim.convert("inception_v3", reference / "inception_v3.ckpt", aux_logits=True)
    outputs = model(data["images"], training=False)
    _assert_close(outputs["main"], data["logits"], "inception_v3 logits")
    _assert_close(outputs["aux"], data["aux_logits"], "inception_v3 aux logits")
    assert "global_step" in skipped
    assert not any("AuxLogits" in key for key in skipped)


def test_features_without_the_top(reference, inception_v2):
    """include_top=False skips the classifier (named) and keeps the features."""
    data = np.load(reference / "inception_v2.npz")
    features, skipped = slim.convert(
        "inception_v2", reference / "inception_v2.ckpt", include_top=False, pooling="avg"
    )
    assert features.output.shape == (None, 1024)
    assert "InceptionV2/Logits/Conv2d_1c_1x1/weights" in skipped
    assert slim.CONVERTER.summarize(skipped) == (
        "InceptionV2/Logits/* x2, Momentum x1, global_step x1"
    )
    model, _ = inception_v2
    pooled = keras.Model(model.input, model.get_layer("avgpool").output)
    expected = np.asarray(pooled(data["images"], training=False))
    _assert_close(features(data["images"], training=False), expected, "features")


def test_converted_weights_load_into_the_builder_with_its_kwargs(reference, inception_v2, tmp_path):
    """What `python -m keras_inception.convert slim ...` writes, and the builder call."""
    data = np.load(reference / "inception_v2.npz")
    model, _ = inception_v2
    path = str(tmp_path / "inception_v2.weights.h5")
    model.save_weights(path)
    kwargs = slim.builder_kwargs("inception_v2", include_background=False)
    assert kwargs == {"variant": "bn_inception", "classes": 1000, "classifier_activation": None}
    rebuilt = slim.CONVERTER.builders["inception_v2"](**kwargs, weights=path)
    assert slim.CONVERTER.builders["inception_v2"] is ki.build_inception_v2
    _assert_close(rebuilt(data["images"], training=False), data["logits"][:, 1:], "rebuilt")


def test_builder_calls():
    assert slim.builder_call("inception_v1") == (
        "keras_inception.build_googlenet(branch5x5_kernel=3, pool5_kernel=2, classes=1001, "
        "classifier_activation=None)"
    )
    assert slim.builder_call("inception_v3", aux_logits=True, classifier_activation="softmax") == (
        "keras_inception.build_inception_v3(aux_logits=True, classes=1001, "
        "classifier_activation='softmax')"
    )
    assert slim.builder_call("inception_v3", include_top=False, pooling="avg") == (
        "keras_inception.build_inception_v3(include_top=False, pooling='avg')"
    )


def test_every_keras_layer_has_a_slim_scope():
    assert slim.slim_scope("inception_v1", "inception5a_5x5") == (
        "InceptionV1/Mixed_5b/Branch_2/Conv2d_0a_3x3"
    )
    assert slim.slim_scope("inception_v3", "mixed6a_3x3") == (
        "InceptionV3/Mixed_6a/Branch_0/Conv2d_1a_1x1"
    )
    with pytest.raises(ValueError, match="'mixed9z_1x1' has no counterpart"):
        slim.slim_scope("inception_v3", "mixed9z_1x1")


def test_missing_tensor_names_the_file_and_the_tensor(reference, tmp_path):
    state = slim.read_checkpoint(reference / "inception_v2.ckpt")
    missing = "InceptionV2/Mixed_4c/Branch_2/Conv2d_0b_3x3/BatchNorm/moving_variance"
    del state[missing]
    path = _save_checkpoint(state, tmp_path / "missing.ckpt")
    with pytest.raises(ValueError) as info:
        ki.from_slim("inception_v2", path)
    message = str(info.value)
    assert "\n" not in message and repr(path) in message
    assert f"tensor {missing!r}" in message and "is missing" in message


def test_unexpected_or_misshapen_tensors_are_refused(reference, inception_v2, tmp_path):
    model, _ = inception_v2
    state = slim.read_checkpoint(reference / "inception_v2.ckpt")
    sources = slim.plan("inception_v2", model, include_background=False)
    before = model.get_layer("conv2b_conv").kernel.numpy().copy()

    def assign(state):
        return common.assign(
            model,
            state,
            sources,
            path="x.ckpt",
            skip=lambda key: key == "global_step" or key.endswith("/Momentum"),
            description="v2",
        )

    extra = dict(state, **{"InceptionV2/Mixed_4c/Branch_0/Conv2d_0a_1x1/BatchNorm/gamma": 1})
    with pytest.raises(ValueError, match="BatchNorm/gamma' \\(\\) has no place in the model"):
        assign(extra)
    key = "InceptionV2/Conv2d_2b_1x1/weights"
    wrong = dict(state, **{key: np.zeros((1, 1, 64, 63), "float32")})
    with pytest.raises(ValueError, match=f"'{key}' has shape \\(1, 1, 64, 63\\)"):
        assign(wrong)
    np.testing.assert_array_equal(model.get_layer("conv2b_conv").kernel.numpy(), before)


def test_wrong_net_and_bad_files(reference, tmp_path):
    with pytest.raises(ValueError, match="it looks like a TF-Slim inception_v3 checkpoint"):
        ki.from_slim("inception_v1", reference / "inception_v3.ckpt")
    with pytest.raises(ValueError, match="unknown TF-Slim model 'inception_v4'"):
        ki.from_slim("inception_v4", reference / "inception_v3.ckpt")
    with pytest.raises(ValueError, match="inception_v1 has no auxiliary head"):
        ki.from_slim("inception_v1", reference / "inception_v1.ckpt", aux_logits=True)
    with pytest.raises(ValueError, match="no auxiliary head tensors"):
        ki.from_slim("inception_v3", _save_checkpoint(
            {"InceptionV3/Logits/Conv2d_1c_1x1/weights": np.zeros((1, 1, 2048, 1001), "f")},
            tmp_path / "no_aux.ckpt",
        ), aux_logits=True)  # fmt: skip

    absent = tmp_path / "absent.ckpt"
    with pytest.raises(FileNotFoundError, match=repr(str(absent))):
        ki.from_slim("inception_v3", absent)

    tarball = tmp_path / "inception_v3_2016_08_28.tar.gz"
    tarball.write_bytes(b"")
    with pytest.raises(ValueError, match="is an archive: unpack it"):
        ki.from_slim("inception_v3", tarball)

    junk = tmp_path / "junk.ckpt"
    junk.write_bytes(np.random.default_rng(0).bytes(4096))
    with pytest.raises(ValueError, match="could not read .*junk.ckpt.* as a TensorFlow checkpoint"):
        ki.from_slim("inception_v3", junk)

    # A V2 checkpoint whose data file was cut short: the index reads, a tensor does not.
    prefix = tmp_path / "truncated.ckpt"
    for suffix in (".index", ".data-00000-of-00001"):
        source = (reference / f"inception_v2.ckpt{suffix}").read_bytes()
        if suffix != ".index":
            source = source[: len(source) // 2]
        (tmp_path / f"truncated.ckpt{suffix}").write_bytes(source)
    with pytest.raises(ValueError, match="could not read tensor 'InceptionV2/.*truncated.ckpt"):
        ki.from_slim("inception_v2", str(prefix) + ".index")


def test_reading_without_tensorflow_says_so(reference, monkeypatch):
    monkeypatch.setitem(sys.modules, "tensorflow", None)
    with pytest.raises(ImportError, match="needs TensorFlow .*load without it"):
        slim.read_checkpoint(reference / "inception_v1.ckpt")


def test_checkpoint_prefix_accepts_v2_files_and_directories(reference, tmp_path):
    prefix = str(reference / "inception_v2.ckpt")
    assert slim.checkpoint_prefix(prefix + ".index") == prefix
    assert slim.checkpoint_prefix(prefix + ".data-00000-of-00001") == prefix
    assert slim.checkpoint_prefix(reference / "inception_v1.ckpt") == str(
        reference / "inception_v1.ckpt"
    )
    assert slim.checkpoint_prefix(reference).endswith(".ckpt")  # the Saver's state file
    with pytest.raises(FileNotFoundError, match="holds none"):
        slim.checkpoint_prefix(tmp_path)
