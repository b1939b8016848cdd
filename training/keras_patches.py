"""Every patch of a private Keras or TensorFlow API that `training` makes, in one place.

Each patch was written against Keras 3.15 and TensorFlow 2.21 (`KERAS_VERSIONS`,
`TF_VERSIONS`). On another version a patch declines: it warns once, naming the version
it found, and returns the object unchanged (the run stays correct, only slower, or
less tolerant). `tests/test_training.py` checks every private name these patches read, so
that an upgrade that renames one fails a test instead of a run.

- `tolerate_uneven_batches`: Keras reads the first batch of `fit`/`evaluate`/`predict`
  in a way that needs equal replica shares (`Model._maybe_symbolic_build`).
- `decay_with_one_learning_rate`: the weight decay reads the learning-rate schedule once
  a step instead of once per variable (`Optimizer._apply_weight_decay`).
- `fuse_adam_update`: Adam(W) updates each variable with TensorFlow's fused
  `ResourceApplyAdam` (`Adam._momentums`, `_velocities`, `_get_variable_index`).
- `scale_learning_rate`: some variables update at a fraction of the learning rate
  (fine-tuning's loaded layers; `Optimizer._get_variable_index`, `_trainable_variables`).
- `configure_coordination_timeout`: a registration timeout for the multi-worker
  coordination service (`tensorflow.python.eager.context`); no public API sets it.

Patches change one instance only: a patched model or optimizer serializes as Keras's own,
and a `.keras` file needs no `training` to load.
"""

from __future__ import annotations

import warnings

import keras
import numpy as np
import tensorflow as tf
from keras import tree
from tensorflow.compiler.xla.tsl.protobuf import coordination_config_pb2
from tensorflow.python.distribute import multi_worker_util
from tensorflow.python.eager import context

# The versions (major.minor) each patch was written and tested against.
KERAS_VERSIONS = ("3.15",)
TF_VERSIONS = ("2.21",)
# Dtypes that TensorFlow's ResourceApplyAdam kernel takes (CPU, GPU and XLA).
_FUSED_ADAM_DTYPES = (tf.float16, tf.bfloat16, tf.float32, tf.float64)
_declined: set[str] = set()


def _minor(version: str) -> str:
    return ".".join(version.split(".")[:2])


def supported(patch: str, *, tensorflow: bool = False) -> bool:
    """Whether the installed Keras (or TensorFlow) is one `patch` was written for; warns
    once per patch when it is not.

    Args:
        patch: str. The patch's name, for the warning.
        tensorflow: bool. Check TensorFlow's version rather than Keras's.

    Example:
    >>> supported("fuse_adam_update")
    True
    """
    name, found, wanted = (
        ("TensorFlow", tf.__version__, TF_VERSIONS)
        if tensorflow
        else ("Keras", keras.__version__, KERAS_VERSIONS)
    )
    if _minor(found) in wanted:
        return True
    if patch not in _declined:
        _declined.add(patch)
        warnings.warn(
            f"training.keras_patches.{patch} was written for {name} {', '.join(wanted)}; "
            f"received {name} {found}, so it is not applied",
            RuntimeWarning,
            stacklevel=3,
        )
    return False


# --------------------------------------------------------------------------- models


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
    if original is None or not supported("tolerate_uneven_batches"):
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


# --------------------------------------------------------------------------- optimizers


def decay_with_one_learning_rate(
    optimizer: keras.optimizers.Optimizer,
) -> keras.optimizers.Optimizer:
    """Makes `optimizer`'s weight decay read the learning rate once a step; returns it.

    Keras's TensorFlow optimizers evaluate the learning-rate schedule once for every
    decayed variable (for CosineDecay with warmup, a `tf.cond` each): one copy per
    variable in the training step, each traced. Here the schedule is evaluated once,
    before the decay of every variable; the decay is Keras's
    (`variable -= variable * weight_decay * learning_rate`, in the variable's dtype), so
    the weights are the same to the bit. Only this instance changes.
    """
    if optimizer.weight_decay is None or not supported("decay_with_one_learning_rate"):
        return optimizer

    def apply_weight_decay(variables):
        def decay_all(distribution, variables, **kwargs):
            learning_rate = optimizer.learning_rate  # once, for every variable below

            def decay(variable):
                if optimizer._use_weight_decay(variable):
                    lr = tf.cast(learning_rate, variable.dtype)
                    wd = tf.cast(optimizer.weight_decay, variable.dtype)
                    variable.assign_sub(variable * wd * lr)

            for variable in variables:
                if isinstance(variable, keras.Variable):
                    variable = variable.value  # the tf.Variable
                distribution.extended.update(variable, decay, group=False)

        tf.__internal__.distribute.interim.maybe_merge_call(
            decay_all, optimizer._distribution_strategy, variables
        )

    optimizer._apply_weight_decay = apply_weight_decay
    return optimizer


def fuse_adam_update(optimizer: keras.optimizers.Optimizer) -> keras.optimizers.Optimizer:
    """Makes `optimizer`'s Adam update one fused kernel per variable; returns it.

    Keras 3's Adam (and AdamW) updates each variable with about a dozen small ops (the
    moments, the bias correction, the step), traced once per variable. Here each update
    is TensorFlow's `ResourceApplyAdam`, the kernel tf.keras 2 used, which computes Keras's
    formula (`m += (g - m)(1 - beta_1)`, `v += (g^2 - v)(1 - beta_2)`,
    `var -= lr sqrt(1 - beta_2^t) / (1 - beta_1^t) m / (sqrt(v) + epsilon)`) in one pass.
    AMSGrad, sparse gradients and other dtypes keep Keras's update. Only this instance
    changes. Other optimizers are returned as they are.
    """
    if type(optimizer) not in (keras.optimizers.Adam, keras.optimizers.AdamW):
        return optimizer
    if optimizer.amsgrad or not supported("fuse_adam_update"):
        return optimizer
    keras_update = optimizer.update_step

    def update_step(gradient, variable, learning_rate):
        if isinstance(variable, keras.Variable):
            variable = variable.value  # the tf.Variable
        dtype = variable.dtype
        if isinstance(gradient, tf.IndexedSlices) or dtype not in _FUSED_ADAM_DTYPES:
            return keras_update(gradient, variable, learning_rate)
        index = optimizer._get_variable_index(variable)
        m = optimizer._momentums[index].value
        v = optimizer._velocities[index].value
        step = tf.cast(optimizer.iterations + 1, dtype)
        beta_1 = tf.cast(optimizer.beta_1, dtype)
        beta_2 = tf.cast(optimizer.beta_2, dtype)
        # In a strategy's update call every `.handle` is this device's copy.
        tf.raw_ops.ResourceApplyAdam(
            var=variable.handle,
            m=m.handle,
            v=v.handle,
            beta1_power=tf.pow(beta_1, step),
            beta2_power=tf.pow(beta_2, step),
            lr=tf.cast(learning_rate, dtype),
            beta1=beta_1,
            beta2=beta_2,
            epsilon=tf.cast(optimizer.epsilon, dtype),
            grad=tf.cast(gradient, dtype),
        )

    optimizer.update_step = update_step
    return optimizer


# --------------------------------------------------------------------------- multi-worker


def configure_coordination_timeout(spec: tf.train.ClusterSpec, timeout: float) -> bool:
    """Configures TensorFlow's coordination service as MultiWorkerMirroredStrategy sets it
    up, plus a registration timeout of `timeout` seconds (the strategy keeps a service
    that is already configured). Without it, creating the strategy waits for ever for a
    worker that never starts, and SIGTERM cannot stop it.

    Args:
        spec: tf.train.ClusterSpec. The cluster (chief and worker jobs).
        timeout: float. Seconds every task waits for the others to register.

    Returns:
        bool. Whether the timeout was configured (False on another TensorFlow).
    """
    if not supported("configure_coordination_timeout", tensorflow=True):
        return False
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
    return True


def scale_learning_rate(
    optimizer: keras.optimizers.Optimizer, paths: set[str], scale: float
) -> keras.optimizers.Optimizer:
    """Makes the built `optimizer` update the variables whose `path` is in `paths` at
    `scale` times its learning rate; returns it. Keras 3 has no per-variable learning
    rate, so this instance's `update_step(gradient, variable, learning_rate)`, which the
    TensorFlow backend calls once per variable, is wrapped (over `fuse_adam_update`'s, if
    any). The decoupled weight decay keeps the full rate.

    Example:
    >>> dense = keras.layers.Dense(1, kernel_initializer="zeros", name="d")
    >>> model = keras.Sequential([keras.Input((1,)), dense])
    >>> sgd = keras.optimizers.SGD(1.0)
    >>> sgd.build(model.trainable_variables)
    >>> sgd = scale_learning_rate(sgd, {dense.kernel.path}, 0.5)
    >>> sgd.apply([np.ones((1, 1)), np.ones(1)], model.trainable_variables)
    >>> [float(w.reshape(-1)[0]) for w in model.get_weights()]  # kernel at half the rate
    [-0.5, -1.0]
    """
    if scale == 1.0 or not supported("scale_learning_rate"):
        return optimizer
    inner = optimizer.update_step

    def update_step(gradient, variable, learning_rate):
        index = optimizer._get_variable_index(variable)
        if optimizer._trainable_variables[index].path in paths:
            learning_rate = learning_rate * scale
        return inner(gradient, variable, learning_rate)

    optimizer.update_step = update_step
    return optimizer
