"""Collation of waveforms into padded batches, and the DataLoader path over real files."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
import torch
from lhotse import CutSet, Recording, SupervisionSegment

from speechssl.data.collate import AudioBatch, CutAudioDataset, collate_waveforms, make_dataloader

SR = 16_000


def test_collate_pads_right_and_marks_padding():
    waves = [np.ones(3, dtype=np.float32), torch.full((5,), 2.0), np.arange(1, dtype=np.float64)]
    padded, lengths, mask = collate_waveforms(waves)
    assert padded.shape == (3, 5) and padded.dtype == torch.float32
    assert lengths.tolist() == [3, 5, 1] and lengths.dtype == torch.int64
    assert mask.dtype == torch.bool
    assert mask.tolist() == [
        [False, False, False, True, True],
        [False] * 5,
        [False, True, True, True, True],
    ]
    assert padded[0].tolist() == [1, 1, 1, 0, 0]
    assert padded[1].tolist() == [2] * 5
    assert torch.all(padded[mask] == 0)


def test_collate_rejects_empty_and_multichannel():
    with pytest.raises(ValueError, match="at least one"):
        collate_waveforms([])
    with pytest.raises(ValueError, match="1-D"):
        collate_waveforms([np.zeros((2, 100), dtype=np.float32)])


def test_audio_batch_seconds_and_to():
    padded, lengths, mask = collate_waveforms([np.zeros(16000), np.zeros(8000)])
    batch = AudioBatch(padded, lengths, mask, cut_ids=["a", "b"], supervisions=[{}, {}])
    assert batch.seconds == pytest.approx(1.5)
    assert len(batch) == 2
    moved = batch.to("cpu")
    assert moved.waveforms.device.type == "cpu" and moved.cut_ids == ["a", "b"]


@pytest.fixture
def flac_cuts(tmp_path: Path) -> tuple[CutSet, dict[str, np.ndarray]]:
    """Eight FLAC files of 0.5-2.25 s; the first carries a transcript."""
    rng = np.random.default_rng(0)
    cuts, signals = [], {}
    for i in range(8):
        samples = int(SR * (0.5 + 0.25 * i))
        # 16-bit FLAC stores multiples of 1/32768 exactly, so the round trip is lossless.
        signal = np.round(rng.uniform(-0.5, 0.5, samples) * 32768) / 32768
        path = tmp_path / f"utt{i}.flac"
        sf.write(path, signal, SR, subtype="PCM_16")
        cut = Recording.from_file(path).to_cut()
        if i == 0:
            cut.supervisions = [
                SupervisionSegment(
                    id="sup0", recording_id=cut.recording_id, start=0, duration=cut.duration,
                    text="hello world", language="en", speaker="spk1", custom={"emotion": "neutral"},
                )
            ]
        cuts.append(cut)
        signals[cut.id] = signal.astype(np.float32)
    return CutSet.from_cuts(cuts), signals


def test_dataset_loads_a_cutset_batch(flac_cuts):
    cuts, signals = flac_cuts
    batch = CutAudioDataset()[cuts]
    assert batch.waveforms.shape == (8, int(SR * 2.25))
    for row, cut_id in enumerate(batch.cut_ids):
        n = int(batch.lengths[row])
        assert n == len(signals[cut_id])
        np.testing.assert_allclose(batch.waveforms[row, :n].numpy(), signals[cut_id], atol=1e-6)
        assert not batch.padding_mask[row, :n].any() and batch.padding_mask[row, n:].all()
    sup = batch.supervisions[batch.cut_ids.index("utt0")]
    assert sup["text"] == "hello world" and sup["language"] == "en" and sup["speaker"] == "spk1"
    assert sup["custom"] == {"emotion": "neutral"}
    assert batch.supervisions[batch.cut_ids.index("utt1")] == {}


def test_random_crop_is_seeded_per_cut_and_changes_with_epoch(flac_cuts):
    cuts, signals = flac_cuts
    a = CutAudioDataset(max_seconds=1.0, seed=1)[cuts]
    b = CutAudioDataset(max_seconds=1.0, seed=1)[cuts]
    assert a.waveforms.shape[1] == SR and int(a.lengths.max()) == SR
    assert torch.equal(a.waveforms, b.waveforms)
    later = CutAudioDataset(max_seconds=1.0, seed=1)
    later.set_epoch(1)
    assert not torch.equal(later[cuts].waveforms, a.waveforms)
    # Each crop is a contiguous piece of its source.
    row = a.cut_ids.index("utt7")
    crop = a.waveforms[row].numpy()
    source = signals["utt7"]
    candidates = np.flatnonzero(source[: len(source) - SR + 1] == crop[0])
    assert any(np.array_equal(source[s : s + SR], crop) for s in candidates)


def test_dataloader_with_two_workers_returns_every_cut_once(flac_cuts):
    cuts, signals = flac_cuts
    loader = make_dataloader(cuts, batch_seconds=4.0, num_workers=2, seed=3, bin_size=4, queue_size=3)
    batches = list(loader)
    assert len(batches) == len(loader.sampler)
    seen = [cut_id for batch in batches for cut_id in batch.cut_ids]
    assert sorted(seen) == sorted(signals)
    for batch in batches:
        assert isinstance(batch, AudioBatch)
        assert batch.waveforms.shape == batch.padding_mask.shape == (len(batch), int(batch.lengths.max()))
        assert batch.seconds <= 4.0 + 1e-6
        assert batch.lengths.tolist() == [len(signals[i]) for i in batch.cut_ids]


def test_dataloader_resume_uses_batches_consumed_not_prefetched(flac_cuts):
    cuts, _ = flac_cuts
    settings = dict(batch_seconds=3.0, num_workers=2, seed=4, bin_size=4, queue_size=2)
    loader = make_dataloader(cuts, **settings)
    full = [b.cut_ids for b in loader]
    assert [b.cut_ids for b in loader] == loader.sampler.plan(epoch=1)  # a second pass is epoch 1
    loader.sampler.set_epoch(0)
    stream = iter(loader)
    consumed = [next(stream).cut_ids for _ in range(2)]
    # The workers have already asked the sampler for more batches than the loop took.
    assert loader.sampler.state_dict()["batches_yielded"] > 2
    state = loader.sampler.state_dict(batches_consumed=2)
    del stream

    resumed = make_dataloader(cuts, **settings)
    resumed.sampler.load_state_dict(state)
    assert consumed + [b.cut_ids for b in resumed] == full


def test_normalize_waveforms_uses_valid_samples_only():
    from speechssl.data.collate import normalize_waveforms

    padded, lengths, mask = collate_waveforms([np.linspace(-1, 3, 800), np.linspace(0, 2, 500) * 7])
    out = normalize_waveforms(padded, lengths)
    for row, length in enumerate(lengths.tolist()):
        valid = out[row, :length].double()
        assert abs(valid.mean().item()) < 1e-5
        assert abs(valid.std(unbiased=False).item() - 1.0) < 1e-4
        assert (out[row, length:] == 0).all()
