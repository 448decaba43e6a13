"""Fine-tuning ResNet50 on one GPU: kerastl (JAX, PyTorch) against native PyTorch.

    KERAS_BACKEND=torch python benchmarks/gpu_resnet50.py --gpu              # one GPU
    KERAS_BACKEND=jax python benchmarks/gpu_resnet50.py --gpu --backends jax,torch
    KERAS_BACKEND=torch python benchmarks/gpu_resnet50.py --tiny             # CPU, seconds

The kerastl side: `kerastl.FeatureExtractor("resnet50", weights=None,
pooling="avg", freeze="none", bn="train")` (everything trains, BatchNorm
statistics update, as in the native loop) and `kerastl.build_model` with a
1000-class multiclass head and the backbone's own caffe preprocessing inside,
under the `mixed_bfloat16` dtype policy, Adam; images are synthetic uint8-range
values (0..255, float32) made once on the device with integer labels, and every
step is `model.train_on_batch` on that one batch. `--keras-jit-compile` is
passed to `compile` (Keras's "auto" compiles on JAX, and runs eagerly on torch).

The native side: torchvision's `resnet50` when it is importable, else the same
network (ResNet50 v1.5: stride on the 3x3 convolutions) written in `torch.nn`
below; the same normalisation in front, bf16 autocast, `torch.compile`,
channels-last, the same batch and optimizer (Adam, fused on CUDA), the loss in
float32. It needs torch in the same Python (not kerastl's backend): in the
gpu(jax) session, the machine's own torch.

The batch: `--batch`, else the largest of `--batches` (largest first) whose
warm-up steps fit in memory (an out-of-memory error moves to the next).
Throughput: `--steps` timed steps after `--warmup` steps (compilation), images
per second; the native loop runs at the batch each kerastl backend found.

MFU (model FLOPs utilisation): training FLOPs per image (3x the forward pass,
2 FLOPs per multiply-add, counted from each model's own convolutions and dense
layers) x images/s / the GPU's peak dense bf16 FLOP/s (`PEAK_TFLOPS` by device
name, or `--peak-tflops`). At 224x224: 24.5 GFLOPs for torchvision's ResNet50
(v1.5: stride on the 3x3 convolutions), 23.1 for Keras's (v1: stride on the
first 1x1 convolution of a stage); each side's MFU uses its own count.

With `--gpu` each measurement runs in its own process (JAX holds 75% of the
GPU's memory from its first computation, and an out-of-memory error leaves a
process in a poor state), in the order: kerastl per backend, then native.
Without a GPU (or with `--tiny`) the same code runs on CPU, in this process, at
a tiny configuration: 32x32 images, batch 2, 2 steps, and a stand-in for
ResNet50 of the same design (one bottleneck block in each of two stages, width
8; with ResNet50 itself a run takes ~30 s per backend on a 2-core CPU), built the same way in
Keras (given to `FeatureExtractor` as a model) and in `torch.nn`, native compiled
with `torch.compile(backend="eager")` (no C++ build); MFU is null. The test suite
runs it so that this script cannot rot (tests/test_gpu_benchmark.py).

TensorFlow is not part of this benchmark: the script refuses it.

Prints one JSON object (and writes it to `--out`):
`{"benchmark", "mode", "device", "peak_tflops", "config", "kerastl": {backend:
run}, "native": {backend: run at that backend's batch}, "ratio_to_native":
{backend: kerastl images/s / native images/s}}`, each run with `images_per_s`,
`step_ms`, `batch`, `loss`, `flops_per_image`, `mfu`, `model`, `oom_batches`,
`warmup_s`; a side that did not run is `{"skipped": reason}`. "fastest": the
kerastl backend with the most images/s, its ratio and MFU, and whether they meet
the goal (>= 1.0x native and >= 35% MFU; null without a GPU).
"""

import argparse
import gc
import importlib.util
import json
import os
import subprocess
import sys
import time

BENCHMARK = "gpu_resnet50"
GPU_BACKENDS = ("jax", "torch")
# Peak dense (no sparsity) bf16 tensor-core TFLOP/s, by a substring of the device name;
# the first match wins, so the more specific names come first.
PEAK_TFLOPS = (
    ("GH200", 989.4),
    ("H200", 989.4),
    ("H100 PCIe", 756.0),
    ("H100 NVL", 835.0),
    ("H100", 989.4),  # SXM ("NVIDIA H100 80GB HBM3")
    ("H800", 989.4),
    ("B200", 2250.0),
    ("B100", 1750.0),
    ("A100", 312.0),
    ("A800", 312.0),
    ("L40S", 362.0),
    ("L40", 181.0),
    ("L4", 121.0),
    ("A10G", 70.0),
    ("A10", 125.0),
)
GOAL = {"ratio_to_native": 1.0, "mfu": 0.35}
GPU_BATCHES = (1024, 768, 512, 384, 256, 192, 128, 64, 32, 16, 8)
RESULT = "RESULT "  # prefix of a child process's result line


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    mode = parser.add_mutually_exclusive_group()
    mode.add_argument("--gpu", action="store_true", help="require a GPU (fail without one)")
    mode.add_argument("--tiny", action="store_true", help="tiny CPU run (default without GPU)")
    parser.add_argument(
        "--backends",
        default=None,
        help="comma-separated kerastl backends (jax, torch); default: KERAS_BACKEND",
    )
    parser.add_argument("--batch", type=int, default=None, help="fixed batch (no search)")
    parser.add_argument(
        "--batches",
        default=",".join(map(str, GPU_BATCHES)),
        help="batches to try, largest first, when --batch is not given",
    )
    parser.add_argument("--size", type=int, default=None, help="image size (224; tiny 32)")
    parser.add_argument("--steps", type=int, default=None, help="timed steps (20; tiny 2)")
    parser.add_argument("--warmup", type=int, default=None, help="warm-up steps (5; tiny 1)")
    parser.add_argument("--classes", type=int, default=1000)
    parser.add_argument("--optimizer", choices=("adam", "sgd"), default="adam")
    parser.add_argument("--lr", type=float, default=1e-3)
    parser.add_argument(
        "--native",
        choices=("auto", "yes", "no"),
        default="auto",
        help="native PyTorch run: auto = when torch is importable",
    )
    parser.add_argument(
        "--native-compile",
        default=None,
        help="torch.compile backend for native: inductor (GPU default), eager (tiny), none",
    )
    parser.add_argument("--keras-jit-compile", choices=("auto", "true", "false"), default="auto")
    parser.add_argument("--peak-tflops", type=float, default=None, help="the GPU's peak bf16")
    parser.add_argument("--out", default=None, help="also write the JSON to this file")
    # Internal: one measurement in a child process.
    parser.add_argument("--part", choices=("kerastl", "native"), help=argparse.SUPPRESS)
    parser.add_argument("--device", choices=("cpu", "gpu"), help=argparse.SUPPRESS)
    return parser.parse_args(argv)


# === Configuration ===


def _settings(args, gpu):
    """The run's settings as a plain dict: it goes into the JSON and to child processes."""
    tiny = not gpu
    return {
        "device": "gpu" if gpu else "cpu",
        "size": args.size or (32 if tiny else 224),
        "batch": args.batch or (2 if tiny else None),
        "batches": [int(b) for b in args.batches.split(",")] if not tiny else [2],
        "steps": args.steps or (2 if tiny else 20),
        "warmup": args.warmup or (1 if tiny else 5),
        "classes": args.classes,
        "optimizer": args.optimizer,
        "lr": args.lr,
        "dtype_policy": "mixed_bfloat16",
        "model": "resnet_tiny" if tiny else "resnet50",
        "native_compile": args.native_compile or ("eager" if tiny else "inductor"),
        "keras_jit_compile": args.keras_jit_compile,
    }


def _jit_compile(value):
    return {"auto": "auto", "true": True, "false": False}[value]


def _current_backend():
    """KERAS_BACKEND, else keras.json's, else Keras's default: without importing Keras."""
    if "KERAS_BACKEND" in os.environ:
        return os.environ["KERAS_BACKEND"]
    path = os.path.join(os.environ.get("KERAS_HOME", os.path.expanduser("~/.keras")), "keras.json")
    if os.path.exists(path):
        with open(path) as f:
            return json.load(f).get("backend", "tensorflow")
    return "tensorflow"


def _check_backends(backends):
    for backend in backends:
        if backend not in GPU_BACKENDS:
            raise SystemExit(
                f"gpu_resnet50 measures kerastl on JAX and PyTorch only; TensorFlow is not "
                f"part of the GPU benchmark. Run it with KERAS_BACKEND=jax or torch (or "
                f"--backends jax,torch). Received: backend={backend!r}"
            )


def _gpu_visible(backend):
    """Whether a GPU is visible, without taking its memory in this process."""
    if backend == "torch" or importlib.util.find_spec("torch") is not None:
        import torch

        if torch.cuda.is_available():
            return True
        if backend == "torch":
            return False
    # JAX would reserve 75% of the GPU's memory here: ask a short-lived process.
    env = dict(os.environ, XLA_PYTHON_CLIENT_PREALLOCATE="false", JAX_PLATFORMS="")
    probe = "import jax; print(any(d.platform == 'gpu' for d in jax.devices()))"
    done = subprocess.run(
        [sys.executable, "-c", probe], env=env, capture_output=True, text=True, check=False
    )
    return done.stdout.strip().endswith("True")


def _peak_tflops(device_name, override):
    if override is not None:
        return override
    for key, tflops in PEAK_TFLOPS:
        if key.lower() in (device_name or "").lower():
            return tflops
    return None


def _is_oom(error):
    text = f"{type(error).__name__}: {error}".lower()
    return "out of memory" in text or "resource_exhausted" in text or "outofmemory" in text


def _free_memory():
    gc.collect()
    if "torch" in sys.modules:
        torch = sys.modules["torch"]
        if torch.cuda.is_available():
            torch.cuda.empty_cache()


# === kerastl ===


def _keras_resnet(keras, size, stages=(1, 1), width=8):
    """ResNet (bottleneck blocks, v1.5) as a functional Keras model: the tiny stand-in."""
    layers = keras.layers
    inputs = keras.Input((size, size, 3))
    x = layers.Conv2D(width, 7, strides=2, padding="same", use_bias=False, name="stem_conv")(inputs)
    x = layers.BatchNormalization(name="stem_bn")(x)
    x = layers.ReLU(name="stem_relu")(x)
    x = layers.MaxPooling2D(3, strides=2, padding="same", name="stem_pool")(x)
    for s, blocks in enumerate(stages):
        channels = width * 2**s
        for b in range(blocks):
            stride = 2 if s > 0 and b == 0 else 1
            name = f"stage{s + 1}_block{b + 1}"
            shortcut = x
            if stride != 1 or x.shape[-1] != 4 * channels:
                shortcut = layers.Conv2D(
                    4 * channels, 1, strides=stride, use_bias=False, name=f"{name}_short_conv"
                )(x)
                shortcut = layers.BatchNormalization(name=f"{name}_short_bn")(shortcut)
            y = x
            for i, (filters, kernel, step) in enumerate(
                ((channels, 1, 1), (channels, 3, stride), (4 * channels, 1, 1))
            ):
                y = layers.Conv2D(
                    filters, kernel, strides=step, padding="same", use_bias=False,
                    name=f"{name}_conv{i + 1}",
                )(y)  # fmt: skip
                y = layers.BatchNormalization(name=f"{name}_bn{i + 1}")(y)
                if i < 2:
                    y = layers.ReLU(name=f"{name}_relu{i + 1}")(y)
            x = layers.ReLU(name=f"{name}_out")(layers.Add(name=f"{name}_add")([y, shortcut]))
    return keras.Model(inputs, x, name="resnet_tiny")


def _keras_forward_flops(keras, backbone, classes):
    """Forward FLOPs per image (2 per multiply-add) of the convolutions and the head."""
    flops = 0
    for layer in backbone.layers:
        if isinstance(layer, keras.layers.Conv2D):
            kh, kw, cin, cout = layer.kernel.shape
            _, h, w, _ = layer.output.shape
            flops += 2 * h * w * kh * kw * cin * cout
    return flops + 2 * backbone.output.shape[-1] * classes


def run_kerastl(settings):
    """kerastl's fine-tuning step on this process's backend: images/s and the last loss."""
    import keras
    import numpy as np

    import kerastl

    size, classes = settings["size"], settings["classes"]
    # "cpu", not "cpu:0": under "cpu:0" the torch backend makes its variables non-leaf copies.
    device = "gpu:0" if settings["device"] == "gpu" else "cpu"
    previous_policy = keras.config.dtype_policy()
    keras.config.set_dtype_policy(settings["dtype_policy"])
    try:
        with keras.device(device):
            keras.utils.set_random_seed(0)
            if settings["model"] == "resnet50":
                backbone, arch = "resnet50", "auto"
            else:
                backbone, arch = _keras_resnet(keras, size), None
            extractor = kerastl.FeatureExtractor(
                backbone,
                weights=None,
                input_shape=(size, size, 3),
                pooling="avg",
                freeze="none",
                bn="train",
                arch=arch,
            )
            head = kerastl.heads.multiclass(classes)
            model = kerastl.build_model(
                extractor,
                head,
                kerastl.preprocessing.pipeline(extractor, mode="caffe"),
                input_shape=(size, size, 3),
                compile=False,
            )
            optimizer = {"adam": keras.optimizers.Adam, "sgd": keras.optimizers.SGD}[
                settings["optimizer"]
            ](settings["lr"])
            model.compile(
                optimizer=optimizer,
                loss=head.default_loss(),
                metrics=[],
                jit_compile=_jit_compile(settings["keras_jit_compile"]),
            )
            flops = 3 * _keras_forward_flops(keras, extractor.backbone, classes)
            rng = np.random.default_rng(0)

            def batch_of(n):
                x = rng.integers(0, 256, (n, size, size, 3)).astype("float32")
                y = rng.integers(0, classes, (n,)).astype("int32")
                return keras.ops.convert_to_tensor(x), keras.ops.convert_to_tensor(y)

            def step(x, y):
                return float(model.train_on_batch(x, y, return_dict=True)["loss"])

            result = _measure(settings, batch_of, step)
    finally:
        keras.config.set_dtype_policy(previous_policy)
    name = "kerastl resnet50 (keras.applications, v1)"
    if settings["model"] != "resnet50":
        name = "kerastl resnet_tiny (stand-in)"
    return dict(result, model=name, flops_per_image=flops, backend=keras.config.backend())


# === Native PyTorch ===


def _torch_resnet(nn, classes, stages=(3, 4, 6, 3), width=64):
    """ResNet (bottleneck blocks, v1.5) in plain torch.nn: ResNet50 by default."""

    class Bottleneck(nn.Module):
        def __init__(self, cin, channels, stride):
            super().__init__()
            cout = 4 * channels
            self.body = nn.Sequential(
                nn.Conv2d(cin, channels, 1, bias=False),
                nn.BatchNorm2d(channels),
                nn.ReLU(inplace=True),
                nn.Conv2d(channels, channels, 3, stride, 1, bias=False),
                nn.BatchNorm2d(channels),
                nn.ReLU(inplace=True),
                nn.Conv2d(channels, cout, 1, bias=False),
                nn.BatchNorm2d(cout),
            )
            self.shortcut = nn.Identity()
            if stride != 1 or cin != cout:
                self.shortcut = nn.Sequential(
                    nn.Conv2d(cin, cout, 1, stride, bias=False), nn.BatchNorm2d(cout)
                )
            self.relu = nn.ReLU(inplace=True)

        def forward(self, x):
            return self.relu(self.body(x) + self.shortcut(x))

    layers = [
        nn.Conv2d(3, width, 7, 2, 3, bias=False),
        nn.BatchNorm2d(width),
        nn.ReLU(inplace=True),
        nn.MaxPool2d(3, 2, 1),
    ]
    cin = width
    for s, blocks in enumerate(stages):
        for b in range(blocks):
            layers.append(Bottleneck(cin, width * 2**s, 2 if s > 0 and b == 0 else 1))
            cin = 4 * width * 2**s
    layers += [nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(cin, classes)]
    return nn.Sequential(*layers)


def _torch_forward_flops(torch, model, size):
    """Forward FLOPs per image (2 per multiply-add) of the convolutions and linear layers."""
    flops = []

    def count(module, inputs, output):
        if isinstance(module, torch.nn.Conv2d):
            kh, kw = module.kernel_size
            per_output = kh * kw * module.in_channels // module.groups
            flops.append(2 * output[0].numel() * per_output)
        else:
            flops.append(2 * module.in_features * module.out_features)

    hooks = [
        m.register_forward_hook(count)
        for m in model.modules()
        if isinstance(m, (torch.nn.Conv2d, torch.nn.Linear))
    ]
    with torch.no_grad():
        model.eval()(torch.zeros(1, 3, size, size, device=next(model.parameters()).device))
    model.train()
    for hook in hooks:
        hook.remove()
    return sum(flops)


def run_native(settings):
    """The same fine-tuning step written in plain PyTorch: images/s and the last loss."""
    import numpy as np
    import torch

    size, classes = settings["size"], settings["classes"]
    device = torch.device("cuda" if settings["device"] == "gpu" else "cpu")
    torch.manual_seed(0)
    if settings["model"] == "resnet50" and importlib.util.find_spec("torchvision"):
        import torchvision

        net, name = torchvision.models.resnet50(num_classes=classes), "torchvision resnet50 (v1.5)"
    elif settings["model"] == "resnet50":
        net, name = _torch_resnet(torch.nn, classes), "torch.nn resnet50 (v1.5, this script)"
    else:
        net, name = _torch_resnet(torch.nn, classes, (1, 1), 8), "torch.nn resnet_tiny (stand-in)"
    net = net.to(device, memory_format=torch.channels_last)
    flops = 3 * _torch_forward_flops(torch, net, size)
    # Caffe's recipe, as kerastl's pipeline applies it: RGB -> BGR, minus the mean.
    mean = torch.tensor([103.939, 116.779, 123.68], device=device).view(1, 3, 1, 1)

    def forward(x):
        with torch.autocast(device.type, dtype=torch.bfloat16):
            return net(x.flip(1) - mean)

    compiled = forward
    if settings["native_compile"] != "none":
        compiled = torch.compile(forward, backend=settings["native_compile"])
    params = list(net.parameters())
    if settings["optimizer"] == "adam":
        optimizer = torch.optim.Adam(params, settings["lr"], fused=device.type == "cuda")
    else:
        optimizer = torch.optim.SGD(params, settings["lr"])
    rng = np.random.default_rng(0)

    def batch_of(n):
        x = torch.from_numpy(rng.integers(0, 256, (n, 3, size, size)).astype("float32"))
        y = torch.from_numpy(rng.integers(0, classes, (n,)).astype("int64"))
        return x.to(device, memory_format=torch.channels_last), y.to(device)

    def step(x, y):
        loss = torch.nn.functional.cross_entropy(compiled(x).float(), y)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        return loss

    def synced(x, y):
        return float(step(x, y).detach())  # reads the loss: waits for the device

    result = _measure(settings, batch_of, synced, fast_step=step, sync=_torch_sync(torch, device))
    return dict(result, model=name, flops_per_image=flops, compile=settings["native_compile"])


def _torch_sync(torch, device):
    return torch.cuda.synchronize if device.type == "cuda" else (lambda: None)


# === Measurement ===


def _measure(settings, batch_of, step, fast_step=None, sync=None):
    """Finds the batch (largest that fits), warms up, times `steps` steps.

    `step` returns the loss as a float (a device sync); `fast_step`, when given,
    is timed instead, with `sync` once at the end (native torch does not wait
    for the device every step; Keras's `train_on_batch` always does).
    """
    candidates = [settings["batch"]] if settings["batch"] else settings["batches"]
    oom = []
    for batch in candidates:
        try:
            x, y = batch_of(batch)
            start = time.perf_counter()
            for _ in range(settings["warmup"]):
                loss = step(x, y)
            warmup_s = time.perf_counter() - start
            break
        except Exception as error:  # out of memory: the next batch down
            if not _is_oom(error) or batch == candidates[-1]:
                raise
            oom.append(batch)
            x = y = None
            _free_memory()
    start = time.perf_counter()
    if fast_step is None:
        for _ in range(settings["steps"]):
            loss = step(x, y)
    else:
        for _ in range(settings["steps"]):
            last = fast_step(x, y)
        sync()
        loss = float(last.detach())
    elapsed = time.perf_counter() - start
    return {
        "batch": batch,
        "images_per_s": batch * settings["steps"] / elapsed,
        "step_ms": 1000 * elapsed / settings["steps"],
        "loss": loss,
        "warmup_s": warmup_s,
        "oom_batches": oom,
    }


def _device_name(backend, gpu):
    if not gpu:
        return "cpu"
    if backend == "torch" or "torch" in sys.modules:
        import torch

        return torch.cuda.get_device_name(0)
    import jax

    return jax.devices()[0].device_kind


def _child(part, backend, settings, args):
    """Runs one measurement in a fresh process, returns its result."""
    command = [sys.executable, os.path.abspath(__file__), "--part", part, "--device", "gpu"]
    for flag, key in (
        ("--size", "size"),
        ("--steps", "steps"),
        ("--warmup", "warmup"),
        ("--classes", "classes"),
        ("--optimizer", "optimizer"),
        ("--lr", "lr"),
        ("--native-compile", "native_compile"),
        ("--keras-jit-compile", "keras_jit_compile"),
    ):
        command += [flag, str(settings[key])]
    command += ["--batches", ",".join(map(str, settings["batches"]))]
    if settings["batch"]:
        command += ["--batch", str(settings["batch"])]
    env = dict(os.environ, KERAS_BACKEND=backend)
    done = subprocess.run(command, env=env, stdout=subprocess.PIPE, text=True, check=False)
    lines = [line for line in done.stdout.splitlines() if line.startswith(RESULT)]
    if done.returncode != 0 or not lines:
        return {"skipped": f"the {part} run on {backend} failed (exit {done.returncode})"}
    return json.loads(lines[-1][len(RESULT) :])


def _run_part(part, settings):
    try:
        return run_kerastl(settings) if part == "kerastl" else run_native(settings)
    except Exception as error:
        if settings["device"] == "gpu" and _is_oom(error):
            return {"skipped": f"out of memory at every batch: {error}"[:500]}
        raise


def main(argv=None):
    args = parse_args(argv)
    current = _current_backend()
    if args.part:  # a child process: one measurement, one result line
        settings = _settings(args, gpu=args.device == "gpu")
        result = _run_part(args.part, settings)
        result["device_name"] = _device_name(current, settings["device"] == "gpu")
        print(RESULT + json.dumps(result), flush=True)
        return result

    backends = args.backends.split(",") if args.backends else [current]
    _check_backends(backends)
    gpu = not args.tiny and _gpu_visible(current)
    if args.gpu and not gpu:
        raise SystemExit(f"--gpu: no GPU visible to {current}.")
    if not gpu and backends != [current]:
        raise SystemExit(
            f"--backends {args.backends}: without a GPU only this process's backend "
            f"({current}) runs. Received: backends={backends}"
        )
    settings = _settings(args, gpu)
    native_wanted = args.native == "yes" or (
        args.native == "auto" and importlib.util.find_spec("torch") is not None
    )

    kerastl_runs, native_runs, by_batch = {}, {}, {}
    device_name = "cpu"
    for backend in backends:
        if gpu:
            kerastl_runs[backend] = _child("kerastl", backend, settings, args)
        else:
            kerastl_runs[backend] = run_kerastl(settings)
        device_name = kerastl_runs[backend].pop("device_name", device_name)
    for backend, run in kerastl_runs.items():
        if not native_wanted:
            native_runs[backend] = {"skipped": "torch is not installed (or --native no)"}
            continue
        batch = run.get("batch", settings["batch"])
        if batch not in by_batch:
            native_settings = dict(settings, batch=batch)
            if gpu:
                by_batch[batch] = _child("native", "torch", native_settings, args)
            else:
                by_batch[batch] = run_native(native_settings)
            device_name = by_batch[batch].pop("device_name", device_name)
        native_runs[backend] = by_batch[batch]

    peak = _peak_tflops(device_name, args.peak_tflops) if gpu else None
    for run in [*kerastl_runs.values(), *by_batch.values()]:
        if "images_per_s" in run:
            run["mfu"] = (
                run["flops_per_image"] * run["images_per_s"] / (peak * 1e12) if peak else None
            )
    ratios = {
        backend: run["images_per_s"] / native_runs[backend]["images_per_s"]
        if "images_per_s" in run and "images_per_s" in native_runs[backend]
        else None
        for backend, run in kerastl_runs.items()
    }
    measured = [b for b, run in kerastl_runs.items() if "images_per_s" in run]
    fastest = None
    if measured:
        best = max(measured, key=lambda b: kerastl_runs[b]["images_per_s"])
        ratio, mfu = ratios[best], kerastl_runs[best]["mfu"]
        fastest = {
            "backend": best,
            "ratio_to_native": ratio,
            "mfu": mfu,
            "goal_met": None
            if ratio is None or mfu is None
            else ratio >= GOAL["ratio_to_native"] and mfu >= GOAL["mfu"],
        }
    report = {
        "benchmark": BENCHMARK,
        "mode": "gpu" if gpu else "tiny",
        "device": device_name,
        "peak_tflops": peak,
        "config": settings,
        "kerastl": kerastl_runs,
        "native": native_runs,
        "ratio_to_native": ratios,
        "fastest": fastest,
    }
    text = json.dumps(report, indent=2)
    print(text)
    if args.out:
        with open(args.out, "w") as f:
            f.write(text + "\n")
    failed = [
        f"{side}[{backend}]"
        for side, runs in (("kerastl", kerastl_runs), ("native", by_batch))
        for backend, run in runs.items()
        if "skipped" in run
    ]
    if gpu and failed:  # the nox session must not pass on a run that did not happen
        raise SystemExit(f"gpu_resnet50: {', '.join(failed)} did not run (see above).")
    return report


if __name__ == "__main__":
    main()
