"""The results of a bottleneck-width search: the trials table, the Pareto front of
validation accuracy against multiply-adds, and its plot (`training.tuning`)."""

from __future__ import annotations

import json
import math
import os

import keras_tuner as kt
import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

# Each trial's counts, budget verdict and seconds, in its KerasTuner trial folder.
INFO_FILE = "tuning.json"


def read_info(trial_dir: str) -> dict | None:
    path = os.path.join(trial_dir, INFO_FILE)
    if not os.path.exists(path):
        return None
    with open(path, encoding="utf-8") as f:
        return json.load(f)


def trial_rows(tuner: kt.Tuner, hypermodel: kt.HyperModel) -> list[dict]:
    """One dict per trial: id, status, params, train_params, macs, train_macs, objective,
    seconds, reason, widths.

    A trial recorded before the inference counts existed (its `params` and `macs` counted
    the auxiliary heads, and it has no `train_params`) is counted again from its
    hyperparameters, so that one column never mixes the two countings.
    """
    objective = tuner.oracle.objective.name
    names = [hp.name for hp in tuner.oracle.hyperparameters.space]
    rows = []
    for trial_id in sorted(tuner.oracle.trials):
        trial = tuner.oracle.trials[trial_id]
        info = read_info(tuner.get_trial_dir(trial_id)) or {}
        if "params" in info and "train_params" not in info:
            info = {**info, **hypermodel.counts(trial.hyperparameters)}
        value = None
        if trial.status == "COMPLETED" and trial.metrics.exists(objective):
            value = trial.metrics.get_best_value(objective)
        status = "REJECTED" if info.get("reason") else trial.status
        row = {
            "trial_id": trial_id,
            "status": status,
            "params": info.get("params"),
            "train_params": info.get("train_params"),
            "macs": info.get("macs"),
            "train_macs": info.get("train_macs"),
            objective: value,
            "seconds": info.get("seconds"),
            "reason": info.get("reason") or "",
        }
        row.update({name: trial.hyperparameters.values.get(name) for name in names})
        rows.append(row)
    return rows


def pareto_front(points: list[tuple[float, float]]) -> list[int]:
    """Indices of the points `(cost, accuracy)` no other point beats on both (cheaper or
    equal cost with higher accuracy), sorted by cost."""
    order = sorted(range(len(points)), key=lambda i: (points[i][0], -points[i][1]))
    front, best = [], -math.inf
    for i in order:
        if points[i][1] > best:
            front.append(i)
            best = points[i][1]
    return front


def plot_pareto(rows: list[dict], objective: str, default_macs: int, path: str) -> None:
    """Validation accuracy against the inference model's multiply-adds; the Pareto front
    and the paper default."""

    done = [r for r in rows if r[objective] is not None]
    fig, ax = plt.subplots(figsize=(6, 4))
    if done:
        points = [(r["macs"], r[objective]) for r in done]
        ax.scatter([p[0] for p in points], [p[1] for p in points], label="trials", alpha=0.6)
        front = pareto_front(points)
        ax.plot(
            [points[i][0] for i in front],
            [points[i][1] for i in front],
            "r-o",
            label="Pareto front",
        )
        defaults = [r for r in done if r["macs"] == default_macs and r.get("is_default")]
        for r in defaults:
            ax.scatter([r["macs"]], [r[objective]], marker="*", s=250, c="k", zorder=3)
    ax.axvline(default_macs, color="k", linestyle="--", label="paper widths")
    ax.set_xlabel("multiply-adds per image (inference: no auxiliary heads)")
    ax.set_ylabel(objective)
    ax.set_title("bottleneck-width search")
    ax.grid(alpha=0.3)
    ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


def format_table(rows: list[dict], objective: str, width_names: list[str]) -> str:
    """The printed summary: one line per trial, Pareto-front trials starred.

    `params` and `macs` are the inference model's; the training model's `train_params` and
    `train_macs` columns are added where a trial's differ (a model with auxiliary heads).
    """
    done = [r for r in rows if r[objective] is not None]
    front = {done[i]["trial_id"] for i in pareto_front([(r["macs"], r[objective]) for r in done])}
    columns = [("params", 11), ("macs", 14)]
    if any(r.get("train_params") not in (None, r["params"]) for r in rows):
        columns = [("params", 11), ("train_params", 12), ("macs", 14), ("train_macs", 14)]
    header = f"{'trial':>6} {'status':>9} " + " ".join(f"{name:>{w}}" for name, w in columns)
    lines = [header + f" {objective:>18} {'s':>7}" + ("  widths" if width_names else "")]
    for r in rows:
        value = "" if r[objective] is None else f"{r[objective]:.4f}"
        if r["trial_id"] in front:
            value = "* " + value
        counts = " ".join(
            f"{'' if r.get(name) is None else f'{r[name]:,}':>{w}}" for name, w in columns
        )
        seconds = "" if r["seconds"] is None else f"{r['seconds']:.1f}"
        widths = " ".join(str(r[name]) for name in width_names)
        lines.append(
            f"{r['trial_id']:>6} {r['status']:>9} {counts} {value:>18} {seconds:>7}  {widths}"
        )
    lines.append("* on the Pareto front (no cheaper trial is as accurate)")
    lines.append("params, macs: the inference model (auxiliary heads stripped)")
    return "\n".join(lines)
