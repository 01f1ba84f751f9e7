"""Training-time augmentation: a small random affine warp of every image, as batched tensor ops.

Handwritten characters keep their identity under a slight rotation, scaling, shear or shift, so
warping every training image differently multiplies the drawings a model sees at no labelling cost.
The warp is one ``F.affine_grid`` + ``F.grid_sample`` over the whole batch (a few milliseconds for
an episode's images on one CPU core).

Randomness comes from a ``torch.Generator`` the caller passes (the episode sampler's own), so an
augmented run is reproducible from its seed and resumes exactly from the sampler's saved state.
Nothing here is ever applied in evaluation: only a training :class:`fewshot.tasks.TaskSampler`
built with ``augment=`` calls it.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass

import torch
import torch.nn.functional as F
from torch import Tensor

__all__ = ["AffineAugment"]


@dataclass(frozen=True)
class AffineAugment:
    """Random affine warp per image: rotation, scale, shear and shift, each uniform in ``[-x, x]``.

    Defaults suit 28-pixel Omniglot (Santoro et al. 2016 and Antoniou et al. 2019 use similar
    magnitudes): ±12 degrees, scale 0.9-1.1, shear ±0.2 rad, shift ±2 pixels (at 28 pixels; the
    shift scales with the image size). Images are ink on a zero background, so the area the warp
    brings in from outside the frame is blank paper.

    Args:
        rotation: largest rotation in degrees.
        scale: largest relative change of size (0.1: between 0.9 and 1.1 times).
        shear: largest horizontal shear angle in radians.
        shift: largest shift in pixels at 28-pixel images (along each axis).
    """

    rotation: float = 12.0
    scale: float = 0.1
    shear: float = 0.2
    shift: float = 2.0

    def __post_init__(self) -> None:
        for name in ("rotation", "scale", "shear", "shift"):
            value = getattr(self, name)
            if not isinstance(value, (int, float)) or not math.isfinite(value) or value < 0:
                raise ValueError(f"augmentation {name} must be a finite number >= 0, got {value!r}")
        if self.scale >= 1:
            raise ValueError(f"augmentation scale must be below 1 (a relative change), got {self.scale}")
        if self.shear >= math.pi / 2:
            raise ValueError(f"augmentation shear must be below pi/2 radians, got {self.shear}")

    def to_dict(self) -> dict[str, float]:
        return asdict(self)

    def draw(self, n: int, generator: torch.Generator) -> Tensor:
        """Uniform draws ``(n, 5)`` in ``[-1, 1)`` for rotation, scale, shear, shift x, shift y."""
        return torch.rand(n, 5, generator=generator, dtype=torch.float64) * 2 - 1

    def matrices(self, draws: Tensor) -> Tensor:
        """Sampling matrices ``(n, 2, 3)`` for ``F.affine_grid`` (output -> input coordinates)."""
        angle = draws[:, 0] * math.radians(self.rotation)
        size = 1 + draws[:, 1] * self.scale
        shear = draws[:, 2] * self.shear
        shift = draws[:, 3:5] * self.shift * (2.0 / 28.0)  # pixels at 28 px -> normalised units (2 / width each)
        cos, sin, tan = torch.cos(angle), torch.sin(angle), torch.tan(shear)
        # Forward warp A = rotation @ shear @ scale; affine_grid wants where each output pixel comes from: A^-1 (x - t).
        rotate = torch.stack([torch.stack([cos, -sin], -1), torch.stack([sin, cos], -1)], -2)
        shear_m = torch.stack([torch.stack([torch.ones_like(tan), tan], -1),
                               torch.stack([torch.zeros_like(tan), torch.ones_like(tan)], -1)], -2)
        forward = rotate @ shear_m * size[:, None, None]
        inverse = torch.linalg.inv(forward)
        offset = -(inverse @ shift.unsqueeze(-1))
        return torch.cat([inverse, offset], dim=2)

    def apply(self, images: Tensor, draws: Tensor) -> Tensor:
        """Warp ``images (n, C, H, W)`` with the given ``draws`` (from :meth:`draw`); same shape and dtype."""
        if images.shape[0] != draws.shape[0]:
            raise ValueError(f"{images.shape[0]} images but {draws.shape[0]} augmentation draws")
        theta = self.matrices(draws).to(device=images.device, dtype=images.dtype)
        grid = F.affine_grid(theta, list(images.shape), align_corners=False)
        return F.grid_sample(images, grid, mode="bilinear", padding_mode="zeros", align_corners=False)

    def __call__(self, images: Tensor, generator: torch.Generator) -> Tensor:
        """Warp every image of ``images (n, C, H, W)`` by its own random affine drawn from ``generator``."""
        return self.apply(images, self.draw(images.shape[0], generator))
