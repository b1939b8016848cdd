"""feature_model: multi-scale features at strides 8/16/32 for every family."""

import keras
import numpy as np
import pytest

import keras_inception as ki


@pytest.mark.parametrize(
    ("builder", "kwargs", "expected"),
    [
        (ki.build_inception_v3, {"input_shape": (299, 299, 3)},
         {"mixed5d": (35, 35, 288), "mixed6e": (17, 17, 768), "mixed7c": (8, 8, 2048)}),
        (ki.build_inception_v2, {"variant": "bn_inception", "input_shape": (224, 224, 3)},
         {"mixed3c": (28, 28, 320), "mixed4e": (14, 14, 576), "mixed5c": (7, 7, 1024)}),
        (ki.build_googlenet, {"input_shape": (224, 224, 3)},
         {"inception3b": (28, 28, 480), "inception4e": (14, 14, 832), "inception5b": (7, 7, 1024)}),
    ],
)  # fmt: skip
def test_default_features_are_the_last_module_of_each_stage(builder, kwargs, expected):
    built = builder(include_top=False, **kwargs)
    model = ki.feature_model(built)
    assert {name: tuple(t.shape[1:]) for name, t in model.output.items()} == expected
    # declared with the same widths, at reductions 8, 16, 32 (as timm's feature_info)
    assert [(i.name, i.channels, i.reduction) for i in built.feature_info] == [
        (name, shape[-1], reduction)
        for (name, shape), reduction in zip(expected.items(), (8, 16, 32), strict=True)
    ]


@pytest.mark.parametrize(
    ("name", "stem", "expected"),
    [
        ("googlenet", "small", [("inception3b", 120, 1), ("inception4e", 208, 2), ("inception5b", 256, 4)]),
        ("googlenet", "small_pool", [("inception3b", 120, 2), ("inception4e", 208, 4), ("inception5b", 256, 8)]),
        ("inception_v3", "small", [("mixed5d", 72, 1), ("mixed6e", 192, 2), ("mixed7c", 512, 4)]),
        ("inception_v2", "small", [("mixed5d", 72, 1), ("mixed6e", 192, 2), ("mixed7c", 512, 4)]),
        ("bn_inception", "small", [("mixed3c", 80, 1), ("mixed4e", 144, 2), ("mixed5c", 256, 4)]),
    ],
)  # fmt: skip
def test_feature_info_follows_stem_and_widths(name, stem, expected):
    """Channels at width_multiplier=0.25 derived by hand from the paper tables (e.g.
    GoogLeNet 3b: 128/4 + 192/4 + 96/4 + 64/4 = 120); reductions: the stem's stride times
    1, 2, 4, and each map's side is the input's over its reduction."""
    model = ki.get_model(
        name, stem=stem, input_shape=(32, 32, 1), include_top=False, width_multiplier=0.25
    )
    assert [(i.name, i.channels, i.reduction) for i in model.feature_info] == expected
    sides = {15: 16, 7: 8}  # InceptionV3/V2 small stem: valid 3x3/2 reductions, 32 -> 15 -> 7
    for info in model.feature_info:
        shape = model.get_layer(info.layer).output.shape
        assert shape[-1] == info.channels
        assert sides.get(shape[1], shape[1]) * info.reduction == 32, (info, shape)


def test_a_model_loaded_from_a_file_finds_the_declared_taps(tmp_path):
    model = ki.build_inception_v2(
        variant="bn_inception", stem="small", input_shape=(32, 32, 1), width_multiplier=0.25
    )
    model.save(tmp_path / "m.keras")
    loaded = keras.saving.load_model(tmp_path / "m.keras")
    assert not hasattr(loaded, "feature_info")
    features = ki.feature_model(loaded)
    assert sorted(features.output) == ["mixed3c", "mixed4e", "mixed5c"]
    assert ki.strip_aux_heads(model) is model
    stripped = ki.strip_aux_heads(
        ki.build_googlenet(aux_logits=True, stem="small", input_shape=(8, 8, 1),
                           width_multiplier=0.125)
    )  # fmt: skip
    assert [i.name for i in stripped.feature_info] == ["inception3b", "inception4e", "inception5b"]


def test_a_model_without_declared_taps_needs_names():
    inputs = keras.Input((8, 8, 3))
    model = keras.Model(inputs, keras.layers.Conv2D(4, 3, name="conv")(inputs), name="plain")
    with pytest.raises(ValueError, match="'plain' has none of the declared feature maps"):
        ki.feature_model(model)
    assert sorted(ki.feature_model(model, ["conv"]).output) == ["conv"]


def test_features_share_weights_and_work_with_aux_heads():
    model = ki.build_inception_v3(
        stem="small", input_shape=(32, 32, 3), classes=5, width_multiplier=0.25, aux_logits=True
    )
    features = ki.feature_model(model, ["conv4a_relu", "mixed6e"])
    assert features.count_params() < model.count_params()
    x = np.random.default_rng(0).normal(size=(2, 32, 32, 3)).astype("float32")
    y = features(x, training=False)
    assert y["conv4a_relu"].shape == (2, 32, 32, 48)
    assert y["mixed6e"].shape == (2, 15, 15, 192)
    # the very layers of `model`: changing a weight there changes the features
    conv = model.get_layer("conv1a_conv")
    conv.kernel.assign(conv.kernel * 2.0)
    assert not np.allclose(features(x, training=False)["mixed6e"], y["mixed6e"])


def test_unknown_names_are_refused():
    model = ki.build_inception_v3(include_top=False, stem="small", width_multiplier=0.25)
    with pytest.raises(ValueError, match=r"'mixed9z' is neither a module nor a layer.*mixed5b"):
        ki.feature_model(model, ["mixed9z"])
    with pytest.raises(ValueError, match="non-empty sequence"):
        ki.feature_model(model, "mixed5b")
