"""Counting a model's parameters: the published sizes the tests hold the meta-built models to."""
import torch


def parameter_count(module: torch.nn.Module) -> int:
    return sum(p.numel() for p in module.parameters())
