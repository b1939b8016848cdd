"""Per-example recipes of the input pipeline: decode, crop, augment; float pixels in [0, 255].

`training.data` maps them over its records: `train_fn` on training examples (with one
stateless seed pair each), `eval_fn` on validation and test examples. The ops are those of
`training.augment`. Images stay raw pixels: the models carry their normalization
(`keras_inception` builders' `include_preprocessing`, "inception" in `training`).
"""

from __future__ import annotations

from collections.abc import Callable

import tensorflow as tf

from training import augment


def _to_image(x: tf.Tensor, channels: int, encoded: bool) -> tf.Tensor:
    """uint8 [H, W, channels] from a decoded image or image bytes."""
    if encoded:
        return augment.decode(x, channels)
    return augment.convert_channels(x, channels)


def _resize_if_needed(image: tf.Tensor, size: int) -> tf.Tensor:
    if image.shape[0] == size and image.shape[1] == size:
        return image
    return tf.cast(tf.clip_by_value(augment.resize(image, size), 0, 255), image.dtype)


def train_fn(
    *,
    small: bool,
    encoded: bool,
    size: int,
    channels: int,
    augment_images: bool,
    flip: bool,
    pca_lighting: bool,
    random_erasing: float = 0.0,
) -> Callable[[tf.Tensor, tf.Tensor], tf.Tensor] | None:
    """``fn(x, seed)``: one training image, augmented with the stateless ``seed`` pair.

    Args:
        small: bool. Pad-and-crop recipe (side <= 64) instead of the Inception crop.
        encoded: bool. x is image bytes (else a uint8 [H, W, C] image).
        size: int. Output side.
        channels: int. Output channels.
        augment_images: bool. Random crop, flip and (large images) colour.
        flip: bool. Random horizontal flips in that augmentation.
        pca_lighting: bool. AlexNet PCA lighting noise (RGB).
        random_erasing: float. Probability of erasing a random rectangle of a training
            image (`augment.random_erasing`), with `augment_images` only.

    Returns:
        The function, float32 [size, size, channels] in [0, 255]; None when there is no
        augmentation at all (training images are then preprocessed as evaluation's).
    """
    if not augment_images and not pca_lighting:
        return None

    def small_fn(x, seed):
        crop_seed, flip_seed, pca_seed, erase_seed = augment.split_seed(seed, 4)
        image = _resize_if_needed(_to_image(x, channels, encoded), size)
        image.set_shape([size, size, channels])
        if augment_images:
            pad = augment.small_image_padding(size)
            image = augment.pad_and_random_crop(image, pad, crop_seed)
            if flip:
                image = tf.image.stateless_random_flip_left_right(image, flip_seed)
        image = tf.cast(image, tf.float32) / 255.0
        if pca_lighting:
            image = augment.pca_lighting(image, pca_seed)
        if augment_images and random_erasing:
            image = augment.random_erasing(image, erase_seed, random_erasing)
        return augment.to_pixels(image)

    def large_fn(x, seed):
        crop_seed, flip_seed, color_seed, pca_seed, erase_seed = augment.split_seed(seed, 5)
        if not augment_images:
            image = _eval_large(x, size, channels, encoded)
        else:
            if encoded:
                image = augment.decode_inception_crop(x, crop_seed, channels)
            else:
                image = augment.inception_crop(augment.convert_channels(x, channels), crop_seed)
            image = augment.resize(image, size) / 255.0
            image.set_shape([size, size, channels])
            if flip:
                image = tf.image.stateless_random_flip_left_right(image, flip_seed)
            image = augment.distort_color(image, color_seed)
        if pca_lighting:
            image = augment.pca_lighting(image, pca_seed)
        if augment_images and random_erasing:
            image = augment.random_erasing(image, erase_seed, random_erasing)
        return augment.to_pixels(image)

    return small_fn if small else large_fn


def _eval_large(x: tf.Tensor, size: int, channels: int, encoded: bool) -> tf.Tensor:
    """Central 87.5% crop resized to ``size``: float32 in [0, 1]."""
    if encoded:
        image = augment.decode_central_crop(x, channels)
    else:
        image = augment.central_crop(augment.convert_channels(x, channels))
    image = augment.resize(image, size) / 255.0
    image.set_shape([size, size, channels])
    return image


def eval_fn(
    *, small: bool, encoded: bool, size: int, channels: int, ten_crop: bool
) -> Callable[[tf.Tensor], tf.Tensor]:
    """``fn(x)``: one evaluation image, float32 in [0, 255]: resized (small images), the
    central 87.5% crop (large ones) or, with ``ten_crop``, ``[10, size, size, channels]``:
    the 4 corners, the centre and their mirror images.

    Args:
        small: bool. Resize only (side <= 64) instead of the central crop.
        encoded: bool. x is image bytes (else a uint8 [H, W, C] image).
        size: int. Output side.
        channels: int. Output channels.
        ten_crop: bool. Ten crops per image.
    """

    def fn(x):
        if ten_crop:
            crops = augment.ten_crop(_to_image(x, channels, encoded), size)
            crops.set_shape([10, size, size, channels])
            return tf.clip_by_value(crops, 0.0, 255.0)
        if small:  # the decoded pixels, exactly
            image = _resize_if_needed(_to_image(x, channels, encoded), size)
            image.set_shape([size, size, channels])
            return tf.cast(image, tf.float32)
        return augment.to_pixels(_eval_large(x, size, channels, encoded))

    return fn
