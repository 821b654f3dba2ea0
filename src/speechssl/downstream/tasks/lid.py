"""Spoken language identification: one language label per utterance."""

from __future__ import annotations

from collections import defaultdict
from typing import Any, Iterable

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from speechssl.downstream.metrics import accuracy, macro_f1
from speechssl.downstream.tasks.base import ProbeBatch, Task, label_values, require_label
from speechssl.errors import ConfigError


class LanguageID(Task):
    name = "lid"
    needs = "utterance"
    default_probe = "mean_linear"
    primary_metric = "accuracy"
    higher_is_better = True
    default_lr = 1e-3
    default_epochs = 10

    @staticmethod
    def _language(sup) -> str | None:
        return sup.language

    def prepare(self, splits: dict[str, list]) -> None:
        require_label(splits, self.name, "language", self._language)
        self.labels = sorted(set(label_values(splits["train"], self._language)))
        if len(self.labels) < 2:
            raise ConfigError(f"task lid needs at least two languages in the train split, found {self.labels}")
        self.index = {label: i for i, label in enumerate(self.labels)}
        for split, cuts in splits.items():
            unseen = sorted(set(label_values(cuts, self._language)) - set(self.labels))
            if unseen:
                raise ConfigError(f"split {split!r} has languages the train split lacks: {unseen}")

    @property
    def num_outputs(self) -> int:
        return len(self.labels)

    def label_state(self) -> dict[str, Any]:
        return {"labels": self.labels}

    def targets(self, batch: ProbeBatch) -> Tensor:
        return torch.tensor([self.index[s["language"]] for s in batch.supervisions], device=batch.features.device)

    def loss(self, probe: nn.Module, batch: ProbeBatch) -> Tensor:
        return F.cross_entropy(probe(batch.features, batch.lengths), self.targets(batch))

    def evaluate(self, probe: nn.Module, batches: Iterable[ProbeBatch], *, final: bool) -> dict[str, Any]:
        predicted, true = [], []
        for batch in batches:
            predicted += probe(batch.features, batch.lengths).argmax(-1).tolist()
            true += self.targets(batch).tolist()
        by_language: dict[str, list[bool]] = defaultdict(list)
        for p, t in zip(predicted, true):
            by_language[self.labels[t]].append(p == t)
        return {
            "accuracy": accuracy(predicted, true),
            "macro_f1": macro_f1(predicted, true, labels=list(range(len(self.labels)))),
            "chance_accuracy": 1.0 / len(self.labels),
            "per_language": {lang: {"accuracy": sum(v) / len(v), "utterances": len(v)} for lang, v in sorted(by_language.items())},
        }
