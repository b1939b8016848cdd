"""`train_and_evaluate(config, workdir)`: the project's main job.

Builds a registered model for the data, compiles it with per-output losses and the
auxiliary loss weights, fits it under a distribution strategy with resumable checkpoints,
evaluates the auxiliary-free model on the test split and writes the workdir:

    config.json     the run's configuration
    history.csv     per-epoch losses and metrics (train and validation)
    curves.png      loss and accuracy per epoch, train vs validation
    best.keras      the best model by validation accuracy
    model.keras     the final model, with auxiliary heads
    inference.keras the final model without auxiliary heads (same weights)
    export/         a SavedModel of the inference model (`model.export`)
    metrics.json    test top-1, top-5, loss, images/s, epoch times, skipped files
    logs/           TensorBoard
"""

from __future__ import annotations

import dataclasses
import json
import math
import os
import shutil
import time
from typing import Any

import keras
import tensorflow as tf

import keras_inception as ki
from training import data as data_lib
from training.batchnorm import DEFAULT_IMAGES as DEFAULT_PRECISE_BN_IMAGES
from training.batchnorm import PreciseBatchNorm, PreciseBatchNormCallback, num_batches_for
from training.evaluate import evaluate_model
from training.losses import SparseCrossentropyWithSmoothing
from training.model_setup import output_names_of, with_targets
from training.plots import plot_curves
from training.presets import get_preset, make_optimizer
from training.strategy import (
    STRATEGIES,
    is_multi_worker,
    make_strategy,
    mixed_precision_policy,
    tolerate_uneven_batches,
)
from training.workdir import check_config


class TrainingDiverged(RuntimeError):
    """The loss became NaN or infinite."""


@dataclasses.dataclass(frozen=True)
class TrainConfig:
    """Everything a run depends on (written to `config.json`).

    Args:
        model: str. A registered model name (`keras_inception.list_models()`).
        dataset: str. A TFDS name, `"fashion_mnist"` or `"imagefolder"`.
        data_dir: str or None. TFDS data_dir, idx folder or image-folder root.
        image_size: int or None. Model input side; None keeps the dataset's own.
        batch_size: int. Global batch size (split across replicas).
        epochs: int. Epochs to train.
        train_limit: int or None. Use only the first N training examples.
        val_fraction: float. Held-out fraction where the data has no validation split.
        stem: str or None. Model stem; None: "small" for images <= 64 px, else "imagenet".
        width_multiplier: float. Model width multiplier.
        min_depth: int. Smallest conv width after the multiplier.
        bottleneck_ratio: float. Scale of the 1x1 reduce convolutions.
        aux: bool. Train with the auxiliary classifiers.
        aux_loss_weight: float or None. Override the auxiliary loss weights.
        dropout: float or None. Override the model's dropout before the classifier.
        preset: str. Optimizer recipe (`training.presets.PRESETS`).
        learning_rate: float or None. Override the preset's (batch-scaled) learning rate.
        warmup_epochs: float or None. Override the preset's warmup.
        label_smoothing: float or None. Override the preset's label smoothing.
        strategy: str. "auto", "mirrored", "multiworker" or "onedevice"
            (`training.strategy.make_strategy`); auto is multiworker when `TF_CONFIG` names
            more than one worker, else mirrored.
        replicas: int or None. CPU replicas (logical devices) for MirroredStrategy.
        mixed_precision: bool. mixed_float16 on GPU, mixed_bfloat16 on CPU.
        sync_batch_norm: bool. Synchronized batch norm across replicas.
        seed: int. Random seed for weights, data order and augmentation.
        deterministic: bool. Deterministic ops and data order.
        augment: bool. Training augmentation.
        flip: bool. Random horizontal flips in the augmentation; turn off for data whose
            mirror image is another thing (digits, text, many signs and charts).
        bn_momentum: float. Momentum of the batch-norm moving averages (the builders').
        precise_bn_images: int. Before every validation and before the final test and
            export, re-estimate every batch-norm layer's statistics over this many
            training images (`training.batchnorm`); 0 keeps the moving averages.
    """

    model: str = "googlenet"
    dataset: str = "fashion_mnist"
    data_dir: str | None = None
    image_size: int | None = None
    batch_size: int = 128
    epochs: int = 10
    train_limit: int | None = None
    val_fraction: float = 0.1
    stem: str | None = None
    width_multiplier: float = 1.0
    min_depth: int = 16
    bottleneck_ratio: float = 1.0
    aux: bool = True
    aux_loss_weight: float | None = None
    dropout: float | None = None
    preset: str = "default"
    learning_rate: float | None = None
    warmup_epochs: float | None = None
    label_smoothing: float | None = None
    strategy: str = "auto"
    replicas: int | None = None
    mixed_precision: bool = False
    sync_batch_norm: bool = False
    seed: int = 0
    deterministic: bool = False
    augment: bool = True
    flip: bool = True
    bn_momentum: float = 0.99
    precise_bn_images: int = DEFAULT_PRECISE_BN_IMAGES

    def __post_init__(self):
        positive = {"batch_size": self.batch_size, "epochs": self.epochs}
        for label, value in positive.items():
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ValueError(f"{label} must be a positive integer; received {value!r}")
        if self.strategy not in STRATEGIES:
            raise ValueError(
                f"strategy must be one of {list(STRATEGIES)}; received {self.strategy!r}"
            )
        if self.train_limit is not None and self.train_limit < 1:
            raise ValueError(f"train_limit must be positive; received {self.train_limit!r}")
        images = self.precise_bn_images
        if isinstance(images, bool) or not isinstance(images, int) or images < 0:
            raise ValueError(f"precise_bn_images must be an integer >= 0; received {images!r}")
        if not 0 <= self.bn_momentum < 1:
            raise ValueError(f"bn_momentum must be in [0, 1); received {self.bn_momentum!r}")


def _json_default(value: Any):
    if hasattr(value, "item"):
        return value.item()
    return str(value)


def _write_json(path: str, data: Any) -> None:
    with open(path, "w", encoding="utf-8") as f:
        json.dump(data, f, indent=2, default=_json_default)
        f.write("\n")


def _read_json(path: str) -> Any:
    with open(path, encoding="utf-8") as f:
        return json.load(f)


def prepare_workdir(config: TrainConfig, workdir: str, overwrite: bool) -> dict | None:
    """Returns the finished run's metrics when there is one and `overwrite` is False."""
    metrics_path = os.path.join(workdir, "metrics.json")
    config_path = os.path.join(workdir, "config.json")
    if overwrite and os.path.isdir(workdir):
        shutil.rmtree(workdir)
    os.makedirs(workdir, exist_ok=True)
    current = json.loads(json.dumps(dataclasses.asdict(config), default=_json_default))
    # A field added after the run started counts as its default.
    defaults = json.loads(json.dumps(dataclasses.asdict(TrainConfig()), default=_json_default))
    advice = "use another --workdir or pass --overwrite"
    resumed = check_config(workdir, "config.json", current, defaults, what="run", advice=advice)
    if resumed and os.path.exists(metrics_path):
        return _read_json(metrics_path)
    _write_json(config_path, dataclasses.asdict(config))
    return None


def load_data(config: TrainConfig, strategy: tf.distribute.Strategy | None) -> data_lib.Datasets:
    """The train/validation/test pipelines that `config` names."""
    return data_lib.load_datasets(
        data_lib.DataConfig(
            dataset=config.dataset,
            data_dir=config.data_dir,
            image_size=config.image_size,
            batch_size=config.batch_size,
            train_limit=config.train_limit,
            val_fraction=config.val_fraction,
            seed=config.seed,
            deterministic=config.deterministic,
            augment=config.augment,
            flip=config.flip,
        ),
        strategy=strategy,
    )


def build_model(
    config: TrainConfig, image_shape: tuple[int, int, int], num_classes: int, **overrides
) -> keras.Model:
    """The registered model for `config` and the data; `overrides` go to the builder.

    The stem defaults to "small" for images of 64 px or less. Call it inside the
    strategy's scope.
    """
    kwargs = dict(
        input_shape=image_shape,
        classes=num_classes,
        aux_logits=config.aux,
        stem=config.stem or ("small" if image_shape[0] <= 64 else "imagenet"),
        width_multiplier=config.width_multiplier,
        min_depth=config.min_depth,
        bottleneck_ratio=config.bottleneck_ratio,
        bn_momentum=config.bn_momentum,
    )
    if config.dropout is not None:
        kwargs["dropout"] = config.dropout
    if config.sync_batch_norm:
        kwargs["sync_batch_norm"] = True
    kwargs.update(overrides)
    return ki.get_model(config.model, **kwargs)


def make_losses(
    model: keras.Model, config: TrainConfig, *, aux_loss_weight: float | None = None
) -> tuple[SparseCrossentropyWithSmoothing, dict[str, float] | None]:
    """The smoothed sparse loss and the per-output loss weights (None: one output).

    `aux_loss_weight` overrides the config's (a tuner's choice).
    """
    preset = get_preset(config.preset)
    label_smoothing = (
        preset.label_smoothing if config.label_smoothing is None else config.label_smoothing
    )
    loss = SparseCrossentropyWithSmoothing(label_smoothing)
    if output_names_of(model) is None:
        return loss, None
    aux_loss_weight = config.aux_loss_weight if aux_loss_weight is None else aux_loss_weight
    loss_weights = ki.default_loss_weights(model)
    if aux_loss_weight is not None:
        loss_weights = {k: 1.0 if k == "main" else aux_loss_weight for k in loss_weights}
    return loss, loss_weights


def make_run_optimizer(
    config: TrainConfig, *, num_train: int, learning_rate: float | None = None
) -> keras.optimizers.Optimizer:
    """The preset's optimizer and schedule for this run's steps (`learning_rate` overrides)."""
    return make_optimizer(
        get_preset(config.preset),
        steps_per_epoch=math.ceil(num_train / config.batch_size),
        epochs=config.epochs,
        global_batch_size=config.batch_size,
        learning_rate=learning_rate or config.learning_rate,
        warmup_epochs=config.warmup_epochs,
    )


def precise_batch_norm(
    model: keras.Model, config: TrainConfig, train: tf.data.Dataset, num_train: int
) -> PreciseBatchNormCallback | None:
    """The callback that re-estimates the BN statistics over batches of `train` (of
    `num_train` examples) before every validation, or None when
    `config.precise_bn_images` is 0 or the model has no batch norm."""
    if not config.precise_bn_images:
        return None
    estimator = PreciseBatchNorm(model)
    if not estimator.layers:
        return None
    batches = num_batches_for(config.precise_bn_images, config.batch_size, num_train)
    return PreciseBatchNormCallback(estimator, train, batches)


def precise_bn_metrics(callback: PreciseBatchNormCallback | None) -> dict:
    """What metrics.json records of the precise-BN updates made by this process."""
    if callback is None:
        return {"precise_bn_images": 0}
    seconds = callback.estimator.seconds
    return {
        "precise_bn_images": callback.estimator.images,
        "precise_bn_batches": callback.num_batches,
        "precise_bn_seconds": seconds,
    }


def compile_model(
    model: keras.Model,
    config: TrainConfig,
    *,
    num_train: int,
    learning_rate: float | None = None,
    aux_loss_weight: float | None = None,
) -> None:
    """Per-output smoothed losses, auxiliary loss weights, top-1/top-5 on the main head.

    `learning_rate` and `aux_loss_weight` override the config's (a tuner's choices).
    Call it inside the strategy's scope.
    """
    output_names = output_names_of(model)
    loss, loss_weights = make_losses(model, config, aux_loss_weight=aux_loss_weight)
    metrics = [
        keras.metrics.SparseCategoricalAccuracy(name="accuracy"),
        keras.metrics.SparseTopKCategoricalAccuracy(k=5, name="top5"),
    ]
    model.compile(
        optimizer=make_run_optimizer(config, num_train=num_train, learning_rate=learning_rate),
        loss={k: loss for k in output_names} if output_names else loss,
        loss_weights=loss_weights,
        metrics={"main": metrics} if output_names else metrics,
        jit_compile=False,  # XLA fails under MirroredStrategy on logical CPUs
    )
    tolerate_uneven_batches(model)


def train_and_evaluate(
    config: TrainConfig,
    workdir: str,
    *,
    overwrite: bool = False,
    verbose: int | str = "auto",
    extra_callbacks: list | None = None,
    connect_timeout: float = 300.0,
) -> dict:
    """Trains, evaluates and exports; returns the metrics written to `metrics.json`.

    Running it again on the same workdir resumes an interrupted run at its last finished
    epoch, and returns a finished run's metrics without training (unless `overwrite`).
    `extra_callbacks` are added after the run's own (which back up each finished epoch first).

    Under the multiworker strategy every worker calls it with the same arguments; it trains
    with `training.multiworker`'s loop (Keras `fit` does not run under that strategy), the
    chief writes the workdir, and `extra_callbacks` and `verbose` are not supported.
    `connect_timeout` is how many seconds a worker waits for the others.
    """
    # The strategy first: logical CPU devices must exist before any TF op runs.
    strategy = make_strategy(config.replicas, config.strategy, connect_timeout=connect_timeout)
    if is_multi_worker(strategy):
        if extra_callbacks:
            raise ValueError(
                "extra_callbacks are Keras fit callbacks; the multiworker loop does not call "
                f"them. Received {extra_callbacks!r}"
            )
        from training.multiworker import train_multiworker

        return train_multiworker(config, workdir, strategy, overwrite=overwrite)
    finished = prepare_workdir(config, workdir, overwrite)
    if finished is not None:
        print(
            f"{workdir}: this run already finished (test top-1 {finished['top1']:.4f}); "
            "nothing to train. Pass --overwrite to train it again."
        )
        return finished

    keras.utils.set_random_seed(config.seed)
    if config.deterministic:
        tf.config.experimental.enable_op_determinism()
    keras.config.set_dtype_policy(mixed_precision_policy() if config.mixed_precision else "float32")

    datasets = load_data(config, strategy)
    if datasets.train_repeats:
        print(repeats_message(datasets, strategy.num_replicas_in_sync))
    with strategy.scope():
        model = build_model(config, datasets.image_shape, datasets.num_classes)
        compile_model(model, config, num_train=datasets.num_train)
    output_names = output_names_of(model)

    train_ds = with_targets(datasets.train, output_names)
    val_ds = with_targets(datasets.validation, output_names)
    monitor = "val_main_accuracy" if output_names else "val_accuracy"
    backup_dir = os.path.join(workdir, "backup")
    resumed_at = _backed_up_epochs(backup_dir)
    if resumed_at >= config.epochs:
        print(f"Resuming {workdir}: all {config.epochs} epochs are done; evaluating and exporting.")
    elif resumed_at:
        print(
            f"Resuming {workdir}: epochs 1-{resumed_at} are done; continuing at epoch "
            f"{resumed_at + 1} of {config.epochs}."
        )
    timer = EpochTimer(os.path.join(workdir, "epoch_times.json"), datasets.num_train)
    precise = precise_batch_norm(model, config, datasets.train, datasets.num_train)
    callbacks = [
        # Kept after fit, so that a run interrupted while it evaluates or exports resumes
        # there instead of training again; removed once metrics.json is written.
        keras.callbacks.BackupAndRestore(backup_dir, delete_checkpoint=False),
        keras.callbacks.ModelCheckpoint(
            os.path.join(workdir, "best.keras"), monitor=monitor, mode="max", save_best_only=True
        ),
        keras.callbacks.TensorBoard(os.path.join(workdir, "logs")),
        keras.callbacks.CSVLogger(os.path.join(workdir, "history.csv"), append=True),
        keras.callbacks.TerminateOnNaN(),
        timer,  # before `precise`: an epoch's training time leaves the estimate out
        *([precise] if precise else []),
        *(extra_callbacks or []),
    ]
    history = model.fit(
        train_ds,
        validation_data=val_ds,
        epochs=config.epochs,
        callbacks=callbacks,
        shuffle=False,  # the pipeline shuffles
        verbose=verbose,
    )
    losses = history.history.get("loss", [])
    if losses and not all(math.isfinite(value) for value in losses):
        raise TrainingDiverged(
            f"training stopped: the loss became {losses[-1]} in epoch {len(losses)}. "
            "Lower --learning-rate, add --warmup-epochs, or check the data."
        )

    if precise is not None and not precise.current():
        precise.on_test_begin()  # the final weights (an EMA, or a resumed run) get theirs
    inference = save_models(model, workdir)
    test = evaluate_model(inference, datasets.test)
    return write_metrics(
        workdir,
        config,
        datasets,
        test=test,
        timer=timer,
        params=(model.count_params(), inference.count_params()),
        replicas=strategy.num_replicas_in_sync,
        resume_dir=backup_dir,
        extra=precise_bn_metrics(precise),
    )


def save_models(model: keras.Model, workdir: str) -> keras.Model:
    """Writes model.keras, inference.keras, export/ and curves.png; returns the inference
    model (auxiliary heads stripped, same weights)."""
    model.save(os.path.join(workdir, "model.keras"))
    inference = ki.strip_aux_heads(model)
    inference.save(os.path.join(workdir, "inference.keras"))
    export_dir = os.path.join(workdir, "export")
    if os.path.isdir(export_dir):
        shutil.rmtree(export_dir)
    inference.export(export_dir, verbose=False)
    plot_curves(os.path.join(workdir, "history.csv"), os.path.join(workdir, "curves.png"))
    return inference


def write_metrics(
    workdir: str,
    config: TrainConfig,
    datasets: data_lib.Datasets,
    *,
    test: dict,
    timer: EpochTimer,
    params: tuple[int, int],
    replicas: int,
    resume_dir: str,
    extra: dict | None = None,
    verbose: bool = True,
) -> dict:
    """Writes metrics.json, then deletes the resume state in `resume_dir` (the run is over)
    and prints a summary (when `verbose`); returns the metrics."""
    metrics = {
        "top1": test["top1"],
        "top5": test["top5"],
        "loss": test["loss"],
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
        **(extra or {}),
    }
    _write_json(os.path.join(workdir, "metrics.json"), metrics)
    shutil.rmtree(resume_dir, ignore_errors=True)
    if not verbose:
        return metrics
    if datasets.skipped.count:
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
        f"Workdir {workdir}: config.json, history.csv, curves.png, best.keras, model.keras, "
        "inference.keras, export/, metrics.json, logs/ (TensorBoard)."
    )
    return metrics


def repeats_message(datasets: data_lib.Datasets, replicas: int) -> str:
    return (
        f"Each epoch repeats {datasets.train_repeats} of the {datasets.num_train} training "
        f"images, so that its last batch gives each of the {replicas} replicas at least one."
    )


def _backed_up_epochs(backup_dir: str) -> int:
    path = os.path.join(backup_dir, "training_metadata.json")
    if not os.path.exists(path):
        return 0
    return int(_read_json(path).get("epoch", 0))


class EpochTimer(keras.callbacks.Callback):
    """Wall time of each epoch and of its training part (without validation).

    Kept across resumed runs in a JSON file, so a resumed run reports every epoch.
    """

    def __init__(self, path: str, num_train: int):
        super().__init__()
        self.path = path
        self.num_train = num_train
        self.times = _read_json(path) if os.path.exists(path) else {}

    def on_epoch_begin(self, epoch, logs=None):
        self._start = time.perf_counter()
        self._train_seconds = None

    def on_test_begin(self, logs=None):
        if self._train_seconds is None:  # validation starts: the epoch's training is over
            self._train_seconds = time.perf_counter() - self._start

    def on_epoch_end(self, epoch, logs=None):
        total = time.perf_counter() - self._start
        self.times[str(epoch + 1)] = {"epoch": total, "train": self._train_seconds or total}
        _write_json(self.path, self.times)

    def column(self, key: str) -> list[float]:
        return [self.times[k][key] for k in sorted(self.times, key=int)]

    def images_per_sec(self) -> float:
        """Training images/s; the first epoch (graph tracing) is left out when others exist."""
        times = self.column("train")
        steady = times[1:] if len(times) > 1 else times
        return self.num_train / (sum(steady) / len(steady)) if steady else 0.0
