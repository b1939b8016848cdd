"""Training speed of our models against their PyTorch twins, in one interleaved run.

Models, each trained on one fixed random batch by Keras (ours) and by PyTorch eager (its
twin), with the same batch size, loss and optimizer (`googlenet_demo` and
`googlenet_224` by default; `--models` picks):

* `googlenet_demo`: `make demo`'s model: GoogLeNet, stem "small_pool" (the small stem,
  then the 3x3/2 max pool pool2: stage 3 at 14x14, 4 at 7x7, 5 at 4x4), width 1/8,
  min_depth 16, dropout 0, no auxiliary heads (one output), 28x28x1, 10 classes,
  `--demo-batch-size` (256) images, AdamW (learning rate 1e-3, weight decay 1e-4). Its
  twin is a torch module translated layer for layer from the Keras graph
  (`benchmarks.keras_to_torch`): same layers, widths, strides and paddings, same
  trainable parameter count;
* `googlenet_demo_aux`: the demo's model before it (kept so that numbers measured on it
  stay reproducible): small stem (stage 3 at 28x28), width 1/8, min_depth 8, dropout
  0.4, both auxiliary heads, `--demo-aux-batch-size` (128) images; otherwise as
  `googlenet_demo`, twin included;
* `googlenet_224`: GoogLeNet in torchvision's layout (`build_googlenet` with the options
  of `keras_inception.pretrained.torchvision`: 3x3 "5x5" branch, torch padding, 2x2
  pool5, torch aux pools, dropout 0.2), 224x224x3, 1000 classes, both auxiliary heads,
  `--batch-size` (16) images, SGD (0.01, momentum 0.9). Its twin is
  `torchvision.models.googlenet(weights=None, aux_logits=True, init_weights=True)`.

Loss: sparse cross-entropy on the main output plus, where the model has auxiliary
heads, 0.3 x that of each (`keras_inception.default_loss_weights`); torch's
`cross_entropy` on logits, Keras's on the softmax outputs (which Keras computes from the
logits). Ours: `model.compile(..., jit_compile=False)` and `train_on_batch`, as
benchmarks/fused_bn.py and models.py time it. Precision: float32 on both sides by
default; `--mixed-precision` (on a CPU, as in training; `--mixed-precision mixed_bfloat16`
on any machine) builds ours under Keras's `mixed_bfloat16` policy (bfloat16 compute,
float32 weights and softmax outputs) and runs the twin's forward pass and loss under
`torch.autocast("cpu", dtype=torch.bfloat16)` (float32 weights; torch's own CPU
mixed-precision recipe), so both use the bf16 units of CPUs with AVX512-BF16 or AMX. The
twin runs on the CPU in bfloat16 only: where a GPU is visible, training's
`--mixed-precision` means mixed_float16, which has no twin here, and is refused.
Each twin is timed in two memory layouts, NCHW (torch's default) and channels_last
(`model.to(memory_format=torch.channels_last)`, input likewise), and our speed is compared
with the faster of the two.

torch and TensorFlow in one process crash after a torch forward pass (two OpenMP
runtimes), so the torch side runs in a child process, `benchmarks/torch_worker.py`, which
imports torch and never TensorFlow. The two talk in JSON lines over the child's stdin and
stdout (see `torch_worker.TorchPeer`): "build this model in this layout", "train N steps"
(reply: seconds, the torch process's CPU seconds over them, and the last loss). Rounds are
interleaved (ours, torch NCHW, torch
channels_last; again ...); rates are medians over rounds, and the ratio is the median
over rounds of ours / the faster torch layout in the same round. The target (our Keras
model trains at >= 1.5x its faster PyTorch eager twin, issue 13) is reported, not
asserted. "CPU time/wall" is our process's CPU time / wall over our timed steps; "torch CPU
time/wall" the torch process's over its timed steps, both layouts, as it measured them.

torch runs `--torch-threads` threads (default: the usable cores) with
`OMP_WAIT_POLICY=PASSIVE` unless the environment sets that variable. By default torch's
OpenMP threads spin while they wait for each other, and when another process takes one
of the cores a step takes many times as long: on 2 cores shared with a test run, the
`googlenet_demo_aux` twin (channels_last, batch 128) took ~10 s a step with 2 spinning
threads, 1.0-1.5 s with 2 passive ones or with 1 thread. Spinning would flatter our
ratio on a shared machine; on an idle one, run with `OMP_WAIT_POLICY=ACTIVE` as well, and
keep the faster.

Needs torch and torchvision: `pip install -e '.[torch]'`.

Example:

```
python -m benchmarks.peers --rounds 3 --steps 3
python -m benchmarks.peers --models googlenet_demo --rounds 1 --steps 1 --demo-batch-size 8
python -m benchmarks.peers --models googlenet_demo googlenet_demo_aux
python -m benchmarks.peers --models googlenet_224 --mixed-precision
```
"""

from __future__ import annotations

import argparse
import dataclasses
import importlib.util
import math
import sys
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

if not __package__:  # run by path (`python benchmarks/peers.py`): import from the repo root,
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
    # and set the process up before TensorFlow is imported (benchmarks/__init__.py).
    import benchmarks  # noqa: F401

import keras  # noqa: E402
import numpy as np  # noqa: E402
import tensorflow as tf  # noqa: E402

import keras_inception as ki  # noqa: E402
from benchmarks import common  # noqa: E402
from benchmarks.keras_to_torch import (  # noqa: E402, F401  (re-exported: moved from here)
    TORCH_LAYERS,
    describe_graph,
    export_weights,
    load_keras_weights,
    same_padding,
    torch_ceil_output,
    torch_twin,
)
from benchmarks.torch_worker import LAYOUTS, TorchPeer, fixed_batch  # noqa: E402
from keras_inception.pretrained import torchvision as torchvision_layout  # noqa: E402

MODELS = ("googlenet_demo", "googlenet_demo_aux", "googlenet_224")
DEFAULT_MODELS = ("googlenet_demo", "googlenet_224")
# Our Keras dtype policy (`--mixed-precision`) -> the twin's autocast dtype, or None.
AUTOCAST: Mapping[str, str | None] = {"float32": None, "mixed_bfloat16": "bfloat16"}
TARGET = 1.5  # ours / the faster torch twin, images/s (issue 13)
EXTRA = "pip install -e '.[torch]'"
COLUMNS = (
    "model",
    "input",
    "batch",
    "optimizer",
    "precision",
    "params",
    "torch params",
    "ours img/s",
    "torch NCHW img/s",
    "torch channels_last img/s",
    "faster torch",
    "ratio",
    "target",
    "met",
    common.CPU_COLUMN,
    "torch CPU time/wall",
)

# Optimizer -> its settings, for Keras and torch alike.
OPTIMIZERS: Mapping[str, Mapping[str, float]] = {
    "adamw": {"learning_rate": 1e-3, "weight_decay": 1e-4},
    "sgd": {"learning_rate": 0.01, "momentum": 0.9},
}
OPTIMIZER_LABELS = {"adamw": "AdamW(1e-3, wd 1e-4)", "sgd": "SGD(0.01, momentum 0.9)"}


@dataclasses.dataclass(frozen=True)
class Spec:
    """A benchmark model: its input, classes, optimizer, and how torch builds its twin."""

    size: int
    channels: int
    classes: int
    optimizer: str
    twin: str  # "translated": from the Keras graph; "torchvision_googlenet"
    packages: tuple[str, ...]  # what the torch process imports for it
    batch_option: str  # the command-line option giving its batch size


SPECS: Mapping[str, Spec] = {
    "googlenet_demo": Spec(28, 1, 10, "adamw", "translated", ("torch",), "--demo-batch-size"),
    "googlenet_demo_aux": Spec(
        28, 1, 10, "adamw", "translated", ("torch",), "--demo-aux-batch-size"
    ),
    "googlenet_224": Spec(
        224, 3, 1000, "sgd", "torchvision_googlenet", ("torch", "torchvision"), "--batch-size"
    ),
}


def check_names(names: Sequence[str]) -> list[str]:
    """`names` without repeats; ValueError naming the first unknown one."""
    names = list(dict.fromkeys(names))
    for name in names:
        if name not in MODELS:
            raise ValueError(f"unknown benchmark model {name!r}; choose from {list(MODELS)}")
    return names


def missing_packages(names: Sequence[str]) -> list[str]:
    """The packages the torch side of `names` needs that are not installed (looked up, not
    imported: torch must not load into the TensorFlow process)."""
    needed = dict.fromkeys(p for name in check_names(names) for p in SPECS[name].packages)
    return [p for p in needed if importlib.util.find_spec(p) is None]


def missing_message(missing: Sequence[str]) -> str:
    return (
        f"benchmarks.peers needs {' and '.join(missing)} for the PyTorch twins, and "
        f"{'they are' if len(missing) > 1 else 'it is'} not installed: {EXTRA} "
        "(the `torch` extra)"
    )


# --- the Keras side ----------------------------------------------------------------------


def batch_size(name: str, args: argparse.Namespace) -> int:
    """The batch size of model `name`: its option's value (`Spec.batch_option`)."""
    return getattr(args, SPECS[name].batch_option.lstrip("-").replace("-", "_"))


def build_ours(name: str, policy: str = "float32") -> keras.Model:
    """Our Keras model `name` of `MODELS` (softmax outputs; `googlenet_demo` has one,
    the others a dict with both auxiliary heads), built under the dtype policy `policy`
    (the global policy is restored afterwards)."""
    previous = keras.config.dtype_policy()
    keras.config.set_dtype_policy(policy)
    try:
        return _build_ours(name)
    finally:
        keras.config.set_dtype_policy(previous)


def _build_ours(name: str) -> keras.Model:
    if name in common.DEMO_MODELS:
        return common.build_demo(name)
    if name == "googlenet_224":
        kwargs = torchvision_layout.builder_kwargs(
            "googlenet",
            aux_logits=True,
            input_shape=(224, 224, 3),
            classifier_activation="softmax",
        )
        return ki.build_googlenet(**kwargs)
    raise ValueError(f"unknown benchmark model {name!r}; choose from {list(MODELS)}")


def keras_optimizer(name: str) -> keras.optimizers.Optimizer:
    settings = OPTIMIZERS[name]
    if name == "adamw":
        return keras.optimizers.AdamW(**settings)
    return keras.optimizers.SGD(**settings)


def compile_ours(model: keras.Model, optimizer: str) -> None:
    """Sparse cross-entropy on every output, weighted as `default_loss_weights` (a
    single-output model: its one loss, weight 1)."""
    loss = keras.losses.SparseCategoricalCrossentropy()
    if isinstance(model.output, dict):
        losses, weights = {key: loss for key in model.output}, ki.default_loss_weights(model)
    else:
        losses, weights = loss, None
    model.compile(
        optimizer=keras_optimizer(optimizer), loss=losses, loss_weights=weights, jit_compile=False
    )


def labels_for(model: keras.Model, labels: np.ndarray) -> tf.Tensor | dict[str, tf.Tensor]:
    """`train_on_batch`'s targets: `labels` for each output of a dict-output model, else
    `labels` themselves."""
    y = tf.constant(labels.astype(np.int32))
    return {key: y for key in model.output} if isinstance(model.output, dict) else y


def trainable_params(model: keras.Model) -> int:
    return int(sum(np.prod(w.shape) for w in model.trainable_weights))


def describe_torch(info: Mapping[str, Any]) -> str:
    """The torch process's line: versions, threads, OpenMP wait policy, oneDNN."""
    vision = f", torchvision {info['torchvision']}" if info.get("torchvision") else ""
    return (
        f"torch {info['torch']}{vision} (separate process); threads: intra-op "
        f"{info['threads']} (torch.set_num_threads), inter-op {info['interop_threads']}, "
        f"OMP_WAIT_POLICY={info['omp_wait_policy']}; oneDNN (mkldnn) "
        f"{'available' if info['mkldnn'] else 'unavailable'}"
    )


@dataclasses.dataclass
class Bench:
    """One model under test: ours compiled, its fixed batch, the twin's ids, rates."""

    name: str
    spec: Spec
    batch: int
    model: keras.Model
    x: tf.Tensor
    y: tf.Tensor | dict[str, tf.Tensor]
    params: int
    torch_params: int = 0
    rates: dict[str, list[float]] = dataclasses.field(
        default_factory=lambda: {"ours": [], **{layout: [] for layout in LAYOUTS}}
    )
    usage: common.CpuTime = dataclasses.field(default_factory=common.CpuTime)  # ours
    torch_usage: common.CpuTime = dataclasses.field(default_factory=common.CpuTime)

    def torch_id(self, layout: str) -> str:
        return f"{self.name}/{layout}"


def prepare(name: str, args: argparse.Namespace, peer: TorchPeer) -> Bench:
    """Ours built and compiled; the twin built in each layout in the torch process."""
    spec = SPECS[name]
    batch = batch_size(name, args)
    keras.utils.set_random_seed(args.seed)
    model = build_ours(name, args.policy)
    compile_ours(model, spec.optimizer)
    input_shape = [spec.size, spec.size, spec.channels]
    x, labels = fixed_batch(input_shape, spec.classes, batch, args.seed)
    y = labels_for(model, labels)
    bench = Bench(name, spec, batch, model, tf.constant(x), y, trainable_params(model))
    graph = describe_graph(model) if spec.twin == "translated" else None
    for layout in LAYOUTS:
        reply = peer.request(
            "build",
            id=bench.torch_id(layout),
            model=name,
            twin=spec.twin,
            graph=graph,
            layout=layout,
            batch=batch,
            input_shape=input_shape,
            classes=spec.classes,
            optimizer={"name": spec.optimizer, **OPTIMIZERS[spec.optimizer]},
            loss_weights=ki.default_loss_weights(model),
            seed=args.seed,
            autocast=AUTOCAST[args.policy],
        )
        bench.torch_params = reply["trainable_params"]
    return bench


def torch_rate(peer: TorchPeer, bench: Bench, layout: str, steps: int) -> float:
    """The twin's images/s over `steps` steps in `layout`; the torch process's CPU time
    and wall over them go to `bench.torch_usage`."""
    reply = peer.request("train", id=bench.torch_id(layout), steps=steps)
    if not math.isfinite(reply["loss"]):
        raise RuntimeError(f"{bench.torch_id(layout)}: the torch loss is {reply['loss']}")
    bench.torch_usage.add_seconds(reply["cpu_seconds"], reply["seconds"])
    return steps * bench.batch / reply["seconds"]


def run(args: argparse.Namespace) -> list[dict]:
    """Measures every model of `args.models` and its twin; prints the torch process's
    line; returns the table rows (see `COLUMNS`).

    Raises:
        ValueError: for an unknown model name.
        ModuleNotFoundError: when torch (or torchvision) is not installed.
    """
    names = check_names(args.models)
    missing = missing_packages(names)
    if missing:
        raise ModuleNotFoundError(missing_message(missing), name=missing[0])
    with TorchPeer(args.torch_threads) as peer:  # torch loads there while ours are built
        benches = [prepare(name, args, peer) for name in names]
        print(describe_torch(peer.request("info")))
        for bench in benches:  # trace and warm up
            for _ in range(args.warmup):
                bench.model.train_on_batch(bench.x, bench.y, return_dict=True)
            for layout in LAYOUTS:
                peer.request("train", id=bench.torch_id(layout), steps=args.warmup)

        for _ in range(args.rounds):  # ours, NCHW, channels_last; ours, NCHW, ...
            for bench in benches:
                bench.rates["ours"].append(
                    common.rate(
                        lambda b=bench: b.model.train_on_batch(b.x, b.y, return_dict=True),
                        args.steps,
                        bench.batch,
                        bench.usage,
                    )
                )
                for layout in LAYOUTS:
                    bench.rates[layout].append(torch_rate(peer, bench, layout, args.steps))

    rows = []
    for bench in benches:
        rates = bench.rates
        faster = [max(pair) for pair in zip(*(rates[layout] for layout in LAYOUTS), strict=True)]
        ratio = common.median([ours / t for ours, t in zip(rates["ours"], faster, strict=True)])
        medians = {key: common.median(values) for key, values in rates.items()}
        rows.append(
            {
                "model": bench.name,
                "input": f"{bench.spec.size}x{bench.spec.size}x{bench.spec.channels}",
                "batch": bench.batch,
                "optimizer": OPTIMIZER_LABELS[bench.spec.optimizer],
                "precision": precision_label(args.policy),
                "params": bench.params,
                "torch params": bench.torch_params,
                "ours img/s": medians["ours"],
                "torch NCHW img/s": medians["nchw"],
                "torch channels_last img/s": medians["channels_last"],
                "faster torch": max(LAYOUTS, key=lambda layout: medians[layout]),
                "ratio": ratio,
                "target": TARGET,
                "met": "yes" if ratio >= TARGET else "no",
                common.CPU_COLUMN: bench.usage.ratio,
                "torch CPU time/wall": bench.torch_usage.ratio,
            }
        )
    return rows


def precision_label(policy: str) -> str:
    """The table's precision cell: our dtype policy, and the twin's autocast if any."""
    autocast = AUTOCAST[policy]
    return policy if autocast is None else f"{policy} / autocast {autocast}"


def build_parser() -> argparse.ArgumentParser:
    parser = common.new_parser("peers", __doc__)
    common.add_models(parser, MODELS, DEFAULT_MODELS)
    parser.add_argument(
        "--batch-size", type=common.positive_int, default=16, help="googlenet_224's batch"
    )
    common.add_demo_batch_sizes(parser)
    parser.add_argument("--warmup", type=common.positive_int, default=2, help="untimed steps")
    parser.add_argument(
        "--rounds", type=common.positive_int, default=3, help="ours, NCHW, channels_last rounds"
    )
    parser.add_argument("--steps", type=common.positive_int, default=3, help="steps per round")
    parser.add_argument(
        "--torch-threads", type=int, default=0, help="torch's threads (0: the usable cores)"
    )
    common.add_mixed_precision(
        parser,
        policies=[policy for policy in AUTOCAST if policy != "float32"],
        note="the twin then runs under torch.autocast('cpu', bfloat16); mixed_float16 (a "
        "bare --mixed-precision where a GPU is visible) has no twin and is refused",
    )
    common.add_deprecated_alias(
        parser,
        "--precision",
        "--mixed-precision",
        dest="policy",
        choices=("float32", "bfloat16"),
        convert={"float32": "float32", "bfloat16": "mixed_bfloat16"}.get,
        spelling=common.policy_spelling,
    )
    parser.add_argument("--seed", type=int, default=0, help="seed of the weights and the batch")
    return parser


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.torch_threads < 0:
        parser.error(f"--torch-threads must be 0 or more; received {args.torch_threads}")
    if args.policy not in AUTOCAST:  # a bare --mixed-precision where a GPU is visible
        parser.error(
            f"--mixed-precision means {args.policy} on this machine, and the torch twin runs "
            "on the CPU in bfloat16 only; use --mixed-precision mixed_bfloat16"
        )
    return args


def describe(args: argparse.Namespace, seconds: float) -> str:
    """The line above the table: what both sides run, and how the ratio is formed."""
    return (
        "ours: Keras train_on_batch, jit_compile=False; torch: eager; same batch, loss "
        f"(main + 0.3 x each aux head, if any), optimizer and precision "
        f"({precision_label(args.policy)}). "
        f"{args.rounds} rounds x {args.steps} training steps after {args.warmup} warm-up, "
        "interleaved (ours, torch NCHW, torch channels_last); medians; ratio: ours img/s / "
        f"the faster torch layout's, per round, then the median; target {TARGET}x "
        "(reported, not asserted)."
    )


def main(argv: Sequence[str] | None = None) -> list[dict]:
    """Parses `argv`, runs, prints the machine lines and the table; returns the rows.
    Exits with a message naming the package when torch or torchvision is missing."""
    args = parse_args(argv)
    missing = missing_packages(args.models)
    if missing:
        sys.exit(f"error: {missing_message(missing)}")
    return common.run_and_report(args, run, COLUMNS, describe)


if __name__ == "__main__":
    main(sys.argv[1:])
