"""`python -m training {train,evaluate,export,tune}`: parses flags and calls the library.

Bad flags or paths end in a one-line error and exit status 2, not a traceback.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import sys

from keras_inception import list_models, registry
from training import train as train_lib
from training import tuning
from training.batchnorm import DEFAULT_IMAGES as DEFAULT_PRECISE_BN_IMAGES
from training.config import TrainConfig
from training.evaluate import (
    CROPS,
    evaluate_saved_model,
    export_saved_model,
    format_per_class,
    plot_dir_for,
)
from training.presets import PRESETS
from training.strategy import STRATEGIES


def _positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"expected a positive integer; received {text!r}"
        ) from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"expected a positive integer; received {text!r}")
    return value


def _nonnegative_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected an integer >= 0; received {text!r}") from None
    if value < 0:
        raise argparse.ArgumentTypeError(f"expected an integer >= 0; received {text!r}")
    return value


def _momentum(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"expected a number in [0, 1); received {text!r}"
        ) from None
    if not 0 <= value < 1:
        raise argparse.ArgumentTypeError(f"expected a number in [0, 1); received {text!r}")
    return value


def _probability(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"expected a probability in [0, 1]; received {text!r}"
        ) from None
    if not 0 <= value <= 1:
        raise argparse.ArgumentTypeError(f"expected a probability in [0, 1]; received {text!r}")
    return value


def _positive_float(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a positive number; received {text!r}") from None
    if not value > 0:
        raise argparse.ArgumentTypeError(f"expected a positive number; received {text!r}")
    return value


def _add_train_flags(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--model", default="googlenet", choices=list_models(), help="model name")
    parser.add_argument(
        "--dataset",
        default="fashion_mnist",
        help="a TFDS name (cifar10, imagenette, imagenet2012, ...), fashion_mnist "
        "(offline from idx files) or imagefolder (root/<class>/*.jpg)",
    )
    parser.add_argument("--data-dir", help="TFDS data_dir, idx-file folder or image-folder root")
    parser.add_argument(
        "--image-size", type=_positive_int, help="model input side (default: the data's own)"
    )
    parser.add_argument("--batch-size", type=_positive_int, default=128, help="global batch size")
    parser.add_argument("--epochs", type=_positive_int, default=10, help="epochs to train")
    parser.add_argument(
        "--train-limit", type=_positive_int, help="use the first N training examples"
    )
    parser.add_argument(
        "--val-fraction",
        type=float,
        default=0.1,
        help="held-out fraction where the data has no validation split (default 0.1)",
    )
    parser.add_argument(
        "--stem",
        choices=sorted({stem for name in list_models() for stem in registry.stems(name)}),
        help="model stem (default: small for images <= 64 px, else imagenet; small_pool: "
        "googlenet only, the small stem and a 3x3/2 max pool)",
    )
    parser.add_argument(
        "--width-multiplier",
        type=_positive_float,
        default=1.0,
        help="scale every conv width: max(int(w * m), --min-depth) (default 1.0)",
    )
    parser.add_argument(
        "--min-depth", type=_positive_int, default=16, help="smallest conv width (default 16)"
    )
    parser.add_argument(
        "--bottleneck-ratio",
        type=_positive_float,
        default=1.0,
        help="scale of the 1x1 reduce convolutions",
    )
    parser.add_argument(
        "--aux",
        action=argparse.BooleanOptionalAction,
        default=True,
        help="train with the auxiliary classifiers (default: on)",
    )
    parser.add_argument("--aux-loss-weight", type=float, help="override the aux loss weights")
    parser.add_argument("--dropout", type=float, help="override the dropout before the classifier")
    parser.add_argument(
        "--preset",
        default="default",
        choices=sorted(PRESETS),
        # argparse expands %-formats in help texts: "-4%" must be written "-4%%"
        help="; ".join(f"{p.name}: {p.description}" for p in PRESETS.values()).replace("%", "%%"),
    )
    parser.add_argument("--learning-rate", type=_positive_float, help="override the preset's")
    parser.add_argument("--warmup-epochs", type=float, help="override the preset's warmup")
    parser.add_argument("--label-smoothing", type=float, help="override the preset's")
    parser.add_argument(
        "--strategy",
        choices=list(STRATEGIES),
        default="auto",
        help="auto: multiworker when TF_CONFIG names more than one worker, else mirrored; "
        "mirrored: the GPUs (or --replicas logical CPUs) of this machine; multiworker: "
        "MultiWorkerMirroredStrategy over the hosts of TF_CONFIG (run the same command on "
        "each); onedevice: one GPU or the CPU",
    )
    parser.add_argument(
        "--replicas",
        type=_positive_int,
        help="on CPU, split the CPU into N logical devices for MirroredStrategy "
        "(GPUs: all visible are used)",
    )
    parser.add_argument(
        "--mixed-precision",
        action="store_true",
        help="mixed_float16 on GPU, mixed_bfloat16 on CPU (final layers stay float32)",
    )
    parser.add_argument(
        "--sync-batch-norm", action="store_true", help="synchronized BN across replicas"
    )
    parser.add_argument(
        "--no-fused-batch-norm",
        dest="fused_batch_norm",
        action="store_false",
        help="Keras's own BatchNormalization instead of TensorFlow's fused kernel",
    )
    parser.add_argument(
        "--seed", type=int, default=0, help="seed of weights, data order and augmentation"
    )
    parser.add_argument(
        "--deterministic", action="store_true", help="deterministic ops and data order"
    )
    parser.add_argument(
        "--augment", action=argparse.BooleanOptionalAction, default=True, help="augmentation"
    )
    parser.add_argument(
        "--flip",
        action=argparse.BooleanOptionalAction,
        default=True,
        help="random horizontal flips in the augmentation (default: on); --no-flip for data "
        "whose mirror image is something else: digits, text, many signs",
    )
    parser.add_argument(
        "--random-erasing",
        type=_probability,
        default=0.0,
        help="probability of erasing a random rectangle (2-40%% of the image) of each "
        "training image, Zhong et al. 2017 (default 0: off)",
    )
    parser.add_argument(
        "--bn-momentum",
        type=_momentum,
        default=0.99,
        help="momentum of the batch-norm moving averages (default 0.99, a horizon of about "
        "100 steps)",
    )
    parser.add_argument(
        "--precise-bn-images",
        type=_nonnegative_int,
        default=DEFAULT_PRECISE_BN_IMAGES,
        help="before every validation and the final test, re-estimate the batch-norm "
        "statistics over this many training images with the current weights (default "
        f"{DEFAULT_PRECISE_BN_IMAGES}); 0 keeps the moving averages",
    )
    parser.add_argument("--workdir", required=True, help="where the run's files go")
    parser.add_argument(
        "--overwrite", action="store_true", help="delete the workdir's earlier run and retrain"
    )


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m training", description="Train, evaluate and export Inception models."
    )
    commands = parser.add_subparsers(dest="command", required=True)
    train = commands.add_parser(
        "train",
        help="train, evaluate on the test split, export",
        description="Train a model; rerun the same command on the same workdir to resume.",
    )
    _add_train_flags(train)
    train.add_argument(
        "--connect-timeout",
        type=_positive_float,
        default=300.0,
        help="multiworker: seconds to wait for every worker of TF_CONFIG (default 300)",
    )
    train.add_argument(
        "--time-budget-minutes",
        type=_positive_float,
        help="wall-time budget: train as many of --epochs as fit, measured on this machine "
        "before training (the schedule is made for that many; plan.json in the workdir)",
    )
    train.add_argument(
        "--no-export",
        dest="export",
        action="store_false",
        help="skip the SavedModel (export/, half a minute on 2 CPU cores); "
        "`python -m training export` writes it later",
    )

    evaluate = commands.add_parser(
        "evaluate", help="evaluate a saved model: single-crop and 10-crop"
    )
    evaluate.add_argument("model_path", help="a .keras file or a training workdir")
    evaluate.add_argument(
        "--dataset", default="fashion_mnist", help="a TFDS name, fashion_mnist or imagefolder"
    )
    evaluate.add_argument("--data-dir", help="TFDS data_dir, idx-file folder or image root")
    evaluate.add_argument("--batch-size", type=_positive_int, default=128, help="batch size")
    evaluate.add_argument(
        "--crops",
        choices=[*CROPS, "both", "all"],
        default="both",
        help="single: one centre view; flip: it and its mirror image, averaged (test-time "
        "augmentation); ten: GoogLeNet's 10 crops; both: single and ten (default); all",
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
        "and best_specs.json. Rerun the same command on the same workdir to resume.",
    )
    _add_train_flags(tune)
    tune.add_argument(
        "--space",
        choices=["per_module", "bottleneck_ratio"],
        default="per_module",
        help="every module's reduce widths, or one global bottleneck ratio",
    )
    tune.add_argument(
        "--tuner",
        choices=["random", "bayesian", "hyperband"],
        default="random",
        help="bayesian needs scikit-learn (keras-tuner[bayesian])",
    )
    tune.add_argument(
        "--max-trials",
        type=_positive_int,
        default=10,
        help="trials, rejected ones included (hyperband: unused, --epochs is max_epochs)",
    )
    tune.add_argument(
        "--max-params",
        type=_positive_int,
        help="reject models with more parameters (inference model: auxiliary heads stripped)",
    )
    tune.add_argument(
        "--max-macs",
        type=_positive_int,
        help="reject models with more multiply-adds per image (inference model)",
    )
    tune.add_argument(
        "--search-learning-rate", action="store_true", help="also search the learning rate"
    )
    tune.add_argument(
        "--search-aux-weight", action="store_true", help="also search the aux loss weight"
    )

    export = commands.add_parser("export", help="write a SavedModel of the inference model")
    export.add_argument("model_path", help="a .keras file or a training workdir")
    export.add_argument("--output", required=True, help="SavedModel directory")
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        if args.command == "train":
            options = vars(args).copy()
            workdir = options.pop("workdir")
            overwrite = options.pop("overwrite")
            connect_timeout = options.pop("connect_timeout")
            export = options.pop("export")
            options.pop("command")
            train_lib.train_and_evaluate(
                TrainConfig(**options),
                workdir,
                overwrite=overwrite,
                connect_timeout=connect_timeout,
                export=export,
            )
        elif args.command == "tune":
            options = vars(args).copy()
            workdir = options.pop("workdir")
            options.pop("command")
            if options.pop("overwrite"):
                raise ValueError("tune resumes its workdir; --overwrite is not supported")
            tune_options = {
                name: options.pop(name)
                for name in [f.name for f in dataclasses.fields(tuning.TuneConfig)]
            }
            tuning.tune(TrainConfig(**options), tuning.TuneConfig(**tune_options), workdir)
        elif args.command == "evaluate":
            crops = {"both": ("single", "ten"), "all": CROPS}.get(args.crops, (args.crops,))
            results = evaluate_saved_model(
                args.model_path,
                dataset=args.dataset,
                data_dir=args.data_dir,
                batch_size=args.batch_size,
                crops=crops,
                plot_dir=args.plot_dir or plot_dir_for(args.model_path),
            )
            for crop, result in results.items():
                table = format_per_class(
                    result["per_class"], result["confusion"], result["class_names"]
                )
                print(f"Test accuracy per class, {crop} crop:", *table, sep="\n")
                print(f"Confusion matrix written to {result['confusion_plot']}\n")
            # The JSON last, and without the per-class lists (the table and plot show them).
            bulky = ("per_class", "confusion", "class_names")
            summary = {
                crop: {k: v for k, v in result.items() if k not in bulky}
                for crop, result in results.items()
            }
            print(json.dumps(summary, indent=2))
        else:
            print(f"SavedModel written to {export_saved_model(args.model_path, args.output)}")
    except (ValueError, FileNotFoundError, RuntimeError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    return 0
