"""framepack_core/models/: model sets, download, loading, LoRA, tokenizers."""
