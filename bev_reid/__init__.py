"""bev-reid: vehicle re-identification in bird's-eye-view space from surround cameras.

The user-facing Python API, imported on first use so that ``import bev_reid`` (and the CLI's
``--help``) stays light:

- :class:`BEVReIDModel` (``bev_reid.models.reid``): ``from_checkpoint(path).embed(crops)``;
- :class:`ReIDDataset` (``bev_reid.reid.dataset``): the views of a ``build-dataset`` folder.
"""

from __future__ import annotations

import importlib
from typing import Any

__version__ = "0.1.0"

_API = {"BEVReIDModel": "bev_reid.models.reid", "ReIDDataset": "bev_reid.reid.dataset"}
__all__ = ["BEVReIDModel", "ReIDDataset", "__version__"]


def __getattr__(name: str) -> Any:
    if name in _API:
        return getattr(importlib.import_module(_API[name]), name)
    raise AttributeError(f"module 'bev_reid' has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted({*globals(), *_API})
