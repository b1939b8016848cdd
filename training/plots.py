"""curves.png: loss and accuracy per epoch, train vs validation."""

from __future__ import annotations

import csv

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402


def plot_curves(history_csv: str, path: str) -> None:
    """Plots every `<metric>` column of a CSVLogger file against its `val_<metric>`."""
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
