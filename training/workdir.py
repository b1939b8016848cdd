"""Workdir I/O shared by every driver: one configuration check, the resume messages, the
epoch timer, the saved models and metrics.json.

A workdir records its job's configuration as JSON (`config.json` for `train`,
`tune_config.json` for `tune`), written only once the configuration, the data and the
model have been checked, so a refused command leaves no trace. Rerunning on the same
workdir resumes the job only when the configuration is the same (a training run also
continues with a larger `epochs`). A field added to a config dataclass after the file was
written is missing from it and counts as the field's default, so adding a field never
stops an existing run or search from resuming. A new job starts only in a missing or
empty folder, and `--overwrite` removes only a folder that holds that job's file.

A training run's workdir:

    config.json     the run's configuration
    history.csv     per-epoch losses and metrics (train and validation)
    curves.png      loss and accuracy per epoch, train vs validation
    confusion.png   test confusion matrix, true vs predicted class (`fit` driver)
    best.keras      the best model by validation accuracy
    model.keras     the final model, with auxiliary heads
    inference.keras the final model without auxiliary heads (same weights); both .keras
                    files take raw pixels in [0, 255] and record the class names
                    (`keras_inception.class_names_of`)
    labels.txt      the class names, one a line, by label (also in export/)
    export/         a SavedModel of the inference model (`model.export`; not with
                    `export=False`, `--no-export`)
    metrics.json    test top-1, top-5, loss, per-class accuracy, images/s, epoch times,
                    unreadable images skipped and, apart, non-image files left out
    epoch_times.json  wall time of each epoch and of its training part
    cpu_usage.json  CPU time/wall of each epoch's training (`training.cpu_mode`)
    logs/           TensorBoard
    backup/         the resume state (`keras.callbacks.BackupAndRestore`), kept when the
                    run finishes so that a larger `--epochs` continues it
"""

from __future__ import annotations

import dataclasses
import json
import os
import shutil
import time
from collections.abc import Mapping, Sequence
from typing import Any

import keras

import keras_inception as ki
from keras_inception.metadata import write_labels
from training import machine
from training.config import TrainConfig
from training.data import Datasets
from training.plots import plot_confusion, plot_curves

RUN_CONFIG = "config.json"


def changed_fields(
    previous: Mapping[str, Any],
    current: Mapping[str, Any],
    defaults: Mapping[str, Any],
    prefix: str = "",
) -> list[str]:
    """The names of `current`'s fields whose value differs from `previous`'s, sorted.

    A field missing from `previous` counts as its value in `defaults`. Nested mappings
    (present in both `current` and `defaults`) are compared field by field and named
    `f"{part}.{field}"`. Fields only `previous` has are ignored.

    Example:
    >>> changed_fields({"a": 1}, {"a": 1, "b": 2}, {"a": 0, "b": 2})
    []
    >>> changed_fields({"tune": {"x": 1}}, {"tune": {"x": 2}}, {"tune": {"x": 0}})
    ['tune.x']
    """
    changed = []
    for key, value in current.items():
        default = defaults.get(key)
        old = previous.get(key, default)
        if isinstance(value, Mapping) and isinstance(default, Mapping):
            old = old if isinstance(old, Mapping) else {}
            changed += changed_fields(old, value, default, f"{prefix}{key}.")
        elif old != value:
            changed.append(f"{prefix}{key}")
    return sorted(changed)


def json_default(value: Any):
    """JSON for numpy scalars (their value) and anything else (its str)."""
    if hasattr(value, "item"):
        return value.item()
    return str(value)


def write_json(path: str, data: Any) -> None:
    with open(path, "w", encoding="utf-8") as f:
        json.dump(data, f, indent=2, default=json_default)
        f.write("\n")


def read_json(path: str) -> Any:
    with open(path, encoding="utf-8") as f:
        return json.load(f)


def as_json(config: Any) -> Any:
    """A dataclass (or a mapping of them) as JSON would hold it: lists, not tuples."""
    if dataclasses.is_dataclass(config):
        config = dataclasses.asdict(config)
    elif isinstance(config, Mapping):
        config = {
            k: dataclasses.asdict(v) if dataclasses.is_dataclass(v) else v
            for k, v in config.items()
        }
    return json.loads(json.dumps(config, default=json_default))


def check_workdir(workdir: str, filename: str, *, what: str, overwrite: bool) -> dict | None:
    """Read-only check of the folder a job is about to write to; returns the job
    configuration saved there (`workdir/filename`), or None for a new job.

    A workdir is a job's only when it holds that job's `filename`: `overwrite` removes
    nothing else, and a new job starts only in a missing or empty folder, so that no run
    is ever written into (and later overwritten with) a folder of other files.

    Raises:
        ValueError: `workdir` is a file; `overwrite` on a folder that holds no `filename`
            (nothing is removed); a new job in a folder that holds other files.
    """
    if os.path.exists(workdir) and not os.path.isdir(workdir):
        raise ValueError(f"workdir {workdir!r} is a file, not a folder")
    path = os.path.join(workdir, filename)
    holds_job = os.path.isfile(path)
    empty = not os.path.isdir(workdir) or not os.listdir(workdir)
    if overwrite:
        if not (holds_job or empty):
            raise ValueError(
                f"refusing to --overwrite {workdir!r}: it holds no {what} ({filename} is "
                "missing), so it may be another folder of yours; nothing was removed"
            )
        return None
    if holds_job:
        return read_json(path)
    if not empty:
        raise ValueError(
            f"workdir {workdir!r} holds files but no {what} ({filename} is missing); use a "
            "new or empty folder for a new one"
        )
    return None


def start_workdir(workdir: str, filename: str, current: Any, *, overwrite: bool) -> None:
    """Writes `current` (a dataclass or a mapping of them) to `workdir/filename`, first
    removing the folder's earlier job when `overwrite`; call it once the job's
    configuration, data and model have been checked (`check_workdir` first), so that a
    refused command leaves no trace."""
    if overwrite and os.path.isdir(workdir):
        # check_workdir refused any folder that is not this kind of job's: re-checked here,
        # just before the removal.
        if os.listdir(workdir) and not os.path.isfile(os.path.join(workdir, filename)):
            raise ValueError(f"refusing to remove {workdir!r}: it holds no {filename}")
        shutil.rmtree(workdir)
    os.makedirs(workdir, exist_ok=True)
    write_json(os.path.join(workdir, filename), as_json(current))


def without_inert_fields(saved: dict) -> dict:
    """A saved config.json's fields but those that do nothing in its run: `base_lr_scale`
    without `init_weights` (runs saved before its default became 1.0 carry 0.1, which
    would otherwise read as another configuration, or as a flag given without
    --init-weights)."""
    if saved.get("init_weights") is None:
        return {k: v for k, v in saved.items() if k != "base_lr_scale"}
    return saved


def read_run_config(workdir: str) -> TrainConfig | None:
    """The `TrainConfig` saved in a training workdir's config.json; None when `workdir` is
    not a folder holding one. Fields the file lacks (older runs) take their defaults;
    fields this version does not know are left out."""
    path = os.path.join(workdir, RUN_CONFIG)
    if not os.path.isfile(path):
        return None
    saved = without_inert_fields(read_json(path))
    known = {f.name for f in dataclasses.fields(TrainConfig)}
    return TrainConfig(**{k: v for k, v in saved.items() if k in known})


@dataclasses.dataclass(frozen=True)
class RunState:
    """What a training workdir holds for a run of a given configuration.

    Attributes:
        status: str. "new" (nothing there, or `overwrite`), "resume" (an interrupted run
            of this configuration, or of fewer epochs), "finished" (this configuration's
            run is done) or "continue" (a finished run of fewer epochs: train on).
        metrics: dict or None. The finished run's metrics.json ("finished", "continue").
        previous_epochs: int or None. The saved run's epochs when this one has more.
    """

    status: str
    metrics: dict | None = None
    previous_epochs: int | None = None


def inspect_run(config: TrainConfig, workdir: str, *, overwrite: bool) -> RunState:
    """Read-only: what `workdir` holds for a run of `config` (nothing is written).

    The saved configuration must equal `config`, but for a larger `epochs`: a finished
    run then continues from its last epoch (its resume state, `backup/`, is kept when it
    finishes), its schedule re-planned for the new total.

    Raises:
        ValueError: the workdir is not a run's (`check_workdir`), holds a run of another
            configuration, or a finished run that cannot be continued.
    """
    previous = check_workdir(workdir, RUN_CONFIG, what="run", overwrite=overwrite)
    if previous is None:
        return RunState("new")
    current, defaults = as_json(config), as_json(TrainConfig())
    changed = changed_fields(without_inert_fields(previous), current, defaults)
    old_epochs = previous.get("epochs", defaults["epochs"])
    metrics_path = os.path.join(workdir, "metrics.json")
    finished = os.path.exists(metrics_path)
    if changed == ["epochs"] and config.epochs > old_epochs:
        if config.time_budget_minutes is not None:
            raise ValueError(
                f"workdir {workdir!r} holds a run of {old_epochs} epochs under "
                "--time-budget-minutes, whose schedule was planned for its budget; a larger "
                "--epochs cannot continue it. Use another --workdir, or --overwrite"
            )
        if not finished:
            return RunState("resume", previous_epochs=old_epochs)
        if not os.path.isdir(os.path.join(workdir, "backup")):
            raise ValueError(
                f"workdir {workdir!r} holds a finished run of {old_epochs} epochs without its "
                "resume state (backup/: runs that finished before it was kept, or of the "
                "multiworker strategy), so --epochs "
                f"{config.epochs} cannot continue it. Use another --workdir, or --overwrite"
            )
        return RunState("continue", read_json(metrics_path), old_epochs)
    if changed:
        raise ValueError(
            f"workdir {workdir!r} holds a run with another configuration (differs in "
            f"{changed}); use another --workdir, pass --overwrite to train it again, or a "
            "larger --epochs (alone) to continue it"
        )
    if finished:
        return RunState("finished", read_json(metrics_path))
    return RunState("resume")


def start_run_workdir(
    config: TrainConfig, workdir: str, state: RunState, *, overwrite: bool
) -> None:
    """Writes the run's config.json (after `inspect_run` and every check of the run), first
    removing the earlier run when `overwrite`. A continued run's earlier metrics.json
    is kept as `metrics_<epochs>_epochs.json`."""
    start_workdir(workdir, RUN_CONFIG, config, overwrite=overwrite)
    if state.status == "continue":
        os.replace(
            os.path.join(workdir, "metrics.json"),
            os.path.join(workdir, f"metrics_{state.previous_epochs}_epochs.json"),
        )


def prepare_workdir(config: TrainConfig, workdir: str, overwrite: bool) -> dict | None:
    """`inspect_run` then `start_run_workdir` in one step (the multiworker driver, whose
    chief decides for every worker); returns the finished run's metrics when there is one.

    Raises:
        ValueError: as `inspect_run`, and for a larger `epochs` on a finished run (the
            multiworker loop does not keep a finished run's resume state).
    """
    state = inspect_run(config, workdir, overwrite=overwrite)
    if state.status == "finished":
        return state.metrics
    if state.status == "continue":
        raise ValueError(
            f"workdir {workdir!r} holds a finished run of {state.previous_epochs} epochs; the "
            "multiworker strategy cannot continue a finished run: continue it with "
            "--strategy mirrored, or use another --workdir"
        )
    start_run_workdir(config, workdir, state, overwrite=overwrite)
    return None


def finished_message(workdir: str, metrics: dict) -> str:
    return (
        f"{workdir}: this run already finished (test top-1 {metrics['top1']:.4f}); "
        "nothing to train. Pass --overwrite to train it again, or a larger --epochs to "
        "continue it."
    )


def resume_message(workdir: str, done: int, epochs: int) -> str | None:
    """What a run resumed after `done` finished epochs of `epochs` says (None: a new run)."""
    if done >= epochs:
        return f"Resuming {workdir}: all {epochs} epochs are done; evaluating and exporting."
    if done:
        return (
            f"Resuming {workdir}: epochs 1-{done} are done; continuing at epoch {done + 1} "
            f"of {epochs}."
        )
    return None


def backed_up_epochs(backup_dir: str) -> int:
    """Epochs finished by the run whose `keras.callbacks.BackupAndRestore` state is here."""
    path = os.path.join(backup_dir, "training_metadata.json")
    if not os.path.exists(path):
        return 0
    return int(read_json(path).get("epoch", 0))


def save_models(
    model: keras.Model,
    workdir: str,
    *,
    export: bool = True,
    class_names: Sequence[str] | None = None,
) -> keras.Model:
    """Writes model.keras, inference.keras, export/ (when `export`; an earlier one is
    removed either way) and curves.png; returns the inference model (auxiliary heads
    stripped, same weights). `class_names` go into both .keras files
    (`keras_inception.write_class_names`) and labels.txt, in the workdir and export/.

    inference.keras holds no training state: no optimizer and no loss (ours, the smoothed
    loss, would need `training` to load), so plain Keras opens it.
    """
    model.save(os.path.join(workdir, "model.keras"))
    inference = ki.strip_aux_heads(model)
    if inference is model:  # one output: the same graph, without the compile state
        inference = keras.Model(model.input, model.output, name=model.name)
    inference.save(os.path.join(workdir, "inference.keras"))
    if class_names is not None:
        for name in ("model.keras", "inference.keras"):
            ki.write_class_names(os.path.join(workdir, name), class_names)
        write_labels(workdir, class_names)
    export_dir = os.path.join(workdir, "export")
    if os.path.isdir(export_dir):
        shutil.rmtree(export_dir)
    if export:
        inference.export(export_dir, verbose=False)
        if class_names is not None:
            write_labels(export_dir, class_names)
    plot_curves(os.path.join(workdir, "history.csv"), os.path.join(workdir, "curves.png"))
    return inference


def write_metrics(
    workdir: str,
    config: TrainConfig,
    datasets: Datasets,
    *,
    test: dict,
    timer: EpochTimer,
    params: tuple[int, int],
    replicas: int,
    resume_dir: str | None,
    extra: dict | None = None,
    verbose: bool = True,
) -> dict:
    """Writes metrics.json, then deletes the resume state in `resume_dir` (None: kept, so
    that a larger `epochs` can continue the run) and prints a summary (when `verbose`); returns the metrics.

    When `test` holds a confusion matrix (`training.evaluate.evaluate_model`'s), also writes
    confusion.png and stores the test accuracy per class with the class names.
    """
    per_class = {}
    if "confusion" in test:
        # Before metrics.json, which marks the run finished: an interrupted run redoes it.
        plot_confusion(
            test["confusion"],
            datasets.class_names,
            os.path.join(workdir, "confusion.png"),
            title=f"test, top-1 {test['top1']:.4f}",
        )
        per_class = {"per_class": test["per_class"], "class_names": list(datasets.class_names)}
    metrics = {
        "top1": test["top1"],
        "top5": test["top5"],
        "loss": test["loss"],
        **per_class,
        "train_images_per_sec": timer.images_per_sec(),
        "eval_images_per_sec": test["images_per_sec"],
        "epoch_times": timer.column("epoch"),
        "train_seconds": timer.column("train"),
        "epochs": config.epochs,
        "num_train": datasets.num_train,
        "num_validation": datasets.num_validation,
        "num_test": datasets.num_test,
        "params": params[0],
        "inference_params": params[1],
        "replicas": replicas,
        "skipped_files": datasets.skipped.count,
        "train_repeats": datasets.train_repeats,
        "skipped": [list(item) for item in datasets.skipped.files],
        "non_image_files": len(datasets.skipped.non_images),
        "non_images": [list(item) for item in datasets.skipped.non_images],
        "machine": machine.info(),
        **(extra or {}),
    }
    write_json(os.path.join(workdir, "metrics.json"), metrics)
    if resume_dir is not None:
        shutil.rmtree(resume_dir, ignore_errors=True)
    if not verbose:
        return metrics
    if datasets.skipped.count or datasets.skipped.non_images:
        print(datasets.skipped.summary())
    if metrics.get("precise_bn_seconds"):
        seconds = metrics["precise_bn_seconds"]
        print(
            f"Precise batch norm: {len(seconds)} estimate(s) over {metrics['precise_bn_images']} "
            f"training images, {sum(seconds):.1f} s in all ({sum(seconds) / len(seconds):.1f} s "
            "each)."
        )
    print(
        f"Test top-1 {metrics['top1']:.4f}, top-5 {metrics['top5']:.4f}, loss "
        f"{metrics['loss']:.4f} on {datasets.num_test} images; "
        f"{metrics['train_images_per_sec']:.0f} training images/s.\n"
        f"Workdir {workdir}: config.json, history.csv, curves.png, "
        f"{'confusion.png, ' if per_class else ''}best.keras, model.keras, inference.keras, "
        f"{'export/, ' if os.path.isdir(os.path.join(workdir, 'export')) else ''}"
        "metrics.json, logs/ (TensorBoard)."
    )
    return metrics


def repeats_message(datasets: Datasets, replicas: int) -> str:
    return (
        f"Each epoch repeats {datasets.train_repeats} of the {datasets.num_train} training "
        f"images, so that its last batch gives each of the {replicas} replicas at least one."
    )


class EpochTimer(keras.callbacks.Callback):
    """Wall time of each epoch and of its training part (without validation).

    Kept across resumed runs in a JSON file, so a resumed run reports every epoch.
    """

    def __init__(self, path: str, num_train: int):
        super().__init__()
        self.path = path
        self.num_train = num_train
        self.times = read_json(path) if os.path.exists(path) else {}

    def on_epoch_begin(self, epoch, logs=None):
        self._start = time.perf_counter()
        self._train_seconds = None

    def on_test_begin(self, logs=None):
        if self._train_seconds is None:  # validation starts: the epoch's training is over
            self._train_seconds = time.perf_counter() - self._start

    def on_epoch_end(self, epoch, logs=None):
        total = time.perf_counter() - self._start
        self.times[str(epoch + 1)] = {"epoch": total, "train": self._train_seconds or total}
        write_json(self.path, self.times)

    def column(self, key: str) -> list[float]:
        return [self.times[k][key] for k in sorted(self.times, key=int)]

    def images_per_sec(self) -> float:
        """Training images/s; the first epoch (graph tracing) is left out when others exist."""
        times = self.column("train")
        steady = times[1:] if len(times) > 1 else times
        return self.num_train / (sum(steady) / len(steady)) if steady else 0.0
