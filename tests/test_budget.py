"""training/budget.py: `--time-budget-minutes` trains as many of `--epochs` as fit.

The arithmetic is checked on given numbers; the loop on the generated Fashion-MNIST data
of test_training.py with the probe's measurement replaced by fixed times, so that the
plan does not depend on this machine's speed.
"""

import csv
import json
import os

import keras
import numpy as np
import pytest
import tensorflow as tf

from tests.helpers import make_fashion_mnist
from training import budget, tuning
from training.cli import build_parser
from training.train import TrainConfig, train_and_evaluate

TINY = dict(width_multiplier=0.125, min_depth=4, batch_size=32, seed=0, aux=False)


def test_fit_epochs_takes_all_that_fit_up_to_the_maximum():
    # 3300 s: 100 spent, 200 for the end, 3000 left for epochs.
    assert budget.fit_epochs(24, 3300, 100, 100, 200) == 24  # 30 would fit
    assert budget.fit_epochs(24, 3300, 100, 150, 200) == 20  # exactly 20 x 150
    assert budget.fit_epochs(24, 3300, 100, 151, 200) == 19


def test_fit_epochs_refuses_a_budget_without_room_for_one_epoch():
    with pytest.raises(ValueError, match=r"a time budget of 1 min does not hold one epoch here"):
        budget.fit_epochs(24, 60, 10, 100, 30)
    with pytest.raises(ValueError, match="an epoch estimated at 5 s and the test and saving at 90"):
        budget.fit_epochs(24, 60, 10, 5, 90)  # the end alone overruns


def test_plan_applies_the_safety_factor_to_the_measured_times():
    plan = budget.plan_epochs(
        max_epochs=24,
        budget_seconds=600,
        spent_seconds=10,
        step_seconds=0.5,
        eval_batch_seconds=0.2,
        steps_per_epoch=100,
        eval_batches_per_epoch=10,
        test_batches=5,
    )
    factor = budget.SAFETY_FACTOR
    assert plan.epoch_seconds == pytest.approx(factor * (100 * 0.5 + 10 * 0.2))
    assert plan.final_seconds == pytest.approx(factor * (5 * 0.2 + budget.SAVE_SECONDS))
    # 600 - 10 - 76.25 = 513.75 s hold 7 epochs of 65 s (with the factor 1.25).
    assert plan.epochs == 7 and plan.max_epochs == 24
    assert plan.estimated_seconds() <= 600
    assert "training 7 of the 24 epochs asked for" in plan.describe()


@pytest.mark.parametrize("value", [0, -1.0, True])
def test_config_refuses_a_budget_that_is_not_positive(value):
    with pytest.raises(ValueError, match=f"time_budget_minutes must be a positive number; "
                       f"received {value!r}"):  # fmt: skip
        TrainConfig(time_budget_minutes=value)


def test_cli_train_takes_the_budget_and_tune_refuses_it(tmp_path):
    args = build_parser().parse_args(
        ["train", "--workdir", str(tmp_path), "--epochs", "24", "--time-budget-minutes", "55"]
    )
    assert args.time_budget_minutes == 55.0 and args.epochs == 24
    with pytest.raises(ValueError, match="a time budget is for single runs"):
        tuning.tune(TrainConfig(time_budget_minutes=5.0), tuning.TuneConfig(), str(tmp_path))


def test_probe_times_training_steps_and_inference_batches():
    model = keras.Sequential([keras.Input((4,)), keras.layers.Dense(3)])
    model.compile("sgd", keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    rows = tf.data.Dataset.from_tensor_slices((np.ones((8, 4), "float32"), np.zeros(8, "int32")))
    batches = rows.batch(4)  # two batches: the probe repeats them
    step, batch = budget.measure(model, batches, batches)
    assert 0 < step < 10 and 0 < batch < 10


class _Interrupt(Exception):
    pass


class _StopAfterFirstEpoch(keras.callbacks.Callback):
    def on_epoch_end(self, epoch, logs=None):
        raise _Interrupt(f"killed after epoch {epoch + 1}")


@pytest.mark.large  # 38 s of 2 cores (make test: 8 min); the plan arithmetic has fast tests
def test_run_trains_the_planned_epochs_and_a_resumed_run_keeps_its_plan(
    tmp_path, monkeypatch, capsys
):
    (tmp_path / "data").mkdir()
    data_dir = make_fashion_mnist(tmp_path / "data")
    workdir = str(tmp_path / "run")
    # 288 training images (9 steps of 32), 32 validation (1 batch), precise BN over the
    # 288 (9 batches), 96 test images (3 batches). At 10 s a step and a batch, an epoch is
    # estimated at 1.25 x 190 = 237.5 s and the end at 1.25 x (30 + 60) = 112.5 s: a 700 s
    # budget holds 2 of the 4 epochs for anything under 112.5 s spent before training.
    monkeypatch.setattr(budget, "measure", lambda *args: (10.0, 10.0))
    config = TrainConfig(data_dir=data_dir, epochs=4, time_budget_minutes=700 / 60, **TINY)
    with pytest.raises(_Interrupt):
        train_and_evaluate(
            config, workdir, verbose=0, export=False, extra_callbacks=[_StopAfterFirstEpoch()]
        )
    assert (
        "Time budget 11.6667 min: training 2 of the 4 epochs asked for" in capsys.readouterr().out
    )
    with open(os.path.join(workdir, budget.PLAN_FILE)) as f:
        assert json.load(f)["epochs"] == 2

    def measure_again(*args):
        raise AssertionError("a resumed run measured again instead of reading plan.json")

    monkeypatch.setattr(budget, "measure", measure_again)
    metrics = train_and_evaluate(config, workdir, verbose=0, export=False)
    assert metrics["epochs"] == 2 and metrics["epoch_plan"]["max_epochs"] == 4
    assert metrics["epoch_plan"]["step_seconds"] == 10.0
    assert len(metrics["epoch_times"]) == 2
    with open(os.path.join(workdir, "history.csv")) as f:
        assert [int(row["epoch"]) for row in csv.DictReader(f)] == [0, 1]
    model = keras.saving.load_model(os.path.join(workdir, "model.keras"))
    assert int(model.optimizer.iterations) == 2 * 9
    # The schedule was made for the 2 epochs: it ends at zero.
    assert float(model.optimizer._learning_rate(2 * 9)) == pytest.approx(0.0, abs=1e-9)
