"""Width tables: one frozen dataclass per module kind.

Widths are data, wiring is code: a builder loops over a table such as
`keras_inception.googlenet.GOOGLENET_SPECS` and never hard-codes a width. A user or a
tuner changes widths by passing a new table (`specs=`), and `scale_table` applies the
builders' width controls (`width_multiplier`, `min_depth`, `bottleneck_ratio`) to a table
so that the final width of every convolution is known before a layer is built.

Fields marked with `REDUCE` metadata are the 1x1 "reduce" convolutions in front of a
larger convolution; `bottleneck_ratio` scales those and nothing else. Fields marked with
`OPTION` metadata are not widths (e.g. a module's pooling kind) and are never scaled.
"""

from __future__ import annotations

import dataclasses
import json
import os
from collections.abc import Mapping
from types import MappingProxyType
from typing import Any

REDUCE = MappingProxyType({"reduce": True})
OPTION = MappingProxyType({"option": True})
SPECS_FORMAT = "keras_inception.specs/1"


class WidthSpec:
    """Base of every spec dataclass: each field not marked OPTION is a positive int width."""

    def __post_init__(self) -> None:
        for f in dataclasses.fields(self):
            if f.metadata.get("option"):
                continue
            value = getattr(self, f.name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ValueError(
                    f"{type(self).__name__}.{f.name} must be a positive integer width; "
                    f"received {value!r}"
                )


@dataclasses.dataclass(frozen=True)
class V1Stem(WidthSpec):
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

    @property
    def out_channels(self) -> int:
        return self.conv2


@dataclasses.dataclass(frozen=True)
class V1Module(WidthSpec):
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

    @property
    def out_channels(self) -> int:
        return self.conv1x1 + self.conv3x3 + self.conv5x5 + self.pool_proj


# --- InceptionV3 and the Inception-v2 of "Rethinking the Inception Architecture" ---------
# Field names follow the branch they size; a field used by several convolutions of one
# branch says so. Stems name their layers as TF-Slim does (Conv2d_1a_3x3 -> conv1a).


@dataclasses.dataclass(frozen=True)
class V3Stem(WidthSpec):
    """InceptionV3 stem: three 3x3 convolutions, a 1x1 and a 3x3 ("Rethinking", Table 1).

    Args:
        conv1a: int. 3x3/2 convolution (32).
        conv2a: int. 3x3 convolution (32).
        conv2b: int. 3x3 convolution, padded (64).
        conv3b: int. 1x1 convolution after the first max pool (80). Not scaled by
            `bottleneck_ratio`, which targets the Inception modules only.
        conv4a: int. 3x3 convolution (192).
    """

    conv1a: int
    conv2a: int
    conv2b: int
    conv3b: int
    conv4a: int

    @property
    def out_channels(self) -> int:
        return self.conv4a


@dataclasses.dataclass(frozen=True)
class V2Stem(WidthSpec):
    """Inception-v2 ("Rethinking") stem: one unfactorized 7x7/2 convolution, 1x1, 3x3.

    Args:
        conv1a: int. 7x7/2 convolution (64), in place of V3's three 3x3 convolutions.
        conv3b: int. 1x1 convolution after the first max pool (80).
        conv4a: int. 3x3 convolution (192).
    """

    conv1a: int
    conv3b: int
    conv4a: int

    @property
    def out_channels(self) -> int:
        return self.conv4a


@dataclasses.dataclass(frozen=True)
class V3ModuleA(WidthSpec):
    """35x35 module ("Rethinking" Figure 5 as built in InceptionV3: mixed0-2 / Mixed_5b-d).

    Branches: 1x1 | 1x1 -> 5x5 | 1x1 -> 3x3 -> 3x3 | 3x3 avg pool -> 1x1.

    Args:
        conv1x1: int. The 1x1 branch.
        reduce5x5: int. 1x1 reduce in front of the 5x5 convolution.
        conv5x5: int. The 5x5 convolution.
        reduce3x3dbl: int. 1x1 reduce in front of the two stacked 3x3 convolutions.
        conv3x3dbl: int. Each of the two stacked 3x3 convolutions.
        pool_proj: int. 1x1 projection after the average pool.
    """

    conv1x1: int
    reduce5x5: int = dataclasses.field(metadata=REDUCE)
    conv5x5: int
    reduce3x3dbl: int = dataclasses.field(metadata=REDUCE)
    conv3x3dbl: int
    pool_proj: int

    @property
    def out_channels(self) -> int:
        return self.conv1x1 + self.conv5x5 + self.conv3x3dbl + self.pool_proj


@dataclasses.dataclass(frozen=True)
class V3ReductionA(WidthSpec):
    """35x35 -> 17x17 grid reduction ("Rethinking" Figure 10: mixed3 / Mixed_6a).

    Branches: 3x3/2 | 1x1 -> 3x3 -> 3x3/2 | 3x3/2 max pool (passes its input through).

    Args:
        conv3x3: int. The 3x3/2 convolution on the module input.
        reduce3x3dbl: int. 1x1 reduce in front of the two stacked 3x3 convolutions.
        conv3x3dbl: int. Each of the two stacked 3x3 convolutions (the second is /2).
    """

    conv3x3: int
    reduce3x3dbl: int = dataclasses.field(metadata=REDUCE)
    conv3x3dbl: int

    def output_channels(self, in_channels: int) -> int:
        """Output width: the convolution branches plus the pooled input."""
        return self.conv3x3 + self.conv3x3dbl + in_channels


@dataclasses.dataclass(frozen=True)
class V3ModuleB(WidthSpec):
    """17x17 module with factorized 7x7 convolutions ("Rethinking" Figure 6: mixed4-7).

    Branches: 1x1 | 1x1 -> 1x7 -> 7x1 | 1x1 -> 7x1 -> 1x7 -> 7x1 -> 1x7 | avg pool -> 1x1.

    Args:
        conv1x1: int. The 1x1 branch.
        channels_7x7: int. Width inside both factorized branches: their 1x1 reduce and
            every 1x7/7x1 convolution but the last (128, 160, 160, 192 in InceptionV3).
            Marked `REDUCE`, so `bottleneck_ratio` scales it.
        conv7x7: int. The last convolution (7x1) of the single factorized 7x7 branch.
        conv7x7dbl: int. The last convolution (1x7) of the double factorized branch.
        pool_proj: int. 1x1 projection after the average pool.
    """

    conv1x1: int
    channels_7x7: int = dataclasses.field(metadata=REDUCE)
    conv7x7: int
    conv7x7dbl: int
    pool_proj: int

    @property
    def out_channels(self) -> int:
        return self.conv1x1 + self.conv7x7 + self.conv7x7dbl + self.pool_proj


@dataclasses.dataclass(frozen=True)
class V3ReductionB(WidthSpec):
    """17x17 -> 8x8 grid reduction (InceptionV3 mixed8 / Mixed_7a).

    Branches: 1x1 -> 3x3/2 | 1x1 -> 1x7 -> 7x1 -> 3x3/2 | 3x3/2 max pool.

    Args:
        reduce3x3: int. 1x1 reduce in front of the 3x3/2 convolution.
        conv3x3: int. The 3x3/2 convolution.
        reduce7x7x3: int. Width of the 1x1, 1x7 and 7x1 convolutions of the second branch.
        conv7x7x3: int. Its final 3x3/2 convolution.
    """

    reduce3x3: int = dataclasses.field(metadata=REDUCE)
    conv3x3: int
    reduce7x7x3: int = dataclasses.field(metadata=REDUCE)
    conv7x7x3: int

    def output_channels(self, in_channels: int) -> int:
        """Output width: the convolution branches plus the pooled input."""
        return self.conv3x3 + self.conv7x7x3 + in_channels


@dataclasses.dataclass(frozen=True)
class V3ModuleC(WidthSpec):
    """8x8 module with expanded filter banks ("Rethinking" Figure 7: mixed9-10).

    Branches: 1x1 | 1x1 -> (1x3, 3x1) | 1x1 -> 3x3 -> (1x3, 3x1) | avg pool -> 1x1, where
    `(1x3, 3x1)` are two parallel convolutions whose outputs are concatenated.

    Args:
        conv1x1: int. The 1x1 branch.
        reduce3x3: int. 1x1 reduce in front of the parallel 1x3 / 3x1 pair.
        conv3x3: int. Each of the 1x3 and 3x1 convolutions (the branch gives twice this).
        reduce3x3dbl: int. 1x1 reduce in front of the 3x3 convolution.
        conv3x3dbl: int. The 3x3 convolution and each of the 1x3 / 3x1 after it.
        pool_proj: int. 1x1 projection after the average pool.
    """

    conv1x1: int
    reduce3x3: int = dataclasses.field(metadata=REDUCE)
    conv3x3: int
    reduce3x3dbl: int = dataclasses.field(metadata=REDUCE)
    conv3x3dbl: int
    pool_proj: int

    @property
    def out_channels(self) -> int:
        return self.conv1x1 + 2 * self.conv3x3 + 2 * self.conv3x3dbl + self.pool_proj


# --- BN-Inception (Ioffe & Szegedy 2015), TF-Slim inception_v2 widths --------------------


@dataclasses.dataclass(frozen=True)
class BNInceptionStem(WidthSpec):
    """BN-Inception stem: separable 7x7/2 convolution, 1x1, 3x3 (TF-Slim inception_v2).

    Args:
        conv1a: int. Output width of the separable 7x7/2 convolution (64).
        conv2b: int. 1x1 convolution (64).
        conv2c: int. 3x3 convolution (192).
    """

    conv1a: int
    conv2b: int
    conv2c: int

    @property
    def depth_multiplier(self) -> int:
        """Depthwise multiplier of the separable convolution: TF-Slim's
        `min(int(conv1a / 3), 8)` (so that `3 * multiplier <= conv1a`), at least 1."""
        return max(min(self.conv1a // 3, 8), 1)

    @property
    def out_channels(self) -> int:
        return self.conv2c


@dataclasses.dataclass(frozen=True)
class BNModule(WidthSpec):
    """BN-Inception module: the 5x5 branch factorized into two 3x3 (Mixed_3b-c, 4b-e, 5b-c).

    Branches: 1x1 | 1x1 -> 3x3 | 1x1 -> 3x3 -> 3x3 | 3x3 pool -> 1x1.

    Args:
        conv1x1: int. The 1x1 branch.
        reduce3x3: int. 1x1 reduce in front of the 3x3 convolution.
        conv3x3: int. The 3x3 convolution.
        reduce3x3dbl: int. 1x1 reduce in front of the two stacked 3x3 convolutions.
        conv3x3dbl: int. Each of the two stacked 3x3 convolutions.
        pool_proj: int. 1x1 projection after the pool.
        pool: str. "avg" or "max": the pool of the last branch (max only in Mixed_5c).
            Not a width; never scaled.
    """

    conv1x1: int
    reduce3x3: int = dataclasses.field(metadata=REDUCE)
    conv3x3: int
    reduce3x3dbl: int = dataclasses.field(metadata=REDUCE)
    conv3x3dbl: int
    pool_proj: int
    pool: str = dataclasses.field(default="avg", metadata=OPTION)

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.pool not in ("avg", "max"):
            raise ValueError(f"BNModule.pool must be 'avg' or 'max'; received {self.pool!r}")

    @property
    def out_channels(self) -> int:
        return self.conv1x1 + self.conv3x3 + self.conv3x3dbl + self.pool_proj


@dataclasses.dataclass(frozen=True)
class BNReduction(WidthSpec):
    """BN-Inception grid reduction (Mixed_4a, Mixed_5a).

    Branches: 1x1 -> 3x3/2 | 1x1 -> 3x3 -> 3x3/2 | 3x3/2 max pool.

    Args:
        reduce3x3: int. 1x1 reduce in front of the 3x3/2 convolution.
        conv3x3: int. The 3x3/2 convolution.
        reduce3x3dbl: int. 1x1 reduce in front of the two stacked 3x3 convolutions.
        conv3x3dbl: int. Each of the two stacked 3x3 convolutions (the second is /2).
    """

    reduce3x3: int = dataclasses.field(metadata=REDUCE)
    conv3x3: int
    reduce3x3dbl: int = dataclasses.field(metadata=REDUCE)
    conv3x3dbl: int

    def output_channels(self, in_channels: int) -> int:
        """Output width: the convolution branches plus the pooled input."""
        return self.conv3x3 + self.conv3x3dbl + in_channels


# Every spec kind that may appear in a table, by class name (for save_specs/load_specs).
SPEC_TYPES: dict[str, type] = {
    cls.__name__: cls
    for cls in (
        V1Stem,
        V1Module,
        V3Stem,
        V2Stem,
        V3ModuleA,
        V3ReductionA,
        V3ModuleB,
        V3ReductionB,
        V3ModuleC,
        BNInceptionStem,
        BNModule,
        BNReduction,
    )
}


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
        if f.metadata.get("option"):
            continue
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
