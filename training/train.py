"""`train_and_evaluate(config, workdir)`: the project's main job, as a thin `fit` driver.

Builds a registered model for the data, compiles it with per-output losses and the
auxiliary loss weights, fits it under a distribution strategy with resumable checkpoints,
evaluates the auxiliary-free model on the test split and writes the workdir (its files:
`training.workdir`). Under MultiWorkerMirroredStrategy it hands the run to
`training.multiworker`'s loop, which Keras `fit` cannot run under. Both drive the same run
kit (`training.runkit`).
"""

from __future__ import annotations

import dataclasses
import os
import time

import keras

from training import machine
from training.budget import plan_run
from training.config import TrainConfig
from training.cpu_mode import CpuUsage, cpu_usage_metrics
from training.cpu_mode import describe as describe_cpu_usage
from training.evaluate import evaluate_model, format_per_class
from training.finetune import fit_in_phases, scale_base_learning_rate
from training.init_weights import builder_overrides, load_backbone, read_source, resolve_config
from training.model_setup import (
    build_model,
    compile_model,
    monitor_name,
    output_names_of,
    with_targets,
)
from training.multiworker import train_multiworker
from training.placement import place
from training.runkit import (
    DivergenceGuard,
    check_finite,
    load_data,
    precise_batch_norm,
    precise_bn_metrics,
    start_run,
)
from training.workdir import (
    EpochTimer,
    backed_up_epochs,
    finished_message,
    inspect_run,
    repeats_message,
    resume_message,
    save_models,
    start_run_workdir,
    write_metrics,
)

__all__ = ["TrainConfig", "train_and_evaluate"]


def train_and_evaluate(
    config: TrainConfig,
    workdir: str,
    *,
    overwrite: bool = False,
    verbose: int | str = "auto",
    extra_callbacks: list | None = None,
    connect_timeout: float = 300.0,
    export: bool = True,
) -> dict:
    """Trains, evaluates and exports; returns the metrics written to `metrics.json`.

    Running it again on the same workdir resumes an interrupted run at its last finished
    epoch, returns a finished run's metrics without training, and continues a finished
    run when `config.epochs` is larger (its schedule re-planned for the new total).
    `overwrite` trains again from scratch; it removes only a folder that holds a run's
    config.json. Nothing is written before the data is found and the model is built.
    `extra_callbacks` are added after the run's own (which back up each finished epoch first).

    Under the multiworker strategy every worker calls it with the same arguments; it trains
    with `training.multiworker`'s loop (Keras `fit` does not run under that strategy), the
    chief writes the workdir, and `extra_callbacks` and `verbose` are not supported.
    `connect_timeout` is how many seconds a worker waits for the others. `export=False`
    skips the SavedModel (export/, the slowest file of the run to write);
    `python -m training export` writes it later from the workdir.
    """
    started = time.perf_counter()
    # The strategy first: logical CPU devices must exist before any TF op runs.
    placement = place(config.replicas, config.strategy, connect_timeout=connect_timeout)
    if placement.name == "multiworker":
        if config.time_budget_minutes is not None:
            raise ValueError(
                "a time budget is not supported under the multiworker strategy (its workers "
                "would have to agree on a measured plan); received time_budget_minutes="
                f"{config.time_budget_minutes!r}"
            )
        if config.init_weights is not None:
            raise ValueError(
                "init_weights is not supported under the multiworker strategy; received "
                f"init_weights={config.init_weights!r}"
            )
        if extra_callbacks:
            raise ValueError(
                "extra_callbacks are Keras fit callbacks; the multiworker loop does not call "
                f"them. Received {extra_callbacks!r}"
            )
        return train_multiworker(config, workdir, placement, overwrite=overwrite, export=export)
    strategy = placement.strategy
    source = None
    if config.init_weights is not None:  # the architecture is the source's
        source = read_source(config.init_weights)
        config = resolve_config(config, source)
    state = inspect_run(config, workdir, overwrite=overwrite)  # reads only
    if state.status == "finished":
        print(finished_message(workdir, state.metrics))
        return state.metrics

    # Every check before the workdir is written: the data is found and the model is built
    # (which checks the image size), so a refused command leaves no trace.
    start_run(config, verbose=bool(verbose))
    datasets = load_data(config, strategy)
    if datasets.train_repeats:
        print(repeats_message(datasets, strategy.num_replicas_in_sync))
    with strategy.scope():
        if source is None:
            model = build_model(config, datasets.image_shape, datasets.num_classes)
        else:
            overrides = builder_overrides(config, source, datasets.image_shape[-1])
            model = build_model(config, datasets.image_shape, datasets.num_classes, **overrides)
            init_summary = load_backbone(model, source, overrides)
            print(f"Init weights {config.init_weights}: {init_summary.text()}")
    start_run_workdir(config, workdir, state, overwrite=overwrite)
    plan = plan_run(config, workdir, datasets, strategy, started=started)
    # The budget's epochs from here on: the schedule, fit and metrics.json take them.
    run = config if plan is None else dataclasses.replace(config, epochs=plan.epochs)
    with strategy.scope():
        compile_model(model, run, num_train=datasets.num_train)
        if source is not None:
            scale_base_learning_rate(model.optimizer, model, config.base_lr_scale)
    output_names = output_names_of(model)

    backup_dir = os.path.join(workdir, "backup")
    resumed_at = backed_up_epochs(backup_dir)
    message = resume_message(workdir, resumed_at, run.epochs)
    if message:
        print(message)
    timer = EpochTimer(os.path.join(workdir, "epoch_times.json"), datasets.num_train)
    cores = machine.usable_cores()
    cpu_usage = CpuUsage(os.path.join(workdir, "cpu_usage.json"), cores, verbose=bool(verbose))
    precise = precise_batch_norm(model, config, datasets.train, datasets.num_train)
    callbacks = [
        # Kept after fit, so that a run interrupted while it evaluates or exports resumes
        # there instead of training again, and after the run, so that a larger --epochs
        # continues it.
        keras.callbacks.BackupAndRestore(backup_dir, delete_checkpoint=False),
        keras.callbacks.ModelCheckpoint(
            os.path.join(workdir, "best.keras"),
            monitor=monitor_name(model),
            mode="max",
            save_best_only=True,
        ),
        keras.callbacks.TensorBoard(os.path.join(workdir, "logs")),
        keras.callbacks.CSVLogger(os.path.join(workdir, "history.csv"), append=True),
        DivergenceGuard(),  # raises TrainingDiverged naming the epoch and step
        timer,  # before `precise`: an epoch's training time leaves the estimate out
        cpu_usage,
        *([precise] if precise else []),
        *(extra_callbacks or []),
    ]
    history = fit_in_phases(
        model,
        freeze_epochs=min(config.freeze_base_epochs, run.epochs),
        resumed_at=resumed_at,
        epochs=run.epochs,
        x=with_targets(datasets.train, output_names),
        validation_data=with_targets(datasets.validation, output_names),
        callbacks=callbacks,
        shuffle=False,  # the pipeline shuffles
        verbose=verbose,
    )
    check_finite(history.get("loss", []), first_epoch=resumed_at + 1)

    if precise is not None and not precise.current():
        precise.on_test_begin()  # the final weights (an EMA, or a resumed run) get theirs
    usage = cpu_usage_metrics(cpu_usage.epochs, cores)
    if verbose:
        print(describe_cpu_usage(usage))
    inference = save_models(model, workdir, export=export, class_names=list(datasets.class_names))
    test = evaluate_model(inference, datasets.test)
    # The saved model on the held-out images: what recipes are chosen on (the epochs'
    # val_ columns measure the last weights, not an EMA of them).
    validation = evaluate_model(inference, datasets.validation) if datasets.num_validation else None
    if validation and verbose:
        print(
            f"Validation top-1 {validation['top1']:.4f} on {validation['images']} held-out "
            "images (the saved weights)."
        )
    metrics = write_metrics(
        workdir,
        run,
        datasets,
        test=test,
        timer=timer,
        params=(model.count_params(), inference.count_params()),
        replicas=strategy.num_replicas_in_sync,
        resume_dir=None,  # kept: a larger epochs continues the run
        extra={
            **precise_bn_metrics(precise),
            "cpu_usage": usage,
            **(
                {"final_validation": {k: validation[k] for k in ("top1", "top5", "loss", "images")}}
                if validation
                else {}
            ),
            **({"init_weights": init_summary.as_metrics()} if source else {}),
            **({"epoch_plan": dataclasses.asdict(plan)} if plan else {}),
        },
    )
    if verbose:
        table = format_per_class(test["per_class"], test["confusion"], datasets.class_names)
        print("Test accuracy per class (confusion.png: true vs predicted):", *table, sep="\n")
    return metrics
