"""Image trunks of the camera encoder, chosen by name (``lss.trunk``) from a small registry.

A trunk maps images [M, 3, H, W] to features [M, out_channels, H / s, W / s] at the stride
``s = lss.downsample`` the config asks for; it says which strides it supports. No weights are
ever downloaded: ImageNet weights come only from a local file (``lss.trunk_weights``, safetensors
or a weights-only torch file; pickles holding code are refused).

- ``efficientnet-b0``: the original method's trunk (``EfficientNet.from_name``), its stride-16 and
  stride-32 endpoints fused to stride 16. Made for pretrained weights and GPUs.
- ``resnet-tiny``: four ResNet stages of 32-64-96-128 channels, the coarser maps fused into the
  one of the asked stride (4, 8 or 16). At 64 x 176 images it takes a third of EfficientNet-B0's
  multiply-adds at stride 16 (0.18 against 0.54 GFLOP an image) and 0.31 GFLOP at stride 8, in
  plain convolutions that run fast on a CPU, and from scratch it learns in minutes.
"""

from __future__ import annotations

import pickle
from collections.abc import Callable
from pathlib import Path

import torch
from torch import nn

from bev_reid.models.blocks import BasicBlock, UpConcat

TRUNKS: dict[str, Callable[..., nn.Module]] = {}


def register_trunk(name: str) -> Callable[[Callable[..., nn.Module]], Callable[..., nn.Module]]:
    """Decorator: makes ``fn(stride) -> trunk`` buildable as ``build_trunk(name, stride)``."""

    def wrap(fn: Callable[..., nn.Module]) -> Callable[..., nn.Module]:
        if name in TRUNKS:
            raise KeyError(f"trunk {name!r} is registered twice")
        TRUNKS[name] = fn
        return fn

    return wrap


def list_trunks() -> list[str]:
    return sorted(TRUNKS)


def build_trunk(name: str, stride: int, weights: str = "") -> nn.Module:
    """The trunk ``name`` at output ``stride``, with weights from the local file ``weights``.

    Raises:
        KeyError: unknown trunk (the message lists the registered ones).
        ValueError: a stride the trunk does not support; weights that do not fit or hold code.
        FileNotFoundError: a weights file that is not there.
    """
    if name not in TRUNKS:
        raise KeyError(f"unknown trunk {name!r}; valid trunks: {', '.join(list_trunks())}")
    trunk = TRUNKS[name](stride)
    if weights:
        load_trunk_weights(trunk, weights)
    return trunk


def load_trunk_weights(trunk: nn.Module, path: str) -> None:
    """Loads weights (e.g. ImageNet's) into a trunk from a local safetensors or weights-only torch
    file; a classifier head in the file is ignored. Nothing is downloaded, nothing unpickled."""
    p = Path(path)
    if not p.is_file():
        raise FileNotFoundError(f"trunk weights {str(p)!r} do not exist (lss.trunk_weights)")
    if p.suffix == ".safetensors":
        from safetensors.torch import load_file

        state = load_file(str(p))
    else:
        try:
            state = torch.load(p, map_location="cpu", weights_only=True)
        except (pickle.UnpicklingError, RuntimeError, EOFError, AttributeError) as e:
            raise ValueError(
                f"lss.trunk_weights {str(p)!r} is not a weights-only file: bev-reid never "
                "unpickles objects other than tensors. Save the state dict with "
                "safetensors.torch.save_file (or torch.save of plain tensors) and pass that"
            ) from e
    if not isinstance(state, dict) or not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise ValueError(f"lss.trunk_weights {str(p)!r} does not hold a state dict of tensors")
    prefix = getattr(trunk, "weights_prefix", "")
    ignored = getattr(trunk, "ignored_keys", ())  # parts of the file the trunk does not use
    state = {prefix + k: v for k, v in state.items() if not k.startswith(ignored)}
    missing, unexpected = trunk.load_state_dict(state, strict=False)
    missing = [m for m in missing if m.startswith(prefix)]  # not the layers added to the net
    if unexpected or missing:
        raise ValueError(
            f"trunk weights {str(p)!r} do not fit {type(trunk).__name__}: "
            f"missing {missing[:5]}, unexpected {unexpected[:5]}"
        )


def _need_stride(name: str, stride: int, allowed: tuple[int, ...]) -> None:
    if stride not in allowed:
        raise ValueError(
            f"trunk {name} supports lss.downsample {' or '.join(map(str, allowed))}, got {stride}"
        )


class EfficientNetTrunk(nn.Module):
    """EfficientNet-B0's blocks, stride-16 and stride-32 endpoints fused to 512 channels at 16."""

    weights_prefix = "net."  # a file of EfficientNet's own state dict loads into self.net
    ignored_keys = ("_fc.", "_conv_head.", "_bn1.")  # the classifier head, not used

    def __init__(self, variant: str = "efficientnet-b0"):
        super().__init__()
        from efficientnet_pytorch import EfficientNet

        self.net = EfficientNet.from_name(variant)
        del self.net._conv_head, self.net._bn1, self.net._fc  # the head is not used
        blocks = self.net._blocks
        last_strided = max(i for i, b in enumerate(blocks) if max(b._depthwise_conv.stride) > 1)
        c4 = blocks[last_strided - 1]._project_conv.out_channels  # the stride-16 map
        c5 = blocks[-1]._project_conv.out_channels  # the stride-32 map
        self.up = UpConcat(c4 + c5, 512)
        self.out_channels = 512

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """[M, 3, H, W] -> [M, 512, H/16, W/16]."""
        t = self.net
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


@register_trunk("efficientnet-b0")
def efficientnet_b0(stride: int) -> nn.Module:
    _need_stride("efficientnet-b0", stride, (16,))
    return EfficientNetTrunk("efficientnet-b0")


class TinyResNet(nn.Module):
    """Stem (stride 2) and four stages of two BasicBlocks (strides 2, 2, 2, 2 -> 32), the
    stride-``stride`` map fused with the upsampled coarser ones.

    [M, 3, H, W] -> [M, out_channels, H / stride, W / stride].
    """

    def __init__(self, stride: int, widths: tuple[int, ...] = (32, 64, 96, 128), out: int = 128):
        super().__init__()
        self.stride = stride
        self.stem = nn.Sequential(
            nn.Conv2d(3, widths[0], 3, stride=2, padding=1, bias=False),
            nn.BatchNorm2d(widths[0]),
            nn.ReLU(inplace=True),
        )
        stages, cin = [], widths[0]
        for w in widths:
            stages.append(nn.Sequential(BasicBlock(cin, w, stride=2), BasicBlock(w, w)))
            cin = w
        self.stages = nn.ModuleList(stages)  # strides 4, 8, 16, 32
        fuse_from = {4: 0, 8: 1, 16: 2}[stride]  # the stage whose output has the asked stride
        self.fuse_from = fuse_from
        if stride == 4:
            out //= 2  # the fusing convolutions at stride 4 cost 4x those at 8 per channel
        self.up = UpConcat(widths[fuse_from] + sum(widths[fuse_from + 1 :]), out)
        self.out_channels = out

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.stem(x)  # M x w0 x H/2 x W/2
        maps = []
        for stage in self.stages:
            x = stage(x)
            maps.append(x)  # strides 4, 8, 16, 32
        fine = maps[self.fuse_from]
        size = fine.shape[-2:]
        coarse = torch.cat(
            [nn.functional.interpolate(m, size=size, mode="bilinear", align_corners=False)
             for m in maps[self.fuse_from + 1 :]], 1,
        )  # fmt: skip
        return self.up(coarse, fine)


@register_trunk("resnet-tiny")
def resnet_tiny(stride: int) -> nn.Module:
    _need_stride("resnet-tiny", stride, (4, 8, 16))
    return TinyResNet(stride)
