"""Former home of placement, replica arithmetic and the private-API patches; kept so that
`from training.strategy import ...` still works. New code imports from the modules that
do each job:

- `training.placement`: the strategy and the cluster (`place`, `make_strategy`,
  `read_cluster`, `Placement`, `ClusterConfig`, `ClusterError`, `STRATEGIES`);
- `training.replicas`: replica arithmetic and the one padding convention
  (`replica_shares`, `check_batch_size`, `padding_for_replicas`,
  `pad_with_zero_weights`, `logical_cpu_replicas`);
- `training.keras_patches`: every patch of a private Keras or TensorFlow API
  (`tolerate_uneven_batches`).
"""

from training.keras_patches import tolerate_uneven_batches
from training.placement import (
    STRATEGIES,
    ClusterConfig,
    ClusterError,
    Placement,
    is_multi_worker,
    make_multiworker_strategy,
    make_strategy,
    mixed_precision_policy,
    place,
    read_cluster,
    resolve_strategy_name,
)
from training.replicas import (
    check_batch_size,
    check_divisible_batch,
    configure_cpu_replicas,
    logical_cpu_replicas,
    pad_with_zero_weights,
    padding_for_replicas,
    replica_shares,
)

__all__ = [
    "STRATEGIES",
    "ClusterConfig",
    "ClusterError",
    "Placement",
    "check_batch_size",
    "check_divisible_batch",
    "configure_cpu_replicas",
    "is_multi_worker",
    "logical_cpu_replicas",
    "make_multiworker_strategy",
    "make_strategy",
    "mixed_precision_policy",
    "pad_with_zero_weights",
    "padding_for_replicas",
    "place",
    "read_cluster",
    "replica_shares",
    "resolve_strategy_name",
    "tolerate_uneven_batches",
]
