"""Converts published ImageNet weights into a Keras weights file, and prints the call
that loads it.

    python -m keras_inception.convert torchvision googlenet-1378be20.pth -o googlenet.weights.h5
    python -m keras_inception.convert slim inception_v1.ckpt -o inception_v1.weights.h5

The model name comes from `--model`, or else from the file name (the first of
"googlenet", "inception_v1", "inception_v2", "inception_v3" it contains). The Python
code that builds the model with the converted weights is printed on stdout; the summary
(weights assigned, source tensors skipped) goes to stderr. Before printing, the call is
checked: the model it builds loads the file and holds the same weights.

Each source is a module of `keras_inception.pretrained` with `convert(name, path,
**kwargs) -> (model, skipped tensor names)` and `builder_call(name, **kwargs) -> str`;
it is imported only when its subcommand runs.
"""

from __future__ import annotations

import argparse
import importlib
import inspect
import os
import sys
from collections.abc import Sequence
from typing import Any

# Subcommand -> module of keras_inception.pretrained, and the names it converts.
SOURCES = {
    "torchvision": ("keras_inception.pretrained.torchvision", ("googlenet", "inception_v3")),
    "slim": ("keras_inception.pretrained.slim", ("inception_v1", "inception_v2", "inception_v3")),
}
# File-name hints, most specific first ("googlenet" also names Slim's inception_v1).
_NAME_HINTS = ("inception_v1", "inception_v2", "inception_v3", "googlenet")


def source_module(source: str):
    """The `keras_inception.pretrained` module of `source`, imported by name."""
    if source not in SOURCES:
        raise ValueError(f"unknown source {source!r}; available: {sorted(SOURCES)}")
    module_name = SOURCES[source][0]
    try:
        return importlib.import_module(module_name)
    except ModuleNotFoundError as err:
        if err.name != module_name:
            raise
        raise ValueError(
            f"the {source!r} converter ({module_name}) is not part of this installation"
        ) from err


def guess_name(source: str, path: str) -> str:
    """The model name from the file name, e.g. "googlenet" from googlenet-1378be20.pth."""
    names = SOURCES[source][1]
    base = os.path.basename(os.fspath(path)).lower().replace("-", "_")
    for hint in _NAME_HINTS:
        if hint in base:
            name = "inception_v1" if hint == "googlenet" and source == "slim" else hint
            if name in names:
                return name
    raise ValueError(
        f"cannot tell the model from the file name {os.fspath(path)!r}; pass --model, "
        f"one of {list(names)}"
    )


def _with_weights(call: str, output: str) -> str:
    if not call.endswith(")"):
        raise ValueError(f"builder_call returned {call!r}, not a call expression")
    separator = "" if call.endswith("()") else ", "
    return f"{call[:-1]}{separator}weights={output!r})"


def _check_call(call: str, model, output: str) -> None:
    """Builds the model with `call` and checks that it loads `output` into every weight."""
    import numpy as np

    import keras_inception

    rebuilt = eval(call, {"keras_inception": keras_inception})  # our own expression
    theirs = [w.numpy() if hasattr(w, "numpy") else np.asarray(w) for w in rebuilt.weights]
    ours = [np.asarray(w) for w in model.get_weights()]
    same = len(theirs) == len(ours) and all(
        a.shape == b.shape and np.array_equal(a, b) for a, b in zip(theirs, ours, strict=True)
    )
    if not same:
        raise RuntimeError(f"{call} does not reproduce the converted model; please report this")


def convert_file(
    source: str,
    path: str,
    output: str,
    *,
    name: str | None = None,
    check: bool = True,
    **kwargs: Any,
) -> tuple[str, list[str]]:
    """Converts `path` with the `source` module and writes `output` (`.weights.h5`).

    Args:
        source: str. "torchvision" or "slim".
        path: str. The published file (a torchvision state dict, a TF-Slim checkpoint).
        output: str. Weights file to write; must end in `.weights.h5`.
        name: str or None. Model name; None guesses it from the file name.
        check: bool. Build the model with the returned call and check that it loads
            `output` into the same weights. Defaults to True.
        **kwargs: passed to the source's `convert` and `builder_call`.

    Returns:
        `(call, skipped)`: the builder call with `weights=output`, and the names of the
        source tensors left out.

    Example:
    >>> call, skipped = convert_file("torchvision", "googlenet-1378be20.pth",
    ...                              "googlenet.weights.h5")  # doctest: +SKIP
    """
    output = os.fspath(output)
    if not output.endswith(".weights.h5"):
        raise ValueError(f"the output file must end in .weights.h5; received {output!r}")
    module = source_module(source)
    name = name or guess_name(source, path)
    model, skipped = module.convert(name, path, **kwargs)
    call_kwargs = dict(kwargs)
    if "classes" in inspect.signature(module.builder_call).parameters:
        # The class count comes from the file (a fine-tuned torchvision model has its own).
        outputs = model.output
        main = outputs["main"] if isinstance(outputs, dict) else outputs
        if len(main.shape) == 2:
            call_kwargs.setdefault("classes", int(main.shape[-1]))
    call = _with_weights(module.builder_call(name, **call_kwargs), output)
    parent = os.path.dirname(output)
    if parent:
        os.makedirs(parent, exist_ok=True)
    model.save_weights(output)
    if check:
        _check_call(call, model, output)
    return call, skipped


def _input_shape(text: str) -> tuple:
    try:
        parts = tuple(None if p.strip().lower() == "none" else int(p) for p in text.split(","))
    except ValueError:
        parts = ()
    if len(parts) != 3:
        raise argparse.ArgumentTypeError(
            f"expected HEIGHT,WIDTH,CHANNELS such as 224,224,3; received {text!r}"
        )
    return parts


def _activation(text: str) -> str | None:
    return None if text.lower() == "none" else text


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m keras_inception.convert",
        description=(
            "Convert published ImageNet weights into a Keras .weights.h5 file and print "
            "the keras_inception call that loads it."
        ),
    )
    sources = parser.add_subparsers(dest="source", required=True, metavar="SOURCE")
    helps = {
        "torchvision": "a torchvision state dict (.pth needs torch; .safetensors, .npz)",
        "slim": "a TF-Slim checkpoint (inception_v1/v2/v3)",
    }
    for source, (_, names) in SOURCES.items():
        sub = sources.add_parser(source, help=helps[source], description=helps[source])
        sub.add_argument("path", help="the published file")
        sub.add_argument("-o", "--output", required=True, help="weights file (*.weights.h5)")
        sub.add_argument("--model", choices=names, help="model name (default: from the file name)")
        sub.add_argument(
            "--aux-logits", action="store_true", help="keep the auxiliary heads (extra outputs)"
        )
        sub.add_argument(
            "--input-shape",
            type=_input_shape,
            help="HEIGHT,WIDTH,CHANNELS, e.g. 227,227,3 or none,none,3 (default: the model's)",
        )
        sub.add_argument(
            "--classifier-activation",
            type=_activation,
            default=None,
            help="activation of the classifier: none (logits, the default) or softmax",
        )
        if source == "torchvision":
            sub.add_argument(
                "--transform-input",
                action="store_true",
                help="torchvision's transform_input (on in torchvision's pretrained models)",
            )
        else:
            sub.add_argument(
                "--no-background",
                action="store_true",
                help="drop TF-Slim's background class 0: 1000 outputs instead of 1001",
            )
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Command line entry point; returns the exit status."""
    args = build_parser().parse_args(argv)
    kwargs: dict[str, Any] = {
        "aux_logits": args.aux_logits,
        "input_shape": args.input_shape,
        "classifier_activation": args.classifier_activation,
    }
    if args.source == "torchvision":
        kwargs["transform_input"] = args.transform_input
    else:
        kwargs["include_background"] = not args.no_background
    try:
        call, skipped = convert_file(args.source, args.path, args.output, name=args.model, **kwargs)
    except (ValueError, FileNotFoundError, ImportError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    from keras_inception.pretrained.common import summarize

    print(
        f"wrote {args.output}; skipped {len(skipped)} source tensors: {summarize(skipped)}",
        file=sys.stderr,
    )
    print("import keras_inception")
    print()
    print(f"model = {call}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
