"""RIFE 4.x (Huang et al., "Real-Time Intermediate Flow Estimation for Video Frame Interpolation", ECCV 2022),
the network its authors publish as `flownet.pkl` in Practical-RIFE's 4.7-4.9 releases, written here from that
published architecture so that those files load as published (their state-dict names, `module.` prefixes from
training removed).

No well-kept package ships it: the packages on the index that carry RIFE bundle a whole video tool (with their
own readers, CUDA checks and downloads) or pin old torch builds; the network itself is ~100 lines of plain torch.

The architecture, as published: a feature head (`encode`: 3->32 conv stride 2, two 32->32 convs, a transposed
conv up to F=8 channels, LeakyReLU 0.2 between) run on both frames; then IFBlocks `block0..blockN-1` from
coarse to fine (scales 8, 4, 2, 1 for four blocks). Each block downsamples its input by its scale, applies two
stride-2 convs (`conv0`), eight residual convs scaled by a learned `beta` (`convblock`), and a stride-2
transposed conv plus pixel shuffle (`lastconv`) to 4 flow channels (frame 0 and frame 1 to the middle) and a
mask, upsampled back. Block 0 sees both frames, both features and the timestep; every later block sees both
frames and features warped by the flow so far, the timestep, the mask, and the flow, and adds to the flow.
The frame is the two warped frames mixed by sigmoid(mask).
"""
from __future__ import annotations

import re

import torch
import torch.nn.functional as F
from torch import nn

_LEAK = 0.2


def _conv_relu(cin: int, cout: int, stride: int = 1) -> nn.Sequential:
    return nn.Sequential(nn.Conv2d(cin, cout, 3, stride, 1), nn.LeakyReLU(_LEAK))


class Head(nn.Module):
    def __init__(self, features: int = 8):
        super().__init__()
        self.cnn0 = nn.Conv2d(3, 32, 3, 2, 1)
        self.cnn1 = nn.Conv2d(32, 32, 3, 1, 1)
        self.cnn2 = nn.Conv2d(32, 32, 3, 1, 1)
        self.cnn3 = nn.ConvTranspose2d(32, features, 4, 2, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        for layer in (self.cnn0, self.cnn1, self.cnn2):
            x = F.leaky_relu(layer(x), _LEAK)
        return self.cnn3(x)


class ResConv(nn.Module):
    def __init__(self, channels: int):
        super().__init__()
        self.conv = nn.Conv2d(channels, channels, 3, 1, 1)
        self.beta = nn.Parameter(torch.ones(1, channels, 1, 1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.leaky_relu(self.conv(x) * self.beta + x, _LEAK)


class IFBlock(nn.Module):
    def __init__(self, cin: int, channels: int):
        super().__init__()
        self.conv0 = nn.Sequential(_conv_relu(cin, channels // 2, 2), _conv_relu(channels // 2, channels, 2))
        self.convblock = nn.Sequential(*(ResConv(channels) for _ in range(8)))
        self.lastconv = nn.Sequential(nn.ConvTranspose2d(channels, 4 * 6, 4, 2, 1), nn.PixelShuffle(2))

    def forward(self, x: torch.Tensor, flow: torch.Tensor | None, scale: float):
        x = F.interpolate(x, scale_factor=1 / scale, mode="bilinear", align_corners=False)
        if flow is not None:
            flow = F.interpolate(flow, scale_factor=1 / scale, mode="bilinear", align_corners=False) / scale
            x = torch.cat([x, flow], 1)
        out = self.lastconv(self.convblock(self.conv0(x)))
        out = F.interpolate(out, scale_factor=scale, mode="bilinear", align_corners=False)
        return out[:, :4] * scale, out[:, 4:5]


def warp(image: torch.Tensor, flow: torch.Tensor) -> torch.Tensor:
    """Sample `image` at each pixel moved by `flow` (pixels; bilinear, edges repeated)."""
    _, _, height, width = flow.shape
    ys = torch.linspace(-1, 1, height, device=flow.device, dtype=flow.dtype)
    xs = torch.linspace(-1, 1, width, device=flow.device, dtype=flow.dtype)
    grid_y, grid_x = torch.meshgrid(ys, xs, indexing="ij")
    grid = torch.stack([grid_x + flow[:, 0] * 2 / (width - 1), grid_y + flow[:, 1] * 2 / (height - 1)], dim=-1)
    return F.grid_sample(image, grid, mode="bilinear", padding_mode="border", align_corners=True)


class IFNet(nn.Module):
    def __init__(self, block_channels=(192, 128, 96, 64), features: int = 8):
        super().__init__()
        self.encode = Head(features)
        self.blocks = len(block_channels)
        for i, channels in enumerate(block_channels):
            cin = 7 + 2 * features if i == 0 else 8 + 2 * features + 4
            self.add_module(f"block{i}", IFBlock(cin, channels))

    @property
    def scales(self) -> list[int]:
        return [2 ** i for i in reversed(range(self.blocks))]  # 8, 4, 2, 1 for four blocks

    @property
    def multiple(self) -> int:
        """Frame sides are padded to a multiple of this (the coarsest block's stride, as published: 128)."""
        return 16 * self.scales[0]

    def forward(self, img0: torch.Tensor, img1: torch.Tensor, timestep: float) -> torch.Tensor:
        """Frames (B, 3, H, W) in [0, 1], H and W multiples of `multiple` -> the frame at `timestep` in (0, 1)."""
        t = img0.new_full((img0.shape[0], 1, *img0.shape[2:]), timestep)
        f0, f1 = self.encode(img0), self.encode(img1)
        flow = mask = None
        warped0, warped1 = img0, img1
        for i, scale in enumerate(self.scales):
            block = getattr(self, f"block{i}")
            if flow is None:
                flow, mask = block(torch.cat([img0, img1, f0, f1, t], 1), None, scale)
            else:
                inputs = torch.cat([warped0, warped1, warp(f0, flow[:, :2]), warp(f1, flow[:, 2:4]), t, mask], 1)
                delta, mask = block(inputs, flow, scale)
                flow = flow + delta
            warped0, warped1 = warp(img0, flow[:, :2]), warp(img1, flow[:, 2:4])
        weight = torch.sigmoid(mask)
        return warped0 * weight + warped1 * (1 - weight)


def from_state_dict(state: dict[str, torch.Tensor]) -> IFNet:
    """The IFNet whose sizes the published state dict says (blocks, their channels, the head's features)."""
    state = {k.removeprefix("module."): v for k, v in state.items()}
    if "encode.cnn3.weight" not in state or "block0.conv0.1.0.weight" not in state:
        raise ValueError("is not a RIFE 4.7-4.9 flownet (no feature head `encode` or no `block0`)")
    count = 1 + max(int(m.group(1)) for k in state if (m := re.match(r"block(\d+)\.", k)))
    channels = [state[f"block{i}.conv0.1.0.weight"].shape[0] for i in range(count)]
    net = IFNet(channels, features=state["encode.cnn3.weight"].shape[1])
    net.load_state_dict({k: v for k, v in state.items() if not k.startswith(("teacher", "caltime"))}, strict=True)
    return net.eval().requires_grad_(False)


def load(path, device: str = "cpu") -> IFNet:
    """A published flownet file (`.pkl`/`.pth` pickles read with torch's weights-only unpickler, or
    `.safetensors`). ValueError, one sentence, for anything else."""
    from pathlib import Path

    path = Path(path)
    try:
        if path.suffix.lower() == ".safetensors":
            from safetensors.torch import load_file

            state = load_file(str(path))
        else:
            state = torch.load(path, map_location="cpu", weights_only=True)
        if not isinstance(state, dict):
            raise ValueError("holds no state dict")
        return from_state_dict(state).to(device)
    except Exception as error:  # a broken or foreign file: torch's and pickle's errors are many kinds
        reason = str(error).strip().splitlines()[0][:200] if str(error).strip() else type(error).__name__
        raise ValueError(f"{path.name} is not a RIFE 4.x model file this app can load ({reason}).") from None
