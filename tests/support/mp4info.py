"""MP4 files in tests, through imageio-ffmpeg: read back (stream facts, decoded frames, tags), and clips
"from elsewhere" written with ffmpeg's own settings."""
import numpy as np
import imageio_ffmpeg


def mp4_info(path):
    reader = imageio_ffmpeg.read_frames(str(path))
    meta = next(reader)
    frames = [np.frombuffer(f, np.uint8).reshape(meta["size"][1], meta["size"][0], 3) for f in reader]
    return meta, np.stack(frames)


def mp4_metadata(path):
    """The container's tags (title, comment, ...) as ffmpeg's ffmetadata export sees them."""
    import subprocess

    out = subprocess.run([imageio_ffmpeg.get_ffmpeg_exe(), "-v", "error", "-i", str(path), "-f", "ffmetadata", "-"],
                         capture_output=True, text=True, check=True).stdout
    tags, key, value, escaped, in_value = {}, [], [], False, False
    for c in out.split("\n", 1)[1]:  # past the ;FFMETADATA1 header; a backslash escapes the next character
        if escaped:
            (value if in_value else key).append(c)
            escaped = False
        elif c == "\\":
            escaped = True
        elif c == "=" and not in_value:
            in_value = True
        elif c == "\n":
            if key:
                tags["".join(key)] = "".join(value)
            key, value, in_value = [], [], False
        else:
            (value if in_value else key).append(c)
    return tags


def write_clip(path, width: int, height: int, fps: float, frames: int, seed: int = 1, **writer):
    """A clip made by ffmpeg (its defaults unless `writer` says otherwise: codec=..., output_params=[...]),
    not by this app: moving colour gradients, different per `seed`. Returns `path`."""
    y, x = np.mgrid[0:height, 0:width]
    clip = imageio_ffmpeg.write_frames(str(path), (width, height), fps=fps, macro_block_size=2, **writer)
    clip.send(None)
    for t in range(frames):
        clip.send(np.stack([(x * 2 * seed + t * 3) % 256, (y * 2 + t * seed) % 256, (x + y + 5 * t) % 256],
                           -1).astype(np.uint8))
    clip.close()
    return path
