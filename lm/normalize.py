"""Text normalisation for the LM front end: a per-language registry, a basic normaliser and an English one.

The English normaliser rewrites written forms (numbers, dates, times, currency, units, abbreviations, symbols)
as the words a reader would say, so that the text tokenizer and the LM only ever see speakable text.
"""

from __future__ import annotations

import re
import unicodedata
from collections.abc import Callable

Normalizer = Callable[[str], str]

# ---- number words ---------------------------------------------------------------------------------------------
_ONES = ("zero one two three four five six seven eight nine ten eleven twelve thirteen fourteen fifteen sixteen "
         "seventeen eighteen nineteen").split()
_TENS = "_ _ twenty thirty forty fifty sixty seventy eighty ninety".split()
_SCALES = ("_ thousand million billion trillion quadrillion quintillion sextillion septillion octillion nonillion "
           "decillion").split()
_ORDINAL_EXCEPTIONS = {"one": "first", "two": "second", "three": "third", "five": "fifth", "eight": "eighth",
                       "nine": "ninth", "twelve": "twelfth"}
_MAX_CARDINAL = 10 ** (3 * len(_SCALES)) - 1  # beyond decillions, digit-by-digit reads better than any name


def _below_thousand(n: int) -> str:
    words = []
    if n >= 100:
        words.append(f"{_ONES[n // 100]} hundred")
        n %= 100
    if n >= 20:
        words.append(_TENS[n // 10] + (f"-{_ONES[n % 10]}" if n % 10 else ""))
    elif n or not words:
        words.append(_ONES[n])
    return " ".join(words)


def number_to_words(n: int) -> str:
    """Cardinal in American English: 1234 -> "one thousand two hundred thirty-four", -5 -> "minus five"."""
    if n < 0:
        return "minus " + number_to_words(-n)
    if n > _MAX_CARDINAL:
        return digits_to_words(str(n))
    if n < 1000:
        return _below_thousand(n)
    groups, scale = [], 0
    while n:
        n, group = divmod(n, 1000)
        if group:
            groups.append(_below_thousand(group) + (f" {_SCALES[scale]}" if scale else ""))
        scale += 1
    return " ".join(reversed(groups))


def ordinal_to_words(n: int) -> str:
    """Ordinal: 21 -> "twenty-first", 100 -> "one hundredth"."""
    words = number_to_words(n)
    head, sep, last = words.rpartition("-") if "-" in words.split(" ")[-1] else words.rpartition(" ")
    if last in _ORDINAL_EXCEPTIONS:
        last = _ORDINAL_EXCEPTIONS[last]
    elif last.endswith("y"):
        last = last[:-1] + "ieth"
    else:
        last += "th"
    return head + sep + last


def year_to_words(n: int) -> str:
    """A year as spoken: 1990 -> "nineteen ninety", 2005 -> "two thousand five", 1905 -> "nineteen oh five"."""
    if not 1000 <= n <= 9999 or (2000 <= n <= 2009) or n % 1000 == 0:
        return number_to_words(n)
    high, low = divmod(n, 100)
    if low == 0:
        return f"{number_to_words(high)} hundred"
    return f"{number_to_words(high)} {'oh ' if low < 10 else ''}{number_to_words(low)}"


def digits_to_words(digits: str) -> str:
    """Digit by digit: "007" -> "zero zero seven"."""
    return " ".join(_ONES[int(d)] for d in digits if d.isdecimal())


def _plural(words: str) -> str:
    """Plural of a spoken number, for decades and fractions: "ninety" -> "nineties", "six" -> "sixes"."""
    if words.endswith("y"):
        return words[:-1] + "ies"
    return words + ("es" if words.endswith("x") else "s")


# ---- registry ---------------------------------------------------------------------------------------------------
_REGISTRY: dict[str, Normalizer] = {}


def register_normalizer(language: str, fn: Normalizer) -> None:
    """Register (or replace) the normaliser used for `language` (case-insensitive, e.g. "en", "de")."""
    if not isinstance(language, str) or not language.strip():
        raise ValueError(f"language must be a non-empty string, got {language!r}")
    if not callable(fn):
        raise TypeError(f"normaliser for {language!r} must be callable, got {type(fn).__name__}")
    _REGISTRY[language.strip().lower()] = fn


def get_normalizer(language: str) -> Normalizer:
    """The normaliser for `language`; "en-US" falls back to "en". Unknown languages raise ValueError."""
    if not isinstance(language, str):
        raise TypeError(f"language must be a str, got {type(language).__name__}")
    key = language.strip().lower()
    for candidate in (key, re.split(r"[-_]", key)[0]):
        if candidate in _REGISTRY:
            return _REGISTRY[candidate]
    raise ValueError(f"no text normaliser registered for language {language!r}; registered: "
                     f"{', '.join(sorted(_REGISTRY))} (add one with register_normalizer, or use 'basic')")


def normalize_text(text: str, language: str = "en") -> str:
    """Normalise `text` with the registered normaliser for `language`. May return "" (nothing left)."""
    if not isinstance(text, str):
        raise TypeError(f"text must be a str, got {type(text).__name__}")
    return get_normalizer(language)(text)


# ---- basic normaliser (any language) ------------------------------------------------------------------------------
_KEEP_FORMAT = {"\u200c", "\u200d"}  # ZWNJ/ZWJ change the spelling of Persian and Indic words
_QUOTES = str.maketrans({c: "'" for c in "\u2018\u2019\u201a\u201b\u2032\u00b4`"} |
                        {c: '"' for c in "\u201c\u201d\u201e\u201f\u2033\u00ab\u00bb"})
_DASHES = str.maketrans({c: "-" for c in "\u2010\u2011\u2012\u2013\u2212\ufe63\uff0d"} |
                        {c: " - " for c in "\u2014\u2015"})  # an em dash is a break, never a compound


def strip_control(text: str) -> str:
    """Drop control/format/surrogate characters; line breaks and tabs become spaces."""
    out = []
    for char in text:
        category = unicodedata.category(char)
        if category in ("Zl", "Zp") or char in "\t\n\r\v\f\x85":
            out.append(" ")
        elif category in ("Cc", "Cs") or (category == "Cf" and char not in _KEEP_FORMAT):
            continue
        else:
            out.append(char)
    return "".join(out)


def basic_normalize(text: str) -> str:
    """Conservative, language-neutral clean-up: controls removed, NFKC, quotes and dashes unified, spaces collapsed."""
    text = unicodedata.normalize("NFKC", strip_control(text))
    text = text.translate(_QUOTES).translate(_DASHES)
    return " ".join(text.split())


register_normalizer("basic", basic_normalize)

# ---- English ------------------------------------------------------------------------------------------------------
_NUM = r"(?:\d{1,3}(?:,\d{3})+(?:\.\d+)?|\d+(?:\.\d+)?)"
_START = r"(?<![\w.])"  # a number starts here only if not glued to a word or inside another number
_MONTHS = "January February March April May June July August September October November December".split()
_MONTH_ALT = "|".join(_MONTHS + "Jan Feb Mar Apr Jun Jul Aug Sept Sep Oct Nov Dec".split())
_MONTH = rf"(?:{_MONTH_ALT})\b\.?"
_ORD_SUFFIX = r"(?:st|nd|rd|th)?"


_SENTENCE_END = re.compile(r"\s*$|\s+[A-Z]")
_NEXT_WORD = re.compile(r"\s+([a-z]+)")
_NAME_NEXT = re.compile(r"\s+[A-Z]")


def _before(m: re.Match, chars: int = 40) -> str:
    """A little context before a match; bounded so that long texts stay linear."""
    return m.string[max(0, m.start() - chars): m.start()]


def _month_number(name: str) -> int:
    prefix = name.rstrip(".")[:3].lower()
    return next(i for i, month in enumerate(_MONTHS, 1) if month[:3].lower() == prefix)


def say_number(number: str) -> str:
    """Words for a written number with optional sign, thousands commas and decimals: "-1,234.5"."""
    sign = {"-": "minus ", "+": "plus "}.get(number[:1], "")
    whole, _, frac = number.lstrip("+-").replace(",", "").partition(".")
    if len(whole) > 1 and whole.startswith("0"):  # "007" is read digit by digit, not as seven
        words = digits_to_words(whole)
    else:
        words = number_to_words(int(whole)) if whole else ""
    if frac:
        words = f"{words} point {digits_to_words(frac)}".strip()
    return sign + words


def _year_or_short(year: str) -> str:
    value = int(year)
    if len(year) == 2:  # "01/15/24": the century is implied, assume the nearer one
        value += 2000 if value < 50 else 1900
    return year_to_words(value)


def _date(month: int, day: int, year: str | None, day_first: bool = False, with_the: bool = True) -> str | None:
    if not (1 <= month <= 12 and 1 <= day <= 31):
        return None
    name, nth = _MONTHS[month - 1], ordinal_to_words(day)
    words = (f"{'the ' if with_the else ''}{nth} of {name}") if day_first else f"{name} {nth}"
    return f"{words}, {_year_or_short(year)}" if year else words


def _iso_date(m: re.Match) -> str:
    return _date(int(m[2]), int(m[3]), m[1]) or m[0]


def _numeric_date(m: re.Match) -> str:
    first, second = int(m[1]), int(m[3])
    day_first = m[2] == "." or (first > 12 and second <= 12)  # "15.01.2024" and "15/01/2024" are day-first
    month, day = (second, first) if day_first else (first, second)
    return _date(month, day, m[4], day_first=day_first) or m[0]


def _month_first_date(m: re.Match) -> str:
    return _date(_month_number(m[1]), int(m[2]), m[3]) or m[0]


def _day_first_date(m: re.Match) -> str:
    after_the = _before(m).rstrip().lower().endswith("the")
    return _date(_month_number(m[2]), int(m[1]), m[3], day_first=True, with_the=not after_the) or m[0]


def _keep_final_period(m: re.Match) -> str:
    """An abbreviation's period that also ends the sentence must survive, for prosody."""
    return "." if m[0].endswith(".") and _SENTENCE_END.match(m.string, m.end()) else ""


def _time(m: re.Match) -> str:
    hour, minute, second = int(m[1]), int(m[2] or 0), int(m[3] or 0)
    half = m[4].lower() if m[4] else None
    if hour > 23 or minute > 59 or second > 59 or (half and not 1 <= hour <= 12):
        return m[0]
    spoken = number_to_words(hour)
    if minute:
        spoken += f" oh {_ONES[minute]}" if minute < 10 else f" {number_to_words(minute)}"
    elif not half:
        spoken = "midnight" if hour == 0 else f"{spoken} o'clock" if hour <= 12 else f"{spoken} hundred"
    if second:
        spoken += f" and {number_to_words(second)} second{'s' if second > 1 else ''}"
    return spoken + (f" {half} m" + _keep_final_period(m) if half else "")


_CURRENCIES = {"$": ("dollar", "dollars", "cent", "cents"), "£": ("pound", "pounds", "penny", "pence"),
               "€": ("euro", "euros", "cent", "cents"), "¥": ("yen", "yen", None, None),
               "₹": ("rupee", "rupees", "paisa", "paise")}
_SCALE_SUFFIX = {"k": "thousand", "m": "million", "mn": "million", "b": "billion", "bn": "billion", "t": "trillion",
                 "tn": "trillion"}


def _money(sign: str, symbol: str, number: str, scale: str | None) -> str:
    one, many, sub_one, sub_many = _CURRENCIES[symbol]
    minus = "minus " if sign == "-" else ""
    if scale:
        scale = _SCALE_SUFFIX.get(scale.lower(), scale.lower())
        return f"{minus}{say_number(number)} {scale} {many}"
    whole, _, frac = number.replace(",", "").partition(".")
    if sub_one is None or len(frac) > 2:
        return f"{minus}{say_number(number)} {one if number == '1' else many}"
    units, cents = int(whole or 0), int(frac.ljust(2, "0")) if frac else 0
    parts = []
    if units or not cents:
        parts.append(f"{number_to_words(units)} {one if units == 1 else many}")
    if cents:
        parts.append(f"{number_to_words(cents)} {sub_one if cents == 1 else sub_many}")
    return minus + " and ".join(parts)


_UNITS = {"%": ("percent", "percent"), "°": ("degree", "degrees"), "°C": ("degree Celsius", "degrees Celsius"),
          "°F": ("degree Fahrenheit", "degrees Fahrenheit"), "km": ("kilometer", "kilometers"),
          "cm": ("centimeter", "centimeters"), "mm": ("millimeter", "millimeters"), "kg": ("kilogram", "kilograms"),
          "g": ("gram", "grams"), "mg": ("milligram", "milligrams"), "lb": ("pound", "pounds"),
          "lbs": ("pound", "pounds"), "oz": ("ounce", "ounces"), "ml": ("milliliter", "milliliters"),
          "mL": ("milliliter", "milliliters"), "ft": ("foot", "feet"), "mph": ("mile per hour", "miles per hour"),
          "km/h": ("kilometer per hour", "kilometers per hour"), "kph": ("kilometer per hour", "kilometers per hour"),
          "Hz": ("hertz", "hertz"), "kHz": ("kilohertz", "kilohertz"), "MHz": ("megahertz", "megahertz"),
          "GHz": ("gigahertz", "gigahertz"), "KB": ("kilobyte", "kilobytes"), "kB": ("kilobyte", "kilobytes"),
          "MB": ("megabyte", "megabytes"), "GB": ("gigabyte", "gigabytes"), "TB": ("terabyte", "terabytes"),
          "ms": ("millisecond", "milliseconds"), "sec": ("second", "seconds"), "min": ("minute", "minutes"),
          "hr": ("hour", "hours"), "hrs": ("hour", "hours"), "kW": ("kilowatt", "kilowatts"),
          "kWh": ("kilowatt hour", "kilowatt hours"), "mAh": ("milliamp hour", "milliamp hours")}
_UNIT_ALT = "|".join(re.escape(u) for u in sorted(_UNITS, key=len, reverse=True))


def _unit(m: re.Match) -> str:
    one, many = _UNITS[m[3]]
    return f"{say_number(m[1] + m[2])} {one if m[2] == '1' else many}"


def _fraction(m: re.Match) -> str:
    whole = say_number(m[1].strip()) if m[1] else ""
    top, bottom = int(m[2]), int(m[3])
    if not 0 < top < bottom <= 10:  # "24/7", "9/11": said as two numbers
        return f"{whole} {say_number(m[2])} {say_number(m[3])}".lstrip()
    name = {2: "half", 4: "quarter"}.get(bottom) or ordinal_to_words(bottom)
    name = ("halves" if bottom == 2 else name + "s") if top > 1 else name
    return f"{whole + ' and ' if whole else ''}{number_to_words(top)} {name}"


def _plural_number(m: re.Match) -> str:
    """Decades and round plurals: "1990s", "'80s", "1000s" -> "nineteen nineties", "eighties", "thousands"."""
    n = int(m[1])
    if n in (100, 1000):
        return "hundreds" if n == 100 else "thousands"
    return _plural(year_to_words(n) if len(m[1]) == 4 else number_to_words(n))


_YEAR_CUES = set("in since by from until till to of year years circa during before after early late mid the "
                 "summer winter spring autumn fall".split()) | {m.lower() for m in _MONTHS}
_QUANTITY_CUES = set("about around over under than approximately nearly almost exactly only some just all page "
                     "pages number numbers total".split())
_NOT_PLURAL = set("was is has his its this as us yes thus always".split())


def _reads_as_year(m: re.Match) -> bool:
    """A bare 4-digit number in 1000-2099 is a year unless the context says it counts something."""
    before = re.search(r"([A-Za-z]+)\W*$", _before(m))
    previous = before[1].lower() if before else ""
    if previous in _QUANTITY_CUES:
        return False
    if previous in _YEAR_CUES:
        return True
    after = _NEXT_WORD.match(m.string, m.end())
    return not (after and after[1].endswith("s") and after[1] not in _NOT_PLURAL)  # "1500 miles" counts


def _number(m: re.Match) -> str:
    sign, number = m[1], m[2]
    if number.count(".") > 1:  # versions and addresses: "2.0.1"
        return {"-": "minus ", "+": "plus "}.get(sign, "") + " dot ".join(say_number(p) for p in number.split("."))
    if not sign and len(number) == 4 and number.isdigit() and 1000 <= int(number) <= 2099 and _reads_as_year(m):
        return year_to_words(int(number))
    return say_number(sign + number)


def _phone(m: re.Match) -> str:
    return ", ".join(digits_to_words(group) for group in re.findall(r"\d+", m[0]))


def _abbreviation(words: str, keep_period: bool = False) -> Callable[[re.Match], str]:
    return lambda m: words + (_keep_final_period(m) if keep_period else "")


def _street_or_title(title: str, street: str) -> Callable[[re.Match], str]:
    """"St. Louis" is a saint but "Main St." a street: the word before decides."""
    def replace(m: re.Match) -> str:
        after_name = re.search(r"\b[A-Z][a-z]+\s+$", _before(m)) is not None
        before_name = _NAME_NEXT.match(m.string, m.end()) is not None
        return street + _keep_final_period(m) if after_name and not before_name else title
    return replace


_S, _I = re.compile, re.IGNORECASE
_ENGLISH_RULES: list[tuple[re.Pattern, str | Callable[[re.Match], str]]] = [
    (_S(r"(?<=[a-z0-9])\.(?=(?:com|org|net|edu|gov|io|ai|co|uk|de|fr|info|dev)\b)"), " dot "),
    (_S(r"(?<![\w.])Mr\.?(?=\s+[A-Z])"), "mister"),
    (_S(r"(?<![\w.])Mrs\.?(?=\s+[A-Z])"), "missus"),
    (_S(r"(?<![\w.])Ms\.?(?=\s+[A-Z])"), "miz"),
    *((_S(rf"(?<![\w.]){short}\.(?=\s)"), long) for short, long in
      {"Prof": "professor", "Capt": "captain", "Lt": "lieutenant", "Sgt": "sergeant", "Rev": "reverend",
       "Gov": "governor", "Sen": "senator", "Mt": "mount"}.items()),
    (_S(r"(?<![\w.])Dr\.(?=\s|$)"), _street_or_title("doctor", "drive")),
    (_S(r"(?<![\w.])St\.(?=\s|$)"), _street_or_title("saint", "street")),
    (_S(r"(?<![\w.])(?:e\.g|E\.g)\.,?"), "for example,"),
    (_S(r"(?<![\w.])(?:i\.e|I\.e)\.,?"), "that is,"),
    (_S(r"(?<![\w.])vs\.?(?!\w)", _I), "versus"),
    *((_S(rf"(?<![\w.]){short}\.", flags), _abbreviation(long, keep_period=True)) for short, long, flags in
      [("etc", "et cetera", _I), ("approx", "approximately", _I), ("Jr", "junior", 0), ("Sr", "senior", 0),
       ("Inc", "incorporated", 0), ("Ltd", "limited", 0), ("Co", "company", 0), ("Ave", "avenue", 0),
       ("Blvd", "boulevard", 0), ("Rd", "road", 0), ("Dept", "department", _I)]),
    (_S(r"(?<![\w.])Nos\.\s?(?=\d)", _I), "numbers "),
    (_S(r"(?<![\w.])No\.\s?(?=\d)", _I), "number "),
    (_S(r"#\s?(?=\d)"), "number "),
    # dates and times, before numbers lose their shape
    (_S(r"(?<![\w-])(\d{4})-(\d{1,2})-(\d{1,2})(?![\w-])"), _iso_date),
    (_S(r"(?<![\w/.-])(\d{1,2})([/.-])(\d{1,2})\2(\d{4}|\d{2})(?![\w/-]|\.\d)"), _numeric_date),
    (_S(rf"({_MONTH})\s+(\d{{1,2}}){_ORD_SUFFIX}(?:,?\s+(\d{{4}}))?(?!\d|[:,.]\d)"), _month_first_date),
    (_S(rf"{_START}(\d{{1,2}}){_ORD_SUFFIX}\s+(?:of\s+)?({_MONTH})(?:,?\s+(\d{{4}})(?!\d))?"), _day_first_date),
    (_S(rf"{_START}(\d{{1,2}}):(\d{{2}})(?::(\d{{2}}))?(?:\s?([ap])\.?\s?m\b\.?)?(?![\w:]|\.\d)", _I), _time),
    (_S(rf"{_START}(\d{{1,2}})()()\s?([ap])\.?\s?m\b\.?", _I), _time),
    (_S(r"(?<![\w-])(?:\+?1[ -])?(?:\(\d{3}\)\s?|\d{3}-)?\d{3}-\d{4}(?![\w-])"), _phone),
    (_S(rf"{_START}(\d+)-(\d+)(?![\w-]|\.\d)"),
     lambda m: f"{m[1]} to {m[2]}" if int(m[1]) < int(m[2]) else m[0]),
    (_S(r"(?<=\d) - (?=\d)"), " to "),
    # money, units, ordinals, decades, fractions
    (_S(rf"(?<!\w)(-?)([$£€¥₹])\s?(-?)({_NUM})"
        r"(?:\s?(thousand|million|billion|trillion)\b|(bn|mn|tn|[kKmMbBT])\b)?"),
     lambda m: _money(m[1] or m[3], m[2], m[4], m[5] or m[6])),
    (_S(rf"{_START}(-?)({_NUM})\s?([$£€¥₹])"), lambda m: _money(m[1], m[3], m[2], None)),
    (_S(r"°\s+([CF])\b"), r"°\1"),
    (_S(rf"{_START}([-+]?)({_NUM})\s?({_UNIT_ALT})(?![\w/])"), _unit),
    (_S(rf"{_START}(\d{{1,3}}(?:,\d{{3}})+|\d+)(?:st|nd|rd|th)\b", _I),
     lambda m: ordinal_to_words(int(m[1].replace(",", "")))),
    (_S(r"(?<![\w.])'?(\d{3}0|100|[2-9]0)'?s\b"), _plural_number),  # not "5s" or "10s": those may be seconds
    (_S(r"(?<![\w.,/])(\d+\s+)?(\d+)[/\u2044](\d+)(?![\w/]|[.,]\d)"), _fraction),
    # whatever numbers are left
    (_S(r"(?<=\d)(?=[^\W\d_])|(?<=[^\W\d_])(?=\d)"), " "),
    (_S(rf"(?<![\w.])([-+]?)(\d+(?:\.\d+){{2,}}|{_NUM})(?!\w)"), _number),
    (_S(r"(?<![\w.])\.(\d+)"), lambda m: "point " + digits_to_words(m[1])),
    (_S(r"\d+"), lambda m: say_number(m[0])),
    # symbols with a reading
    (_S(r"(?<=\w)/(?=\w)"), " slash "),
    *((_S(re.escape(symbol)), f" {word} ") for symbol, word in
      {"&": "and", "@": "at", "=": "equals", "+": "plus", "#": "hash", "°": "degrees", "%": "percent", "×": "times",
       "÷": "divided by", "<": "less than", ">": "greater than"}.items()),
]
_TIDY_RULES = [
    (_S(r"\s+-\s+|^\s*-\s+"), ", "),  # a free-standing dash is a pause
    (_S(r"\s+([,.?!;:])"), r"\1"),
    (_S(r"([,;:])[\s,;:]*(?=[,;:.?!])"), ""),
    (_S(r",(?=[^\s\d\"')\]])"), ", "),
    (_S(r"\s+"), " "),
]


def english_normalize(text: str) -> str:
    """English: written forms (numbers, dates, times, money, units, abbreviations, symbols) become words."""
    text = re.sub(r"(\d)([\u00bc-\u00be\u2150-\u215e])", r"\1 \2", strip_control(text))  # 3½ -> 3 1/2, not 31/2
    text = basic_normalize(text)
    for pattern, replacement in _ENGLISH_RULES:
        text = pattern.sub(replacement, text)
    for pattern, replacement in _TIDY_RULES:
        text = pattern.sub(replacement, text)
    return text.strip().lstrip(",;: ")


register_normalizer("en", english_normalize)
