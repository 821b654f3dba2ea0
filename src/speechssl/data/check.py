"""``speechssl corpus check``: validate a manifest directory before spending compute on it."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from speechssl.data.audio import AudioScanReport, scan_cuts
from speechssl.data.manifests import available_splits, load_cuts
from speechssl.errors import ManifestError


@dataclass
class SplitCheck:
    split: str
    cuts: int
    hours: float
    speakers: int
    languages: int
    scan: AudioScanReport
    batches: int
    padding_waste: float


@dataclass
class CorpusCheckReport:
    data_dir: Path
    splits: list[SplitCheck] = field(default_factory=list)

    @property
    def bad(self) -> list[tuple[str, str]]:
        return [item for s in self.splits for item in s.scan.bad]

    def summary(self) -> str:
        header = f"{'split':<8} {'cuts':>7} {'hours':>7} {'spk':>5} {'lang':>5} {'bad':>5} {'batches':>8} {'pad waste':>10}"
        lines = [f"corpus check: {self.data_dir}", header, "-" * len(header)]
        for s in self.splits:
            lines.append(
                f"{s.split:<8} {s.cuts:>7} {s.hours:>7.2f} {s.speakers:>5} {s.languages:>5} "
                f"{len(s.scan.bad):>5} {s.batches:>8} {100 * s.padding_waste:>9.1f}%"
            )
        bad = self.bad
        if bad:
            lines.append(f"skipped {len(bad)} unusable audio file(s):")
            lines += [f"  {cut_id}: {reason}" for cut_id, reason in bad]
        else:
            lines.append("all audio files decoded cleanly")
        return "\n".join(lines)

    def to_dict(self) -> dict:
        return {
            "data_dir": str(self.data_dir),
            "splits": {
                s.split: {
                    "cuts": s.cuts, "hours": s.hours, "speakers": s.speakers, "languages": s.languages,
                    "batches": s.batches, "padding_waste": s.padding_waste,
                    "bad": [{"cut": c, "reason": r} for c, r in s.scan.bad],
                }
                for s in self.splits
            },
        }


def check_corpus(
    data_dir: str | Path,
    *,
    splits: list[str] | None = None,
    skip_bad: bool = False,
    batch_seconds: float = 60.0,
) -> CorpusCheckReport:
    """Load every split's manifest, decode all its audio and plan one epoch of batches.

    Without ``skip_bad`` the first unusable file raises an error naming it; with it,
    unusable files are left out and listed in the report.
    """
    from speechssl.data.sampler import DurationBucketSampler

    data_dir = Path(data_dir)
    splits = splits or available_splits(data_dir)
    if not splits:
        raise ManifestError(f"no manifests found under {data_dir / 'manifests'}")
    report = CorpusCheckReport(data_dir)
    for split in splits:
        cuts = load_cuts(data_dir, split)
        scan = scan_cuts(cuts, skip_bad=skip_bad)
        good = scan.good
        sups = [c.supervisions[0] for c in good if c.supervisions]
        batches, waste = 0, 0.0
        if good:
            sampler = DurationBucketSampler(good, batch_seconds=batch_seconds, seed=0)
            batches, waste = len(sampler), sampler.padding_waste()
        report.splits.append(SplitCheck(
            split=split,
            cuts=len(good),
            hours=sum(c.duration for c in good) / 3600,
            speakers=len({s.speaker for s in sups if s.speaker}),
            languages=len({s.language for s in sups if s.language}),
            scan=scan,
            batches=batches,
            padding_waste=waste,
        ))
    return report
