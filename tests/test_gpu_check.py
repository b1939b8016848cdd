"""Tests of `benchmarks.gpu_check` (`make gpu-check`): the no-GPU exit, the rows it plans,
its error handling and its time budget, with the measurements replaced where they would
build full-size models. The whole table at a tiny size on the CPU (a fake GPU list) is
`large`: it traces three training graphs, one with XLA (about 50 s on 2 cores)."""

import doctest
import os
import subprocess
import sys
from pathlib import Path

import keras
import pytest
import tensorflow as tf

from benchmarks import common, gpu_check, pipeline
from benchmarks import models as model_bench

ROOT = Path(__file__).resolve().parents[1]
TINY = [
    "--models", "googlenet", "--googlenet-image-size", "32", "--googlenet-batch-size", "2",
    "--width-multiplier", "0.125", "--steps", "1", "--warmup-steps", "1", "--images", "3",
    "--pipeline-batches", "1",
]  # fmt: skip


def test_docstring_examples_run():
    result = doctest.testmod(gpu_check, optionflags=doctest.ELLIPSIS)
    assert result.attempted == 6
    assert result.failed == 0


def test_no_gpu_prints_the_machine_and_one_line_and_builds_nothing(monkeypatch, capsys):
    monkeypatch.setattr(gpu_check, "visible_gpus", lambda: [])

    def refuse(*args, **kwargs):
        raise AssertionError("a model was built on a machine without a GPU")

    monkeypatch.setattr(model_bench, "prepare", refuse)
    assert gpu_check.main([]) == []
    lines = capsys.readouterr().out.splitlines()
    assert lines[:-1] == common.machine_description().splitlines()
    assert lines[-1] == (
        "no GPU: tf.config.list_physical_devices('GPU') is empty; "
        "gpu-check measures nothing on this machine"
    )


@pytest.mark.skipif(
    bool(tf.config.list_physical_devices("GPU")), reason="the no-GPU exit needs a machine without"
)
def test_make_gpu_check_on_a_cpu_machine_exits_zero():
    result = subprocess.run(
        [sys.executable, "-m", "benchmarks.gpu_check"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
        env={**os.environ, "CUDA_VISIBLE_DEVICES": ""},
    )
    assert result.returncode == 0, result.stderr[-2000:]
    assert result.stdout.splitlines()[-1] == gpu_check.NO_GPU
    assert result.stdout.splitlines()[0].startswith("machine: ")


def test_single_gpu_rows_are_each_model_without_then_with_xla():
    args = gpu_check.parse_args(["--v3-batch-size", "32", "--googlenet-image-size", "192"])
    assert gpu_check.single_gpu_rows(args) == [
        gpu_check.TrainRow("googlenet", 192, 128, jit_compile=False),
        gpu_check.TrainRow("googlenet", 192, 128, jit_compile=True),
        gpu_check.TrainRow("inception_v3", 299, 32, jit_compile=False),
        gpu_check.TrainRow("inception_v3", 299, 32, jit_compile=True),
    ]


def test_mirrored_rows_take_the_faster_single_gpu_xla_setting():
    args = gpu_check.parse_args(["--models", "inception_v3", "googlenet", "inception_v3"])
    measured = [
        {"measure": "train, 1 GPU", "model": "inception_v3", "XLA": "off", "img/s": 900.0},
        {"measure": "train, 1 GPU", "model": "inception_v3", "XLA": "on", "img/s": 1200.0},
        {"measure": "train, 1 GPU", "model": "googlenet", "XLA": "off", "img/s": 3000.0},
        {"measure": "train, 1 GPU", "model": "googlenet", "XLA": "on", "note": "OOM"},
        # A MirroredStrategy row, however fast, does not decide.
        {"measure": "train, MirroredStrategy", "model": "googlenet", "XLA": "on", "img/s": 9e9},
    ]
    assert gpu_check.mirrored_rows(args, measured) == [
        gpu_check.TrainRow("inception_v3", 299, 64, jit_compile=True, mirrored=True),
        gpu_check.TrainRow("googlenet", 224, 128, jit_compile=False, mirrored=True),
    ]


def test_unknown_model_is_refused_with_its_name():
    args = gpu_check.parse_args([])
    with pytest.raises(ValueError, match="unknown gpu-check model 'resnet50'"):
        gpu_check.size_and_batch("resnet50", args)


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["--steps", "0"], "--steps: expected a positive integer; received '0'"),
        (["--time-budget-minutes", "-1"], "expected a positive number; received '-1'"),
        (["--models", "resnet50"], "invalid choice: 'resnet50'"),
    ],
)
def test_bad_options_are_refused_naming_the_value(argv, message, capsys):
    with pytest.raises(SystemExit) as exit_info:
        gpu_check.parse_args(argv)
    assert exit_info.value.code == 2
    assert message in capsys.readouterr().err


def test_describe_gpus_gives_name_capability_and_memory(monkeypatch):
    details = {"device_name": "NVIDIA H100 80GB HBM3", "compute_capability": (9, 0)}
    monkeypatch.setattr(tf.config.experimental, "get_device_details", lambda device: details)
    monkeypatch.setattr(gpu_check, "memory_gib_by_index", lambda: {0: 79.6474609375})
    devices = [
        tf.config.PhysicalDevice("/physical_device:GPU:0", "GPU"),
        tf.config.PhysicalDevice("/physical_device:GPU:1", "GPU"),
    ]
    assert gpu_check.describe_gpus(devices).splitlines() == [
        "GPU:0: NVIDIA H100 80GB HBM3, compute capability 9.0, 79.6 GiB",
        "GPU:1: NVIDIA H100 80GB HBM3, compute capability 9.0",
    ]


def test_a_failed_row_reports_its_error_in_the_note(monkeypatch):
    def out_of_memory(*args, **kwargs):
        raise tf.errors.ResourceExhaustedError(
            None, None, "OOM when allocating tensor with shape[128,64,112,112]\nHint: ..."
        )

    monkeypatch.setattr(model_bench, "prepare", out_of_memory)
    args = gpu_check.parse_args([])
    row = gpu_check.train_row(gpu_check.TrainRow("googlenet", 224, 128, True), args)
    assert set(row) == {"measure", "model", "input", "batch", "XLA", "note", "seconds"}
    assert row["note"] == (
        "ResourceExhaustedError: OOM when allocating tensor with shape[128,64,112,112]"
    )
    assert (row["measure"], row["input"], row["batch"], row["XLA"]) == (
        "train, 1 GPU", "224x224", 128, "on",
    )  # fmt: skip


def _fake_train(row, args, usage):
    """Images/s by row: XLA helps inception_v3 and fails on googlenet."""
    if row.model == "googlenet" and row.jit_compile:
        raise tf.errors.InternalError(None, None, "XLA compilation failed")
    rate = {"googlenet": 3000.0, "inception_v3": 1000.0}[row.model] * (
        1.5 if row.jit_compile else 1
    )
    return {"policy": keras.config.dtype_policy().name, "img/s": rate * (2 if row.mirrored else 1)}


def test_run_measures_every_row_and_restores_the_policy(monkeypatch, capsys):
    monkeypatch.setattr(gpu_check, "visible_gpus", lambda: [])
    monkeypatch.setattr(gpu_check, "_train", _fake_train)
    fed = []

    def pipeline_row(args, rows):
        fed.append(list(rows))
        return {"measure": "p", "model": "m", "input": "i"}

    monkeypatch.setattr(gpu_check, "pipeline_row", pipeline_row)
    keras.config.set_dtype_policy("float32")
    rows = gpu_check.run(gpu_check.parse_args([]))
    assert keras.config.dtype_policy().name == "float32"
    got = [
        (r["measure"], r["model"], r["XLA"], r.get("policy"), r.get("img/s"), r.get("note"))
        for r in rows[:-1]
    ]
    one, mirrored = "train, 1 GPU", "train, MirroredStrategy"
    failed = "InternalError: XLA compilation failed"
    assert got == [
        (one, "googlenet", "off", "mixed_float16", 3000.0, None),
        (one, "googlenet", "on", None, None, failed),
        (one, "inception_v3", "off", "mixed_float16", 1000.0, None),
        (one, "inception_v3", "on", "mixed_float16", 1500.0, None),
        (mirrored, "googlenet", "off", "mixed_float16", 6000.0, None),
        (mirrored, "inception_v3", "on", "mixed_float16", 3000.0, None),
    ]
    assert fed == [rows[:-1]]  # the pipeline row sees every training row
    progress = capsys.readouterr().out.splitlines()
    assert [line.split("] ", 1)[1] for line in progress[-7:]] == [
        "train, 1 GPU, googlenet 224x224, XLA off: 3,000 img/s",
        f"train, 1 GPU, googlenet 224x224, XLA on: {failed}",
        "train, 1 GPU, inception_v3 299x299, XLA off: 1,000 img/s",
        "train, 1 GPU, inception_v3 299x299, XLA on: 1,500 img/s",
        "train, MirroredStrategy, googlenet 224x224, XLA off: 6,000 img/s",
        "train, MirroredStrategy, inception_v3 299x299, XLA on: 3,000 img/s",
        "p, m i: ",
    ]


def test_rows_past_the_time_budget_are_skipped_but_the_pipeline_runs(monkeypatch):
    monkeypatch.setattr(gpu_check, "visible_gpus", lambda: [])
    monkeypatch.setattr(gpu_check, "_train", _fake_train)
    monkeypatch.setattr(
        gpu_check, "pipeline_row", lambda args, rows: {"measure": "p", "model": "m", "input": "i"}
    )
    argv = ["--models", "googlenet", "--time-budget-minutes", "1e-12"]
    rows = gpu_check.run(gpu_check.parse_args(argv))
    skipped = "skipped: the run passed --time-budget-minutes 1e-12"
    assert [(r["measure"], r.get("XLA"), r.get("note")) for r in rows] == [
        ("train, 1 GPU", "off", skipped),
        ("train, 1 GPU", "on", skipped),
        ("train, MirroredStrategy", "off", skipped),
        ("p", None, None),
    ]


def test_pipeline_row_feeds_the_fastest_row_in_whole_batches(monkeypatch):
    written = []
    write = pipeline.write_jpeg_folder

    def record(root, images, **kwargs):
        written.append(images)
        return write(root, images, width=40, height=30, **kwargs)

    monkeypatch.setattr(pipeline, "write_jpeg_folder", record)
    args = gpu_check.parse_args(TINY + ["--v3-image-size", "40"])
    measured = [
        {"measure": "train, 1 GPU", "model": "googlenet", "XLA": "off", "batch": 2, "img/s": 1e-6},
        {"measure": "train, MirroredStrategy", "model": "inception_v3", "XLA": "on",
         "batch": 4, "img/s": 2e-6},
        {"measure": "train, 1 GPU", "model": "inception_v3", "XLA": "on", "note": "OOM"},
    ]  # fmt: skip
    row = gpu_check.pipeline_row(args, measured)
    assert written == [4]  # 3 images asked, whole batches of 4
    assert (row["measure"], row["model"], row["input"], row["batch"]) == (
        "tf.data JPEG pipeline", "inception_v3", "40x40", 4,
    )  # fmt: skip
    assert row["note"].endswith(
        "x the fastest training row (train, MirroredStrategy, XLA on): can feed it"
    )
    assert "img/s" in row


@pytest.mark.large
def test_the_whole_table_at_a_tiny_size_on_the_cpu(monkeypatch, capsys):
    monkeypatch.setattr(gpu_check, "visible_gpus", lambda: tf.config.list_physical_devices("CPU"))
    rows = gpu_check.main(TINY)
    assert [(r["measure"], r.get("XLA"), r["batch"]) for r in rows] == [
        ("train, 1 GPU", "off", 2),
        ("train, 1 GPU", "on", 2),
        ("train, MirroredStrategy", rows[2]["XLA"], 2),
        ("tf.data JPEG pipeline", None, 2),
    ]
    assert all(r.get("policy") == "mixed_float16" for r in rows[:3] if "img/s" in r)
    assert "img/s" in rows[0] and "img/s" in rows[3]
    assert capsys.readouterr().out.splitlines()[-6].startswith("| measure ")
