"""The first download as a person sees it: refused up front when the disk is too small, and reported while
it runs (bytes done, total, speed, time left), with a stand-in for huggingface_hub's snapshot_download."""
import shutil
from collections import namedtuple

import huggingface_hub
import pytest
from huggingface_hub.file_download import DryRunFileInfo

import framepack_core.models.download as download
import framepack_core.models.loading as loading
from framepack_core.failures import ModelsUnavailableError
from framepack_core.models.sets import MODEL_SPECS

GB = 10**9
SIZES = {"hunyuanvideo-community/HunyuanVideo": 30 * GB, "lllyasviel/flux_redux_bfl": 1 * GB,
         "lllyasviel/FramePackI2V_HY": 12 * GB}


class FakeClock:
    def __init__(self):
        self.now = 100.0

    def __call__(self):
        return self.now


class StandInHub:
    """snapshot_download as the hub answers it: a dry run lists the missing files, the real call writes them in
    256 MB chunks through the tqdm_class it is given (as huggingface_hub's aggregated byte bar does), 1 s a chunk."""

    def __init__(self, tmp_path, clock, cached=()):
        self.tmp_path, self.clock, self.cached, self.calls = tmp_path, clock, set(cached), []

    def __call__(self, repo_id, *, dry_run=False, tqdm_class=None, local_files_only=False, **options):
        self.calls.append((repo_id, dry_run))
        size = 0 if repo_id in self.cached else SIZES.get(repo_id, 0)
        if dry_run:
            return [DryRunFileInfo(commit_hash="c0ffee", file_size=size, filename="model.safetensors",
                                   local_path=str(self.tmp_path / repo_id), is_cached=not size,
                                   will_download=bool(size))]
        files = tqdm_class(iterable=[1], desc="Fetching 1 files", total=1) if tqdm_class else None
        bar = tqdm_class(desc="Reconstructing (incomplete total...)", total=0, initial=0, unit="B",
                         unit_scale=True) if tqdm_class else None
        chunk = 256 * 2**20
        for start in range(0, size, chunk):
            self.clock.now += 1.0
            if bar is not None:
                bar.update(min(chunk, size - start))
        for _ in files or ():
            pass
        (self.tmp_path / repo_id).mkdir(parents=True, exist_ok=True)
        return str(self.tmp_path / repo_id)


@pytest.fixture
def online(monkeypatch, tmp_path):
    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path / "hub"))
    clock = FakeClock()
    monkeypatch.setattr(download.time, "monotonic", clock)
    return clock


def test_the_download_reports_bytes_total_speed_and_time_left(online, tmp_path, monkeypatch):
    hub = StandInHub(tmp_path / "repos", online, cached={"lllyasviel/flux_redux_bfl"})
    monkeypatch.setattr(huggingface_hub, "snapshot_download", hub)
    said = []
    roots = loading._hub_roots(MODEL_SPECS["framepack"], said.append)
    assert set(roots) == set(SIZES)
    assert [dry for _, dry in hub.calls[:3]] == [True, True, True]  # every repository asked before any download
    lines = [line for line in said if line.startswith("downloading the framepack models")]
    # 42 GB missing (the 1 GB repository is cached), written at 256 MiB a second: 157 s for 42e9 bytes.
    assert lines[-1] == "downloading the framepack models: 42.00 GB of 42.00 GB (100%), 267.5 MB/s"
    assert lines[0] == ("downloading the framepack models: 0.27 GB of 42.00 GB (1%), 268.4 MB/s, "
                        "about 3 min left")
    assert 2 < len(lines) < 100  # one line every 2 s of the 157 s, not one per chunk
    assert lines[len(lines) // 2].endswith(" s left")  # under 90 s to go: in seconds


def test_a_download_that_would_not_fit_is_refused_before_it_starts(online, tmp_path, monkeypatch):
    hub = StandInHub(tmp_path / "repos", online)
    monkeypatch.setattr(huggingface_hub, "snapshot_download", hub)
    Usage = namedtuple("Usage", "total used free")
    monkeypatch.setattr(shutil, "disk_usage", lambda path: Usage(100 * GB, 88 * GB, 12 * GB))
    with pytest.raises(ModelsUnavailableError) as error:
        loading._hub_roots(MODEL_SPECS["framepack"], lambda line: None)
    message = str(error.value)
    assert message == (f"The framepack model set needs 43.0 GB more in {tmp_path / 'hub'}, which has 12.0 GB free; "
                       "free 31.0 GB there, or set HF_HOME to a disk with room (or pass --models-dir with a copy you "
                       "already have).")
    assert all(dry for _, dry in hub.calls)  # nothing was downloaded
    assert not (tmp_path / "repos").exists()


def test_everything_cached_downloads_nothing_and_says_nothing_of_bytes(online, tmp_path, monkeypatch):
    hub = StandInHub(tmp_path / "repos", online, cached=set(SIZES))
    monkeypatch.setattr(huggingface_hub, "snapshot_download", hub)
    said = []
    loading._hub_roots(MODEL_SPECS["framepack"], said.append)
    assert not [line for line in said if line.startswith("downloading")]


def test_no_connection_skips_the_check_and_the_download_says_why(online, tmp_path, monkeypatch):
    def unreachable(repo_id, **options):
        raise OSError("Cannot reach https://huggingface.co: connection refused")

    monkeypatch.setattr(huggingface_hub, "snapshot_download", unreachable)
    with pytest.raises(ModelsUnavailableError, match="downloading failed: OSError: Cannot reach"):
        loading._hub_roots(MODEL_SPECS["framepack"], lambda line: None)
