"""Exceptions that the CLI turns into one clear line and an exit code.

Anything raised from inside speechssl that a user can fix (a bad file, a bad
config, a missing label) is one of these; anything else is a bug and keeps its
traceback.
"""


class SpeechSSLError(Exception):
    """A runtime failure the user can act on (CLI exit code 1)."""

    exit_code = 1


class ConfigError(SpeechSSLError):
    """A usage or configuration mistake, detected before any work starts (exit code 2)."""

    exit_code = 2


class AudioError(SpeechSSLError):
    """An audio file that cannot be used; the message always names the file."""

    def __init__(self, path, reason: str):
        self.path = str(path)
        self.reason = reason
        super().__init__(f"{self.path}: {reason}")


class ManifestError(SpeechSSLError):
    """A manifest that is missing, malformed or lacks a required field."""


class MissingExtraError(SpeechSSLError, ImportError):
    """An optional dependency that this path needs is not installed.

    The message names the package, what it is needed for and the extra that brings it
    (``jiwer is needed for WER/CER scoring: pip install 'speechssl[bench]'``); raised by
    :func:`speechssl.extras.require`. Also an :class:`ImportError`, so code that already
    guards an optional import with ``except ImportError`` keeps working.
    """

    def __init__(self, package: str, purpose: str, hint: str, *, module: str | None = None):
        self.package = package
        self.purpose = purpose
        self.hint = hint
        super().__init__(f"{package} is needed for {purpose}: {hint}")
        self.name = module or package  # ImportError's attribute: the module that could not be imported

    def __reduce__(self):  # picklable, so it crosses a process pool intact
        return (type(self), (self.package, self.purpose, self.hint), {"name": self.name})
