"""curves.png (loss and accuracy per epoch, train vs validation) and confusion.png (test
counts per true and predicted class)."""

from __future__ import annotations

import csv
from collections.abc import Sequence

import matplotlib
import numpy as np

matplotlib.use("Agg")
import matplotlib.figure  # noqa: E402
import matplotlib.pyplot as plt  # noqa: E402

# Beyond these many classes the cells get too small for their counts, then the axes for
# every class name.
MAX_ANNOTATED_CLASSES = 30
MAX_LABELLED_CLASSES = 60


def plot_curves(history_csv: str, path: str) -> matplotlib.figure.Figure:
    """Plots every `<metric>` column of a CSVLogger file against its `val_<metric>`;
    returns the (closed) figure, whose lines hold the plotted values."""
    with open(history_csv, encoding="utf-8") as f:
        rows = list(csv.DictReader(f))
    if not rows:
        raise ValueError(f"history file {history_csv!r} has no epochs to plot")
    epochs = [int(row["epoch"]) + 1 for row in rows]
    panels = [
        (title, key)
        for title, key in (
            ("loss", "loss"),
            ("accuracy", "main_accuracy"),
            ("accuracy", "accuracy"),
        )
        if key in rows[0]
    ][:2]
    fig, axes = plt.subplots(1, len(panels), figsize=(5 * len(panels), 3.5), squeeze=False)
    for ax, (title, key) in zip(axes[0], panels, strict=True):
        for prefix, label in (("", "train"), ("val_", "validation")):
            column = prefix + key
            if column in rows[0]:
                ax.plot(epochs, [float(row[column]) for row in rows], marker="o", label=label)
        ax.set_xlabel("epoch")
        ax.set_ylabel(key)
        ax.set_title(title)
        ax.grid(alpha=0.3)
        ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return fig


def plot_confusion(
    confusion: Sequence[Sequence[int]] | np.ndarray,
    class_names: Sequence[str],
    path: str,
    *,
    title: str | None = None,
) -> matplotlib.figure.Figure:
    """Plots a confusion matrix as a PNG: rows are true classes, columns predicted ones.

    Each cell's colour is its share of its row (the true class's images), so classes of
    different sizes compare; the cell shows the count itself (blank for a zero off the
    diagonal). Up to
    `MAX_ANNOTATED_CLASSES` classes have their counts written in, up to
    `MAX_LABELLED_CLASSES` their names on the axes.

    Args:
        confusion: square matrix of int. `confusion[true][predicted]` image counts.
        class_names: list of str. Class names, by label.
        path: str. The PNG file to write.
        title: str. Title above the matrix. Defaults to "confusion matrix".

    Raises:
        ValueError: `confusion` is not a square matrix of counts >= 0, or `class_names`
            does not name each of its classes.

    Example:
    >>> plot_confusion([[9, 1], [2, 8]], ["cat", "dog"], "confusion.png")
    """
    try:
        matrix = np.asarray(confusion, dtype="int64")
    except (TypeError, ValueError):
        raise ValueError(
            f"confusion must be a square matrix of counts; received {str(confusion)[:200]}"
        ) from None
    if matrix.ndim != 2 or matrix.shape[0] != matrix.shape[1] or matrix.size == 0:
        raise ValueError(
            f"confusion must be a square matrix of counts; received shape {matrix.shape}"
        )
    if (matrix < 0).any():
        raise ValueError(f"confusion counts must be >= 0; received minimum {matrix.min()}")
    n = matrix.shape[0]
    if len(class_names) != n:
        raise ValueError(
            f"class_names must name the {n} classes of a {n}x{n} confusion matrix; received "
            f"{len(class_names)} names: {list(class_names)[:20]}"
        )
    totals = matrix.sum(axis=1, keepdims=True)
    shares = np.divide(matrix, totals, out=np.zeros(matrix.shape), where=totals > 0)

    fig, ax = plt.subplots(figsize=(6, 5))
    image = ax.imshow(shares, cmap="Blues", vmin=0.0, vmax=1.0)
    fig.colorbar(image, ax=ax, fraction=0.046, pad=0.04, label="share of the true class")
    if n <= MAX_ANNOTATED_CLASSES:
        fontsize = 8 if n <= 12 else 6 if n <= 20 else 4
        for (row, col), count in np.ndenumerate(matrix):
            if count or row == col:
                ax.text(
                    col,
                    row,
                    str(count),
                    ha="center",
                    va="center",
                    fontsize=fontsize,
                    color="white" if shares[row, col] > 0.5 else "black",
                )
    if n <= MAX_LABELLED_CLASSES:
        fontsize = 8 if n <= 12 else 6 if n <= 30 else 4
        ax.set_xticks(range(n))
        ax.set_yticks(range(n))
        ax.set_xticklabels(
            class_names, rotation=45, ha="right", rotation_mode="anchor", fontsize=fontsize
        )
        ax.set_yticklabels(class_names, fontsize=fontsize)
    ax.set_xlabel("predicted")
    ax.set_ylabel("true")
    ax.set_title(title or "confusion matrix", fontsize=10)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return fig
