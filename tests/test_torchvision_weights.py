"""torchvision's GoogLeNet and InceptionV3 in Keras against a live torch, at full size.

The state dicts are those of `tests/torchvision_reference.py` (random, from a numpy seed,
with torchvision's names and shapes), written as `.pth`, `.safetensors` and `.npz`;
torchvision's models run on them in a separate process. Outputs are compared at relative
1e-4 of their largest magnitude, at the default size and at an odd one, auxiliary heads
included. `tests/test_pretrained_torchvision.py` checks the same conversion in
`make test`, without torch, against committed logits at small sizes.
"""

import importlib.util
import subprocess
import sys
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
from tests.test_pretrained_torchvision import assert_matches, relative_error  # noqa: E402

HERE = Path(__file__).parent


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


def test_googlenet_safetensors_at_odd_size_with_aux_heads(ref):
    with pytest.warns(UserWarning, match="auxiliary heads .* are not trained"):
        model = ki.from_torchvision(
            "googlenet", ref / "googlenet.safetensors", aux_logits=True, input_shape=(227, 227, 3)
        )
    expected = outputs(ref, "googlenet")
    y = model.predict(expected["x227"], verbose=0)
    assert sorted(y) == ["aux1", "aux2", "main"]
    for key in y:
        assert_matches(y[key], expected[f"{key}227"], f"googlenet {key} at 227")


def test_googlenet_transform_input_at_any_size(ref):
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


def test_inception_v3_npz_at_299_and_odd_size(ref):
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


def test_cli_reads_pth_and_the_printed_call_loads(ref, tmp_path, capsys):
    output = tmp_path / "googlenet.weights.h5"
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)  # untrained aux heads
        status = cli.main(
            ["torchvision", str(ref / "googlenet.pth"), "-o", str(output), "--aux-logits"]
        )
    captured = capsys.readouterr()
    assert status == 0, captured.err
    assert "skipped 59 source tensors: num_batches_tracked x59" in captured.err
    namespace = {}
    exec(captured.out, namespace)  # the code a user pastes
    expected = outputs(ref, "googlenet")
    y = namespace["model"].predict(expected["x224"], verbose=0)
    for key in ("main", "aux1", "aux2"):
        assert_matches(y[key], expected[f"{key}224"], f"googlenet {key} at 224 via the CLI")


@pytest.mark.parametrize("file", ["googlenet.pth", "googlenet.safetensors"])
def test_truncated_file_gets_one_line_error_naming_it(ref, tmp_path, file):
    path = tmp_path / file
    with open(ref / file, "rb") as f:
        path.write_bytes(f.read(1 << 20))
    with pytest.raises(ValueError) as info:
        ki.from_torchvision(file.split(".")[0], path)
    assert str(path) in str(info.value) and "\n" not in str(info.value)
