"""The data door: every form adapted, the same answers, and bad data refused one way."""

import os
import re

import keras
import numpy as np
import pytest
from PIL import Image

import kerastl
from kerastl.data import DataAdapter, adapt
from kerastl.data.adapter import data_errors

BACKEND = os.environ.get("KERAS_BACKEND")
needs_tf = pytest.mark.skipif(BACKEND != "tensorflow", reason="tf.data: the TensorFlow session")
needs_torch = pytest.mark.skipif(BACKEND != "torch", reason="a DataLoader: the torch session")
backend_free = pytest.mark.backend_free


def _images(n=10, size=8, seed=0):
    return np.random.default_rng(seed).integers(0, 256, (n, size, size, 3)).astype("uint8")


class _Head:
    """What `check_labels` reads of a `kerastl.heads.TaskHead`."""

    def __init__(self, task="multiclass", num_outputs=3, sparse_labels=True):
        self.task, self.num_outputs, self.sparse_labels = task, num_outputs, sparse_labels


class _Plain(keras.utils.PyDataset):
    """A user's PyDataset (not kerastl's): its batches are checked as they are drawn."""

    def __init__(self, x, y, batch_size=4):
        super().__init__()
        self.x, self.y, self.batch_size = x, y, batch_size

    def __len__(self):
        return -(-len(self.x) // self.batch_size)

    def __getitem__(self, i):
        rows = slice(i * self.batch_size, (i + 1) * self.batch_size)
        return self.x[rows], self.y[rows]


def _pass(data, **kwargs):
    """One pass of `numpy_batches` as `(images, labels)` concatenated."""
    xs, ys = zip(*data.numpy_batches(**kwargs), strict=True)
    return np.concatenate(xs), (None if ys[0] is None else np.concatenate(ys))


# --- every form --------------------------------------------------------------------------


@backend_free
def test_arrays_in_every_spelling():
    x, y = _images(), np.arange(10) % 3
    for data in ((x, y), [x, y], (list(x), list(y))):
        adapter = adapt(data, "train", batch_size=4)
        assert (adapter.kind, adapter.steps, adapter.count) == ("arrays", 3, 10)
        assert adapter.batch_size == 4 and not adapter.keeps_order and not adapter.mixes
        np.testing.assert_array_equal(adapter.labels, y)
        images, labels = _pass(adapter)
        np.testing.assert_array_equal(images, x)
        np.testing.assert_array_equal(labels, y)
        assert adapter.fit_arguments().keys() == {"x", "y", "batch_size"}
        assert len(adapter.validation_data()) == 2
    shuffled, labels = _pass(adapt((x, y), "train"), shuffle=True, seed=0)
    assert not np.array_equal(labels, y) and sorted(labels) == sorted(y)
    assert sorted(map(bytes, shuffled)) == sorted(map(bytes, x))
    # Images alone, a list of images, sample weights.
    for data in (x, list(x), (x,)):
        alone = adapt(data, "data")
        assert alone.labels is None and alone.count == 10
        assert "y" not in alone.fit_arguments()
    weighted = adapt((x, y, np.ones(10)), "train", batch_size=5)
    assert weighted.fit_arguments()["sample_weight"].shape == (10,)
    assert [len(w) for _, _, w in weighted.numpy_batches(weights=True)] == [5, 5]


@backend_free
def test_an_adapter_passes_through_and_fingerprints_are_stable():
    x, y = _images(), np.arange(10) % 3
    adapter = adapt((x, y), "train")
    assert adapt(adapter, "ignored") is adapter and isinstance(adapter, DataAdapter)
    same = adapt((x.copy(), y.copy()), "train").fingerprint()
    assert adapter.fingerprint() == same
    assert adapt((x, (y + 1) % 3), "train").fingerprint() != same
    # kerastl batches: by content; a shuffled order is another key; mixed labels none.
    plain = kerastl.data.from_arrays(x, y, batch_size=4, shuffle=False)
    assert (
        adapt(plain, "train").fingerprint()
        == adapt(kerastl.data.from_arrays(x, y, batch_size=4, shuffle=False), "train").fingerprint()
    )
    shuffled = kerastl.data.from_arrays(x, y, batch_size=4, shuffle=True, seed=0)
    assert adapt(shuffled, "train").fingerprint() not in (None, adapt(plain, "t").fingerprint())
    assert adapt(_Plain(x, y), "train").fingerprint() is None
    assert adapt(iter([(x, y)]), "train").fingerprint() is None


@backend_free
def test_files_are_fingerprinted_by_path_size_and_time(tmp_path):
    for name, image in zip(("a", "b"), _images(4, 8), strict=False):
        os.makedirs(tmp_path / name)
        for i in range(2):
            Image.fromarray(image).save(tmp_path / name / f"{i}.png")
    batches = kerastl.data.from_directory(tmp_path, 8, batch_size=2, shuffle=False)
    adapter = adapt(batches, "train")
    assert (adapter.kind, adapter.count, adapter.steps, adapter.keeps_order) == (
        "batches",
        4,
        2,
        True,
    )
    first = adapter.fingerprint()
    assert first == adapt(batches, "train").fingerprint()
    path = tmp_path / "a" / "0.png"
    os.utime(path, ns=(1, 1))
    assert adapt(batches, "train").fingerprint() != first
    np.testing.assert_array_equal(_pass(adapter)[1], [0, 0, 1, 1])
    assert adapter.fit_arguments() == {"x": batches, "shuffle": False}


@backend_free
def test_kerastl_batches_and_other_py_datasets():
    x, y = _images(), np.arange(10) % 3
    batches = kerastl.data.from_arrays(x, y, batch_size=4, shuffle=False)
    adapter = adapt(batches, "train", batch_size=99)
    assert (adapter.kind, adapter.batch_size, adapter.steps, adapter.count) == ("batches", 4, 3, 10)
    np.testing.assert_array_equal(adapter.labels, y)
    np.testing.assert_array_equal(_pass(adapter)[0], x)
    other = adapt(_Plain(x, y), "train")
    assert (other.kind, other.steps, other.count, other.labels) == ("batches", 3, None, None)
    np.testing.assert_array_equal(_pass(other)[1], y)
    assert isinstance(other.fit_arguments()["x"], keras.utils.PyDataset)


@backend_free
def test_generators_and_lists_of_batches():
    x, y = _images(), np.arange(10) % 3
    batches = [(x[:6], y[:6]), (x[6:], y[6:])]
    listed = adapt(batches, "train")
    assert (listed.kind, listed.steps, listed.one_shot) == ("iterable", 2, False)
    np.testing.assert_array_equal(_pass(listed)[1], y)
    np.testing.assert_array_equal(_pass(listed)[1], y)  # passed over again
    generator = adapt(iter(batches), "train")
    assert generator.one_shot and generator.kind == "iterable"
    first = generator.first_batch()
    np.testing.assert_array_equal(first[1], y[:6])
    np.testing.assert_array_equal(_pass(generator)[1], y)  # the peeked batch included
    with pytest.raises(ValueError, match=r"one-shot iterator.*already passed over.*train="):
        _pass(generator)
    with pytest.raises(ValueError, match=r"one-shot iterator.*no length.*Received: train="):
        _ = adapt(iter(batches), "train").steps


# --- bad input ---------------------------------------------------------------------------

X, Y = _images(), np.arange(10) % 3


def _nan_images():
    x = X.astype("float32")
    x[3, 0, 0, 0] = np.nan
    return x


def _inf_batch():
    x = X.astype("float32")
    x[7, 1, 1, 1] = np.inf
    return [(x[:4], Y[:4]), (x[4:8], Y[4:8])]


BAD = {
    "rank-3": (
        (X[..., 0], Y),
        {},
        r"`train` images must have rank 4.*x\[\.\.\., None\].*"
        r"Received: train images of shape \(10, 8, 8\)",
    ),
    "five-channels": (
        (np.zeros((2, 8, 8, 5)), [0, 1]),
        {},
        r"1 \(grayscale\) or 3 \(RGB\) "
        r"channels.*Received: train images of shape \(2, 8, 8, 5\)",
    ),
    "strings": ((X.astype(str), Y), {}, r"must be numbers.*Received: train images of dtype <U"),
    "paths": ((["a.png", "b.png"], [0, 1]), {}, r"must be numbers.*Received: train images of"),
    "bool": ((X > 0, Y), {}, r"must be numbers.*Received: train images of dtype bool"),
    "ragged": (
        ([X[0], X[1, :4]], [0, 1]),
        {},
        r"ragged.*Received: train images as a list of 2 "
        r"images of shapes \(8, 8, 3\), \(4, 8, 3\)",
    ),
    "ragged-alone": ([X[0], X[1, :4]], {}, r"ragged.*Received: train images as a list"),
    "nan": (
        (_nan_images(), Y),
        {},
        r"NaN or infinite.*first in image 3.*Received: train images "
        r"with 1 NaN and 0 infinite",
    ),
    "empty": ((X[:0], Y[:0]), {}, r"holds no images.*Received: train images of shape \(0, 8"),
    "label-count": ((X, Y[:7]), {}, r"10 images but 7 labels.*Received: train labels of shape"),
    "scalar-label": ((X, 3), {}, r"10 images but a single value.*Received: train labels of"),
    "x-none": ((X, None), {"needs_labels": True}, r"needs labels.*Received: train=\(x, None\)"),
    "x-alone": (X, {"needs_labels": True}, r"needs labels.*Received: train=images of shape"),
    "batches-no-labels": (
        kerastl.data.from_arrays(X, batch_size=4),
        {"needs_labels": True},
        r"needs labels.*Received: train=ImageBatches without labels",
    ),
    "empty-list": ([], {}, r"holds no batches.*Received: train=list of \[\]"),
    "str": ("images/", {}, r"must be \(x, y\) arrays.*Received: train='images/'"),
    "int": (5, {}, r"must be \(x, y\) arrays.*Received: train=5"),
    "dict": ({"x": X}, {}, r"must be \(x, y\) arrays.*Received: train="),
    "batch_size": ((X, Y), {"batch_size": 0}, r"Received: batch_size=0"),
    "batch-inf": (
        _inf_batch(),
        {},
        r"NaN or infinite.*first in image 3.*Received: train images "
        r"\(batch 1\) with 0 NaN and 1 infinite",
    ),
    "batch-no-labels": (
        [X[:4], X[4:]],
        {"needs_labels": True},
        r"needs labels.*Received: train batch 0 of images only",
    ),
    "batch-dict": ([{"x": X}], {}, r"must be \(images, labels\).*Received: train batch 0, a dict"),
    "batch-four-parts": ([(X, Y, Y, Y)], {}, r"Received: train batch 0, a tuple of 4 parts"),
    "batch-label-count": ([(X, Y[:3])], {}, r"10 images but 3 labels.*train labels \(batch 0\)"),
}


@backend_free
@pytest.mark.parametrize("case", list(BAD))
def test_bad_data_is_refused_clearly(case):
    data, kwargs, match = BAD[case]
    error = TypeError if case in ("str", "int", "dict") else ValueError
    with pytest.raises(error, match=match):
        adapter = adapt(data, "train", **kwargs)
        _ = adapter.steps
        _pass(adapter)


HEAD_CASES = {
    "class-id-out-of-range": (
        _Head(),
        np.array([0, 1, 5]),
        r"labels the head does not have.*"
        r"3 classes \(0\.\.2\); found \[5\]",
    ),
    "negative-id": (_Head(), np.array([0, -1, 2]), r"found \[-1\]"),
    "float-id": (_Head(), np.array([0, 1.5, 2]), r"found \[1\.5\]"),
    "nan-label": (_Head(), np.array([0, np.nan, 2]), r"NaN or infinite"),
    "string-label": (_Head(), np.array(["a", "b", "c"]), r"must be numbers for a multiclass"),
    "one-hot-into-sparse": (
        _Head(),
        np.eye(5)[[0, 1, 2]],
        r"one-hot rows of 5 classes.*class "
        r"ids of 3 classes.*sparse_labels=False",
    ),
    "one-hot-width": (
        _Head(sparse_labels=False),
        np.eye(5)[[0, 1, 2]],
        r"labels of 5 classes; the head has 3 \(multiclass takes one-hot rows",
    ),
    "ids-into-one-hot": (
        _Head(sparse_labels=False),
        np.array([0, 1, 2]),
        r"class ids.*one-hot "
        r"rows of 3 classes.*to_categorical",
    ),
    "binary-range": (_Head("binary", 1), np.array([0, 1, 2]), r"binary labels outside \[0, 1\]"),
    "multilabel-width": (
        _Head("multilabel", 4),
        np.ones((3, 2)),
        r"labels of 2 classes; the "
        r"head has 4",
    ),
    "regression-width": (
        _Head("regression", 1),
        np.ones((3, 2)),
        r"targets of 2 values; the "
        r"head has 1 output",
    ),
}


@backend_free
@pytest.mark.parametrize("case", list(HEAD_CASES))
def test_labels_a_head_cannot_train_on_are_refused(case):
    head, labels, match = HEAD_CASES[case]
    x = _images(3)
    with pytest.raises(ValueError, match=match + r".*Received: train labels"):
        adapt((x, labels), "train").check_labels(head)
    # Streamed: at the batch that has them, named.
    stream = adapt([(x[:1], labels[:1]), (x[1:], labels[1:])], "train")
    stream.check_labels(head)
    with pytest.raises(ValueError, match=match + r".*Received: train labels \(batch [01]\)"):
        _pass(stream)


@backend_free
def test_good_labels_pass_every_head():
    x = _images(4)
    for head, labels in (
        (_Head(), np.array([0, 1, 2, 2])),
        (_Head(), np.array([[0], [1], [2], [2]])),
        (_Head(sparse_labels=False), np.eye(3)[[0, 1, 2, 2]]),
        (_Head("binary", 1), np.array([0.0, 1.0, 1.0, 0.0])),
        (_Head("multilabel", 2), np.array([[0, 1], [1, 1], [0, 0], [1, 0]])),
        (_Head("regression", 1), np.array([0.5, -3.0, 7.0, 1e6])),
        (_Head("regression", 2), np.ones((4, 2))),
    ):
        adapt((x, labels), "train").check_labels(head)
    with pytest.raises(ValueError, match=r"needs labels.*Received: train=\(x, None\)"):
        adapt((x, None), "train").check_labels(_Head())


@backend_free
def test_infinite_and_one_shot_data_have_no_steps():
    def forever():
        while True:
            yield X[:2], Y[:2]

    endless = adapt(forever(), "train")
    batches = endless.numpy_batches()
    assert [len(next(batches)[0]) for _ in range(3)] == [2, 2, 2]  # draws as asked
    with pytest.raises(ValueError, match=r"one-shot iterator.*Received: train=generator"):
        _ = adapt(forever(), "train").steps


def test_shards_refuse_uneven_batches():
    """On TensorFlow only the first batch of each fit must split evenly."""
    adapter = adapt((X, Y), "train", batch_size=4)
    adapter.check_shards(1)
    adapter.check_shards(2)
    with pytest.raises(ValueError, match=r"batch of [24] image\(s\).*3 devices.*batch_size=4"):
        adapter.check_shards(3)


# --- what fit takes, on this backend -----------------------------------------------------


def _model(classes=3):
    keras.utils.set_random_seed(0)
    model = keras.Sequential(
        [
            keras.Input((8, 8, 3)),
            keras.layers.Rescaling(1 / 255),
            keras.layers.GlobalAveragePooling2D(),
            keras.layers.Dense(classes, activation="softmax"),
        ]
    )
    model.compile("sgd", "sparse_categorical_crossentropy")
    return model


def _fit(adapter, validation=None):
    model = _model()
    with data_errors(adapter, validation):
        history = model.fit(
            **adapter.fit_arguments(),
            validation_data=None if validation is None else validation.validation_data(),
            epochs=2,
            verbose=0,
        )
        model.evaluate(**adapter.evaluate_arguments(), verbose=0)
    return history


def _sources(x, y):
    """Every form, on this backend, keyed by name."""
    forms = {
        "arrays": lambda: (x, y),
        "image_batches": lambda: kerastl.data.from_arrays(x, y, batch_size=4, shuffle=False),
        "py_dataset": lambda: _Plain(x, y),
        "list": lambda: [(x[i : i + 4], y[i : i + 4]) for i in range(0, len(x), 4)],
    }
    if BACKEND == "tensorflow":
        import tensorflow as tf

        forms["tf"] = lambda: tf.data.Dataset.from_tensor_slices((x, y)).batch(4)
    if BACKEND == "torch":
        import torch

        def loader():
            dataset = torch.utils.data.TensorDataset(torch.from_numpy(x), torch.from_numpy(y))
            return kerastl.data.from_torch_dataset(dataset, batch_size=4, shuffle=False)

        forms["torch"] = loader
    return forms


@pytest.mark.parametrize("form", ["arrays", "image_batches", "py_dataset", "list", "tf", "torch"])
def test_every_form_fits_and_gives_the_same_batches(form):
    x, y = _images(10), np.arange(10) % 3
    sources = _sources(x, y)
    if form not in sources:
        pytest.skip(f"{form} is tested on its own backend")
    adapter = adapt(sources[form](), "train", batch_size=4)
    assert adapter.kind == {
        "image_batches": "batches",
        "py_dataset": "batches",
        "list": "iterable",
    }.get(form, form)
    assert adapter.steps == 3
    images, labels = _pass(adapter)
    np.testing.assert_array_equal(images, x)
    np.testing.assert_array_equal(labels, y)
    adapter.check_labels(_Head())
    history = _fit(adapter, adapt(sources[form](), "validation", batch_size=4))
    assert len(history.history["loss"]) == 2 and "val_loss" in history.history


@pytest.mark.parametrize("form", ["py_dataset", "list", "tf", "torch"])
def test_a_streamed_bad_batch_stops_fit_with_the_doors_error(form):
    x, y = _images(12), np.arange(12) % 3
    y[9] = 7  # batch 2 holds a class the head does not have
    sources = _sources(x, y)
    if form not in sources:
        pytest.skip(f"{form} is tested on its own backend")
    adapter = adapt(sources[form](), "train", batch_size=4)
    adapter.check_labels(_Head())
    with pytest.raises(ValueError, match=r"found \[7\]\. Received: train labels \(batch 2\)"):
        _fit(adapter)


@needs_tf
def test_tf_data_is_checked_from_its_spec():
    import tensorflow as tf

    x, y = _images(10), np.arange(10) % 3
    single = tf.data.Dataset.from_tensor_slices((x, y))
    with pytest.raises(ValueError, match=r"rank 4.*single images: batch them.*\(8, 8, 3\)"):
        adapt(single, "train")
    with pytest.raises(ValueError, match=r"needs labels.*element_spec="):
        adapt(tf.data.Dataset.from_tensor_slices(x).batch(4), "train", needs_labels=True)
    with pytest.raises(ValueError, match=r"holds no batches"):
        adapt(single.batch(4).take(0), "train")
    with pytest.raises(ValueError, match=r"infinite dataset.*repeat"):
        _ = adapt(single.batch(4).repeat(), "train").steps
    strings = tf.data.Dataset.from_tensor_slices((["a.png"] * 4, [0] * 4)).batch(2)
    with pytest.raises(ValueError, match=r"must be numbers.*dtype object"):
        adapt(strings, "train")
    filtered = single.batch(4).filter(lambda a, b: tf.reduce_all(b >= 0))
    assert adapt(filtered, "train").steps == 3  # unknown cardinality: one pass counted


@needs_torch
def test_torch_loaders_and_datasets():
    import torch

    x, y = _images(10), np.arange(10) % 3
    dataset = torch.utils.data.TensorDataset(torch.from_numpy(x), torch.from_numpy(y))
    with pytest.raises(TypeError, match=r"torch Dataset.*from_torch_dataset.*TensorDataset"):
        adapt(dataset, "train")
    loader = torch.utils.data.DataLoader(dataset, batch_size=4)
    adapter = adapt(loader, "train")
    assert (adapter.kind, adapter.steps, adapter.count, adapter.batch_size) == ("torch", 3, 10, 4)
    empty = torch.utils.data.DataLoader(torch.utils.data.TensorDataset(torch.zeros(0, 8, 8, 3)))
    with pytest.raises(ValueError, match=r"holds no batches.*Received: train=DataLoader of 0"):
        adapt(empty, "train")
    nan = torch.from_numpy(x.astype("float32"))
    nan[5, 0, 0, 0] = float("nan")
    bad = torch.utils.data.DataLoader(torch.utils.data.TensorDataset(nan, torch.from_numpy(y)), 4)
    with pytest.raises(ValueError, match=r"NaN.*first in image 1.*train images \(batch 1\)"):
        _pass(adapt(bad, "train"))


@backend_free
def test_messages_name_the_argument():
    for arg in ("train", "validation", "data"):
        with pytest.raises(ValueError, match=re.escape(f"`{arg}` images must have rank 4")):
            adapt((X[..., 0], Y), arg)


# --- the same errors through every consumer ----------------------------------------------


def _tiny_backbone():
    keras.utils.set_random_seed(0)
    layers = [keras.Input((8, 8, 3)), keras.layers.Conv2D(4, 3, name="conv")]
    return keras.Sequential(layers, name="tiny")


def _tiny_model():
    extractor = kerastl.FeatureExtractor(_tiny_backbone(), pooling="avg")
    prep = kerastl.preprocessing.pipeline(extractor, mode="tf")
    return kerastl.build_model(extractor, kerastl.heads.multiclass(3), prep)


CONSUMERS = {
    "cache_features": (
        "data",
        lambda data: kerastl.cache_features(_tiny_model(), data, batch_size=4, verbose=0),
    ),
    "lr_find": (
        "train",
        lambda data: kerastl.lr_find(_tiny_model(), data, num_steps=4, batch_size=4, verbose=0),
    ),
    "rank_backbones": (
        "data",
        lambda data: kerastl.rank_backbones(
            data, [_tiny_backbone()], mode="none", folds=2, batch_size=4, verbose=0
        ),
    ),
}


def _stream(x, y):
    """This backend's stream of 4-image batches: a DataLoader, a tf.data set, or a list."""
    if BACKEND == "torch":
        import torch

        dataset = torch.utils.data.TensorDataset(torch.from_numpy(x), torch.from_numpy(y))
        return torch.utils.data.DataLoader(dataset, batch_size=4)
    if BACKEND == "tensorflow":
        import tensorflow as tf

        return tf.data.Dataset.from_tensor_slices((x, y)).batch(4)
    return [(x[i : i + 4], y[i : i + 4]) for i in range(0, len(x), 4)]


def _with(x, value):
    x = x.astype("float32")
    x[5, 0, 0, 0] = value
    return x


ALL = tuple(CONSUMERS)
WITH_HEAD = ("cache_features", "lr_find")  # rank_backbones takes any class ids
CASES = {
    "one-hot-width": (
        lambda x, y: (x, np.eye(5)[y]),
        r"`{arg}` labels are one-hot rows of 5 classes, and the head takes class ids of 3",
        WITH_HEAD,
    ),
    "rank-3": (
        lambda x, y: (x[..., 0], y),
        r"`{arg}` images must have rank 4.*Received: {arg} images of shape \(12, 8, 8\)",
        ALL,
    ),
    "five-channels": (
        lambda x, y: (np.repeat(x[..., :1], 5, axis=-1), y),
        r"`{arg}` images must have 1 \(grayscale\) or 3 \(RGB\) channels.*\(12, 8, 8, 5\)",
        ALL,
    ),
    "strings": (
        lambda x, y: (x.astype(str), y),
        r"`{arg}` images must be numbers.*Received: {arg} images of dtype <U",
        ALL,
    ),
    "ragged": (
        lambda x, y: ([*x[:11], x[11, :4]], y),
        r"`{arg}` images are ragged.*Received: {arg} images as a list of 12 images",
        ALL,
    ),
    "labels-none": (
        lambda x, y: (x, None),
        r"`{arg}` needs labels.*Received: {arg}=\(x, None\)",
        ("lr_find", "rank_backbones"),
    ),
    "stream-out-of-range": (
        lambda x, y: _stream(x, np.where(np.arange(12) == 5, 7, y)),
        r"`{arg}` has labels the head does not have.*found \[7\]\. "
        r"Received: {arg} labels \(batch 1\)",
        WITH_HEAD,
    ),
    "nan": (
        lambda x, y: (_with(x, np.nan), y),
        r"`{arg}` images hold NaN or infinite values \(first in image 5\).*Received: "
        r"{arg} images with 1 NaN",
        ALL,
    ),
    "stream-inf": (
        lambda x, y: _stream(_with(x, np.inf), y),
        r"`{arg}` images hold NaN or infinite values \(first in image 1\).*Received: "
        r"{arg} images \(batch 1\) with 0 NaN and 1 infinite",
        ALL,
    ),
}


@pytest.mark.parametrize(
    "consumer, case",
    [(c, k) for k, (_, _, consumers) in CASES.items() for c in consumers],
)
def test_every_consumer_refuses_bad_data_with_the_same_message(consumer, case):
    make, match, _ = CASES[case]
    arg, call = CONSUMERS[consumer]
    x, y = _images(12), np.arange(12) % 3
    with pytest.raises(ValueError, match=match.format(arg=arg)):
        call(make(x, y))
