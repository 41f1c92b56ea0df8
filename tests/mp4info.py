"""Reading back MP4 files in tests: stream facts and decoded frames, through imageio-ffmpeg."""
import numpy as np
import imageio_ffmpeg


def mp4_info(path):
    reader = imageio_ffmpeg.read_frames(str(path))
    meta = next(reader)
    frames = [np.frombuffer(f, np.uint8).reshape(meta["size"][1], meta["size"][0], 3) for f in reader]
    return meta, np.stack(frames)
