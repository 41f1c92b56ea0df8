"""What benchmarks and tests share: stand-in weights written fast, the real tokenizers rebuilt offline,
a process watched from outside, CUDA step timing."""
