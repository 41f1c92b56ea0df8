"""Tests of the benchmarks' own pieces (bench/): the GPU session's steps and the full-set stand-in."""
