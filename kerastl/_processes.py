"""Several processes, one run: which process writes files, and what they must share.

kerastl adds no launcher and no collective of its own: it asks the backend's own
multi-process engine. On JAX that is `keras.distribution.initialize(...)` (one
process per host, `jax.process_count()` of them); on torch, `torch.distributed`
once initialised. Everything here is a no-op in one process, so single-process
code paths stay as they were.

- `count()`, `index()`: how many processes run and which one this is.
- `is_writer()`: process 0 writes the files every process would otherwise write
  (checkpoints, saved models); the others wait for it at a `barrier`.
- `gather_rows(array)`: every process's rows, in process order, on every
  process (the converged head is solved on all the features, not a shard).
- `local_rows(array)`: this process's rows of a global JAX array (a prediction
  on process-local inputs), as numpy.
- `check_shared(directory, arg)`: refuses a checkpoint directory that only some
  processes see.

A process that waits for one that died is not left hanging: JAX's coordination
service ends the job when a process stops sending heartbeats (90 s after a `SIGKILL`
of process 1 here, 0.2 s after one of process 0), naming it.
"""

import os
import sys
import uuid

import keras
import numpy as np


def count():
    """How many processes train together (1 without a multi-process engine)."""
    backend = keras.config.backend()
    if backend == "jax":
        jax = sys.modules.get("jax")
        return int(jax.process_count()) if jax is not None else 1
    if backend == "torch":
        distributed = _torch_distributed()
        return int(distributed.get_world_size()) if distributed is not None else 1
    return 1


def index():
    """This process's index, 0 .. count() - 1."""
    backend = keras.config.backend()
    if backend == "jax":
        jax = sys.modules.get("jax")
        return int(jax.process_index()) if jax is not None else 0
    if backend == "torch":
        distributed = _torch_distributed()
        return int(distributed.get_rank()) if distributed is not None else 0
    return 0


def is_writer():
    """Whether this process writes the run's files (process 0)."""
    return index() == 0


def barrier(name):
    """Waits until every process reaches the barrier `name` (a no-op in one process)."""
    if count() == 1:
        return
    if keras.config.backend() == "jax":
        from jax.experimental import multihost_utils

        multihost_utils.sync_global_devices(f"kerastl:{name}")
    else:
        _torch_distributed().barrier()


def gather_rows(array, what="rows"):
    """The rows of `array` from every process, concatenated in process order (numpy).

    Every process must call it, with arrays of the same shape past the first axis; a
    process with other rows than the rest (a different shape) is refused by name.
    """
    array = np.asarray(array)
    if count() == 1:
        return array
    shapes = _gather(np.asarray(array.shape, "int64")[None]).reshape(count(), -1)
    if len({tuple(shape[1:]) for shape in shapes}) != 1 or len(set(shapes[:, 0])) != 1:
        raise ValueError(
            f"The processes hold {what} of different shapes; every process must feed "
            "the same number of images of the same size (each its own shard of equal "
            f"size). Received: shapes {[tuple(int(n) for n in s) for s in shapes]} on "
            f"processes 0 .. {count() - 1}"
        )
    return _gather(array).reshape(-1, *array.shape[1:])


def check_shared(directory, arg):
    """Refuses a directory that the processes do not all see: process 0 writes a
    file in it and every process looks for it (a no-op in one process).

    A run's checkpoints are written by process 0 and resumed by every process: on
    storage only process 0 sees, the others would start over while it resumes.
    """
    if count() == 1:
        return
    token = gather_text(uuid.uuid4().hex)[0]  # process 0's
    marker = os.path.join(directory, f".kerastl-shared-{token}")
    if is_writer():
        with open(marker, "w"):
            pass
    barrier(f"{arg} marker written")
    seen = gather_text("1" if os.path.exists(marker) else "0")
    barrier(f"{arg} marker read")
    if is_writer():
        os.remove(marker)
    blind = [i for i, flag in enumerate(seen) if flag != "1"]
    if blind:
        raise ValueError(
            f"`{arg}` is not shared between the processes: process"
            f"{'es' if len(blind) > 1 else ''} {', '.join(map(str, blind))} do"
            f"{'' if len(blind) > 1 else 'es'} not see the file process 0 wrote in it. "
            "Process 0 writes the run's checkpoints and every process resumes from them: "
            "give every process the same directory on shared storage (a network file "
            f"system, a mounted bucket). Received: {arg}={directory!r}"
        )


def gather_text(text):
    """`text` of every process, as a list in process order."""
    if count() == 1:
        return [text]
    data = np.frombuffer(text.encode("utf-8"), dtype="uint8")
    sizes = gather_rows(np.asarray([len(data)], "int64"), "text sizes")
    padded = np.zeros(int(sizes.max()), "uint8")
    padded[: len(data)] = data
    rows = gather_rows(padded[None], "text").reshape(count(), -1)
    return [bytes(row[: int(size)]).decode("utf-8") for row, size in zip(rows, sizes, strict=True)]


def local_rows(array):
    """This process's rows of a prediction, as numpy: a JAX array that spans several
    processes is cut to the shards this process holds, in order."""
    if getattr(array, "is_fully_addressable", True):
        return keras.ops.convert_to_numpy(array)
    shards = {}
    for shard in array.addressable_shards:
        start = shard.index[0].start or 0
        shards.setdefault(start, shard.data)
    return np.concatenate([np.asarray(shards[start]) for start in sorted(shards)])


def local_value(array):
    """A replicated JAX array that spans several processes as numpy (its local copy)."""
    if getattr(array, "is_fully_addressable", True):
        return np.asarray(array)
    return np.asarray(array.addressable_data(0))


def _gather(array):
    if keras.config.backend() == "jax":
        from jax.experimental import multihost_utils

        return np.asarray(multihost_utils.process_allgather(array, tiled=True))
    distributed = _torch_distributed()
    parts = [None] * count()
    distributed.all_gather_object(parts, array)
    return np.concatenate(parts)


def _torch_distributed():
    """`torch.distributed` when it is initialised in this process, else None."""
    torch = sys.modules.get("torch")
    distributed = getattr(torch, "distributed", None) if torch is not None else None
    if distributed is None or not distributed.is_available() or not distributed.is_initialized():
        return None
    return distributed
