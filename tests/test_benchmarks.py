"""Tests of the benchmark scripts: the helpers, and each script's table at tiny sizes.

They check that the scripts run and report what they claim, not any speed. A script's
`main` traces two or more Keras training graphs (30-80 s on 2 shared cores), so those
runs are `large`; the helpers they are built from are tested in the fast suite.
"""

import argparse
import importlib
import math
import os
import re
import subprocess
import sys
from pathlib import Path

import keras
import pytest

import keras_inception as ki
from benchmarks import (
    common,
    fused_bn,
    models,
    peers,
    pipeline,
    precision,
    profile_step,
    threads,
)
from training import quiet, strategy
from training.cli import build_parser as training_parser

ROOT = Path(__file__).resolve().parents[1]


def test_format_table_aligns_and_formats():
    table = common.format_table([{"a": 1234567, "b": 0.51234}, {"a": 2, "b": float("nan")}])
    lines = table.splitlines()
    assert lines[0].startswith("| a ")
    assert "1,234,567" in lines[2] and "0.512" in lines[2]
    assert lines[3].split("|")[2].strip() == "-"
    assert len({len(line) for line in lines}) == 1


def fake_usage(cpu: list[float], wall: list[float]) -> common.CpuTime:
    """A `CpuTime` whose clocks read the given values, one per call."""
    return common.CpuTime(cpu_clock=iter(cpu).__next__, wall_clock=iter(wall).__next__)


def test_cpu_time_sums_regions_and_divides():
    usage = fake_usage(cpu=[5.0, 8.75, 9.0, 9.5], wall=[100.0, 102.0, 103.0, 103.5])
    assert math.isnan(usage.ratio)  # nothing timed yet
    assert usage.add(usage.mark(), usage.mark()) == 2.0  # 3.75 CPU s in 2 s
    assert usage.add(usage.mark(), usage.mark()) == 0.5  # 0.5 CPU s in 0.5 s
    assert usage.add_seconds(1.75, 1.5) == 1.5  # measured by another process
    assert (usage.cpu, usage.wall, usage.ratio) == (6.0, 4.0, 1.5)
    with pytest.raises(ValueError, match=r"received cpu=1.0, wall=-0.5"):
        usage.add_seconds(1.0, -0.5)
    assert usage.wall == 4.0  # a bad region is not added


def test_rate_times_its_steps_on_the_usage_clock():
    calls = []
    usage = fake_usage(cpu=[2.0, 3.0], wall=[7.0, 7.25])
    assert common.rate(lambda: calls.append(1), 5, 16, usage) == 5 * 16 / 0.25
    assert len(calls) == 5 and usage.ratio == 4.0


def test_matmul_rate_counts_two_n_cubed_flops_per_product():
    matmul = common.MatmulRate(n=8, repeats=3)
    usage = fake_usage(cpu=[0.0, 1.0], wall=[1.0, 1.5])
    # 3 products of 2 * 8^3 = 1,024 FLOPs in 0.5 s: 6,144 FLOP/s.
    assert matmul.measure(usage) == 6.144e-6
    assert usage.ratio == 2.0


def assert_cpu_per_wall(rows: list[dict], out: str) -> None:
    """The printed table has the CPU time/wall column, and each row's value is at most the
    usable cores (plus rounding): CPU time of this process over the row's timed regions."""
    header = next(line for line in out.splitlines() if line.startswith("| "))
    assert f"| {common.CPU_COLUMN} " in header, header
    cores = len(os.sched_getaffinity(0))
    for row in rows:
        assert 0 < row[common.CPU_COLUMN] <= cores + 0.5, row


@pytest.mark.large
def test_models_table(capsys):
    rows = models.main(
        ["--models", "googlenet_aux", "--width-multiplier", "0.125", "--googlenet-image-size", "64",
         "--batch-size", "2", "--rounds", "1", "--steps", "1", "--matmul-size", "64",
         "--classes", "10"]
    )  # fmt: skip
    out = capsys.readouterr().out
    assert "machine:" in out and "FLOPs" in out
    # The baseline (aux-free GoogLeNet) is added and measured even when not asked for.
    assert [r["model"] for r in rows[:2]] == ["googlenet_aux", "googlenet"]
    assert set(models.COLUMNS) <= set(rows[0])
    assert rows[1]["train ratio"] == 1.0 and rows[0]["baseline"] == "googlenet"
    assert rows[0]["params"] > rows[1]["params"]  # the aux heads' weights
    assert rows[0]["GMACs"] > rows[1]["GMACs"] > 0
    assert rows[-1]["model"].startswith("fp32 matmul") and rows[-1]["train GFLOP/s"] > 0
    assert_cpu_per_wall(rows, out)  # the matmul row's too


@pytest.mark.large  # 14 s: builds and trains a GoogLeNet, like test_models_table
def test_models_run_under_the_mixed_policy_asked_for_and_restore_it():
    args = models.parse_args(
        ["--models", "googlenet", "--width-multiplier", "0.125", "--googlenet-image-size", "32",
         "--batch-size", "2", "--rounds", "1", "--steps", "1", "--matmul-size", "32",
         "--classes", "10", "--mixed-precision", "mixed_bfloat16"]
    )  # fmt: skip
    rows = models.run(args)
    assert rows[0]["policy"] == "mixed_bfloat16" and rows[0]["train img/s"] > 0
    assert rows[-1]["model"] == "bf16 matmul 32^2"
    assert keras.config.dtype_policy().name == "float32"


def test_models_rejects_unknown_model():
    with pytest.raises(SystemExit):
        models.parse_args(["--models", "resnet"])


def test_decode_and_crop_equals_decode_then_crop(tmp_path):
    paths = pipeline.write_jpeg_folder(str(tmp_path), 3, width=64, height=48)
    encoded, windows = pipeline.crop_windows(paths, seed=1)
    for data, window in zip(encoded, windows, strict=True):
        fused = pipeline.decode_fused(data, window).numpy()
        separate = pipeline.decode_then_crop(data, window).numpy()
        assert fused.shape == (int(window[2]), int(window[3]), 3)
        assert (fused == separate).all()


@pytest.mark.large
def test_pipeline_table(capsys):
    rows = pipeline.main(
        ["--images", "8", "--batch-size", "2", "--batches", "1", "--steps", "1",
         "--rounds", "1", "--googlenet-image-size", "64", "--width-multiplier", "0.125", "--no-v3",
         "--small-images", "64", "--small-batch-size", "16"]
    )  # fmt: skip
    out = capsys.readouterr().out
    assert "machine:" in out
    assert [r["input"] for r in rows] == ["64x64", "28x28", "400x300 crop"]
    for row in rows:
        assert set(pipeline.COLUMNS) <= set(row)
        assert row["pipeline img/s"] > 0 and row["ratio"] > 0
    assert_cpu_per_wall(rows, out)


@pytest.mark.large
def test_precision_table(capsys):
    rows = precision.main(
        ["--generated", "--width-multiplier", "0.125", "--train-limit", "64", "--test-limit", "32",
         "--batch-size", "16", "--epochs", "1", "--skip", "1",
         "--policies", "float32", "mixed_bfloat16"]
    )  # fmt: skip
    out = capsys.readouterr().out
    assert "machine:" in out
    assert_cpu_per_wall(rows, out)
    assert [r["policy"] for r in rows] == ["float32", "mixed_bfloat16"]
    assert all(r["data"] == "generated" for r in rows)
    assert set(precision.COLUMNS) <= set(rows[0])
    assert rows[0]["ratio to float32"] == 1.0 and rows[0]["Δ test accuracy"] == 0.0
    assert all(0.0 <= r["test accuracy"] <= 1.0 and 0.0 <= r["train accuracy"] <= 1.0 for r in rows)


@pytest.mark.large
def test_fused_bn_table(capsys):
    rows = fused_bn.main(
        ["--models", "googlenet_demo", "googlenet_demo_aux", "--demo-batch-size", "8",
         "--demo-aux-batch-size", "4", "--rounds", "2", "--steps", "1", "--warmup", "1"]
    )  # fmt: skip
    out = capsys.readouterr().out
    assert "machine:" in out and "oneDNN" in out
    assert [(row["model"], row["batch"]) for row in rows] == [
        ("googlenet_demo", 8),
        ("googlenet_demo_aux", 4),
    ]
    for row in rows:
        assert set(fused_bn.COLUMNS) <= set(row)
        # Every BN layer of the demo models is swapped and runs the fused kernel.
        assert row["BN layers"] == row["fused"] > 50
        assert row["speedup"] > 0 and row["loss diff"] < 1e-4
    assert_cpu_per_wall(rows, out)


@pytest.mark.large
def test_profile_step_table(capsys):
    rows = profile_step.main(
        ["--model", "googlenet", "--image-size", "64", "--width-multiplier", "0.125",
         "--batch-size", "2", "--steps", "1", "--classes", "10", "--top", "3"]
    )  # fmt: skip
    out = capsys.readouterr().out
    assert [row["op type"] for row in rows[-2:]] == [
        "(all ops, summed over threads)",
        "(wall time per step)",
    ]
    assert len(rows) == 5 and rows[0]["share %"] >= rows[2]["share %"]
    assert_cpu_per_wall(rows[-1:], out)  # the traced steps: the one timed region


def test_fused_bn_refuses_small_inception_v3_input():
    with pytest.raises(SystemExit):
        fused_bn.parse_args(["--image-size", "64"])
    assert fused_bn.parse_args(["--models", "googlenet_demo", "--image-size", "64"])


@pytest.mark.parametrize("name, layers", [("googlenet_demo", 57), ("googlenet_demo_aux", 59)])
def test_fused_bn_counts_the_fused_layers(name, layers):
    model, _, _ = fused_bn.build(name, 28)
    fused = keras.models.clone_model(model, clone_function=ki.fuse_batch_norm)
    assert fused_bn.batch_norm_counts(model) == (layers, 0)
    assert fused_bn.batch_norm_counts(fused) == (layers, layers)


def test_fused_bn_demo_batch_sizes():
    args = fused_bn.parse_args([])
    assert (args.demo_batch_size, args.demo_aux_batch_size) == (256, 128)
    assert "googlenet_demo_aux" not in args.models


def test_positive_int_names_the_value():
    assert common.positive_int("3") == 3
    with pytest.raises(ValueError, match="'0'"):
        common.positive_int("0")
    assert common.positive_float("0.5") == 0.5
    for text in ("0", "-1", "nan", "inf", "wide"):
        with pytest.raises(ValueError, match=f"positive number; received '{text}'"):
            common.positive_float(text)


def test_a_bad_value_is_named_after_its_option(capsys):
    with pytest.raises(SystemExit):
        profile_step.parse_args(["--width-multiplier", "0"])
    assert "argument --width-multiplier: expected a positive number; received '0'" in (
        capsys.readouterr().err
    )


def test_batch_timer_skips_first_batches():
    # The first two batches were slow (tracing); the last three took 1 s each.
    usage = fake_usage(cpu=[0.0, 1.0, 2.0, 4.0, 6.0], wall=[0.0, 10.0, 11.0, 12.0, 13.0])
    timer = precision.BatchTimer(batch_size=4, skip=2, usage=usage)
    timer.on_epoch_begin(0)
    for batch in range(5):
        timer.on_train_batch_end(batch)
    timer.on_epoch_end(0)
    assert timer.rates == [2 * 4 / 2.0]  # from the end of batch 2 to the end of batch 4
    assert (usage.cpu, usage.wall, usage.ratio) == (4.0, 2.0, 2.0)


def test_generated_precision_data_shapes():
    args = precision.parse_args(["--generated", "--train-limit", "40", "--test-limit", "8",
                                 "--batch-size", "16"])  # fmt: skip
    data, source = precision.load(args)
    assert source == "generated" and data.image_shape == (28, 28, 1)
    batches = list(data.train)  # unordered (not deterministic): the last one may come first
    assert sorted(int(x.shape[0]) for x, _ in batches) == [8, 16, 16]
    for x, y in batches:
        assert x.shape[1:] == (28, 28, 1) and float(x.numpy().min()) >= 0.0
        assert float(x.numpy().max()) <= 255.0  # pixels: the model scales them
        assert int(y.numpy().min()) >= 0 and int(y.numpy().max()) < 10


BY_PATH = ["models", "pipeline", "precision", "profile_step", "fused_bn", "threads", "peers"]


@pytest.mark.parametrize("script", BY_PATH)
def test_script_sets_up_its_path_before_any_project_import(script):
    """What running a script by path needs, read from its source: the repository root put
    on sys.path, and `benchmarks` imported (quiet TensorFlow start), before the first
    import of keras, tensorflow or a project module. The fresh-process test below runs one
    script so; `make test-large` runs them all."""
    import ast

    tree = ast.parse((ROOT / "benchmarks" / f"{script}.py").read_text())
    heavy = ("keras", "tensorflow", "training", "keras_inception", "benchmarks")
    for node in tree.body:
        if isinstance(node, ast.If) and ast.unparse(node.test) == "not __package__":
            body = ast.unparse(node)
            assert "sys.path.insert(0" in body and "import benchmarks" in body, body
            return
        if isinstance(node, ast.Import | ast.ImportFrom):
            names = (
                [a.name for a in node.names]
                if isinstance(node, ast.Import)
                else [node.module or ""]
            )
            assert not any(n.split(".")[0] in heavy for n in names), (script, names)
    raise AssertionError(f"benchmarks/{script}.py has no `if not __package__:` set-up")


@pytest.mark.parametrize(
    "script",
    # One fresh process in the default suite (7-10 s of 2 cores each); all of them large.
    [s if s == "models" else pytest.param(s, marks=pytest.mark.large) for s in BY_PATH],
)
def test_script_runs_by_path_from_another_folder(script, tmp_path):
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    result = subprocess.run(
        [sys.executable, str(ROOT / "benchmarks" / f"{script}.py"), "--help"],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    assert result.stdout.startswith(f"usage: python -m benchmarks.{script} [-h]")
    if not quiet.nvidia_driver_present():  # TensorFlow's start-up lines are filtered out
        assert result.stderr == ""


@pytest.mark.parametrize("worker", ["torch_worker", "torch_inference_worker"])
def test_torch_workers_load_without_tensorflow_or_torch(worker):
    """A torch process imports its siblings by path, never the `benchmarks` package
    (which starts TensorFlow): torch and TensorFlow in one process crash. It loads torch
    only when asked to run."""
    code = (
        f"import sys; sys.path.insert(0, sys.argv[1]); import {worker}; "
        "print(sorted({m.split('.')[0] for m in sys.modules} & {'tensorflow', 'keras', "
        "'benchmarks', 'training', 'keras_inception', 'torch', 'torchvision'}))"
    )
    result = subprocess.run(
        [sys.executable, "-c", code, str(ROOT / "benchmarks")],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    assert result.stdout.strip() == "[]"


# --- one name per concept: the scripts' options are training's (issue 30) -----------------

# The modules of benchmarks/ that are not scripts with options.
LIBRARIES = (
    "__init__", "common", "cpu_time", "keras_to_torch", "torch_worker", "torch_inference_worker",
    "inference_engines",
)  # fmt: skip
SCRIPTS = sorted(
    path.stem for path in (ROOT / "benchmarks").glob("*.py") if path.stem not in LIBRARIES
)
# The spellings the benchmarks used before, and training's names for them.
RETIRED = {
    "--width": "--width-multiplier",
    "--size": "--image-size",
    "--googlenet-size": "--googlenet-image-size",
    "--v3-size": "--v3-image-size",
    "--policy": "--mixed-precision",
    "--precision": "--mixed-precision",
}
# A benchmark option's dest -> the dest of `python -m training train`'s option for the
# same concept; a dest "<model>_<key>" is that concept for one model: "--<model>-<flag>".
CONCEPTS = {
    "width_multiplier": "width_multiplier",
    "image_size": "image_size",
    "policy": "mixed_precision",  # the benchmarks store the policy it resolves to
    "batch_size": "batch_size",
    "seed": "seed",
    "model": "model",
}
# Options whose words look like a concept above but are another one.
OTHER_CONCEPTS = {
    "--policies": "precision.py compares several dtype policies in one run",
    "--matmul-size": "a matrix side, not an image's",
}
PENDING: dict[str, str] = {}  # script -> why it is not there yet


def each_script():
    return [
        pytest.param(
            name, marks=pytest.mark.xfail(strict=True, raises=AssertionError, reason=PENDING[name])
        )
        if name in PENDING
        else name
        for name in SCRIPTS
    ]


class _Parsed(Exception):
    pass


def script_parser(name: str, monkeypatch) -> argparse.ArgumentParser:
    """The script's parser: its `build_parser()`, or for a script without one the parser
    its `parse_args` builds (caught as it parses)."""
    module = importlib.import_module(f"benchmarks.{name}")
    if hasattr(module, "build_parser"):
        return module.build_parser()
    with monkeypatch.context() as patch:
        patch.setattr(argparse.ArgumentParser, "parse_args", lambda self, *a, **k: _stop(self))
        with pytest.raises(_Parsed) as parsed:
            module.parse_args([])
    return parsed.value.args[0]


def _stop(parser):
    raise _Parsed(parser)


def visible_actions(parser: argparse.ArgumentParser) -> list[argparse.Action]:
    return [
        action
        for action in parser._actions
        if action.option_strings
        and action.help is not argparse.SUPPRESS
        and not isinstance(action, argparse._HelpAction)
    ]


def training_options() -> dict[str, list[str]]:
    """dest -> option strings of `python -m training train`."""
    commands = next(
        action
        for action in training_parser()._actions
        if isinstance(action, argparse._SubParsersAction)
    )
    return {action.dest: action.option_strings for action in commands.choices["train"]._actions}


def naming_problems(parser: argparse.ArgumentParser, training: dict[str, list[str]]) -> list[str]:
    """What in `parser`'s visible options names a concept otherwise than training does."""
    flag = {key: training[dest][0] for key, dest in CONCEPTS.items()}
    problems = {}
    for action in visible_actions(parser):
        # By the words of the option: the concepts' other spellings.
        for option in action.option_strings:
            if option in RETIRED:
                problems[option] = f"retired, training says {RETIRED[option]}"
            elif option in OTHER_CONCEPTS:
                continue
            elif "width" in option and not option.endswith(flag["width_multiplier"][1:]):
                problems[option] = f"training says {flag['width_multiplier']}"
            elif ("precision" in option or "polic" in option) and option != flag["policy"]:
                problems[option] = f"training says {flag['policy']}"
            elif option.endswith("size") and not option.endswith(
                (flag["image_size"][1:], flag["batch_size"][1:])
            ):
                problems[option] = f"training says {flag['image_size']} (or --<model>-image-size)"
        # By what the option sets: training's flags for that concept.
        for key, dest in CONCEPTS.items():
            if action.dest == key:
                expected = training[dest]
            elif action.dest.endswith(f"_{key}"):
                model = action.dest.removesuffix(f"_{key}").replace("_", "-")
                expected = [f"--{model}-{option[2:]}" for option in training[dest]]
            else:
                continue
            for option in action.option_strings:
                if option not in expected:
                    problems.setdefault(option, f"training says {expected}")
    return [f"{option}: {problem}" for option, problem in problems.items()]


def test_training_has_the_concepts_the_benchmarks_share():
    training = training_options()
    assert set(CONCEPTS.values()) <= set(training)
    assert training["width_multiplier"][0] == "--width-multiplier"
    assert training["image_size"][0] == "--image-size"
    assert training["mixed_precision"][0] == "--mixed-precision"


def test_naming_problems_finds_other_names():
    parser = argparse.ArgumentParser()
    for good in ("--width-multiplier", "--image-size", "--v3-image-size", "--demo-batch-size"):
        parser.add_argument(good)
    parser.add_argument("--mixed-precision", dest="policy", nargs="?")
    parser.add_argument("--policies", nargs="+")
    parser.add_argument("--matmul-size")
    parser.add_argument("--old-width", dest="width_multiplier", help=argparse.SUPPRESS)  # hidden
    assert naming_problems(parser, training_options()) == []
    for bad in ("--width", "--size", "--policy", "--precision", "--googlenet-size"):
        parser.add_argument(bad)
    parser.add_argument("--input-width")
    parser.add_argument("--bf16", dest="policy", action="store_true")
    parser.add_argument("--res", dest="v3_image_size")
    problems = naming_problems(parser, training_options())
    assert [problem.split(":")[0] for problem in problems] == [
        "--width", "--size", "--policy", "--precision", "--googlenet-size", "--input-width",
        "--bf16", "--res",
    ]  # fmt: skip
    assert problems[0] == "--width: retired, training says --width-multiplier"
    assert problems[-1] == "--res: training says ['--v3-image-size']"


@pytest.mark.parametrize("name", each_script())
def test_benchmark_options_are_named_as_in_training(name, monkeypatch):
    assert naming_problems(script_parser(name, monkeypatch), training_options()) == []


@pytest.mark.parametrize("name", each_script())
def test_benchmark_help_shows_every_default(name, monkeypatch):
    parser = script_parser(name, monkeypatch)
    assert issubclass(parser.formatter_class, argparse.ArgumentDefaultsHelpFormatter)
    for action in visible_actions(parser):
        formatter = parser.formatter_class(prog=parser.prog, width=10_000, max_help_position=10_000)
        formatter.add_argument(action)
        line = formatter.format_help()
        # None: the help text says what it means, as training's does.
        assert "(default: " in line, line
        if action.default is not None:
            assert str(action.default) in line.split("(default: ")[-1], line


MODELS_OF = {"fused_bn": "googlenet_demo", "models": "googlenet", "peers": "googlenet_demo"}


@pytest.mark.parametrize("name", sorted(MODELS_OF))
def test_bare_mixed_precision_is_trainings(name, monkeypatch):
    parser = script_parser(name, monkeypatch)
    assert parser.parse_args([]).policy == "float32"
    assert parser.parse_args(["--mixed-precision"]).policy == strategy.mixed_precision_policy()
    # The machine's policy comes from training's function, whatever the machine.
    monkeypatch.setattr(strategy, "mixed_precision_policy", lambda: "mixed_float16")
    assert parser.parse_args(["--mixed-precision"]).policy == "mixed_float16"
    args = parser.parse_args(["--models", MODELS_OF[name], "--mixed-precision", "--seed", "1"])
    assert (args.policy, args.models, args.seed) == ("mixed_float16", [MODELS_OF[name]], 1)


def test_mixed_policy_can_be_named_on_any_machine():
    assert models.parse_args(["--mixed-precision", "mixed_float16"]).policy == "mixed_float16"
    assert fused_bn.parse_args(["--mixed-precision", "mixed_bfloat16"]).policy == "mixed_bfloat16"
    with pytest.raises(SystemExit):
        models.parse_args(["--mixed-precision", "float16"])
    with pytest.raises(SystemExit):  # the torch twin has bfloat16 autocast only
        peers.parse_args(["--mixed-precision", "mixed_float16"])


def test_peers_adds_the_torch_process_cpu_time_to_its_row():
    class Peer:  # the torch process's replies to "train", as it measured them
        def __init__(self, *replies):
            self.replies, self.requests = list(replies), []

        def request(self, cmd, **fields):
            self.requests.append((cmd, fields))
            return self.replies.pop(0)

    bench = peers.Bench("googlenet_demo", peers.SPECS["googlenet_demo"], 8, None, None, None, 0)
    peer = Peer(
        {"seconds": 0.5, "cpu_seconds": 0.5, "loss": 2.3},
        {"seconds": 1.5, "cpu_seconds": 2.5, "loss": 2.2},
    )
    assert peers.torch_rate(peer, bench, "nchw", 4) == 4 * 8 / 0.5
    assert peers.torch_rate(peer, bench, "channels_last", 3) == 3 * 8 / 1.5
    assert peer.requests == [
        ("train", {"id": "googlenet_demo/nchw", "steps": 4}),
        ("train", {"id": "googlenet_demo/channels_last", "steps": 3}),
    ]
    assert (bench.torch_usage.ratio, bench.usage.wall) == (1.5, 0.0)  # 3 CPU s in 2 s
    with pytest.raises(RuntimeError, match="googlenet_demo/nchw: the torch loss is nan"):
        peers.torch_rate(Peer({"seconds": 1.0, "cpu_seconds": 1.0, "loss": math.nan}), bench,
                         "nchw", 1)  # fmt: skip


def test_peers_refuses_a_mixed_policy_its_twin_lacks(monkeypatch, capsys):
    monkeypatch.setattr(strategy, "mixed_precision_policy", lambda: "mixed_float16")  # a GPU
    with pytest.raises(SystemExit):
        peers.parse_args(["--mixed-precision"])
    assert "use --mixed-precision mixed_bfloat16" in capsys.readouterr().err
    args = peers.parse_args(["--mixed-precision", "mixed_bfloat16"])
    assert peers.precision_label(args.policy) == "mixed_bfloat16 / autocast bfloat16"
    assert peers.precision_label(peers.parse_args([]).policy) == "float32"


@pytest.mark.parametrize(
    "name, old, new, note",
    [
        ("models", ["--width", "0.5"], ["--width-multiplier", "0.5"], "--width-multiplier 0.5"),
        ("models", ["--v3-size", "99"], ["--v3-image-size", "99"], "--v3-image-size 99"),
        ("models", ["--googlenet-size", "64"], ["--googlenet-image-size", "64"],
         "--googlenet-image-size 64"),
        ("models", ["--policy", "mixed_float16"], ["--mixed-precision", "mixed_float16"],
         "--mixed-precision mixed_float16"),
        ("models", ["--policy", "float32"], [], "no --mixed-precision (float32 is the default)"),
        ("fused_bn", ["--policy", "mixed_bfloat16"], ["--mixed-precision", "mixed_bfloat16"],
         "--mixed-precision mixed_bfloat16"),
        ("peers", ["--precision", "bfloat16"], ["--mixed-precision", "mixed_bfloat16"],
         "--mixed-precision mixed_bfloat16"),
        ("profile_step", ["--size", "75"], ["--image-size", "75"], "--image-size 75"),
        ("precision", ["--width", "0.25"], ["--width-multiplier", "0.25"],
         "--width-multiplier 0.25"),
    ],
)  # fmt: skip
def test_old_spelling_still_works_and_names_the_new_one(name, old, new, note, capsys):
    module = importlib.import_module(f"benchmarks.{name}")
    assert module.parse_args(old) == module.parse_args(new)
    old_flag = old[0]
    assert capsys.readouterr().err == (
        f"warning: {old_flag} is deprecated and will be removed in the next release; use {note}\n"
    )
    assert not re.search(rf"{old_flag}(?![\w-])", module.build_parser().format_help())


# --- benchmarks.threads: fresh processes in the fast or the one-core mode (issue 31) --------


def test_threads_tells_fast_one_core_and_slower_processes_apart():
    def row(model, rate, ratio):
        return {"model": model, "images_per_sec": rate, "cpu_per_wall": ratio}

    rows = [
        row("googlenet_224", 35.0, 1.91),
        row("googlenet_224", 18.8, 1.02),  # the slow mode: one core, half the rate
        row("googlenet_224", 32.0, 1.90),  # 91% of the best: fast
        row("googlenet_224", 30.0, 1.85),  # 86%, both cores busy: slower, not one core
        row("demo", 402.0, 1.05),
        row("demo", 560.0, 1.93),
    ]
    modes = [r["mode"] for r in threads.classify(rows, cores=2)]
    assert modes == ["fast", "one core", "fast", "slower", "one core", "fast"]
    assert rows[1]["% of best"] == pytest.approx(100 * 18.8 / 35.0)
    summary = {r["model"]: r for r in threads.summarize(rows)}
    assert (summary["googlenet_224"]["processes"], summary["googlenet_224"]["fast"]) == (4, 2)
    assert summary["googlenet_224"]["one core"] == 1 and summary["demo"]["one core"] == 1
    assert summary["demo"]["best img/s"] == 560.0
    # On one core, CPU time/wall near 1 is all there is: no process is "one core" there.
    assert "one core" not in [r["mode"] for r in threads.classify(rows, cores=1)]


@pytest.mark.large
def test_threads_measures_a_fresh_process():
    (row,) = threads.main(["--processes", "1", "--models", "demo", "--warmup", "1", "--steps", "2"])
    assert row["images_per_sec"] > 0 and 0 < row["cpu_per_wall"] <= os.cpu_count() + 0.5
    assert row["pid"] != os.getpid() and row["mode"] == "fast"
