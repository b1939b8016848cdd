"""`DataConfig`: what `training.data.load_datasets` loads and how it feeds it.

The data values (image size, batch size, limits, fractions, probabilities) are validated
here and only here: each field carries its rule (`training.fields.option`), and
`TrainConfig` declares its data fields with the same rules (`data_option`) and checks its
combinations by building its `DataConfig`.
"""

from __future__ import annotations

import dataclasses
from typing import Any

from training.fields import (
    FRACTION,
    INT,
    POSITIVE_INT,
    PROBABILITY,
    TEXT,
    ConfigError,
    check_fields,
    option,
)

# The smallest image side the data pipeline makes (the models have their own minimum,
# checked when the run builds its model, before anything is written).
MIN_IMAGE_SIZE = 8


@dataclasses.dataclass(frozen=True)
class DataConfig:
    """What to load and how to feed it.

    Args:
        dataset: str. A TFDS name (``"cifar10"``, ``"imagenette"``, ``"imagenet2012"``, ...),
            ``"fashion_mnist"`` or ``"imagefolder"``.
        data_dir: str or None. TFDS ``data_dir``, the folder with the four Fashion-MNIST idx
            files, or the image-folder root. Defaults to None.
        image_size: int or None. Model input side, at least `MIN_IMAGE_SIZE`. None: the
            native size (28 for Fashion-MNIST, 32 for CIFAR, 224 for image folders and
            large TFDS sets).
        channels: int or None. 1 or 3; None keeps the native channels.
        batch_size: int. Global batch size. Defaults to 128.
        train_limit: int or None. Use only the first N training examples.
        val_fraction: float. Held-out fraction of train when the source has no validation
            split, stratified by class (scikit-learn's `train_test_split`). Defaults to 0.1.
        seed: int. Seed of the held-out split, shuffling and augmentation. Defaults to 0.
        deterministic: bool. Same seed, same batches (order and augmentation). Defaults to
            False (random augmentation seeds, parallel map may reorder).
        augment: bool. Random crop/flip/colour on train. Defaults to True.
        flip: bool. Random horizontal flips in that augmentation. Turn them off for data
            whose mirror image is something else: digits, text, many signs. Defaults to
            True.
        pca_lighting: bool. AlexNet PCA lighting noise on train (RGB only). Defaults to False.
        random_erasing: float. Probability of random erasing (Zhong et al. 2017) per
            training image; needs `augment`. Defaults to 0 (off).
        cache: bool or None. Cache decoded (or, for large images, encoded) examples before
            augmentation; None caches when they fit comfortably in memory.

    Raises:
        training.fields.ConfigError: a value breaks its rule, or two do not go together (a
            ValueError naming the fields and values).

    Example:
    >>> DataConfig("cifar10", train_limit=0)
    Traceback (most recent call last):
    ...
    training.fields.ConfigError: train_limit must be a positive integer; received 0
    """

    dataset: str = dataclasses.field(metadata={"help": "dataset name", "rule": TEXT})
    data_dir: str | None = option(None, "data folder", rule=TEXT)
    image_size: int | None = option(
        None, f"model input side, at least {MIN_IMAGE_SIZE}", rule=POSITIVE_INT
    )
    channels: int | None = option(None, "1 or 3 channels", rule=INT)
    batch_size: int = option(128, "global batch size", rule=POSITIVE_INT)
    train_limit: int | None = option(
        None, "use only the first N training examples", rule=POSITIVE_INT
    )
    val_fraction: float = option(0.1, "held-out fraction of train", rule=FRACTION)
    seed: int = option(0, "seed", rule=INT)
    deterministic: bool = option(False, "deterministic data order")
    augment: bool = option(True, "training augmentation")
    flip: bool = option(True, "random horizontal flips")
    pca_lighting: bool = option(False, "PCA lighting noise")
    random_erasing: float = option(0.0, "random erasing probability", rule=PROBABILITY)
    cache: bool | None = option(None, "cache decoded examples")

    def __post_init__(self):
        check_fields(self)
        if self.image_size is not None and self.image_size < MIN_IMAGE_SIZE:
            raise ConfigError({"image_size": self.image_size}, f"must be at least {MIN_IMAGE_SIZE}")
        if self.channels not in (None, 1, 3):
            raise ConfigError({"channels": self.channels}, "must be 1, 3 or None")
        if self.cache not in (None, True, False):
            raise ConfigError({"cache": self.cache}, "must be True, False or None")
        if self.random_erasing and not self.augment:
            raise ConfigError(
                {"random_erasing": self.random_erasing, "augment": self.augment},
                "is part of the training augmentation",
            )


def data_option(name: str, default: Any, help: str) -> Any:
    """A field of another config (`TrainConfig`) that holds `DataConfig`'s field `name`:
    its rule is `DataConfig`'s, so the value is validated by one rule.

    Args:
        name: str. The `DataConfig` field.
        default: the other config's default.
        help: str. The other config's help text (its flag's).
    """
    rule = DataConfig.__dataclass_fields__[name].metadata["rule"]
    return option(default, help, rule=rule)
