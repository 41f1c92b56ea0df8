"""Every stage accounted (issue 17 item 2): the run's record gives each stage's seconds and memory,
and a stage's reported peak is the one the device counted."""
from collections import defaultdict

import torch

from framepack_core.events import Stage, Step
from framepack_core.models.loading import load_models
from framepack_core.speed.precision import tensor_bytes
from tests.support.helpers import run_events, tiny_request
from memory import ModelManager, SimulatedDevice
from memory.usage import UsageMeter, device_usage

FIELDS = {"stage", "section", "seconds", "vram_peak_allocated", "vram_peak_reserved", "bytes_streamed",
          "rss_anon_peak", "pinned_bytes", "planned_bytes"}


class CountingDevice(SimulatedDevice):
    """Keeps its own count, apart from the ledger the meter reads: the bytes held after every allocation,
    by the stage under way (`stage`, set by the test as each stage begins)."""

    def __init__(self):
        super().__init__()
        self.stage = -1
        self.peaks = defaultdict(int)
        self.moved_at = {}

    def begins(self, index: int) -> None:
        self.stage = index
        self.peaks[index] = self.current_bytes
        self.moved_at[index] = self.bytes_moved

    def alloc(self, nbytes):
        buffer = super().alloc(nbytes)
        self.peaks[self.stage] = max(self.peaks[self.stage], self.current_bytes)
        return buffer


def test_the_meter_reports_the_peak_the_device_counted_and_keeps_the_whole_peak():
    device, now, rss = SimulatedDevice(), [0.0], iter([100, 300, 200, 50, 70, 60])
    meter = UsageMeter(rss=lambda: next(rss), pinned=None, clock=lambda: now[0], poll_seconds=None)
    meter.watch(*device_usage(device))
    big = device.alloc(4000)
    meter.begin("first", planned=lambda: 4096)
    kept = device.alloc(1000)
    meter.sample()
    now[0] = 2.5
    del big
    meter.begin("second", section=0)
    device.alloc(300)  # garbage at once: the ledger peak still saw it
    now[0] = 3.0
    stages = meter.close()
    assert [s["stage"] for s in stages] == ["first", "second"] and set(stages[0]) == FIELDS
    assert stages[0] | {"seconds": None} == dict(stage="first", section=None, seconds=None, vram_peak_allocated=5000,
                                                 vram_peak_reserved=None, bytes_streamed=0, rss_anon_peak=300,
                                                 pinned_bytes=None, planned_bytes=4096)
    assert stages[0]["seconds"] == 2.5 and stages[1]["seconds"] == 0.5
    assert stages[1]["vram_peak_allocated"] == 1300 and stages[1]["section"] == 0 and stages[1]["rss_anon_peak"] == 70
    assert device.peak_bytes == 5000 and kept.numel() == 1000  # the run's own peak is left as it was


def test_a_runs_record_gives_every_stage_with_the_peaks_the_device_counted(picture, tmp_path):
    models = load_models("tiny")  # a private copy: placement repacks weights
    device = CountingDevice()
    # A budget under the transformer's size: it streams, so sampling moves bytes.
    manager = ModelManager(device, budget_bytes=int(0.9 * tensor_bytes(models.transformer)))
    begun, runs, placed = [], [], set()

    def on_event(event, run):
        runs[:] = [run]
        if isinstance(event, Step):  # the transformer's plan while it samples (the run's end evicts it)
            placed.add(manager.placement(models.transformer).device_bytes)
        if isinstance(event, Stage):
            begun.append(event.name)
            device.begins(len(begun) - 1)

    events = run_events(tiny_request(picture, seconds=2.4, steps=2, step_cache=False), models,
                        tmp_path / "v.mp4", manager=manager, on_event=on_event)
    stages = runs[0].files.read_record()["stages"]  # as the JSON file beside the video keeps them
    assert events[-1].sections == 2 and [s["stage"] for s in stages] == begun
    assert [(s["stage"], s["section"]) for s in stages] == [
        ("loading", None), ("encoding_prompt", None), ("encoding_image", None),
        ("sampling", 0), ("decoding", 0), ("writing", 0), ("sampling", 1), ("decoding", 1), ("writing", 1)]
    assert all(set(s) == FIELDS and s["seconds"] >= 0 for s in stages)
    assert stages[0]["vram_peak_allocated"] is None  # loading: before the run had its device
    for index, stage in enumerate(stages[1:], start=1):
        assert stage["vram_peak_allocated"] == device.peaks[index], (index, stage)
        moved_after = device.moved_at.get(index + 1, device.bytes_moved)
        assert stage["bytes_streamed"] == moved_after - device.moved_at[index], (index, stage)
        assert isinstance(stage["rss_anon_peak"], int) and stage["rss_anon_peak"] > 0
    sampling = [s for s in stages if s["stage"] == "sampling"]
    assert all(s["bytes_streamed"] > 0 for s in sampling)
    assert len(placed) == 1 and all(s["planned_bytes"] == min(placed) > 0 for s in sampling)
    assert all(s["vram_peak_allocated"] >= s["planned_bytes"] for s in sampling)
    assert stages[5]["planned_bytes"] is None  # writing uses no model
    if not torch.cuda.is_available():
        assert all(s["pinned_bytes"] is None for s in stages)  # this torch keeps no pinned statistics


def test_the_pages_summary_shows_what_each_stage_cost():
    from framepack_core.run.record import RunRecord
    from ui.handlers import summary_markdown

    stage = dict(stage="sampling", section=1, seconds=2.5, vram_peak_allocated=3 * 2**30, vram_peak_reserved=None,
                 bytes_streamed=512 * 2**20, rss_anon_peak=2**30 + 2**29, pinned_bytes=None, planned_bytes=2**30)
    summary = summary_markdown(RunRecord(model="tiny", status="finished", stages=(stage,),
                                         settings=dict(seed=9, seconds=1, steps=4, gs=10, mode="inverted",
                                                       resolution=128, crf=16)))
    lines = summary.splitlines()
    # A column no stage has a figure for (pinned, here) is left out rather than shown as dashes.
    assert "| stage | seconds | VRAM peak | streamed | RAM peak | planned |" in lines
    assert "| sampling 2 | 2.50 | 3.00 GiB / – | 512.0 MiB | 1.50 GiB | 1.00 GiB |" in lines
