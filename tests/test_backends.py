"""The same weights give the same outputs on every Keras backend (TensorFlow and JAX).

The builders use `keras.layers` and `keras.ops` only, so a model built on the JAX backend
and given the weights a TensorFlow model saved must compute what that model computes: not
only the same shapes. The JAX side runs in a fresh process (the backend is chosen at
import) and must not import TensorFlow.
"""

import os
import subprocess
import sys
import textwrap

import numpy as np
import pytest

import keras_inception as ki

# GoogLeNet with batch norm (the fused BN layer), the paper's GoogLeNet (LRN), and
# InceptionV3 (whose builder BN-Inception and InceptionV2 share). In the fast suite,
# tests/test_fused_batchnorm.py runs a model on JAX without TensorFlow.
CASES = {
    "googlenet-bn": ("googlenet", dict(stem="small", batch_norm=True)),
    "googlenet-lrn": ("googlenet", dict(stem="small", batch_norm=False)),
    "inception_v3": ("inception_v3", dict(stem="small")),
}
SMALL = dict(input_shape=(32, 32, 1), classes=5, width_multiplier=0.25, aux_logits=True)


@pytest.mark.parametrize(
    "case",
    [pytest.param(c, marks=pytest.mark.large) for c in CASES],  # ~30 s each: a JAX process
)
def test_jax_outputs_equal_tensorflow_outputs(case, tmp_path):
    name, extra = CASES[case]
    kwargs = {**extra, **SMALL}
    model = ki.get_model(name, **kwargs)
    rng = np.random.default_rng(0)
    # Random BN statistics and weights far from their initial values, so that a layer
    # that ignored a weight on one backend would change the outputs.
    model.set_weights([rng.normal(0.0, 0.2, w.shape).astype("float32") for w in model.weights])
    for layer in model.layers:
        if hasattr(layer, "moving_variance"):
            layer.moving_variance.assign(rng.uniform(0.5, 1.5, layer.moving_variance.shape))
    x = rng.uniform(0.0, 1.0, (2, 32, 32, 1)).astype("float32")
    expected = {k: np.asarray(v) for k, v in model(x, training=False).items()}
    weights = str(tmp_path / "model.weights.h5")
    model.save_weights(weights)
    np.save(tmp_path / "x.npy", x)

    script = textwrap.dedent(
        f"""
        import sys, numpy as np, keras
        import keras_inception as ki
        assert keras.backend.backend() == "jax"
        model = ki.get_model({name!r}, **{kwargs!r})
        model.load_weights({weights!r})
        out = model(np.load({str(tmp_path / "x.npy")!r}), training=False)
        np.savez({str(tmp_path / "jax.npz")!r}, **{{k: np.asarray(v) for k, v in out.items()}})
        print("tensorflow" in sys.modules)
        """
    )
    env = {**os.environ, "KERAS_BACKEND": "jax"}
    result = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, env=env, timeout=300
    )
    assert result.returncode == 0, result.stderr[-3000:]
    assert result.stdout.strip().splitlines()[-1] == "False", "JAX process imported TensorFlow"
    got = np.load(tmp_path / "jax.npz")
    assert sorted(got.files) == sorted(expected)
    for key, value in expected.items():
        np.testing.assert_allclose(got[key], value, rtol=1e-4, atol=1e-5, err_msg=key)
