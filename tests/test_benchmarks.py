"""Tests of the benchmark scripts: the helpers, and each script's table at tiny sizes.

They check that the scripts run and report what they claim, not any speed. A script's
`main` traces two or more Keras training graphs (30-80 s on 2 shared cores), so those
runs are `large`; the helpers they are built from are tested in the fast suite.
"""

import os
import subprocess
import sys
from pathlib import Path

import keras
import pytest

import keras_inception as ki
from benchmarks import common, fused_bn, models, pipeline, precision
from training import quiet

ROOT = Path(__file__).resolve().parents[1]


def test_format_table_aligns_and_formats():
    table = common.format_table([{"a": 1234567, "b": 0.51234}, {"a": 2, "b": float("nan")}])
    lines = table.splitlines()
    assert lines[0].startswith("| a ")
    assert "1,234,567" in lines[2] and "0.512" in lines[2]
    assert lines[3].split("|")[2].strip() == "-"
    assert len({len(line) for line in lines}) == 1


def test_matmul_rate_is_positive():
    assert common.MatmulRate(n=64, repeats=1).measure() > 0


@pytest.mark.large
def test_models_table(capsys):
    rows = models.main(
        ["--models", "googlenet_aux", "--width", "0.125", "--googlenet-size", "64",
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


@pytest.mark.large  # 14 s: builds and trains a GoogLeNet, like test_models_table
def test_models_run_under_the_policy_asked_for_and_restore_it():
    args = models.parse_args(
        ["--models", "googlenet", "--width", "0.125", "--googlenet-size", "32",
         "--batch-size", "2", "--rounds", "1", "--steps", "1", "--matmul-size", "32",
         "--classes", "10", "--policy", "mixed_bfloat16"]
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
         "--rounds", "1", "--googlenet-size", "64", "--width", "0.125", "--no-v3",
         "--small-images", "64", "--small-batch-size", "16"]
    )  # fmt: skip
    assert "machine:" in capsys.readouterr().out
    assert [r["input"] for r in rows] == ["64x64", "28x28", "400x300 crop"]
    for row in rows:
        assert set(pipeline.COLUMNS) <= set(row)
        assert row["pipeline img/s"] > 0 and row["ratio"] > 0


@pytest.mark.large
def test_precision_table(capsys):
    rows = precision.main(
        ["--generated", "--width", "0.125", "--train-limit", "64", "--test-limit", "32",
         "--batch-size", "16", "--epochs", "1", "--skip", "1",
         "--policies", "float32", "mixed_bfloat16"]
    )  # fmt: skip
    assert "machine:" in capsys.readouterr().out
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


def test_batch_timer_skips_first_batches():
    timer = precision.BatchTimer(batch_size=4, skip=2)
    timer.on_epoch_begin(0)
    timer.times = [0.0, 10.0, 11.0, 12.0, 13.0]  # the first two batches were slow (tracing)
    timer.on_epoch_end(0)
    assert timer.rates == [pytest.approx(2 * 4 / 2.0)]


def test_generated_precision_data_shapes():
    args = precision.parse_args(["--generated", "--train-limit", "40", "--test-limit", "8",
                                 "--batch-size", "16"])  # fmt: skip
    data, source = precision.load(args)
    assert source == "generated" and data.image_shape == (28, 28, 1)
    x, y = next(iter(data.train))
    assert x.shape == (16, 28, 28, 1) and float(x.numpy().min()) >= -1.0
    assert int(y.numpy().min()) >= 0 and int(y.numpy().max()) < 10


@pytest.mark.parametrize("script", ["models", "pipeline", "precision", "profile_step", "fused_bn"])
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
