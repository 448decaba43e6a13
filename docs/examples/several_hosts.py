"""fine_tune on several hosts, one process per host (JAX), started here on one machine.

On each of N hosts, the same command; only the process id differs:

    KERAS_BACKEND=jax KERASTL_COORDINATOR=10.0.0.1:1234 KERASTL_PROCESSES=N \\
        KERASTL_PROCESS_ID=<0..N-1> python several_hosts.py --out /shared/run

On one machine, `--launch N` starts N such processes on 127.0.0.1 and waits for them:

    KERAS_BACKEND=jax python several_hosts.py --launch 2 --out run

Each process joins the job with Keras' own `keras.distribution.initialize` and
trains under `DataParallel(auto_shard_dataset=False)`, feeding its own shard of
the images (here rows `i::N` of scikit-learn's digits; on real hosts, the files
of that host). `fine_tune` solves the head on every shard's cached features,
fine-tunes the whole model with each global batch made of every process's, and
process 0 alone writes the checkpoints and the saved model (`--out` must be
storage every host sees). A process started without the variables trains alone:
the same script on one machine, on any backend.
"""

import os
import socket
import subprocess
import sys
import time

import keras
import numpy as np
from offline import example_parser
from sklearn.datasets import load_digits

import kerastl

GLOBAL_BATCH = 32
WAIT_SECONDS = 600  # the launcher's bound on the whole job: never a hang


def launch(count, argv):
    """Starts `count` processes of this script on 127.0.0.1; their exit code (0: all ran)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    workers = []
    for i in range(count):
        env = dict(os.environ, KERAS_BACKEND="jax", KERASTL_COORDINATOR=f"127.0.0.1:{port}")
        env.update(KERASTL_PROCESSES=str(count), KERASTL_PROCESS_ID=str(i))
        workers.append(
            subprocess.Popen([sys.executable, os.path.abspath(__file__), *argv], env=env)
        )
    deadline = time.monotonic() + WAIT_SECONDS
    try:
        for worker in workers:
            worker.wait(timeout=max(1.0, deadline - time.monotonic()))
    except subprocess.TimeoutExpired:
        print(f"the workers did not finish in {WAIT_SECONDS} s: stopped", file=sys.stderr)
        return 1
    finally:
        for worker in workers:
            worker.kill()
    return max(worker.returncode for worker in workers)


def join(parser):
    """This process's `(index, count)`, after joining the job named by the environment.

    JAX waits for the other processes up to its initialisation timeout (5 minutes),
    then fails; `--launch` bounds the whole job.
    """
    names = ("KERASTL_PROCESSES", "KERASTL_PROCESS_ID")
    text = [os.environ.get(name, default) for name, default in zip(names, ("1", "0"), strict=True)]
    if not all(t.isdigit() for t in text) or not 0 <= int(text[1]) < int(text[0]):
        parser.error(
            "KERASTL_PROCESSES must be a count >= 1 and KERASTL_PROCESS_ID an id in "
            f"0 .. count - 1. Received: KERASTL_PROCESSES={text[0]!r}, "
            f"KERASTL_PROCESS_ID={text[1]!r}"
        )
    count, index = int(text[0]), int(text[1])
    coordinator = os.environ.get("KERASTL_COORDINATOR", "")
    host, _, port = coordinator.rpartition(":")
    if count > 1 and not (host and port.isdigit() and 0 < int(port) < 65536):
        parser.error(
            "KERASTL_COORDINATOR must be HOST:PORT, the address of process 0 that every "
            f"process can reach. Received: KERASTL_COORDINATOR={coordinator!r}"
        )
    if count > 1:
        import jax  # the JAX backend: its CPU collectives go over gloo (GPUs use NCCL)

        jax.config.update("jax_cpu_collectives_implementation", "gloo")
        keras.distribution.initialize(os.environ["KERASTL_COORDINATOR"], count, index)
    if keras.config.backend() == "jax":
        # Each process feeds its own rows; every batch is made of all of them.
        distribution = keras.distribution.DataParallel(auto_shard_dataset=False)
        keras.distribution.set_distribution(distribution)
    return index, count


def make_model():
    # Real use: kerastl.FeatureExtractor("mobilenet_v2", weights="imagenet", pooling="avg").
    inputs = keras.Input((8, 8, 1))
    x = keras.layers.Rescaling(1 / 255)(inputs)
    for i, filters in enumerate((16, 32)):
        x = keras.layers.Conv2D(filters, 3, padding="same", activation="relu", name=f"conv_{i}")(x)
    extractor = kerastl.FeatureExtractor(keras.Model(inputs, x, name="tiny"), pooling="avg")
    return kerastl.build_model(extractor, kerastl.heads.multiclass(10), preprocessing=False)


def main(argv=None):
    parser = example_parser(__doc__, "several_hosts")
    parser.add_argument("--launch", type=int, default=None, metavar="N")
    args = parser.parse_args(argv)
    if args.online:
        parser.error(
            "--online: this example's images ship with scikit-learn; it has no online mode"
        )
    if args.launch:
        rest = list(argv if argv is not None else sys.argv[1:])
        at = rest.index("--launch")
        return launch(args.launch, rest[:at] + rest[at + 2 :])
    index, count = join(parser)
    digits = load_digits()
    images = (digits.images[..., None] * (255 / 16)).astype("float32")
    train = slice(0, 192 if args.short else 1536)
    x, y = images[train][index::count], digits.target[train][index::count]
    keras.utils.set_random_seed(0)  # the same initial weights in every process
    model = make_model()
    history = kerastl.fine_tune(
        model,
        kerastl.data.from_arrays(x, y, batch_size=GLOBAL_BATCH // count, seed=0),
        epochs=1 if args.short else 5,
        lr=1e-2,
        checkpoint_dir=os.path.join(args.out, "checkpoints"),
        verbose=0,
    )
    path = os.path.join(args.out, "digits.keras")
    kerastl.save_model(model, path, history=history)  # process 0 writes it, once
    # The saved file, read back without the job's distribution, as a server would.
    keras.distribution.set_distribution(None)
    served = kerastl.load_model(path)
    predicted = np.argmax(served.predict(images[1536:], verbose=0), axis=-1)
    accuracy = float(np.mean(predicted == digits.target[1536:]))
    print(
        f"process {index} of {count}: loss {history.history['loss'][-1]:.4f}, "
        f"held-out accuracy {accuracy:.3f} ({path})",
        flush=True,  # before JAX's exit hooks, which may end the process without flushing
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
