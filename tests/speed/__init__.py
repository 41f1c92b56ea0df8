"""framepack_core/speed/: attention kernels, FP8, step caches."""
