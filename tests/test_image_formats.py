"""Image folders read every format Pillow reads, as torchvision's ImageFolder sees it.

Real files written by Pillow into a temporary folder: JPEG (RGB, CMYK, a camera's MPO),
PNG in every mode (L, LA, palette with transparency, RGBA, 16-bit), BMP, animated GIF with
transparency, WebP (lossy, lossless, RGBA), TIFF (8- and 16-bit), PPM/PGM, upper-case
extensions, broken images, non-image files and hidden folders. The conversion cache of
every test is in its tmp_path.
"""

import os
import pathlib

import numpy as np
import pytest
import tensorflow as tf
from PIL import Image

from training.data import DataConfig, load_datasets
from training.sources import folder

SIDE = 16


@pytest.fixture(autouse=True)
def image_cache(tmp_path, monkeypatch) -> pathlib.Path:
    """The conversion cache of every test here: in tmp_path, outside the image folders."""
    cache = tmp_path / "cache"
    monkeypatch.setenv(folder.CACHE_ENV, str(cache))
    return cache


def _noise(seed: int, channels: int = 3) -> np.ndarray:
    pixels = np.random.default_rng(seed).integers(0, 256, (SIDE, SIDE, channels), np.uint8)
    return pixels[..., 0] if channels == 1 else pixels


def _smooth(seed: int) -> np.ndarray:
    """A smooth RGB image (JPEG decoders agree on it within a few levels)."""
    coarse = np.random.default_rng(seed).uniform(30, 225, (3, 3, 3))
    y, x = np.mgrid[0:SIDE, 0:SIDE] * (2 / (SIDE - 1))
    i, j = np.minimum(y.astype(int), 1), np.minimum(x.astype(int), 1)
    fy, fx = (y - i)[..., None], (x - j)[..., None]
    top = coarse[i, j] * (1 - fx) + coarse[i, j + 1] * fx
    bottom = coarse[i + 1, j] * (1 - fx) + coarse[i + 1, j + 1] * fx
    return np.round(top * (1 - fy) + bottom * fy).astype(np.uint8)


def _sixteen_bit(seed: int) -> np.ndarray:
    values = np.random.default_rng(seed).integers(0, 65536, (SIDE, SIDE), dtype=np.uint16)
    values[0, :4] = [255, 256, 65279, 65535]  # high bytes 0, 1, 254, 255
    return values


def _rgb(image: Image.Image) -> np.ndarray:
    return np.asarray(image.convert("RGB"))


def _write_formats(root: pathlib.Path) -> dict[str, tuple[str, np.ndarray, int]]:
    """Writes the folder; returns {path: (class, expected RGB pixels, tolerance)} of the
    readable images."""
    cat, dog = root / "cat", root / "dog"
    for path in (cat, dog, root / ".thumbs", cat / ".thumbs"):
        path.mkdir(parents=True)
    expected = {}

    def save(path: pathlib.Path, image: Image.Image, pixels=None, tolerance=0, **kw):
        image.save(path, **kw)
        if pixels is None:
            with Image.open(path) as written:
                pixels = _rgb(written)  # torchvision's view: convert("RGB")
        expected[str(path)] = (path.parent.name, pixels, tolerance)

    # cat: TensorFlow decodes these itself (JPEG gray/RGB, every PNG) ...
    save(cat / "photo.JPG", Image.fromarray(_smooth(1)), quality=95, tolerance=8)
    second = Image.fromarray(_smooth(8))  # a camera's JPEG holding two pictures (MPO)
    mpo = dict(format="MPO", save_all=True, append_images=[second], quality=95, tolerance=8)
    save(cat / "camera.jpg", Image.fromarray(_smooth(9)), **mpo)
    save(cat / "gray.png", Image.fromarray(_noise(2, 1)))
    save(cat / "gray_alpha.png", Image.fromarray(_noise(3, 2), "LA"))
    palette = Image.fromarray(_noise(4)).quantize(32)
    save(cat / "palette.Png", palette, transparency=5)
    save(cat / "rgba.png", Image.fromarray(_noise(5, 4), "RGBA"))
    deep = _sixteen_bit(6)
    high_byte = np.repeat((deep >> 8).astype(np.uint8)[..., None], 3, -1)
    save(cat / "deep.png", Image.fromarray(deep), high_byte)
    # ... and Pillow converts these.
    save(cat / "cmyk.jpg", Image.fromarray(_smooth(7)).convert("CMYK"), quality=95)
    # dog: Pillow converts all of them.
    save(dog / "pic.BMP", Image.fromarray(_noise(10)))
    frames = [Image.fromarray(_noise(s)).quantize(64) for s in (11, 12)]
    save(dog / "anim.gif", frames[0], save_all=True, append_images=frames[1:], transparency=3)
    save(dog / "lossless.webp", Image.fromarray(_noise(13)), lossless=True)
    save(dog / "alpha.webp", Image.fromarray(_noise(19, 4), "RGBA"), lossless=True)
    save(dog / "lossy.webp", Image.fromarray(_smooth(14)), quality=90)
    save(dog / "pic.tiff", Image.fromarray(_noise(15)))
    deep_tiff = _sixteen_bit(16)
    high_byte = np.repeat((deep_tiff >> 8).astype(np.uint8)[..., None], 3, -1)
    save(dog / "deep.TIF", Image.fromarray(deep_tiff), high_byte)
    save(dog / "pic.ppm", Image.fromarray(_noise(17)))
    save(dog / "gray.pgm", Image.fromarray(_noise(18, 1)))

    # Broken images, non-images, hidden entries: none of them is read into the pipeline.
    whole = (cat / "photo.JPG").read_bytes()
    (cat / "truncated.jpg").write_bytes(whole[: len(whole) // 2])
    (dog / "empty.jpg").write_bytes(b"")
    (dog / "fake.png").write_bytes(b"this is text, not a PNG\n")
    tiff = (dog / "pic.tiff").read_bytes()
    (dog / "truncated.tif").write_bytes(tiff[: len(tiff) // 2])
    (cat / "Thumbs.db").write_bytes(b"\xd0\xcf\x11\xe0\xa1\xb1\x1a\xe1" + bytes(504))
    (dog / "notes.txt").write_text("dogs, mostly\n")
    (dog / ".DS_Store").write_bytes(b"\x00\x00\x00\x01Bud1")
    for hidden in (root / ".thumbs", cat / ".thumbs"):
        Image.fromarray(_noise(30)).save(hidden / "thumb.jpg")
    return expected


def _two_class_folder(root: pathlib.Path, a: tuple, b: tuple) -> pathlib.Path:
    """`root` with classes "a" and "b", each holding one image: `(file name, pixels)`."""
    for name, (file_name, pixels) in (("a", a), ("b", b)):
        (root / name).mkdir(parents=True)
        Image.fromarray(pixels).save(root / name / file_name)
    return root


def _decoded(ds: tf.data.Dataset) -> tuple[np.ndarray, np.ndarray]:
    """uint8 pixels and labels of a whole dataset."""
    xs, ys = zip(*[(x.numpy(), y.numpy()) for x, y in ds], strict=True)
    pixels = np.round(np.concatenate(xs))
    return pixels.astype(np.int64), np.concatenate(ys)


def test_image_folder_reads_every_format_and_reports_the_rest(tmp_path, image_cache):
    root = tmp_path / "images"
    expected = _write_formats(root)
    config = DataConfig(
        "imagefolder", data_dir=str(root), image_size=SIDE, augment=False, val_fraction=0.0
    )
    d = load_datasets(config)

    assert d.class_names == ["cat", "dog"]
    assert d.num_train == len(expected) == 17
    broken = {pathlib.Path(p).name: reason for p, reason in d.skipped.files}
    assert d.skipped.count == 4 and sorted(broken) == [
        "empty.jpg", "fake.png", "truncated.jpg", "truncated.tif",
    ]  # fmt: skip
    assert "truncated" in broken["truncated.jpg"].lower()
    assert "truncated" in broken["truncated.tif"].lower()
    assert "cannot read image" in broken["fake.png"]
    left_out = {os.path.relpath(p, root): reason for p, reason in d.skipped.non_images}
    assert left_out == {
        ".thumbs": "hidden folder",
        "cat/.thumbs": "hidden folder",
        "cat/Thumbs.db": "not an image ('.db' file)",
        "dog/.DS_Store": "hidden file",
        "dog/notes.txt": "not an image ('.txt' file)",
    }
    summary = d.skipped.summary()
    assert "skipped 4 unreadable image(s):" in summary and "fake.png" in summary
    assert "left out 5 non-image file(s):" in summary and "notes.txt" in summary

    # Every image of the (shuffled) pipeline is one of the files, with its label and the
    # pixels Pillow's convert("RGB") gives (16-bit: the high byte), each file exactly once.
    pixels, labels = _decoded(d.train)
    assert pixels.shape == (17, SIDE, SIDE, 3)
    assert np.bincount(labels).tolist() == [8, 9]
    paths = sorted(expected)
    matched = []
    for image, label in zip(pixels, labels, strict=True):
        errors = [np.abs(image - expected[p][1]).max() for p in paths]
        best = paths[int(np.argmin(errors))]
        cls, _, tolerance = expected[best]
        assert min(errors) <= tolerance, (best, min(errors))
        assert d.class_names[label] == cls, best
        matched.append(best)
    assert sorted(matched) == paths

    # Only the images TensorFlow cannot decode went through the cache: 10 PNGs there.
    cached = sorted(image_cache.rglob("*"))
    assert len([p for p in cached if p.is_file()]) == 10
    assert all(p.suffix == ".png" for p in cached if p.is_file())
    assert not list(root.rglob("*.tmp"))

    # The augmented training pipeline decodes them too.
    augmented = load_datasets(
        DataConfig("imagefolder", data_dir=str(root), image_size=SIDE, val_fraction=0.0)
    )
    x, y = next(iter(augmented.train))
    assert x.shape == (17, SIDE, SIDE, 3) and np.abs(x.numpy()).max() <= 255.0


def test_check_image_says_which_files_tensorflow_decodes(tmp_path):
    root = tmp_path / "images"
    _write_formats(root)
    decoded_by_tf = {
        path.name: folder.check_image(str(path)).tf_decodes
        for path in sorted((root / "cat").iterdir())
        if path.suffix.lower() in (".jpg", ".png")
    }
    assert decoded_by_tf == {
        "camera.jpg": True,
        "cmyk.jpg": False,
        "deep.png": True,
        "gray.png": True,
        "gray_alpha.png": True,
        "palette.Png": True,
        "photo.JPG": True,
        "rgba.png": True,
        "truncated.jpg": False,
    }
    assert folder.check_image(str(root / "dog" / "pic.BMP")) == (None, (SIDE, SIDE), False)
    assert ".webp" in folder.IMAGE_EXTENSIONS and ".tiff" in folder.IMAGE_EXTENSIONS


def test_gray_images_stay_gray(tmp_path, image_cache):
    deep = _sixteen_bit(2)
    root = _two_class_folder(tmp_path / "images", ("gray.pgm", _noise(1, 1)), ("deep.tif", deep))
    config = DataConfig(
        "imagefolder", data_dir=str(root), image_size=SIDE, channels=1, val_fraction=0.0,
        augment=False,
    )  # fmt: skip
    pixels, labels = _decoded(load_datasets(config).train)
    assert pixels.shape == (2, SIDE, SIDE, 1)
    by_label = dict(zip(labels.tolist(), pixels[..., 0], strict=True))
    np.testing.assert_array_equal(by_label[0], _noise(1, 1))
    np.testing.assert_array_equal(by_label[1], deep >> 8)
    # Cached as one channel, a third of RGB's bytes.
    cached = sorted(image_cache.rglob("*.png"))
    assert len(cached) == 2
    for path in cached:
        with Image.open(path) as image:
            assert image.mode == "L"


def test_conversion_cache_is_reused_and_follows_changes(tmp_path, image_cache):
    root = _two_class_folder(tmp_path / "images", ("x.bmp", _noise(1)), ("y.jpg", _noise(2)))
    config = DataConfig("imagefolder", data_dir=str(root), image_size=SIDE, val_fraction=0.0)

    load_datasets(config)
    first = {p: p.stat().st_mtime_ns for p in image_cache.rglob("*.png")}
    assert len(first) == 1
    load_datasets(config)  # nothing converted again
    assert {p: p.stat().st_mtime_ns for p in image_cache.rglob("*.png")} == first

    Image.fromarray(_noise(3)).save(root / "a" / "x.bmp")  # edited: converted again
    os.utime(root / "a" / "x.bmp", ns=(1, 1))
    config = DataConfig(
        "imagefolder", data_dir=str(root), image_size=SIDE, val_fraction=0.0, augment=False
    )
    pixels, labels = _decoded(load_datasets(config).train)
    assert len(list(image_cache.rglob("*.png"))) == 2
    np.testing.assert_array_equal(pixels[labels == 0][0], _noise(3))


def test_jpeg_and_png_folders_write_no_cache_and_cache_stays_outside(tmp_path, image_cache):
    root = _two_class_folder(tmp_path / "images", ("x.png", _noise(1)), ("y.jpg", _noise(2)))
    d = load_datasets(DataConfig("imagefolder", data_dir=str(root), val_fraction=0.0))
    assert d.num_train == 2 and not image_cache.exists()

    Image.fromarray(_noise(3)).save(root / "b" / "z.gif")
    with pytest.raises(ValueError, match="cache.*inside the image folder"):
        folder.load(
            str(root), val_fraction=0.0, seed=0, train_limit=None, cache_dir=str(root / "c")
        )


def test_skip_report_summary_keeps_the_two_lists_apart():
    report = folder.SkipReport()
    assert report.summary() == "skipped 0 images"
    report.non_images += [(f"n{i}.txt", "not an image") for i in range(12)]
    assert report.count == 0
    assert report.summary().splitlines() == [
        "left out 12 non-image file(s):",
        *[f"  n{i}.txt: not an image" for i in range(10)],
        "  ... and 2 more",
    ]
    report.files.append(("bad.jpg", "truncated JPEG"))
    assert report.count == 1
    assert report.summary(limit=1).splitlines() == [
        "skipped 1 unreadable image(s):",
        "  bad.jpg: truncated JPEG",
        "left out 12 non-image file(s):",
        "  n0.txt: not an image",
        "  ... and 11 more",
    ]
