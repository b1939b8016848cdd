"""training/evaluate.py's confusion matrix and per-class accuracy, and its plot.

A fake model whose predictions the test chooses: each image is one number, the class it is
predicted to be. The saved-model path (CLI `evaluate`, metrics.json) is tested on a finished
run in test_training.py.
"""

import matplotlib.image
import numpy as np
import pytest

from training.evaluate import evaluate_model, format_per_class, per_class_accuracy
from training.plots import plot_confusion

NUM_CLASSES = 4


class _PredictsItsInput:
    """`predict_on_batch` of images `[batch, 1]` holding a class each: probability 0.7 for
    that class, the rest shared by the others."""

    def predict_on_batch(self, images):
        predicted = np.asarray(images).reshape(-1).astype(int)
        probs = np.full((len(predicted), NUM_CLASSES), 0.1, "float32")
        probs[np.arange(len(predicted)), predicted] = 0.7
        return probs


def _batch(labels, predicted, weights):
    return (
        np.asarray(predicted, "float32").reshape(-1, 1),
        np.asarray(labels, "int32"),
        np.asarray(weights, "float32"),
    )


# Kept (true, predicted): (0,0) (0,1) (1,1) (2,0) (0,0) (2,2) (2,2). The weight-0 rows
# (padding) would add a class-3 example and a 1 -> 2 mistake if they were counted.
DATASET = [
    _batch(labels=[0, 0, 1, 2, 3], predicted=[0, 1, 1, 0, 3], weights=[1, 1, 1, 1, 0]),
    _batch(labels=[0, 2, 2, 1], predicted=[0, 2, 2, 2], weights=[1, 1, 1, 0]),
]
EXPECTED_CONFUSION = [
    [2, 1, 0, 0],
    [0, 1, 0, 0],
    [1, 0, 2, 0],
    [0, 0, 0, 0],
]


def test_confusion_and_per_class_accuracy_of_known_predictions():
    result = evaluate_model(_PredictsItsInput(), DATASET)
    assert result["confusion"] == EXPECTED_CONFUSION
    assert all(type(count) is int for row in result["confusion"] for count in row)  # JSON
    assert result["per_class"] == pytest.approx([2 / 3, 1.0, 2 / 3, None])
    assert result["per_class"][3] is None  # no examples: no accuracy, no division by zero
    assert result["images"] == 7
    assert result["top1"] == pytest.approx(5 / 7)  # the existing keys keep their meaning
    assert result["loss"] == pytest.approx(-(5 * np.log(0.7) + 2 * np.log(0.1)) / 7)


def test_labels_outside_the_models_classes_are_refused():
    dataset = [_batch(labels=[0, 4], predicted=[0, 1], weights=[1, 1])]
    with pytest.raises(ValueError, match=r"labels must be in \[0, 4\).*received \[4\]"):
        evaluate_model(_PredictsItsInput(), dataset)


def test_per_class_accuracy_of_an_empty_row_is_none():
    assert per_class_accuracy(np.array([[0, 0], [1, 3]])) == [None, 0.75]


def test_per_class_table():
    lines = format_per_class(
        [2 / 3, 1.0, 2 / 3, None], EXPECTED_CONFUSION, ["zero", "one", "two", "three"]
    )
    assert lines[0] == (
        "class  name   images  correct  accuracy  most confused with (count)"
    )  # the name column as wide as the longest name
    assert [line.split() for line in lines[1:]] == [
        ["0", "zero", "3", "2", "0.6667", "one", "(1)"],
        ["1", "one", "1", "1", "1.0000", "-"],
        ["2", "two", "3", "2", "0.6667", "zero", "(1)"],
        ["3", "three", "0", "0", "-", "-"],
    ]
    end = lines[0].index("images") + len("images")  # counts right-aligned under their header
    assert [line[end - 2 : end + 1] for line in lines[1:]] == [" 3 ", " 1 ", " 3 ", " 0 "]
    with pytest.raises(ValueError, match=r"shape \(4, 4\) and 3 class names"):
        format_per_class([1.0] * 4, EXPECTED_CONFUSION, ["a", "b", "c"])


def test_plot_confusion_writes_a_small_png(tmp_path):
    path = tmp_path / "confusion.png"
    names = ["T-shirt/top", "Trouser", "Pullover", "Dress", "Coat", "Sandal", "Shirt",
             "Sneaker", "Bag", "Ankle boot"]  # fmt: skip
    matrix = np.diag(np.arange(10, 20))
    matrix[6, 0] = 7
    plot_confusion(matrix.tolist(), names, str(path), title="test")
    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert matplotlib.image.imread(path).shape[:2] == (500, 600)  # 6x5 inches at 100 dpi


@pytest.mark.parametrize(
    ("confusion", "names", "message"),
    [
        ([[1, 2, 3], [4, 5, 6]], ["a", "b"], r"square matrix of counts; received shape \(2, 3\)"),
        ([1, 2], ["a", "b"], r"received shape \(2,\)"),
        ([[1, 2], [3]], ["a", "b"], r"square matrix of counts; received \[\[1, 2\], \[3\]\]"),
        ([[1, 0], [0, 1]], ["a", "b", "c"], r"name the 2 classes .* received 3 names: \['a', "),
        ([[1, -1], [0, 1]], ["a", "b"], r"counts must be >= 0; received minimum -1"),
    ],
)
def test_plot_confusion_refuses_bad_input(confusion, names, message, tmp_path):
    path = tmp_path / "confusion.png"
    with pytest.raises(ValueError, match=message):
        plot_confusion(confusion, names, str(path))
    assert not path.exists()


def test_metrics_follow_keras_on_ties_and_skip_zero_weights():
    """One implementation (training.metrics) for evaluate and the multi-worker loop, with
    Keras's tie rules: top-1 takes the lowest tied index; a label tied at 5th place is a
    top-5 hit."""
    import tensorflow as tf

    from training.metrics import batch_sums, means

    probs = tf.constant(
        [
            [0.5, 0.5, 0.0, 0.0, 0.0, 0.0, 0.0],  # label 1 tied first: top-1 miss
            [0.1, 0.2, 0.2, 0.2, 0.1, 0.1, 0.1],  # label 6 tied at 5th: top-5 hit
            [0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 1.0],  # label 0 last: weight 0, not counted
        ]
    )
    sums = batch_sums(tf.constant([1, 6, 0]), probs, tf.constant([1.0, 1.0, 0.0]), num_classes=7)
    result = means(sums)
    assert (result["top1"], result["top5"], result["count"]) == (0.0, 1.0, 2.0)
    assert result["loss"] == pytest.approx((np.log(2) + np.log(10)) / 2, rel=1e-6)
    confusion = np.asarray(sums["confusion"])
    assert confusion[1, 0] == 1 and confusion[6, 1] == 1 and confusion.sum() == 2
