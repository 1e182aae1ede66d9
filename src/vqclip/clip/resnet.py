"""CLIP's ResNet image tower (the "ModifiedResNet" of RN50, RN101, RN50x4, RN50x16, RN50x64).

Differences from a torchvision ResNet, as in the CLIP paper: a stem of three 3x3 convolutions
with an average pool instead of one 7x7 convolution and a max pool; anti-aliased strided
convolutions (an average pool before each stride-1 convolution that replaces a strided one); and
attention pooling (one query, the mean of the grid, attending over the grid) instead of a global
average pool. Parameter names are exactly OpenAI's (`visual.layer1.0.conv1.weight`,
`visual.attnpool.q_proj.weight`, ...), so their checkpoints load strictly.
"""

from __future__ import annotations

from collections import OrderedDict

import torch
from torch import nn

from vqclip.attention import attention


class Bottleneck(nn.Module):
    """1x1 -> 3x3 -> (average pool) -> 1x1 with 4x expansion, and an average-pooled shortcut."""

    expansion = 4

    def __init__(self, inplanes: int, planes: int, stride: int = 1) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(inplanes, planes, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(planes)
        self.relu1 = nn.ReLU(inplace=True)
        self.conv2 = nn.Conv2d(planes, planes, 3, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(planes)
        self.relu2 = nn.ReLU(inplace=True)
        self.avgpool = nn.AvgPool2d(stride) if stride > 1 else nn.Identity()
        self.conv3 = nn.Conv2d(planes, planes * self.expansion, 1, bias=False)
        self.bn3 = nn.BatchNorm2d(planes * self.expansion)
        self.relu3 = nn.ReLU(inplace=True)
        self.downsample: nn.Module | None = None
        if stride > 1 or inplanes != planes * self.expansion:
            # OpenAI named the pool "-1" so that the convolution and norm keep indices 0 and 1.
            self.downsample = nn.Sequential(
                OrderedDict(
                    [
                        ("-1", nn.AvgPool2d(stride) if stride > 1 else nn.Identity()),
                        ("0", nn.Conv2d(inplanes, planes * self.expansion, 1, bias=False)),
                        ("1", nn.BatchNorm2d(planes * self.expansion)),
                    ]
                )
            )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.relu1(self.bn1(self.conv1(x)))
        out = self.relu2(self.bn2(self.conv2(out)))
        out = self.bn3(self.conv3(self.avgpool(out)))
        identity = x if self.downsample is None else self.downsample(x)
        return self.relu3(out + identity)


class AttentionPool2d(nn.Module):
    """One query (the grid's mean, plus its position embedding) attends over the mean and the
    grid; the attended value, projected by c_proj, is the image embedding."""

    def __init__(self, grid: int, width: int, heads: int, output_dim: int) -> None:
        super().__init__()
        self.heads = heads
        self.positional_embedding = nn.Parameter(torch.randn(grid * grid + 1, width) / width**0.5)
        self.k_proj = nn.Linear(width, width)
        self.q_proj = nn.Linear(width, width)
        self.v_proj = nn.Linear(width, width)
        self.c_proj = nn.Linear(width, output_dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        B, C = x.shape[:2]
        x = x.flatten(2).transpose(1, 2)  # (B, HW, C)
        x = torch.cat([x.mean(dim=1, keepdim=True), x], dim=1)  # (B, 1+HW, C)
        x = x + self.positional_embedding.to(x.dtype)
        hs = C // self.heads
        q = self.q_proj(x[:, :1]).view(B, 1, self.heads, hs).transpose(1, 2)  # (B, nh, 1, hs)
        k = self.k_proj(x).view(B, -1, self.heads, hs).transpose(1, 2)  # (B, nh, 1+HW, hs)
        v = self.v_proj(x).view(B, -1, self.heads, hs).transpose(1, 2)
        y = attention(q, k, v, causal=False).transpose(1, 2).reshape(B, C)  # (B, C)
        return self.c_proj(y)


class ModifiedResNet(nn.Module):
    """CLIP's ResNet image tower: (B, 3, S, S) normalised pixels -> (B, output_dim).

    `layers` counts the bottleneck blocks of the four stages; `width` is the stem's output
    channels (64 for RN50); the last stage has width * 32 channels, which the attention pool
    splits into `heads` heads. The image side S must be 32 * the pool's grid side.
    """

    def __init__(
        self,
        layers: tuple[int, int, int, int],
        output_dim: int,
        heads: int,
        image_size: int,
        width: int,
    ) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(3, width // 2, 3, stride=2, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(width // 2)
        self.relu1 = nn.ReLU(inplace=True)
        self.conv2 = nn.Conv2d(width // 2, width // 2, 3, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(width // 2)
        self.relu2 = nn.ReLU(inplace=True)
        self.conv3 = nn.Conv2d(width // 2, width, 3, padding=1, bias=False)
        self.bn3 = nn.BatchNorm2d(width)
        self.relu3 = nn.ReLU(inplace=True)
        self.avgpool = nn.AvgPool2d(2)
        inplanes = width
        stages = []
        for i, blocks in enumerate(layers):
            planes = width * 2**i
            stage = [Bottleneck(inplanes, planes, stride=1 if i == 0 else 2)]
            inplanes = planes * Bottleneck.expansion
            stage += [Bottleneck(inplanes, planes) for _ in range(blocks - 1)]
            stages.append(nn.Sequential(*stage))
        self.layer1, self.layer2, self.layer3, self.layer4 = stages
        self.attnpool = AttentionPool2d(image_size // 32, width * 32, heads, output_dim)
        self._init_parameters()

    def _init_parameters(self) -> None:
        # OpenAI's init: attention-pool projections ~ N(0, 1/width); each block's last norm
        # starts at zero, so every residual block starts as the identity.
        std = self.attnpool.c_proj.in_features**-0.5
        for proj in ("q_proj", "k_proj", "v_proj", "c_proj"):
            nn.init.normal_(getattr(self.attnpool, proj).weight, std=std)
        for stage in (self.layer1, self.layer2, self.layer3, self.layer4):
            for block in stage:
                nn.init.zeros_(block.bn3.weight)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.relu1(self.bn1(self.conv1(x)))
        x = self.relu2(self.bn2(self.conv2(x)))
        x = self.avgpool(self.relu3(self.bn3(self.conv3(x))))
        x = self.layer4(self.layer3(self.layer2(self.layer1(x))))
        return self.attnpool(x)
