"""Full-size work (minutes on 2 CPU cores): `make test-large`."""

import math

import numpy as np
import pytest

import keras_inception as ki


@pytest.mark.large
@pytest.mark.parametrize("name", ki.list_models())
def test_full_size_model_trains_with_aux_heads(name):
    model = ki.get_model(name, aux_logits=True)  # default input size, 1000 classes
    height, width, channels = model.input_shape[1:]
    model.compile(
        optimizer="sgd",
        loss={key: "sparse_categorical_crossentropy" for key in model.output},
        loss_weights=ki.default_loss_weights(model),
        jit_compile=False,
    )
    rng = np.random.default_rng(0)
    x = rng.uniform(-1, 1, size=(2, height, width, channels)).astype("float32")
    y = rng.integers(0, 1000, size=(2,))
    targets = {key: y for key in model.output}
    first = model.train_on_batch(x, targets, return_dict=True)["loss"]
    for _ in range(3):
        last = model.train_on_batch(x, targets, return_dict=True)["loss"]
    assert math.isfinite(first) and math.isfinite(last)
    assert last < first  # the same two images: the loss must fall
