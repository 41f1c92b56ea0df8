"""Whole models on the compute device for their work, and off it afterwards.

Generic over torch.nn.Module: it knows nothing of what the models are for.
"""
from __future__ import annotations

from contextlib import contextmanager
from typing import Iterator

import torch


class ModelManager:
    def __init__(self, device: str | torch.device = "cpu", keep_resident: bool = False):
        self.device = torch.device(device)
        self.keep_resident = keep_resident or self.device.type == "cpu"

    @contextmanager
    def use(self, *modules: torch.nn.Module) -> Iterator[None]:
        """Move `modules` to the device for the body; back to the host afterwards unless resident."""
        for module in modules:
            module.to(self.device)
        try:
            yield
        finally:
            if not self.keep_resident:
                for module in modules:
                    module.to("cpu")
                if self.device.type == "cuda":
                    torch.cuda.empty_cache()


def default_device() -> torch.device:
    return torch.device("cuda" if torch.cuda.is_available() else "cpu")
