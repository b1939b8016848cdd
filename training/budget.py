"""A wall-time budget for a run: as many epochs as fit, up to `--epochs`.

`TrainConfig.time_budget_minutes` (`python -m training train --time-budget-minutes 55`)
makes `--epochs` a maximum. Before training, a throwaway copy of the model (same config,
same pipelines, same optimizer) times a few training steps and a few inference batches on
this machine; the run then trains the largest number of epochs whose estimated wall time
fits the budget:

    spent so far + epochs * (training + precise BN + validation) + test and save <= budget

The schedule (warmup, cosine decay) is made for that number of epochs, so a shortened run
still decays to its end. The plan is printed, written to the workdir's `plan.json` and
recorded in metrics.json; a resumed run reuses it instead of measuring again, so an
interrupted run trains the epochs it planned. Without a budget `--epochs` is exact and
nothing is measured.

The estimate is of this machine at the time it is measured: a shared machine that slows
down later overruns it, which the run's epoch times in metrics.json then show. The
budget counts from `train_and_evaluate`'s start: Python's and TensorFlow's start-up (a
few seconds) and any evaluation after the run (`make fmnist`'s flip evaluation, about
half a minute) are outside it.

Examples:

```python
config = TrainConfig(model="googlenet", epochs=24, time_budget_minutes=55)
train_and_evaluate(config, "runs/fmnist")  # 24 epochs on a fast CPU, fewer on a slow one
```
"""

from __future__ import annotations

import dataclasses
import math
import os
import time

import keras
import tensorflow as tf

from training.batchnorm import num_batches_for
from training.config import TrainConfig
from training.data import Datasets
from training.model_setup import build_model, compile_model, output_names_of, with_targets
from training.workdir import read_json, write_json

# Training steps the probe runs, and how many of the first it leaves out of the timing
# (graph tracing, the pipeline filling its buffers).
PROBE_STEPS = 12
PROBE_WARMUP_STEPS = 4
# Inference batches it runs and leaves out.
PROBE_EVAL_BATCHES = 6
PROBE_EVAL_WARMUP = 2
# Estimated epoch and final times are multiplied by this before they are fitted to the
# budget. Measured in make fmnist on the Zen 4 EPYC: the probe's raw estimate was 78 s an
# epoch, the quiet epochs took 91-101 s (the first step's tracing, the shuffle buffer, and
# precise BN at about 5 s against the 1.6 s its batches predict).
SAFETY_FACTOR = 1.25
# Seconds to save model.keras, inference.keras and the plots, and to export the
# SavedModel, after the test pass (about half a minute for the export of a GoogLeNet on a
# 2-core CPU, measured in `make fmnist` runs; kept generous).
SAVE_SECONDS = 60.0

PLAN_FILE = "plan.json"


@dataclasses.dataclass(frozen=True)
class EpochPlan:
    """How many epochs a run trains under its time budget, and why.

    Args:
        epochs: int. Epochs to train.
        max_epochs: int. The config's `epochs`.
        budget_seconds: float. The budget.
        spent_seconds: float. Time used before training (data, model, the probe).
        step_seconds: float. Measured seconds per training step.
        eval_batch_seconds: float. Measured seconds per inference batch.
        epoch_seconds: float. Estimated seconds per epoch (training, precise BN,
            validation), with the safety factor.
        final_seconds: float. Estimated seconds for the test pass and saving, with the
            safety factor.
    """

    epochs: int
    max_epochs: int
    budget_seconds: float
    spent_seconds: float
    step_seconds: float
    eval_batch_seconds: float
    epoch_seconds: float
    final_seconds: float

    def estimated_seconds(self) -> float:
        """The run's estimated wall time with the planned epochs."""
        return self.spent_seconds + self.epochs * self.epoch_seconds + self.final_seconds

    def describe(self) -> str:
        minutes = self.budget_seconds / 60
        fit = (
            f"all {self.max_epochs} epochs fit"
            if self.epochs == self.max_epochs
            else f"training {self.epochs} of the {self.max_epochs} epochs asked for"
        )
        return (
            f"Time budget {minutes:g} min: {fit} (measured here: {self.step_seconds:.3f} s a "
            f"training step, {self.eval_batch_seconds:.3f} s an inference batch; estimated "
            f"{self.epoch_seconds:.0f} s an epoch, {self.final_seconds:.0f} s for the test and "
            f"saving, {self.spent_seconds:.0f} s spent before training; about "
            f"{self.estimated_seconds() / 60:.1f} min in all)."
        )


def fit_epochs(
    max_epochs: int,
    budget_seconds: float,
    spent_seconds: float,
    epoch_seconds: float,
    final_seconds: float,
) -> int:
    """The most epochs, at most `max_epochs`, with `spent + epochs * epoch + final <=
    budget`. Raises ValueError when not even one fits."""
    room = budget_seconds - spent_seconds - final_seconds
    epochs = min(max_epochs, math.floor(room / epoch_seconds)) if room > 0 else 0
    if epochs < 1:
        raise ValueError(
            f"a time budget of {budget_seconds / 60:g} min does not hold one epoch here: "
            f"{spent_seconds:.0f} s spent before training, an epoch estimated at "
            f"{epoch_seconds:.0f} s and the test and saving at {final_seconds:.0f} s. "
            "Raise --time-budget-minutes or make the run smaller."
        )
    return epochs


def plan_epochs(
    *,
    max_epochs: int,
    budget_seconds: float,
    spent_seconds: float,
    step_seconds: float,
    eval_batch_seconds: float,
    steps_per_epoch: int,
    eval_batches_per_epoch: int,
    test_batches: int,
) -> EpochPlan:
    """The plan for measured step and batch times (see the module docstring)."""
    epoch = SAFETY_FACTOR * (
        steps_per_epoch * step_seconds + eval_batches_per_epoch * eval_batch_seconds
    )
    final = SAFETY_FACTOR * (test_batches * eval_batch_seconds + SAVE_SECONDS)
    epochs = fit_epochs(max_epochs, budget_seconds, spent_seconds, epoch, final)
    return EpochPlan(
        epochs=epochs,
        max_epochs=max_epochs,
        budget_seconds=budget_seconds,
        spent_seconds=spent_seconds,
        step_seconds=step_seconds,
        eval_batch_seconds=eval_batch_seconds,
        epoch_seconds=epoch,
        final_seconds=final,
    )


class _BatchClock(keras.callbacks.Callback):
    """Times of the end of every training and inference batch."""

    def __init__(self):
        super().__init__()
        self.train: list[float] = []
        self.test: list[float] = []

    def on_train_batch_end(self, batch, logs=None):
        self.train.append(time.perf_counter())

    def on_test_batch_end(self, batch, logs=None):
        self.test.append(time.perf_counter())


def _seconds_each(times: list[float], skip: int) -> float:
    """Mean seconds per batch of the batches after the first `skip` (`times`: when each
    batch ended)."""
    steady = times[skip - 1 :] if skip else times
    if len(steady) < 2:
        raise ValueError(
            f"the time-budget probe timed {len(times)} batch(es); it needs {skip + 1} or more"
        )
    return (steady[-1] - steady[0]) / (len(steady) - 1)


def measure(probe: keras.Model, train, validation) -> tuple[float, float]:
    """Seconds per training step and per inference batch of the compiled `probe` over
    the first batches of `train` and `validation` (datasets of `(x, y)` batches, targets
    as the model takes them). Trains the probe: pass a throwaway copy."""
    clock = _BatchClock()
    # Repeated, so that a dataset of fewer batches still gives the probe all of its own.
    probe.fit(
        train.repeat().take(PROBE_STEPS), epochs=1, shuffle=False, verbose=0, callbacks=[clock]
    )
    probe.evaluate(validation.repeat().take(PROBE_EVAL_BATCHES), verbose=0, callbacks=[clock])
    return (
        _seconds_each(clock.train, PROBE_WARMUP_STEPS),
        _seconds_each(clock.test, PROBE_EVAL_WARMUP),
    )


def load_plan(workdir: str) -> EpochPlan | None:
    """The plan an earlier process of this run wrote (None: none yet)."""
    path = os.path.join(workdir, PLAN_FILE)
    if not os.path.exists(path):
        return None
    return EpochPlan(**read_json(path))


def save_plan(workdir: str, plan: EpochPlan) -> None:
    write_json(os.path.join(workdir, PLAN_FILE), dataclasses.asdict(plan))


def plan_run(
    config: TrainConfig,
    workdir: str,
    datasets: Datasets,
    strategy: tf.distribute.Strategy,
    *,
    started: float,
) -> EpochPlan | None:
    """The run's epoch plan: None without a time budget; the workdir's when an earlier
    process of the run made one; else measured now with a throwaway copy of the model
    (built and compiled under `strategy` as the run's is), printed and saved. `started`:
    the `time.perf_counter()` at the run's start."""
    if config.time_budget_minutes is None:
        return None
    plan = load_plan(workdir)
    if plan is not None:
        return plan
    with strategy.scope():
        probe = build_model(config, datasets.image_shape, datasets.num_classes)
        compile_model(probe, config, num_train=datasets.num_train)
    names = output_names_of(probe)
    step, batch = measure(
        probe, with_targets(datasets.train, names), with_targets(datasets.validation, names)
    )
    del probe
    per_batch = config.batch_size
    plan = plan_epochs(
        max_epochs=config.epochs,
        budget_seconds=60.0 * config.time_budget_minutes,
        spent_seconds=time.perf_counter() - started,
        step_seconds=step,
        eval_batch_seconds=batch,
        steps_per_epoch=math.ceil(datasets.num_train / per_batch),
        eval_batches_per_epoch=math.ceil(datasets.num_validation / per_batch)
        + (
            num_batches_for(config.precise_bn_images, per_batch, datasets.num_train)
            if config.precise_bn_images
            else 0
        ),
        test_batches=math.ceil(datasets.num_test / per_batch),
    )
    save_plan(workdir, plan)
    print(plan.describe())
    return plan
