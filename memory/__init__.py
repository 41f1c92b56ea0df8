"""Placement of torch modules on devices under a byte budget. Knows nothing of FramePack."""
from .manager import ModelManager, default_device

__all__ = ["ModelManager", "default_device"]
