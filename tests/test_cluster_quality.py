"""Cluster quality against phones: the measures, the alignment files, and the synthetic corpus's alignments."""

import difflib
import gzip
import json
import math
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
from lhotse import load_manifest

from speechssl.cli import main
from speechssl.data.alignments import SILENCE, alignment_path, frame_phones, load_phone_alignments
from speechssl.data.synth import SynthConfig, synthesize_corpus
from speechssl.data.synth.corpus import SPLITS
from speechssl.errors import ManifestError
from speechssl.targets.alignment import conv_geometry
from speechssl.targets.quality import QUALITY_FILE, cluster_quality, evaluate_target_set

# ---------------------------------------------------------------- the measures


def test_pnmi_is_one_when_clusters_are_the_phones():
    rng = np.random.default_rng(0)
    phones = [rng.integers(0, 30, n) for n in (500, 700, 300)]
    names = np.array([f"p{i}" for i in range(30)])
    q = cluster_quality(phones, [names[p] for p in phones], num_clusters=30)
    assert q["pnmi"] == pytest.approx(1.0)
    assert q["phone_purity"] == pytest.approx(1.0) and q["cluster_purity"] == pytest.approx(1.0)
    assert q["used_clusters"] == q["phones"] == 30 and q["frames"] == 1500
    # A relabelling of the clusters changes nothing.
    permuted = rng.permutation(30)
    assert cluster_quality([permuted[p] for p in phones], phones, 30)["pnmi"] == pytest.approx(1.0)


def test_pnmi_is_near_zero_for_independent_labels():
    rng = np.random.default_rng(1)
    n = 200_000
    phones = rng.integers(0, 40, n)
    labels = rng.integers(0, 100, n)
    q = cluster_quality([labels], [phones], num_clusters=100)
    # Finite-sample bias alone: (40 - 1)(100 - 1) / (2 n ln 2) bits over H(phone) = log2 40.
    bias = 39 * 99 / (2 * n * math.log(2)) / math.log2(40)
    assert q["pnmi"] < 0.01 and q["pnmi"] == pytest.approx(bias, rel=0.3)
    assert q["pnmi_shuffled"] == pytest.approx(q["pnmi"], rel=0.3)
    assert q["cluster_entropy_norm"] == pytest.approx(1.0, abs=1e-3)
    assert q["phone_purity"] < 0.05 and q["cluster_purity"] < 0.05


def test_measures_on_a_hand_computed_example():
    # p(phone, cluster): a -> c0 2, c1 1; b -> c1 3 (6 frames, K = 4, clusters 2 and 3 unused).
    phones = [np.array(["a", "a", "b"]), np.array(["a", "b", "b"])]
    labels = [np.array([0, 0, 1]), np.array([1, 1, 1])]
    q = cluster_quality(labels, phones, num_clusters=4)
    assert q["phone_purity"] == pytest.approx(5 / 6)  # c0: a 2 of 2, c1: b 3 of 4
    assert q["cluster_purity"] == pytest.approx(5 / 6)  # a: c0 2 of 3, b: c1 3 of 3
    # H(phone) = 1 bit; H(phone | cluster) = 2/3 H(1/4, 3/4).
    h_quarter = -(0.25 * math.log2(0.25) + 0.75 * math.log2(0.75))
    assert q["phone_entropy_bits"] == pytest.approx(1.0)
    assert q["pnmi"] == pytest.approx(1 - 2 / 3 * h_quarter)
    h_cluster = -(1 / 3 * math.log2(1 / 3) + 2 / 3 * math.log2(2 / 3))
    assert q["cluster_entropy_bits"] == pytest.approx(h_cluster)
    assert q["cluster_entropy_norm"] == pytest.approx(h_cluster / 2)  # log2 K = 2
    assert q["used_clusters"] == 2 and q["phones"] == 2

    # Purities are not symmetric: two clusters splitting one phone keep phone purity at 1.
    q = cluster_quality([np.array([0, 1, 0, 1, 2, 2])], [np.array(list("aaaabb"))], num_clusters=3)
    assert q["phone_purity"] == pytest.approx(1.0) and q["cluster_purity"] == pytest.approx(4 / 6)
    assert q["pnmi"] == pytest.approx(1.0)


def test_cluster_quality_refuses_mismatched_input():
    with pytest.raises(ValueError, match="labels but"):
        cluster_quality([np.zeros(3, int)], [np.array(["a", "b"])], 2)
    with pytest.raises(ValueError, match=r"\[0, 2\)"):
        cluster_quality([np.array([0, 2])], [np.array(["a", "b"])], 2)
    with pytest.raises(ValueError, match="no frames"):
        cluster_quality([np.zeros(0, int)], [np.zeros(0, str)], 2)


# ---------------------------------------------------------------- alignment files and frames


def _write_alignments(corpus: Path, split: str, records: dict) -> None:
    path = alignment_path(corpus, split)
    path.parent.mkdir(parents=True, exist_ok=True)
    with gzip.open(path, "wt", encoding="utf-8") as handle:
        for cut_id, phones in records.items():
            handle.write(json.dumps({"id": cut_id, "phones": phones}) + "\n")


def test_load_phone_alignments_and_frame_phones(tmp_path):
    segments = [[0.0, 0.1, "sil"], [0.1, 0.25, "a"], [0.25, 0.3, "b"]]
    _write_alignments(tmp_path, "dev", {"u1": segments, "u2": [[0.0, 0.5, "sil"]]})
    alignments = load_phone_alignments(tmp_path, "dev")
    assert alignments == {"u1": [(0.0, 0.1, "sil"), (0.1, 0.25, "a"), (0.25, 0.3, "b")], "u2": [(0.0, 0.5, "sil")]}

    # 20 ms frames reading 25 ms: frame t is centred on 0.0125 + 0.02 t s.
    phones = frame_phones(alignments["u1"], 16, 0.02, 0.025)
    assert list(phones) == ["sil"] * 5 + ["a"] * 7 + ["b"] * 3 + ["sil"]  # the last centre (0.3125) is past the end
    # 10 ms of padding moves every centre 10 ms earlier.
    shifted = frame_phones(alignments["u1"], 16, 0.02, 0.025, padding_s=0.01)
    assert list(shifted) == ["sil"] * 5 + ["a"] * 8 + ["b"] * 2 + ["sil"]
    assert list(frame_phones([], 3, 0.02, 0.025, outside="x")) == ["x"] * 3
    assert list(frame_phones([(0.05, 0.1, "a")], 3, 0.02, 0.025)) == ["sil", "sil", "a"]  # before the first start


def test_frame_phones_with_an_encoder_geometry():
    # The wav2vec 2.0 front end: frame t reads samples [320 t, 320 t + 400), centred on 320 t + 200.
    geometry = conv_geometry([(512, 10, 5, 0)] + [(512, 3, 2, 0)] * 4 + [(512, 2, 2, 0)] * 2)
    assert (geometry.stride, geometry.receptive_field, geometry.left_padding) == (320, 400, 0)
    segments = [(0.0, 0.0300, "sil"), (0.0300, 0.0326, "a"), (0.0326, 1.0, "b")]
    phones = frame_phones(segments, 49, geometry.stride / 16000, geometry.receptive_field / 16000)
    # Centres at 12.5 ms, 32.5 ms, 52.5 ms ...: the 2.6 ms "a" holds the centre of frame 1 only.
    assert list(phones[:3]) == ["sil", "a", "b"] and set(phones[3:]) == {"b"}


def test_missing_alignments_are_a_clear_error(tmp_path):
    with pytest.raises(ManifestError, match="no phone alignments"):
        load_phone_alignments(tmp_path, "dev")


# ---------------------------------------------------------------- the synthetic corpus's alignments


@pytest.fixture(scope="module")
def aligned_corpus(tmp_path_factory) -> Path:
    """About 20 s of English and German speech (8 cuts)."""
    out = tmp_path_factory.mktemp("aligned_corpus")
    cfg = SynthConfig(hours=0.001, speakers=8, languages=["en", "de"], min_utterances=1, trials=2)
    synthesize_corpus(cfg, out, workers=2, progress=False)
    return out


def test_synth_alignments_cover_each_cut_in_order(aligned_corpus):
    info = json.loads((aligned_corpus / "corpus.json").read_text())
    for split in SPLITS:
        assert info["splits"][split]["alignments"] == f"manifests/alignments_{split}.jsonl.gz"
        alignments = load_phone_alignments(aligned_corpus, split)
        supervisions = {s.id: s for s in load_manifest(aligned_corpus / "manifests" / f"supervisions_{split}.jsonl.gz")}
        assert set(alignments) == set(supervisions)
        for cut_id, segments in alignments.items():
            sup = supervisions[cut_id]
            assert segments[0][0] == 0.0 and segments[-1][1] == pytest.approx(sup.duration, abs=1e-4)
            assert all(start < end for start, end, _ in segments)
            assert all(a[1] == b[0] for a, b in zip(segments, segments[1:]))  # contiguous, so monotonic
            assert segments[0][2] == segments[-1][2] == SILENCE  # the padding
            assert not any(a[2] == b[2] == SILENCE for a, b in zip(segments, segments[1:]))
            # The phones are the ones eSpeak said: close to the supervision's phone string.
            spoken = [phone for _, _, phone in segments if phone != SILENCE]
            assert all(phone and "ˈ" not in phone and "(" not in phone for phone in spoken)
            similarity = difflib.SequenceMatcher(a=spoken, b=sup.custom["phonemes"].split()).ratio()
            assert similarity > 0.8, (cut_id, spoken, sup.custom["phonemes"])


def test_synth_alignments_are_deterministic(aligned_corpus, tmp_path):
    again = tmp_path / "again"
    synthesize_corpus(SynthConfig(**json.loads((aligned_corpus / "corpus.json").read_text())["config"]), again,
                      workers=1, progress=False)
    for split in SPLITS:
        assert alignment_path(again, split).read_bytes() == alignment_path(aligned_corpus, split).read_bytes()


def test_synth_silence_is_quiet_and_phones_are_loud(aligned_corpus):
    silence, speech = [], []
    for split in SPLITS:
        alignments = load_phone_alignments(aligned_corpus, split)
        for cut in load_manifest(aligned_corpus / "manifests" / f"cuts_{split}.jsonl.gz"):
            wave, rate = sf.read(str(aligned_corpus / cut.recording.sources[0].source))
            energy = {SILENCE: [0.0, 0], "phone": [0.0, 0]}
            for start, end, phone in alignments[cut.id]:
                chunk = wave[round(start * rate): round(end * rate)]
                bucket = energy[SILENCE if phone == SILENCE else "phone"]
                bucket[0] += float(np.sum(chunk ** 2))
                bucket[1] += len(chunk)
            silence.append(math.sqrt(energy[SILENCE][0] / energy[SILENCE][1]))
            speech.append(math.sqrt(energy["phone"][0] / energy["phone"][1]))
            assert silence[-1] < 0.2 * speech[-1], cut.id
    # Over the corpus, silence is far quieter (about 1/80 of the phones' RMS when made).
    assert np.mean(silence) < 0.05 * np.mean(speech)


def test_targets_quality_on_mfcc_targets(aligned_corpus, tmp_path, capsys):
    from speechssl.targets import build_targets

    target_set = build_targets("mfcc", aligned_corpus, tmp_path / "targets", k=8, splits=["train", "test"],
                               cache_dir=tmp_path / "cache")
    result = evaluate_target_set(target_set, aligned_corpus, "test")
    info = json.loads((aligned_corpus / "corpus.json").read_text())
    assert result["utterances"] == info["splits"]["test"]["utterances"] and result["utterances_without_labels"] == 0
    assert 0.1 < result["silence_fraction"] < 0.5
    for rows in (result["all_frames"], result["speech_frames"]):
        # MFCC clusters carry phone information well above what chance gives on so few frames.
        assert rows["pnmi"] > rows["pnmi_shuffled"] + 0.1
    assert result["speech_frames"]["frames"] < result["all_frames"]["frames"]

    assert main(["targets-quality", str(target_set), "--data", str(aligned_corpus), "--split", "test"]) == 0
    out = capsys.readouterr().out
    assert "pnmi" in out and "speech only" in out
    recorded = json.loads((target_set / QUALITY_FILE).read_text())
    assert recorded["test"]["all_frames"]["pnmi"] == pytest.approx(result["all_frames"]["pnmi"])

    # The split was not labelled: a clear error naming the splits that were.
    assert main(["targets-quality", str(target_set), "--data", str(aligned_corpus), "--split", "dev"]) == 1
    assert "train, test" in capsys.readouterr().err
