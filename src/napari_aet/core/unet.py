"""3D U-Net (Çiçek et al. 2016) for missing-wedge recovery: imperfect tomogram in, ideal out.

Encoder-decoder with a skip connection at every scale; depth, base width, normalization and
activation are configurable and stored with the weights, so a checkpoint rebuilds its own
architecture. The output is added to the input (residual learning: the network predicts the
correction), which keeps atoms the network has no reason to touch where they are.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import torch
from torch import nn

__all__ = ["UNetConfig", "UNet3D"]


@dataclass
class UNetConfig:
    depth: int = 3  # number of down-samplings
    base_width: int = 12  # channels at full resolution, doubled at each scale
    norm: str = "batch"  # batch | group | instance | none (batch: tile-independent at inference)
    activation: str = "silu"  # silu | relu | leaky_relu
    residual: bool = True  # output = input + network(input)

    def to_dict(self) -> dict:
        return asdict(self)


def _norm(kind: str, ch: int) -> nn.Module:
    # Batch norm uses running statistics at inference, so a tile's output does not depend on
    # what else is in the tile: no seams. Group/instance norm normalise over the tile itself.
    if kind == "batch":
        return nn.BatchNorm3d(ch)
    if kind == "group":
        return nn.GroupNorm(min(4, ch), ch)
    if kind == "instance":
        return nn.InstanceNorm3d(ch, affine=True)
    if kind == "none":
        return nn.Identity()
    raise ValueError(f"normalization {kind!r} unknown; use batch, group, instance or none")


def _act(kind: str) -> nn.Module:
    return {"silu": nn.SiLU(), "relu": nn.ReLU(), "leaky_relu": nn.LeakyReLU(0.1)}[kind]


class _Block(nn.Sequential):
    def __init__(self, cin: int, cout: int, cfg: UNetConfig):
        super().__init__(
            nn.Conv3d(cin, cout, 3, padding=1), _norm(cfg.norm, cout), _act(cfg.activation),
            nn.Conv3d(cout, cout, 3, padding=1), _norm(cfg.norm, cout), _act(cfg.activation),
        )


class UNet3D(nn.Module):
    """3D U-Net on single-channel volumes ``(batch, 1, z, y, x)``; sizes divisible by 2**depth."""

    def __init__(self, config: UNetConfig | None = None):
        super().__init__()
        self.config = cfg = config or UNetConfig()
        widths = [cfg.base_width * 2**k for k in range(cfg.depth + 1)]
        self.down = nn.ModuleList()
        cin = 1
        for w in widths[:-1]:
            self.down.append(_Block(cin, w, cfg))
            cin = w
        self.bottom = _Block(widths[-2], widths[-1], cfg)
        self.up = nn.ModuleList()
        self.dec = nn.ModuleList()
        for k in reversed(range(cfg.depth)):
            self.up.append(nn.ConvTranspose3d(widths[k + 1], widths[k], 2, stride=2))
            self.dec.append(_Block(2 * widths[k], widths[k], cfg))
        self.head = nn.Conv3d(widths[0], 1, 1)
        self.pool = nn.MaxPool3d(2)

    @property
    def multiple(self) -> int:
        return 2**self.config.depth

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        skips = []
        h = x
        for block in self.down:
            h = block(h)
            skips.append(h)
            h = self.pool(h)
        h = self.bottom(h)
        for up, dec, skip in zip(self.up, self.dec, reversed(skips)):
            h = dec(torch.cat([up(h), skip], 1))
        out = self.head(h)
        return x + out if self.config.residual else out

    def n_parameters(self) -> int:
        return sum(p.numel() for p in self.parameters())
