"""The configuration check that `train` and `tune` share before resuming a workdir.

A workdir records its job's configuration as JSON (`config.json` for `train`,
`tune_config.json` for `tune`). Rerunning on the same workdir resumes the job only when the
configuration is the same. A field added to a config dataclass after the file was written
is missing from it and counts as the field's default, so adding a field never stops an
existing run or search from resuming.
"""

from __future__ import annotations

import json
import os
from collections.abc import Mapping
from typing import Any


def changed_fields(
    previous: Mapping[str, Any],
    current: Mapping[str, Any],
    defaults: Mapping[str, Any],
    prefix: str = "",
) -> list[str]:
    """The names of `current`'s fields whose value differs from `previous`'s, sorted.

    A field missing from `previous` counts as its value in `defaults`. Nested mappings
    (present in both `current` and `defaults`) are compared field by field and named
    `f"{part}.{field}"`. Fields only `previous` has are ignored.

    Example:
    >>> changed_fields({"a": 1}, {"a": 1, "b": 2}, {"a": 0, "b": 2})
    []
    >>> changed_fields({"tune": {"x": 1}}, {"tune": {"x": 2}}, {"tune": {"x": 0}})
    ['tune.x']
    """
    changed = []
    for key, value in current.items():
        default = defaults.get(key)
        old = previous.get(key, default)
        if isinstance(value, Mapping) and isinstance(default, Mapping):
            old = old if isinstance(old, Mapping) else {}
            changed += changed_fields(old, value, default, f"{prefix}{key}.")
        elif old != value:
            changed.append(f"{prefix}{key}")
    return sorted(changed)


def check_config(
    workdir: str,
    filename: str,
    current: Mapping[str, Any],
    defaults: Mapping[str, Any],
    *,
    what: str,
    advice: str,
) -> bool:
    """Whether `workdir/filename` holds the same configuration as `current`.

    Args:
        workdir: str. The job's workdir.
        filename: str. The saved configuration's JSON file in it.
        current: Mapping. This job's configuration, as JSON would hold it (lists, not
            tuples).
        defaults: Mapping. The default configuration, the same shape: what a field
            missing from the saved file counts as.
        what: str. The job's kind in the error message ("run", "search").
        advice: str. What the user can do, ending the error message.

    Returns:
        True when the file exists and matches (the job resumes), False when there is none.

    Raises:
        ValueError: the saved configuration differs; the message names the fields.
    """
    path = os.path.join(workdir, filename)
    if not os.path.exists(path):
        return False
    with open(path, encoding="utf-8") as f:
        previous = json.load(f)
    changed = changed_fields(previous, current, defaults)
    if changed:
        raise ValueError(
            f"workdir {workdir!r} holds a {what} with another configuration (differs in "
            f"{changed}); {advice}"
        )
    return True
