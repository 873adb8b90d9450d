"""Lift-splat-shoot: six camera images -> a BEV feature map and a vehicle mask.

Lift: an EfficientNet-B0 trunk gives each camera a feature map; a 1x1 head predicts per cell a
depth distribution over D bins and a C-dim context vector; their outer product places the context
along the camera ray. Splat: the frustum points (geometry from intrinsics, extrinsics and the
image augmentation) are summed into the BEV grid with our ``bev_pool`` op. Shoot: a
ResNet-18-style BEV encoder gives a ``bev_channels`` BEV map (the features the ReID crops are cut
from) and a 1-channel vehicle logit map.

Shapes: B batch, N cameras, D depth bins, fH x fW camera feature cells, C channels, X x Y x Z grid.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import torch
from efficientnet_pytorch import EfficientNet
from torch import nn

from bev_reid.config import DataConfig, GridConfig, LSSConfig
from bev_reid.models.blocks import BasicBlock, UpConcat
from bev_reid.models.geometry import create_frustum, frustum_to_ego, points_to_voxel_coords
from bev_reid.ops import bev_pool, bev_pool_reference

SPLATS = {"bev_pool": bev_pool, "reference": bev_pool_reference}


def load_trunk_weights(trunk: nn.Module, path: str) -> None:
    """Loads ImageNet weights for the trunk from a local file (safetensors or a weights-only
    torch file); nothing is downloaded."""
    p = Path(path)
    if not p.is_file():
        raise FileNotFoundError(f"trunk weights {str(p)!r} do not exist (lss.trunk_weights)")
    if p.suffix == ".safetensors":
        from safetensors.torch import load_file

        state = load_file(str(p))
    else:
        state = torch.load(p, map_location="cpu", weights_only=True)
    state = {k: v for k, v in state.items() if not k.startswith("_fc.")}  # classifier not used
    missing, unexpected = trunk.load_state_dict(state, strict=False)
    if unexpected or [m for m in missing if not m.startswith("_fc.")]:
        raise ValueError(
            f"trunk weights {str(p)!r} do not fit {type(trunk).__name__}: "
            f"missing {missing[:5]}, unexpected {unexpected[:5]}"
        )


class CamEncoder(nn.Module):
    """Image -> depth distribution x context, at stride 16."""

    def __init__(
        self,
        depth_bins: int,
        channels: int,
        trunk: str = "efficientnet-b0",
        trunk_weights: str = "",
    ):
        super().__init__()
        self.depth_bins, self.channels = depth_bins, channels
        self.trunk = EfficientNet.from_name(trunk)
        if trunk_weights:
            load_trunk_weights(self.trunk, trunk_weights)
        del self.trunk._conv_head, self.trunk._bn1, self.trunk._fc  # the head is not used
        c4, c5 = self._endpoint_channels()
        self.up = UpConcat(c4 + c5, 512)
        self.depthnet = nn.Conv2d(512, depth_bins + channels, kernel_size=1)

    def _endpoint_channels(self) -> tuple[int, int]:
        """Channels of the stride-16 map (the output before the last strided block) and of the
        stride-32 map (the last block's output)."""
        blocks = self.trunk._blocks
        last_strided = max(i for i, b in enumerate(blocks) if max(b._depthwise_conv.stride) > 1)
        return blocks[last_strided - 1]._project_conv.out_channels, blocks[
            -1
        ]._project_conv.out_channels

    def trunk_features(self, x: torch.Tensor) -> torch.Tensor:
        """[M, 3, H, W] -> [M, 512, H/16, W/16] (stride 16 and 32 endpoints fused)."""
        t = self.trunk
        x = t._swish(t._bn0(t._conv_stem(x)))
        endpoints = []
        prev = x
        for i, block in enumerate(t._blocks):
            rate = t._global_params.drop_connect_rate * i / len(t._blocks)
            x = block(x, drop_connect_rate=rate)
            if x.shape[-2] < prev.shape[-2]:
                endpoints.append(prev)  # the last map before each downsampling
            prev = x
        return self.up(x, endpoints[-1])

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """[M, 3, H, W] images -> [M, C, D, fH, fW] lifted features."""
        x = self.depthnet(self.trunk_features(x))  # M x (D + C) x fH x fW
        depth = x[:, : self.depth_bins].softmax(dim=1)  # M x D x fH x fW
        context = x[:, self.depth_bins : self.depth_bins + self.channels]  # M x C x fH x fW
        return depth.unsqueeze(1) * context.unsqueeze(2)  # M x C x D x fH x fW


class BEVEncoder(nn.Module):
    """ResNet-18-style encoder-decoder on the BEV grid.

    [B, cin, X, Y] -> (features [B, cout, X, Y], vehicle logits [B, 1, X, Y]). Both come out of
    the last convolution (cout + 1 channels), so the vehicle map gets the decoder's full spatial
    context while the MSE of the dual loss pins only the feature channels to the splat.
    """

    def __init__(self, cin: int, cout: int):
        super().__init__()
        self.cout = cout
        self.stem = nn.Sequential(
            nn.Conv2d(cin, 64, 7, stride=2, padding=3, bias=False),
            nn.BatchNorm2d(64),
            nn.ReLU(inplace=True),
        )
        self.layer1 = nn.Sequential(BasicBlock(64, 64), BasicBlock(64, 64))
        self.layer2 = nn.Sequential(BasicBlock(64, 128, stride=2), BasicBlock(128, 128))
        self.layer3 = nn.Sequential(BasicBlock(128, 256, stride=2), BasicBlock(256, 256))
        self.up1 = UpConcat(64 + 256, 256)
        self.up2 = nn.Sequential(
            nn.Upsample(scale_factor=2, mode="bilinear", align_corners=True),
            nn.Conv2d(256, 128, 3, padding=1, bias=False),
            nn.BatchNorm2d(128),
            nn.ReLU(inplace=True),
            nn.Conv2d(128, cout + 1, 1),
        )

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        x1 = self.layer1(self.stem(x))  # B x 64 x X/2 x Y/2
        x = self.layer3(self.layer2(x1))  # B x 256 x X/8 x Y/8
        out = self.up2(self.up1(x, x1))  # B x (cout + 1) x X x Y
        return out[:, : self.cout], out[:, self.cout :]


@dataclass
class LSSOutput:
    bev: torch.Tensor  # B x bev_channels x X x Y: the BEV features
    logits: torch.Tensor  # B x 1 x X x Y: vehicle logits
    splat: torch.Tensor  # B x C*Z x X x Y: the splatted camera features (the MSE target)


class LiftSplatShoot(nn.Module):
    """The whole network; see the module doc."""

    def __init__(self, model: LSSConfig, grid: GridConfig, data: DataConfig):
        super().__init__()
        if model.splat not in SPLATS:
            raise ValueError(f"lss.splat must be one of {sorted(SPLATS)}, got {model.splat!r}")
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
            grid.depth_bins, model.channels, model.trunk, model.trunk_weights
        )
        self.bevencode = BEVEncoder(model.channels * grid.shape[2], model.bev_channels)

    def geometry(self, rots, trans, intrins, post_rots, post_trans) -> torch.Tensor:
        """Ego position of every frustum point: [B, N, D, fH, fW, 3], float32.

        Computed with autocast off: through bf16 matmuls (8-bit mantissa) positions 40 m out
        came out up to 0.3 m wrong, most of a 0.5 m cell, and in fp16 an original-image pixel
        column times a 45 m depth passes fp16's largest value (65504) and turns into inf.
        """
        with torch.autocast(self.frustum.device.type, enabled=False):
            mats = (t.float() for t in (rots, trans, intrins, post_rots, post_trans))
            return frustum_to_ego(self.frustum.float(), *mats)

    def splat(self, geom: torch.Tensor, feats: torch.Tensor) -> torch.Tensor:
        """Sums lifted features into the grid.

        Args:
            geom: [B, N, D, fH, fW, 3] ego positions.
            feats: [B, N, C, D, fH, fW] lifted features.
        Returns:
            [B, C * Z, X, Y].
        """
        batch, _, channels = feats.shape[:3]
        x_n, y_n, z_n = self.grid.shape
        cells = points_to_voxel_coords(geom, self.grid)  # B x N x D x fH x fW x 3 (x, y, z)
        b = (
            torch.arange(batch, device=geom.device)
            .view(batch, 1, 1, 1, 1, 1)
            .expand(*cells.shape[:-1], 1)
        )
        coords = torch.cat([cells, b], -1).reshape(-1, 4)  # (B N D fH fW) x 4
        feats = feats.permute(0, 1, 3, 4, 5, 2).reshape(-1, channels)  # (B N D fH fW) x C
        bev = SPLATS[self.cfg.splat](feats, coords, batch, (x_n, y_n, z_n))  # B x C x Z x X x Y
        return bev.flatten(1, 2)  # B x (C Z) x X x Y

    def forward(self, imgs, rots, trans, intrins, post_rots, post_trans) -> LSSOutput:
        """imgs [B, N, 3, H, W]; rots [B, N, 3, 3]; trans [B, N, 3]; intrins [B, N, 3, 3];
        post_rots [B, N, 3, 3]; post_trans [B, N, 3]."""
        batch, cams = imgs.shape[:2]
        geom = self.geometry(rots, trans, intrins, post_rots, post_trans)  # B x N x D x fH x fW x 3
        feats = self.camencode(imgs.flatten(0, 1))  # (B N) x C x D x fH x fW
        feats = feats.unflatten(0, (batch, cams))  # B x N x C x D x fH x fW
        splat = self.splat(geom, feats)  # B x (C Z) x X x Y
        bev, logits = self.bevencode(splat)
        return LSSOutput(bev, logits, splat)
