"""InceptionV2: both variants' golden counts, stems, aux heads, bad input."""

import numpy as np
import pytest

import keras_inception as ki
from keras_inception import analysis

SMALL = dict(stem="small", input_shape=(32, 32, 3), classes=5, width_multiplier=0.25)


def test_rethinking_is_v3_with_a_7x7_stem():
    model = ki.build_inception_v2()
    assert model.count_params() == 23_832_488
    conv = model.get_layer("conv1a_conv")
    assert conv.kernel_size == (7, 7) and conv.strides == (2, 2) and conv.padding == "valid"
    assert conv.filters == 64
    # the same 35x35 map as InceptionV3 from there on
    assert model.get_layer("mixed5b_concat").output.shape[1:] == (35, 35, 256)
    v3 = ki.build_inception_v3()
    # V3's three stem convolutions (616,627,296 multiply-adds) against one 7x7/2
    assert analysis.macs(v3) - analysis.macs(model) == 616_627_296 - 147 * 147 * 49 * 3 * 64


def test_rethinking_aux_head_has_no_batch_norm():
    model = ki.build_inception_v2(aux_logits=True)
    assert sorted(model.output) == ["aux", "main"]
    assert model.get_layer("aux_5x5_conv").use_bias
    assert "aux_5x5_bn" not in [layer.name for layer in model.layers]
    assert model.get_layer("mixed6b_1x1_bn")  # the network keeps its batch norm
    assert model.count_params() == 23_832_488 + 128 * 768 + 128 + 25 * 128 * 768 + 768 + 769_000
    assert ki.default_loss_weights(model) == {"main": 1.0, "aux": 0.4}


def test_bn_inception_matches_tf_slim():
    base = ki.build_inception_v2(variant="bn_inception", include_top=False)
    assert base.count_params() == 10_173_112  # TF-Slim inception_v2_test
    model = ki.build_inception_v2(variant="bn_inception")
    assert model.input.shape[1:] == (224, 224, 3)
    stem = model.get_layer("conv1a_conv")
    assert stem.depth_multiplier == 8 and stem.use_bias
    widths = [
        model.get_layer(f"mixed{key}_concat").output.shape[-1]
        for key in ("3b", "3c", "4a", "4b", "4c", "4d", "4e", "5a", "5b", "5c")
    ]
    assert widths == [256, 320, 576, 576, 576, 576, 576, 1024, 1024, 1024]
    assert model.get_layer("mixed5c_concat").output.shape[1:3] == (7, 7)
    assert type(model.get_layer("mixed5c_pool")).__name__ == "MaxPooling2D"
    assert type(model.get_layer("mixed5b_pool")).__name__ == "AveragePooling2D"
    assert analysis.macs(model) == 1_934_857_216


def test_bn_inception_depth_multiplier_follows_width():
    # TF-Slim: min(int(depth(64) / 3), 8)
    model = ki.build_inception_v2(variant="bn_inception", include_top=False, width_multiplier=0.25)
    assert model.get_layer("conv1a_conv").depth_multiplier == 5


@pytest.mark.parametrize("variant", ["rethinking", "bn_inception"])
@pytest.mark.parametrize("aux_logits", [False, True])
def test_small_stem_at_32(variant, aux_logits):
    model = ki.build_inception_v2(variant=variant, aux_logits=aux_logits, **SMALL)
    y = model(np.zeros((1, 32, 32, 3), "float32"), training=False)
    assert (y["main"] if aux_logits else y).shape == (1, 5)


def test_unknown_variant_and_bad_input_are_refused():
    with pytest.raises(ValueError, match=r"variant must be one of .*received 'v2'"):
        ki.build_inception_v2(variant="v2")
    with pytest.raises(ValueError, match=r"at least 75x75 for inception_v2.*\(60, 60, 3\)"):
        ki.build_inception_v2(input_shape=(60, 60, 3))
    with pytest.raises(ValueError, match=r"at least 32x32 .*bn_inception.*\(16, 16, 3\)"):
        ki.build_inception_v2(variant="bn_inception", input_shape=(16, 16, 3))
    with pytest.raises(ValueError, match="no ImageNet weights"):
        ki.build_inception_v2(weights="imagenet")
    with pytest.raises(ValueError, match=r"specs\['stem'\] for inception_v2 must be a V2Stem"):
        ki.build_inception_v2(specs=ki.INCEPTION_V3_SPECS)
    with pytest.raises(ValueError, match=r"bn_inception.*missing modules \['3b'"):
        ki.build_inception_v2(variant="bn_inception", specs=ki.INCEPTION_V2_SPECS)


def test_own_weights_round_trip(tmp_path):
    model = ki.build_inception_v2(variant="bn_inception", **SMALL)
    model.save_weights(tmp_path / "w.weights.h5")
    again = ki.build_inception_v2(
        variant="bn_inception", weights=tmp_path / "w.weights.h5", **SMALL
    )
    x = np.random.default_rng(0).normal(size=(1, 32, 32, 3)).astype("float32")
    np.testing.assert_array_equal(model(x, training=False), again(x, training=False))


def test_report_rows_for_both_variants():
    rows = {row.module: row for row in analysis.rows(ki.build_inception_v2(variant="bn_inception"))}
    assert rows["conv1a"].type == "separable convolution 7x7/2 (depth multiplier 8)"
    assert rows["mixed4a"].type == "grid reduction (4a)"
    assert rows["mixed3b"].widths == {
        "#1x1": 64, "#3x3 reduce": 64, "#3x3": 64, "#double 3x3 reduce": 64,
        "#double 3x3": 96, "pool proj": 32,
    }  # fmt: skip
    v2_rows = {row.module: row for row in analysis.rows(ki.build_inception_v2())}
    assert v2_rows["mixed6b"].type == "inception 17x17, fig. 6 (6b)"
    assert v2_rows["mixed6b"].widths["#7x7 reduce"] == 128
