"""Keyframes and loops (method/keyframes.py): what the transformer receives per section, exactly as the
module's note says, for a keyframe on a section's edge and one inside a section; and bad keyframes refused."""
import pytest
import torch

from framepack_core.method.keyframes import (
    Keyframe,
    KeyframeLatents,
    SectionKeyframes,
    check_keyframes,
    keyframe_image_embeds,
    keyframe_timeline,
    plan_keyframes,
)
from framepack_core.method.sections import Conditioning, SectionSettings, run_sections

H, W, K = 4, 6, 3  # 4 sections of 3 latent frames: edges every 4*3/30 = 0.4 s
SETTINGS = SectionSettings(seconds=1.6, window=K, steps=2, mode="inverted")


class Recorder:
    """Stands in for the transformer: returns a small velocity and keeps what each call received."""
    dtype, device = torch.float32, torch.device("cpu")

    def __init__(self):
        self.calls = []

    def __call__(self, hidden_states, image_embeds, latents_clean, **kwargs):
        self.calls.append({"clean": latents_clean.clone(), "image": image_embeds.clone()})
        return (0.1 * hidden_states,)


def _latent(seed):
    return torch.randn((1, 16, 1, H, W), generator=torch.Generator().manual_seed(seed))


def _embeds(seed):
    return torch.randn((1, 5, 8), generator=torch.Generator().manual_seed(seed))


def _run(keyframes, start, key_latents, start_embeds, key_embeds, end=None):
    sections = SETTINGS.sections
    plan = plan_keyframes(keyframes, sections, K)
    conds = [Conditioning(torch.zeros(1, 4, 8), torch.ones(1, 4, dtype=torch.bool), torch.zeros(1, 8),
                          keyframe_image_embeds(start_embeds, plan[g], key_embeds)) for g in range(sections)]
    recorder = Recorder()
    made = list(run_sections(recorder, conds.__getitem__, start, SETTINGS, torch.Generator().manual_seed(1),
                             end_latent=end, keyframes=KeyframeLatents(plan, key_latents)))
    per_section = recorder.calls[::SETTINGS.steps]  # every call of a section receives the same
    assert all(torch.equal(a["clean"], b["clean"]) for a, b in zip(recorder.calls[::2], recorder.calls[1::2]))
    return made, per_section


def test_edge_and_inside_keyframes_reach_the_sections_the_note_names():
    start, kf0, kf1 = _latent(0), _latent(1), _latent(2)
    s_emb, e0, e1 = _embeds(0), _embeds(1), _embeds(2)
    # 0.8 s is edge 2 exactly; 1.3 s lies inside temporal section 3 (1.2-1.6 s) and snaps to edge 3 (1.2 s).
    keyframes = [Keyframe(0.8, 1.0), Keyframe(1.3, 0.5)]
    made, seen = _run(keyframes, start, [kf0, kf1], s_emb, [e0, e1])
    assert len(seen) == 4
    later = [None] + [m.video_latents[:, :, :1] for m in made]  # generation g's default post: the later video's first frame
    zeros = torch.zeros_like(start)

    # g = 0: temporal section 3, leads out of edge 3 (keyframe 1, w 0.5); no end frame, so post is zeros.
    assert torch.equal(seen[0]["clean"], torch.cat([0.5 * start + 0.5 * kf1, zeros], dim=2))
    assert torch.equal(seen[0]["image"], s_emb + 0.5 * (e1 - s_emb) / 1)
    # g = 1: temporal section 2, out of edge 2 (keyframe 0, w 1) and into edge 3 (keyframe 1, w 0.5).
    assert torch.equal(seen[1]["clean"], torch.cat([0 * start + kf0, 0.5 * later[1] + 0.5 * kf1], dim=2))
    assert torch.equal(seen[1]["image"], s_emb + (1.0 * (e0 - s_emb) + 0.5 * (e1 - s_emb)) / 2)
    # g = 2: temporal section 1, leads into edge 2: post is keyframe 0.
    assert torch.equal(seen[2]["clean"], torch.cat([start, 0 * later[2] + kf0], dim=2))
    assert torch.equal(seen[2]["image"], s_emb + 1.0 * (e0 - s_emb))
    # g = 3: temporal section 0, untouched: FramePack's own conditioning.
    assert torch.equal(seen[3]["clean"], torch.cat([start, later[3]], dim=2))
    assert torch.equal(seen[3]["image"], s_emb)

    assert keyframe_timeline(keyframes, 4, K) == [
        {"keyframe": 1, "seconds": 0.8, "weight": 1.0, "at": 0.8,
         "sections": [{"section": 1, "as": "post"}, {"section": 2, "as": "pre"}]},
        {"keyframe": 2, "seconds": 1.3, "weight": 0.5, "at": 1.2,
         "sections": [{"section": 2, "as": "post"}, {"section": 3, "as": "pre"}]}]


def test_a_keyframe_at_the_end_is_the_end_frame_and_a_loop_ends_on_the_start():
    start, kf = _latent(0), _latent(3)
    s_emb, e = _embeds(0), _embeds(3)
    _, seen = _run([Keyframe(1.6, 1.0)], start, [kf], s_emb, [e])  # edge 4: the end
    _, as_end = _run([], start, [], s_emb, [], end=kf)
    assert torch.equal(seen[0]["clean"], torch.cat([start, kf], dim=2))
    assert torch.equal(seen[0]["clean"], as_end[0]["clean"])
    # A loop: the end frame is the start picture, so the last latent frame is conditioned on it.
    _, loop = _run([], start, [], s_emb, [], end=start)
    assert torch.equal(loop[0]["clean"], torch.cat([start, start], dim=2))
    assert all(torch.equal(call["image"], s_emb) for call in loop)


def test_plan_in_generation_order():
    assert plan_keyframes([Keyframe(0.4, 0.25)], 4, K) == [
        SectionKeyframes(), SectionKeyframes(), SectionKeyframes(pre=(0, 0.25)), SectionKeyframes(post=(0, 0.25))]


@pytest.mark.parametrize("keyframes, end, mode, message", [
    ([Keyframe(1.7)], False, "inverted", "The keyframe at 1.7 s is past the end of the video (1.60 s)."),
    ([Keyframe(0.8), Keyframe(0.8)], False, "inverted", "The keyframes at 0.8 s and 0.8 s fall on the same section edge"),
    ([Keyframe(0.7), Keyframe(0.9)], False, "inverted", "fall on the same section edge (0.80 s)"),
    ([Keyframe(0)], False, "inverted", "the start picture is the keyframe at 0 s"),
    ([Keyframe(1.5)], True, "inverted", "falls on the end frame (1.60 s)"),
    ([Keyframe(0.8, 1.5)], False, "inverted", "weight must be above 0 and at most 1"),
    ([Keyframe(0.8)], False, "forward", "Keyframes after the start need inverted sampling; forward (F1)"),
])
def test_bad_keyframes_are_one_sentence(keyframes, end, mode, message):
    with pytest.raises(ValueError) as error:
        check_keyframes(keyframes, 4, K, end, mode)
    assert message in str(error.value) and "\n" not in str(error.value)


def test_the_pages_keyframes_and_their_timeline():
    from ui.creative import keyframe_timeline_html, page_keyframes

    assert page_keyframes(["a.png", "b.png"], "1.2, 3:0.5") == [("a.png", 1.2, 1.0), ("b.png", 3.0, 0.5)]
    with pytest.raises(ValueError, match=r"one keyframe time for each keyframe picture \(2 pictures, 1 time\)"):
        page_keyframes(["a.png", "b.png"], "1")
    shown = keyframe_timeline_html(["a.png"], "0.8", 1.6, window=K)
    assert ("<b>Keyframe 1</b> at 0.8 s (weight 1) → 0.80 s: end of section 2 (0.40–0.80 s); "
            "start of section 3 (0.80–1.20 s)") in shown
    assert "The keyframe at 9 s is past the end of the video (1.60 s)." in keyframe_timeline_html(["a"], "9", 1.6,
                                                                                                    window=K)
    assert "Loop</b>: the end of section 4 leads back" in keyframe_timeline_html([], "", 1.6, loop=True, window=K)
