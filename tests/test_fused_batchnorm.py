"""FusedBatchNormalization: Keras's numbers from TensorFlow's fused kernel.

Every comparison is against `keras.layers.BatchNormalization` with the same config and
the same non-trivial weights (random gamma and beta, moving statistics far from 0 and 1),
on inputs whose channels have different means and scales. Differences are measured
relative to the largest entry of the reference tensor:

* float32: 1e-5 (measured: at most 2.4e-6, for the gamma gradient; the kernel normalizes
  as `(x - mean) * inv`, Keras as `x * inv + (beta - mean * inv)`, and sums in another
  order);
* mixed_float16: 1e-3 and mixed_bfloat16: 8e-3, two float16 / bfloat16 ulps of the
  largest entry (measured: at most 2.0e-4 and 7.6e-4, for the output). Both layers
  compute in float32 and round the output, and the input gradient, to the input's dtype:
  a float32 difference that crosses a rounding boundary moves an entry by one ulp.
"""

import json
import textwrap

import h5py
import keras
import numpy as np
import pytest
import tensorflow as tf
from keras.src.legacy.saving import legacy_h5_format  # writes keras.applications' format

from keras_inception.fused_batchnorm import FusedBatchNormalization, fuse_batch_norm
from tests.helpers import run_python

TOLERANCE = {"float32": 1e-5, "mixed_float16": 1e-3, "mixed_bfloat16": 8e-3}
SHAPE = (8, 5, 5, 6)


def inputs(shape=SHAPE, seed=0):
    rng = np.random.default_rng(seed)
    channel_mean = rng.uniform(-3, 3, shape[-1])
    channel_scale = rng.uniform(0.5, 4, shape[-1])
    return (rng.normal(size=shape) * channel_scale + channel_mean).astype("float32")


def twins(shape=SHAPE, seed=1, **config):
    """A Keras BatchNormalization and a FusedBatchNormalization, same config and weights."""
    config = {"momentum": 0.8, **config}
    plain = keras.layers.BatchNormalization(**config)
    fused = FusedBatchNormalization(**config)
    plain.build(shape)
    fused.build(shape)
    rng = np.random.default_rng(seed)
    weights = []
    for variable in plain.weights:
        low, high = (0.5, 3.0) if variable.name in ("gamma", "moving_variance") else (-2, 2)
        weights.append(rng.uniform(low, high, variable.shape).astype("float32"))
    plain.set_weights(weights)
    fused.set_weights(weights)
    return plain, fused


def relative_difference(actual, expected) -> float:
    actual = np.asarray(tf.cast(actual, "float32"))
    expected = np.asarray(tf.cast(expected, "float32"))
    assert actual.shape == expected.shape
    return float(np.max(np.abs(actual - expected)) / max(np.max(np.abs(expected)), 1e-30))


def make_step(layer, training):
    """One step: outputs, gradients (input, trainable weights) of <outputs, cotangent>,
    then plain SGD on the trainable weights, so that later steps see other weights."""

    @tf.function
    def step(x, cotangent):
        with tf.GradientTape() as tape:
            tape.watch(x)
            y = layer(x, training=training)
            loss = tf.reduce_sum(tf.cast(y, "float32") * cotangent)
        grads = tape.gradient(loss, [x, *layer.trainable_weights])
        for variable, grad in zip(layer.trainable_weights, grads[1:], strict=True):
            variable.assign_sub(0.1 * grad)
        return y, grads

    return step


def compare(plain, fused, training, steps=3, seed=2):
    """Runs both layers `steps` times; returns {quantity: largest relative difference}."""
    rng = np.random.default_rng(seed)
    plain_step, fused_step = make_step(plain, training), make_step(fused, training)
    worst: dict[str, float] = {}

    def note(key, actual, expected):
        worst[key] = max(worst.get(key, 0.0), relative_difference(actual, expected))

    names = ["input"] + [v.name for v in plain.trainable_weights]
    for i in range(steps):
        x = tf.constant(inputs(seed=seed + i))
        cotangent = tf.constant(rng.normal(size=SHAPE).astype("float32"))
        y_plain, g_plain = plain_step(x, cotangent)
        y_fused, g_fused = fused_step(x, cotangent)
        assert y_fused.dtype == y_plain.dtype == fused.compute_dtype
        note("output", y_fused, y_plain)
        for name, a, b in zip(names, g_fused, g_plain, strict=True):
            assert a.dtype == b.dtype, name
            note(f"d/d{name}", a, b)
        for a, b in zip(fused.weights, plain.weights, strict=True):
            assert a.dtype == b.dtype
            note(b.name, a, b)
    return worst


@pytest.mark.parametrize("policy", ["float32", "mixed_bfloat16", "mixed_float16"])
@pytest.mark.parametrize("training", [True, False], ids=["training", "inference"])
def test_numbers_are_keras(policy, training):
    keras.config.set_dtype_policy(policy)
    plain, fused = twins()
    assert fused.compute_dtype == policy.removeprefix("mixed_")  # bf16 / f16 outputs
    assert fused.variable_dtype == "float32"
    start = [w.copy() for w in plain.get_weights()]
    worst = compare(plain, fused, training)
    assert max(worst.values()) <= TOLERANCE[policy], worst
    moved = [np.abs(w - s).max() for w, s in zip(plain.get_weights(), start, strict=True)]
    if training:  # every weight moved: the comparison covers the updates
        assert min(moved) > 1e-3, moved
    else:  # the moving statistics stay; gamma and beta took SGD steps
        assert moved[2] == moved[3] == 0 and min(moved[:2]) > 1e-3, moved
    assert fused.uses_fused_kernel(tf.zeros(SHAPE, fused.compute_dtype))


@pytest.mark.parametrize("scale, center", [(False, True), (True, False), (False, False)])
def test_without_gamma_or_beta_numbers_are_keras(scale, center):
    """keras.applications.InceptionV3 uses scale=False: a constant stands in, fused."""
    plain, fused = twins(scale=scale, center=center)
    assert [w.name for w in fused.weights] == [w.name for w in plain.weights]
    for training in (True, False):
        worst = compare(plain, fused, training)
        assert max(worst.values()) <= TOLERANCE["float32"], worst
    assert fused.uses_fused_kernel(tf.zeros(SHAPE))


def test_frozen_layer_normalizes_with_moving_statistics():
    """trainable=False: inference in training too (Keras's rule), statistics kept."""
    plain, fused = twins()
    plain.trainable = fused.trainable = False
    x = inputs()
    np.testing.assert_allclose(fused(x, training=True), plain(x, training=True), atol=1e-5)
    np.testing.assert_allclose(fused(x, training=True), fused(x, training=False))
    for a, b in zip(fused.weights, plain.weights, strict=True):
        np.testing.assert_array_equal(a.numpy(), b.numpy())
    assert "FusedBatchNormV3" in graph_ops(fused, SHAPE, training=True)


def test_moving_variance_is_the_biased_one():
    """With momentum 0 the moving statistics are the batch's own: the biased variance,
    not the kernel's Bessel-corrected n / (n - 1) one (here 4 / 3: a 25% difference)."""
    x = inputs(shape=(1, 2, 2, 3))
    _, fused = twins(shape=x.shape, momentum=0.0)
    fused(x, training=True)
    np.testing.assert_allclose(fused.moving_mean.numpy(), x.mean(axis=(0, 1, 2)), rtol=1e-5)
    np.testing.assert_allclose(fused.moving_variance.numpy(), x.var(axis=(0, 1, 2)), rtol=1e-5)


def graph_ops(layer, shape, training) -> set[str]:
    @tf.function
    def forward_backward(x):
        with tf.GradientTape() as tape:
            tape.watch(x)
            y = layer(x, training=training)
        return tape.gradient(y, x)

    spec = tf.TensorSpec(shape, "float32")
    graph = forward_backward.get_concrete_function(spec).graph
    return {op.type for op in graph.get_operations()}


@pytest.mark.parametrize("training", [True, False], ids=["training", "inference"])
def test_the_fused_kernel_is_what_runs(training):
    plain, fused = twins()
    ops = graph_ops(fused, SHAPE, training)
    assert {"FusedBatchNormV3", "FusedBatchNormGradV3"} <= ops
    assert not {"Mean", "SquaredDifference", "Rsqrt"} & ops
    # Keras's own layer: the op chain this layer replaces.
    plain_ops = graph_ops(plain, SHAPE, training)
    assert "FusedBatchNormV3" not in plain_ops and "Rsqrt" in plain_ops


FALLBACKS = {
    "rank 2": ((8, 6), {}),
    "rank 3": ((8, 5, 6), {}),
    "channels first": ((8, 6, 5, 5), {"axis": 1}),
    "synchronized": (SHAPE, {"synchronized": True}),
    "renorm": (SHAPE, {"renorm": True}),
    "tiny epsilon": (SHAPE, {"epsilon": 1e-6}),
}


@pytest.mark.parametrize("case", FALLBACKS)
def test_fallbacks_run_keras_path(case):
    shape, config = FALLBACKS[case]
    plain, fused = twins(shape=shape, **config)
    for training in (True, False):
        assert "FusedBatchNormV3" not in graph_ops(fused, shape, training)
        x = inputs(shape=shape)
        np.testing.assert_allclose(fused(x, training=training), plain(x, training=training))
        for a, b in zip(fused.weights, plain.weights, strict=True):
            np.testing.assert_allclose(a.numpy(), b.numpy())
    assert not fused.uses_fused_kernel(tf.zeros(shape))


def test_float64_and_mask_fall_back():
    keras.config.set_dtype_policy("float64")
    plain, fused = twins()
    x = inputs().astype("float64")
    assert not fused.uses_fused_kernel(tf.constant(x))
    y = fused(x, training=True)
    assert y.dtype == tf.float64
    np.testing.assert_array_equal(y, plain(x, training=True))
    keras.config.set_dtype_policy("float32")
    _, fused32 = twins()
    assert not fused32.uses_fused_kernel(tf.zeros(SHAPE), mask=tf.ones(SHAPE[:-1], "bool"))


def tiny_model(batch_norm, seed=0):
    keras.utils.set_random_seed(seed)
    inputs = keras.Input((8, 8, 3))
    x = keras.layers.Conv2D(4, 3, use_bias=False, name="c1")(inputs)
    x = batch_norm(momentum=0.5, name="c1_bn")(x)
    x = keras.layers.Conv2D(5, 3, use_bias=False, name="c2")(x)
    x = batch_norm(scale=False, momentum=0.5, name="c2_bn")(x)
    x = keras.layers.GlobalAveragePooling2D()(x)
    return keras.Model(inputs, keras.layers.Dense(3, name="head")(x))


def trained(model, x, y, steps=2, jit_compile=False):
    model.compile(optimizer=keras.optimizers.SGD(0.1), loss="mse", jit_compile=jit_compile)
    for _ in range(steps):
        model.train_on_batch(x, y)
    return model


def test_weights_load_both_ways(tmp_path):
    """A model saved with plain BN loads into the one built with the fused layer, and back
    (`.weights.h5` and `.keras` files), and training both gives the same weights."""
    rng = np.random.default_rng(0)
    x, y = rng.normal(size=(8, 8, 8, 3)).astype("float32") * 2 + 1, rng.normal(size=(8, 3))
    plain = trained(tiny_model(keras.layers.BatchNormalization), x, y)
    fused = tiny_model(FusedBatchNormalization, seed=1)
    assert [w.path for w in fused.weights] == [w.path for w in plain.weights]
    assert not np.allclose(fused(x, training=False), plain(x, training=False))
    for suffix in (".weights.h5", ".keras"):
        source, target = tmp_path / f"plain{suffix}", tiny_model(FusedBatchNormalization, 2)
        if suffix == ".keras":
            plain.save(source)
        else:
            plain.save_weights(source)
        target.load_weights(source)
        for a, b in zip(target.get_weights(), plain.get_weights(), strict=True):
            np.testing.assert_array_equal(a, b)
        np.testing.assert_allclose(
            target(x, training=False), plain(x, training=False), rtol=1e-5, atol=1e-6
        )
    # Back: trained fused weights into a plain model; and one more step each agrees.
    fused.set_weights(plain.get_weights())
    trained(fused, x, y)
    trained(plain, x, y)
    fused.save_weights(tmp_path / "fused.weights.h5")
    back = tiny_model(keras.layers.BatchNormalization, seed=3)
    back.load_weights(tmp_path / "fused.weights.h5")
    for a, b in zip(back.get_weights(), fused.get_weights(), strict=True):
        np.testing.assert_array_equal(a, b)
    for a, b in zip(back.get_weights(), plain.get_weights(), strict=True):
        np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6)


def test_xla_training_matches_keras():
    """FusedBatchNormV3 has an XLA lowering: `jit_compile=True` gives Keras's weights."""
    rng = np.random.default_rng(0)
    x, y = rng.normal(size=(8, 8, 8, 3)).astype("float32") * 2 + 1, rng.normal(size=(8, 3))
    plain, fused = tiny_model(keras.layers.BatchNormalization), tiny_model(FusedBatchNormalization)
    start = plain.get_weights()
    fused.set_weights(start)
    trained(plain, x, y, steps=3)
    trained(fused, x, y, steps=3, jit_compile=True)
    assert fused.jit_compile
    for a, b in zip(fused.get_weights(), plain.get_weights(), strict=True):
        np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6)
    moved = [np.abs(b - s).max() for b, s in zip(plain.get_weights(), start, strict=True)]
    assert min(moved[:2] + moved[3:]) > 1e-3  # all but c1_bn/beta (zero gradient)


def test_keras_applications_weights_load_into_the_fused_clone(tmp_path):
    """keras.applications InceptionV3 ships its ImageNet weights as a legacy `.h5` file
    (`inception_v3_weights_tf_dim_ordering_tf_kernels.h5`); one in that format, written
    from random weights, loads into the clone whose BN layers are all fused."""
    model = keras.applications.InceptionV3(weights=None, input_shape=(75, 75, 3), classes=4)
    rng = np.random.default_rng(0)
    model.set_weights(
        [
            rng.uniform(0.5, 1.5, w.shape) if "variance" in w.path else rng.normal(size=w.shape)
            for w in model.weights
        ]
    )
    with h5py.File(tmp_path / "inception_v3.h5", "w") as f:
        legacy_h5_format.save_weights_to_hdf5_group(f, model)
    fused = keras.models.clone_model(model, clone_function=fuse_batch_norm)
    kinds = {type(layer) for layer in fused.layers}
    assert FusedBatchNormalization in kinds and keras.layers.BatchNormalization not in kinds
    assert [(w.path, w.shape) for w in fused.weights] == [(w.path, w.shape) for w in model.weights]
    fused.load_weights(tmp_path / "inception_v3.h5")
    for a, b in zip(fused.get_weights(), model.get_weights(), strict=True):
        np.testing.assert_array_equal(a, b)
    x = inputs(shape=(2, 75, 75, 3))
    np.testing.assert_allclose(fused(x), model(x), rtol=1e-4, atol=1e-6)


def test_keras_round_trip_in_fresh_process(tmp_path):
    """The file records Keras's layer (keras.saving.load_model gives it back);
    keras_inception.load_model gives the fused one; both compute the saved model's numbers
    (tests/test_portable_files.py loads our builders' files without keras_inception)."""
    model = tiny_model(FusedBatchNormalization)
    x = inputs(shape=(4, 8, 8, 3))
    trained(model, x, np.ones((4, 3)))
    model.save(tmp_path / "m.keras")
    np.save(tmp_path / "x.npy", x)
    result = run_python(
        f"""
        import json, numpy as np, keras
        import keras_inception
        path = {str(tmp_path / "m.keras")!r}
        x = np.load({str(tmp_path / "x.npy")!r})
        loaded = {{}}
        for how, model in [
            ("keras", keras.saving.load_model(path, safe_mode=True)),
            ("keras_inception", keras_inception.load_model(path, safe_mode=True)),
        ]:
            loaded[how] = {{
                "kinds": [type(layer).__qualname__ for layer in model.layers],
                "inference": np.asarray(model(x)).tolist(),
                "training": np.asarray(model(x, training=True)).tolist(),
            }}
        print(json.dumps(loaded))
        """
    )
    loaded = json.loads(result.stdout.strip().splitlines()[-1])
    # In this order: a training call updates the moving statistics.
    expected = {"inference": model(x), "training": model(x, training=True)}
    for how, kind in [
        ("keras", "BatchNormalization"),
        ("keras_inception", "FusedBatchNormalization"),
    ]:
        assert [k for k in loaded[how]["kinds"] if "BatchNormalization" in k] == [kind] * 2, how
        for mode, value in expected.items():
            np.testing.assert_allclose(loaded[how][mode], value, rtol=1e-5, atol=1e-6)


def test_mirrored_strategy_on_two_logical_cpus():
    """Two replicas, each normalizing its half of every batch: Keras's train_on_batch
    gives the same weights and moving statistics with either layer."""
    result = run_python(
        """
        import json, numpy as np
        from training.strategy import make_strategy
        strategy = make_strategy(2)  # logical CPUs: before any TensorFlow op
        import keras, tensorflow as tf
        from keras_inception.fused_batchnorm import FusedBatchNormalization
        from tests.test_fused_batchnorm import tiny_model
        assert strategy.num_replicas_in_sync == 2
        rng = np.random.default_rng(0)
        x = rng.normal(size=(3, 16, 8, 8, 3)).astype("float32") * 2 + 1
        y = rng.normal(size=(3, 16, 3)).astype("float32")
        with strategy.scope():
            plain = tiny_model(keras.layers.BatchNormalization)
            fused = tiny_model(FusedBatchNormalization)
            for model in (plain, fused):
                model.compile(optimizer=keras.optimizers.SGD(0.1), loss="mse")
        start = plain.get_weights()
        fused.set_weights(start)
        for xb, yb in zip(x, y):
            plain.train_on_batch(xb, yb), fused.train_on_batch(xb, yb)

        @tf.function
        def replica_gradients(model, x):  # a training step's graph, per replica
            def step(x):
                with tf.GradientTape() as tape:
                    loss = tf.reduce_sum(model(x, training=True))
                return tape.gradient(loss, model.trainable_weights)
            return strategy.run(step, (x,))

        for model in (plain, fused):
            graph = replica_gradients.get_concrete_function(model, x[0]).graph.as_graph_def()
            ops = {n.op for n in graph.node}
            ops.update(n.op for f in graph.library.function for n in f.node_def)
            print(type(model.layers[2]).__qualname__, "FusedBatchNormGradV3" in ops)
        print(json.dumps({
            w.path: [float(np.abs(a - b).max()), float(np.abs(b - s).max())]
            for w, a, b, s in zip(plain.weights, fused.get_weights(), plain.get_weights(), start)
        } | {"outputs": [float(np.abs(fused.predict(x[0], verbose=0)
                                     - plain.predict(x[0], verbose=0)).max()), 1.0]}))
        """
    )
    lines = result.stdout.strip().splitlines()
    assert lines[-3:-1] == ["BatchNormalization False", "FusedBatchNormalization True"]
    numbers = json.loads(lines[-1])
    assert len(numbers) == 12 and "c2_bn/moving_variance" in numbers, numbers
    # Weights and outputs are O(0.01 - 3): absolute differences.
    assert max(difference for difference, _ in numbers.values()) <= 1e-5, numbers
    # Training moved every weight (c1_bn/beta excepted: c2_bn removes any constant shift
    # of its input, so that beta's gradient is zero), moving statistics included.
    assert min(moved for path, (_, moved) in numbers.items() if path != "c1_bn/beta") > 1e-3


def test_runs_on_jax_without_tensorflow():
    """Keras's path on JAX, with the same numbers, and TensorFlow never imported."""
    script = textwrap.dedent(
        """
        import os, sys, numpy as np
        os.environ["KERAS_BACKEND"] = "jax"
        import keras
        from keras_inception.fused_batchnorm import FusedBatchNormalization
        assert keras.backend.backend() == "jax"

        def tiny_model(batch_norm):  # (keras.utils.set_random_seed would import TF)
            inputs = keras.Input((8, 8, 3))
            x = keras.layers.Conv2D(4, 3, use_bias=False)(inputs)
            x = batch_norm(momentum=0.5)(x)
            x = keras.layers.GlobalAveragePooling2D()(x)
            model = keras.Model(inputs, keras.layers.Dense(3)(x))
            model.compile(optimizer=keras.optimizers.SGD(0.1), loss="mse")
            return model

        rng = np.random.default_rng(0)
        x, y = rng.normal(size=(4, 8, 8, 3)).astype("float32") * 2 + 1, np.ones((4, 3))
        plain = tiny_model(keras.layers.BatchNormalization)
        fused = tiny_model(FusedBatchNormalization)
        fused.set_weights(plain.get_weights())
        for _ in range(2):
            plain.train_on_batch(x, y), fused.train_on_batch(x, y)
        assert not fused.layers[2].uses_fused_kernel(np.zeros((1, 6, 6, 4), "float32"))
        for a, b in zip(fused.get_weights(), plain.get_weights()):
            np.testing.assert_allclose(a, b, rtol=1e-6)
        np.testing.assert_allclose(fused(x, training=False), plain(x, training=False))
        print("tensorflow" in sys.modules)
        """
    )
    result = run_python(script)
    assert result.stdout.strip().splitlines()[-1] == "False", result.stderr[-2000:]
