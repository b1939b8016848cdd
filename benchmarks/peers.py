"""Training speed of our models against their PyTorch twins, in one interleaved run.

Models, each trained on one fixed random batch by Keras (ours) and by PyTorch eager (its
twin), with the same batch size, loss and optimizer (`googlenet_demo` and
`googlenet_224` by default; `--models` picks):

* `googlenet_demo`: `make demo`'s model: GoogLeNet, stem "small_pool" (the small stem,
  then the 3x3/2 max pool pool2: stage 3 at 14x14, 4 at 7x7, 5 at 4x4), width 1/8,
  min_depth 16, dropout 0, no auxiliary heads (one output), 28x28x1, 10 classes,
  `--demo-batch-size` (256) images, AdamW (learning rate 1e-3, weight decay 1e-4). Its
  twin is a torch module translated layer for layer from the Keras graph
  (`describe_graph` -> `torch_twin`): same layers, widths, strides and paddings, same
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
runtimes), so the torch side runs in a child process: this file run with `--torch-worker`,
which imports torch and never TensorFlow. The two talk in JSON lines over the child's
stdin and stdout (see `TorchPeer`): "build this model in this layout", "train N steps"
(reply: seconds and the last loss). Rounds are interleaved (ours, torch NCHW, torch
channels_last; again ...); rates are medians over rounds, and the ratio is the median
over rounds of ours / the faster torch layout in the same round. The target (our Keras
model trains at >= 1.5x its faster PyTorch eager twin, issue 13) is reported, not
asserted.

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
import contextlib
import dataclasses
import functools
import importlib.util
import json
import math
import os
import subprocess
import sys
import time
import traceback
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any, TextIO

import numpy as np

# `python benchmarks/peers.py --torch-worker` is the torch process: it never imports
# TensorFlow (nor Keras, nor the project), only torch, torchvision and NumPy.
WORKER_FLAG = "--torch-worker"
IS_WORKER = __name__ == "__main__" and sys.argv[1:2] == [WORKER_FLAG]

if not IS_WORKER:
    if not __package__:  # run by path (`python benchmarks/peers.py`): import from the repo
        sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
        # root, and set the process up before TensorFlow is imported (benchmarks/__init__).
        import benchmarks  # noqa: F401

    import keras
    import tensorflow as tf

    import keras_inception as ki
    from benchmarks import common
    from keras_inception.pretrained import torchvision as torchvision_layout

MODELS = ("googlenet_demo", "googlenet_demo_aux", "googlenet_224")
DEFAULT_MODELS = ("googlenet_demo", "googlenet_224")
LAYOUTS = ("nchw", "channels_last")
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

# Keras layer classes the translation knows (`FusedBatchNormalization` reports Keras's
# class name, "BatchNormalization": same arguments and numbers).
TORCH_LAYERS = (
    "InputLayer",
    "Conv2D",
    "BatchNormalization",
    "Activation",
    "MaxPooling2D",
    "AveragePooling2D",
    "ZeroPadding2D",
    "Concatenate",
    "GlobalAveragePooling2D",
    "AdaptiveAveragePooling2D",
    "Flatten",
    "Dense",
    "Dropout",
)


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


def describe_graph(model: keras.Model) -> dict:
    """A plain (JSON-able) description of a functional Keras model, for `torch_twin`:
    its layers in topological order, each with class name, config, inbound layer names,
    input and output shapes; and its outputs, by output name (a model whose output is a
    tensor or a list: by `model.output_names`, the keys of `default_loss_weights`).

    Raises:
        TypeError: for a model that is not functional (a Sequential, a subclass).
        ValueError: for a layer class `torch_twin` does not translate (`TORCH_LAYERS`),
            or a layer called more than once.
    """
    operations = getattr(model, "operations", None)
    if operations is None:
        raise TypeError(
            f"describe_graph needs a functional keras.Model; received {type(model).__name__}"
        )
    layers, seen = [], set()
    for layer in operations:
        kind = type(layer).__name__
        if kind not in TORCH_LAYERS:
            raise ValueError(
                f"layer {layer.name!r} ({kind}) has no torch counterpart in benchmarks.peers; "
                f"translated: {list(TORCH_LAYERS)}"
            )
        nodes = layer._inbound_nodes
        if len(nodes) != 1:
            raise ValueError(
                f"layer {layer.name!r} is called {len(nodes)} times; benchmarks.peers "
                "translates graphs whose layers are called once"
            )
        node = nodes[0]
        inbound = [t._keras_history.operation.name for t in node.input_tensors]
        if not set(inbound) <= seen:
            raise ValueError(f"layer {layer.name!r} comes before its inputs {inbound}")
        seen.add(layer.name)
        layers.append(
            {
                "name": layer.name,
                "class": kind,
                "config": json.loads(json.dumps(layer.get_config(), default=str)),
                "inbound": inbound,
                "input_shapes": [list(t.shape) for t in node.input_tensors],
                "output_shape": list(node.output_tensors[0].shape),
            }
        )
    if isinstance(model.output, dict):
        outputs = model.output
    else:
        tensors = model.output if isinstance(model.output, list | tuple) else [model.output]
        outputs = dict(zip(model.output_names, tensors, strict=True))
    return {
        "name": model.name,
        "layers": layers,
        "outputs": {key: t._keras_history.operation.name for key, t in outputs.items()},
    }


def export_weights(model: keras.Model, path: str | os.PathLike) -> None:
    """Every weight of `model` into an .npz file, keyed `"{layer name}/{weight name}"`
    (Keras layouts: conv kernels HWIO, dense kernels (in, out)); `load_keras_weights`
    reads it into the twin."""
    arrays = {
        f"{layer.name}/{variable.name}": np.asarray(variable.numpy())
        for layer in model.layers
        for variable in layer.weights
    }
    np.savez(path, **arrays)


class TorchPeer:
    """The torch process: this file run with `--torch-worker`, spoken to in JSON lines.

    Each request is one line `{"cmd": ..., ...}` on the child's stdin, each reply one line
    on its stdout: `{"ok": true, ...}`, or `{"ok": false, "error": ...}`, which `request`
    raises as RuntimeError. Commands (`serve` answers them):

    * `info`: torch's version, threads, oneDNN; torchvision's version if installed;
    * `build` (`id`, `model`, `twin`, `graph`, `layout`, `batch`, `input_shape`,
      `classes`, `optimizer`, `loss_weights`, `seed`, `autocast`: null or "bfloat16"): a
      model and its optimizer and fixed batch, kept under `id`; replies its trainable
      parameter count;
    * `train` (`id`, `steps`): `steps` training steps; replies their `seconds`, the
      last `loss`, and the dtype of the main (or only) logits (`output_dtype`: bfloat16
      under autocast);
    * `infer` (`graph`, `weights`, `inputs`, `outputs`): the twin of `graph` with the
      Keras weights of the .npz `weights` (`export_weights`), in eval mode, on the NHWC
      batch `x` of .npz `inputs`; writes its outputs as Keras gives them (softmax
      probabilities) to .npz `outputs`;
    * `quit`.

    The child's stderr is ours; what it prints on stdout goes to stderr too (the
    protocol has its own descriptor).
    """

    def __init__(self, threads: int = 0):
        """Starts the torch process with `threads` threads (0: the usable cores) and, unless
        the environment sets it, `OMP_WAIT_POLICY=PASSIVE` (see the module docstring)."""
        env = {**os.environ}
        env.setdefault("OMP_WAIT_POLICY", "PASSIVE")
        self.process = subprocess.Popen(
            [sys.executable, str(Path(__file__).resolve()), WORKER_FLAG, str(threads)],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
            env=env,
        )

    def request(self, cmd: str, **fields) -> dict:
        line = json.dumps({"cmd": cmd, **fields})
        try:
            self.process.stdin.write(line + "\n")
            self.process.stdin.flush()
            reply = self.process.stdout.readline()
        except BrokenPipeError:
            reply = ""
        if not reply:
            status = self.process.wait(timeout=60)
            raise RuntimeError(
                f"the torch process exited (status {status}) on request {cmd!r}; its "
                "messages are above"
            )
        answer = json.loads(reply)
        if not answer.pop("ok"):
            raise RuntimeError(f"torch process, request {cmd!r}: {answer['error']}")
        return answer

    def close(self) -> None:
        if self.process.poll() is None:
            with contextlib.suppress(RuntimeError, OSError):
                self.request("quit")
            try:
                self.process.wait(timeout=60)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        for stream in (self.process.stdin, self.process.stdout):
            stream.close()

    def __enter__(self) -> TorchPeer:
        return self

    def __exit__(self, *exc) -> None:
        self.close()


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

    def torch_id(self, layout: str) -> str:
        return f"{self.name}/{layout}"


def fixed_batch(
    input_shape: Sequence[int], classes: int, batch: int, seed: int
) -> tuple[np.ndarray, np.ndarray]:
    """The random batch both sides train on (NHWC images in [-1, 1], int labels)."""
    rng = np.random.default_rng(seed)
    x = rng.uniform(-1, 1, (batch, *input_shape)).astype(np.float32)
    return x, rng.integers(0, classes, batch).astype(np.int64)


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
    reply = peer.request("train", id=bench.torch_id(layout), steps=steps)
    if not math.isfinite(reply["loss"]):
        raise RuntimeError(f"{bench.torch_id(layout)}: the torch loss is {reply['loss']}")
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
            }
        )
    return rows


def precision_label(policy: str) -> str:
    """The table's precision cell: our dtype policy, and the twin's autocast if any."""
    autocast = AUTOCAST[policy]
    return policy if autocast is None else f"{policy} / autocast {autocast}"


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m benchmarks.peers",
        description=__doc__.split("\n\n")[0],
        formatter_class=common.HelpFormatter,
    )
    parser.add_argument(
        "--models", nargs="+", default=list(DEFAULT_MODELS), choices=MODELS, help="models to run"
    )
    parser.add_argument(
        "--batch-size", type=common.positive_int, default=16, help="googlenet_224's batch"
    )
    for name in common.DEMO_MODELS:
        parser.add_argument(
            SPECS[name].batch_option,
            type=common.positive_int,
            default=common.DEMO_BATCH_SIZES[name],
            help=f"{name}'s batch",
        )
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


def main(argv: Sequence[str] | None = None) -> list[dict]:
    """Parses `argv`, runs, prints the machine lines and the table; returns the rows.
    Exits with a message naming the package when torch or torchvision is missing."""
    args = parse_args(argv)
    missing = missing_packages(args.models)
    if missing:
        sys.exit(f"error: {missing_message(missing)}")
    print(common.machine_description())
    rows = run(args)
    print(
        "ours: Keras train_on_batch, jit_compile=False; torch: eager; same batch, loss "
        f"(main + 0.3 x each aux head, if any), optimizer and precision "
        f"({precision_label(args.policy)}). "
        f"{args.rounds} rounds x {args.steps} training steps after {args.warmup} warm-up, "
        "interleaved (ours, torch NCHW, torch channels_last); medians; ratio: ours img/s / "
        f"the faster torch layout's, per round, then the median; target {TARGET}x "
        "(reported, not asserted)."
    )
    print(common.format_table(rows, COLUMNS))
    return rows


# --- the torch side (the `--torch-worker` process only) ------------------------------------


def same_padding(size: int, kernel: int, stride: int) -> tuple[int, int]:
    """TensorFlow's "same" padding of one axis: (before, after), the extra one after."""
    out = -(-size // stride)
    total = max((out - 1) * stride + kernel - size, 0)
    return total // 2, total - total // 2


def torch_ceil_output(size: int, kernel: int, stride: int, pad: int) -> int:
    """Output length of torch's pooling with `ceil_mode=True` and `pad` on each side."""
    out = -(-(size + 2 * pad - kernel) // stride) + 1
    if (out - 1) * stride >= size + pad:  # the last window must start inside
        out -= 1
    return out


@functools.cache
def _torch_classes() -> tuple[type, type]:
    """(Concat, KerasTwin): nn.Module classes, defined once torch is imported."""
    import torch
    from torch import nn

    class Concat(nn.Module):
        def __init__(self, dim: int):
            super().__init__()
            self.dim = dim

        def forward(self, inputs):
            return torch.cat(inputs, self.dim)

        def extra_repr(self) -> str:
            return f"dim={self.dim}"

    class KerasTwin(nn.Module):
        """A translated Keras graph: one module per Keras layer (`ops`, by layer name),
        run in the graph's order. Returns a dict of outputs; outputs whose Keras layer
        ends in a softmax return logits (`softmax_outputs` names them)."""

        def __init__(self, graph: Mapping, ops: Mapping[str, nn.Module], softmax_outputs):
            super().__init__()
            self.ops = nn.ModuleDict(ops)
            self.input_name = graph["layers"][0]["name"]
            self.plan = [(entry["name"], entry["inbound"]) for entry in graph["layers"][1:]]
            self.multi = {name for name, module in ops.items() if isinstance(module, Concat)}
            self.outputs = dict(graph["outputs"])
            self.softmax_outputs = frozenset(softmax_outputs)

        def forward(self, x):
            values = {self.input_name: x}
            for name, inbound in self.plan:
                if name in self.multi:
                    values[name] = self.ops[name]([values[i] for i in inbound])
                else:
                    values[name] = self.ops[name](values[inbound[0]])
            return {key: values[name] for key, name in self.outputs.items()}

    return Concat, KerasTwin


def _pair(value) -> tuple[int, int]:
    return (value, value) if isinstance(value, int) else (int(value[0]), int(value[1]))


def torch_twin(graph: Mapping):
    """The torch module of a `describe_graph` description: the same layers, widths,
    strides and paddings (TensorFlow's "same" padding reproduced: in the layer where it
    is symmetric, by `ceil_mode` for max pools padded one more at the end, else by an
    explicit pad), the same trainable parameters. `googlenet_demo`'s 3x3/2 max pools,
    for example: 28 -> 14 and 14 -> 7 pad 0 before and 1 after (`ceil_mode`), 7 -> 4
    pads 1 on each side (`padding=1`).

    Deviations, none of which changes a parameter count or (with `load_keras_weights`)
    an output: dense layers after a `Flatten` read channels-first (torch's flatten);
    outputs whose Keras layer ends in a softmax return logits (trained with torch's
    `cross_entropy`); the running-statistics momentum is `1 - momentum` (torch's
    convention); ReLUs that follow a conv, batch norm or dense layer used nowhere else
    run in place (as torchvision's).
    """
    from torch import nn

    Concat, KerasTwin = _torch_classes()
    layers = graph["layers"]
    if not layers or layers[0]["class"] != "InputLayer":
        raise ValueError(f"{graph.get('name')}: the first layer must be the input")
    kinds = {entry["name"]: entry["class"] for entry in layers}
    consumers: dict[str, int] = {}
    for entry in layers:
        for name in entry["inbound"]:
            consumers[name] = consumers.get(name, 0) + 1
    for name in graph["outputs"].values():
        consumers[name] = consumers.get(name, 0) + 1
    output_layers = set(graph["outputs"].values())

    ops: dict[str, nn.Module] = {}
    softmax_outputs = []
    for entry in layers[1:]:
        name, kind, config = entry["name"], entry["class"], entry["config"]
        shape = entry["input_shapes"][0]  # channels-last, batch first
        if config.get("data_format", "channels_last") != "channels_last":
            raise ValueError(f"layer {name!r}: only channels_last Keras layers are translated")

        def activation(module, act, *, name=name):
            """A conv or dense layer's own activation: ReLU in place; softmax: logits."""
            if act == "linear":
                return module
            if act == "relu":
                return nn.Sequential(module, nn.ReLU(inplace=True))
            if act == "softmax" and name in output_layers:
                softmax_outputs.append(name)
                return module  # logits; cross_entropy applies the softmax
            raise ValueError(f"layer {name!r}: activation {act!r} is not translated")

        if kind == "Conv2D":
            kernel, strides = _pair(config["kernel_size"]), _pair(config["strides"])
            if _pair(config["dilation_rate"]) != (1, 1):
                raise ValueError(f"layer {name!r}: dilated convolutions are not translated")
            pads = [(0, 0), (0, 0)]
            if config["padding"] == "same":
                pads = [same_padding(shape[1 + i], kernel[i], strides[i]) for i in range(2)]
            symmetric = all(before == after for before, after in pads)
            conv = nn.Conv2d(
                shape[-1],
                config["filters"],
                kernel,
                stride=strides,
                padding=tuple(p[0] for p in pads) if symmetric else 0,
                groups=config.get("groups", 1),
                bias=config["use_bias"],
            )
            if not symmetric:
                (top, bottom), (left, right) = pads
                conv = nn.Sequential(nn.ZeroPad2d((left, right, top, bottom)), conv)
            ops[name] = activation(conv, config["activation"])
        elif kind == "BatchNormalization":
            if config.get("renorm") or config["axis"] not in (-1, 3, [-1], [3]):
                raise ValueError(f"layer {name!r}: only channel-axis batch norm is translated")
            bn = nn.BatchNorm2d(shape[-1], eps=config["epsilon"], momentum=1 - config["momentum"])
            if not config["scale"]:
                bn.weight.requires_grad_(False)  # Keras has no gamma: fixed at one
            if not config["center"]:
                bn.bias.requires_grad_(False)
            ops[name] = bn
        elif kind == "Activation":
            act = config["activation"]
            producer = entry["inbound"][0]
            in_place = consumers[producer] == 1 and kinds[producer] in (
                "Conv2D",
                "BatchNormalization",
                "Dense",
            )
            if act == "relu":
                ops[name] = nn.ReLU(inplace=in_place)
            elif act == "softmax":
                ops[name] = nn.Softmax(dim=1)
            elif act == "linear":
                ops[name] = nn.Identity()
            else:
                raise ValueError(f"layer {name!r}: activation {act!r} is not translated")
        elif kind in ("MaxPooling2D", "AveragePooling2D"):
            ops[name] = _pool(name, kind, config, shape)
        elif kind == "ZeroPadding2D":
            (top, bottom), (left, right) = config["padding"]
            ops[name] = nn.ZeroPad2d((left, right, top, bottom))
        elif kind == "Concatenate":
            rank = len(entry["output_shape"])
            axis = config["axis"] % rank
            dim = {1: 1} if rank == 2 else {3: 1, 1: 2, 2: 3}
            if axis not in dim:
                raise ValueError(f"layer {name!r}: concatenation on axis {axis} of rank {rank}")
            ops[name] = Concat(dim[axis])
        elif kind == "GlobalAveragePooling2D":
            pool = nn.AdaptiveAvgPool2d(1)
            ops[name] = pool if config.get("keepdims") else nn.Sequential(pool, nn.Flatten(1))
        elif kind == "AdaptiveAveragePooling2D":
            ops[name] = nn.AdaptiveAvgPool2d(config["output_size"])
        elif kind == "Flatten":
            ops[name] = nn.Flatten(1)
        elif kind == "Dense":
            if len(shape) != 2:
                raise ValueError(f"layer {name!r}: dense layers on rank-{len(shape)} inputs")
            linear = nn.Linear(shape[-1], config["units"], bias=config["use_bias"])
            ops[name] = activation(linear, config["activation"])
        elif kind == "InputLayer":
            raise ValueError(f"layer {name!r}: a second input; one input is translated")
        elif kind == "Dropout":
            if config.get("noise_shape") is not None:
                raise ValueError(f"layer {name!r}: dropout with a noise_shape is not translated")
            ops[name] = nn.Dropout(config["rate"])
        else:
            raise ValueError(
                f"layer {name!r} ({kind}) has no torch counterpart in benchmarks.peers; "
                f"translated: {list(TORCH_LAYERS)}"
            )
    return KerasTwin(graph, ops, softmax_outputs)


def _pool(name: str, kind: str, config: Mapping, shape: Sequence[int]):
    """Max or average pooling with Keras's window, stride and padding."""
    from torch import nn

    kernel = _pair(config["pool_size"])
    strides = _pair(config["strides"] or kernel)
    size = (shape[1], shape[2])
    if config["padding"] == "valid":
        pads = [(0, 0), (0, 0)]
    else:
        pads = [same_padding(size[i], kernel[i], strides[i]) for i in range(2)]
    before = tuple(p[0] for p in pads)
    fits = all(b <= k // 2 for b, k in zip(before, kernel, strict=True))  # torch's limit
    if kind == "AveragePooling2D":
        # Keras's "same" average ignores the padding: count_include_pad=False.
        if all(b == a for b, a in pads) and fits:
            return nn.AvgPool2d(kernel, strides, padding=before, count_include_pad=False)
        raise ValueError(
            f"layer {name!r}: average pooling with asymmetric padding {pads} is not translated"
        )
    if all(b == a for b, a in pads) and fits:
        return nn.MaxPool2d(kernel, strides, padding=before)
    # One more at the end (stride-2 "same" pools on even sizes): ceil_mode gives the same
    # windows where it gives as many of them.
    wanted = [-(-size[i] // strides[i]) for i in range(2)]
    ceil = [torch_ceil_output(size[i], kernel[i], strides[i], before[i]) for i in range(2)]
    if fits and ceil == wanted:
        return nn.MaxPool2d(kernel, strides, padding=before, ceil_mode=True)
    (top, bottom), (left, right) = pads
    return nn.Sequential(
        nn.ConstantPad2d((left, right, top, bottom), float("-inf")), nn.MaxPool2d(kernel, strides)
    )


def _weighted(module):
    """The conv, batch norm or linear module of a translated layer (past its pad/ReLU)."""
    from torch import nn

    if isinstance(module, nn.Sequential):
        for part in module:
            if isinstance(part, nn.Conv2d | nn.Linear):
                return part
    return module


def _flatten_source(graph: Mapping, name: str) -> list[int] | None:
    """The (h, w, c) shape a dense layer's input was flattened from, through dropouts."""
    entries = {entry["name"]: entry for entry in graph["layers"]}
    entry = entries[entries[name]["inbound"][0]]
    while entry["class"] == "Dropout":
        entry = entries[entry["inbound"][0]]
    if entry["class"] == "Flatten":
        return entry["input_shapes"][0][1:]
    return None


def load_keras_weights(twin, graph: Mapping, arrays: Mapping[str, np.ndarray]) -> int:
    """Copies `export_weights`'s arrays into `twin`: conv kernels HWIO -> OIHW, dense
    kernels (in, out) -> (out, in) (rows permuted after a `Flatten`, which torch reads
    channels-first), BN gamma/beta/moving mean/variance. Returns the arrays copied;
    ValueError for a layer's weights that do not fit or an array left over."""
    import torch

    used = 0
    with torch.no_grad():
        for entry in graph["layers"]:
            name, kind = entry["name"], entry["class"]
            if kind not in ("Conv2D", "Dense", "BatchNormalization"):
                continue
            module = _weighted(twin.ops[name])
            if kind == "Conv2D":
                pairs = {"kernel": (module.weight, lambda a: a.transpose(3, 2, 0, 1))}
            elif kind == "Dense":
                source = _flatten_source(graph, name)

                def dense(a, source=source):
                    if source is not None:  # keras rows (h, w, c) -> torch rows (c, h, w)
                        a = a.reshape(*source, -1).transpose(2, 0, 1, 3).reshape(a.shape)
                    return a.T

                pairs = {"kernel": (module.weight, dense)}
            else:
                pairs = {
                    "gamma": (module.weight, None),
                    "beta": (module.bias, None),
                    "moving_mean": (module.running_mean, None),
                    "moving_variance": (module.running_var, None),
                }
            if kind != "BatchNormalization" and module.bias is not None:
                pairs["bias"] = (module.bias, None)
            for weight_name, (target, transform) in pairs.items():
                key = f"{name}/{weight_name}"
                if key not in arrays:
                    continue  # e.g. a Keras batch norm without gamma
                array = arrays[key] if transform is None else transform(arrays[key])
                if tuple(array.shape) != tuple(target.shape):
                    raise ValueError(
                        f"{key}: shape {tuple(array.shape)} does not fit {tuple(target.shape)}"
                    )
                target.copy_(torch.from_numpy(np.ascontiguousarray(array)))
                used += 1
    if used != len(arrays):
        raise ValueError(f"{len(arrays) - used} of {len(arrays)} Keras arrays were not copied")
    return used


class TorchBench:
    """A torch model, its optimizer and fixed batch, in one memory layout."""

    def __init__(self, request: Mapping):
        import torch

        torch.manual_seed(request["seed"])
        if request["twin"] == "translated":
            model = torch_twin(request["graph"])
        elif request["twin"] == "torchvision_googlenet":
            import torchvision

            model = torchvision.models.googlenet(weights=None, aux_logits=True, init_weights=True)
        else:
            raise ValueError(f"unknown twin {request['twin']!r} for {request['model']!r}")
        if request["layout"] not in LAYOUTS:
            raise ValueError(f"unknown layout {request['layout']!r}; choose from {list(LAYOUTS)}")
        memory_format = (
            torch.channels_last if request["layout"] == "channels_last" else torch.contiguous_format
        )
        self.model = model.to(memory_format=memory_format).train()
        x, y = fixed_batch(
            request["input_shape"], request["classes"], request["batch"], request["seed"]
        )
        self.x = torch.from_numpy(x.transpose(0, 3, 1, 2).copy()).contiguous(
            memory_format=memory_format
        )
        self.y = torch.from_numpy(y)
        self.loss_weights = dict(request["loss_weights"])
        autocast = request.get("autocast")
        if autocast not in (None, "bfloat16"):
            raise ValueError(f"unknown autocast dtype {autocast!r}; choose from [None, 'bfloat16']")
        self.autocast = autocast
        self.optimizer = torch_optimizer(self.model.parameters(), request["optimizer"])
        self.trainable_params = sum(p.numel() for p in self.model.parameters() if p.requires_grad)

    def outputs(self):
        out = self.model(self.x)
        if isinstance(out, dict):
            return out
        # torchvision's GoogLeNetOutputs(logits, aux_logits2, aux_logits1) in training.
        return {"main": out.logits, "aux1": out.aux_logits1, "aux2": out.aux_logits2}

    def step(self):
        import torch
        from torch.nn import functional as F

        self.optimizer.zero_grad(set_to_none=True)
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=self.autocast is not None):
            outputs = self.outputs()
            loss = sum(
                w * F.cross_entropy(outputs[k], self.y) for k, w in self.loss_weights.items()
            )
        loss.backward()
        self.optimizer.step()
        main = outputs["main"] if "main" in outputs else next(iter(outputs.values()))
        self.output_dtype = str(main.dtype).removeprefix("torch.")
        return loss

    def train(self, steps: int) -> dict:
        start = time.perf_counter()
        loss = None
        for _ in range(steps):
            loss = self.step()
        value = float(loss.item())  # torch on CPU is synchronous; this reads the result
        return {
            "seconds": time.perf_counter() - start,
            "loss": value,
            "output_dtype": self.output_dtype,
        }


def torch_optimizer(parameters, settings: Mapping):
    import torch

    if settings["name"] == "adamw":
        return torch.optim.AdamW(
            parameters, lr=settings["learning_rate"], weight_decay=settings["weight_decay"]
        )
    if settings["name"] == "sgd":
        return torch.optim.SGD(
            parameters, lr=settings["learning_rate"], momentum=settings["momentum"]
        )
    raise ValueError(f"unknown optimizer {settings['name']!r}; choose from {list(OPTIMIZERS)}")


def torch_info() -> dict:
    import torch

    try:
        import torchvision

        vision = torchvision.__version__
    except ImportError:
        vision = None
    return {
        "torch": torch.__version__,
        "torchvision": vision,
        "threads": torch.get_num_threads(),
        "interop_threads": torch.get_num_interop_threads(),
        "omp_wait_policy": os.environ.get("OMP_WAIT_POLICY", "unset"),
        "mkldnn": bool(torch.backends.mkldnn.is_available()),
    }


def infer(request: Mapping) -> dict:
    """The `infer` command: the twin with Keras's weights, eval mode, Keras's outputs."""
    import torch

    graph = request["graph"]
    twin = torch_twin(graph).eval()
    with np.load(request["weights"]) as data:
        copied = load_keras_weights(twin, graph, {key: data[key] for key in data.files})
    with np.load(request["inputs"]) as data:
        x = torch.from_numpy(data["x"].transpose(0, 3, 1, 2).copy())
    with torch.no_grad():
        outputs = twin(x)
    arrays = {
        key: (torch.softmax(value, 1) if graph["outputs"][key] in twin.softmax_outputs else value)
        for key, value in outputs.items()
    }
    np.savez(request["outputs"], **{key: value.numpy() for key, value in arrays.items()})
    trainable = sum(p.numel() for p in twin.parameters() if p.requires_grad)
    return {"trainable_params": trainable, "copied": copied}


def serve(requests: TextIO, replies: TextIO, threads: int = 0) -> None:
    """Answers `TorchPeer`'s requests, one JSON line each, until `quit` or end of input,
    on `threads` threads (0: the usable cores)."""
    import torch

    torch.set_num_threads(threads or len(os.sched_getaffinity(0)))
    benches: dict[str, TorchBench] = {}
    for line in requests:
        request = json.loads(line)
        cmd = request.get("cmd")
        try:
            if cmd == "info":
                reply = torch_info()
            elif cmd == "build":
                bench = benches[request["id"]] = TorchBench(request)
                reply = {"trainable_params": bench.trainable_params}
            elif cmd == "train":
                reply = benches[request["id"]].train(int(request["steps"]))
            elif cmd == "infer":
                reply = infer(request)
            elif cmd == "quit":
                reply = {}
            else:
                raise ValueError(f"unknown command {cmd!r}")
            reply["ok"] = True
        except Exception as e:  # reported to the parent, which raises it
            traceback.print_exc()
            reply = {"ok": False, "error": f"{type(e).__name__}: {e}"}
        replies.write(json.dumps(reply) + "\n")
        replies.flush()
        if cmd == "quit":
            return


def worker_main() -> None:
    """The torch process: replies on the original stdout; all other output to stderr."""
    replies = os.fdopen(os.dup(sys.stdout.fileno()), "w")
    os.dup2(sys.stderr.fileno(), sys.stdout.fileno())
    sys.stdout = sys.stderr
    serve(sys.stdin, replies, int(sys.argv[2]) if len(sys.argv) > 2 else 0)


if __name__ == "__main__":
    if IS_WORKER:
        worker_main()
    else:
        main(sys.argv[1:])
