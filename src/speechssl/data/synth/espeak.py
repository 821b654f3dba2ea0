"""A small ctypes driver for the eSpeak NG library shipped by the ``espeakng-loader`` wheel.

No system package is needed: the wheel carries ``libespeak-ng.so`` and its voice
data. eSpeak keeps global state, so there is one :class:`EspeakDriver` per process
(:func:`get_driver`); a multiprocessing pool creates one per worker.

Speaker voices are our own eSpeak *voice variant* files (pitch, formants, breath,
...). eSpeak only looks variants up under ``<data>/voices/!v``, and the wheel's
data directory must not be modified, so the driver runs on a private data
directory that links to the wheel's files and adds a writable ``voices/!v``.

Determinism: eSpeak's wave generator keeps state in C statics that no API call
resets (glottal phase, the harmonic-spectrum double buffer, the previous frame's
formant peaks, the flutter phase), so an utterance's samples depend on everything
the process synthesised before it. :meth:`EspeakDriver.speak_isolated` therefore
synthesises in a forked child of a process whose engine has only been
initialised: every utterance starts from the same state, whatever the worker or
the order. Generated variants also set ``flutter 0`` and the library's random
generator is reseeded per utterance.
"""

from __future__ import annotations

import ctypes
import hashlib
import os
import pickle
import re
import tempfile
import threading
import traceback
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from speechssl.errors import SpeechSSLError
from speechssl.extras import require

# speak_lib.h constants
_AUDIO_OUTPUT_SYNCHRONOUS = 2
_INITIALIZE_PHONEME_EVENTS_IPA = 0x0001 | 0x0002  # phoneme events, named in IPA
_EVENT_LIST_TERMINATED = 0
_EVENT_PHONEME = 7
_CHARS_UTF8 = 1
_POS_CHARACTER = 1
_EE_OK = 0
_ERRORS = {-1: "internal error", 1: "buffer full", 2: "not found"}
RATE, VOLUME, PITCH, RANGE, WORDGAP = 1, 2, 3, 4, 7
# espeak_TextToPhonemes mode: bit 1 = IPA, bits 8-23 = separator between phonemes.
_IPA_SPACE_SEPARATED = 0x02 | (ord(" ") << 8)


class _EventId(ctypes.Union):
    _fields_ = [("number", ctypes.c_int), ("name", ctypes.c_char_p), ("string", ctypes.c_char * 8)]


class _Event(ctypes.Structure):
    """``espeak_EVENT`` of speak_lib.h."""

    _fields_ = [
        ("type", ctypes.c_int),
        ("unique_identifier", ctypes.c_uint),
        ("text_position", ctypes.c_int),
        ("length", ctypes.c_int),
        ("audio_position", ctypes.c_int),  # milliseconds
        ("sample", ctypes.c_int),  # samples since the start of the espeak_Synth call
        ("user_data", ctypes.c_void_p),
        ("id", _EventId),
    ]


_SynthCallback = ctypes.CFUNCTYPE(ctypes.c_int, ctypes.POINTER(ctypes.c_short), ctypes.c_int, ctypes.POINTER(_Event))

# "(en)" ... "(fr)": eSpeak marks words it pronounced with another language's rules.
_LANGUAGE_SWITCH = re.compile(r"\([a-z-]+\)")
_STRESS = str.maketrans("", "", "ˈˌ")


@dataclass(frozen=True)
class SpeechRequest:
    """One utterance to speak: text, language voice, speaker variant file and parameters."""

    text: str
    language: str
    variant: str  # content of an eSpeak voice variant file
    parameters: tuple[tuple[int, int], ...]  # (RATE/PITCH/... constant, value)
    seed: int = 0


@dataclass(frozen=True)
class Speech:
    samples: np.ndarray  # int16 at EspeakDriver.sample_rate
    voice: str  # the eSpeak voice name used, "<language>+<variant name>"
    ipa: str  # eSpeak's IPA with stress marks, words separated by spaces
    phonemes: tuple[str, ...]  # phone tokens without stress marks
    # Where each phone starts, as eSpeak reports it while synthesising: (sample index
    # into ``samples``, IPA phone without stress marks). "" marks a pause (or a switch
    # of language). Each phone lasts until the next one starts; the last one until the
    # end of ``samples``.
    phone_starts: tuple[tuple[int, str], ...] = ()


class EspeakDriver:
    """One initialised eSpeak NG instance: synthesis and IPA phonemisation."""

    def __init__(self) -> None:
        espeakng_loader = require("espeakng_loader", "the synthetic corpus (eSpeak NG)")
        self._source_data = Path(espeakng_loader.get_data_path())
        self.data_dir = _private_data_dir(self._source_data)
        self._variants_dir = self.data_dir / "voices" / "!v"
        self._known_variants: set[str] = set()
        try:
            self._lib = ctypes.CDLL(espeakng_loader.get_library_path())
        except OSError as exc:
            raise SpeechSSLError(f"cannot load the eSpeak NG library: {exc}") from None
        self._declare_signatures()
        # Phoneme events only add markers to eSpeak's command queue; the samples are
        # the same with or without them.
        self.sample_rate = self._lib.espeak_Initialize(_AUDIO_OUTPUT_SYNCHRONOUS, 0, str(self.data_dir).encode(),
                                                       _INITIALIZE_PHONEME_EVENTS_IPA)
        if self.sample_rate <= 0:
            raise SpeechSSLError(f"eSpeak NG failed to initialise with data at {self.data_dir}")
        self._chunks: list[np.ndarray] = []
        self._phone_starts: list[tuple[int, str]] = []
        # The CFUNCTYPE object must outlive every synthesis call, or the C side
        # would call into freed memory.
        self._callback = _SynthCallback(self._on_audio)
        self._lib.espeak_SetSynthCallback(self._callback)

    def _declare_signatures(self) -> None:
        lib = self._lib
        lib.espeak_Initialize.argtypes = [ctypes.c_int, ctypes.c_int, ctypes.c_char_p, ctypes.c_int]
        lib.espeak_Initialize.restype = ctypes.c_int
        lib.espeak_SetSynthCallback.argtypes = [_SynthCallback]
        lib.espeak_SetVoiceByName.argtypes = [ctypes.c_char_p]
        lib.espeak_SetVoiceByName.restype = ctypes.c_int
        lib.espeak_SetParameter.argtypes = [ctypes.c_int, ctypes.c_int, ctypes.c_int]
        lib.espeak_SetParameter.restype = ctypes.c_int
        lib.espeak_Synth.argtypes = [
            ctypes.c_void_p, ctypes.c_size_t, ctypes.c_uint, ctypes.c_int, ctypes.c_uint, ctypes.c_uint,
            ctypes.c_void_p, ctypes.c_void_p,
        ]
        lib.espeak_Synth.restype = ctypes.c_int
        lib.espeak_TextToPhonemes.argtypes = [ctypes.POINTER(ctypes.c_void_p), ctypes.c_int, ctypes.c_int]
        lib.espeak_TextToPhonemes.restype = ctypes.c_char_p
        lib.espeak_ng_SetRandSeed.argtypes = [ctypes.c_long]
        lib.espeak_ng_SetRandSeed.restype = None

    def _on_audio(self, wav, num_samples: int, events) -> int:
        if num_samples > 0:
            self._chunks.append(np.ctypeslib.as_array(wav, shape=(num_samples,)).copy())
        if events:
            index = 0
            while events[index].type != _EVENT_LIST_TERMINATED:
                event = events[index]
                if event.type == _EVENT_PHONEME:
                    # A c_char array field reads up to its first NUL; a name may fill all 8 bytes.
                    name = event.id.string.decode("utf-8", errors="replace").translate(_STRESS)
                    # A language switch ("(en)") is no sound of its own: at most the pause before the word.
                    self._phone_starts.append((int(event.sample), "" if _LANGUAGE_SWITCH.fullmatch(name) else name))
                index += 1
        return 0  # 0 = continue synthesis

    # ------------------------------------------------------------ voices

    def register_variant(self, text: str) -> str:
        """Install a voice variant file and return its name (content-addressed).

        Naming variants by a hash of their content makes concurrent processes that
        share the data directory write identical files, so no locking is needed.
        """
        name = "ssl" + hashlib.sha1(text.encode()).hexdigest()[:16]
        if name not in self._known_variants:
            path = self._variants_dir / name
            if not path.is_file() or path.read_text(encoding="utf-8") != text:
                tmp = path.with_name(f".{name}.{os.getpid()}.tmp")
                tmp.write_text(text, encoding="utf-8")
                tmp.replace(path)
            self._known_variants.add(name)
        return name

    def set_voice(self, language: str, variant: str | None = None) -> None:
        name = language if variant is None else f"{language}+{variant}"
        rc = self._lib.espeak_SetVoiceByName(name.encode())
        if rc != _EE_OK:
            raise SpeechSSLError(f"eSpeak NG cannot select voice {name!r} ({_ERRORS.get(rc, rc)})")

    def set_parameter(self, parameter: int, value: int) -> None:
        rc = self._lib.espeak_SetParameter(parameter, int(value), 0)
        if rc != _EE_OK:
            raise SpeechSSLError(f"eSpeak NG rejected parameter {parameter}={value} ({_ERRORS.get(rc, rc)})")

    # ------------------------------------------------------------ synthesis

    def synthesize(self, text: str, seed: int = 0) -> tuple[np.ndarray, tuple[tuple[int, str], ...]]:
        """Speak ``text`` with the current voice and parameters.

        Returns int16 samples at :attr:`sample_rate` and where each phone starts
        (see :attr:`Speech.phone_starts`).
        """
        self._lib.espeak_ng_SetRandSeed(seed)
        self._chunks = []
        self._phone_starts = []
        data = text.encode("utf-8")
        rc = self._lib.espeak_Synth(data, len(data) + 1, 0, _POS_CHARACTER, 0, _CHARS_UTF8, None, None)
        if rc != _EE_OK:
            raise SpeechSSLError(f"eSpeak NG failed to synthesise {text!r} ({_ERRORS.get(rc, rc)})")
        if not self._chunks:
            raise SpeechSSLError(f"eSpeak NG produced no audio for {text!r}")
        samples = np.concatenate(self._chunks)
        starts = tuple((min(sample, len(samples)), name) for sample, name in self._phone_starts)
        return samples, starts

    def phonemize(self, text: str, language: str) -> tuple[str, list[str]]:
        """IPA of ``text`` read as ``language``: (raw IPA with stress and word breaks, phone tokens).

        Phone tokens drop stress marks and eSpeak's language-switch markers; length
        marks stay attached to their vowel ("aː").
        """
        self.set_voice(language)
        buffer = ctypes.create_string_buffer(text.encode("utf-8"))
        pointer = ctypes.c_void_p(ctypes.addressof(buffer))
        clauses = []
        # espeak_TextToPhonemes converts one clause per call and advances the
        # pointer; it sets it to NULL after the last clause.
        while pointer.value:
            out = self._lib.espeak_TextToPhonemes(ctypes.byref(pointer), _CHARS_UTF8, _IPA_SPACE_SEPARATED)
            if out:
                clauses.append(out.decode("utf-8"))
        # Phones are separated by one space and words by two; clauses are words too.
        raw = _LANGUAGE_SWITCH.sub("", "  ".join(clauses))
        words = [w.split() for w in re.split(r"\s{2,}", raw.strip()) if w.strip()]
        ipa = " ".join("".join(w) for w in words)
        phones = [p.translate(_STRESS) for w in words for p in w]
        return ipa, [p for p in phones if p]

    def speak(self, request: SpeechRequest) -> Speech:
        """Synthesise and phonemise ``request`` in this process (output depends on history)."""
        variant = self.register_variant(request.variant)
        self.set_voice(request.language, variant)
        for parameter, value in request.parameters:
            self.set_parameter(parameter, value)
        samples, phone_starts = self.synthesize(request.text, request.seed)
        ipa, phones = self.phonemize(request.text, request.language)
        return Speech(samples, f"{request.language}+{variant}", ipa, tuple(phones), phone_starts)

    def speak_isolated(self, request: SpeechRequest) -> Speech:
        """:meth:`speak` from this process's engine state, without changing it (see the module doc).

        The parent never synthesises, so its engine stays freshly initialised and
        each forked child starts from exactly that state. Where ``fork`` does not
        exist this falls back to :meth:`speak`, which is not history-independent.
        """
        if not hasattr(os, "fork"):  # pragma: no cover - Windows
            return self.speak(request)
        read_fd, write_fd = os.pipe()
        pid = os.fork()
        if pid == 0:  # child: speak, send the result, and leave without any cleanup of the parent's objects
            status = 0
            try:
                os.close(read_fd)
                payload = pickle.dumps(("ok", self.speak(request)))
            except BaseException as exc:  # report every failure to the parent
                status = 1
                payload = pickle.dumps(("error", f"{exc}" if isinstance(exc, SpeechSSLError)
                                        else traceback.format_exc()))
            try:
                with os.fdopen(write_fd, "wb") as pipe:
                    pipe.write(payload)
            finally:
                os._exit(status)
        os.close(write_fd)
        with os.fdopen(read_fd, "rb") as pipe:
            payload = pipe.read()
        _, status = os.waitpid(pid, 0)
        if not payload:
            raise SpeechSSLError(f"eSpeak NG child process died (status {status}) while speaking {request.text!r}")
        kind, value = pickle.loads(payload)
        if kind != "ok":
            raise SpeechSSLError(f"eSpeak NG failed on {request.text!r}: {value}")
        return value


def _private_data_dir(source: Path) -> Path:
    """A data directory that mirrors ``source`` through symlinks plus a writable ``voices/!v``.

    It lives in the temp dir, keyed by the source path and the user, and is shared
    by all processes of that user (variant files are content-addressed).
    """
    key = hashlib.sha1(str(source.resolve()).encode()).hexdigest()[:10]
    root = Path(tempfile.gettempdir()) / f"speechssl-espeak-{os.getuid()}-{key}"
    variants = root / "voices" / "!v"
    try:
        variants.mkdir(parents=True, exist_ok=True)
        for entry in source.iterdir():
            if entry.name != "voices":
                _symlink(entry, root / entry.name)
        for entry in (source / "voices").iterdir():
            if entry.name != "!v":
                _symlink(entry, root / "voices" / entry.name)
    except OSError as exc:
        raise SpeechSSLError(f"cannot prepare the eSpeak NG data directory {root}: {exc}") from None
    return root


def _symlink(target: Path, link: Path) -> None:
    if link.is_symlink() and os.readlink(link) == str(target):
        return
    tmp = link.with_name(f".{link.name}.{os.getpid()}.{threading.get_ident()}")
    tmp.unlink(missing_ok=True)
    tmp.symlink_to(target)
    tmp.replace(link)  # atomic: another process may be doing the same


_DRIVER: EspeakDriver | None = None
_DRIVER_PID: int | None = None


def get_driver() -> EspeakDriver:
    """The process's eSpeak driver, created on first use (and again after a fork)."""
    global _DRIVER, _DRIVER_PID
    if _DRIVER is None or _DRIVER_PID != os.getpid():
        _DRIVER = EspeakDriver()
        _DRIVER_PID = os.getpid()
    return _DRIVER
