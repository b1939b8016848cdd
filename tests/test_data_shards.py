"""Stratified hold-outs of every source, and per-worker pipelines for MultiWorkerMirroredStrategy.

The workers are simulated with hand-made `tf.distribute.InputContext`s; one real (one-worker)
MultiWorkerMirroredStrategy runs in a fresh process.
"""

import gzip
import json
import pathlib
import struct
import types

import numpy as np
import pytest
import tensorflow as tf
import tensorflow_datasets as tfds
from PIL import Image

from tests.helpers import run_python
from training.data import DataConfig, load_datasets
from training.sources import shard
from training.sources import tfds as tfds_source
from training.sources.base import holdout

# Uneven classes, two of a single example: 16, 12, 9, 7, 5, 4, 3, 2, 1, 1 examples (60).
CLASS_SIZES = [16, 12, 9, 7, 5, 4, 3, 2, 1, 1]


def _skewed_labels(seed: int = 0) -> np.ndarray:
    labels = np.repeat(np.arange(len(CLASS_SIZES)), CLASS_SIZES)
    return np.random.default_rng(seed).permutation(labels)


def _idx_bytes(array: np.ndarray) -> bytes:
    header = struct.pack(">BBBB", 0, 0, 0x08, array.ndim)
    header += struct.pack(f">{array.ndim}I", *array.shape)
    return header + array.astype(np.uint8).tobytes()


def _write_fashion(folder: pathlib.Path, train_labels: np.ndarray, n_test: int) -> str:
    """Idx files; image i has pixel [0, 0] = i % 256 and pixel [0, 1] = i // 256."""
    folder.mkdir(parents=True, exist_ok=True)
    for prefix, labels in (("train", train_labels), ("t10k", np.arange(n_test) % 10)):
        n = len(labels)
        images = np.zeros((n, 28, 28), np.uint8)
        images[:, 0, 0], images[:, 0, 1] = np.arange(n) % 256, np.arange(n) // 256
        (folder / f"{prefix}-images-idx3-ubyte.gz").write_bytes(gzip.compress(_idx_bytes(images)))
        (folder / f"{prefix}-labels-idx1-ubyte.gz").write_bytes(gzip.compress(_idx_bytes(labels)))
    return str(folder)


def _pixels(images: np.ndarray) -> np.ndarray:
    """Pixels as ints (exact without augmentation at the native size)."""
    return np.round(images).astype(int)


def _identities(ds: tf.data.Dataset) -> tuple[list[int], list[int], int]:
    """(identities, labels, batches) of a pipeline over `_write_fashion` images."""
    ids, labels, batches = [], [], 0
    for x, y, *_ in ds:
        p = _pixels(x.numpy())
        ids += (p[:, 0, 0, 0] + 256 * p[:, 0, 1, 0]).tolist()
        labels += y.numpy().tolist()
        batches += 1
    return ids, labels, batches


def _weights(ds: tf.data.Dataset) -> list[float]:
    """The sample weights of a per-worker pipeline (0.0: padding)."""
    return [float(w) for _, _, weights in ds for w in weights.numpy()]


def _labels(ds: tf.data.Dataset) -> np.ndarray:
    return np.concatenate([y.numpy() for _, y in ds] or [np.zeros([0], int)])


def _assert_stratified(train: np.ndarray, validation: np.ndarray, fraction: float) -> None:
    """Each class's held-out count is within 1 of its share of the held-out examples."""
    n, n_val = len(train) + len(validation), len(validation)
    assert n_val == round(fraction * n)
    totals = np.bincount(np.concatenate([train, validation]), minlength=10)
    held = np.bincount(validation, minlength=10)
    np.testing.assert_array_less(np.abs(held - totals * n_val / n), 1.0 + 1e-9)


def _context(worker: int, workers: int = 2, replicas: int = 2) -> tf.distribute.InputContext:
    return tf.distribute.InputContext(workers, worker, replicas)


# ----------------------------------------------------------------------------- hold-out


def test_holdout_is_stratified_and_seeded_and_unstratified_only_where_it_must_be():
    labels = _skewed_labels()
    train, val = holdout(labels, 0.25, seed=3)
    _assert_stratified(labels[train], labels[val], 0.25)
    assert sorted(np.concatenate([train, val]).tolist()) == list(range(60))
    assert np.array_equal(holdout(labels, 0.25, seed=3)[1], val)
    assert not np.array_equal(holdout(labels, 0.25, seed=4)[1], val)
    # A lone class of one example joins the largest class's stratum; the others keep theirs.
    lone = np.array([0] * 10 + [1] * 10 + [2])
    assert np.bincount(lone[holdout(lone, 0.2, seed=0)[1]], minlength=3)[1] == 2
    # 1 held out of 3 classes cannot be stratified: drawn regardless of class, still seeded.
    train, val = holdout(np.array([0, 0, 1, 1, 2, 2]), 0.1, seed=0)
    assert len(val) == 1 and len(train) == 5
    assert holdout(np.arange(4), 0.0, seed=0)[1].size == 0


def test_idx_holdout_keeps_class_proportions(tmp_path):
    folder = _write_fashion(tmp_path / "fm", _skewed_labels(), n_test=10)
    d = load_datasets(
        DataConfig("fashion_mnist", data_dir=folder, val_fraction=0.25, augment=False)
    )
    _assert_stratified(_labels(d.train), _labels(d.validation), 0.25)


def test_image_folder_holdout_keeps_class_proportions(tmp_path):
    root = tmp_path / "images"
    for label, count in enumerate(CLASS_SIZES):
        (root / f"c{label}").mkdir(parents=True)
        for i in range(count):
            pixels = np.full((8, 8, 3), 20 * label + i, np.uint8)
            Image.fromarray(pixels).save(root / f"c{label}" / f"{i}.png")
    config = DataConfig(
        "imagefolder", data_dir=str(root), image_size=8, val_fraction=0.25, augment=False
    )
    d = load_datasets(config)
    _assert_stratified(_labels(d.train), _labels(d.validation), 0.25)


@pytest.fixture
def exact_tfds(monkeypatch):
    """TFDS mocked with `n_train` known examples that honour split slices: example i of
    train has label `labels[i]` and pixel [0, 0] = (i % 256, i // 256, 7)."""
    monkeypatch.setattr(tfds_source, "_network_available", lambda *a: True)

    def mock(train_labels: np.ndarray, n_test: int):
        sizes = {"train": len(train_labels), "test": n_test}
        labels = {"train": train_labels, "test": np.arange(n_test) % 10}
        infos = {k: types.SimpleNamespace(num_examples=v) for k, v in sizes.items()}

        def as_dataset(self, split, decoders=None, read_config=None, shuffle_files=False):
            instruction = tfds.core.ReadInstruction.from_spec(split).to_absolute(infos)[0]
            name = instruction.splitname
            positions = np.arange(sizes[name])[instruction.from_ : instruction.to]
            images = np.zeros((len(positions), 32, 32, 3), np.uint8)
            images[:, 0, 0] = np.stack(
                [positions % 256, positions // 256, np.full(len(positions), 7)], -1
            )
            skip = decoders is not None and isinstance(
                decoders.get("image"), tfds.decode.SkipDecoding
            )
            ds = tf.data.Dataset.from_tensor_slices(
                {"image": images, "label": labels[name][positions].astype(np.int64)}
            )
            if skip:
                ds = ds.map(
                    lambda ex: {"image": tf.io.encode_png(ex["image"]), "label": ex["label"]}
                )
            return ds

        return tfds.testing.mock_data(as_dataset_fn=as_dataset)

    return mock


def test_tfds_holdout_is_stratified_and_reads_every_example_once(exact_tfds):
    labels = _skewed_labels(1)
    with exact_tfds(labels, n_test=10):
        config = DataConfig("cifar10", val_fraction=0.25, augment=False, seed=2)
        d = load_datasets(config)
        ids = {split: _identities_rgb(getattr(d, split)) for split in ("train", "validation")}
    train_ids, val_ids = ids["train"][0], ids["validation"][0]
    assert sorted(train_ids + val_ids) == list(range(60))
    # The labels travel with their images.
    assert ids["train"][1] == labels[train_ids].tolist()
    _assert_stratified(labels[train_ids], labels[val_ids], 0.25)


def _identities_rgb(ds: tf.data.Dataset) -> tuple[list[int], list[int]]:
    ids, labels = [], []
    for x, y, *_ in ds:
        p = _pixels(x.numpy())[:, 0, 0]
        assert (p[:, 2] == 7).all()
        ids += (p[:, 0] + 256 * p[:, 1]).tolist()
        labels += y.numpy().tolist()
    return ids, labels


# ----------------------------------------------------------------------------- workers


def test_shard_plan_pads_to_equal_steps_and_fills_every_replica():
    for n in (0, 1, 5, 64, 65, 257):
        plans = [shard.shard_plan(n, 9, _context(i, 3, 3), train=False) for i in range(3)]
        assert sorted(np.concatenate([p for p, _ in plans]).tolist()) == list(range(n))
        assert {len(p) + pad for p, pad in plans} == {-(-n // 3)}
    # One worker, 2 replicas of 4: 9 examples would leave the second replica of the last
    # step empty (batches 4, 4, 1); 13 give it one (4, 4 | 4, 1).
    assert shard.shard_plan(9, 8, _context(0, 1, 2), train=True)[1] == 4
    assert shard.shard_plan(9, 8, _context(0, 1, 2), train=False)[1] == 0
    assert shard.shard_plan(13, 8, _context(0, 1, 2), train=True)[1] == 0
    with pytest.raises(ValueError, match="batch size 255 is not a multiple of the 2 replicas"):
        shard.shard_plan(10, 255, _context(0), train=True)


@pytest.fixture(scope="module")
def worker_fashion(tmp_path_factory):
    """257 training images (no hold-out) and 65 test images; labels i % 10."""
    folder = tmp_path_factory.mktemp("fm")
    return _write_fashion(folder, np.arange(257) % 10, n_test=65)


def test_workers_split_the_training_set_and_run_the_same_steps(worker_fashion):
    config = DataConfig(
        "fashion_mnist", data_dir=worker_fashion, batch_size=256, val_fraction=0,
        augment=False, deterministic=True, seed=5,
    )  # fmt: skip
    d = load_datasets(config)
    shares = [_identities(d.worker_dataset("train", _context(i))) for i in range(2)]
    (ids0, labels0, steps0), (ids1, labels1, steps1) = shares
    # 129 + 128: the second worker repeats its own first example to also reach 129.
    assert (len(ids0), len(ids1)) == (129, 129)
    assert [d.worker_share("train", _context(i))[1] for i in range(2)] == [0, 1]
    assert len(set(ids0)) == 129 and len(set(ids1)) == 128
    assert not set(ids0) & set(ids1) and sorted(set(ids0) | set(ids1)) == list(range(257))
    assert labels0 == [i % 10 for i in ids0] and labels1 == [i % 10 for i in ids1]
    # Per-replica batches of 128: 128 + 1 on both workers.
    assert steps0 == steps1 == 2
    for i in range(2):
        assert int(d.worker_dataset("train", _context(i)).cardinality()) == 2
    # Each worker shuffles its own share, the same way for the same seed.
    assert ids0 != sorted(ids0)
    assert _identities(d.worker_dataset("train", _context(0)))[0] == ids0


def test_evaluation_shares_pad_with_zero_weights(worker_fashion):
    config = DataConfig("fashion_mnist", data_dir=worker_fashion, batch_size=256, val_fraction=0)
    d = load_datasets(config, ten_crop=False)
    (ids0, labels0, steps0), (ids1, labels1, steps1) = [
        _identities(d.worker_dataset("test", _context(i))) for i in range(2)
    ]
    assert steps0 == steps1 == 1 and len(ids0) == len(ids1) == 33
    assert ids0 == list(range(33)) and ids1[:32] == list(range(33, 65))
    assert labels0 == [i % 10 for i in ids0]
    # The padded example is worker 1's first again, at weight 0 (real label kept).
    assert labels1 == [i % 10 for i in ids1[:32]] + [ids1[0] % 10] and ids1[32] == ids1[0]
    weights = [_weights(d.worker_dataset("test", _context(i))) for i in range(2)]
    assert weights == [[1.0] * 33, [1.0] * 32 + [0.0]]
    # An empty validation split gives every worker nothing, in the same 0 steps.
    assert [_identities(d.worker_dataset("validation", _context(i)))[2] for i in range(2)] == [0, 0]
    with pytest.raises(ValueError, match="batch size 255 is not a multiple"):
        load_datasets(config.__class__(**{**config.__dict__, "batch_size": 255})).worker_dataset(
            "test", _context(0)
        )
    with pytest.raises(ValueError, match="received 'val'"):
        d.worker_dataset("val", _context(0))


def test_a_worker_reads_only_its_share_of_an_image_folder(tmp_path):
    root = tmp_path / "images"
    for name in ("a", "b"):
        (root / name).mkdir(parents=True)
        for i in range(5):
            Image.fromarray(np.full((8, 8, 3), i, np.uint8)).save(root / name / f"{i}.png")
    config = DataConfig(
        "imagefolder", data_dir=str(root), image_size=8, batch_size=4, val_fraction=0
    )
    d = load_datasets(config)
    # The files of class b are worker 1's share (positions 5-9); gone, worker 0 never notices.
    for path in (root / "b").iterdir():
        path.unlink()
    images, labels, _ = zip(*d.worker_dataset("train", _context(0)), strict=True)
    assert sorted(np.concatenate(labels).tolist()) == [0] * 5
    with pytest.raises(tf.errors.NotFoundError):
        list(d.worker_dataset("train", _context(1)))


def test_tfds_workers_split_the_records(exact_tfds):
    labels = np.arange(65) % 10
    with exact_tfds(labels, n_test=10):
        config = DataConfig("cifar10", val_fraction=0.2, augment=False, batch_size=8)
        d = load_datasets(config)
        shares = [_identities_rgb(d.worker_dataset("train", _context(i))) for i in range(2)]
        train_ids = _identities_rgb(d.train)[0]
    assert len(train_ids) == 52 and len(shares[0][0]) == len(shares[1][0]) == 26
    assert sorted(shares[0][0] + shares[1][0]) == sorted(train_ids)
    for ids, worker_labels in shares:
        assert worker_labels == [i % 10 for i in ids]


def test_one_worker_multiworker_strategy_iterates_the_distributed_datasets(worker_fashion):
    result = run_python(
        f"""
        import json
        import tensorflow as tf
        from training.data import DataConfig, load_datasets

        strategy = tf.distribute.MultiWorkerMirroredStrategy()
        config = DataConfig(
            "fashion_mnist", data_dir={worker_fashion!r}, batch_size=64, val_fraction=0.1
        )
        d = load_datasets(config, strategy=strategy)
        counts = {{}}
        for split in ("train", "validation", "test"):
            n = steps = 0
            for x, y, w in d.distribute(split, strategy):
                n += sum(int(t.shape[0]) for t in strategy.experimental_local_results(y))
                steps += 1
            counts[split] = [n, steps]
        print(json.dumps({{"counts": counts, "repeats": d.train_repeats,
                           "sizes": [d.num_train, d.num_validation, d.num_test]}}))
        """
    )
    out = json.loads(result.stdout.strip().splitlines()[-1])
    assert out["sizes"] == [231, 26, 65] and out["repeats"] == 0
    assert out["counts"] == {"train": [231, 4], "validation": [26, 1], "test": [65, 2]}
