"""The classic transfer protocol on Fashion-MNIST: `train --init-weights` against scratch.

Pretrains `make demo`'s GoogLeNet on classes 0-4 (all their training images), then trains
on classes 5-9 with a few training images a class (`--shots`, 10 and 50 by default) and
tests on those classes' 5,000 test images, four ways with the same budget (epochs, batch,
so the same steps, seed, augmentation, dropout 0 and no auxiliary heads):

* `scratch`: random weights, the `default` preset (AdamW, cosine decay), what `train`
  uses without pretrained weights;
* `init-weights, scratch's recipe`: `--init-weights PRETRAIN_WORKDIR --preset default
  --base-lr-scale 1`, the same recipe as scratch for every layer, so that only the
  starting weights differ;
* `init-weights, finetune`: `--init-weights PRETRAIN_WORKDIR`, with the `finetune`
  preset that it chooses;
* `init-weights, finetune, freeze N`: the same with `--freeze-base-epochs N` (the new
  classifier alone for N epochs, batch norm frozen in inference mode, then every layer).

Everything runs offline, through the user's own path: the idx files are written as image
folders of PNGs (`root/{train,val,test}/<class name>/<n>.png`) and each run is a
`python -m training train --dataset imagefolder` process. The validation folder of the
small runs holds `--val-per-class` other training images a class; it only reports (the
test uses the final weights). The "CPU time/wall" column is the train process's CPU time
(user + system, `resource.RUSAGE_CHILDREN`) over its wall time.

Example:

```
python -m benchmarks.transfer --workdir runs/transfer
python -m benchmarks.transfer --pretrain-per-class 200 --pretrain-epochs 1 --shots 10 \
    --epochs 4 --test-per-class 100 --freeze-base-epochs 1 --workdir /tmp/transfer
```
"""

from __future__ import annotations

import argparse
import json
import os
import pathlib
import resource
import subprocess
import sys
from collections.abc import Sequence

import numpy as np
from PIL import Image

from benchmarks import common
from benchmarks.cpu_time import CpuTime
from training.sources.idx import (
    FASHION_MNIST_CLASS_NAMES,
    FASHION_MNIST_DIRS,
    IDX_FILES,
    find_idx_files,
    read_idx,
)

SOURCE_CLASSES = (0, 1, 2, 3, 4)
TARGET_CLASSES = (5, 6, 7, 8, 9)
# `make demo`'s model (the Makefile's DEMO_FLAGS); init-weights runs take it from the source.
MODEL_FLAGS = ("--model", "googlenet", "--stem", "small_pool", "--min-depth", "16")
# Not architecture: every run gives them (without, an init-weights run adds new auxiliary
# heads and the builder's dropout 0.4).
RUN_FLAGS = ("--dropout", "0", "--no-aux")
COLUMNS = ("shots/class", "run", "test top-1", "steps", "minutes", common.CPU_COLUMN)


def select(
    labels: np.ndarray,
    classes: Sequence[int],
    per_class: int | None = None,
    skip: int = 0,
    seed: int = 0,
) -> np.ndarray:
    """Indices of `per_class` examples of each of `classes` (None: all), after the first
    `skip` of each class, in a fixed random order per `seed`; sorted.

    Example:
    >>> select(np.array([0, 1, 0, 1, 0, 2]), [0, 1], per_class=1, skip=1, seed=None)
    array([2, 3])
    """
    if per_class is not None and per_class < 1:
        raise ValueError(f"per_class must be at least 1 or None; received {per_class}")
    order = np.arange(len(labels))
    if seed is not None:
        order = np.random.default_rng(seed).permutation(len(labels))
    chosen = []
    for label in classes:
        found = order[labels[order] == label][skip:]
        if per_class is not None:
            if len(found) < per_class:
                raise ValueError(
                    f"class {label} has {len(found)} examples after skipping {skip}; "
                    f"received per_class={per_class}"
                )
            found = found[:per_class]
        chosen.append(found)
    return np.sort(np.concatenate(chosen)) if chosen else np.array([], dtype=int)


def folder_name(label: int) -> str:
    """The class folder of a Fashion-MNIST label: its name, '/' spelled '-'.

    >>> folder_name(0)
    'T-shirt-top'
    """
    return FASHION_MNIST_CLASS_NAMES[label].replace("/", "-")


def write_folder(root: str | os.PathLike, images: np.ndarray, labels: np.ndarray) -> int:
    """Writes `images` (N x H x W uint8) as gray PNGs `root/<folder_name(label)>/<i>.png`;
    returns how many.

    Example:
    >>> import tempfile
    >>> write_folder(tempfile.mkdtemp(), np.zeros((2, 4, 4), np.uint8), np.array([5, 9]))
    2
    """
    if len(images) != len(labels):
        raise ValueError(f"{len(images)} images but {len(labels)} labels")
    root = pathlib.Path(root)
    for label in np.unique(labels):
        (root / folder_name(int(label))).mkdir(parents=True, exist_ok=True)
    for i, (image, label) in enumerate(zip(images, labels, strict=True)):
        Image.fromarray(np.asarray(image, np.uint8), mode="L").save(
            root / folder_name(int(label)) / f"{i:05d}.png"
        )
    return len(images)


def load_fashion_mnist(data_dir: str | None) -> dict[str, np.ndarray]:
    """The four idx arrays, from `data_dir` or Debian's folder."""
    folders = [pathlib.Path(data_dir)] if data_dir else list(FASHION_MNIST_DIRS)
    for folder in folders:
        files = find_idx_files(folder)
        if files:
            return {key: read_idx(files[key]) for key in IDX_FILES}
    raise FileNotFoundError(f"no Fashion-MNIST idx files in {[str(f) for f in folders]}")


def write_split(
    root: pathlib.Path, data: dict[str, np.ndarray], split: str, indices: np.ndarray
) -> None:
    source = "test" if split == "test" else "train"
    write_folder(root / split, data[f"{source}_images"][indices], data[f"{source}_labels"][indices])


def prepare(args: argparse.Namespace, data: dict[str, np.ndarray]) -> dict[str, pathlib.Path]:
    """Writes the image folders: "pretrain", then one per `--shots`; returns their roots."""
    base = pathlib.Path(args.workdir) / "data"
    roots = {"pretrain": base / "pretrain"}
    train, test = data["train_labels"], data["test_labels"]
    if not (roots["pretrain"] / "test").exists():
        per = args.pretrain_per_class
        write_split(roots["pretrain"], data, "train", select(train, SOURCE_CLASSES, per, 0, None))
        test_idx = select(test, SOURCE_CLASSES, args.test_per_class, 0, None)
        write_split(roots["pretrain"], data, "test", test_idx)
    for shots in args.shots:
        root = roots[shots] = base / f"shots{shots}"
        if (root / "test").exists():
            continue
        write_split(root, data, "train", select(train, TARGET_CLASSES, shots, 0, args.seed))
        val = select(train, TARGET_CLASSES, args.val_per_class, shots, args.seed)
        write_split(root, data, "val", val)
        write_split(root, data, "test", select(test, TARGET_CLASSES, args.test_per_class, 0, None))
    return roots


def children_cpu_seconds() -> float:
    """User + system CPU time of this process's finished children, in seconds."""
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def run_train(flags: Sequence[str], workdir: pathlib.Path) -> dict:
    """Runs `python -m training train FLAGS --workdir WORKDIR` (a finished run is read
    back, not trained again); returns its metrics.json with `cpu_per_wall` and `minutes`."""
    metrics_path = workdir / "metrics.json"
    usage = CpuTime(cpu_clock=children_cpu_seconds)
    start = usage.mark()
    if not metrics_path.exists():
        command = [sys.executable, "-m", "training", "train", *flags, "--workdir", str(workdir)]
        command += ["--no-export", "--overwrite"]
        result = subprocess.run(command, capture_output=True, text=True)
        if result.returncode:
            raise RuntimeError(f"{' '.join(command)} failed:\n{result.stderr[-3000:]}")
    seconds = usage.add(start, usage.mark())
    metrics = json.loads(metrics_path.read_text())
    done = workdir / "transfer_time.json"
    if not done.exists():
        done.write_text(json.dumps({"seconds": seconds, "cpu_per_wall": usage.ratio}))
    metrics.update(json.loads(done.read_text()))
    return metrics


def variants(args: argparse.Namespace, pretrained: pathlib.Path) -> list[tuple[str, list[str]]]:
    """(run name, its own flags) of the four runs at one shot count: scratch and
    init-weights with the same recipe (the `default` preset), then init-weights as `train`
    does by default (the `finetune` preset), without and with `--freeze-base-epochs`."""
    width = ["--width-multiplier", str(args.width_multiplier)]
    init = ["--init-weights", str(pretrained)]
    freeze = args.freeze_base_epochs
    return [
        ("scratch", [*MODEL_FLAGS, *width]),
        ("init-weights, scratch's recipe", [*init, "--preset", "default", "--base-lr-scale", "1"]),
        ("init-weights, finetune", init),
        (f"init-weights, finetune, freeze {freeze}", [*init, "--freeze-base-epochs", str(freeze)]),
    ]


def row(shots: object, name: str, metrics: dict, batch_size: int) -> dict:
    """A table row from a run's metrics (see `run_train`).

    >>> row(10, "init", {"top1": 0.8123, "seconds": 90.0, "cpu_per_wall": 1.9,
    ...                  "num_train": 50, "epochs": 30}, batch_size=25)["steps"]
    60
    """
    steps = -(-metrics["num_train"] // batch_size) * metrics["epochs"]
    return {
        "shots/class": shots,
        "run": name,
        "test top-1": f"{100 * metrics['top1']:.2f}%",
        "steps": steps,
        "minutes": metrics["seconds"] / 60,
        common.CPU_COLUMN: metrics["cpu_per_wall"],
    }


def run(args: argparse.Namespace) -> list[dict]:
    data = load_fashion_mnist(args.data_dir)
    roots = prepare(args, data)
    runs = pathlib.Path(args.workdir)
    common_flags = ["--dataset", "imagefolder", "--image-size", "28", "--seed", str(args.seed)]
    pretrain_flags = [
        *common_flags, *MODEL_FLAGS, *RUN_FLAGS, "--width-multiplier", str(args.width_multiplier),
        "--data-dir", str(roots["pretrain"]), "--epochs", str(args.pretrain_epochs),
        "--batch-size", str(args.pretrain_batch_size), "--warmup-epochs", "0.2",
    ]  # fmt: skip
    pretrained = runs / "pretrain"
    metrics = run_train(pretrain_flags, pretrained)
    rows = [row("pretrain 0-4", "pretrain on classes 0-4", metrics, args.pretrain_batch_size)]
    for shots in args.shots:
        budget = [
            *common_flags, *RUN_FLAGS, "--data-dir", str(roots[shots]), "--epochs",
            str(args.epochs), "--batch-size", str(args.batch_size), "--precise-bn-images",
            str(args.precise_bn_images),
        ]  # fmt: skip
        for name, flags in variants(args, pretrained):
            slug = "".join(c if c.isalnum() else "_" for c in name)
            metrics = run_train([*budget, *flags], runs / f"shots{shots}_{slug}")
            rows.append(row(shots, name, metrics, args.batch_size))
    return rows


def describe(args: argparse.Namespace, seconds: float) -> str:
    return (
        f"Fashion-MNIST transfer: pretrain {args.pretrain_epochs} epochs on classes 0-4 "
        f"(batch {args.pretrain_batch_size}); then classes 5-9, {args.epochs} epochs at "
        f"batch {args.batch_size} per run, tested on {args.test_per_class} test "
        f"images a class; GoogLeNet width {args.width_multiplier}, seed {args.seed}; "
        f"{seconds / 60:.1f} min."
    )


def build_parser() -> argparse.ArgumentParser:
    parser = common.new_parser("transfer", __doc__)
    parser.add_argument(
        "--data-dir", default=str(FASHION_MNIST_DIRS[0]), help="folder of the four idx files"
    )
    parser.add_argument("--workdir", default="runs/transfer", help="image folders and runs")
    parser.add_argument(
        "--shots", type=common.positive_int, nargs="+", default=[10, 50],
        help="training images a class of classes 5-9",
    )  # fmt: skip
    for flag, default, text in (
        ("--pretrain-epochs", 3, "epochs on classes 0-4"),
        ("--pretrain-batch-size", 256, "its batch"),
        ("--pretrain-per-class", 6000, "6,000: all"),
        ("--test-per-class", 1000, "1,000: all"),
        ("--val-per-class", 20, "small runs' validation"),
        ("--epochs", 30, "epochs of every small run"),
        ("--batch-size", 25, "batch of every small run"),
    ):
        parser.add_argument(flag, type=common.positive_int, default=default, help=text)
    parser.add_argument(
        "--precise-bn-images", type=int, default=1024,
        help="the small runs' --precise-bn-images (train's 4096, before each of --epochs "
        "validations, would cost more than their training)",
    )  # fmt: skip
    parser.add_argument(
        "--freeze-base-epochs", type=common.positive_int, default=5, help="of the freeze run"
    )
    parser.add_argument(
        "--width-multiplier", type=common.positive_float, default=0.125, help="model width"
    )
    parser.add_argument("--seed", type=int, default=0, help="of weights, data and draws")
    return parser


SCRIPT = common.Script(build_parser, run, COLUMNS, describe)
parse_args, main = SCRIPT.parse_args, SCRIPT.main

if __name__ == "__main__":
    main(sys.argv[1:])
