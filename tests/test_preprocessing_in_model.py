"""Models carry their preprocessing (`include_preprocessing`) and their class names
(`keras_inception.class_names_of`); the training pipeline yields raw pixels."""

from __future__ import annotations

import json
import os
import zipfile

import keras
import numpy as np
import pytest
import tensorflow as tf

import keras_inception as ki
from training import preprocess
from training.config import TrainConfig
from training.evaluate import load_inference_model
from training.model_setup import build_model
from training.workdir import save_models

TINY = dict(input_shape=(32, 32, 3), stem="small", classes=4, width_multiplier=0.125)
PIXELS = np.random.default_rng(0).integers(0, 256, (3, 32, 32, 3)).astype("uint8")


def _twins(**kwargs):
    """The same weights with and without the preprocessing layer."""
    old = ki.build_googlenet(
        **TINY, **{k: v for k, v in kwargs.items() if k != "include_preprocessing"}
    )
    new = ki.build_googlenet(**TINY, **kwargs)
    new.set_weights(old.get_weights())
    return old, new


def test_raw_uint8_equals_the_old_manual_scaling():
    old, new = _twins(include_preprocessing="inception")
    expected = old.predict(PIXELS.astype("float32") / 127.5 - 1, verbose=0)
    np.testing.assert_allclose(new.predict(PIXELS, verbose=0), expected, atol=1e-6)
    assert [layer.name for layer in new.layers[:3]] == ["image", "preprocessing", "conv1_conv"]


def test_torch_mode_normalizes_before_transform_input_as_torchvision():
    old, new = _twins(include_preprocessing="torch", transform_input=True)
    assert [layer.name for layer in new.layers[:3]] == ["image", "preprocessing", "transform_input"]
    expected = old.predict(ki.preprocess_input(PIXELS, "torchvision"), verbose=0)
    np.testing.assert_allclose(new.predict(PIXELS, verbose=0), expected, atol=1e-6)
    assert ki.preprocessing_of(new) == "torch" and ki.preprocessing_of(old) is None


def test_default_models_are_unchanged_and_bad_modes_are_refused():
    model = ki.build_googlenet(**TINY)
    assert "preprocessing" not in [layer.name for layer in model.layers]
    with pytest.raises(ValueError, match="received 'tf'"):
        ki.build_googlenet(**TINY, include_preprocessing="tf")
    with pytest.raises(ValueError, match="received 1 channels"):
        ki.build_googlenet(**{**TINY, "input_shape": (32, 32, 1)}, include_preprocessing="torch")


def test_training_models_take_pixels_and_old_files_are_wrapped(tmp_path):
    model = build_model(TrainConfig(model="googlenet", width_multiplier=0.125), (32, 32, 3), 4)
    assert ki.preprocessing_of(model) == "inception"
    old = ki.build_googlenet(**TINY)
    old.save(tmp_path / "inference.keras")  # a workdir from before: inputs in [-1, 1]
    expected = old.predict(PIXELS.astype("float32") / 127.5 - 1, verbose=0)
    loaded = load_inference_model(str(tmp_path))
    np.testing.assert_allclose(loaded.predict(PIXELS, verbose=0), expected, atol=1e-6)
    # Resuming: the old run's weights (BackupAndRestore's file) load into the new model.
    old.save_weights(tmp_path / "old.weights.h5")
    new = ki.build_googlenet(**TINY, include_preprocessing="inception")
    new.load_weights(tmp_path / "old.weights.h5")
    np.testing.assert_allclose(new.predict(PIXELS, verbose=0), expected, atol=1e-6)


def test_the_pipeline_yields_the_decoded_pixels():
    image = tf.constant(PIXELS[0])
    fn = preprocess.eval_fn(small=True, encoded=False, size=32, channels=3, ten_crop=False)
    np.testing.assert_array_equal(fn(image).numpy(), PIXELS[0].astype("float32"))
    crops = preprocess.eval_fn(small=True, encoded=False, size=32, channels=3, ten_crop=True)
    out = crops(image).numpy()
    assert out.shape == (10, 32, 32, 3) and out.min() >= 0 and 200 < out.max() <= 255


def test_workdir_files_carry_class_names(tmp_path):
    model = ki.build_googlenet(**TINY, include_preprocessing="inception")
    names = ["cat", "dog", "émeu", "fish"]
    (tmp_path / "history.csv").write_text("epoch,loss,val_loss\n0,1.0,1.1\n")
    save_models(model, str(tmp_path), export=False, class_names=names)
    assert (tmp_path / "labels.txt").read_text(encoding="utf-8") == "cat\ndog\némeu\nfish\n"
    assert ki.class_names_of(tmp_path / "inference.keras") == names
    assert ki.class_names_of(tmp_path / "model.keras") == names
    # The names are Keras's own metadata.json in the archive, which plain Keras reads; a
    # real run's inference.keras loads with Keras alone in test_workdirs.
    with zipfile.ZipFile(tmp_path / "inference.keras") as archive:
        assert json.loads(archive.read("metadata.json"))["class_names"] == names
    loaded = keras.saving.load_model(tmp_path / "inference.keras", safe_mode=True)
    np.testing.assert_allclose(
        loaded.predict(PIXELS, verbose=0), model.predict(PIXELS, verbose=0), atol=1e-5
    )


def test_class_names_of_a_file_without_them_and_of_a_non_archive(tmp_path):
    path = tmp_path / "m.keras"
    keras.Sequential([keras.Input((2,)), keras.layers.Dense(2)]).save(path)
    assert ki.class_names_of(path) is None
    ki.write_class_names(path, ["a", "b"])
    with zipfile.ZipFile(path) as archive:
        metadata = json.loads(archive.read("metadata.json"))
    assert metadata["class_names"] == ["a", "b"] and "keras_version" in metadata
    assert keras.saving.load_model(path).output_shape == (None, 2)
    (tmp_path / "bad.keras").write_text("not a zip")
    with pytest.raises(ValueError, match="bad.keras"):
        ki.class_names_of(tmp_path / "bad.keras")
    with pytest.raises(FileNotFoundError):
        ki.class_names_of(os.fspath(tmp_path / "missing.keras"))
