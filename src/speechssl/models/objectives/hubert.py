"""HuBERT pretraining: predict frame-level cluster labels of masked (and unmasked) frames.

Per target set ``t`` (e.g. k-means of MFCCs, or of a previous iteration's layer), the
last layer is projected to ``final_dim`` (one projection per set, fairseq's
``untie_final_proj``), compared by cosine similarity with a learned embedding of every
label, divided by ``logit_temp``, and scored by cross-entropy against the frame's label:

``L = masked_weight * CE(masked frames) + unmasked_weight * CE(unmasked frames)
      + penalty_weight * mean(cnn_features^2)``

each CE a mean over the frames that have a label (padding is -1 and never counts),
averaged over target sets. HuBERT BASE uses masked_weight 1, unmasked_weight 0; at tiny
CPU scale a loss on unmasked frames too keeps the layers from collapsing
(docs/pretraining.md, "What learns on 2 CPU cores").
"""

from __future__ import annotations

import math
from collections import deque
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from speechssl.config import param
from speechssl.errors import ConfigError
from speechssl.models.config import EncoderConfig
from speechssl.models.encoder import SpeechEncoder
from speechssl.models.objectives.base import ObjectiveOutput, PretrainingObjective


@dataclass
class HubertConfig:
    """Hyper-parameters of the HuBERT objective (defaults: the BASE recipe)."""

    targets: list[str] = param(
        default_factory=list,
        help="target-set directories (speechssl targets); one prediction head per set",
    )
    num_classes: list[int] = param(
        default_factory=list,
        help="labels per target set; filled from the target sets when empty",
    )
    mask_prob: float = param(0.8, min=0.0, max=1.0, help="expected share of frames that start a masked span")
    mask_length: int = param(10, min=1, help="frames per masked span")
    min_masks: int = param(2, min=0, help="minimum number of spans per utterance")
    final_dim: int = param(256, min=1, help="width of the space where label embeddings are compared")
    logit_temp: float = param(0.1, gt=0.0, help="temperature dividing the cosine similarities")
    masked_weight: float = param(1.0, min=0.0, help="weight of the loss on masked frames")
    unmasked_weight: float = param(0.0, min=0.0, help="weight of the loss on unmasked frames")
    penalty_weight: float = param(10.0, min=0.0, help="weight of the L2 penalty on CNN features")

    def validate(self) -> None:
        if self.num_classes and self.targets and len(self.num_classes) != len(self.targets):
            raise ConfigError(
                f"hubert.num_classes has {len(self.num_classes)} entries for {len(self.targets)} target sets"
            )
        if any(k < 2 for k in self.num_classes):
            raise ConfigError(f"hubert.num_classes: every target set needs >= 2 labels, got {self.num_classes}")
        if self.masked_weight == 0 and self.unmasked_weight == 0:
            raise ConfigError("hubert.masked_weight and hubert.unmasked_weight are both 0: nothing to learn")


class HubertPretraining(PretrainingObjective):
    """Encoder + per-target-set projection and label embeddings, returning the HuBERT loss.

    Parameter names follow ``transformers``/fairseq where they exist (encoder under
    ``hubert``; ``final_proj``; ``label_embs_concat`` holds every set's embeddings).
    """

    needs_targets = True

    def __init__(self, encoder_cfg: EncoderConfig, objective_cfg: HubertConfig) -> None:
        super().__init__()
        if not objective_cfg.num_classes:
            raise ConfigError("hubert.num_classes is empty: give target sets (hubert.targets) or their label counts")
        self.cfg = objective_cfg
        self.hubert = SpeechEncoder(encoder_cfg)
        sets = len(objective_cfg.num_classes)
        self.final_proj = nn.Linear(encoder_cfg.hidden, objective_cfg.final_dim * sets)
        self.label_embs_concat = nn.Parameter(torch.empty(sum(objective_cfg.num_classes), objective_cfg.final_dim))
        nn.init.uniform_(self.label_embs_concat)
        self._recent: deque[tuple[float, float]] = deque(maxlen=5)
        self._warned = False

    @property
    def encoder(self) -> SpeechEncoder:
        return self.hubert

    def summary(self, record: dict[str, Any]) -> str:
        return (
            f"loss {record['loss']:.3f} masked CE {record['masked_ce']:.3f} acc {record['masked_accuracy']:.3f} "
            f"unmasked acc {record['unmasked_accuracy']:.3f}"
        )

    def check_collapse(self, step: int, record: dict[str, Any]) -> list[str]:
        # Masked accuracy at or below the most frequent label's share means the model predicts
        # the label prior only: the signature of the collapsed runs in docs/pretraining.md.
        # Judged on the mean of the last 5 records (one batch is noisy), said once per episode.
        self._recent.append((record["masked_accuracy"], record.get("majority_share", 0.0)))
        if len(self._recent) < self._recent.maxlen:
            return []
        accuracy = sum(a for a, _ in self._recent) / len(self._recent)
        floor = sum(f for _, f in self._recent) / len(self._recent)
        at_floor = accuracy <= floor
        warn = at_floor and not self._warned
        self._warned = at_floor
        if not warn:
            return []
        return [
            f"WARNING step {step}: masked accuracy {accuracy:.3f} (mean of 5 records) is at the majority-label "
            f"floor {floor:.3f}: the model predicts the label prior only (try hubert.unmasked_weight=1, "
            "a lower hubert.mask_prob or a lower optim.lr)"
        ]

    def forward(
        self, waveforms: Tensor, lengths: Tensor | None, *, num_updates: int = 0, targets: Tensor | None = None
    ) -> ObjectiveOutput:
        """``targets``: [B, T', n_sets] long labels at the encoder's frames, -1 where there is none."""
        cfg = self.cfg
        if targets is None:
            raise ValueError("HubertPretraining needs frame-level targets")
        if targets.dim() == 2:
            targets = targets.unsqueeze(-1)
        sets = len(cfg.num_classes)
        if targets.shape[-1] != sets:
            raise ValueError(f"got {targets.shape[-1]} target sets, the model predicts {sets}")
        out, mask = self.encode_masked(
            waveforms, lengths, mask_prob=cfg.mask_prob, mask_length=cfg.mask_length, min_masks=cfg.min_masks
        )
        valid = ~out.padding_mask
        frames = valid.shape[1]
        if targets.shape[1] < frames:  # labels may stop short of a padded batch's width
            pad = targets.new_full((targets.shape[0], frames - targets.shape[1], sets), -1)
            targets = torch.cat([targets, pad], dim=1)
        targets = targets[:, :frames].masked_fill(~valid.unsqueeze(-1), -1)

        projected = self.final_proj(out.last_hidden_state).float()
        heads = projected.split(cfg.final_dim, dim=-1)
        embeddings = self.label_embs_concat.float().split(list(cfg.num_classes), dim=0)
        stats: dict[str, Tensor] = {}
        loss_sum = projected.new_zeros(())
        sums: dict[str, list[tuple[Tensor, Tensor]]] = {"masked": [], "unmasked": []}
        for t, (head, labels_emb, k) in enumerate(zip(heads, embeddings, cfg.num_classes)):
            labels = targets[..., t]
            if int(labels.max()) >= k:
                raise ValueError(f"target set {t} has label {int(labels.max())} but only {k} classes")
            for name, where, weight in (
                ("masked", mask, cfg.masked_weight),
                ("unmasked", valid & ~mask, cfg.unmasked_weight),
            ):
                # Both losses are computed even at weight 0: their accuracies are the monitors.
                select = where & (labels >= 0)
                logits = _cosine_logits(head[select], labels_emb, cfg.logit_temp)
                gold = labels[select]
                if gold.numel():
                    ce = F.cross_entropy(logits, gold)
                    correct = (logits.argmax(dim=-1) == gold).float().mean()
                else:
                    ce = logits.sum() * 0.0
                    correct = torch.zeros((), device=logits.device)
                if weight > 0:
                    loss_sum = loss_sum + weight * ce
                sums[name].append((ce.detach(), correct.detach()))
        penalty = out.cnn_features.float().pow(2)[valid].mean()
        loss = loss_sum / sets + cfg.penalty_weight * penalty

        labelled = targets[..., 0][valid]
        labelled = labelled[labelled >= 0]
        counts = torch.bincount(labelled, minlength=cfg.num_classes[0]).float()
        for name in ("masked", "unmasked"):
            stats[f"{name}_ce"] = torch.stack([ce for ce, _ in sums[name]]).mean()
            stats[f"{name}_accuracy"] = torch.stack([acc for _, acc in sums[name]]).mean()
        stats.update(
            loss=loss.detach(),
            penalty=penalty.detach(),
            # The accuracy of always predicting this batch's most frequent label of set 0.
            majority_share=(counts.max() / counts.sum().clamp(min=1)).detach(),
            masked_fraction=(mask.sum() / valid.sum().clamp(min=1)).detach().float(),
            masked_frames=mask.sum().detach().float(),
        )
        return ObjectiveOutput(loss=loss, stats=stats)


def _cosine_logits(x: Tensor, embeddings: Tensor, temperature: float) -> Tensor:
    """[N, D] frames against [K, D] label embeddings -> [N, K] cosine similarities / temperature."""
    return F.normalize(x, dim=-1) @ F.normalize(embeddings, dim=-1).t() / temperature


def label_entropy(counts: Tensor) -> float:
    """Entropy (nats) of a label distribution: the CE of a model that knows only the prior."""
    p = counts.float() / counts.sum().clamp(min=1)
    p = p[p > 0]
    return float(-(p * p.log()).sum()) if p.numel() else math.nan
