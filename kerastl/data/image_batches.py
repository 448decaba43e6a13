import math

import keras
import numpy as np

from kerastl._checks import check_positive_int
from kerastl.data.prepare_image import load_image

MIX_MODES = (None, "mixup", "cutmix")


class ImageBatches(keras.utils.PyDataset):
    """Batches of images (and labels) that `fit`, `evaluate` and `predict` take on every backend.

    A `keras.utils.PyDataset`: Keras reads it natively on TensorFlow, JAX and
    PyTorch. Images come from an array or are read from files batch by batch;
    the order is reshuffled every epoch when `shuffle`, and `workers > 1`
    prefetches batches in threads. Made by `kerastl.data.from_arrays` and
    `from_directory`. Images read from files come as float32, raw 0..255
    (`kerastl.data.load_image`: 16-bit files are scaled, alpha is dropped).

    Args:
        images: an array `(n, h, w, c)` or a list of image file paths.
        labels: an array of `n` labels, or None (images only, for `predict`).
        batch_size: images per batch.
        shuffle: reshuffle the order every epoch.
        seed: seed of the shuffling and of `mix`.
        mix: `None`, `"mixup"` or `"cutmix"`: mixes pairs of images and their
            labels (`keras.layers.MixUp` / `CutMix`) in every batch. Needs
            one-hot or multi-hot float labels.
        image_size: the size files are read at (see `from_directory`).
        color_mode: how files are read (see `from_directory`).
        class_names: names of the classes, in label order.
        workers: as `keras.utils.PyDataset`.
        use_multiprocessing: as `keras.utils.PyDataset`.
        max_queue_size: as `keras.utils.PyDataset`.
    """

    def __init__(
        self,
        images,
        labels=None,
        batch_size=32,
        shuffle=False,
        seed=None,
        mix=None,
        image_size=None,
        color_mode="rgb",
        class_names=None,
        workers=1,
        use_multiprocessing=False,
        max_queue_size=10,
    ):
        check_positive_int(batch_size, "batch_size")
        check_positive_int(workers, "workers")
        if not isinstance(images, np.ndarray) and not isinstance(images, (list, tuple)):
            raise TypeError(
                "`images` must be an array (n, h, w, c) or a list of image file paths. "
                f"Received: images of type {type(images).__name__}"
            )
        if labels is not None and (np.ndim(labels) == 0 or len(labels) != len(images)):
            raise ValueError(
                f"`labels` must be one per image ({len(images)} images). "
                f"Received: labels of shape {np.shape(labels)}"
            )
        super().__init__(
            workers=workers, use_multiprocessing=use_multiprocessing, max_queue_size=max_queue_size
        )
        if mix not in MIX_MODES:
            raise ValueError(f"`mix` must be one of {MIX_MODES}. Received: mix={mix!r}")
        self.images = images
        self.labels = labels
        self.batch_size = batch_size
        self.shuffle = shuffle
        self.mix = mix
        self.image_size = image_size
        self.color_mode = color_mode
        self.class_names = class_names
        self._rng = np.random.default_rng(seed)
        self._order = np.arange(len(images))
        if shuffle:
            self._rng.shuffle(self._order)
        self._mixer = None
        if mix is not None:
            mixer = keras.layers.MixUp if mix == "mixup" else keras.layers.CutMix
            self._mixer = mixer(seed=seed)

    def __len__(self):
        return math.ceil(len(self.images) / self.batch_size)

    def __getitem__(self, index):
        rows = self._order[index * self.batch_size : (index + 1) * self.batch_size]
        if isinstance(self.images, np.ndarray):
            x = self.images[rows]
        else:
            # float32 whatever the files hold, so every batch has one dtype (TensorFlow
            # fixes the batch spec from the first batches) and 16-bit files keep precision.
            x = np.stack(
                [load_image(self.images[i], self.image_size, self.color_mode) for i in rows]
            ).astype("float32")
        if self.labels is None:
            return (x,)
        y = self.labels[rows]
        if self._mixer is not None:
            mixed = self._mixer({"images": x.astype("float32"), "labels": y}, training=True)
            x = keras.ops.convert_to_numpy(mixed["images"])
            y = keras.ops.convert_to_numpy(mixed["labels"])
        return x, y

    def on_epoch_end(self):
        if self.shuffle:
            self._rng.shuffle(self._order)
