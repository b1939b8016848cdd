"""benchmarks/inference.py and its engines (inference_engines.py): the pure helpers, the
measuring loop on fake engines, the command line, a tiny run of two of our engines, and
the torch process's imports.

No figure is checked (the machine is shared): the tests check what is computed from
given times, and that the script runs and says what it measured.
"""

import json
import math
from pathlib import Path

import pytest

from benchmarks import common, inference
from benchmarks import inference_engines as engines
from benchmarks import torch_inference_worker as worker

ROOT = Path(__file__).resolve().parents[1]


def test_docstring_examples_run():
    import doctest

    for module in (inference, engines, worker):
        result = doctest.testmod(module, optionflags=doctest.NORMALIZE_WHITESPACE)
        assert result.failed == 0 and result.attempted >= 2, module.__name__


def test_latency_percentiles():
    # 1..10 ms in any order: linear interpolation, p50 between 5 and 6, p90 at 9.1.
    seconds = [0.007, 0.001, 0.010, 0.004, 0.002, 0.009, 0.003, 0.006, 0.005, 0.008]
    assert engines.latency_ms(seconds) == (5.5, 9.1)
    assert engines.latency_ms([0.002]) == (2.0, 2.0)
    assert all(math.isnan(value) for value in engines.latency_ms([]))


def test_split_calls():
    assert engines.split_calls(50, 5) == [10, 10, 10, 10, 10]
    assert engines.split_calls(52, 5) == [11, 11, 10, 10, 10]
    assert engines.split_calls(3, 5) == [1, 1, 1, 0, 0]
    with pytest.raises(ValueError, match="received 3, 0"):
        engines.split_calls(3, 0)


def test_bf16_flags_from_cpuinfo_flags():
    zen3 = "fpu vme sse4_2 avx avx2 fma"
    zen4 = "avx2 avx512f avx512_vnni avx512_bf16 avx512vl"
    sapphire = "avx512f amx_bf16 amx_tile amx_int8 avx512_bf16"
    assert inference.bf16_flags(zen3) == []
    assert inference.bf16_flags(zen4) == ["avx512_bf16"]
    assert inference.bf16_flags(sapphire) == ["avx512_bf16", "amx_bf16"]
    assert inference.bf16_flags("avx512_bf16x amx_bf16_y") == []  # whole flags only


def test_engine_selection():
    names = ["torch_eager", "openvino_bf16", "onnxruntime", "onnxruntime", "litert_int8"]
    chosen, notes = inference.select_engines(names, bf16=True)
    assert chosen == ["onnxruntime", "litert_int8", "openvino_bf16", "torch_eager"]
    assert notes == []
    chosen, notes = inference.select_engines(names, bf16=False)
    assert chosen == ["onnxruntime", "litert_int8", "torch_eager"]
    assert notes == [
        "openvino_bf16 left out: this CPU's flags have neither avx512_bf16 nor amx_bf16"
    ]
    with pytest.raises(ValueError, match="unknown engine 'tensorrt'"):
        inference.select_engines(["onnxruntime", "tensorrt"], bf16=True)


def test_missing_torch_names_the_package_and_the_command():
    installed = {"torch", "torchvision"}

    def finder(present):
        return lambda name: object() if name in present else None

    assert inference.missing_torch(finder(installed)) is None
    assert inference.missing_torch(finder(set())) == "torch not installed: make install-torch"
    assert (
        inference.missing_torch(finder({"torch"}))
        == "torchvision not installed: make install-torch"
    )


def table(rows):
    """Rows as `Row.table_row` gives them, from (model, engine, p50 ms)."""
    return [
        {
            "model": model,
            "engine": engine,
            "side": engines.ENGINES[engine].side,
            "batch-1 p50 ms": p50,
        }
        for model, engine, p50 in rows
    ]


def test_ratios_and_verdicts():
    rows = table(
        [
            ("googlenet", "onnxruntime", 4.0),
            ("googlenet", "openvino", 2.0),
            ("googlenet", "torch_eager", 8.0),
            ("googlenet", "torch_compile", 5.0),
            ("inception_v3", "litert", 10.0),
            ("inception_v3", "torch_channels_last", 12.0),
            ("inception_v3", "torch_compile", math.nan),  # failed
        ]
    )
    inference.add_ratios(rows)
    assert [row[inference.RATIO_COLUMN] for row in rows[:4]] == [1.25, 2.5, 0.625, 1.0]
    assert rows[4][inference.RATIO_COLUMN] == 1.2
    assert math.isnan(rows[6][inference.RATIO_COLUMN])
    assert inference.verdict(rows, "googlenet", calls=50) == (
        "googlenet: our fastest, openvino (2.00 ms), is 2.50x the fastest torch path, "
        "torch_compile (5.00 ms), at batch 1 (p50): target 1.5x met"
    )
    assert inference.verdict(rows, "inception_v3", calls=60).endswith(
        "is 1.20x the fastest torch path, torch_channels_last (12.00 ms), at batch 1 (p50): "
        "target 1.5x NOT met"
    )
    assert inference.verdict(rows, "googlenet", calls=3).endswith(
        "no verdict from 3 calls (the target needs >= 50)"
    )
    no_torch = table([("googlenet", "litert", 1.0), ("googlenet", "torch_eager", math.nan)])
    inference.add_ratios(no_torch)
    assert math.isnan(no_torch[0][inference.RATIO_COLUMN])
    assert (
        inference.verdict(no_torch, "googlenet", calls=50)
        == "googlenet: no verdict: no torch row was measured"
    )


class FakeRunner:
    """A runner whose every call takes `seconds`, logging (name, batch, calls)."""

    def __init__(self, name, log, seconds=0.01, classes=1000, fail_on=None):
        self.name, self.log, self.seconds = name, log, seconds
        self.classes, self.fail_on = classes, fail_on

    def run(self, batch, calls):
        self.log.append((self.name, batch, calls))
        if self.fail_on == len(self.log):
            raise RuntimeError("first line\nboom")
        # This process's CPU time: twice the wall (two cores busy).
        wall = self.seconds * calls
        return engines.Timing([self.seconds] * calls, 2 * wall, wall, (batch, self.classes))


def test_measure_interleaves_rewarms_and_times():
    log = []
    rows = [
        engines.Row("googlenet", "onnxruntime", FakeRunner("a", log)),
        engines.Row("googlenet", "torch_eager", FakeRunner("b", log, seconds=0.02)),
    ]
    engines.measure(
        rows, 1, warmup=2, calls=5, rounds=2, record=lambda row: row.latencies, rewarm=True
    )
    assert log == [
        ("a", 1, 2), ("b", 1, 2),  # warm-up
        ("a", 1, 1), ("a", 1, 3), ("b", 1, 1), ("b", 1, 3),  # round 1: rewarm, 3 timed
        ("a", 1, 1), ("a", 1, 2), ("b", 1, 1), ("b", 1, 2),  # round 2: rewarm, 2 timed
    ]  # fmt: skip
    assert [len(row.latencies) for row in rows] == [5, 5]
    log.clear()
    engines.measure(
        rows, 4, warmup=1, calls=3, rounds=5, record=lambda row: row.batch_seconds, rewarm=False
    )
    assert log == [("a", 4, 1), ("b", 4, 1), ("a", 4, 1), ("b", 4, 1), ("a", 4, 1),
                   ("b", 4, 1), ("a", 4, 1), ("b", 4, 1)]  # fmt: skip
    # Only timed calls count: 5 x 0.01 s + 3 x 0.01 s of wall, twice that of CPU.
    assert rows[0].usage.wall == pytest.approx(0.08)
    assert rows[0].usage.ratio == pytest.approx(2.0)
    row = rows[1].table_row(batch_size=4)
    assert row["batch-1 p50 ms"] == pytest.approx(20.0)
    assert row["batch-4 img/s"] == pytest.approx(12 / 0.06)
    assert (row["batch-1 calls"], row["batch-4 calls"]) == (5, 3)
    assert row["note"] == "eager, NCHW" and row["precision"] == "fp32"


def test_a_failing_engine_becomes_its_rows_note():
    log = []
    rows = [
        engines.Row("googlenet", "torch_compile", FakeRunner("a", log, fail_on=1)),
        engines.Row("googlenet", "litert", FakeRunner("b", log, classes=10)),
        engines.Row("googlenet", "openvino", FakeRunner("c", log)),
    ]
    engines.measure(
        rows, 1, warmup=1, calls=2, rounds=2, record=lambda row: row.latencies, rewarm=False
    )
    assert log == [("a", 1, 1), ("b", 1, 1), ("c", 1, 1), ("c", 1, 1), ("c", 1, 1)]
    assert rows[0].error == "warm-up at batch 1 failed: boom"
    assert rows[1].error == "warm-up at batch 1 failed: output shape (1, 10); expected (1, 1000)"
    assert rows[2].error is None and len(rows[2].latencies) == 2
    failed = rows[0].table_row(batch_size=32)
    assert math.isnan(failed["batch-1 p50 ms"]) and math.isnan(failed["batch-32 img/s"])
    assert failed["note"] == "warm-up at batch 1 failed: boom"


def test_torch_inputs_are_normalized_nchw(monkeypatch):
    pixels = worker.np.zeros((1, 3, 3, 3), dtype=worker.np.uint8)
    pixels[0, 1, 2, 0] = 255  # row 1, column 2, red
    monkeypatch.setattr(worker, "raw_pixels", lambda size, batch, seed: pixels)
    x = worker.inputs(3, 1, seed=0)
    assert x.shape == (1, 3, 3, 3) and x.flags["C_CONTIGUOUS"]
    assert x[0, 0, 1, 2] == pytest.approx((1 - 0.485) / 0.229)  # torchvision's constants
    assert x[0, 0, 0, 0] == pytest.approx(-0.485 / 0.229)
    assert x[0, 2, 1, 2] == pytest.approx(-0.406 / 0.225)


def test_columns_and_defaults():
    args = inference.parse_args([])
    assert args.models == ["googlenet", "inception_v3"]
    assert (args.googlenet_image_size, args.v3_image_size) == (224, 299)
    assert (args.calls, args.batch_size, args.width_multiplier) == (50, 32, 1.0)
    assert args.engines == list(engines.ENGINES) and args.output is None
    assert inference.columns(32)[5] == "batch-32 img/s"
    assert inference.columns(32)[-2:] == (common.CPU_COLUMN, "note")


@pytest.mark.parametrize(
    "argv, message",
    [
        (["--calls", "0"], "argument --calls: expected a positive integer; received '0'"),
        (["--threads", "-2"], "argument --threads: expected a positive integer; received '-2'"),
        (["--width-multiplier", "0"], "expected a positive number; received '0'"),
        (["--v3-image-size", "64"], "--v3-image-size must be at least 75 for inception_v3; "
                                    "received 64"),
        (["--googlenet-image-size", "16"], "--googlenet-image-size must be at least 32 for "
                                           "googlenet; received 16"),
        (["--engines", "tensorrt"], "argument --engines: invalid choice: 'tensorrt'"),
    ],
)  # fmt: skip
def test_bad_values_are_named(argv, message, capsys):
    with pytest.raises(SystemExit):
        inference.parse_args(argv)
    assert message in capsys.readouterr().err


def test_small_side_is_fine_for_a_model_not_run():
    args = inference.parse_args(["--models", "inception_v3", "--googlenet-image-size", "16"])
    assert args.models == ["inception_v3"]
    args.models = ["googlenet"]
    with pytest.raises(ValueError, match="at least 32 for googlenet; received 16"):
        inference.check_args(args)


@pytest.mark.large  # 12 s on 2 cores: exports and traces two models
def test_tiny_run_of_two_engines(tmp_path, capsys, monkeypatch):
    """GoogLeNet at width 1/8 and 32x32: tf_function and LiteRT, and the torch rows'
    note without torch (forced: the test does not start torch)."""
    monkeypatch.setattr(
        inference, "missing_torch", lambda: "torch not installed: make install-torch"
    )
    output = tmp_path / "rows.json"
    argv = ["--models", "googlenet", "--engines", "tf_function", "litert", "torch_eager",
            "--googlenet-image-size", "32", "--width-multiplier", "0.125", "--calls", "3",
            "--warmup", "1", "--rounds", "2", "--batch-size", "2", "--batch-calls", "1",
            "--output", str(output)]  # fmt: skip
    rows = inference.main(argv)
    assert [(row["engine"], row["batch-1 calls"], row["batch-2 calls"]) for row in rows] == [
        ("tf_function", 3, 1),
        ("litert", 3, 1),
        ("torch_eager", 0, 0),
    ]
    for row in rows[:2]:
        assert row["note"] == engines.ENGINES[row["engine"]].note
        assert 0 < row["batch-1 p50 ms"] <= row["batch-1 p90 ms"]
        assert row["batch-2 img/s"] > 0 and row[common.CPU_COLUMN] > 0
    assert rows[2]["note"] == "torch not installed: make install-torch"
    assert math.isnan(rows[2]["batch-1 p50 ms"])
    out = capsys.readouterr().out
    assert out.startswith("machine: ")
    assert "torch rows: torch not installed: make install-torch" in out
    assert out.rstrip().endswith("googlenet: no verdict: no torch row was measured")
    report = json.loads(output.read_text())
    assert report["verdicts"] == ["googlenet: no verdict: no torch row was measured"]
    assert report["rows"][2]["batch-1 p50 ms"] is None
    assert report["args"]["calls"] == 3
