"""An MP4's tags from a run's settings: the title (the prompt's first line) and the comment (every setting as
JSON, which `request.remake_fields` and `metadata_settings` read back). Used by generations (lifecycle.py)
and finishing runs alike."""
from __future__ import annotations

import json
import re
import subprocess
from pathlib import Path

# Bounds on what the MP4 carries. Players and readers (imageio-ffmpeg among them) parse the tags as
# text and give up on huge ones; the run's JSON record beside the video keeps the prompt whole.
TITLE_CHARS = 200
PROMPT_CHARS = 65_536  # far past what the text encoders read (256 Llama tokens, 77 CLIP tokens)


def mp4_tags(settings: dict) -> dict[str, str]:
    """The MP4's title (the prompt's first line) and comment (every setting as JSON)."""
    prompt = settings.get("prompt", "")
    if len(prompt) > PROMPT_CHARS:
        settings = settings | {"prompt": prompt[:PROMPT_CHARS], "prompt_cut": True}
    first_line = prompt.strip().split("\n", 1)[0] if prompt.strip() else ""
    title = first_line if len(first_line) <= TITLE_CHARS else first_line[:TITLE_CHARS - 1] + "…"
    return {"title": title, "comment": json.dumps(settings, sort_keys=True)}


def metadata_settings(path: Path) -> dict:
    """Settings from an MP4 this app made (its comment tag); {} for any other video."""
    import imageio_ffmpeg

    out = subprocess.run([imageio_ffmpeg.get_ffmpeg_exe(), "-v", "error", "-i", str(path), "-f", "ffmetadata", "-"],
                         capture_output=True, text=True).stdout
    for line in out.splitlines():
        if line.startswith("comment="):
            try:
                settings = json.loads(re.sub(r"\\(.)", r"\1", line[len("comment="):]))
            except ValueError:
                return {}
            return settings if isinstance(settings, dict) and settings.get("app") else {}
    return {}
