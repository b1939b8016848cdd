"""preprocess_input, decode_predictions and class_names: golden values.

The scaled values are those of the hand-written formulas that keras.applications'
`preprocess_input` modes replaced (computed once in float32 and written down here).
"""

import numpy as np
import pytest
from keras import ops

import keras_inception as ki

# Two RGB pixels in [0, 255].
PIXELS = np.array([[[0, 127.5, 255], [12, 200, 99]]], "float32")
GOLDEN = {
    # (x / 255 - (0.485, 0.456, 0.406)) / (0.229, 0.224, 0.225), in float32
    "torchvision": [
        [
            [-2.1179039478302, 0.1964285671710968, 2.640000104904175],
            [-1.9124069213867188, 1.465686321258545, -0.07895416766405106],
        ]
    ],
    # x / 127.5 - 1, in float32
    "slim": [[[-1.0, 0.0, 1.0], [-0.9058823585510254, 0.5686274766921997, -0.2235293984413147]]],
}


@pytest.mark.parametrize("source", ["torchvision", "slim"])
def test_preprocess_input_golden_values_for_numpy_and_tensors(source):
    golden = np.array(GOLDEN[source], "float32")
    pixels = PIXELS.copy()
    out = ki.preprocess_input(pixels, source)
    assert isinstance(out, np.ndarray) and out.dtype == np.float32
    np.testing.assert_array_equal(out, golden)
    np.testing.assert_array_equal(pixels, PIXELS)  # the input is not scaled in place
    # integers, lists and tensors give the same float32 values
    whole = np.array([[[0, 128, 255]]], "uint8")
    np.testing.assert_array_equal(
        ki.preprocess_input(whole, source), ki.preprocess_input(whole.tolist(), source)
    )
    tensor = ki.preprocess_input(ops.convert_to_tensor(PIXELS), source)
    assert ops.is_tensor(tensor)
    np.testing.assert_array_equal(ops.convert_to_numpy(tensor), golden)


def test_preprocess_input_refuses_other_sources_and_shapes():
    with pytest.raises(ValueError, match=r"source must be one of \['torchvision', 'slim'\]"):
        ki.preprocess_input(PIXELS, "caffe")
    with pytest.raises(
        ValueError, match=r"needs RGB images \(\.\.\., 3\); received shape \(2, 4\)"
    ):
        ki.preprocess_input(np.zeros((2, 4)), "slim")
    with pytest.raises(ValueError, match=r"received shape \(1, 2, 1\)"):
        ki.preprocess_input(ops.zeros((1, 2, 1)), "torchvision")


def test_class_names_and_slims_background_offset():
    names = ki.class_names()
    assert len(names) == 1000
    assert (names[0], names[207], names[999]) == ("tench", "golden retriever", "toilet tissue")
    slim = ki.class_names(1001)
    assert (slim[0], slim[1], slim[208]) == ("background", "tench", "golden retriever")
    with pytest.raises(ValueError, match="received 10"):
        ki.class_names(10)


def test_decode_predictions_golden_retriever():
    one_hot = np.eye(1000, dtype="float32")[[207]]
    assert ki.decode_predictions(one_hot, top=1) == [[(207, "golden retriever", 1.0)]]
    # TF-Slim's 1001 outputs: class 0 is the background, so 208 is the golden retriever
    slim = np.zeros((2, 1001), "float32")
    slim[0, 208], slim[0, 0], slim[1, 1] = 5.0, 2.0, -1.0
    decoded = ki.decode_predictions(slim, top=2)
    assert decoded[0] == [(208, "golden retriever", 5.0), (0, "background", 2.0)]
    # ties keep the lower index first; scores are returned as given
    assert decoded[1] == [(0, "background", 0.0), (2, "goldfish", 0.0)]


def test_decode_predictions_refuses_bad_shapes_and_top():
    with pytest.raises(ValueError, match=r"1000 or 1001 scores .* received shape \(1, 10\)"):
        ki.decode_predictions(np.zeros((1, 10)))
    with pytest.raises(ValueError, match=r"top must be an integer in \[1, 1000\]; received 0"):
        ki.decode_predictions(np.zeros((1, 1000)), top=0)
