"""Cluster placement: which distribution strategy a run trains under, and where.

One device, MirroredStrategy on one machine, or MultiWorkerMirroredStrategy across
machines (configured by `TF_CONFIG`). Logical CPU devices and the multi-worker runtime must
be configured before TensorFlow runs its first op, so `place` (or `make_strategy`) is
called first thing by `train_and_evaluate` and by `tune`. `TF_CONFIG` is read once, there,
by TensorFlow's own `TFConfigClusterResolver` (`read_cluster`), which the multi-worker
strategy then reuses; `read_cluster` only adds the checks that a training cluster needs.
`jit_compile` must stay off under MirroredStrategy on logical CPUs (it fails there:
`training.replicas.logical_cpu_replicas`).

Example:

```python
placement = place(replicas=2)  # first thing in the process
with placement.strategy.scope():
    model = ...
```
"""

from __future__ import annotations

import dataclasses
import json
import os
import signal
import socket
import threading
from collections.abc import Callable

import tensorflow as tf

from training.keras_patches import configure_coordination_timeout
from training.replicas import configure_cpu_replicas

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
        spec: tf.train.ClusterSpec or None. The cluster as the resolver read it.
        resolver: TFConfigClusterResolver or None. The resolver that read `TF_CONFIG`,
            handed to the strategy (which builds its own otherwise).
    """

    workers: tuple[str, ...]
    task_type: str
    task_index: int
    rank: int
    spec: tf.train.ClusterSpec | None = dataclasses.field(default=None, compare=False, repr=False)
    resolver: tf.distribute.cluster_resolver.ClusterResolver | None = dataclasses.field(
        default=None, compare=False, repr=False
    )

    @property
    def is_chief(self) -> bool:
        return self.rank == 0

    @property
    def address(self) -> str:
        return self.workers[self.rank]


def read_cluster() -> ClusterConfig | None:
    """The environment's `TF_CONFIG` as a ClusterConfig; None when unset or empty.

    TensorFlow's `TFConfigClusterResolver` parses it; this adds what a training cluster
    needs: only "chief" and "worker" tasks, at most one chief, "host:port" addresses named
    once, and this task in the cluster.

    Raises:
        ValueError: the text is not JSON, names no workers, or its task is not in its
            cluster (the message repeats the text).
    """
    text = os.environ.get("TF_CONFIG")
    if not text or not text.strip():
        return None
    try:
        resolver = tf.distribute.cluster_resolver.TFConfigClusterResolver()
        spec = resolver.cluster_spec()
        cluster = spec.as_dict()
    except json.JSONDecodeError as err:
        raise ValueError(f"TF_CONFIG is not valid JSON ({err}); received {text!r}") from None
    except (TypeError, ValueError) as err:
        raise ValueError(f"TF_CONFIG has a bad cluster ({err}); received {text!r}") from None
    if not cluster:
        raise ValueError(f'TF_CONFIG needs a "cluster" object with workers; received {text!r}')
    unsupported = sorted(set(cluster) - {"chief", "worker"})
    if unsupported:
        raise ValueError(
            f"TF_CONFIG names task types {unsupported}; multi-worker training uses only "
            f'"chief" and "worker" tasks. Received {text!r}'
        )
    by_task: dict[tuple[str, int], str] = {}
    for task_type in ("chief", "worker"):
        addresses = cluster.get(task_type, [])
        if isinstance(addresses, dict):  # TensorFlow's sparse form: {index: address}
            addresses = [addresses[i] for i in sorted(addresses)]
        for index, address in enumerate(addresses):
            if not address.rpartition(":")[2].isdigit():
                raise ValueError(
                    f'TF_CONFIG {task_type} {index} must be "host:port"; received {address!r}'
                )
            by_task[(task_type, index)] = address
    if len(cluster.get("chief", [])) > 1:
        raise ValueError(f"TF_CONFIG may name at most one chief; received {cluster['chief']!r}")
    if len(set(by_task.values())) != len(by_task):
        raise ValueError(f"TF_CONFIG names one address twice; received {text!r}")
    if resolver.task_type is None:
        raise ValueError(f'TF_CONFIG needs a "task" object (type, index); received {text!r}')
    key = (resolver.task_type, int(resolver.task_id or 0))
    if key not in by_task:
        raise ValueError(
            f"TF_CONFIG task {{'type': {key[0]!r}, 'index': {key[1]}}} is not in its cluster; "
            f"the cluster has {sorted(f'{t} {i}' for t, i in by_task)}"
        )
    workers = tuple(by_task.values())  # the chief first, then the workers in order
    return ClusterConfig(
        workers=workers,
        task_type=key[0],
        task_index=key[1],
        rank=workers.index(by_task[key]),
        spec=spec,
        resolver=resolver,
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


@dataclasses.dataclass(frozen=True)
class Placement:
    """Where a run trains: its strategy and, for a multi-worker run, its cluster.

    Args:
        strategy: tf.distribute.Strategy. The strategy to train under.
        name: str. The strategy's name after "auto" is resolved (one of `STRATEGIES`).
        cluster: ClusterConfig or None. `TF_CONFIG`, read once; None when unset.
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
    cluster = read_cluster()
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
    `connect_timeout` seconds (`training.keras_patches.configure_coordination_timeout`)
    with a ClusterError that names the workers not answering.
    """
    options = tf.distribute.experimental.CommunicationOptions(
        # Packs the gradients into a few all-reduces instead of one per variable.
        bytes_per_pack=_BYTES_PER_PACK,
    )
    if cluster is None or len(cluster.workers) == 1:
        return tf.distribute.MultiWorkerMirroredStrategy(communication_options=options)
    resolver = cluster.resolver or tf.distribute.cluster_resolver.TFConfigClusterResolver()
    configure_coordination_timeout(cluster.spec or resolver.cluster_spec(), connect_timeout)
    try:
        strategy = tf.distribute.MultiWorkerMirroredStrategy(
            cluster_resolver=resolver, communication_options=options
        )
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


def is_multi_worker(strategy: tf.distribute.Strategy) -> bool:
    return isinstance(strategy, tf.distribute.MultiWorkerMirroredStrategy)


def mixed_precision_policy() -> str:
    """The mixed policy for this machine: mixed_float16 on GPU, mixed_bfloat16 on CPU."""
    return "mixed_float16" if tf.config.list_physical_devices("GPU") else "mixed_bfloat16"
