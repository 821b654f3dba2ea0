"""``kaldi``: Kaldi / ESPnet data directories.

``speechssl prepare kaldi ROOT --out DIR``

ROOT is one data directory (holding ``wav.scp``), a directory of them, or a recipe directory
whose ``data/`` holds them (``data/train``, ``data/dev``, ...): each becomes the split named
after its folder (a single
directory becomes ``--option split=NAME``, default its folder name). Files read:

- ``wav.scp`` (required): ``<recording-id> <path>``. Relative paths are relative to ROOT.
  A pipe command (``... |``) is refused unless ``allow_pipes=true``: then the command is run
  once, here, through the shell, and its WAV output is stored under ``DIR/audio/`` -- only
  for data directories you trust, since the command is executed.
- ``segments`` (optional): ``<utt-id> <recording-id> <start> <end>`` seconds; without it
  every recording is one utterance with the recording's id.
- ``text``, ``utt2spk``, ``utt2lang``, ``spk2gender`` (optional): transcript, speaker,
  language, gender (``m``/``f``). ``utt2spk`` entries equal to the utterance id (Kaldi's
  convention for "speaker unknown") are kept as given.

Relative paths in ``wav.scp`` start from ROOT, or from ``audio_base`` (relative to ROOT,
e.g. ``../..`` when ROOT is ``recipe/data/train``). Audio paths must stay inside that
directory unless ``allow_outside=true`` (Kaldi recipes often point at
absolute paths elsewhere; allowing it is a decision, not a default).
"""

from __future__ import annotations

import subprocess
from pathlib import Path
from typing import Any

from speechssl.corpora.base import (CorpusError, TreeCheck, Utterance, inside, make_trials, option_bool, option_int,
                                    write_corpus)


def _read_table(path: Path, min_fields: int = 2) -> dict[str, list[str]]:
    """``key rest...`` lines of a Kaldi table (``rest`` split on whitespace)."""
    table: dict[str, list[str]] = {}
    for line_no, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
        if not line.strip():
            continue
        fields = line.split()
        if len(fields) < min_fields:
            raise CorpusError(f"kaldi: {path}:{line_no}: expected at least {min_fields} fields, got {line!r}")
        if fields[0] in table:
            raise CorpusError(f"kaldi: {path}:{line_no}: key {fields[0]!r} appears twice")
        table[fields[0]] = fields[1:]
    return table


def _read_text(path: Path) -> dict[str, str]:
    out = {}
    for line in path.read_text(encoding="utf-8").splitlines():
        key, _, text = line.strip().partition(" ")
        if key:
            out[key] = text.strip()
    return out


def _data_dirs(root: Path) -> list[Path]:
    """ROOT itself, else its sub-directories with a wav.scp, else those of ROOT/data (a recipe
    directory, whose wav.scp paths are usually relative to it)."""
    if (root / "wav.scp").is_file():
        return [root]
    for parent in (root, root / "data"):
        found = sorted(p for p in parent.iterdir() if p.is_dir() and (p / "wav.scp").is_file()) if parent.is_dir() else []
        if found:
            return found
    return []


def _audio_path(root: Path, entry: str, *, allow_outside: bool) -> Path:
    path = Path(entry)
    if allow_outside:  # absolute, or relative and leaving ROOT ("../wav/x.flac"): both accepted
        return path if path.is_absolute() else (root / path).resolve()
    try:
        return inside(root, path)
    except CorpusError as exc:
        raise CorpusError(f"kaldi: {exc} (pass --option allow_outside=true to accept audio outside ROOT)") from None


def _run_pipe(command: str, target: Path) -> Path:
    """Run a wav.scp pipe command (without its trailing ``|``), storing its output at ``target``."""
    target.parent.mkdir(parents=True, exist_ok=True)
    with open(target, "wb") as handle:
        done = subprocess.run(command, shell=True, stdout=handle, stderr=subprocess.PIPE, timeout=600)
    if done.returncode != 0:
        target.unlink(missing_ok=True)
        raise CorpusError(f"kaldi: pipe command failed ({done.returncode}): {command}: "
                          f"{done.stderr.decode(errors='replace').strip()[:200]}")
    return target


def prepare(root: Path, out: Path, *, split: str = "", audio_base: str = "", allow_pipes: bool | str = False,
            allow_outside: bool | str = False, trials_split: str = "test", seed: int | str = 0) -> dict[str, Any]:
    allow_pipes = option_bool(allow_pipes, "allow_pipes", "kaldi")
    allow_outside = option_bool(allow_outside, "allow_outside", "kaldi")
    seed = option_int(seed, "seed", "kaldi")
    check = TreeCheck("kaldi", root)
    # Relative wav.scp paths start from the recipe directory in Kaldi; that is ROOT unless
    # ROOT is a data directory inside the recipe (then give the recipe dir as audio_base).
    base = (root / audio_base).resolve() if audio_base else root
    if not base.is_dir():
        check.problem(f"audio_base {audio_base} is not a directory")
    directories = _data_dirs(root)
    if not directories:
        check.problem("no wav.scp in ROOT nor in any of its sub-directories (expected a Kaldi data dir such as "
                      "data/train with wav.scp, text, utt2spk)")
    check.done()
    utterances: list[Utterance] = []
    pipes = 0
    for directory in directories:
        name = split if (split and len(directories) == 1) else directory.name
        scp = _read_table(directory / "wav.scp")
        piped = {k: v for k, v in scp.items() if v[-1].endswith("|")}
        if piped and not allow_pipes:
            example = " ".join(next(iter(piped.values())))
            raise CorpusError(f"kaldi: {directory / 'wav.scp'}: {len(piped)} of {len(scp)} entries are pipe "
                              f"commands (e.g. {example!r}); they would be executed. Convert the audio to files, or "
                              "pass --option allow_pipes=true to run them once and store their output")
        recordings: dict[str, Path] = {}
        for rec, fields in scp.items():
            if rec in piped:
                command = " ".join(fields)[:-1].strip()
                recordings[rec] = _run_pipe(command, Path(out) / "audio" / name / f"{_safe(rec)}.wav")
                pipes += 1
            else:
                # A path with spaces is one field after the id in Kaldi's format.
                recordings[rec] = _audio_path(base, " ".join(fields), allow_outside=allow_outside)
        texts = _read_text(directory / "text") if (directory / "text").is_file() else {}
        spk = {k: v[0] for k, v in _read_table(directory / "utt2spk").items()} if (directory / "utt2spk").is_file() else {}
        lang = {k: v[0] for k, v in _read_table(directory / "utt2lang").items()} if (directory / "utt2lang").is_file() else {}
        gender = ({k: v[0] for k, v in _read_table(directory / "spk2gender").items()}
                  if (directory / "spk2gender").is_file() else {})
        if (directory / "segments").is_file():
            segments = _read_table(directory / "segments", min_fields=4)
            unknown = sorted({v[0] for v in segments.values()} - set(recordings))
            if unknown:
                raise CorpusError(f"kaldi: {directory / 'segments'}: {len(unknown)} recording ids not in wav.scp "
                                  f"(e.g. {unknown[:3]})")
            items = [(utt, v[0], float(v[1]), float(v[2]) - float(v[1])) for utt, v in segments.items()]
        else:
            items = [(rec, rec, 0.0, None) for rec in recordings]
        for utt, rec, start, duration in items:
            speaker = spk.get(utt)
            utterances.append(Utterance(
                id=utt, audio=recordings[rec], split=name, text=texts.get(utt), speaker=speaker,
                language=lang.get(utt), gender=gender.get(speaker) if speaker else None, start=start,
                duration=duration, custom={"kaldi_dir": directory.name},
            ))
    trials = {}
    test = [u for u in utterances if u.split == trials_split and u.speaker]
    if test:
        trials[trials_split] = make_trials(test, seed=seed,
                                           group=(lambda u: u.language) if any(u.language for u in test) else None)
    return write_corpus(out, name="kaldi", root=root, utterances=utterances, trials=trials,
                        notes={"data_dirs": [d.name for d in directories], "pipes_run": pipes})


def _safe(key: str) -> str:
    return "".join(ch if ch.isalnum() or ch in "-_." else "_" for ch in key) or "rec"

