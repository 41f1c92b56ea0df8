"""Upscaler and RIFE files built here from random weights, in the published state-dict layouts (names and
shapes as the authors' files have them), saved as files and loaded back through the app's own path.

- Real-ESRGAN RRDBNet (BasicSR's names, `params_ema` wrapper): conv_first, body.N.rdbK.convJ, conv_body,
  conv_up1, conv_up2, conv_hr, conv_last; grow channels 32; x2 takes the input pixel-unshuffled (12 channels).
  Published: 64 features, 23 blocks. Here fewer features and blocks unless asked.
- Real-ESRGAN SRVGGNetCompact (`params` wrapper): body.0 conv, body.1 PReLU, then conv/PReLU pairs, the last
  conv to 3 * scale^2 channels. Published general-x4v3: 64 features, 32 convolutions.
- RIFE 4.7-4.9 `flownet.pkl`: encode.cnn0..3 (feature head, 8 features), block0..3 with conv0.0.0, conv0.1.0,
  convblock.0-7.conv and .beta, lastconv.0 (a transposed conv to 24 channels); saved from DDP training, so
  every name starts with `module.`. Published channels 192, 128, 96, 64.
"""
from __future__ import annotations

import torch


def _conv(state, name, cin, cout, generator, k=3, transposed=False, scale=0.05):
    shape = (cin, cout, k, k) if transposed else (cout, cin, k, k)
    state[f"{name}.weight"] = torch.randn(shape, generator=generator) * scale
    state[f"{name}.bias"] = torch.randn(cout, generator=generator) * 0.01


def esrgan_state(scale: int = 2, features: int = 8, blocks: int = 1, seed: int = 0) -> dict:
    g = torch.Generator().manual_seed(seed)
    state, grow = {}, 32
    _conv(state, "conv_first", 3 * (4 if scale == 2 else 1), features, g)
    for b in range(blocks):
        for r in (1, 2, 3):
            for c in range(1, 6):
                _conv(state, f"body.{b}.rdb{r}.conv{c}", features + (c - 1) * grow, grow if c < 5 else features, g)
    for name in ("conv_body", "conv_up1", "conv_up2", "conv_hr"):
        _conv(state, name, features, features, g)
    _conv(state, "conv_last", features, 3, g)
    return {"params_ema": state}


def compact_state(features: int = 8, convs: int = 2, scale: int = 4, seed: int = 0) -> dict:
    g = torch.Generator().manual_seed(seed)
    state = {}
    _conv(state, "body.0", 3, features, g)
    state["body.1.weight"] = torch.full((features,), 0.25)
    for k in range(convs):
        _conv(state, f"body.{2 + 2 * k}", features, features, g)
        state[f"body.{3 + 2 * k}.weight"] = torch.full((features,), 0.25)
    _conv(state, f"body.{2 + 2 * convs}", features, 3 * scale * scale, g)
    return {"params": state}


def rife_state(channels=(192, 128, 96, 64), features: int = 8, seed: int = 0) -> dict:
    g = torch.Generator().manual_seed(seed)
    state = {}
    _conv(state, "encode.cnn0", 3, 32, g)
    _conv(state, "encode.cnn1", 32, 32, g)
    _conv(state, "encode.cnn2", 32, 32, g)
    _conv(state, "encode.cnn3", 32, features, g, k=4, transposed=True)
    for i, c in enumerate(channels):
        cin = 7 + 2 * features if i == 0 else 8 + 2 * features + 4
        _conv(state, f"block{i}.conv0.0.0", cin, c // 2, g)
        _conv(state, f"block{i}.conv0.1.0", c // 2, c, g)
        for k in range(8):
            _conv(state, f"block{i}.convblock.{k}.conv", c, c, g, scale=0.01)
            state[f"block{i}.convblock.{k}.beta"] = torch.ones(1, c, 1, 1)
        _conv(state, f"block{i}.lastconv.0", c, 24, g, k=4, transposed=True, scale=0.01)
    return {f"module.{k}": v for k, v in state.items()}


def save(state: dict, path):
    """As the authors ship them: a pickle (torch.save) for .pth/.pkl, else safetensors (the flat dict)."""
    from pathlib import Path

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    if path.suffix == ".safetensors":
        from safetensors.torch import save_file

        flat = next(iter(state.values())) if len(state) == 1 and isinstance(next(iter(state.values())), dict) else state
        save_file({k: v.contiguous() for k, v in flat.items()}, str(path))
    else:
        torch.save(state, path)
    return path
