"""Training-time augmentation on batches of normalised faces, in plain torch (torchvision does not install
beside the CPU torch build used here).

The recipe of Khaireddin & Chen (2021): random resized crop, affine shift, horizontal flip, rotation and
random erasing. Scale, shift and rotation are one random affine warp per face (one `grid_sample` call for the
whole batch); erasing blanks a random rectangle per face.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from torch.nn import functional as F


@dataclass(frozen=True)
class AugmentConfig:
    flip: bool = True
    max_rotation_deg: float = 10.0
    scale: tuple[float, float] = (0.9, 1.1)  # zoom factor; > 1 crops in (random resized crop)
    max_shift: float = 0.08  # fraction of the image size
    erase_probability: float = 0.0
    erase_area: tuple[float, float] = (0.02, 0.15)  # fraction of the image erased


def augment(batch: torch.Tensor, cfg: AugmentConfig, generator: torch.Generator) -> torch.Tensor:
    """Augment N x 1 x H x W faces; the same generator state gives the same augmentation."""
    n, _, h, w = batch.shape
    angle = (torch.rand(n, generator=generator) * 2 - 1) * math.radians(cfg.max_rotation_deg)
    zoom = cfg.scale[0] + torch.rand(n, generator=generator) * (cfg.scale[1] - cfg.scale[0])
    shift = (torch.rand(n, 2, generator=generator) * 2 - 1) * cfg.max_shift * 2  # grid units span 2
    flip = torch.where(torch.rand(n, generator=generator) < 0.5, -1.0, 1.0) if cfg.flip else torch.ones(n)
    cos, sin = torch.cos(angle) / zoom, torch.sin(angle) / zoom
    theta = torch.stack(  # N x 2 x 3: output grid -> input sampling positions
        [torch.stack([cos * flip, -sin, shift[:, 0]], 1), torch.stack([sin * flip, cos, shift[:, 1]], 1)], 1
    )
    grid = F.affine_grid(theta.to(batch.dtype), list(batch.shape), align_corners=False)
    out = F.grid_sample(batch, grid, mode="bilinear", padding_mode="border", align_corners=False)
    if cfg.erase_probability > 0:
        out = _erase(out, cfg, generator)
    return out


def _erase(batch: torch.Tensor, cfg: AugmentConfig, generator: torch.Generator) -> torch.Tensor:
    n, _, h, w = batch.shape
    chosen = torch.rand(n, generator=generator) < cfg.erase_probability
    area = cfg.erase_area[0] + torch.rand(n, generator=generator) * (cfg.erase_area[1] - cfg.erase_area[0])
    aspect = torch.exp((torch.rand(n, generator=generator) * 2 - 1) * math.log(3.0))
    eh = (torch.sqrt(area * aspect) * h).clamp(1, h).long()
    ew = (torch.sqrt(area / aspect) * w).clamp(1, w).long()
    top = (torch.rand(n, generator=generator) * (h - eh + 1)).long()
    left = (torch.rand(n, generator=generator) * (w - ew + 1)).long()
    rows = torch.arange(h).view(1, h, 1)
    cols = torch.arange(w).view(1, 1, w)
    mask = (
        (rows >= top.view(n, 1, 1))
        & (rows < (top + eh).view(n, 1, 1))
        & (cols >= left.view(n, 1, 1))
        & (cols < (left + ew).view(n, 1, 1))
        & chosen.view(n, 1, 1)
    )
    return batch.masked_fill(mask.unsqueeze(1).to(batch.device), 0.0)  # 0 = the mean pixel after normalisation
