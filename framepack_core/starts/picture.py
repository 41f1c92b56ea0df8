"""A new video from a picture: the request's picture (and end frame, when there is one) encoded by the VAE.

    run = begin(FromPicture(Request.from_fields(image=…, prompt=…)))

Its record says nothing of where the video comes from (no other video is read), and a run killed before
its first latents starts over from its picture alone.
"""
from __future__ import annotations

from dataclasses import dataclass

from ..engine.beginning import Beginning, Origin
from ..media.pictures import crop_to_bucket, resize_and_center_crop
from ..method.sections import SavedSections
from ..models.encoders import encode_latent, set_vae_tiling
from ..request import Request


@dataclass(frozen=True)
class FromPicture:
    """The start a front end builds for a new video: its request, as the front end read it."""
    request: Request

    def parts(self):
        return self.request.validated(), PictureOrigin(), None


class PictureOrigin(Origin):
    """The request's picture, and its end frame when there is one, encoded by the VAE."""

    @classmethod
    def recalled(cls, part: dict) -> Origin | None:
        """A record's or latents file's start part names no video: a picture's."""
        return cls() if not part else None

    def begin(self, request, models, manager) -> Beginning:
        pixels = crop_to_bucket(request.image, request.method.resolution)
        vae = models.vae
        with manager.use(vae):
            # One picture never needs tiles: encoded whole, the start latent does not depend on memory.
            set_vae_tiling(vae, False)
            start = encode_latent(vae, pixels)
            end = None
            if request.end_image is not None:
                height, width = pixels.shape[:2]
                end = encode_latent(vae, resize_and_center_crop(request.end_image, width, height))
            if request.method.loop:  # the video leads back into its first frame
                end = start
        return Beginning(pixels, start, end)

    def resumed(self, saved, request, models, manager) -> Beginning:
        pixels = crop_to_bucket(request.image, request.method.resolution)
        return Beginning(pixels, saved.start, saved.end, SavedSections(saved.done, saved.video))


ORIGIN = PictureOrigin  # how kinds.recalled finds this kind
