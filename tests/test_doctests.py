"""The docstring examples of every module of `keras_inception` run, one test per module.

Examples may use, unimported, the names of `keras_inception.__all__`, `keras` and `np`.
"""

import doctest
import importlib
import pkgutil

import numpy as np
import pytest

import keras_inception as ki

MODULES = sorted(
    info.name for info in pkgutil.walk_packages(ki.__path__, prefix=f"{ki.__name__}.")
) + [ki.__name__]

# Modules owned by another change of issue 32 whose examples fail today; the lead removes
# each mark once its examples run (strict: an example that starts passing fails the mark).
XFAIL: dict[str, str] = {}


def _params():
    return [
        pytest.param(name, marks=pytest.mark.xfail(strict=True, reason=XFAIL[name]))
        if name in XFAIL
        else name
        for name in MODULES
    ]


def test_every_module_is_collected():
    assert "keras_inception.googlenet" in MODULES
    assert "keras_inception.pretrained.preprocessing" in MODULES


@pytest.mark.parametrize("name", _params())
def test_docstring_examples_run(name):
    import keras

    module = importlib.import_module(name)
    globs = {key: getattr(ki, key) for key in ki.__all__}
    globs.update(keras=keras, np=np)
    result = doctest.testmod(
        module,
        extraglobs=globs,
        optionflags=doctest.ELLIPSIS | doctest.NORMALIZE_WHITESPACE,
        verbose=False,
        report=True,
    )
    assert result.failed == 0, f"{result.failed} of {result.attempted} examples failed"
