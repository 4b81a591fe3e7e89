"""The models: the notebook's VGG built from its layer list (`vgg`) and a CIFAR ResNet-18
(`resnet`)."""

from wdjax.models.resnet import BasicBlock, ResNet18
from wdjax.models.vgg import (
    VGG,
    BatchNorm,
    Conv,
    ConvLayer,
    init_variables,
    kernel_init,
    layer_kind,
    vgg_conf,
    weight_layers,
)

__all__ = ["VGG", "BasicBlock", "BatchNorm", "Conv", "ConvLayer", "ResNet18", "init_variables",
           "kernel_init", "layer_kind", "vgg_conf", "weight_layers"]
