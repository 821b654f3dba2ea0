"""wav2vec 2.0 pretraining: span masking, Gumbel product quantizer, contrastive loss.

Loss (per masked frame, averaged over the micro-batch, as seed 004 eq. 1):
``L = L_contrastive + diversity_weight * L_diversity + penalty_weight * L_penalty``.

The contrastive term is computed only on masked frames and in one batched matrix
product: for each utterance the cosine similarities between all its masked context
vectors and all its masked quantized targets form an [M, M] matrix, and the K
distractors of a frame are *gathered* from its row. ``transformers`` instead builds a
[K+1, B, T, D] tensor of distractor vectors for every frame (masked or not) and takes
cosine similarities along it, which is where most of its step time goes.

Parameter names follow ``transformers.Wav2Vec2ForPreTraining`` (``quantizer.weight_proj``,
``quantizer.codevectors``, ``project_q``, ``project_hid``; the encoder under ``wav2vec2``).
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
class ContrastiveConfig:
    """Hyper-parameters of the wav2vec 2.0 objective (defaults: the BASE recipe)."""

    mask_prob: float = param(0.65, min=0.0, max=1.0, help="expected share of frames that start a masked span")
    mask_length: int = param(10, min=1, help="frames per masked span")
    min_masks: int = param(2, min=0, help="minimum number of spans per utterance")
    num_negatives: int = param(100, min=1, help="distractors K per masked frame, from the same utterance")
    logit_temp: float = param(0.1, gt=0.0, help="temperature dividing the cosine similarities")
    codebook_groups: int = param(2, min=1, help="product quantizer groups G")
    codebook_entries: int = param(320, min=2, help="entries V per group")
    codevector_dim: int = param(256, min=1, help="width of a quantized vector (all groups concatenated)")
    final_dim: int = param(256, min=1, help="width of the space where the cosine similarity is taken")
    gumbel_temp_max: float = param(2.0, gt=0.0, help="Gumbel-softmax temperature at update 0")
    gumbel_temp_min: float = param(0.5, gt=0.0, help="floor of the annealed temperature")
    gumbel_temp_decay: float = param(0.999995, gt=0.0, max=1.0, help="temperature factor per update")
    diversity_weight: float = param(0.1, min=0.0, help="weight of the codebook diversity loss")
    penalty_weight: float = param(10.0, min=0.0, help="weight of the L2 penalty on CNN features")
    target_dropout: float = param(0.1, min=0.0, lt=1.0, help="dropout on the quantizer input (fairseq dropout_features)")

    def validate(self) -> None:
        if self.codevector_dim % self.codebook_groups:
            raise ConfigError(
                f"codevector_dim ({self.codevector_dim}) must be divisible by codebook_groups ({self.codebook_groups})"
            )
        if self.gumbel_temp_min > self.gumbel_temp_max:
            raise ConfigError(
                f"gumbel_temp_min ({self.gumbel_temp_min}) must not exceed gumbel_temp_max ({self.gumbel_temp_max})"
            )

    def gumbel_temperature(self, num_updates: int) -> float:
        return max(self.gumbel_temp_max * self.gumbel_temp_decay**num_updates, self.gumbel_temp_min)

    @property
    def chance_loss(self) -> float:
        """Contrastive loss of a model that cannot tell the target from K distractors: log(K+1)."""
        return math.log(self.num_negatives + 1)


class GumbelQuantizer(nn.Module):
    """Product quantizer: G groups of V learned codevectors chosen by a hard Gumbel-softmax."""

    def __init__(self, in_dim: int, groups: int, entries: int, codevector_dim: int) -> None:
        super().__init__()
        self.groups = groups
        self.entries = entries
        self.weight_proj = nn.Linear(in_dim, groups * entries)
        self.codevectors = nn.Parameter(torch.empty(1, groups * entries, codevector_dim // groups).uniform_())
        nn.init.normal_(self.weight_proj.weight, mean=0.0, std=1.0)
        nn.init.zeros_(self.weight_proj.bias)

    def forward(self, x: Tensor, temperature: float) -> tuple[Tensor, Tensor, Tensor]:
        """``x`` [N, in_dim] -> (quantized [N, codevector_dim], codes [N, G], perplexity [G]).

        Training draws one-hot choices with straight-through Gumbel noise; evaluation
        takes the argmax. Perplexity is that of the *softmax* (not Gumbel) probabilities
        averaged over the N frames: the diversity loss pushes it towards V per group.
        """
        n = x.shape[0]
        logits = self.weight_proj(x).view(n, self.groups, self.entries)
        if self.training:
            uniform = torch.rand_like(logits, dtype=torch.float32).clamp_(1e-10, 1.0 - 1e-7)
            gumbel = -torch.log(-torch.log(uniform))
            soft = torch.softmax((logits.float() + gumbel) / temperature, dim=-1).to(logits.dtype)
            # Straight-through: the forward pass uses the noisy argmax, gradients flow through soft.
            codes = soft.argmax(dim=-1)
            choice = F.one_hot(codes, self.entries).to(logits.dtype) - soft.detach() + soft
        else:
            codes = logits.argmax(dim=-1)
            choice = F.one_hot(codes, self.entries).to(logits.dtype)
        book = self.codevectors.view(self.groups, self.entries, -1).to(choice.dtype)
        quantized = torch.einsum("ngv,gvd->ngd", choice, book).reshape(n, -1)

        avg_probs = torch.softmax(logits.float(), dim=-1).mean(dim=0)  # [G, V]
        perplexity = torch.exp(-(avg_probs * torch.log(avg_probs + 1e-7)).sum(dim=-1))
        return quantized, codes, perplexity

    @torch.no_grad()
    def codeword_similarity(self) -> dict[str, float]:
        """Mean/min/max cosine similarity between distinct codewords of the same group (seed 004 Fig. 2G-J)."""
        book = F.normalize(self.codevectors.detach().float().view(self.groups, self.entries, -1), dim=-1)
        sims = book @ book.transpose(1, 2)  # [G, V, V]
        off_diagonal = ~torch.eye(self.entries, dtype=torch.bool, device=sims.device)
        values = sims[:, off_diagonal]
        return {
            "codeword_cos_mean": float(values.mean()),
            "codeword_cos_min": float(values.min()),
            "codeword_cos_max": float(values.max()),
        }


def contrastive_logits(
    context: Tensor,
    targets: Tensor,
    codes: Tensor,
    mask: Tensor,
    num_negatives: int,
    logit_temp: float,
) -> tuple[Tensor, Tensor]:
    """Logits [N, 1 + K] (column 0 = the true target) and a [N] bool of usable rows.

    ``context`` and ``targets`` are [N, D] for the N masked frames in row-major order
    of ``mask`` [B, T]; ``codes`` [N, G] are the quantizer choices. Distractors are
    drawn uniformly with replacement from the *other* masked frames of the same
    utterance; one whose codes equal the target's is the target itself in disguise and
    gets logit -inf (fairseq's ``neg_is_pos``). An utterance with a single masked
    frame has no distractor; its row is not usable.
    """
    batch = mask.shape[0]
    counts = mask.sum(dim=1)  # [B] masked frames per utterance
    width = int(counts.max())
    rows = mask.nonzero(as_tuple=True)[0]  # utterance of each masked frame
    cols = (mask.long().cumsum(dim=1) - 1)[mask]  # its index among that utterance's masked frames

    def pad(x: Tensor) -> Tensor:
        out = x.new_zeros(batch, width, *x.shape[1:])
        out[rows, cols] = x
        return out

    context_n = pad(F.normalize(context.float(), dim=-1))
    targets_n = pad(F.normalize(targets.float(), dim=-1))
    similarity = torch.bmm(context_n, targets_n.transpose(1, 2)) / logit_temp  # [B, M, M]
    frame_rows = similarity[rows, cols]  # [N, M]: this frame against every masked target

    others = (counts[rows] - 1).clamp(min=1)
    draw = (torch.rand(rows.shape[0], num_negatives, device=mask.device) * others[:, None]).long()
    draw = draw + (draw >= cols[:, None]).long()  # skip the frame itself
    draw = draw.clamp(max=width - 1)  # only reached by unusable rows
    positive = frame_rows.gather(1, cols[:, None])
    negative = frame_rows.gather(1, draw)

    code_ids = _combined_codes(codes)
    negative_ids = pad(code_ids)[rows[:, None], draw]
    negative = negative.masked_fill(negative_ids == code_ids[:, None], float("-inf"))
    usable = counts[rows] >= 2
    return torch.cat([positive, negative], dim=1), usable


def _combined_codes(codes: Tensor) -> Tensor:
    """One integer per frame identifying its codeword tuple across all groups."""
    entries = int(codes.max()) + 1 if codes.numel() else 1
    ids = torch.zeros_like(codes[:, 0])
    for g in range(codes.shape[1]):
        ids = ids * entries + codes[:, g]
    return ids


class Wav2Vec2Pretraining(PretrainingObjective):
    """Encoder + quantizer + projection heads, returning the wav2vec 2.0 loss."""

    def __init__(self, encoder_cfg: EncoderConfig, objective_cfg: ContrastiveConfig) -> None:
        super().__init__()
        self.cfg = objective_cfg
        self._watch: CollapseWatch | None = None
        self.wav2vec2 = SpeechEncoder(encoder_cfg)
        self.quantizer = GumbelQuantizer(
            encoder_cfg.conv_dim,
            objective_cfg.codebook_groups,
            objective_cfg.codebook_entries,
            objective_cfg.codevector_dim,
        )
        self.project_q = nn.Linear(objective_cfg.codevector_dim, objective_cfg.final_dim)
        self.project_hid = nn.Linear(encoder_cfg.hidden, objective_cfg.final_dim)
        self.target_dropout = nn.Dropout(objective_cfg.target_dropout)

    @property
    def encoder(self) -> SpeechEncoder:
        return self.wav2vec2

    def monitor_stats(self) -> dict[str, Any]:
        return self.quantizer.codeword_similarity()

    def check_collapse(self, step: int, record: dict[str, Any]) -> list[str]:
        if self._watch is None:  # the trainer calls this only after warmup
            self._watch = CollapseWatch(self.cfg.chance_loss, self.cfg.codebook_entries, after_step=0)
        return self._watch.observe(step, record["contrastive"], record["perplexity"])

    def summary(self, record: dict[str, Any]) -> str:
        ppl = "/".join(f"{p:.0f}" for p in record.get("perplexity", []))
        return (
            f"loss {record['loss']:.3f} ctr {record['contrastive']:.3f} (chance {self.cfg.chance_loss:.3f}) "
            f"acc {record['accuracy']:.2f} ppl {ppl}"
        )

    def forward(
        self, waveforms: Tensor, lengths: Tensor | None, *, num_updates: int = 0, targets: Tensor | None = None
    ) -> ObjectiveOutput:
        cfg = self.cfg
        out, mask = self.encode_masked(
            waveforms, lengths, mask_prob=cfg.mask_prob, mask_length=cfg.mask_length, min_masks=cfg.min_masks
        )
        valid = ~out.padding_mask
        penalty = out.cnn_features.float().pow(2)[valid].mean()

        temperature = cfg.gumbel_temperature(num_updates)
        quantized, codes, perplexity = self.quantizer(self.target_dropout(out.features)[mask], temperature)
        targets = self.project_q(quantized)
        context = self.project_hid(out.last_hidden_state[mask])

        logits, usable = contrastive_logits(context, targets, codes, mask, cfg.num_negatives, cfg.logit_temp)
        logits = logits[usable]
        if logits.shape[0] > 0:
            contrastive = F.cross_entropy(logits, logits.new_zeros(logits.shape[0], dtype=torch.long))
            accuracy = (logits[:, 0] > logits[:, 1:].max(dim=1).values).float().mean()
        else:  # nothing to contrast (all utterances too short): keep the graph, add nothing
            contrastive = context.sum() * 0.0
            accuracy = torch.zeros(())

        total_entries = cfg.codebook_groups * cfg.codebook_entries
        diversity = (total_entries - perplexity.sum()) / total_entries
        loss = contrastive + cfg.diversity_weight * diversity + cfg.penalty_weight * penalty
        return ObjectiveOutput(
            loss=loss,
            stats={
                "loss": loss.detach(),
                "contrastive": contrastive.detach(),
                "diversity": diversity.detach(),
                "penalty": penalty.detach(),
                "accuracy": accuracy.detach(),
                "perplexity": perplexity.detach(),
                "masked_fraction": (mask.sum() / valid.sum().clamp(min=1)).detach().float(),
                "masked_frames": mask.sum().detach().float(),
                "temperature": torch.tensor(temperature),
            },
        )


class CollapseWatch:
    """Warns when the contrastive loss sits at chance, log(K+1), or the codebook collapses.

    Chance means the context vectors are as similar to the distractors as to the
    target: the known plateau of small-scale wav2vec 2.0 runs. Checked on the mean of
    the last ``window`` train records, from ``after_step`` on (warmup is allowed to
    sit there).
    """

    def __init__(self, chance_loss: float, entries: int, after_step: int, window: int = 5) -> None:
        self.chance = chance_loss
        self.entries = entries
        self.after_step = after_step
        self.recent: deque[float] = deque(maxlen=window)
        self.warned_plateau = False
        self.warned_codebook = False

    def observe(self, step: int, contrastive: float, perplexity: list[float]) -> list[str]:
        warnings: list[str] = []
        self.recent.append(contrastive)
        if step < self.after_step or len(self.recent) < self.recent.maxlen:
            return warnings
        mean = sum(self.recent) / len(self.recent)
        at_chance = abs(mean - self.chance) < 0.05 * self.chance / 4.6  # ~0.05 nats at K=100
        if at_chance and not self.warned_plateau:
            warnings.append(
                f"WARNING step {step}: contrastive loss {mean:.3f} sits at chance log(K+1) = {self.chance:.3f}; "
                "the model cannot tell targets from distractors (see docs/pretraining.md, 'The plateau')"
            )
        self.warned_plateau = at_chance
        collapsed = min(perplexity) < max(2.0, 0.02 * self.entries)
        if collapsed and not self.warned_codebook:
            warnings.append(
                f"WARNING step {step}: codebook perplexity {min(perplexity):.1f} of {self.entries} entries: "
                "the quantizer is collapsing onto a few codewords (raise objective.diversity_weight?)"
            )
        self.warned_codebook = collapsed
        return warnings
