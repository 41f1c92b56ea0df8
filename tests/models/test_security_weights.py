"""Weights load only from safetensors: a folder holding only a pickle is refused, and the pickle never runs."""
import pickle
import shutil

import pytest

from framepack_core.models import tiny
from framepack_core.failures import ModelsUnavailableError
from framepack_core.models.loading import load_models


class _Trap:
    """Unpickling this creates a file: proof that the pickle was (or was not) loaded."""

    def __init__(self, marker):
        self.marker = str(marker)

    def __reduce__(self):
        return (open, (self.marker, "w"))


@pytest.mark.parametrize("folder, weights", [
    ("lllyasviel/FramePackI2V_HY", "diffusion_pytorch_model"),
    ("hunyuanvideo-community/HunyuanVideo/text_encoder_2", "model"),
])
def test_a_pickle_only_model_folder_is_refused_clearly(tmp_path, folder, weights, tiny_files_as_real_set):
    models_dir = tmp_path / "models"
    shutil.copytree(tiny.ensure_tiny_models(), models_dir)
    target = models_dir / folder
    (target / f"{weights}.safetensors").unlink()
    marker = tmp_path / "pickle-ran"
    (target / f"{weights}.bin").write_bytes(pickle.dumps({"weight": _Trap(marker)}))
    with pytest.raises(ModelsUnavailableError) as caught:
        load_models("framepack", models_dir=models_dir)
    message = str(caught.value)
    assert "safetensors" in message and str(target) in message and "pickle" in message
    assert "Traceback" not in message
    assert not marker.exists(), "the pickle was unpickled"
