"""Speech recognition: CTC over characters, a tokenizer built from the train transcripts."""

from __future__ import annotations

from collections import defaultdict
from typing import Any, Iterable

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from speechssl.downstream.metrics import error_rates
from speechssl.downstream.tasks.base import ProbeBatch, Task, require_label
from speechssl.downstream.text import CharTokenizer, TextNormalizer, ctc_beam_decode, ctc_greedy_decode
from speechssl.errors import ConfigError


class SpeechRecognition(Task):
    name = "asr"
    needs = "frames"
    default_probe = "bilstm_ctc"
    primary_metric = "cer"
    higher_is_better = False
    default_lr = 1e-3
    default_epochs = 20

    @staticmethod
    def _text(sup) -> str | None:
        return sup.text

    def prepare(self, splits: dict[str, list]) -> None:
        require_label(splits, self.name, "transcript", self._text)
        self.normalize = TextNormalizer(
            lowercase=self.cfg.asr.lowercase, remove_punctuation=self.cfg.asr.remove_punctuation
        )
        for split, cuts in splits.items():
            for cut in cuts:
                if not self.normalize(cut.supervisions[0].text):
                    raise ConfigError(f"cut {cut.id!r} in split {split!r} has an empty transcript after normalisation")
        self.tokenizer = CharTokenizer.from_texts(self.normalize(c.supervisions[0].text) for c in splits["train"])

    @property
    def num_outputs(self) -> int:
        return len(self.tokenizer)

    def label_state(self) -> dict[str, Any]:
        return {"tokenizer": self.tokenizer.to_dict()}

    def loss(self, probe: nn.Module, batch: ProbeBatch) -> Tensor:
        logits, lengths = probe(batch.features, batch.lengths)
        encoded = [self.tokenizer.encode(self.normalize(s["text"])) for s in batch.supervisions]
        targets = torch.tensor([i for ids in encoded for i in ids], dtype=torch.long)
        target_lengths = torch.tensor([len(ids) for ids in encoded], dtype=torch.long)
        log_probs = F.log_softmax(logits.float(), dim=-1).transpose(0, 1)  # [T, B, V]
        # zero_infinity: an utterance with fewer frames than characters (possible for
        # coarse upstreams) contributes nothing instead of an inf that poisons the update.
        return F.ctc_loss(
            log_probs, targets, lengths.cpu(), target_lengths, blank=0, reduction="mean", zero_infinity=True
        )

    def evaluate(self, probe: nn.Module, batches: Iterable[ProbeBatch], *, final: bool) -> dict[str, Any]:
        beam = self.cfg.asr.beam_size if final else 1
        refs, greedy, beamed, languages = [], [], [], []
        for batch in batches:
            logits, lengths = probe(batch.features, batch.lengths)
            log_probs = F.log_softmax(logits.float(), dim=-1).cpu()
            greedy += [self.tokenizer.decode(ids) for ids in ctc_greedy_decode(log_probs, lengths.cpu())]
            if beam > 1:
                beamed += [self.tokenizer.decode(ids) for ids in ctc_beam_decode(log_probs, lengths.cpu(), beam)]
            refs += [self.normalize(s["text"]) for s in batch.supervisions]
            languages += [s.get("language") or "" for s in batch.supervisions]
        rates = error_rates(refs, greedy)
        metrics: dict[str, Any] = {"cer": rates["cer"], "wer": rates["wer"]}
        if beam > 1:
            beam_rates = error_rates(refs, beamed)
            metrics.update({"cer_beam": beam_rates["cer"], "wer_beam": beam_rates["wer"], "beam_size": beam})
        by_language: dict[str, list[int]] = defaultdict(list)
        for i, lang in enumerate(languages):
            by_language[lang].append(i)
        if len(by_language) > 1:
            metrics["per_language"] = {
                lang: {**error_rates([refs[i] for i in idx], [greedy[i] for i in idx]), "utterances": len(idx)}
                for lang, idx in sorted(by_language.items())
            }
        metrics["examples"] = [{"ref": r, "hyp": h} for r, h in list(zip(refs, greedy))[:5]]
        return metrics
