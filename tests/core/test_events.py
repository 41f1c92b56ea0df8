"""Stage and status names are enums whose values are the words records, JSON and the queue keep."""
import json

import pytest

from framepack_core.events import ENDED, Stage, StageName, Status
from ui.cli import told_stage


def test_a_stage_is_named_from_the_enum_and_a_wrong_name_is_refused():
    assert Stage("sampling", "x").name is StageName.SAMPLING
    assert Stage(StageName.DECODING, "x").name == "decoding"
    with pytest.raises(ValueError, match="sampl"):
        Stage("sampl", "x")


def test_statuses_are_written_as_their_words():
    record = {"status": Status.FAILED, "stage": StageName.WRITING}
    assert json.dumps(record) == '{"status": "failed", "stage": "writing"}'
    assert json.loads(json.dumps(record))["status"] == Status.FAILED
    assert f"fp-{Status.STOPPING}" == "fp-stopping"  # the page's CSS class
    assert ENDED == {"finished", "stopped", "failed"}


def test_the_terminal_tells_loading_and_encoding_only():
    told = [name for name in StageName if told_stage(Stage(name, "x"))]
    assert told == [StageName.LOADING, StageName.ENCODING_PROMPT, StageName.ENCODING_IMAGE]
