"""Turning a batch of cuts into padded waveform tensors.

:class:`CutAudioDataset` is a map-style dataset whose "index" is a whole ``CutSet``
batch from :class:`~speechssl.data.sampler.DurationBucketSampler`; audio is decoded in
the DataLoader workers, the sampler only ever sees metadata.
"""

from __future__ import annotations

import math
import zlib
from dataclasses import dataclass, field, replace
from typing import Any, Callable, Iterable, Literal, Sequence

import numpy as np
import torch
from lhotse import CutSet
from torch.utils.data import DataLoader, Dataset

from speechssl.data.audio import TARGET_SAMPLE_RATE, load_cut_audio
from speechssl.data.sampler import DurationBucketSampler
from speechssl.errors import ConfigError


def collate_waveforms(
    waves: Sequence[np.ndarray | torch.Tensor],
    pad_to: Callable[[int], int] | None = None,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Right-pad 1-D waveforms with zeros into one batch.

    Returns ``(padded [B, T] float32, lengths [B] int64, padding_mask [B, T] bool)``
    where ``padding_mask`` is True on padding, the convention of PyTorch's
    ``key_padding_mask``. ``T`` is the longest waveform, or ``pad_to(longest)`` if given
    (e.g. a :class:`ShapeBuckets`; never shorter than the longest).
    """
    if len(waves) == 0:
        raise ValueError("collate_waveforms needs at least one waveform")
    tensors = [torch.as_tensor(w, dtype=torch.float32) for w in waves]
    for i, t in enumerate(tensors):
        if t.dim() != 1:
            raise ValueError(f"waveform {i} has shape {tuple(t.shape)}; expected a 1-D mono signal")
    lengths = torch.tensor([t.shape[0] for t in tensors], dtype=torch.int64)
    width = int(lengths.max())
    if pad_to is not None:
        width = max(width, int(pad_to(width)))
    padded = torch.zeros(len(tensors), width, dtype=torch.float32)
    for i, t in enumerate(tensors):
        padded[i, : t.shape[0]] = t
    padding_mask = torch.arange(padded.shape[1]).unsqueeze(0) >= lengths.unsqueeze(1)
    return padded, lengths, padding_mask


@dataclass(frozen=True)
class ShapeBuckets:
    """Padded batch lengths (samples) from a small set, so a compiled model sees few shapes.

    ``mode="multiple"``: the next multiple of ``multiple``. ``mode="geometric"``: a ladder
    whose neighbours differ by ``growth`` (each rung rounded up to a multiple of
    ``multiple``), built down from ``max_length`` when it is known (the crop length: the
    longest batch is not padded at all) or up from ``multiple`` otherwise. Padding adds at
    most ``growth - 1`` of a batch's length (~10 % at 1.1) plus the rounding to ``multiple``
    (at most ``multiple - 1`` samples); lengths above ``max_length`` go to the next multiple.

    A frozen dataclass, so it pickles into DataLoader workers.
    """

    mode: Literal["multiple", "geometric"] = "geometric"
    multiple: int = 3200
    growth: float = 1.1
    max_length: int | None = None

    def __post_init__(self) -> None:
        if self.mode not in ("multiple", "geometric"):
            raise ConfigError(f"ShapeBuckets mode must be 'multiple' or 'geometric', got {self.mode!r}")
        if self.multiple < 1 or not self.growth > 1.0:
            raise ConfigError(f"ShapeBuckets needs multiple >= 1 and growth > 1, got {self.multiple}, {self.growth}")

    def _round_up(self, length: int) -> int:
        return -(-int(length) // self.multiple) * self.multiple

    def lengths(self, up_to: int | None = None) -> list[int]:
        """Every bucket length up to ``up_to`` (default ``max_length``; one of them must be given)."""
        top = self.max_length if up_to is None else up_to
        if top is None:
            raise ValueError("ShapeBuckets.lengths needs up_to when max_length is None")
        if self.mode == "multiple":
            out = list(range(self.multiple, self._round_up(top) + 1, self.multiple))
            if self.max_length is not None:
                out = sorted({min(n, self.max_length) for n in out})
            return out
        rungs: set[int] = set()
        if self.max_length is not None:
            value = float(self.max_length)
            while value > self.multiple:
                rungs.add(min(self._round_up(math.ceil(value)), self.max_length))
                value /= self.growth
            rungs.add(min(self.multiple, self.max_length))
        else:
            value = float(self.multiple)
            while True:
                rung = self._round_up(math.ceil(value))
                rungs.add(rung)
                if rung >= top:
                    break
                value *= self.growth
        return sorted(n for n in rungs if n <= max(top, min(rungs)))

    def __call__(self, length: int) -> int:
        """The bucket length for a batch whose longest waveform has ``length`` samples."""
        length = int(length)
        if self.max_length is not None and length > self.max_length:
            return self._round_up(length)
        if self.mode == "multiple":
            padded = self._round_up(length)
            return min(padded, self.max_length) if self.max_length is not None else padded
        for rung in self.lengths(up_to=max(length, self.max_length or 0)):
            if rung >= length:
                return rung
        return self._round_up(length)  # not reached: the top rung covers max_length / length


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
    :func:`make_dataloader` does not keep persistent workers). ``pad_to`` (e.g. a
    :class:`ShapeBuckets`) pads each batch further in time; the padding is masked like any other.
    """

    def __init__(
        self,
        *,
        sample_rate: int = TARGET_SAMPLE_RATE,
        max_seconds: float | None = None,
        seed: int = 0,
        crop_multiple: int = 1,
        pad_to: Callable[[int], int] | None = None,
    ) -> None:
        if max_seconds is not None and not max_seconds > 0:
            raise ConfigError(f"max_seconds must be positive or None, got {max_seconds!r}")
        if crop_multiple < 1:
            raise ConfigError(f"crop_multiple must be >= 1, got {crop_multiple!r}")
        self.crop_multiple = crop_multiple
        self.pad_to = pad_to
        self.sample_rate = sample_rate
        self.max_samples = None if max_seconds is None else int(round(max_seconds * sample_rate))
        self.seed = seed
        self.epoch = 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def __getitem__(self, cuts: CutSet) -> AudioBatch:
        cut_list = list(cuts)
        crops = [self._crop(load_cut_audio(cut, target_sr=self.sample_rate), cut.id) for cut in cut_list]
        padded, lengths, mask = collate_waveforms([wave for wave, _ in crops], pad_to=self.pad_to)
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
    pad_to: Callable[[int], int] | None = None,
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
    dataset = CutAudioDataset(max_seconds=max_seconds, seed=seed, crop_multiple=crop_multiple, pad_to=pad_to)
    return DataLoader(
        dataset,
        sampler=sampler,
        batch_size=None,  # the sampler already yields whole batches
        num_workers=num_workers,
        persistent_workers=False,
        pin_memory=pin_memory,
    )
