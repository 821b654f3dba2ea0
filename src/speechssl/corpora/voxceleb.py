"""``voxceleb``: VoxCeleb1 and VoxCeleb2 for speaker verification, with the official trial lists.

``speechssl prepare voxceleb ROOT --out DIR [--option versions=vox1|vox2|both] [--option trials=O,E,H]``

Layout (ROOT holds one folder per version; ``voxceleb1``/``VoxCeleb1`` and ``voxceleb2``/
``VoxCeleb2`` are accepted as folder names too)::

    ROOT/vox1/dev/wav/id10001/1zcIwhmdeo4/00001.wav     VoxCeleb1 dev (1,211 speakers)
    ROOT/vox1/test/wav/id10270/5r0dWxy17C8/00001.wav    VoxCeleb1 test (40 speakers)
      or the flat release ROOT/vox1/wav/idXXXXX/...     (dev/test then from vox1_meta.csv "Set")
    ROOT/vox1/vox1_meta.csv                             tab-separated, header "VoxCeleb1 ID, VGGFace1 ID,
                                                        Gender, Nationality, Set"
    ROOT/vox1/iden_split.txt                            optional: "1|2|3 idXXXXX/video/nnnnn.wav" (custom.iden_split)
    ROOT/vox1/veri_test2.txt                            VoxCeleb1-O (cleaned)  "label path1 path2"
    ROOT/vox1/list_test_all2.txt                        VoxCeleb1-E (cleaned)
    ROOT/vox1/list_test_hard2.txt                       VoxCeleb1-H (cleaned)
    ROOT/vox2/dev/aac/id00012/21Uxsk56VDQ/00001.wav     VoxCeleb2 dev, converted to wav (in place or under dev/wav/)
    ROOT/vox2/test/aac/...                              VoxCeleb2 test (optional)
    ROOT/vox2/vox2_meta.csv                             "VoxCeleb2 ID ,VGGFace2 ID ,Gender ,Set"

Metadata and trial files may also sit directly in ROOT. VoxCeleb2 is distributed as AAC
(``.m4a``), which soundfile cannot read: convert it to wav first (16 kHz mono, same
``idXXXXX/<video>/<nnnnn>`` tree), as the Kaldi/ESPnet/WeSpeaker recipes do; a tree with
only ``.m4a`` files is refused with that advice.

Utterance ids come from the path: ``id10270/5r0dWxy17C8/00001.wav`` -> ``id10270-5r0dWxy17C8-00001``
(the Kaldi/lhotse convention), so trial lines map to cut ids directly.

Splits:

* ``train``: the dev speakers of the versions named by ``versions`` (VoxCeleb1 dev and/or
  VoxCeleb2 dev), minus the ``dev`` hold-out.
* ``dev``: a fixed, speaker-disjoint hold-out of about 2% of those speakers: a speaker is
  held out when ``md5(speaker id) mod 1000 < 20`` (independent of which other files are
  present; in small trees at least one speaker, two when 4+ train, taking the lowest
  hashes). Its ASV trials are generated (``trials/asv_dev.tsv``, seed 0).
* ``test``: the 40 VoxCeleb1 test speakers; ``trials/asv_test.tsv`` is VoxCeleb1-O
  (``veri_test2.txt``) when ``O`` is in ``trials``.
* ``vox1_e`` / ``vox1_h``: the utterances named by VoxCeleb1-E / -H, which draw from *all*
  of VoxCeleb1 (dev speakers included), with ``trials/asv_vox1_e.tsv`` / ``asv_vox1_h.tsv``.
  These files also live in ``train``/``test``, and cut ids are unique per manifest
  directory, so their ids carry the split as a prefix (``vox1_e-id10001-1zcIwhmdeo4-00001``);
  ``custom.path_id`` holds the plain ``idXXXXX/video/nnnnn`` on every cut. The standard -E/-H
  protocol trains on VoxCeleb2 only: prepare with ``versions=vox2`` (VoxCeleb1 is then read
  for the evaluation splits only).
* ``vox2_test``: VoxCeleb2 test (118 speakers), when ``vox2`` is in ``versions``; kept out of
  ``train`` (the Kaldi recipe trains on it too: merge it yourself if you want that).

Labels: ``speaker`` (VoxCeleb id), ``gender`` (``m``/``f`` from the meta file), and in
``custom``: ``voxceleb`` (vox1/vox2), ``set`` (official dev/test), ``path_id``, ``nationality``
and ``name`` (VoxCeleb1 meta), ``iden_split`` (train/dev/test from ``iden_split.txt``).
"""

from __future__ import annotations

import hashlib
from pathlib import Path
from typing import Any

from speechssl.corpora.base import CorpusError, TreeCheck, Utterance, inside, make_trials, option_list, write_corpus

NAME = "voxceleb"
FOLDERS = {"vox1": ("vox1", "voxceleb1", "VoxCeleb1"), "vox2": ("vox2", "voxceleb2", "VoxCeleb2")}
META = {"vox1": "vox1_meta.csv", "vox2": "vox2_meta.csv"}
META_COLUMNS = {"vox1": ("VoxCeleb1 ID", "Gender", "Set"), "vox2": ("VoxCeleb2 ID", "Gender", "Set")}
# (official set or "" = from the meta file, folder): where each release puts its audio.
PARTS = {
    "vox1": (("dev", "dev/wav"), ("test", "test/wav"), ("", "wav")),
    "vox2": (("dev", "dev/wav"), ("dev", "dev/aac"), ("test", "test/wav"), ("test", "test/aac"),
             ("", "wav"), ("", "aac")),
}
TRIAL_LISTS = {
    "O": ("veri_test2.txt", "test", "VoxCeleb1-O (cleaned)"),
    "E": ("list_test_all2.txt", "vox1_e", "VoxCeleb1-E (cleaned)"),
    "H": ("list_test_hard2.txt", "vox1_h", "VoxCeleb1-H (cleaned)"),
}
IDEN_SPLITS = {"1": "train", "2": "dev", "3": "test"}
DEV_PER_MILLE = 20
"""A training speaker is held out for ``dev`` when md5(id) mod 1000 is below this (~2%)."""
CONVERT_HINT = ("soundfile cannot read AAC (.m4a): convert VoxCeleb2 to wav first, keeping the "
                "idXXXXX/<video>/<nnnnn> tree (e.g. `ffmpeg -i 00001.m4a -ac 1 -ar 16000 00001.wav` beside "
                "each .m4a, or into vox2/dev/wav/), as the Kaldi/ESPnet/WeSpeaker recipes do")


def utterance_id(path_id: str) -> str:
    """``id10270/5r0dWxy17C8/00001(.wav)`` -> ``id10270-5r0dWxy17C8-00001``."""
    return path_id.removesuffix(".wav").replace("/", "-")


def _choices(value: Any, name: str, allowed: dict[str, tuple[str, ...]], what: str) -> list[str]:
    """:func:`option_list` with VoxCeleb's spellings: ``+`` joins like ``,`` (``vox1+vox2``) and
    ``none`` names nothing; canonical names, in ``allowed``'s order."""
    items = value.replace("+", ",").split(",") if isinstance(value, str) else [str(v) for v in value]
    return option_list([v for v in items if v.strip().lower() != "none"], name, NAME, allowed,
                       required=False, what=what)


def _hash(speaker: str) -> int:
    return int(hashlib.md5(speaker.encode()).hexdigest()[:8], 16) % 1000


def _read_meta(check: TreeCheck, path: Path, version: str) -> dict[str, dict[str, str]]:
    """Speaker id -> row of vox1_meta.csv (tab-separated) or vox2_meta.csv (" ,"-separated)."""
    lines = [line for line in path.read_text(encoding="utf-8-sig", errors="replace").splitlines() if line.strip()]
    if not lines:
        check.problem(f"{path.name}: empty")
        return {}
    delimiter = "\t" if "\t" in lines[0] else ","
    header = [h.strip() for h in lines[0].split(delimiter)]
    if not check.columns(path, header, META_COLUMNS[version]):
        return {}
    meta = {}
    for line in lines[1:]:
        row = dict(zip(header, (v.strip() for v in line.split(delimiter))))
        speaker = row.get(header[0], "")
        if speaker:
            meta[speaker] = row
    return meta


def _first_file(dirs: list[Path], name: str) -> Path | None:
    for directory in dirs:
        if (directory / name).is_file():
            return directory / name
    return None


def _rel(check: TreeCheck, path: Path) -> str:
    return path.relative_to(check.root).as_posix() if path.is_relative_to(check.root) else str(path)


class _Version:
    """The audio one VoxCeleb version has in the tree: path id -> (file, official set)."""

    def __init__(self, check: TreeCheck, version: str) -> None:
        self.version = version
        self.base = next((check.root / n for n in FOLDERS[version] if (check.root / n).is_dir()), None)
        self.files: dict[str, tuple[Path, str]] = {}
        self.meta: dict[str, dict[str, str]] = {}
        self.meta_path: Path | None = None
        self.duplicates = 0
        self.unconverted = 0
        self.reported = False
        """A problem of this version's layout is already reported (no per-split repeats)."""
        self.m4a_only: list[tuple[str, str, int]] = []
        """(official set or '', folder, count) of folders holding .m4a files and no .wav"""

    def scan(self, check: TreeCheck) -> None:
        folders = " or ".join(f"{n}/" for n in FOLDERS[self.version])
        if self.base is None:
            check.problem(f"missing directory {folders} (VoxCeleb{self.version[-1]})")
            return
        self.meta_path = _first_file([self.base, check.root], META[self.version])
        if self.meta_path is not None:
            self.meta = _read_meta(check, self.meta_path, self.version)
        m4a: set[str] = set()
        flat_unknown: set[str] = set()
        flat_without_meta = None
        found_dirs = []
        for official, folder in PARTS[self.version]:
            directory = self.base / folder
            if not directory.is_dir():
                continue
            found_dirs.append(folder)
            wavs = sorted(directory.glob("*/*/*.wav"))
            if folder.endswith("aac"):
                here = {p.relative_to(directory).with_suffix("").as_posix() for p in directory.glob("*/*/*.m4a")}
                if here and not wavs:
                    self.m4a_only.append((official, _rel(check, directory), len(here)))
                m4a |= here
            if wavs and not official and self.meta_path is None:
                flat_without_meta = _rel(check, directory)
            for wav in wavs:
                path_id = wav.relative_to(directory).with_suffix("").as_posix()
                speaker = path_id.split("/")[0]
                split = official or self.meta.get(speaker, {}).get("Set", "").lower()
                if not split:
                    flat_unknown.add(speaker)
                    continue
                if path_id in self.files:
                    self.duplicates += 1
                    continue
                self.files[path_id] = (wav, split)
        if not found_dirs:
            where = self.base.name
            expected = ", ".join(f"{where}/{folder}/" for _, folder in PARTS[self.version])
            check.problem(f"{where}/: no audio folder (expected one of {expected})")
            self.reported = True
        if flat_without_meta:
            check.problem(f"missing file {self.base.name}/{META[self.version]} (the flat {flat_without_meta}/ "
                          "layout needs its 'Set' column to tell dev from test speakers)")
            self.reported = True
        elif flat_unknown:
            check.problem(f"{len(flat_unknown)} speaker(s) of the flat layout are not in {META[self.version]} "
                          f"(e.g. {', '.join(sorted(flat_unknown)[:3])})")
            self.reported = True
        self.unconverted = len(m4a - set(self.files))

    def speakers(self, split: str) -> set[str]:
        return {p.split("/")[0] for p, (_, s) in self.files.items() if s == split}

    def require(self, check: TreeCheck, split: str, why: str) -> None:
        if self.base is None or self.reported:
            return
        if self.speakers(split):
            return
        m4a = [(where, n) for official, where, n in self.m4a_only if official in (split, "")]
        if m4a:
            listed = ", ".join(f"{where}/ ({n} .m4a files)" for where, n in m4a)
            check.problem(f"no VoxCeleb{self.version[-1]} {split} wav files, only AAC: {listed} ({why}); "
                          f"{CONVERT_HINT}")
        else:
            where = self.base.name
            folders = f"{where}/{split}/wav/" + (f" or {where}/{split}/aac/" if self.version == "vox2" else "")
            check.problem(f"no VoxCeleb{self.version[-1]} {split} audio: {folders} missing or empty "
                          f"(or, in the flat {where}/wav/ layout, no speaker with Set={split} in {META[self.version]}) "
                          f"({why})")


def _read_trials(check: TreeCheck, path: Path) -> list[tuple[str, str, int]]:
    trials, bad = [], []
    for line_no, line in enumerate(path.read_text(encoding="utf-8", errors="replace").splitlines(), start=1):
        fields = line.split()
        if not fields:
            continue
        if len(fields) != 3 or fields[0] not in ("0", "1"):
            bad.append(line_no)
            continue
        trials.append((fields[1].removesuffix(".wav"), fields[2].removesuffix(".wav"), int(fields[0])))
    if bad:
        check.problem(f"{_rel(check, path)}: {len(bad)} line(s) not 'label path1 path2' "
                      f"(label 0/1; first at line {bad[0]})")
    elif not trials:
        check.problem(f"{_rel(check, path)}: no trials")
    return trials


def prepare(root: Path, out: Path, *, versions: str = "vox1", trials: str = "O") -> dict[str, Any]:
    train_versions = _choices(versions, "versions", {"vox1": ("vox1", "voxceleb1", "1", "both", "all"),
                                                     "vox2": ("vox2", "voxceleb2", "2", "both", "all")}, "version(s)")
    lists = _choices(trials, "trials", {"O": ("o",), "E": ("e",), "H": ("h",)}, "trial list(s)")
    if not train_versions:
        raise CorpusError(f"{NAME}: versions= names no version (use vox1, vox2 or both)")
    check = TreeCheck(NAME, root)
    vox1 = _Version(check, "vox1")
    vox2 = _Version(check, "vox2")
    need_vox1 = "vox1" in train_versions or bool(lists)
    if need_vox1:
        vox1.scan(check)
        if "vox1" in train_versions:
            vox1.require(check, "dev", "VoxCeleb1 dev speakers are training data")
        elif "E" in lists or "H" in lists:
            vox1.require(check, "dev", "VoxCeleb1-E/-H use VoxCeleb1 dev speakers")
        vox1.require(check, "test", "the VoxCeleb1 test speakers" + (" of VoxCeleb1-O" if "O" in lists else ""))
    if "vox2" in train_versions:
        vox2.scan(check)
        vox2.require(check, "dev", "VoxCeleb2 dev speakers are training data")
    trial_lines: dict[str, list[tuple[str, str, int]]] = {}
    for key in lists:
        filename, _, title = TRIAL_LISTS[key]
        path = _first_file([d for d in (vox1.base, check.root) if d is not None], filename)
        if path is None:
            where = f"{vox1.base.name}/" if vox1.base is not None else "vox1/"
            check.problem(f"missing file {where}{filename} ({title} trial list, from the VoxCeleb site's meta "
                          f"files; or leave {key} out of trials=)")
            continue
        trial_lines[key] = _read_trials(check, path)
        named = {p for a, b, _ in trial_lines[key] for p in (a, b)}
        if named and vox1.files and not named & set(vox1.files):
            check.problem(f"{_rel(check, path)}: none of its {len(named)} files is under "
                          f"{vox1.base.name if vox1.base else 'vox1'}/ (e.g. {sorted(named)[0]}.wav)")
    check.done()

    iden: dict[str, str] = {}
    iden_path = _first_file([d for d in (vox1.base, check.root) if d is not None], "iden_split.txt")
    if iden_path is not None and vox1.files:
        for line in iden_path.read_text(encoding="utf-8", errors="replace").splitlines():
            fields = line.split()
            if len(fields) == 2 and fields[0] in IDEN_SPLITS:
                iden[fields[1].removesuffix(".wav")] = IDEN_SPLITS[fields[0]]

    def describe(v: _Version, path_id: str, split: str, uid: str | None = None) -> Utterance:
        audio, official = v.files[path_id]
        speaker = path_id.split("/")[0]
        row = v.meta.get(speaker, {})
        custom: dict[str, Any] = {"voxceleb": v.version, "set": official, "path_id": path_id}
        if row.get("Nationality"):
            custom["nationality"] = row["Nationality"]
        if v.version == "vox1" and row.get("VGGFace1 ID"):
            custom["name"] = row["VGGFace1 ID"]
        if v.version == "vox1" and path_id in iden:
            custom["iden_split"] = iden[path_id]
        return Utterance(id=uid or utterance_id(path_id), audio=inside(root, audio), split=split, speaker=speaker,
                         gender=(row.get("Gender") or "").lower() or None, custom=custom)

    # Training speakers and the fixed dev hold-out.
    train_speakers = sorted(set().union(*(v.speakers("dev") for v in (vox1, vox2) if v.version in train_versions)))
    dev_speakers = {s for s in train_speakers if _hash(s) < DEV_PER_MILLE}
    # Small trees: at least one dev speaker, two (for non-target trials) when 4+ speakers train.
    wanted = 2 if len(train_speakers) >= 4 else 1 if len(train_speakers) >= 2 else 0
    for speaker in sorted(train_speakers, key=lambda s: (_hash(s), s)):
        if len(dev_speakers) >= wanted:
            break
        dev_speakers.add(speaker)

    utterances: list[Utterance] = []
    for v in (vox1, vox2):
        for path_id, (_, official) in sorted(v.files.items()):
            speaker = path_id.split("/")[0]
            if official == "dev" and v.version in train_versions:
                split = "dev" if speaker in dev_speakers else "train"
            elif official == "test" and v.version == "vox1":
                split = "test"
            elif official == "test" and v.version == "vox2":
                split = "vox2_test"
            else:
                continue  # VoxCeleb1 dev when only VoxCeleb2 trains: in vox1_e/vox1_h only
            utterances.append(describe(v, path_id, split))

    trial_out: dict[str, list[tuple[str, str, int]]] = {}
    missing_files: dict[str, int] = {}
    for key, lines in trial_lines.items():
        _, split, _ = TRIAL_LISTS[key]
        named = sorted({p for a, b, _ in lines for p in (a, b)})
        absent = [p for p in named if p not in vox1.files]
        if absent:
            missing_files[split] = len(absent)
        if split == "test":
            trial_out[split] = [(utterance_id(a), utterance_id(b), label) for a, b, label in lines]
            continue
        prefix = f"{split}-"
        for path_id in named:
            if path_id in vox1.files:
                utterances.append(describe(vox1, path_id, split, prefix + utterance_id(path_id)))
        trial_out[split] = [(prefix + utterance_id(a), prefix + utterance_id(b), label) for a, b, label in lines]
    dev_utterances = [u for u in utterances if u.split == "dev"]
    dev_trials = make_trials(dev_utterances, seed=0)
    if dev_trials:  # needs two dev speakers; otherwise the asv task generates its own
        trial_out["dev"] = dev_trials

    notes: dict[str, Any] = {
        "versions": train_versions,
        "trial_lists": {TRIAL_LISTS[k][1]: TRIAL_LISTS[k][0] for k in lists},
        "dev_speakers": sorted(dev_speakers),
        "split_note": (f"train = {' + '.join(f'VoxCeleb{v[-1]} dev' for v in train_versions)} minus "
                       f"{len(dev_speakers)} held-out dev speaker(s) (md5(id) mod 1000 < {DEV_PER_MILLE}); test = VoxCeleb1 test"
                       + "".join(f"; {TRIAL_LISTS[k][1]} = files of {TRIAL_LISTS[k][0]}" for k in lists if k != "O")),
    }
    if missing_files:
        notes["trial_files_missing"] = missing_files  # their trial lines are dropped (counted under "trials")
    for v in (vox1, vox2):
        if v.duplicates:
            notes[f"{v.version}_duplicate_files"] = v.duplicates
        if v.unconverted:
            notes[f"{v.version}_m4a_without_wav"] = v.unconverted
    return write_corpus(out, name=NAME, root=root, utterances=utterances, trials=trial_out, notes=notes)
