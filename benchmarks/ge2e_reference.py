"""Check the GE2E reference upstream: features vs librosa, and zero-shot verification EER.

1. Resemblyzer computes its input with ``librosa.feature.melspectrogram``; we reimplement
   it in torch (librosa is not a dependency). With librosa importable (``--librosa-path``
   adds a folder, e.g. one made by ``pip install --target /tmp/lr librosa``), the largest
   relative difference over ``--cuts`` utterances is printed.
2. GE2E is used as Resemblyzer does, without any probe: one L2-normalised embedding per
   utterance (``GE2E.embed``), cosine-scored on the corpus's ASV trials. The same trials
   are scored with the per-utterance mean and standard deviation of MFCCs (no training) as
   a floor. This separates "the encoder does not know these voices" from "the probe or
   the benchmark is broken".

    .venv/bin/python benchmarks/ge2e_reference.py --data data/synth --librosa-path /tmp/lr
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", default="data/synth")
    parser.add_argument("--split", default="test")
    parser.add_argument("--trials", default=None, help="default: DATA/trials/asv_<split>.tsv")
    parser.add_argument("--cuts", type=int, default=20, help="utterances compared with librosa")
    parser.add_argument("--librosa-path", default=None, help="folder appended to sys.path to find librosa")
    args = parser.parse_args()

    import numpy as np
    import torch

    from speechssl.data.audio import load_cut_audio
    from speechssl.data.collate import collate_waveforms
    from speechssl.data.manifests import load_cuts
    from speechssl.downstream.metrics import eer, min_dcf
    from speechssl.downstream.tasks.asv import read_trials
    from speechssl.upstream import build_upstream

    ge2e = build_upstream("ge2e")
    mfcc = build_upstream("mfcc")
    cuts = list(load_cuts(args.data, args.split))

    if args.librosa_path:
        sys.path.append(args.librosa_path)
    try:
        import librosa
    except ImportError:
        print("librosa not importable: feature check skipped (see --librosa-path)")
    else:
        worst = 0.0
        for cut in cuts[: args.cuts]:
            wav = load_cut_audio(cut).astype(np.float32)
            ours, frames = ge2e.features(torch.from_numpy(wav)[None], torch.tensor([len(wav)]))
            # Resemblyzer's volume normalisation to -30 dBFS (increase only), then librosa.
            rms = np.sqrt(np.mean((wav * 32767.0) ** 2))
            gain_db = -30.0 - 20.0 * np.log10(rms / 32767.0)
            scaled = wav * 10 ** (gain_db / 20) if gain_db > 0 else wav
            ref = librosa.feature.melspectrogram(y=scaled, sr=16000, n_fft=400, hop_length=160, n_mels=40).T
            ours = ours[0, : int(frames[0])].numpy()
            assert ours.shape == ref.shape, (ours.shape, ref.shape)
            worst = max(worst, float(np.abs(ours - ref).max() / np.abs(ref).max()))
        print(f"mel features vs librosa {librosa.__version__} on {min(args.cuts, len(cuts))} utterances: "
              f"max relative difference {worst:.2e}")

    embedding, stats = {}, {}
    with torch.inference_mode():
        for start in range(0, len(cuts), 32):
            batch = cuts[start : start + 32]
            waves, lengths, _ = collate_waveforms([load_cut_audio(c) for c in batch])
            vectors = ge2e.embed(waves, lengths)
            out = mfcc(waves, lengths)
            for i, cut in enumerate(batch):
                frames = out.layers[0][i, : int(out.lengths[i])]
                embedding[cut.id] = vectors[i]
                # CMN zeroes the mean of the statics, so the std carries the speaker cues.
                stats[cut.id] = torch.cat([frames.mean(0), frames.std(0)])

    trials = read_trials(Path(args.trials) if args.trials else Path(args.data) / "trials" / f"asv_{args.split}.tsv")
    labels = [t[2] for t in trials]
    for name, table in (("GE2E embedding (Resemblyzer use)", embedding), ("MFCC mean+std", stats)):
        scores = np.array([float(torch.nn.functional.cosine_similarity(table[a], table[b], dim=0))
                           for a, b, _ in trials])
        print(f"zero-shot {name:<34} EER {eer(scores, labels):.3f}  minDCF(0.01) {min_dcf(scores, labels):.3f}"
              f"  ({len(trials)} trials)")


if __name__ == "__main__":
    main()
