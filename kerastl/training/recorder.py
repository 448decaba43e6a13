"""The callback that keeps one `fine_tune` phase: merged history, early stopping, checkpoints."""

import math

import keras
import numpy as np


class Recorder(keras.callbacks.Callback):
    """Keeps one phase's epochs in the run's `state`, stops it early, checkpoints each epoch.

    Args:
        state: the run's state (`history`, `epochs_done`, `early`), updated in place:
            what a checkpoint holds.
        model: the full model (its weights are checkpointed).
        trainer: the model being fit: the full model, or the head on cached features
            (its optimizer is checkpointed).
        checkpoints: a `Checkpoints`, or `None`.
        patience: early stopping's patience in epochs, or `None`.
    """

    def __init__(self, state, *, model, trainer, checkpoints=None, patience=None):
        super().__init__()
        self.state = state
        self.full_model = model
        self.trainer = trainer
        self.checkpoints = checkpoints
        self.patience = patience
        self.stopped = False
        early = state.get("early") or {}
        self.best = early.get("best", math.inf)
        self.wait = early.get("wait", 0)
        self.best_weights = None

    def on_epoch_end(self, epoch, logs=None):
        logs = logs or {}
        history = self.state["history"]
        for key, value in logs.items():
            history.setdefault(key, []).append(float(value))
        self.state["epochs_done"] = epoch + 1
        if self.patience is not None:
            self._early_stop(logs)
        if self.checkpoints is not None:
            self.checkpoints.write(self.full_model, self.state, optimizer_of=self.trainer)

    def _early_stop(self, logs):
        monitor = "val_loss" if "val_loss" in logs else "loss"
        value = float(logs.get(monitor, math.inf))
        if value < self.best:
            self.best, self.wait = value, 0
            self.best_weights = [
                np.array(keras.ops.convert_to_numpy(w)) for w in self.model.weights
            ]
        else:
            self.wait += 1
            if self.wait >= self.patience:
                self.model.stop_training = True
                self.stopped = True
        self.state["early"] = {"best": self.best, "wait": self.wait}

    def finish(self):
        """Puts back the best epoch's weights when early stopping ended the phase."""
        if self.stopped and self.best_weights is not None:
            for variable, value in zip(self.model.weights, self.best_weights, strict=True):
                variable.assign(value)
