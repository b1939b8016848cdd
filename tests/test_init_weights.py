"""training/init_weights.py: every SOURCE form of `train --init-weights`, the architecture
taken from the source, the strict load, the new classifiers and the channel adaptation.

Sources are made without training: a workdir is a config.json and a model.keras of
random weights; torchvision files are `tests/torchvision_reference.py`'s random state
dict (numpy, no torch). The whole `train` loop from a source runs in test_finetune.py.
"""

import os
import shutil

import keras
import numpy as np
import pytest

from keras_inception.convert import convert_file
from tests.torchvision_reference import random_state_dict
from training.config import TrainConfig
from training.fields import ConfigError
from training.init_weights import (
    adapt_input_kernel,
    builder_overrides,
    load_backbone,
    read_source,
    resolve_config,
)
from training.model_setup import build_model
from training.workdir import as_json, write_json

TINY = dict(width_multiplier=0.125, min_depth=4, batch_size=32, seed=0)


@pytest.fixture(scope="module")
def source_workdir(tmp_path_factory):
    """A finished run's files, without training: config.json and model.keras (random)."""
    workdir = str(tmp_path_factory.mktemp("source"))
    config = TrainConfig(data_dir="unused", **TINY)
    keras.utils.set_random_seed(1)
    model = build_model(config, (28, 28, 1), 10)
    model.save(os.path.join(workdir, "model.keras"))
    write_json(os.path.join(workdir, "config.json"), as_json(config))
    return workdir


@pytest.fixture(scope="module")
def torchvision_npz(tmp_path_factory):
    state = random_state_dict("googlenet")
    path = str(tmp_path_factory.mktemp("tv") / "googlenet.npz")
    np.savez(path, **state)
    return path, state


def _target(source, image_shape, classes, config=None):
    config = resolve_config(config or TrainConfig(**TINY), source)
    overrides = builder_overrides(config, source, image_shape[-1])
    model = build_model(config, image_shape, classes, **overrides)
    return config, model, load_backbone(model, source, overrides)


def _weight(model, layer, index=0):
    return np.asarray(model.get_layer(layer).weights[index])


def test_workdir_source_loads_every_backbone_weight(source_workdir):
    source = read_source(source_workdir)
    assert source.kind == "workdir" and source.preprocessing == "inception"
    config, model, summary = _target(source, (28, 28, 1), 4, TrainConfig(batch_size=8))
    # The architecture is the source's, not the defaults'.
    assert (config.stem, config.width_multiplier, config.min_depth) == ("small", 0.125, 4)
    assert summary.text() == (
        "loaded 285 of 305 weight tensors; new: main classifier (4 classes), aux1, aux2"
    )
    for layer in ("conv1_conv", "inception5b_pool_proj_bn", "inception4e_3x3_conv"):
        for ours, theirs in zip(
            model.get_layer(layer).weights, source.model.get_layer(layer).weights, strict=True
        ):
            np.testing.assert_array_equal(np.asarray(ours), np.asarray(theirs))
    assert _weight(model, "main").shape[-1] == 4  # a new head, for the data's classes
    assert summary.as_metrics()["loaded"] == 285


def test_keras_file_in_a_workdir_is_that_runs(source_workdir):
    source = read_source(os.path.join(source_workdir, "model.keras"))
    assert source.kind == "workdir" and source.architecture["width_multiplier"] == 0.125


@pytest.mark.large  # builds a full-width GoogLeNet for every stem and option set
def test_keras_file_alone_default_widths_are_found(source_workdir, tmp_path):
    lone = str(tmp_path / "default.keras")
    build_model(TrainConfig(), (32, 32, 3), 5, include_preprocessing=None).save(lone)
    source = read_source(lone)
    assert (source.kind, source.architecture["stem"], source.builder_options) == (
        "keras",
        "small",
        {},
    )
    _, model, summary = _target(source, (32, 32, 3), 2, TrainConfig(aux=False, batch_size=8))
    assert summary.text().endswith("new: main classifier (2 classes)")
    # Outside its workdir other widths cannot be told: refused, naming the way out.
    lone = str(tmp_path / "lone.keras")
    shutil.copy(os.path.join(source_workdir, "model.keras"), lone)
    with pytest.raises(ValueError, match="pass its training workdir instead"):
        read_source(lone)


def test_torchvision_npz_and_converted_weights_file(torchvision_npz, tmp_path):
    path, state = torchvision_npz
    source = read_source(f"torchvision:{path}")
    assert source.architecture["model"] == "googlenet"
    assert source.architecture["stem"] == "imagenet"
    assert source.builder_options["padding"] == "torch"
    assert source.builder_options["transform_input"] is True
    assert source.preprocessing == "torch"
    _, model, summary = _target(source, (32, 32, 3), 3, TrainConfig(aux=False, batch_size=8))
    assert summary.text() == "loaded 285 of 287 weight tensors; new: main classifier (3 classes)"
    assert model.get_layer("transform_input") is not None
    # torch's (out, in, kh, kw) conv1 kernel, in Keras's (kh, kw, in, out)
    torch_kernel = state["conv1.conv.weight"].transpose(2, 3, 1, 0)
    np.testing.assert_array_equal(_weight(model, "conv1_conv"), torch_kernel)

    # The same weights through the convert CLI's file and the JSON written beside it.
    weights = str(tmp_path / "googlenet.weights.h5")
    convert_file("torchvision", path, weights, check=False, transform_input=True)
    assert os.path.isfile(str(tmp_path / "googlenet.architecture.json"))
    converted = read_source(weights)
    assert converted.kind == "weights" and converted.preprocessing == "torch"
    assert converted.architecture == source.architecture
    assert converted.builder_options == source.builder_options
    _, model, _ = _target(converted, (32, 32, 3), 3, TrainConfig(aux=False, batch_size=8))
    np.testing.assert_array_equal(_weight(model, "conv1_conv"), torch_kernel)


def test_three_to_one_channel_adaptation_sums_the_kernel(torchvision_npz):
    path, state = torchvision_npz
    source = read_source(f"torchvision:{path}")
    _, model, summary = _target(source, (32, 32, 1), 3, TrainConfig(aux=False, batch_size=8))
    summed = state["conv1.conv.weight"].sum(axis=1, keepdims=True).transpose(2, 3, 1, 0)
    np.testing.assert_allclose(_weight(model, "conv1_conv"), summed, rtol=1e-6, atol=1e-7)
    assert summary.channels.startswith("conv1_conv adapted from 3 to 1 input channels (summed")
    assert "conv1_conv adapted from 3 to 1" in summary.text()
    # Grey images: no transform_input (RGB only); [-1, 1] is what it and torch's give.
    assert summary.preprocessing == "inception"
    assert "transform_input" not in [layer.name for layer in model.layers]


def test_adapt_input_kernel_golden_values():
    kernel = np.arange(6, dtype="float32").reshape(1, 1, 3, 2)  # in 0: (0, 1), 1: (2, 3) ...
    np.testing.assert_array_equal(adapt_input_kernel(kernel, 1)[0, 0], [[6, 9]])
    grey = np.array([[[[3.0, 6.0]]]], "float32")
    np.testing.assert_array_equal(adapt_input_kernel(grey, 3)[0, 0], [[1, 2]] * 3)
    with pytest.raises(ValueError, match="of 2 input channels to 3"):
        adapt_input_kernel(np.ones((1, 1, 2, 1)), 3)


def test_architecture_flags_that_contradict_the_source_are_refused(torchvision_npz):
    source = read_source(f"torchvision:{torchvision_npz[0]}")
    with pytest.raises(ConfigError) as err:
        resolve_config(TrainConfig(model="inception_v3"), source)
    assert str(err.value) == (
        f"model contradicts init_weights 'torchvision:{torchvision_npz[0]}', whose model is "
        "'googlenet'; received 'inception_v3'"
    )
    assert err.value.for_flags().startswith("--model contradicts")
    with pytest.raises(ConfigError, match="whose stem is 'imagenet'; received 'small'"):
        resolve_config(TrainConfig(stem="small"), source)
    # The defaults are not a contradiction: they become the source's values.
    assert resolve_config(TrainConfig(), source).stem == "imagenet"


def test_a_shape_mismatch_names_the_layer(source_workdir):
    source = read_source(source_workdir)
    wider = dict(TINY, width_multiplier=0.25)  # built without the source's widths
    model = build_model(TrainConfig(**wider), (28, 28, 1), 10)
    with pytest.raises(
        ValueError,
        match=r"layer 'conv1_conv': kernel has shape \(3, 3, 1, 16\) in the model and \(3, 3, 1, 8\)",
    ):
        load_backbone(model, source)


def test_config_defaults_and_checks_of_the_new_fields():
    assert TrainConfig().preset == "default"
    assert TrainConfig(init_weights="w").preset == "finetune"
    assert TrainConfig(init_weights="w", preset="default").preset == "default"
    with pytest.raises(ConfigError, match="freeze_base_epochs needs init_weights"):
        TrainConfig(freeze_base_epochs=1)
    with pytest.raises(ConfigError, match="freeze_base_epochs must be at most epochs"):
        TrainConfig(init_weights="w", freeze_base_epochs=3, epochs=2)
    with pytest.raises(FileNotFoundError, match="'missing.keras' does not exist"):
        read_source("missing.keras")


def test_slim_checkpoint_source_never_leaks_its_1001_class_head(tmp_path):
    tf = pytest.importorskip("tensorflow")
    from keras_inception.pretrained.slim import CONVERTER

    # A name-based V2 checkpoint, as TF-Slim's Saver writes, from a model's random weights.
    model = CONVERTER.build("inception_v1", include_top=True)
    plan = CONVERTER.plan("inception_v1", model)
    state = {}
    for variable in model.weights:
        source = plan[variable.path]
        if source is None or source.fill is not None:  # gamma: Slim's BN has none
            continue
        value = np.asarray(variable)
        if variable.path.startswith("predictions/") and value.ndim == 2:
            value = value.reshape(1, 1, *value.shape)  # Slim's logits are a 1x1 conv
        state[source.key] = value
    assert state["InceptionV1/Logits/Conv2d_0c_1x1/weights"].shape[-1] == 1001
    prefix = str(tmp_path / "inception_v1.ckpt")
    names = sorted(state)
    tf.raw_ops.SaveV2(
        prefix=prefix,
        tensor_names=names,
        shape_and_slices=[""] * len(names),
        tensors=[state[n] for n in names],
    )
    source = read_source(f"slim:{prefix}")
    assert (source.architecture["model"], source.preprocessing) == ("googlenet", "inception")
    assert source.builder_options == {"branch5x5_kernel": 3, "pool5_kernel": 2}
    _, target, summary = _target(source, (32, 32, 3), 3, TrainConfig(aux=False, batch_size=8))
    assert summary.text().endswith("new: main classifier (3 classes)")
    assert _weight(target, "predictions").shape == (1024, 3)
    np.testing.assert_array_equal(
        _weight(target, "conv1_conv"), state["InceptionV1/Conv2d_1a_7x7/weights"]
    )


def test_cli_refuses_a_contradicting_flag_in_one_line(torchvision_npz, tmp_path, capsys):
    from training.cli import main

    workdir = str(tmp_path / "run")
    argv = ["train", "--init-weights", f"torchvision:{torchvision_npz[0]}", "--stem", "small"]
    assert main([*argv, "--workdir", workdir]) == 2
    err = capsys.readouterr().err
    assert err == (
        f"error: --stem contradicts init_weights 'torchvision:{torchvision_npz[0]}', whose "
        "stem is 'imagenet'; received 'small'\n"
    )
    assert not os.path.exists(workdir)  # a refused command leaves no trace
