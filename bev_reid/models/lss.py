"""Lift-splat-shoot: six camera images -> a BEV feature map and a vehicle mask.

Lift: an image trunk (:mod:`bev_reid.models.trunks`, ``lss.trunk``) gives each camera a feature
map; a 1x1 head (after ``lss.head_blocks`` 3x3 residual blocks, none in the original) predicts
per cell a depth distribution over D bins and a C-dim context vector.
Splat: each context vector is placed along its camera ray, weighted by the depth distribution,
and the frustum points (geometry from intrinsics, extrinsics and the image augmentation) are
summed into the BEV grid. ``lss.splat`` chooses how: ``fused`` (our op that reads depth and
context where they lie, no frustum tensor), ``bev_pool`` (the outer product, then our op) or
``reference`` (the outer product, then plain torch); all three give the same sums. Shoot: a
ResNet-18-style BEV encoder gives a ``bev_channels`` BEV map (the features the ReID crops are cut
from) and a 1-channel vehicle logit map.

Shapes: B batch, N cameras, D depth bins, fH x fW camera feature cells, C channels, X x Y x Z grid.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from bev_reid.config import DataConfig, GridConfig, LSSConfig
from bev_reid.models.blocks import BasicBlock, UpConcat
from bev_reid.models.geometry import create_frustum, frustum_to_ego, points_to_voxel_coords
from bev_reid.models.trunks import build_trunk
from bev_reid.ops import bev_pool, bev_pool_reference, fused_splat, splat_plan


class CamEncoder(nn.Module):
    """Images -> depth logits over D bins and C context channels per feature cell.

    With ``image_seg`` the head also predicts a vehicle logit per cell; its probability is the
    last context channel, so the splat carries "a vehicle is seen here" to the BEV cells along
    the ray where the depth distribution puts it. With ``image_colour`` the three channels
    before it (or the last three) are the cell's mean input colour, not learned. With
    ``head_blocks`` the trunk's features and the ray features pass through that many 3x3
    residual blocks (``head_width`` channels, the trunk's by default) before the 1x1 head, so a
    cell's depth also sees the rays of its neighbours: the body of a vehicle stands at the depth
    where the ray under its ground contact meets the ground.
    """

    def __init__(
        self,
        depth_bins: int,
        channels: int,
        trunk: str,
        stride: int,
        weights: str = "",
        image_seg: bool = False,
        ray_channels: int = 0,
        image_colour: bool = False,
        head_blocks: int = 0,
        head_width: int = 0,
    ):
        super().__init__()
        self.depth_bins, self.channels, self.image_seg = depth_bins, channels, image_seg
        self.stride, self.image_colour = stride, image_colour
        if channels < 1 + 3 * image_colour + image_seg:
            raise ValueError(
                f"lss.channels ({channels}) leaves no learned context channel beside the "
                "image colour and vehicle channels"
            )
        self.trunk = build_trunk(trunk, stride, weights)
        cin = self.trunk.out_channels + ray_channels
        width = head_width or self.trunk.out_channels
        self.head = nn.Sequential(
            *(BasicBlock(cin if i == 0 else width, width) for i in range(head_blocks))
        )
        self.depthnet = nn.Conv2d(
            width if head_blocks else cin, depth_bins + channels, kernel_size=1
        )

    def forward(
        self, x: torch.Tensor, rays: torch.Tensor | None = None
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor | None]:
        """[M, 3, H, W] images (and [M, R, fH, fW] ray features) -> depth logits [M, D, fH, fW],
        context [M, C, fH, fW], and with ``image_seg`` the vehicle logits [M, fH, fW]."""
        colour = F.avg_pool2d(x, self.stride) if self.image_colour else None  # M x 3 x fH x fW
        x = self.trunk(x)  # M x F x fH x fW
        if rays is not None:
            x = torch.cat([x, rays.to(x.dtype)], 1)
        x = self.depthnet(self.head(x))  # M x (D + C) x fH x fW
        depth, context = x[:, : self.depth_bins], x[:, self.depth_bins :]
        seg = context[:, -1] if self.image_seg else None  # M x fH x fW
        parts = [context[:, : self.channels - 3 * self.image_colour - self.image_seg]]
        if colour is not None:  # the channels before the vehicle one
            parts.append(colour.to(context.dtype))
        if seg is not None:  # the last channel
            parts.append(torch.sigmoid(seg)[:, None])
        return depth, torch.cat(parts, 1) if len(parts) > 1 else context, seg


class BEVEncoder(nn.Module):
    """ResNet-18-style encoder-decoder on the BEV grid (stage widths w, 2w, 4w; decoder widths
    d and d / 2, lift-splat-shoot's d = 4w by default).

    [B, cin, X, Y] -> (features [B, cout, X, Y], vehicle logits [B, 1, X, Y]). Both come out of
    the last convolution (cout + 1 channels), so the vehicle map gets the decoder's full spatial
    context while the MSE of the dual loss pins only the feature channels to the splat. The
    decoder runs at the finest resolutions, so it costs most: at w = 32 on a 128 x 128 grid it
    is 80% of the multiply-adds with d = 4w, 40% with d = w.
    """

    def __init__(self, cin: int, cout: int, width: int = 64, decoder: int = 0):
        super().__init__()
        w = width
        d = decoder or 4 * w
        self.cout = cout
        self.stem = nn.Sequential(
            nn.Conv2d(cin, w, 7, stride=2, padding=3, bias=False),
            nn.BatchNorm2d(w),
            nn.ReLU(inplace=True),
        )
        self.layer1 = nn.Sequential(BasicBlock(w, w), BasicBlock(w, w))
        self.layer2 = nn.Sequential(BasicBlock(w, 2 * w, stride=2), BasicBlock(2 * w, 2 * w))
        self.layer3 = nn.Sequential(BasicBlock(2 * w, 4 * w, stride=2), BasicBlock(4 * w, 4 * w))
        self.up1 = UpConcat(w + 4 * w, d)
        self.up2 = nn.Sequential(
            nn.Upsample(scale_factor=2, mode="bilinear", align_corners=True),
            nn.Conv2d(d, d // 2, 3, padding=1, bias=False),
            nn.BatchNorm2d(d // 2),
            nn.ReLU(inplace=True),
            nn.Conv2d(d // 2, cout + 1, 1),
        )

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        x1 = self.layer1(self.stem(x))  # B x w x X/2 x Y/2
        x = self.layer3(self.layer2(x1))  # B x 4w x X/8 x Y/8
        out = self.up2(self.up1(x, x1))  # B x (cout + 1) x X x Y (through B x d x X/2 x Y/2)
        return out[:, : self.cout], out[:, self.cout :]


RAY_CHANNELS = 3


def ray_features(geom: torch.Tensor, dbound) -> torch.Tensor:
    """What each camera feature cell's ray says about depth, from the frustum geometry: where it
    meets the ground (ego z = 0), which a pixel's row alone does not tell a convolution (it
    changes with the camera, its height and pitch, and the image augmentation).

    Args:
        geom: [B, N, D, fH, fW, 3] ego positions of the frustum points (depths along the rays).
        dbound: (min, max, step) of the depth bins.
    Returns:
        [B, N, 3, fH, fW]: the depth at which the ray meets the ground over the largest depth
        (2 when it never does, i.e. at or above the horizon), whether it does (1 / 0), and the
        ray's climb per metre of depth (its elevation's tangent, about).
    """
    lo, hi, _ = dbound
    first, last = geom[:, :, 0], geom[:, :, -1]  # B x N x fH x fW x 3
    depths = geom.shape[2]
    span = (hi - lo) * (depths - 1) / depths  # depth between the first and the last bin
    climb = (last[..., 2] - first[..., 2]) / span  # B x N x fH x fW: dz per metre of depth
    down = climb < -1e-4
    ground = lo - first[..., 2] / climb.where(down, torch.full_like(climb, -1.0))
    ground = torch.where(down & (ground > 0), ground / hi, torch.full_like(ground, 2.0)).clamp(0, 2)
    return torch.stack([ground, down.to(geom.dtype), climb], 2)  # B x N x 3 x fH x fW


@dataclass
class LSSOutput:
    bev: torch.Tensor  # B x bev_channels x X x Y: the BEV features
    logits: torch.Tensor  # B x 1 x X x Y: vehicle logits
    splat: torch.Tensor  # B x C*Z x X x Y: the splatted camera features (the MSE target)
    depth_logits: torch.Tensor  # B x N x D x fH x fW: the depth distribution, before softmax
    seg_logits: torch.Tensor | None = None  # B x N x fH x fW: image vehicle logits (image_seg)


class LiftSplatShoot(nn.Module):
    """The whole network; see the module doc.

    With ``cache_plan`` (set it for inference on fixed cameras: dataset building, tracking), the
    fused splat's cell bookkeeping is computed once and reused while the calibration and image
    augmentation of the batch stay the same; it is never cached in training mode.
    """

    def __init__(self, model: LSSConfig, grid: GridConfig, data: DataConfig):
        super().__init__()
        x_n, y_n, _ = grid.shape
        if x_n % 8 or y_n % 8:
            raise ValueError(
                f"the BEV encoder needs grid sizes divisible by 8, got {grid.shape[:2]}"
            )
        h, w = data.final_dim
        if h % model.downsample or w % model.downsample:
            raise ValueError(
                f"data.final_dim {data.final_dim} must be divisible by "
                f"lss.downsample ({model.downsample})"
            )
        if model.bev_channels != model.channels * grid.shape[2]:
            raise ValueError(
                f"lss.bev_channels ({model.bev_channels}) must equal lss.channels x grid z cells "
                f"({model.channels} x {grid.shape[2]}): the dual loss compares the two maps"
            )
        self.grid, self.cfg = grid, model
        self.register_buffer(
            "frustum",
            create_frustum(data.final_dim, model.downsample, grid.dbound),
            persistent=False,
        )  # D x fH x fW x 3
        self.camencode = CamEncoder(
            grid.depth_bins,
            model.channels,
            model.trunk,
            model.downsample,
            model.trunk_weights,
            model.image_seg,
            RAY_CHANNELS if model.ray_features else 0,
            model.image_colour,
            model.head_blocks,
            model.head_width,
        )
        self.bevencode = BEVEncoder(
            model.channels * grid.shape[2], model.bev_channels, model.bev_width, model.bev_decoder
        )
        self.cache_plan = False
        self._plan_key: tuple[torch.Tensor, ...] | None = None
        self._plan = None

    def geometry(self, rots, trans, intrins, post_rots, post_trans) -> torch.Tensor:
        """Ego position of every frustum point: [B, N, D, fH, fW, 3], float32.

        Computed with autocast off: through bf16 matmuls (8-bit mantissa) positions 40 m out
        came out up to 0.3 m wrong, most of a 0.5 m cell, and in fp16 an original-image pixel
        column times a 45 m depth passes fp16's largest value (65504) and turns into inf.
        """
        with torch.autocast(self.frustum.device.type, enabled=False):
            mats = (t.float() for t in (rots, trans, intrins, post_rots, post_trans))
            return frustum_to_ego(self.frustum.float(), *mats)

    def _fused_plan(self, cells: torch.Tensor, key: tuple[torch.Tensor, ...]):
        """The fused splat's plan of these cells, from the cache when the cameras are the same."""
        cached = self._plan_key
        reuse = (
            self.cache_plan
            and not self.training
            and cached is not None
            and len(cached) == len(key)
            and all(
                a.shape == b.shape and torch.equal(a, b) for a, b in zip(key, cached, strict=True)
            )
        )
        if reuse:
            return self._plan
        plan = splat_plan(cells, self.grid.shape)
        if self.cache_plan and not self.training:
            self._plan_key, self._plan = tuple(k.detach().clone() for k in key), plan
        return plan

    def splat(
        self,
        geom: torch.Tensor,
        depth: torch.Tensor,
        context: torch.Tensor,
        key: tuple[torch.Tensor, ...] = (),
    ) -> torch.Tensor:
        """Sums depth x context into the grid.

        Args:
            geom: [B, N, D, fH, fW, 3] ego positions.
            depth: [B, N, D, fH, fW] depth probabilities.
            context: [B, N, C, fH, fW] context vectors.
            key: the camera matrices the geometry came from (the fused plan's cache key).
        Returns:
            [B, C * Z, X, Y].
        """
        batch, _, channels = context.shape[:3]
        cells = points_to_voxel_coords(geom, self.grid)  # B x N x D x fH x fW x 3 (x, y, z)
        if self.cfg.splat == "fused":
            plan = self._fused_plan(cells, key)
            ctx = context.permute(0, 1, 3, 4, 2)  # B x N x fH x fW x C, channels last
            bev = fused_splat(depth, ctx.to(depth.dtype), plan)  # B x C x Z x X x Y
            return bev.flatten(1, 2)
        feats = depth.unsqueeze(2) * context.unsqueeze(3)  # B x N x C x D x fH x fW
        b = (
            torch.arange(batch, device=geom.device)
            .view(batch, 1, 1, 1, 1, 1)
            .expand(*cells.shape[:-1], 1)
        )
        coords = torch.cat([cells, b], -1).reshape(-1, 4)  # (B N D fH fW) x 4
        feats = feats.permute(0, 1, 3, 4, 5, 2).reshape(-1, channels)  # (B N D fH fW) x C
        pool = bev_pool if self.cfg.splat == "bev_pool" else bev_pool_reference
        bev = pool(feats, coords, batch, self.grid.shape)  # B x C x Z x X x Y
        return bev.flatten(1, 2)  # B x (C Z) x X x Y

    def forward(self, imgs, rots, trans, intrins, post_rots, post_trans) -> LSSOutput:
        """imgs [B, N, 3, H, W]; rots [B, N, 3, 3]; trans [B, N, 3]; intrins [B, N, 3, 3];
        post_rots [B, N, 3, 3]; post_trans [B, N, 3]."""
        batch, cams = imgs.shape[:2]
        geom = self.geometry(rots, trans, intrins, post_rots, post_trans)  # B x N x D x fH x fW x 3
        rays = None
        if self.cfg.ray_features:
            rays = ray_features(geom, self.grid.dbound).flatten(0, 1)  # (B N) x 3 x fH x fW
        depth_logits, context, seg = self.camencode(imgs.flatten(0, 1), rays)  # (B N) x . x fH x fW
        depth_logits = depth_logits.unflatten(0, (batch, cams))  # B x N x D x fH x fW
        context = context.unflatten(0, (batch, cams))  # B x N x C x fH x fW
        if seg is not None:
            seg = seg.unflatten(0, (batch, cams))  # B x N x fH x fW
        key = (rots, trans, intrins, post_rots, post_trans)
        splat = self.splat(geom, depth_logits.softmax(2), context, key)  # B x (C Z) x X x Y
        bev, logits = self.bevencode(splat)
        return LSSOutput(bev, logits, splat, depth_logits, seg)
