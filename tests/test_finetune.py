"""training/finetune.py and `train --init-weights --freeze-base-epochs`: the BatchNorm
trap (keras issues 9214, 10045, 20285) does not happen, precise BN leaves frozen layers
alone, the loaded layers train at `--base-lr-scale`, and a run resumes across the phase
boundary."""

import os

import keras
import numpy as np
import pytest
import tensorflow as tf

from tests.helpers import make_fashion_mnist
from training import data
from training.batchnorm import PreciseBatchNorm, batch_norm_layers
from training.config import TrainConfig
from training.finetune import scale_base_learning_rate
from training.init_weights import set_base_frozen
from training.keras_patches import fuse_adam_update
from training.model_setup import build_model
from training.train import train_and_evaluate
from training.workdir import as_json, read_json, write_json

TINY = dict(width_multiplier=0.125, min_depth=4, batch_size=32, seed=0)


def _bn_statistics(model):
    return {
        layer.name: (np.asarray(layer.moving_mean), np.asarray(layer.moving_variance))
        for layer in batch_norm_layers(model)
    }


def test_precise_bn_leaves_frozen_layers_bit_identical():
    keras.utils.set_random_seed(0)
    model = build_model(TrainConfig(**TINY), (28, 28, 1), 10)
    set_base_frozen(model, True)
    before = _bn_statistics(model)
    images = tf.data.Dataset.from_tensor_slices(
        np.random.default_rng(0).uniform(0, 255, (16, 28, 28, 1)).astype("float32")
    ).batch(8)
    PreciseBatchNorm(model).update(images, num_batches=2)
    after = _bn_statistics(model)
    frozen = [name for name in before if not name.startswith("aux")]
    assert len(frozen) == 57
    for name in frozen:
        for old, new in zip(before[name], after[name], strict=True):
            np.testing.assert_array_equal(old, new, err_msg=name)
    # The new heads' BN layers are trainable: re-estimated.
    assert not np.array_equal(before["aux1_1x1_bn"][0], after["aux1_1x1_bn"][0])


@pytest.mark.parametrize("kind", ["sgd", "adam"])
def test_loaded_layers_update_at_the_base_learning_rate_scale(kind):
    inputs = keras.Input((4,))
    outputs = keras.layers.Dense(2, name="main")(keras.layers.Dense(3, name="fc")(inputs))
    model = keras.Model(inputs, outputs)
    if kind == "sgd":
        optimizer = keras.optimizers.SGD(0.1)
    else:  # Adam's step does not scale with the gradient: the rate itself must
        optimizer = fuse_adam_update(keras.optimizers.Adam(0.1, epsilon=1e-12))
    scale_base_learning_rate(optimizer, model, 0.25)
    before = [np.asarray(v) for v in model.trainable_variables]
    optimizer.apply_gradients(
        [(tf.ones_like(v), v) for v in model.trainable_variables]  # every gradient 1
    )
    steps = {v.path: before[i] - np.asarray(v) for i, v in enumerate(model.trainable_variables)}
    np.testing.assert_allclose(steps["fc/kernel"], np.full((4, 3), 0.025), rtol=1e-5)
    np.testing.assert_allclose(steps["main/kernel"], np.full((3, 2), 0.1), rtol=1e-5)


class _Interrupt(Exception):
    pass


class _ProbeFirstEpoch(keras.callbacks.Callback):
    """Records fit's accuracy, the weights and the BN statistics after epoch 1 (the
    frozen phase), then stops the run as a kill would."""

    def on_epoch_end(self, epoch, logs=None):
        self.fit_accuracy = logs["accuracy"]
        self.weights = [np.asarray(w) for w in self.model.weights]
        self.statistics = _bn_statistics(self.model)
        raise _Interrupt


@pytest.fixture(scope="module")
def source_workdir(tmp_path_factory):
    """A finished run's files, without training: config.json and model.keras (random)."""
    workdir = str(tmp_path_factory.mktemp("source"))
    config = TrainConfig(data_dir="unused", **TINY)
    keras.utils.set_random_seed(1)
    build_model(config, (28, 28, 1), 10).save(os.path.join(workdir, "model.keras"))
    write_json(os.path.join(workdir, "config.json"), as_json(config))
    return workdir


@pytest.fixture(scope="module")
def interrupted_run(source_workdir, tmp_path_factory):
    """A 2-epoch run from `source_workdir`, its first epoch frozen, killed after it."""
    folder = tmp_path_factory.mktemp("finetune")
    (folder / "fmnist").mkdir()
    fmnist = make_fashion_mnist(folder / "fmnist", n_train=64, n_test=32)
    config = TrainConfig(
        data_dir=fmnist,
        epochs=2,
        batch_size=16,
        init_weights=source_workdir,
        freeze_base_epochs=1,
        aux=False,
        augment=False,
        dropout=0.0,
        learning_rate=3e-4,
        precise_bn_images=64,
    )
    probe = _ProbeFirstEpoch()
    workdir = str(folder / "run")
    with pytest.raises(_Interrupt):
        train_and_evaluate(config, workdir, verbose=0, export=False, extra_callbacks=[probe])
    source = keras.saving.load_model(os.path.join(source_workdir, "model.keras"), compile=False)
    return config, workdir, probe, _bn_statistics(source)


def test_frozen_phase_has_no_bn_trap(interrupted_run):
    config, _, probe, theirs = interrupted_run
    # Frozen: every BN layer kept the source's statistics, bit for bit (precise BN ran
    # before the epoch's validation and left them alone).
    for name, (mean, variance) in probe.statistics.items():
        np.testing.assert_array_equal(mean, theirs[name][0], err_msg=name)
        np.testing.assert_array_equal(variance, theirs[name][1], err_msg=name)
    # The trap: fit's accuracy on the training images equals evaluate's on them.
    model = probe.model
    for variable, value in zip(model.weights, probe.weights, strict=True):
        variable.assign(value)
    train = data.load_datasets(config.data_config()).train
    evaluated = model.evaluate(train, verbose=0, return_dict=True)["accuracy"]
    assert abs(evaluated - probe.fit_accuracy) <= 0.01, (evaluated, probe.fit_accuracy)


@pytest.mark.large  # a second run of the loop (about 30 s on 2 busy cores)
def test_run_resumes_across_the_phase_boundary_and_unfreezes(interrupted_run, capsys):
    config, workdir, _, theirs = interrupted_run
    capsys.readouterr()
    metrics = train_and_evaluate(config, workdir, verbose=1, export=False)
    out = capsys.readouterr().out
    assert "epochs 1-1 are done; continuing at epoch 2 of 2" in out
    assert metrics["init_weights"]["summary"] == (
        "loaded 285 of 287 weight tensors; new: main classifier (10 classes)"
    )
    assert read_json(os.path.join(workdir, "config.json"))["preset"] == "finetune"
    # Unfrozen in epoch 2: precise BN re-estimated the loaded layers' statistics.
    final = _bn_statistics(keras.saving.load_model(os.path.join(workdir, "inference.keras")))
    assert not np.array_equal(final["conv1_bn"][0], theirs["conv1_bn"][0])


def test_finetune_preset_warms_up_then_decays_to_zero():
    from training.optim import make_optimizer
    from training.presets import get_preset

    optimizer = make_optimizer(
        get_preset("finetune"), steps_per_epoch=4, epochs=3, global_batch_size=64
    )
    assert type(optimizer) is keras.optimizers.SGD and optimizer.nesterov
    assert (optimizer.momentum, optimizer.weight_decay) == (0.9, 1e-4)
    rates = []
    for step in (0, 3, 12):  # warmup's first and last steps, the run's end
        optimizer.iterations.assign(step)
        rates.append(float(optimizer.learning_rate))
    assert rates == pytest.approx([0.00625, 0.025, 0.0], abs=1e-9)  # 0.05 at 128 -> 64
