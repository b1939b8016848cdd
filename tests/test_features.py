"""feature_model: multi-scale features at strides 8/16/32 for every family."""

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
    model = ki.feature_model(builder(include_top=False, **kwargs))
    assert {name: tuple(t.shape[1:]) for name, t in model.output.items()} == expected


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
