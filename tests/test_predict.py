"""`python -m training predict`: files and folders, any size, unreadable files reported."""

from __future__ import annotations

import csv
import json

import numpy as np
import pytest
from PIL import Image

import keras_inception as ki
from training.cli import main as cli_main
from training.predict import list_images, load_image, load_predictor, run_predict

NAMES = ["ant", "bee", "cow", "dog"]


@pytest.fixture(scope="module")
def model_and_images(tmp_path_factory):
    root = tmp_path_factory.mktemp("predict")
    model = ki.build_googlenet(
        input_shape=(32, 32, 3), stem="small", classes=4, width_multiplier=0.125,
        include_preprocessing="inception",
    )  # fmt: skip
    path = root / "m.keras"
    model.save(path)
    ki.write_class_names(path, NAMES)
    rng = np.random.default_rng(0)
    images = root / "images"
    (images / "sub").mkdir(parents=True)
    Image.fromarray(rng.integers(0, 256, (30, 40, 3), dtype=np.uint8)).save(images / "a.png")
    Image.fromarray(rng.integers(0, 256, (70, 50, 3), dtype=np.uint8)).save(
        images / "sub" / "b.jpg", quality=95
    )
    Image.fromarray(rng.integers(0, 256, (20, 20), dtype=np.uint8)).save(images / "c.bmp")
    (images / "broken.jpg").write_bytes(b"\xff\xd8\xff\xe0 not really a jpeg")
    (images / "notes.txt").write_text("not an image")
    return str(path), images


def test_lists_images_recursively_with_the_loaders_extensions(model_and_images):
    _, images = model_and_images
    found = [p[len(str(images)) + 1 :] for p in list_images([str(images)])]
    assert found == ["a.png", "broken.jpg", "c.bmp", "sub/b.jpg"]
    with pytest.raises(FileNotFoundError, match="nowhere"):
        list_images([str(images / "nowhere")])


def test_csv_and_json_hold_the_top_k_in_order(model_and_images, tmp_path, capsys):
    path, images = model_and_images
    rows = run_predict(path, [str(images)], top=3, output=str(tmp_path / "out.csv"))
    predictor = load_predictor(path)
    readable = [row for row in rows if row.error is None]
    batch = np.stack([load_image(row.path, 32, 3) for row in readable])
    probs = predictor.model.predict(batch, verbose=0)
    with open(tmp_path / "out.csv", newline="") as f:
        table = list(csv.reader(f))
    assert table[0] == [
        "path",
        "label",
        "score",
        "label_2",
        "score_2",
        "label_3",
        "score_3",
        "error",
    ]
    assert [r[0] for r in table[1:]] == [row.path for row in rows]
    for line, row_probs in zip([r for r in table[1:] if not r[-1]], probs, strict=True):
        order = np.argsort(-row_probs, kind="stable")[:3]
        assert line[1:7:2] == [NAMES[i] for i in order]
        np.testing.assert_allclose([float(s) for s in line[2:7:2]], row_probs[order], rtol=1e-5)
    broken = table[2]
    assert broken[0].endswith("broken.jpg") and broken[1:7] == [""] * 6
    assert broken[7] == "cannot read image (OSError: Truncated File Read)"
    out = capsys.readouterr()
    assert "unreadable image" in out.err and "broken.jpg" in out.err
    assert "3 images labelled, 1 unreadable" in out.out

    assert (
        cli_main(["predict", path, str(images), "--top", "2", "--output", str(tmp_path / "o.json")])
        == 0
    )
    result = json.loads((tmp_path / "o.json").read_text())
    assert result["unreadable"] == 1
    assert [len(image.get("predictions", [])) for image in result["images"]] == [2, 0, 2, 2]
    first = result["images"][0]["predictions"]
    assert first[0]["score"] >= first[1]["score"]
    assert first[0]["label"] == table[1][1]


def test_bad_output_and_top_are_refused(model_and_images):
    path, images = model_and_images
    assert cli_main(["predict", path, str(images), "--output", "x.txt"]) == 2
    with pytest.raises(ValueError, match="received 'x.txt'"):
        run_predict(path, [str(images)], output="x.txt")


@pytest.mark.large
def test_torchvision_weights_label_with_imagenet_names(model_and_images, tmp_path):
    from torchvision_reference import random_state_dict

    _, images = model_and_images
    np.savez(tmp_path / "googlenet.npz", **random_state_dict("googlenet"))
    rows = run_predict(f"torchvision:{tmp_path / 'googlenet.npz'}", [str(images / "a.png")], top=2)
    reference = ki.from_torchvision(
        "googlenet",
        tmp_path / "googlenet.npz",
        transform_input=True,
        classifier_activation="softmax",
    )
    x = ki.preprocess_input(load_image(str(images / "a.png"), 224, 3)[None], "torchvision")
    expected = ki.decode_predictions(reference.predict(x, verbose=0), top=2)[0]
    assert [label for label, _ in rows[0].top] == [name for _, name, _ in expected]
    np.testing.assert_allclose([s for _, s in rows[0].top], [s for _, _, s in expected], rtol=1e-5)
