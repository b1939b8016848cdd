"""`tune(config, tune_config, workdir)`: KerasTuner search over bottleneck widths.

The question it answers: how narrow can the 1x1 reduce convolutions be before accuracy
drops, and what is the best accuracy at a given parameter or multiply-add budget?

`TuneConfig` and the search's workdir check live in `training.tuning_config`.
`InceptionHyperModel` composes the registered builders (it never copies them): it turns
hyperparameters into a width table and passes it as `specs=`. Every default is the
paper's width, so `InceptionHyperModel(...).build(kt.HyperParameters())` is the model
that `train` builds from the same config. The workdir gets:

    tune_config.json   the search's configuration (a rerun must match it)
    search/            KerasTuner's project: oracle state, one folder per trial
    trials.csv         one row per trial: status, params, multiply-adds, accuracy, widths
    pareto.png         validation accuracy against multiply-adds, Pareto front marked
    best_specs.json    the best trial's final width table (`keras_inception.load_specs`)

`params` and `macs` count the inference model, the auxiliary heads stripped
(`keras_inception.strip_aux_heads`, as `train` exports it and as `best_specs.json`
rebuilds it); `train_params` and `train_macs` count the training model, auxiliary heads
included (the same numbers without them). A configuration whose inference model is over
the `max_params` / `max_macs` budget is rejected after it is built and before any
training: its trial is marked FAILED with the reason (KerasTuner's
`FailedTrialError`, no retries). Rejected trials count toward `max_trials`, as every
KerasTuner trial does, but never end the search: only three consecutive trials that fail
for another reason do (KerasTuner's default rule, applied to real failures only).
Rerunning the same search on the same workdir resumes it: finished trials are kept, and a
trial killed mid-way resumes from its last finished epoch (per-trial `BackupAndRestore`).
"""

from __future__ import annotations

import csv
import dataclasses
import os
import time
from collections.abc import Mapping
from typing import Any

import keras
import keras_tuner as kt

import keras_inception as ki
from keras_inception.analysis import macs as count_macs
from keras_inception.specs import scale_table
from training import machine
from training.config import TrainConfig
from training.model_setup import (
    aux_loss_weight_of,
    build_model,
    compile_model,
    monitor_name,
    output_names_of,
    run_learning_rate,
    with_targets,
)
from training.placement import place
from training.runkit import load_data, precise_batch_norm, start_run
from training.tuning_config import (  # noqa: F401 (re-exported: the tuner's public names)
    CONFIG_FILE,
    SPACES,
    TUNERS,
    TuneConfig,
    check_search,
    prepare_search,
)
from training.tuning_report import INFO_FILE, format_table, plot_pareto, read_info, trial_rows
from training.workdir import write_json

# Per-module choices, as fractions of the paper's width (the paper's width is always one).
WIDTH_FRACTIONS = (0.125, 0.25, 0.5, 0.75, 1.0)
# The tuner's objective is the checkpoints' monitor: one function for both.
objective_name = monitor_name
# Consecutive trials failing for a reason other than the budget that end the search.
MAX_CONSECUTIVE_FAILURES = 3


def model_counts(model: keras.Model) -> dict[str, int]:
    """Parameters and multiply-adds per image of the inference model (`params`, `macs`:
    auxiliary heads stripped, what `best_specs.json` rebuilds) and of the training model
    (`train_params`, `train_macs`: auxiliary heads included).

    Example:
    >>> kw = dict(input_shape=(32, 32, 3), classes=10, stem="small")
    >>> model = ki.build_googlenet(aux_logits=True, **kw)
    >>> counts = model_counts(model)
    >>> counts["params"] == ki.build_googlenet(**kw).count_params()
    True
    >>> counts["train_params"] == model.count_params() > counts["params"]
    True
    """
    inference = ki.strip_aux_heads(model)  # shares the model's layers and weights
    return {
        "params": inference.count_params(),
        "train_params": model.count_params(),
        "macs": count_macs(inference),
        "train_macs": count_macs(model),
    }


def reduce_fields(table: Mapping[str, Any]) -> list[tuple[str, str]]:
    """`(module, field)` of every 1x1 reduce width (`REDUCE` metadata), in table order."""
    return [
        (key, f.name)
        for key, spec in table.items()
        for f in dataclasses.fields(spec)
        if f.metadata.get("reduce")
    ]


def width_choices(width: int) -> list[int]:
    """The per-module search values for a paper width: fractions of it, the width itself."""
    return sorted({max(1, round(width * fraction)) for fraction in WIDTH_FRACTIONS})


class InceptionHyperModel(kt.HyperModel):
    """A registered Inception model whose 1x1 reduce widths are hyperparameters.

    Hyperparameters (every default is the paper's value, so `build(kt.HyperParameters())`
    is the config's model with the paper's table):
        space "per_module": `f"{module}_{field}"` for every reduce width, e.g.
            `3a_reduce3x3`, `3a_reduce5x5` (GoogLeNet), `6b_channels_7x7`, `5b_reduce5x5`
            (InceptionV3); a choice among `width_choices(paper width)`. The config's
            `bottleneck_ratio`, `width_multiplier` and `min_depth` then apply as in `train`.
        space "bottleneck_ratio": `bottleneck_ratio`, 0.125 to 1.0 in steps of 0.125.
        `learning_rate` (with `search_learning_rate`) and `aux_loss_weight` (with
        `search_aux_weight`, models with auxiliary heads only).

    `fit` rejects a model whose inference model is over the budget before training
    (`kt.errors.FailedTrialError`) and, when `record_dir` is set (the tuner sets it per
    trial), writes the trial's `model_counts`, seconds and any rejection reason to
    `record_dir/tuning.json`.

    Args:
        config: TrainConfig. The model, width controls and optimizer of every trial.
        tune_config: TuneConfig. The space and the budget.
        image_shape: tuple. The data's `(height, width, channels)`.
        num_classes: int. The data's classes.
        num_train: int. Training examples (for the learning-rate schedule).

    Example:
    >>> hm = InceptionHyperModel(TrainConfig(aux=False), TuneConfig(), (28, 28, 1), 10, 100)
    >>> hp = kt.HyperParameters()
    >>> _ = hp.Fixed("3a_reduce3x3", 48)
    >>> hm.table(hp)["3a"].reduce3x3
    48
    """

    def __init__(
        self,
        config: TrainConfig,
        tune_config: TuneConfig,
        image_shape: tuple[int, int, int],
        num_classes: int,
        num_train: int,
    ):
        super().__init__(name=f"{config.model}_{tune_config.space}")
        self.config = config
        self.tune_config = tune_config
        self.image_shape = tuple(image_shape)
        self.num_classes = num_classes
        self.num_train = num_train
        # The registry's paper table for the model (ValueError for an unknown name).
        self.default_table = ki.default_specs(config.model)
        self.record_dir: str | None = None

    # --- hyperparameters -----------------------------------------------------------------

    def table(self, hp: kt.HyperParameters) -> dict[str, Any]:
        """The width table (before the width controls) for `hp`; declares its widths."""
        if self.tune_config.space != "per_module":
            return dict(self.default_table)
        changes: dict[str, dict[str, int]] = {}
        for key, field in reduce_fields(self.default_table):
            width = getattr(self.default_table[key], field)
            value = hp.Choice(f"{key}_{field}", width_choices(width), default=width)
            changes.setdefault(key, {})[field] = int(value)
        return {
            key: dataclasses.replace(spec, **changes.get(key, {}))
            for key, spec in self.default_table.items()
        }

    def bottleneck_ratio(self, hp: kt.HyperParameters) -> float:
        if self.tune_config.space != "bottleneck_ratio":
            return self.config.bottleneck_ratio
        return hp.Float("bottleneck_ratio", 0.125, 1.0, step=0.125, default=1.0)

    def final_table(self, hp: kt.HyperParameters) -> dict[str, Any]:
        """The final width of every conv for `hp`: what `best_specs.json` holds."""
        return scale_table(
            self.table(hp),
            width_multiplier=self.config.width_multiplier,
            bottleneck_ratio=self.bottleneck_ratio(hp),
            min_depth=self.config.min_depth,
        )

    def declare_hyperparameters(self, hp: kt.HyperParameters) -> None:
        """Declares every hyperparameter of the search in `hp` (by building its model)."""
        self.build(hp)

    def _training_values(
        self, hp: kt.HyperParameters, model: keras.Model
    ) -> tuple[float | None, float | None]:
        learning_rate = aux_loss_weight = None
        if self.tune_config.search_learning_rate:
            default = run_learning_rate(self.config)
            learning_rate = hp.Float(
                "learning_rate", default / 10, default * 10, sampling="log", default=default
            )
        default = aux_loss_weight_of(model, self.config)
        if self.tune_config.search_aux_weight and default is not None:
            # The config's weight, else the model's own: 0.3 (GoogLeNet), 0.4 (V2/V3).
            aux_loss_weight = hp.Float("aux_loss_weight", 0.0, 1.0, default=default)
        return learning_rate, aux_loss_weight

    # --- build and fit ---------------------------------------------------------------------

    def build(self, hp: kt.HyperParameters) -> keras.Model:
        model = build_model(
            self.config,
            self.image_shape,
            self.num_classes,
            specs=self.table(hp),
            bottleneck_ratio=self.bottleneck_ratio(hp),
        )
        learning_rate, aux_loss_weight = self._training_values(hp, model)
        compile_model(
            model,
            self.config,
            num_train=self.num_train,
            learning_rate=learning_rate,
            aux_loss_weight=aux_loss_weight,
        )
        return model

    def counts(self, hp: kt.HyperParameters) -> dict[str, int]:
        """`model_counts` of the model for `hp` (built, not trained)."""
        return model_counts(self.build(hp))

    def over_budget(self, params: int, macs: int) -> str | None:
        """Why an inference model of `params` and `macs` is rejected, or None within the
        budget."""
        budget = self.tune_config
        if budget.max_params is not None and params > budget.max_params:
            return f"over budget: {params:,} parameters > max_params {budget.max_params:,}"
        if budget.max_macs is not None and macs > budget.max_macs:
            return f"over budget: {macs:,} multiply-adds > max_macs {budget.max_macs:,}"
        return None

    def fit(self, hp: kt.HyperParameters, model: keras.Model, *args, **kwargs):
        start = time.perf_counter()
        info: dict[str, Any] = model_counts(model)
        info["reason"] = self.over_budget(info["params"], info["macs"])
        if info["reason"]:
            self._record(info, start)
            raise kt.errors.FailedTrialError(info["reason"])
        callbacks = list(kwargs.pop("callbacks", None) or [])
        train = kwargs.get("x", args[0] if args else None)
        precise = (
            None if train is None else precise_batch_norm(model, self.config, train, self.num_train)
        )
        if precise is not None:  # before every validation: the objective is measured on it
            callbacks.append(precise)
        if self.record_dir:
            # Per-trial backups: a killed trial resumes at its last finished epoch.
            backup = os.path.join(self.record_dir, "backup")
            callbacks.append(keras.callbacks.BackupAndRestore(backup))
        history = model.fit(*args, callbacks=callbacks, **kwargs)
        self._record(info, start)
        return history

    def _record(self, info: dict, start: float) -> None:
        if self.record_dir:
            os.makedirs(self.record_dir, exist_ok=True)
            seconds = round(time.perf_counter() - start, 3)
            info = {**info, "seconds": seconds, "machine": machine.info()}
            write_json(os.path.join(self.record_dir, INFO_FILE), info)


# --- tuners --------------------------------------------------------------------------------


class _BudgetAwareTuner:
    """Mixin for KerasTuner tuners: per-trial records; only real failures end the search."""

    def run_trial(self, trial, *args, **kwargs):
        self.hypermodel.record_dir = self.get_trial_dir(trial.trial_id)
        return super().run_trial(trial, *args, **kwargs)

    def on_trial_end(self, trial):
        info = read_info(self.get_trial_dir(trial.trial_id))
        rejected = bool(info and info.get("reason"))
        failed = trial.status != kt.engine.trial.TrialStatus.COMPLETED and not rejected
        super().on_trial_end(trial)
        self._real_failures = getattr(self, "_real_failures", 0) + 1 if failed else 0
        if self._real_failures >= MAX_CONSECUTIVE_FAILURES:
            raise RuntimeError(
                f"the search stopped: {self._real_failures} consecutive trials failed. "
                f"The last one:\n{trial.message or ''}"
            )


class RandomSearchTuner(_BudgetAwareTuner, kt.RandomSearch):
    pass


class BayesianTuner(_BudgetAwareTuner, kt.BayesianOptimization):
    pass


class HyperbandTuner(_BudgetAwareTuner, kt.Hyperband):
    pass


def make_tuner(
    hypermodel: InceptionHyperModel,
    objective: str,
    workdir: str,
    *,
    strategy=None,
    seed: int = 0,
) -> kt.Tuner:
    """The TuneConfig's tuner over `hypermodel`, its project in `workdir/search` (resumed)."""
    tune_config = hypermodel.tune_config
    common = dict(
        hypermodel=hypermodel,
        objective=kt.Objective(objective, "max"),
        directory=workdir,
        project_name="search",
        overwrite=False,
        seed=seed,
        distribution_strategy=strategy,
        # Budget rejections are FAILED trials; `_BudgetAwareTuner` counts real failures.
        max_consecutive_failed_trials=1_000_000_000,
    )
    if tune_config.tuner == "random":
        return RandomSearchTuner(max_trials=tune_config.max_trials, **common)
    if tune_config.tuner == "bayesian":
        return BayesianTuner(max_trials=tune_config.max_trials, **common)
    return HyperbandTuner(max_epochs=hypermodel.config.epochs, factor=3, **common)


def _multiworker_refusal(name: str) -> str:
    return (
        "tune trains its trials with Keras fit, which does not run under "
        "MultiWorkerMirroredStrategy (keras-team/keras#20585); search on one machine "
        f"(--strategy mirrored or onedevice). Received --strategy {name}"
        + (" with a multi-worker TF_CONFIG" if name == "auto" else "")
    )


def tune(
    config: TrainConfig,
    tune_config: TuneConfig,
    workdir: str,
    *,
    overwrite: bool = False,
    verbose: int | str = 1,
) -> dict:
    """Runs (or resumes) the search and writes trials.csv, pareto.png, best_specs.json.

    Nothing is written before the data is found and the default model is built.
    `overwrite` searches again from scratch; it removes only a folder that holds a
    search's tune_config.json.

    Returns `{"rows": [...], "best": row or None, "objective": name}`.
    """
    if config.time_budget_minutes is not None:
        raise ValueError(
            "the tuner trains each trial for --epochs (hyperband: up to it); a time budget "
            f"is for single runs. Received time_budget_minutes={config.time_budget_minutes!r}"
        )
    if config.specs is not None:
        raise ValueError(
            "the tuner searches the widths from the paper's table; a fixed table is for "
            f"train. Received specs={config.specs!r}"
        )
    # Before any TF op: logical CPUs. Keras fit does not run under MultiWorkerMirroredStrategy.
    strategy = place(
        config.replicas, config.strategy, refuse_multiworker=_multiworker_refusal
    ).strategy
    check_search(config, tune_config, workdir, overwrite=overwrite)  # reads only
    start_run(config, verbose=bool(verbose))

    datasets = load_data(config, strategy)
    hypermodel = InceptionHyperModel(
        config, tune_config, datasets.image_shape, datasets.num_classes, datasets.num_train
    )
    with strategy.scope():
        default_model = hypermodel.build(kt.HyperParameters())
    objective = monitor_name(default_model)
    default_counts = model_counts(default_model)
    default_params, default_macs = default_counts["params"], default_counts["macs"]
    output_names = output_names_of(default_model)
    del default_model
    keras.backend.clear_session()
    prepare_search(config, tune_config, workdir, overwrite=overwrite)

    tuner = make_tuner(hypermodel, objective, workdir, strategy=strategy, seed=config.seed)
    tuner.search(
        with_targets(datasets.train, output_names),
        validation_data=with_targets(datasets.validation, output_names),
        epochs=config.epochs,
        shuffle=False,  # the pipeline shuffles
        verbose=verbose,
    )

    rows = trial_rows(tuner, hypermodel)
    defaults = {
        hp.name: hp.default
        for hp in tuner.oracle.hyperparameters.space
        if not hp.name.startswith("tuner/")
    }
    for row in rows:
        row["is_default"] = all(row.get(k) == v for k, v in defaults.items())
    width_names = [name for name in defaults if name not in ("learning_rate", "aux_loss_weight")]
    fields = list(rows[0]) if rows else ["trial_id", "status", *default_counts, objective]
    with open(os.path.join(workdir, "trials.csv"), "w", newline="", encoding="utf-8") as f:
        writer = csv.DictWriter(f, fieldnames=fields)
        writer.writeheader()
        writer.writerows(rows)
    plot_pareto(rows, objective, default_macs, os.path.join(workdir, "pareto.png"))

    done = [r for r in rows if r[objective] is not None]
    best = max(done, key=lambda r: r[objective]) if done else None
    if best is not None:
        hp = tuner.oracle.trials[best["trial_id"]].hyperparameters
        ki.save_specs(hypermodel.final_table(hp), os.path.join(workdir, "best_specs.json"))
    print(format_table(rows, objective, width_names))
    training_graph = ""
    if default_counts["train_params"] != default_params:
        training_graph = (
            f" (with the auxiliary heads: {default_counts['train_params']:,} parameters, "
            f"{default_counts['train_macs']:,} multiply-adds)"
        )
    print(
        f"Paper widths: {default_params:,} parameters, {default_macs:,} multiply-adds"
        f"{training_graph}. "
        + (
            f"Best: trial {best['trial_id']}, {objective} {best[objective]:.4f}, "
            f"{best['params']:,} parameters, {best['macs']:,} multiply-adds."
            if best
            else "No trial completed."
        )
        + f"\nWorkdir {workdir}: trials.csv, pareto.png"
        + (", best_specs.json" if best else "")
        + ", search/ (KerasTuner project)."
    )
    return {"rows": rows, "best": best, "objective": objective}
