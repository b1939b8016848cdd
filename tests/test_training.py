"""training/: presets, losses, the whole loop, resume, distribution, the command line.

The loop runs on a tiny GoogLeNet and generated Fashion-MNIST-format idx files whose
classes are learnable (a bright square whose position is the label). Runs that need
logical CPU devices (MirroredStrategy) go to a fresh process: the devices must be set up
before TensorFlow's first op.
"""

import contextlib
import csv
import functools
import io
import json
import os

import keras
import numpy as np
import pytest
import tensorflow as tf

from tests.helpers import make_fashion_mnist, run_python
from training import data, presets
from training.cli import main as cli_main
from training.evaluate import evaluate_model
from training.losses import SparseCrossentropyWithSmoothing
from training.train import TrainConfig, train_and_evaluate

TINY = dict(width_multiplier=0.125, min_depth=4, batch_size=32, seed=0)


@pytest.fixture(scope="module")
def fmnist_dir(tmp_path_factory):
    return make_fashion_mnist(tmp_path_factory.mktemp("fmnist"))


def read_history(workdir):
    with open(os.path.join(workdir, "history.csv")) as f:
        return list(csv.DictReader(f))


# --- pieces ----------------------------------------------------------------------------


def test_smoothed_sparse_loss_matches_categorical_with_smoothing():
    y_true = np.array([0, 2, 1])
    y_pred = np.array([[0.7, 0.2, 0.1], [0.1, 0.1, 0.8], [0.3, 0.4, 0.3]], "float32")
    expected = keras.losses.CategoricalCrossentropy(label_smoothing=0.1)(np.eye(3)[y_true], y_pred)
    got = SparseCrossentropyWithSmoothing(0.1)(y_true, y_pred)
    np.testing.assert_allclose(float(got), float(expected), rtol=1e-6)
    clone = SparseCrossentropyWithSmoothing.from_config(
        SparseCrossentropyWithSmoothing(0.2).get_config()
    )
    assert clone.label_smoothing == 0.2


def _lr(optimizer, step):
    return float(optimizer.learning_rate) if step is None else float(optimizer._learning_rate(step))


def test_googlenet_paper_preset():
    opt = presets.make_optimizer(
        presets.get_preset("googlenet_paper"), steps_per_epoch=10, epochs=20, global_batch_size=32
    )
    assert isinstance(opt, keras.optimizers.SGD) and opt.momentum == 0.9 and opt.use_ema
    assert _lr(opt, 79) == pytest.approx(0.01)
    assert _lr(opt, 80) == pytest.approx(0.01 * 0.96)  # -4% every 8 epochs
    assert _lr(opt, 160) == pytest.approx(0.01 * 0.96**2)


def test_inception_v3_paper_preset():
    preset = presets.get_preset("inception_v3_paper")
    opt = presets.make_optimizer(preset, steps_per_epoch=10, epochs=10, global_batch_size=32)
    assert isinstance(opt, keras.optimizers.RMSprop)
    assert (opt.rho, opt.momentum, opt.epsilon, opt.global_clipnorm) == (0.9, 0.9, 1.0, 2.0)
    assert _lr(opt, 19) == pytest.approx(0.045)
    assert _lr(opt, 20) == pytest.approx(0.045 * 0.94)
    assert preset.label_smoothing == 0.1


def test_default_preset_warms_up_then_decays_to_zero():
    opt = presets.make_optimizer(
        presets.get_preset("default"), steps_per_epoch=10, epochs=5, global_batch_size=256
    )
    assert isinstance(opt, keras.optimizers.AdamW)
    peak = 2e-3 * 256 / 128  # linear scaling with the global batch
    assert _lr(opt, 0) == pytest.approx(peak / 10)
    assert _lr(opt, 9) == pytest.approx(peak)
    assert _lr(opt, 30) < peak
    assert _lr(opt, 50) == pytest.approx(0.0, abs=1e-9)


def _train_twelve_steps(opt, values, grads, count_ops=("If", "StatelessIf")):
    """`opt`'s weights after 12 `apply` steps from `values`, and how many of the ops in
    the step's graph have a type in `count_ops`."""
    import tensorflow as tf

    variables = [keras.Variable(v) for v in values]
    opt.build(variables)
    step = tf.function(functools.partial(opt.apply, grads, variables))
    graph = step.get_concrete_function().graph
    counted = sum(op.type in count_ops for op in graph.get_operations())
    for _ in range(12):  # through the warmup into the decay
        step()
    return [v.numpy() for v in variables], counted


def _shapes_values_grads():
    import tensorflow as tf

    rng = np.random.default_rng(0)
    shapes = [(3, 4), (4,), (2, 2, 3)]
    values = [rng.normal(size=s).astype("float32") for s in shapes]
    grads = [tf.constant(rng.normal(size=s).astype("float32")) for s in shapes]
    return shapes, values, grads


def _default_optimizer():
    return presets.make_optimizer(
        presets.get_preset("default"), steps_per_epoch=10, epochs=5, global_batch_size=256
    )


def test_weight_decay_reads_the_schedule_once_a_step_with_kerass_numbers():
    config = _default_optimizer().get_config()
    decayed = presets.decay_with_one_learning_rate(keras.optimizers.AdamW.from_config(config))
    keras_own = keras.optimizers.AdamW.from_config(config)  # unpatched
    shapes, values, grads = _shapes_values_grads()
    ours, our_conds = _train_twelve_steps(decayed, values, grads)
    theirs, their_conds = _train_twelve_steps(keras_own, values, grads)
    # The warmup-cosine schedule is one cond: counted where it is evaluated.
    assert (our_conds, their_conds) == (
        2,
        1 + len(shapes),
    )  # the decay and the update; Keras: 3 + 1
    for a, b in zip(ours, theirs, strict=True):
        np.testing.assert_array_equal(a, b)  # the same decay, to the bit
    assert not np.array_equal(ours[0], values[0])  # it trained


def test_default_optimizer_updates_with_one_fused_kernel_per_variable():
    """`make_optimizer`'s AdamW: one ResourceApplyAdam per variable, Keras's numbers."""
    optimizer = _default_optimizer()
    assert type(optimizer) is keras.optimizers.AdamW  # serializes as Keras's own
    keras_own = keras.optimizers.AdamW.from_config(optimizer.get_config())  # unpatched
    shapes, values, grads = _shapes_values_grads()
    ours, fused = _train_twelve_steps(optimizer, values, grads, ("ResourceApplyAdam",))
    theirs, keras_fused = _train_twelve_steps(keras_own, values, grads, ("ResourceApplyAdam",))
    assert (fused, keras_fused) == (len(shapes), 0)
    for a, b, start in zip(ours, theirs, values, strict=True):
        # Round-off only: the kernel orders the same float32 arithmetic its own way.
        np.testing.assert_allclose(a, b, rtol=1e-6, atol=1e-6)
        assert np.abs(b - start).max() > 1e-3  # 100x the tolerance: the test can fail
    # AMSGrad and other optimizers keep Keras's update.
    amsgrad = keras.optimizers.AdamW(1e-3, amsgrad=True)
    assert presets.fuse_adam_update(amsgrad).update_step.__func__ is type(amsgrad).update_step
    sgd = keras.optimizers.SGD(0.1)
    assert presets.fuse_adam_update(sgd).update_step.__func__ is type(sgd).update_step


def test_fused_adam_leaves_sparse_gradients_to_keras():
    import tensorflow as tf

    rng = np.random.default_rng(1)
    table = rng.normal(size=(5, 3)).astype("float32")
    sparse = tf.IndexedSlices(
        tf.constant(rng.normal(size=(2, 3)).astype("float32")), tf.constant([1, 3]), [5, 3]
    )
    results = []
    for opt in (
        _default_optimizer(),
        keras.optimizers.AdamW.from_config(_default_optimizer().get_config()),
    ):
        variable = keras.Variable(table)
        opt.build([variable])
        for _ in range(3):
            opt.apply([sparse], [variable])
        results.append(variable.numpy())
    np.testing.assert_allclose(results[0], results[1], rtol=1e-6, atol=1e-7)
    assert not np.allclose(results[0], table)


def test_fused_adam_updates_every_replica_under_mirrored_strategy():
    """On 2 logical CPUs each replica's copy of every variable and slot gets the update
    (a strategy's `update` hands the kernel that device's handles)."""
    result = run_python(
        """
        import json, numpy as np
        from training.strategy import make_strategy
        strategy = make_strategy(2)  # logical CPUs: before any TensorFlow op
        import keras
        from training import presets
        rng = np.random.default_rng(0)
        x = rng.normal(size=(3, 16, 8, 8, 3)).astype("float32") * 2 + 1
        y = rng.normal(size=(3, 16, 3)).astype("float32")
        models = []
        with strategy.scope():
            for fused in (True, False):
                keras.utils.set_random_seed(0)
                model = keras.Sequential([
                    keras.Input((8, 8, 3)),
                    keras.layers.Conv2D(4, 3, use_bias=False),
                    keras.layers.BatchNormalization(),
                    keras.layers.ReLU(),
                    keras.layers.GlobalAveragePooling2D(),
                    keras.layers.Dense(3),
                ])
                optimizer = presets.make_optimizer(
                    presets.get_preset("default"), steps_per_epoch=2, epochs=2,
                    global_batch_size=16)
                if not fused:
                    optimizer = keras.optimizers.AdamW.from_config(optimizer.get_config())
                model.compile(optimizer=optimizer, loss="mse")
                models.append(model)
        start = models[0].get_weights()
        models[1].set_weights(start)
        for xb, yb in zip(x, y):
            for model in models:
                model.train_on_batch(xb, yb)
        fused, plain = models
        copies = [v.value.values for v in fused.trainable_weights + fused.optimizer.variables
                  if hasattr(v.value, "values")]
        print(json.dumps({
            "mirrored": len(copies),
            "replicas_apart": max(float(np.abs(c[0].numpy() - c[1].numpy()).max()) for c in copies),
            # per trained variable: how far the two runs are apart, and how far it moved
            "apart_moved": [
                [float(np.abs(a - b).max()), float(np.abs(b - s).max())]
                for a, b, s, w in zip(fused.get_weights(), plain.get_weights(), start,
                                      plain.weights) if w.trainable],
        }))
        """
    )
    found = json.loads(result.stdout.strip().splitlines()[-1])
    assert found["mirrored"] > 10  # weights and Adam's slots, each with two copies
    assert found["replicas_apart"] == 0
    apart, moved = np.array(found["apart_moved"]).T
    assert np.all(apart <= 1e-6 + 1e-2 * moved)  # round-off, against how far each one moved
    assert moved.min() > 1e-4  # every one trained (at batch 16 the peak rate is 2.5e-4)


def test_unknown_preset_and_bad_config():
    with pytest.raises(ValueError, match="unknown preset 'adam'"):
        presets.get_preset("adam")
    with pytest.raises(ValueError, match="epochs must be a positive integer; received 0"):
        TrainConfig(epochs=0)
    with pytest.raises(
        ValueError,
        match=r"stem must be one of \['imagenet', 'small'\]; received stem='small_pool' with "
        r"model='inception_v3'",
    ):
        TrainConfig(model="inception_v3", stem="small_pool")
    with pytest.raises(ValueError, match=r"model must be one of \[.*\]; received 'googlenet2'"):
        TrainConfig(model="googlenet2")
    for field, value in [("dropout", 1.0), ("label_smoothing", -0.1), ("val_fraction", 1.0)]:
        with pytest.raises(ValueError, match=rf"{field} must be a number in \[0, 1\)"):
            TrainConfig(**{field: value})
    with pytest.raises(ValueError, match="image_size must be at least 8; received 4"):
        TrainConfig(image_size=4)


# --- the whole loop --------------------------------------------------------------------


@pytest.fixture(scope="module")
def finished_run(fmnist_dir, tmp_path_factory):
    """A 2-epoch run (aux heads, export) that was interrupted after its first epoch and
    resumed: one run serves the resume test and every test of a finished run's workdir.
    Returns (config, workdir, metrics, {"history": the history at the interruption,
    "out": what the resumed run printed})."""
    workdir = str(tmp_path_factory.mktemp("run"))
    config = TrainConfig(data_dir=fmnist_dir, epochs=2, **TINY)
    with pytest.raises(_Interrupt):
        train_and_evaluate(config, workdir, verbose=0, extra_callbacks=[_StopAfterFirstEpoch()])
    interrupted = {
        "history": [int(r["epoch"]) for r in read_history(workdir)],
        "metrics_written": os.path.exists(os.path.join(workdir, "metrics.json")),
    }
    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        metrics = train_and_evaluate(config, workdir, verbose=2)
    return config, workdir, metrics, {**interrupted, "out": out.getvalue()}


def test_run_writes_every_artifact(finished_run):
    _, workdir, metrics, _ = finished_run
    for name in (
        "config.json", "history.csv", "curves.png", "confusion.png", "best.keras",
        "model.keras", "inference.keras", "metrics.json", "export/saved_model.pb",
    ):  # fmt: skip
        assert os.path.exists(os.path.join(workdir, name)), name
    assert os.listdir(os.path.join(workdir, "logs"))
    with open(os.path.join(workdir, "metrics.json")) as f:
        saved = json.load(f)
    assert saved["num_test"] == 96 and saved["skipped_files"] == 0
    assert len(saved["epoch_times"]) == len(saved["train_seconds"]) == 2
    assert all(
        e >= t > 0 for e, t in zip(saved["epoch_times"], saved["train_seconds"], strict=True)
    )
    assert saved["train_images_per_sec"] > 0
    assert saved["class_names"] == data.FASHION_MNIST_CLASS_NAMES
    assert len(saved["per_class"]) == 10


def test_test_metrics_are_the_inference_models_on_the_test_images(finished_run, fmnist_dir):
    """metrics.json's top-1, top-5 and loss, recomputed with numpy from the idx files and
    the saved inference model."""
    _, workdir, metrics, _ = finished_run
    images = data.read_idx(os.path.join(fmnist_dir, "t10k-images-idx3-ubyte.gz"))
    labels = data.read_idx(os.path.join(fmnist_dir, "t10k-labels-idx1-ubyte.gz"))
    x = images[..., None]  # raw uint8 pixels: the model carries its preprocessing
    model = keras.saving.load_model(os.path.join(workdir, "inference.keras"), compile=False)
    probs = np.asarray(model.predict(x, verbose=0), "float64")
    top5 = np.argsort(-probs, axis=1)[:, :5]
    assert metrics["top1"] == pytest.approx(np.mean(probs.argmax(1) == labels), abs=1e-9)
    assert metrics["top5"] == pytest.approx(np.mean((top5 == labels[:, None]).any(1)), abs=1e-9)
    nll = -np.mean(np.log(probs[np.arange(len(labels)), labels]))
    assert metrics["loss"] == pytest.approx(nll, rel=1e-4)
    per_class = [
        np.mean(probs[labels == k].argmax(1) == k) if np.any(labels == k) else None
        for k in range(10)
    ]
    assert metrics["per_class"] == pytest.approx(per_class, abs=1e-9)


def test_aux_targets_fan_out_and_loss_falls(finished_run):
    _, workdir, metrics, _ = finished_run
    history = read_history(workdir)
    assert [int(row["epoch"]) for row in history] == [0, 1]
    assert {"main_loss", "aux1_loss", "aux2_loss", "val_main_accuracy"} <= set(history[0])
    assert float(history[-1]["loss"]) < float(history[0]["loss"])
    assert metrics["params"] > metrics["inference_params"]  # the aux heads were trained
    # The loss is the main one plus 0.3 of each auxiliary one (ki.default_loss_weights).
    for row in history:
        main, aux1, aux2 = (float(row[f"{k}_loss"]) for k in ("main", "aux1", "aux2"))
        assert float(row["loss"]) == pytest.approx(main + 0.3 * aux1 + 0.3 * aux2, rel=1e-4)


def test_inference_model_has_no_aux_and_same_weights(finished_run):
    _, workdir, _, _ = finished_run
    full = keras.saving.load_model(os.path.join(workdir, "model.keras"), compile=False)
    inference = keras.saving.load_model(os.path.join(workdir, "inference.keras"), compile=False)
    assert sorted(full.output) == ["aux1", "aux2", "main"]
    assert not isinstance(inference.output, dict)
    x = np.random.default_rng(0).normal(size=(4, 28, 28, 1)).astype("float32")
    np.testing.assert_allclose(
        inference.predict(x, verbose=0), full.predict(x, verbose=0)["main"], atol=1e-6
    )


def test_rerunning_a_finished_run_trains_nothing(finished_run, capsys):
    config, workdir, metrics, _ = finished_run
    again = train_and_evaluate(config, workdir, verbose=0)
    assert again == json.loads(json.dumps(metrics))
    assert "already finished" in capsys.readouterr().out
    assert len(read_history(workdir)) == 2


def test_workdir_with_another_config_is_refused(finished_run):
    config, workdir, _, _ = finished_run
    changed = TrainConfig(**{**config.__dict__, "epochs": 1})  # fewer: not a continuation
    with pytest.raises(ValueError, match=r"another configuration.*\['epochs'\]"):
        train_and_evaluate(changed, workdir, verbose=0)


class _Interrupt(Exception):
    pass


class _StopAfterFirstEpoch(keras.callbacks.Callback):
    def on_epoch_end(self, epoch, logs=None):
        raise _Interrupt(f"killed after epoch {epoch + 1}")


def test_interrupted_run_resumes_without_redoing_epochs(finished_run):
    _, workdir, metrics, interrupted = finished_run
    assert interrupted["history"] == [0] and not interrupted["metrics_written"]
    out = interrupted["out"]
    assert "epochs 1-1 are done; continuing at epoch 2 of 2" in out
    assert "inference.keras, export/, metrics.json" in out  # the summary lists the export
    table = out[out.index("Test accuracy per class") :].splitlines()[1:12]  # verbose: printed
    assert table[0].startswith("class  name ") and table[1].split()[:2] == ["0", "T-shirt/top"]
    assert table[10].split()[:3] == ["9", "Ankle", "boot"]
    assert [int(r["epoch"]) for r in read_history(workdir)] == [0, 1]  # epoch 1 not redone
    assert len(metrics["epoch_times"]) == 2
    model = keras.saving.load_model(os.path.join(workdir, "model.keras"))
    steps_per_epoch = -(-metrics["num_train"] // 32)
    assert int(model.optimizer.iterations) == 2 * steps_per_epoch  # the optimizer resumed too


class _StopAfterTraining(keras.callbacks.Callback):
    def on_train_end(self, logs=None):
        raise _Interrupt("killed after the last epoch, before evaluation")


# large: resume is covered in the fast suite by
# test_interrupted_run_resumes_without_redoing_epochs.
@pytest.mark.large
def test_run_interrupted_after_training_evaluates_without_retraining(fmnist_dir, tmp_path, capsys):
    workdir = str(tmp_path / "run")
    config = TrainConfig(data_dir=fmnist_dir, epochs=1, aux=False, **TINY)
    with pytest.raises(_Interrupt):
        train_and_evaluate(config, workdir, verbose=0, extra_callbacks=[_StopAfterTraining()])
    assert not os.path.exists(os.path.join(workdir, "metrics.json"))
    metrics = train_and_evaluate(config, workdir, verbose=0)
    assert "all 1 epochs are done; evaluating and exporting" in capsys.readouterr().out
    assert [int(r["epoch"]) for r in read_history(workdir)] == [0]  # not trained again
    assert len(metrics["epoch_times"]) == 1
    assert os.path.exists(os.path.join(workdir, "backup"))  # kept: --epochs can continue


# --- distribution and the command line (fresh processes) -------------------------------


# large: two fresh processes with logical CPUs (minutes).
@pytest.mark.large
def test_sync_batch_norm_two_replicas_match_one_device():
    result = run_python(
        """
        from training.strategy import make_strategy
        mirrored = make_strategy(2)
        import json, numpy as np, keras, tensorflow as tf
        import keras_inception as ki

        rng = np.random.default_rng(0)
        x = rng.normal(size=(16, 16, 16, 1)).astype("float32")
        y = rng.integers(0, 3, size=(16,))
        ds = tf.data.Dataset.from_tensor_slices((x, y)).batch(16)

        def trained(strategy, sync, weights):
            with strategy.scope():
                model = ki.build_googlenet(
                    stem="small", input_shape=(16, 16, 1), classes=3, width_multiplier=0.125,
                    min_depth=4, dropout=0.0, sync_batch_norm=sync,
                )
                if weights is not None:
                    model.set_weights(weights)
                model.compile(keras.optimizers.SGD(0.05), "sparse_categorical_crossentropy",
                              jit_compile=False)
            start = [w.copy() for w in model.get_weights()]
            model.fit(ds, epochs=1, shuffle=False, verbose=0)
            return start, model.get_weights()

        one = tf.distribute.OneDeviceStrategy("/cpu:0")
        keras.utils.set_random_seed(0)
        init, single = trained(one, False, None)
        _, synced = trained(mirrored, True, init)
        _, unsynced = trained(mirrored, False, init)
        diff = lambda a, b: max(float(np.max(np.abs(p - q))) for p, q in zip(a, b))
        print(json.dumps({"sync": diff(single, synced), "unsync": diff(single, unsynced),
                          "moved": diff(init, single),
                          "replicas": mirrored.num_replicas_in_sync}))
        """
    )
    out = json.loads(result.stdout.strip().splitlines()[-1])
    assert out["replicas"] == 2
    # One step on one global batch of 16 (8 per replica). Measured: moved 0.21, sync 8.9e-4,
    # unsync 0.40. Keras's synchronized BN leaves a 0.4% relative gap to one device (not
    # float rounding: without BN the two agree to 1.5e-8); far closer than per-replica BN.
    assert out["moved"] > 1e-2  # training changed the weights
    assert out["sync"] < 1e-2 * out["moved"]
    assert out["unsync"] > 100 * out["sync"]


# large: two replicas through the CLI, then 10-crop evaluation (minutes); the fast suite trains
# under two replicas in test_replicas.py and runs the CLI in test_cli_export.
@pytest.mark.large
def test_cli_end_to_end_two_replicas(fmnist_dir, tmp_path):
    workdir = tmp_path / "cli"
    result = run_python(
        f"""
        import sys
        from training.cli import main
        sys.exit(main([
            "train", "--model", "googlenet", "--dataset", "fashion_mnist",
            "--data-dir", {fmnist_dir!r}, "--epochs", "3", "--batch-size", "32",
            "--width-multiplier", "0.125", "--min-depth", "4", "--replicas", "2",
            "--workdir", {str(workdir)!r},
        ]))
        """
    )
    assert "Test top-1" in result.stdout
    with open(workdir / "metrics.json") as f:
        metrics = json.load(f)
    assert metrics["replicas"] == 2
    history = read_history(workdir)
    assert float(history[-1]["loss"]) < float(history[0]["loss"])

    evaluated = run_python(
        f"""
        import sys
        from training.cli import main
        sys.exit(main(["evaluate", {str(workdir)!r}, "--dataset", "fashion_mnist",
                       "--data-dir", {fmnist_dir!r}]))
        """
    )
    results = json.loads(evaluated.stdout[evaluated.stdout.index("{") :])
    assert results["single"]["images"] == 96 and results["ten"]["images"] == 96
    assert results["single"]["top1"] == pytest.approx(metrics["top1"], abs=1e-6)
    assert results["ten"]["top1"] != pytest.approx(results["single"]["top1"], abs=1e-9) or (
        results["ten"]["loss"] != pytest.approx(results["single"]["loss"], rel=1e-6)
    )  # ten crops are other views than the single one


def _dense_probe(image_batch_shape):
    """A softmax over 4 classes of 8x8 images, six random images of `image_batch_shape`
    (6, ..., 8, 8, 1) with labels, and them as two batches."""
    rng = np.random.default_rng(0)
    images = rng.normal(size=image_batch_shape).astype("float32")
    labels = rng.integers(0, 4, 6).astype("int32")
    inputs = keras.Input((8, 8, 1))
    model = keras.Model(
        inputs, keras.layers.Dense(4, activation="softmax")(keras.layers.Flatten()(inputs))
    )
    return model, images, labels, [(images[:4], labels[:4]), (images[4:], labels[4:])]


def test_ten_crop_evaluation_averages_the_probabilities_of_the_crops():
    model, images, labels, dataset = _dense_probe((6, 10, 8, 8, 1))
    result = evaluate_model(model, dataset, ten_crop=True)
    probs = model.predict(images.reshape(60, 8, 8, 1), verbose=0).reshape(6, 10, 4).mean(1)
    assert result["images"] == 6
    assert result["top1"] == pytest.approx(np.mean(probs.argmax(1) == labels))
    assert result["loss"] == pytest.approx(-np.mean(np.log(probs[np.arange(6), labels])), rel=1e-5)
    confusion = np.zeros((4, 4), int)
    np.add.at(confusion, (labels, probs.argmax(1)), 1)  # the averaged crops' predictions
    assert result["confusion"] == confusion.tolist()


def test_flip_evaluation_averages_each_image_with_its_mirror_image():
    model, images, labels, dataset = _dense_probe((6, 8, 8, 1))
    result = evaluate_model(model, dataset, flip=True)
    probs = (model.predict(images, verbose=0) + model.predict(images[:, :, ::-1], verbose=0)) / 2
    assert result["top1"] == pytest.approx(np.mean(probs.argmax(1) == labels))
    assert result["loss"] == pytest.approx(-np.mean(np.log(probs[np.arange(6), labels])), rel=1e-5)
    single = evaluate_model(model, dataset)
    assert single["loss"] != pytest.approx(result["loss"], rel=1e-6)  # a dense layer is not
    # mirror-symmetric, so the mirrored view changes the probabilities
    with pytest.raises(ValueError, match="flip=True"):
        evaluate_model(model, [(images[:, None], labels)], ten_crop=True, flip=True)


def test_cli_evaluate_prints_the_per_class_table_and_plots_the_confusion_matrix(
    finished_run, fmnist_dir, tmp_path, capsys
):
    _, workdir, metrics, _ = finished_run
    argv = ["evaluate", workdir, "--data-dir", fmnist_dir, "--crops", "single"]
    assert cli_main(argv) == 0
    out = capsys.readouterr().out
    lines = out.splitlines()
    header = lines.index("Test accuracy per class, single crop:")
    table = lines[header + 1 : header + 12]
    assert table[0].split()[:5] == ["class", "name", "images", "correct", "accuracy"]
    rows = [line.split() for line in table[1:]]
    assert [row[0] for row in rows] == [str(k) for k in range(10)]
    labels = data.read_idx(os.path.join(fmnist_dir, "t10k-labels-idx1-ubyte.gz"))
    images_column = [int(line[table[0].index("images") :].split()[0]) for line in table[1:]]
    assert images_column == np.bincount(labels, minlength=10).tolist()
    correct = sum(int(line[table[0].index("correct") :].split()[0]) for line in table[1:])
    assert correct == round(metrics["top1"] * 96)  # the same model on the same images
    plot = os.path.join(workdir, "confusion_single.png")  # default: the workdir
    assert f"Confusion matrix written to {plot}" in out and os.path.getsize(plot) > 0
    summary = json.loads(out[out.index("{") :])
    assert summary["single"]["top1"] == pytest.approx(metrics["top1"], abs=1e-9)

    plots = tmp_path / "plots"
    model_file = os.path.join(workdir, "inference.keras")
    argv = ["evaluate", model_file, "--dataset", "fashion_mnist", "--data-dir", fmnist_dir]
    assert cli_main([*argv, "--crops", "all", "--plot-dir", str(plots)]) == 0
    assert sorted(os.listdir(plots)) == [f"confusion_{c}.png" for c in ("flip", "single", "ten")]
    out = capsys.readouterr().out
    assert "Test accuracy per class, flip crop:" in out
    summary = json.loads(out[out.index("{") :])
    assert summary["single"]["top1"] == pytest.approx(metrics["top1"], abs=1e-9)
    assert summary["flip"]["images"] == summary["ten"]["images"] == 96


def test_cli_export(finished_run, tmp_path, capsys):
    _, workdir, _, _ = finished_run
    assert cli_main(["export", workdir, "--output", str(tmp_path / "sm")]) == 0
    assert (tmp_path / "sm" / "saved_model.pb").exists()
    out = capsys.readouterr().out
    assert f"saved_model export written to {tmp_path / 'sm'}" in out
    assert "check: 64 test images of fashion_mnist: max abs difference from Keras" in out
    # Checked on the run's own test images (not random ones), with their names beside it.
    metadata = json.loads((tmp_path / "sm" / "metadata.json").read_text())
    assert metadata["check"]["images"] == "64 test images of fashion_mnist"
    assert metadata["check"]["passed"] and metadata["weights"]["workdir"] == workdir
    assert (tmp_path / "sm" / "labels.txt").read_text().splitlines()[0] == "T-shirt/top"


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["export", "/nonexistent/run", "--output", "x"], "model file not found"),
        (["train", "--dataset", "fashion_mnist", "--data-dir", "/nonexistent", "--workdir", "w"], "/nonexistent"),
    ],
)  # fmt: skip
def test_cli_bad_paths_are_one_line_errors(argv, message, capsys, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    assert cli_main(argv) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("error:") and message in err and "\n" not in err


def test_cli_bad_flags_exit_with_usage(capsys):
    with pytest.raises(SystemExit) as info:
        cli_main(["train", "--epochs", "0", "--workdir", "w"])
    assert info.value.code == 2
    assert "expected a positive integer; received '0'" in capsys.readouterr().err


def test_cli_batch_norm_flip_and_export_flags_reach_the_run(monkeypatch, capsys):
    seen = {}
    monkeypatch.setattr(
        "training.train.train_and_evaluate",
        lambda config, workdir, **kwargs: seen.update(config=config, **kwargs),
    )
    assert cli_main(["train", "--workdir", "w"]) == 0 and seen["export"] is True
    argv = ["train", "--no-flip", "--bn-momentum", "0.9", "--precise-bn-images", "0"]
    assert cli_main([*argv, "--no-export", "--workdir", "w"]) == 0
    assert seen["export"] is False
    config = seen["config"]
    assert (config.flip, config.bn_momentum, config.precise_bn_images) == (False, 0.9, 0)
    assert TrainConfig().flip and TrainConfig().precise_bn_images == 4096  # on by default
    # The range is keras_inception's ConvStyle's (the one check), in the flags typed.
    assert cli_main(["train", "--bn-momentum", "1", "--workdir", "w"]) == 2
    assert "--bn-momentum must be in [0, 1); received 1.0" in capsys.readouterr().err


def test_cli_random_erasing_reaches_the_config_and_needs_augmentation(monkeypatch, capsys):
    seen = {}
    monkeypatch.setattr(
        "training.train.train_and_evaluate", lambda config, workdir, **_: seen.update(config=config)
    )
    assert cli_main(["train", "--random-erasing", "0.5", "--workdir", "w"]) == 0
    assert seen["config"].random_erasing == 0.5 and TrainConfig().random_erasing == 0
    with pytest.raises(SystemExit):
        cli_main(["train", "--random-erasing", "1.5", "--workdir", "w"])
    assert "expected a probability in [0, 1]; received '1.5'" in capsys.readouterr().err
    argv = ["train", "--random-erasing", "0.5", "--no-augment", "--workdir", "w"]
    assert cli_main(argv) == 2
    err = capsys.readouterr().err  # in the flags typed, not the config's field names
    assert (
        "--random-erasing is part of the training augmentation; received --random-erasing 0.5 "
        "with --no-augment"
    ) in err


# --- private-API patches (training.keras_patches): fail loudly when Keras changes ---------


def test_the_private_apis_the_patches_read_still_exist():
    """Every private name `training.keras_patches` reads or replaces, on the installed
    Keras/TensorFlow: an upgrade that renames one fails here, not in a run."""
    import inspect

    from training import keras_patches

    assert keras_patches.supported("tolerate_uneven_batches")
    assert keras_patches.supported("configure_coordination_timeout", tensorflow=True)
    model = keras.Sequential([keras.Input((2,)), keras.layers.Dense(1)])
    assert list(inspect.signature(model._maybe_symbolic_build).parameters) == [
        "iterator",
        "data_batch",
    ]
    adamw = keras.optimizers.AdamW(1e-3, weight_decay=0.1)
    adamw.build(model.trainable_variables)
    variable = model.trainable_variables[0]
    assert list(inspect.signature(adamw._apply_weight_decay).parameters) == ["variables"]
    assert adamw._use_weight_decay(variable) is True
    assert adamw._distribution_strategy is tf.distribute.get_strategy()
    index = adamw._get_variable_index(variable)
    assert adamw._momentums[index].shape == adamw._velocities[index].shape == variable.shape
    assert adamw._trainable_variables[index] is variable  # scale_learning_rate's lookup
    assert keras_patches.supported("scale_learning_rate")
    assert callable(tf.__internal__.distribute.interim.maybe_merge_call)
    from tensorflow.compiler.xla.tsl.protobuf import coordination_config_pb2
    from tensorflow.python.distribute import multi_worker_util
    from tensorflow.python.eager import context

    configure = inspect.signature(context.context().configure_coordination_service)
    assert {"service_type", "service_leader", "cluster_register_timeout_in_ms"} <= set(
        configure.parameters
    )
    assert coordination_config_pb2.CoordinatedJob(name="worker", num_tasks=2).num_tasks == 2
    spec = tf.train.ClusterSpec({"worker": ["a:1", "b:2"]})
    assert multi_worker_util.coordination_leader(spec) == "/job:worker/replica:0/task:0"


def test_a_patch_declines_with_a_warning_on_another_keras(monkeypatch):
    from training import keras_patches

    monkeypatch.setattr(keras_patches, "KERAS_VERSIONS", ("2.99",))
    monkeypatch.setattr(keras_patches, "_declined", set())
    optimizer = keras.optimizers.AdamW(1e-3)
    with pytest.warns(RuntimeWarning, match=r"written for Keras 2\.99; received Keras 3\.15"):
        assert keras_patches.fuse_adam_update(optimizer) is optimizer
    assert optimizer.update_step.__func__ is keras.optimizers.AdamW.update_step  # unpatched
    model = keras.Sequential([keras.Input((2,)), keras.layers.Dense(1)])
    with pytest.warns(RuntimeWarning, match="tolerate_uneven_batches"):
        keras_patches.tolerate_uneven_batches(model)
    assert "_maybe_symbolic_build" not in vars(model)


def test_each_preset_carries_its_optimizer_factory():
    from training import optim

    assert {name: p.optimizer for name, p in presets.PRESETS.items()} == {
        "default": optim.adamw_cosine,
        "googlenet_paper": optim.sgd_paper,
        "inception_v3_paper": optim.rmsprop_paper,
        "finetune": optim.sgd_finetune,
    }
    # A new preset is one entry: its factory is called with the scaled learning rate.
    calls = []

    def factory(base, **kwargs):
        calls.append((base, kwargs))
        return keras.optimizers.SGD(base)

    preset = presets.Preset("mine", 0.1, 100, 0.0, 0.0, "SGD", optimizer=factory, warmup=False)
    optimizer = optim.make_optimizer(preset, steps_per_epoch=5, epochs=2, global_batch_size=50)
    assert float(optimizer.learning_rate.numpy()) == pytest.approx(0.05)
    assert calls == [(0.05, {"steps_per_epoch": 5, "epochs": 2, "warmup_epochs": 0.0})]
    with pytest.raises(ValueError, match="the mine preset decays in stairs"):
        optim.make_optimizer(
            preset, steps_per_epoch=5, epochs=2, global_batch_size=50, warmup_epochs=1
        )


# --- divergence ------------------------------------------------------------------------


def test_a_nan_loss_raises_training_diverged_naming_the_epoch_and_step():
    from training.runkit import DivergenceGuard, TrainingDiverged

    x = np.ones((12, 2), "float32")
    x[9] = np.nan  # batch 3 (of 4 examples each) of every epoch
    y = np.zeros((12, 1), "float32")
    model = keras.Sequential([keras.Input((2,)), keras.layers.Dense(1)])
    model.compile(optimizer="sgd", loss="mse")
    with pytest.raises(TrainingDiverged, match=r"the loss became nan in epoch 1, step 3\."):
        model.fit(x, y, batch_size=4, epochs=2, shuffle=False, verbose=0,
                  callbacks=[DivergenceGuard()])  # fmt: skip
    assert int(model.optimizer.iterations.numpy()) == 3  # stopped at once
    # Resumed at epoch 3 (2 finished): the epoch is counted from the run's start.
    guard = DivergenceGuard()
    guard.on_epoch_begin(2)
    with pytest.raises(TrainingDiverged, match=r"became inf in epoch 3, step 1\."):
        guard.on_train_batch_end(0, {"loss": float("inf")})
    guard.on_train_batch_end(1, {"loss": 0.5})  # finite: nothing


# --- plots: their content, as data ---------------------------------------------------------


def test_curves_plot_the_history(tmp_path):
    from training.plots import plot_curves

    history = tmp_path / "history.csv"
    history.write_text(
        "epoch,loss,main_accuracy,val_loss,val_main_accuracy\n"
        "0,2.5,0.25,2.0,0.30\n1,1.5,0.50,1.25,0.55\n2,1.0,0.75,1.125,0.70\n"
    )
    fig = plot_curves(str(history), str(tmp_path / "curves.png"))
    assert (tmp_path / "curves.png").stat().st_size > 0
    loss, accuracy = fig.axes
    assert [ax.get_ylabel() for ax in fig.axes] == ["loss", "main_accuracy"]
    lines = {(ax.get_ylabel(), line.get_label()): line for ax in fig.axes for line in ax.lines}
    expected = {
        ("loss", "train"): [2.5, 1.5, 1.0],
        ("loss", "validation"): [2.0, 1.25, 1.125],
        ("main_accuracy", "train"): [0.25, 0.5, 0.75],
        ("main_accuracy", "validation"): [0.3, 0.55, 0.7],
    }
    assert set(lines) == set(expected)
    for key, values in expected.items():
        assert list(lines[key].get_xdata()) == [1, 2, 3]  # epochs from 1
        assert list(lines[key].get_ydata()) == values, key


def test_confusion_plot_colours_shares_and_writes_counts(tmp_path):
    from training.plots import plot_confusion

    confusion = [[3, 1, 0], [0, 0, 0], [2, 0, 2]]
    fig = plot_confusion(confusion, ["a", "b", "c"], str(tmp_path / "c.png"), title="t")
    ax = fig.axes[0]
    shares = np.asarray(ax.images[0].get_array())
    np.testing.assert_array_equal(shares, [[0.75, 0.25, 0], [0, 0, 0], [0.5, 0, 0.5]])
    cells = {(int(t.get_position()[1]), int(t.get_position()[0])): t.get_text() for t in ax.texts}
    # Every nonzero count and the whole diagonal; zeros off the diagonal stay blank.
    assert cells == {(0, 0): "3", (0, 1): "1", (1, 1): "0", (2, 0): "2", (2, 2): "2"}
    assert [t.get_text() for t in ax.get_yticklabels()] == ["a", "b", "c"]
    assert ax.get_title() == "t"
