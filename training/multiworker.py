"""Training across machines: MultiWorkerMirroredStrategy with a custom training loop.

Keras 3's `model.fit` fails under `tf.distribute.MultiWorkerMirroredStrategy` (Keras 3.15,
TF 2.21: "Attempt to convert a value (PerReplica...)" in its symbolic build;
keras-team/keras#20585), so multi-worker runs train here, on the same pieces as
`training.train.train_and_evaluate`: the same model builder, the same tf.data pipeline
(every worker keeps its share of each global batch: DATA sharding), the same losses and
loss weights, the same optimizer presets and the same metrics, with `strategy.run` and
`strategy.reduce`. When `fit` works under this strategy, delete this module and let
`train_and_evaluate` call `fit` for every strategy.

Every worker runs the same command (only `TF_CONFIG`'s task differs). The chief (task
"chief", else worker 0) writes the workdir, with the same files as a one-machine run; the
other workers write theirs to a temporary directory that they delete. After every epoch
the cluster saves a `tf.train.CheckpointManager` checkpoint in `workdir/checkpoints`; a
restarted cluster resumes after the last finished epoch. Every worker restores from the
chief's checkpoints, so the workdir must be on storage that every host reads (NFS, a
bucket); a worker that sees another epoch than the chief stops with a message saying so.
"""

from __future__ import annotations

import csv
import hashlib
import os
import shutil
import signal
import socket
import tempfile
import threading
import time

import keras
import numpy as np
import tensorflow as tf

from training import train as train_lib
from training.losses import SparseCrossentropyWithSmoothing
from training.strategy import ClusterConfig, mixed_precision_policy

SUM = tf.distribute.ReduceOp.SUM
_BYTES_PER_PACK = 32 * 1024 * 1024
# Errors of a collective whose peer went away, timed out or aborted.
_CLUSTER_ERRORS = (
    tf.errors.UnavailableError,
    tf.errors.DeadlineExceededError,
    tf.errors.AbortedError,
    tf.errors.CancelledError,
)


class ClusterError(RuntimeError):
    """A worker could not reach the others, or lost them during training."""


def _accepts(address: str) -> bool:
    host, _, port = address.rpartition(":")
    try:
        with socket.create_connection((host.strip("[]"), int(port)), timeout=2.0):
            return True
    except OSError:
        return False


def make_multiworker_strategy(
    cluster: ClusterConfig | None, *, connect_timeout: float = 300.0
) -> tf.distribute.MultiWorkerMirroredStrategy:
    """MultiWorkerMirroredStrategy over `cluster` (None: this process alone).

    Creating the strategy blocks until every worker has joined TensorFlow's coordination
    service (by default for ever, and SIGTERM cannot stop it); here it gives up after
    `connect_timeout` seconds with a ClusterError that names the workers not answering.
    """
    options = tf.distribute.experimental.CommunicationOptions(
        # Packs the gradients into a few all-reduces instead of one per variable, which
        # dominated a step: 0.57 s -> 0.29 s a step for 2 CPU workers on one 2-core host.
        bytes_per_pack=_BYTES_PER_PACK,
    )
    if cluster is None or len(cluster.workers) == 1:
        return tf.distribute.MultiWorkerMirroredStrategy(communication_options=options)
    _configure_coordination(cluster, connect_timeout)
    try:
        strategy = tf.distribute.MultiWorkerMirroredStrategy(communication_options=options)
    except tf.errors.OpError as err:
        missing = [a for a in cluster.workers if a != cluster.address and not _accepts(a)]
        raise ClusterError(
            f"worker {cluster.rank} ({cluster.address}) could not reach the other workers "
            f"within {connect_timeout:g} s"
            + (f" (not answering: {', '.join(missing)})" if missing else "")
            + ". Start the same command on every host of TF_CONFIG, check its addresses and "
            f"that the ports are open between the hosts. ({type(err).__name__})"
        ) from err
    # TensorFlow catches SIGTERM once the cluster is up, so `kill` and job schedulers could
    # not stop a worker; the default action ends it (the run resumes from its checkpoint).
    if threading.current_thread() is threading.main_thread():
        signal.signal(signal.SIGTERM, signal.SIG_DFL)
    return strategy


def _configure_coordination(cluster: ClusterConfig, timeout: float) -> None:
    """TensorFlow's coordination service as MultiWorkerMirroredStrategy sets it up, plus a
    registration timeout (the strategy keeps a service that is already configured).

    Uses TensorFlow internals (TF 2.21): no public API sets this timeout.
    """
    from tensorflow.compiler.xla.tsl.protobuf import coordination_config_pb2
    from tensorflow.python.distribute import multi_worker_util
    from tensorflow.python.eager import context

    spec = tf.distribute.cluster_resolver.TFConfigClusterResolver().cluster_spec()
    context.context().configure_coordination_service(
        service_type="standalone",
        service_leader=multi_worker_util.coordination_leader(spec),
        cluster_register_timeout_in_ms=int(timeout * 1000),
        coordinated_jobs=[
            coordination_config_pb2.CoordinatedJob(name=job, num_tasks=spec.num_tasks(job))
            for job in ("chief", "worker")
            if job in spec.jobs
        ],
    )
    # Without the barrier the leader (which hosts the service) waits for ever.
    context.context().coordination_service.cluster_register_with_barrier = True


def _task(strategy: tf.distribute.Strategy) -> tuple[int, int]:
    """(rank, number of workers) of this worker in the strategy's cluster (rank 0: chief)."""
    resolver = strategy.cluster_resolver
    spec = resolver.cluster_spec().as_dict()
    if resolver.task_type is None or not spec:
        return 0, 1
    chiefs = len(spec.get("chief", []))
    workers = chiefs + len(spec.get("worker", []))
    if resolver.task_type == "chief":
        return resolver.task_id, workers
    return resolver.task_id + chiefs, workers


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

    def _sums(self, labels, outputs):
        """Per-batch sums: weighted loss, each output's loss, top-1/top-5 hits, NLL, count."""
        labels = tf.cast(tf.reshape(labels, [-1]), tf.int32)
        per_output = {k: self.loss_fn(labels, outputs[k]) for k in self.weights}
        per_example = tf.add_n([self.weights[k] * per_output[k] for k in self.weights])
        probs = tf.cast(outputs["main"], tf.float32)
        k = min(5, probs.shape[-1])
        sums = {
            "loss": tf.reduce_sum(per_example),
            "main_accuracy": tf.reduce_sum(
                tf.cast(tf.equal(tf.argmax(probs, -1, output_type=tf.int32), labels), tf.float32)
            ),
            "main_top5": tf.reduce_sum(tf.cast(tf.math.in_top_k(labels, probs, k), tf.float32)),
            "nll": -tf.reduce_sum(
                tf.math.log(tf.maximum(tf.gather(probs, labels, batch_dims=1), 1e-12))
            ),
            "count": tf.cast(tf.size(labels), tf.float32),
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
        def step(images, labels):
            with tf.GradientTape() as tape:
                outputs = self._outputs(images, training=True)
                sums, per_example = self._sums(labels, outputs)
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
        def step(images, labels):
            return self._sums(labels, self._outputs(images, training=False))[0]

        return self._reduce(self.strategy.run(step, args=batch))

    def run_epoch(self, dataset, step) -> dict[str, float]:
        """Means over the examples of one pass over a distributed dataset."""
        totals: dict[str, float] = {}
        for batch in dataset:
            for key, value in step(batch).items():
                totals[key] = totals.get(key, 0.0) + float(value)
        count = totals.pop("count", 0.0)
        if not count:
            raise ValueError("the dataset is empty: no examples reached this worker's cluster")
        return {k: v / count for k, v in totals.items()}


class _History:
    """history.csv in CSVLogger's layout (epoch, then sorted keys); rows of epochs at or
    after `resumed_at` (left by an interrupted run) are dropped when the run resumes."""

    def __init__(self, path: str, resumed_at: int):
        self.path = path
        rows = []
        if os.path.exists(path):
            with open(path, encoding="utf-8") as f:
                rows = [r for r in csv.DictReader(f) if int(r["epoch"]) < resumed_at]
        self.rows = rows
        self._write()

    def append(self, epoch: int, logs: dict[str, float]) -> None:
        self.rows.append({"epoch": str(epoch), **{k: repr(v) for k, v in logs.items()}})
        self._write()

    def _write(self) -> None:
        if not self.rows:
            if os.path.exists(self.path):
                os.remove(self.path)
            return
        keys = ["epoch", *sorted(k for k in self.rows[0] if k != "epoch")]
        with open(self.path, "w", encoding="utf-8", newline="") as f:
            writer = csv.DictWriter(f, fieldnames=keys)
            writer.writeheader()
            writer.writerows(self.rows)


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
    config: train_lib.TrainConfig,
    workdir: str,
    strategy: tf.distribute.MultiWorkerMirroredStrategy,
    *,
    overwrite: bool = False,
) -> dict:
    """`train_and_evaluate` under MultiWorkerMirroredStrategy; every worker calls it.

    Returns the run's metrics (on every worker); the chief writes them to the workdir.

    Raises:
        ClusterError: a worker lost the others, or restored another epoch than the chief.
    """
    rank = _task(strategy)[0]
    is_chief = rank == 0
    status, finished = _chief_decides(
        strategy, is_chief, lambda: train_lib.prepare_workdir(config, workdir, overwrite)
    )
    if status == "finished":
        if is_chief:
            print(
                f"{workdir}: this run already finished (test top-1 {finished['top1']:.4f}); "
                "nothing to train. Pass --overwrite to train it again."
            )
        return finished or {}
    scratch = None if is_chief else tempfile.mkdtemp(prefix=f"keras-inception-worker{rank}-")
    try:
        return _train(config, workdir, strategy, is_chief, out_dir=scratch or workdir)
    except _CLUSTER_ERRORS as err:
        raise ClusterError(
            f"worker {rank} lost the other workers ({type(err).__name__}: "
            f"{str(err).splitlines()[0] if str(err) else ''}). Restart every worker with the "
            f"same command: the run resumes after the last finished epoch in {workdir}."
        ) from err
    finally:
        if scratch is not None:
            shutil.rmtree(scratch, ignore_errors=True)


def _train(config, workdir, strategy, is_chief: bool, *, out_dir: str) -> dict:
    keras.utils.set_random_seed(config.seed)
    if config.deterministic:
        tf.config.experimental.enable_op_determinism()
    policy = mixed_precision_policy() if config.mixed_precision else "float32"
    keras.config.set_dtype_policy(policy)

    datasets = train_lib.load_data(config, strategy)
    if is_chief and datasets.train_repeats:
        print(train_lib.repeats_message(datasets, strategy.num_replicas_in_sync))
    shape, classes = datasets.image_shape, datasets.num_classes
    with strategy.scope():
        model = train_lib.build_model(config, shape, classes)
        optimizer = train_lib.make_run_optimizer(config, num_train=datasets.num_train)
        if policy == "mixed_float16":
            optimizer = keras.optimizers.LossScaleOptimizer(optimizer)
        optimizer.build(model.trainable_variables)
        epoch = tf.Variable(0, dtype=tf.int64, trainable=False, name="epoch")
        best = tf.Variable(-1.0, dtype=tf.float64, trainable=False, name="best")
    loss_fn, loss_weights = train_lib.make_losses(model, config)
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
    if is_chief and resumed_at >= config.epochs:
        print(f"Resuming {workdir}: all {config.epochs} epochs are done; evaluating and exporting.")
    elif is_chief and resumed_at:
        print(
            f"Resuming {workdir}: epochs 1-{resumed_at} are done; continuing at epoch "
            f"{resumed_at + 1} of {config.epochs}."
        )

    train_ds = strategy.experimental_distribute_dataset(datasets.train)
    val_ds = strategy.experimental_distribute_dataset(datasets.validation)
    test_ds = strategy.experimental_distribute_dataset(datasets.test)
    steps = _StepFunctions(
        strategy, model, optimizer, loss_fn, loss_weights, config.batch_size, train_ds.element_spec
    )
    history = _History(os.path.join(out_dir, "history.csv"), resumed_at)
    timer = train_lib.EpochTimer(os.path.join(out_dir, "epoch_times.json"), datasets.num_train)
    writers = {
        split: tf.summary.create_file_writer(os.path.join(out_dir, "logs", split))
        for split in ("train", "validation")
    }
    # A plain (one-device) copy of the model saves best.keras and the final files.
    plain = train_lib.build_model(config, shape, classes)
    precise = train_lib.precise_batch_norm(model, config, datasets.train, datasets.num_train)
    train_lib.compile_model(plain, config, num_train=datasets.num_train)

    for index in range(resumed_at, config.epochs):
        timer.on_epoch_begin(index)
        train_logs = steps.run_epoch(train_ds, steps.train)
        train_logs.pop("nll")
        timer.on_test_begin()
        if precise is not None:  # the same exact statistics on every worker
            precise.estimator.update(precise.dataset, precise.num_batches)
        else:
            steps.sync_statistics()
        val_logs = steps.run_epoch(val_ds, steps.evaluate)
        val_logs.pop("nll")
        timer.on_epoch_end(index)
        if not all(np.isfinite(v) for v in train_logs.values()):
            raise train_lib.TrainingDiverged(
                f"training stopped: the loss became {train_logs['loss']} in epoch "
                f"{index + 1}. Lower --learning-rate, add --warmup-epochs, or check the data."
            )
        logs = {**train_logs, **{f"val_{k}": v for k, v in val_logs.items()}}
        if logs["val_main_accuracy"] > best.numpy():
            best.assign(logs["val_main_accuracy"])
            _copy_weights(model, plain, optimizer, plain.optimizer)
            plain.save(os.path.join(out_dir, "best.keras"))
        epoch.assign(index + 1)
        # Every worker saves (a collective); only the chief's directory is kept.
        manager.save(checkpoint_number=index + 1)
        if not is_chief:
            shutil.rmtree(write_dir, ignore_errors=True)
        history.append(index, logs)
        for split, prefix in (("train", ""), ("validation", "val_")):
            with writers[split].as_default(step=index):
                for key in train_logs:
                    tf.summary.scalar(f"epoch_{key}", logs[prefix + key])
        if is_chief:
            print(
                f"Epoch {index + 1}/{config.epochs}: "
                + ", ".join(f"{k} {v:.4f}" for k, v in logs.items())
            )
    for writer in writers.values():
        writer.close()

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
    print(f"Worker {_task(strategy)[0]}: final weights sha256 {digest}", flush=True)
    inference = train_lib.save_models(plain, out_dir)
    return train_lib.write_metrics(
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
            "workers": _task(strategy)[1],
            "weights_sha256": digest,
            **train_lib.precise_bn_metrics(precise),
        },
        verbose=is_chief,
    )
