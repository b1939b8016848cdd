"""torchvision's GoogLeNet and InceptionV3 with random weights from a numpy seed, and
torchvision's own outputs on them.

Without torch (the default suite imports this module): `state_shapes(name)` lists the
tensor names and shapes of torchvision's state dict, written from torchvision's model
definitions (`googlenet.py`, `inception.py`); `random_state_dict(name)` fills them from a
numpy seed (He-normal convolutions and dense layers, randomized batch norm gamma, beta,
running mean and variance, so that outputs are far from zero); `images(size)` makes the
inputs (NHWC, in [-2, 2]).

With torch and torchvision, in a process of its own (torch and TensorFlow in one process
crash after a torch forward pass: two OpenMP runtimes). torchvision's models load these
state dicts with `load_state_dict(strict=True)`, which checks every name and shape above.

- Regenerate the committed golden logits, `tests/data/torchvision_logits.npz` (a few KB:
  every 10th class of the outputs of `GOLDEN`), with any Python that has torch and
  torchvision (`make install-torch` installs them into `.venv`):

      .venv/bin/python tests/torchvision_reference.py --golden

  Keys: `{name}_{size}_{output}` (output: main, main_transformed, aux1, aux2) and
  `columns` (the class indices kept). `tests/test_pretrained_torchvision.py` checks our
  conversion of the same numpy state dicts against them, without torch.
- Write the full-size references of `make test-large` (`tests/test_torchvision_weights.py`):

      python tests/torchvision_reference.py OUTDIR

  `{name}.pth`, `.safetensors` or `.npz` (`FORMATS`; 50-110 MB each) and
  `{name}_outputs.npz`: inputs `x{size}`, outputs `main{size}`, each auxiliary head's
  `{aux}{size}`, and `main_transformed{size}` with `transform_input=True`.

torchvision runs the auxiliary heads only in training; here they are called on the
feature maps they read, in eval mode.
"""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np

SEED = 0
GOLDEN_PATH = Path(__file__).parent / "data" / "torchvision_logits.npz"
# (name, size, transform_input): the smallest inputs our builders take (GoogLeNet's
# auxiliary heads need 64; InceptionV3's valid padding 75), and an odd size each.
GOLDEN = (
    ("googlenet", 64, False),
    ("googlenet", 67, True),
    ("inception_v3", 75, False),
    ("inception_v3", 86, False),
)
COLUMNS = np.arange(0, 1000, 10)
BATCH = 2

# Full-size references (make test-large).
SIZES = {"googlenet": (224, 227), "inception_v3": (299, 355)}
FORMATS = {"googlenet": (".pth", ".safetensors"), "inception_v3": (".npz",)}
TRANSFORMED_SIZE = {"googlenet": 227, "inception_v3": 299}
# Auxiliary head -> (module whose output it reads, head module name).
AUX_TAPS = {
    "googlenet": {"aux1": ("inception4a", "aux1"), "aux2": ("inception4d", "aux2")},
    "inception_v3": {"aux": ("Mixed_6e", "AuxLogits")},
}

# torchvision's Inception(in_channels, ch1x1, ch3x3red, ch3x3, ch5x5red, ch5x5, pool_proj).
GOOGLENET_BLOCKS = {
    "inception3a": (192, 64, 96, 128, 16, 32, 32),
    "inception3b": (256, 128, 128, 192, 32, 96, 64),
    "inception4a": (480, 192, 96, 208, 16, 48, 64),
    "inception4b": (512, 160, 112, 224, 24, 64, 64),
    "inception4c": (512, 128, 128, 256, 24, 64, 64),
    "inception4d": (512, 112, 144, 288, 32, 64, 64),
    "inception4e": (528, 256, 160, 320, 32, 128, 128),
    "inception5a": (832, 256, 160, 320, 32, 128, 128),
    "inception5b": (832, 384, 192, 384, 48, 128, 128),
}


def _conv(shapes: dict, name: str, cin: int, cout: int, kh: int, kw: int | None = None) -> None:
    """torchvision's BasicConv2d: a conv without bias and a BatchNorm2d."""
    shapes[f"{name}.conv.weight"] = (cout, cin, kh, kw or kh)
    for key in ("weight", "bias", "running_mean", "running_var"):
        shapes[f"{name}.bn.{key}"] = (cout,)
    shapes[f"{name}.bn.num_batches_tracked"] = ()


def _linear(shapes: dict, name: str, cin: int, cout: int) -> None:
    shapes[f"{name}.weight"] = (cout, cin)
    shapes[f"{name}.bias"] = (cout,)


def _googlenet(classes: int) -> dict:
    shapes: dict = {}
    _conv(shapes, "conv1", 3, 64, 7)
    _conv(shapes, "conv2", 64, 64, 1)
    _conv(shapes, "conv3", 64, 192, 3)
    for block, (cin, c1, r3, c3, r5, c5, pool) in GOOGLENET_BLOCKS.items():
        _conv(shapes, f"{block}.branch1", cin, c1, 1)
        _conv(shapes, f"{block}.branch2.0", cin, r3, 1)
        _conv(shapes, f"{block}.branch2.1", r3, c3, 3)
        _conv(shapes, f"{block}.branch3.0", cin, r5, 1)
        _conv(shapes, f"{block}.branch3.1", r5, c5, 3)  # torchvision's known 3x3 "bug"
        _conv(shapes, f"{block}.branch4.1", cin, pool, 1)
    for aux, cin in (("aux1", 512), ("aux2", 528)):
        _conv(shapes, f"{aux}.conv", cin, 128, 1)
        _linear(shapes, f"{aux}.fc1", 2048, 1024)
        _linear(shapes, f"{aux}.fc2", 1024, classes)
    _linear(shapes, "fc", 1024, classes)
    return shapes


def _inception_v3(classes: int) -> dict:
    shapes: dict = {}
    for name, cin, cout, kernel in (
        ("Conv2d_1a_3x3", 3, 32, 3),
        ("Conv2d_2a_3x3", 32, 32, 3),
        ("Conv2d_2b_3x3", 32, 64, 3),
        ("Conv2d_3b_1x1", 64, 80, 1),
        ("Conv2d_4a_3x3", 80, 192, 3),
    ):
        _conv(shapes, name, cin, cout, kernel)
    for block, cin, pool in (("Mixed_5b", 192, 32), ("Mixed_5c", 256, 64), ("Mixed_5d", 288, 64)):
        for name, a, b, k in (
            ("branch1x1", cin, 64, 1),
            ("branch5x5_1", cin, 48, 1),
            ("branch5x5_2", 48, 64, 5),
            ("branch3x3dbl_1", cin, 64, 1),
            ("branch3x3dbl_2", 64, 96, 3),
            ("branch3x3dbl_3", 96, 96, 3),
            ("branch_pool", cin, pool, 1),
        ):
            _conv(shapes, f"{block}.{name}", a, b, k)
    _conv(shapes, "Mixed_6a.branch3x3", 288, 384, 3)
    _conv(shapes, "Mixed_6a.branch3x3dbl_1", 288, 64, 1)
    _conv(shapes, "Mixed_6a.branch3x3dbl_2", 64, 96, 3)
    _conv(shapes, "Mixed_6a.branch3x3dbl_3", 96, 96, 3)
    for block, c7 in (("Mixed_6b", 128), ("Mixed_6c", 160), ("Mixed_6d", 160), ("Mixed_6e", 192)):
        for name, a, b, kh, kw in (
            ("branch1x1", 768, 192, 1, 1),
            ("branch7x7_1", 768, c7, 1, 1),
            ("branch7x7_2", c7, c7, 1, 7),
            ("branch7x7_3", c7, 192, 7, 1),
            ("branch7x7dbl_1", 768, c7, 1, 1),
            ("branch7x7dbl_2", c7, c7, 7, 1),
            ("branch7x7dbl_3", c7, c7, 1, 7),
            ("branch7x7dbl_4", c7, c7, 7, 1),
            ("branch7x7dbl_5", c7, 192, 1, 7),
            ("branch_pool", 768, 192, 1, 1),
        ):
            _conv(shapes, f"{block}.{name}", a, b, kh, kw)
    _conv(shapes, "AuxLogits.conv0", 768, 128, 1)
    _conv(shapes, "AuxLogits.conv1", 128, 768, 5)
    _linear(shapes, "AuxLogits.fc", 768, classes)
    for name, a, b, kh, kw in (
        ("branch3x3_1", 768, 192, 1, 1),
        ("branch3x3_2", 192, 320, 3, 3),
        ("branch7x7x3_1", 768, 192, 1, 1),
        ("branch7x7x3_2", 192, 192, 1, 7),
        ("branch7x7x3_3", 192, 192, 7, 1),
        ("branch7x7x3_4", 192, 192, 3, 3),
    ):
        _conv(shapes, f"Mixed_7a.{name}", a, b, kh, kw)
    for block, cin in (("Mixed_7b", 1280), ("Mixed_7c", 2048)):
        for name, a, b, kh, kw in (
            ("branch1x1", cin, 320, 1, 1),
            ("branch3x3_1", cin, 384, 1, 1),
            ("branch3x3_2a", 384, 384, 1, 3),
            ("branch3x3_2b", 384, 384, 3, 1),
            ("branch3x3dbl_1", cin, 448, 1, 1),
            ("branch3x3dbl_2", 448, 384, 3, 3),
            ("branch3x3dbl_3a", 384, 384, 1, 3),
            ("branch3x3dbl_3b", 384, 384, 3, 1),
            ("branch_pool", cin, 192, 1, 1),
        ):
            _conv(shapes, f"{block}.{name}", a, b, kh, kw)
    _linear(shapes, "fc", 2048, classes)
    return shapes


def state_shapes(name: str, classes: int = 1000) -> dict[str, tuple[int, ...]]:
    """Tensor name -> shape of torchvision's `googlenet` or `inception_v3` state dict
    (`aux_logits=True`)."""
    return {"googlenet": _googlenet, "inception_v3": _inception_v3}[name](classes)


def random_state_dict(name: str, seed: int = SEED) -> dict[str, np.ndarray]:
    """A state dict of torchvision's `name` with random values from a numpy seed."""
    rng = np.random.default_rng(seed)
    state = {}
    for key, shape in state_shapes(name).items():
        last = key.rsplit(".", 1)[-1]
        if last == "num_batches_tracked":
            value = np.array(1000, "int64")
        elif ".bn." in key:
            if last in ("weight", "running_var"):
                value = 0.5 + rng.random(shape, dtype=np.float32)
            else:
                value = 0.2 * rng.standard_normal(shape, dtype=np.float32)
        elif last == "weight":  # conv and linear: He normal
            std = np.sqrt(2.0 / np.prod(shape[1:]))
            value = (std * rng.standard_normal(shape, dtype=np.float32)).astype("float32")
        else:
            value = 0.1 * rng.standard_normal(shape, dtype=np.float32)
        state[key] = np.asarray(value)
    return state


def images(size: int, batch: int = BATCH) -> np.ndarray:
    """Input images `(batch, size, size, 3)` in [-2, 2], from a seed per size."""
    rng = np.random.default_rng([1, size])
    return rng.uniform(-2.0, 2.0, size=(batch, size, size, 3)).astype("float32")


def golden_key(name: str, size: int, output: str) -> str:
    return f"{name}_{size}_{output}"


# --- with torch ---------------------------------------------------------------------------


def torch_model(name: str):
    """torchvision's model `name` with `random_state_dict(name)`, strictly, in eval mode."""
    import torch
    import torchvision

    build = {
        "googlenet": torchvision.models.googlenet,
        "inception_v3": torchvision.models.inception_v3,
    }
    model = build[name](aux_logits=True, init_weights=False)
    state = {key: torch.from_numpy(value) for key, value in random_state_dict(name).items()}
    model.load_state_dict(state, strict=True)  # every name and shape of state_shapes
    return model.eval()


def run(model, name: str, x: np.ndarray, *, transform_input: bool = False, aux: bool = True):
    """torchvision's outputs on NHWC images `x`: main, and each auxiliary head's."""
    import torch

    features = {}
    hooks = [
        getattr(model, tap).register_forward_hook(
            lambda module, inputs, output, head=head: features.__setitem__(head, output)
        )
        for head, (tap, _) in AUX_TAPS[name].items()
    ]
    model.transform_input = transform_input
    with torch.no_grad():
        nchw = torch.from_numpy(x).permute(0, 3, 1, 2).contiguous()
        outputs = {"main": model(nchw).numpy()}
        for head, (_, module) in AUX_TAPS[name].items() if aux else ():
            outputs[head] = getattr(model, module)(features[head]).numpy()
    model.transform_input = False
    for hook in hooks:
        hook.remove()
    return outputs


def write_golden(path: Path = GOLDEN_PATH) -> None:
    arrays = {"columns": COLUMNS}
    for name in dict.fromkeys(case[0] for case in GOLDEN):
        model = torch_model(name)
        for case_name, size, transform_input in GOLDEN:
            if case_name != name:
                continue
            # InceptionV3's auxiliary head needs 299x299 (make test-large compares it).
            aux = name == "googlenet" and not transform_input
            outputs = run(model, name, images(size), transform_input=transform_input, aux=aux)
            if transform_input:
                outputs = {"main_transformed": outputs["main"]}
            for output, value in outputs.items():
                arrays[golden_key(name, size, output)] = value[:, COLUMNS]
    path.parent.mkdir(parents=True, exist_ok=True)
    np.savez_compressed(path, **arrays)


def write_references(out: Path) -> None:
    import torch
    from safetensors.torch import save_file

    out.mkdir(parents=True, exist_ok=True)
    for name, sizes in SIZES.items():
        state = random_state_dict(name)
        for suffix in FORMATS[name]:
            path = out / f"{name}{suffix}"
            if suffix == ".pth":
                torch.save({k: torch.from_numpy(v) for k, v in state.items()}, path)
            elif suffix == ".safetensors":
                save_file({k: torch.from_numpy(v) for k, v in state.items()}, str(path))
            else:
                np.savez(path, **state)
        model = torch_model(name)
        outputs = {}
        for size in sizes:
            x = images(size)
            outputs[f"x{size}"] = x
            for output, value in run(model, name, x).items():
                outputs[f"{output}{size}"] = value
            if size == TRANSFORMED_SIZE[name]:
                transformed = run(model, name, x, transform_input=True)["main"]
                outputs[f"main_transformed{size}"] = transformed
        np.savez(out / f"{name}_outputs.npz", **outputs)


if __name__ == "__main__":
    if sys.argv[1:] == ["--golden"]:
        write_golden()
    elif len(sys.argv) == 2:
        write_references(Path(sys.argv[1]))
    else:
        sys.exit(__doc__)
