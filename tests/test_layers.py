"""Custom layers against a NumPy reference, and their config round trip."""

import keras
import numpy as np
import pytest

from keras_inception.layers import (
    AdaptiveAveragePooling2D,
    LocalResponseNormalization,
    adaptive_pool_bins,
)


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


def test_adaptive_pool_bins_are_torchs():
    assert adaptive_pool_bins(14, 4) == [(0, 4), (3, 7), (7, 11), (10, 14)]
    assert adaptive_pool_bins(7, 1) == [(0, 7)]
    assert adaptive_pool_bins(5, 3) == [(0, 2), (1, 4), (3, 5)]


def test_adaptive_average_pooling_means_each_bin_and_round_trips():
    x = np.random.default_rng(0).normal(size=(2, 14, 13, 3)).astype("float32")
    layer = AdaptiveAveragePooling2D(4, name="pool")
    y = keras.ops.convert_to_numpy(layer(x))
    rows, cols = adaptive_pool_bins(14, 4), adaptive_pool_bins(13, 4)
    for i, (top, bottom) in enumerate(rows):
        for j, (left, right) in enumerate(cols):
            expected = x[:, top:bottom, left:right].mean(axis=(1, 2))
            np.testing.assert_allclose(y[:, i, j], expected, rtol=1e-5, atol=1e-6)
    clone = AdaptiveAveragePooling2D.from_config(layer.get_config())
    assert clone.output_size == 4
    with pytest.raises(ValueError, match="output_size must be a positive integer; received 0"):
        AdaptiveAveragePooling2D(0)
