"""Converts published ImageNet weights into a Keras weights file, and prints the call
that loads it.

    python -m keras_inception.convert torchvision googlenet-1378be20.pth -o googlenet.weights.h5
    python -m keras_inception.convert slim inception_v1.ckpt -o inception_v1.weights.h5

The model name comes from `--model`, or else from the file name (the first of
"googlenet", "inception_v1", "inception_v2", "inception_v3" it contains). The Python
code that builds the model with the converted weights is printed on stdout; the summary
(weights assigned, source tensors skipped) goes to stderr. Before printing, the builder
is called with those keyword arguments: the model it builds loads the file and holds the
same weights.

Each source is a module of `keras_inception.pretrained` holding its `CONVERTER` (a
`keras_inception.pretrained.converter.Converter`); it is imported only when its
subcommand runs.
"""

from __future__ import annotations

import argparse
import importlib
import json
import os
import sys
from collections.abc import Callable, Mapping, Sequence
from typing import Any

from keras_inception.pretrained.converter import format_call

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


def _check_rebuilt(builder: Callable, kwargs: Mapping[str, Any], model) -> None:
    """Builds `builder(**kwargs)` (which loads the written file) and checks that it holds
    every weight of `model`."""
    import numpy as np

    rebuilt = builder(**kwargs)
    theirs = [np.asarray(w) for w in rebuilt.get_weights()]
    ours = [np.asarray(w) for w in model.get_weights()]
    same = len(theirs) == len(ours) and all(
        a.shape == b.shape and np.array_equal(a, b) for a, b in zip(theirs, ours, strict=True)
    )
    if not same:
        raise RuntimeError(
            f"{format_call(builder, kwargs)} does not reproduce the converted model; "
            "please report this"
        )


def convert_file(
    source: str,
    path: str,
    output: str,
    *,
    name: str | None = None,
    check: bool = True,
    **kwargs: Any,
) -> tuple[Callable, dict[str, Any], list[str]]:
    """Converts `path` with the `source` converter and writes `output` (`.weights.h5`).

    Args:
        source: str. "torchvision" or "slim".
        path: str. The published file (a torchvision state dict, a TF-Slim checkpoint).
        output: str. Weights file to write; must end in `.weights.h5`.
        name: str or None. Model name; None guesses it from the file name.
        check: bool. Call the builder with the returned keyword arguments and check
            that it loads `output` into the same weights. Defaults to True.
        **kwargs: passed to the converter's `convert` and `builder_kwargs`.

    Returns:
        `(builder, builder_kwargs, skipped)`: `builder(**builder_kwargs)` builds the
        model with the converted weights (`weights=output`); `skipped` names the source
        tensors left out. `x.architecture.json` beside `x.weights.h5` records the builder,
        its arguments and the input normalization the weights expect.

    Example:
    >>> builder, kwargs, skipped = convert_file(
    ...     "torchvision", "googlenet-1378be20.pth", "googlenet.weights.h5")  # doctest: +SKIP
    >>> model = builder(**kwargs)  # doctest: +SKIP
    """
    output = os.fspath(output)
    if not output.endswith(".weights.h5"):
        raise ValueError(f"the output file must end in .weights.h5; received {output!r}")
    converter = source_module(source).CONVERTER
    name = name or guess_name(source, path)
    model, skipped = converter.convert(name, path, **kwargs)
    outputs = model.output
    main = outputs["main"] if isinstance(outputs, dict) else outputs
    if len(main.shape) == 2:  # the file's classes (a fine-tuned model has its own)
        kwargs = {**kwargs, "classes": int(main.shape[-1])}
    builder_kwargs = {**converter.builder_kwargs(name, **kwargs), "weights": output}
    parent = os.path.dirname(output)
    if parent:
        os.makedirs(parent, exist_ok=True)
    model.save_weights(output)
    builder = converter.builders[name]
    # Beside it, the architecture (`train --init-weights` rebuilds the model from it).
    record = {
        "builder": builder.__name__,
        "kwargs": {k: v for k, v in builder_kwargs.items() if k != "weights"},
        "source": source,
        "preprocessing": {"torchvision": "torch"}.get(source, "inception"),
    }
    with open(output.removesuffix(".weights.h5") + ".architecture.json", "w") as f:
        json.dump(record, f, indent=2)
    if check:
        _check_rebuilt(builder, builder_kwargs, model)
    return builder, builder_kwargs, skipped


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
        builder, builder_kwargs, skipped = convert_file(
            args.source, args.path, args.output, name=args.model, **kwargs
        )
    except (ValueError, FileNotFoundError, ImportError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    summary = source_module(args.source).CONVERTER.summarize(skipped)
    print(
        f"wrote {args.output}; skipped {len(skipped)} source tensors: {summary}",
        file=sys.stderr,
    )
    print("import keras_inception")
    print()
    print(f"model = {format_call(builder, builder_kwargs)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
