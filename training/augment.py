"""Per-image preprocessing and augmentation ops for the tf.data input pipeline.

Every random op here is *stateless*: it takes a ``seed`` tensor of shape ``[2]`` and returns
the same result for the same seed, so a pipeline that feeds seeds from a seeded
``tf.data.Dataset.random`` gives identical batches run after run.

Train-time recipe (large images, Szegedy et al. 2014 "Going Deeper with Convolutions",
section 6, as implemented in TF-Slim's ``inception_preprocessing``):

* Inception crop: ``sample_distorted_bounding_box`` with area 8%-100% of the image and
  aspect ratio 3/4-4/3, the whole image as the object box; for JPEG bytes the crop is fused
  into the decoder (``decode_and_crop_jpeg``), so only the window is decoded.
* resize to the model size, random horizontal flip;
* colour distortion in a random order (``distort_color``); only brightness and contrast for
  one-channel images;
* optional AlexNet PCA lighting noise (Krizhevsky et al. 2012, section 4.1);
* back to float pixels in ``[0, 255]`` (``to_pixels``): the model applies its own
  normalization (``keras_inception`` models built with ``include_preprocessing``).

The colour, lighting and erasing ops work on images in ``[0, 1]``, as TF-Slim's and
fb.resnet.torch's, whatever scale the pipeline yields.

Small images (side <= 64 px) get the CIFAR recipe instead: pad-and-random-crop plus flip.
Eval: central crop of 87.5% and resize (small images: only resize when the size differs).

Nothing here runs a TF op at import time: the constants are NumPy arrays.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import tensorflow as tf

# Images whose native side is at most this many pixels use the small-image recipe.
SMALL_IMAGE_MAX_SIDE = 64
EVAL_CROP_FRACTION = 0.875

# AlexNet's ImageNet RGB PCA (values on a [0, 1] pixel scale, as in fb.resnet.torch).
PCA_EIGENVALUES = np.array([0.2175, 0.0188, 0.0045], dtype=np.float32)
PCA_EIGENVECTORS = np.array(
    [
        [-0.5675, 0.7192, 0.4009],
        [-0.5808, -0.0045, -0.8140],
        [-0.5836, -0.6948, 0.4203],
    ],
    dtype=np.float32,
)
PCA_ALPHA_STD = 0.1


def split_seed(seed: tf.Tensor, num: int) -> list[tf.Tensor]:
    """Splits one stateless seed (shape ``[2]``) into ``num`` independent seeds."""
    seeds = tf.random.experimental.stateless_split(seed, num=num)
    return [seeds[i] for i in range(num)]


def convert_channels(image: tf.Tensor, channels: int) -> tf.Tensor:
    """Converts an ``[H, W, C]`` image between gray (1), RGB (3) and RGBA (4 -> 3 drops alpha)."""
    have = image.shape[-1]
    if have == channels:
        return image
    if have == 4:
        image = image[..., :3]
        have = 3
    if have == 1 and channels == 3:
        return tf.image.grayscale_to_rgb(image)
    if have == 3 and channels == 1:
        return tf.image.rgb_to_grayscale(image)
    if have == channels:
        return image
    raise ValueError(f"cannot convert an image with {have} channels to {channels} channels")


def to_pixels(image01: tf.Tensor) -> tf.Tensor:
    """Maps a float image in ``[0, 1]`` to float pixels in ``[0, 255]`` (clipping first):
    what the pipeline yields, as models carry their own normalization."""
    return tf.clip_by_value(image01, 0.0, 1.0) * 255.0


def to_symmetric(image01: tf.Tensor) -> tf.Tensor:
    """Maps a float image in ``[0, 1]`` to ``[-1, 1]`` (clipping first): the scale of
    models built without `include_preprocessing`."""
    return tf.clip_by_value(image01, 0.0, 1.0) * 2.0 - 1.0


def resize(image: tf.Tensor, size: int) -> tf.Tensor:
    """Bilinear resize to ``size x size``; returns float32 on the input's value scale."""
    return tf.image.resize(image, [size, size], method="bilinear")


# --------------------------------------------------------------------------- crops


def _distorted_box(shape: tf.Tensor, seed: tf.Tensor) -> tuple[tf.Tensor, tf.Tensor]:
    """Inception crop window for an image of ``shape`` ([H, W, C]): (begin, size)."""
    whole_image = tf.constant([[[0.0, 0.0, 1.0, 1.0]]], dtype=tf.float32)
    begin, size, _ = tf.image.stateless_sample_distorted_bounding_box(
        shape,
        bounding_boxes=whole_image,
        seed=seed,
        min_object_covered=0.08,
        aspect_ratio_range=(3.0 / 4.0, 4.0 / 3.0),
        area_range=(0.08, 1.0),
        max_attempts=100,
        use_image_if_no_bounding_boxes=True,
    )
    return begin, size


def inception_crop(image: tf.Tensor, seed: tf.Tensor) -> tf.Tensor:
    """Inception random crop of a decoded ``[H, W, C]`` image (no resize)."""
    begin, size = _distorted_box(tf.shape(image), seed)
    return tf.slice(image, begin, size)


def decode_inception_crop(encoded: tf.Tensor, seed: tf.Tensor, channels: int) -> tf.Tensor:
    """Decodes image bytes and takes the Inception crop; JPEG uses the fused crop decoder."""

    def window(shape: tf.Tensor) -> tf.Tensor:
        begin, size = _distorted_box(shape, seed)
        return tf.stack([begin[0], begin[1], size[0], size[1]])

    return _decode_window(encoded, channels, window)


def _decode_window(
    encoded: tf.Tensor, channels: int, window_of: Callable[[tf.Tensor], tf.Tensor]
) -> tf.Tensor:
    """Decodes image bytes and crops `window_of(shape)` ([y, x, height, width] of the
    image's [H, W, C] shape); a JPEG decodes only that window."""

    def jpeg() -> tf.Tensor:
        window = window_of(tf.image.extract_jpeg_shape(encoded))
        return tf.image.decode_and_crop_jpeg(encoded, window, channels=channels)

    def other() -> tf.Tensor:
        image = decode(encoded, channels)
        window = window_of(tf.shape(image))
        return tf.slice(image, [window[0], window[1], 0], [window[2], window[3], -1])

    image = tf.cond(tf.io.is_jpeg(encoded), jpeg, other)
    image.set_shape([None, None, channels])
    return image


def decode(encoded: tf.Tensor, channels: int) -> tf.Tensor:
    """Decodes JPEG/PNG/GIF/BMP bytes to uint8 ``[H, W, channels]`` (gray/RGBA converted)."""
    image = tf.io.decode_image(encoded, channels=channels, expand_animations=False)
    image.set_shape([None, None, channels])
    return image


def _central_window(height: tf.Tensor, width: tf.Tensor, fraction: float) -> tf.Tensor:
    crop_h = tf.maximum(1, tf.cast(tf.cast(height, tf.float32) * fraction, tf.int32))
    crop_w = tf.maximum(1, tf.cast(tf.cast(width, tf.float32) * fraction, tf.int32))
    return tf.stack([(height - crop_h) // 2, (width - crop_w) // 2, crop_h, crop_w])


def central_crop(image: tf.Tensor, fraction: float = EVAL_CROP_FRACTION) -> tf.Tensor:
    """Central crop keeping ``fraction`` of each side of a decoded ``[H, W, C]`` image."""
    shape = tf.shape(image)
    window = _central_window(shape[0], shape[1], fraction)
    return tf.slice(image, [window[0], window[1], 0], [window[2], window[3], -1])


def decode_central_crop(
    encoded: tf.Tensor, channels: int, fraction: float = EVAL_CROP_FRACTION
) -> tf.Tensor:
    """Decodes image bytes and takes the central crop; JPEG decodes only the window."""
    return _decode_window(
        encoded, channels, lambda shape: _central_window(shape[0], shape[1], fraction)
    )


def pad_and_random_crop(image: tf.Tensor, pad: int, seed: tf.Tensor) -> tf.Tensor:
    """CIFAR-style augmentation: zero-pad ``pad`` pixels per side, random crop back."""
    if pad <= 0:
        return image
    height, width, channels = image.shape
    padded = tf.pad(image, [[pad, pad], [pad, pad], [0, 0]])
    return tf.image.stateless_random_crop(padded, [height, width, channels], seed=seed)


def random_erasing(
    image: tf.Tensor,
    seed: tf.Tensor,
    probability: float,
    area_range: tuple[float, float] = (0.02, 0.4),
    aspect_range: tuple[float, float] = (0.3, 1 / 0.3),
) -> tf.Tensor:
    """Random erasing (Zhong et al. 2017): with ``probability``, a rectangle of the image
    becomes uniform noise.

    The rectangle covers a uniform ``area_range`` fraction of the image, with a
    log-uniform aspect ratio in ``aspect_range``; a side longer than the image's is cut
    to it (the paper draws again instead).

    Args:
        image: float tensor ``[H, W, C]`` with values in ``[0, 1]``.
        seed: stateless seed pair.
        probability: float in [0, 1].

    Returns:
        The image, its shape and dtype unchanged.
    """
    height, width, channels = image.shape
    apply_seed, area_seed, aspect_seed, y_seed, x_seed, noise_seed = split_seed(seed, 6)
    area = tf.random.stateless_uniform([], area_seed, *area_range) * height * width
    log_aspect = tf.random.stateless_uniform(
        [], aspect_seed, float(np.log(aspect_range[0])), float(np.log(aspect_range[1]))
    )
    aspect = tf.exp(log_aspect)
    box_h = tf.clip_by_value(tf.cast(tf.round(tf.sqrt(area * aspect)), tf.int32), 1, height)
    box_w = tf.clip_by_value(tf.cast(tf.round(tf.sqrt(area / aspect)), tf.int32), 1, width)
    top = tf.random.stateless_uniform([], y_seed, 0, height - box_h + 1, dtype=tf.int32)
    left = tf.random.stateless_uniform([], x_seed, 0, width - box_w + 1, dtype=tf.int32)
    rows = tf.range(height)[:, None, None]
    cols = tf.range(width)[None, :, None]
    inside = (rows >= top) & (rows < top + box_h) & (cols >= left) & (cols < left + box_w)
    applied = tf.random.stateless_uniform([], apply_seed) < probability
    noise = tf.random.stateless_uniform([height, width, channels], noise_seed, dtype=image.dtype)
    return tf.where(inside & applied, noise, image)


def small_image_padding(size: int) -> int:
    """4 pixels at 32 px, scaled with the image side (3 at 28 px, 7 at 56 px)."""
    return max(1, round(4 * size / 32))


def ten_crop(image: tf.Tensor, size: int, fraction: float = EVAL_CROP_FRACTION) -> tf.Tensor:
    """GoogLeNet-style 10-crop: 4 corners + centre of side ``fraction * min(H, W)``, plus flips.

    Args:
        image: tensor. A decoded ``[H, W, C]`` image, any numeric dtype.
        size: int. Output side of every crop.
        fraction: float. Crop side as a fraction of the shorter image side. Defaults to 0.875.

    Returns:
        float32 tensor ``[10, size, size, C]`` on the input's value scale: the five crops,
        then the same five mirrored. (The paper's 144-crop multi-scale scheme is not done.)
    """
    shape = tf.cast(tf.shape(image)[:2], tf.float32)
    side = fraction * tf.minimum(shape[0], shape[1])
    fh, fw = side / shape[0], side / shape[1]
    oh, ow = (1.0 - fh) / 2.0, (1.0 - fw) / 2.0
    boxes = tf.stack(
        [
            [0.0, 0.0, fh, fw],  # top left
            [0.0, 1.0 - fw, fh, 1.0],  # top right
            [1.0 - fh, 0.0, 1.0, fw],  # bottom left
            [1.0 - fh, 1.0 - fw, 1.0, 1.0],  # bottom right
            [oh, ow, oh + fh, ow + fw],  # centre
        ]
    )
    crops = tf.image.crop_and_resize(
        tf.cast(image, tf.float32)[tf.newaxis], boxes, tf.zeros([5], tf.int32), [size, size]
    )
    return tf.concat([crops, tf.reverse(crops, axis=[2])], axis=0)


# --------------------------------------------------------------------------- colour


def _color_ops(seeds: list[tf.Tensor]) -> dict[str, object]:
    return {
        "brightness": lambda x: tf.image.stateless_random_brightness(x, 32.0 / 255.0, seeds[0]),
        "saturation": lambda x: tf.image.stateless_random_saturation(x, 0.5, 1.5, seeds[1]),
        "hue": lambda x: tf.image.stateless_random_hue(x, 0.2, seeds[2]),
        "contrast": lambda x: tf.image.stateless_random_contrast(x, 0.5, 1.5, seeds[3]),
    }


# TF-Slim inception_preprocessing.distort_color's four orderings.
_RGB_ORDERINGS = (
    ("brightness", "saturation", "hue", "contrast"),
    ("saturation", "brightness", "contrast", "hue"),
    ("contrast", "hue", "brightness", "saturation"),
    ("hue", "saturation", "contrast", "brightness"),
)
_GRAY_ORDERINGS = (("brightness", "contrast"), ("contrast", "brightness"))


def distort_color(image01: tf.Tensor, seed: tf.Tensor) -> tf.Tensor:
    """TF-Slim ``distort_color`` with the ordering drawn at random; output clipped to [0, 1].

    Args:
        image01: float tensor ``[H, W, C]`` in ``[0, 1]``; C is 1 or 3.
        seed: int tensor ``[2]``. Stateless seed.
    """
    seeds = split_seed(seed, 5)
    ops = _color_ops(seeds)
    orderings = _RGB_ORDERINGS if image01.shape[-1] == 3 else _GRAY_ORDERINGS

    def branch(order: tuple[str, ...]):
        def apply() -> tf.Tensor:
            x = image01
            for name in order:
                x = ops[name](x)
            return x

        return apply

    choice = tf.random.stateless_uniform([], seeds[4], 0, len(orderings), dtype=tf.int32)
    out = tf.switch_case(choice, [branch(order) for order in orderings])
    out.set_shape(image01.shape)
    return tf.clip_by_value(out, 0.0, 1.0)


def pca_lighting(image01: tf.Tensor, seed: tf.Tensor, alpha_std: float = PCA_ALPHA_STD):
    """AlexNet PCA lighting noise on an RGB float image in [0, 1] (not clipped)."""
    if image01.shape[-1] != 3:
        raise ValueError(f"PCA lighting needs an RGB image; received shape {image01.shape}")
    alpha = tf.random.stateless_normal([3], seed, stddev=alpha_std)
    rgb = tf.linalg.matvec(tf.constant(PCA_EIGENVECTORS), alpha * tf.constant(PCA_EIGENVALUES))
    return image01 + rgb
