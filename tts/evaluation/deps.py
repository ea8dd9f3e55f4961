"""Lazy imports of the metric packages (the `eval` extra), with one clear message when they are missing."""

from __future__ import annotations

import importlib
import importlib.metadata
from types import ModuleType

INSTALL_HINT = 'pip install -e ".[eval]"'

# import name -> distribution name, for the error message and the environment record
EVAL_MODULES = {"pocketsphinx": "pocketsphinx", "jiwer": "jiwer", "resemblyzer": "resemblyzer",
                "webrtcvad": "webrtcvad-wheels", "speechmos": "speechmos", "onnxruntime": "onnxruntime",
                "librosa": "librosa"}
RECORDED_DISTRIBUTIONS = ("pocketsphinx", "jiwer", "resemblyzer", "webrtcvad-wheels", "speechmos", "onnxruntime",
                          "librosa", "numpy", "scipy", "torch", "soundfile", "soxr")


class EvalDependencyError(RuntimeError):
    """A metric package of the `eval` extra is not installed (or fails to import)."""


def require(module: str) -> ModuleType:
    """Import `module`, or raise `EvalDependencyError` telling the user how to install the eval extra."""
    try:
        return importlib.import_module(module)
    except ImportError as exc:  # ModuleNotFoundError, or a broken install (webrtcvad needing pkg_resources)
        dist = EVAL_MODULES.get(module.split(".")[0], module)
        raise EvalDependencyError(
            f"evaluation needs the '{dist}' package ({exc}); install the metric models with {INSTALL_HINT}"
            + ("  (if plain 'webrtcvad' shadows it: pip install --force-reinstall --no-deps webrtcvad-wheels)"
               if dist == "webrtcvad-wheels" else "")) from exc


def missing_modules() -> list[str]:
    """Import names of the eval extra that do not import here (empty when everything is usable)."""
    import importlib.util

    missing = [m for m in EVAL_MODULES if importlib.util.find_spec(m) is None]
    try:  # a cheap real import: the old `webrtcvad` sdist is found but fails to import under new setuptools
        importlib.import_module("webrtcvad")
    except ImportError:
        missing.append("webrtcvad")
    return sorted(set(missing))


def versions() -> dict[str, str | None]:
    out: dict[str, str | None] = {}
    for dist in RECORDED_DISTRIBUTIONS:
        try:
            out[dist] = importlib.metadata.version(dist)
        except importlib.metadata.PackageNotFoundError:
            out[dist] = None
    return out
