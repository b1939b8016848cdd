"""Custom layers against a NumPy reference, and their config round trip."""

import keras
import numpy as np
import pytest

from keras_inception.layers import LocalResponseNormalization


def lrn_reference(x, radius, bias, alpha, beta):
    channels = x.shape[-1]
    out = np.empty_like(x)
    for c in range(channels):
        lo, hi = max(0, c - radius), min(channels, c + radius + 1)
        window = np.sum(x[..., lo:hi] ** 2, axis=-1)
        out[..., c] = x[..., c] / (bias + alpha / (2 * radius + 1) * window) ** beta
    return out


@pytest.mark.parametrize("radius", [0, 2, 3])
def test_lrn_matches_caffe_formula(radius):
    x = np.random.default_rng(0).normal(scale=30.0, size=(2, 3, 3, 11)).astype("float32")
    layer = LocalResponseNormalization(depth_radius=radius, bias=2.0, alpha=1e-2, beta=0.75)
    np.testing.assert_allclose(
        keras.ops.convert_to_numpy(layer(x)), lrn_reference(x, radius, 2.0, 1e-2, 0.75), rtol=1e-5
    )


def test_lrn_config_round_trip():
    layer = LocalResponseNormalization(depth_radius=3, alpha=2e-4, name="norm")
    clone = LocalResponseNormalization.from_config(layer.get_config())
    assert clone.get_config() == layer.get_config()
    assert keras.saving.get_registered_object("keras_inception>LocalResponseNormalization")


def test_lrn_rejects_bad_radius():
    with pytest.raises(ValueError, match="received -1"):
        LocalResponseNormalization(depth_radius=-1)
