"""framepack_core/finishing/: upscaling and interpolation, alone, after a generation and on the page."""
