"""Tests of the quiet TensorFlow start-up of the command line (`training/quiet.py`)."""

import os
import subprocess
import sys
from pathlib import Path

import pytest

from training import quiet

ROOT = Path(__file__).resolve().parents[1]

# What TensorFlow 2.21 prints on a machine with no NVIDIA driver.
NOISE = [
    "WARNING: All log messages before absl::InitializeLog() is called are written to STDERR",
    "I0000 00:00:1795433992.878482    1939 cudart_stub.cc:31] Could not find cuda drivers on "
    "your machine, GPU will not be used.",
    "E0000 00:00:1795433999.700769    1939 cuda_platform.cc:52] failed call to cuInit: "
    "INTERNAL: CUDA error: Failed call to cuInit: UNKNOWN ERROR (303)",
    "I0000 00:00:1795453813.686856   18257 port.cc:153] oneDNN custom operations are on. You may "
    "see slightly different numerical results due to floating-point round-off errors from "
    "different computation orders. To turn them off, set the environment variable "
    "`TF_ENABLE_ONEDNN_OPTS=0`.",
]
NO_DRIVER = not quiet.nvidia_driver_present()


def test_stderr_without_drops_only_the_startup_noise(capfd):
    kept = [
        "E0000 00:00:1795433999.700769    1939 cuda_platform.cc:60] another CUDA error",
        "I0000 00:00:1795433992.878482    1939 cudart_stub.cc:31] another message",
        "I0000 00:00:1795433992.878482    1939 port.cc:153] another port.cc message",
        "Traceback (most recent call last):",
        "error: model file not found: '/nonexistent'",
    ]
    with quiet.stderr_without(quiet.STARTUP_NOISE):
        for line in [NOISE[0], NOISE[1], kept[0], kept[1], NOISE[3], NOISE[2], *kept[2:]]:
            os.write(2, f"{line}\n".encode())
    print("after the block", file=sys.stderr)
    assert capfd.readouterr().err.splitlines() == [*kept, "after the block"]


def _evaluate_missing_model(tmp_path, **env):
    """`python -m training evaluate` of a missing file: imports TensorFlow, then fails."""
    clean = {k: v for k, v in os.environ.items() if k != "TF_CPP_MIN_LOG_LEVEL"}
    missing = tmp_path / "missing.keras"
    result = subprocess.run(
        [sys.executable, "-m", "training", "evaluate", str(missing), "--dataset", "fashion_mnist"],
        cwd=ROOT,
        env={**clean, **env},
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert result.returncode == 2, result.stderr[-3000:]
    return result.stderr.splitlines(), f"error: model file not found: '{missing}'"


def test_cli_stderr_is_the_error_alone(tmp_path):
    lines, error = _evaluate_missing_model(tmp_path)
    assert error in lines
    assert not [line for line in lines if "cuInit" in line or line.startswith(("E0000", "I0000"))]
    if NO_DRIVER:  # where TensorFlow printed the three lines above
        assert lines == [error]


@pytest.mark.skipif(not NO_DRIVER, reason="the start-up lines appear only without a driver")
def test_cli_keeps_tensorflow_logs_at_level_0(tmp_path):
    lines, error = _evaluate_missing_model(tmp_path, TF_CPP_MIN_LOG_LEVEL="0")
    assert any("cudart_stub.cc" in line for line in lines)
    assert lines[-1] == error
