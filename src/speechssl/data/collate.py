"""Turning a batch of cuts into padded waveform tensors.

:class:`CutAudioDataset` is a map-style dataset whose "index" is a whole ``CutSet``
batch from :class:`~speechssl.data.sampler.DurationBucketSampler`; audio is decoded in
the DataLoader workers, the sampler only ever sees metadata.
"""

from __future__ import annotations

import zlib
from dataclasses import dataclass, field, replace
from typing import Any, Iterable, Sequence

import numpy as np
import torch
from lhotse import CutSet
from torch.utils.data import DataLoader, Dataset

from speechssl.data.audio import TARGET_SAMPLE_RATE, load_cut_audio
from speechssl.data.sampler import DurationBucketSampler
from speechssl.errors import ConfigError


def collate_waveforms(
    waves: Sequence[np.ndarray | torch.Tensor],
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Right-pad 1-D waveforms with zeros into one batch.

    Returns ``(padded [B, T] float32, lengths [B] int64, padding_mask [B, T] bool)``
    where ``padding_mask`` is True on padding, the convention of PyTorch's
    ``key_padding_mask``.
    """
    if len(waves) == 0:
        raise ValueError("collate_waveforms needs at least one waveform")
    tensors = [torch.as_tensor(w, dtype=torch.float32) for w in waves]
    for i, t in enumerate(tensors):
        if t.dim() != 1:
            raise ValueError(f"waveform {i} has shape {tuple(t.shape)}; expected a 1-D mono signal")
    lengths = torch.tensor([t.shape[0] for t in tensors], dtype=torch.int64)
    padded = torch.zeros(len(tensors), int(lengths.max()), dtype=torch.float32)
    for i, t in enumerate(tensors):
        padded[i, : t.shape[0]] = t
    padding_mask = torch.arange(padded.shape[1]).unsqueeze(0) >= lengths.unsqueeze(1)
    return padded, lengths, padding_mask


def normalize_waveforms(waveforms: torch.Tensor, lengths: torch.Tensor, eps: float = 1e-7) -> torch.Tensor:
    """Zero mean, unit variance per utterance over its valid samples; padding stays 0.

    The same as ``transformers``' ``Wav2Vec2FeatureExtractor(do_normalize=True)``,
    which LARGE wav2vec 2.0 models expect.
    """
    valid = torch.arange(waveforms.shape[1], device=waveforms.device)[None, :] < lengths[:, None]
    count = valid.sum(dim=1, keepdim=True).clamp(min=1)
    mean = (waveforms * valid).sum(dim=1, keepdim=True) / count
    var = (((waveforms - mean) * valid) ** 2).sum(dim=1, keepdim=True) / count
    return ((waveforms - mean) / torch.sqrt(var + eps)) * valid


@dataclass
class AudioBatch:
    """Padded audio of a batch of cuts plus what is needed to trace and label it."""

    waveforms: torch.Tensor  # [B, T] float32
    lengths: torch.Tensor  # [B] int64, real samples per row
    padding_mask: torch.Tensor  # [B, T] bool, True = padding
    cut_ids: list[str]
    supervisions: list[dict[str, Any]] = field(default_factory=list)
    sample_rate: int = TARGET_SAMPLE_RATE
    offsets: torch.Tensor | None = None
    """[B] int64: the sample of its cut where each row starts (0 unless cropped); frame-level
    pretraining targets of a crop are the cut's labels from ``offset // stride`` on."""

    def __len__(self) -> int:
        return len(self.cut_ids)

    @property
    def seconds(self) -> float:
        """Real (unpadded) audio in the batch, in seconds."""
        return float(self.lengths.sum()) / self.sample_rate

    def to(self, device: torch.device | str, non_blocking: bool = False) -> AudioBatch:
        return replace(
            self,
            waveforms=self.waveforms.to(device, non_blocking=non_blocking),
            lengths=self.lengths.to(device, non_blocking=non_blocking),
            padding_mask=self.padding_mask.to(device, non_blocking=non_blocking),
        )

    def pin_memory(self) -> AudioBatch:
        # DataLoader(pin_memory=True) calls this on custom batch types.
        return replace(
            self,
            waveforms=self.waveforms.pin_memory(),
            lengths=self.lengths.pin_memory(),
            padding_mask=self.padding_mask.pin_memory(),
        )


def supervision_info(cut: Any) -> dict[str, Any]:
    """The first supervision's labels as a plain dict, or ``{}`` if the cut has none."""
    supervisions = getattr(cut, "supervisions", None) or []
    if not supervisions:
        return {}
    sup = supervisions[0]
    return {
        "text": sup.text,
        "language": sup.language,
        "speaker": sup.speaker,
        "gender": sup.gender,
        "custom": dict(sup.custom or {}),
    }


class CutAudioDataset(Dataset):
    """Map-style dataset: ``dataset[cuts]`` loads a ``CutSet`` batch into an :class:`AudioBatch`.

    With ``max_seconds``, utterances longer than that are randomly cropped (as in
    wav2vec 2.0 pretraining); crops start on a multiple of ``crop_multiple`` samples, so
    that with the encoder's total stride there they keep frame-level targets aligned.
    The crop depends only on ``(seed, epoch, cut id)``, so it
    is the same whichever worker loads the cut; call :meth:`set_epoch` before each
    epoch to draw new crops (this reaches the workers because the DataLoader built by
    :func:`make_dataloader` does not keep persistent workers).
    """

    def __init__(
        self,
        *,
        sample_rate: int = TARGET_SAMPLE_RATE,
        max_seconds: float | None = None,
        seed: int = 0,
        crop_multiple: int = 1,
    ) -> None:
        if max_seconds is not None and not max_seconds > 0:
            raise ConfigError(f"max_seconds must be positive or None, got {max_seconds!r}")
        if crop_multiple < 1:
            raise ConfigError(f"crop_multiple must be >= 1, got {crop_multiple!r}")
        self.crop_multiple = crop_multiple
        self.sample_rate = sample_rate
        self.max_samples = None if max_seconds is None else int(round(max_seconds * sample_rate))
        self.seed = seed
        self.epoch = 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def __getitem__(self, cuts: CutSet) -> AudioBatch:
        cut_list = list(cuts)
        crops = [self._crop(load_cut_audio(cut, target_sr=self.sample_rate), cut.id) for cut in cut_list]
        padded, lengths, mask = collate_waveforms([wave for wave, _ in crops])
        return AudioBatch(
            waveforms=padded,
            lengths=lengths,
            padding_mask=mask,
            cut_ids=[cut.id for cut in cut_list],
            supervisions=[supervision_info(cut) for cut in cut_list],
            sample_rate=self.sample_rate,
            offsets=torch.tensor([start for _, start in crops], dtype=torch.int64),
        )

    def _crop(self, wave: np.ndarray, cut_id: str) -> tuple[np.ndarray, int]:
        """``(crop, its first sample in the cut)``."""
        if self.max_samples is None or wave.shape[0] <= self.max_samples:
            return wave, 0
        # crc32 rather than hash(): str hashes are salted per process, workers would disagree.
        rng = np.random.default_rng([self.seed, self.epoch, zlib.crc32(cut_id.encode())])
        starts = (wave.shape[0] - self.max_samples) // self.crop_multiple + 1
        start = int(rng.integers(0, starts)) * self.crop_multiple
        return wave[start : start + self.max_samples], start


def make_dataloader(
    cuts: Iterable[Any],
    *,
    batch_seconds: float,
    num_workers: int = 0,
    seed: int = 0,
    world_size: int = 1,
    rank: int = 0,
    max_seconds: float | None = None,
    crop_multiple: int = 1,
    pin_memory: bool = False,
    **sampler_kwargs: Any,
) -> DataLoader:
    """A DataLoader of :class:`AudioBatch` over ``cuts`` batched by :class:`DurationBucketSampler`.

    ``sampler_kwargs`` go to the sampler (``bin_size``, ``queue_size``,
    ``max_spread_seconds``, ``shuffle``); reach the sampler as ``loader.sampler`` for
    ``set_epoch`` and ``state_dict``.
    """
    sampler = DurationBucketSampler(
        cuts,
        batch_seconds=batch_seconds,
        seed=seed,
        world_size=world_size,
        rank=rank,
        max_cut_seconds=max_seconds,  # crops shorten long cuts; plan batches with what is loaded
        **sampler_kwargs,
    )
    dataset = CutAudioDataset(max_seconds=max_seconds, seed=seed, crop_multiple=crop_multiple)
    return DataLoader(
        dataset,
        sampler=sampler,
        batch_size=None,  # the sampler already yields whole batches
        num_workers=num_workers,
        persistent_workers=False,
        pin_memory=pin_memory,
    )
