"""torchvision's GoogLeNet and InceptionV3 state dicts in Keras: outputs equal torch's.

Reference models come from torchvision with random weights from a fixed seed (He
convolutions, randomized batch norm), run in a separate process
(`tests/torchvision_reference.py`). Outputs are compared at relative 1e-4 of their
largest magnitude, at the default size and at an odd one, auxiliary heads included.
"""

import importlib.util
import subprocess
import sys
import types
import warnings
from pathlib import Path

import numpy as np
import pytest

# torch is not in `make test`'s install (a 5.5 GB build): these run in `make test-large`,
# which installs the `torch` extra.
pytestmark = pytest.mark.large

pytest.importorskip("torch", reason="torch builds the reference models and reads .pth files")
pytest.importorskip("safetensors", reason="safetensors writes the torch-free state dict")
# torchvision is imported only in the reference process: imported here, after TensorFlow,
# its triton import crashes the interpreter.
if importlib.util.find_spec("torchvision") is None:
    pytest.skip("torchvision builds the reference models", allow_module_level=True)

import keras_inception as ki  # noqa: E402
from keras_inception import convert as cli  # noqa: E402
from keras_inception.pretrained import common  # noqa: E402
from keras_inception.pretrained import torchvision as tv  # noqa: E402

HERE = Path(__file__).parent
RTOL = 1e-4


@pytest.fixture(scope="module")
def ref(tmp_path_factory):
    """Paths of the state dicts and the reference outputs (see torchvision_reference.py)."""
    out = tmp_path_factory.mktemp("torchvision")
    result = subprocess.run(
        [sys.executable, str(HERE / "torchvision_reference.py"), str(out)],
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    return out


def outputs(ref: Path, name: str) -> dict:
    with np.load(ref / f"{name}_outputs.npz") as data:
        return {key: data[key] for key in data.files}


def relative_error(actual, expected) -> float:
    expected = np.asarray(expected)
    return float(np.max(np.abs(np.asarray(actual) - expected)) / np.max(np.abs(expected)))


def assert_matches(actual, expected, what: str) -> None:
    assert np.asarray(actual).shape == expected.shape, what
    assert np.max(np.abs(expected)) > 1.0, f"{what}: reference outputs too close to zero"
    error = relative_error(actual, expected)
    assert error < RTOL, f"{what}: max |keras - torch| / max |torch| = {error:.2e}"


@pytest.fixture
def without_torch(monkeypatch):
    """`import torch` fails: the .safetensors and .npz paths must not need it."""
    monkeypatch.setitem(sys.modules, "torch", None)


# --- outputs equal torch's --------------------------------------------------------------


def test_googlenet_safetensors_without_torch_at_odd_size_with_aux_heads(ref, without_torch):
    with pytest.warns(UserWarning, match="auxiliary heads .* are not trained"):
        model = ki.from_torchvision(
            "googlenet", ref / "googlenet.safetensors", aux_logits=True, input_shape=(227, 227, 3)
        )
    expected = outputs(ref, "googlenet")
    y = model.predict(expected["x227"], verbose=0)
    assert sorted(y) == ["aux1", "aux2", "main"]
    for key in y:
        assert_matches(y[key], expected[f"{key}227"], f"googlenet {key} at 227")


def test_googlenet_transform_input_at_any_size(ref, without_torch):
    model = ki.from_torchvision(
        "googlenet",
        ref / "googlenet.safetensors",
        transform_input=True,
        input_shape=(None, None, 3),
    )
    expected = outputs(ref, "googlenet")
    y = model.predict(expected["x227"], verbose=0)
    assert_matches(y, expected["main_transformed227"], "googlenet transform_input at 227")
    assert relative_error(y, expected["main227"]) > 1e-2  # transform_input changes outputs


@pytest.fixture(scope="module")
def pair(ref):
    """The reference GoogLeNet state dict, and a Keras GoogLeNet in torchvision's layout
    but for Keras "same" padding (for the negative control and the assignment rules)."""
    options = {**tv.TORCHVISION_OPTIONS["googlenet"], "padding": "same"}
    model = ki.build_googlenet(**options, aux_logits=True, classifier_activation=None)
    return model, common.read_state_dict(ref / "googlenet.safetensors")


def _assign(model, state, aux=True):
    return common.assign(
        model,
        state,
        tv.plan("googlenet", model),
        path="f.pth",
        skip=lambda key: key.endswith("num_batches_tracked") or (not aux and "aux" in key),
        description="a torchvision googlenet state dict",
    )


def test_keras_same_padding_on_conv1_is_a_negative_control(ref, pair):
    """Keras "same" pads conv1 by 2 and 3 at 224 (torch: 3 and 3): the outputs differ."""
    model, state = pair
    _assign(model, state)
    expected = outputs(ref, "googlenet")
    y = model.predict(expected["x224"], verbose=0)["main"]
    assert relative_error(y, expected["main224"]) > 1e-2
    with pytest.raises(AssertionError, match="max |keras - torch|"):
        assert_matches(y, expected["main224"], "googlenet with 'same' conv1")


def test_inception_v3_npz_without_torch_at_299_and_odd_size(ref, without_torch):
    model = ki.from_torchvision(
        "inception_v3", ref / "inception_v3.npz", input_shape=(None, None, 3)
    )
    expected = outputs(ref, "inception_v3")
    for size in (299, 355):
        y = model.predict(expected[f"x{size}"], verbose=0)
        assert_matches(y, expected[f"main{size}"], f"inception_v3 at {size}")


def test_inception_v3_aux_head_at_odd_size(ref):
    model = ki.from_torchvision(
        "inception_v3", ref / "inception_v3.npz", aux_logits=True, input_shape=(355, 355, 3)
    )
    expected = outputs(ref, "inception_v3")
    y = model.predict(expected["x355"], verbose=0)
    assert sorted(y) == ["aux", "main"]
    for key in y:
        assert_matches(y[key], expected[f"{key}355"], f"inception_v3 {key} at 355")


# --- command line -----------------------------------------------------------------------


def test_cli_writes_weights_that_the_printed_call_loads(ref, tmp_path, capsys):
    output = tmp_path / "googlenet.weights.h5"
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)  # untrained aux heads
        status = cli.main(
            ["torchvision", str(ref / "googlenet.pth"), "-o", str(output), "--aux-logits"]
        )
    captured = capsys.readouterr()
    assert status == 0, captured.err
    assert "skipped 59 source tensors: num_batches_tracked x59" in captured.err
    assert "padding='torch'" in captured.out and str(output) in captured.out
    namespace = {}
    exec(captured.out, namespace)  # the code a user pastes
    model = namespace["model"]
    expected = outputs(ref, "googlenet")
    y = model.predict(expected["x224"], verbose=0)
    for key in ("main", "aux1", "aux2"):
        assert_matches(y[key], expected[f"{key}224"], f"googlenet {key} at 224 via the CLI")


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


def test_cli_runs_any_source_module_by_its_interface(tmp_path, monkeypatch, capsys):
    """The slim subcommand imports its module by name and uses only the shared interface."""
    fake = types.ModuleType("fake_slim")
    call = (
        "keras_inception.build_googlenet(stem='small', input_shape=(16, 16, 1), classes=3, "
        "width_multiplier=0.25)"
    )
    received = {}

    def convert(name, path, **kwargs):
        received.update(kwargs, name=name)
        return eval(call, {"keras_inception": ki}), ["global_step", "Logits.bias"]

    fake.convert = convert
    fake.builder_call = lambda name, **kwargs: call
    monkeypatch.setitem(sys.modules, "fake_slim", fake)
    monkeypatch.setitem(cli.SOURCES, "slim", ("fake_slim", cli.SOURCES["slim"][1]))
    output = tmp_path / "v1.weights.h5"
    argv = ["slim", "ckpt/inception_v1.ckpt", "-o", str(output), "--no-background"]
    assert cli.main(argv) == 0
    captured = capsys.readouterr()
    assert received == {
        "name": "inception_v1",
        "aux_logits": False,
        "input_shape": None,
        "classifier_activation": None,
        "include_background": False,
    }
    assert f"weights={str(output)!r})" in captured.out
    assert "skipped 2 source tensors: global_step x1, Logits.* x1" in captured.err
    namespace = {}
    exec(captured.out, namespace)
    assert namespace["model"].output.shape[-1] == 3

    monkeypatch.setitem(cli.SOURCES, "slim", ("keras_inception.pretrained.nothing", ()))
    with pytest.raises(ValueError, match="'slim' converter .* is not part of this installation"):
        cli.source_module("slim")


def test_cli_guesses_names_from_published_file_names():
    assert cli.guess_name("torchvision", "googlenet-1378be20.pth") == "googlenet"
    assert cli.guess_name("torchvision", "dl/inception_v3_google-0cc3c7bd.pth") == "inception_v3"
    assert cli.guess_name("slim", "inception_v1.ckpt") == "inception_v1"
    with pytest.raises(ValueError, match="unknown source 'caffe'"):
        cli.source_module("caffe")


# --- strictness and errors --------------------------------------------------------------


def test_unknown_model_name_is_refused_by_name(ref):
    with pytest.raises(ValueError, match=r"unknown torchvision model 'resnet50'.*'googlenet'"):
        ki.from_torchvision("resnet50", ref / "googlenet.safetensors")


def test_missing_file_and_unknown_suffix(tmp_path):
    with pytest.raises(FileNotFoundError, match="nothing.pth"):
        ki.from_torchvision("googlenet", tmp_path / "nothing.pth")
    (tmp_path / "weights.ckpt").write_bytes(b"x")
    with pytest.raises(ValueError, match=r"unknown state dict file type .*weights.ckpt"):
        ki.from_torchvision("googlenet", tmp_path / "weights.ckpt")


@pytest.mark.parametrize("file", ["googlenet.pth", "googlenet.safetensors", "inception_v3.npz"])
def test_truncated_file_gets_one_line_error_naming_it(ref, tmp_path, file):
    path = tmp_path / file
    with open(ref / file, "rb") as f:
        path.write_bytes(f.read(1 << 20))
    with pytest.raises(ValueError) as info:
        ki.from_torchvision(file.split(".")[0], path)
    assert str(path) in str(info.value) and "\n" not in str(info.value)


def test_the_other_networks_file_is_named(ref):
    with pytest.raises(ValueError, match="it looks like a torchvision googlenet state dict"):
        ki.from_torchvision("inception_v3", ref / "googlenet.safetensors")


def test_every_tensor_used_or_skipped_and_every_weight_assigned(pair):
    model, state = pair
    skipped = _assign(model, state)
    assert skipped == sorted(k for k in state if k.endswith("num_batches_tracked"))
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
        ki.from_torchvision("googlenet", "dl/googlenet-1378be20.pth")
    message = str(info.value)
    assert message.startswith("'dl/googlenet-1378be20.pth': tensor")
    assert "'inception4b.branch2.1.conv.weight' has shape (224, 112, 5, 5)" in message
    assert "'inception4b_3x3_conv/kernel' of shape (3, 3, 112, 224)" in message
    assert "\n" not in message


def test_aux_logits_needs_aux_tensors(pair, monkeypatch):
    _, state = pair
    no_aux = {k: v for k, v in state.items() if not k.startswith("aux")}
    monkeypatch.setattr(tv, "read_state_dict", lambda path: no_aux)
    with pytest.raises(ValueError, match=r"no auxiliary head tensors \(aux1.\*\); pass aux_logits"):
        ki.from_torchvision("googlenet", "g.pth", aux_logits=True)


def test_builder_call_is_the_builder_with_torchvision_options():
    call = tv.builder_call("inception_v3", aux_logits=True, classes=10)
    assert call == (
        "keras_inception.build_inception_v3(bn_scale=True, count_include_pad=True, "
        "aux_pool='torch', dropout=0.5, aux_logits=True, classes=10, "
        "classifier_activation=None)"
    )
