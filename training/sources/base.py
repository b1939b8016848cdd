"""What every source shares: the split and source records, the skip report, the hold-out.

A `Split` reads its examples *by position*, so that a pipeline can read all of them, the
first N, or one worker's share, and never touch (or decode) the rest.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable

import numpy as np
import tensorflow as tf
from sklearn.model_selection import train_test_split


@dataclasses.dataclass
class SkipReport:
    """What a source left out, as ``(path, reason)`` pairs, in two lists.

    ``files``: images that could not be read (truncated, empty, or not the image their
    extension says); `count` is their number. ``non_images``: files and folders that are
    not images of a class, left out without trying to read them (``notes.txt``,
    ``Thumbs.db``, hidden files and folders, files outside any class folder).
    """

    files: list[tuple[str, str]] = dataclasses.field(default_factory=list)
    non_images: list[tuple[str, str]] = dataclasses.field(default_factory=list)

    @property
    def count(self) -> int:
        """Number of unreadable images (``files``); the non-images are not counted here."""
        return len(self.files)

    def summary(self, limit: int = 10) -> str:
        """The unreadable images, then the non-image files: up to ``limit`` lines each."""
        if not self.files and not self.non_images:
            return "skipped 0 images"
        lines = []
        for items, heading in (
            (self.files, f"skipped {len(self.files)} unreadable image(s):"),
            (self.non_images, f"left out {len(self.non_images)} non-image file(s):"),
        ):
            if not items:
                continue
            lines.append(heading)
            lines += [f"  {path}: {reason}" for path, reason in items[:limit]]
            if len(items) > limit:
                lines.append(f"  ... and {len(items) - limit} more")
        return "\n".join(lines)


@dataclasses.dataclass(frozen=True)
class Split:
    """One split of a source: ``n`` examples, read on demand by position.

    Args:
        n: int. Number of examples.
        reader: callable. Sorted int64 positions in ``[0, n)`` -> a ``tf.data.Dataset`` of
            ``(x, label int32)`` in that order, where x is a uint8 image, encoded image bytes
            or a file path (see `Source.kind`). Only those examples are read and decoded.
    """

    n: int
    reader: Callable[[np.ndarray], tf.data.Dataset]

    def read(self, positions: np.ndarray | None = None) -> tf.data.Dataset:
        """The examples at ``positions`` (sorted), or all of them when None."""
        if positions is None:
            positions = np.arange(self.n)
        positions = np.asarray(positions, np.int64)
        if positions.size and (positions[0] < 0 or positions[-1] >= self.n):
            raise ValueError(
                f"positions must lie in [0, {self.n}); received {positions[0]}..{positions[-1]}"
            )
        return self.reader(positions)


def tensor_split(x: np.ndarray, labels: np.ndarray) -> Split:
    """A split of examples already in memory (images or file paths) and their labels."""
    labels = np.asarray(labels, np.int32)
    if len(x) != len(labels):
        raise ValueError(f"{len(x)} examples but {len(labels)} labels")

    def reader(positions: np.ndarray) -> tf.data.Dataset:
        if len(positions) == len(labels):  # all of them (positions are sorted): no copy
            return tf.data.Dataset.from_tensor_slices((x, labels))
        return tf.data.Dataset.from_tensor_slices((x[positions], labels[positions]))

    return Split(len(labels), reader)


@dataclasses.dataclass
class Source:
    """The three splits of a dataset and what the pipeline needs to know about them."""

    train: Split
    validation: Split
    test: Split
    class_names: list[str]
    kind: str  # "decoded" (uint8 [H, W, C]), "encoded" (image bytes) or "path"
    small: bool  # native side <= 64 px: pad-and-crop recipe instead of the Inception crop
    native_size: int | None  # default image_size; None: training.data.LARGE_IMAGE_SIZE
    native_channels: int
    in_memory: bool  # already in memory (from_tensor_slices): never cached again
    cache_bytes: int  # estimated size of what `cache` would hold
    skipped: SkipReport = dataclasses.field(default_factory=SkipReport)


def holdout(labels: np.ndarray, fraction: float, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Stratified, seeded hold-out: (train positions, held-out positions), both sorted.

    ``round(fraction * n)`` examples are held out (at least 1 and at most n - 1 when
    ``fraction > 0`` and n >= 2), chosen by scikit-learn's `train_test_split` with
    ``stratify=labels``: every class keeps its proportion within one example (classes
    of a single example are stratified together). Unstratified only where it cannot be:
    fewer held-out (or kept) examples than classes.

    Args:
        labels: array of int. One label per example.
        fraction: float. In [0, 1).
        seed: int. ``random_state`` of the split.
    """
    labels = np.asarray(labels)
    n = len(labels)
    n_val = round(fraction * n)
    if fraction > 0 and n >= 2:
        n_val = min(max(n_val, 1), n - 1)
    positions = np.arange(n)
    if n_val == 0:
        return positions, positions[:0]
    # scikit-learn stratifies only classes of two or more examples: the classes of one
    # example share a stratum (or, when there is just one such example, it joins the
    # largest class's), so that every other class keeps its proportion.
    strata = labels.copy()
    classes, counts = np.unique(labels, return_counts=True)
    rare = np.isin(labels, classes[counts < 2])
    if rare.sum() >= 2:
        strata[rare] = classes.max() + 1
    elif rare.any():
        strata[rare] = classes[np.argmax(counts)]
    # Stratification is impossible when either side is smaller than the number of strata
    # (scikit-learn refuses it): the held-out examples are then drawn regardless of
    # class, still seeded.
    stratifiable = min(n_val, n - n_val) >= len(np.unique(strata))
    train, val = train_test_split(
        positions,
        test_size=n_val,
        random_state=seed,
        stratify=strata if stratifiable else None,
    )
    return np.sort(train), np.sort(val)


def limit_count(n: int, limit: int | None) -> int:
    """``n``, or ``limit`` when that is smaller."""
    return n if limit is None else min(n, limit)
