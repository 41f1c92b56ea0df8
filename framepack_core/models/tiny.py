"""The tiny model set: the real model classes at toy sizes, built in code from a fixed seed.

It lets the whole app and the test suite run on a CPU without downloading anything. The set
is saved with `save_pretrained` in exactly the folder layout of the real weights, so
`models.load_models('tiny')` exercises the same loading code as the real sets.
"""
from __future__ import annotations

import os
import shutil
import string
import tempfile
from pathlib import Path

import torch

from .sets import MODEL_SPECS

VERSION = "tiny-v1"  # bump when anything below changes, so old caches are not reused
_SPECIAL = ["<|system|>", "<|user|>", "<|end|>"]
_COMPLETE = "COMPLETE"  # written last: a folder without it was never finished
_SEED = 0


def default_cache_dir() -> Path:
    return Path(os.environ.get("FRAMEPACK_CACHE") or Path.home() / ".cache" / "framepack-desktop")


def ensure_tiny_models(cache_dir: Path | None = None) -> Path:
    """The tiny set's models_dir (laid out as <dir>/<owner>/<name>/<subfolder>), built if missing."""
    root = Path(cache_dir) if cache_dir is not None else default_cache_dir()
    final = root / VERSION
    if (final / _COMPLETE).is_file():
        return final
    root.mkdir(parents=True, exist_ok=True)
    if final.exists():  # left by something else than this function; never finished
        shutil.rmtree(final, ignore_errors=True)
    # Build beside the final folder and rename: readers see a complete set or none.
    building = Path(tempfile.mkdtemp(prefix=f".{VERSION}-building-", dir=root))
    try:
        _build(building)
        (building / _COMPLETE).write_text(VERSION + "\n")
        try:
            os.rename(building, final)
        except OSError:
            if not (final / _COMPLETE).is_file():  # not a concurrent builder winning the race
                raise
    finally:
        shutil.rmtree(building, ignore_errors=True)
    return final


def _build(target: Path) -> None:
    from transformers.utils import logging as hf_logging

    folders = {key: target / src.repo_id / (src.subfolder or "")
               for key, src in MODEL_SPECS["tiny"].sources.items()}
    verbosity, bars = hf_logging.get_verbosity(), hf_logging.is_progress_bar_enabled()
    hf_logging.set_verbosity_error()  # notes about random init and save bars are noise here
    hf_logging.disable_progress_bar()
    try:
        llama_tokenizer = _llama_tokenizer()
        clip_tokenizer = _clip_tokenizer()
        llama_tokenizer.save_pretrained(folders["tokenizer"])
        clip_tokenizer.save_pretrained(folders["tokenizer_2"])
        _seeded(_llama, llama_tokenizer).save_pretrained(folders["text_encoder"])
        _seeded(_clip, clip_tokenizer).save_pretrained(folders["text_encoder_2"])
        _seeded(_vae).save_pretrained(folders["vae"])
        _seeded(_siglip).save_pretrained(folders["image_encoder"])
        _siglip_processor().save_pretrained(folders["feature_extractor"])
        _seeded(_transformer).save_pretrained(folders["transformer"])
    finally:
        hf_logging.set_verbosity(verbosity)
        if bars:
            hf_logging.enable_progress_bar()


def _seeded(build, *args):
    # Each component from its own fixed seed: changing one never changes the others' weights.
    # The model classes draw their initial weights from torch's global generator; fork_rng gives
    # them a seeded one for the build and puts the caller's state back afterwards.
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(_SEED)
        return build(*args)


def _llama_tokenizer():
    from transformers import LlamaTokenizer

    # SentencePiece-style BPE: printable ASCII, '▁'+letter merges, and byte fallback tokens
    # so that any Unicode prompt tokenizes without <unk>.
    vocab = {"<unk>": 0, "<s>": 1, "</s>": 2, "<pad>": 3}
    vocab.update({f"<0x{b:02X}>": 4 + b for b in range(256)})
    for piece in "▁" + string.digits + string.ascii_letters + string.punctuation:
        vocab.setdefault(piece, len(vocab))
    merges = [("▁", c) for c in string.ascii_lowercase]
    for left, right in merges:
        vocab[left + right] = len(vocab)
    # Padding on the right, as the real one: the prompt's features are read from the front.
    # No practical length limit, as the real one: callers truncate to the length they need.
    return LlamaTokenizer(vocab=vocab, merges=merges, pad_token="<pad>", padding_side="right",
                          add_bos_token=True, extra_special_tokens=_SPECIAL, model_max_length=131072)


def _clip_tokenizer():
    from tokenizers import pre_tokenizers
    from transformers import CLIPTokenizer

    # CLIP's byte-level alphabet, each symbol also as a word end: every string tokenizes.
    alphabet = sorted(pre_tokenizers.ByteLevel.alphabet())
    vocab = {"<|startoftext|>": 0, "<|endoftext|>": 1}
    for symbol in alphabet + [a + "</w>" for a in alphabet]:
        vocab[symbol] = len(vocab)
    return CLIPTokenizer(vocab=vocab, merges=[], model_max_length=77)


def _llama(tokenizer):
    from transformers import LlamaConfig, LlamaModel

    # initializer_range 0.2, not 0.02: hidden_states[-3] (what the transformer sees) then has a
    # spread near 1 as in the real model, instead of ~0.02 noise that would hide the prompt.
    config = LlamaConfig(vocab_size=len(tokenizer), hidden_size=32, intermediate_size=64, num_hidden_layers=3,
                         num_attention_heads=2, num_key_value_heads=2, max_position_embeddings=512,
                         initializer_range=0.2,
                         bos_token_id=tokenizer.bos_token_id, eos_token_id=tokenizer.eos_token_id,
                         pad_token_id=tokenizer.pad_token_id)
    return LlamaModel(config)


def _clip(tokenizer):
    from transformers import CLIPTextConfig, CLIPTextModel

    # eos_token_id set (not the legacy 2): pooler_output is taken at the first EOS token.
    config = CLIPTextConfig(vocab_size=len(tokenizer), hidden_size=32, intermediate_size=64, projection_dim=32,
                            num_hidden_layers=2, num_attention_heads=2, max_position_embeddings=77,
                            bos_token_id=tokenizer.bos_token_id, eos_token_id=tokenizer.eos_token_id,
                            pad_token_id=tokenizer.pad_token_id)
    return CLIPTextModel(config)


def _vae():
    from diffusers import AutoencoderKLHunyuanVideo

    # The real 8x spatial / 4x temporal compression and 16 latent channels; narrow enough
    # that decoding 10 latent frames at 128x128 takes about a second on two CPU cores.
    return AutoencoderKLHunyuanVideo(latent_channels=16, block_out_channels=(4, 8, 8, 16), layers_per_block=1,
                                     norm_num_groups=4, scaling_factor=0.476986, mid_block_add_attention=True)


def _siglip():
    from transformers import SiglipVisionConfig, SiglipVisionModel

    config = SiglipVisionConfig(hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=2,
                                image_size=32, patch_size=8)
    return SiglipVisionModel(config)


def _siglip_processor():
    from transformers import SiglipImageProcessorPil

    return SiglipImageProcessorPil(size={"height": 32, "width": 32})


# The tiny transformer's architecture (also what a LoRA for it is checked against, models/lora_files.py).
TINY_TRANSFORMER_CONFIG = dict(
    in_channels=16, out_channels=16, num_attention_heads=2, attention_head_dim=16, num_layers=2,
    num_single_layers=2, num_refiner_layers=1, patch_size=2, patch_size_t=1, qk_norm="rms_norm",
    guidance_embeds=True, text_embed_dim=32, pooled_projection_dim=32, rope_axes_dim=(4, 6, 6),
    image_condition_type=None, has_image_proj=True, image_proj_dim=32, has_clean_x_embedder=True)


def _transformer():
    from diffusers import HunyuanVideoFramepackTransformer3DModel

    model = HunyuanVideoFramepackTransformer3DModel(**TINY_TRANSFORMER_CONFIG)
    # A zero output layer would make every velocity 0 and every test pass trivially. diffusers
    # initialises these with PyTorch's defaults today; re-seed them if that ever changes.
    for layer in (model.proj_out, model.norm_out.linear):
        if not layer.weight.any():
            torch.nn.init.normal_(layer.weight, std=0.1)
    return model
