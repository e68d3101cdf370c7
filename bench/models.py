"""Fourteen CNNs in plain ``torch.nn`` (no torchvision), for ``bench/torch_models.py``.

Each builder follows the published architecture; the ImageNet models follow torchvision's
definitions layer for layer, so that their parameter counts are torchvision's documented ones
(tests/interop/test_bench_models.py checks them). ``MODELS`` maps a name to a :class:`Spec`:
the builder, the input size, the batch the benchmark uses and the task (``'classify'``: logits
of shape (N, classes); ``'segment'``: per-pixel logits (N, classes, H, W)).

Batches (float32, 2 threads: the whole benchmark in a few minutes on 2 cores): 2 for the
ImageNet-size models, 4 for the context network's 64x64x64 feature maps, 16 for the CIFAR
models, 32 for LeNet-5.
"""
import collections

import torch
import torch.nn as nn
import torch.nn.functional as TF

Spec = collections.namedtuple("Spec", "build input_size batch task")


def _bn_relu_conv(cin, cout, k, stride=1, padding=0, eps=1e-5, act=nn.ReLU, **kw):
    """conv (no bias) + BatchNorm + activation, the building block of most models here."""
    return nn.Sequential(nn.Conv2d(cin, cout, k, stride, padding, bias=False, **kw),
                         nn.BatchNorm2d(cout, eps=eps), act(inplace=True))


# ------------------------------------------------------------------------------ ResNet-18
class BasicBlock(nn.Module):
    def __init__(self, cin, cout, stride):
        super().__init__()
        self.conv1 = nn.Conv2d(cin, cout, 3, stride, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(cout)
        self.conv2 = nn.Conv2d(cout, cout, 3, 1, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(cout)
        self.downsample = None
        if stride != 1 or cin != cout:
            self.downsample = nn.Sequential(nn.Conv2d(cin, cout, 1, stride, bias=False),
                                            nn.BatchNorm2d(cout))

    def forward(self, x):
        out = TF.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        identity = x if self.downsample is None else self.downsample(x)
        return TF.relu(out + identity)


def _resnet18_body(stem, classes):
    layers, cin = [], 64
    for cout, stride in ((64, 1), (128, 2), (256, 2), (512, 2)):
        layers += [BasicBlock(cin, cout, stride), BasicBlock(cout, cout, 1)]
        cin = cout
    return nn.Sequential(*stem, *layers, nn.AdaptiveAvgPool2d(1), nn.Flatten(),
                         nn.Linear(512, classes))


def resnet18(classes=1000):
    """ResNet-18 (He et al. 2016; torchvision's resnet18): 11,689,512 parameters."""
    return _resnet18_body([nn.Conv2d(3, 64, 7, 2, 3, bias=False), nn.BatchNorm2d(64),
                           nn.ReLU(inplace=True), nn.MaxPool2d(3, 2, 1)], classes)


def cifar_resnet18(classes=10):
    """ResNet-18 for 32x32 images: 3x3 stem, stride 1, no max pooling (the common CIFAR-10
    variant, e.g. kuangliu/pytorch-cifar): 11,173,962 parameters."""
    return _resnet18_body([nn.Conv2d(3, 64, 3, 1, 1, bias=False), nn.BatchNorm2d(64),
                           nn.ReLU(inplace=True)], classes)


# ------------------------------------------------------------------------------ AlexNet
def alexnet(classes=1000):
    """AlexNet, torchvision's one-GPU variant (Krizhevsky 2014): 61,100,840 parameters."""
    return nn.Sequential(
        nn.Conv2d(3, 64, 11, 4, 2), nn.ReLU(inplace=True), nn.MaxPool2d(3, 2),
        nn.Conv2d(64, 192, 5, padding=2), nn.ReLU(inplace=True), nn.MaxPool2d(3, 2),
        nn.Conv2d(192, 384, 3, padding=1), nn.ReLU(inplace=True),
        nn.Conv2d(384, 256, 3, padding=1), nn.ReLU(inplace=True),
        nn.Conv2d(256, 256, 3, padding=1), nn.ReLU(inplace=True), nn.MaxPool2d(3, 2),
        nn.AdaptiveAvgPool2d(6), nn.Flatten(),
        nn.Dropout(0.5), nn.Linear(256 * 36, 4096), nn.ReLU(inplace=True),
        nn.Dropout(0.5), nn.Linear(4096, 4096), nn.ReLU(inplace=True), nn.Linear(4096, classes),
    )


# ------------------------------------------------------------------------------ MobileNetV2
class InvertedResidualV2(nn.Module):
    def __init__(self, cin, cout, stride, expand):
        super().__init__()
        hidden = cin * expand
        layers = [] if expand == 1 else [_bn_relu_conv(cin, hidden, 1, act=nn.ReLU6)]
        layers += [_bn_relu_conv(hidden, hidden, 3, stride, 1, groups=hidden, act=nn.ReLU6),
                   nn.Conv2d(hidden, cout, 1, bias=False), nn.BatchNorm2d(cout)]
        self.conv = nn.Sequential(*layers)
        self.residual = stride == 1 and cin == cout

    def forward(self, x):
        return x + self.conv(x) if self.residual else self.conv(x)


def mobilenet_v2(classes=1000):
    """MobileNetV2 (Sandler et al. 2018; torchvision's mobilenet_v2): 3,504,872 parameters."""
    layers, cin = [_bn_relu_conv(3, 32, 3, 2, 1, act=nn.ReLU6)], 32
    for t, c, n, s in ((1, 16, 1, 1), (6, 24, 2, 2), (6, 32, 3, 2), (6, 64, 4, 2),
                       (6, 96, 3, 1), (6, 160, 3, 2), (6, 320, 1, 1)):
        for i in range(n):
            layers.append(InvertedResidualV2(cin, c, s if i == 0 else 1, t))
            cin = c
    layers.append(_bn_relu_conv(cin, 1280, 1, act=nn.ReLU6))
    return nn.Sequential(*layers, nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Dropout(0.2),
                         nn.Linear(1280, classes))


# ------------------------------------------------------------------------------ GoogLeNet
class Concat(nn.Module):
    """Runs each branch on the input and concatenates the results along the channels."""

    def __init__(self, *branches):
        super().__init__()
        self.branches = nn.ModuleList(branches)

    def forward(self, x):
        return torch.cat([branch(x) for branch in self.branches], 1)


def _googlenet_conv(cin, cout, k, stride=1, padding=0):
    return _bn_relu_conv(cin, cout, k, stride, padding, eps=1e-3)


def _googlenet_inception(cin, c1, c3r, c3, c5r, c5, pool):
    # torchvision's GoogLeNet uses a 3x3 convolution in the "5x5" branch (kept for its weights)
    return Concat(
        _googlenet_conv(cin, c1, 1),
        nn.Sequential(_googlenet_conv(cin, c3r, 1), _googlenet_conv(c3r, c3, 3, padding=1)),
        nn.Sequential(_googlenet_conv(cin, c5r, 1), _googlenet_conv(c5r, c5, 3, padding=1)),
        nn.Sequential(nn.MaxPool2d(3, 1, 1, ceil_mode=True), _googlenet_conv(cin, pool, 1)),
    )


def googlenet(classes=1000):
    """GoogLeNet (Szegedy et al. 2015; torchvision's googlenet, batch-normalised), without the
    auxiliary classifiers: 6,624,904 parameters."""
    inc = _googlenet_inception
    return nn.Sequential(
        _googlenet_conv(3, 64, 7, 2, 3), nn.MaxPool2d(3, 2, ceil_mode=True),
        _googlenet_conv(64, 64, 1), _googlenet_conv(64, 192, 3, padding=1),
        nn.MaxPool2d(3, 2, ceil_mode=True),
        inc(192, 64, 96, 128, 16, 32, 32), inc(256, 128, 128, 192, 32, 96, 64),
        nn.MaxPool2d(3, 2, ceil_mode=True),
        inc(480, 192, 96, 208, 16, 48, 64), inc(512, 160, 112, 224, 24, 64, 64),
        inc(512, 128, 128, 256, 24, 64, 64), inc(512, 112, 144, 288, 32, 64, 64),
        inc(528, 256, 160, 320, 32, 128, 128), nn.MaxPool2d(2, 2, ceil_mode=True),
        inc(832, 256, 160, 320, 32, 128, 128), inc(832, 384, 192, 384, 48, 128, 128),
        nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Dropout(0.2), nn.Linear(1024, classes),
    )


# ------------------------------------------------------------------------------ SqueezeNet 1.1
class Fire(nn.Module):
    def __init__(self, cin, squeeze, e1, e3):
        super().__init__()
        self.squeeze = nn.Conv2d(cin, squeeze, 1)
        self.expand1x1 = nn.Conv2d(squeeze, e1, 1)
        self.expand3x3 = nn.Conv2d(squeeze, e3, 3, padding=1)

    def forward(self, x):
        x = TF.relu(self.squeeze(x))
        return torch.cat([TF.relu(self.expand1x1(x)), TF.relu(self.expand3x3(x))], 1)


def squeezenet1_1(classes=1000):
    """SqueezeNet 1.1 (Iandola et al. 2016; torchvision's squeezenet1_1): 1,235,496
    parameters."""
    return nn.Sequential(
        nn.Conv2d(3, 64, 3, 2), nn.ReLU(inplace=True), nn.MaxPool2d(3, 2, ceil_mode=True),
        Fire(64, 16, 64, 64), Fire(128, 16, 64, 64), nn.MaxPool2d(3, 2, ceil_mode=True),
        Fire(128, 32, 128, 128), Fire(256, 32, 128, 128), nn.MaxPool2d(3, 2, ceil_mode=True),
        Fire(256, 48, 192, 192), Fire(384, 48, 192, 192), Fire(384, 64, 256, 256),
        Fire(512, 64, 256, 256),
        nn.Dropout(0.5), nn.Conv2d(512, classes, 1), nn.ReLU(inplace=True),
        nn.AdaptiveAvgPool2d(1), nn.Flatten(),
    )


# ------------------------------------------------------------------------------ ShuffleNetV2
class ShuffleUnit(nn.Module):
    def __init__(self, cin, cout, stride):
        super().__init__()
        half = cout // 2
        self.stride = stride
        if stride > 1:
            self.branch1 = nn.Sequential(
                nn.Conv2d(cin, cin, 3, stride, 1, groups=cin, bias=False), nn.BatchNorm2d(cin),
                _bn_relu_conv(cin, half, 1))
        self.branch2 = nn.Sequential(
            _bn_relu_conv(cin if stride > 1 else half, half, 1),
            nn.Conv2d(half, half, 3, stride, 1, groups=half, bias=False), nn.BatchNorm2d(half),
            _bn_relu_conv(half, half, 1))

    def forward(self, x):
        if self.stride == 1:
            x1, x2 = x.chunk(2, dim=1)
            out = torch.cat([x1, self.branch2(x2)], 1)
        else:
            out = torch.cat([self.branch1(x), self.branch2(x)], 1)
        n, c, h, w = out.shape  # channel shuffle, 2 groups
        return out.view(n, 2, c // 2, h, w).transpose(1, 2).reshape(n, c, h, w)


class GlobalMean(nn.Module):
    def forward(self, x):
        return x.mean((2, 3))


def shufflenet_v2_x1_0(classes=1000):
    """ShuffleNetV2 x1.0 (Ma et al. 2018; torchvision's shufflenet_v2_x1_0): 2,278,604
    parameters."""
    layers, cin = [_bn_relu_conv(3, 24, 3, 2, 1), nn.MaxPool2d(3, 2, 1)], 24
    for repeats, cout in ((4, 116), (8, 232), (4, 464)):
        layers += [ShuffleUnit(cin, cout, 2)] + [ShuffleUnit(cout, cout, 1)
                                                 for _ in range(repeats - 1)]
        cin = cout
    return nn.Sequential(*layers, _bn_relu_conv(cin, 1024, 1), GlobalMean(),
                         nn.Linear(1024, classes))


# ------------------------------------------------------------------------------ DenseNet-121
class DenseLayer(nn.Module):
    def __init__(self, cin, growth, bn_size):
        super().__init__()
        self.norm1, self.conv1 = nn.BatchNorm2d(cin), nn.Conv2d(cin, bn_size * growth, 1,
                                                                 bias=False)
        self.norm2 = nn.BatchNorm2d(bn_size * growth)
        self.conv2 = nn.Conv2d(bn_size * growth, growth, 3, padding=1, bias=False)

    def forward(self, x):
        out = self.conv1(TF.relu(self.norm1(x)))
        return torch.cat([x, self.conv2(TF.relu(self.norm2(out)))], 1)


def densenet121(classes=1000):
    """DenseNet-121 (Huang et al. 2017; torchvision's densenet121): 7,978,856 parameters."""
    growth, channels = 32, 64
    layers = [nn.Conv2d(3, 64, 7, 2, 3, bias=False), nn.BatchNorm2d(64), nn.ReLU(inplace=True),
              nn.MaxPool2d(3, 2, 1)]
    for i, n in enumerate((6, 12, 24, 16)):
        for _ in range(n):
            layers.append(DenseLayer(channels, growth, 4))
            channels += growth
        if i < 3:  # transition
            layers += [nn.BatchNorm2d(channels), nn.ReLU(inplace=True),
                       nn.Conv2d(channels, channels // 2, 1, bias=False), nn.AvgPool2d(2, 2)]
            channels //= 2
    return nn.Sequential(*layers, nn.BatchNorm2d(channels), nn.ReLU(inplace=True),
                         nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(channels, classes))


# ------------------------------------------------------------------------------ Inception-v3
def _iv3(cin, cout, k, stride=1, padding=0):
    return _bn_relu_conv(cin, cout, k, stride, padding, eps=1e-3)


def _seq(*layers):
    return nn.Sequential(*layers)


def _inception_a(cin, pool):
    return Concat(_iv3(cin, 64, 1),
                  _seq(_iv3(cin, 48, 1), _iv3(48, 64, 5, padding=2)),
                  _seq(_iv3(cin, 64, 1), _iv3(64, 96, 3, padding=1), _iv3(96, 96, 3, padding=1)),
                  _seq(nn.AvgPool2d(3, 1, 1), _iv3(cin, pool, 1)))


def _inception_b(cin):
    return Concat(_iv3(cin, 384, 3, 2),
                  _seq(_iv3(cin, 64, 1), _iv3(64, 96, 3, padding=1), _iv3(96, 96, 3, 2)),
                  nn.MaxPool2d(3, 2))


def _inception_c(cin, c7):
    row, col = dict(padding=(0, 3)), dict(padding=(3, 0))
    return Concat(_iv3(cin, 192, 1),
                  _seq(_iv3(cin, c7, 1), _iv3(c7, c7, (1, 7), **row), _iv3(c7, 192, (7, 1), **col)),
                  _seq(_iv3(cin, c7, 1), _iv3(c7, c7, (7, 1), **col), _iv3(c7, c7, (1, 7), **row),
                       _iv3(c7, c7, (7, 1), **col), _iv3(c7, 192, (1, 7), **row)),
                  _seq(nn.AvgPool2d(3, 1, 1), _iv3(cin, 192, 1)))


def _inception_d(cin):
    return Concat(_seq(_iv3(cin, 192, 1), _iv3(192, 320, 3, 2)),
                  _seq(_iv3(cin, 192, 1), _iv3(192, 192, (1, 7), padding=(0, 3)),
                       _iv3(192, 192, (7, 1), padding=(3, 0)), _iv3(192, 192, 3, 2)),
                  nn.MaxPool2d(3, 2))


def _inception_e(cin):
    def split(c):  # a 1x3 and a 3x1 convolution side by side
        return Concat(_iv3(c, 384, (1, 3), padding=(0, 1)), _iv3(c, 384, (3, 1), padding=(1, 0)))
    return Concat(_iv3(cin, 320, 1),
                  _seq(_iv3(cin, 384, 1), split(384)),
                  _seq(_iv3(cin, 448, 1), _iv3(448, 384, 3, padding=1), split(384)),
                  _seq(nn.AvgPool2d(3, 1, 1), _iv3(cin, 192, 1)))


class InceptionAux(nn.Module):
    def __init__(self, cin, classes):
        super().__init__()
        self.conv0, self.conv1 = _iv3(cin, 128, 1), _iv3(128, 768, 5)
        self.fc = nn.Linear(768, classes)

    def forward(self, x):
        x = self.conv1(self.conv0(TF.avg_pool2d(x, 5, 3)))
        return self.fc(torch.flatten(TF.adaptive_avg_pool2d(x, 1), 1))


class InceptionV3(nn.Module):
    """Inception-v3 (Szegedy et al. 2016; torchvision's inception_v3) for 299x299 inputs. With
    ``aux_logits`` (torchvision's default, counted in its documented 27,161,264 parameters) the
    auxiliary classifier is built, but only for the parameter count: forward returns the main
    logits in every mode."""

    def __init__(self, classes=1000, aux_logits=False):
        super().__init__()
        self.stem = nn.Sequential(
            _iv3(3, 32, 3, 2), _iv3(32, 32, 3), _iv3(32, 64, 3, padding=1), nn.MaxPool2d(3, 2),
            _iv3(64, 80, 1), _iv3(80, 192, 3), nn.MaxPool2d(3, 2),
            _inception_a(192, 32), _inception_a(256, 64), _inception_a(288, 64),
            _inception_b(288), _inception_c(768, 128), _inception_c(768, 160),
            _inception_c(768, 160), _inception_c(768, 192))
        self.aux = InceptionAux(768, classes) if aux_logits else None
        self.tail = nn.Sequential(
            _inception_d(768), _inception_e(1280), _inception_e(2048),
            nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Dropout(0.5), nn.Linear(2048, classes))

    def forward(self, x):
        return self.tail(self.stem(x))


def inception_v3(classes=1000, aux_logits=False):
    """Inception-v3 without the auxiliary classifier: 23,834,568 parameters (torchvision's
    27,161,264 less its 3,326,696-parameter auxiliary head)."""
    return InceptionV3(classes, aux_logits)


# ------------------------------------------------------------------------------ EfficientNet-B0
class SqueezeExcitation(nn.Module):
    def __init__(self, channels, squeeze, act=nn.SiLU, gate=nn.Sigmoid):
        super().__init__()
        self.fc1, self.fc2 = nn.Conv2d(channels, squeeze, 1), nn.Conv2d(squeeze, channels, 1)
        self.act, self.gate = act(), gate()

    def forward(self, x):
        return x * self.gate(self.fc2(self.act(self.fc1(TF.adaptive_avg_pool2d(x, 1)))))


class StochasticDepth(nn.Module):
    """Drops a residual branch per sample with probability ``p`` in training (torchvision's
    'row' mode)."""

    def __init__(self, p):
        super().__init__()
        self.p = p

    def forward(self, x):
        if not self.training or self.p == 0:
            return x
        keep = x.new_empty(x.shape[0], 1, 1, 1).bernoulli_(1 - self.p)
        return x * keep / (1 - self.p)


class MBConv(nn.Module):
    def __init__(self, cin, cout, k, stride, expand, drop):
        super().__init__()
        hidden = cin * expand
        layers = [] if expand == 1 else [_bn_relu_conv(cin, hidden, 1, act=nn.SiLU)]
        layers += [_bn_relu_conv(hidden, hidden, k, stride, (k - 1) // 2, groups=hidden,
                                 act=nn.SiLU),
                   SqueezeExcitation(hidden, max(1, cin // 4)),
                   nn.Conv2d(hidden, cout, 1, bias=False), nn.BatchNorm2d(cout)]
        self.block = nn.Sequential(*layers)
        self.residual = stride == 1 and cin == cout
        self.drop = StochasticDepth(drop)

    def forward(self, x):
        return x + self.drop(self.block(x)) if self.residual else self.block(x)


def efficientnet_b0(classes=1000):
    """EfficientNet-B0 (Tan & Le 2019; torchvision's efficientnet_b0): 5,288,548 parameters."""
    stages = ((1, 3, 1, 32, 16, 1), (6, 3, 2, 16, 24, 2), (6, 5, 2, 24, 40, 2),
              (6, 3, 2, 40, 80, 3), (6, 5, 1, 80, 112, 3), (6, 5, 2, 112, 192, 4),
              (6, 3, 1, 192, 320, 1))
    total = sum(s[-1] for s in stages)
    layers, block = [_bn_relu_conv(3, 32, 3, 2, 1, act=nn.SiLU)], 0
    for expand, k, stride, cin, cout, n in stages:
        for i in range(n):
            layers.append(MBConv(cin if i == 0 else cout, cout, k, stride if i == 0 else 1,
                                 expand, 0.2 * block / total))
            block += 1
    return nn.Sequential(*layers, _bn_relu_conv(320, 1280, 1, act=nn.SiLU),
                         nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Dropout(0.2),
                         nn.Linear(1280, classes))


# ------------------------------------------------------------------------------ DeepLabV3
def _bn_act(cin, cout, k, stride=1, dilation=1, groups=1, act=nn.Hardswish):
    return nn.Sequential(
        nn.Conv2d(cin, cout, k, stride, (k - 1) // 2 * dilation, dilation, groups, bias=False),
        nn.BatchNorm2d(cout, eps=1e-3, momentum=0.01), act(inplace=True))


class InvertedResidualV3(nn.Module):
    def __init__(self, cin, k, hidden, cout, se, act, stride, dilation):
        super().__init__()
        layers = [] if hidden == cin else [_bn_act(cin, hidden, 1, act=act)]
        layers.append(_bn_act(hidden, hidden, k, 1 if dilation > 1 else stride, dilation,
                              hidden, act))
        if se:
            squeeze = max(8, int(hidden // 4 + 4) // 8 * 8)  # torchvision's _make_divisible
            squeeze += 8 if squeeze < 0.9 * (hidden // 4) else 0
            layers.append(SqueezeExcitation(hidden, squeeze, nn.ReLU, nn.Hardsigmoid))
        layers += [nn.Conv2d(hidden, cout, 1, bias=False),
                   nn.BatchNorm2d(cout, eps=1e-3, momentum=0.01)]
        self.block = nn.Sequential(*layers)
        self.residual = stride == 1 and cin == cout

    def forward(self, x):
        return x + self.block(x) if self.residual else self.block(x)


def mobilenet_v3_large_features(dilated=True):
    """The feature extractor of MobileNetV3-Large (Howard et al. 2019; torchvision's
    mobilenet_v3_large(dilated=True).features): output stride 16, 960 channels."""
    re, hs, d = nn.ReLU, nn.Hardswish, 2 if dilated else 1
    conf = ((16, 3, 16, 16, False, re, 1, 1), (16, 3, 64, 24, False, re, 2, 1),
            (24, 3, 72, 24, False, re, 1, 1), (24, 5, 72, 40, True, re, 2, 1),
            (40, 5, 120, 40, True, re, 1, 1), (40, 5, 120, 40, True, re, 1, 1),
            (40, 3, 240, 80, False, hs, 2, 1), (80, 3, 200, 80, False, hs, 1, 1),
            (80, 3, 184, 80, False, hs, 1, 1), (80, 3, 184, 80, False, hs, 1, 1),
            (80, 3, 480, 112, True, hs, 1, 1), (112, 3, 672, 112, True, hs, 1, 1),
            (112, 5, 672, 160, True, hs, 2, d), (160, 5, 960, 160, True, hs, 1, d),
            (160, 5, 960, 160, True, hs, 1, d))
    return nn.Sequential(_bn_act(3, 16, 3, 2), *[InvertedResidualV3(*c) for c in conf],
                         _bn_act(160, 960, 1))


class ASPPPooling(nn.Module):
    def __init__(self, cin, cout):
        super().__init__()
        self.conv = _bn_relu_conv(cin, cout, 1)

    def forward(self, x):
        y = self.conv(TF.adaptive_avg_pool2d(x, 1))
        return TF.interpolate(y, size=x.shape[-2:], mode="bilinear", align_corners=False)


class DeepLabV3(nn.Module):
    """DeepLabV3 (Chen et al. 2017) on a dilated MobileNetV3-Large, as torchvision's
    deeplabv3_mobilenet_v3_large: ASPP with rates 12, 24, 36 on the 960-channel
    output-stride-16 features, logits upsampled to the input size. With ``aux_loss`` (counted in
    torchvision's documented 11,029,328 parameters) the auxiliary FCN head on the 40-channel
    features is built, but only for the parameter count: forward returns the main logits."""

    def __init__(self, classes=21, aux_loss=False):
        super().__init__()
        self.aux_classifier = nn.Sequential(  # torchvision's FCNHead(40, classes)
            _bn_relu_conv(40, 10, 3, padding=1), nn.Dropout(0.1),
            nn.Conv2d(10, classes, 1)) if aux_loss else None
        self.backbone = mobilenet_v3_large_features(dilated=True)
        c = 256
        self.aspp = Concat(_bn_relu_conv(960, c, 1),
                           *[_bn_relu_conv(960, c, 3, padding=r, dilation=r) for r in (12, 24, 36)],
                           ASPPPooling(960, c))
        self.head = nn.Sequential(_bn_relu_conv(5 * c, c, 1), nn.Dropout(0.5),
                                  _bn_relu_conv(c, c, 3, padding=1), nn.Conv2d(c, classes, 1))

    def forward(self, x):
        y = self.head(self.aspp(self.backbone(x)))
        return TF.interpolate(y, size=x.shape[-2:], mode="bilinear", align_corners=False)


def deeplabv3_mobilenet_v3_large(classes=21, aux_loss=False):
    """DeepLabV3-MobileNetV3-Large without the auxiliary head: 11,025,477 parameters
    (torchvision's 11,029,328 less the 3,851 of its auxiliary FCN head)."""
    return DeepLabV3(classes, aux_loss)


# ------------------------------------------------------------------------------ small models
def lenet5(classes=10):
    """LeNet-5 (LeCun et al. 1998) on 1x32x32: tanh, average pooling, C3 fully connected, C5 a
    5x5 convolution: 61,706 parameters."""
    return nn.Sequential(
        nn.Conv2d(1, 6, 5), nn.Tanh(), nn.AvgPool2d(2),
        nn.Conv2d(6, 16, 5), nn.Tanh(), nn.AvgPool2d(2),
        nn.Conv2d(16, 120, 5), nn.Tanh(), nn.Flatten(),
        nn.Linear(120, 84), nn.Tanh(), nn.Linear(84, classes),
    )


def vgg11_bn_cifar(classes=10):
    """VGG-11 (configuration A, Simonyan & Zisserman 2015) with batch normalisation for 32x32
    inputs: five max-pooled stages down to 1x1x512, one linear classifier."""
    layers, cin = [], 3
    for v in (64, "M", 128, "M", 256, 256, "M", 512, 512, "M", 512, 512, "M"):
        if v == "M":
            layers.append(nn.MaxPool2d(2, 2))
        else:
            layers += [nn.Conv2d(cin, v, 3, padding=1), nn.BatchNorm2d(v), nn.ReLU(inplace=True)]
            cin = v
    return nn.Sequential(*layers, nn.Flatten(), nn.Linear(512, classes))


def context_network(channels=64):
    """The basic context module of Yu & Koltun (2016, "Multi-Scale Context Aggregation by
    Dilated Convolutions"): 3x3 convolutions with dilations 1, 1, 2, 4, 8, 16, 1 (each followed
    by a ReLU; padding keeps the size), then a 1x1 convolution, all ``channels`` wide."""
    layers = []
    for d in (1, 1, 2, 4, 8, 16, 1):
        layers += [nn.Conv2d(channels, channels, 3, padding=d, dilation=d), nn.ReLU(inplace=True)]
    return nn.Sequential(*layers, nn.Conv2d(channels, channels, 1))


MODELS = {
    "resnet18": Spec(resnet18, (3, 224, 224), 2, "classify"),
    "alexnet": Spec(alexnet, (3, 224, 224), 2, "classify"),
    "mobilenet_v2": Spec(mobilenet_v2, (3, 224, 224), 2, "classify"),
    "googlenet": Spec(googlenet, (3, 224, 224), 2, "classify"),
    "squeezenet1_1": Spec(squeezenet1_1, (3, 224, 224), 2, "classify"),
    "shufflenet_v2_x1_0": Spec(shufflenet_v2_x1_0, (3, 224, 224), 2, "classify"),
    "densenet121": Spec(densenet121, (3, 224, 224), 2, "classify"),
    "inception_v3": Spec(inception_v3, (3, 299, 299), 2, "classify"),
    "efficientnet_b0": Spec(efficientnet_b0, (3, 224, 224), 2, "classify"),
    "deeplabv3_mobilenet_v3_large": Spec(deeplabv3_mobilenet_v3_large, (3, 224, 224), 2,
                                         "segment"),
    "lenet5": Spec(lenet5, (1, 32, 32), 32, "classify"),
    "vgg11_bn_cifar": Spec(vgg11_bn_cifar, (3, 32, 32), 16, "classify"),
    "cifar_resnet18": Spec(cifar_resnet18, (3, 32, 32), 16, "classify"),
    "context_network": Spec(context_network, (64, 64, 64), 4, "segment"),
}


def parameter_count(model):
    return sum(p.numel() for p in model.parameters())

