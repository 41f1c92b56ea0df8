"""Reading back MP4 files in tests: stream facts and decoded frames, through imageio-ffmpeg."""
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
    tags = {}
    for line in out.splitlines()[1:]:
        key, _, value = line.partition("=")
        tags[key] = value.replace("\\=", "=").replace("\\;", ";").replace("\\#", "#").replace("\\\\", "\\")
    return tags
