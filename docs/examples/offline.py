"""What the example scripts share: their command line and, offline, real photos and
BatchNorm statistics for a backbone with random weights.

The scripts import it (`from offline import ...`): copy it next to a script you copy.

Offline there are no ImageNet weights. A frozen, randomly initialised network gives
features of ~1e-11 (its BatchNorm layers still hold their initial statistics), so
`calibrate_batchnorm` measures the statistics on the example's own images first: the
features are then random projections that a head can learn from, and the examples'
accuracies show that the workflow runs, not what transfer learning gives.
"""

import argparse

import keras
import numpy as np

import kerastl


def example_parser(doc, out):
    """The examples' common options: `--online`, `--short` and `--out` (default `out`)."""
    parser = argparse.ArgumentParser(description=doc.splitlines()[0])
    parser.add_argument("--online", action="store_true", help="the real data and weights")
    parser.add_argument("--short", action="store_true", help="a tiny run: smoke test only")
    parser.add_argument("--out", default=out, help="where files go")
    return parser


def photos(names=None):
    """Colour photos that ship with scikit-image and scikit-learn, by name (all eight, or
    those of `names`, in that order)."""
    from skimage import data
    from sklearn.datasets import load_sample_images

    china, flower = load_sample_images().images
    every = {
        "cat": data.chelsea,
        "coffee": data.coffee,
        "astronaut": data.astronaut,
        "rocket": data.rocket,
        "galaxies": data.hubble_deep_field,
        "tissue": data.immunohistochemistry,
        "temple": lambda: china,
        "flower": lambda: flower,
    }
    return {name: every[name]() for name in (names or every)}


def photo_crops(photos, size, per_class, seed, sides=(3, 1)):
    """`per_class` random square crops of each photo (one class per photo), resized to
    `size` x `size`, 0..255 float32: `(images, labels)`.

    A crop's side is drawn between the photo's shorter side divided by `sides[0]` and
    divided by `sides[1]`.
    """
    rng = np.random.default_rng(seed)
    images, labels = [], []
    for label, photo in enumerate(photos.values()):
        h, w = photo.shape[:2]
        for _ in range(per_class):
            side = int(rng.integers(min(h, w) // sides[0], min(h, w) // sides[1]))
            top, left = rng.integers(0, h - side + 1), rng.integers(0, w - side + 1)
            crop = photo[top : top + side, left : left + side].astype("float32")
            images.append(keras.ops.convert_to_numpy(keras.ops.image.resize(crop, (size, size))))
            labels.append(label)
    return np.stack(images), np.array(labels)


def calibrate_batchnorm(extractor, images):
    """BatchNorm statistics of `images` (raw 0..255) in the extractor's backbone: one pass.

    The images go through the extractor's own preprocessing (`kerastl.preprocessing.
    pipeline`), resized to its input size, as they will in the model.
    """
    preprocess = kerastl.preprocessing.pipeline(extractor)
    bns = [
        la for la in extractor.backbone.layers if isinstance(la, keras.layers.BatchNormalization)
    ]
    saved = [(bn, bn.momentum, bn.trainable) for bn in bns]
    for bn in bns:
        bn.momentum, bn.trainable = 0.0, True
    extractor.backbone(preprocess(images), training=True)
    for bn, momentum, trainable in saved:
        bn.momentum, bn.trainable = momentum, trainable
