"""Builds TF-Slim's inception_v1/v2/v3 with random variables and writes reference outputs.

Run by `tests/test_slim_weights.py` in a subprocess, because TF-Slim needs graph mode:

    python tests/slim_reference.py OUT_DIR [inception_v1 inception_v2 inception_v3]

For each net it writes `OUT_DIR/<name>.ckpt` (a `tf.compat.v1.train.Saver` checkpoint;
inception_v1 in the V1 single-file format of the published 2016_08_28 files, the others in
the V2 index + data format) and `OUT_DIR/<name>.npz` with `images` (fixed inputs in
[-1, 1]), `logits` (and `aux_logits` for inception_v3), computed with `is_training=False`.

Every variable is randomized from a fixed seed, BN moving statistics and beta included, so
that the logits are far from zero and a wrong mapping shows. A `global_step` and an
optimizer slot (`.../Momentum`) are saved too, as in a training checkpoint: the converter
must name them as skipped.

tf-slim 1.1.0 with TF 2.21 needs tf-keras 2.21 and the aliases of `_alias_tf_keras`.
"""

from __future__ import annotations

import os
import sys

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import numpy as np  # noqa: E402

NETS = {
    # name: (module, function, arg scope, input side, batch)
    "inception_v1": ("inception_v1", "inception_v1", "inception_v1_arg_scope", 224),
    "inception_v2": ("inception_v2", "inception_v2", "inception_v2_arg_scope", 224),
    "inception_v3": ("inception_v3", "inception_v3", "inception_v3_arg_scope", 299),
}
BATCH = 2
SEED = 1234


def _alias_tf_keras() -> None:
    """tf-slim reaches `tf_keras.legacy_tf_layers[.normalization]` through TF's lazy
    loaders; tf-keras 2.21 keeps them under `tf_keras.src`."""
    import tf_keras.src.legacy_tf_layers as legacy
    import tf_keras.src.legacy_tf_layers.normalization as normalization

    sys.modules.setdefault("tf_keras.legacy_tf_layers", legacy)
    sys.modules.setdefault("tf_keras.legacy_tf_layers.normalization", normalization)


def _random_value(name: str, shape: tuple, rng: np.random.Generator) -> np.ndarray:
    """He-normal kernels; BN statistics and biases spread enough to move the outputs."""
    leaf = name.rsplit("/", 1)[-1].split(":")[0]
    if leaf in ("weights", "depthwise_weights", "pointwise_weights"):
        fan_in = int(np.prod(shape[:-1]))
        if leaf == "depthwise_weights":
            fan_in = int(np.prod(shape[:2]))
        return rng.normal(0.0, np.sqrt(2.0 / fan_in), shape)
    if leaf == "beta":
        return rng.normal(0.1, 0.2, shape)
    if leaf == "gamma":
        return rng.uniform(0.5, 1.5, shape)
    if leaf == "moving_mean":
        return rng.normal(0.0, 0.2, shape)
    if leaf == "moving_variance":
        return rng.uniform(0.5, 2.0, shape)
    if leaf == "biases":
        return rng.normal(0.0, 0.2, shape)
    raise ValueError(f"no random rule for variable {name}")


def build_reference(name: str, out_dir: str) -> None:
    import tensorflow as tf
    import tf_slim
    from tf_slim import nets

    module_name, fn_name, scope_name, side = NETS[name]
    module = getattr(nets, module_name)
    rng = np.random.default_rng(SEED + int(name[-1]))
    images = rng.uniform(-1.0, 1.0, (BATCH, side, side, 3)).astype(np.float32)
    graph = tf.Graph()
    with graph.as_default():
        inputs = tf.compat.v1.placeholder(tf.float32, (BATCH, side, side, 3))
        with tf_slim.arg_scope(getattr(module, scope_name)()):
            logits, end_points = getattr(module, fn_name)(
                inputs, num_classes=1001, is_training=False
            )
        model_vars = tf.compat.v1.global_variables()
        step = tf.compat.v1.train.get_or_create_global_step()
        # An optimizer slot, as a training checkpoint holds one per trainable variable.
        first = model_vars[0]
        slot = tf.compat.v1.get_variable(
            first.op.name + "/Momentum", shape=first.shape, initializer=tf.zeros_initializer()
        )
        all_vars = model_vars + [step, slot]
        fetches = {"logits": logits}
        if "AuxLogits" in end_points:
            fetches["aux_logits"] = end_points["AuxLogits"]
        version = (
            tf.compat.v1.train.SaverDef.V1
            if name == "inception_v1"
            else tf.compat.v1.train.SaverDef.V2
        )
        saver = tf.compat.v1.train.Saver(all_vars, write_version=version)
        with tf.compat.v1.Session(graph=graph) as sess:
            # One run: each initializer is fed its random value (Variable.load is one run
            # per variable, several seconds per net).
            feed = {
                var.initial_value: _random_value(var.name, tuple(var.shape.as_list()), rng).astype(
                    np.float32
                )
                for var in model_vars
            }
            sess.run([var.initializer for var in all_vars], feed)
            outputs = sess.run(fetches, {inputs: images})
            saver.save(sess, os.path.join(out_dir, f"{name}.ckpt"), write_meta_graph=False)
    np.savez(os.path.join(out_dir, f"{name}.npz"), images=images, **outputs)


def main(argv: list[str]) -> None:
    if not argv:
        raise SystemExit(f"usage: {sys.argv[0]} OUT_DIR [{' '.join(NETS)}]")
    out_dir, names = argv[0], argv[1:] or list(NETS)
    unknown = [n for n in names if n not in NETS]
    if unknown:
        raise SystemExit(f"unknown nets {unknown}; choose from {list(NETS)}")
    import tensorflow as tf

    _alias_tf_keras()
    tf.compat.v1.disable_eager_execution()
    for name in names:
        build_reference(name, out_dir)


if __name__ == "__main__":
    main(sys.argv[1:])
