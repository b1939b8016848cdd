"""training/tuning.py: the bottleneck-width hypermodel, budgets, the search and its files.

Cheap tests build models without training. The searches that train run on a tiny
GoogLeNet and generated Fashion-MNIST-format idx files (`make_fashion_mnist` from
test_training); the one under MirroredStrategy runs in a fresh process, since logical CPU
devices must be set up before TensorFlow's first op.
"""

import csv
import json
import os

import keras
import keras_tuner as kt
import pytest

import keras_inception as ki
from tests.helpers import make_fashion_mnist, run_python
from training.train import TrainConfig
from training.tuning import (
    InceptionHyperModel,
    TuneConfig,
    model_counts,
    objective_name,
    prepare_search,
    reduce_fields,
    tune,
    width_choices,
)
from training.tuning_report import pareto_front

SMALL = dict(stem="small", width_multiplier=0.125, min_depth=4, batch_size=32, seed=0)


def hypermodel(space="per_module", model="googlenet", aux=True, **tune_kw):
    config = TrainConfig(model=model, aux=aux, **SMALL)
    return InceptionHyperModel(config, TuneConfig(space=space, **tune_kw), (28, 28, 1), 10, 64)


def reduce_filters(model, module):
    return [
        model.get_layer(f"inception{module}_{part}_reduce_conv").filters for part in ("3x3", "5x5")
    ]


@pytest.fixture(scope="module")
def fmnist_dir(tmp_path_factory):
    return make_fashion_mnist(tmp_path_factory.mktemp("fmnist"), n_train=96, n_test=32)


# --- the hypermodel ------------------------------------------------------------------------


@pytest.mark.parametrize("space", ["per_module", "bottleneck_ratio"])
def test_defaults_are_the_paper_model(space):
    hm = hypermodel(space)
    assert hm.table(kt.HyperParameters()) == dict(ki.GOOGLENET_SPECS)
    model = hm.build(kt.HyperParameters())
    reference = ki.build_googlenet(
        input_shape=(28, 28, 1), classes=10, aux_logits=True, stem="small",
        width_multiplier=0.125, min_depth=4,
    )  # fmt: skip
    assert model.count_params() == reference.count_params()
    assert [w.shape for w in model.weights] == [w.shape for w in reference.weights]
    assert objective_name(model) == "val_main_accuracy"


def test_per_module_space_names_every_reduce_width():
    hp = kt.HyperParameters()
    hypermodel().declare_hyperparameters(hp)
    names = [h.name for h in hp.space]
    assert names[:2] == ["3a_reduce3x3", "3a_reduce5x5"] and len(names) == 18
    assert {h.name: h.default for h in hp.space}["4e_reduce3x3"] == 160  # Table 1
    assert width_choices(16) == [2, 4, 8, 12, 16]
    # InceptionV3: the 17x17 channels_7x7 and the 35x35 / 8x8 reduce widths, paper defaults.
    v3 = dict(reduce_fields(ki.INCEPTION_V3_SPECS))
    v3_hp = kt.HyperParameters()
    hypermodel(model="inception_v3").declare_hyperparameters(v3_hp)
    defaults = {h.name: h.default for h in v3_hp.space}
    assert v3["6b"] == "channels_7x7" and defaults["6b_channels_7x7"] == 128
    assert defaults["5b_reduce5x5"] == 48 and defaults["7b_reduce3x3"] == 384
    assert hypermodel(model="inception_v3").table(kt.HyperParameters()) == dict(
        ki.INCEPTION_V3_SPECS
    )


def test_fixed_overrides_reach_the_model():
    config = TrainConfig(aux=False, stem="small", min_depth=1, batch_size=32)  # full width
    hm = InceptionHyperModel(config, TuneConfig(), (28, 28, 1), 10, 64)
    hp = kt.HyperParameters()
    hp.Fixed("3a_reduce3x3", 48)
    hp.Fixed("4e_reduce5x5", 4)
    model = hm.build(hp)
    assert reduce_filters(model, "3a") == [48, 16]
    assert reduce_filters(model, "4e") == [160, 4]
    assert objective_name(model) == "val_accuracy"

    ratio = InceptionHyperModel(config, TuneConfig(space="bottleneck_ratio"), (28, 28, 1), 10, 64)
    hp = kt.HyperParameters()
    hp.Fixed("bottleneck_ratio", 0.5)
    model = ratio.build(hp)
    assert reduce_filters(model, "3a") == [48, 8]
    assert model.get_layer("inception3a_3x3_conv").filters == 128  # not a reduce width


def test_learning_rate_and_aux_weight_defaults_are_the_runs():
    hm = hypermodel(search_learning_rate=True, search_aux_weight=True)
    hp = kt.HyperParameters()
    hm.declare_hyperparameters(hp)
    defaults = {h.name: h.default for h in hp.space}
    assert defaults["aux_loss_weight"] == 0.3
    # The default preset's 2e-3 at batch 128, scaled to batch 32; searched x0.1 to x10.
    learning_rate = next(h for h in hp.space if h.name == "learning_rate")
    assert defaults["learning_rate"] == pytest.approx(5e-4)
    assert (learning_rate.min_value, learning_rate.max_value) == pytest.approx((5e-5, 5e-3))
    assert learning_rate.sampling == "log"
    hp = kt.HyperParameters()
    hp.Fixed("aux_loss_weight", 0.7)
    model = hm.build(hp)
    assert model._compile_config.config["loss_weights"] == {"main": 1.0, "aux1": 0.7, "aux2": 0.7}


def test_best_specs_rebuild_the_scaled_model(tmp_path):
    hm = hypermodel("bottleneck_ratio")
    hp = kt.HyperParameters()
    hp.Fixed("bottleneck_ratio", 0.375)
    trained = hm.build(hp)
    path = tmp_path / "best_specs.json"
    ki.save_specs(hm.final_table(hp), path)
    rebuilt = ki.build_googlenet(
        specs=ki.load_specs(path), input_shape=(28, 28, 1), classes=10, aux_logits=True,
        stem="small",
    )  # fmt: skip
    assert rebuilt.count_params() == trained.count_params()
    assert [w.shape for w in rebuilt.weights] == [w.shape for w in trained.weights]


def test_params_and_macs_count_the_inference_model(tmp_path):
    """Issue 11: `params` and `macs` describe the model that the README rebuilds from
    best_specs.json (no auxiliary heads); `train_params` and `train_macs` the training
    model, whose auxiliary heads' fully connected layers dominate at this width."""
    hm = hypermodel(max_params=1)
    hm.record_dir = str(tmp_path)
    hp = kt.HyperParameters()
    hp.Fixed("4a_reduce3x3", 24)
    model = hm.build(hp)
    with pytest.raises(kt.errors.FailedTrialError, match="max_params 1$"):
        hm.fit(hp, model)
    info = json.loads((tmp_path / "tuning.json").read_text())
    ki.save_specs(hm.final_table(hp), tmp_path / "best_specs.json")
    rebuilt = ki.build_googlenet(
        specs=ki.load_specs(tmp_path / "best_specs.json"), stem="small", input_shape=(28, 28, 1),
        classes=10,
    )  # fmt: skip
    assert info["params"] == rebuilt.count_params()
    assert info["macs"] == ki.analysis.macs(rebuilt)
    assert info["train_params"] == model.count_params() > 10 * info["params"]
    assert info["train_macs"] == ki.analysis.macs(model) > info["macs"]
    assert info["reason"].startswith(f"over budget: {info['params']:,} parameters")


@pytest.mark.parametrize("budget", ["max_params", "max_macs"])
def test_budget_counts_the_inference_model(budget, monkeypatch):
    monkeypatch.setattr(keras.Model, "fit", lambda self, *args, **kwargs: "trained")
    counts = model_counts(hypermodel().build(kt.HyperParameters()))
    name = budget.removeprefix("max_")
    between = (counts[name] + counts[f"train_{name}"]) // 2
    assert counts[name] < between < counts[f"train_{name}"]
    hm = hypermodel(**{budget: between})
    assert hm.fit(kt.HyperParameters(), hm.build(kt.HyperParameters())) == "trained"
    hm = hypermodel(**{budget: counts[name] - 1})
    with pytest.raises(kt.errors.FailedTrialError, match=f"> {budget} {counts[name] - 1:,}"):
        hm.fit(kt.HyperParameters(), hm.build(kt.HyperParameters()))


def test_search_saved_before_a_field_existed_still_resumes(tmp_path):
    """tune_config.json written before a TrainConfig or TuneConfig field existed: the
    missing field counts as its default; another value is still another search."""
    config, tune_config = TrainConfig(epochs=3, **SMALL), TuneConfig(max_params=1000)
    prepare_search(config, tune_config, str(tmp_path))
    path = tmp_path / "tune_config.json"
    full = json.loads(path.read_text())
    old = json.loads(path.read_text())
    del old["train"]["strategy"], old["tune"]["search_aux_weight"]
    path.write_text(json.dumps(old))
    prepare_search(config, tune_config, str(tmp_path))
    assert json.loads(path.read_text()) == full

    path.write_text(json.dumps(old))
    changed = TrainConfig(epochs=3, strategy="onedevice", **SMALL)
    with pytest.raises(
        ValueError,
        match=r"holds a search with another configuration \(differs in "
        r"\['train.strategy', 'tune.search_aux_weight'\]\); use another --workdir",
    ):
        prepare_search(changed, TuneConfig(max_params=1000, search_aux_weight=True), str(tmp_path))


def test_pareto_front():
    points = [(10, 0.5), (5, 0.4), (20, 0.45), (5, 0.3), (30, 0.9)]
    assert pareto_front(points) == [1, 0, 4]


def test_bad_tune_config():
    with pytest.raises(ValueError, match="space must be one of"):
        TuneConfig(space="everything")
    with pytest.raises(ValueError, match="max_macs must be a positive integer; received 0"):
        TuneConfig(max_macs=0)


# --- searches ------------------------------------------------------------------------------


def read_trials(workdir):
    with open(os.path.join(workdir, "trials.csv")) as f:
        return list(csv.DictReader(f))


# The random tuner in the fast suite (make test's 8-minute budget); the others are `large`.
@pytest.mark.parametrize(
    "tuner",
    ["random", *(pytest.param(t, marks=pytest.mark.large) for t in ("bayesian", "hyperband"))],
)
def test_budget_rejects_before_training_and_does_not_end_the_search(
    tuner, fmnist_dir, tmp_path, monkeypatch
):
    def no_training(*args, **kwargs):
        raise AssertionError("a model over budget was trained")

    monkeypatch.setattr(keras.Model, "fit", no_training)
    config = TrainConfig(data_dir=fmnist_dir, epochs=3, image_size=16, aux=True, **SMALL)
    # 4 rejections in a row: more than KerasTuner's 3 consecutive failures.
    out = tune(config, TuneConfig(tuner=tuner, max_trials=4, max_params=1000), str(tmp_path))
    rows = read_trials(tmp_path)
    # Hyperband ignores max_trials: its bracket for max_epochs 3 (factor 3) holds 5 trials.
    assert [r["status"] for r in rows] == ["REJECTED"] * (5 if tuner == "hyperband" else 4)
    assert all(f"{int(r['params']):,} parameters > max_params 1,000" in r["reason"] for r in rows)
    assert all(float(r["seconds"]) < 30 for r in rows)
    assert out["best"] is None and not (tmp_path / "best_specs.json").exists()
    assert (tmp_path / "pareto.png").exists()
    # params and macs: the trial's widths rebuilt without auxiliary heads.
    row = out["rows"][-1]
    hp = kt.HyperParameters()
    for key, field in reduce_fields(ki.GOOGLENET_SPECS):
        hp.Fixed(f"{key}_{field}", row[f"{key}_{field}"])
    rebuilt = ki.build_googlenet(
        specs=hypermodel().final_table(hp), stem="small", input_shape=(16, 16, 1), classes=10
    )
    assert row["params"] == rebuilt.count_params() < row["train_params"]
    assert row["macs"] == ki.analysis.macs(rebuilt) < row["train_macs"]
    assert all(r["params"] < r["train_params"] for r in out["rows"])

    # The same search again on the same workdir: every trial is done, none runs again. The
    # workdir is made older: tune_config.json lacks fields added since, and trial 0 was
    # recorded when params and macs counted the auxiliary heads (no train_ columns).
    path = tmp_path / "tune_config.json"
    old = json.loads(path.read_text())
    del old["train"]["strategy"], old["tune"]["search_aux_weight"]
    path.write_text(json.dumps(old))
    first = sorted(tmp_path.glob("search/trial_*/tuning.json"))[0]
    info = json.loads(first.read_text())
    info["params"], info["macs"] = info.pop("train_params"), info.pop("train_macs")
    first.write_text(json.dumps(info))
    infos = sorted(tmp_path.glob("search/trial_*/tuning.json"))
    stamps = [os.stat(p).st_mtime_ns for p in infos]
    tune(config, TuneConfig(tuner=tuner, max_trials=4, max_params=1000), str(tmp_path))
    assert read_trials(tmp_path) == rows
    assert [os.stat(p).st_mtime_ns for p in infos] == stamps
    with pytest.raises(
        ValueError, match=r"another configuration \(differs in \['tune.max_params'\]"
    ):
        tune(config, TuneConfig(tuner=tuner, max_trials=4, max_params=2000), str(tmp_path))


# Measured on 2 shared cores: 167 s (two trained trials of 50-80 s each, one rejected),
# beyond the default suite's budget.
@pytest.mark.large
def test_search_two_replicas_resumes_and_rebuilds_best(fmnist_dir, tmp_path):
    workdir = tmp_path / "tune"
    command = f"""
        import sys
        from training.cli import main
        sys.exit(main([
            "tune", "--model", "googlenet", "--data-dir", {fmnist_dir!r}, "--epochs", "1",
            "--batch-size", "32", "--image-size", "16", "--width-multiplier",
            "0.125", "--min-depth", "4", "--replicas", "2", "--space", "bottleneck_ratio",
            "--tuner", "random", "--max-trials", "3", "--max-macs", "5000000",
            "--workdir", {str(workdir)!r},
        ]))
        """
    first = run_python(command)
    rows = read_trials(workdir)
    assert len(rows) == 3, first.stdout
    assert "Paper widths" in first.stdout
    completed = [r for r in rows if r["status"] == "COMPLETED"]
    assert completed and all(0.0 <= float(r["val_main_accuracy"]) <= 1.0 for r in completed)
    for r in rows:  # the budget splits the trials by their multiply-adds without aux heads
        assert (r["status"] == "REJECTED") == (int(r["macs"]) > 5_000_000)
    with open(workdir / "tune_config.json") as f:
        assert json.load(f)["train"]["replicas"] == 2

    best = max(completed, key=lambda r: float(r["val_main_accuracy"]))
    # The README's rebuild (no auxiliary heads) is the model that params and macs count.
    rebuilt = ki.build_googlenet(
        specs=ki.load_specs(workdir / "best_specs.json"), input_shape=(16, 16, 1), classes=10,
        stem="small",
    )  # fmt: skip
    assert rebuilt.count_params() == int(best["params"]) < int(best["train_params"])
    assert ki.analysis.macs(rebuilt) == int(best["macs"]) < int(best["train_macs"])

    infos = sorted(workdir.glob("search/trial_*/tuning.json"))
    stamps = [os.stat(p).st_mtime_ns for p in infos]
    second = run_python(command)  # same command, same workdir: nothing to train again
    assert read_trials(workdir) == rows
    assert [os.stat(p).st_mtime_ns for p in infos] == stamps
    assert "Paper widths" in second.stdout


def test_cli_tune_bad_flags(capsys, tmp_path):
    from training.cli import main

    with pytest.raises(SystemExit) as exit_info:
        main(["tune", "--space", "everything", "--workdir", str(tmp_path)])
    assert exit_info.value.code == 2
    assert "invalid choice: 'everything'" in capsys.readouterr().err


@pytest.mark.large
def test_killed_search_resumes_without_retraining_finished_trials(
    fmnist_dir, tmp_path, monkeypatch
):
    from training import tuning

    fit = tuning.InceptionHyperModel.fit
    kills = []

    def killed_in_trial_1(self, hp, model, *args, **kwargs):
        if self.record_dir.endswith("trial_1") and not kills:
            kills.append(self.record_dir)
            raise KeyboardInterrupt  # as a killed process: not caught by KerasTuner
        return fit(self, hp, model, *args, **kwargs)

    monkeypatch.setattr(tuning.InceptionHyperModel, "fit", killed_in_trial_1)
    config = TrainConfig(data_dir=fmnist_dir, epochs=1, image_size=16, aux=False, **SMALL)
    tune_config = TuneConfig(space="bottleneck_ratio", max_trials=2)
    with pytest.raises(KeyboardInterrupt):
        tune(config, tune_config, str(tmp_path), verbose=0)
    first = tmp_path / "search" / "trial_0" / "tuning.json"
    stamp = os.stat(first).st_mtime_ns
    assert not (tmp_path / "search" / "trial_1" / "tuning.json").exists()

    tune(config, tune_config, str(tmp_path), verbose=0)  # the same search again
    rows = read_trials(tmp_path)
    assert [r["status"] for r in rows] == ["COMPLETED", "COMPLETED"]
    assert os.stat(first).st_mtime_ns == stamp  # trial 0 was not trained again
