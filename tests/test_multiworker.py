"""Multi-worker training: TF_CONFIG parsing, strategy choice, the custom loop in one
process, and real 2-process clusters on loopback ports (MultiWorkerMirroredStrategy).

The clusters are `large`: each starts two TensorFlow processes beside the suite's own two
workers on a 2-core machine (37 s alone, 56-92 s inside `make test` on the Zen 4). The fast
suite trains the same loop in one process (`test_custom_loop_step_matches_fit_step`)."""

import csv
import json
import os
import signal
import socket
import subprocess
import sys
import time

import pytest
import tensorflow as tf
from helpers import make_fashion_mnist, run_python

from training.placement import ClusterConfig, read_cluster, resolve_strategy_name

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
WORKDIR_FILES = {
    "best.keras",
    "config.json",
    "curves.png",
    "epoch_times.json",
    "history.csv",
    "inference.keras",
    "labels.txt",
    "logs",
    "metrics.json",
    "model.keras",
}


def _tf_config(workers, task_type="worker", index=0, chief=None):
    cluster = {"worker": workers}
    if chief:
        cluster["chief"] = chief
    return json.dumps({"cluster": cluster, "task": {"type": task_type, "index": index}})


# --------------------------------------------------------------------------- TF_CONFIG


def parse_tf_config(text):
    """`read_cluster` of `text` as TF_CONFIG (TensorFlow's resolver reads the environment)."""
    saved = os.environ.get("TF_CONFIG")
    os.environ["TF_CONFIG"] = text
    try:
        return read_cluster()
    finally:
        if saved is None:
            del os.environ["TF_CONFIG"]
        else:
            os.environ["TF_CONFIG"] = saved


def test_read_cluster_ranks_the_chief_first():
    assert parse_tf_config("") is None
    assert parse_tf_config("  ") is None
    config = parse_tf_config(_tf_config(["a:1", "b:2"], index=1))
    assert config == ClusterConfig(workers=("a:1", "b:2"), task_type="worker", task_index=1, rank=1)
    assert not config.is_chief and config.address == "b:2"
    with_chief = parse_tf_config(_tf_config(["a:1", "b:2"], "chief", 0, chief=["c:3"]))
    assert with_chief.workers == ("c:3", "a:1", "b:2")
    assert with_chief.is_chief
    assert parse_tf_config(_tf_config(["a:1", "b:2"], index=0, chief=["c:3"])).rank == 1
    # Read by TensorFlow's own resolver, which the strategy then reuses.
    assert config.spec.as_dict() == {"worker": ["a:1", "b:2"]}
    assert isinstance(config.resolver, tf.distribute.cluster_resolver.TFConfigClusterResolver)


@pytest.mark.parametrize(
    "text, message",
    [
        ("{not json", "not valid JSON"),
        ('{"task": {"type": "worker", "index": 0}}', 'needs a "cluster"'),
        (_tf_config(["a:1"], index=3), "is not in its cluster"),
        ('{"cluster": {"worker": ["a:1"]}}', 'needs a "task"'),
        ('{"cluster": {"worker": ["a:1"], "ps": ["p:2"]}, "task": {}}', "['ps']"),
        (_tf_config(["a:1", "a:1"]), "one address twice"),
        (_tf_config(["nohostport"]), "'nohostport'"),
        (_tf_config("a:1"), "must be a list"),
    ],
)
def test_bad_tf_config_is_a_value_error_naming_it(text, message):
    with pytest.raises(ValueError, match=message.replace("[", r"\[").replace("]", r"\]")):
        parse_tf_config(text)


def test_auto_is_multiworker_only_for_a_cluster():
    one = parse_tf_config(_tf_config(["a:1"]))
    two = parse_tf_config(_tf_config(["a:1", "b:2"]))
    assert resolve_strategy_name("auto", None) == "mirrored"
    assert resolve_strategy_name("auto", one) == "mirrored"
    assert resolve_strategy_name("auto", two) == "multiworker"
    assert resolve_strategy_name("multiworker", None) == "multiworker"
    assert resolve_strategy_name("onedevice", one) == "onedevice"
    for name in ("mirrored", "onedevice"):
        with pytest.raises(ValueError, match=f"--strategy {name} trains on one machine.*2 workers"):
            resolve_strategy_name(name, two)
    with pytest.raises(ValueError, match="'ring'"):
        resolve_strategy_name("ring", None)


def test_replicas_with_multiworker_or_onedevice_is_refused(monkeypatch):
    from training.strategy import make_strategy

    monkeypatch.delenv("TF_CONFIG", raising=False)
    with pytest.raises(ValueError, match="--replicas 2 splits one machine"):
        make_strategy(2, "multiworker")
    with pytest.raises(ValueError, match="--replicas 3 needs a mirrored strategy"):
        make_strategy(3, "onedevice")


@pytest.mark.large
def test_a_worker_alone_stops_naming_the_missing_one(tmp_path):
    """Worker 0 (which hosts TensorFlow's coordination service) and worker 1 each started
    without the other: a one-line error naming the address, not a hang. The two run at
    once, each in a cluster of its own ports, so neither can reach the other."""
    addresses = [f"127.0.0.1:{port}" for port in _free_ports(4)]  # 4 distinct ports
    clusters = [addresses[:2], addresses[2:]]
    start = time.monotonic()
    procs = []
    for index, workers in enumerate(clusters):
        env = {**os.environ, "TF_CONFIG": _tf_config(workers, index=index)}
        argv = [sys.executable, "-m", "training", "train", "--connect-timeout", "3"]
        argv += ["--workdir", str(tmp_path / "run")]
        procs.append(
            subprocess.Popen(
                argv,
                cwd=ROOT,
                env=env,
                stdout=subprocess.PIPE,
                stderr=subprocess.PIPE,
                text=True,
            )
        )
    try:
        for index, (proc, workers) in enumerate(zip(procs, clusters, strict=True)):
            _, stderr = proc.communicate(timeout=120)
            assert proc.returncode == 2, stderr[-3000:]
            errors = [line for line in stderr.splitlines() if line.startswith("error:")]
            assert len(errors) == 1, stderr[-3000:]
            assert (
                f"worker {index} ({workers[index]}) could not reach the other workers within 3 s"
                in errors[0]
            )
            assert f"not answering: {workers[1 - index]}" in errors[0]
    finally:
        for proc in procs:  # a worker still running after a failure
            if proc.poll() is None:
                proc.kill()
                proc.communicate()
    assert time.monotonic() - start < 60
    assert not (tmp_path / "run").exists()


def test_strategy_flag_and_config(capsys):
    from training.cli import main
    from training.train import TrainConfig

    with pytest.raises(ValueError, match="strategy must be one of .*'ring'"):
        TrainConfig(strategy="ring")
    with pytest.raises(SystemExit):
        main(["train", "--strategy", "ring", "--workdir", "x"])
    assert "invalid choice: 'ring'" in capsys.readouterr().err


# --------------------------------------------------------------------------- one process


def test_custom_loop_step_matches_fit_step(tmp_path):
    """One step of the multi-worker loop and one `train_on_batch` of the compiled model,
    from the same weights on the same batch (dropout off), give the same weights: same
    losses, loss weights and optimizer."""
    run_python(
        """
        import numpy as np, keras, tensorflow as tf
        from training.strategy import make_strategy
        strategy = make_strategy(None, "multiworker")  # a cluster of this process
        from training import model_setup as train_lib
        from training.config import TrainConfig
        from training.losses import SparseCrossentropyWithSmoothing
        from training.multiworker import _StepFunctions

        config = TrainConfig(width_multiplier=0.125, min_depth=8, dropout=0.0,
                                       aux_loss_weight=0.4, label_smoothing=0.1, epochs=2)
        keras.utils.set_random_seed(0)
        rng = np.random.default_rng(0)
        images = rng.uniform(-1, 1, (16, 28, 28, 1)).astype("float32")
        labels = rng.integers(0, 10, 16).astype("int32")
        with strategy.scope():
            model = train_lib.build_model(config, (28, 28, 1), 10, aux_dropout=0.0)
            optimizer = train_lib.make_run_optimizer(config, num_train=64)
            optimizer.build(model.trainable_variables)
        # Under a strategy, as training/ compiles it: Keras then builds the optimizer state
        # before tracing, where without one it traces the train step twice (8 s here).
        with tf.distribute.OneDeviceStrategy("/cpu:0").scope():
            reference = train_lib.build_model(config, (28, 28, 1), 10, aux_dropout=0.0)
            train_lib.compile_model(reference, config, num_train=64)
        reference.set_weights(model.get_weights())
        before = model.get_weights()

        loss, weights = train_lib.make_losses(model, config)
        assert weights == {"main": 1.0, "aux1": 0.4, "aux2": 0.4}, weights
        loss = SparseCrossentropyWithSmoothing(loss.label_smoothing, reduction=None)
        steps = _StepFunctions(strategy, model, optimizer, loss, weights, global_batch=16)
        ones = np.ones(16, "float32")  # the example weights: none is padding
        ds = tf.data.Dataset.from_tensor_slices((images, labels, ones)).batch(16)
        sums = steps.train(next(iter(strategy.experimental_distribute_dataset(ds))))
        logs = reference.train_on_batch(
            images, {k: labels for k in weights}, return_dict=True
        )
        assert abs(float(sums["loss"]) / 16 - logs["loss"]) < 1e-4, (sums, logs)
        diffs = [np.max(np.abs(a - b)) for a, b in zip(model.get_weights(), reference.get_weights())]
        moved = max(np.max(np.abs(a - b)) for a, b in zip(model.get_weights(), before))
        print("max diff", max(diffs), "moved", moved)
        assert moved > 1e-4, moved  # the step did train
        assert max(diffs) < 1e-5, max(diffs)
        """
    )


# --------------------------------------------------------------------------- clusters


def _free_ports(n):
    sockets = [socket.socket() for _ in range(n)]
    for s in sockets:
        s.bind(("127.0.0.1", 0))
    ports = [s.getsockname()[1] for s in sockets]
    for s in sockets:
        s.close()
    return ports


def _start_cluster(workdir, data_dir, scratch, *extra, epochs=2):
    """Starts 2 workers of `python -m training train` on loopback ports."""
    workers = [f"127.0.0.1:{port}" for port in _free_ports(2)]
    procs = []
    for index in range(2):
        tmp = scratch / f"tmp{index}"
        tmp.mkdir(parents=True, exist_ok=True)
        env = {
            **os.environ,
            "TF_CONFIG": _tf_config(workers, index=index),
            "TMPDIR": str(tmp),
            "TF_CPP_MIN_LOG_LEVEL": "2",
            "KERAS_BACKEND": "tensorflow",
        }
        log = open(scratch / f"worker{index}.log", "w")  # noqa: SIM115 (closed by _wait)
        argv = [
            sys.executable,
            "-m",
            "training",
            "train",
            "--data-dir",
            data_dir,
            "--width-multiplier",
            "0.125",
            "--min-depth",
            "8",
            "--no-aux",
            "--batch-size",
            "32",
            "--epochs",
            str(epochs),
            "--seed",
            "1",
            "--connect-timeout",
            "120",
            "--workdir",
            str(workdir),
            *extra,
        ]
        proc = subprocess.Popen(argv, cwd=ROOT, env=env, stdout=log, stderr=subprocess.STDOUT)
        proc.log, proc.log_path = log, scratch / f"worker{index}.log"
        procs.append(proc)
    return procs


def _stop(procs):
    """Kills the workers still running and closes every log."""
    for proc in procs:
        if proc.poll() is None:
            proc.kill()
        proc.wait()
        proc.log.close()


def _wait(procs, timeout=400):
    deadline = time.monotonic() + timeout
    try:
        for proc in procs:
            proc.wait(timeout=max(deadline - time.monotonic(), 1))
    finally:
        _stop(procs)
    logs = [proc.log_path.read_text() for proc in procs]
    for proc, log in zip(procs, logs, strict=True):
        assert proc.returncode == 0, log[-4000:]
    return logs


def _history(workdir):
    with open(workdir / "history.csv") as f:
        return list(csv.DictReader(f))


@pytest.fixture(scope="module")
def cluster_data(tmp_path_factory):
    # 257 training images after the hold-out and 65 test images, in batches of 32: the last
    # training batch (1 image) is padded to give both workers one, and the last test batch
    # leaves a worker with no image.
    return make_fashion_mnist(tmp_path_factory.mktemp("fmnist"), n_train=285, n_test=65)


@pytest.fixture(scope="module")
def cluster_run(cluster_data, tmp_path_factory):
    scratch = tmp_path_factory.mktemp("cluster")
    workdir = scratch / "run"
    # --no-export: the SavedModel (half a minute) is the single-process runs' code.
    logs = _wait(_start_cluster(workdir, cluster_data, scratch, "--no-export", epochs=2))
    return workdir, scratch, logs


@pytest.mark.large
def test_two_workers_train_in_sync(cluster_run):
    workdir, _, logs = cluster_run
    digests = [line.split()[-1] for log in logs for line in log.splitlines() if "sha256" in line]
    assert len(digests) == 2 and digests[0] == digests[1], digests
    metrics = json.loads((workdir / "metrics.json").read_text())
    assert metrics["strategy"] == "multiworker" and metrics["workers"] == 2
    assert metrics["replicas"] == 2 and metrics["weights_sha256"] == digests[0]
    assert (metrics["num_train"], metrics["train_repeats"], metrics["num_test"]) == (257, 1, 65)
    rows = _history(workdir)
    assert [r["epoch"] for r in rows] == ["0", "1"]
    assert float(rows[1]["loss"]) < float(rows[0]["loss"]), rows
    assert {"loss", "main_accuracy", "main_top5", "val_loss", "val_main_accuracy"} <= set(rows[0])


@pytest.mark.large
def test_only_the_chief_writes_the_workdir(cluster_run):
    workdir, scratch, logs = cluster_run
    assert set(os.listdir(workdir)) == WORKDIR_FILES  # checkpoints/ removed once finished
    for index in range(2):  # the workers' temporary directories were cleaned up
        assert os.listdir(scratch / f"tmp{index}") == [], index
    assert "Test top-1" in logs[0] and "Test top-1" not in logs[1]


@pytest.mark.large
def test_saved_model_carries_the_trained_weights_and_optimizer_state(cluster_run):
    import keras
    import numpy as np

    from training.multiworker import weights_digest

    workdir, _, _ = cluster_run
    metrics = json.loads((workdir / "metrics.json").read_text())
    model = keras.saving.load_model(workdir / "model.keras")
    assert weights_digest(model) == metrics["weights_sha256"]
    steps = 2 * -(-metrics["num_train"] // 32)
    assert int(model.optimizer.iterations.numpy()) == steps
    inference = keras.saving.load_model(workdir / "inference.keras")
    images = np.zeros((2, 28, 28, 1), "float32")
    np.testing.assert_allclose(inference(images), model(images), atol=1e-6)


@pytest.mark.large
def test_killed_worker_stops_the_cluster_which_resumes_at_epoch_2(cluster_data, tmp_path):
    workdir = tmp_path / "run"
    procs = _start_cluster(workdir, cluster_data, tmp_path, epochs=3)
    index_file = workdir / "checkpoints" / "checkpoint"
    deadline = time.monotonic() + 300
    try:
        while not (index_file.exists() and "ckpt-1" in index_file.read_text()):
            assert time.monotonic() < deadline, "no checkpoint after 300 s"
            assert all(p.poll() is None for p in procs), "a worker ended early"
            time.sleep(0.05)
        # Worker 1 is stopped during epoch 2, as a job scheduler does (TensorFlow catches
        # SIGTERM; the worker restores its default action).
        procs[1].send_signal(signal.SIGTERM)
        killed_at = time.monotonic()
        assert procs[1].wait(timeout=30) == -signal.SIGTERM
        # The chief notices and stops by itself, with a message, instead of hanging.
        assert procs[0].wait(timeout=180) == 2
        print(f"the chief stopped {time.monotonic() - killed_at:.1f} s after worker 1 died")
    finally:
        _stop(procs)
    chief_log = procs[0].log_path.read_text()
    assert "worker 0 lost the other workers" in chief_log, chief_log[-3000:]
    assert "Restart every worker with the same command" in chief_log
    state = index_file.read_text()
    assert "ckpt-1" in state and "ckpt-2" not in state, state  # stopped inside epoch 2
    assert not (workdir / "metrics.json").exists()

    logs = _wait(_start_cluster(workdir, cluster_data, tmp_path, epochs=3))
    assert "epochs 1-1 are done; continuing at epoch 2 of 3" in logs[0], logs[0][-3000:]
    assert "Epoch 1/3" not in logs[0] and "Epoch 2/3" in logs[0]
    assert [r["epoch"] for r in _history(workdir)] == ["0", "1", "2"]
    assert (workdir / "metrics.json").exists()
    digests = [line.split()[-1] for log in logs for line in log.splitlines() if "sha256" in line]
    assert digests[0] == digests[1]


def test_tune_refuses_multiworker(tmp_path, monkeypatch):
    from training.train import TrainConfig
    from training.tuning import TuneConfig, tune

    with pytest.raises(ValueError, match="does not run under MultiWorkerMirroredStrategy"):
        tune(TrainConfig(strategy="multiworker"), TuneConfig(), str(tmp_path))
    monkeypatch.setenv("TF_CONFIG", _tf_config(["127.0.0.1:1", "127.0.0.1:2"]))
    with pytest.raises(ValueError, match="--strategy auto with a multi-worker TF_CONFIG"):
        tune(TrainConfig(), TuneConfig(), str(tmp_path))
    assert os.listdir(tmp_path) == []


def test_a_run_started_before_the_strategy_flag_still_resumes(tmp_path):
    """config.json written before `strategy` existed: the missing field counts as its
    default; another value is still a different configuration."""
    import dataclasses

    from training.train import TrainConfig
    from training.workdir import prepare_workdir

    old = dataclasses.asdict(TrainConfig(epochs=3))
    del old["strategy"]
    (tmp_path / "config.json").write_text(json.dumps(old))
    assert prepare_workdir(TrainConfig(epochs=3), str(tmp_path), overwrite=False) is None
    with pytest.raises(ValueError, match=r"differs in \['strategy'\]"):
        prepare_workdir(TrainConfig(epochs=3, strategy="onedevice"), str(tmp_path), False)
