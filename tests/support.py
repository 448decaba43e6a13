"""Shared test helpers: real offline images, calibrated backbones, backend subprocesses,
and the runner of documented examples."""

import ast
import contextlib
import io
import json
import os
import struct
import subprocess
import sys
import textwrap
import zlib

import keras
import numpy as np

BACKENDS = ("tensorflow", "jax", "torch")


def real_images(size=96, count=24, seed=0):
    """`count` random crops of real photographs resized to `size`, uint8 RGB."""
    from skimage import data, transform
    from sklearn.datasets import load_sample_images

    sources = [data.astronaut(), data.coffee(), data.chelsea(), data.rocket()]
    sources += list(load_sample_images().images)
    rng = np.random.default_rng(seed)
    out = []
    for i in range(count):
        image = sources[i % len(sources)]
        h, w = image.shape[:2]
        side = int(rng.integers(min(h, w) // 3, min(h, w)))
        top = int(rng.integers(0, h - side + 1))
        left = int(rng.integers(0, w - side + 1))
        crop = image[top : top + side, left : left + side]
        crop = transform.resize(crop, (size, size), anti_aliasing=True, preserve_range=True)
        out.append(crop.astype("uint8"))
    return np.stack(out)


def tf_mode(images):
    """The "tf" input recipe: uint8 0..255 -> float32 in [-1, 1]."""
    return images.astype("float32") / 127.5 - 1.0


@contextlib.contextmanager
def shapes_only():
    """Builds models whose variables are never initialised: for checks of shapes and names.

    A plain `keras.StatelessScope` defers initialisers only to its exit, where it
    runs them all (on JAX every distinct shape compiles a random op: 10-45 s for
    a large application). With `initialize_variables=False` they never run, and
    `clear_session` afterwards drops them, so no later scope initialises them.
    Whatever is built inside must not be called on data nor saved.
    """
    try:
        with keras.StatelessScope(initialize_variables=False):
            yield
    finally:
        keras.backend.clear_session(free_memory=False)


def calibrate_batchnorm(model, images):
    """Sets every BatchNorm's moving statistics to those of `images` in one pass.

    With momentum 0, a training-mode call replaces the moving statistics by the
    batch statistics, layer after layer, on normalised inputs.
    """
    bns = [
        layer
        for layer in model._flatten_layers()  # tests may touch Keras internals
        if isinstance(layer, keras.layers.BatchNormalization)
    ]
    saved = [(bn, bn.momentum, bn.trainable) for bn in bns]
    for bn in bns:
        bn.momentum = 0.0
        bn.trainable = True
    model(images, training=True)
    for bn, momentum, trainable in saved:
        bn.momentum = momentum
        bn.trainable = trainable
    return model


def calibrated_cnn(images, filters=(8, 16, 16), seed=2, name="tiny"):
    """A small backbone: conv / BatchNorm / ReLU blocks, statistics calibrated on `images`.

    Block `i` is `conv_i` (3x3, stride 2, `filters[i]` channels), `bn_i`, `relu_i`.
    The input shape is that of `images` (uint8 photographs, calibrated in the "tf"
    recipe); weights follow from `seed`, so two calls give the same network.
    """
    keras.utils.set_random_seed(seed)
    inputs = keras.Input(images.shape[1:])
    x = inputs
    for i, channels in enumerate(filters):
        x = keras.layers.Conv2D(channels, 3, strides=2, padding="same", name=f"conv_{i}")(x)
        x = keras.layers.BatchNormalization(name=f"bn_{i}")(x)
        x = keras.layers.ReLU(name=f"relu_{i}")(x)
    return calibrate_batchnorm(keras.Model(inputs, x, name=name), tf_mode(images))


def calibrated_weights_file(name, path, input_shape, backbone_kwargs=None):
    from kerastl.backbones import get_backbone

    keras.utils.set_random_seed(1)
    model = get_backbone(name).build(input_shape, weights=None, **(backbone_kwargs or {}))
    calibrate_batchnorm(model, tf_mode(real_images(size=input_shape[0], count=32, seed=1)))
    model.save_weights(str(path))
    keras.backend.clear_session()
    return str(path)


def shared_file(tmp_path_factory, name, make):
    """The path of a file that `make(path)` writes once per test run, shared by xdist workers.

    Under pytest-xdist every worker has its own session fixtures; the first to get
    here writes the file (under a lock, in the run's common temporary directory),
    the others wait for it and read it. `make` must not depend on which worker runs it.
    """
    root = tmp_path_factory.getbasetemp()
    if os.environ.get("PYTEST_XDIST_WORKER"):
        root = root.parent  # popen-gw0, popen-gw1 ... share their parent
    path = root / name
    import fcntl  # POSIX only, as test_staging.py

    with open(f"{path}.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if not path.exists():
            partial = root / f"partial-{os.getpid()}-{name}"
            make(str(partial))
            os.replace(partial, path)
    return str(path)


def mobilenet_extractor(weights, **kwargs):
    """The test extractor: MobileNetV2 (alpha 0.35) at 96 px, average pooled.

    `kwargs` override or add FeatureExtractor arguments (`input_shape`, `freeze` ...).
    """
    import kerastl

    args = dict(input_shape=(96, 96, 3), pooling="avg", backbone_kwargs={"alpha": 0.35})
    return kerastl.FeatureExtractor("mobilenet_v2", weights=weights, **{**args, **kwargs})


def mobilenet_classifier(weights, classes=3):
    """The test classifier: `mobilenet_extractor` and a softmax head."""
    inputs = keras.Input((96, 96, 3))
    # Named: auto-names depend on what ran before in the process.
    extractor = mobilenet_extractor(weights, name="feature_extractor")
    outputs = keras.layers.Dense(classes, activation="softmax", name="head")(extractor(inputs))
    return keras.Model(inputs, outputs)


def backend_python(backend):
    """An interpreter that has `backend`: from KERASTL_PYTHONS, else this one."""
    mapping = os.environ.get("KERASTL_PYTHONS")
    if mapping:
        pythons = dict(item.split("=", 1) for item in mapping.split(","))
        return pythons[backend]
    return sys.executable


def run_in_backend(backend, code, **variables):
    """Runs `code` in a fresh process on `backend`; returns what it prints as JSON.

    `variables` are passed as JSON and bound as globals in the child.
    """
    prelude = "import json, sys\nglobals().update(json.loads(sys.argv[1]))\n"
    env = dict(os.environ, KERAS_BACKEND=backend, PYTHONPATH=os.path.dirname(__file__))
    result = subprocess.run(
        [backend_python(backend), "-c", prelude + textwrap.dedent(code), json.dumps(variables)],
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
    )
    if result.returncode != 0:
        raise AssertionError(f"{backend} subprocess failed:\n{result.stderr[-4000:]}")
    return json.loads(result.stdout.strip().splitlines()[-1])


# A 16-bit ramp over 0..65535 and the 8-bit ramp it must read as.
RAMP16 = np.round(np.linspace(0, 65535, 256)).astype("uint16")
RAMP8 = RAMP16 * 255.0 / 65535.0


def write_png16(path, array):
    """Writes a 16-bit PNG: gray, gray + alpha, RGB (48-bit) or RGBA (64-bit).

    Pillow cannot write 16-bit colour PNGs; this is the format itself (signature,
    IHDR, one zlib IDAT of filter-0 rows, IEND).
    """
    array = np.asarray(array, ">u2")
    if array.ndim == 2:
        array = array[..., None]
    height, width, channels = array.shape
    color_type = {1: 0, 2: 4, 3: 2, 4: 6}[channels]
    rows = array.reshape(height, width * channels)
    raw = b"".join(b"\x00" + row.tobytes() for row in rows)

    def chunk(kind, body):
        crc = struct.pack(">I", zlib.crc32(kind + body))
        return struct.pack(">I", len(body)) + kind + body + crc

    header = struct.pack(">IIBBBBB", width, height, 16, color_type, 0, 0, 0)
    png = chunk(b"IHDR", header) + chunk(b"IDAT", zlib.compress(raw)) + chunk(b"IEND", b"")
    with open(path, "wb") as f:
        f.write(b"\x89PNG\r\n\x1a\n" + png)
    return str(path)


def ramp_image(channels):
    """4 rows of the 16-bit ramp; channel c is the ramp reversed every other channel."""
    planes = [RAMP16 if c % 2 == 0 else RAMP16[::-1] for c in range(channels)]
    return np.tile(np.stack(planes, -1)[None], (4, 1, 1))


def documented_output(lines, node):
    """What the `print(...)` statement `node` says it prints, or None.

    Either a comment ending its last line (`print(x.shape)  # (2, 8)`) or the comment
    lines right after it (`# ...`, continued by further `#  ...` lines), joined by spaces.
    """
    if not (
        isinstance(node, ast.Expr)
        and isinstance(node.value, ast.Call)
        and isinstance(node.value.func, ast.Name)
        and node.value.func.id == "print"
    ):
        return None
    code, _, comment = lines[node.end_lineno - 1].partition("  # ")
    if comment and code.rstrip().endswith(")"):
        return comment.strip()
    following = []
    for line in lines[node.end_lineno :]:
        if not line.strip().startswith("#"):
            break
        following.append(line.strip()[1:].strip())
    return " ".join(following) or None


def run_example_code(code, namespace, name):
    """Runs `code` statement by statement in `namespace`; each print must print what it says.

    Outputs are compared with runs of whitespace made one space, so a long output may be
    documented over several comment lines.
    """
    lines = code.splitlines()
    for node in ast.parse(code).body:
        statement = compile(ast.Module([node], []), name, "exec")
        expected = documented_output(lines, node)
        if expected is None:
            exec(statement, namespace)
            continue
        out = io.StringIO()
        with contextlib.redirect_stdout(out):
            exec(statement, namespace)
        printed = " ".join(out.getvalue().split())
        assert printed == " ".join(expected.split()), (
            f"{name}: {ast.get_source_segment(code, node)} printed {printed!r}, "
            f"the text says {expected!r}"
        )
