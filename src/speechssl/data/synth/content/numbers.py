"""Numbers written as words, clock times, timer durations and head counts, per language.

Numbers are never written as digits: ASR targets must be speakable text, and
number words are where languages differ most (French "vingt et une", German
"einundzwanzig", Czech case agreement after numerals), which makes them a good
test of cross-lingual transfer.
"""

from __future__ import annotations

from speechssl.data.synth.content.grammar import SlotPhrase, Token

# Grammatical gender of the counted noun: "m", "f", or None for a bare number
# ("counting form": German "eins", Spanish "uno"). For Czech, "f" means the
# feminine *accusative* ("jednu minutu"), the only inflected use in the corpus.
Gender = str | None


def _num(text: str) -> tuple[Token, ...]:
    """Tokens of a number expression: every word is NUM except the conjunctions inside it."""
    return tuple(Token(w, "CCONJ" if w in {"et", "y", "e"} else "NUM") for w in text.split())


def _w(text: str) -> tuple[Token, ...]:
    """Tokens written ``word/TAG word/TAG`` (small inline helper for glue words)."""
    return tuple(Token(*item.split("/")) for item in text.split())


# ---------------------------------------------------------------- cardinals 0..59

_EN = ("zero one two three four five six seven eight nine ten eleven twelve thirteen fourteen fifteen "
       "sixteen seventeen eighteen nineteen").split()
_EN_TENS = {20: "twenty", 30: "thirty", 40: "forty", 50: "fifty"}

_FR = ("zéro un deux trois quatre cinq six sept huit neuf dix onze douze treize quatorze quinze seize "
       "dix-sept dix-huit dix-neuf").split()
_FR_TENS = {20: "vingt", 30: "trente", 40: "quarante", 50: "cinquante"}

_DE = ("null eins zwei drei vier fünf sechs sieben acht neun zehn elf zwölf dreizehn vierzehn fünfzehn "
       "sechzehn siebzehn achtzehn neunzehn").split()
_DE_TENS = {20: "zwanzig", 30: "dreißig", 40: "vierzig", 50: "fünfzig"}

_ES = ("cero uno dos tres cuatro cinco seis siete ocho nueve diez once doce trece catorce quince dieciséis "
       "diecisiete dieciocho diecinueve veinte veintiuno veintidós veintitrés veinticuatro veinticinco "
       "veintiséis veintisiete veintiocho veintinueve").split()
_ES_TENS = {30: "treinta", 40: "cuarenta", 50: "cincuenta"}

_IT = ("zero uno due tre quattro cinque sei sette otto nove dieci undici dodici tredici quattordici "
       "quindici sedici diciassette diciotto diciannove").split()
_IT_TENS = {20: "venti", 30: "trenta", 40: "quaranta", 50: "cinquanta"}

_NL = ("nul één twee drie vier vijf zes zeven acht negen tien elf twaalf dertien veertien vijftien "
       "zestien zeventien achttien negentien").split()
_NL_TENS = {20: "twintig", 30: "dertig", 40: "veertig", 50: "vijftig"}

# European Portuguese spellings (espeak's "pt" voice is European Portuguese).
_PT = ("zero um dois três quatro cinco seis sete oito nove dez onze doze treze catorze quinze dezasseis "
       "dezassete dezoito dezanove").split()
_PT_TENS = {20: "vinte", 30: "trinta", 40: "quarenta", 50: "cinquenta"}

_CS = ("nula jedna dva tři čtyři pět šest sedm osm devět deset jedenáct dvanáct třináct čtrnáct patnáct "
       "šestnáct sedmnáct osmnáct devatenáct").split()
_CS_TENS = {20: "dvacet", 30: "třicet", 40: "čtyřicet", 50: "padesát"}


def cardinal(lang: str, n: int, gender: Gender = None) -> str:
    """``n`` (0..59) in words, agreeing with a counted noun of ``gender`` where the language needs it."""
    if not 0 <= n < 60:
        raise ValueError(f"cardinal() covers 0..59, got {n}")
    tens, unit = divmod(n, 10)
    tens *= 10
    if lang == "en":
        return _EN[n] if n < 20 else _EN_TENS[tens] + (f" {_EN[unit]}" if unit else "")
    if lang == "fr":
        one = "une" if gender == "f" else "un"
        if n == 1:
            return one
        if n < 20:
            return _FR[n]
        if unit == 0:
            return _FR_TENS[tens]
        return f"{_FR_TENS[tens]} et {one}" if unit == 1 else f"{_FR_TENS[tens]}-{_FR[unit]}"
    if lang == "de":
        if n == 1:
            return {"f": "eine", "m": "ein"}.get(gender or "", "eins")
        if n < 20:
            return _DE[n]
        if unit == 0:
            return _DE_TENS[tens]
        stem = "ein" if unit == 1 else _DE[unit]
        return f"{stem}und{_DE_TENS[tens]}"
    if lang == "es":
        one = {"f": "una", "m": "un"}.get(gender or "", "uno")
        if n == 1:
            return one
        if n == 21:
            return {"f": "veintiuna", "m": "veintiún"}.get(gender or "", "veintiuno")
        if n < 30:
            return _ES[n]
        if unit == 0:
            return _ES_TENS[tens]
        return f"{_ES_TENS[tens]} y {one if unit == 1 else _ES[unit]}"
    if lang == "it":
        if n == 1:
            return {"f": "una", "m": "un"}.get(gender or "", "uno")
        if n < 20:
            return _IT[n]
        if unit == 0:
            return _IT_TENS[tens]
        # The tens drop their final vowel before "uno" and "otto" (ventuno, trentotto).
        stem = _IT_TENS[tens][:-1] if unit in (1, 8) else _IT_TENS[tens]
        return stem + ("tré" if unit == 3 else _IT[unit])
    if lang == "nl":
        if n < 20:
            return _NL[n]
        if unit == 0:
            return _NL_TENS[tens]
        stem = "een" if unit == 1 else _NL[unit]
        # A diaeresis marks the syllable break after a word ending in -e (tweeëntwintig).
        link = "ën" if stem.endswith("e") else "en"
        return f"{stem}{link}{_NL_TENS[tens]}"
    if lang == "pt":
        word = {1: "uma", 2: "duas"}.get(unit if n >= 20 else n) if gender == "f" else None
        if n < 20:
            return word if (word and n in (1, 2)) else _PT[n]
        if unit == 0:
            return _PT_TENS[tens]
        return f"{_PT_TENS[tens]} e {word or _PT[unit]}"
    if lang == "cs":
        feminine = {1: "jednu", 2: "dvě"} if gender == "f" else {}
        if n < 20:
            return feminine.get(n, _CS[n])
        if unit == 0:
            return _CS_TENS[tens]
        return f"{_CS_TENS[tens]} {feminine.get(unit, _CS[unit])}"
    raise ValueError(f"no number words for language {lang!r}")


# ---------------------------------------------------------------- clock times


def _next(hour: int) -> int:
    return hour % 12 + 1


def clock_time(lang: str, hour: int, minute: int) -> SlotPhrase:
    """"at <time>" for a 12-hour clock time; quarter and half hours use the idiomatic form."""
    if not (1 <= hour <= 12 and 0 <= minute < 60):
        raise ValueError(f"bad clock time {hour}:{minute:02d}")
    if lang == "en":
        h, h1 = _num(cardinal("en", hour)), _num(cardinal("en", _next(hour)))
        value = {
            0: h + _w("o'clock/ADV"),
            15: _w("quarter/NOUN past/ADP") + h,
            30: _w("half/NOUN past/ADP") + h,
            45: _w("quarter/NOUN to/ADP") + h1,
        }.get(minute) or h + (_w("oh/NUM") if minute < 10 else ()) + _num(cardinal("en", minute))
        return SlotPhrase(_w("at/ADP"), value)
    if lang == "fr":
        def heures(x: int) -> tuple[Token, ...]:
            return _num(cardinal("fr", x, "f")) + (Token("heure" if x == 1 else "heures", "NOUN"),)
        value = {
            0: heures(hour),
            15: heures(hour) + _w("et/CCONJ quart/NOUN"),
            30: heures(hour) + _w("et/CCONJ demie/NOUN"),
            45: heures(_next(hour)) + _w("moins/ADV le/DET quart/NOUN"),
        }.get(minute) or heures(hour) + _num(cardinal("fr", minute))
        return SlotPhrase(_w("à/ADP"), value)
    if lang == "de":
        # "ein Uhr" but "Viertel nach eins": the counting form is used without a noun.
        value = {
            0: _num(cardinal("de", hour, "m")) + _w("uhr/NOUN"),
            15: _w("viertel/NOUN nach/ADP") + _num(cardinal("de", hour)),
            30: _w("halb/ADJ") + _num(cardinal("de", _next(hour))),
            45: _w("viertel/NOUN vor/ADP") + _num(cardinal("de", _next(hour))),
        }.get(minute) or _num(cardinal("de", hour, "m")) + _w("uhr/NOUN") + _num(cardinal("de", minute))
        return SlotPhrase(_w("um/ADP"), value)
    if lang == "es":
        shown = _next(hour) if minute == 45 else hour
        h = _num(cardinal("es", shown, "f"))  # "la una": hora is feminine
        value = {
            0: h,
            15: h + _w("y/CCONJ cuarto/NOUN"),
            30: h + _w("y/CCONJ media/NOUN"),
            45: h + _w("menos/ADV cuarto/NOUN"),
        }.get(minute) or h + _w("y/CCONJ") + _num(cardinal("es", minute))
        article = "la" if shown == 1 else "las"
        return SlotPhrase(_w(f"a/ADP {article}/DET"), value)
    if lang == "it":
        shown = _next(hour) if minute == 45 else hour
        h = _num(cardinal("it", shown, "f"))
        value = {
            0: h,
            15: h + _w("e/CCONJ un/DET quarto/NOUN"),
            30: h + _w("e/CCONJ mezza/NOUN"),
            45: h + _w("meno/ADV un/DET quarto/NOUN"),
        }.get(minute) or h + _w("e/CCONJ") + _num(cardinal("it", minute))
        return SlotPhrase(_w("all'/ADP" if shown == 1 else "alle/ADP"), value)
    if lang == "nl":
        h, h1 = _num(cardinal("nl", hour)), _num(cardinal("nl", _next(hour)))
        value = {
            0: h + _w("uur/NOUN"),
            15: _w("kwart/NOUN over/ADP") + h,
            30: _w("half/ADJ") + h1,
            45: _w("kwart/NOUN voor/ADP") + h1,
        }.get(minute) or h + _w("uur/NOUN") + _num(cardinal("nl", minute))
        return SlotPhrase(_w("om/ADP"), value)
    if lang == "pt":
        shown = _next(hour) if minute == 45 else hour
        h = _num(cardinal("pt", shown, "f"))
        value = {
            0: h,
            15: h + _w("e/CCONJ um/DET quarto/NOUN"),
            30: h + _w("e/CCONJ meia/NOUN"),
            45: h + _w("menos/ADV um/DET quarto/NOUN"),
        }.get(minute) or h + _w("e/CCONJ") + _num(cardinal("pt", minute))
        return SlotPhrase(_w("à/ADP" if shown == 1 else "às/ADP"), value)
    if lang == "cs":
        # Czech speech uses the digital form ("v sedm třicet"); the hour is a feminine
        # accusative (hodina understood), and "v" becomes "ve" before a consonant cluster.
        h = _num(cardinal("cs", hour, "f"))
        if minute == 0:
            noun = "hodinu" if hour == 1 else ("hodiny" if hour <= 4 else "hodin")
            value = h + (Token(noun, "NOUN"),)
        else:
            value = h + (_w("nula/NUM") if minute < 10 else ()) + _num(cardinal("cs", minute))
        prep = "ve" if hour in (2, 3, 4, 12) else "v"
        return SlotPhrase((Token(prep, "ADP"),), value)
    raise ValueError(f"no clock times for language {lang!r}")


# ---------------------------------------------------------------- durations and counts

# unit -> (gender, singular, plural); Czech adds the genitive plural used after 5+.
_UNITS: dict[str, dict[str, tuple[str, ...]]] = {
    "en": {"s": ("m", "second", "seconds"), "min": ("m", "minute", "minutes"), "h": ("m", "hour", "hours")},
    "fr": {"s": ("f", "seconde", "secondes"), "min": ("f", "minute", "minutes"), "h": ("f", "heure", "heures")},
    "de": {"s": ("f", "sekunde", "sekunden"), "min": ("f", "minute", "minuten"), "h": ("f", "stunde", "stunden")},
    "es": {"s": ("m", "segundo", "segundos"), "min": ("m", "minuto", "minutos"), "h": ("f", "hora", "horas")},
    "it": {"s": ("m", "secondo", "secondi"), "min": ("m", "minuto", "minuti"), "h": ("f", "ora", "ore")},
    "nl": {"s": ("f", "seconde", "seconden"), "min": ("f", "minuut", "minuten"), "h": ("n", "uur", "uur")},
    "pt": {"s": ("m", "segundo", "segundos"), "min": ("m", "minuto", "minutos"), "h": ("f", "hora", "horas")},
    "cs": {
        "s": ("f", "sekundu", "sekundy", "sekund"),
        "min": ("f", "minutu", "minuty", "minut"),
        "h": ("f", "hodinu", "hodiny", "hodin"),
    },
}

# The preposition of "a timer *for* five minutes" (French and the Romance languages
# say "a timer *of* five minutes", Czech "na" + accusative).
_DURATION_PREP = {"en": "for", "fr": "de", "de": "für", "es": "de", "it": "di", "nl": "van", "pt": "de", "cs": "na"}


def _czech_plural(n: int, forms: tuple[str, ...]) -> str:
    """Czech: 1 takes the singular, 2-4 the nominative plural, 5 and up the genitive plural."""
    return forms[1] if n == 1 else (forms[2] if 2 <= n <= 4 else forms[3])


def duration(lang: str, n: int, unit: str) -> SlotPhrase:
    """"for <n> <unit>" (unit: "s", "min" or "h")."""
    gender, *forms = _UNITS[lang][unit]
    if lang == "cs":
        noun = _czech_plural(n, (gender, *forms))
    else:
        noun = forms[0] if n == 1 else forms[1]
    if lang == "it" and n == 1 and gender == "f":
        number: tuple[Token, ...] = (Token("un'", "NUM"),)  # "un'ora"
    else:
        number = _num(cardinal(lang, n, gender))
    prep = _DURATION_PREP[lang]
    if lang == "fr" and n == 1:
        prep = "d'"  # "d'une minute"
    return SlotPhrase((Token(prep, "ADP"),), number + (Token(noun, "NOUN"),))


_PEOPLE: dict[str, tuple[str, str, tuple[str, ...]]] = {
    # lang -> (preposition, gender of the noun, noun forms)
    "en": ("for", "m", ("people",)),
    "fr": ("pour", "f", ("personnes",)),
    "de": ("für", "f", ("personen",)),
    "es": ("para", "f", ("personas",)),
    "it": ("per", "f", ("persone",)),
    "nl": ("voor", "m", ("personen",)),
    "pt": ("para", "f", ("pessoas",)),
    "cs": ("pro", "f", ("osobu", "osoby", "osob")),
}


def people(lang: str, n: int) -> SlotPhrase:
    """"for <n> people" (n >= 2); the span is the number, the noun agrees with it."""
    if n < 2:
        raise ValueError("head counts start at 2")
    prep, gender, forms = _PEOPLE[lang]
    noun = _czech_plural(n, ("f", *forms)) if lang == "cs" else forms[0]
    return SlotPhrase((Token(prep, "ADP"),), _num(cardinal(lang, n, gender)), (Token(noun, "NOUN"),))
