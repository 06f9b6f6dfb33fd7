"""Convolutional encoder and decoder whose layer shapes derive from the frame size.

The default is the World Models "V" (Ha and Schmidhuber 2018): four 4x4 stride-2 convs with
32-64-128-256 channels. At 64x64 the feature maps are 31, 14, 6, 2. The decoder mirrors the
encoder with 4x4 stride-2 transposed convs whose ``output_padding`` restores each size exactly,
so 84x84, 96x96 or rectangular frames work too.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

KERNEL, STRIDE = 4, 2


def conv_sizes(size: int, n_layers: int) -> list[int]:
    """Spatial sizes through ``n_layers`` unpadded 4x4 stride-2 convs, input first."""
    sizes = [size]
    for _ in range(n_layers):
        nxt = (sizes[-1] - KERNEL) // STRIDE + 1
        if nxt < 1:
            raise ValueError(
                f"frames of side {size} are too small for {n_layers} stride-2 convs; "
                "use larger frames or fewer channels"
            )
        sizes.append(nxt)
    return sizes


class ConvEncoder(nn.Module):
    """Frames ``(B, C, H, W)`` in [0, 1] -> features ``(B, F)``."""

    def __init__(self, in_channels: int, height: int, width: int, channels: tuple[int, ...]):
        super().__init__()
        layers: list[nn.Module] = []
        prev = in_channels
        for ch in channels:
            layers += [nn.Conv2d(prev, ch, KERNEL, STRIDE), nn.ReLU(inplace=True)]
            prev = ch
        self.net = nn.Sequential(*layers)
        self.out_hw = (conv_sizes(height, len(channels))[-1], conv_sizes(width, len(channels))[-1])
        self.out_features = prev * self.out_hw[0] * self.out_hw[1]

    def forward(self, x: Tensor) -> Tensor:
        return self.net(x).flatten(1)


class ConvDecoder(nn.Module):
    """Code ``(B, D)`` -> logits ``(B, C, H, W)`` (apply a sigmoid for pixels in [0, 1])."""

    def __init__(
        self, latent_dim: int, out_channels: int, height: int, width: int, channels: tuple[int, ...]
    ):
        super().__init__()
        n = len(channels)
        hs, ws = conv_sizes(height, n), conv_sizes(width, n)
        self.start = (channels[-1], hs[-1], ws[-1])
        self.fc = nn.Linear(latent_dim, channels[-1] * hs[-1] * ws[-1])
        layers: list[nn.Module] = []
        rev = list(reversed(channels))
        for i in range(n):
            in_h, in_w, out_h, out_w = hs[n - i], ws[n - i], hs[n - i - 1], ws[n - i - 1]
            pad = (out_h - ((in_h - 1) * STRIDE + KERNEL), out_w - ((in_w - 1) * STRIDE + KERNEL))
            out_ch = rev[i + 1] if i + 1 < n else out_channels
            layers.append(nn.ConvTranspose2d(rev[i], out_ch, KERNEL, STRIDE, output_padding=pad))
            if i + 1 < n:
                layers.append(nn.ReLU(inplace=True))
        self.net = nn.Sequential(*layers)

    def forward(self, z: Tensor) -> Tensor:
        h = torch.relu(self.fc(z)).view(-1, *self.start)
        return self.net(h)
