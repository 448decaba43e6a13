"""Data in: numpy arrays, class folders, tf.data and torch datasets, single images."""

from kerastl.data.image_batches import MIX_MODES, ImageBatches
from kerastl.data.images import convert_channels, read_image, resize_image
from kerastl.data.prepare_image import load_image, prepare_image
from kerastl.data.sources import (
    IMAGE_EXTENSIONS,
    LABEL_MODES,
    from_arrays,
    from_directory,
    from_tf_dataset,
    from_torch_dataset,
)

__all__ = [
    "IMAGE_EXTENSIONS",
    "LABEL_MODES",
    "MIX_MODES",
    "ImageBatches",
    "convert_channels",
    "from_arrays",
    "from_directory",
    "from_tf_dataset",
    "from_torch_dataset",
    "load_image",
    "prepare_image",
    "read_image",
    "resize_image",
]
