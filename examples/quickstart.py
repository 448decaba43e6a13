"""Transfer learning on real offline data, in one minute on a CPU.

A small CNN is pretrained on handwritten digits 0-4 (sklearn's 1,797 scanned digits),
saved as a .keras file, then reused as a frozen `kerastl.FeatureExtractor` for a new
task, digits 5-9, with only 100 labelled examples. Runs on any backend.
"""

import os
import tempfile

import keras
import numpy as np
from sklearn.datasets import load_digits

import kerastl


def digits_32px():
    digits = load_digits()
    images = np.kron(digits.images, np.ones((4, 4)))[..., None] / 16.0  # 8x8 -> 32x32
    return images.astype("float32"), digits.target


def pretrain(images, labels, path):
    inputs = keras.Input((32, 32, 1))
    x = inputs
    for i, filters in enumerate((16, 32, 64)):
        x = keras.layers.Conv2D(filters, 3, padding="same", name=f"stage{i}_conv")(x)
        x = keras.layers.BatchNormalization(name=f"stage{i}_bn")(x)
        x = keras.layers.ReLU(name=f"stage{i}_relu")(x)
        x = keras.layers.MaxPooling2D(name=f"stage{i}_pool")(x)
    features = keras.layers.GlobalAveragePooling2D(name="features")(x)
    outputs = keras.layers.Dense(5, activation="softmax", name="classifier")(features)
    model = keras.Model(inputs, outputs, name="digits_0_4")
    model.compile("adam", "sparse_categorical_crossentropy", metrics=["accuracy"])
    model.fit(images, labels, epochs=8, batch_size=32, verbose=0)
    model.save(path)
    return model


def main():
    keras.utils.set_random_seed(0)
    images, labels = digits_32px()
    old, new = labels < 5, labels >= 5
    workdir = tempfile.mkdtemp()
    path = os.path.join(workdir, "digits_0_4.keras")
    pretrain(images[old], labels[old], path)
    print(f"pretrained on digits 0-4 ({old.sum()} images), saved to {path}")

    # The pretrained network, cut before its classifier, frozen.
    extractor = kerastl.FeatureExtractor(path, cut="features", freeze="all")
    model = keras.Sequential(
        [extractor, keras.layers.Dense(5, activation="softmax")], name="digits_5_9"
    )
    model.compile(
        keras.optimizers.Adam(1e-2), "sparse_categorical_crossentropy", metrics=["accuracy"]
    )
    x, y = images[new], labels[new] - 5
    order = np.random.default_rng(0).permutation(len(x))
    train, test = order[:100], order[100:]
    _, before = model.evaluate(x[test], y[test], verbose=0)
    model.fit(x[train], y[train], epochs=60, batch_size=20, verbose=0)
    _, after = model.evaluate(x[test], y[test], verbose=0)
    trainable = sum(int(np.prod(w.shape)) for w in model.trainable_weights)
    print(
        f"backend {keras.config.backend()}: digits 5-9 from 100 examples, "
        f"{trainable} trainable parameters"
    )
    print(f"accuracy before training {before:.3f}, after {after:.3f} ({len(test)} test images)")


if __name__ == "__main__":
    main()
