"""framepack_core/method/: the published arithmetic (sections, sampler, schedule, prompts, keyframes)."""
