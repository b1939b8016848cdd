"""Custom layers against a NumPy reference, and their config round trip."""

import json
import zipfile

import keras
import numpy as np
import pytest

import keras_inception as ki
from keras_inception.layers import (
    LegacyAdaptiveAveragePooling2D,
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


def _torch_adaptive_pool(x, output_size):
    """NumPy reference: the mean over each pair of `adaptive_pool_bins` (torch's bins)."""
    rows = adaptive_pool_bins(x.shape[1], output_size)
    cols = adaptive_pool_bins(x.shape[2], output_size)
    return np.stack(
        [np.stack([x[:, t:b, lft:r].mean(axis=(1, 2)) for lft, r in cols], 1) for t, b in rows], 1
    )


def test_keras_adaptive_average_pooling_has_torchs_bins():
    """Keras's layer replaces ours: at output 4 (GoogLeNet's torch auxiliary pool) it
    averages torch's bins at every side from 1 to 40, overlapping bins included."""
    assert ki.AdaptiveAveragePooling2D is keras.layers.AdaptiveAveragePooling2D
    rng = np.random.default_rng(0)
    for height in range(1, 41):
        for width in (height, 13):
            x = rng.normal(size=(2, height, width, 3)).astype("float32")
            layer = keras.layers.AdaptiveAveragePooling2D(4, data_format="channels_last")
            np.testing.assert_allclose(
                keras.ops.convert_to_numpy(layer(x)),
                _torch_adaptive_pool(x, 4),
                rtol=1e-5,
                atol=1e-6,
                err_msg=f"{height}x{width}",
            )


# What `AdaptiveAveragePooling2D(4, name="pool")` of keras_inception before issue 32 wrote
# into a `.keras` file's config.json (this package's own layer, copied from such a file).
OLD_POOL_ENTRY = {
    "module": "keras_inception.layers",
    "class_name": "AdaptiveAveragePooling2D",
    "config": {
        "name": "pool",
        "trainable": True,
        "dtype": {
            "module": "keras",
            "class_name": "DTypePolicy",
            "config": {"name": "float32"},
            "registered_name": None,
        },
        "output_size": 4,
    },
    "registered_name": "keras_inception>AdaptiveAveragePooling2D",
}


def _pool_entries(path):
    with zipfile.ZipFile(path) as archive:
        config = json.loads(archive.read("config.json"))
    return config, [e for e in config["config"]["layers"] if e["name"].startswith("pool")]


def test_files_with_the_old_adaptive_pool_still_load(tmp_path):
    inputs = keras.Input((14, 14, 3), name="image")
    x = keras.layers.AdaptiveAveragePooling2D(4, data_format="channels_last", name="pool")(inputs)
    x = keras.layers.Conv2D(5, 1, name="conv")(x)
    x = keras.layers.AdaptiveAveragePooling2D(2, data_format="channels_last", name="pool2")(x)
    model = keras.Model(inputs, x)
    images = np.random.default_rng(1).normal(size=(2, 14, 14, 3)).astype("float32")
    expected = keras.ops.convert_to_numpy(model(images))
    new_file, old_file = tmp_path / "new.keras", tmp_path / "old.keras"
    model.save(new_file)
    # The same file as the old layer wrote it: its entries in config.json, same weights.
    config, entries = _pool_entries(new_file)
    for entry in entries:
        name, size = entry["name"], entry["config"]["output_size"][0]
        old = json.loads(json.dumps(OLD_POOL_ENTRY))
        old["config"].update(name=name, output_size=size)
        entry.update(old, name=name)
    with zipfile.ZipFile(new_file) as src, zipfile.ZipFile(old_file, "w") as dst:
        for item in src.namelist():
            data = json.dumps(config) if item == "config.json" else src.read(item)
            dst.writestr(item, data)
    assert _pool_entries(old_file)[1][0]["registered_name"] == OLD_POOL_ENTRY["registered_name"]

    loaded = keras.saving.load_model(old_file, safe_mode=True)
    assert type(loaded.get_layer("pool")) is LegacyAdaptiveAveragePooling2D
    np.testing.assert_allclose(keras.ops.convert_to_numpy(loaded(images)), expected, rtol=1e-6)
    # Saved again, it is Keras's own layer: the file loads without this package.
    loaded.save(tmp_path / "again.keras")
    for entry in _pool_entries(tmp_path / "again.keras")[1]:
        assert (entry["module"], entry["registered_name"]) == ("keras.layers", None)
