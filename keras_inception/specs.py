"""Width tables: one frozen dataclass per module kind.

Widths are data, wiring is code: a builder loops over a table such as
`keras_inception.googlenet.GOOGLENET_SPECS` and never hard-codes a width. A user or a
tuner changes widths by passing a new table (`specs=`), and `scale_table` applies the
builders' width controls (`width_multiplier`, `min_depth`, `bottleneck_ratio`) to a table
so that the final width of every convolution is known before a layer is built.

Fields marked with `REDUCE` metadata are the 1x1 "reduce" convolutions in front of a
larger convolution; `bottleneck_ratio` scales those and nothing else.
"""

from __future__ import annotations

import dataclasses
import json
import os
from collections.abc import Mapping
from types import MappingProxyType
from typing import Any

REDUCE = MappingProxyType({"reduce": True})
SPECS_FORMAT = "keras_inception.specs/1"


def _check_widths(spec: Any) -> None:
    for f in dataclasses.fields(spec):
        value = getattr(spec, f.name)
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            raise ValueError(
                f"{type(spec).__name__}.{f.name} must be a positive integer width; "
                f"received {value!r}"
            )


@dataclasses.dataclass(frozen=True)
class V1Stem:
    """GoogLeNet stem widths (paper Table 1, rows conv1 and conv2).

    Args:
        conv1: int. Filters of the first convolution (7x7/2, or 3x3/1 for the small stem).
        reduce: int. Filters of the 1x1 convolution in front of `conv2` ("#3x3 reduce").
            Not scaled by `bottleneck_ratio`, which targets the Inception modules only.
        conv2: int. Filters of the 3x3 convolution.
    """

    conv1: int
    reduce: int
    conv2: int

    def __post_init__(self) -> None:
        _check_widths(self)

    @property
    def out_channels(self) -> int:
        return self.conv2


@dataclasses.dataclass(frozen=True)
class V1Module:
    """One Inception (v1) module: four parallel branches concatenated.

    Args:
        conv1x1: int. Filters of the 1x1 branch ("#1x1").
        reduce3x3: int. 1x1 reduce in front of the 3x3 convolution ("#3x3 reduce").
        conv3x3: int. Filters of the 3x3 convolution ("#3x3").
        reduce5x5: int. 1x1 reduce in front of the 5x5 convolution ("#5x5 reduce").
        conv5x5: int. Filters of the 5x5 convolution ("#5x5").
        pool_proj: int. 1x1 projection after the 3x3/1 max pool ("pool proj").
    """

    conv1x1: int
    reduce3x3: int = dataclasses.field(metadata=REDUCE)
    conv3x3: int
    reduce5x5: int = dataclasses.field(metadata=REDUCE)
    conv5x5: int
    pool_proj: int

    def __post_init__(self) -> None:
        _check_widths(self)

    @property
    def out_channels(self) -> int:
        return self.conv1x1 + self.conv3x3 + self.conv5x5 + self.pool_proj


# Every spec kind that may appear in a table, by class name (for save_specs/load_specs).
SPEC_TYPES: dict[str, type] = {cls.__name__: cls for cls in (V1Stem, V1Module)}


def scale_width(width: int, factor: float, min_depth: int) -> int:
    """TF-Slim depth semantics: `max(int(width * factor), min_depth)`.

    A factor of exactly 1.0 keeps the width as given, so a table of final widths (as
    written by `save_specs`) rebuilds unchanged even where a width is below `min_depth`.
    """
    if factor == 1.0:
        return width
    return max(int(width * factor), min_depth)


def scale_spec(spec: Any, *, width_multiplier: float, bottleneck_ratio: float, min_depth: int):
    """Returns `spec` with every width scaled; `REDUCE` fields also by `bottleneck_ratio`."""
    changes = {}
    for f in dataclasses.fields(spec):
        factor = width_multiplier * (bottleneck_ratio if f.metadata.get("reduce") else 1.0)
        changes[f.name] = scale_width(getattr(spec, f.name), factor, min_depth)
    return dataclasses.replace(spec, **changes)


def validate_width_controls(
    width_multiplier: float, bottleneck_ratio: float, min_depth: int
) -> None:
    for label, value in (
        ("width_multiplier", width_multiplier),
        ("bottleneck_ratio", bottleneck_ratio),
    ):
        if isinstance(value, bool) or not isinstance(value, int | float) or not value > 0:
            raise ValueError(f"{label} must be a positive number; received {value!r}")
    if isinstance(min_depth, bool) or not isinstance(min_depth, int) or min_depth < 1:
        raise ValueError(f"min_depth must be a positive integer; received {min_depth!r}")


def validate_table(table: Any, default: Mapping[str, Any], family: str) -> dict[str, Any]:
    """Checks that `table` has exactly the modules of `default`, each of the same type."""
    if not isinstance(table, Mapping):
        raise ValueError(
            f"specs for {family} must be a mapping of module name to spec; "
            f"received {type(table).__name__}"
        )
    missing = [key for key in default if key not in table]
    if missing:
        raise ValueError(
            f"specs for {family} is missing modules {missing}; received modules {list(table)}"
        )
    unknown = [key for key in table if key not in default]
    if unknown:
        raise ValueError(
            f"specs for {family} has unknown modules {unknown}; expected {list(default)}"
        )
    for key, spec in table.items():
        expected = type(default[key])
        if not isinstance(spec, expected):
            raise ValueError(
                f"specs[{key!r}] for {family} must be a {expected.__name__}; received {spec!r}"
            )
    return {key: table[key] for key in default}


def scale_table(
    table: Mapping[str, Any],
    *,
    width_multiplier: float = 1.0,
    bottleneck_ratio: float = 1.0,
    min_depth: int = 16,
) -> dict[str, Any]:
    """The final width table a builder uses, after the width controls.

    Example:
    >>> from keras_inception.googlenet import GOOGLENET_SPECS
    >>> scale_table(GOOGLENET_SPECS, bottleneck_ratio=0.5)["3a"].reduce3x3
    48
    """
    validate_width_controls(width_multiplier, bottleneck_ratio, min_depth)
    return {
        key: scale_spec(
            spec,
            width_multiplier=width_multiplier,
            bottleneck_ratio=bottleneck_ratio,
            min_depth=min_depth,
        )
        for key, spec in table.items()
    }


def save_specs(table: Mapping[str, Any], path: str | os.PathLike) -> None:
    """Writes a width table as JSON; `load_specs` reads it back."""
    modules = {}
    for key, spec in table.items():
        if type(spec).__name__ not in SPEC_TYPES:
            raise ValueError(f"specs[{key!r}] is not a known spec type; received {spec!r}")
        modules[key] = {"type": type(spec).__name__, **dataclasses.asdict(spec)}
    with open(path, "w", encoding="utf-8") as f:
        json.dump({"format": SPECS_FORMAT, "modules": modules}, f, indent=2)
        f.write("\n")


def load_specs(path: str | os.PathLike) -> dict[str, Any]:
    """Reads a width table written by `save_specs` (pass it to a builder as `specs=`)."""
    if not os.path.exists(path):
        raise FileNotFoundError(f"specs file not found: {os.fspath(path)!r}")
    try:
        with open(path, encoding="utf-8") as f:
            data = json.load(f)
    except (json.JSONDecodeError, UnicodeDecodeError) as err:
        raise ValueError(f"specs file {os.fspath(path)!r} is not valid JSON: {err}") from err
    if not isinstance(data, dict) or data.get("format") != SPECS_FORMAT:
        raise ValueError(
            f"specs file {os.fspath(path)!r} is not a {SPECS_FORMAT} file; "
            f"received format {data.get('format') if isinstance(data, dict) else None!r}"
        )
    table = {}
    for key, entry in data["modules"].items():
        entry = dict(entry)
        kind = entry.pop("type", None)
        if kind not in SPEC_TYPES:
            raise ValueError(
                f"specs file {os.fspath(path)!r}: module {key!r} has unknown type {kind!r}"
            )
        try:
            table[key] = SPEC_TYPES[kind](**entry)
        except TypeError as err:
            raise ValueError(
                f"specs file {os.fspath(path)!r}: module {key!r} has fields {sorted(entry)}, "
                f"which do not fit {kind}: {err}"
            ) from err
    return table
