"""Models one trial can train, by name: `build_model(name, in_channels=..., ...)`.

The paper's toy nets (`toy-cnn`, `mnist-toy`), an `mlp` for the 8x8 digits,
ResNet-20 and ResNet-18 for 32x32 images, wide ResNets `wrn-D-W`, and
torchvision's `resnet50`. See `build_model` for options.
"""

from trainers.models._registry import MODEL_NAMES, WRN_PATTERN, build_model, check_model_name

__all__ = ["MODEL_NAMES", "WRN_PATTERN", "build_model", "check_model_name"]
