"""Configuration fields that know their rule, their help text and their flag.

`TrainConfig` and `TuneConfig` declare each field with `option(...)`: its default, its
help, the rule its value must follow (`Rule`), and the choices it takes. The same
metadata validates the dataclass (`check_fields`) and generates the command line
(`add_flags`), so the command line's defaults are the dataclass's, and a value is checked
in one place. A bad value raises `ConfigError`, which names the fields in Python
(`random_erasing=0.5 with augment=False`) and, through `ConfigError.for_flags`, in the
flags the user typed (`--random-erasing 0.5 with --no-augment`).

Example:

```python
@dataclasses.dataclass(frozen=True)
class Config:
    epochs: int = option(10, "epochs to train", rule=POSITIVE_INT)

    def __post_init__(self):
        check_fields(self)

parser = argparse.ArgumentParser()
add_flags(parser, Config)  # --epochs (int, default 10, "expected a positive integer")
```
"""

from __future__ import annotations

import argparse
import dataclasses
import math
from collections.abc import Callable, Iterable, Mapping
from typing import Any


@dataclasses.dataclass(frozen=True)
class Rule:
    """What a field's value must be.

    Args:
        kind: type. int, float or str: what the command line parses.
        expected: str. What the rule asks for, in words ("a positive integer").
        test: callable. Value -> whether it follows the rule (the value already has
            `kind`'s type, or is an int for a float rule).
    """

    kind: type
    expected: str
    test: Callable[[Any], bool]

    def accepts(self, value: Any) -> bool:
        if isinstance(value, bool):
            return False
        if self.kind is float:
            if not isinstance(value, int | float) or not math.isfinite(value):
                return False
        elif not isinstance(value, self.kind):
            return False
        return bool(self.test(value))

    def parse(self, text: str) -> Any:
        """The command line's `type=`: the value of `text`, or argparse's error."""
        try:
            value = self.kind(text)
        except ValueError:
            raise argparse.ArgumentTypeError(
                f"expected {self.expected}; received {text!r}"
            ) from None
        if not self.accepts(value):
            raise argparse.ArgumentTypeError(f"expected {self.expected}; received {text!r}")
        return value


POSITIVE_INT = Rule(int, "a positive integer", lambda v: v >= 1)
NONNEGATIVE_INT = Rule(int, "an integer >= 0", lambda v: v >= 0)
INT = Rule(int, "an integer", lambda v: True)
NUMBER = Rule(float, "a number", lambda v: True)
POSITIVE = Rule(float, "a positive number", lambda v: v > 0)
NONNEGATIVE = Rule(float, "a number >= 0", lambda v: v >= 0)
PROBABILITY = Rule(float, "a probability in [0, 1]", lambda v: 0 <= v <= 1)
FRACTION = Rule(float, "a number in [0, 1)", lambda v: 0 <= v < 1)
TEXT = Rule(str, "a non-empty string", lambda v: bool(v))


def option(
    default: Any,
    help: str,
    *,
    rule: Rule | None = None,
    choices: Iterable[str] | Callable[[], Iterable[str]] | None = None,
    flag: bool = True,
) -> Any:
    """A dataclass field with its rule, help and choices (see the module docstring).

    Args:
        default: the field's default (None: the field is optional; the rule applies to
            other values).
        help: str. The flag's help text; `add_flags` adds the default.
        rule: Rule or None. What a value must be; None for bool fields and choices.
        choices: the values allowed (or a function returning them, called when checked).
        flag: bool. Whether `add_flags` makes a flag of it.
    """
    return dataclasses.field(
        default=default, metadata={"help": help, "rule": rule, "choices": choices, "flag": flag}
    )


def flag_name(name: str) -> str:
    """The command-line flag of field `name`: `random_erasing` -> `--random-erasing`."""
    return "--" + name.replace("_", "-")


def _flag_with_value(name: str, value: Any) -> str:
    if isinstance(value, bool):
        return flag_name(name) if value else "--no-" + name.replace("_", "-")
    return f"{flag_name(name)} {value}"


class ConfigError(ValueError):
    """A configuration value (or combination) that is refused.

    Args:
        fields: dict. The fields concerned, first the one the rule is about, and their
            values.
        rule: str. What is wrong, worded after the first field's name ("must be a
            positive integer").
    """

    def __init__(self, fields: Mapping[str, Any], rule: str):
        self.fields = dict(fields)
        self.rule = rule
        super().__init__(self._message(lambda name: name, lambda name, value: f"{name}={value!r}"))

    def _message(self, name_of, show) -> str:
        names = list(self.fields)
        if len(names) == 1:
            received = repr(self.fields[names[0]])
        else:
            received = " with ".join(show(name, value) for name, value in self.fields.items())
        return f"{name_of(names[0])} {self.rule}; received {received}"

    def for_flags(self) -> str:
        """The message in command-line flags: `--epochs must be ...; received 0`."""
        return self._message(flag_name, _flag_with_value)


def _choices(meta: Mapping[str, Any]) -> list[str] | None:
    choices = meta.get("choices")
    if choices is None:
        return None
    return list(choices() if callable(choices) else choices)


def check_fields(config: Any) -> None:
    """Checks every field of dataclass `config` against its rule and choices.

    Raises:
        ConfigError: the first field that breaks its rule, naming it and the value.
    """
    for field in dataclasses.fields(config):
        value = getattr(config, field.name)
        meta = field.metadata
        if value is None and field.default is None:
            continue
        rule = meta.get("rule")
        if rule is not None and not rule.accepts(value):
            raise ConfigError({field.name: value}, f"must be {rule.expected}")
        choices = _choices(meta)
        if choices is not None and value not in choices:
            raise ConfigError({field.name: value}, f"must be one of {choices}")
        is_flag = rule is None and choices is None and isinstance(field.default, bool)
        if is_flag and not isinstance(value, bool):
            raise ConfigError({field.name: value}, "must be True or False")


def add_flags(
    parser: argparse.ArgumentParser, cls: type, *, exclude: Iterable[str] = ()
) -> list[str]:
    """Adds a flag for every field of dataclass `cls` (but `exclude` and `flag=False`
    ones): bools as `--x/--no-x`, the others typed by their rule, with their choices and
    default. Returns the field names added (the parsed namespace's keys)."""
    added = []
    for field in dataclasses.fields(cls):
        meta = field.metadata
        if field.name in exclude or not meta.get("flag", True) or "help" not in meta:
            continue
        # argparse expands %-formats in help texts: "40%" must be written "40%%".
        kwargs: dict[str, Any] = {"default": field.default, "help": meta["help"].replace("%", "%%")}
        if isinstance(field.default, bool):
            kwargs["action"] = argparse.BooleanOptionalAction
        else:
            rule = meta.get("rule")
            if rule is not None:
                kwargs["type"] = rule.parse
            choices = _choices(meta)
            if choices is not None:
                kwargs["choices"] = choices
        parser.add_argument(flag_name(field.name), dest=field.name, **kwargs)
        added.append(field.name)
    return added


class HelpFormatter(argparse.ArgumentDefaultsHelpFormatter):
    """Shows each flag's default, but not "None" (the help text says what None means)."""

    def _get_help_string(self, action):
        if action.default is None:
            return action.help
        return super()._get_help_string(action)
