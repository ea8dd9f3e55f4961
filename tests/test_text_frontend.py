"""The LM text front end (lm/normalize.py, lm/text.py): normalisation to words and the sentencepiece tokenizer."""

from __future__ import annotations

import itertools
import json
import pickle
import random
import subprocess
import sys
import unicodedata

import pytest

from lm.normalize import number_to_words, ordinal_to_words, year_to_words
from lm.text import (
    TextError,
    TextTokenizer,
    basic_normalize,
    get_normalizer,
    normalize_text,
    register_normalizer,
    train_text_tokenizer,
)

_NAMES = ["Mr. Smith", "Dr. Jones", "Anna", "the team", "St. John", "Mrs. Lee", "our neighbour"]
_TEMPLATES = [
    "{name} paid ${dollars}.{cents:02d} for {count} apples on Jan. {day}, {year}.",
    "Is it {temp}°C in the city at {hour}:{minute:02d} pm?",
    "{name} ran {count} km; that's {pct}% more than in {year}!",
    "Meet me at {hour} a.m. on {month}/{day}/{year}, e.g. near No. {count}.",
    "The {nth} floor holds {big} books, etc. Really?",
    "Why would {name} say that, vs. the other plan?",
]


def _corpus(n: int = 240) -> list[str]:
    """A few hundred short, varied sentences from templates; seeded so every run trains on the same text."""
    rng = random.Random(0)
    lines = []
    for i in range(n):
        values = dict(name=rng.choice(_NAMES), dollars=rng.randrange(1, 500), cents=rng.randrange(100),
                      count=rng.randrange(2, 90), day=rng.randrange(1, 29), month=rng.randrange(1, 13),
                      year=rng.randrange(1950, 2030), temp=rng.randrange(-10, 40), hour=rng.randrange(1, 13),
                      minute=rng.randrange(60), pct=rng.randrange(1, 100), nth=f"{rng.randrange(1, 30)}th",
                      big=f"{rng.randrange(1, 999):,}{rng.randrange(1000):03d}")
        lines.append(_TEMPLATES[i % len(_TEMPLATES)].format(**values))
    return lines


@pytest.fixture(scope="module")
def tokenizer(tmp_path_factory) -> TextTokenizer:
    return train_text_tokenizer(_corpus(), tmp_path_factory.mktemp("tok") / "en", vocab_size=350)


# ---- normalisation ------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("written, spoken", [
    ("1,234", "one thousand two hundred thirty-four"),
    ("-5", "minus five"),
    ("3.14", "three point one four"),
    ("21st", "twenty-first"),
    ("1990", "nineteen ninety"),
    ("2005", "two thousand five"),
    ("in 2024", "in twenty twenty-four"),
    ("$5.20", "five dollars and twenty cents"),
    ("£1.01", "one pound and one penny"),
    ("€3", "three euros"),
    ("¥1000", "one thousand yen"),
    ("$0.99", "ninety-nine cents"),
    ("$1.5 million", "one point five million dollars"),
    ("50%", "fifty percent"),
    ("2024-01-15", "January fifteenth, twenty twenty-four"),
    ("01/15/2024", "January fifteenth, twenty twenty-four"),
    ("Jan. 15, 2024", "January fifteenth, twenty twenty-four"),
    ("15 January 2024", "the fifteenth of January, twenty twenty-four"),
    ("3:30 pm", "three thirty p m"),
    ("at 7 a.m. Then", "at seven a m. Then"),
    ("15:05", "fifteen oh five"),
    ("Mr. Smith met Dr. Jones on Elm Dr. today.", "mister Smith met doctor Jones on Elm drive today."),
    ("St. Louis is on Main St.", "saint Louis is on Main street."),
    ("cats vs. dogs, etc. Then", "cats versus dogs, et cetera. Then"),
    ("e.g. this, i.e. that", "for example, this, that is, that"),
    ("No. 5", "number five"),
    ("5 km and 1 kg", "five kilometers and one kilogram"),
    ("-3°C", "minus three degrees Celsius"),
    ("AT&T + 1 = 2 # @", "AT and T plus one equals two hash at"),
    ("1,000,000,000,000", "one trillion"),
    ("007", "zero zero seven"),
    ("the 1990s", "the nineteen nineties"),
    ("3½ cups", "three and one half cups"),
    ("pages 10-20", "pages ten to twenty"),
])
def test_numbers_dates_currency_and_abbreviations_become_words(written, spoken):
    assert normalize_text(written) == spoken


def test_years_are_read_as_years_only_where_they_read_as_years():
    assert normalize_text("2024 was a long year.") == "twenty twenty-four was a long year."
    assert normalize_text("We walked 1500 miles.") == "We walked one thousand five hundred miles."
    assert normalize_text("about 2024 people") == "about two thousand twenty-four people"
    assert normalize_text("3000") == "three thousand"


def test_number_words_reach_past_trillions_and_fall_back_to_digits():
    assert number_to_words(0) == "zero"
    assert number_to_words(7_000_000_000_001) == "seven trillion one"
    assert number_to_words(2 * 10**33) == "two decillion"
    assert number_to_words(10**36) == "one " + " ".join(["zero"] * 36)
    assert [ordinal_to_words(n) for n in (1, 2, 3, 12, 20, 101)] == \
        ["first", "second", "third", "twelfth", "twentieth", "one hundred first"]
    assert [year_to_words(y) for y in (1905, 1900, 2000, 2010)] == \
        ["nineteen oh five", "nineteen hundred", "two thousand", "twenty ten"]


def test_prosody_punctuation_is_kept_and_spaces_are_tidied():
    assert normalize_text("Wait ,really?!  Yes; no: maybe.") == "Wait, really?! Yes; no: maybe."
    assert normalize_text("He said “hi” — then left…") == 'He said "hi", then left...'


def test_basic_normalizer_is_conservative():
    assert basic_normalize("ＡＢＣ  ‘quoted’ – ﬁne\t\n１２") == "ABC 'quoted' - fine 12"
    assert normalize_text("$5 at 3:30", "basic") == "$5 at 3:30"  # no English readings


def test_control_characters_are_removed():
    assert normalize_text("a\x00b\x07c\u200bd\ufeff e\tf\r\ng") == "abcd e f g"
    assert normalize_text("\ud800ok") == "ok"  # a lone surrogate cannot even be encoded as UTF-8


def test_unknown_characters_never_crash_and_round_trip_through_bytes(tokenizer):
    for text in ["Hello 😀 world", "你好，世界 and 3 apples", "Привет, мир!", "مرحبا 42", "नमस्ते",
                 "👨\u200d👩\u200d👧 family", "Zoë naïve café", "ᚠᛇᚻ 𝄞 music"]:
        normalized = tokenizer.normalize(text)
        ids = tokenizer.encode(text)
        assert all(0 <= i < tokenizer.vocab_size for i in ids) and 0 not in ids  # byte fallback, never unk
        assert tokenizer.decode(ids) == normalized
    assert "😀" in tokenizer.normalize("Hello 😀") and "你好" in tokenizer.normalize("你好")  # kept, not dropped

    rng = random.Random(1)
    for _ in range(300):  # random code points from every plane, mixed with the characters rules look for
        text = "".join(chr(rng.randrange(0x110000)) if rng.random() < 0.4 else rng.choice("0123456789 .,$%:/-aDrSt")
                       for _ in range(rng.randrange(1, 30)))
        out = normalize_text(text)
        out.encode("utf-8")
        assert not any(unicodedata.category(c) in ("Cc", "Cs") for c in out)


def test_empty_or_unspeakable_text_raises_text_error(tokenizer):
    for empty in ["", "   ", "\n\t "]:
        with pytest.raises(TextError, match="text is empty"):
            tokenizer.encode(empty)
    for unspeakable in ["!!!", "...?", "\x00\x07\x1b", "😀🎉", "—", "\u0301"]:
        with pytest.raises(TextError, match="nothing speakable"):
            tokenizer.encode(unspeakable)
    assert issubclass(TextError, ValueError)
    for not_text in [None, 42, b"bytes", ["a list"]]:
        with pytest.raises(TypeError):
            tokenizer.encode(not_text)
    assert len(tokenizer.encode("Hello there. " * 2000)) > 2000  # long text is the LM's problem, not ours


def test_tokenizer_training_is_deterministic(tmp_path):
    a = train_text_tokenizer(_corpus(), tmp_path / "tok", vocab_size=350)
    first = (tmp_path / "tok.model").read_bytes()
    b = train_text_tokenizer(_corpus(), tmp_path / "tok", vocab_size=350)
    assert (tmp_path / "tok.model").read_bytes() == first
    assert a.vocab_size == b.vocab_size == 350
    sentence = "Dr. Jones paid $12.50 on Jan. 3, 1999 at 4:15 pm."
    assert a.encode(sentence) == b.encode(sentence)


def test_tokenizer_save_and_load_round_trip(tokenizer, tmp_path):
    folder = tokenizer.save(tmp_path / "saved")
    assert json.loads((folder / "text_tokenizer.json").read_text())["language"] == "en"
    for loaded in (TextTokenizer.from_pretrained(folder), TextTokenizer.from_file(folder / "text_tokenizer.model"),
                   pickle.loads(pickle.dumps(tokenizer))):
        assert loaded.language == "en" and loaded.vocab_size == tokenizer.vocab_size
        for sentence in _corpus(12):
            assert loaded.encode(sentence) == tokenizer.encode(sentence)
    with pytest.raises(FileNotFoundError):
        TextTokenizer.from_pretrained(tmp_path / "missing")
    with pytest.raises(ValueError, match="out of range"):
        tokenizer.decode([tokenizer.vocab_size])


def test_small_corpora_shrink_the_vocabulary_instead_of_failing(tmp_path):
    small = train_text_tokenizer(["A tiny corpus.", "Just two lines."], tmp_path / "small", vocab_size=2048)
    assert 256 < small.vocab_size < 2048 and (tmp_path / "small.model").is_file()
    assert small.decode(small.encode("Anything at all, 東京 too.")) == "Anything at all, 東京 too."
    with pytest.raises(ValueError, match="use vocab_size >="):
        train_text_tokenizer(_corpus(), tmp_path / "too_small", vocab_size=270)
    with pytest.raises(ValueError, match="no speakable text"):
        train_text_tokenizer(["", "!!!"], tmp_path / "empty", vocab_size=300)


def test_normalizer_registry_is_pluggable(tokenizer, tmp_path):
    model = tokenizer.save(tmp_path) / "text_tokenizer.model"
    with pytest.raises(ValueError, match="registered: .*basic.*en"):
        normalize_text("hallo", "xx")
    with pytest.raises(ValueError, match="registered"):
        TextTokenizer.from_file(model, language="xx")
    register_normalizer("xx", lambda text: basic_normalize(text).upper())
    try:
        assert normalize_text("hallo  welt", "xx") == "HALLO WELT"
        assert get_normalizer("XX-yy") is get_normalizer("xx")  # a regional tag falls back to its language
        assert TextTokenizer.from_file(model, language="xx").normalize("hallo  welt 5") == "HALLO WELT 5"
    finally:
        from lm import normalize
        normalize._REGISTRY.pop("xx")
    assert get_normalizer("en-US") is get_normalizer("en")
    with pytest.raises(TypeError):
        register_normalizer("yy", "not callable")


def test_lm_front_end_never_imports_codec_flow_or_tts():
    code = ("import sys, lm.text, lm.normalize; "
            "print(sorted({m.split('.')[0] for m in sys.modules} & {'codec', 'flow', 'tts'}))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]"


def test_corpus_sentences_all_normalise_to_speakable_words():
    for sentence in itertools.islice(_corpus(), 60):
        spoken = normalize_text(sentence)
        assert not any(ch.isdigit() for ch in spoken) and not {"$", "%", "°"} & set(spoken), (sentence, spoken)
