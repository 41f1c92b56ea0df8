"""Resolution buckets: the (height, width) a picture is cropped to before encoding."""
from __future__ import annotations

from functools import lru_cache

from framepack_core.settings import DEFAULTS, MAX_RESOLUTION, MIN_RESOLUTION, TRAINED_RESOLUTION

# The published 640 table, (height, width), portrait last. Every entry is about 640x640 pixels.
BUCKETS_640 = (
    (416, 960), (448, 864), (480, 832), (512, 768), (544, 704), (576, 672), (608, 640),
    (640, 608), (672, 576), (704, 544), (768, 512), (832, 480), (864, 448), (960, 416),
)


@lru_cache(maxsize=None)
def bucket_table(resolution: int = DEFAULTS["resolution"]) -> tuple[tuple[int, int], ...]:
    """The 640 table's aspect ratios scaled to an area of about resolution x resolution.

    Sides are rounded to multiples of 16 (the VAE downsamples 8x, the transformer patches
    2x), so scaled tables may repeat an entry; the choice below stays well defined.
    """
    if resolution == TRAINED_RESOLUTION:
        return BUCKETS_640
    if not MIN_RESOLUTION <= resolution <= MAX_RESOLUTION:
        raise ValueError(f"resolution must be between {MIN_RESOLUTION} and {MAX_RESOLUTION}, got {resolution}")
    scale = resolution / TRAINED_RESOLUTION

    def snap(side: int) -> int:
        return max(16, int(side * scale / 16 + 0.5) * 16)

    return tuple((snap(h), snap(w)) for h, w in BUCKETS_640)


def nearest_bucket(height: int, width: int, resolution: int = DEFAULTS["resolution"]) -> tuple[int, int]:
    """The bucket whose aspect ratio is closest: minimise |H*bw - W*bh|; on ties the later entry wins."""
    best, best_metric = None, float("inf")
    for bh, bw in bucket_table(resolution):
        metric = abs(height * bw - width * bh)
        if metric <= best_metric:
            best, best_metric = (bh, bw), metric
    return best
