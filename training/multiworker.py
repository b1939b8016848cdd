"""Training across machines: MultiWorkerMirroredStrategy with a custom training loop.

Keras 3's `model.fit` fails under `tf.distribute.MultiWorkerMirroredStrategy` (Keras 3.15,
TF 2.21: "Attempt to convert a value (PerReplica...)" in its symbolic build;
keras-team/keras#20585), so multi-worker runs train here, a thin driver over the same run
kit as `training.train.train_and_evaluate` (`training.runkit`): the same model builder,
losses, loss weights, optimizer presets and metrics, with `strategy.run` and
`strategy.reduce`, and Keras's own callbacks (CSVLogger, TensorBoard, ModelCheckpoint, the
epoch timer) driven through `keras.callbacks.CallbackList`. Each worker reads, decodes and
augments only its share of every split (`training.data.Datasets.distribute`). When `fit`
works under this strategy, delete this module and let `train_and_evaluate` call `fit` for
every strategy.

Every worker runs the same command (only `TF_CONFIG`'s task differs). The chief (task
"chief", else worker 0) writes the workdir, with the same files as a one-machine run; the
other workers write theirs to a temporary directory that they delete. After every epoch
the cluster saves a `tf.train.CheckpointManager` checkpoint in `workdir/checkpoints`; a
restarted cluster resumes after the last finished epoch. Every worker restores from the
chief's checkpoints, so the workdir must be on storage that every host reads (NFS, a
bucket); a worker that sees another epoch than the chief stops with a message saying so.
"""

from __future__ import annotations

import hashlib
import math
import os
import shutil
import tempfile
import time

import keras
import numpy as np
import tensorflow as tf

from training.batchnorm import PreciseBatchNormCallback
from training.config import TrainConfig
from training.losses import SparseCrossentropyWithSmoothing
from training.metrics import batch_sums
from training.model_setup import build_model, compile_model, make_losses, make_run_optimizer
from training.placement import ClusterError, Placement
from training.runkit import (
    TrainingDiverged,
    divergence_message,
    load_data,
    precise_batch_norm,
    precise_bn_metrics,
    start_run,
)
from training.workdir import (
    EpochTimer,
    finished_message,
    prepare_workdir,
    repeats_message,
    resume_message,
    save_models,
    write_metrics,
)

SUM = tf.distribute.ReduceOp.SUM
# Errors of a collective whose peer went away, timed out or aborted.
_CLUSTER_ERRORS = (
    tf.errors.UnavailableError,
    tf.errors.DeadlineExceededError,
    tf.errors.AbortedError,
    tf.errors.CancelledError,
)


def _gather(strategy: tf.distribute.Strategy, value: float) -> np.ndarray:
    """This value from every replica of the cluster (a collective: every worker calls it)."""
    per_replica = strategy.run(lambda: tf.constant([value], tf.float64))
    return strategy.gather(per_replica, axis=0).numpy()


def _chief_decides(strategy, is_chief: bool, decide):
    """Runs `decide()` on the chief and shares its outcome: "ok", "finished" or "failed".

    The chief's exception is raised on the chief; the others raise a ClusterError that
    points at the chief's log.
    """
    outcome, error, result = 0.0, None, None
    if is_chief:
        try:
            result = decide()
            outcome = 1.0 if result is not None else 0.0
        except (ValueError, OSError) as err:
            outcome, error = 2.0, err
    shared = _gather(strategy, outcome).max()
    if shared == 2.0:
        if error is not None:
            raise error
        raise ClusterError("the chief refused the workdir; its log says why")
    return "finished" if shared == 1.0 else "ok", result


class _StepFunctions:
    """The distributed train and evaluation steps: `strategy.run`, then sums over the
    cluster with `strategy.reduce`."""

    def __init__(
        self, strategy, model, optimizer, loss_fn, loss_weights, global_batch, element_spec=None
    ):
        self.strategy = strategy
        self.model = model
        self.optimizer = optimizer
        self.loss_fn = loss_fn
        self.weights = loss_weights or {"main": 1.0}
        self.multi_output = loss_weights is not None
        self.global_batch = global_batch
        # Traced once for any batch size (the last batch of an epoch is smaller) when the
        # distributed datasets' element_spec is given.
        signature = None if element_spec is None else [element_spec]
        self.train = tf.function(self._train, input_signature=signature, reduce_retracing=True)
        self.evaluate = tf.function(
            self._evaluate, input_signature=signature, reduce_retracing=True
        )
        # BN moving statistics: every worker updates its copy from its own batches.
        self.statistics = [
            v
            for v in model.non_trainable_variables
            if v.dtype in ("float16", "bfloat16", "float32", "float64")
        ]
        self.sync_statistics = tf.function(self._sync_statistics)

    def _outputs(self, images, training):
        outputs = self.model(images, training=training)
        return outputs if self.multi_output else {"main": outputs}

    def _sums(self, labels, weights, outputs):
        """Per-batch sums: weighted loss, each output's loss, and `training.metrics`'s
        top-1/top-5 hits, cross-entropy and count.

        Examples of weight 0 pad a worker's share so that every worker runs the same
        number of steps (`training.replicas.pad_with_zero_weights`); they count in no sum.
        """
        labels = tf.cast(tf.reshape(labels, [-1]), tf.int32)
        weights = tf.cast(tf.reshape(weights, [-1]), tf.float32)
        per_output = {k: self.loss_fn(labels, outputs[k]) * weights for k in self.weights}
        per_example = tf.add_n([self.weights[k] * per_output[k] for k in self.weights])
        metrics = batch_sums(labels, outputs["main"], weights)
        sums = {
            "loss": tf.reduce_sum(per_example),
            "main_accuracy": metrics["top1"],
            "main_top5": metrics["top5"],
            "nll": metrics["loss"],
            "count": metrics["count"],
        }
        if self.multi_output:
            sums.update({f"{k}_loss": tf.reduce_sum(v) for k, v in per_output.items()})
        return sums, per_example

    def _sync_statistics(self):
        """Averages the moving statistics over the workers, so that every worker validates,
        checkpoints and exports the same model. (With synchronized BN they already agree.)"""

        def average():
            context = tf.distribute.get_replica_context()
            means = context.all_reduce(
                tf.distribute.ReduceOp.MEAN, [tf.identity(v.value) for v in self.statistics]
            )
            for variable, mean in zip(self.statistics, means, strict=True):
                variable.assign(mean)

        if self.statistics:
            self.strategy.run(average)

    def _train(self, batch):
        def step(images, labels, weights):
            with tf.GradientTape() as tape:
                outputs = self._outputs(images, training=True)
                sums, per_example = self._sums(labels, weights, outputs)
                loss = tf.nn.compute_average_loss(per_example, global_batch_size=self.global_batch)
                if self.model.losses:
                    loss += tf.nn.scale_regularization_loss(tf.add_n(self.model.losses))
                scaled = self.optimizer.scale_loss(loss)
            variables = self.model.trainable_variables
            grads = tape.gradient(scaled, variables)
            # Keras's optimizer sums the gradients over every replica of the cluster.
            self.optimizer.apply_gradients(zip(grads, variables, strict=True))
            return sums

        return self._reduce(self.strategy.run(step, args=batch))

    def _reduce(self, per_replica: dict) -> dict:
        """Sums each value over the cluster, in one collective."""
        keys = sorted(per_replica)
        packed = self.strategy.run(lambda *v: tf.stack(v), args=[per_replica[k] for k in keys])
        total = self.strategy.reduce(SUM, packed, axis=None)
        return {k: total[i] for i, k in enumerate(keys)}

    def _evaluate(self, batch):
        def step(images, labels, weights):
            return self._sums(labels, weights, self._outputs(images, training=False))[0]

        return self._reduce(self.strategy.run(step, args=batch))

    def run_epoch(self, dataset, step, *, epoch: int | None = None) -> dict[str, float]:
        """Means over the examples of one pass over a distributed dataset.

        With `epoch` (a training epoch, from 1), a step whose loss is NaN or infinite
        raises TrainingDiverged naming the epoch and the step.
        """
        totals: dict[str, float] = {}
        for index, batch in enumerate(dataset):
            sums = {key: float(value) for key, value in step(batch).items()}
            if epoch is not None and not math.isfinite(sums["loss"]):
                raise TrainingDiverged(divergence_message(sums["loss"], epoch, index + 1))
            for key, value in sums.items():
                totals[key] = totals.get(key, 0.0) + value
        count = totals.pop("count", 0.0)
        if not count:
            raise ValueError("the dataset is empty: no examples reached this worker's cluster")
        return {k: v / count for k, v in totals.items()}


def _copy_weights(source: keras.Model, target: keras.Model, source_opt, target_opt) -> None:
    """Copies the distributed model's weights and optimizer state into a plain model."""
    target.set_weights(source.get_weights())
    if not target_opt.built:
        target_opt.build(target.trainable_variables)
    src, dst = source_opt.variables, target_opt.variables
    if [tuple(v.shape) for v in src] != [tuple(v.shape) for v in dst]:
        raise RuntimeError(
            f"optimizer state does not match: {len(src)} variables vs {len(dst)} in the copy"
        )
    for s, d in zip(src, dst, strict=True):
        d.assign(s.numpy())


def weights_digest(model: keras.Model) -> str:
    """SHA-256 of every weight's bytes: equal on every worker when they stayed in sync."""
    digest = hashlib.sha256()
    for weight in model.get_weights():
        digest.update(np.ascontiguousarray(weight).tobytes())
    return digest.hexdigest()


def train_multiworker(
    config: TrainConfig,
    workdir: str,
    placement: Placement,
    *,
    overwrite: bool = False,
    export: bool = True,
) -> dict:
    """`train_and_evaluate` under MultiWorkerMirroredStrategy; every worker calls it.

    Returns the run's metrics (on every worker); the chief writes them to the workdir.

    Raises:
        ClusterError: a worker lost the others, or restored another epoch than the chief.
    """
    strategy, rank = placement.strategy, placement.rank
    status, finished = _chief_decides(
        strategy, placement.is_chief, lambda: prepare_workdir(config, workdir, overwrite)
    )
    if status == "finished":
        if placement.is_chief:
            print(finished_message(workdir, finished))
        return finished or {}
    scratch = (
        None if placement.is_chief else tempfile.mkdtemp(prefix=f"keras-inception-worker{rank}-")
    )
    try:
        return _train(config, workdir, placement, out_dir=scratch or workdir, export=export)
    except _CLUSTER_ERRORS as err:
        raise ClusterError(
            f"worker {rank} lost the other workers ({type(err).__name__}: "
            f"{str(err).splitlines()[0] if str(err) else ''}). Restart every worker with the "
            f"same command: the run resumes after the last finished epoch in {workdir}."
        ) from err
    finally:
        if scratch is not None:
            shutil.rmtree(scratch, ignore_errors=True)


def _run_callbacks(
    plain: keras.Model, out_dir: str, timer: EpochTimer, best: float
) -> keras.callbacks.CallbackList:
    """Keras's own callbacks, driven by the loop on the plain copy of the model (which
    holds the cluster's weights and optimizer state when they run)."""
    monitor = "val_main_accuracy"
    callbacks = [
        timer,
        keras.callbacks.ModelCheckpoint(
            os.path.join(out_dir, "best.keras"),
            monitor=monitor,
            mode="max",
            save_best_only=True,
            initial_value_threshold=best if best >= 0 else None,
        ),
        keras.callbacks.TensorBoard(os.path.join(out_dir, "logs")),
        keras.callbacks.CSVLogger(os.path.join(out_dir, "history.csv"), append=True),
    ]
    return keras.callbacks.CallbackList(
        callbacks, add_history=False, add_progbar=False, model=plain
    )


def _train(
    config: TrainConfig, workdir: str, placement: Placement, *, out_dir: str, export: bool
) -> dict:
    strategy, is_chief = placement.strategy, placement.is_chief
    policy = start_run(config)
    datasets = load_data(config, strategy)
    if is_chief and datasets.train_repeats:
        print(repeats_message(datasets, strategy.num_replicas_in_sync))
    shape, classes = datasets.image_shape, datasets.num_classes
    with strategy.scope():
        model = build_model(config, shape, classes)
        optimizer = make_run_optimizer(config, num_train=datasets.num_train)
        if policy == "mixed_float16":
            optimizer = keras.optimizers.LossScaleOptimizer(optimizer)
        optimizer.build(model.trainable_variables)
        epoch = tf.Variable(0, dtype=tf.int64, trainable=False, name="epoch")
        best = tf.Variable(-1.0, dtype=tf.float64, trainable=False, name="best")
    loss_fn, loss_weights = make_losses(model, config)
    loss_fn = SparseCrossentropyWithSmoothing(loss_fn.label_smoothing, reduction=None)

    # Resume: every worker restores the chief's latest checkpoint and checks that the
    # others restored the same epoch.
    checkpoint = tf.train.Checkpoint(model=model, optimizer=optimizer, epoch=epoch, best=best)
    checkpoint_dir = os.path.join(workdir, "checkpoints")
    write_dir = checkpoint_dir if is_chief else os.path.join(out_dir, "checkpoints")
    manager = tf.train.CheckpointManager(checkpoint, write_dir, max_to_keep=1)
    latest = tf.train.latest_checkpoint(checkpoint_dir)
    if latest:
        checkpoint.restore(latest).assert_existing_objects_matched()
    epochs_seen = _gather(strategy, float(epoch.numpy()))
    if len(set(epochs_seen.tolist())) > 1:
        raise ClusterError(
            f"the workers restored different epochs {epochs_seen.astype(int).tolist()} "
            f"(chief first) from {checkpoint_dir}: every worker must read the chief's "
            "workdir (put it on storage that every host mounts, such as NFS, or a bucket)"
        )
    resumed_at = int(epoch.numpy())
    message = resume_message(workdir, resumed_at, config.epochs)
    if is_chief and message:
        print(message)

    # Each worker reads, decodes and augments only its share of each split, padded so that
    # every worker runs the same steps (padding has weight 0: `_sums`).
    train_ds, val_ds, test_ds = (
        datasets.distribute(split, strategy) for split in ("train", "validation", "test")
    )
    steps = _StepFunctions(
        strategy, model, optimizer, loss_fn, loss_weights, config.batch_size, train_ds.element_spec
    )
    # A plain (one-device) copy of the model runs the callbacks and saves the files.
    plain = build_model(config, shape, classes)
    compile_model(plain, config, num_train=datasets.num_train)
    precise = precise_batch_norm(model, config, datasets.train, datasets.num_train)
    timer = EpochTimer(os.path.join(out_dir, "epoch_times.json"), datasets.num_train)
    callbacks = _run_callbacks(plain, out_dir, timer, float(best.numpy()))

    callbacks.on_train_begin()
    for index in range(resumed_at, config.epochs):
        callbacks.on_epoch_begin(index)
        train_logs = steps.run_epoch(train_ds, steps.train, epoch=index + 1)
        train_logs.pop("nll")
        callbacks.on_test_begin()  # the epoch timer stops its training part here
        _estimate_statistics(steps, precise)
        val_logs = steps.run_epoch(val_ds, steps.evaluate)
        val_logs.pop("nll")
        logs = {**train_logs, **{f"val_{k}": v for k, v in val_logs.items()}}
        _copy_weights(model, plain, optimizer, plain.optimizer)
        callbacks.on_test_end(val_logs)
        best.assign(max(float(best.numpy()), logs["val_main_accuracy"]))
        epoch.assign(index + 1)
        # Every worker saves (a collective); only the chief's directory is kept. The
        # checkpoint comes before history.csv: a run stopped between them repeats no row.
        manager.save(checkpoint_number=index + 1)
        if not is_chief:
            shutil.rmtree(write_dir, ignore_errors=True)
        callbacks.on_epoch_end(index, logs)
        if is_chief:
            print(
                f"Epoch {index + 1}/{config.epochs}: "
                + ", ".join(f"{k} {v:.4f}" for k, v in logs.items())
            )
    callbacks.on_train_end()

    with strategy.scope():
        optimizer.finalize_variable_values(model.trainable_variables)  # e.g. EMA weights
    if precise is not None and optimizer.use_ema:  # the EMA weights need their own
        precise.estimator.update(precise.dataset, precise.num_batches)
    start = time.perf_counter()
    test_logs = steps.run_epoch(test_ds, steps.evaluate)
    seconds = time.perf_counter() - start
    test = {
        "top1": test_logs["main_accuracy"],
        "top5": test_logs["main_top5"],
        "loss": test_logs["nll"],
        "images_per_sec": datasets.num_test / seconds,
    }
    _copy_weights(model, plain, optimizer, plain.optimizer)
    digest = weights_digest(plain)
    print(f"Worker {placement.rank}: final weights sha256 {digest}", flush=True)
    inference = save_models(plain, out_dir, export=export, class_names=list(datasets.class_names))
    return write_metrics(
        out_dir,
        config,
        datasets,
        test=test,
        timer=timer,
        params=(plain.count_params(), inference.count_params()),
        replicas=strategy.num_replicas_in_sync,
        resume_dir=write_dir,
        extra={
            "strategy": "multiworker",
            "workers": placement.num_workers,
            "weights_sha256": digest,
            **precise_bn_metrics(precise),
        },
        verbose=is_chief,
    )


def _estimate_statistics(steps: _StepFunctions, precise: PreciseBatchNormCallback | None):
    """Exact batch-norm statistics over the cluster (`training.batchnorm`), or without them
    the workers' moving statistics averaged: either way the same on every worker."""
    if precise is not None:
        precise.estimator.update(precise.dataset, precise.num_batches)
    else:
        steps.sync_statistics()
