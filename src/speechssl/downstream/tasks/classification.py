"""Utterance classification: language (LID), emotion (ER) and intent (IC).

One class serves all three; a task names the label it reads. Metrics: accuracy (the
primary one, as SUPERB reports ER and IC), unweighted average recall (IEMOCAP's usual
second number), macro-F1, per-class recall, and chance (the majority class of train).
"""

from __future__ import annotations

from collections import Counter, defaultdict
from typing import Any, Iterable

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from speechssl.downstream.metrics import accuracy, macro_f1, unweighted_average_recall
from speechssl.downstream.tasks.base import LabelGetter, ProbeBatch, Task, custom_label, label_values, require_label
from speechssl.errors import ConfigError


class UtteranceClassification(Task):
    needs = "utterance"
    default_probe = "mean_linear"
    primary_metric = "accuracy"
    higher_is_better = True
    default_lr = 1e-3
    default_epochs = 10
    label_name = ""
    label_of: LabelGetter

    def prepare(self, splits: dict[str, list]) -> None:
        require_label(splits, self.name, self.label_name, self.label_of)
        counts = Counter(label_values(splits["train"], self.label_of))
        self.labels = sorted(counts)
        if len(self.labels) < 2:
            raise ConfigError(f"task {self.name} needs at least two {self.label_name}s in the train split, "
                              f"found {self.labels}")
        self.index = {label: i for i, label in enumerate(self.labels)}
        self.majority = counts.most_common(1)[0][0]
        for split, cuts in splits.items():
            unseen = sorted(set(label_values(cuts, self.label_of)) - set(self.labels))
            if unseen:
                raise ConfigError(f"split {split!r} has {self.label_name}s the train split lacks: {unseen}")

    @property
    def num_outputs(self) -> int:
        return len(self.labels)

    def label_state(self) -> dict[str, Any]:
        return {"labels": self.labels}

    def targets(self, batch: ProbeBatch) -> Tensor:
        return torch.tensor([self.index[str(self.label_of(s))] for s in batch.supervisions],
                            device=batch.features.device)

    def loss(self, probe: nn.Module, batch: ProbeBatch) -> Tensor:
        # Plain cross-entropy on the logits for every probe, embedding probes included: the
        # AM/AAM margins are a speaker-verification device (the asv task uses them).
        return F.cross_entropy(probe(batch.features, batch.lengths), self.targets(batch))

    def evaluate(self, probe: nn.Module, batches: Iterable[ProbeBatch], *, final: bool) -> dict[str, Any]:
        predicted, true, languages = [], [], []
        for batch in batches:
            predicted += probe(batch.features, batch.lengths).argmax(-1).tolist()
            true += self.targets(batch).tolist()
            languages += [s.get("language") or "" for s in batch.supervisions]
        classes = list(range(len(self.labels)))
        majority = self.index[self.majority]
        metrics: dict[str, Any] = {
            "accuracy": accuracy(predicted, true),
            "uar": unweighted_average_recall(predicted, true, labels=classes),
            "macro_f1": macro_f1(predicted, true, labels=classes),
            "chance_accuracy": accuracy([majority] * len(true), true),
            "chance_uar": 1.0 / len({t for t in true}),
        }
        by_class: dict[str, list[bool]] = defaultdict(list)
        for p, t in zip(predicted, true):
            by_class[self.labels[t]].append(p == t)
        metrics["per_class"] = {c: {"recall": sum(v) / len(v), "utterances": len(v)} for c, v in sorted(by_class.items())}
        self.add_breakdowns(metrics, predicted, true, languages)
        return metrics

    def add_breakdowns(self, metrics: dict[str, Any], predicted: list[int], true: list[int], languages: list[str]) -> None:
        """Per-language accuracy when the split has several languages (multilingual statistics)."""
        by_language: dict[str, list[bool]] = defaultdict(list)
        for p, t, lang in zip(predicted, true, languages):
            by_language[lang].append(p == t)
        if len(by_language) > 1:
            metrics["per_language"] = {
                lang: {"accuracy": sum(v) / len(v), "utterances": len(v)} for lang, v in sorted(by_language.items())
            }


class LanguageID(UtteranceClassification):
    """Spoken language identification: one language label per utterance."""

    name = "lid"
    label_name = "language"
    label_of = staticmethod(lambda info: info.get("language"))

    def add_breakdowns(self, metrics, predicted, true, languages) -> None:
        # Per language = per class here: the per-class recall under the name the
        # multilingual statistics read.
        metrics["per_language"] = {
            lang: {"accuracy": v["recall"], "utterances": v["utterances"]} for lang, v in metrics["per_class"].items()
        }


class EmotionRecognition(UtteranceClassification):
    """Emotion recognition (the corpus's 4 prosodic emotions, as IEMOCAP's 4-class setup)."""

    name = "er"
    label_name = "emotion"
    label_of = staticmethod(custom_label("emotion"))


class IntentClassification(UtteranceClassification):
    """Intent classification (SUPERB's IC, one intent per utterance)."""

    name = "ic"
    label_name = "intent"
    label_of = staticmethod(custom_label("intent"))
