"""The same numbers on every run of one machine, whatever addresses the tensors happen to sit at.

The app promises that a resumed run is byte-identical to an uninterrupted one and that streaming
a model's blocks changes no pixel. Both compare two computations that do the same operations on
the same values, but in tensors at other addresses (a streaming slot instead of a resident copy,
a LoRA matrix loaded again in a new process). On a GPU, cuBLAS picks its kernel by shape, not by
address. On a CPU, torch's float32 matmuls go to Intel MKL, and MKL's default mode gives no such
promise: "Conditional Numerical Reproducibility" (CNR) is MKL's documented switch for it
(oneMKL Developer Guide, "Obtaining Numerically Reproducible Results"): with CNR on, results are
bitwise reproducible from run to run on a fixed number of threads, and unaligned input and output
are fully supported. Without it, the AMD EPYC of issue 31 gave a streamed run with a LoRA other
pixels than the resident one, while Intel CPUs happened to agree.

`MKL_CBWR=AUTO` turns CNR on with the branch MKL would pick anyway (the fastest this CPU has; on
non-Intel CPUs AUTO and COMPATIBLE are the only branches MKL supports), so it costs little; a
branch the user chose (`MKL_CBWR=AVX2`, say, to match another machine) is kept. MKL reads the
variable once, at its first call in the process: `pin_blas()` must run before torch computes
anything, which is why the entry points (app.py, the test session, the Ray workers' environment)
call it first thing. oneDNN (float32 convolutions, bf16 matmuls on CPUs) reorders its inputs into
buffers of its own and is deterministic for a fixed thread count already; nothing to pin there.

No torch import here: app.py calls this before anything heavy is loaded.
"""
from __future__ import annotations

import os
from typing import MutableMapping

MKL_CNR_VARIABLE = "MKL_CBWR"
MKL_CNR_AUTO = "AUTO"


def pin_blas(environ: MutableMapping[str, str] = os.environ) -> str:
    """Turn on MKL's conditional numerical reproducibility unless the user set a branch; returns the
    setting in force. Harmless where torch has no MKL (macOS on Apple silicon, aarch64 Linux)."""
    return environ.setdefault(MKL_CNR_VARIABLE, MKL_CNR_AUTO)
