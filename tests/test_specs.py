"""Width tables: validation, scaling, JSON round trip."""

import json

import numpy as np
import pytest

import keras_inception as ki
from keras_inception.specs import V1Module, scale_table


def test_spec_widths_must_be_positive_integers():
    with pytest.raises(ValueError, match=r"V1Module.reduce3x3 must be .*received 0"):
        V1Module(conv1x1=1, reduce3x3=0, conv3x3=1, reduce5x5=1, conv5x5=1, pool_proj=1)
    with pytest.raises(ValueError, match=r"received 2.5"):
        V1Module(conv1x1=2.5, reduce3x3=1, conv3x3=1, reduce5x5=1, conv5x5=1, pool_proj=1)


def test_out_channels():
    assert ki.GOOGLENET_SPECS["3a"].out_channels == 256
    assert ki.GOOGLENET_SPECS["5b"].out_channels == 1024


def test_scale_table():
    table = scale_table(ki.GOOGLENET_SPECS, width_multiplier=0.5, bottleneck_ratio=0.5)
    assert table["3a"] == V1Module(
        conv1x1=32, reduce3x3=24, conv3x3=64, reduce5x5=16, conv5x5=16, pool_proj=16
    )
    assert table["stem"] == ki.V1Stem(conv1=32, reduce=32, conv2=96)
    # factor 1 keeps widths below min_depth as given (final tables rebuild exactly)
    tiny = {"3a": V1Module(conv1x1=4, reduce3x3=4, conv3x3=4, reduce5x5=4, conv5x5=4, pool_proj=4)}
    assert scale_table(tiny) == tiny


def test_save_and_load_round_trip(tmp_path):
    path = tmp_path / "specs.json"
    table = scale_table(ki.GOOGLENET_SPECS, bottleneck_ratio=0.25, min_depth=4)
    ki.save_specs(table, path)
    loaded = ki.load_specs(path)
    assert loaded == table
    rebuilt = ki.build_googlenet(specs=loaded)
    assert (
        rebuilt.count_params()
        == ki.build_googlenet(bottleneck_ratio=0.25, min_depth=4).count_params()
    )


def test_load_specs_errors(tmp_path):
    with pytest.raises(FileNotFoundError, match="missing.json"):
        ki.load_specs(tmp_path / "missing.json")
    corrupt = tmp_path / "corrupt.json"
    corrupt.write_text("{not json")
    with pytest.raises(ValueError, match="corrupt.json.*not valid JSON"):
        ki.load_specs(corrupt)
    other = tmp_path / "other.json"
    other.write_text(json.dumps({"format": "something/2"}))
    with pytest.raises(ValueError, match="'something/2'"):
        ki.load_specs(other)
    bad_kind = tmp_path / "kind.json"
    bad_kind.write_text(
        json.dumps({"format": "keras_inception.specs/1", "modules": {"3a": {"type": "V9"}}})
    )
    with pytest.raises(ValueError, match="unknown type 'V9'"):
        ki.load_specs(bad_kind)
    bad_fields = tmp_path / "fields.json"
    bad_fields.write_text(
        json.dumps(
            {"format": "keras_inception.specs/1", "modules": {"stem": {"type": "V1Stem", "x": 1}}}
        )
    )
    with pytest.raises(ValueError, match="do not fit V1Stem"):
        ki.load_specs(bad_fields)


def _trainable(model) -> int:
    return sum(int(np.prod(w.shape)) for w in model.trainable_weights)


# Golden counts of TF-Slim's own networks at depth_multiplier=0.5 (tf-slim 1.1.0,
# `nets.inception_v2.inception_v2` / `nets.inception_v3.inception_v3` with
# num_classes=1000, their arg scopes, 224x224 / 299x299 inputs, counted once from
# tf.compat.v1 variables): every variable (moving statistics included) and the trainable
# ones. TF-Slim's inception_v1 takes no depth_multiplier; GoogLeNet's widths at 0.5 are
# hand-derived in test_googlenet.py.
SLIM_HALF_WIDTH = {
    "bn_inception": ({}, 3_064_976, 3_055_088),
    "inception_v3": ({"aux_logits": True}, 7_514_144, 7_496_032),
}


@pytest.mark.parametrize("name", sorted(SLIM_HALF_WIDTH))
def test_width_multiplier_half_gives_tf_slims_depth_multiplier_half(name):
    extra, total, trainable = SLIM_HALF_WIDTH[name]
    model = ki.get_model(name, width_multiplier=0.5, **extra)
    assert (model.count_params(), _trainable(model)) == (total, trainable)
