"""The learning-rate range test: an exponential sweep that leaves the model as it found it."""

import dataclasses
import math
import numbers

import keras
import numpy as np

from kerastl._checks import check_positive_int, is_finite_number
from kerastl._keras_private import flatten_layers
from kerastl.data.adapter import adapt
from kerastl.heads.task_head import TaskHead
from kerastl.training.plots import plot_lr_sweep


@dataclasses.dataclass(frozen=True, repr=False)
class LRFinderResult:
    """What `lr_find` measured: one entry per training step taken.

    Attributes:
        learning_rates: the learning rate of each step, float64, increasing.
        losses: the loss of each step's batch (before its update), float64;
            the last one may be NaN or inf when the sweep stopped on it.
        smoothed_losses: `losses` through a bias-corrected exponential moving
            average (the curve the suggestion and the divergence test read).
        suggestion: the suggested learning rate (a float inside the swept
            range, below the point of divergence), or None when no step gave
            a finite loss.
        method: how `suggestion` was chosen: `"valley"`, `"minimum/10"` (no
            valley of 3 steps or more) or None.
        diverged: whether the sweep stopped early because the loss diverged.
    """

    learning_rates: np.ndarray
    losses: np.ndarray
    smoothed_losses: np.ndarray
    suggestion: float | None
    method: str | None
    diverged: bool

    def __repr__(self):
        suggestion = "None" if self.suggestion is None else f"{self.suggestion:.3g}"
        return (
            f"LRFinderResult(steps={len(self.learning_rates)}, suggestion={suggestion}, "
            f"method={self.method!r}, diverged={self.diverged})"
        )

    def plot(self, path=None):
        """The smoothed loss against the learning rate (log scale), the suggestion marked.

        Needs matplotlib (`pip install "kerastl[plot]"`).

        Args:
            path: where to write the figure as a PNG (written atomically), or
                None to only return it.

        Returns:
            The matplotlib `Figure`.
        """
        return plot_lr_sweep(
            self.learning_rates,
            self.losses,
            self.smoothed_losses,
            self.suggestion,
            path=path,
            method=self.method,
        )


def lr_find(
    model,
    train,
    *,
    start_lr=1e-7,
    end_lr=10.0,
    num_steps=100,
    batch_size=32,
    smoothing=0.98,
    divergence=4.0,
    seed=None,
    verbose=1,
):
    """Sweeps the learning rate exponentially over training steps; restores the model after.

    The learning-rate range test (Smith, 2015; fastai's `lr_find`): step `i`
    of `num_steps` trains one batch with learning rate
    `start_lr * (end_lr / start_lr) ** (i / (num_steps - 1))` and records that
    batch's loss (`model.train_on_batch`). The sweep stops early when the
    loss diverges: a non-finite loss, or a smoothed loss above `divergence`
    times the best smoothed loss so far. Data with fewer batches than
    `num_steps` is cycled over.

    Afterwards every model variable (weights, BatchNorm moving statistics,
    random-seed states) and the optimizer's whole state (slots, iteration
    count, learning rate) are put back exactly as they were, also when the
    sweep fails; the model stays compiled as it was. An optimizer not yet
    built is built first, so its fresh state is what comes back.

    The suggestion follows fastai's "valley" rule (its default suggestion):
    the longest valley of the smoothed curve is its longest strictly
    decreasing subsequence of steps (so one noisy bump does not cut it
    short), and the suggestion is the rate two thirds of the way down it,
    in steps (log-rate), as the rule is described. Why this rule: the rate of
    the minimum is already too high (the loss is about to turn up), the
    steepest point reads the derivative of a noisy curve and jumps between
    runs, and "minimum/10" depends on where one noisy minimum falls; the
    lower part of the longest valley is where the loss still falls fast yet
    reliably, a safe distance below divergence. When the curve has no valley
    of 3 steps (it only rises) the rate of the minimum divided by 10 is
    suggested instead, kept inside the swept range.

    Args:
        model: a compiled `keras.Model` (from `kerastl.build_model` or any
            other); its optimizer may be a Keras optimizer or a
            `kerastl.optimizers.PerLayerLR`, with a float learning rate (not
            a schedule). Only its trainable weights train during the sweep.
        train: the training images, with labels: a tuple `(x, y)` or
            `(x, y, sample_weight)` of arrays (shuffled with `seed`, cut into
            `batch_size` batches), a `keras.utils.PyDataset` (what
            `kerastl.data.from_arrays` and `from_directory` return), a
            `tf.data.Dataset` or a torch `DataLoader` (`from_torch_dataset`)
            of `(x, y)` batches, or any other iterable of batches
            (`kerastl.data.adapt`; bad images or labels are refused, a
            stream's at the batch that has them). A one-shot iterator (a
            generator) is not cycled: the sweep ends with it.
        start_lr: the first learning rate, > 0.
        end_lr: the last learning rate, > `start_lr`.
        num_steps: the number of steps (batches) of the full sweep, >= 2.
        batch_size: the batch size for array data.
        smoothing: the moving-average factor in [0, 1) of the smoothed loss
            (0: none). fastai's 0.98 averages over ~50 steps.
        divergence: the factor > 1 over the best smoothed loss at which the
            sweep stops, or None to stop only on a non-finite loss.
        seed: seed of the shuffling of array data.
        verbose: 0 silent, 1 a progress bar.

    Returns:
        An `LRFinderResult` (`.suggestion`, `.plot(path)` ...).

    Example:

    ```python
    keras.utils.set_random_seed(0)
    model = keras.Sequential([
        keras.Input((8, 8, 3)),
        keras.layers.Rescaling(1 / 255),
        keras.layers.Conv2D(4, 3, activation="relu"),
        keras.layers.GlobalAveragePooling2D(),
        keras.layers.Dense(2, activation="softmax"),
    ])
    model.compile(optimizer="adam", loss="sparse_categorical_crossentropy")
    x = np.random.randint(0, 256, (32, 8, 8, 3)).astype("uint8")
    y = (x.mean(axis=(1, 2, 3)) > 127).astype("int32")
    result = kerastl.training.lr_find(
        model, (x, y), start_lr=1e-4, end_lr=1.0, num_steps=8, batch_size=8,
        seed=0, verbose=0,
    )
    print(1e-4 <= result.suggestion <= 1.0)  # True
    print(int(model.optimizer.iterations))  # 0
    ```
    """
    _check_model(model)
    start_lr, end_lr = _check_rates(start_lr, end_lr)
    num_steps = check_positive_int(num_steps, "num_steps")
    if num_steps < 2:
        raise ValueError(
            f"`num_steps` must be an int >= 2 (a sweep). Received: num_steps={num_steps!r}"
        )
    batch_size = check_positive_int(batch_size, "batch_size")
    _check_options(smoothing, divergence, seed, verbose)

    if model.built:
        _check_trainable(model)
    train = adapt(train, "train", batch_size=batch_size, needs_labels=True)
    heads = [layer for layer in flatten_layers(model) if isinstance(layer, TaskHead)]
    if len(heads) == 1:  # a kerastl model: its labels checked against its head
        train.check_labels(heads[0])
    batches = _cycle(train, seed)
    first = next(batches)
    if not model.built:
        model(first[0], training=False)  # a subclassed model: create its variables now
        _check_trainable(model)
    optimizer = model.optimizer
    if not optimizer.built:
        optimizer.build(model.trainable_variables)

    rates = start_lr * (end_lr / start_lr) ** (np.arange(num_steps) / (num_steps - 1))
    saved = _snapshot(model)
    losses, smoothed = [], []
    diverged = False
    progress = keras.utils.Progbar(num_steps, stateful_metrics=["lr", "loss"]) if verbose else None
    try:
        average, best = 0.0, math.inf
        batch = first
        for step in range(num_steps):
            if batch is None:  # a one-shot iterator ran out
                break
            optimizer.learning_rate = float(rates[step])
            x, y, sample_weight = batch
            logs = model.train_on_batch(x, y, sample_weight=sample_weight, return_dict=True)
            loss = float(logs["loss"])
            losses.append(loss)
            if not math.isfinite(loss):
                smoothed.append(math.nan)
                diverged = True
                break
            average = smoothing * average + (1 - smoothing) * loss
            value = average / (1 - smoothing ** (step + 1))
            smoothed.append(value)
            if progress is not None:
                progress.update(step + 1, [("lr", float(rates[step])), ("loss", loss)])
            if divergence is not None and value > best + (divergence - 1) * abs(best):
                diverged = True
                break
            best = min(best, value)
            if step + 1 < num_steps:
                batch = next(batches, None)
    finally:
        _restore(model, saved)

    steps = len(losses)
    rates = rates[:steps]
    losses = np.asarray(losses, dtype="float64")
    smoothed = np.asarray(smoothed, dtype="float64")
    # The step that diverged is no candidate: its rate is already too high.
    usable = steps - 1 if diverged else steps
    suggestion, method = suggest_lr(rates[:usable], smoothed[:usable])
    if progress is not None and diverged:
        print(f"\nlr_find: the loss diverged at learning rate {rates[-1]:.3g} (step {steps}).")
    return LRFinderResult(
        learning_rates=rates,
        losses=losses,
        smoothed_losses=smoothed,
        suggestion=suggestion,
        method=method,
        diverged=diverged,
    )


def suggest_lr(learning_rates, smoothed_losses):
    """`(rate, method)`: fastai's valley rule on a smoothed loss curve (see `lr_find`).

    Example:

    ```python
    from kerastl.training.lr_find import suggest_lr

    rates = 10.0 ** np.arange(-5, 1)
    print(suggest_lr(rates, [3, 2.9, 2, 1, 0.5, 9]))
    # (0.01, 'valley')
    ```
    """
    rates = np.asarray(learning_rates, dtype="float64")
    losses = np.asarray(smoothed_losses, dtype="float64")
    finite = np.isfinite(losses)
    rates, losses = rates[finite], losses[finite]
    if len(losses) == 0:
        return None, None
    start, end = _longest_valley(losses)
    if end - start >= 2:
        index = start + int(round(2 * (end - start) / 3))
        return float(rates[index]), "valley"
    return float(max(rates[int(np.argmin(losses))] / 10, rates[0])), "minimum/10"


def _longest_valley(losses):
    """(first, last) index of the longest strictly decreasing subsequence."""
    n = len(losses)
    length = np.ones(n, dtype="int64")
    previous = np.full(n, -1, dtype="int64")
    for i in range(1, n):
        candidates = np.where(losses[:i] > losses[i], length[:i], 0)
        j = int(np.argmax(candidates))
        if candidates[j] > 0:
            length[i] = candidates[j] + 1
            previous[i] = j
    end = int(np.argmax(length))
    start = end
    while previous[start] >= 0:
        start = int(previous[start])
    return start, end


# --- arguments --------------------------------------------------------------------


def _check_model(model):
    if not isinstance(model, keras.Model):
        raise TypeError(f"`model` must be a keras.Model. Received: model={model!r}")
    if not getattr(model, "compiled", False) or model.optimizer is None:
        raise ValueError(
            "`model` must be compiled with an optimizer and a loss before `lr_find` "
            f"(model.compile(...)). Received: model={model.name!r} (not compiled)"
        )
    rate = model.optimizer.learning_rate
    if not isinstance(rate, keras.Variable):
        raise ValueError(
            "`lr_find` sets the learning rate itself: compile the model with an optimizer "
            "whose learning rate is a float, not a schedule or a callable. "
            f"Received: model.optimizer.learning_rate={rate!r}"
        )


def _check_options(smoothing, divergence, seed, verbose):
    if not is_finite_number(smoothing, minimum=0) or smoothing >= 1:
        raise ValueError(
            f"`smoothing` must be a number in [0, 1). Received: smoothing={smoothing!r}"
        )
    if divergence is not None and (not is_finite_number(divergence) or divergence <= 1):
        raise ValueError(
            "`divergence` must be a number > 1 or None (stop only on a non-finite loss). "
            f"Received: divergence={divergence!r}"
        )
    if seed is not None and (isinstance(seed, bool) or not isinstance(seed, numbers.Integral)):
        raise TypeError(f"`seed` must be an int or None. Received: seed={seed!r}")
    if isinstance(verbose, bool) or not isinstance(verbose, numbers.Integral) or verbose < 0:
        raise ValueError(f"`verbose` must be an int >= 0. Received: verbose={verbose!r}")


def _check_trainable(model):
    if not model.trainable_variables:
        raise ValueError(
            "`model` has no trainable weights: the sweep would train nothing. Unfreeze "
            f"some layers first. Received: model={model.name!r}"
        )


def _check_rates(start_lr, end_lr):
    for arg, value in (("start_lr", start_lr), ("end_lr", end_lr)):
        if not is_finite_number(value) or value <= 0:
            raise ValueError(f"`{arg}` must be a finite number > 0. Received: {arg}={value!r}")
    if start_lr >= end_lr:
        raise ValueError(
            "`start_lr` must be below `end_lr`: the sweep goes up. "
            f"Received: start_lr={start_lr!r}, end_lr={end_lr!r}"
        )
    return float(start_lr), float(end_lr)


# --- state ------------------------------------------------------------------------


def _snapshot(model):
    """Copies of every model and optimizer variable (BatchNorm statistics, seeds, slots)."""
    variables = list(model.variables) + list(model.optimizer.variables)
    return [(v, np.array(keras.ops.convert_to_numpy(v), copy=True)) for v in variables]


def _restore(model, saved):
    for variable, value in saved:
        variable.assign(value)
    model.reset_metrics()


# --- data -------------------------------------------------------------------------


def _cycle(train, seed):
    """`(x, y, sample_weight)` numpy batches of the adapted `train`, cycled.

    Arrays are reshuffled every pass and cut into full batches only (when there
    is one): no retracing for a short last batch. A one-shot iterator ends with
    its pass.
    """
    rng = np.random.default_rng(seed)
    full = min(train.batch_size, train.count) if train.kind == "arrays" else 0
    while True:
        for batch in train.numpy_batches(shuffle=True, seed=rng, weights=True):
            if len(batch[0]) >= full:
                yield batch
        if train.one_shot:
            return
