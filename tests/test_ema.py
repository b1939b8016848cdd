"""`--ema-momentum`: a moving average of the weights (Keras's optimizer EMA), which the run
evaluates, saves and exports in place of its last weights."""

import json
import os

import keras
import numpy as np
import pytest
from helpers import make_fashion_mnist

from training.config import TrainConfig
from training.fields import ConfigError
from training.model_setup import make_run_optimizer


def _fit_three_steps(config: TrainConfig):
    """A small dense model fitted for 3 steps with the run's optimizer; returns (the
    trainable weights after each step, the weights after `fit`)."""
    keras.utils.set_random_seed(0)
    model = keras.Sequential([keras.Input((3,)), keras.layers.Dense(2)])
    model.compile(optimizer=make_run_optimizer(config, num_train=12), loss="mse")
    steps = []

    class Record(keras.callbacks.Callback):
        def on_train_batch_end(self, batch, logs=None):
            steps.append([np.array(w) for w in model.trainable_weights])

    rng = np.random.default_rng(0)
    x, y = rng.normal(size=(12, 3)), rng.normal(size=(12, 2))
    model.fit(x, y, batch_size=4, epochs=1, shuffle=False, verbose=0, callbacks=[Record()])
    return steps, [np.array(w) for w in model.trainable_weights]


def test_ema_weights_are_the_hand_computed_average_after_3_steps():
    config = TrainConfig(ema_momentum=0.5, batch_size=4, epochs=1, learning_rate=0.1)
    steps, final = _fit_three_steps(config)
    assert len(steps) == 3
    # The first step's weights start the average (Keras: momentum 0 at iteration 0).
    expected = steps[0]
    for weights in steps[1:]:
        expected = [0.5 * a + 0.5 * w for a, w in zip(expected, weights, strict=True)]
    for got, want in zip(final, expected, strict=True):
        np.testing.assert_allclose(got, want, rtol=1e-6, atol=1e-7)
    assert not np.allclose(final[0], steps[-1][0])  # not the last step's weights


def test_no_ema_keeps_the_last_weights_and_zero_turns_the_presets_off():
    steps, final = _fit_three_steps(TrainConfig(batch_size=4, epochs=1, learning_rate=0.1))
    for got, last in zip(final, steps[-1], strict=True):
        np.testing.assert_array_equal(got, last)
    paper = dict(preset="googlenet_paper", batch_size=4, epochs=1)
    assert make_run_optimizer(TrainConfig(**paper), num_train=12).use_ema  # the paper's
    assert not make_run_optimizer(TrainConfig(**paper, ema_momentum=0.0), num_train=12).use_ema
    optimizer = make_run_optimizer(TrainConfig(ema_momentum=0.9), num_train=12)
    assert optimizer.use_ema and optimizer.ema_momentum == 0.9


@pytest.mark.parametrize("value", [1.0, -0.1])
def test_ema_momentum_outside_0_1_is_refused_naming_it(value):
    with pytest.raises(ConfigError, match=rf"ema_momentum.*{value}"):
        TrainConfig(ema_momentum=value)


# large: a whole (tiny) run, about 40 s.
@pytest.mark.large
def test_a_run_evaluates_and_saves_the_average(tmp_path):
    from training.train import train_and_evaluate

    (tmp_path / "data").mkdir()
    data = make_fashion_mnist(tmp_path / "data", n_train=160, n_test=32)
    workdir = str(tmp_path / "run")
    config = TrainConfig(
        data_dir=data, epochs=2, ema_momentum=0.9, width_multiplier=0.125, min_depth=4,
        batch_size=32, aux=False, precise_bn_images=64,
    )  # fmt: skip
    metrics = train_and_evaluate(config, workdir, verbose=0, export=False)
    with open(os.path.join(workdir, "config.json")) as f:
        assert json.load(f)["ema_momentum"] == 0.9
    model = keras.saving.load_model(os.path.join(workdir, "model.keras"))
    averages = model.optimizer._model_variables_moving_average
    assert model.optimizer.use_ema and len(averages) == len(model.trainable_weights)
    for weight, average in zip(model.trainable_weights, averages, strict=True):
        np.testing.assert_array_equal(np.asarray(weight), np.asarray(average))
    assert metrics["epochs"] == 2
    # The saved (averaged) model on the held-out images: what a recipe is chosen on.
    assert metrics["final_validation"]["images"] == metrics["num_validation"]
