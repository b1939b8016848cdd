"""The tf.data input pipeline on generated data: idx files, image folders, mocked TFDS."""

import dataclasses
import gzip
import io
import pathlib
import struct

import keras
import numpy as np
import pytest
import tensorflow as tf
import tensorflow_datasets as tfds
from PIL import Image

from training import augment, data, model_setup
from training.data import DataConfig, load_datasets
from training.sources import tfds as tfds_source

# ----------------------------------------------------------------------------- helpers


def _idx_bytes(array: np.ndarray) -> bytes:
    header = struct.pack(">BBBB", 0, 0, 0x08, array.ndim)
    header += struct.pack(f">{array.ndim}I", *array.shape)
    return header + array.astype(np.uint8).tobytes()


def _write_fashion(folder: pathlib.Path, n_train: int = 60, n_test: int = 20) -> pathlib.Path:
    """Tiny Fashion-MNIST: image i has pixel [0, 0] = i (its identity) and label i % 10."""
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(0)
    for prefix, n in (("train", n_train), ("t10k", n_test)):
        images = rng.integers(0, 256, size=(n, 28, 28), dtype=np.uint8)
        images[:, 0, 0] = np.arange(n)
        labels = (np.arange(n) % 10).astype(np.uint8)
        (folder / f"{prefix}-images-idx3-ubyte.gz").write_bytes(gzip.compress(_idx_bytes(images)))
        (folder / f"{prefix}-labels-idx1-ubyte.gz").write_bytes(gzip.compress(_idx_bytes(labels)))
    return folder


def _identities(images: tf.Tensor) -> list[int]:
    """Pixel [0, 0] of each image (exact under eval preprocessing at native size)."""
    return [int(v) for v in np.round(images.numpy()[:, 0, 0, 0])]


def _all(ds: tf.data.Dataset) -> tuple[np.ndarray, np.ndarray]:
    xs, ys = zip(*[(x.numpy(), y.numpy()) for x, y in ds], strict=True)
    return np.concatenate(xs), np.concatenate(ys)


def _image_bytes(mode: str, size: tuple[int, int], fmt: str, seed: int) -> bytes:
    rng = np.random.default_rng(seed)
    channels = {"L": 1, "RGB": 3, "RGBA": 4}[mode]
    pixels = rng.integers(0, 256, size=(size[1], size[0], channels), dtype=np.uint8)
    image = Image.fromarray(pixels.squeeze(-1) if channels == 1 else pixels, mode)
    buffer = io.BytesIO()
    image.save(buffer, format=fmt)
    return buffer.getvalue()


def _class_folder(folder: pathlib.Path, n_jpeg: int, seed: int, size=(96, 80)) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    for i in range(n_jpeg):
        (folder / f"img{i}.jpg").write_bytes(_image_bytes("RGB", size, "JPEG", seed + i))


@pytest.fixture
def image_folder(tmp_path):
    """cat: 5 JPEG + gray PNG + RGBA PNG + corrupt .jpg; dog: 5 JPEG + a truncated JPEG."""
    root = tmp_path / "images"
    _class_folder(root / "cat", 5, seed=0)
    _class_folder(root / "dog", 5, seed=10)
    (root / "cat" / "gray.png").write_bytes(_image_bytes("L", (70, 90), "PNG", 1))
    (root / "cat" / "rgba.png").write_bytes(_image_bytes("RGBA", (100, 75), "PNG", 2))
    (root / "cat" / "corrupt.jpg").write_bytes(b"this is not an image at all")
    whole = _image_bytes("RGB", (96, 80), "JPEG", 3)
    (root / "dog" / "truncated.jpg").write_bytes(whole[: len(whole) // 2])
    return root


# ----------------------------------------------------------------------------- Fashion-MNIST


def test_fashion_mnist_idx_batches_shapes_ranges_and_labels(tmp_path):
    folder = _write_fashion(tmp_path / "fm")
    d = load_datasets(DataConfig("fashion_mnist", data_dir=str(folder), batch_size=16))
    assert (d.num_train, d.num_validation, d.num_test) == (54, 6, 20)
    assert d.image_shape == (28, 28, 1)
    assert d.num_classes == 10 and d.class_names[9] == "Ankle boot"
    x, y = next(iter(d.train))
    assert x.shape == (16, 28, 28, 1) and x.dtype == tf.float32 and y.dtype == tf.int32
    assert float(tf.reduce_min(x)) >= 0.0 and float(tf.reduce_max(x)) <= 255.0
    # The test split is the t10k file, in order, with its labels.
    xs, ys = _all(d.test)
    assert _identities(tf.constant(xs)) == list(range(20))
    assert ys.tolist() == [i % 10 for i in range(20)]
    assert sum(int(x.shape[0]) for x, _ in d.train) == 54  # not repeated, nothing lost


def test_fashion_mnist_holdout_is_disjoint_and_seeded(tmp_path):
    folder = str(_write_fashion(tmp_path / "fm", n_train=100))

    def split(seed):
        d = load_datasets(DataConfig("fashion_mnist", data_dir=folder, seed=seed, augment=False))
        val = _identities(tf.constant(_all(d.validation)[0]))
        train = _identities(tf.constant(_all(d.train)[0]))
        return sorted(train), sorted(val)

    train, val = split(0)
    assert len(val) == 10 and len(train) == 90
    assert sorted(train + val) == list(range(100))
    assert split(0) == (train, val)
    assert split(1)[1] != val


def test_fashion_mnist_train_limit_channels_and_size(tmp_path):
    folder = str(_write_fashion(tmp_path / "fm"))
    config = DataConfig(
        "fashion_mnist", data_dir=folder, train_limit=7, channels=3, image_size=32, batch_size=4
    )
    d = load_datasets(config)
    assert d.num_train == 7 and d.image_shape == (32, 32, 3)
    shapes = [tuple(x.shape) for x, _ in d.train]
    assert shapes == [(4, 32, 32, 3), (3, 32, 32, 3)]
    x, _ = next(iter(d.validation))
    # Gray -> RGB repeats the channel.
    np.testing.assert_array_equal(x[..., 0], x[..., 2])


def test_deterministic_train_batches_follow_the_seed(tmp_path):
    folder = str(_write_fashion(tmp_path / "fm"))

    def first_batches(seed):
        config = DataConfig(
            "fashion_mnist", data_dir=folder, seed=seed, deterministic=True, batch_size=8
        )
        train = load_datasets(config).train
        return [next(iter(train))[0].numpy() for _ in range(2)]  # epoch 1, epoch 2

    a, b = first_batches(3), first_batches(3)
    np.testing.assert_array_equal(a[0], b[0])
    np.testing.assert_array_equal(a[1], b[1])
    assert not np.array_equal(a[0], a[1])  # each epoch reshuffles and re-augments
    assert not np.array_equal(a[0], first_batches(4)[0])


def test_truncated_idx_file_names_the_file(tmp_path):
    folder = _write_fashion(tmp_path / "fm")
    bad = folder / "train-images-idx3-ubyte.gz"
    bad.write_bytes(gzip.compress(_idx_bytes(np.zeros((60, 28, 28), np.uint8)))[:-40])
    with pytest.raises(ValueError, match="train-images-idx3-ubyte.gz"):
        load_datasets(DataConfig("fashion_mnist", data_dir=str(folder)))
    # An intact gzip whose idx payload is short is caught by the size check.
    bad.write_bytes(gzip.compress(_idx_bytes(np.zeros((60, 28, 28), np.uint8))[:-5]))
    with pytest.raises(ValueError, match=r"train-images-idx3-ubyte.gz is truncated"):
        load_datasets(DataConfig("fashion_mnist", data_dir=str(folder)))


def test_idx_reader_checks_magic_and_reads_plain_files(tmp_path):
    path = tmp_path / "labels-idx1-ubyte"
    path.write_bytes(_idx_bytes(np.arange(5, dtype=np.uint8)))
    assert data.read_idx(path).tolist() == [0, 1, 2, 3, 4]
    path.write_bytes(b"\x01\x02\x08\x01" + b"\x00" * 8)
    with pytest.raises(ValueError, match="labels-idx1-ubyte is not an idx file"):
        data.read_idx(path)


def test_fashion_mnist_missing_or_incomplete_dir(tmp_path):
    with pytest.raises(FileNotFoundError, match="nowhere"):
        load_datasets(DataConfig("fashion_mnist", data_dir=str(tmp_path / "nowhere")))
    folder = _write_fashion(tmp_path / "fm")
    (folder / "t10k-labels-idx1-ubyte.gz").unlink()
    with pytest.raises(FileNotFoundError, match="t10k-labels-idx1-ubyte"):
        load_datasets(DataConfig("fashion_mnist", data_dir=str(folder)))


def test_debian_fashion_mnist_files():
    folder = data.FASHION_MNIST_DIRS[0]
    if not (folder / "train-images-idx3-ubyte.gz").exists():
        pytest.skip(f"{folder} absent (Debian package dataset-fashion-mnist not installed)")
    d = load_datasets(DataConfig("fashion_mnist", batch_size=256))
    assert (d.num_train, d.num_validation, d.num_test) == (54000, 6000, 10000)
    x, y = next(iter(d.test))
    assert x.shape == (256, 28, 28, 1) and 0 <= int(tf.reduce_min(y)) <= int(tf.reduce_max(y)) < 10


# ----------------------------------------------------------------------------- targets, options


def test_output_names_fan_out_labels(tmp_path):
    folder = str(_write_fashion(tmp_path / "fm"))
    d = load_datasets(
        DataConfig("fashion_mnist", data_dir=folder, batch_size=8),
        output_names=["main", "aux1", "aux2"],
    )
    for ds in (d.train, d.validation, d.test):
        _, y = next(iter(ds))
        assert sorted(y) == ["aux1", "aux2", "main"]
        np.testing.assert_array_equal(y["main"], y["aux1"])
        np.testing.assert_array_equal(y["main"], y["aux2"])


def test_output_names_of_dict_and_plain_models():
    inputs = keras.Input((4,))
    dict_model = keras.Model(
        inputs, {"main": keras.layers.Dense(2)(inputs), "aux1": keras.layers.Dense(2)(inputs)}
    )
    assert model_setup.output_names_of(dict_model) == ["main", "aux1"]
    assert model_setup.output_names_of(keras.Model(inputs, keras.layers.Dense(2)(inputs))) is None


def test_strategy_sets_data_sharding(tmp_path):
    folder = str(_write_fashion(tmp_path / "fm"))
    config = DataConfig("fashion_mnist", data_dir=folder)
    plain = load_datasets(config)
    sharded = load_datasets(config, strategy=tf.distribute.get_strategy())
    data_policy = tf.data.experimental.AutoShardPolicy.DATA
    for ds in (sharded.train, sharded.validation, sharded.test):
        assert ds.options().experimental_distribute.auto_shard_policy == data_policy
    assert plain.train.options().experimental_distribute.auto_shard_policy != data_policy


def test_ten_crop_test_images(tmp_path):
    folder = str(_write_fashion(tmp_path / "fm"))
    d = load_datasets(DataConfig("fashion_mnist", data_dir=folder, batch_size=4), ten_crop=True)
    x, y = next(iter(d.test))
    assert x.shape == (4, 10, 28, 28, 1) and y.shape == (4,)
    np.testing.assert_allclose(x[:, 5:], x[:, :5, :, ::-1], atol=1e-6)  # mirrored crops
    assert not np.allclose(x[:, 0], x[:, 3])  # top-left and bottom-right differ
    assert next(iter(d.validation))[0].shape == (4, 28, 28, 1)


def test_config_rejects_bad_values():
    with pytest.raises(ValueError, match="received 1.5"):
        DataConfig("cifar10", val_fraction=1.5)
    with pytest.raises(ValueError, match="received 2"):
        DataConfig("cifar10", channels=2)


def test_pca_lighting_needs_rgb(tmp_path):
    folder = str(_write_fashion(tmp_path / "fm"))
    with pytest.raises(ValueError, match="channels=1"):
        load_datasets(DataConfig("fashion_mnist", data_dir=folder, pca_lighting=True))
    d = load_datasets(DataConfig("fashion_mnist", data_dir=folder, channels=3, pca_lighting=True))
    x, _ = next(iter(d.train))
    assert x.shape[-1] == 3 and float(tf.reduce_max(tf.abs(x))) <= 255.0


# ----------------------------------------------------------------------------- image folders


def test_image_folder_skips_and_reports_bad_files(image_folder):
    d = load_datasets(DataConfig("imagefolder", data_dir=str(image_folder), image_size=48))
    assert d.skipped.count == 2
    skipped = dict(d.skipped.files)
    assert "cannot read image" in skipped[str(image_folder / "cat" / "corrupt.jpg")]
    assert "truncated" in skipped[str(image_folder / "dog" / "truncated.jpg")]
    assert "corrupt.jpg" in d.skipped.summary()
    assert d.class_names == ["cat", "dog"]
    # 12 readable images; 10% held out (1 image), and that held-out part is also the test set.
    assert (d.num_train, d.num_validation, d.num_test) == (11, 1, 1)
    xs, ys = _all(d.train)
    assert xs.shape == (11, 48, 48, 3) and xs.min() >= 0.0 and xs.max() <= 255.0
    all_labels = np.concatenate([ys, _all(d.validation)[1]])
    assert np.bincount(all_labels).tolist() == [7, 5]  # cat: 5 JPEG + 2 PNG; dog: 5 JPEG
    assert _all(d.validation)[1].tolist() == _all(d.test)[1].tolist()


def test_image_folder_gray_and_rgba_pngs_decode_to_requested_channels(tmp_path):
    root = tmp_path / "images"
    (root / "a").mkdir(parents=True)
    (root / "b").mkdir()
    (root / "a" / "gray.png").write_bytes(_image_bytes("L", (70, 90), "PNG", 1))
    (root / "b" / "rgba.png").write_bytes(_image_bytes("RGBA", (100, 75), "PNG", 2))
    for channels in (1, 3):
        config = DataConfig(
            "imagefolder", data_dir=str(root), image_size=40, channels=channels, val_fraction=0
        )
        d = load_datasets(config)
        assert d.skipped.count == 0 and d.image_shape == (40, 40, channels)
        xs, ys = _all(d.train)
        assert xs.shape == (2, 40, 40, channels) and sorted(ys.tolist()) == [0, 1]
        if channels == 3:
            gray = xs[ys == 0][0]
            np.testing.assert_allclose(gray[..., 0], gray[..., 1], atol=1e-6)


def test_image_folder_holdout_is_stratified_and_seeded(tmp_path):
    root = tmp_path / "images"
    for i, name in enumerate(("a", "b", "c")):
        _class_folder(root / name, 10, seed=20 * i, size=(32, 32))

    def validation(seed):
        config = DataConfig("imagefolder", data_dir=str(root), val_fraction=0.3, seed=seed)
        d = load_datasets(config, output_names=None)
        assert (d.num_train, d.num_validation) == (21, 9)
        return _all(d.validation)

    x0, y0 = validation(0)
    assert sorted(y0.tolist()) == [0, 0, 0, 1, 1, 1, 2, 2, 2]  # 3 of each class
    np.testing.assert_array_equal(validation(0)[0], x0)
    assert not np.array_equal(validation(5)[0], x0)


def test_image_folder_split_folders(tmp_path):
    root = tmp_path / "images"
    for split, n in (("train", 4), ("val", 2), ("test", 3)):
        for name in ("x", "y"):
            _class_folder(root / split / name, n, seed=n, size=(72, 72))
    d = load_datasets(
        DataConfig("imagefolder", data_dir=str(root), image_size=32, batch_size=64), ten_crop=True
    )
    assert d.class_names == ["x", "y"]
    assert (d.num_train, d.num_validation, d.num_test) == (8, 4, 6)
    assert next(iter(d.test))[0].shape == (6, 10, 32, 32, 3)
    assert next(iter(d.validation))[0].shape == (4, 32, 32, 3)


def test_image_folder_errors_name_the_path(tmp_path):
    with pytest.raises(FileNotFoundError, match="missing_root"):
        load_datasets(DataConfig("imagefolder", data_dir=str(tmp_path / "missing_root")))
    (tmp_path / "empty").mkdir()
    with pytest.raises(ValueError, match="empty.*no class folders"):
        load_datasets(DataConfig("imagefolder", data_dir=str(tmp_path / "empty")))
    (tmp_path / "hollow" / "cls").mkdir(parents=True)
    with pytest.raises(ValueError, match=r"\['cls'\] hold no images"):
        load_datasets(DataConfig("imagefolder", data_dir=str(tmp_path / "hollow")))


# ----------------------------------------------------------------------------- TFDS


@pytest.fixture
def mocked_tfds(monkeypatch):
    """TFDS mocked (random examples); the mocked download needs no network, so skip the check."""
    monkeypatch.setattr(tfds_source, "_network_available", lambda *a: True)
    return tfds.testing.mock_data


def test_tfds_cifar10_mock_small_image_pipeline(mocked_tfds):
    with mocked_tfds(num_examples=12):
        d = load_datasets(
            DataConfig("cifar10", batch_size=5, deterministic=True, seed=1),
            output_names=["main", "aux1"],
        )
        assert d.image_shape == (32, 32, 3) and d.num_classes == 10
        x, y = next(iter(d.train))
        assert x.shape == (5, 32, 32, 3) and sorted(y) == ["aux1", "main"]
        assert float(tf.reduce_min(x)) >= 0.0 and float(tf.reduce_max(x)) <= 255.0
        assert sum(int(x.shape[0]) for x, _ in d.train) == d.num_train
        again = load_datasets(DataConfig("cifar10", batch_size=5, deterministic=True, seed=1))
        np.testing.assert_array_equal(next(iter(again.train))[0], x)


def test_tfds_imagenette_mock_uses_jpeg_crop_path(mocked_tfds):
    with mocked_tfds(num_examples=6):
        d = load_datasets(DataConfig("imagenette", image_size=40, batch_size=3), ten_crop=True)
        assert d.image_shape == (40, 40, 3)
        x, _ = next(iter(d.train))
        assert x.shape == (3, 40, 40, 3)
        assert float(tf.reduce_min(x)) >= 0.0 and float(tf.reduce_max(x)) <= 255.0
        assert next(iter(d.test))[0].shape == (3, 10, 40, 40, 3)


def test_tfds_manual_dataset_explains_manual_dir(tmp_path):
    with pytest.raises(FileNotFoundError, match=r"downloads/manual"):
        load_datasets(DataConfig("imagenet2012", data_dir=str(tmp_path)))


def test_unknown_dataset_name():
    with pytest.raises(ValueError, match="no_such_dataset"):
        load_datasets(DataConfig("no_such_dataset"))


# ----------------------------------------------------------------------------- augment ops


def test_distort_color_stays_in_unit_range_and_follows_seed():
    image = tf.random.stateless_uniform([16, 16, 3], [1, 2])
    seed = tf.constant([7, 8], tf.int64)
    out = augment.distort_color(image, seed)
    assert out.shape == (16, 16, 3)
    assert float(tf.reduce_min(out)) >= 0.0 and float(tf.reduce_max(out)) <= 1.0
    np.testing.assert_array_equal(out, augment.distort_color(image, seed))
    assert not np.allclose(out, image)
    gray = augment.distort_color(image[..., :1], seed)
    assert gray.shape == (16, 16, 1)


def test_pca_lighting_shifts_each_channel_uniformly():
    image = tf.zeros([4, 4, 3])
    out = augment.pca_lighting(image, tf.constant([1, 1], tf.int64)).numpy()
    assert np.ptp(out.reshape(-1, 3), axis=0).max() == 0.0  # one offset per channel
    assert np.abs(out[0, 0]).max() > 0.0


def test_inception_crop_fused_jpeg_matches_decoded_crop():
    encoded = tf.constant(_image_bytes("RGB", (96, 80), "JPEG", 5))
    seed = tf.constant([3, 4], tf.int64)
    fused = augment.decode_inception_crop(encoded, seed, 3)
    plain = augment.inception_crop(tf.io.decode_jpeg(encoded, channels=3), seed)
    assert fused.shape == plain.shape
    assert fused.shape[0] * fused.shape[1] >= 0.08 * 96 * 80 - 1
    np.testing.assert_allclose(fused.numpy(), plain.numpy(), atol=2)


def test_offline_tfds_and_fashion_mnist_fail_fast_with_instructions(tmp_path, monkeypatch):
    monkeypatch.setattr(tfds_source, "_network_available", lambda *a: False)
    with pytest.raises(FileNotFoundError, match="no network.*tfds build tf_flowers"):
        load_datasets(DataConfig("tf_flowers", data_dir=str(tmp_path)))
    monkeypatch.setattr(data, "FASHION_MNIST_DIRS", (tmp_path / "not_debian",))
    with pytest.raises(FileNotFoundError, match="apt-get install dataset-fashion-mnist"):
        load_datasets(DataConfig("fashion_mnist", data_dir=str(tmp_path)))


@pytest.mark.parametrize("flip", [True, False])
def test_no_flip_never_mirrors_training_images(tmp_path, flip):
    """Every image is bright on its left third; only flips can make the right one bright."""
    folder = tmp_path / "fm"
    folder.mkdir()
    for prefix, n in (("train", 64), ("t10k", 4)):
        images = np.zeros((n, 28, 28), np.uint8)
        images[:, :, :9] = 230
        (folder / f"{prefix}-images-idx3-ubyte").write_bytes(_idx_bytes(images))
        (folder / f"{prefix}-labels-idx1-ubyte").write_bytes(_idx_bytes(np.arange(n) % 10))
    config = DataConfig("fashion_mnist", data_dir=str(folder), batch_size=64, flip=flip)
    x, _ = _all(load_datasets(config).train)
    mirrored = int(np.sum(x[:, :, -6:].mean(axis=(1, 2, 3)) > x[:, :, :6].mean(axis=(1, 2, 3))))
    if flip:
        assert 10 < mirrored < len(x) - 10  # about half
    else:
        assert mirrored == 0


def test_random_erasing_fills_one_box_of_the_paper_sizes_with_noise():
    image = tf.fill([28, 28, 1], 2.0)  # out of the noise's [0, 1) range: erased pixels show
    areas = []
    for i in range(200):
        seed = tf.constant([i, 7])
        out = augment.random_erasing(image, seed, probability=1.0).numpy()[..., 0]
        np.testing.assert_array_equal(out, augment.random_erasing(image, seed, 1.0).numpy()[..., 0])
        erased = out < 2.0
        rows, cols = np.nonzero(erased)
        assert erased.sum() == (np.ptp(rows) + 1) * (np.ptp(cols) + 1)  # one rectangle
        assert np.all((out[erased] >= 0) & (out[erased] < 1))
        areas.append(erased.mean())
    # 2-40% of the image; a side cut to the image's makes a few boxes smaller
    assert min(areas) >= 1 / 784 and max(areas) <= 0.45
    assert 0.15 < np.mean(areas) < 0.25  # the paper's uniform 2-40% averages 21%
    never = augment.random_erasing(image, tf.constant([0, 7]), probability=0.0)
    np.testing.assert_array_equal(never.numpy(), image.numpy())
    applied = [
        bool(np.any(augment.random_erasing(image, tf.constant([i, 3]), 0.5).numpy() < 2.0))
        for i in range(200)
    ]
    assert 70 < sum(applied) < 130  # about half


def test_random_erasing_reaches_the_training_images_only(tmp_path):
    folder = tmp_path / "fm"
    folder.mkdir()
    for prefix, n in (("train", 64), ("t10k", 8)):
        images = np.full((n, 28, 28), 255, np.uint8)  # white: erased pixels are darker
        (folder / f"{prefix}-images-idx3-ubyte").write_bytes(_idx_bytes(images))
        (folder / f"{prefix}-labels-idx1-ubyte").write_bytes(_idx_bytes(np.arange(n) % 10))
    config = DataConfig(
        "fashion_mnist", data_dir=str(folder), batch_size=64, val_fraction=0.25, flip=False
    )
    plain = load_datasets(dataclasses.replace(config, random_erasing=0.0))
    erased = load_datasets(dataclasses.replace(config, random_erasing=1.0))
    x_plain, _ = _all(plain.train)
    x_erased, _ = _all(erased.train)
    # pad-and-crop darkens some borders; erasing adds darker pixels inside every image
    center = (slice(None), slice(4, 24), slice(4, 24))
    assert np.all(x_plain[center] == 255.0)
    assert np.mean(np.any(x_erased[center] < 255.0, axis=(1, 2, 3))) > 0.8
    for split in ("validation", "test"):
        x, _ = _all(getattr(erased, split))
        assert np.all(x == 255.0)  # evaluation images are never erased
    with pytest.raises(ValueError, match="received 1.5"):
        DataConfig("fashion_mnist", random_erasing=1.5)
    with pytest.raises(ValueError, match="augment=False"):
        DataConfig("fashion_mnist", random_erasing=0.5, augment=False)
