"""The one patch of a private Keras API: a subclass serialized under a public class's name.

`serialize_as(FusedBatchNormalization, keras.layers.BatchNormalization)` makes Keras
write our fused batch norm into `.keras` files (and `get_config`, `to_json`) as Keras's
own layer: `"module": "keras.layers", "class_name": "BatchNormalization",
"registered_name": None`. So the files load where only Keras is installed (STYLE.md,
principle 14).

Why a private API: `keras.saving.serialize_keras_object` names an object after its class
(`obj.__class__`), looked up first in `keras.src.api_export.REGISTERED_OBJS_TO_NAMES`
(class -> `keras.*` name, Keras's own exported symbols), then in the custom-object
registry (`package>name`). Nothing public, and no method of the object, changes that
name. The patch adds one entry to that dict, `cls -> "keras.layers.BatchNormalization"`.
The reverse dict (`REGISTERED_NAMES_TO_OBJS`, which loading reads) is left alone, so the
public name still loads Keras's own class; `get_name_from_symbol`, which reads the dict,
has no other caller in Keras 3.15 than the serializer.

Written for Keras 3.15 (`keras/src/api_export.py` and `serialize_with_public_class` in
`keras/src/saving/serialization_lib.py`). `serialize_as` checks what it relies on rather
than trusting the version: after patching it asks the serializer for the class's name,
and on any other answer than the public one (or a missing private name) it undoes the
patch and warns, naming the Keras version found and the one written for; the class is
then serialized as Keras does by default (under its registered name: files that need
`keras_inception` to load). tests/test_portable_files.py fails when either the check
fails or the installed Keras is not the version written for.
"""

from __future__ import annotations

import warnings

import keras

# The Keras release (major, minor) whose private serialization API this module patches.
WRITTEN_FOR = (3, 15)


def keras_version() -> tuple[int, int]:
    """The installed Keras's (major, minor)."""
    major, minor = keras.version().split(".")[:2]
    return int(major), int(minor)


def _decline(cls: type, reason: str) -> bool:
    found = ".".join(map(str, keras_version()))
    written_for = ".".join(map(str, WRITTEN_FOR))
    warnings.warn(
        f"keras_inception: {reason} (Keras {found}; keras_inception.keras_private was "
        f"written for Keras {written_for}). {cls.__qualname__} layers are saved as "
        f"{keras.saving.get_registered_name(cls)!r}: such files load only where "
        "keras_inception is imported.",
        RuntimeWarning,
        stacklevel=3,
    )
    return False


def serialize_as(cls: type, public_cls: type) -> bool:
    """Makes Keras serialize instances of `cls` as the public Keras class `public_cls`.

    Args:
        cls: type. A subclass of `public_cls` whose `get_config` is `public_cls`'s, so
            that the config builds a `public_cls`.
        public_cls: type. A class Keras exports, e.g. `keras.layers.BatchNormalization`.

    Returns:
        True when applied and checked; False (with a RuntimeWarning) when this Keras's
        private API is not the one this module was written for, in which case nothing
        is changed.
    """
    try:
        from keras.src import api_export
        from keras.src.saving import serialization_lib
    except ImportError as err:
        return _decline(cls, f"Keras's private serialization modules are gone ({err})")
    names = getattr(api_export, "REGISTERED_OBJS_TO_NAMES", None)
    get_name = getattr(api_export, "get_name_from_symbol", None)
    serialize_public = getattr(serialization_lib, "serialize_with_public_class", None)
    if not isinstance(names, dict) or get_name is None or serialize_public is None:
        return _decline(cls, "Keras's private serialization API has changed")
    public_name = get_name(public_cls)
    if public_name is None:
        return _decline(cls, f"Keras exports no name for {public_cls.__qualname__}")
    names[cls] = public_name
    module, class_name = public_name.rsplit(".", 1)
    expected = {"module": module, "class_name": class_name, "registered_name": None}
    try:
        config = serialize_public(cls, inner_config={})
        answer = {key: config.get(key) for key in expected} if config else None
    except Exception as err:  # any failure of the private call is the same decline
        answer = f"{type(err).__name__}: {err}"
    if answer != expected:
        del names[cls]
        return _decline(
            cls, f"Keras's serializer named {cls.__qualname__} {answer!r}, not {expected!r}"
        )
    return True
