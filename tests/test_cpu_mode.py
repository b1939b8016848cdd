"""training.cpu_mode: each epoch's CPU time/wall, the one-core warning, metrics.json."""

import json
import os
import subprocess
import sys

import pytest

from tests.helpers import make_fashion_mnist
from training import cpu_mode
from training.cpu_mode import CpuUsage, classify, cpu_usage_metrics


class FakeClocks:
    """A wall clock, a process CPU clock and a 2-core machine's (idle, total) CPU time,
    moved by hand."""

    def __init__(self):
        self.wall = self.cpu = self.idle = self.total = 0.0

    def advance(self, wall: float, cpu: float, others: float = 0.0) -> None:
        """`wall` seconds pass; this process uses `cpu` s of CPU, other processes `others`."""
        self.wall += wall
        self.cpu += cpu
        self.total += 2 * wall
        self.idle += 2 * wall - cpu - others


def usage(tmp_path, clocks, cores=2, verbose=True):
    return CpuUsage(
        str(tmp_path / "cpu_usage.json"),
        cores,
        clock=lambda: clocks.wall,
        cpu_clock=lambda: clocks.cpu,
        machine_clock=lambda: (clocks.idle, clocks.total),
        verbose=verbose,
    )


def test_classify_thresholds():
    assert classify(1.29, cores=2, idle=0.35) == "one core"
    assert classify(1.29, cores=2, idle=None) == "one core"  # no /proc/stat: the ratio alone
    assert classify(1.30, cores=2, idle=0.35) == "all cores"
    assert classify(1.0, cores=2, idle=0.24) == "shared"  # other processes had the cores
    assert classify(1.0, cores=1, idle=0.5) == "all cores"  # all a 1-core machine has


def test_machine_times_reads_proc_stat(tmp_path):
    stat = tmp_path / "stat"
    stat.write_text("cpu  10 1 5 70 4 2 3 5 9 1\ncpu0 5 0 2 35 2 1 1 2 0 0\n")
    assert cpu_mode.machine_times(str(stat)) == (74.0, 100.0)  # guest counted in user
    assert cpu_mode.machine_times(str(tmp_path / "missing")) is None


def test_epoch_ratio_counts_training_not_validation(tmp_path):
    clocks = FakeClocks()
    callback = usage(tmp_path, clocks)
    callback.on_epoch_begin(0)
    clocks.advance(wall=20.0, cpu=37.0)  # training: 1.85
    callback.on_test_begin()
    clocks.advance(wall=5.0, cpu=5.0)  # validation, one core: left out
    callback.on_test_begin()  # a second evaluation in the epoch changes nothing
    callback.on_epoch_end(0)
    assert callback.epochs["1"]["cpu_per_wall"] == pytest.approx(1.85)
    assert callback.epochs["1"]["wall"] == pytest.approx(20.0)
    assert callback.epochs["1"]["machine_idle"] == pytest.approx(3.0 / 40.0)
    assert callback.epochs["1"]["pid"] == os.getpid()


def test_the_first_step_tracing_on_one_thread_is_left_out(tmp_path):
    clocks = FakeClocks()
    callback = usage(tmp_path, clocks)
    callback.on_epoch_begin(0)
    clocks.advance(wall=8.0, cpu=8.0)  # the first step traces the graph on one thread
    callback.on_train_batch_end(0)
    clocks.advance(wall=20.0, cpu=38.0)
    callback.on_train_batch_end(1)
    callback.on_epoch_end(0)
    assert callback.epochs["1"]["cpu_per_wall"] == pytest.approx(1.9)
    assert callback.epochs["1"]["wall"] == pytest.approx(20.0)


def test_epoch_without_validation_uses_the_whole_epoch(tmp_path):
    clocks = FakeClocks()
    callback = usage(tmp_path, clocks)
    callback.on_epoch_begin(0)
    clocks.advance(wall=12.0, cpu=18.0)
    callback.on_epoch_end(0)
    assert callback.epochs["1"]["cpu_per_wall"] == pytest.approx(1.5)


def test_one_core_epoch_warns_and_short_epochs_do_not(tmp_path, capsys):
    clocks = FakeClocks()
    callback = usage(tmp_path, clocks)
    callback.on_epoch_begin(0)
    clocks.advance(wall=9.0, cpu=9.0)  # under MIN_SECONDS: tracing dominates, no verdict
    callback.on_epoch_end(0)
    assert capsys.readouterr().out == ""
    callback.on_epoch_begin(1)
    clocks.advance(wall=30.0, cpu=30.0, others=29.0)  # a busy machine: not this process's mode
    callback.on_epoch_end(1)
    assert capsys.readouterr().out == ""
    callback.on_epoch_begin(2)
    clocks.advance(wall=30.0, cpu=30.6)
    callback.on_epoch_end(2)
    out = capsys.readouterr().out
    assert out.startswith(
        "warning: epoch 3 trained on one core at a time (CPU time/wall 1.02 on 2 cores, "
        "the machine 49% idle)"
    )
    assert "issue 31" in out


def test_resumed_run_keeps_earlier_epochs_and_reports_mixed(tmp_path):
    clocks = FakeClocks()
    first = usage(tmp_path, clocks, verbose=False)
    first.on_epoch_begin(0)
    clocks.advance(wall=20.0, cpu=38.0)
    first.on_epoch_end(0)
    second = usage(tmp_path, clocks, verbose=False)  # a new process resumes the run
    second.on_epoch_begin(1)
    clocks.advance(wall=40.0, cpu=40.0)
    second.on_epoch_end(1)
    with open(tmp_path / "cpu_usage.json") as f:
        saved = json.load(f)
    assert sorted(saved) == ["1", "2"]
    metrics = cpu_usage_metrics(saved, cores=2)
    assert metrics == {
        "cores": 2,
        "cpu_per_wall": [pytest.approx(1.9), pytest.approx(1.0)],
        "machine_idle": [pytest.approx(0.05), pytest.approx(0.5)],
        "one_core_epochs": [2],
        "mode": "mixed",
    }


@pytest.mark.parametrize(
    ("ratios", "idle", "mode"),
    [
        ([1.9, 1.88], 0.03, "all cores"),
        ([1.0, 1.05], 0.48, "one core"),
        ([1.0, 1.05], 0.02, "shared"),
        ([], None, "unmeasured"),
    ],
)
def test_run_modes(ratios, idle, mode):
    epochs = {
        str(i + 1): {"wall": 20.0, "cpu_per_wall": r, "machine_idle": idle}
        for i, r in enumerate(ratios)
    }
    assert cpu_usage_metrics(epochs, cores=2)["mode"] == mode


def test_short_epochs_only_are_unmeasured():
    epochs = {"1": {"wall": 3.0, "cpu_per_wall": 1.0, "machine_idle": 0.5}}
    metrics = cpu_usage_metrics(epochs, cores=2)
    assert metrics["mode"] == "unmeasured" and metrics["one_core_epochs"] == []
    assert cpu_mode.describe(metrics) == (
        "CPU time/wall while training: 1.00 on 2 cores (unmeasured)"
    )


@pytest.mark.large
def test_fresh_cli_process_trains_on_every_core(tmp_path):
    """Issue 31: a fresh `python -m training train` process must not run in the one-core
    mode. Fails when it does (the Zen 5 EPYC showed it in about half of all processes)."""
    if (os.cpu_count() or 1) < 2:
        pytest.skip("one core: there is no one-core mode to detect")
    (tmp_path / "data").mkdir()
    data_dir = make_fashion_mnist(tmp_path / "data", n_train=16000, n_test=200)
    workdir = tmp_path / "run"
    command = [
        sys.executable, "-m", "training", "train", "--dataset", "fashion_mnist",
        "--data-dir", data_dir, "--workdir", str(workdir), "--stem", "small_pool",
        "--width-multiplier", "0.125", "--min-depth", "16", "--no-aux", "--no-augment",
        "--epochs", "2", "--batch-size", "256", "--precise-bn-images", "0", "--no-export",
    ]  # fmt: skip
    subprocess.run(command, check=True, capture_output=True, text=True, timeout=900)
    with open(workdir / "metrics.json") as f:
        usage = json.load(f)["cpu_usage"]
    # "shared" means other processes had the cores: no verdict on the mode (run it alone).
    assert usage["mode"] in ("all cores", "shared"), usage
