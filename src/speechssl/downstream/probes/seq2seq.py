"""Hybrid CTC-attention probe: a frame encoder, a CTC layer and a Transformer decoder on top.

Watanabe et al. 2017 ("Hybrid CTC/attention architecture for end-to-end speech recognition"),
as ESPnet's recipes use it: training mixes the CTC loss with the decoder's cross-entropy, and
decoding is a label-synchronous beam search whose score mixes the decoder's log-probability
of each hypothesis with its CTC *prefix* log-probability. CTC's monotonic alignment keeps the
decoder from looping, skipping or stopping early; the decoder brings a label context that CTC
lacks, and lets a task decode text other than what CTC is trained on (speech translation).

Vocabulary: ids ``0 .. num_outputs - 1`` are the task's CTC vocabulary (0 = the CTC blank,
which the decoder never emits); the decoder has one more id, ``num_outputs``, shared by
``<sos>`` and ``<eos>`` as in ESPnet.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from speechssl.downstream.config import ProbeConfig
from speechssl.downstream.probes.base import padding_mask
from speechssl.downstream.probes.encoders import FrameEncoder

NEG_INF = float("-inf")
PRE_BEAM_RATIO = 1.5
"""Joint beam search scores only the top ``ceil(1.5 * beam)`` decoder tokens of a hypothesis with
CTC (ESPnet's pre-beam): the prefix scorer's cost grows with the number of candidates."""
IGNORE_INDEX = -100


class CTCPrefixScorer:
    """CTC prefix log-probabilities of one utterance, extended one label at a time.

    The prefix probability of a label sequence ``h`` is the total probability of the CTC
    alignments whose collapsed output *starts with* ``h`` (Watanabe et al. 2017, Algorithm 2;
    ESPnet's ``CTCPrefixScore``). It follows from the forward variables of ``h``'s parent
    ``g``: ``r^n_t(h)`` and ``r^b_t(h)`` are the probabilities that frames ``0..t`` collapse to
    ``h`` and that frame ``t`` is ``h``'s last label (n) or a blank (b).

    A *state* holds these variables for ``N`` prefixes as a CPU tensor ``[T, 2, N]`` (index 0
    along dim 1: ``r^n``, index 1: ``r^b``); everything is in log space. The scorer is
    vectorised over prefixes and candidate labels but not over time, where the recursion is
    sequential: that loop runs in numpy, whose per-call overhead is several times lower than
    torch's on such small arrays.
    """

    def __init__(self, log_probs: Tensor, blank: int = 0, eos: int | None = None) -> None:
        """``log_probs [T, V]``: CTC log-probabilities of the utterance's valid frames.
        ``eos``: an id outside the CTC vocabulary that scores a prefix as a complete sequence."""
        if log_probs.dim() != 2 or log_probs.shape[0] < 1:
            raise ValueError(f"CTC log-probabilities must be [T >= 1, V], got {tuple(log_probs.shape)}")
        self.log_probs = log_probs.detach().cpu().numpy()
        self.frames, self.vocab = self.log_probs.shape
        if not 0 <= blank < self.vocab:
            raise ValueError(f"blank id {blank} is outside the CTC vocabulary of {self.vocab} symbols")
        if eos is not None and 0 <= eos < self.vocab:
            raise ValueError(f"eos id {eos} must lie outside the CTC vocabulary of {self.vocab} symbols")
        self.blank = blank
        self.eos = eos

    def initial_state(self, count: int = 1) -> Tensor:
        """State of the empty prefix (``<sos>``), repeated ``count`` times: with no label yet,
        every frame so far must be a blank."""
        state = np.full((self.frames, 2, count), -np.inf, dtype=self.log_probs.dtype)
        state[:, 1] = np.cumsum(self.log_probs[:, self.blank])[:, None]
        return torch.from_numpy(state)

    def full_score(self, state: Tensor) -> Tensor:
        """``[N]``: log-probability that the whole utterance collapses to exactly each prefix."""
        return torch.logaddexp(state[-1, 0], state[-1, 1])

    def extend(self, state: Tensor, last: Tensor, prefix_length: int, candidates: Tensor) -> tuple[Tensor, Tensor]:
        """Prefix log-probabilities of every ``prefix + candidate``.

        ``state [T, 2, N]`` and ``last [N]`` (each prefix's last label, -1 when empty) describe
        ``N`` prefixes of ``prefix_length`` labels each; ``candidates [N, C]`` are label ids, or
        ``eos``, which scores the prefix itself as a complete sequence. Returns
        ``(scores [N, C], states [T, 2, N, C])``; the state of an ``eos`` candidate is meaningless.
        """
        frames = self.frames
        parent = state.numpy()
        labels = candidates.numpy()
        count, width = labels.shape
        is_eos = labels == self.eos
        # eos has no CTC column: read the blank's in its place, its score is replaced below.
        label_lp = self.log_probs[:, np.where(is_eos, self.blank, labels)]  # [T, N, C]
        blank_lp = np.broadcast_to(self.log_probs[:, self.blank, None, None], label_lp.shape)

        # phi_t: probability of the parent prefix up to frame t, from which the candidate may
        # start at t + 1. Repeating the last label needs a blank in between, or CTC merges them.
        parent_total = np.logaddexp(parent[:, 0], parent[:, 1])  # [T, N]
        repeats = (labels == last.numpy()[:, None])[None]
        phi = np.where(repeats, parent[:, 1, :, None], parent_total[:, :, None])  # [T, N, C]

        # work[t] = (r^n_t, phi_t, r^b_t): both sums of the recursion share r^n_{t-1}, and in
        # this order one logaddexp computes (r^n + phi, r^n + r^b) straight into (r^n, r^b).
        work = np.full((frames, 3, count, width), -np.inf, dtype=self.log_probs.dtype)
        work[:, 1] = phi
        emission = np.stack([label_lp, blank_lp], axis=1)  # [T, 2, N, C]
        # h = prefix + candidate has prefix_length + 1 labels and so needs as many frames:
        # its forward variables are zero before frame prefix_length.
        start = max(prefix_length, 1)
        if prefix_length == 0:
            work[0, 0] = label_lp[0]
        for t in range(start, frames):
            current = work[t, 0::2]
            np.logaddexp(work[t - 1, 0:1], work[t - 1, 1:], out=current)
            current += emission[t]

        # Prefix probability: h's last label is emitted for the first time at some frame t,
        # right after any alignment of the parent prefix up to t - 1; what follows is free.
        first_emission = phi[start - 1:frames - 1] + label_lp[start:]
        if prefix_length == 0:
            first_emission = np.concatenate([label_lp[:1], first_emission])
        scores = torch.logsumexp(torch.from_numpy(first_emission), dim=0)  # -inf if the utterance is too short
        scores = torch.where(torch.from_numpy(is_eos), self.full_score(state)[:, None], scores)
        return scores, torch.from_numpy(work[:, 0::2])

    def prefix_score(self, prefix: Sequence[int]) -> float:
        """Log prefix probability of one label sequence (a plain loop over :meth:`extend`)."""
        state, last, score = self.initial_state(), -1, 0.0  # log P(empty prefix) = log 1
        for length, label in enumerate(prefix):
            scores, states = self.extend(state, torch.tensor([last]), length, torch.tensor([[label]]))
            score, state, last = float(scores[0, 0]), states[:, :, :, 0], label
        return score

    def sequence_score(self, labels: Sequence[int]) -> float:
        """Log-probability that the utterance collapses to exactly ``labels``."""
        state, last = self.initial_state(), -1
        for length, label in enumerate(labels):
            _, states = self.extend(state, torch.tensor([last]), length, torch.tensor([[label]]))
            state, last = states[:, :, :, 0], label
        return float(self.full_score(state)[0])


def sinusoidal_positions(length: int, dim: int, device: torch.device | None = None) -> Tensor:
    """``[length, dim]`` sinusoidal position encodings (Vaswani et al. 2017)."""
    position = torch.arange(length, dtype=torch.float32, device=device)[:, None]
    frequency = torch.exp(torch.arange(0, dim, 2, dtype=torch.float32, device=device) * (-math.log(10000.0) / dim))
    encoding = torch.zeros(length, dim, device=device)
    encoding[:, 0::2] = torch.sin(position * frequency)
    encoding[:, 1::2] = torch.cos(position * frequency[: dim // 2])
    return encoding


class CTCAttentionHead(nn.Module):
    """Encoder, then a CTC layer and a Transformer decoder (output kind ``sequence``).

    ``forward`` returns the CTC logits, so every CTC code path (loss, greedy decoding) works on
    it unchanged; :meth:`loss` and :meth:`decode` add the decoder.
    """

    output_kind = "sequence"

    def __init__(self, encoder: FrameEncoder, num_outputs: int, cfg: ProbeConfig) -> None:
        super().__init__()
        if num_outputs < 2:
            raise ValueError(f"a CTC vocabulary needs the blank and at least one label, got {num_outputs} ids")
        if cfg.hidden % cfg.heads:
            raise ValueError(f"decoder heads ({cfg.heads}) must divide the decoder size ({cfg.hidden})")
        self.encoder = encoder
        self.num_outputs = num_outputs
        self.blank = 0
        self.sos_eos = num_outputs
        self.ctc_weight = cfg.ctc_weight
        self.label_smoothing = cfg.label_smoothing
        self.hidden = cfg.hidden

        self.ctc_out = nn.Linear(encoder.out_dim, num_outputs)
        self.memory_proj: nn.Module = (
            nn.Identity() if encoder.out_dim == cfg.hidden else nn.Linear(encoder.out_dim, cfg.hidden)
        )
        self.embed = nn.Embedding(num_outputs + 1, cfg.hidden)
        self.embed_dropout = nn.Dropout(cfg.dropout)
        layer = nn.TransformerDecoderLayer(
            cfg.hidden, cfg.heads, dim_feedforward=4 * cfg.hidden, dropout=cfg.dropout, batch_first=True,
            norm_first=True,
        )
        # Pre-LN layers leave the residual stream unnormalised: a final LayerNorm closes it.
        self.decoder = nn.TransformerDecoder(layer, cfg.decoder_layers, norm=nn.LayerNorm(cfg.hidden))
        self.att_out = nn.Linear(cfg.hidden, num_outputs + 1)

    # ------------------------------------------------------------------ modules
    def forward(self, x: Tensor, lengths: Tensor) -> tuple[Tensor, Tensor]:
        hidden, lengths = self.encoder(x, lengths)
        return self.ctc_out(hidden), lengths

    def _decoder_logits(self, tokens: Tensor, memory: Tensor, memory_padding: Tensor | None) -> Tensor:
        """Decoder logits ``[B, L, V + 1]`` after each input token of ``tokens [B, L]``
        (``<sos>`` first), attending to ``memory [B, T, hidden]``."""
        length = tokens.shape[1]
        embedded = self.embed(tokens) + sinusoidal_positions(length, self.hidden, tokens.device).to(memory.dtype)
        causal = torch.ones(length, length, dtype=torch.bool, device=tokens.device).triu(1)
        # No target padding mask: padding only ever follows a target's tokens, and the causal
        # mask already hides later positions from earlier ones.
        decoded = self.decoder(
            self.embed_dropout(embedded), memory, tgt_mask=causal, tgt_is_causal=True,
            memory_key_padding_mask=memory_padding,
        )
        return self.att_out(decoded)

    # ------------------------------------------------------------------ training
    def _check_labels(self, targets: list[list[int]], what: str) -> None:
        labels = [i for ids in targets for i in ids]
        if labels and not 0 < min(labels) <= max(labels) < self.num_outputs:
            raise ValueError(f"{what} must be label ids in 1..{self.num_outputs - 1} (0 is the CTC blank)")

    def _ctc_loss(self, hidden: Tensor, lengths: Tensor, targets: list[list[int]]) -> Tensor:
        log_probs = F.log_softmax(self.ctc_out(hidden).float(), dim=-1).transpose(0, 1)  # [T, B, V]
        flat = torch.tensor([i for ids in targets for i in ids], dtype=torch.long, device=log_probs.device)
        target_lengths = torch.tensor([len(ids) for ids in targets], dtype=torch.long)
        # zero_infinity: an utterance with fewer frames than labels contributes nothing
        # instead of an inf that poisons the update.
        return F.ctc_loss(log_probs, flat, lengths.cpu(), target_lengths, blank=self.blank, reduction="mean",
                          zero_infinity=True)

    def _teacher_forced_logits(self, hidden: Tensor, lengths: Tensor, targets: list[list[int]]) -> tuple[Tensor, Tensor]:
        """Teacher forcing: the decoder reads ``<sos> y``; returns its logits ``[B, L + 1, V + 1]``
        and the outputs it should predict, ``y <eos>`` (``IGNORE_INDEX`` after the end)."""
        longest = max(len(ids) for ids in targets)
        inputs = torch.full((len(targets), longest + 1), self.sos_eos, dtype=torch.long)
        outputs = torch.full((len(targets), longest + 1), IGNORE_INDEX, dtype=torch.long)
        for row, ids in enumerate(targets):
            inputs[row, 1:len(ids) + 1] = torch.tensor(ids, dtype=torch.long)
            outputs[row, :len(ids)] = torch.tensor(ids, dtype=torch.long)
            outputs[row, len(ids)] = self.sos_eos
        memory = self.memory_proj(hidden)
        # clamp: a fully masked memory row would turn attention into NaNs.
        memory_padding = ~padding_mask(lengths.to(memory.device).clamp(min=1), memory.shape[1])
        logits = self._decoder_logits(inputs.to(memory.device), memory, memory_padding)
        return logits, outputs.to(memory.device)

    def _attention_loss(self, hidden: Tensor, lengths: Tensor, targets: list[list[int]]) -> Tensor:
        logits, outputs = self._teacher_forced_logits(hidden, lengths, targets)
        return F.cross_entropy(
            logits.float().reshape(-1, self.num_outputs + 1), outputs.reshape(-1),
            ignore_index=IGNORE_INDEX, label_smoothing=self.label_smoothing,
        )

    @torch.no_grad()
    def teacher_forced_decode(self, x: Tensor, lengths: Tensor, decoder_targets: list[list[int]]) -> list[list[int]]:
        """The decoder's argmax after each reference prefix, up to its first ``<eos>``: one
        parallel pass instead of a search (ESPnet selects models on this teacher-forced
        accuracy). A cheap, optimistic proxy for dev passes; the test pass searches."""
        hidden, enc_lengths = self.encoder(x, lengths)
        logits, _ = self._teacher_forced_logits(hidden, enc_lengths, decoder_targets)
        logits[..., self.blank] = float("-inf")  # the decoder never writes the CTC blank
        hypotheses = []
        for row, target in zip(logits.argmax(-1).tolist(), decoder_targets):
            row = row[:len(target) + 1]  # later positions read the batch's padding
            hypotheses.append(row[:row.index(self.sos_eos)] if self.sos_eos in row else row)
        return hypotheses

    def loss(
        self, x: Tensor, lengths: Tensor, ctc_targets: list[list[int]], decoder_targets: list[list[int]] | None = None
    ) -> Tensor:
        """``ctc_weight * CTC + (1 - ctc_weight) * attention cross-entropy``.

        ``decoder_targets`` defaults to ``ctc_targets`` (recognition); speech translation trains
        CTC on the source transcript and the decoder on the target text, in one vocabulary.
        """
        if decoder_targets is None:
            decoder_targets = ctc_targets
        if not len(ctc_targets) == len(decoder_targets) == x.shape[0]:
            raise ValueError(f"{x.shape[0]} utterances but {len(ctc_targets)} CTC and {len(decoder_targets)} "
                             "decoder target sequences")
        self._check_labels(ctc_targets, "CTC targets")
        self._check_labels(decoder_targets, "decoder targets")
        hidden, enc_lengths = self.encoder(x, lengths)
        terms: list[Tensor] = []
        if self.ctc_weight > 0:
            terms.append(self.ctc_weight * self._ctc_loss(hidden, enc_lengths, ctc_targets))
        if self.ctc_weight < 1:
            terms.append((1 - self.ctc_weight) * self._attention_loss(hidden, enc_lengths, decoder_targets))
        return torch.stack(terms).sum()

    # ------------------------------------------------------------------ decoding
    @torch.no_grad()
    def decode(
        self, x: Tensor, lengths: Tensor, *, beam_size: int = 4, ctc_weight: float | None = None,
        max_length: int | None = None, length_bonus: float = 0.0,
    ) -> list[list[int]]:
        """Joint CTC-attention beam search; one label sequence (no blank, sos or eos) per utterance.

        A hypothesis ``h`` scores ``(1 - λ) log p_att(h) + λ log p_ctc_prefix(h) + length_bonus |h|``
        with ``λ = ctc_weight`` (default: the training weight); λ = 0 is a pure attention beam
        search, λ = 1 a CTC prefix search. Hypotheses end with ``<eos>`` or after ``max_length``
        labels (at most the utterance's encoder frames). The caller sets eval mode.
        """
        weight = self.ctc_weight if ctc_weight is None else float(ctc_weight)
        if not 0.0 <= weight <= 1.0:
            raise ValueError(f"ctc_weight must lie in [0, 1], got {weight}")
        if beam_size < 1:
            raise ValueError(f"beam_size must be >= 1, got {beam_size}")
        hidden, enc_lengths = self.encoder(x, lengths)
        memory = self.memory_proj(hidden) if weight < 1 else None
        # The prefix scorer's many small operations run faster on the CPU than on an accelerator.
        ctc_log_probs = F.log_softmax(self.ctc_out(hidden).float(), dim=-1).cpu() if weight > 0 else None
        results = []
        for row in range(x.shape[0]):
            frames = max(int(enc_lengths[row]), 1)
            results.append(self._beam_search(
                memory[row:row + 1, :frames] if memory is not None else None,
                ctc_log_probs[row, :frames] if ctc_log_probs is not None else None,
                beam_size=beam_size, weight=weight, length_bonus=length_bonus,
                max_length=max(frames if max_length is None else min(frames, max_length), 1),
            ))
        return results

    def _attention_log_probs(self, memory: Tensor, tokens: Tensor) -> Tensor:
        """``[N, V + 1]`` (CPU) decoder log-probabilities of the next token after each prefix
        ``tokens [N, L]`` (``<sos>`` first) for one utterance's ``memory [1, T, hidden]``."""
        logits = self._decoder_logits(tokens.to(memory.device), memory.expand(tokens.shape[0], -1, -1), None)
        return F.log_softmax(logits[:, -1].float(), dim=-1).cpu()

    def _beam_search(
        self, memory: Tensor | None, ctc_log_probs: Tensor | None, *, beam_size: int, weight: float,
        max_length: int, length_bonus: float,
    ) -> list[int]:
        """Label-synchronous beam search over one utterance (ESPnet's ``BeamSearch``).

        The running hypotheses all have the same length, so they are kept as parallel tensors
        and scored as one batch. At every step each is extended by its candidate tokens, the
        best ``beam_size`` extensions overall survive, and those that chose ``<eos>`` leave the
        beam as finished hypotheses.
        """
        eos, vocab = self.sos_eos, self.num_outputs
        scorer = CTCPrefixScorer(ctc_log_probs, blank=self.blank, eos=eos) if ctc_log_probs is not None else None
        tokens = torch.full((1, 1), eos, dtype=torch.long)  # <sos> then the labels
        scores = torch.zeros(1)  # joint score of each running hypothesis
        ctc_scores = torch.zeros(1)  # its CTC prefix log-probability (0 for the empty prefix)
        ctc_states = scorer.initial_state() if scorer is not None else None
        best_score, best_labels = NEG_INF, None

        for step in range(max_length + 1):
            count = tokens.shape[0]
            if weight < 1:
                assert memory is not None
                att = self._attention_log_probs(memory, tokens)
            else:
                att = torch.zeros(count, vocab + 1)
            att[:, self.blank] = NEG_INF  # the decoder never emits the CTC blank

            if step == max_length:  # the longest hypotheses allowed: they can only end
                candidates = torch.full((count, 1), eos, dtype=torch.long)
            elif weight == 1:  # no decoder to pre-select: CTC scores every label, and eos
                candidates = torch.arange(1, vocab + 1).expand(count, -1)
            else:
                # λ = 0: the best beam extensions overall are among each hypothesis's best beam.
                pre_beam = beam_size if weight == 0 else math.ceil(PRE_BEAM_RATIO * beam_size)
                candidates = att.topk(min(pre_beam, vocab), dim=-1).indices  # vocab = non-blank ids

            joint = scores[:, None] + length_bonus
            if weight < 1:
                joint = joint + (1 - weight) * att.gather(1, candidates)
            if scorer is not None:
                last = tokens[:, -1] if step > 0 else torch.full((count,), -1, dtype=torch.long)
                new_ctc_scores, new_ctc_states = scorer.extend(ctc_states, last, step, candidates)
                joint = joint + weight * (new_ctc_scores - ctc_scores[:, None])

            flat = joint.reshape(-1)
            top_scores, top = flat.topk(min(beam_size, flat.numel()))
            finite = torch.isfinite(top_scores)  # drop extensions CTC rules out (too few frames left)
            top_scores, top = top_scores[finite], top[finite]
            if top.numel() == 0:
                break
            source, column = top // candidates.shape[1], top % candidates.shape[1]
            chosen = candidates[source, column]

            ended = chosen == eos
            for index in torch.nonzero(ended).flatten().tolist():
                if top_scores[index] > best_score:
                    best_score = float(top_scores[index])
                    best_labels = tokens[source[index], 1:].tolist()
            running = ~ended
            if not running.any():
                break
            source, column, chosen = source[running], column[running], chosen[running]
            tokens = torch.cat([tokens[source], chosen[:, None]], dim=1)
            scores = top_scores[running]
            if scorer is not None:
                ctc_scores = new_ctc_scores[source, column]
                ctc_states = new_ctc_states[:, :, source, column]
            # Decoder and CTC prefix log-probabilities only fall as a hypothesis grows, so without
            # a positive length bonus no running hypothesis can overtake the best finished one.
            if length_bonus <= 0 and best_labels is not None and float(scores.max()) <= best_score:
                break
        return best_labels if best_labels is not None else []
