"""Timed prompts when a video is continued with no new prompt: the new part gets the source's prompt
timeline from where it begins (the prompt in effect there from 0 s, the later ones moved by that much),
never the source's prompts replayed from 0 s or refused; and prompt text that looks timed but is not
([00:01: a], plain text before a bracket, an empty bracket) is refused in one sentence (tiny set)."""
import json

import numpy as np
import pytest

from app import main
from framepack_core.events import Finished
from framepack_core.method.prompts import parse_prompt
from tests.support.helpers import executed, run_events, tiny_request
from tests.support.mp4info import mp4_info
from framepack_core.starts import Extend, begin

K = 3  # 12 frames (0.4 s) a section


@pytest.mark.parametrize("text, words", [
    ("a [1s: b]", "'a' comes before the timed prompt '[1s: b]'; put it in brackets too"),
    ("[00:01: a]", "'[00:01: a]' is not a timed prompt (a clock time: times are seconds"),
    ("[0s:a] [1.2s:]", "'[1.2s:]' has no prompt after its time"),
])
def test_text_that_looks_timed_but_is_not_is_refused(text, words):
    with pytest.raises(ValueError) as refused:
        parse_prompt(text, 2, K)
    assert str(refused.value).startswith(words)
    assert len(parse_prompt("a cat [watercolour: soft]", 2, K)) == 1  # brackets with no time stay plain text


def test_the_new_parts_timeline_of_a_timed_prompt():
    from framepack_core.method.prompts import continued_prompt

    text = "[0s: day] [1.2s: dusk] [2s: night]"
    assert continued_prompt(text, 2.4, 0.8, K) == "[0s: night]"  # extending: the prompt at the end goes on
    assert continued_prompt(text, 0.8, 2.0, K) == "[0s: day] [0.4s: dusk] [1.2s: night]"  # a branch at 0.8 s
    assert continued_prompt(text, 0.8, 0.4, K) == "[0s: day]"  # the later ones fall past a one-section part
    assert continued_prompt("no times", 2.4, 0.8, K) == "no times"


@pytest.fixture(scope="module")
def timed_source(tiny_models, picture, tmp_path_factory):
    """0.8 s made here with '[0s: day] [0.4s: night falls]': the second section's prompt is in effect at the end."""
    folder = tmp_path_factory.mktemp("timed")
    request = tiny_request(picture, prompt="[0s: day] [0.4s: night falls]", seconds=0.8, window=K, steps=1, seed=5,
                           mode="forward", step_cache=False)
    outcome = run_events(request, tiny_models, folder / "timed.mp4")[-1]
    assert isinstance(outcome, Finished) and outcome.frames == 25
    return outcome.video


def test_extending_a_timed_video_with_no_new_prompt_continues_its_last_prompt(tiny_models, timed_source, tmp_path,
                                                                               capsys):
    inherited = executed(begin(Extend(timed_source, 0.4, steps=1, folder=tmp_path / "a")), tiny_models)[-1]
    told = executed(begin(Extend(timed_source, 0.4, steps=1, prompt="night falls", folder=tmp_path / "b")),
                    tiny_models)[-1]
    assert isinstance(inherited, Finished) and isinstance(told, Finished)
    frames = mp4_info(inherited.video)[1]
    assert frames.shape[0] == 25 + 4 * K
    assert np.array_equal(frames, mp4_info(told.video)[1])  # conditioned on 'night falls', not on 'day'
    record = json.loads(inherited.video.with_suffix(".json").read_text())
    assert record["settings"]["prompt"] == "[0s: night falls]"
    # the command line's --extend alike: it finishes instead of refusing the source's own prompt
    assert main(["generate", "--extend", str(timed_source), "--seconds", "0.4", "--steps", "1",
                 "--outputs", str(tmp_path / "cli")]) == 0
    assert "gets no section" not in capsys.readouterr().err


def test_a_branch_of_a_timed_video_gets_the_prompts_from_its_cut(timed_source, tmp_path):
    run = begin(Extend(timed_source, 0.8, from_seconds=0.2, steps=1, folder=tmp_path))
    assert run.origin.cut == 4  # the source's cut point nearest 0.2 s: 0.133 s
    assert run.request.method.prompt == "[0s: day] [0.2667s: night falls]"  # 'night falls' still from 0.4 s
