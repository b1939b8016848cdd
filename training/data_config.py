"""`DataConfig`: what `training.data.load_datasets` loads and how it feeds it."""

from __future__ import annotations

import dataclasses


@dataclasses.dataclass(frozen=True)
class DataConfig:
    """What to load and how to feed it.

    Args:
        dataset: str. A TFDS name (``"cifar10"``, ``"imagenette"``, ``"imagenet2012"``, ...),
            ``"fashion_mnist"`` or ``"imagefolder"``.
        data_dir: str or None. TFDS ``data_dir``, the folder with the four Fashion-MNIST idx
            files, or the image-folder root. Defaults to None.
        image_size: int or None. Model input side. None: the native size (28 for
            Fashion-MNIST, 32 for CIFAR, 224 for image folders and large TFDS sets).
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
    """

    dataset: str
    data_dir: str | None = None
    image_size: int | None = None
    channels: int | None = None
    batch_size: int = 128
    train_limit: int | None = None
    val_fraction: float = 0.1
    seed: int = 0
    deterministic: bool = False
    augment: bool = True
    flip: bool = True
    pca_lighting: bool = False
    random_erasing: float = 0.0
    cache: bool | None = None

    def __post_init__(self):
        if not self.dataset:
            raise ValueError(f"dataset must be a non-empty name; received {self.dataset!r}")
        if self.image_size is not None and self.image_size < 8:
            raise ValueError(f"image_size must be >= 8 or None; received {self.image_size}")
        if self.channels not in (None, 1, 3):
            raise ValueError(f"channels must be 1, 3 or None; received {self.channels}")
        if self.batch_size < 1:
            raise ValueError(f"batch_size must be >= 1; received {self.batch_size}")
        if self.train_limit is not None and self.train_limit < 1:
            raise ValueError(f"train_limit must be >= 1 or None; received {self.train_limit}")
        if not 0.0 <= self.val_fraction < 1.0:
            raise ValueError(f"val_fraction must be in [0, 1); received {self.val_fraction}")
        if not 0.0 <= self.random_erasing <= 1.0:
            raise ValueError(
                f"random_erasing must be a probability in [0, 1]; received {self.random_erasing}"
            )
        if self.random_erasing and not self.augment:
            raise ValueError(
                "random_erasing is part of the training augmentation; received "
                f"random_erasing={self.random_erasing} with augment=False"
            )
