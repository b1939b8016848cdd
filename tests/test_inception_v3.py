"""InceptionV3: golden counts, keras.applications weight interop, aux head, bad input."""

import dataclasses

import h5py
import keras
import numpy as np
import pytest
from keras.src.legacy.saving import legacy_h5_format

import keras_inception as ki
from keras_inception import analysis
from keras_inception.pretrained import keras_applications

SMALL = dict(stem="small", input_shape=(32, 32, 3), classes=5, width_multiplier=0.25)


def test_golden_counts_match_keras_applications():
    model = ki.build_inception_v3()
    assert model.count_params() == 23_851_784
    assert analysis.macs(model) == 5_713_216_096
    assert ki.build_inception_v3(include_top=False).count_params() == 21_802_784


def test_aux_head_golden_count_and_outputs():
    model = ki.build_inception_v3(aux_logits=True)
    assert model.count_params() == 27_179_376
    assert sorted(model.output) == ["aux", "main"]
    assert ki.default_loss_weights(model) == {"main": 1.0, "aux": 0.4}
    # BN-auxiliary: the head's convolutions follow the network's conv-BN convention
    assert not model.get_layer("aux_5x5_conv").use_bias
    assert model.get_layer("aux_5x5_bn").scale is False
    assert model.get_layer("aux_pool").pool_size == (5, 5)  # 5x5/3 at 17x17
    assert model.get_layer("aux_pool").strides == (3, 3)
    assert ki.strip_aux_heads(model).count_params() == 23_851_784


TORCHVISION = dict(bn_scale=True, count_include_pad=True, aux_pool="torch", dropout=0.5)


def test_torchvision_options_give_torchvisions_counts():
    model = ki.build_inception_v3(**TORCHVISION, aux_logits=True)
    trainable = sum(int(np.prod(w.shape)) for w in model.trainable_weights)
    assert trainable == 27_161_264  # torchvision's Inception3 num_params
    assert model.get_layer("aux_5x5_bn").scale is True
    assert model.get_layer("aux_pool").pool_size == (5, 5)
    assert isinstance(model.get_layer("aux_avgpool"), keras.layers.GlobalAveragePooling2D)
    assert analysis.macs(ki.strip_aux_heads(model)) == 5_713_216_096  # as keras.applications


@pytest.mark.parametrize(("count_include_pad", "corner"), [(False, 1.0), (True, 4 / 9)])
def test_count_include_pad_divides_border_windows_by_nine(count_include_pad, corner):
    model = ki.build_inception_v3(count_include_pad=count_include_pad, **SMALL)
    first = model.get_layer("mixed5b_pool_pad" if count_include_pad else "mixed5b_pool")
    probe = keras.Model(first.input, model.get_layer("mixed5b_pool").output)
    y = probe(np.ones((1, *first.input.shape[1:]), "float32"), training=False)
    assert y.shape[1:3] == first.input.shape[1:3]
    np.testing.assert_allclose(y[0, 0, 0, 0], corner, rtol=1e-6)
    np.testing.assert_allclose(y[0, 1, 1, 0], 1.0, rtol=1e-6)


def test_torch_aux_head_follows_the_input_size():
    model = ki.build_inception_v3(aux_logits=True, aux_pool="torch", input_shape=(355, 355, 3))
    assert tuple(model.get_layer("aux_pool").output.shape[1:3]) == (6, 6)  # 20x20 tap
    assert tuple(model.get_layer("aux_5x5_relu").output.shape[1:3]) == (2, 2)
    with pytest.raises(ValueError, match=r"at least 17x17; received \(16, 16, 768\)"):
        ki.build_inception_v3(aux_logits=True, aux_pool="torch", input_shape=(298, 298, 3))
    with pytest.raises(ValueError, match="aux_pool must be one of"):
        ki.build_inception_v3(aux_pool="slim")


def test_minimum_size_follows_the_valid_padding():
    ki.build_inception_v3(include_top=False, input_shape=(75, 75, 3))
    with pytest.raises(ValueError, match=r"at least 75x75 for inception_v3.*\(74, 80, 3\)"):
        ki.build_inception_v3(include_top=False, input_shape=(74, 80, 3))
    with pytest.raises(ValueError, match=r"at least 107x107.*auxiliary.*\(106, 106, 3\)"):
        ki.build_inception_v3(aux_logits=True, input_shape=(106, 106, 3))
    with pytest.raises(ValueError, match=r"stem must be one of.*'tiny'"):
        ki.build_inception_v3(stem="tiny")


@pytest.mark.parametrize("aux_logits", [False, True])
def test_small_stem_keeps_three_stages_at_32(aux_logits):
    model = ki.build_inception_v3(aux_logits=aux_logits, **SMALL)
    assert model.get_layer("mixed5d_concat").output.shape[1:3] == (32, 32)
    assert model.get_layer("mixed6e_concat").output.shape[1:3] == (15, 15)
    assert model.get_layer("mixed7c_concat").output.shape[1:3] == (7, 7)
    y = model(np.zeros((2, 32, 32, 3), "float32"), training=False)
    main = y["main"] if aux_logits else y
    assert main.shape == (2, 5)
    if aux_logits:
        assert y["aux"].shape == (2, 5)


def test_width_controls_scale_reduce_fields_only():
    table = ki.scale_table(ki.INCEPTION_V3_SPECS, bottleneck_ratio=0.5)
    assert table["6b"].channels_7x7 == 64  # REDUCE: the tuner's knob
    assert table["6b"].out_channels == 768
    assert table["7b"].reduce3x3dbl == 224 and table["7b"].conv3x3dbl == 384
    assert table["stem"] == ki.INCEPTION_V3_SPECS["stem"]
    model = ki.build_inception_v3(include_top=False, bottleneck_ratio=0.5)
    assert model.get_layer("mixed6b_7x7_1_conv").filters == 64
    assert model.output.shape[-1] == 2048


def test_saved_table_rebuilds_the_same_model(tmp_path):
    table = ki.scale_table(ki.INCEPTION_V3_SPECS, width_multiplier=0.5, min_depth=8)
    table["6c"] = dataclasses.replace(table["6c"], channels_7x7=40)
    ki.save_specs(table, tmp_path / "v3.json")
    rebuilt = ki.build_inception_v3(
        specs=ki.load_specs(tmp_path / "v3.json"), stem="small", input_shape=(32, 32, 3)
    )
    assert rebuilt.get_layer("mixed6c_7x7dbl_2_conv").filters == 40
    assert rebuilt.get_layer("conv1a_conv").filters == 16


def _randomize(model, seed=0):
    rng = np.random.default_rng(seed)
    for variable in model.weights:
        shape = tuple(variable.shape)
        if "variance" in variable.path:
            value = rng.uniform(0.5, 1.5, shape)
        else:
            value = rng.normal(0.0, 0.05 if "kernel" in variable.path else 0.1, shape)
        variable.assign(value.astype("float32"))


@pytest.fixture(scope="module")
def keras_files(tmp_path_factory):
    """A keras.applications.InceptionV3 with random weights (BN statistics included),
    saved as `.weights.h5` and as a legacy `.h5` (the format of Keras's ImageNet files),
    with and without the top; its outputs on a fixed batch."""
    keras.utils.clear_session()
    folder = tmp_path_factory.mktemp("keras_v3")
    top = keras.applications.InceptionV3(
        weights=None, input_shape=(75, 75, 3), classes=10, classifier_activation=None
    )
    _randomize(top)
    notop = keras.applications.InceptionV3(weights=None, include_top=False, input_shape=(75, 75, 3))
    notop.set_weights(top.get_weights()[:-2])
    files = {}
    for label, model in (("top", top), ("notop", notop)):
        files[label, "keras3"] = folder / f"{label}.weights.h5"
        model.save_weights(files[label, "keras3"])
        files[label, "legacy"] = folder / f"{label}.h5"
        with h5py.File(files[label, "legacy"], "w") as f:
            legacy_h5_format.save_weights_to_hdf5_group(f, model)
    x = np.random.default_rng(1).normal(size=(2, 75, 75, 3)).astype("float32")
    return {
        "files": files,
        "x": x,
        "logits": top(x, training=False),
        "features": notop(x, training=False),
    }


@pytest.mark.parametrize("fmt", ["keras3", "legacy"])
def test_loads_keras_applications_weights(keras_files, fmt):
    path = keras_files["files"]["top", fmt]
    model = ki.build_inception_v3(
        input_shape=(75, 75, 3), classes=10, classifier_activation=None, weights=path
    )
    y = model(keras_files["x"], training=False)
    np.testing.assert_allclose(y, keras_files["logits"], rtol=1e-5, atol=1e-5)


def test_loads_keras_applications_weights_with_aux_head(keras_files):
    # a legacy .h5, the format of Keras's ImageNet files; the aux head needs 107 px
    path = keras_files["files"]["top", "legacy"]
    aux = ki.build_inception_v3(
        input_shape=(107, 107, 3), classes=10, aux_logits=True, weights=path
    )
    reference = keras.applications.InceptionV3(weights=None, input_shape=(107, 107, 3), classes=10)
    reference.load_weights(path)
    x = np.random.default_rng(2).normal(size=(1, 107, 107, 3)).astype("float32")
    np.testing.assert_allclose(
        aux(x, training=False)["main"], reference(x, training=False), rtol=1e-5, atol=1e-6
    )
    assert aux.get_layer("aux").get_weights()[0].shape == (768, 10)  # fresh, not loaded


@pytest.mark.parametrize("fmt", ["keras3", "legacy"])
@pytest.mark.parametrize("file_top", ["top", "notop"])
def test_loads_keras_applications_features(keras_files, fmt, file_top):
    model = ki.build_inception_v3(
        include_top=False, input_shape=(75, 75, 3), weights=keras_files["files"][file_top, fmt]
    )
    y = model(keras_files["x"], training=False)
    np.testing.assert_allclose(y, keras_files["features"], rtol=1e-5, atol=1e-5)


def test_file_without_top_leaves_classifier_initialized(keras_files, tmp_path):
    model = ki.build_inception_v3(
        input_shape=(75, 75, 3), classes=10, weights=keras_files["files"]["notop", "keras3"]
    )
    features = ki.feature_model(model, ["mixed7c"])
    np.testing.assert_allclose(
        features(keras_files["x"], training=False)["mixed7c"],
        keras_files["features"],
        rtol=1e-5,
        atol=1e-5,
    )
    # the model's own save_weights file loads back too
    model.save_weights(tmp_path / "own.weights.h5")
    again = ki.build_inception_v3(
        input_shape=(75, 75, 3), classes=10, weights=tmp_path / "own.weights.h5"
    )
    np.testing.assert_array_equal(
        again.get_layer("predictions").get_weights()[0],
        model.get_layer("predictions").get_weights()[0],
    )


def test_mismatched_weights_are_refused_with_the_reasons(keras_files):
    path = keras_files["files"]["top", "keras3"]
    with pytest.raises(
        ValueError,
        match=r"tensor 'conv2d_0/kernel' has shape \(3, 3, 3, 32\), which does not fit "
        r"Keras weight 'conv1a_conv/kernel' of shape \(3, 3, 3, 16\)",
    ):
        ki.build_inception_v3(
            include_top=False, input_shape=(75, 75, 3), width_multiplier=0.5, weights=path
        )
    with pytest.raises(FileNotFoundError, match="missing.h5"):
        ki.build_inception_v3(weights="missing.h5")


def test_keras_applications_names_follow_its_creation_order():
    """keras.applications auto-names its layers in the order its source creates them:
    the i-th conv2d is our INCEPTION_V3_ORDER[i], with the same kernel shape."""
    reference = keras.applications.InceptionV3(weights=None, input_shape=(75, 75, 3))
    state = keras_applications.reference_state(reference)
    model = ki.build_inception_v3(input_shape=(75, 75, 3))
    order = keras_applications.INCEPTION_V3_ORDER
    assert len(order) == 94 and order[7] == "mixed5b_5x5" and order[-1] == "mixed7c_pool_proj"
    for i, name in enumerate(order):
        assert state[f"conv2d_{i}/kernel"].shape == model.get_layer(f"{name}_conv").kernel.shape
    assert sorted(k for k in state if k.startswith("batch_normalization_93/")) == [
        "batch_normalization_93/beta",
        "batch_normalization_93/moving_mean",
        "batch_normalization_93/moving_variance",
    ]


def test_another_network_is_refused_naming_the_first_misfit(keras_files):
    """InceptionV2's 7x7 stem convolution has no keras.applications counterpart."""
    path = str(keras_files["files"]["notop", "keras3"])
    state = keras_applications.CONVERTER.read(path)
    other = ki.build_inception_v2(include_top=False, input_shape=(75, 75, 3))
    with pytest.raises(ValueError, match=r"'conv2d_0/kernel' has shape .* 'conv1a_conv/kernel'"):
        keras_applications.CONVERTER.fill("inception_v3", other, state, path=path)
    with pytest.raises(ValueError, match="'mixed9z_1x1' has no counterpart"):
        keras_applications.CONVERTER.scope("inception_v3", "mixed9z_1x1")


def test_imagenet_fails_clearly_when_offline(monkeypatch):
    def offline(*args, **kwargs):
        raise Exception("URL fetch failure: no network")  # what keras.utils.get_file raises

    monkeypatch.setattr(keras.utils, "get_file", offline)
    with pytest.raises(RuntimeError, match=r"could not fetch the ImageNet weights.*offline"):
        ki.build_inception_v3(weights="imagenet")
    with pytest.raises(ValueError, match="needs classes=1000; received 10"):
        ki.build_inception_v3(weights="imagenet", classes=10)
