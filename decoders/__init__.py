"""Generators (image, video, audio, music, speech), each a registered tool.

Every public submodule is imported when the registry loads, so dropping a file
here registers its tools. Heavy libraries are imported inside the tool functions.
"""

from __future__ import annotations

import importlib
import pkgutil

for _info in pkgutil.iter_modules(__path__):
    if not _info.name.startswith("_"):
        importlib.import_module(f"{__name__}.{_info.name}")
