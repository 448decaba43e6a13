"""Crash-safe training checkpoints: weights, optimizer state and run state, one directory each.

A checkpoint is a directory `ckpt-00003` holding the model's weights
(`model.npz`, BatchNorm statistics included, in `model.weights` order: Keras'
own weights file would carry the optimizer of the phase too), the optimizer's variables
(`optimizer.npz`, its step count included, so a schedule goes on where it
stopped), `variables.json` (the names and shapes of both, in order) and
`state.json` (phase, epochs done, history, and the `run_record` of what the run
depends on: `resume` refuses a checkpoint of another run). It is written under a
temporary name, flushed, then renamed; `latest.json` then points at it,
replaced atomically. A process killed at any moment leaves the previous
checkpoint and pointer intact; leftovers of a killed write are removed by the
next one.

Several processes (`kerastl._processes`): process 0 writes, the others wait at a
barrier until the checkpoint is complete; every process resumes from the same
one. The run record keeps every process's data fingerprint, in process order.
"""

import json
import os
import re
import shutil
import zipfile
import zlib

import keras
import numpy as np

from kerastl import _processes as processes
from kerastl.files.atomic import replace_atomically, write_atomically
from kerastl.files.directories import prepare_directory

LATEST = "latest.json"
WEIGHTS = "model.npz"
OPTIMIZER = "optimizer.npz"
STATE = "state.json"
VARIABLES = "variables.json"
_PREFIX = "ckpt-"
_PARTIAL = ".partial-"


class Checkpoints:
    """The checkpoints of one run in `directory` (created if missing)."""

    def __init__(self, directory, arg="checkpoint_dir"):
        directory = prepare_directory(directory, arg)
        self.directory = directory
        self.arg = arg

    def latest(self):
        """The newest complete checkpoint's `(state, path)`, or `None`."""
        pointer = os.path.join(self.directory, LATEST)
        if not os.path.exists(pointer):
            return None
        try:
            with open(pointer) as f:
                name = json.load(f)["checkpoint"]
            path = os.path.join(self.directory, os.path.basename(name))
            with open(os.path.join(path, STATE)) as f:
                state = json.load(f)
        except (OSError, ValueError, KeyError, TypeError) as e:
            raise ValueError(
                f"The checkpoint in `{self.arg}` cannot be read ({type(e).__name__}: {e}); "
                f"remove the directory to start over. Received: {self.arg}={self.directory!r}"
            ) from None
        return state, path

    def resume(self, record):
        """The newest checkpoint's `(state, path)` when it is of the run `record` describes.

        `record`: this call's `run_record`. `None` when the directory holds no
        checkpoint; a `ValueError` naming what differs when it holds another run's,
        or a checkpoint whose files cannot be read.
        """
        found = self.latest()
        if found is None:
            return None
        state, path = found
        saved = state.get("run")
        if not isinstance(saved, dict):
            raise ValueError(
                f"`{self.arg}` holds a checkpoint that does not record what its run depended "
                "on (settings, data, variables; written by an earlier kerastl), so resuming it "
                "could return another run's model; use another directory, or remove it to "
                f"start over. Received: {self.arg}={self.directory!r}"
            )
        differences = run_differences(saved, record)
        if differences:
            raise ValueError(
                f"`{self.arg}` holds a run with other settings or data "
                f"({'; '.join(differences)}); use another directory, or the same model, data "
                f"and settings to resume it. Received: {self.arg}={self.directory!r}"
            )
        for member in (WEIGHTS, OPTIMIZER):
            # Opening reads the archive's directory, at its end: a cut file fails now.
            self._open(os.path.join(path, member)).close()
        return state, path

    def write(self, model, state, optimizer_of=None):
        """Writes a checkpoint of `model` (weights and optimizer) with `state`; returns its path.

        `optimizer_of`: the model whose optimizer is saved (default `model`): the head
        model of a phase on cached features.
        """
        name = f"{_PREFIX}{int(state['epochs_done']):05d}"
        final = os.path.join(self.directory, name)
        if processes.is_writer():
            self._write(model, state, name, final, optimizer_of)
        processes.barrier(f"checkpoint {name}")
        return final

    def _write(self, model, state, name, final, optimizer_of):
        owner = model if optimizer_of is None else optimizer_of
        self._remove_partials()
        partial = os.path.join(self.directory, f"{_PARTIAL}{name}-{os.getpid()}")
        os.makedirs(partial)
        variables = owner.optimizer.variables if owner.optimizer is not None else []
        for member, values in ((WEIGHTS, model.weights), (OPTIMIZER, variables)):
            with open(os.path.join(partial, member), "wb") as f:
                np.savez(f, *[np.asarray(_numpy(v)) for v in values])
                _flush(f)
        with open(os.path.join(partial, VARIABLES), "w") as f:
            names = {WEIGHTS: describe_variables(model.weights)}
            names[OPTIMIZER] = describe_variables(variables)
            json.dump(names, f)
            _flush(f)
        with open(os.path.join(partial, STATE), "w") as f:
            json.dump(state, f)
            _flush(f)
        if os.path.exists(final):  # the same epoch written again after a resume
            shutil.rmtree(final)
        replace_atomically(partial, final)
        pointer = os.path.join(self.directory, LATEST)
        write_atomically(pointer, lambda f: json.dump({"checkpoint": name}, f), text=True)
        for other in os.listdir(self.directory):
            if other.startswith(_PREFIX) and other != name:
                shutil.rmtree(os.path.join(self.directory, other), ignore_errors=True)

    def restore(self, model, path, optimizer=True, optimizer_of=None):
        """Loads the weights at `path` into `model`; with `optimizer`, its built optimizer too.

        `optimizer_of`: the model whose optimizer gets the state (default `model`).
        """
        self._assign(model.weights, path, WEIGHTS, "model")
        if optimizer:
            owner = model if optimizer_of is None else optimizer_of
            self._assign(owner.optimizer.variables, path, OPTIMIZER, "optimizer")

    def _assign(self, variables, path, member, what):
        file = os.path.join(path, member)
        stored = self._open(file)
        try:
            with stored:
                values = [stored[f"arr_{i}"] for i in range(len(stored.files))]
        except (OSError, EOFError, ValueError, KeyError, zipfile.BadZipFile, zlib.error) as e:
            raise self._unreadable(file, e) from None
        saved = self._names(path, member)
        if saved is None:  # a checkpoint without names: by position and shape
            saved = [[f"arr_{i}", list(v.shape)] for i, v in enumerate(values)]
            here = [[f"arr_{i}", list(v.shape)] for i, v in enumerate(variables)]
        else:
            here = describe_variables(variables)
        difference = variables_differ(saved, here)
        if difference is None and [list(v.shape) for v in values] != [s for _, s in saved]:
            raise self._unreadable(file, ValueError("its arrays do not match variables.json"))
        if difference is not None:
            raise ValueError(
                f"The {what} state in `{self.arg}` does not fit this {what} ({difference}): "
                f"the checkpoint is from another run. Received: {self.arg}={self.directory!r}"
            )
        for variable, value in zip(variables, values, strict=True):
            variable.assign(value)

    def _open(self, file):
        """`np.load` of a checkpoint's `.npz` file; a cut or corrupt one raises a `ValueError`."""
        try:
            return np.load(file, allow_pickle=False)
        except (OSError, EOFError, ValueError, zipfile.BadZipFile) as e:
            raise self._unreadable(file, e) from None

    def _names(self, path, member):
        try:
            with open(os.path.join(path, VARIABLES)) as f:
                return json.load(f)[member]
        except FileNotFoundError:
            return None
        except (OSError, ValueError, KeyError, TypeError) as e:
            raise self._unreadable(os.path.join(path, VARIABLES), e) from None

    def _unreadable(self, file, error):
        return ValueError(
            f"The checkpoint file {file!r} in `{self.arg}` cannot be read "
            f"({type(error).__name__}: {error}): it is cut short or corrupt; remove the "
            f"directory to start over. Received: {self.arg}={self.directory!r}"
        )

    def _remove_partials(self):
        for other in os.listdir(self.directory):
            if other.startswith(_PARTIAL):
                shutil.rmtree(os.path.join(self.directory, other), ignore_errors=True)


def run_record(settings, model_variables, train, validation):
    """What a run depends on, as its checkpoints record it (JSON).

    Args:
        settings: the call's settings (`fine_tune_args.Settings.record()`), the
            optimizer's class and config included.
        model_variables: the model's variables as the run starts.
        train: the training data's `DataAdapter`.
        validation: the validation data's `DataAdapter`, or `None`.

    The data are recorded by `DataAdapter.fingerprint()`; where it is unknowable
    (a `tf.data` set, a torch `DataLoader`, a generator) the record says so, and other data of the
    same kind cannot be told apart.
    """
    train_print = _fingerprint(train)
    validation_print = None if validation is None else _fingerprint(validation)
    if processes.count() > 1:  # each process its own shard: all of them, in order
        train_print = processes.gather_text(json.dumps(train_print))
        validation_print = processes.gather_text(json.dumps(validation_print))
        train_print = [json.loads(text) for text in train_print]
        validation_print = [json.loads(text) for text in validation_print]
    return {
        "settings": settings,
        "train": train_print,
        "validation": validation_print,
        "variables": describe_variables(model_variables),
    }


def run_differences(saved, record):
    """What differs between two `run_record`s, in words (an empty list: the same run)."""
    found = []
    there, here = saved.get("settings") or {}, record["settings"]
    for key in here:
        if key != "optimizer" and there.get(key) != here[key]:
            found.append(f"{key}: {there.get(key)!r} there, {here[key]!r} here")
    found += _optimizer_differences(there.get("optimizer"), here["optimizer"])
    for arg in ("train", "validation"):
        if saved.get(arg) != record[arg]:
            there_data, here_data = _short(saved.get(arg)), _short(record[arg])
            found.append(f"`{arg}`: other data ({there_data} there, {here_data} here)")
    variables = variables_differ(saved.get("variables") or [], record["variables"])
    if variables is not None:
        found.append(f"the model's variables differ: {variables}")
    return found


def describe_variables(variables):
    """`[[path, shape], ...]` of `variables`, in order."""
    return [[v.path, [int(d) for d in v.shape]] for v in variables]


def variables_differ(saved, here):
    """What differs between two `describe_variables` lists, or `None` when they match.

    Paths are compared without Keras' automatic numbering (`dense_3` is `dense`):
    it depends on what a session built before. Order and shapes must match.
    """
    if len(saved) == len(here) and all(
        _unnumbered(a) == _unnumbered(b) and list(s) == list(t)
        for (a, s), (b, t) in zip(saved, here, strict=True)
    ):
        return None
    there = {path: tuple(shape) for path, shape in saved}
    ours = {path: tuple(shape) for path, shape in here}
    parts = []
    reshaped = [
        f"{path} {there[path]} there, {ours[path]} here"
        for path in there
        if path in ours and there[path] != ours[path]
    ]
    if reshaped:
        parts.append(f"other shapes: {_few(reshaped)}")
    only_there = [path for path in there if path not in ours]
    if only_there:
        parts.append(f"only there: {_few(only_there)}")
    only_here = [path for path in ours if path not in there]
    if only_here:
        parts.append(f"only here: {_few(only_here)}")
    if not parts:
        parts.append("the same variables in another order")
    return f"{len(saved)} saved variables, {len(here)} here; {'; '.join(parts)}"


def _optimizer_differences(there, here):
    if not isinstance(there, dict):
        return [f"optimizer: {there!r} there, {here['class']} here"]
    if there.get("class") != here["class"]:
        name = str(there.get("class")).rsplit(".", 1)[-1]
        return [f"optimizer: {name} there, {here['class'].rsplit('.', 1)[-1]} here"]
    config, ours = there.get("config") or {}, here["config"]
    return [
        f"optimizer's {key}: {config.get(key)!r} there, {ours.get(key)!r} here"
        for key in sorted(set(config) | set(ours))
        if config.get(key) != ours.get(key)
    ]


def _fingerprint(data):
    fingerprint = data.fingerprint()
    return fingerprint if fingerprint is not None else f"unknown ({data.kind})"


def _short(fingerprint):
    if fingerprint is None:
        return "not given"
    if fingerprint.startswith("unknown"):
        return fingerprint
    return f"fingerprint {fingerprint[:12]}"


def _unnumbered(path):
    return re.sub(r"_\d+(?=[/_]|$)", "", path)


def _few(items, count=4):
    shown = ", ".join(str(item) for item in items[:count])
    return shown + (f" and {len(items) - count} more" if len(items) > count else "")


def _numpy(variable):
    # Through the backend tensor: a torch parameter needs detaching first; a JAX
    # variable replicated over several processes gives its local copy.
    value = getattr(variable, "value", variable)
    if not getattr(value, "is_fully_addressable", True):
        return processes.local_value(value)
    return keras.ops.convert_to_numpy(value)


def _flush(f):
    f.flush()
    os.fsync(f.fileno())
