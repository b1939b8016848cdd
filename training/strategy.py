"""Distribution strategies: one device, MirroredStrategy on one machine, or
MultiWorkerMirroredStrategy across machines (configured by `TF_CONFIG`).

Logical CPU devices and the multi-worker runtime must be configured before TensorFlow runs
its first op, so `place` (or `make_strategy`) is called first thing by `train_and_evaluate`
and by `tune`. `TF_CONFIG` is parsed once, there, into the run's `Placement`.
`jit_compile` must stay off under MirroredStrategy on logical CPUs (it fails there:
`logical_cpu_replicas`).

Batches that do not split evenly over the replicas: TensorFlow gives each replica
`ceil(batch / replicas)` examples of a batch until it runs out (`replica_shares`), so a
small last batch can leave a replica with none, and a training step on an empty share
turns batch norm's statistics, then every weight, into NaN. `check_batch_size` refuses a
global batch that does so; the training pipeline repeats a few examples so that its last
batch does not (`training.data`); `tolerate_uneven_batches` works around Keras reading the
first batch of `fit`/`evaluate`/`predict` in a way that needs equal shares.
"""

from __future__ import annotations

import dataclasses
import json
import math
import os
import signal
import socket
import threading
from collections.abc import Callable

import keras
import numpy as np
import tensorflow as tf
from keras import tree
from tensorflow.compiler.xla.tsl.protobuf import coordination_config_pb2
from tensorflow.python.distribute import multi_worker_util
from tensorflow.python.eager import context

STRATEGIES = ("auto", "mirrored", "multiworker", "onedevice")
_BYTES_PER_PACK = 32 * 1024 * 1024


@dataclasses.dataclass(frozen=True)
class ClusterConfig:
    """The parts of `TF_CONFIG` that a multi-worker run uses.

    Args:
        workers: tuple of str. "host:port" of every task that trains, the chief first.
        task_type: str. "chief" or "worker".
        task_index: int. This task's index among the tasks of its type.
        rank: int. This task's position in `workers` (0: the chief, which writes the
            workdir).
    """

    workers: tuple[str, ...]
    task_type: str
    task_index: int
    rank: int

    @property
    def is_chief(self) -> bool:
        return self.rank == 0

    @property
    def address(self) -> str:
        return self.workers[self.rank]


def parse_tf_config(text: str | None = None) -> ClusterConfig | None:
    """`TF_CONFIG` (default: the environment's) as a ClusterConfig; None when unset or empty.

    Raises:
        ValueError: the text is not JSON, names no workers, or its task is not in its cluster.
    """
    text = os.environ.get("TF_CONFIG") if text is None else text
    if not text or not text.strip():
        return None
    try:
        config = json.loads(text)
    except json.JSONDecodeError as err:
        raise ValueError(f"TF_CONFIG is not valid JSON ({err}); received {text!r}") from None
    if not isinstance(config, dict) or not isinstance(config.get("cluster"), dict):
        raise ValueError(f'TF_CONFIG needs a "cluster" object; received {text!r}')
    cluster = config["cluster"]
    unsupported = sorted(set(cluster) - {"chief", "worker"})
    if unsupported:
        raise ValueError(
            f"TF_CONFIG names task types {unsupported}; multi-worker training uses only "
            f'"chief" and "worker" tasks. Received {text!r}'
        )
    by_task: dict[tuple[str, int], str] = {}
    for task_type in ("chief", "worker"):
        addresses = cluster.get(task_type, [])
        if not isinstance(addresses, list) or not all(isinstance(a, str) for a in addresses):
            raise ValueError(
                f'TF_CONFIG cluster["{task_type}"] must be a list of "host:port" strings; '
                f"received {addresses!r}"
            )
        for index, address in enumerate(addresses):
            if not address.rpartition(":")[2].isdigit():
                raise ValueError(
                    f'TF_CONFIG {task_type} {index} must be "host:port"; received {address!r}'
                )
            by_task[(task_type, index)] = address
    if len(cluster.get("chief", [])) > 1:
        raise ValueError(f"TF_CONFIG may name at most one chief; received {cluster['chief']!r}")
    if not by_task:
        raise ValueError(f"TF_CONFIG names no workers; received {text!r}")
    if len(set(by_task.values())) != len(by_task):
        raise ValueError(f"TF_CONFIG names one address twice; received {text!r}")
    task = config.get("task")
    if not isinstance(task, dict):
        raise ValueError(f'TF_CONFIG needs a "task" object (type, index); received {text!r}')
    key = (task.get("type"), task.get("index", 0))
    if key not in by_task:
        raise ValueError(
            f"TF_CONFIG task {task!r} is not in its cluster; the cluster has "
            f"{sorted(f'{t} {i}' for t, i in by_task)}"
        )
    workers = tuple(by_task.values())  # the chief first, then the workers in order
    return ClusterConfig(
        workers=workers,
        task_type=key[0],
        task_index=int(key[1]),
        rank=workers.index(by_task[key]),
    )


def resolve_strategy_name(name: str, cluster: ClusterConfig | None) -> str:
    """The strategy `name` stands for: "auto" is multiworker when `cluster` has more than
    one worker, else mirrored.

    Raises:
        ValueError: an unknown name, or a one-machine strategy while TF_CONFIG names a
            cluster (every host would train its own copy into the same workdir).
    """
    if name not in STRATEGIES:
        raise ValueError(f"unknown strategy {name!r}; choose one of {list(STRATEGIES)}")
    many = cluster is not None and len(cluster.workers) > 1
    if name == "auto":
        return "multiworker" if many else "mirrored"
    if many and name != "multiworker":
        raise ValueError(
            f"--strategy {name} trains on one machine, but TF_CONFIG names "
            f"{len(cluster.workers)} workers {list(cluster.workers)}; use --strategy "
            "multiworker (or auto), or unset TF_CONFIG"
        )
    return name


def configure_cpu_replicas(replicas: int) -> None:
    """Splits the first CPU into `replicas` logical devices (before any TF op runs)."""
    cpus = tf.config.list_physical_devices("CPU")
    current = tf.config.get_logical_device_configuration(cpus[0])
    if current is not None and len(current) == replicas:
        return
    try:
        tf.config.set_logical_device_configuration(
            cpus[0], [tf.config.LogicalDeviceConfiguration() for _ in range(replicas)]
        )
    except RuntimeError as err:
        raise RuntimeError(
            f"cannot split the CPU into {replicas} logical devices: TensorFlow already "
            "initialized its devices in this process. Request replicas before any "
            "TensorFlow op runs (a fresh process)."
        ) from err


@dataclasses.dataclass(frozen=True)
class Placement:
    """Where a run trains: its strategy and, for a multi-worker run, its cluster.

    Args:
        strategy: tf.distribute.Strategy. The strategy to train under.
        name: str. The strategy's name after "auto" is resolved (one of `STRATEGIES`).
        cluster: ClusterConfig or None. `TF_CONFIG`, parsed once; None when unset.
    """

    strategy: tf.distribute.Strategy
    name: str
    cluster: ClusterConfig | None = None

    @property
    def rank(self) -> int:
        """This worker's rank in the cluster (0: the chief, which writes the workdir)."""
        return self.cluster.rank if self.cluster is not None else 0

    @property
    def num_workers(self) -> int:
        return len(self.cluster.workers) if self.cluster is not None else 1

    @property
    def is_chief(self) -> bool:
        return self.rank == 0


def place(
    replicas: int | None = None,
    name: str = "auto",
    *,
    connect_timeout: float = 300.0,
    refuse_multiworker: Callable[[str], str] | None = None,
) -> Placement:
    """The distribution strategy `name` stands for on this machine, and the cluster.

    - "mirrored": MirroredStrategy over all GPUs, or over `replicas` logical CPUs; "auto"
      without a multi-worker TF_CONFIG is the same, except that one device gets
      OneDeviceStrategy.
    - "multiworker": MultiWorkerMirroredStrategy over the cluster of `TF_CONFIG` (every
      worker's GPUs, or its CPU), after every worker answered within `connect_timeout`
      seconds. Without TF_CONFIG it is a cluster of this one process.
    - "onedevice": the first GPU, else the CPU.

    Call it before any TensorFlow op runs: it configures logical CPUs and the cluster.

    Args:
        replicas: int or None. CPU replicas (logical devices) when no GPU is visible.
            Ignored when GPUs are visible: every GPU is a replica. Defaults to None (one).
        name: str. One of `STRATEGIES`. Defaults to "auto".
        connect_timeout: float. Seconds a multi-worker task waits for the others.
        refuse_multiworker: callable or None. For a job that cannot run multi-worker:
            given the requested name, returns the ValueError message raised before any
            worker is contacted. Defaults to None (multi-worker allowed).

    Raises:
        ValueError: a bad name, `replicas` or TF_CONFIG, or replicas with a strategy that
            cannot use them.
        ClusterError: a worker could not reach the others in time.
    """
    if replicas is not None and (isinstance(replicas, bool) or replicas < 1):
        raise ValueError(f"replicas must be a positive integer; received {replicas!r}")
    cluster = parse_tf_config()
    resolved = resolve_strategy_name(name, cluster)
    if resolved == "multiworker" and refuse_multiworker is not None:
        raise ValueError(refuse_multiworker(name))
    gpus = tf.config.list_physical_devices("GPU")
    if resolved == "multiworker":
        if replicas and replicas > 1:
            raise ValueError(
                f"--replicas {replicas} splits one machine's CPU for MirroredStrategy; under "
                "multiworker every worker trains on its GPUs, or on its whole CPU"
            )
        strategy = make_multiworker_strategy(cluster, connect_timeout=connect_timeout)
        return Placement(strategy, resolved, cluster)
    if resolved == "onedevice":
        if replicas and replicas > 1:
            raise ValueError(
                f"--replicas {replicas} needs a mirrored strategy; onedevice trains on one device"
            )
        return Placement(tf.distribute.OneDeviceStrategy("/gpu:0" if gpus else "/cpu:0"), resolved)
    if gpus:
        if len(gpus) > 1 or name == "mirrored":
            return Placement(tf.distribute.MirroredStrategy(), resolved)
        return Placement(tf.distribute.OneDeviceStrategy("/gpu:0"), resolved)
    if replicas and replicas > 1:
        configure_cpu_replicas(replicas)
        devices = [f"/cpu:{i}" for i in range(replicas)]
        return Placement(tf.distribute.MirroredStrategy(devices), resolved)
    if name == "mirrored":
        return Placement(tf.distribute.MirroredStrategy(["/cpu:0"]), resolved)
    return Placement(tf.distribute.OneDeviceStrategy("/cpu:0"), resolved)


def make_strategy(
    replicas: int | None = None, name: str = "auto", *, connect_timeout: float = 300.0
) -> tf.distribute.Strategy:
    """`place(replicas, name).strategy`: the strategy alone, for code that needs no
    cluster details (tests, benchmarks, notebooks)."""
    return place(replicas, name, connect_timeout=connect_timeout).strategy


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


def is_multi_worker(strategy: tf.distribute.Strategy) -> bool:
    return isinstance(strategy, tf.distribute.MultiWorkerMirroredStrategy)


def logical_cpu_replicas(strategy: tf.distribute.Strategy) -> int:
    """How many logical CPU devices a MirroredStrategy mirrors over (0 for any other
    strategy, or for one device): XLA fails there."""
    if not isinstance(strategy, tf.distribute.MirroredStrategy):
        return 0
    devices = strategy.extended.worker_devices
    if len(devices) < 2 or not all("CPU" in d.upper() for d in devices):
        return 0
    return len(devices)


def mixed_precision_policy() -> str:
    """The mixed policy for this machine: mixed_float16 on GPU, mixed_bfloat16 on CPU."""
    return "mixed_float16" if tf.config.list_physical_devices("GPU") else "mixed_bfloat16"


def replica_shares(batch: int, replicas: int) -> list[int]:
    """How many examples of a `batch` each of `replicas` replicas gets from TensorFlow's
    `experimental_distribute_dataset`: `ceil(batch / replicas)` each, in order, until the
    batch runs out (5 over 4: [2, 2, 1, 0]). Tested against TensorFlow's own split."""
    chunk = math.ceil(batch / replicas)
    return [max(0, min(chunk, batch - i * chunk)) for i in range(replicas)]


def check_batch_size(batch_size: int, replicas: int) -> None:
    """Raises ValueError when every global batch would leave a replica with no examples."""
    shares = replica_shares(batch_size, replicas)
    if min(shares) == 0:
        multiple = replicas * max(1, round(batch_size / replicas))
        raise ValueError(
            f"batch size {batch_size} leaves a replica with no examples over {replicas} "
            f"replicas (split {shares}); use a multiple of {replicas}, such as {multiple}"
        )


def padding_for_replicas(num_examples: int, batch_size: int, replicas: int) -> int:
    """The fewest repeated examples after which the last batch of `num_examples` (in
    batches of `batch_size`) gives every replica at least one example (0 when it already
    does)."""
    pad = 0
    while True:
        last = (num_examples + pad) % batch_size
        if last == 0 or min(replica_shares(last, replicas)) > 0:
            return pad
        pad += 1


def tolerate_uneven_batches(model: keras.Model) -> keras.Model:
    """Lets `model.fit`/`evaluate`/`predict` start on a batch that splits unevenly.

    Keras 3.15's TensorFlow trainer (`_maybe_symbolic_build`) averages the first batch
    over the replicas (`strategy.reduce("MEAN", batch, axis=None)`) only to read its shapes
    and dtypes; that needs equal shares and fails with "Inputs to operation AddN ... must
    have the same size and shape" on, say, 5 validation images over 2 replicas. This model
    reads the largest replica share instead. A no-op without a strategy or on other
    backends. Returns `model`.
    """
    original = getattr(model, "_maybe_symbolic_build", None)
    if original is None:
        return model

    def build(iterator=None, data_batch=None):
        strategy = getattr(model, "_distribute_strategy", None)
        if strategy is not None and iterator is not None and data_batch is None:
            for _, _, batches in iterator:
                data_batch = _largest_share(strategy, next(batches))
                break
        return original(data_batch=data_batch)

    model._maybe_symbolic_build = build
    return model


def _largest_share(strategy: tf.distribute.Strategy, batch):
    leaves = tree.flatten(batch)
    if not leaves or not all(isinstance(v, tf.distribute.DistributedValues) for v in leaves):
        return batch
    sizes = [int(tf.shape(t)[0]) for t in strategy.experimental_local_results(leaves[0])]
    index = int(np.argmax(sizes))
    return tree.map_structure(lambda v: strategy.experimental_local_results(v)[index], batch)
