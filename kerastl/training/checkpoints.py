"""Crash-safe training checkpoints: weights, optimizer state and run state, one directory each.

A checkpoint is a directory `ckpt-00003` holding the model's weights
(`model.npz`, BatchNorm statistics included, in `model.weights` order: Keras'
own weights file would carry the optimizer of the phase too), the optimizer's variables
(`optimizer.npz`, its step count included, so a schedule goes on where it
stopped) and `state.json` (phase, epochs done, history). It is written under a
temporary name, flushed, then renamed; `latest.json` then points at it,
replaced atomically. A process killed at any moment leaves the previous
checkpoint and pointer intact; leftovers of a killed write are removed by the
next one.
"""

import json
import os
import shutil

import keras
import numpy as np

from kerastl.files.directories import prepare_directory

LATEST = "latest.json"
WEIGHTS = "model.npz"
OPTIMIZER = "optimizer.npz"
STATE = "state.json"
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

    def write(self, model, state, optimizer_of=None):
        """Writes a checkpoint of `model` (weights and optimizer) with `state`; returns its path.

        `optimizer_of`: the model whose optimizer is saved (default `model`): the head
        model of a phase on cached features.
        """
        owner = model if optimizer_of is None else optimizer_of
        self._remove_partials()
        name = f"{_PREFIX}{int(state['epochs_done']):05d}"
        final = os.path.join(self.directory, name)
        partial = os.path.join(self.directory, f"{_PARTIAL}{name}-{os.getpid()}")
        os.makedirs(partial)
        variables = owner.optimizer.variables if owner.optimizer is not None else []
        for member, values in ((WEIGHTS, model.weights), (OPTIMIZER, variables)):
            with open(os.path.join(partial, member), "wb") as f:
                np.savez(f, *[np.asarray(_numpy(v)) for v in values])
                _flush(f)
        with open(os.path.join(partial, STATE), "w") as f:
            json.dump(state, f)
            _flush(f)
        if os.path.exists(final):  # the same epoch written again after a resume
            shutil.rmtree(final)
        os.replace(partial, final)
        pointer = os.path.join(self.directory, LATEST)
        tmp = f"{pointer}.{os.getpid()}.tmp"
        with open(tmp, "w") as f:
            json.dump({"checkpoint": name}, f)
            _flush(f)
        os.replace(tmp, pointer)
        for other in os.listdir(self.directory):
            if other.startswith(_PREFIX) and other != name:
                shutil.rmtree(os.path.join(self.directory, other), ignore_errors=True)
        return final

    def restore(self, model, path, optimizer=True, optimizer_of=None):
        """Loads the weights at `path` into `model`; with `optimizer`, its built optimizer too.

        `optimizer_of`: the model whose optimizer gets the state (default `model`).
        """
        self._assign(model.weights, os.path.join(path, WEIGHTS), "model")
        if optimizer:
            owner = model if optimizer_of is None else optimizer_of
            self._assign(owner.optimizer.variables, os.path.join(path, OPTIMIZER), "optimizer")

    def _assign(self, variables, path, what):
        with np.load(path) as stored:
            values = [stored[f"arr_{i}"] for i in range(len(stored.files))]
        if [tuple(v.shape) for v in values] != [tuple(v.shape) for v in variables]:
            raise ValueError(
                f"The {what} state in `{self.arg}` does not fit this {what} ({len(values)} "
                f"saved variables, {len(variables)} here): the checkpoint is from another "
                f"run. Received: {self.arg}={self.directory!r}"
            )
        for variable, value in zip(variables, values, strict=True):
            variable.assign(value)

    def _remove_partials(self):
        for other in os.listdir(self.directory):
            if other.startswith(_PARTIAL):
                shutil.rmtree(os.path.join(self.directory, other), ignore_errors=True)


def _numpy(variable):
    # Through the backend tensor: a torch parameter needs detaching first.
    return keras.ops.convert_to_numpy(getattr(variable, "value", variable))


def _flush(f):
    f.flush()
    os.fsync(f.fileno())
