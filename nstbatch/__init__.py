"""nstbatch: batch neural style transfer (Gatys et al.) with VGG-19.

``nstbatch.stylize(content, style, params)`` stylizes one image from Python; the ``nstbatch``
command does the same for files and manifests. Heavy modules (torch) load on first use, so
``nstbatch --version`` answers at once.
"""
from __future__ import annotations

from .version import __version__

__all__ = ["stylize", "StyleParams", "resolve_params", "PRESETS", "__version__"]


def __getattr__(name: str):
    if name == "stylize":
        from .api import stylize

        return stylize
    if name in ("StyleParams", "resolve_params", "PRESETS"):
        from . import config

        return getattr(config, name)
    raise AttributeError(f"module 'nstbatch' has no attribute {name!r}")
