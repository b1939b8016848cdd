"""`TrainConfig`: everything a training run depends on, written to the workdir's
`config.json` and checked again when the run resumes (`training.workdir`).

Each field carries its help text, its rule and its choices (`training.fields.option`):
the same metadata validates the config and generates `train`'s and `tune`'s flags
(`training.cli`), so the command line's defaults are `TrainConfig()`'s.
"""

from __future__ import annotations

import dataclasses

from keras_inception import list_models, registry
from keras_inception.layers import ConvStyle
from training.batchnorm import DEFAULT_IMAGES as DEFAULT_PRECISE_BN_IMAGES
from training.data_config import MIN_IMAGE_SIZE, DataConfig, data_option
from training.fields import (
    FRACTION,
    INT,
    NONNEGATIVE,
    NONNEGATIVE_INT,
    NUMBER,
    POSITIVE,
    POSITIVE_INT,
    TEXT,
    ConfigError,
    check_fields,
    option,
)
from training.optim import check_warmup
from training.placement import STRATEGIES
from training.presets import PRESETS, get_preset

_WIDTH_FIELDS = ("width_multiplier", "bottleneck_ratio", "min_depth")


def _all_stems() -> list[str]:
    return sorted({stem for name in list_models() for stem in registry.stems(name)})


def _preset_help() -> str:
    return "; ".join(f"{p.name}: {p.description}" for p in PRESETS.values())


@dataclasses.dataclass(frozen=True)
class TrainConfig:
    """Everything a run depends on (written to `config.json`).

    Every field's meaning is its `help` metadata, which `python -m training train --help`
    prints with its default (`training.fields`). In brief: the model and its widths
    (`model`, `stem`, `width_multiplier`, `min_depth`, `bottleneck_ratio`, `specs`,
    `aux`, `dropout`, `fused_batch_norm`, `sync_batch_norm`, `bn_momentum`), the data
    (`dataset`, `data_dir`, `image_size`, `train_limit`, `val_fraction`, `augment`,
    `flip`, `random_erasing`), the optimization (`batch_size`, `epochs`, `preset`,
    `learning_rate`, `warmup_epochs`, `label_smoothing`, `ema_momentum`, `aux_loss_weight`,
    `mixed_precision`, `precise_bn_images`, `time_budget_minutes`), the starting
    weights (`init_weights`, `freeze_base_epochs`, `base_lr_scale`), the placement
    (`strategy`, `replicas`) and the randomness (`seed`, `deterministic`).

    Raises:
        training.fields.ConfigError: a value breaks its field's rule, or two values do
            not go together (a ValueError naming the fields and values).

    Example:
    >>> TrainConfig(epochs=2, width_multiplier=0.25).epochs
    2
    """

    model: str = option("googlenet", "model name", choices=list_models)
    dataset: str = option(
        "fashion_mnist",
        "a TFDS name (cifar10, imagenette, imagenet2012, ...), fashion_mnist (offline from "
        "idx files) or imagefolder (root/<class>/<images>)",
        rule=TEXT,
    )
    data_dir: str | None = option(
        None, "TFDS data_dir, idx-file folder or image-folder root", rule=TEXT
    )
    image_size: int | None = data_option(
        "image_size", None, f"model input side, at least {MIN_IMAGE_SIZE} (None: the data's own)"
    )
    batch_size: int = data_option("batch_size", 128, "global batch size (split across replicas)")
    epochs: int = option(
        10,
        "epochs to train; with --time-budget-minutes, the most to train. A larger value on "
        "a finished run's workdir continues it",
        rule=POSITIVE_INT,
    )
    train_limit: int | None = data_option(
        "train_limit", None, "use only the first N training examples"
    )
    val_fraction: float = data_option(
        "val_fraction", 0.1, "held-out fraction of train where the data has no validation split"
    )
    stem: str | None = option(
        None,
        "model stem (None: small for images <= 64 px, else imagenet; small_pool: googlenet "
        "only, the small stem and a 3x3/2 max pool)",
        choices=_all_stems,
    )
    width_multiplier: float = option(
        1.0, "scale every conv width: max(int(w * m), --min-depth)", rule=POSITIVE
    )
    min_depth: int = option(16, "smallest conv width", rule=POSITIVE_INT)
    bottleneck_ratio: float = option(1.0, "scale of the 1x1 reduce convolutions", rule=POSITIVE)
    specs: str | None = option(
        None,
        "a width table (JSON, keras_inception.save_specs), e.g. the tuner's best_specs.json: "
        "its widths are final, so --width-multiplier, --bottleneck-ratio and --min-depth "
        "stay at their defaults",
        rule=TEXT,
    )
    aux: bool = option(True, "train with the auxiliary classifiers")
    aux_loss_weight: float | None = option(
        None, "override the auxiliary heads' loss weight", rule=NONNEGATIVE
    )
    dropout: float | None = option(
        None, "override the model's dropout before the classifier", rule=FRACTION
    )
    preset: str | None = option(
        None,
        _preset_help() + " (None: finetune with --init-weights, else default)",
        choices=lambda: sorted(PRESETS),
    )
    learning_rate: float | None = option(
        None, "override the preset's (batch-scaled) peak learning rate", rule=POSITIVE
    )
    warmup_epochs: float | None = option(
        None, "override the preset's warmup (epochs)", rule=NONNEGATIVE
    )
    label_smoothing: float | None = option(
        None, "override the preset's label smoothing", rule=FRACTION
    )
    ema_momentum: float | None = option(
        None,
        "keep an exponential moving average of the weights (Keras's optimizer EMA: average "
        "= m * average + (1 - m) * weights after each step) and evaluate, save and export "
        "it in place of the last weights; the epochs' validation still uses the last "
        "weights (None: the preset's, 0.999 for googlenet_paper, none for the others; 0: off)",
        rule=FRACTION,
    )
    strategy: str = option(
        "auto",
        "auto: multiworker when TF_CONFIG names more than one worker, else mirrored; "
        "mirrored: the GPUs (or --replicas logical CPUs) of this machine; multiworker: "
        "MultiWorkerMirroredStrategy over the hosts of TF_CONFIG (run the same command on "
        "each); onedevice: one GPU or the CPU",
        choices=STRATEGIES,
    )
    replicas: int | None = option(
        None,
        "on CPU, split the CPU into N logical devices for MirroredStrategy (GPUs: all "
        "visible are used)",
        rule=POSITIVE_INT,
    )
    mixed_precision: bool = option(
        False, "mixed_float16 on GPU, mixed_bfloat16 on CPU (final layers stay float32)"
    )
    sync_batch_norm: bool = option(False, "synchronized batch norm across replicas")
    fused_batch_norm: bool = option(
        True,
        "batch norm on TensorFlow's fused kernel (--no-fused-batch-norm: Keras's own "
        "BatchNormalization); saved files hold plain BatchNormalization either way",
    )
    seed: int = option(0, "seed of weights, data order, hold-out and augmentation", rule=INT)
    deterministic: bool = option(False, "deterministic ops and data order")
    augment: bool = option(True, "training augmentation")
    flip: bool = option(
        True,
        "random horizontal flips in the augmentation, and mirror images in flip/ten-crop "
        "evaluation; --no-flip for data whose mirror image is something else: digits, "
        "text, many signs",
    )
    random_erasing: float = data_option(
        "random_erasing",
        0.0,
        "probability of erasing a random rectangle (2-40% of the image) of each training "
        "image, Zhong et al. 2017 (0: off)",
    )
    bn_momentum: float = option(
        0.99,
        "momentum of the batch-norm moving averages, in [0, 1) (0.99: a horizon of about "
        "100 steps)",
        rule=NUMBER,  # its range: keras_inception.layers.ConvStyle, the one check
    )
    precise_bn_images: int = option(
        DEFAULT_PRECISE_BN_IMAGES,
        "before every validation and the final test, re-estimate the batch-norm statistics "
        "over this many training images with the current weights; 0 keeps the moving "
        "averages",
        rule=NONNEGATIVE_INT,
    )
    init_weights: str | None = option(
        None,
        "start from trained weights: a training workdir, a .keras file, a .weights.h5 from "
        "python -m keras_inception.convert, torchvision:FILE or slim:FILE|DIR. The "
        "architecture is the source's; the classifiers are new (training.init_weights)",
        rule=TEXT,
    )
    freeze_base_epochs: int = option(
        0,
        "with --init-weights: train only the new classifiers for the first N epochs, every "
        "other layer frozen and in inference mode (its batch norm keeps the source's "
        "statistics), then all layers",
        rule=NONNEGATIVE_INT,
    )
    base_lr_scale: float = option(
        1.0,
        "with --init-weights: the learning rate of the loaded layers, as a fraction of the "
        "classifiers' (the schedule's); e.g. 0.1 to move pretrained features slowly",
        rule=POSITIVE,
    )
    time_budget_minutes: float | None = option(
        None,
        "wall-time budget: train as many of --epochs as fit, measured on this machine "
        "before training (the schedule is made for that many; plan.json in the workdir)",
        rule=POSITIVE,
    )

    def __post_init__(self):
        check_fields(self)
        if self.preset is None:  # frozen: the resolved name is what config.json records
            object.__setattr__(self, "preset", "finetune" if self.init_weights else "default")
        if self.init_weights is None:
            for name in ("freeze_base_epochs", "base_lr_scale"):
                value = getattr(self, name)
                if value != TrainConfig.__dataclass_fields__[name].default:
                    raise ConfigError(
                        {name: value, "init_weights": None}, "needs init_weights (--init-weights)"
                    )
        if self.freeze_base_epochs > self.epochs:
            raise ConfigError(
                {"freeze_base_epochs": self.freeze_base_epochs, "epochs": self.epochs},
                "must be at most epochs",
            )
        self.data_config()  # the data values: validated by DataConfig alone
        try:  # the model's own check of the momentum, before anything is built
            ConvStyle(bn_momentum=self.bn_momentum)
        except ValueError as err:
            raise ConfigError({"bn_momentum": self.bn_momentum}, "must be in [0, 1)") from err
        if self.specs is not None:
            changed = {
                name: getattr(self, name)
                for name in _WIDTH_FIELDS
                if getattr(self, name) != TrainConfig.__dataclass_fields__[name].default
            }
            if changed:
                raise ConfigError(
                    {"specs": self.specs, **changed},
                    "holds final widths (after the tuner's width multiplier, bottleneck "
                    "ratio and min depth); leave those at their defaults",
                )
        try:
            check_warmup(get_preset(self.preset), self.warmup_epochs)
        except ValueError as err:
            raise ConfigError(
                {"warmup_epochs": self.warmup_epochs, "preset": self.preset},
                "is only for the default preset (the others decay in stairs from the first step)",
            ) from err
        stems = registry.stems(self.model)
        if self.stem is not None and self.stem not in stems:
            raise ConfigError(
                {"stem": self.stem, "model": self.model}, f"must be one of {list(stems)}"
            )

    def data_config(self) -> DataConfig:
        """The `DataConfig` of this run's data (`training.runkit.load_data` loads it).

        Raises:
            training.fields.ConfigError: a data value, or combination, it refuses.
        """
        return DataConfig(
            dataset=self.dataset,
            data_dir=self.data_dir,
            image_size=self.image_size,
            batch_size=self.batch_size,
            train_limit=self.train_limit,
            val_fraction=self.val_fraction,
            seed=self.seed,
            deterministic=self.deterministic,
            augment=self.augment,
            flip=self.flip,
            random_erasing=self.random_erasing,
        )
