"""build_model: every model builds for its dataset's shapes and trains (forward + backward)."""

from __future__ import annotations

import math

import pytest
import torch
from torch import nn
from torch.nn.modules.batchnorm import _BatchNorm

from trainers.models import MODEL_NAMES, WRN_PATTERN, build_model, check_model_name

# Small batches through resnet50 and friends on a shared 2-core box: a second OpenMP
# thread mostly waits for the core another process holds.
pytestmark = pytest.mark.usefixtures("one_torch_thread")

# (model, in_channels, image_size, num_classes): the datasets each model is meant for.
SHAPES = [
    ("mlp", 1, 8, 10),
    ("mlp", 1, 28, 10),
    ("toy-cnn", 3, 32, 10),
    ("toy-cnn", 1, 8, 10),
    ("toy-cnn", 1, 28, 10),
    ("mnist-toy", 1, 28, 10),
    ("mnist-toy", 1, 8, 10),
    ("mnist-toy", 3, 32, 100),
    ("resnet20", 3, 32, 10),
    ("resnet20", 1, 8, 10),
    ("resnet18", 3, 32, 100),
    ("wrn-16-4", 3, 32, 100),
    ("wrn-10-1", 1, 8, 10),
    ("resnet50", 3, 32, 10),
    ("resnet50", 1, 16, 10),
]


def _params(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


@pytest.mark.parametrize(("name", "channels", "size", "classes"), SHAPES)
def test_forward_backward_for_dataset_shapes(name, channels, size, classes):
    torch.manual_seed(0)
    model = build_model(name, in_channels=channels, image_size=size, num_classes=classes)
    x = torch.randn(2, channels, size, size)
    out = model(x)
    assert out.shape == (2, classes)
    out.logsumexp(dim=1).mean().backward()
    for pname, param in model.named_parameters():
        assert param.grad is not None, f"{name}: no gradient for {pname}"
        assert torch.isfinite(param.grad).all(), f"{name}: non-finite gradient for {pname}"


def test_parameter_counts_match_the_reference_architectures():
    def count(name: str, classes: int = 10, **options) -> int:
        model = build_model(name, in_channels=3, image_size=32, num_classes=classes, **options)
        return _params(model)

    assert count("resnet20") == 269_722  # He et al.: 0.27M
    assert count("resnet20", shortcut="B") > count("resnet20")  # B adds 1x1 projections
    assert count("resnet18") == 11_173_962  # CIFAR ResNet-18: 11.2M
    assert abs(count("wrn-16-4") - 2.75e6) < 0.01e6  # Zagoruyko & Komodakis: 2.7M
    assert count("resnet50") == 25_557_032 - 990 * 2048 - 990  # torchvision's, with 10 classes


def test_toy_net_fc_inputs_follow_the_image_size():
    def fc_in(name: str, channels: int, size: int) -> int:
        return build_model(
            name, in_channels=channels, image_size=size, num_classes=10
        ).fc.in_features

    assert fc_in("toy-cnn", 3, 32) == 1024
    assert fc_in("mnist-toy", 1, 28) == 1568
    assert fc_in("toy-cnn", 1, 8) == 64 * 1 * 1
    assert fc_in("mnist-toy", 1, 8) == 32 * 2 * 2
    assert fc_in("toy-cnn", 3, 28) == 64 * 4 * 4


def test_toy_cnn_is_the_papers_layer_list():
    model = build_model("toy-cnn", in_channels=3, image_size=32, num_classes=10)
    convs = [
        (m.in_channels, m.out_channels, m.kernel_size, m.stride)
        for m in model.modules()
        if isinstance(m, nn.Conv2d)
    ]
    assert sorted(convs) == sorted(
        [
            (3, 8, (3, 3), (1, 1)),
            (8, 16, (3, 3), (2, 2)),
            (8, 16, (1, 1), (2, 2)),
            (16, 32, (3, 3), (2, 2)),
            (32, 64, (3, 3), (2, 2)),
        ]
    )
    assert sum(isinstance(m, nn.BatchNorm2d) for m in model.modules()) == 5
    assert [m.p for m in model.modules() if isinstance(m, nn.Dropout)] == [0.2]
    mnist = build_model("mnist-toy", in_channels=1, image_size=28, num_classes=10)
    assert not any(isinstance(m, _BatchNorm) for m in mnist.modules())
    assert sum(isinstance(m, nn.Conv2d) for m in mnist.modules()) == 3


@pytest.mark.parametrize("name", ["toy-cnn", "resnet20", "resnet18", "wrn-10-2", "resnet50"])
def test_batchnorm_false_removes_every_bn(name):
    with_bn = build_model(name, in_channels=3, image_size=32, num_classes=10)
    assert any(isinstance(m, _BatchNorm) for m in with_bn.modules())
    model = build_model(name, in_channels=3, image_size=32, num_classes=10, batchnorm=False)
    assert not any(isinstance(m, _BatchNorm) for m in model.modules())
    norm_params = sum(
        p.numel() for m in with_bn.modules() if isinstance(m, _BatchNorm) for p in m.parameters()
    )
    assert _params(model) == _params(with_bn) - norm_params
    model.train()
    assert model(torch.randn(2, 3, 32, 32)).shape == (2, 10)


def test_unknown_name_lists_the_choices():
    with pytest.raises(ValueError) as info:
        build_model("resnet-20", in_channels=3, image_size=32, num_classes=10)
    message = str(info.value)
    assert "'resnet-20'" in message
    for name in (*MODEL_NAMES, WRN_PATTERN):
        assert name in message
    with pytest.raises(ValueError, match="toy-cnn"):
        check_model_name("vgg16")
    check_model_name("wrn-28-10")  # a valid pattern needs no build


@pytest.mark.parametrize("name", ["wrn-15-4", "wrn-4-2", "wrn-16-0"])
def test_wide_resnet_names_are_validated(name):
    with pytest.raises(ValueError, match="6n\\+4"):
        build_model(name, in_channels=3, image_size=32, num_classes=10)


def test_wide_resnet_structure():
    model = build_model("wrn-16-4", in_channels=3, image_size=32, num_classes=100, dropout=0.3)
    widths = sorted({m.out_channels for m in model.modules() if isinstance(m, nn.Conv2d)})
    assert widths == [16, 64, 128, 256]
    blocks = [m for m in model.modules() if type(m).__name__ == "WideBlock"]
    assert len(blocks) == 3 * (16 - 4) // 6
    assert all(b.dropout.p == 0.3 for b in blocks)


def test_bad_options_and_shapes_are_value_errors():
    with pytest.raises(ValueError, match="does not take option.*widht.*takes: hidden"):
        build_model("mlp", in_channels=1, image_size=8, num_classes=10, widht=3)
    with pytest.raises(ValueError, match="image_size"):
        build_model("toy-cnn", in_channels=3, image_size=0, num_classes=10)
    with pytest.raises(ValueError, match="num_classes"):
        build_model("toy-cnn", in_channels=3, image_size=32, num_classes=1)
    with pytest.raises(ValueError, match="shortcut"):
        build_model("resnet20", in_channels=3, image_size=32, num_classes=10, shortcut="C")
    mlp = build_model("mlp", in_channels=1, image_size=8, num_classes=10, hidden=(32,))
    assert [m.out_features for m in mlp.modules() if isinstance(m, nn.Linear)] == [32, 10]


def test_resnet20_uses_he_normal_init():
    torch.manual_seed(0)
    model = build_model("resnet20", in_channels=3, image_size=32, num_classes=10)
    conv = model.stages[2][1].conv1  # 64 x 64 x 3 x 3
    expected = math.sqrt(2.0 / (64 * 9))
    assert abs(conv.weight.std().item() / expected - 1) < 0.05


@pytest.mark.parametrize("name", ["toy-cnn", "resnet20"])
def test_channels_last_and_bf16_autocast(name):
    torch.manual_seed(0)
    model = build_model(name, in_channels=3, image_size=32, num_classes=10).eval()
    x = torch.randn(4, 3, 32, 32)
    reference = model(x)
    model = model.to(memory_format=torch.channels_last)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        out = model(x.to(memory_format=torch.channels_last))
    assert out.dtype == torch.bfloat16
    torch.testing.assert_close(out.float(), reference, atol=0.1, rtol=0.1)


def test_compiles_without_graph_breaks():
    model = build_model("resnet20", in_channels=3, image_size=32, num_classes=10)
    compiled = torch.compile(model, backend="eager", fullgraph=True)  # dynamo capture only
    x = torch.randn(2, 3, 32, 32)
    torch.testing.assert_close(compiled(x), model(x))
