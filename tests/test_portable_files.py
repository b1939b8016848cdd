"""Portable model files: what our builders' models write loads with Keras alone.

The fused batch norm (our builders' default) is written as `keras.layers.BatchNormalization`
(STYLE.md, principle 14), so a `.keras` file loads in a process that has imported neither
`keras_inception` nor `training`, with `keras.saving.load_model`'s defaults
(`compile=True`, `safe_mode=True`), and predicts what the saved model predicted.
`keras_inception.load_model` puts the fused layer back; files written before (which
record "keras_inception>FusedBatchNormalization") still load with `keras_inception`.
"""

import json
import os
import subprocess
import sys
import textwrap
import warnings
import zipfile

import keras
import numpy as np
import pytest

import keras_inception as ki
from keras_inception import keras_private
from keras_inception.fused_batchnorm import FusedBatchNormalization

SMALL = dict(input_shape=(32, 32, 3), classes=5, stem="small", width_multiplier=0.25)
# (builder, auxiliary heads, compiled): the training model, with its auxiliary heads and
# compiled with an optimizer that has state; its inference model; another builder.
MODELS = {
    "googlenet_aux": ("googlenet", True, True),
    "inception_v3": ("inception_v3", False, False),
}
CASES = [*MODELS, "googlenet_inference"]  # googlenet_inference: strip_aux_heads(googlenet_aux)
COMPILED = {"googlenet_aux"}


def batch_norms(model: keras.Model) -> list[keras.layers.Layer]:
    return [layer for layer in model.layers if isinstance(layer, keras.layers.BatchNormalization)]


def randomize_batch_norms(model: keras.Model, seed: int) -> None:
    """Gamma, beta and moving statistics away from 1, 0, 0, 1: a file whose BN weights
    were lost or misplaced predicts something else."""
    rng = np.random.default_rng(seed)
    for layer in batch_norms(model):
        for variable in layer.weights:
            positive = variable.name in ("gamma", "moving_variance")
            low, high = (0.5, 1.5) if positive else (-0.5, 0.5)
            variable.assign(rng.uniform(low, high, variable.shape).astype("float32"))


def outputs_of(model: keras.Model, x: np.ndarray) -> dict[str, np.ndarray]:
    """The model's inference outputs by name ("out" for a single one). Eager: at this
    size, a `predict` call's tracing costs more than the whole forward pass."""
    y = model(x, training=False)
    return (
        {k: np.asarray(v) for k, v in y.items()} if isinstance(y, dict) else {"out": np.asarray(y)}
    )


def config_of(path) -> dict:
    with zipfile.ZipFile(path) as archive:
        return json.loads(archive.read("config.json"))


@pytest.fixture(scope="module")
def saved(tmp_path_factory):
    """Writes every case's `.keras` file and x.npy; returns (folder, {case: model},
    {case: outputs before saving})."""
    folder = tmp_path_factory.mktemp("portable")
    x = np.random.default_rng(0).normal(size=(2, 32, 32, 3)).astype("float32")
    np.save(folder / "x.npy", x)
    models = {}
    for seed, (case, (name, aux, compiled)) in enumerate(MODELS.items()):
        model = ki.get_model(name, aux_logits=aux, **SMALL)
        randomize_batch_norms(model, seed)
        if compiled:
            model.compile(
                optimizer=keras.optimizers.Adam(1e-3),
                loss="sparse_categorical_crossentropy",
                loss_weights=ki.default_loss_weights(model),
            )
            # Optimizer state as after some training: step count and moments.
            model.optimizer.build(model.trainable_variables)
            rng = np.random.default_rng(seed)
            for variable in model.optimizer.variables:
                variable.assign(rng.uniform(0, 1, variable.shape).astype(variable.dtype))
        models[case] = model
    models["googlenet_inference"] = ki.strip_aux_heads(models["googlenet_aux"])
    expected = {}
    for case, model in models.items():
        assert {type(layer) for layer in batch_norms(model)} == {FusedBatchNormalization}
        expected[case] = outputs_of(model, x)
        model.save(folder / f"{case}.keras")
    return folder, models, expected


@pytest.fixture(scope="module")
def loaded_by_keras_alone(saved):
    """Loads every file in ONE fresh process (a TensorFlow start is 7-10 s of 2 cores)
    that refuses to import keras_inception and training; returns {case: report}, a
    report being the error of that case or what the loaded model was and predicted."""
    folder, _, _ = saved
    script = textwrap.dedent(
        f"""
        import json, sys

        class Refuse:  # any import of our packages fails, however Keras tries it
            def find_spec(self, name, path=None, target=None):
                if name.split(".")[0] in ("keras_inception", "training"):
                    raise ImportError(f"{{name}} is not importable in this test")

        sys.meta_path.insert(0, Refuse())
        import keras, numpy as np

        folder = {str(folder)!r}
        x = np.load(folder + "/x.npy")
        reports = {{}}
        for case in {CASES!r}:
            try:
                model = keras.saving.load_model(folder + f"/{{case}}.keras")
                y = model(x, training=False)
            except Exception as err:  # that case's test fails with this message
                reports[case] = f"{{type(err).__name__}}: {{err}}"
                continue
            y = y if isinstance(y, dict) else {{"out": y}}
            y = {{key: np.asarray(value) for key, value in y.items()}}
            np.savez(folder + f"/{{case}}.loaded.npz", **y)
            reports[case] = {{
                "compiled": model.compiled,
                "keras_batch_norms": [  # Keras's own class, not a subclass
                    type(layer) is keras.layers.BatchNormalization
                    for layer in model.layers
                    if isinstance(layer, keras.layers.BatchNormalization)
                ],
            }}
        reports["imported"] = [m for m in ("keras_inception", "training") if m in sys.modules]
        print(json.dumps(reports))
        """
    )
    env = {**os.environ, "KERAS_BACKEND": "tensorflow", "TF_CPP_MIN_LOG_LEVEL": "2"}
    result = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, env=env, timeout=600
    )
    assert result.returncode == 0, result.stderr[-3000:]
    reports = json.loads(result.stdout.strip().splitlines()[-1])
    assert reports.pop("imported") == []
    return reports


@pytest.mark.parametrize("case", CASES)
def test_keras_alone_loads_the_file_and_predicts_the_same(case, saved, loaded_by_keras_alone):
    folder, models, expected = saved
    report = loaded_by_keras_alone[case]
    assert isinstance(report, dict), report  # else the fresh process's error
    assert report["keras_batch_norms"] == [True] * len(batch_norms(models[case]))
    assert report["compiled"] == (case in COMPILED)
    loaded = np.load(folder / f"{case}.loaded.npz")
    assert sorted(loaded.files) == sorted(expected[case])
    for key, value in expected[case].items():
        np.testing.assert_allclose(loaded[key], value, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("case", CASES)
def test_files_record_keras_batch_normalization(case, saved):
    folder, models, _ = saved
    config = config_of(folder / f"{case}.keras")
    assert "keras_inception" not in json.dumps(config)
    layers = config["config"]["layers"]
    recorded = [layer for layer in layers if layer["class_name"] == "BatchNormalization"]
    assert len(recorded) == len(batch_norms(models[case])) > 0
    for layer in recorded:
        assert (layer["module"], layer["registered_name"]) == ("keras.layers", None), layer
    # The training model keeps its compile config; strip_aux_heads of a model with
    # auxiliary heads is a new, uncompiled model: its file holds no loss nor optimizer.
    if case in COMPILED:
        assert config["compile_config"]["loss"] == "sparse_categorical_crossentropy"
    else:
        assert not config.get("compile_config")


def test_load_model_puts_the_fused_layer_back(saved):
    folder, models, expected = saved
    model = models["googlenet_aux"]
    path = folder / "googlenet_aux.keras"
    x = np.load(folder / "x.npy")
    fused = ki.load_model(path)
    assert [type(layer) for layer in batch_norms(fused)] == [FusedBatchNormalization] * len(
        batch_norms(model)
    )
    assert fused.name == model.name and fused.output_names == model.output_names
    assert [w.path for w in fused.weights] == [w.path for w in model.weights]
    for a, b in zip(fused.get_weights(), model.get_weights(), strict=True):
        np.testing.assert_array_equal(a, b)
    y = outputs_of(fused, x)
    for key, value in expected["googlenet_aux"].items():
        np.testing.assert_allclose(y[key], value, rtol=1e-5, atol=1e-6)
    # Still compiled as saved, with the saved optimizer state.
    assert fused.compiled
    assert fused.get_compile_config() == model.get_compile_config()
    assert fused.optimizer is not model.optimizer
    assert len(fused.optimizer.variables) == len(model.optimizer.variables) > 2
    for a, b in zip(fused.optimizer.variables, model.optimizer.variables, strict=True):
        np.testing.assert_array_equal(a.numpy(), b.numpy())


def old_style_file(source, target) -> None:
    """`source` rewritten as keras_inception wrote files before: every BatchNormalization
    recorded under FusedBatchNormalization's registered name."""
    config = config_of(source)
    count = 0
    for layer in config["config"]["layers"]:
        if layer["class_name"] == "BatchNormalization":
            layer["module"] = "keras_inception.fused_batchnorm"
            layer["registered_name"] = "keras_inception>FusedBatchNormalization"
            count += 1
    assert count > 0
    with zipfile.ZipFile(source) as old, zipfile.ZipFile(target, "w") as new:
        for item in old.infolist():
            data = json.dumps(config) if item.filename == "config.json" else old.read(item)
            new.writestr(item, data)


def test_files_written_before_still_load(saved, tmp_path):
    folder, models, expected = saved
    path = tmp_path / "old.keras"
    old_style_file(folder / "googlenet_inference.keras", path)
    x = np.load(folder / "x.npy")
    count = len(batch_norms(models["googlenet_inference"]))
    for load, kind in [
        (keras.saving.load_model, FusedBatchNormalization),
        (lambda p: ki.load_model(p, fused_batch_norm=False), keras.layers.BatchNormalization),
    ]:
        model = load(path)
        assert [type(layer) for layer in batch_norms(model)] == [kind] * count
        np.testing.assert_allclose(
            outputs_of(model, x)["out"],
            expected["googlenet_inference"]["out"],
            rtol=1e-5,
            atol=1e-6,
        )


# --- the private Keras API that keras_inception.keras_private patches ---------------------


def test_keras_private_was_written_for_this_keras():
    """Fails on another Keras: re-read keras/src/api_export.py and
    `serialize_with_public_class` (keras/src/saving/serialization_lib.py), then update
    keras_private.WRITTEN_FOR."""
    assert keras_private.keras_version() == keras_private.WRITTEN_FOR, keras.version()


def test_the_fused_layer_serializes_as_keras_batch_normalization():
    """Fails when the private API changed under the patch (it then declines, warning)."""
    layer = FusedBatchNormalization(momentum=0.9, scale=False, name="bn")
    config = keras.saving.serialize_keras_object(layer)
    assert (config["module"], config["class_name"], config["registered_name"]) == (
        "keras.layers",
        "BatchNormalization",
        None,
    )
    # Only the class -> name direction is patched: the name still gives Keras's layer.
    clone = keras.saving.deserialize_keras_object(config)
    assert type(clone) is keras.layers.BatchNormalization
    assert clone.get_config() == layer.get_config()
    # The registered name, for files written before, still gives the fused layer.
    registered = keras.saving.get_registered_object("keras_inception>FusedBatchNormalization")
    assert registered is FusedBatchNormalization


def test_serialize_as_declines_with_a_warning_when_the_private_api_changed(monkeypatch):
    from keras.src import api_export

    class Subclass(keras.layers.BatchNormalization):
        pass

    monkeypatch.setattr(api_export, "get_name_from_symbol", lambda symbol: None)
    with pytest.warns(
        RuntimeWarning,
        match=r"written for Keras 3\.15\)\. .*Subclass layers are saved as 'Subclass'",
    ):
        assert keras_private.serialize_as(Subclass, keras.layers.BatchNormalization) is False
    monkeypatch.undo()
    assert api_export.get_name_from_symbol(Subclass) is None
    # Applied, checked, and only for that class.
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert keras_private.serialize_as(Subclass, keras.layers.BatchNormalization) is True
    try:
        config = keras.saving.serialize_keras_object(Subclass())
        assert (config["module"], config["class_name"]) == ("keras.layers", "BatchNormalization")
        assert keras.saving.get_registered_name(Subclass) == "Subclass"  # no registration
        assert api_export.get_symbol_from_name("keras.layers.BatchNormalization") is (
            keras.layers.BatchNormalization
        )
    finally:
        del api_export.REGISTERED_OBJS_TO_NAMES[Subclass]
