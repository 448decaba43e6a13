"""kerastl under Keras' own distribution: `keras.distribution` on JAX, `tf.distribute` on TF.

Two CPU devices stand in for two accelerators (`--xla_force_host_platform_device_count=2`
on JAX, two logical CPU devices on TensorFlow). Both must be set before the backend
starts, so each backend's checks run in one fresh process: a single-device reference
and the distributed run of the same thing, whose weights must agree.

The same processes then run the ```python blocks of docs/distributed.md with
`support.run_example_code`, in document order, each block in the processes its
`<!-- runs on: ... -->` line names. `torchrun` blocks run in the torch session, in two
processes on CPU under `torch.distributed.run`.
"""

import json
import os
import pathlib
import pickle
import re
import subprocess

import keras
import numpy as np
import pytest
from support import backend_python, run_in_backend

BACKEND = keras.config.backend()
TORCH = (
    "Keras 3.15 has no distribution for the torch backend (keras.distribution is JAX only, "
    "tf.distribute TensorFlow only); docs/distributed.md says how torch users scale"
)

DOC = pathlib.Path(__file__).parent.parent / "docs" / "distributed.md"
RUNNERS = ("jax", "tensorflow", "torchrun")
FENCE = re.compile(r"^```(\S*)\n(.*?)^```", re.S | re.M)
MARKER = re.compile(r"<!-- runs on: (.*?) -->")


def doc_blocks(text=None):
    """`{runner: [[name, code], ...]}`: the doc's python blocks, in order, for each runner.

    Every python block must say where it runs on the line right above its fence, and
    every runner must get a block: a missing or misspelt marker fails here, not silently.
    """
    text = DOC.read_text() if text is None else text
    blocks = {runner: [] for runner in RUNNERS}
    fences = [m for m in FENCE.finditer(text) if m.group(1) == "python"]
    assert text.count("```py") == len(fences), (
        "docs/distributed.md has python code fenced other than by ```python at a line start"
    )
    for i, match in enumerate(fences):
        name = f"distributed.md[block {i}]"
        above = text[: match.start()].removesuffix("\n").rpartition("\n")[2]
        marker = MARKER.fullmatch(above.strip())
        assert marker, f"{name} has no `<!-- runs on: ... -->` line right above its fence"
        runners = marker.group(1).split()
        unknown = sorted(set(runners) - set(RUNNERS))
        assert runners and not unknown, f"{name} runs on {unknown or 'nothing'}; say {RUNNERS}"
        for runner in runners:
            blocks[runner].append([name, match.group(2)])
    for runner, found in blocks.items():
        assert found, f"no block of docs/distributed.md runs on {runner}"
    return blocks


# Runs `doc_blocks` (a global of the child) as test_docs does, in a fresh namespace:
# `doc_error` is None, or the failing block's name and what went wrong.
_RUN_DOC = """
import traceback

from support import run_example_code

doc_error = None
doc_namespace = {"__name__": "doc_distributed"}
for doc_name, doc_code in doc_blocks:
    try:
        run_example_code(doc_code, doc_namespace, doc_name)
    except Exception:
        doc_error = f"{doc_name} failed:\\n{traceback.format_exc(limit=-3)}"
        break
"""


def test_every_doc_block_says_where_it_runs():
    blocks = doc_blocks()  # the doc itself: every block marked, every runner served
    assert blocks["jax"][0] == blocks["tensorflow"][0] == blocks["torchrun"][0]  # the setup
    block = "```python\nprint(1)  # 1\n```\n"
    marked = "".join(f"<!-- runs on: {runner} -->\n{block}" for runner in RUNNERS)
    assert [len(found) for found in doc_blocks(marked).values()] == [1, 1, 1]
    for text, error in (
        (marked + "\n" + block, "block 3] has no `<!-- runs on"),  # no marker
        (marked + "<!-- runs on: jax -->\n\n" + block, "block 3] has no"),  # not right above
        (marked.replace("tensorflow", "tensorflw"), "runs on ['tensorflw']"),  # a typo
        (marked.replace("torchrun", "jax"), "no block of docs/distributed.md runs on torchrun"),
        (marked + block.replace("python", "py"), "fenced other than by ```python"),
        (marked + "1. A list\n\n   " + block, "fenced other than by ```python"),
    ):
        with pytest.raises(AssertionError, match=re.escape(error)):
            doc_blocks(text)


# What both backends' processes share: a tiny calibrated CNN, kerastl model, the checks.
_COMMON = """
import sys

import numpy as np
import keras
from support import calibrate_batchnorm, real_images, tf_mode

import kerastl

fine_tune_module = sys.modules["kerastl.training.head_phase"]  # where fine_tune caches

photos = real_images(size=16, count=12, seed=0)
labels = np.arange(12) % 3


def make_model():
    keras.utils.set_random_seed(2)
    inputs = keras.Input((16, 16, 3))
    x = inputs
    for i, filters in enumerate((8, 16)):
        x = keras.layers.Conv2D(filters, 3, strides=2, padding="same", name=f"conv_{i}")(x)
        x = keras.layers.BatchNormalization(name=f"bn_{i}")(x)
        x = keras.layers.ReLU(name=f"relu_{i}")(x)
    backbone = calibrate_batchnorm(keras.Model(inputs, x, name="tiny"), tf_mode(photos))
    extractor = kerastl.FeatureExtractor(backbone, pooling="avg")
    prep = kerastl.preprocessing.pipeline(extractor, mode="tf")
    keras.utils.set_random_seed(3)
    return kerastl.build_model(extractor, kerastl.heads.multiclass(3), prep)


def weights(model):
    return {w.path: np.array(keras.ops.convert_to_numpy(w)) for w in model.weights}


cache_calls = []
_features_of = fine_tune_module.features_of


def counting_features_of(*args, **kwargs):
    cache_calls.append(1)
    return _features_of(*args, **kwargs)


fine_tune_module.features_of = counting_features_of


def run_fine_tune(model):
    kerastl.fine_tune(
        model, (photos, labels), (photos, labels), epochs=1, head_epochs=1, lr=1e-2,
        batch_size=6, verbose=0,
    )
    return weights(model)


def run_per_layer_lr(model, compile_scope):
    with compile_scope:
        kerastl.set_freeze(model, "none")
        model.compile(
            kerastl.optimizers.PerLayerLR(
                keras.optimizers.SGD(0.5), multipliers={"conv_0": 0.0, "conv_1": 0.1}
            ),
            "sparse_categorical_crossentropy",
        )
    before = weights(model)
    model.fit(photos, labels, batch_size=6, epochs=1, shuffle=False, verbose=0)
    return before, weights(model)


def run_gradual(model, compile_scope):
    with compile_scope:
        model.compile(keras.optimizers.Adam(1e-2), "sparse_categorical_crossentropy")
    unfreeze = kerastl.callbacks.GradualUnfreezing(
        schedule={1: "none"}, lr_multiplier=0.1, verbose=0
    )
    model.fit(
        photos, labels, batch_size=6, epochs=2, shuffle=False, verbose=0, callbacks=[unfreeze]
    )
    return weights(model)


def run_cache(model):
    # 5 does not divide over 2 devices: the cache pads its batches itself.
    return {"features": kerastl.cache_features(model, photos, batch_size=5, verbose=0).features}


def largest_difference(a, b):
    return max(float(np.max(np.abs(a[k] - b[k]))) for k in a)


def largest_move(after, before, prefix):
    return max(
        float(np.max(np.abs(after[k] - before[k]))) for k in after if k.startswith(prefix)
    )


def refusal(model):
    try:
        kerastl.fine_tune(
            model, (photos[:11], labels[:11]), epochs=0, head_epochs=1, batch_size=5, verbose=0
        )
    except ValueError as e:
        return str(e)
    return None
"""

_JAX = (
    """
import contextlib

import jax
"""
    + _COMMON
    + """
result = {"devices": len(jax.devices())}
data_parallel = keras.distribution.DataParallel()
reference, distributed = {}, {}
for out, scope in ((reference, contextlib.nullcontext()), (distributed, data_parallel.scope())):
    with scope:
        calls = len(cache_calls)
        out["fine_tune"] = run_fine_tune(make_model())
        out["cached"] = len(cache_calls) > calls
        model = make_model()
        out["replicas"] = len(model.get_layer("head").weights[0].value.sharding.device_set)
        out["per_layer_lr"] = run_per_layer_lr(model, contextlib.nullcontext())
        out["gradual"] = run_gradual(make_model(), contextlib.nullcontext())
        out["cache"] = run_cache(make_model())
        out["refusal"] = refusal(make_model())

# A backbone too large for one device: its conv kernels split over the "model" axis.
mesh = keras.distribution.DeviceMesh((1, 2), ["batch", "model"], jax.devices())
layout_map = keras.distribution.LayoutMap(mesh)
layout_map["conv_.*/kernel"] = (None, None, None, "model")
layout_map["conv_.*/bias"] = ("model",)
model_parallel = keras.distribution.ModelParallel(layout_map=layout_map, batch_dim_name="batch")
with model_parallel.scope():
    model = make_model()
    kernel = next(w for w in model.weights if w.path == "conv_1/kernel").value
    result["model_parallel_shard"] = list(kernel.addressable_shards[0].data.shape)
    sharded = run_fine_tune(model)

result.update(
    replicas=distributed["replicas"],
    reference_replicas=reference["replicas"],
    cached=[reference["cached"], distributed["cached"]],
    fine_tune=largest_difference(reference["fine_tune"], distributed["fine_tune"]),
    fine_tune_moved=largest_move(distributed["fine_tune"], weights(make_model()), "conv_0"),
    model_parallel=largest_difference(reference["fine_tune"], sharded),
    gradual=largest_difference(reference["gradual"], distributed["gradual"]),
    cache=largest_difference(reference["cache"], distributed["cache"]),
    refusal=distributed["refusal"],
    reference_refusal=reference["refusal"],
)
(before, single), (_, multi) = reference["per_layer_lr"], distributed["per_layer_lr"]
result.update(
    frozen_moved=largest_move(multi, before, "conv_0/"),
    tenth_moved=largest_move(multi, before, "conv_1/"),
    head_moved=largest_move(multi, before, "head/"),
    per_layer_lr=largest_difference(single, multi),
)
"""
    + _RUN_DOC
    + """
result["doc_error"] = doc_error
print(json.dumps(result))
"""
)

_TF = (
    """
import contextlib

import tensorflow as tf

cpu = tf.config.list_physical_devices("CPU")[0]
tf.config.set_logical_device_configuration(cpu, [tf.config.LogicalDeviceConfiguration()] * 2)
"""
    + _COMMON
    + """
strategy = tf.distribute.MirroredStrategy(["/cpu:0", "/cpu:1"])
result = {"devices": strategy.num_replicas_in_sync}
reference, distributed = {}, {}
for out, scope in ((reference, contextlib.nullcontext), (distributed, strategy.scope)):
    # Keras' rule: models (and the optimizers given to compile) are made in the scope;
    # fine_tune, fit and the callbacks run outside it, where kerastl makes its own.
    with scope():
        models = [make_model() for _ in range(5)]
    out["mirrored"] = type(models[0].get_layer("head").weights[0].value).__name__
    calls = len(cache_calls)
    out["fine_tune"] = run_fine_tune(models[0])
    out["cached"] = len(cache_calls) > calls
    out["per_layer_lr"] = run_per_layer_lr(models[1], scope())
    out["gradual"] = run_gradual(models[2], scope())
    out["cache"] = run_cache(models[3])
    out["refusal"] = refusal(models[4])

(before, single), (_, multi) = reference["per_layer_lr"], distributed["per_layer_lr"]
result.update(
    replicas=2 if distributed["mirrored"] == "MirroredVariable" else 1,
    reference_replicas=1,
    cached=[reference["cached"], distributed["cached"]],
    fine_tune=largest_difference(reference["fine_tune"], distributed["fine_tune"]),
    fine_tune_moved=largest_move(distributed["fine_tune"], weights(make_model()), "conv_0"),
    gradual=largest_difference(reference["gradual"], distributed["gradual"]),
    cache=largest_difference(reference["cache"], distributed["cache"]),
    refusal=distributed["refusal"],
    reference_refusal=reference["refusal"],
    frozen_moved=largest_move(multi, before, "conv_0/"),
    tenth_moved=largest_move(multi, before, "conv_1/"),
    head_moved=largest_move(multi, before, "head/"),
    per_layer_lr=largest_difference(single, multi),
)
# The doc makes a second MirroredStrategy in this process: as TensorFlow's own tests do
# (tensorflow/python/distribute/strategy_combinations.py), give it collective keys of its
# own, or its all-reduces meet the first strategy's under the same keys.
tf.distribute.MirroredStrategy._collective_key_base += 100000
"""
    + _RUN_DOC
    + """
result["doc_error"] = doc_error
print(json.dumps(result))
"""
)


def _check(result):
    assert result["doc_error"] is None, result["doc_error"]
    assert result["devices"] == 2
    # The distributed runs ran on both devices; the references on one.
    assert result["replicas"] == 2 and result["reference_replicas"] == 1
    # fine_tune: head phase on the cache, then the backbone at PerLayerLR's block rates.
    assert result["cached"] == [True, True]
    assert result["fine_tune_moved"] > 1e-6
    assert result["fine_tune"] < 1e-6
    assert result["gradual"] < 1e-6
    assert result["cache"] < 1e-5
    # Per-layer rates still apply: multiplier 0 leaves conv_0 bit-identical, 0.1 gives
    # conv_1 the step it gets on one device (a plain SGD would move it 10x as far).
    assert result["frozen_moved"] == 0.0
    assert result["tenth_moved"] > 1e-5 and result["head_moved"] > 1e-3
    assert result["per_layer_lr"] < 1e-6
    assert "cannot split evenly over its 2 devices" in result["refusal"]
    assert "batch_size=5, train of 11 images" in result["refusal"]
    assert result["reference_refusal"] is None  # one device: any batch size


@pytest.mark.skipif(BACKEND != "jax", reason="the JAX process runs in the JAX session")
@pytest.mark.skipif(BACKEND == "torch", reason=TORCH)
def test_jax_data_parallel_and_model_parallel_train_as_one_device(monkeypatch):
    flags = os.environ.get("XLA_FLAGS", "")
    monkeypatch.setenv("XLA_FLAGS", f"{flags} --xla_force_host_platform_device_count=2".strip())
    result = run_in_backend("jax", _JAX, doc_blocks=doc_blocks()["jax"])
    _check(result)
    # ModelParallel: each device holds half of conv_1's 16 output channels.
    assert result["model_parallel_shard"] == [3, 3, 8, 8]
    assert result["model_parallel"] < 1e-6


@pytest.mark.skipif(BACKEND != "tensorflow", reason="the TF process runs in the TF session")
@pytest.mark.skipif(BACKEND == "torch", reason=TORCH)
def test_tf_mirrored_strategy_trains_as_one_device():
    result = run_in_backend("tensorflow", _TF, doc_blocks=doc_blocks()["tensorflow"])
    _check(result)


# One process of the torch DDP run: the doc's `torchrun` blocks, then what the test checks.
_TORCHRUN = """
import json
import os
import pickle
import sys
import traceback

import keras
import torch
from support import run_example_code

blocks, out = json.loads(sys.argv[1]), sys.argv[2]
rank = int(os.environ["RANK"])
namespace = {"__name__": "doc_distributed"}
record = {}


def snapshot(model):
    return {w.path: keras.ops.convert_to_numpy(w.value).copy() for w in model.weights}


def train_loss(model):
    with torch.no_grad():
        images = torch.tensor(namespace["x_train"]).float()
        logits = model(images)
        return float(torch.nn.functional.cross_entropy(logits, torch.tensor(namespace["y_train"])))


class RecordingDDP(torch.nn.parallel.DistributedDataParallel):
    # Notes each process's own initial weights, and those DDP starts all of them from.
    def __init__(self, module, *args, **kwargs):
        record["own"] = snapshot(module)
        super().__init__(module, *args, **kwargs)
        record["start"] = snapshot(module)
        record["start_loss"] = train_loss(module)
        record["trainable"] = sorted(w.path for w in module.trainable_weights)


torch.nn.parallel.DistributedDataParallel = RecordingDDP
for name, code in blocks:
    try:
        run_example_code(code, namespace, name)
    except Exception:
        with open(os.path.join(out, f"error-{rank}.txt"), "w") as f:
            f.write(f"{name} failed in process {rank}:\\n{traceback.format_exc(limit=-3)}")
        raise
model = namespace["model"]
record.update(final=snapshot(model), final_loss=train_loss(model))
with open(os.path.join(out, f"rank-{rank}.pkl"), "wb") as f:
    pickle.dump(record, f)
"""


@pytest.mark.skipif(BACKEND != "torch", reason="the DDP processes run in the torch session")
def test_torch_ddp_doc_block_trains_both_processes_alike(tmp_path):
    """docs/distributed.md's DDP loop in two processes on CPU ("gloo"), as torchrun runs it."""
    script = tmp_path / "ddp_doc.py"
    script.write_text(_TORCHRUN)
    env = dict(
        os.environ,
        KERAS_BACKEND="torch",
        PYTHONPATH=os.path.dirname(__file__),
        OMP_NUM_THREADS="1",  # torchrun's default for several processes, without its warning
    )
    command = [backend_python("torch"), "-m", "torch.distributed.run", "--standalone"]
    command += ["--nproc_per_node=2", str(script), json.dumps(doc_blocks()["torchrun"])]
    run = subprocess.run(
        [*command, str(tmp_path)],
        env=env,
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=300,
    )
    errors = sorted(tmp_path.glob("error-*.txt"))
    assert not errors, errors[0].read_text()
    assert run.returncode == 0, f"torch.distributed.run failed:\n{run.stderr[-4000:]}"
    ranks = []
    for rank in (0, 1):
        with open(tmp_path / f"rank-{rank}.pkl", "rb") as f:
            ranks.append(pickle.load(f))
    first, second = ranks
    trainable = first["trainable"]
    assert trainable == second["trainable"]
    assert {path.split("/")[0] for path in trainable} == {"conv_0", "conv_1", "head"}
    for path, start in first["start"].items():
        # Each process made its own random model; DDP started both from process 0's.
        assert np.array_equal(first["own"][path], start)
        assert np.array_equal(second["start"][path], start)
        # The same averaged gradients, the same steps: identical weights at the end.
        assert np.array_equal(first["final"][path], second["final"][path]), path
        moved = np.max(np.abs(first["final"][path] - start), initial=0.0)
        assert (moved > 0) == (path in trainable), (path, moved)
    assert any(not np.array_equal(first["own"][path], second["own"][path]) for path in trainable)
    losses = [first["start_loss"], first["final_loss"], second["final_loss"]]
    assert losses[1] == losses[2] < losses[0], losses  # on all 64 training images
