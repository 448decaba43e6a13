"""Input recipes of pretrained weights, as `keras.applications` names them."""

# caffe: RGB -> BGR, ImageNet mean subtracted, no scaling.
# tf:    x / 127.5 - 1.
# torch: x / 255, ImageNet mean and std per channel.
# none:  the model rescales raw 0..255 inputs itself (EfficientNet, ConvNeXt, ...).
PREPROCESSING_MODES = ("caffe", "tf", "torch", "none")

IMAGENET_MEAN_RGB = (0.485, 0.456, 0.406)
IMAGENET_STD_RGB = (0.229, 0.224, 0.225)
CAFFE_MEAN_BGR = (103.939, 116.779, 123.68)
