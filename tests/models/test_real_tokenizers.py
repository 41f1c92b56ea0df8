"""The real tokenizers (Llama 3 as HunyuanVideo ships it, CLIP-L), rebuilt offline and loaded
through the project's loader: the crop, the prompt's tokens, CLIP's ids, and the load-time check.

The vocabularies come from two test-only packages (bench/support/real_tokenizers.py says which files);
the folders are built once per session under pytest's temporary directory.
"""
from __future__ import annotations

import dataclasses
import html
import importlib.util
import json
import os

import pytest
import torch

from bench.support import real_tokenizers as rt

_MISSING = [name for name in ("llama_models", "open_clip", "tiktoken", "ftfy") if importlib.util.find_spec(name) is None]
if _MISSING and os.environ.get("CI", "").lower() != "true":  # in CI a missing vocabulary is a failure
    pytest.skip(f"not installed: {', '.join(_MISSING)} (pip install -r requirements-dev.txt; "
                "pip install --no-deps -r requirements-dev-nodeps.txt)", allow_module_level=True)

from framepack_core.failures import ModelsUnavailableError  # noqa: E402
from framepack_core.models.encoders import LLAMA_TOKENS, CLIP_TOKENS, template_ids, with_bos  # noqa: E402
from framepack_core.models.loading import _load_component, load_models  # noqa: E402
from framepack_core.models.sets import MODEL_SPECS  # noqa: E402
from framepack_core.models.template_check import check_prompt_template  # noqa: E402

SPEC = MODEL_SPECS["framepack"]
REPO = "hunyuanvideo-community/HunyuanVideo"
BOS, EOT = 128000, 128009  # <|begin_of_text|>, <|eot_id|>
LONG = " ".join(f"word{i}" for i in range(200))  # about 400 tokens: past the 256 kept

PROMPTS = [
    "A cat walks on the grass, realistic style.",
    "The girl dances gracefully, with clear movements, full of charm.",
    "a man is talking",
    "Hello, world!!! (yes) [no] {maybe}; ok?",
    "Numbers: 1234567890, 3.14159, 1/2, 100% -- 42nd",
    "don't won't it's we've THEY'LL i'd",
    "  leading and trailing spaces  ",
    "tabs\tand\tnew\nlines\n\nin the prompt",
    "UPPERCASE lowercase MiXeD cAsE",
    "日本語のテキスト、猫が草の上を歩く。",
    "一只猫在草地上行走 写实风格",
    "Кошка идёт по траве, реалистичный стиль.",
    "قطة تمشي على العشب",
    "बिल्ली घास पर चलती है",
    "고양이가 풀밭 위를 걷는다",
    "Ελληνικά γράμματα: αβγ ΔΕΖ",
    "Ünïcödé café naïve façade",
    "emoji 🐱🎉🔥 and a family 👩‍👩‍👧 and a flag 🇯🇵",
    "e\u0301 combining accents a\u0308",
    "#hashtag @mention user_name snake_case CamelCase",
    "ends with punctuation...",
    "x",
    LONG,
]


# --------------------------------------------------------------------------- the folders


@pytest.fixture(scope="session")
def tokenizer_roots(tmp_path_factory):
    """Two copies of the repository's tokenizer folders: one whose files add BOS, one whose don't."""
    roots = {}
    for adds_bos in (True, False):
        root = tmp_path_factory.mktemp(f"hunyuan-bos-{adds_bos}") / REPO
        rt.write_llama3_folder(root / "tokenizer", adds_bos=adds_bos, add_bos_token=adds_bos)
        rt.write_clip_folder(root / "tokenizer_2")
        roots[adds_bos] = root
    return roots


@pytest.fixture(scope="session")
def llama_tokenizers(tokenizer_roots):
    return {adds_bos: _load_component("tokenizer", SPEC, root, lambda message: None)
            for adds_bos, root in tokenizer_roots.items()}


@pytest.fixture(scope="session")
def clip_tokenizer(tokenizer_roots):
    return _load_component("tokenizer_2", SPEC, tokenizer_roots[True], lambda message: None)


@pytest.fixture(scope="session")
def open_clip():
    return rt.open_clip_tokenizer()


def test_the_two_folders_differ_in_adding_bos(llama_tokenizers):
    # Not vacuous: one tokenizer adds BOS by itself, the other does not.
    assert llama_tokenizers[True]("a cat").input_ids[0] == BOS
    assert llama_tokenizers[False]("a cat").input_ids[0] != BOS
    for tokenizer in llama_tokenizers.values():
        assert (tokenizer.bos_token_id, tokenizer.eos_token_id, tokenizer.pad_token_id) == (BOS, 128001, 128258)
        assert tokenizer.convert_ids_to_tokens(EOT) == "<|eot_id|>"


# --------------------------------------------------------------------------- Llama 3 itself


def test_rebuilt_llama3_encodes_as_tiktoken(llama_tokenizers):
    """The Hugging Face BPE rebuilt from tiktoken's ranks gives tiktoken's ids, token for token."""
    encoding = rt.tiktoken_encoding()
    with open(os.path.join(os.path.dirname(__file__), "..", "..", "README.md"), encoding="utf-8") as readme:
        texts = PROMPTS + [readme.read(), "a.:.:b ....::::", "    \n\n\t  x  ", "ab" * 500]
    tokenizer = llama_tokenizers[False]
    total = 0
    for text in texts:
        ids = tokenizer(text, add_special_tokens=False).input_ids
        assert ids == encoding.encode(text, allowed_special="all"), text[:60]
        total += len(ids)
    assert total > 2000


def test_merges_include_tokens_that_lower_ranks_cannot_build():
    # b'.:.:' is rank 100421, yet BPE with the ranks below it stops at '.', ':.', ':'; tiktoken still
    # makes it from '.:' + '.:', so the merge list must hold that split.
    ranks = rt.llama3_ranks()
    assert len(ranks) == 128000
    merges = set(rt.merges_from_ranks(ranks))
    assert (b".:", b".:") in merges


# --------------------------------------------------------------------------- the crop


@pytest.mark.parametrize("adds_bos", [True, False])
def test_template_prefix_is_crop_start_tokens_starting_with_bos(llama_tokenizers, adds_bos):
    tokenizer = llama_tokenizers[adds_bos]
    prefix = SPEC.prompt_template.split("{}")[0]
    ids = with_bos(tokenizer, prefix)
    assert SPEC.crop_start == 95
    assert len(ids) == 95 and ids[0] == BOS and BOS not in ids[1:]
    assert tokenizer.convert_ids_to_tokens(ids[-4:]) == ["<|start_header_id|>", "user", "<|end_header_id|>", "ĊĊ"]
    check_prompt_template(tokenizer, SPEC, "tokenizer")  # and the load-time check agrees


@pytest.mark.parametrize("adds_bos", [True, False])
@pytest.mark.parametrize("prompt", PROMPTS, ids=range(len(PROMPTS)))
def test_after_the_crop_come_the_prompt_tokens_then_eot(llama_tokenizers, adds_bos, prompt):
    tokenizer = llama_tokenizers[adds_bos]
    max_length = LLAMA_TOKENS + SPEC.crop_start
    input_ids, mask, truncated = template_ids(tokenizer, SPEC.prompt_template.format(prompt), max_length)
    ids, real = input_ids[0].tolist(), int(mask.sum())
    own = tokenizer(prompt, add_special_tokens=False).input_ids
    assert input_ids.shape == mask.shape == (1, max_length)
    assert ids[0] == BOS and BOS not in ids[1:]
    assert ids[:95] == with_bos(tokenizer, SPEC.prompt_template.split("{}")[0])
    if len(own) < LLAMA_TOKENS:
        assert not truncated
        assert ids[95:95 + len(own)] == own
        assert ids[95 + len(own)] == EOT
        assert real == 95 + len(own) + 1
        assert set(ids[real:]) <= {tokenizer.pad_token_id} and mask[0, real:].sum() == 0
    else:  # the long prompt: its first 256 tokens, no room for <|eot_id|>
        assert prompt == LONG and len(own) > LLAMA_TOKENS
        assert truncated and real == max_length
        assert ids[95:] == own[:LLAMA_TOKENS]


def test_both_folders_give_the_same_ids(llama_tokenizers):
    for prompt in PROMPTS:
        text = SPEC.prompt_template.format(prompt)
        a, b = (template_ids(llama_tokenizers[x], text, 351) for x in (True, False))
        assert torch.equal(a[0], b[0]) and torch.equal(a[1], b[1])


def test_the_tokenizers_own_bos_is_never_doubled(llama_tokenizers):
    # What the crop relied on before: the tokenizer's own special tokens. With these files it
    # gives 95 prefix tokens only when they add BOS; template_ids gives 95 either way.
    prefix = SPEC.prompt_template.split("{}")[0]
    assert len(llama_tokenizers[True](prefix).input_ids) == 95
    assert len(llama_tokenizers[False](prefix).input_ids) == 94


# --------------------------------------------------------------------------- CLIP-L


def _clip_pair(clip_tokenizer, open_clip, prompt):
    ours = clip_tokenizer(prompt, padding="max_length", max_length=CLIP_TOKENS, truncation=True).input_ids
    theirs = open_clip(prompt, context_length=CLIP_TOKENS)[0].tolist()
    return ours, theirs


@pytest.mark.parametrize("prompt", PROMPTS, ids=range(len(PROMPTS)))
def test_clip_ids_equal_open_clip(clip_tokenizer, open_clip, prompt):
    ours, theirs = _clip_pair(clip_tokenizer, open_clip, prompt)
    assert len(ours) == len(theirs) == 77
    end = theirs.index(49407) + 1  # <|endoftext|>, the last real token
    assert ours[0] == 49406 and ours[:end] == theirs[:end]
    # Padding: the repository's tokenizer pads with <|endoftext|>, open_clip with 0. CLIP-L's pooling
    # takes the first highest id, the EOS, either way (test_published.py checks the pooling).
    assert set(ours[end:]) <= {49407} and set(theirs[end:]) <= {0}
    if prompt == LONG:
        assert end == 77  # truncated to 75 tokens between BOS and EOS, as open_clip does


def test_clip_differs_from_open_clip_only_by_its_text_cleaning(clip_tokenizer, open_clip):
    """open_clip runs ftfy and html.unescape first; the repository's tokenizer (what FramePack
    uses) does not. Curly quotes, HTML entities, ligatures and full-width forms tokenize differently; cleaned
    first, they agree."""
    import ftfy

    for prompt in ["“Curly quotes”", "cats &amp; dogs", "ﬁne ligature", "全角：コロン"]:
        ours, theirs = _clip_pair(clip_tokenizer, open_clip, prompt)
        assert ours != theirs
        cleaned = ftfy.fix_text(html.unescape(html.unescape(prompt)))
        ours, theirs = _clip_pair(clip_tokenizer, open_clip, cleaned)
        end = theirs.index(49407) + 1
        assert ours[:end] == theirs[:end]


# --------------------------------------------------------------------------- the load-time guard


def _models_dir(tmp_path, tokenizer_source):
    """A models folder with the given tokenizer/ and empty folders for everything else."""
    import shutil

    for source in SPEC.sources.values():
        (tmp_path / source.repo_id / (source.subfolder or "")).mkdir(parents=True, exist_ok=True)
    target = tmp_path / REPO / "tokenizer"
    shutil.rmtree(target)
    shutil.copytree(tokenizer_source, target)
    return tmp_path, target


def _edit_json(path, **changes):
    data = json.loads(path.read_text())
    for key, value in changes.items():
        if value is None:
            data.pop(key, None)
        else:
            data[key] = value
    path.write_text(json.dumps(data))


@pytest.mark.parametrize("adds_bos", [True, False])
def test_a_good_tokenizer_passes_and_loading_goes_on(tmp_path, tokenizer_roots, adds_bos):
    models_dir, _ = _models_dir(tmp_path, tokenizer_roots[adds_bos] / "tokenizer")
    said = []
    with pytest.raises(ModelsUnavailableError) as error:
        load_models("framepack", models_dir=models_dir, progress=said.append)
    # Past the tokenizer: the next component, whose folder here is empty, is what fails.
    assert said[0] == "loading tokenizer (Llama)…" and len(said) >= 2
    assert "does not fit" not in str(error.value)


def test_a_tokenizer_without_bos_is_refused(tmp_path, tokenizer_roots):
    models_dir, folder = _models_dir(tmp_path, tokenizer_roots[False] / "tokenizer")
    _edit_json(folder / "tokenizer_config.json", bos_token=None)
    _edit_json(folder / "special_tokens_map.json", bos_token=None)
    said = []
    with pytest.raises(ModelsUnavailableError, match="has no beginning-of-text \\(BOS\\) token") as error:
        load_models("framepack", models_dir=models_dir, progress=said.append)
    assert str(folder) in str(error.value) and "download it again" in str(error.value)
    assert said == ["loading tokenizer (Llama)…"]  # refused before any weights load


def test_a_tokenizer_with_another_bos_is_refused(tmp_path, tokenizer_roots):
    models_dir, folder = _models_dir(tmp_path, tokenizer_roots[True] / "tokenizer")
    _edit_json(folder / "tokenizer_config.json", bos_token="<|end_of_text|>")
    _edit_json(folder / "special_tokens_map.json", bos_token="<|end_of_text|>")
    with pytest.raises(ModelsUnavailableError, match="BOS token is id 128001, the text encoder's is 128000"):
        load_models("framepack", models_dir=models_dir)


def test_the_class_name_in_the_files_does_not_decide(tokenizer_roots, monkeypatch):
    """transformers 5.17's AutoTokenizer reads the folder's "LlamaTokenizer" as the SentencePiece-style
    class (96 template tokens, spaces lost); 5.23's does not. Here AutoTokenizer does what 5.17's did:
    the loader must not depend on it."""
    import transformers

    monkeypatch.setattr(transformers.AutoTokenizer, "from_pretrained", transformers.LlamaTokenizer.from_pretrained)
    tokenizer = _load_component("tokenizer", SPEC, tokenizer_roots[True], lambda message: None)
    assert tokenizer("a cat walks", add_special_tokens=False).input_ids == [64, 8415, 23291]
    assert len(with_bos(tokenizer, SPEC.prompt_template.split("{}")[0])) == 95
    check_prompt_template(tokenizer, SPEC, "tokenizer")


def test_a_refusal_names_the_library_that_read_the_files(tokenizer_roots):
    import transformers

    # The SentencePiece-style reading that transformers 5.17's AutoTokenizer made of these files.
    misread = transformers.LlamaTokenizer.from_pretrained(tokenizer_roots[True] / "tokenizer")
    with pytest.raises(ModelsUnavailableError, match="96 tokens with BOS, the model expects 95") as error:
        check_prompt_template(misread, SPEC, "tokenizer")
    assert f"(read by transformers {transformers.__version__} as LlamaTokenizer)" in str(error.value)


def test_another_models_tokenizer_is_refused(tmp_path, tiny_models):
    # The tiny set's SentencePiece tokenizer in the real set's place.
    from framepack_core.models import tiny

    tiny_folder = tiny.ensure_tiny_models() / REPO / "tokenizer"
    models_dir, _ = _models_dir(tmp_path, tiny_folder)
    with pytest.raises(ModelsUnavailableError, match="does not fit the model set 'framepack'"):
        load_models("framepack", models_dir=models_dir)


@pytest.mark.parametrize("drift, message", [
    (dict(prompt_template=SPEC.prompt_template.replace("Describe the video", "Describe the whole video")),
     "the template before the prompt is 96 tokens with BOS, the model expects 95"),
    (dict(crop_start=94), "the template before the prompt is 95 tokens with BOS, the model expects 94"),
    (dict(prompt_template="<|begin_of_text|>" + SPEC.prompt_template, crop_start=96),
     "holds a second BOS token"),
    # A space before the prompt: "\n\n " alone ends in a " " token, but before a word the space
    # joins the word (" a"): a 96-token prefix that the crop would cut into.
    (dict(prompt_template=SPEC.prompt_template.replace("\n\n{}", "\n\n {}"), crop_start=96),
     "the template's last tokens merge with the prompt's first ones"),
])
def test_template_drift_is_refused(llama_tokenizers, drift, message):
    spec = dataclasses.replace(SPEC, **drift)
    with pytest.raises(ModelsUnavailableError, match=message):
        check_prompt_template(llama_tokenizers[True], spec, "tokenizer")


# --------------------------------------------------------------------------- conditioning with the real layout


def _same_structure_llama():
    """The published Llama configuration (vocabulary, special ids, 4:1 grouped-query heads, RoPE)
    at toy width and depth."""
    from transformers import LlamaConfig, LlamaModel

    from framepack_core.models.published import published

    config = dict(published("text_encoder").config)
    config.update(hidden_size=32, intermediate_size=64, num_hidden_layers=4, num_attention_heads=4,
                  num_key_value_heads=1, head_dim=8, initializer_range=0.2)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        model = LlamaModel(LlamaConfig(**config)).eval()
    assert model.config.vocab_size == 128320
    return model


@pytest.mark.parametrize("adds_bos", [True, False])
def test_conditioning_is_hidden_state_minus_3_of_the_prompt_tokens(llama_tokenizers, clip_tokenizer, adds_bos):
    from types import SimpleNamespace

    from framepack_core.models.encoders import PROMPT_LENGTH, encode_prompt
    from framepack_core.models.published import published

    llama = _same_structure_llama()
    from transformers import CLIPTextConfig, CLIPTextModel

    clip_config = dict(published("text_encoder_2").config, hidden_size=32, intermediate_size=64,
                       projection_dim=32, num_hidden_layers=2, num_attention_heads=2)
    clip = CLIPTextModel(CLIPTextConfig(**clip_config)).eval()
    tokenizer = llama_tokenizers[adds_bos]
    models = SimpleNamespace(spec=SPEC, tokenizer=tokenizer, text_encoder=llama,
                             tokenizer_2=clip_tokenizer, text_encoder_2=clip)
    prompt = "A cat walks on the grass, realistic style."
    encoded = encode_prompt(models, prompt)
    embeds, mask, pooled = encoded.conditioning

    # Independently: BOS + template, the whole sequence through Llama, layer -3 after the 95 tokens.
    own = tokenizer(prompt, add_special_tokens=False).input_ids
    ids = torch.tensor([with_bos(tokenizer, SPEC.prompt_template.format(prompt))])
    assert ids.shape[1] == 95 + len(own) + 1
    with torch.no_grad():
        states = llama(input_ids=ids, output_hidden_states=True).hidden_states
    assert len(states) == llama.config.num_hidden_layers + 1  # embeddings + each layer: -3 is layer L-2
    expected = states[-3][0, 95:]
    count = len(own) + 1  # the prompt's tokens and <|eot_id|>
    assert embeds.shape == (1, PROMPT_LENGTH, 32) and int(mask.sum()) == count and mask[0, :count].all()
    # The app runs the template padded to 351 tokens with a mask, this the bare sequence: for the prompt's
    # tokens the same mathematics (right padding, causal attention), other rounding (matmuls over another
    # row count, attention over another key count, may sum in another order; another CPU, in yet another).
    # Each inner product of length n <= 111 lies within gamma_n = n u / (1 - n u) of the exact one whatever
    # the order (u = 2**-24; Higham, Accuracy and Stability of Numerical Algorithms, 3.1): 4 layers of 9 such
    # stages (norm, projection, scores, softmax sum, weighted sum, output, norm, MLP in, MLP out) add at most
    # about 36 * 6.6e-6 = 2.4e-4 to first order: 2**-12. Measured here (Intel Xeon, AVX-512): 4.5e-7. Another
    # layer (-4) is off by 1.3 of the norm; the embeddings scaled by 1 + 1e-3, by 1e-3: both fail.
    assert (embeds[0, :count] - expected).norm() <= 2.0 ** -12 * expected.norm()
    assert not torch.allclose(embeds[0, :count], states[-2][0, 95:], atol=1e-3)  # not another layer
    assert embeds[0, count:].abs().sum() == 0
    assert not encoded.truncated
    # CLIP-L: pooled at the EOS of the real tokenizer's ids, through the legacy branch.
    clip_ids = torch.tensor([clip_tokenizer(prompt, padding="max_length", max_length=77).input_ids])
    with torch.no_grad():
        last = clip(input_ids=clip_ids).last_hidden_state
    eos = clip_ids[0].tolist().index(49407)
    torch.testing.assert_close(pooled[0], last[0, eos])
