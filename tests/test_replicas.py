"""Batches that do not split evenly over MirroredStrategy's replicas.

Keras 3.15 crashed on the first batch of a split that did not divide over the replicas
(5 validation images over 2: "Inputs to operation AddN ... must have the same size and
shape"), and a training batch that left a replica without examples turned every weight
into NaN. Runs with logical CPU replicas go to fresh processes: the devices must be set
up before TensorFlow's first op.
"""

import json
import os

import numpy as np
import pytest
from PIL import Image

from tests.helpers import run_python
from training.strategy import check_batch_size, padding_for_replicas, replica_shares


def test_replica_shares_match_tensorflow():
    result = run_python(
        """
        import json
        from training.strategy import make_strategy
        make_strategy(3)
        import tensorflow as tf

        split = {}
        for replicas in (2, 3):
            strategy = tf.distribute.MirroredStrategy([f"/cpu:{i}" for i in range(replicas)])
            for batch in range(1, 10):
                ds = strategy.experimental_distribute_dataset(tf.data.Dataset.range(batch).batch(9))
                shares = strategy.experimental_local_results(next(iter(ds)))
                split[f"{replicas} {batch}"] = [int(t.shape[0]) for t in shares]
        print(json.dumps(split))
        """
    )
    split = json.loads(result.stdout.strip().splitlines()[-1])
    assert split["3 4"] == [2, 2, 0]  # an empty share although the batch has 4 examples
    for key, shares in split.items():
        replicas, batch = map(int, key.split())
        assert replica_shares(batch, replicas) == shares, key


def test_padding_gives_every_replica_a_training_example():
    assert padding_for_replicas(44, 8, 2) == 0  # last batch 4: [2, 2]
    assert padding_for_replicas(9, 8, 2) == 1  # last batch 1: [1, 0] -> 2
    assert padding_for_replicas(4, 8, 3) == 1  # [2, 2, 0] -> 5: [2, 2, 1]
    assert padding_for_replicas(1, 8, 3) == 2  # a split smaller than the replicas
    for n in range(1, 40):
        for replicas in (2, 3, 4):
            pad = padding_for_replicas(n, 8, replicas)
            assert pad < 8
            last = (n + pad) % 8
            assert last == 0 or min(replica_shares(last, replicas)) > 0


def test_a_batch_size_that_empties_a_replica_is_refused():
    check_batch_size(8, 3)  # [3, 3, 2]
    with pytest.raises(ValueError, match=r"batch size 4 leaves a replica .*\[2, 2, 0\].* of 3"):
        check_batch_size(4, 3)
    with pytest.raises(ValueError, match="batch size 1 leaves a replica"):
        check_batch_size(1, 2)


@pytest.fixture(scope="module")
def uneven_folder(tmp_path_factory):
    """root/{train,val,test}/<class>/: 9, 1 and 4 images (PNG and JPEG, 16-24 px), and
    one corrupt file in train. At batch 8 the last training batch has 1 image."""
    root = tmp_path_factory.mktemp("uneven")
    rng = np.random.default_rng(0)
    for split, count in (("train", 9), ("val", 1), ("test", 4)):
        for i in range(count):
            label = i % 2
            folder = root / split / f"c{label}"
            folder.mkdir(parents=True, exist_ok=True)
            side = int(rng.integers(16, 25))
            image = rng.integers(0, 80, size=(side, side, 3)).astype("uint8")
            image[: side // 2] += 150 * label
            Image.fromarray(image).save(folder / f"{i}.{'png' if i % 3 else 'jpg'}")
    (root / "train" / "c0" / "corrupt.jpg").write_bytes(b"\xff\xd8\xff not a jpeg")
    return str(root)


# `large`: 55-70 s of 2 cores even at 2 replicas (make test's 8-minute budget); the
# padding itself (`replicas.pad_with_zero_weights`) and the replica arithmetic have fast
# tests.
@pytest.mark.large
@pytest.mark.parametrize("replicas", [1, 2, 3])
def test_every_split_trains_and_evaluates_under_uneven_replicas(uneven_folder, replicas, tmp_path):
    workdir = str(tmp_path / "run")
    result = run_python(
        f"""
        import json, math
        from training.strategy import make_strategy
        make_strategy({replicas})
        import keras, numpy as np
        from training.evaluate import evaluate_saved_model
        from training.train import TrainConfig, train_and_evaluate

        config = TrainConfig(
            model="googlenet", dataset="imagefolder", data_dir={uneven_folder!r},
            image_size=16, batch_size=8, epochs=1, width_multiplier=0.125, min_depth=4,
            replicas={replicas}, seed=1,
        )
        metrics = train_and_evaluate(config, {workdir!r}, verbose=0, export=False)
        model = keras.saving.load_model({workdir!r} + "/model.keras", compile=False)
        evaluated = evaluate_saved_model(
            {workdir!r}, dataset="imagefolder", data_dir={uneven_folder!r}, batch_size=3
        )
        print(json.dumps({{
            "metrics": metrics,
            "finite_weights": all(bool(np.isfinite(w).all()) for w in model.get_weights()),
            "evaluated": evaluated,
        }}))
        """
    )
    out = json.loads(result.stdout.strip().splitlines()[-1])
    metrics = out["metrics"]
    assert metrics["replicas"] == replicas
    assert (metrics["num_train"], metrics["num_validation"], metrics["num_test"]) == (9, 1, 4)
    assert metrics["skipped_files"] == 1
    # 9 images in batches of 8: the last batch of 1 is padded to give every replica one.
    assert metrics["train_repeats"] == {1: 0, 2: 1, 3: 2}[replicas]
    assert out["finite_weights"]
    assert np.isfinite(metrics["loss"])
    # Ten-crop and single-crop evaluation of the saved model, 4 test images in batches of 3.
    assert out["evaluated"]["single"]["images"] == out["evaluated"]["ten"]["images"] == 4
    assert out["evaluated"]["single"]["top1"] == pytest.approx(metrics["top1"])
    if replicas > 1:
        assert "repeats" in result.stdout and f"{replicas} replicas" in result.stdout
    # export=False: no SavedModel, and the summary does not list one.
    assert not os.path.exists(os.path.join(workdir, "export"))
    assert "inference.keras, metrics.json" in result.stdout


def test_evaluation_splits_are_padded_with_zero_weight_repeats(uneven_folder):
    """1 validation image over 3 replicas and 4 test images ([2, 2, 0]) each end with
    repeats of weight 0, so that no replica gets an empty share (oneDNN's convolution
    fails on one); the evaluation counts each image once."""
    result = run_python(
        f"""
        import json
        from training.strategy import make_strategy
        strategy = make_strategy(3)
        import keras, numpy as np
        from training import data
        from training.evaluate import evaluate_model
        datasets = data.load_datasets(
            data.DataConfig(dataset="imagefolder", data_dir={uneven_folder!r},
                            image_size=16, batch_size=8, seed=1),
            strategy=strategy,
        )
        splits = {{
            name: [[int(x) for x in np.asarray(batch[2])] for batch in getattr(datasets, name)]
            for name in ("validation", "test")
        }}
        inputs = keras.Input((16, 16, 3))  # on one device, as train.py's inference model
        x = keras.layers.Conv2D(4, 3)(inputs)
        outputs = keras.layers.Dense(2, activation="softmax")(
            keras.layers.GlobalAveragePooling2D()(x))
        model = keras.Model(inputs, outputs)
        result = evaluate_model(model, datasets.test)
        print(json.dumps({{"padding": datasets.eval_padding, "weights": splits,
                          "images": result["images"]}}))
        """
    )
    out = json.loads(result.stdout.strip().splitlines()[-1])
    assert {k: out["padding"][k] for k in ("validation", "test")} == {"validation": 2, "test": 1}
    assert out["weights"] == {"validation": [[1, 0, 0]], "test": [[1, 1, 1, 1, 0]]}
    assert out["images"] == 4


def test_one_padding_function_gives_zero_weight_repeats():
    import tensorflow as tf

    from training.replicas import pad_with_zero_weights

    ds = tf.data.Dataset.from_tensor_slices(([10, 20], [0, 1]))
    padded = [(int(x), int(y), float(w)) for x, y, w in pad_with_zero_weights(ds, 2, 3)]
    assert padded == [(10, 0, 1.0), (20, 1, 1.0), (10, 0, 0.0), (20, 1, 0.0), (10, 0, 0.0)]
    none = tf.data.Dataset.from_tensor_slices(([5], [2])).take(0)  # a worker with no examples
    source = tf.data.Dataset.from_tensor_slices(([7], [3]))
    assert [(int(x), float(w)) for x, _, w in pad_with_zero_weights(none, 0, 2, source=source)] == [
        (7, 0.0),
        (7, 0.0),
    ]
