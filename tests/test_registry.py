"""Every registered model: builds, runs, serializes, imports keras only."""

import ast
import dataclasses
import os
import pathlib
import subprocess
import sys
import textwrap

import keras
import numpy as np
import pytest
from keras import layers

import keras_inception as ki

PACKAGE = pathlib.Path(ki.__file__).parent

# Small but real configurations of each registered model, cheap enough to run everywhere.
SMALL = dict(stem="small", input_shape=(32, 32, 1), classes=5, width_multiplier=0.25)


def test_list_models_names_every_builder():
    assert ki.list_models() == ["bn_inception", "googlenet", "inception_v2", "inception_v3"]
    assert ki.get_builder("googlenet") is ki.build_googlenet


@pytest.mark.parametrize("name", ki.list_models())
def test_default_specs_are_the_tables_the_builders_use(name):
    table = ki.default_specs(name)
    narrower = {key: spec for key, spec in table.items()}
    first = next(key for key, spec in table.items() if hasattr(spec, "pool_proj"))
    narrower[first] = dataclasses.replace(table[first], pool_proj=table[first].pool_proj * 8)
    built = ki.get_model(name, **SMALL).count_params()
    assert ki.get_model(name, specs=table, **SMALL).count_params() == built
    assert ki.get_model(name, specs=narrower, **SMALL).count_params() != built


def test_bn_inception_is_the_v2_builders_variant():
    model = ki.get_model("bn_inception", include_top=False)
    reference = ki.build_inception_v2(variant="bn_inception", include_top=False)
    assert model.count_params() == reference.count_params() == 10_173_112
    with pytest.raises(ValueError, match=r"unknown model 'resnet'.*available"):
        ki.default_specs("resnet")


def test_unknown_model_is_refused_by_name():
    with pytest.raises(ValueError, match=r"unknown model 'googlenet2'.*available"):
        ki.get_model("googlenet2")


@pytest.mark.parametrize("name", ki.list_models())
def test_builds_and_runs(name):
    model = ki.get_model(name, **SMALL)
    x = np.random.default_rng(0).normal(size=(2, 32, 32, 1)).astype("float32")
    y = model.predict(x, verbose=0)
    assert y.shape == (2, 5)
    np.testing.assert_allclose(y.sum(axis=1), 1.0, rtol=1e-5)
    assert not [layer for layer in model.layers if isinstance(layer, layers.Lambda)]


# Extra configurations per model: GoogLeNet with and without batch norm (the V2/V3
# builders always use batch norm and take no batch_norm argument).
VARIANTS = {"googlenet": [{"batch_norm": False}, {"batch_norm": True}]}


def _configs():
    return [
        pytest.param(name, extra, id=f"{name}-{'-'.join(f'{k}={v}' for k, v in extra.items())}")
        for name in ki.list_models()
        for extra in VARIANTS.get(name, [{}])
    ]


def test_every_builder_is_registered_and_every_model_is_tested():
    """Exactly: the public builders are the registered ones (bn_inception is a variant of
    build_inception_v2), and the parametrized configurations cover each model."""
    public = {getattr(ki, name) for name in ki.__all__ if name.startswith("build_")}
    registered = {getattr(b, "func", b) for b in map(ki.get_builder, ki.list_models())}
    assert registered == public
    assert sorted({param.values[0] for param in _configs()}) == ki.list_models()
    assert not set(VARIANTS) - set(ki.list_models())


def _round_trip_cases():
    return [
        pytest.param(name, extra, aux_logits, id=f"{aux_logits}-{param.id}")
        for aux_logits in (False, True)
        for param in _configs()
        for name, extra in [param.values]
    ]


@pytest.mark.parametrize(("name", "extra", "aux_logits"), _round_trip_cases())
def test_keras_round_trip(name, extra, aux_logits, tmp_path):
    """Every registered configuration saves and loads (safe_mode=True) to the same outputs.
    A fresh process that has only Keras loads them in test_portable_files."""
    x = np.random.default_rng(1).normal(size=(2, 32, 32, 1)).astype("float32")
    model = ki.get_model(name, aux_logits=aux_logits, **extra, **SMALL)
    model.save(tmp_path / "model.keras")
    loaded = keras.saving.load_model(tmp_path / "model.keras", safe_mode=True)
    # Eager calls: at this size `predict`'s tracing costs more than the forward pass.
    expected, got = model(x, training=False), loaded(x, training=False)
    expected, got = ({"out": y} if not isinstance(y, dict) else y for y in (expected, got))
    assert sorted(got) == sorted(expected)
    assert (len(expected) > 1) == aux_logits, (name, extra)  # aux heads are extra outputs
    for key, value in expected.items():
        np.testing.assert_allclose(np.asarray(got[key]), np.asarray(value), rtol=1e-5, atol=1e-6)


def _imported_modules(path: pathlib.Path) -> set[str]:
    names = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            names.update(alias.name.split(".")[0] for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names.add(node.module.split(".")[0])
    return names


@pytest.mark.parametrize("path", sorted(PACKAGE.glob("*.py")), ids=lambda p: p.name)
def test_package_imports_keras_only(path):
    imported = _imported_modules(path)
    assert "tensorflow" not in imported
    assert "training" not in imported


def _module_level_imports(path: pathlib.Path) -> set[str]:
    names = set()
    for node in ast.parse(path.read_text()).body:
        if isinstance(node, ast.Import):
            names.update(alias.name.split(".")[0] for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names.add(node.module.split(".")[0])
    return names


OPTIONAL_READERS = {"torch", "torchvision", "safetensors", "tensorflow", "tf_slim", "h5py"}


@pytest.mark.parametrize(
    "path", sorted(PACKAGE.rglob("*.py")), ids=lambda p: str(p.relative_to(PACKAGE))
)
def test_optional_readers_are_imported_only_where_a_file_is_read(path):
    """torch, safetensors, TensorFlow: imported inside the functions that read files."""
    assert not _module_level_imports(path) & OPTIONAL_READERS
    assert "training" not in _imported_modules(path)


# `large` (about a minute each): the fast suite's tests/test_backends.py builds a GoogLeNet
# on JAX, without TensorFlow, and compares its outputs with TensorFlow's.
@pytest.mark.large
@pytest.mark.parametrize("name", ki.list_models())
def test_runs_on_jax_backend_without_tensorflow(name):
    extra = VARIANTS.get(name, [{}])[0]
    script = textwrap.dedent(
        f"""
        import sys, numpy as np, keras
        import keras_inception as ki
        assert keras.backend.backend() == "jax"
        model = ki.get_model({name!r}, aux_logits=True, **{extra!r}, **{SMALL!r})
        y = model.predict(np.zeros((1, 32, 32, 1), "float32"), verbose=0)
        assert y["main"].shape == (1, 5), y
        print("tensorflow" in sys.modules)
        """
    )
    env = {**os.environ, "KERAS_BACKEND": "jax"}
    result = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, check=True, env=env
    )
    assert result.stdout.strip().splitlines()[-1] == "False", result.stderr[-2000:]


@pytest.mark.parametrize("name", ki.list_models())
def test_bn_momentum_reaches_every_batch_norm(name):
    model = ki.get_model(name, bn_momentum=0.9, **SMALL)
    momenta = {
        layer.momentum for layer in model.layers if isinstance(layer, layers.BatchNormalization)
    }
    assert momenta == {0.9}
    with pytest.raises(ValueError, match=r"bn_momentum must be in \[0, 1\); received 1.5"):
        ki.get_model(name, bn_momentum=1.5, **SMALL)
