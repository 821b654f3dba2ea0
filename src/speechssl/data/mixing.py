"""Denoising data for WavLM / WavLabLM-style pretraining: mix an interferer into some utterances of a batch.

With probability ``prob`` per utterance (the *primary*), :class:`BatchMixer` adds a
segment of at most ``max_segment_ratio`` of the primary's length, at a random place
inside its valid samples, taken from either

* another utterance of the same batch (share ``utterance_share``), at a primary /
  interferer energy ratio drawn from U(``utterance_db``) dB, or
* a noise clip of a :class:`NoiseBank`, at an SNR drawn from U(``noise_snr_db``) dB.

Only waveforms change: the targets (pseudo-labels, k-means units, transcripts) stay
those of the primary utterance, which is what makes this a denoising task.

The level is set by energy per sample, as WavLM does: the interferer segment is
scaled by ``sqrt(P_primary / (P_segment * 10 ** (dB / 10)))``, where ``P_primary`` is
the mean power of the primary over *all* its valid samples and ``P_segment`` that of
the interferer segment before scaling. Using the whole primary (not only the region
under the segment) keeps the level stable when the segment lands on a pause.

Defaults: ``prob=0.0`` (off, so an existing recipe is unchanged); WavLM's recipe mixes
20 % of utterances (``prob=0.2``) with an interferer of up to half the utterance and
the dB ranges here. The utterance/noise split is not fixed by WavLabLM's description
(seed 003); ``utterance_share=0.5`` is this toolkit's choice.
"""

from __future__ import annotations

import math
from collections import OrderedDict
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor

from speechssl.config import param
from speechssl.data.audio import TARGET_SAMPLE_RATE as SAMPLE_RATE
from speechssl.data.audio import load_audio, load_cut_audio
from speechssl.errors import ConfigError

_EPS = 1e-10


@dataclass
class MixingConfig:
    prob: float = param(0.0, min=0.0, max=1.0,
                        help="probability that an utterance gets an interferer (0 = off; WavLM mixes 20%: 0.2)")
    utterance_share: float = param(0.5, min=0.0, max=1.0,
                                   help="of the mixed utterances, the share whose interferer is another utterance "
                                        "of the batch; the rest get a noise clip (all utterances without noise_dir)")
    max_segment_ratio: float = param(0.5, gt=0.0, max=1.0,
                                     help="longest interferer segment, as a fraction of the primary's length")
    utterance_db: tuple[float, float] = param((-5.0, 5.0), min=-60.0, max=60.0,
                                              help="energy ratio primary/interferer (dB) for utterance mixing, uniform")
    noise_snr_db: tuple[float, float] = param((-5.0, 20.0), min=-60.0, max=60.0,
                                              help="SNR primary/noise (dB) for noise mixing, uniform")
    noise_dir: str = param("", help="manifest directory of noise clips, e.g. data/synth/noise ('' = utterance "
                                    "mixing only)")
    noise_split: str = param("train", help="split of noise_dir to draw from (the synthetic corpus: train)")
    noise_cache_mb: float = param(64.0, gt=0.0, help="most decoded noise audio kept in memory")

    def validate(self) -> None:
        for name in ("utterance_db", "noise_snr_db"):
            low, high = getattr(self, name)
            if low > high:
                raise ConfigError(f"{name}: low end above high end in {[low, high]}")


class NoiseBank:
    """Noise clips of a manifest split, decoded lazily into an LRU cache of at most ``cache_mb``.

    A clip larger than the whole cache is never cached: a request reads only the
    segment it needs from the file (or the whole clip, when it has to be looped).
    """

    def __init__(self, cuts: Any, *, cache_mb: float = 64.0) -> None:
        self._cuts = list(cuts)
        if not self._cuts:
            raise ConfigError("the noise bank is empty")
        self._budget = int(cache_mb * 2**20)
        self._cache: OrderedDict[int, np.ndarray] = OrderedDict()
        self._cached_bytes = 0

    @classmethod
    def from_manifest(cls, data_dir: str | Path, split: str = "train", *, cache_mb: float = 64.0) -> NoiseBank:
        from speechssl.data.manifests import load_cuts

        return cls(load_cuts(data_dir, split), cache_mb=cache_mb)

    def __len__(self) -> int:
        return len(self._cuts)

    @property
    def cached_bytes(self) -> int:
        return self._cached_bytes

    def segment(self, num_samples: int, u_clip: float, u_start: float) -> tuple[np.ndarray, str]:
        """``num_samples`` of one clip, chosen by two uniforms in [0, 1): the clip and where to start.

        A clip shorter than ``num_samples`` is looped; a longer one is read without wrapping.
        """
        index = min(int(u_clip * len(self._cuts)), len(self._cuts) - 1)
        cut = self._cuts[index]
        total = int(round(cut.duration * SAMPLE_RATE))
        if total * 4 > self._budget and total > num_samples:
            start = min(int(u_start * (total - num_samples + 1)), total - num_samples)
            source = cut.recording.sources[0].source
            wave = load_audio(source, offset=cut.start + start / SAMPLE_RATE, duration=num_samples / SAMPLE_RATE,
                              min_seconds=0.0)
            if len(wave) < num_samples:  # rounding of the offset/duration in seconds
                wave = np.pad(wave, (0, num_samples - len(wave)), mode="wrap")
            return wave[:num_samples], cut.id
        wave = self._clip(index)
        total = len(wave)
        if total >= num_samples:
            start = min(int(u_start * (total - num_samples + 1)), total - num_samples)
            return wave[start:start + num_samples], cut.id
        start = min(int(u_start * total), total - 1)
        return wave[(start + np.arange(num_samples)) % total], cut.id

    def _clip(self, index: int) -> np.ndarray:
        if index in self._cache:
            self._cache.move_to_end(index)
            return self._cache[index]
        wave = load_cut_audio(self._cuts[index], min_seconds=0.0)
        if wave.nbytes > self._budget:
            return wave
        self._cache[index] = wave
        self._cached_bytes += wave.nbytes
        while self._cached_bytes > self._budget:
            _, dropped = self._cache.popitem(last=False)
            self._cached_bytes -= dropped.nbytes
        return wave


class BatchMixer:
    """Mixes interferers into a padded batch of waveforms; see the module docstring for the recipe."""

    def __init__(self, cfg: MixingConfig, noise_bank: NoiseBank | None = None) -> None:
        self.cfg = cfg
        self.noise_bank = noise_bank

    @classmethod
    def from_config(cls, cfg: MixingConfig) -> BatchMixer | None:
        """The mixer of a config, or None when mixing is off (``prob == 0``)."""
        if cfg.prob <= 0.0:
            return None
        bank = NoiseBank.from_manifest(cfg.noise_dir, cfg.noise_split, cache_mb=cfg.noise_cache_mb) \
            if cfg.noise_dir else None
        return cls(cfg, bank)

    @torch.no_grad()
    def __call__(self, waveforms: Tensor, lengths: Tensor, generator: torch.Generator
                 ) -> tuple[Tensor, dict[str, Any]]:
        """Return ``(mixed, info)``; ``waveforms`` ``[B, T]`` is not modified.

        Interferers are cut from the unmixed batch. Samples at or past ``lengths[i]``
        (padding) are never touched. All randomness comes from ``generator`` (one draw of
        uniforms on its device), so a batch and a generator state always give the same
        choices (partners, segments, levels, clips), whatever device the batch is on.
        """
        if waveforms.dim() != 2 or lengths.dim() != 1 or lengths.shape[0] != waveforms.shape[0]:
            raise ValueError(f"expected waveforms [B, T] and lengths [B], got {tuple(waveforms.shape)} "
                             f"and {tuple(lengths.shape)}")
        cfg = self.cfg
        batch = waveforms.shape[0]
        sizes = [int(n) for n in lengths.tolist()]
        # One row of uniforms per utterance: apply, kind, length, partner, partner start, start, level, clip.
        draws = torch.rand(batch, 8, generator=generator, dtype=torch.float64, device=generator.device).cpu().tolist()
        mixed = waveforms.clone()
        items: list[dict[str, Any]] = []
        for i, (u_apply, u_kind, u_len, u_partner, u_src, u_dst, u_level, u_clip) in enumerate(draws):
            size = min(sizes[i], waveforms.shape[1])
            if u_apply >= cfg.prob or size < 1:
                continue
            kind = "utterance" if (u_kind < cfg.utterance_share or self.noise_bank is None) else "noise"
            if kind == "utterance" and batch < 2:
                if self.noise_bank is None:
                    continue
                kind = "noise"
            longest = max(1, int(cfg.max_segment_ratio * size))
            length = min(1 + int(u_len * longest), longest)
            if kind == "utterance":
                # Uniform over the other utterances: never the primary itself.
                partner = (i + 1 + min(int(u_partner * (batch - 1)), batch - 2)) % batch
                partner_size = min(sizes[partner], waveforms.shape[1])
                length = min(length, partner_size)
                if length < 1:
                    continue
                src = min(int(u_src * (partner_size - length + 1)), partner_size - length)
                segment = waveforms[partner, src:src + length]
                source: int | str = partner
                low, high = cfg.utterance_db
            else:
                wave, source = self.noise_bank.segment(length, u_clip, u_src)
                segment = torch.from_numpy(np.ascontiguousarray(wave)).to(waveforms.device, waveforms.dtype)
                src = -1
                low, high = cfg.noise_snr_db
            db = low + u_level * (high - low)
            start = min(int(u_dst * (size - length + 1)), size - length)
            primary_power = waveforms[i, :size].float().pow(2).mean()
            segment_power = segment.float().pow(2).mean()
            # A silent segment (or primary) adds nothing rather than blowing up.
            scale = torch.where(
                (segment_power > _EPS) & (primary_power > _EPS),
                torch.sqrt(primary_power / (segment_power.clamp_min(_EPS) * 10 ** (db / 10))),
                torch.zeros((), device=waveforms.device),
            )
            mixed[i, start:start + length] += (scale * segment.float()).to(mixed.dtype)
            items.append({"index": i, "kind": kind, "source": source, "source_start": src, "start": start,
                          "length": length, "snr_db": db})
        return mixed, _summarise(items, batch)


def _summarise(items: list[dict[str, Any]], batch: int) -> dict[str, Any]:
    """Batch statistics for monitors plus one record per mixed utterance."""
    n_utterance = sum(item["kind"] == "utterance" for item in items)
    return {
        "fraction_mixed": len(items) / batch if batch else 0.0,
        "fraction_utterance": n_utterance / batch if batch else 0.0,
        "fraction_noise": (len(items) - n_utterance) / batch if batch else 0.0,
        # Energy ratio (utterance) and SNR (noise) in dB share one definition: primary over interferer.
        "mean_snr_db": sum(item["snr_db"] for item in items) / len(items) if items else math.nan,
        "items": items,
    }
