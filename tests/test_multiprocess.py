"""`fine_tune` in two JAX processes against one: the same run, the files written once;
TensorFlow's MultiWorkerMirroredStrategy, which Keras 3's `fit` does not run under, refused.

Two processes on this machine, joined by Keras' own `keras.distribution.initialize`
(JAX's gloo CPU collectives on 127.0.0.1), each feeding its own shard
(`tests/multiprocess_worker.py`), against one process fed the same global batches.
What must hold: the same history and weights (within float rounding), the same
trainable set on every process after `set_freeze`, one checkpoint directory and one
model file written by process 0 alone, and a second call resuming on every process
from the same checkpoint.
"""

import json
import os
import pathlib
import signal
import socket
import subprocess
import sys
import time

import keras
import numpy as np
import pytest

import kerastl

JAX = pytest.mark.skipif(
    keras.config.backend() != "jax",
    reason="JAX's multi-process engine (keras.distribution.initialize); TensorFlow's is "
    "checked below, torch's DDP route in tests/test_distributed.py",
)

WORKER = pathlib.Path(__file__).parent / "multiprocess_worker.py"
TIMEOUT = 240  # seconds a run of the workers may take: never a hang


def _free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _start(processes, out, epochs, *extra):
    port = _free_port() if processes > 1 else 0
    env = {**os.environ, "KERAS_BACKEND": "jax", "XLA_FLAGS": ""}
    return [
        subprocess.Popen(
            [
                sys.executable,
                *(str(a) for a in (WORKER, i, processes, port, out, epochs, *extra)),
            ],
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
        )
        for i in range(processes)
    ]


def _run(processes, out, epochs, *extra):
    """Starts `processes` workers and waits for all (bounded); returns their results."""
    workers = _start(processes, out, epochs, *extra)
    logs = []
    try:
        for worker in workers:
            logs.append(worker.communicate(timeout=TIMEOUT)[0])
    finally:
        for worker in workers:
            worker.kill()
    for worker, log in zip(workers, logs, strict=True):
        assert worker.returncode == 0, log[-3000:]
    results = [json.loads((out / f"result-{i}.json").read_text()) for i in range(processes)]
    weights = [dict(np.load(out / f"weights-{i}.npz")) for i in range(processes)]
    return results, weights


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    one, two = tmp_path_factory.mktemp("one"), tmp_path_factory.mktemp("two")
    return (one, *_run(1, one, 2)), (two, *_run(2, two, 2))


def _close(a, b, atol=1e-5):
    assert a.keys() == b.keys()
    return max(float(np.abs(a[k] - b[k]).max()) for k in a) <= atol


def _assert_same_run(single, single_weights, results, weights, rtol=1e-5, atol=1e-6):
    """Every process's history is the one process's, and so are the weights (identical
    between the processes, within 1e-5 of the one process)."""
    for result in results:
        for key, values in single["history"].items():
            np.testing.assert_allclose(result["history"][key], values, rtol=rtol, atol=atol)
    assert _close(weights[0], weights[1], atol=0.0)
    assert _close(weights[0], single_weights, atol=1e-5)


def _one_and_two(tmp_path, epochs, mode):
    """The workers' results and weights of one process, then of two, in `mode`."""
    one, two = tmp_path / "one", tmp_path / "two"
    one.mkdir()
    two.mkdir()
    return _run(1, one, epochs, mode), _run(2, two, epochs, mode)


@JAX
def test_two_processes_train_as_one(runs):
    (_, [single], [single_weights]), (_, results, weights) = runs
    assert [r["processes"] for r in results] == [2, 2]
    assert [r["process"] for r in results] == [0, 1]
    for result in results:
        assert result["phases"] == single["phases"] == ["head", "fine-tune"]
    # Every process holds the same model, and it is the one process's.
    _assert_same_run(single, single_weights, results, weights)


@JAX
def test_every_process_ends_with_the_same_trainable_set(runs):
    (_, [single], _), (_, results, _) = runs
    assert results[0]["trainable"] == results[1]["trainable"] == single["trainable"]


@JAX
def test_each_process_caches_its_own_shard_once(runs):
    (one, _, _), (two, _, _) = runs
    assert len(list((one / "cache").glob("features-*.json"))) == 1
    assert len(list((two / "cache").glob("features-*.json"))) == 2  # a feature set per shard
    assert not [p for p in (two / "cache").iterdir() if p.name.startswith(".")]  # none torn


@JAX
def test_process_zero_writes_the_checkpoints_and_the_model_once(runs):
    _, (out, _, weights) = runs
    files = sorted(p.name for p in (out / "checkpoints").iterdir())
    assert files == ["ckpt-00003", "latest.json"]  # no partial, no second writer's copy
    leftovers = [p.name for p in out.iterdir() if p.name.startswith(".")]
    assert leftovers == []  # no staging directory left behind
    loaded = kerastl.load_model(out / "model.keras")
    assert [w.path for w in loaded.weights] and len(loaded.weights) == len(weights[0])


@JAX
def test_after_a_worker_is_killed_every_process_resumes_the_same_run(runs, tmp_path):
    _, (_, uninterrupted, uninterrupted_weights) = runs
    workers = _start(2, tmp_path, 2)
    pointer = tmp_path / "checkpoints" / "latest.json"
    try:
        for _ in range(TIMEOUT * 10):  # until the head phase's checkpoint is complete
            if pointer.exists() or any(w.poll() is not None for w in workers):
                break
            time.sleep(0.1)
        assert pointer.exists(), "no checkpoint was written"
        workers[1].send_signal(signal.SIGKILL)  # one worker dies mid-run
    finally:
        for worker in workers:  # the job goes down with it (a launcher restarts it)
            worker.kill()
            worker.communicate()
    killed_at = json.loads(pointer.read_text())["checkpoint"]
    assert killed_at in {"ckpt-00001", "ckpt-00002"}  # stopped before the end
    results, weights = _run(2, tmp_path, 2)  # the same call, restarted
    _assert_same_run(uninterrupted[0], uninterrupted_weights[0], results, weights)


@JAX
def test_when_process_zero_dies_the_others_stop_instead_of_waiting(tmp_path):
    workers = _start(2, tmp_path, 40)
    pointer = tmp_path / "checkpoints" / "latest.json"
    try:
        for _ in range(TIMEOUT * 10):  # mid-run: a checkpoint written
            if pointer.exists() or any(w.poll() is not None for w in workers):
                break
            time.sleep(0.1)
        assert pointer.exists(), "no checkpoint was written"
        workers[0].send_signal(signal.SIGKILL)
        # JAX's coordination service ends the survivor (0.2 s measured; a killed
        # process other than the coordinator is noticed after ~90 s of missed heartbeats).
        log = workers[1].communicate(timeout=60)[0]
    finally:
        for worker in workers:
            worker.kill()
            worker.communicate()
    assert workers[1].returncode != 0, log[-2000:]


@JAX
def _refused(out, mode):
    """The logs of two workers started in `mode`, each of which must exit with 1 (bounded)."""
    workers = _start(2, out, 2, mode)
    try:
        logs = [worker.communicate(timeout=TIMEOUT)[0] for worker in workers]
    finally:
        for worker in workers:
            worker.kill()
    for worker, log in zip(workers, logs, strict=True):
        assert worker.returncode == 1, log[-2000:]
    return logs


@JAX
def test_processes_that_disagree_are_refused_by_name_not_left_hanging(tmp_path):
    for log in _refused(tmp_path, "disagree"):
        assert "The processes of this run disagree" in log
        assert "settings lr: process 0 0.01, process 1 0.03" in log
        assert "train images: process 0 48, process 1 40" in log
    assert not (tmp_path / "checkpoints").exists() or not any((tmp_path / "checkpoints").iterdir())


@JAX
def test_a_checkpoint_dir_the_processes_do_not_share_is_refused_by_name(tmp_path):
    for log in _refused(tmp_path, "unshared"):
        assert "`checkpoint_dir` is not shared between the processes: process 1 does" in log
        assert "Received: checkpoint_dir=" in log
    assert not list((tmp_path / "checkpoints-0").iterdir())  # nothing trained, no marker left


@JAX
def test_gradual_unfreezing_opens_the_same_blocks_on_every_process(tmp_path):
    ([single], [single_weights]), (results, weights) = _one_and_two(tmp_path, 3, "gradual")
    steps = single["trainable_by_epoch"]
    assert len(steps) == 3 and len(steps[0]) < len(steps[1]) < len(steps[2])  # one more block
    for result in results:
        assert result["trainable_by_epoch"] == steps
    _assert_same_run(single, single_weights, results, weights)


@JAX
def test_a_head_sweep_chooses_the_same_head_on_every_process(tmp_path):
    ([single], [single_weights]), (results, weights) = _one_and_two(tmp_path, 0, "sweep")
    assert len(single["sweep"]) == 4
    for result in results:
        for row, reference in zip(result["sweep"], single["sweep"], strict=True):
            assert row.keys() == reference.keys()
            for key, value in reference.items():
                np.testing.assert_allclose(row[key], value, rtol=1e-4, atol=1e-5, err_msg=key)
    _assert_same_run(single, single_weights, results, weights, rtol=1e-4, atol=1e-5)


@JAX
def test_the_several_hosts_example_launches_two_processes_that_agree(tmp_path):
    script = pathlib.Path(__file__).parent.parent / "docs" / "examples" / "several_hosts.py"
    env = {**os.environ, "KERAS_BACKEND": "jax", "XLA_FLAGS": ""}
    done = subprocess.run(
        [sys.executable, str(script), "--launch", "2", "--short", "--out", str(tmp_path)],
        env=env,
        capture_output=True,
        text=True,
        timeout=TIMEOUT,
    )
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-2000:]
    lines = sorted(line for line in done.stdout.splitlines() if line.startswith("process "))
    names = [line.split(":")[0] for line in lines]
    assert names == ["process 0 of 2", "process 1 of 2"], done.stdout + done.stderr[-2000:]
    assert lines[0].split(":", 1)[1] == lines[1].split(":", 1)[1]  # the same model
    assert sorted(p.name for p in tmp_path.iterdir()) == ["checkpoints", "digits.keras"]


@pytest.mark.skipif(keras.config.backend() != "tensorflow", reason="TensorFlow's strategy")
def test_tf_multi_worker_strategy_is_refused_because_keras_fit_fails_under_it():
    """A canary: the day Keras' `fit` runs under the strategy, this fails and says so."""
    port = _free_port()
    env = {**os.environ, "KERAS_BACKEND": "tensorflow"}
    script = str(pathlib.Path(__file__).parent / "multiworker_tf_worker.py")
    workers = [
        subprocess.Popen(
            [sys.executable, script, str(i), str(port)],
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
        )
        for i in range(2)
    ]
    try:
        logs = [worker.communicate(timeout=TIMEOUT)[0] for worker in workers]
    finally:
        for worker in workers:
            worker.kill()
    for log in logs:
        assert "keras fit: fails (ValueError: Attempt to convert a value (PerReplica" in log, log
        assert "fine_tune: refused (Keras 3's fit does not run under" in log, log
        assert "keras-team/keras#20585" in log and "with 2 workers" in log
