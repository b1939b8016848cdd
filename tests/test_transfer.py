"""Tests of `benchmarks.transfer`, the transfer protocol: its pure parts (class selection,
folder writing, table rows) fast, and a small version of the whole protocol (`large`)."""

import argparse

import numpy as np
import pytest
from PIL import Image

from benchmarks import common, transfer
from tests.helpers import _write_idx


def test_select_takes_per_class_after_skip_in_seeded_order():
    labels = np.array([5, 6, 5, 6, 5, 6, 0, 5])
    assert transfer.select(labels, [5, 6], per_class=2, seed=None).tolist() == [0, 1, 2, 3]
    assert transfer.select(labels, [5], per_class=2, skip=2, seed=None).tolist() == [4, 7]
    assert transfer.select(labels, [0, 6], seed=None).tolist() == [1, 3, 5, 6]
    # Seeded: the same draw every time, disjoint from the next `skip`'s.
    first = transfer.select(labels, [5], per_class=2, seed=3)
    rest = transfer.select(labels, [5], per_class=2, skip=2, seed=3)
    assert first.tolist() == transfer.select(labels, [5], per_class=2, seed=3).tolist()
    assert sorted([*first, *rest]) == [0, 2, 4, 7]


def test_select_refuses_too_few_examples():
    with pytest.raises(ValueError, match="class 6 has 1 examples after skipping 0"):
        transfer.select(np.array([5, 5, 6]), [5, 6], per_class=2, seed=None)
    with pytest.raises(ValueError, match="received 0"):
        transfer.select(np.array([5]), [5], per_class=0)


def test_write_folder_round_trips_pixels_under_class_names(tmp_path):
    images = np.arange(3 * 4 * 4, dtype=np.uint8).reshape(3, 4, 4)
    assert transfer.write_folder(tmp_path, images, np.array([0, 9, 0])) == 3
    assert sorted(p.name for p in tmp_path.iterdir()) == ["Ankle boot", "T-shirt-top"]
    assert sorted(p.name for p in (tmp_path / "T-shirt-top").iterdir()) == [
        "00000.png",
        "00002.png",
    ]
    back = np.asarray(Image.open(tmp_path / "Ankle boot" / "00001.png"))
    np.testing.assert_array_equal(back, images[1])
    with pytest.raises(ValueError, match="2 images but 1 labels"):
        transfer.write_folder(tmp_path, images[:2], np.array([0]))


def test_table_row():
    metrics = {"top1": 0.81234, "seconds": 90.0, "cpu_per_wall": 1.9, "num_train": 51, "epochs": 4}
    row = transfer.row(10, "init", metrics, batch_size=25)
    assert row == {
        "shots/class": 10,
        "run": "init",
        "test top-1": "81.23%",
        "steps": 12,
        "minutes": 1.5,
        common.CPU_COLUMN: 1.9,
    }
    assert common.format_table([row], transfer.COLUMNS).splitlines()[2] == (
        "| 10          | init | 81.23%     | 12    | 1.50    | 1.90          |"
    )


def test_variants_pass_no_architecture_flags_to_init_weights_runs(tmp_path):
    args = argparse.Namespace(width_multiplier=0.25, freeze_base_epochs=3)
    names, flags = zip(*transfer.variants(args, tmp_path), strict=True)
    assert names == (
        "scratch",
        "init-weights, scratch's recipe",
        "init-weights, finetune",
        "init-weights, finetune, freeze 3",
    )
    assert flags[0] == [*transfer.MODEL_FLAGS, "--width-multiplier", "0.25"]
    assert flags[1] == [
        "--init-weights",
        str(tmp_path),
        "--preset",
        "default",
        "--base-lr-scale",
        "1",
    ]
    assert flags[2] == ["--init-weights", str(tmp_path)]
    assert flags[3] == ["--init-weights", str(tmp_path), "--freeze-base-epochs", "3"]


def make_related_idx(folder, n_train=2000, n_test=500, seed=0):
    """Idx files in Fashion-MNIST's format whose label k is a bright 7x7 square at spot
    k % 5 on noise (`tests.helpers.make_fashion_mnist`'s images), so labels 5-9 look like
    0-4: features learnt on 0-4 tell 5-9 apart, which a few images a class do not teach
    from scratch."""
    rng = np.random.default_rng(seed)
    for prefix, n in (("train", n_train), ("t10k", n_test)):
        labels = rng.integers(0, 10, size=n)
        images = rng.integers(0, 60, size=(n, 28, 28))
        for i, label in enumerate(labels):
            row, col = divmod(int(label) % 5, 4)
            images[i, 7 * row : 7 * row + 7, 7 * col : 7 * col + 7] = 230
        _write_idx(folder / f"{prefix}-images-idx3-ubyte.gz", images)
        _write_idx(folder / f"{prefix}-labels-idx1-ubyte.gz", labels)


@pytest.mark.large
def test_init_weights_beats_scratch_on_a_small_protocol(tmp_path, capsys):
    make_related_idx(tmp_path)
    argv = [
        "--data-dir", str(tmp_path), "--workdir", str(tmp_path / "runs"), "--shots", "5",
        "--pretrain-epochs", "2", "--pretrain-batch-size", "32", "--epochs", "6",
        "--batch-size", "25", "--val-per-class", "5", "--freeze-base-epochs", "2",
        "--precise-bn-images", "256", "--pretrain-per-class", "160", "--test-per-class", "35",
    ]  # fmt: skip
    rows = transfer.main(argv)
    top1 = {row["run"]: float(row["test top-1"].rstrip("%")) for row in rows}
    assert float(rows[0]["test top-1"].rstrip("%")) > 60, rows  # pretraining learnt
    assert top1["init-weights, scratch's recipe"] > top1["scratch"] + 10, rows
    assert top1["init-weights, finetune, freeze 2"] > top1["scratch"], rows
    table = [line for line in capsys.readouterr().out.splitlines() if line.startswith("| ")]
    assert len(table) == 1 + len(rows) == 6, table
