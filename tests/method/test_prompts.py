"""Timed prompts: parsing, the section -> time -> prompt mapping in both orders, and what the transformer receives."""
import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from framepack_core.events import Failed, Finished, Stage
from framepack_core.method.prompts import (
    PromptSpan,
    distinct_prompts,
    parse_prompt,
    section_prompts,
    section_times,
    video_seconds,
)
from framepack_core.models.encoders import encode_prompt
from tests.support.helpers import run_events, tiny_request
from tests.support.mp4info import mp4_info, mp4_metadata

ROOT = Path(__file__).resolve().parents[2]


def test_plain_prompt_is_one_span_as_typed():
    assert parse_prompt("a cat [meows] ", 3) == [PromptSpan(0.0, video_seconds(3, 9), "a cat [meows] ")]


def test_timed_prompt_spans():
    spans = parse_prompt("[0s: the man waves] [1.5s:he turns ]\n[2: he walks]", 5, 9)
    length = 145 / 30  # seconds=5, window 9: four sections, 145 frames
    assert spans == [PromptSpan(0, 1.5, "the man waves"), PromptSpan(1.5, 2, "he turns"),
                     PromptSpan(2, length, "he walks")]
    assert distinct_prompts(parse_prompt("[0s: a] [1s: b] [2s: a]", 5)) == ["a", "b"]
    # The first prompt also covers what comes before its time.
    assert parse_prompt("[0.5s: a]", 3)[0].start == 0


@pytest.mark.parametrize("text, words", [
    ("[0s: a] [2.5s: b]", ["2.5s", "past the video's end", "2.43s"]),
    ("[0s: a] [2s: b] [1s: c]", ["out of order", "[1s: c]", "2s"]),
    ("[0s: a] [1s: a]  [1s: b]", ["out of order"]),
    ("[0s: a] [1.5s: b", ["character 9", "never closed"]),
    ("[0s: a] then [1s: b]", ["outside the brackets", "character 9"]),
    ("[0s a] [1s: b]", ["is not a timed prompt", "[0s a]", "no colon", "[seconds: prompt]"]),
    ("[zz: a] [1s: b]", ["'[zz: a]' is not a timed prompt", "'zz' is not a time", "[0s: he waves]"]),
    ("[-1s: a] [1s: b]", ["'[-1s: a]' is not a timed prompt", "negative", "[seconds: prompt]"]),
    ("[2s] a", ["no colon after its time"]),
])
def test_malformed_prompts_point_at_the_problem(text, words):
    with pytest.raises(ValueError) as error:
        parse_prompt(text, 3)
    for word in words:
        assert word in str(error.value)


def test_section_times_follow_the_schedule():
    # 3 sections of 9 latent frames: 36 pixel frames each, the last one also the final frame (109 in all).
    assert section_times(3, 9) == [(0, 1.2), (1.2, 2.4), (2.4, 109 / 30)]


def test_sections_get_the_prompt_of_their_time_in_both_orders():
    spans = parse_prompt("[0s: a] [1.5s: b]", 3)  # sections cover 0-1.2 s and 1.2-2.43 s
    inverted = section_prompts(spans, 3, 9, "inverted")
    forward = section_prompts(spans, 3, 9, "forward")
    # Inverted sampling makes the end first: generation index 0 is the later section.
    assert [(s.index, s.start, s.mix) for s in inverted] == [(0, 1.2, (("b", 1.0),)), (1, 0, (("a", 1.0),))]
    assert [(s.index, s.start, s.mix) for s in forward] == [(0, 0, (("a", 1.0),)), (1, 1.2, (("b", 1.0),))]
    # Five sections (6 s), a change at 2.5 s: the section of 2.4-3.6 s is mostly the second prompt.
    spans = parse_prompt("[0s: a] [2.5s: b] [5.2s: c]", 6)
    mixes = [s.mix[0][0] for s in section_prompts(spans, 6, 9, "forward")]
    assert mixes == ["a", "a", "b", "b", "c"]
    assert [s.mix[0][0] for s in section_prompts(spans, 6, 9, "inverted")] == mixes[::-1]


def test_blend_crosses_over_linearly_after_each_change():
    spans = parse_prompt("[0s: a] [1.2s: b]", 6)  # 5 sections: a, b, b, b, b
    mixes = [s.mix for s in section_prompts(spans, 6, 9, "forward", blend=2)]
    assert [[t for t, _ in m] for m in mixes] == [["a"], ["a", "b"], ["a", "b"], ["b"], ["b"]]
    assert [w for m in mixes for _, w in m] == pytest.approx([1, 2 / 3, 1 / 3, 1 / 3, 2 / 3, 1, 1])
    inverted = [s.mix for s in section_prompts(spans, 6, 9, "inverted", blend=2)]
    assert inverted == mixes[::-1]
    # A blend never runs past the next change.
    spans = parse_prompt("[0s: a] [1.2s: b] [2.4s: c]", 6)
    mixes = [s.mix for s in section_prompts(spans, 6, 9, "forward", blend=3)]
    assert mixes[1] == (("a", 0.75), ("b", 0.25)) and mixes[2] == (("b", 0.75), ("c", 0.25))
    assert mixes[3] == (("b", 0.5), ("c", 0.5)) and mixes[4] == (("b", 0.25), ("c", 0.75))


def _recorded_prompts(tiny_models, picture, tmp_path, **fields):
    """Run the tiny set and record the prompt features the transformer receives in each section."""
    received, section = [], [-1]

    def hook(module, args, kwargs):
        received.append((section[0], kwargs["encoder_hidden_states"].clone(), kwargs["pooled_projections"].clone()))

    def on_event(event, run):
        if isinstance(event, Stage) and event.name == "sampling":
            section[0] += 1

    handle = tiny_models.transformer.register_forward_pre_hook(hook, with_kwargs=True)
    try:
        events = run_events(tiny_request(picture, steps=2, step_cache=False, crf=0, **fields), tiny_models,
                            tmp_path / "v.mp4", on_event=on_event)
    finally:
        handle.remove()
    assert isinstance(events[-1], Finished), events[-1]
    return events[-1], received


@pytest.mark.parametrize("mode, order", [("inverted", ["b", "a"]), ("forward", ["a", "b"])])
def test_transformer_receives_each_sections_prompt(tiny_models, picture, tmp_path, mode, order):
    finished, received = _recorded_prompts(tiny_models, picture, tmp_path, seconds=3, mode=mode,
                                           prompt="[0s: a] [1.5s: b]")
    assert finished.sections == 2
    expected = {text: encode_prompt(tiny_models, text).conditioning for text in "ab"}
    assert not torch.equal(expected["a"].embeds, expected["b"].embeds)
    assert sorted({s for s, _, _ in received}) == [0, 1]
    for section, embeds, pooled in received:
        want = expected[order[section]]
        assert torch.equal(embeds, want.embeds) and torch.equal(pooled, want.pooled)
    spans = json.loads(mp4_metadata(finished.video)["comment"])["prompt_spans"]
    assert spans == [{"start": 0.0, "end": 1.5, "prompt": "a"}, {"start": 1.5, "end": 2.433, "prompt": "b"}]


def test_blended_sections_receive_the_mix(tiny_models, picture, tmp_path):
    # Window 5: three short sections (0-0.67 s, 0.67-1.33 s, 1.33-2 s); the middle one blends.
    _, received = _recorded_prompts(tiny_models, picture, tmp_path, seconds=2, window=5, mode="forward",
                                    prompt="[0s: a] [0.7s: b]", prompt_blend=1)
    a, b = (encode_prompt(tiny_models, t).conditioning for t in "ab")
    by_section = {s: e for s, e, _ in received}
    assert torch.equal(by_section[0], a.embeds) and torch.equal(by_section[2], b.embeds)
    assert torch.allclose(by_section[1], 0.5 * a.embeds + 0.5 * b.embeds)


def test_identical_timed_prompts_make_the_plain_prompts_frames(tiny_models, picture, tmp_path):
    # Two sections of the smallest useful window (0 to 0.27 s, 0.27 s to the end): the second prompt takes the second.
    short = dict(seconds=0.5, window=2, steps=2, crf=0)
    plain = run_events(tiny_request(picture, **short, prompt="a"), tiny_models, tmp_path / "p.mp4")
    timed = run_events(tiny_request(picture, **short, prompt="[0s: a] [0.3s: a]"), tiny_models, tmp_path / "t.mp4")
    assert plain[-1].frames == timed[-1].frames == 17
    assert np.array_equal(mp4_info(plain[-1].video)[1], mp4_info(timed[-1].video)[1])


def test_bad_timed_prompt_refused_before_anything_is_written(tiny_models, picture, tmp_path):
    events = run_events(tiny_request(picture, seconds=3, prompt="[0s: a] [9s: b]"), tiny_models, tmp_path / "x.mp4")
    assert isinstance(events[-1], Failed) and "past the video's end" in events[-1].message
    assert list(tmp_path.iterdir()) == []


def test_cli_bad_timed_prompt_exit_2(picture, tmp_path):
    out = tmp_path / "out"
    result = subprocess.run([sys.executable, str(ROOT / "app.py"), "generate", "--model", "tiny", "--image",
                             str(picture), "--resolution", "128", "--seconds", "3", "--prompt", "[0s: a] [1.5s: b",
                             "--outputs", str(out)], capture_output=True, text=True, timeout=120)
    assert result.returncode == 2
    assert "never closed" in result.stderr
    assert not out.exists()


def test_page_timeline_follows_the_prompt():
    from ui.creative import timeline_html

    html = timeline_html("[0s: a] [1.5s: <b>]", 3)
    assert "0–1.50 s" in html and "1.5–2.43 s" in html and "&lt;b&gt;" in html and "<b>]" not in html
    assert "never closed" in timeline_html("[0s: a] [1.5s: b", 3)
    assert "past the video's end" in timeline_html("[0s: a] [1.5s: b]", 1)
    assert "One prompt for the whole video" in timeline_html("a cat", 3)


def test_a_span_no_section_gets_is_refused_not_dropped():
    # 2 s: two sections starting at 0 s and 1.2 s, the video 73/30 = 2.4333 s long; b's span covers 0.0003 s.
    with pytest.raises(ValueError) as error:
        parse_prompt("[0s: a] [2.433s: b]", 2)
    assert "'b'" in str(error.value) and "gets no section" in str(error.value) and "0s, 1.2s" in str(error.value)
    assert len(parse_prompt("[0s: a] [1.2s: b]", 2)) == 2


def test_extending_the_times_are_the_new_parts():
    with pytest.raises(ValueError) as error:
        parse_prompt("[0s: a] [2.5s: b]", 2, extends=2.4)
    assert "past the new part's end (2.43s" in str(error.value) and "begins at 2.40s" in str(error.value)
    assert "video's end" not in str(error.value)
