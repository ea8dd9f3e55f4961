"""Evaluation harness: WER (pocketsphinx, open vocabulary and list LM), speaker similarity (resemblyzer), DNSMOS
(speechmos) and RTF on Seed-TTS-eval lists, for our TTS, the codec or ground truth. The metric packages are the
`eval` extra and are imported only when a run starts."""

from .deps import EvalDependencyError, missing_modules
from .lists import EvalItem, ListError, read_list, write_list

__all__ = [
    "EvalDependencyError",
    "EvalItem",
    "EvalSettings",
    "ListError",
    "missing_modules",
    "read_list",
    "run_evaluation",
    "write_list",
]


def __getattr__(name: str):
    if name in ("run_evaluation", "EvalSettings"):  # pulls torch and tqdm; keep `import tts.evaluation` light
        from . import runner

        return getattr(runner, name)
    raise AttributeError(f"module 'tts.evaluation' has no attribute {name!r}")
