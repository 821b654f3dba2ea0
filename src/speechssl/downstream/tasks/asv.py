"""Speaker verification: train a speaker classifier, score trials by embedding cosine."""

from __future__ import annotations

import csv
import random
from pathlib import Path
from typing import Any, Iterable

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from speechssl.downstream.metrics import eer, min_dcf
from speechssl.downstream.tasks.base import ProbeBatch, Task, label_values, require_label
from speechssl.errors import ConfigError

TRIALS_FILE = "trials/asv_{split}.tsv"
P_TARGET = 0.01


def read_trials(path: Path) -> list[tuple[str, str, int]]:
    """``enroll<TAB>test<TAB>label`` rows (label 1 = same speaker) after a header line."""
    trials = []
    with open(path, newline="", encoding="utf-8") as handle:
        reader = csv.reader(handle, delimiter="\t")
        header = next(reader, None)
        if header is None or [h.strip() for h in header[:3]] != ["enroll", "test", "label"]:
            raise ConfigError(f"{path}: expected a header 'enroll<TAB>test<TAB>label'")
        for line_no, row in enumerate(reader, start=2):
            if len(row) < 3 or row[2].strip() not in ("0", "1"):
                raise ConfigError(f"{path}:{line_no}: expected 'enroll<TAB>test<TAB>0|1', got {row!r}")
            trials.append((row[0], row[1], int(row[2])))
    if not trials:
        raise ConfigError(f"{path}: no trials")
    return trials


def make_trials(cuts: list, *, per_cut: int = 2, seed: int = 0) -> list[tuple[str, str, int]]:
    """Balanced trials over ``cuts``: for each cut, ``per_cut / 2`` same-speaker and as many
    different-speaker partners, drawn deterministically from ``seed``."""
    by_speaker: dict[str, list[str]] = {}
    for cut in cuts:
        by_speaker.setdefault(cut.supervisions[0].speaker, []).append(cut.id)
    speakers = sorted(by_speaker)
    rng = random.Random(seed)
    trials = []
    for cut in sorted(cuts, key=lambda c: c.id):
        speaker = cut.supervisions[0].speaker
        same = [c for c in by_speaker[speaker] if c != cut.id]
        others = [s for s in speakers if s != speaker]
        for _ in range(per_cut // 2):
            if same:
                trials.append((cut.id, rng.choice(same), 1))
            if others:
                trials.append((cut.id, rng.choice(by_speaker[rng.choice(others)]), 0))
    return trials


class SpeakerVerification(Task):
    name = "asv"
    needs = "embedding"
    default_probe = "xvector"
    primary_metric = "eer"
    higher_is_better = False
    default_lr = 1e-3
    default_epochs = 10

    @staticmethod
    def _speaker(info) -> str | None:
        return info.get("speaker")

    def prepare(self, splits: dict[str, list]) -> None:
        require_label(splits, self.name, "speaker", self._speaker)
        self.speakers = sorted(set(label_values(splits["train"], self._speaker)))
        if len(self.speakers) < 2:
            raise ConfigError(f"task asv needs at least two train speakers, found {len(self.speakers)}")
        self.index = {s: i for i, s in enumerate(self.speakers)}
        self.trials: dict[str, list[tuple[str, str, int]]] = {}
        self.trial_sources: dict[str, str] = {}
        for role, split in (("dev", self.cfg.dev_split), ("test", self.cfg.test_split)):
            cuts = splits[role]
            ids = {c.id for c in cuts}
            path = self.data_dir / TRIALS_FILE.format(split=split)
            if path.is_file():
                trials = read_trials(path)
                self.trial_sources[role] = str(path)
            else:
                trials = make_trials(cuts, seed=self.cfg.seed)
                self.trial_sources[role] = f"generated from the {split} split (seed {self.cfg.seed})"
            missing = sorted({i for t in trials for i in t[:2]} - ids)
            if missing:
                raise ConfigError(f"{path}: {len(missing)} trial utterances are not in split {split!r}, e.g. {missing[0]!r}")
            if len({t[2] for t in trials}) < 2:
                raise ConfigError(f"the {role} trials need both target and non-target pairs")
            self.trials[role] = trials
        test_speakers = set(label_values(splits["test"], self._speaker))
        self.test_speakers_disjoint = not (test_speakers & set(self.speakers))

    @property
    def num_outputs(self) -> int:
        return len(self.speakers)

    def label_state(self) -> dict[str, Any]:
        return {"speakers": self.speakers, "trials": self.trial_sources}

    def loss(self, probe: nn.Module, batch: ProbeBatch) -> Tensor:
        targets = torch.tensor([self.index[s["speaker"]] for s in batch.supervisions], device=batch.features.device)
        return probe.loss(batch.features, batch.lengths, targets)

    def evaluate(self, probe: nn.Module, batches: Iterable[ProbeBatch], *, final: bool) -> dict[str, Any]:
        embeddings: dict[str, Tensor] = {}
        for batch in batches:
            for cut_id, vector in zip(batch.cut_ids, F.normalize(probe.embed(batch.features, batch.lengths), dim=-1)):
                embeddings[cut_id] = vector.float().cpu()
        trials = self.trials["test" if final else "dev"]
        enroll = torch.stack([embeddings[t[0]] for t in trials])
        test = torch.stack([embeddings[t[1]] for t in trials])
        scores = (enroll * test).sum(-1).numpy()
        labels = [t[2] for t in trials]
        metrics: dict[str, Any] = {
            "eer": eer(scores, labels),
            "min_dcf": min_dcf(scores, labels, p_target=P_TARGET),
            "p_target": P_TARGET,
            "trials": len(trials),
        }
        if final:
            metrics["test_speakers_disjoint"] = self.test_speakers_disjoint
        return metrics
