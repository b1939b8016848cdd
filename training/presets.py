"""Optimizer recipes as named presets.

- `googlenet_paper`: SGD momentum 0.9, learning rate -4% every 8 epochs, Polyak averaging
  of the weights (Keras EMA), as in "Going deeper with convolutions", section 6.
- `inception_v3_paper`: RMSProp (rho 0.9, momentum 0.9, epsilon 1.0), learning rate 0.045
  decayed x0.94 every 2 epochs, gradient clipping at global norm 2.0, label smoothing 0.1
  ("Rethinking the Inception Architecture", section 8).
- `default`: a short schedule for small data: AdamW with cosine decay after a linear
  warmup (`keras.optimizers.schedules.CosineDecay(warmup_target=, warmup_steps=)`).
- `finetune`: the default with `--init-weights` (`training.init_weights`): SGD with
  Nesterov momentum 0.9, peak learning rate 0.05 at batch 128 (scaled linearly), weight
  decay 1e-4, one warmup epoch, cosine decay to 0, label smoothing 0.1, every layer at
  that rate (`--base-lr-scale` 1). This is the recipe of torchvision's and timm's
  fine-tuning: timm's `train.py` defaults to SGD momentum 0.9, a cosine schedule with
  warmup, label smoothing 0.1, and a rate of 0.1 per 256 images scaled linearly
  (`--lr-base 0.1 --lr-base-size 256`: 0.05 at 128); torchvision's transfer-learning
  tutorial fine-tunes every layer with SGD momentum 0.9 at 1e-3 for batch 4 (0.032 at
  128); its reference recipes train Inception with weight decay 1e-4. The rate was chosen
  on the transfer benchmark's validation images (docs/fine-tuning.md): 0.01 at 128 with
  the loaded layers at a tenth (this preset's first version) undertrained badly there.

The paper presets decay in stairs from the first step, as the papers do; Keras's schedules
give them no warmup, so `warmup_epochs` other than 0 is refused for them. Each preset
names its optimizer factory (`training.optim`), which builds the optimizer.

Example:
>>> get_preset("googlenet_paper").optimizer.__name__
'sgd_paper'
"""

from __future__ import annotations

import dataclasses

from training.keras_patches import (  # noqa: F401 (re-exported: their former home)
    decay_with_one_learning_rate,
    fuse_adam_update,
)
from training.optim import (  # noqa: F401 (make_optimizer etc. re-exported)
    OptimizerFactory,
    adamw_cosine,
    check_warmup,
    make_optimizer,
    rmsprop_paper,
    scaled_learning_rate,
    sgd_finetune,
    sgd_paper,
)


@dataclasses.dataclass(frozen=True)
class Preset:
    """A named recipe. `learning_rate` is for `reference_batch`; it scales linearly.

    Args:
        name: str. The preset's name (`--preset`).
        learning_rate: float. Peak learning rate at `reference_batch`.
        reference_batch: int. The global batch `learning_rate` is for.
        label_smoothing: float. Label smoothing of the loss.
        warmup_epochs: float. Warmup of the schedule, in epochs.
        description: str. One line for `--help`.
        optimizer: OptimizerFactory. Builds the optimizer and its schedule.
        warmup: bool. Whether the schedule takes a warmup (`--warmup-epochs`).
    """

    name: str
    learning_rate: float
    reference_batch: int
    label_smoothing: float
    warmup_epochs: float
    description: str
    optimizer: OptimizerFactory = dataclasses.field(default=adamw_cosine, repr=False)
    warmup: bool = True


PRESETS = {
    "default": Preset(
        name="default",
        learning_rate=2e-3,
        reference_batch=128,
        label_smoothing=0.1,
        warmup_epochs=1.0,
        description="AdamW, cosine decay, 1 warmup epoch",
        optimizer=adamw_cosine,
    ),
    "googlenet_paper": Preset(
        name="googlenet_paper",
        learning_rate=0.01,
        reference_batch=32,
        label_smoothing=0.0,
        warmup_epochs=0.0,
        description="SGD momentum 0.9, -4% every 8 epochs, EMA",
        optimizer=sgd_paper,
        warmup=False,
    ),
    "inception_v3_paper": Preset(
        name="inception_v3_paper",
        learning_rate=0.045,
        reference_batch=32,
        label_smoothing=0.1,
        warmup_epochs=0.0,
        description="RMSProp, x0.94 every 2 epochs, clipnorm 2",
        optimizer=rmsprop_paper,
        warmup=False,
    ),
    "finetune": Preset(
        name="finetune",
        learning_rate=0.05,
        reference_batch=128,
        label_smoothing=0.1,
        warmup_epochs=1.0,
        description="SGD Nesterov momentum 0.9, cosine decay, 1 warmup epoch, for --init-weights",
        optimizer=sgd_finetune,
    ),
}


def get_preset(name: str) -> Preset:
    """The preset called `name`.

    Raises:
        ValueError: an unknown name, listing the presets.
    """
    if name not in PRESETS:
        raise ValueError(f"unknown preset {name!r}; available presets: {sorted(PRESETS)}")
    return PRESETS[name]
