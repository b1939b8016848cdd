"""analysis.macs on known layers, and the per-module report."""

import keras
import pytest
from keras import layers

import keras_inception as ki
from keras_inception import analysis


def one_layer_model(layer, shape):
    inputs = keras.Input(shape)
    return keras.Model(inputs, layer(inputs))


@pytest.mark.parametrize(
    ("layer", "shape", "expected"),
    [
        (layers.Conv2D(8, 3, padding="same"), (10, 10, 4), 10 * 10 * 9 * 4 * 8),
        (layers.Conv2D(8, 3, strides=2, padding="valid"), (11, 11, 4), 5 * 5 * 9 * 4 * 8),
        (layers.Conv2D(8, (1, 7), padding="same", groups=2), (6, 6, 4), 6 * 6 * 7 * 2 * 8),
        (layers.DepthwiseConv2D(3, padding="same"), (10, 10, 4), 10 * 10 * 9 * 4),
        (
            layers.SeparableConv2D(16, 7, strides=2, depth_multiplier=8, padding="same"),
            (224, 224, 3),
            112 * 112 * 49 * 3 * 8 + 112 * 112 * 24 * 16,
        ),
        (layers.Dense(10), (20,), 200),
        (layers.MaxPooling2D(2), (8, 8, 3), 0),
    ],
)
def test_layer_macs(layer, shape, expected):
    assert analysis.macs(one_layer_model(layer, shape)) == expected


def test_macs_needs_a_static_size():
    model = ki.build_googlenet(include_top=False)
    with pytest.raises(ValueError, match="static input size"):
        analysis.macs(model)


def test_rows_follow_table_1():
    model = ki.build_googlenet(batch_norm=False)
    rows = {row.module: row for row in analysis.rows(model)}
    assert rows["conv1"].type == "convolution 7x7/2"
    assert rows["conv1"].output_size == "112x112x64"
    assert rows["conv2"].widths == {"#3x3 reduce": 64, "#3x3": 192}
    assert rows["inception3a"].type == "inception (3a)"
    assert rows["inception3a"].widths == {
        "#1x1": 64, "#3x3 reduce": 96, "#3x3": 128, "#5x5 reduce": 16, "#5x5": 32, "pool proj": 32,
    }  # fmt: skip
    assert rows["inception3a"].macs == 128_049_152  # Table 1: 128M
    assert rows["inception5b"].output_size == "7x7x1024"
    assert rows["dropout"].type == "dropout (40%)"
    assert sum(row.params for row in rows.values()) == model.count_params()
    assert sum(row.macs for row in rows.values()) == analysis.macs(model)


def test_report_prints_table_with_totals():
    printed = []
    text = analysis.report(ki.build_googlenet(batch_norm=False), print_fn=printed.append)
    assert printed == [text]
    assert "#3x3 reduce" in text and "pool proj" in text
    assert text.splitlines()[-1].split()[-2:] == ["6,998,552", "1,582,671,872"]


def test_report_command_line(capsys):
    analysis.main(["googlenet"])
    assert "inception (5b)" in capsys.readouterr().out
    with pytest.raises(SystemExit):
        analysis.main(["alexnet"])
