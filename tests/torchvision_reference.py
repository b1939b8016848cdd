"""Reference outputs of torchvision's GoogLeNet and InceptionV3 with random weights.

Run in its own process (`python tests/torchvision_reference.py OUTDIR`): torch and
TensorFlow in one process crash after a torch forward pass (two OpenMP runtimes).

For each network, from a fixed seed: He-initialized convolutions and dense layers, and
batch norm gamma, beta, running mean and running variance randomized, so that outputs
are far from zero. Writes to OUTDIR:
- `{name}.pth`, `.safetensors`, `.npz`: the same state dict in the `FORMATS` of each;
- `{name}_outputs.npz`: inputs `x{size}` (NHWC) and, in eval mode, outputs `main{size}`
  and of each auxiliary head `{aux}{size}` (torchvision runs them only in training, so
  they are called on the tapped feature maps), and `main_transformed{size}` with
  `transform_input=True`.
"""

import sys
from pathlib import Path

import numpy as np
import torch
import torchvision
from safetensors.torch import save_file

SIZES = {"googlenet": (224, 227), "inception_v3": (299, 355)}
# The state dict file formats written (each file is 50-110 MB).
FORMATS = {"googlenet": (".pth", ".safetensors"), "inception_v3": (".npz",)}
TRANSFORMED_SIZE = {"googlenet": 227, "inception_v3": 299}
# Auxiliary head -> (module whose output it reads, head module name).
AUX_TAPS = {
    "googlenet": {"aux1": ("inception4a", "aux1"), "aux2": ("inception4d", "aux2")},
    "inception_v3": {"aux": ("Mixed_6e", "AuxLogits")},
}


def randomize(model: torch.nn.Module, seed: int) -> torch.nn.Module:
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for module in model.modules():
            if isinstance(module, torch.nn.Conv2d | torch.nn.Linear):
                torch.nn.init.kaiming_normal_(module.weight, generator=generator)
                if module.bias is not None:
                    module.bias.copy_(0.1 * torch.randn(module.bias.shape, generator=generator))
            elif isinstance(module, torch.nn.BatchNorm2d):
                n = module.num_features
                module.weight.copy_(0.5 + torch.rand(n, generator=generator))
                module.bias.copy_(0.2 * torch.randn(n, generator=generator))
                module.running_mean.copy_(0.2 * torch.randn(n, generator=generator))
                module.running_var.copy_(0.5 + torch.rand(n, generator=generator))
                module.num_batches_tracked.fill_(1000)
    return model.eval()


def build(name: str) -> torch.nn.Module:
    if name == "googlenet":
        model = torchvision.models.googlenet(aux_logits=True, init_weights=False)
    else:
        model = torchvision.models.inception_v3(aux_logits=True, init_weights=False)
    return randomize(model, seed=0)


def main(out: Path) -> None:
    torch.manual_seed(0)
    out.mkdir(parents=True, exist_ok=True)
    for name, sizes in SIZES.items():
        model = build(name)
        state = {key: value.contiguous() for key, value in model.state_dict().items()}
        for suffix in FORMATS[name]:
            path = out / f"{name}{suffix}"
            if suffix == ".pth":
                torch.save(state, path)
            elif suffix == ".safetensors":
                save_file(state, str(path))
            else:
                np.savez(path, **{key: value.numpy() for key, value in state.items()})

        features = {}
        for aux, (tap, _) in AUX_TAPS[name].items():
            getattr(model, tap).register_forward_hook(
                lambda module, inputs, output, aux=aux, store=features: store.__setitem__(
                    aux, output
                )
            )
        outputs = {}
        rng = np.random.default_rng(1)
        for size in sizes:
            x = rng.uniform(-2.0, 2.0, size=(2, size, size, 3)).astype("float32")
            nchw = torch.from_numpy(x).permute(0, 3, 1, 2).contiguous()
            with torch.no_grad():
                outputs[f"x{size}"] = x
                outputs[f"main{size}"] = model(nchw).numpy()
                for aux, (_, head) in AUX_TAPS[name].items():
                    outputs[f"{aux}{size}"] = getattr(model, head)(features[aux]).numpy()
                if size == TRANSFORMED_SIZE[name]:
                    model.transform_input = True
                    outputs[f"main_transformed{size}"] = model(nchw).numpy()
                    model.transform_input = False
        np.savez(out / f"{name}_outputs.npz", **outputs)


if __name__ == "__main__":
    main(Path(sys.argv[1]))
