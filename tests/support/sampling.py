"""Sampling the tiny transformer's section loop directly, with a trace of which blocks really ran."""
import torch

from framepack_core.method.sections import Conditioning, SectionSettings, run_sections
from framepack_core.speed.step_cache import step_cache

STEPS, SECTIONS = 10, 2


def conditioning(cfg=False):
    g = torch.Generator().manual_seed(5)
    prompt = (torch.randn(1, 512, 32, generator=g), torch.arange(512)[None] < 12, torch.randn(1, 32, generator=g))
    negative = (torch.randn(1, 512, 32, generator=g), torch.arange(512)[None] < 9, torch.randn(1, 32, generator=g))
    return Conditioning(*prompt, image_embeds=torch.randn(1, 16, 32, generator=g), negative=negative if cfg else None)


class Trace:
    """Per transformer call, whether the blocks really ran, seen from inside a block other than block 0
    (TeaCache reads block 0's norm1 even on skipped steps) and independently of the cache's own counts."""

    def __init__(self, transformer):
        self.calls: list[bool] = []
        self.evaluations = 0
        self.handles = [transformer.register_forward_pre_hook(lambda *_: self.calls.append(False))]
        self.handles.append(transformer.transformer_blocks[-1].ff.register_forward_hook(self._ran))
        for block in transformer.single_transformer_blocks:
            self.handles.append(block.proj_mlp.register_forward_hook(self._evaluated))
        for block in transformer.transformer_blocks:
            self.handles.append(block.ff.register_forward_hook(self._evaluated))

    def _ran(self, *_):
        self.calls[-1] = True

    def _evaluated(self, *_):
        self.evaluations += 1

    def remove(self):
        for handle in self.handles:
            handle.remove()


def sample(transformer, cache: dict | None, cfg=1.0, sections=SECTIONS):
    """Latents of a short run, the cache's counts and a Trace; the cache is reset between sections as in the engine.
    `cache`: step_cache's arguments (TeaCache unless it names another method); None: no cache."""
    settings = SectionSettings(seconds=sections * 36 / 30, window=9, steps=STEPS, cfg=cfg)
    start = torch.randn(1, 16, 1, 8, 8, generator=torch.Generator().manual_seed(3))
    trace = Trace(transformer)
    out = []
    try:
        with step_cache(transformer, cache is not None, steps=STEPS, calls_per_step=1 if cfg == 1 else 2,
                        **({"method": "teacache"} | (cache or {}))) as c:
            for section in run_sections(transformer, conditioning(cfg != 1), start, settings,
                                        torch.Generator().manual_seed(0)):
                out.append(section.latents)
                if c is not None:
                    c.reset()
    finally:
        trace.remove()
    return torch.cat(out, dim=2), c, trace
