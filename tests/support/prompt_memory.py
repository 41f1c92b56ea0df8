"""The prompt cache's in-memory entries forgotten, as a new process starts without them: the tests' way to
make the next lookup go to the disk cache (the app never needs it: one process, one memory)."""
from framepack_core.models import prompt_cache


def clear_prompt_memory() -> None:
    prompt_cache._memory.clear()
