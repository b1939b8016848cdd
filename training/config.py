"""`TrainConfig`: everything a training run depends on, written to the workdir's
`config.json` and checked again when the run resumes (`training.workdir`)."""

from __future__ import annotations

import dataclasses

from keras_inception import registry
from training.batchnorm import DEFAULT_IMAGES as DEFAULT_PRECISE_BN_IMAGES
from training.presets import check_warmup, get_preset
from training.strategy import STRATEGIES


@dataclasses.dataclass(frozen=True)
class TrainConfig:
    """Everything a run depends on (written to `config.json`).

    Args:
        model: str. A registered model name (`keras_inception.list_models()`).
        dataset: str. A TFDS name, `"fashion_mnist"` or `"imagefolder"`.
        data_dir: str or None. TFDS data_dir, idx folder or image-folder root.
        image_size: int or None. Model input side; None keeps the dataset's own.
        batch_size: int. Global batch size (split across replicas).
        epochs: int. Epochs to train; with `time_budget_minutes`, the most to train.
        train_limit: int or None. Use only the first N training examples.
        val_fraction: float. Held-out fraction where the data has no validation split.
        stem: str or None. Model stem; None: "small" for images <= 64 px, else "imagenet".
        width_multiplier: float. Model width multiplier.
        min_depth: int. Smallest conv width after the multiplier.
        bottleneck_ratio: float. Scale of the 1x1 reduce convolutions.
        aux: bool. Train with the auxiliary classifiers.
        aux_loss_weight: float or None. Override the auxiliary loss weights.
        dropout: float or None. Override the model's dropout before the classifier.
        preset: str. Optimizer recipe (`training.presets.PRESETS`).
        learning_rate: float or None. Override the preset's (batch-scaled) learning rate.
        warmup_epochs: float or None. Override the preset's warmup.
        label_smoothing: float or None. Override the preset's label smoothing.
        strategy: str. "auto", "mirrored", "multiworker" or "onedevice"
            (`training.strategy.make_strategy`); auto is multiworker when `TF_CONFIG` names
            more than one worker, else mirrored.
        replicas: int or None. CPU replicas (logical devices) for MirroredStrategy.
        mixed_precision: bool. mixed_float16 on GPU, mixed_bfloat16 on CPU.
        sync_batch_norm: bool. Synchronized batch norm across replicas.
        fused_batch_norm: bool. Batch norm on TensorFlow's fused kernel (the builders'
            `fused_batch_norm`); False: Keras's own BatchNormalization.
        seed: int. Random seed for weights, data order and augmentation.
        deterministic: bool. Deterministic ops and data order.
        augment: bool. Training augmentation.
        flip: bool. Random horizontal flips in the augmentation; turn off for data whose
            mirror image is another thing (digits, text, many signs and charts).
        random_erasing: float. Probability of random erasing (Zhong et al. 2017) per
            training image, part of the augmentation; 0 turns it off.
        bn_momentum: float. Momentum of the batch-norm moving averages (the builders').
        precise_bn_images: int. Before every validation and before the final test and
            export, re-estimate every batch-norm layer's statistics over this many
            training images (`training.batchnorm`); 0 keeps the moving averages.
        time_budget_minutes: float or None. Wall-time budget of a `train_and_evaluate`
            run: train as many of `epochs` as fit, measured on this machine before
            training (`training.budget`); None trains exactly `epochs`.
    """

    model: str = "googlenet"
    dataset: str = "fashion_mnist"
    data_dir: str | None = None
    image_size: int | None = None
    batch_size: int = 128
    epochs: int = 10
    train_limit: int | None = None
    val_fraction: float = 0.1
    stem: str | None = None
    width_multiplier: float = 1.0
    min_depth: int = 16
    bottleneck_ratio: float = 1.0
    aux: bool = True
    aux_loss_weight: float | None = None
    dropout: float | None = None
    preset: str = "default"
    learning_rate: float | None = None
    warmup_epochs: float | None = None
    label_smoothing: float | None = None
    strategy: str = "auto"
    replicas: int | None = None
    mixed_precision: bool = False
    sync_batch_norm: bool = False
    fused_batch_norm: bool = True
    seed: int = 0
    deterministic: bool = False
    augment: bool = True
    flip: bool = True
    random_erasing: float = 0.0
    bn_momentum: float = 0.99
    precise_bn_images: int = DEFAULT_PRECISE_BN_IMAGES
    time_budget_minutes: float | None = None

    def __post_init__(self):
        positive = {"batch_size": self.batch_size, "epochs": self.epochs}
        for label, value in positive.items():
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ValueError(f"{label} must be a positive integer; received {value!r}")
        if self.strategy not in STRATEGIES:
            raise ValueError(
                f"strategy must be one of {list(STRATEGIES)}; received {self.strategy!r}"
            )
        if self.train_limit is not None and self.train_limit < 1:
            raise ValueError(f"train_limit must be positive; received {self.train_limit!r}")
        images = self.precise_bn_images
        if isinstance(images, bool) or not isinstance(images, int) or images < 0:
            raise ValueError(f"precise_bn_images must be an integer >= 0; received {images!r}")
        if not 0 <= self.random_erasing <= 1:
            raise ValueError(
                f"random_erasing must be a probability in [0, 1]; received {self.random_erasing!r}"
            )
        if self.random_erasing and not self.augment:
            raise ValueError(
                "random_erasing is part of the training augmentation; received "
                f"random_erasing={self.random_erasing!r} with augment=False"
            )
        budget = self.time_budget_minutes
        if budget is not None and (isinstance(budget, bool) or not budget > 0):
            raise ValueError(
                f"time_budget_minutes must be a positive number or None; received {budget!r}"
            )
        if not 0 <= self.bn_momentum < 1:
            raise ValueError(f"bn_momentum must be in [0, 1); received {self.bn_momentum!r}")
        check_warmup(get_preset(self.preset), self.warmup_epochs)
        stems = registry.stems(self.model)  # also refuses an unknown model
        if self.stem is not None and self.stem not in stems:
            raise ValueError(
                f"stem must be one of {list(stems)} for {self.model}; received {self.stem!r}"
            )
