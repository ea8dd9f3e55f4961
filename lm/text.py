"""Text front end of the LM stage: normalised text -> sentencepiece BPE ids (byte fallback, so nothing is unknown).

The LM reserves its own special tokens (pad/bos/eos) on top of these ids, so the sentencepiece model has none
besides `unk` (id 0), which byte fallback makes unreachable in practice.
"""

from __future__ import annotations

import json
import threading
import unicodedata
from collections.abc import Iterable, Iterator, Sequence
from pathlib import Path

import sentencepiece as spm

from lm.normalize import (
    basic_normalize,
    english_normalize,
    get_normalizer,
    normalize_text,
    register_normalizer,
)

__all__ = [
    "HFTextTokenizer",
    "TextError",
    "TextTokenizer",
    "basic_normalize",
    "english_normalize",
    "get_normalizer",
    "load_text_tokenizer",
    "normalize_text",
    "register_normalizer",
    "train_text_tokenizer",
]

MODEL_FILE = "text_tokenizer.model"
CONFIG_FILE = "text_tokenizer.json"
_BYTE_PIECES = 256
_SEED = 1234
_TRAIN_LOCK = threading.Lock()  # the seed is process-global in sentencepiece


class TextError(ValueError):
    """Text that cannot be spoken: empty, or nothing left with a reading after normalisation."""


def _speakable(text: str) -> bool:
    # a letter or a digit in any script has a reading; punctuation, symbols, emoji and lone marks do not
    return any(unicodedata.category(char)[0] in "LN" for char in text)


def check_speakable(text: str, normalized: str) -> str:
    """Return `normalized`, or raise TextError explaining why `text` has nothing to say."""
    if not text.strip():
        raise TextError("text is empty (or only whitespace); give the LM something to say")
    if not _speakable(normalized):
        shown = text if len(text) <= 40 else text[:37] + "..."
        raise TextError(f"text {shown!r} has nothing speakable after normalisation ({normalized!r}): it holds "
                        "only punctuation, symbols or control characters with no reading")
    return normalized


class TextTokenizer:
    """Sentencepiece BPE over normalised text; `encode` normalises first, `decode` returns normalised text."""

    def __init__(self, model_proto: bytes, language: str = "en"):
        get_normalizer(language)  # fail now, not at the first encode, when the language has no normaliser
        self._proto = bytes(model_proto)
        self._sp = spm.SentencePieceProcessor(model_proto=self._proto)
        self.language = language

    # ---- construction and persistence ----
    @classmethod
    def from_file(cls, path: str | Path, language: str = "en") -> TextTokenizer:
        """Load a sentencepiece `.model` file."""
        path = Path(path)
        if not path.is_file():
            raise FileNotFoundError(f"no sentencepiece model at {path}")
        return cls(path.read_bytes(), language)

    @classmethod
    def from_pretrained(cls, folder: str | Path) -> TextTokenizer:
        """Load what `save(folder)` wrote: text_tokenizer.model and text_tokenizer.json."""
        folder = Path(folder)
        config_path = folder / CONFIG_FILE
        if not config_path.is_file():
            raise FileNotFoundError(f"no {CONFIG_FILE} in {folder} (expected next to {MODEL_FILE})")
        config = json.loads(config_path.read_text(encoding="utf-8"))
        return cls.from_file(folder / MODEL_FILE, config.get("language", "en"))

    def save(self, folder: str | Path) -> Path:
        """Write `folder/text_tokenizer.model` and `folder/text_tokenizer.json`; returns the folder."""
        folder = Path(folder)
        folder.mkdir(parents=True, exist_ok=True)
        (folder / MODEL_FILE).write_bytes(self._proto)
        config = {"language": self.language, "vocab_size": self.vocab_size}
        (folder / CONFIG_FILE).write_text(json.dumps(config, indent=2) + "\n", encoding="utf-8")
        return folder

    def __getstate__(self) -> dict:  # picklable for DataLoader workers; the C++ processor itself is not
        return {"model_proto": self._proto, "language": self.language}

    def __setstate__(self, state: dict) -> None:
        self.__init__(state["model_proto"], state["language"])

    # ---- use ----
    @property
    def vocab_size(self) -> int:
        """Number of ids, byte pieces and `unk` included; ids are in [0, vocab_size)."""
        return self._sp.get_piece_size()

    def normalize(self, text: str) -> str:
        """Normalised text as the tokenizer sees it; raises TextError when nothing speakable is left."""
        return check_speakable(text, normalize_text(text, self.language))

    def encode(self, text: str) -> list[int]:
        """Normalise `text` and return its ids. Characters outside the vocabulary become UTF-8 byte pieces."""
        return self._sp.encode(self.normalize(text), out_type=int)

    def decode(self, ids: Sequence[int]) -> str:
        """Text for `ids` (byte pieces are reassembled into characters)."""
        ids = [int(i) for i in ids]
        bad = [i for i in ids if not 0 <= i < self.vocab_size]
        if bad:
            raise ValueError(f"ids out of range [0, {self.vocab_size}): {bad[:5]}"
                             f"{' ...' if len(bad) > 5 else ''} (strip the LM's special tokens before decoding)")
        return self._sp.decode(ids)

    def pieces(self, text: str) -> list[str]:
        """The sentencepiece pieces of `text` after normalisation, for inspection."""
        return self._sp.encode(self.normalize(text), out_type=str)

    def __repr__(self) -> str:
        return f"TextTokenizer(language={self.language!r}, vocab_size={self.vocab_size})"


def _normalized_lines(texts: Iterable[str], language: str) -> Iterator[str]:
    for text in texts:
        if not isinstance(text, str):
            raise TypeError(f"training texts must be str, got {type(text).__name__}")
        line = normalize_text(text, language)
        if _speakable(line):  # blank and unspeakable lines teach nothing
            yield line


def train_text_tokenizer(texts: Iterable[str], model_prefix: str | Path, vocab_size: int = 2048,
                         language: str = "en") -> TextTokenizer:
    """Train a deterministic sentencepiece BPE on normalised `texts`; writes `<model_prefix>.model`.

    Byte fallback covers any character, and `vocab_size` is a soft limit: a small corpus yields fewer pieces
    rather than an error. Too small a `vocab_size` (below 256 bytes + 1 + the corpus's characters) raises ValueError.
    """
    if isinstance(texts, str):
        raise TypeError("texts must be an iterable of sentences, not one str")
    if not isinstance(vocab_size, int) or vocab_size <= _BYTE_PIECES + 1:
        raise ValueError(f"vocab_size must exceed {_BYTE_PIECES + 1} (256 byte pieces + unk), got {vocab_size}")
    get_normalizer(language)
    lines = list(_normalized_lines(texts, language))
    if not lines:
        raise ValueError("no speakable text to train the tokenizer on")
    chars = {char for line in lines for char in line if not char.isspace()}
    minimum = _BYTE_PIECES + 1 + len(chars) + 1  # + the word-boundary piece
    if vocab_size < minimum:
        raise ValueError(f"vocab_size={vocab_size} is too small for this corpus: byte fallback needs 256 byte "
                         f"pieces + unk, and every one of its {len(chars)} distinct characters needs a piece; "
                         f"use vocab_size >= {minimum}")
    model_prefix = Path(model_prefix)
    model_prefix.parent.mkdir(parents=True, exist_ok=True)
    options = dict(
        model_prefix=str(model_prefix), model_type="bpe", vocab_size=vocab_size, hard_vocab_limit=False,
        byte_fallback=True, character_coverage=1.0, normalization_rule_name="identity",  # we normalised already
        unk_id=0, pad_id=-1, bos_id=-1, eos_id=-1, num_threads=1, shuffle_input_sentence=False,
        input_sentence_size=0, max_sentence_length=1 << 16, split_digits=False, minloglevel=2,
        train_extremely_large_corpus=False)
    with _TRAIN_LOCK:
        spm.set_random_generator_seed(_SEED)
        try:
            spm.SentencePieceTrainer.train(sentence_iterator=iter(lines), **options)
        except RuntimeError as error:  # sentencepiece reports bad settings as RuntimeError("INTERNAL: ...")
            raise ValueError(f"sentencepiece could not train on {len(lines)} lines with vocab_size={vocab_size}: "
                             f"{error}") from error
    model_path = Path(f"{model_prefix}.model")
    _forget_training_path(model_path)
    return TextTokenizer.from_file(model_path, language)


def _forget_training_path(model_path: Path) -> None:
    """Clear the local prefix sentencepiece records in the model, so the same corpus gives the same bytes anywhere."""
    try:
        from sentencepiece import sentencepiece_model_pb2
    except ImportError:  # needs protobuf, which sentencepiece does not require; the model works either way
        return
    proto = sentencepiece_model_pb2.ModelProto()
    proto.ParseFromString(model_path.read_bytes())
    proto.trainer_spec.model_prefix = ""
    model_path.write_bytes(proto.SerializeToString())


class HFTextTokenizer:
    """The tokenizer of a pretrained text LLM folder (`tokenizer.json` ...), behind the `TextTokenizer` interface,
    for an LM started from that LLM (`SemanticLM.from_text_llm`): its text ids keep their pretrained meaning."""

    def __init__(self, folder: str | Path, language: str = "en"):
        from transformers import AutoTokenizer

        self.folder, self.language = Path(folder), language
        self._tokenizer = AutoTokenizer.from_pretrained(str(folder))

    @property
    def vocab_size(self) -> int:
        return len(self._tokenizer)

    def normalize(self, text: str) -> str:
        if not isinstance(text, str):
            raise TypeError(f"text must be a str, got {type(text).__name__}")
        return check_speakable(text, normalize_text(text, self.language))

    def encode(self, text: str) -> list[int]:
        return list(self._tokenizer.encode(self.normalize(text), add_special_tokens=False))

    def decode(self, ids: Sequence[int]) -> str:
        return self._tokenizer.decode(list(ids))

    def save(self, folder: str | Path) -> Path:
        folder = Path(folder)
        self._tokenizer.save_pretrained(str(folder / "text_tokenizer_hf"))
        (folder / CONFIG_FILE).write_text(json.dumps({"language": self.language, "kind": "hf",
                                                      "vocab_size": self.vocab_size}) + "\n")
        return folder


def load_text_tokenizer(folder: str | Path) -> TextTokenizer | HFTextTokenizer:
    """The text tokenizer saved in an LM folder: our sentencepiece one, or a pretrained LLM's."""
    folder = Path(folder)
    if (folder / MODEL_FILE).is_file():
        return TextTokenizer.from_pretrained(folder)
    if (folder / "text_tokenizer_hf").is_dir():
        language = json.loads((folder / CONFIG_FILE).read_text()).get("language", "en")
        return HFTextTokenizer(folder / "text_tokenizer_hf", language)
    if (folder / "tokenizer.json").is_file() or (folder / "tokenizer_config.json").is_file():
        return HFTextTokenizer(folder)
    raise FileNotFoundError(f"no text tokenizer in {folder}: expected {MODEL_FILE} (ours), text_tokenizer_hf/, "
                            "or a Hugging Face tokenizer.json")
