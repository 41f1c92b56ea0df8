"""`import spandrel` without torchvision.

spandrel declares torchvision as a dependency but uses it in two architectures only, neither an upscaler:
LaMa (inpainting: `rotate`, `InterpolationMode`) and RestoreFormer (faces: `normalize`). Its registry imports
every architecture, so without torchvision `import spandrel` fails. PyPI's torchvision wheels are built for
one torch each and do not import beside this app's torch build, so spandrel is installed with `--no-deps`
(requirements.txt) and, only while spandrel's registry is imported, `torchvision` names a stand-in whose
functions refuse with a clear error. The stand-in is removed from `sys.modules` right after, so no other
library ever sees it. Where a real torchvision imports, it is used and nothing is stood in.
"""
from __future__ import annotations

import sys
import threading
import types

_LOCK = threading.Lock()
_STAND_IN = ("torchvision", "torchvision.transforms", "torchvision.transforms.functional")


def import_spandrel():
    """The spandrel module (imported once)."""
    with _LOCK:
        if "spandrel" in sys.modules:
            return sys.modules["spandrel"]
        try:
            import torchvision  # noqa: F401
            has_torchvision = True
        except Exception:  # not installed, or built for another torch
            has_torchvision = False
            for name in _STAND_IN:
                sys.modules.pop(name, None)
        if has_torchvision:
            import spandrel

            return spandrel
        sys.modules.update(_stand_in())
        try:
            import spandrel
        finally:
            for name in _STAND_IN:
                sys.modules.pop(name, None)
        return spandrel


def _stand_in() -> dict[str, types.ModuleType]:
    def refuse(*args, **kwargs):
        raise RuntimeError("This model architecture needs torchvision, which is not installed beside this torch.")

    class InterpolationMode:  # the names LaMa reads at import time
        NEAREST, BILINEAR, BICUBIC = "nearest", "bilinear", "bicubic"

    package = types.ModuleType("torchvision")
    transforms = types.ModuleType("torchvision.transforms")
    functional = types.ModuleType("torchvision.transforms.functional")
    functional.rotate = functional.normalize = refuse
    functional.InterpolationMode = InterpolationMode
    package.transforms, transforms.functional = transforms, functional
    return dict(zip(_STAND_IN, (package, transforms, functional)))
