"""Sequence tasks: every task whose output is a symbol sequence, trained with CTC (or hybrid
CTC-attention with a ``*_ctcattn`` probe).

- ``asr``: characters of the transcript; CER and WER.
- ``asr_lid``: ML-SUPERB's joint multilingual ASR + LID: ``[lang] text``, the language tag
  as the first symbol; CER, LID accuracy and their spread across languages and datasets
  scored as ML-SUPERB 2.0 does (:mod:`speechssl.benchmark.mlsuperb`).
- ``pr``: IPA phones; phone error rate (PER).
- ``sf``: SUPERB's slot filling: characters with slot tags around slot values; slot-type F1
  and slot-value CER.
- ``sa``: syntactic analysis as LeBenchmark 2.0 frames it (words and their part of speech
  from speech): characters with a POS tag after every word; POS accuracy and WER.
- ``ast``: speech translation: the decoder writes the target language's characters (CTC,
  when used, is trained on the source transcript); BLEU and chrF.

A task says what the targets are (:meth:`SequenceTask.ctc_symbols`,
:meth:`SequenceTask.decoder_symbols`) and how to score decoded symbols; training and
decoding are shared here. Every metric comes with its *chance* value: the score of the most
frequent training target written for every utterance (a template-heavy corpus makes that a
real baseline, not 0).
"""

from __future__ import annotations

import re
from collections import Counter, defaultdict
from pathlib import Path
from typing import Any, Iterable

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from speechssl.benchmark.mlsuperb import JointItem, format_tag, parse_tag, score_joint
from speechssl.data.collate import supervision_info
from speechssl.downstream.metrics import (
    error_rates,
    pos_scores,
    slot_filling_scores,
    token_error_rate,
    translation_scores,
)
from speechssl.downstream.tagging import parse_slots, parse_tagged_words, plain_text, pos_symbols, slot_symbols
from speechssl.downstream.tasks.base import LabelGetter, ProbeBatch, Task, custom_label, require_label
from speechssl.downstream.text import SymbolTokenizer, TextNormalizer, ctc_beam_decode, ctc_greedy_decode
from speechssl.errors import ConfigError

Symbols = list[str]


class SequenceTask(Task):
    needs = "frames"
    default_probe = "bilstm_ctc"
    higher_is_better = False
    default_lr = 1e-3
    default_epochs = 20
    label_name = "transcript"
    label_of: LabelGetter = staticmethod(lambda info: info.get("text"))
    decode_ctc_weight: float | None = None
    """CTC weight of joint beam search for ``*_ctcattn`` probes (None = the probe's own)."""
    word_lm: bool = False
    """Decoded symbols are characters with " " between words, so a word n-gram LM can
    rescore CTC beams (``asr.lm_order``)."""

    # ------------------------------------------------------------ what a task defines
    def ctc_symbols(self, info: dict[str, Any]) -> Symbols:
        raise NotImplementedError

    def decoder_symbols(self, info: dict[str, Any]) -> Symbols:
        """What is decoded and scored; the CTC targets unless the task translates."""
        return self.ctc_symbols(info)

    def score(self, refs: list[Symbols], hyps: list[Symbols], infos: list[dict[str, Any]]) -> dict[str, Any]:
        raise NotImplementedError

    # ------------------------------------------------------------ shared
    def prepare(self, splits: dict[str, list]) -> None:
        require_label(splits, self.name, self.label_name, self.label_of)
        self.normalize = TextNormalizer(lowercase=self.cfg.asr.lowercase,
                                        remove_punctuation=self.cfg.asr.remove_punctuation)
        train_targets: list[Symbols] = []
        for split, cuts in splits.items():
            for cut in cuts:
                info = supervision_info(cut)
                targets = (self.ctc_symbols(info), self.decoder_symbols(info))
                if not all(targets):
                    raise ConfigError(f"cut {cut.id!r} in split {split!r} has an empty {self.label_name} "
                                      "after normalisation")
                if split == "train":
                    train_targets += targets
        self.tokenizer = SymbolTokenizer.from_sequences(train_targets)
        decoded = Counter(tuple(self.decoder_symbols(supervision_info(c))) for c in splits["train"])
        self.most_frequent_target = list(decoded.most_common(1)[0][0])
        # An attention decoder that has not learnt <eos> yet would otherwise run to one symbol
        # per encoder frame on every dev utterance (minutes per pass on CPU).
        self.max_decode_length = int(1.5 * max(len(t) for t in decoded)) + 10
        self.lm = None
        if self.cfg.asr.lm_order:
            if not self.word_lm:
                raise ConfigError(f"asr.lm_order: word n-gram LM decoding applies to tasks that write words "
                                  f"(asr, asr_lid), not {self.name}")
            if self.cfg.asr.lm_order < 2:
                raise ConfigError("asr.lm_order: use 2 or more (KenLM cannot load a unigram model); 0 = no LM")
            from speechssl.lm import NGramModel

            self.lm = NGramModel.fit((self.lm_words(supervision_info(c)) for c in splits["train"]),
                                     order=self.cfg.asr.lm_order)

    def lm_words(self, info: dict[str, Any]) -> list[str]:
        """The words an n-gram LM is estimated on: the decoded symbols split at spaces."""
        return "".join(self.decoder_symbols(info)).split()

    @property
    def num_outputs(self) -> int:
        return len(self.tokenizer)

    def label_state(self) -> dict[str, Any]:
        return {"tokenizer": self.tokenizer.to_dict()}

    def _encode(self, batch: ProbeBatch, symbols) -> list[list[int]]:
        return [self.tokenizer.encode(symbols(s)) for s in batch.supervisions]

    def loss(self, probe: nn.Module, batch: ProbeBatch) -> Tensor:
        ctc_targets = self._encode(batch, self.ctc_symbols)
        if getattr(probe, "output_kind", "frames") == "sequence":
            return probe.loss(batch.features, batch.lengths, ctc_targets, self._encode(batch, self.decoder_symbols))
        logits, lengths = probe(batch.features, batch.lengths)
        targets = torch.tensor([i for ids in ctc_targets for i in ids], dtype=torch.long)
        target_lengths = torch.tensor([len(ids) for ids in ctc_targets], dtype=torch.long)
        log_probs = F.log_softmax(logits.float(), dim=-1).transpose(0, 1)  # [T, B, V]
        # zero_infinity: an utterance with fewer frames than symbols (possible for coarse
        # upstreams) contributes nothing instead of an inf that poisons the update.
        return F.ctc_loss(log_probs, targets, lengths.cpu(), target_lengths, blank=0, reduction="mean",
                          zero_infinity=True)

    def decode(self, probe: nn.Module, batch: ProbeBatch, beam: int, *, final: bool = True) -> list[Symbols]:
        if getattr(probe, "output_kind", "frames") == "sequence":
            if not final:
                # Dev passes of an attention decoder: teacher-forced argmax (one parallel pass;
                # a search per utterance per epoch costs minutes on CPU).
                return [self.tokenizer.decode(ids) for ids in probe.teacher_forced_decode(
                    batch.features, batch.lengths, self._encode(batch, self.decoder_symbols))]
            ids = probe.decode(batch.features, batch.lengths, beam_size=beam, ctc_weight=self.decode_ctc_weight,
                               max_length=self.max_decode_length)
        else:
            logits, lengths = probe(batch.features, batch.lengths)
            log_probs = F.log_softmax(logits.float(), dim=-1).cpu()
            if beam > 1:
                ids = ctc_beam_decode(log_probs, lengths.cpu(), beam)
            else:
                ids = ctc_greedy_decode(log_probs, lengths.cpu())
        return [self.tokenizer.decode(seq) for seq in ids]

    # Shallow-fusion weights tried on dev when asr.lm_tune is on.
    LM_ALPHAS = (0.0, 0.25, 0.5, 1.0)
    LM_BETAS = (0.0, 1.0, 2.0)

    def _lm_decoder_for_run(self):
        if getattr(self, "_lm_decoder", None) is None:
            import tempfile

            from speechssl.downstream.lm_decode import LMDecoder

            labels = ["", "\u2047", *self.tokenizer.vocab[2:]]  # blank, <unk> as a symbol no text contains
            with tempfile.TemporaryDirectory(prefix="speechssl-lm-") as tmp:
                arpa = Path(tmp) / "lm.arpa"
                self.lm.write_arpa(arpa)
                # kenlm reads the whole ARPA file into memory: the file can go afterwards.
                self._lm_decoder = LMDecoder(labels, arpa, alpha=self.cfg.asr.lm_alpha, beta=self.cfg.asr.lm_beta,
                                             beam_width=self.cfg.asr.beam_size)
        return self._lm_decoder

    def _ctc_log_probs(self, probe: nn.Module, batch: ProbeBatch) -> list:
        logits, lengths = probe(batch.features, batch.lengths)
        log_probs = F.log_softmax(logits.float(), dim=-1).cpu().numpy()
        return [lp[:n] for lp, n in zip(log_probs, lengths.tolist())]

    def decode_with_lm(self, probe: nn.Module, batch: ProbeBatch) -> list[Symbols]:
        """CTC beam search with the task's word n-gram LM fused in (pyctcdecode + kenlm)."""
        texts = self._lm_decoder_for_run().decode_batch(self._ctc_log_probs(probe, batch))
        return [self.symbols_of_text(t) for t in texts]

    def tune_decoding(self, probe: nn.Module, dev_batches: Iterable[ProbeBatch]) -> dict[str, Any] | None:
        """With an LM and ``asr.lm_tune``: the (alpha, beta) of the grid with the best dev score."""
        self.lm_tuning = None
        if self.lm is None or not self.cfg.asr.lm_tune or getattr(probe, "output_kind", "frames") == "sequence":
            return None
        log_probs, refs, infos = [], [], []
        for batch in dev_batches:
            log_probs += self._ctc_log_probs(probe, batch)
            refs += [self.decoder_symbols(s) for s in batch.supervisions]
            infos += batch.supervisions
        decoder = self._lm_decoder_for_run()
        grid = []
        for alpha in self.LM_ALPHAS:
            for beta in self.LM_BETAS:
                decoder.set_weights(alpha, beta)
                hyps = [self.symbols_of_text(t) for t in decoder.decode_batch(log_probs)]
                grid.append({"alpha": alpha, "beta": beta, "dev": float(self.score(refs, hyps, infos)[self.primary_metric])})
        best = grid[0]
        for point in grid[1:]:
            if self.is_better(point["dev"], best["dev"]):
                best = point
        decoder.set_weights(best["alpha"], best["beta"])
        self.lm_tuning = {"alpha": best["alpha"], "beta": best["beta"], f"dev_{self.primary_metric}": best["dev"],
                          "grid": grid}
        return self.lm_tuning

    def symbols_of_text(self, text: str) -> Symbols:
        """Decoded text back to symbols (characters; a task with multi-character symbols overrides)."""
        return list(text)

    def evaluate(self, probe: nn.Module, batches: Iterable[ProbeBatch], *, final: bool) -> dict[str, Any]:
        # Dev passes decode greedily (fast model selection); the test pass adds beam search
        # and, with asr.lm_order, beam search with the n-gram LM.
        beam = self.cfg.asr.beam_size if final else 1
        use_lm = final and self.lm is not None and getattr(probe, "output_kind", "frames") != "sequence"
        refs, greedy, beamed, with_lm, infos = [], [], [], [], []
        for batch in batches:
            refs += [self.decoder_symbols(s) for s in batch.supervisions]
            infos += batch.supervisions
            greedy += self.decode(probe, batch, 1, final=final)
            if beam > 1:
                beamed += self.decode(probe, batch, beam)
            if use_lm:
                with_lm += self.decode_with_lm(probe, batch)
        metrics = self.score(refs, greedy, infos)
        chance = self.score(refs, [self.most_frequent_target] * len(refs), infos)
        metrics[f"chance_{self.primary_metric}"] = chance[self.primary_metric]
        if beam > 1:
            metrics.update({f"{k}_beam": v for k, v in self.score(refs, beamed, infos).items() if isinstance(v, float)})
            metrics["beam_size"] = beam
        if use_lm:
            metrics.update({f"{k}_lm": v for k, v in self.score(refs, with_lm, infos).items() if isinstance(v, float)})
            decoder = self._lm_decoder_for_run()
            metrics["lm"] = {"order": self.cfg.asr.lm_order, "alpha": decoder.alpha, "beta": decoder.beta,
                             "beam_size": self.cfg.asr.beam_size, "tuned_on_dev": getattr(self, "lm_tuning", None)}
        metrics["examples"] = [{"ref": self.show(r), "hyp": self.show(h)} for r, h in list(zip(refs, greedy))[:5]]
        return metrics

    def show(self, symbols: Symbols) -> str:
        """A readable rendering of a symbol sequence (examples in results)."""
        return "".join(symbols)

    def per_language(self, refs: list[Symbols], hyps: list[Symbols], infos: list[dict[str, Any]],
                     rates) -> dict[str, Any] | None:
        """``rates(refs, hyps)`` per language when the split has several."""
        by_language: dict[str, list[int]] = defaultdict(list)
        for i, info in enumerate(infos):
            by_language[info.get("language") or ""].append(i)
        if len(by_language) < 2:
            return None
        return {lang: {**rates([refs[i] for i in idx], [hyps[i] for i in idx]), "utterances": len(idx)}
                for lang, idx in sorted(by_language.items())}

    def normalized_words(self, info: dict[str, Any]) -> list[tuple[int, str]]:
        """(index of the corpus word, normalised word) pairs; a word that normalisation splits
        ("trente-et-un" -> "trente et un") gives several pairs with its index, one it empties
        gives none."""
        words = (info.get("custom") or {}).get("words") or []
        return [(i, piece) for i, word in enumerate(words) for piece in self.normalize(word).split()]


def _char_rates(refs: list[Symbols], hyps: list[Symbols]) -> dict[str, float]:
    return error_rates(["".join(r) for r in refs], ["".join(h) for h in hyps])


class SpeechRecognition(SequenceTask):
    """Speech recognition: CTC over characters, a vocabulary built from the train transcripts."""

    name = "asr"
    primary_metric = "cer"
    word_lm = True

    def ctc_symbols(self, info: dict[str, Any]) -> Symbols:
        return list(self.normalize(info.get("text") or ""))

    def score(self, refs, hyps, infos) -> dict[str, Any]:
        metrics: dict[str, Any] = dict(_char_rates(refs, hyps))
        breakdown = self.per_language(refs, hyps, infos, _char_rates)
        if breakdown:
            metrics["per_language"] = breakdown
        return metrics


class JointRecognition(SequenceTask):
    """ML-SUPERB's joint multilingual ASR + LID: the model writes ``[lang] text``.

    The tag is one symbol, followed by a space, so one CTC (or CTC-attention) decoder
    predicts the language first and then the characters (ESPnet's ``egs2/ml_superb``). A
    hypothesis without a leading tag -- an empty one included -- is a wrong language and
    its text is scored as it is. Scores (:func:`speechssl.benchmark.mlsuperb.score_joint`):
    per-utterance CER averaged per language, then over languages (``cer``), the sample std
    and worst-N mean across languages, macro LID accuracy, and the same per dataset
    (``custom["dataset"]`` of the utterances) for the dataset-range statistic.
    """

    name = "asr_lid"
    primary_metric = "cer"
    word_lm = True

    def prepare(self, splits: dict[str, list]) -> None:
        require_label(splits, self.name, "language", lambda info: info.get("language"))
        super().prepare(splits)

    def ctc_symbols(self, info: dict[str, Any]) -> Symbols:
        text = self.normalize(info.get("text") or "")
        return [format_tag(info.get("language") or ""), " ", *text] if text else []

    def symbols_of_text(self, text: str) -> Symbols:
        tag = re.match(r"\[[^\[\]\s]+\]", text)
        return [tag.group(0), *text[tag.end():]] if tag else list(text)

    def score(self, refs, hyps, infos) -> dict[str, Any]:
        items = [JointItem(language=info.get("language") or "", reference=parse_tag("".join(ref))[1],
                           hypothesis="".join(hyp), dataset=str((info.get("custom") or {}).get("dataset") or ""))
                 for ref, hyp, info in zip(refs, hyps, infos)]
        return score_joint(items, worst_n=self.cfg.asr.worst_languages)

    def show(self, symbols: Symbols) -> str:
        return "".join(symbols)


def _phone_rates(refs: list[Symbols], hyps: list[Symbols]) -> dict[str, float]:
    return {"per": token_error_rate(refs, hyps)}


class PhoneRecognition(SequenceTask):
    """Phone recognition: CTC over the IPA phones of the corpus's transcription; PER."""

    name = "pr"
    primary_metric = "per"
    label_name = "phone transcription"
    label_of = staticmethod(custom_label("phonemes"))

    def ctc_symbols(self, info: dict[str, Any]) -> Symbols:
        return str((info.get("custom") or {}).get("phonemes") or "").split()

    def score(self, refs, hyps, infos) -> dict[str, Any]:
        metrics: dict[str, Any] = dict(_phone_rates(refs, hyps))
        breakdown = self.per_language(refs, hyps, infos, _phone_rates)
        if breakdown:
            metrics["per_language"] = breakdown
        return metrics

    def show(self, symbols: Symbols) -> str:
        return " ".join(symbols)


class SlotFilling(SequenceTask):
    """SUPERB's slot filling: the transcript with every slot value enclosed in its type's tags."""

    name = "sf"
    primary_metric = "slot_type_f1"
    higher_is_better = True
    label_name = "word/slot annotation"
    label_of = staticmethod(custom_label("words"))

    def ctc_symbols(self, info: dict[str, Any]) -> Symbols:
        kept = self.normalized_words(info)
        slots = []
        for slot in (info.get("custom") or {}).get("slots") or []:
            inside = [k for k, (index, _) in enumerate(kept) if slot["start_word"] <= index < slot["end_word"]]
            if inside:
                slots.append({"type": slot["type"], "start_word": inside[0], "end_word": inside[-1] + 1})
        return slot_symbols([w for _, w in kept], slots)

    def score(self, refs, hyps, infos) -> dict[str, Any]:
        metrics: dict[str, Any] = slot_filling_scores([parse_slots(r) for r in refs], [parse_slots(h) for h in hyps])
        metrics.update(error_rates([plain_text(r) for r in refs], [plain_text(h) for h in hyps]))
        return metrics


class SyntacticAnalysis(SequenceTask):
    """Words and their universal part-of-speech tags from speech (LeBenchmark 2.0's SA task
    without dependency heads, which the synthetic corpus does not write)."""

    name = "sa"
    primary_metric = "pos_accuracy"
    higher_is_better = True
    label_name = "word/POS annotation"
    label_of = staticmethod(custom_label("pos"))

    def ctc_symbols(self, info: dict[str, Any]) -> Symbols:
        tags = (info.get("custom") or {}).get("pos") or []
        kept = self.normalized_words(info)
        return pos_symbols([w for _, w in kept], [tags[i] for i, _ in kept])

    def score(self, refs, hyps, infos) -> dict[str, Any]:
        return pos_scores([parse_tagged_words(r) for r in refs], [parse_tagged_words(h) for h in hyps])


class SpeechTranslation(SequenceTask):
    """Speech translation from the source language(s) to the target language.

    The attention decoder writes the target's characters; the CTC branch of the hybrid
    probe learns the *source* transcript (ESPnet's auxiliary ASR CTC for speech
    translation), so joint CTC decoding is off (CTC scores a different text).
    """

    name = "ast"
    needs = "sequence"
    default_probe = "bilstm_ctcattn"
    primary_metric = "bleu"
    higher_is_better = True
    default_epochs = 30
    label_name = "translation"
    decode_ctc_weight = 0.0

    def __init__(self, cfg, data_dir) -> None:
        super().__init__(cfg, data_dir)
        self.source = [s.strip() for s in cfg.ast.source.split(",") if s.strip()]
        self.target = cfg.ast.target
        self.label_of = lambda info: ((info.get("custom") or {}).get("translations") or {}).get(self.target)

    def select(self, cuts: list) -> list:
        if "*" in self.source:
            return [c for c in cuts if supervision_info(c).get("language") != self.target]
        return [c for c in cuts if supervision_info(c).get("language") in self.source]

    def prepare(self, splits: dict[str, list]) -> None:
        for split, cuts in splits.items():
            if not cuts:
                raise ConfigError(f"task ast: split {split!r} has no utterances in source language(s) "
                                  f"{','.join(self.source)} (ast.source)")
        super().prepare(splits)

    def ctc_symbols(self, info: dict[str, Any]) -> Symbols:
        return list(self.normalize(info.get("text") or ""))

    def decoder_symbols(self, info: dict[str, Any]) -> Symbols:
        return list(self.normalize(self.label_of(info) or ""))

    def score(self, refs, hyps, infos) -> dict[str, Any]:
        return translation_scores(["".join(r) for r in refs], ["".join(h) for h in hyps])
