import json
import os
import re
import zipfile

import h5py
import keras
import numpy as np
import pytest
from support import mobilenet_classifier, tf_mode

import kerastl
from kerastl.heads import TaskHead
from kerastl.saving import export, load_model, load_weights_by_name, read_metadata, save_model

CLASSES = ["astronaut", "coffee", "cat"]


def classifier(weights):
    model = mobilenet_classifier(weights)
    model.compile(optimizer="adam", loss="sparse_categorical_crossentropy", metrics=["accuracy"])
    return model


def tiny(units=3, activation="softmax", loss=None):
    keras.utils.set_random_seed(0)
    model = keras.Sequential(
        [
            keras.Input((16, 16, 3)),
            keras.layers.Conv2D(4, 3, name="conv"),
            keras.layers.GlobalAveragePooling2D(),
            keras.layers.Dense(units, activation=activation, name="out"),
        ]
    )
    if loss is not None:
        model.compile(optimizer="adam", loss=loss)
    return model


@pytest.fixture
def trained(mobilenet_weights, photos):
    model = classifier(mobilenet_weights)
    history = model.fit(tf_mode(photos[:8]), np.arange(8) % 3, epochs=2, batch_size=4, verbose=0)
    return model, history


@pytest.mark.keras_floor
def test_round_trip_predictions_class_names_history_and_optimizer_state(trained, photos, tmp_path):
    model, history = trained
    path = str(tmp_path / "model.keras")
    written = save_model(model, path, class_names=CLASSES, history=history)
    loaded = load_model(path)
    images = tf_mode(photos[8:14])
    np.testing.assert_allclose(
        loaded.predict(images, verbose=0), model.predict(images, verbose=0), atol=1e-6
    )
    meta = loaded.kerastl_metadata
    assert meta == written == read_metadata(path) == read_metadata(loaded)
    assert meta["class_names"] == CLASSES
    assert meta["history"]["loss"] == pytest.approx(history.history["loss"])
    assert meta["history"]["accuracy"] == pytest.approx(history.history["accuracy"])
    assert meta["task"] == "multiclass" and meta["num_outputs"] == 3
    assert meta["outputs"] == "probabilities"
    assert meta["backbone"]["name"] == "mobilenet_v2"
    assert meta["backbone"]["preprocessing"] == "tf"
    assert meta["backbone"]["bn"] == "frozen"
    assert meta["backbone"]["freeze"]["class_name"] == "FreezeAll"
    assert meta["input_preprocessing"] == "tf"  # nothing in the model rescales
    assert meta["input_shape"] == [None, 96, 96, 3]
    assert meta["backend"] == keras.config.backend()
    assert meta["keras_version"] == keras.version()
    assert meta["kerastl_version"] == kerastl.__version__
    # The optimizer state came back: training continues from step 4, not 0.
    assert int(loaded.optimizer.iterations) == int(model.optimizer.iterations) == 4
    loaded.fit(images, np.arange(6) % 3, verbose=0)
    assert int(loaded.optimizer.iterations) == 5


def test_saved_compile_state_is_backend_neutral(trained, tmp_path):
    model, _ = trained
    path = str(tmp_path / "model.keras")
    save_model(model, path)
    with zipfile.ZipFile(path) as zf:
        compile_config = json.loads(zf.read("config.json"))["compile_config"]
        assert set(zf.namelist()) == {
            "config.json",
            "metadata.json",
            "model.weights.h5",
            "kerastl.json",
        }
    assert compile_config["optimizer"]["module"] == "keras.optimizers"
    assert compile_config["optimizer"]["class_name"] == "Adam"
    assert compile_config["jit_compile"] == "auto"
    # Plain Keras records the backend's own view, which is what kerastl undoes.
    model.save(tmp_path / "plain.keras")
    with zipfile.ZipFile(tmp_path / "plain.keras") as zf:
        plain = json.loads(zf.read("config.json"))["compile_config"]
    assert plain["jit_compile"] == model.jit_compile != "auto"


@pytest.mark.keras_floor
def test_plain_keras_file_with_backend_private_compile_state_loads(tmp_path):
    """A file as torch and JAX write it: private optimizer module, jit_compile=True."""
    model = tiny(loss="sparse_categorical_crossentropy")
    x = np.random.default_rng(0).uniform(size=(4, 16, 16, 3)).astype("float32")
    model.fit(x, np.arange(4) % 3, verbose=0)
    path = str(tmp_path / "plain.keras")
    model.save(path)
    _edit_config(
        path,
        lambda c: c["compile_config"].update(
            jit_compile=True,
            optimizer={
                **c["compile_config"]["optimizer"],
                "module": "keras.src.backend.torch.optimizers.torch_adam",
                "registered_name": "Adam",
            },
        ),
    )
    loaded = load_model(path)
    # "auto", resolved by this backend as a fresh compile does: never torch.compile.
    assert loaded.jit_compile == tiny(loss="mse").jit_compile
    assert keras.config.backend() != "torch" or loaded.jit_compile is False
    assert isinstance(loaded.optimizer, keras.optimizers.Adam)
    assert int(loaded.optimizer.iterations) == 1
    np.testing.assert_allclose(loaded.predict(x, verbose=0), model.predict(x, verbose=0), atol=1e-6)
    meta = loaded.kerastl_metadata  # no kerastl.json: read off the model
    assert meta["kerastl_version"] is None and meta["class_names"] is None
    assert meta["task"] == "multiclass" and meta["keras_version"] == keras.version()


def _edit_config(path, edit):
    with zipfile.ZipFile(path) as zf:
        members = {name: zf.read(name) for name in zf.namelist()}
    config = json.loads(members["config.json"])
    edit(config)
    members["config.json"] = json.dumps(config).encode()
    with zipfile.ZipFile(path, "w") as zf:
        for name, data in members.items():
            zf.writestr(name, data)


@pytest.mark.parametrize(
    "units, activation, loss, names, expected",
    [
        (1, "sigmoid", None, ["cat", "dog"], ("binary", "probabilities")),
        (
            1,
            None,
            keras.losses.BinaryCrossentropy(from_logits=True),
            ["cat", "dog"],
            ("binary", "logits"),
        ),
        (3, "softmax", None, CLASSES, ("multiclass", "probabilities")),
        (3, None, "sparse_categorical_crossentropy", None, ("multiclass", "logits")),
        (4, "sigmoid", None, ["a", "b", "c", "d"], ("multilabel", "probabilities")),
        (2, None, None, None, ("regression", None)),
    ],
)
def test_task_is_read_off_the_head(units, activation, loss, names, expected, tmp_path):
    model = tiny(units, activation, loss)
    meta = save_model(model, tmp_path / "m.keras", class_names=names)
    assert (meta["task"], meta["outputs"]) == expected
    assert meta["num_outputs"] == units
    assert read_metadata(tmp_path / "m.keras")["class_names"] == names


def test_metadata_argument_overrides_and_extends(tmp_path):
    model = tiny(2, None)
    meta = save_model(
        model,
        tmp_path / "m.keras",
        class_names=["x", "y"],
        metadata={"task": "multilabel", "dataset": "mine"},
    )
    assert meta["task"] == "multilabel" and meta["outputs"] == "logits"
    assert read_metadata(tmp_path / "m.keras")["dataset"] == "mine"
    with pytest.raises(ValueError, match=r"metadata\['task'\].*Received: metadata="):
        save_model(model, tmp_path / "n.keras", metadata={"task": "segmentation"})
    with pytest.raises(TypeError, match="JSON-serialisable.*Received: metadata="):
        save_model(model, tmp_path / "n.keras", metadata={"f": object()})
    assert not (tmp_path / "n.keras").exists()


def test_history_from_several_fit_stages_keeps_every_stage(tmp_path):
    model = tiny(loss="sparse_categorical_crossentropy")
    x = np.zeros((4, 16, 16, 3), "float32")
    first = model.fit(x, np.arange(4) % 3, epochs=2, verbose=0)
    second = model.fit(x, np.arange(4) % 3, epochs=1, verbose=0)
    save_model(model, tmp_path / "m.keras", history=[first, second.history])
    meta = read_metadata(tmp_path / "m.keras")
    history = meta["history"]
    assert history["loss"] == pytest.approx(first.history["loss"] + second.history["loss"])
    assert [(p["name"], p["first_epoch"], p["epochs"]) for p in meta["history_phases"]] == [
        (None, 0, 2),
        (None, 2, 1),
    ]
    assert meta["history_phases"][1]["history"]["loss"] == pytest.approx(second.history["loss"])
    loaded = load_model(tmp_path / "m.keras")
    save_model(loaded, tmp_path / "again.keras")  # attached history and names carry over
    again = read_metadata(tmp_path / "again.keras")
    assert again["history"] == history and again["history_phases"] == meta["history_phases"]


def test_history_of_phases_with_other_metrics_stays_aligned_by_epoch(tmp_path):
    """A stage without validation: its epochs hold None, later epochs stay in place."""
    head = {"loss": [0.9, 0.7]}
    tuned = {"loss": [0.5, 0.4, 0.3], "val_loss": [0.6, 0.5, float("nan")]}
    save_model(tiny(), tmp_path / "m.keras", history=[head, tuned])
    meta = read_metadata(tmp_path / "m.keras")
    assert meta["history"] == {
        "loss": [0.9, 0.7, 0.5, 0.4, 0.3],
        "val_loss": [None, None, 0.6, 0.5, None],  # NaN (a diverged epoch) is stored as null
    }
    assert [p["history"] for p in meta["history_phases"]] == [
        head,
        {"loss": [0.5, 0.4, 0.3], "val_loss": [0.6, 0.5, None]},
    ]
    # The merged history goes back in as it came out (a plot or a later save).
    again = save_model(tiny(), tmp_path / "again.keras", history=meta["history"])
    assert again["history"] == meta["history"]


def test_history_of_fine_tune_keeps_its_named_phases(tmp_path):
    """What `kerastl.fine_tune` returns (taken by its attributes), alone or with more stages."""
    tuned = kerastl.FineTuneHistory(
        history={"loss": [0.9, 0.6, 0.5, 0.4], "val_accuracy": [0.5, 0.6, 0.7, 0.8]},
        epoch=[0, 1, 2, 3],
        phases=["head", "fine-tune"],
        phase_boundaries=[1],
    )
    more = {"loss": [0.35], "val_accuracy": [0.85]}
    save_model(tiny(), tmp_path / "m.keras", history=[tuned, more])
    meta = read_metadata(tmp_path / "m.keras")
    assert meta["history"] == {
        "loss": [0.9, 0.6, 0.5, 0.4, 0.35],
        "val_accuracy": [0.5, 0.6, 0.7, 0.8, 0.85],
    }
    assert meta["history_phases"] == [
        {
            "name": "head",
            "first_epoch": 0,
            "epochs": 1,
            "history": {"loss": [0.9], "val_accuracy": [0.5]},
        },
        {
            "name": "fine-tune",
            "first_epoch": 1,
            "epochs": 3,
            "history": {"loss": [0.6, 0.5, 0.4], "val_accuracy": [0.6, 0.7, 0.8]},
        },
        {"name": None, "first_epoch": 4, "epochs": 1, "history": more},
    ]
    alone = save_model(tiny(), tmp_path / "alone.keras", history=tuned)
    assert [p["name"] for p in alone["history_phases"]] == ["head", "fine-tune"]
    assert alone["history"] == tuned.history
    tuned.phase_boundaries = [5]
    with pytest.raises(ValueError, match=r"Received: history.phases=.*phase_boundaries=\[5\]"):
        save_model(tiny(), tmp_path / "bad.keras", history=tuned)
    assert not (tmp_path / "bad.keras").exists()


@pytest.mark.parametrize(
    "names, error, match",
    [
        (["cat", "dog"], ValueError, "has 2 names but the model's head has 3 classes"),
        (["a", "b", "c", "d"], ValueError, "has 4 names but the model's head has 3 classes"),
        (["a", "a", "b"], ValueError, "has duplicates"),
        ("abc", TypeError, "list of strings"),
    ],
)
def test_bad_class_names_are_refused_and_nothing_is_overwritten(names, error, match, tmp_path):
    model = tiny()
    path = tmp_path / "m.keras"
    save_model(model, path, class_names=CLASSES)
    before = path.read_bytes()
    with pytest.raises(error, match=rf"{match}.*Received: class_names=") as raised:
        save_model(model, path, class_names=names)
    assert type(raised.value) is error
    assert path.read_bytes() == before
    assert os.listdir(tmp_path) == ["m.keras"]


def test_binary_head_takes_two_names(tmp_path):
    model = tiny(1, "sigmoid")
    with pytest.raises(ValueError, match=r"1 names but the model's head has 2 classes \(bin"):
        save_model(model, tmp_path / "m.keras", class_names=["dog"])
    with pytest.raises(ValueError, match="task='regression'.*Received: class_names="):
        save_model(
            tiny(2, None),
            tmp_path / "m.keras",
            class_names=["a", "b"],
            metadata={"task": "regression"},
        )


def test_save_path_errors(tmp_path):
    model = tiny()
    with pytest.raises(ValueError, match=r"end in `\.keras`.*Received: path=.*m\.h5"):
        save_model(model, tmp_path / "m.h5")
    with pytest.raises(FileNotFoundError, match="does not exist.*Received: path="):
        save_model(model, tmp_path / "nowhere" / "m.keras")
    with pytest.raises(TypeError, match="Received: model="):
        save_model("model", tmp_path / "m.keras")


@pytest.fixture
def saved(tmp_path):
    path = tmp_path / "good.keras"
    save_model(tiny(), path, class_names=CLASSES)
    return path


def test_missing_file(tmp_path):
    for call in (load_model, read_metadata):
        with pytest.raises(FileNotFoundError, match=r"Received: path=.*absent\.keras"):
            call(tmp_path / "absent.keras")


def test_truncated_file(saved, tmp_path):
    data = saved.read_bytes()
    bad = tmp_path / "truncated.keras"
    bad.write_bytes(data[: len(data) // 2])
    with pytest.raises(ValueError, match=r"truncated or corrupted.*Received: path=.*trunc"):
        load_model(bad)


def test_corrupted_file(saved, tmp_path):
    data = bytearray(saved.read_bytes())
    with zipfile.ZipFile(saved) as zf:
        info = zf.getinfo("model.weights.h5")
    middle = info.header_offset + 100 + info.compress_size // 2
    data[middle : middle + 64] = bytes(64)
    bad = tmp_path / "corrupted.keras"
    bad.write_bytes(bytes(data))
    with pytest.raises(ValueError, match=r"corrupted \(member 'model.weights.h5' fails its CRC"):
        load_model(bad)


def test_not_a_keras_file(tmp_path):
    text = tmp_path / "notes.keras"
    text.write_text("not a model")
    with pytest.raises(ValueError, match=r"not a Keras model file.*Received: path=.*notes"):
        load_model(text)
    other_zip = tmp_path / "other.keras"
    with zipfile.ZipFile(other_zip, "w") as zf:
        zf.writestr("readme.txt", "hello")
    with pytest.raises(ValueError, match=r"no config.json.*Received: path=.*other"):
        read_metadata(other_zip)
    fake_h5 = tmp_path / "fake.h5"
    fake_h5.write_text("no hdf5 here")
    with pytest.raises(ValueError, match=r"not an HDF5 file.*Received: path=.*fake"):
        load_model(fake_h5)


@pytest.mark.parametrize("suffix", [".keras", ".h5"])
def test_lambda_layer_is_refused_in_safe_mode(suffix, tmp_path):
    model = keras.Sequential(
        [
            keras.Input((4,)),
            keras.layers.Lambda(lambda x: x * 2),
            keras.layers.Dense(2, activation="softmax"),
        ]
    )
    path = tmp_path / f"lambda{suffix}"
    if suffix == ".keras":
        save_model(model, path)
    else:
        model.save(path)
    with pytest.raises(ValueError, match=r"holds Python code.*safe_mode.*Received: path="):
        load_model(path)
    x = np.ones((1, 4), "float32")
    trusted = load_model(path, safe_mode=False)
    np.testing.assert_allclose(
        trusted.predict(x, verbose=0), model.predict(x, verbose=0), atol=1e-6
    )


@pytest.mark.keras_floor
def test_legacy_h5_full_model_loads_with_default_metadata(mobilenet_weights, photos, tmp_path):
    """Seed 000's `model.save('model_final.h5')`, written by the installed Keras."""
    model = classifier(mobilenet_weights)
    path = tmp_path / "model_final.h5"
    model.save(path)
    loaded = load_model(path)
    images = tf_mode(photos[:4])
    np.testing.assert_allclose(
        loaded.predict(images, verbose=0), model.predict(images, verbose=0), atol=1e-6
    )
    meta = loaded.kerastl_metadata
    assert meta["format"] == "legacy_h5" and meta["class_names"] is None
    assert meta["task"] == "multiclass" and meta["backbone"]["name"] == "mobilenet_v2"
    assert read_metadata(path)["keras_version"] == keras.version()
    weights_only = tmp_path / "weights_only.h5"
    with h5py.File(weights_only, "w") as f:
        f.attrs["layer_names"] = []
    with pytest.raises(ValueError, match="weights only.*load_weights_by_name.*Received: path="):
        load_model(weights_only)


def test_failed_save_leaves_the_earlier_file_and_no_debris(saved, tmp_path, monkeypatch):
    before = saved.read_bytes()
    model = tiny(3, "softmax")

    def crash(*args, **kwargs):
        raise OSError("disk full")

    monkeypatch.setattr("kerastl.files.archive.rewrite", crash)
    with pytest.raises(OSError, match="disk full"):
        save_model(model, saved, class_names=CLASSES)
    assert saved.read_bytes() == before
    assert os.listdir(tmp_path) == ["good.keras"]


def test_kerastl_head_config_gives_task_logits_and_class_names(tmp_path):
    head = TaskHead("multiclass", 3, logits=True, class_names=["x", "y", "z"])
    model = keras.Sequential([keras.Input((8, 8, 3)), head])
    meta = save_model(model, tmp_path / "m.keras")
    assert (meta["task"], meta["num_outputs"], meta["outputs"]) == ("multiclass", 3, "logits")
    assert meta["class_names"] == ["x", "y", "z"]  # from the head when not given
    binary = keras.Sequential([keras.Input((8, 8, 3)), TaskHead("binary", 1)])
    meta = save_model(binary, tmp_path / "b.keras", class_names=["cat", "dog"])
    assert (meta["task"], meta["outputs"]) == ("binary", "probabilities")
    loaded = load_model(tmp_path / "b.keras")
    assert isinstance(loaded.layers[-1], TaskHead)
    assert loaded.kerastl_metadata["class_names"] == ["cat", "dog"]


# --- bad input to the saving API -----------------------------------------------------


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    """Good and broken model files (and a folder named like one), made once."""
    root = tmp_path_factory.mktemp("files")
    save_model(tiny(), root / "good.keras", class_names=CLASSES)
    tiny().save(root / "good.h5")
    (root / "folder.keras").mkdir()
    (root / "empty.keras").write_bytes(b"")
    (root / "empty.h5").write_bytes(b"")
    (root / "text.keras").write_text("class_names: cat, dog\n")
    for name in ("good.keras", "good.h5"):
        data = (root / name).read_bytes()
        (root / f"truncated{os.path.splitext(name)[1]}").write_bytes(data[: len(data) // 2])
    return root


class File(str):
    """A name in the `files` folder; any other argument value is passed as it is."""


NAN = float("nan")
GOOD = File("good.keras")
# Arguments of each call that a case does not replace: valid ones.
VALID = {
    save_model: lambda: {"model": tiny(), "path": File("m.keras")},
    load_model: lambda: {"path": GOOD},
    read_metadata: lambda: {"path": GOOD},
    load_weights_by_name: lambda: {"target": tiny(), "source": GOOD},
    export: lambda: {"model": tiny(), "path": File("out")},
}
# (call, the bad arguments, the error, the argument its message names)
BAD_INPUT = [
    (save_model, {"model": "model"}, TypeError, "model"),
    (save_model, {"path": 123}, TypeError, "path"),
    (save_model, {"path": None}, TypeError, "path"),
    (save_model, {"path": ["m.keras"]}, TypeError, "path"),
    (save_model, {"path": b"m.keras"}, TypeError, "path"),
    (save_model, {"path": ""}, ValueError, "path"),
    (save_model, {"path": File("m.h5")}, ValueError, "path"),
    (save_model, {"path": File("folder.keras")}, IsADirectoryError, "path"),
    (save_model, {"path": File("no/m.keras")}, FileNotFoundError, "path"),
    (save_model, {"class_names": "abc"}, TypeError, "class_names"),
    (save_model, {"class_names": 3}, TypeError, "class_names"),
    (save_model, {"class_names": {"a", "b", "c"}}, TypeError, "class_names"),
    (save_model, {"class_names": [0, 1, 2]}, TypeError, "class_names"),
    (save_model, {"class_names": ["a", NAN, "c"]}, TypeError, "class_names"),
    (save_model, {"class_names": ["a", None, "c"]}, TypeError, "class_names"),
    (save_model, {"class_names": ["a", b"b", "c"]}, TypeError, "class_names"),
    (save_model, {"class_names": ["a", "a", "b"]}, ValueError, "class_names"),
    (save_model, {"class_names": ["a", "b"]}, ValueError, "class_names"),
    (save_model, {"history": "loss"}, TypeError, "history"),
    (save_model, {"history": 0.5}, TypeError, "history"),
    (save_model, {"history": {"loss": 0.5}}, TypeError, "history"),
    (save_model, {"history": {"loss": ["0.5"]}}, TypeError, "history"),
    (save_model, {"history": [{"loss": [1.0]}, "x"]}, TypeError, "history"),
    (save_model, {"metadata": ["task"]}, TypeError, "metadata"),
    (save_model, {"metadata": {"f": object()}}, TypeError, "metadata"),
    (save_model, {"metadata": {"task": "detection"}}, ValueError, "metadata"),
    (load_model, {"path": 123}, TypeError, "path"),
    (load_model, {"path": None}, TypeError, "path"),
    (load_model, {"path": [GOOD]}, TypeError, "path"),
    (load_model, {"path": File("folder.keras")}, IsADirectoryError, "path"),
    (load_model, {"path": File("absent.keras")}, FileNotFoundError, "path"),
    (load_model, {"path": File("empty.keras")}, ValueError, "path"),
    (load_model, {"path": File("empty.h5")}, ValueError, "path"),
    (load_model, {"path": File("truncated.keras")}, ValueError, "path"),
    (load_model, {"path": File("truncated.h5")}, ValueError, "path"),
    (load_model, {"path": File("text.keras")}, ValueError, "path"),
    (load_model, {"compile": "no"}, TypeError, "compile"),
    (load_model, {"compile": None}, TypeError, "compile"),
    (load_model, {"safe_mode": "no"}, TypeError, "safe_mode"),
    (load_model, {"safe_mode": 0}, TypeError, "safe_mode"),
    (load_model, {"custom_objects": [TaskHead]}, TypeError, "custom_objects"),
    (read_metadata, {"path": 123}, TypeError, "path"),
    (read_metadata, {"path": None}, TypeError, "path"),
    (read_metadata, {"path": File("folder.keras")}, IsADirectoryError, "path"),
    (read_metadata, {"path": File("absent.keras")}, FileNotFoundError, "path"),
    (read_metadata, {"path": File("empty.keras")}, ValueError, "path"),
    (read_metadata, {"path": File("truncated.keras")}, ValueError, "path"),
    (read_metadata, {"path": File("truncated.h5")}, ValueError, "path"),
    (read_metadata, {"path": File("text.keras")}, ValueError, "path"),
    (load_weights_by_name, {"target": "model"}, TypeError, "target"),
    (load_weights_by_name, {"source": 123}, TypeError, "source"),
    (load_weights_by_name, {"source": None}, TypeError, "source"),
    (load_weights_by_name, {"source": File("folder.keras")}, IsADirectoryError, "source"),
    (load_weights_by_name, {"source": File("absent.h5")}, FileNotFoundError, "source"),
    (load_weights_by_name, {"source": File("empty.keras")}, ValueError, "source"),
    (load_weights_by_name, {"source": File("truncated.keras")}, ValueError, "source"),
    (load_weights_by_name, {"source": File("truncated.h5")}, ValueError, "source"),
    (load_weights_by_name, {"source": File("text.keras")}, ValueError, "source"),
    (load_weights_by_name, {"skip_mismatch": "no"}, TypeError, "skip_mismatch"),
    (load_weights_by_name, {"skip_mismatch": None}, TypeError, "skip_mismatch"),
    (load_weights_by_name, {"safe_mode": "no"}, TypeError, "safe_mode"),
    (export, {"model": "model"}, TypeError, "model"),
    (export, {"path": 123}, TypeError, "path"),
    (export, {"path": None}, TypeError, "path"),
    (export, {"path": ""}, ValueError, "path"),
    (export, {"path": File("no/out")}, FileNotFoundError, "path"),
    (export, {"format": "pdf"}, ValueError, "format"),
    (export, {"format": None}, ValueError, "format"),
]


def _shown(value):
    # Test ids must be the same in every process (pytest-xdist): a set's order and
    # an object's address are not, so they are replaced by stable text.
    text = repr(sorted(value) if isinstance(value, set) else value)
    return re.sub(r" at 0x[0-9a-f]+", "", text)


@pytest.mark.parametrize(
    "call, bad, error, arg",
    BAD_INPUT,
    ids=[f"{c.__name__}-{a}={_shown(v[a])}" for c, v, _, a in BAD_INPUT],
)
def test_bad_input_is_refused_with_a_clear_error(call, bad, error, arg, files):
    kwargs = {**VALID[call](), **bad}
    kwargs = {k: files / v if isinstance(v, File) else v for k, v in kwargs.items()}
    before = sorted(os.listdir(files))
    with pytest.raises(error) as raised:
        call(**kwargs)
    assert type(raised.value) is error
    message = str(raised.value)
    # The message names the argument and ends with what it received.
    assert f"Received: {arg}=" in message
    assert message.rsplit("Received: ", 1)[1].startswith(f"{arg}=")
    assert sorted(os.listdir(files)) == before  # nothing written, nothing removed
