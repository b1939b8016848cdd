"""Run directories you can trust (issue 30): `--overwrite` removes only a run, a refused
command leaves no trace, `evaluate WORKDIR` measures on the run's own test images, a
finished run continues with a larger `--epochs`, `--specs` trains a width table, and the
command line's flags are `TrainConfig`'s fields."""

import contextlib
import dataclasses
import io
import json
import os

import keras
import numpy as np
import pytest
from helpers import run_python
from PIL import Image

import keras_inception as ki
from keras_inception.specs import scale_table
from training.cli import build_parser
from training.cli import main as cli_main
from training.config import TrainConfig
from training.evaluate import eval_data_config, evaluate_saved_model, load_inference_model
from training.fields import ConfigError
from training.sources.base import holdout
from training.tuning import CONFIG_FILE, TuneConfig, check_search, prepare_search

# Tiny GoogLeNets that train an epoch on a few hundred images in seconds.
TINY = ["--width-multiplier", "0.125", "--min-depth", "4", "--batch-size", "32"]
QUICK = [*TINY, "--no-export", "--precise-bn-images", "0", "--no-aux", "--dropout", "0"]


def _subparser(command: str):
    return build_parser()._subparsers._group_actions[0].choices[command]


def _json(*path) -> dict:
    with open(os.path.join(*path)) as f:
        return json.load(f)


# --- flags are the config's fields -----------------------------------------------------


# One non-default value per field: a field added without a flag (or with a flag that does
# not reach the config) fails here.
TRAIN_VALUES = {
    "model": "inception_v3", "dataset": "cifar10", "data_dir": "/data", "image_size": 96,
    "batch_size": 64, "epochs": 3, "train_limit": 100, "val_fraction": 0.2, "stem": "small",
    "width_multiplier": 0.5, "min_depth": 8, "bottleneck_ratio": 0.5, "specs": "s.json",
    "aux": False, "aux_loss_weight": 0.5, "dropout": 0.3, "preset": "googlenet_paper",
    "learning_rate": 0.1, "warmup_epochs": 2.0, "label_smoothing": 0.2, "ema_momentum": 0.99,
    "strategy": "onedevice", "replicas": 2, "mixed_precision": True, "sync_batch_norm": True,
    "fused_batch_norm": False, "seed": 7, "deterministic": True, "augment": False,
    "flip": False, "random_erasing": 0.25, "bn_momentum": 0.9, "precise_bn_images": 0,
    "time_budget_minutes": 5.0, "init_weights": "run1", "freeze_base_epochs": 1,
    "base_lr_scale": 0.5,
}  # fmt: skip
# Flags that need another: it is passed with them.
NEEDS = {"freeze_base_epochs": ["--init-weights", "run1"], "base_lr_scale": ["--init-weights", "x"]}
TUNE_VALUES = {
    "space": "bottleneck_ratio", "tuner": "bayesian", "max_trials": 3, "max_params": 1000,
    "max_macs": 2000, "search_learning_rate": True, "search_aux_weight": True,
}  # fmt: skip


def _argv(name, value) -> list[str]:
    flag = "--" + name.replace("_", "-")
    if isinstance(value, bool):
        return [flag if value else "--no-" + name.replace("_", "-")]
    return [flag, str(value)]


def _cli_configs(monkeypatch, command, argv):
    seen = {}
    monkeypatch.setattr(
        "training.train.train_and_evaluate",
        lambda config, workdir, **_: seen.update(config=config, workdir=workdir),
    )
    monkeypatch.setattr(
        "training.tuning.tune",
        lambda config, tune_config, workdir, **_: seen.update(
            config=config, tune_config=tune_config, workdir=workdir
        ),
    )
    assert cli_main([command, *argv, "--workdir", "w"]) == 0
    return seen


@pytest.mark.parametrize(
    ("command", "left_out"),
    [
        ("train", set()),
        (
            "tune",
            {
                "time_budget_minutes",
                "specs",
                "init_weights",
                "freeze_base_epochs",
                "base_lr_scale",
            },
        ),
    ],
)
def test_every_config_field_is_a_flag_that_reaches_the_run(monkeypatch, command, left_out):
    assert set(TRAIN_VALUES) == {f.name for f in dataclasses.fields(TrainConfig)}
    assert set(TUNE_VALUES) == {f.name for f in dataclasses.fields(TuneConfig)}
    # No flag: the default configs.
    seen = _cli_configs(monkeypatch, command, [])
    assert seen["config"] == TrainConfig() and seen["workdir"] == "w"
    if command == "tune":
        assert seen["tune_config"] == TuneConfig()
    values = {**TRAIN_VALUES, **(TUNE_VALUES if command == "tune" else {})}
    for name, value in values.items():
        if name in left_out:
            with pytest.raises(SystemExit):  # not a flag of this command
                _cli_configs(monkeypatch, command, _argv(name, value))
            continue
        seen = _cli_configs(monkeypatch, command, NEEDS.get(name, []) + _argv(name, value))
        target = seen["tune_config"] if name in TUNE_VALUES else seen["config"]
        assert getattr(target, name) == value, name
        default = (TuneConfig if name in TUNE_VALUES else TrainConfig)()
        assert getattr(default, name) != value, name  # the flag changed the value


def test_help_formatter_shows_defaults_but_not_none():
    import argparse

    from training.fields import HelpFormatter

    parser = argparse.ArgumentParser(prog="p", formatter_class=HelpFormatter)
    parser.add_argument("--epochs", type=int, default=10, help="epochs to train")
    parser.add_argument("--limit", type=int, default=None, help="use only N")
    lines = [" ".join(line.split()) for line in parser.format_help().splitlines()]
    assert "--epochs EPOCHS epochs to train (default: 10)" in lines
    assert "--limit LIMIT use only N" in lines


def test_config_errors_name_the_flags_typed(capsys):
    assert cli_main(["train", "--image-size", "4", "--workdir", "w"]) == 2
    assert capsys.readouterr().err.strip() == ("error: --image-size must be at least 8; received 4")
    with pytest.raises(ConfigError, match="specs holds final widths"):
        TrainConfig(specs="best_specs.json", width_multiplier=0.5)
    argv = ["train", "--specs", "s.json", "--width-multiplier", "0.5", "--workdir", "w"]
    assert cli_main(argv) == 2
    assert "received --specs s.json with --width-multiplier 0.5" in capsys.readouterr().err


# --- overwrite, and no trace of a refused command -------------------------------------


def test_overwrite_refuses_a_folder_that_holds_no_run(tmp_path, capsys):
    folder = tmp_path / "project"
    folder.mkdir()
    (folder / "thesis.tex").write_text("years of work")
    for extra in (["--overwrite"], []):
        argv = ["train", *QUICK, "--epochs", "1", "--workdir", str(folder), *extra]
        assert cli_main(argv) == 2
        err = capsys.readouterr().err.strip()
        assert str(folder) in err and "config.json" in err and "\n" not in err
        assert (folder / "thesis.tex").read_text() == "years of work"
        assert os.listdir(folder) == ["thesis.tex"]
    # tune --overwrite: the same rule, with the search's own file.
    with pytest.raises(ValueError, match=f"refusing to --overwrite .*{CONFIG_FILE}"):
        check_search(TrainConfig(), TuneConfig(), str(folder), overwrite=True)
    assert os.listdir(folder) == ["thesis.tex"]


def test_tune_overwrite_removes_only_a_search(tmp_path):
    workdir = str(tmp_path / "search")
    config = TrainConfig(epochs=2)
    assert prepare_search(config, TuneConfig(), workdir) is False
    (tmp_path / "search" / "trials.csv").write_text("old")
    with pytest.raises(ValueError, match="another configuration"):
        check_search(config, TuneConfig(max_trials=3), workdir)
    prepare_search(config, TuneConfig(max_trials=3), workdir, overwrite=True)
    assert sorted(os.listdir(workdir)) == [CONFIG_FILE]  # the old search is gone
    saved = json.loads((tmp_path / "search" / CONFIG_FILE).read_text())
    assert saved["tune"]["max_trials"] == 3


# --- one run serves the rest: refused first, then trained, then continued ---------------


def _image_folder(root, classes=3, per_class=16, side=16, seed=0):
    """root/<class>/*.png: class k is bright in colour channel k, plus noise."""
    rng = np.random.default_rng(seed)
    for k in range(classes):
        (root / f"c{k}").mkdir(parents=True)
        for i in range(per_class):
            pixels = rng.integers(0, 90, size=(side, side, 3))
            pixels[..., k] += 150
            Image.fromarray(pixels.astype("uint8")).save(root / f"c{k}" / f"{i}.png")
    return str(root)


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    """A flat image folder (3 classes of 16 images), a width table (`--specs`), a
    non-default seed; three refused commands on the workdir, then the corrected one (1
    epoch), then the same with `--epochs 2`. Returns what each step left."""
    root = tmp_path_factory.mktemp("workdirs")
    folder = _image_folder(root / "images")
    table = scale_table(
        ki.default_specs("googlenet"), width_multiplier=0.125, bottleneck_ratio=0.5, min_depth=2
    )
    ki.save_specs(table, root / "best_specs.json")
    workdir = root / "run"
    base = ["train", "--specs", str(root / "best_specs.json"), "--batch-size", "16"]
    base += ["--no-export", "--no-aux", "--precise-bn-images", "0", "--dropout", "0"]
    base += ["--seed", "3", "--val-fraction", "0.25", "--image-size", "16"]
    base += ["--workdir", str(workdir)]
    data = ["--dataset", "imagefolder", "--data-dir", folder]
    refusals = [
        # the data is not there
        ([*base, "--dataset", "imagefolder", "--data-dir", str(root / "nowhere")], "nowhere"),
        # an input too small for the model (checked by building it)
        ([*base, *data, "--stem", "imagenet"], "must be at least 32x32"),
        # an unknown TFDS name
        ([*base, "--dataset", "no_such_dataset_x"], "no_such_dataset_x"),
    ]
    refused = []
    for argv, message in refusals:
        out, err = io.StringIO(), io.StringIO()
        with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
            status = cli_main(argv)
        refused.append((argv, status, message in err.getvalue(), workdir.exists()))
    assert cli_main([*base, *data, "--epochs", "1"]) == 0
    first = _json(workdir, "metrics.json")
    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        assert cli_main([*base, *data, "--epochs", "2"]) == 0
    return {
        "root": root, "folder": folder, "table": table, "workdir": str(workdir),
        "argv": [*base, *data], "refused": refused, "first": first,
        "continued_out": out.getvalue(), "metrics": _json(workdir, "metrics.json"),
    }  # fmt: skip


def test_a_refused_command_leaves_no_trace_and_the_corrected_one_runs(run):
    for argv, status, named, workdir_exists in run["refused"]:
        assert status == 2 and named, argv
        assert not workdir_exists, argv  # not even config.json
    assert run["first"]["epochs"] == 1  # the corrected command simply ran


def test_evaluate_workdir_reproduces_the_runs_test_metrics_on_its_own_holdout(run, capsys):
    """A flat folder, a non-default seed: the run's held-out images depend on the seed, so
    evaluating with another seed would measure on images the run trained on."""
    workdir, folder, metrics = run["workdir"], run["folder"], run["metrics"]
    labels = np.repeat(np.arange(3), 16)
    assert not np.array_equal(holdout(labels, 0.25, 3)[1], holdout(labels, 0.25, 0)[1])
    model = load_inference_model(workdir)
    config, saved, notes = eval_data_config(workdir, model)
    assert (config.dataset, config.data_dir, config.seed, config.val_fraction) == (
        "imagefolder", folder, 3, 0.25,
    )  # fmt: skip
    assert saved.seed == 3 and notes == []

    capsys.readouterr()
    assert cli_main(["evaluate", workdir, "--crops", "single"]) == 0  # no flags
    out = capsys.readouterr().out
    single = json.loads(out[out.index("{") :])["single"]
    assert single["images"] == metrics["num_test"] == 12
    assert single["top1"] == metrics["top1"]
    # The mean cross-entropy is continuous: another set of images would not give it.
    assert single["loss"] == pytest.approx(metrics["loss"], rel=1e-5)

    # A flag that changes the data says so.
    elsewhere = _image_folder(run["root"] / "other", seed=1)
    results = evaluate_saved_model(workdir, data_dir=elsewhere, crops=("single",))
    assert results["single"]["images"] == 12
    assert f"--data-dir {elsewhere} differs from the run's" in capsys.readouterr().out


def test_inference_file_opens_in_plain_keras(run, tmp_path):
    """A fresh process that imports neither keras_inception nor training, with
    load_model's defaults (compile=True, safe mode): the model, and the class names in
    Keras's metadata.json."""
    workdir = run["workdir"]
    model = load_inference_model(workdir)
    x = np.random.default_rng(0).uniform(-1, 1, size=(4, *model.input_shape[1:]))
    np.save(tmp_path / "x.npy", x.astype("float32"))
    child = run_python(f"""
        import os, sys
        os.environ["KERAS_BACKEND"] = "tensorflow"
        import keras, numpy as np
        model = keras.saving.load_model({os.path.join(workdir, "inference.keras")!r})
        np.save({str(tmp_path / "y.npy")!r}, model.predict(np.load({str(tmp_path / "x.npy")!r}), verbose=0))
        import json, zipfile
        with zipfile.ZipFile({os.path.join(workdir, "inference.keras")!r}) as archive:
            print(json.loads(archive.read("metadata.json"))["class_names"])
        print(sorted(m for m in ("keras_inception", "training") if m in sys.modules))
    """)  # fmt: skip
    assert child.stdout.strip().splitlines()[-2:] == ["['c0', 'c1', 'c2']", "[]"]
    expected = model.predict(x.astype("float32"), verbose=0)
    np.testing.assert_allclose(np.load(tmp_path / "y.npy"), expected, rtol=1e-5, atol=1e-6)


def test_larger_epochs_continue_a_finished_run(run, capsys):
    workdir, first, metrics = run["workdir"], run["first"], run["metrics"]
    assert "epochs 1-1 are done; continuing at epoch 2 of 2" in run["continued_out"]
    assert metrics["epochs"] == 2 and len(metrics["epoch_times"]) == 2
    with open(os.path.join(workdir, "history.csv")) as f:
        assert [line.split(",")[0] for line in f.read().splitlines()[1:]] == ["0", "1"]
    assert _json(workdir, "metrics_1_epochs.json") == first
    steps = -(-metrics["num_train"] // 16)
    model = keras.saving.load_model(os.path.join(workdir, "model.keras"))
    assert int(model.optimizer.iterations) == 2 * steps  # the optimizer went on too
    # Fewer epochs than the run has is another configuration.
    assert cli_main([*run["argv"], "--epochs", "1"]) == 2
    assert "differs in ['epochs']" in capsys.readouterr().err


def test_specs_train_the_width_table_as_it_is(run):
    table = run["table"]
    expected = ki.build_googlenet(specs=table, stem="small", input_shape=(16, 16, 3), classes=3)
    assert run["metrics"]["inference_params"] == expected.count_params()
    # The table is built as it is: widths below --min-depth's default of 16 stay.
    assert min(s.reduce5x5 for k, s in table.items() if k[0].isdigit()) < 16


def test_evaluate_a_model_file_needs_its_dataset(tmp_path, capsys):
    model = ki.build_googlenet(input_shape=(28, 28, 1), stem="small", classes=10,
                               width_multiplier=0.125, min_depth=4)  # fmt: skip
    path = str(tmp_path / "m.keras")
    model.save(path)
    assert cli_main(["evaluate", path]) == 2
    assert "pass --dataset" in capsys.readouterr().err


def test_a_run_saved_with_the_old_base_lr_scale_default_still_reads_and_resumes(tmp_path):
    """config.json of a run (no --init-weights) written when --base-lr-scale defaulted to
    0.1: evaluate/export read it and the same command resumes it; with --init-weights the
    0.1 is the run's own and stays."""
    from training.workdir import RUN_CONFIG, as_json, inspect_run, read_run_config

    saved = {**as_json(TrainConfig()), "base_lr_scale": 0.1}
    (tmp_path / RUN_CONFIG).write_text(json.dumps(saved))
    assert read_run_config(str(tmp_path)) == TrainConfig()
    assert inspect_run(TrainConfig(), str(tmp_path), overwrite=False).status == "resume"
    fine_tuned = {**saved, "init_weights": "runs/source", "preset": "finetune"}
    (tmp_path / RUN_CONFIG).write_text(json.dumps(fine_tuned))
    assert read_run_config(str(tmp_path)).base_lr_scale == 0.1
    with pytest.raises(ValueError, match=r"another configuration \(differs in \['base_lr_scale'\]"):
        inspect_run(TrainConfig(init_weights="runs/source"), str(tmp_path), overwrite=False)
