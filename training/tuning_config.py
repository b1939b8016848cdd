"""`TuneConfig`, what a search varies and how, and the search's workdir: checked (read
only) before anything runs, written once the data and the default model are checked.

`training.tuning` runs the search; `python -m training tune` builds its flags from
`TuneConfig`'s fields (`training.fields`).
"""

from __future__ import annotations

import dataclasses

from training.config import TrainConfig
from training.fields import POSITIVE_INT, check_fields, option
from training.workdir import as_json, changed_fields, check_workdir, start_workdir

SPACES = ("per_module", "bottleneck_ratio")
TUNERS = ("random", "bayesian", "hyperband")
CONFIG_FILE = "tune_config.json"


@dataclasses.dataclass(frozen=True)
class TuneConfig:
    """What the search varies and how (written to `tune_config.json` with the TrainConfig).

    Each field's meaning is its `help` metadata (`training.fields`; `python -m training
    tune --help` prints it with the default): `space` ("per_module": every 1x1 reduce
    width of every module; "bottleneck_ratio": one scale for all of them), `tuner`,
    `max_trials` (rejected trials included; hyperband uses `TrainConfig.epochs` as
    `max_epochs` instead), `max_params` / `max_macs` (budgets of the inference model,
    auxiliary heads stripped; None: no limit), `search_learning_rate` (log scale, 1/10 to
    10 times the run's) and `search_aux_weight`.
    """

    space: str = option(
        "per_module", "every module's reduce widths, or one global bottleneck ratio",
        choices=SPACES,
    )  # fmt: skip
    tuner: str = option(
        "random",
        "random search, bayesian (KerasTuner's Gaussian process) or hyperband",
        choices=TUNERS,
    )
    max_trials: int = option(
        10,
        "trials, rejected ones included (hyperband: unused, --epochs is max_epochs)",
        rule=POSITIVE_INT,
    )
    max_params: int | None = option(
        None,
        "reject models with more parameters (inference model: auxiliary heads stripped)",
        rule=POSITIVE_INT,
    )
    max_macs: int | None = option(
        None,
        "reject models with more multiply-adds per image (inference model)",
        rule=POSITIVE_INT,
    )
    search_learning_rate: bool = option(False, "also search the learning rate")
    search_aux_weight: bool = option(False, "also search the aux loss weight")

    def __post_init__(self):
        check_fields(self)


def check_search(
    config: TrainConfig, tune_config: TuneConfig, workdir: str, *, overwrite: bool = False
) -> bool:
    """Read-only: refuses a workdir that holds another search (a field missing from its
    saved `tune_config.json` counts as its default) or files but no search
    (`training.workdir.check_workdir`); returns whether the search resumes."""
    saved = check_workdir(workdir, CONFIG_FILE, what="search", overwrite=overwrite)
    if saved is None:
        return False
    current = as_json({"train": config, "tune": tune_config})
    defaults = as_json({"train": TrainConfig(), "tune": TuneConfig()})
    changed = changed_fields(saved, current, defaults)
    if changed:
        raise ValueError(
            f"workdir {workdir!r} holds a search with another configuration (differs in "
            f"{changed}); use another --workdir, or --overwrite to search again"
        )
    return True


def prepare_search(
    config: TrainConfig, tune_config: TuneConfig, workdir: str, *, overwrite: bool = False
) -> bool:
    """`check_search`, then writes `tune_config.json` (removing the earlier search when
    `overwrite`); returns whether the search resumes."""
    resumed = check_search(config, tune_config, workdir, overwrite=overwrite)
    start_workdir(workdir, CONFIG_FILE, {"train": config, "tune": tune_config}, overwrite=overwrite)
    return resumed
