"""The whole engine on the tiny model set: events, frames, determinism, stop and failure."""
import json

import numpy as np
from PIL import Image

import framepack_core.engine.generation as generation
from framepack_core.events import Failed, Finished, Preview, SectionDone, Stage, Step
from framepack_core.request import Request, remake_fields
from tests.support.helpers import run_events as collect, tiny_request as request
from tests.support.mp4info import mp4_info, mp4_metadata


def progress_path(output):
    return output.with_name(f"{output.stem}.in-progress.mp4")


def test_one_second_inverted(tiny_models, picture, tmp_path):
    events = collect(request(picture), tiny_models, tmp_path / "v.mp4")
    finished = events[-1]
    assert isinstance(finished, Finished) and not finished.stopped
    assert (finished.frames, finished.fps, finished.sections, finished.seed) == (37, 30, 1, 31337)
    assert (finished.height, finished.width) == (112, 144)  # the 100x70 picture stays landscape
    steps = [e for e in events if isinstance(e, Step)]
    assert [(s.step, s.steps) for s in steps] == [(1, 3), (2, 3), (3, 3)]
    previews = [e for e in events if isinstance(e, Preview)]
    assert len(previews) == 3 and previews[0].image.shape == (14, 9 * 18, 3)
    stages = [e.name for e in events if isinstance(e, Stage)]
    assert stages[:4] == ["loading", "encoding_prompt", "encoding_image", "sampling"]
    meta, frames = mp4_info(finished.video)
    assert frames.shape == (37, 112, 144, 3) and meta["fps"] == 30 and meta["codec"] == "h264"
    assert not progress_path(finished.video).exists()


def test_sections_grow_the_video(tiny_models, picture, tmp_path):
    events = collect(request(picture, seconds=2.4, mode="forward"), tiny_models, tmp_path / "f.mp4")
    done = [e for e in events if isinstance(e, SectionDone)]
    assert [d.frames for d in done] == [37, 73]
    assert events[-1].frames == 73 == mp4_info(events[-1].video)[1].shape[0]


def test_same_seed_same_frames_other_seed_other_frames(tiny_models, picture, tmp_path):
    videos = []
    for name, seed in (("a", 7), ("b", 7), ("c", 8)):
        finished = collect(request(picture, seed=seed, crf=0), tiny_models, tmp_path / f"{name}.mp4")[-1]
        videos.append(mp4_info(finished.video)[1])
    assert np.array_equal(videos[0], videos[1])
    assert not np.array_equal(videos[0], videos[2])


def test_end_frame_changes_the_video(tiny_models, picture, tmp_path):
    end = tmp_path / "end.png"
    Image.new("RGB", (100, 70), (0, 0, 255)).save(end)
    # Two sections of the smallest useful window (2 latent frames): the end picture still has a section to steer.
    short = dict(seconds=0.5, window=2, crf=0)
    plain = collect(request(picture, **short), tiny_models, tmp_path / "p.mp4")[-1]
    ended = collect(request(picture, **short, end_image=end), tiny_models, tmp_path / "e.mp4")[-1]
    assert plain.frames == ended.frames == 17
    assert not np.array_equal(mp4_info(plain.video)[1], mp4_info(ended.video)[1])


def test_stop_during_the_first_section_writes_nothing(tiny_models, picture, tmp_path):
    output = tmp_path / "s.mp4"
    events = collect(request(picture, seconds=2), tiny_models, output,
                     on_event=lambda event, run: isinstance(event, Step) and run.stop())
    assert isinstance(events[-1], Finished) and events[-1].stopped and events[-1].video is None
    assert len([e for e in events if isinstance(e, Step)]) == 1  # stopped within one step
    assert not output.exists() and not progress_path(output).exists()


def test_stop_after_a_section_keeps_the_video_so_far(tiny_models, picture, tmp_path):
    output = tmp_path / "k.mp4"
    events = collect(request(picture, seconds=3.6), tiny_models, output,
                     on_event=lambda event, run: isinstance(event, SectionDone) and run.stop())
    finished = events[-1]
    assert finished.stopped and finished.sections == 1 and finished.video == output
    assert mp4_info(output)[1].shape[0] == finished.frames == 33  # one inverted section of three


def test_failure_in_a_later_section_keeps_the_old_file_and_the_video_so_far(tiny_models, picture, tmp_path,
                                                                             monkeypatch):
    output = tmp_path / "old.mp4"
    output.write_bytes(b"an older video")
    real, calls = generation.decode_latents, []

    def failing_decode(vae, latents):
        calls.append(1)
        if len(calls) == 3:
            raise RuntimeError("injected failure")
        return real(vae, latents)

    monkeypatch.setattr(generation, "decode_latents", failing_decode)
    events = collect(request(picture, seconds=0.8, window=2), tiny_models, output)  # 3 sections of 2 latent frames
    failed = events[-1]
    assert isinstance(failed, Failed) and "injected failure" in failed.message
    assert output.read_bytes() == b"an older video"
    assert failed.partial_video == progress_path(output)
    assert mp4_info(failed.partial_video)[1].shape[0] == 5 + 8  # two sections survived
    # The next run works.
    monkeypatch.setattr(generation, "decode_latents", real)
    assert collect(request(picture), tiny_models, output)[-1].frames == 37


def test_bad_request_fails_cleanly(tiny_models, picture, tmp_path):
    events = collect(request(picture, steps=0), tiny_models, tmp_path / "x.mp4")
    assert len(events) == 1 and isinstance(events[0], Failed) and events[0].message.startswith("Steps")


def test_video_carries_its_settings(tiny_models, picture, tmp_path):
    finished = collect(request(picture, seed=12, steps=2, gs=7.5), tiny_models, tmp_path / "m.mp4")[-1]
    tags = mp4_metadata(finished.video)
    assert tags["title"] == "a red balloon rises"
    settings = json.loads(tags["comment"])
    assert (settings["model"], settings["seed"], settings["steps"], settings["gs"]) == ("tiny", 12, 2, 7.5)
    assert (settings["seconds"], settings["resolution"], settings["mode"]) == (1, 128, "inverted")
    # Enough to make the same video again from the video alone.
    again = Request.from_fields(image=picture, **remake_fields(settings))
    remade = collect(again, tiny_models, tmp_path / "again.mp4")[-1]
    assert np.array_equal(mp4_info(remade.video)[1], mp4_info(finished.video)[1])
