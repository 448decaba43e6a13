"""Data in: numpy arrays, class folders, tf.data and torch datasets, single images.

`adapt` is the one door every consumer (`fine_tune`, `cache_features`,
`lr_find`, `rank_backbones`) takes data through: a `DataAdapter`.
"""

from kerastl.data.adapter import DataAdapter, adapt
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
    "DataAdapter",
    "IMAGE_EXTENSIONS",
    "LABEL_MODES",
    "MIX_MODES",
    "ImageBatches",
    "adapt",
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
