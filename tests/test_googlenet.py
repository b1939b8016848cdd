"""GoogLeNet: exact counts against the paper and torchvision, options, bad input."""

import dataclasses

import keras
import numpy as np
import pytest
from keras import layers

import keras_inception as ki
from keras_inception import analysis


def trainable_count(model: keras.Model) -> int:
    return sum(int(np.prod(w.shape)) for w in model.trainable_weights)


def convs(model: keras.Model) -> dict[str, layers.Conv2D]:
    return {layer.name: layer for layer in model.layers if isinstance(layer, layers.Conv2D)}


# --- exactness -------------------------------------------------------------------------


def test_paper_network_counts():
    model = ki.build_googlenet(batch_norm=False)
    assert model.count_params() == 6_998_552
    assert analysis.macs(model) == 1_582_671_872


def test_torchvision_layout_counts():
    model = ki.build_googlenet(batch_norm=True, branch5x5_kernel=3)
    assert trainable_count(model) == 6_624_904
    assert analysis.macs(model) == 1_498_376_192


def test_torchvision_layout_with_aux_counts():
    model = ki.build_googlenet(batch_norm=True, branch5x5_kernel=3, aux_logits=True)
    assert trainable_count(model) == 13_004_888


def test_paper_network_shapes_follow_table_1():
    model = ki.build_googlenet(batch_norm=False)
    expected = {
        "conv1_relu": (112, 112, 64),
        "pool1": (56, 56, 64),
        "conv2_3x3_relu": (56, 56, 192),
        "pool2": (28, 28, 192),
        "inception3a_concat": (28, 28, 256),
        "inception3b_concat": (28, 28, 480),
        "pool4": (14, 14, 480),
        "inception4e_concat": (14, 14, 832),
        "pool5": (7, 7, 832),
        "inception5b_concat": (7, 7, 1024),
    }
    for name, shape in expected.items():
        assert tuple(model.get_layer(name).output.shape[1:]) == shape, name


def test_paper_network_has_bias_and_lrn_no_batch_norm():
    model = ki.build_googlenet(batch_norm=False)
    assert all(conv.use_bias for conv in convs(model).values())
    assert not [lyr for lyr in model.layers if isinstance(lyr, layers.BatchNormalization)]
    lrn = [lyr.name for lyr in model.layers if isinstance(lyr, ki.LocalResponseNormalization)]
    assert lrn == ["norm1", "norm2"]


def test_batch_norm_network_has_no_bias_and_no_lrn():
    model = ki.build_googlenet()
    assert not any(conv.use_bias for conv in convs(model).values())
    assert not [lyr for lyr in model.layers if isinstance(lyr, ki.LocalResponseNormalization)]
    bns = [lyr for lyr in model.layers if isinstance(lyr, layers.BatchNormalization)]
    assert len(bns) == len(convs(model))


@pytest.mark.parametrize("kernel", [3, 5])
def test_branch5x5_kernel(kernel):
    model = ki.build_googlenet(branch5x5_kernel=kernel)
    assert model.get_layer("inception3a_5x5_conv").kernel_size == (kernel, kernel)


# --- torchvision's layout ----------------------------------------------------------------

# What keras_inception.pretrained.torchvision builds; outputs are compared with torch's in
# test_torchvision_weights.py.
TORCHVISION = dict(
    branch5x5_kernel=3, padding="torch", pool5_kernel=2, aux_pool="torch", dropout=0.2
)


def test_torchvision_options_give_torchvisions_counts():
    model = ki.build_googlenet(**TORCHVISION, aux_logits=True)
    assert trainable_count(model) == 13_004_888  # GoogLeNet(aux_logits=True)
    inference = ki.strip_aux_heads(model)
    assert trainable_count(inference) == 6_624_904  # torchvision's num_params
    assert analysis.macs(inference) == 1_498_376_192  # torchvision's 1.498 GFLOPS
    assert model.get_layer("conv1_pad").padding == ((3, 3), (3, 3))
    assert model.get_layer("pool5").pool_size == (2, 2)
    assert isinstance(model.get_layer("aux1_pool"), ki.AdaptiveAveragePooling2D)


@pytest.mark.parametrize(
    ("padding", "sides"), [("same", (114, 57, 29, 15, 8)), ("torch", (114, 57, 28, 14, 7))]
)
def test_padding_differs_from_same_at_an_odd_size(padding, sides):
    """torch's ceil-mode pools and padded conv1 at 227 (equal to "same" at 224)."""
    model = ki.build_googlenet(
        padding=padding, pool5_kernel=2, include_top=False, input_shape=(227, 227, 3)
    )
    names = ("conv1_relu", "pool1", "pool2", "pool4", "pool5")
    assert tuple(model.get_layer(n).output.shape[1] for n in names) == sides


def test_torchvision_layout_round_trips_as_a_keras_file(tmp_path):
    model = ki.build_googlenet(
        **TORCHVISION,
        transform_input=True,
        aux_logits=True,
        input_shape=(67, 67, 3),
        classes=4,
        width_multiplier=0.25,
    )
    assert not [lyr for lyr in model.layers if isinstance(lyr, layers.Lambda)]
    x = np.random.default_rng(0).uniform(-2, 2, size=(2, 67, 67, 3)).astype("float32")
    expected = model(x, training=False)
    model.save(tmp_path / "g.keras")
    loaded = keras.saving.load_model(tmp_path / "g.keras", safe_mode=True)
    y = loaded(x, training=False)
    for key in ("main", "aux1", "aux2"):
        np.testing.assert_allclose(y[key], expected[key], rtol=1e-5, atol=1e-5)


# --- auxiliary heads -------------------------------------------------------------------


def test_aux_outputs_are_named_dict():
    model = ki.build_googlenet(aux_logits=True, classes=7, input_shape=(96, 96, 3))
    assert sorted(model.output) == ["aux1", "aux2", "main"]
    for key, tensor in model.output.items():
        assert tuple(tensor.shape) == (None, 7)
        assert model.get_layer(key).output is tensor
    # aux1 reads 4a, aux2 reads 4d
    assert model.get_layer("aux1_pool").input is model.get_layer("inception4a_concat").output
    assert model.get_layer("aux2_pool").input is model.get_layer("inception4d_concat").output


def test_aux_head_is_the_papers_at_224():
    model = ki.build_googlenet(aux_logits=True)
    pool = model.get_layer("aux1_pool")
    assert pool.pool_size == (5, 5) and pool.strides == (3, 3)
    assert tuple(pool.output.shape[1:]) == (4, 4, 512)
    assert model.get_layer("aux1_1x1_conv").filters == 128
    assert model.get_layer("aux1_fc").units == 1024
    assert model.get_layer("aux1_dropout").rate == 0.7


@pytest.mark.parametrize("side", [64, 100, 160, 299, 320])
def test_aux_pool_stays_4x4_at_other_sizes(side):
    model = ki.build_googlenet(aux_logits=True, input_shape=(side, side, 3), classes=5)
    for key in ("aux1", "aux2"):
        assert tuple(model.get_layer(f"{key}_pool").output.shape[1:3]) == (4, 4)
        assert model.get_layer(f"{key}_fc").kernel.shape == (2048, 1024)


def test_strip_aux_heads_shares_weights_and_matches_main():
    model = ki.build_googlenet(
        aux_logits=True, stem="small", input_shape=(32, 32, 1), classes=4, width_multiplier=0.25
    )
    inference = ki.strip_aux_heads(model)
    assert not isinstance(inference.output, dict)
    assert tuple(inference.output.shape) == (None, 4)
    ids = {id(v) for v in model.weights}
    assert all(id(v) in ids for v in inference.weights)
    assert not any(layer.name.startswith("aux") for layer in inference.layers)
    x = np.random.default_rng(0).normal(size=(3, 32, 32, 1)).astype("float32")
    np.testing.assert_allclose(
        inference(x, training=False), model(x, training=False)["main"], rtol=1e-5, atol=1e-6
    )
    plain = ki.build_googlenet(input_shape=(32, 32, 1), stem="small", width_multiplier=0.25)
    assert ki.strip_aux_heads(plain) is plain


def test_default_loss_weights():
    model = ki.build_googlenet(aux_logits=True, input_shape=(64, 64, 3))
    assert ki.default_loss_weights(model) == {"main": 1.0, "aux1": 0.3, "aux2": 0.3}


# large: the fast suite trains the auxiliary heads with these weights through `training`
# (test_training's test_aux_targets_fan_out_and_loss_falls checks the weighted sum).
@pytest.mark.large
def test_aux_model_trains_with_loss_weights():
    import tensorflow as tf

    # Under a strategy, as training/ runs it: Keras then builds the loss and optimizer state
    # before tracing, where without one it traces the train step twice (about 10 s here).
    with tf.distribute.OneDeviceStrategy("/cpu:0").scope():
        model = ki.build_googlenet(
            aux_logits=True, stem="small", input_shape=(16, 16, 1), classes=3,
            width_multiplier=0.125, min_depth=4,
        )  # fmt: skip
        model.compile(
            optimizer="adam",
            loss={key: "sparse_categorical_crossentropy" for key in model.output},
            loss_weights=ki.default_loss_weights(model),
            metrics={"main": ["accuracy"]},
        )
    rng = np.random.default_rng(0)
    x = rng.normal(size=(8, 16, 16, 1)).astype("float32")
    y = rng.integers(0, 3, size=(8,))
    history = model.fit(
        x, {"main": y, "aux1": y, "aux2": y}, validation_data=(x, {"main": y, "aux1": y, "aux2": y}),
        epochs=1, verbose=0,
    )  # fmt: skip
    assert "val_main_accuracy" in history.history
    assert {"aux1_loss", "aux2_loss"} <= set(history.history)
    main, aux1, aux2 = (history.history[f"{key}_loss"][0] for key in ("main", "aux1", "aux2"))
    assert history.history["loss"][0] == pytest.approx(main + 0.3 * aux1 + 0.3 * aux2, rel=1e-3)


# --- stems and width controls ----------------------------------------------------------


def test_small_stem_grayscale_fashion_mnist_shapes():
    model = ki.build_googlenet(stem="small", input_shape=(28, 28, 1), classes=10)
    assert tuple(model.get_layer("inception3a_concat").output.shape[1:3]) == (28, 28)
    assert tuple(model.get_layer("inception4a_concat").output.shape[1:3]) == (14, 14)
    assert tuple(model.get_layer("inception5b_concat").output.shape[1:3]) == (7, 7)
    assert model.get_layer("conv1_conv").kernel.shape == (3, 3, 1, 64)
    assert "pool1" not in {layer.name for layer in model.layers}


def test_small_pool_stem_halves_the_maps_after_the_small_stem():
    model = ki.build_googlenet(stem="small_pool", input_shape=(28, 28, 1), classes=10)
    small = ki.build_googlenet(stem="small", input_shape=(28, 28, 1), classes=10)
    assert tuple(model.get_layer("conv2_3x3_relu").output.shape[1:3]) == (28, 28)
    assert tuple(model.get_layer("pool2").output.shape[1:3]) == (14, 14)
    assert tuple(model.get_layer("inception4a_concat").output.shape[1:3]) == (7, 7)
    assert tuple(model.get_layer("inception5b_concat").output.shape[1:3]) == (4, 4)
    assert model.count_params() == small.count_params() == 5_996_810
    # Same layers: the stem at 28x28, stages 3 and 4 on a quarter of the small stem's
    # positions (14x14, 7x7), stage 5 on 4x4 of 7x7, the classifier unchanged.
    scale = {"3": 14 * 14 / (28 * 28), "4": 7 * 7 / (14 * 14), "5": 4 * 4 / (7 * 7)}
    expected = sum(
        row.macs * scale.get(row.module.removeprefix("inception")[:1], 1)
        for row in analysis.rows(small)
    )
    assert analysis.macs(model) == expected == 375_689_984


# Widths derived by hand from Table 1 with TF-Slim's depth rule (int(width * multiplier),
# at least min_depth=16), not by the code under test. TF-Slim's inception_v1 takes no
# depth_multiplier, so there is no published golden network at these widths. Stem: conv1,
# the 1x1 reduce, the 3x3; modules: 1x1, 3x3 reduce, 3x3, 5x5 reduce, 5x5, pool proj.
HAND_WIDTHS = {
    0.5: {
        "conv1": 32, "conv2_3x3_reduce": 32, "conv2_3x3": 96,
        "inception3a": (32, 48, 64, 16, 16, 16),  # 5x5 reduce 16 * 0.5 = 8 -> 16
        "inception4e": (128, 80, 160, 16, 64, 64),
        "inception5b": (192, 96, 192, 24, 64, 64),
    },
    0.25: {
        "conv1": 16, "conv2_3x3_reduce": 16, "conv2_3x3": 48,
        "inception3a": (16, 24, 32, 16, 16, 16),
        "inception4e": (64, 40, 80, 16, 32, 32),
        "inception5b": (96, 48, 96, 16, 32, 32),
    },
}  # fmt: skip
MODULE_CONVS = ("1x1", "3x3_reduce", "3x3", "5x5_reduce", "5x5", "pool_proj")


@pytest.mark.parametrize("multiplier", sorted(HAND_WIDTHS))
def test_width_multiplier_gives_the_hand_derived_widths(multiplier):
    model = ki.build_googlenet(width_multiplier=multiplier, min_depth=16, include_top=False)
    found = convs(model)
    for name, expected in HAND_WIDTHS[multiplier].items():
        if isinstance(expected, int):
            assert found[f"{name}_conv"].filters == expected, name
            continue
        widths = tuple(found[f"{name}_{part}_conv"].filters for part in MODULE_CONVS)
        assert widths == expected, name
        out = expected[0] + expected[2] + expected[4] + expected[5]
        assert model.get_layer(f"{name}_concat").output.shape[-1] == out, name


def test_bottleneck_ratio_scales_only_module_reduce_convs():
    """Hand-derived: the 3x3 and 5x5 reduces of 3a (96, 16) and 4e (160, 32) halve; the
    stem's reduce and every module's output keep Table 1's widths."""
    model = ki.build_googlenet(bottleneck_ratio=0.5, min_depth=1, include_top=False)
    found = convs(model)
    assert found["conv2_3x3_reduce_conv"].filters == 64
    for name, expected, out in (
        ("inception3a", (64, 48, 128, 8, 32, 32), 256),
        ("inception4e", (256, 80, 320, 16, 128, 128), 832),
    ):
        widths = tuple(found[f"{name}_{part}_conv"].filters for part in MODULE_CONVS)
        assert widths == expected, name
        assert model.get_layer(f"{name}_concat").output.shape[-1] == out, name


def test_stem_is_the_declared_table():
    """Each stem's layers are its `GOOGLENET_STEM_LAYERS` row, in order (LRN without
    batch norm only), and "torch" padding adds a pad layer in front of each stride-2 one."""
    from keras_inception.googlenet import GOOGLENET_STEM_LAYERS

    assert [layer.name for layer in GOOGLENET_STEM_LAYERS["imagenet"]] == [
        "conv1", "pool1", "norm1", "conv2_3x3_reduce", "conv2_3x3", "norm2", "pool2",
    ]  # fmt: skip
    model = ki.build_googlenet(batch_norm=False, padding="torch", include_top=False)
    names = [layer.name for layer in model.layers]
    stem = names[1 : names.index("inception3a_1x1_conv")]
    assert [n for n in stem if not n.startswith("inception3a")] == [
        "conv1_pad", "conv1_conv", "conv1_relu", "pool1_pad", "pool1", "norm1",
        "conv2_3x3_reduce_conv", "conv2_3x3_reduce_relu", "conv2_3x3_conv", "conv2_3x3_relu",
        "norm2", "pool2_pad", "pool2",
    ]  # fmt: skip


def test_specs_table_overrides_widths():
    table = dict(ki.GOOGLENET_SPECS)
    table["3a"] = dataclasses.replace(table["3a"], reduce3x3=8, conv3x3=40)
    model = ki.build_googlenet(specs=table)
    assert model.get_layer("inception3a_3x3_reduce_conv").filters == 8
    assert model.get_layer("inception3a_concat").output.shape[-1] == 64 + 40 + 32 + 32


def test_include_top_false_and_pooling():
    features = ki.build_googlenet(include_top=False)
    assert tuple(features.output.shape) == (None, None, None, 1024)
    avg = ki.build_googlenet(include_top=False, pooling="avg", input_shape=(128, 128, 3))
    assert tuple(avg.output.shape) == (None, 1024)
    mx = ki.build_googlenet(include_top=False, pooling="max", input_shape=(128, 128, 3))
    assert isinstance(mx.layers[-1], layers.GlobalMaxPooling2D)


def test_input_tensor_and_logits():
    inputs = keras.Input((64, 64, 3))
    model = ki.build_googlenet(input_tensor=inputs, classes=3, classifier_activation=None)
    assert model.inputs[0] is inputs
    assert model.get_layer("predictions").activation is keras.activations.linear
    x = np.ones((2, 64, 64, 3), "float32")
    assert model(x, training=False).shape == (2, 3)


def test_weights_path_round_trip(tmp_path):
    kwargs = dict(stem="small", input_shape=(16, 16, 1), classes=3, width_multiplier=0.25)
    model = ki.build_googlenet(**kwargs)
    path = tmp_path / "g.weights.h5"
    model.save_weights(path)
    loaded = ki.build_googlenet(weights=str(path), **kwargs)
    for a, b in zip(model.weights, loaded.weights, strict=True):
        np.testing.assert_array_equal(a.numpy(), b.numpy())


# --- bad input -------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"input_shape": (31, 224, 3)}, "at least 32x32"),
        ({"input_shape": (63, 63, 3), "aux_logits": True}, "at least 64x64"),
        ({"input_shape": (3, 3, 1), "stem": "small"}, "at least 4x4"),
        ({"input_shape": (7, 7, 1), "stem": "small", "aux_logits": True}, "at least 8x8"),
        ({"input_shape": (7, 7, 1), "stem": "small_pool"}, "at least 8x8"),
        ({"input_shape": (15, 15, 1), "stem": "small_pool", "aux_logits": True}, "16x16"),
        ({"input_shape": (224, 224)}, "(224, 224)"),
        ({"input_shape": (224, -1, 3)}, "-1"),
        ({"input_shape": (None, None, 3), "aux_logits": True}, "fixed input size"),
        ({"classes": 0}, "received 0"),
        ({"aux_logits": True, "include_top": False}, "include_top=False"),
        ({"width_multiplier": 0}, "width_multiplier must be a positive number; received 0"),
        ({"bottleneck_ratio": -0.5}, "received -0.5"),
        ({"min_depth": 0}, "min_depth must be a positive integer; received 0"),
        ({"stem": "tiny"}, "'tiny'"),
        ({"pooling": "mean", "include_top": False}, "'mean'"),
        ({"branch5x5_kernel": 7}, "received 7"),
        ({"padding": "valid"}, "padding must be one of ['same', 'torch']; received 'valid'"),
        ({"pool5_kernel": 4}, "pool5_kernel must be 2 or 3; received 4"),
        ({"aux_pool": "adaptive"}, "aux_pool must be one of ['uniform', 'torch']; received"),
        ({"transform_input": True, "input_shape": (64, 64, 1)}, "3 channels); received"),
        ({"dropout": 1.0}, "received 1.0"),
        ({"weights": "imagenet"}, "weights='imagenet'"),
        ({"specs": {"stem": ki.GOOGLENET_SPECS["stem"]}}, "missing modules ['3a'"),
    ],
)
def test_bad_input_raises_value_error_naming_it(kwargs, message):
    with pytest.raises(ValueError) as info:
        ki.build_googlenet(**kwargs)
    assert message in str(info.value)


def test_specs_with_unknown_or_wrong_kind_modules():
    with pytest.raises(ValueError, match=r"unknown modules \['6a'\]"):
        ki.build_googlenet(specs={**ki.GOOGLENET_SPECS, "6a": ki.GOOGLENET_SPECS["5b"]})
    with pytest.raises(ValueError, match=r"specs\['3a'\] for googlenet must be a V1Module"):
        ki.build_googlenet(specs={**ki.GOOGLENET_SPECS, "3a": ki.GOOGLENET_SPECS["stem"]})


def test_missing_weights_file_raises_file_not_found(tmp_path):
    missing = tmp_path / "nope.weights.h5"
    with pytest.raises(FileNotFoundError, match="nope.weights.h5"):
        ki.build_googlenet(weights=str(missing))
