"""`python -m training {train,evaluate,export,predict,tune}`: parses flags and calls the library.

`train`'s and `tune`'s flags are generated from `TrainConfig`'s and `TuneConfig`'s fields
(`training.fields`): one name, one default, one rule and one help text per setting, and
`--help` shows every default. Bad flags or paths end in a one-line error that names the
flag (or path) and exits with status 2, not a traceback.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import sys

from training import deploy, tuning
from training import train as train_lib
from training.config import TrainConfig
from training.evaluate import (
    CROPS,
    evaluate_saved_model,
    format_per_class,
)
from training.fields import POSITIVE, POSITIVE_INT, ConfigError, HelpFormatter, add_flags
from training.predict import run_predict


def _add_workdir_flags(parser: argparse.ArgumentParser, job: str, filename: str) -> None:
    parser.add_argument(
        "--workdir",
        required=True,
        help=f"where the {job}'s files go: a new or empty folder, or this {job}'s own "
        "(rerun the same command to resume)",
    )
    parser.add_argument(
        "--overwrite",
        action="store_true",
        help=f"remove the workdir's earlier {job} and start again (only a folder that holds "
        f"a {job}'s {filename}; anything else is refused and left as it is)",
    )


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m training",
        description="Train, evaluate and export Inception models.",
        formatter_class=HelpFormatter,
    )
    commands = parser.add_subparsers(dest="command", required=True)
    train = commands.add_parser(
        "train",
        help="train, evaluate on the test split, export",
        description="Train a model; rerun the same command on the same workdir to resume, "
        "or with a larger --epochs to continue a finished run.",
        formatter_class=HelpFormatter,
    )
    add_flags(train, TrainConfig)
    _add_workdir_flags(train, "run", "config.json")
    train.add_argument(
        "--connect-timeout",
        type=POSITIVE.parse,
        default=300.0,
        help="multiworker: seconds to wait for every worker of TF_CONFIG",
    )
    train.add_argument(
        "--export",
        action=argparse.BooleanOptionalAction,
        default=True,
        help="write the SavedModel (export/, half a minute on 2 CPU cores); "
        "`python -m training export WORKDIR` writes it later",
    )

    evaluate = commands.add_parser(
        "evaluate",
        help="evaluate a saved model: single-crop, flip and 10-crop",
        description="Evaluate a training workdir on its run's test images (the run's "
        "dataset, data_dir, seed, hold-out, image size and channels, from its config.json), "
        "or a .keras file on --dataset.",
        formatter_class=HelpFormatter,
    )
    evaluate.add_argument("model_path", help="a training workdir, or a .keras file")
    evaluate.add_argument(
        "--dataset",
        help="a TFDS name, fashion_mnist or imagefolder (default: the workdir's run's; "
        "needed for a .keras file)",
    )
    evaluate.add_argument(
        "--data-dir", help="TFDS data_dir, idx-file folder or image root (default: the run's)"
    )
    evaluate.add_argument(
        "--batch-size", type=POSITIVE_INT.parse, help="batch size (default: the run's, or 128)"
    )
    evaluate.add_argument(
        "--crops",
        choices=[*CROPS, "both", "all"],
        help="single: one centre view; flip: it and its mirror image, averaged (test-time "
        "augmentation); ten: GoogLeNet's 10 crops; both: single and ten; all (default: both, "
        "or single for a run trained with --no-flip)",
    )
    evaluate.add_argument(
        "--plot-dir",
        help="where confusion_<crop>.png go (default: MODEL_PATH when it is a workdir, else "
        "the .keras file's folder)",
    )

    tune = commands.add_parser(
        "tune",
        help="search the 1x1 reduce widths under a params / multiply-adds budget",
        description="KerasTuner search over bottleneck widths; writes trials.csv, pareto.png "
        "and best_specs.json (train it with `train --specs`). Rerun the same command on the "
        "same workdir to resume.",
        formatter_class=HelpFormatter,
    )
    add_flags(
        tune,
        TrainConfig,
        exclude=(
            "time_budget_minutes",
            "specs",
            "init_weights",
            "freeze_base_epochs",
            "base_lr_scale",
        ),
    )
    add_flags(tune, tuning.TuneConfig)
    _add_workdir_flags(tune, "search", tuning.CONFIG_FILE)

    export = commands.add_parser(
        "export",
        help="write the inference model as a SavedModel, ONNX, LiteRT or OpenVINO file, "
        "checked against Keras",
        formatter_class=HelpFormatter,
    )
    export.add_argument("model_path", help="a training workdir, or a .keras file")
    export.add_argument(
        "--format", default="saved_model", choices=deploy.FORMATS, help="the file's format"
    )
    export.add_argument(
        "--output",
        help="export folder (default: WORKDIR/export for a SavedModel, WORKDIR/export-FORMAT "
        "for the others)",
    )
    export.add_argument(
        "--int8",
        action="store_true",
        help="LiteRT post-training full-integer quantization (uint8 pixels in)",
    )
    export.add_argument(
        "--calibration-images",
        type=POSITIVE_INT.parse,
        default=deploy.CALIBRATION_IMAGES,
        help="training images that calibrate --int8",
    )
    export.add_argument(
        "--check-images",
        type=POSITIVE_INT.parse,
        default=deploy.CHECK_IMAGES,
        help="test images the float file is checked on against Keras",
    )
    predict = commands.add_parser(
        "predict",
        help="label images with a trained or converted model",
        formatter_class=HelpFormatter,
    )
    predict.add_argument(
        "model", help="a training workdir, a .keras file, torchvision:FILE or slim:FILE"
    )
    predict.add_argument("images", nargs="+", help="image files and folders (recursive)")
    predict.add_argument(
        "--top", type=POSITIVE_INT.parse, default=5, help="classes per image (at most the model's)"
    )
    predict.add_argument("--output", help="also write the results to FILE.csv or FILE.json")
    predict.add_argument(
        "--batch-size", type=POSITIVE_INT.parse, default=32, help="images per batch"
    )
    return parser


def _train(args: argparse.Namespace) -> None:
    options = vars(args).copy()
    for name in ("command", "workdir", "overwrite", "connect_timeout", "export"):
        options.pop(name)
    train_lib.train_and_evaluate(
        TrainConfig(**options),
        args.workdir,
        overwrite=args.overwrite,
        connect_timeout=args.connect_timeout,
        export=args.export,
    )


def _tune(args: argparse.Namespace) -> None:
    options = vars(args).copy()
    for name in ("command", "workdir", "overwrite"):
        options.pop(name)
    tune_options = {f.name: options.pop(f.name) for f in dataclasses.fields(tuning.TuneConfig)}
    tuning.tune(
        TrainConfig(**options),
        tuning.TuneConfig(**tune_options),
        args.workdir,
        overwrite=args.overwrite,
    )


def _evaluate(args: argparse.Namespace) -> None:
    crops = None
    if args.crops is not None:
        crops = {"both": ("single", "ten"), "all": CROPS}.get(args.crops, (args.crops,))
    results = evaluate_saved_model(
        args.model_path,
        dataset=args.dataset,
        data_dir=args.data_dir,
        batch_size=args.batch_size,
        crops=crops,
        plot_dir=args.plot_dir,
    )
    for crop, result in results.items():
        table = format_per_class(result["per_class"], result["confusion"], result["class_names"])
        print(f"Test accuracy per class, {crop} crop:", *table, sep="\n")
        print(f"Confusion matrix written to {result['confusion_plot']}\n")
    # The JSON last, and without the per-class lists (the table and plot show them).
    bulky = ("per_class", "confusion", "class_names")
    summary = {
        crop: {k: v for k, v in result.items() if k not in bulky}
        for crop, result in results.items()
    }
    print(json.dumps(summary, indent=2))


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        if args.command == "train":
            _train(args)
        elif args.command == "tune":
            _tune(args)
        elif args.command == "evaluate":
            _evaluate(args)
        elif args.command == "predict":
            run_predict(
                args.model,
                args.images,
                top=args.top,
                output=args.output,
                batch_size=args.batch_size,
            )
        else:
            metadata = deploy.export(
                args.model_path,
                args.format,
                args.output,
                int8=args.int8,
                calibration_images=args.calibration_images,
                check_images=args.check_images,
            )
            print(f"{metadata['format']} export written to {metadata['output']}")
            print(deploy.format_check(metadata))
    except ConfigError as err:
        print(f"error: {err.for_flags()}", file=sys.stderr)
        return 2
    except (ValueError, FileNotFoundError, RuntimeError, ImportError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    return 0
