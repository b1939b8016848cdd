"""torchvision's GoogLeNet and InceptionV3 state dicts in Keras, without torch.

The state dicts are random, from a numpy seed, with torchvision's tensor names and shapes
(`tests/torchvision_reference.py`); torchvision's own logits on them, at the smallest
input sizes our builders take, are committed in `tests/data/torchvision_logits.npz`
(that script's docstring says how to regenerate them with torch). Outputs are compared at
relative 1e-4 of their largest magnitude. `tests/test_torchvision_weights.py`
(`make test-large`) compares against a live torch at full size.
"""

import sys
import types

import keras
import numpy as np
import pytest

import keras_inception as ki
from keras_inception import convert as cli
from keras_inception.pretrained import torchvision as tv
from tests.torchvision_reference import (
    GOLDEN_PATH,
    golden_key,
    images,
    random_state_dict,
    state_shapes,
)

RTOL = 1e-4


@pytest.fixture(scope="module")
def golden():
    with np.load(GOLDEN_PATH) as data:
        return {key: data[key] for key in data.files}


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    """The random state dicts, saved as `.npz` (no torch needed to read them)."""
    folder = tmp_path_factory.mktemp("torchvision_npz")
    for name in ("googlenet", "inception_v3"):
        np.savez(folder / f"{name}.npz", **random_state_dict(name))
    return folder


@pytest.fixture(autouse=True)
def without_torch(monkeypatch):
    """`import torch` fails: nothing here may need it."""
    monkeypatch.setitem(sys.modules, "torch", None)


def relative_error(actual, expected) -> float:
    expected = np.asarray(expected)
    return float(np.max(np.abs(np.asarray(actual) - expected)) / np.max(np.abs(expected)))


def assert_matches(actual, expected, what: str) -> None:
    assert np.asarray(actual).shape == expected.shape, what
    assert np.max(np.abs(expected)) > 1.0, f"{what}: reference outputs too close to zero"
    error = relative_error(actual, expected)
    assert error < RTOL, f"{what}: max |keras - torch| / max |torch| = {error:.2e}"


# --- outputs equal torchvision's ---------------------------------------------------------


def test_state_dict_has_torchvisions_names_and_counts():
    shapes = state_shapes("googlenet")
    assert len(shapes) == 364 and len(state_shapes("inception_v3")) == 580
    assert shapes["inception4b.branch2.1.conv.weight"] == (224, 112, 3, 3)
    assert shapes["aux1.fc1.weight"] == (1024, 2048)
    for name, count in (("googlenet", 13_004_888), ("inception_v3", 27_161_264)):
        shapes = state_shapes(name)
        params = sum(int(np.prod(s)) for k, s in shapes.items() if ".running_" not in k)
        params -= sum(1 for k in shapes if k.endswith("num_batches_tracked"))
        assert params == count  # torchvision's num_params with auxiliary heads


def test_googlenet_with_aux_heads_equals_torchvision(files, golden):
    with pytest.warns(UserWarning, match="auxiliary heads .* are not trained") as caught:
        model = ki.from_torchvision(
            "googlenet", files / "googlenet.npz", aux_logits=True, input_shape=(64, 64, 3)
        )
    assert caught[0].filename == __file__  # the warning points at the caller
    columns = golden["columns"]
    y = model(images(64), training=False)
    assert sorted(y) == ["aux1", "aux2", "main"]
    for key in y:
        expected = golden[golden_key("googlenet", 64, key)]
        assert_matches(np.asarray(y[key])[:, columns], expected, f"googlenet {key} at 64")


def test_googlenet_transform_input_at_an_odd_size(files, golden):
    model = ki.from_torchvision(
        "googlenet", files / "googlenet.npz", transform_input=True, input_shape=(None, None, 3)
    )
    y = np.asarray(model(images(67), training=False))[:, golden["columns"]]
    assert_matches(y, golden[golden_key("googlenet", 67, "main_transformed")], "transformed")


def test_keras_same_padding_is_a_negative_control(files, golden):
    """Keras "same" pads conv1 by 2 and 3 at 64 (torch: 3 and 3): the outputs differ."""
    options = {**tv.TORCHVISION_OPTIONS["googlenet"], "padding": "same"}
    model = ki.build_googlenet(**options, input_shape=(64, 64, 3), classifier_activation=None)
    tv.CONVERTER.fill("googlenet", model, random_state_dict("googlenet"), path="g.npz")
    y = np.asarray(model(images(64), training=False))[:, golden["columns"]]
    expected = golden[golden_key("googlenet", 64, "main")]
    assert relative_error(y, expected) > 1e-2
    with pytest.raises(AssertionError, match="max |keras - torch|"):
        assert_matches(y, expected, "googlenet with 'same' conv1")


def test_inception_v3_equals_torchvision_at_two_sizes(files, golden):
    model, skipped = tv.convert(
        "inception_v3", files / "inception_v3.npz", input_shape=(None, None, 3)
    )
    assert tv.CONVERTER.summarize(skipped) == "num_batches_tracked x96, AuxLogits.* x12"
    for size in (75, 86):
        y = np.asarray(model(images(size), training=False))[:, golden["columns"]]
        assert_matches(y, golden[golden_key("inception_v3", size, "main")], f"v3 at {size}")


# --- strictness and errors ---------------------------------------------------------------


@pytest.fixture(scope="module")
def pair():
    """A small Keras GoogLeNet in torchvision's layout with auxiliary heads, and the
    random state dict."""
    model = ki.build_googlenet(
        **tv.builder_kwargs("googlenet", aux_logits=True, input_shape=(64, 64, 3))
    )
    return model, random_state_dict("googlenet")


def _assign(model, state, aux=True):
    return tv.CONVERTER.fill("googlenet", model, state, path="f.pth", aux_logits=aux)


def test_every_tensor_used_or_skipped_and_every_weight_assigned(pair):
    model, state = pair
    skipped = _assign(model, state)
    assert skipped == sorted(k for k in state if k.endswith("num_batches_tracked"))
    assert len(skipped) == 59 and tv.CONVERTER.summarize(skipped) == "num_batches_tracked x59"
    np.testing.assert_array_equal(
        model.get_layer("conv1_conv").kernel.numpy(),
        state["conv1.conv.weight"].transpose(2, 3, 1, 0),
    )
    # aux fc1 rows: torch flattens channels-first (c, h, w), Keras channels-last (h, w, c).
    fc1 = model.get_layer("aux1_fc").kernel.numpy()
    h, w, c = 1, 2, 5
    np.testing.assert_array_equal(
        fc1[(h * 4 + w) * 128 + c], state["aux1.fc1.weight"][:, c * 16 + h * 4 + w]
    )


def test_missing_and_unexpected_tensors_are_named(pair):
    model, state = pair
    before = model.get_layer("conv1_conv").kernel.numpy().copy()
    missing = {k: v for k, v in state.items() if k != "inception5b.branch4.1.bn.running_var"}
    missing["conv1.conv.weight"] = -state["conv1.conv.weight"]
    with pytest.raises(
        ValueError, match="tensor 'inception5b.branch4.1.bn.running_var'.*is missing"
    ):
        _assign(model, missing)
    # nothing was assigned
    np.testing.assert_array_equal(model.get_layer("conv1_conv").kernel.numpy(), before)
    with pytest.raises(ValueError, match=r"tensor 'extra.weight' \(3,\) has no place"):
        _assign(model, {**state, "extra.weight": np.zeros(3, "float32")})
    with pytest.raises(ValueError, match="NaN or infinite"):
        _assign(model, {**state, "fc.bias": np.full(1000, np.nan, "float32")})


def test_wrong_shape_names_the_file_and_tensor(pair, monkeypatch):
    _, state = pair
    bad = {**state, "inception4b.branch2.1.conv.weight": np.zeros((224, 112, 5, 5), "float32")}
    monkeypatch.setattr(tv, "read_state_dict", lambda path: bad)
    with pytest.raises(ValueError) as info:
        ki.from_torchvision("googlenet", "dl/googlenet-1378be20.pth", input_shape=(64, 64, 3))
    message = str(info.value)
    assert message.startswith("'dl/googlenet-1378be20.pth': tensor")
    assert "'inception4b.branch2.1.conv.weight' has shape (224, 112, 5, 5)" in message
    assert "'inception4b_3x3_conv/kernel' of shape (3, 3, 112, 224)" in message
    assert "\n" not in message


def test_aux_logits_needs_aux_tensors_and_top(pair, monkeypatch):
    _, state = pair
    no_aux = {k: v for k, v in state.items() if not k.startswith("aux")}
    monkeypatch.setattr(tv, "read_state_dict", lambda path: no_aux)
    with pytest.raises(ValueError, match=r"no auxiliary head tensors \(aux1.\*\); pass aux_logits"):
        ki.from_torchvision("googlenet", "g.pth", aux_logits=True)
    with pytest.raises(ValueError, match="aux_logits=True needs include_top=True"):
        ki.from_torchvision("googlenet", "g.pth", aux_logits=True, include_top=False)


def test_the_other_networks_file_is_named(files):
    with pytest.raises(ValueError, match="it looks like a torchvision googlenet state dict"):
        ki.from_torchvision("inception_v3", files / "googlenet.npz")


def test_truncated_file_gets_one_line_error_naming_it(files, tmp_path):
    path = tmp_path / "googlenet.npz"
    path.write_bytes((files / "googlenet.npz").read_bytes()[: 1 << 20])
    with pytest.raises(ValueError) as info:
        ki.from_torchvision("googlenet", path)
    assert str(path) in str(info.value) and "\n" not in str(info.value)


def test_unknown_model_missing_file_and_unknown_suffix(tmp_path):
    with pytest.raises(ValueError, match=r"unknown torchvision model 'resnet50'.*'googlenet'"):
        ki.from_torchvision("resnet50", tmp_path / "googlenet.npz")
    with pytest.raises(FileNotFoundError, match="nothing.pth"):
        ki.from_torchvision("googlenet", tmp_path / "nothing.pth")
    (tmp_path / "weights.ckpt").write_bytes(b"x")
    with pytest.raises(ValueError, match=r"unknown state dict file type .*weights.ckpt"):
        ki.from_torchvision("googlenet", tmp_path / "weights.ckpt")
    (tmp_path / "g.pth").write_bytes(b"x")
    with pytest.raises(ImportError, match=r"needs PyTorch.*\.safetensors.*\.npz"):
        ki.from_torchvision("googlenet", tmp_path / "g.pth")


def test_builder_kwargs_are_the_builder_with_torchvision_options():
    assert tv.builder_kwargs("inception_v3", aux_logits=True, classes=10) == {
        "bn_scale": True,
        "count_include_pad": True,
        "aux_pool": "torch",
        "dropout": 0.5,
        "aux_logits": True,
        "classes": 10,
        "classifier_activation": None,
    }
    assert tv.builder_kwargs("googlenet", include_top=False, pooling="avg", transform_input=True)[
        "transform_input"
    ]
    with pytest.raises(ValueError, match=r"unknown option 'include_background' for torchvision"):
        tv.builder_kwargs("googlenet", include_background=False)


# --- command line ------------------------------------------------------------------------


def test_cli_writes_weights_that_the_printed_call_loads(
    files, golden, tmp_path, capsys, monkeypatch
):
    # The pasted code below checks what the rebuild check would (one model build less).
    monkeypatch.setattr(cli, "_check_rebuilt", lambda builder, kwargs, model: None)
    output = tmp_path / "googlenet.weights.h5"
    argv = ["torchvision", str(files / "googlenet.npz"), "-o", str(output)]
    assert cli.main([*argv, "--input-shape", "64,64,3"]) == 0
    captured = capsys.readouterr()
    summary = "skipped 77 source tensors: num_batches_tracked x59, aux1.* x9, aux2.* x9"
    assert summary in captured.err
    assert "padding='torch'" in captured.out and str(output) in captured.out
    namespace = {}
    exec(captured.out, namespace)  # the code a user pastes
    y = np.asarray(namespace["model"](images(64), training=False))[:, golden["columns"]]
    assert_matches(y, golden[golden_key("googlenet", 64, "main")], "googlenet via the CLI")


def test_convert_file_returns_the_builder_and_its_keyword_arguments(files, tmp_path):
    output = str(tmp_path / "g" / "googlenet.weights.h5")
    builder, kwargs, skipped = cli.convert_file(
        "torchvision", files / "googlenet.npz", output, input_shape=(64, 64, 3), check=False
    )
    assert builder is ki.build_googlenet
    assert kwargs == {
        **tv.TORCHVISION_OPTIONS["googlenet"],
        "input_shape": (64, 64, 3),
        "classes": 1000,
        "classifier_activation": None,
        "weights": output,
    }
    assert len(skipped) == 77 and (tmp_path / "g" / "googlenet.weights.h5").is_file()


def test_cli_runs_any_source_module_by_its_converter(tmp_path, monkeypatch, capsys):
    """A third source is one small module: a `Converter` subclass named `CONVERTER`."""
    from keras_inception.pretrained.converter import Converter

    state = {"s/dense/kernel": np.ones((4, 3), "float32"), "s/dense/bias": np.zeros(3, "float32")}
    state["global_step"] = np.array(7)

    def build_tiny(classes, classifier_activation=None, input_shape=None, weights=None):
        inputs = keras.Input((4,))
        model = keras.Model(inputs, keras.layers.Dense(classes, name="head")(inputs))
        if weights is not None:
            model.load_weights(weights)
        return model

    class Tiny(Converter):
        label = "tiny"
        builders = {"inception_v1": build_tiny}
        options = {"inception_v1": {}}
        markers = {"inception_v1": "s/"}
        classifier_key = {"inception_v1": "s/dense/kernel"}
        classes_axis = -1
        tensor_names = {"dense": {"kernel": "s/{}/kernel", "bias": "s/{}/bias"}}
        extra_options = {"include_background": True}

        def read(self, path):
            return state

        def scope(self, name, layer_name):
            return "dense"

        def ignored(self, key):
            return key == "global_step"

    fake = types.ModuleType("fake_slim")
    fake.CONVERTER = Tiny()
    monkeypatch.setitem(sys.modules, "fake_slim", fake)
    monkeypatch.setitem(cli.SOURCES, "slim", ("fake_slim", cli.SOURCES["slim"][1]))
    output = tmp_path / "v1.weights.h5"
    argv = ["slim", "ckpt/inception_v1.ckpt", "-o", str(output), "--no-background"]
    assert cli.main(argv) == 0
    captured = capsys.readouterr()
    assert "skipped 1 source tensors: global_step x1" in captured.err
    assert captured.out.endswith(
        f"model = keras_inception.build_tiny(classes=3, classifier_activation=None, "
        f"weights={str(output)!r})\n"
    )
    # a builder whose model does not hold the converted weights fails the rebuild check
    monkeypatch.setattr(Tiny, "builders", {"inception_v1": lambda **kwargs: build_tiny(3)})
    with pytest.raises(RuntimeError, match="does not reproduce the converted model"):
        cli.convert_file("slim", "inception_v1.ckpt", str(tmp_path / "again.weights.h5"))
    monkeypatch.setitem(cli.SOURCES, "slim", ("keras_inception.pretrained.nothing", ()))
    with pytest.raises(ValueError, match="'slim' converter .* is not part of this installation"):
        cli.source_module("slim")


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["torchvision", "resnet50.pth", "-o", "x.weights.h5"], "cannot tell the model"),
        (["torchvision", "googlenet.pth", "-o", "x.h5"], "must end in .weights.h5"),
        (["torchvision", "googlenet-missing.pth", "-o", "x.weights.h5"], "not found"),
    ],
)
def test_cli_reports_bad_arguments_in_one_line(argv, message, capsys, tmp_path):
    argv = [str(tmp_path / a) if a.endswith(".pth") else a for a in argv]
    assert cli.main(argv) == 2
    err = capsys.readouterr().err
    assert message in err and err.count("\n") == 1, err


def test_cli_guesses_names_from_published_file_names():
    assert cli.guess_name("torchvision", "googlenet-1378be20.pth") == "googlenet"
    assert cli.guess_name("torchvision", "dl/inception_v3_google-0cc3c7bd.pth") == "inception_v3"
    assert cli.guess_name("slim", "inception_v1.ckpt") == "inception_v1"
    with pytest.raises(ValueError, match="unknown source 'caffe'"):
        cli.source_module("caffe")
