"""The load-time check that the Llama tokenizer splits the prompt template as the model expects.

Conditioning drops the template's first `crop_start` tokens (BOS included) and keeps what
follows as the prompt. A tokenizer that splits the template otherwise (no BOS, other files, a
template edited without its crop) would crop into the prompt or leave system text in it and
make every video subtly wrong, so a set whose tokenizer fails this check is refused.
"""
from __future__ import annotations

from pathlib import Path

from framepack_core.failures import ModelsUnavailableError

from .encoders import with_bos
from .published import PUBLISHED

_PROBE = "a cat walks on the grass"  # any prompt: checks that the template's end does not merge into it


def check_prompt_template(tokenizer, spec, folder: Path | str) -> None:
    """Raise ModelsUnavailableError unless BOS + the template's prefix is exactly spec.crop_start tokens."""
    problem = _problem(tokenizer, spec)
    if problem:
        import transformers

        # The library that read the files is named: a transformers release that reads them otherwise
        # gives this very message, and then the files are not at fault.
        raise ModelsUnavailableError(
            f"The Llama tokenizer in {folder} does not fit the model set '{spec.name}': {problem} "
            f"(read by transformers {transformers.__version__} as {type(tokenizer).__name__}). "
            "Its files are damaged or not this model's; delete that folder and download it again "
            "(or copy it from the original repository).")


def _problem(tokenizer, spec) -> str | None:
    bos = tokenizer.bos_token_id
    if bos is None:
        return "it has no beginning-of-text (BOS) token"
    published = PUBLISHED.get(spec.name, {}).get("text_encoder")
    expected_bos = published.config["bos_token_id"] if published else None
    if expected_bos is not None and bos != expected_bos:
        return f"its BOS token is id {bos}, the text encoder's is {expected_bos}"
    if spec.prompt_template.count("{}") != 1:
        return "the prompt template must hold exactly one '{}'"
    prefix_text, _ = spec.prompt_template.split("{}")
    prefix = with_bos(tokenizer, prefix_text)  # as encode_prompt tokenizes
    if len(prefix) != spec.crop_start:
        return (f"the template before the prompt is {len(prefix)} tokens with BOS, "
                f"the model expects {spec.crop_start}")
    if bos in prefix[1:]:
        return "the template itself holds a second BOS token"
    # With a prompt after it, the prefix must still be those very tokens (none merged into the prompt).
    if with_bos(tokenizer, spec.prompt_template.format(_PROBE))[:spec.crop_start] != prefix:
        return "the template's last tokens merge with the prompt's first ones"
    return None
