"""The real models' tokenizers, rebuilt offline from vocabularies that ship on the package index.

For the tests and bench/gpu/full_set.py (a stand-in of the real model folders); the vocabularies come
from dev-only packages (requirements-dev-nodeps.txt): `llama-models` carries Llama 3's BPE ranks
(llama_models/llama3/tokenizer.model, tiktoken's format: base64 token, rank), and
`open-clip-torch` CLIP's BPE merges (open_clip/bpe_simple_vocab_16e6.txt.gz). From them this
module writes Hugging Face tokenizer folders laid out as hunyuanvideo-community/HunyuanVideo's
tokenizer/ (tokenizer.json, tokenizer_config.json, special_tokens_map.json) and tokenizer_2/
(vocab.json, merges.txt, tokenizer_config.json, special_tokens_map.json), for the project's own
loader to load.

Facts used (no file copied):
* Llama 3: 128,000 BPE ranks, then 256 special tokens; the split pattern and the special
  tokens' names and order as llama_models/llama3/tokenizer.py states them, with the names that
  Llama 3.0 (HunyuanVideo's llava-llama-3-8b) gives the slots that 3.1 later renamed.
* HunyuanVideo's tokenizer/special_tokens_map.json: bos <|begin_of_text|>, eos <|end_of_text|>,
  pad <pad>, unk <unk>; its tokenizer_config.json (llava-llama-3's): <unk> 128256, <image> 128257,
  <pad> 128258 added after the specials, add_bos_token true, padding_side right.
* HunyuanVideo's tokenizer_2/tokenizer_config.json: CLIPTokenizer, bos <|startoftext|>,
  eos = pad = unk = <|endoftext|>, model_max_length 77, do_lower_case.
"""
from __future__ import annotations

import base64
import gzip
import importlib.util
import json
from functools import lru_cache
from pathlib import Path

LLAMA3_PATTERN = (r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}| ?[^\s\p{L}\p{N}]+[\r\n]*"
                  r"|\s*[\r\n]+|\s+(?!\S)|\s+")
# Llama 3.0's first special tokens (ids 128000...); the rest are reserved_special_token_N.
_LLAMA3_NAMED = ["<|begin_of_text|>", "<|end_of_text|>", "<|reserved_special_token_0|>",
                 "<|reserved_special_token_1|>", "<|reserved_special_token_2|>", "<|reserved_special_token_3|>",
                 "<|start_header_id|>", "<|end_header_id|>", "<|reserved_special_token_4|>", "<|eot_id|>"]
_HUNYUAN_ADDED = ["<unk>", "<image>", "<pad>"]  # 128256, 128257, 128258


def package_file(package: str, relative: str) -> Path:
    """A data file of an installed package, found without importing the package."""
    spec = importlib.util.find_spec(package)
    if spec is None or not spec.submodule_search_locations:
        raise FileNotFoundError(f"{package} is not installed (pip install --no-deps -r requirements-dev-nodeps.txt)")
    return Path(list(spec.submodule_search_locations)[0]) / relative


@lru_cache(maxsize=1)
def llama3_ranks() -> dict[bytes, int]:
    ranks = {}
    for line in package_file("llama_models", "llama3/tokenizer.model").read_bytes().splitlines():
        if line:
            token, rank = line.split()
            ranks[base64.b64decode(token)] = int(rank)
    return ranks


def llama3_special_tokens(base: int) -> list[str]:
    named = list(_LLAMA3_NAMED)
    reserved = [f"<|reserved_special_token_{i}|>" for i in range(5, 5 + 256 - len(named))]
    return named + reserved


@lru_cache(maxsize=1)
def byte_to_unicode() -> dict[int, str]:
    """GPT-2's reversible byte -> printable character map, which tokenizers' ByteLevel uses.

    In its order: the printable bytes (mapped to themselves) first, then the others (to 256...);
    CLIP numbers its first 256 vocabulary entries in this order.
    """
    printable = list(range(ord("!"), ord("~") + 1)) + list(range(ord("¡"), ord("¬") + 1)) + \
        list(range(ord("®"), ord("ÿ") + 1))
    mapping = {b: chr(b) for b in printable}
    others = [b for b in range(256) if b not in mapping]
    mapping.update({b: chr(256 + i) for i, b in enumerate(others)})
    return mapping


def merges_from_ranks(ranks: dict[bytes, int]) -> list[tuple[bytes, bytes]]:
    """tiktoken keeps ranks, Hugging Face BPE wants merges.

    tiktoken merges adjacent parts a, b whenever a + b is in the ranks, lowest rank(a + b) first.
    So the equivalent merge list holds every split (a, b) of every token t with both halves in
    the vocabulary, in the order of rank(t). Not only the split that BPE with the ranks below
    rank(t) ends on: some tokens are no such merge (b'.:.:' encodes as '.', ':.', ':' with the
    lower ranks) yet tiktoken still forms them from '.:' + '.:' inside longer pieces.
    Splits of one token go shortest left part first (tiktoken breaks ties leftmost).
    """
    merges = []
    for token, _rank in sorted(ranks.items(), key=lambda item: item[1]):
        for cut in range(1, len(token)):
            if token[:cut] in ranks and token[cut:] in ranks:
                merges.append((token[:cut], token[cut:]))
    return merges


def build_llama3_tokenizer(adds_bos: bool):
    """HunyuanVideo's Llama 3 tokenizer as a `tokenizers.Tokenizer` (BOS added by its post-processor or not)."""
    from tokenizers import AddedToken, Regex, Tokenizer, decoders, models, pre_tokenizers, processors

    ranks = llama3_ranks()
    to_text = byte_to_unicode()

    def text(token: bytes) -> str:
        return "".join(to_text[b] for b in token)

    vocab = {text(token): rank for token, rank in ranks.items()}
    merges = [(text(a), text(b)) for a, b in merges_from_ranks(ranks)]
    # ignore_merges: a pre-token that is itself in the vocabulary is one token, as tiktoken does.
    tokenizer = Tokenizer(models.BPE(vocab=vocab, merges=merges, ignore_merges=True))
    tokenizer.pre_tokenizer = pre_tokenizers.Sequence([
        pre_tokenizers.Split(Regex(LLAMA3_PATTERN), behavior="isolated"),
        pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False)])
    tokenizer.decoder = decoders.ByteLevel()
    specials = llama3_special_tokens(len(ranks)) + _HUNYUAN_ADDED
    tokenizer.add_special_tokens([AddedToken(s, special=True, normalized=False) for s in specials])
    steps = [processors.ByteLevel(trim_offsets=False)]
    if adds_bos:
        bos = "<|begin_of_text|>"
        steps.append(processors.TemplateProcessing(single=f"{bos} $A", pair=f"{bos} $A {bos} $B",
                                                   special_tokens=[(bos, tokenizer.token_to_id(bos))]))
    tokenizer.post_processor = processors.Sequence(steps)
    return tokenizer


def write_llama3_folder(folder: Path, adds_bos: bool, add_bos_token: bool | None = True) -> Path:
    """tokenizer/ as the real repository has it: tokenizer.json, tokenizer_config.json, special_tokens_map.json."""
    folder.mkdir(parents=True, exist_ok=True)
    tokenizer = build_llama3_tokenizer(adds_bos)
    tokenizer.save(str(folder / "tokenizer.json"))
    first = len(llama3_ranks())
    specials = llama3_special_tokens(first) + _HUNYUAN_ADDED
    config = {
        "added_tokens_decoder": {str(first + i): {"content": s, "lstrip": False, "normalized": False,
                                                  "rstrip": False, "single_word": False, "special": True}
                                 for i, s in enumerate(specials)},
        "bos_token": "<|begin_of_text|>", "eos_token": "<|end_of_text|>", "pad_token": "<pad>",
        "unk_token": "<unk>", "clean_up_tokenization_spaces": True, "legacy": True,
        "model_input_names": ["input_ids", "attention_mask"], "model_max_length": 1e30,
        "padding_side": "right", "tokenizer_class": "LlamaTokenizer", "use_default_system_prompt": False,
    }
    if add_bos_token is not None:
        config["add_bos_token"] = add_bos_token
        config["add_eos_token"] = False
    (folder / "tokenizer_config.json").write_text(json.dumps(config, indent=2))
    special = {"content": None, "lstrip": False, "normalized": False, "rstrip": False, "single_word": False}
    (folder / "special_tokens_map.json").write_text(json.dumps(
        {key: {**special, "content": value} for key, value in
         [("bos_token", "<|begin_of_text|>"), ("eos_token", "<|end_of_text|>"), ("pad_token", "<pad>"),
          ("unk_token", "<unk>")]}, indent=2))
    return folder


def clip_vocab_and_merges() -> tuple[dict[str, int], list[tuple[str, str]]]:
    """CLIP's 49,408-entry vocabulary and 48,894 merges, in the order CLIP assigns ids."""
    lines = gzip.open(package_file("open_clip", "bpe_simple_vocab_16e6.txt.gz")).read().decode("utf-8").split("\n")
    merges = [tuple(line.split()) for line in lines[1:49152 - 256 - 2 + 1]]
    symbols = list(byte_to_unicode().values())
    words = symbols + [s + "</w>" for s in symbols] + ["".join(m) for m in merges] + \
        ["<|startoftext|>", "<|endoftext|>"]
    return {w: i for i, w in enumerate(words)}, merges


def write_clip_folder(folder: Path) -> Path:
    """tokenizer_2/ as the real repository has it: vocab.json, merges.txt and the two configs."""
    folder.mkdir(parents=True, exist_ok=True)
    vocab, merges = clip_vocab_and_merges()
    (folder / "vocab.json").write_text(json.dumps(vocab, ensure_ascii=False))
    (folder / "merges.txt").write_text("#version: 0.2\n" + "".join(f"{a} {b}\n" for a, b in merges))
    start, end = "<|startoftext|>", "<|endoftext|>"
    (folder / "tokenizer_config.json").write_text(json.dumps({
        "add_prefix_space": False,
        "added_tokens_decoder": {
            str(vocab[start]): {"content": start, "lstrip": False, "normalized": True, "rstrip": False,
                                "single_word": False, "special": True},
            str(vocab[end]): {"content": end, "lstrip": False, "normalized": False, "rstrip": False,
                              "single_word": False, "special": True}},
        "bos_token": start, "clean_up_tokenization_spaces": False, "do_lower_case": True,
        "eos_token": end, "errors": "replace", "model_max_length": 77, "pad_token": end,
        "tokenizer_class": "CLIPTokenizer", "unk_token": end}, indent=2))
    special = {"lstrip": False, "normalized": True, "rstrip": False, "single_word": False}
    (folder / "special_tokens_map.json").write_text(json.dumps(
        {"bos_token": {**special, "content": start}, "eos_token": {**special, "content": end},
         "pad_token": end, "unk_token": {**special, "content": end}}, indent=2))
    return folder


def open_clip_tokenizer():
    """open_clip's own SimpleTokenizer, loaded from its module file: the package's __init__ needs
    torchvision and timm, which these tests do not install."""
    path = package_file("open_clip", "tokenizer.py")
    spec = importlib.util.spec_from_file_location("open_clip_tokenizer", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module.SimpleTokenizer()


def tiktoken_encoding():
    """Llama 3's encoding as tiktoken itself runs it: the measure of the rebuilt tokenizer."""
    import tiktoken

    ranks = llama3_ranks()
    specials = llama3_special_tokens(len(ranks)) + _HUNYUAN_ADDED
    return tiktoken.Encoding(name="llama3", pat_str=LLAMA3_PATTERN, mergeable_ranks=ranks,
                             special_tokens={s: len(ranks) + i for i, s in enumerate(specials)})
