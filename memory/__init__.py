"""Placement of torch modules on devices under a byte budget. Knows nothing of FramePack.

budget.py     pure planning: which blocks stay resident, which stream, how far ahead to copy
device.py     CUDA device and a simulated one (CPU tensors, same code paths, a byte ledger)
weights.py    a group of tensors: host copy packed (pageable or pinned) or left in its mapped file
mapped.py     safetensors files memory-mapped (the disk tier), streamed writing, binding to meta models
gates.py      "will this block run?": a run's step cache tells its streamers, so skipped blocks cost no copies
swap.py       streaming blocks through device slots, prefetched on a side stream
placement.py  one model on a device: fixed part + resident blocks + a streamer for the rest
manager.py    whole models in and out of the device under one budget
host.py       freed host heap back to the OS, so the process stays flat
ram.py        the RAM budget: its default and its share for weights
cap.py        the VRAM budget as a hard cap on the process (the caching allocator capped), its configuration
rehearsal.py  a device of meta buffers and a count of live bytes: work rehearsed at full size with no data
"""
from .budget import (
    BlockPlan,
    BudgetError,
    GiB,
    MemoryTerms,
    ModelBytes,
    TierPlan,
    plan_pinning,
    plan_tiers,
    plan_use,
    activation_bytes,
    plan_blocks,
    size_text,
)
from .cap import allocator_cap, cap_allocator, configure_allocator
from .gates import BlockGates, GateHandle
from .mapped import MappedFile, bind_mapped, is_mapped, map_folder, write_safetensors
from .device import CudaDevice, Device, PinError, SimulatedDevice, cuda_device
from .host import release_free_host_memory
from .ram import PROCESS_BYTES, available_ram_bytes, default_ram_budget, weight_ram_budget
from .manager import (
    ModelManager,
    automatic_budget,
    default_device,
)
from .placement import ModelPlacement, find_block_lists, model_sizes
from .swap import BlockStreamer

__all__ = [
    "GiB", "BlockPlan", "BlockStreamer", "BudgetError", "CudaDevice", "Device",
    "ModelManager", "ModelPlacement", "PinError", "SimulatedDevice", "activation_bytes", "automatic_budget",
    "cuda_device", "default_device", "find_block_lists", "model_sizes", "plan_blocks", "release_free_host_memory",
    "size_text", "BlockGates", "GateHandle", "MappedFile", "bind_mapped", "is_mapped", "map_folder",
    "write_safetensors", "PROCESS_BYTES", "available_ram_bytes", "default_ram_budget", "weight_ram_budget", "TierPlan", "plan_tiers", "plan_pinning",
    "MemoryTerms", "ModelBytes", "plan_use", "allocator_cap", "cap_allocator", "configure_allocator",
]
