"""ML-SUPERB 2.0's multilingual benchmark as one command: joint ASR + LID over every
language and dataset of a corpus, with a downstream architecture, a framework (CTC or
hybrid CTC-attention), an adaptation regime and a few-shot training set.

``speechssl bench-multilingual --upstream U [--arch A] [--framework ctc|ctcattn]
[--regime R] [--shots 10min] [--lm-order 3]`` is a ``bench`` run of task ``asr_lid``
whose settings come from those names; every per-language and per-(language, dataset)
score goes to the result store, and :func:`format_summary` prints the ML-SUPERB 2.0 row
(macro CER, std, worst-N, dataset range, LID accuracy).

Architectures (seed 001): ``transformer`` is the benchmark's shallow baseline (2 layers),
``transformer-deep`` the deeper one (6 layers), ``conformer`` and ``ebranchformer`` (2
blocks each); all read the weighted layer sum, optionally through a pre-encoder
projection (``probe_cfg.pre_project``, ML-SUPERB 2.0's 1280 -> 80 for large upstreams).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from speechssl.benchmark.store import training_data
from speechssl.downstream.config import BenchConfig, parse_regime
from speechssl.errors import ConfigError


@dataclass(frozen=True)
class Architecture:
    encoder: str
    layers: int
    description: str


ARCHITECTURES: dict[str, Architecture] = {
    "transformer": Architecture("transformer", 2, "shallow 2-layer Transformer (the ML-SUPERB 2.0 baseline)"),
    "transformer-deep": Architecture("transformer", 6, "6-layer Transformer"),
    "conformer": Architecture("conformer", 2, "2-block Conformer"),
    "ebranchformer": Architecture("ebranchformer", 2, "2-block E-Branchformer"),
}
FRAMEWORKS = ("ctc", "ctcattn")


def multilingual_overrides(*, upstream: str, arch: str = "transformer", framework: str = "ctc",
                           regime: str = "frozen", shots: str | None = None, data: str | None = None,
                           lm_order: int | None = None) -> list[str]:
    """The dotted bench overrides of one multilingual run (validated names)."""
    if arch not in ARCHITECTURES:
        raise ConfigError(f"unknown architecture {arch!r}; one of {', '.join(ARCHITECTURES)}")
    if framework not in FRAMEWORKS:
        raise ConfigError(f"unknown framework {framework!r}; one of {', '.join(FRAMEWORKS)}")
    spec = ARCHITECTURES[arch]
    overrides = [f"upstream={upstream}", "task=asr_lid", f"probe={spec.encoder}_{framework}",
                 f"probe_cfg.num_layers={spec.layers}", *parse_regime(regime)]
    if shots:
        overrides.append(f"train_split=train_{shots}")
    if data:
        overrides.append(f"data={data}")
    if lm_order is not None:
        overrides.append(f"asr.lm_order={lm_order}")
    return overrides


def check_shots(cfg: BenchConfig) -> None:
    """Refuse a few-shot split the corpus does not have, naming the ones it has."""
    from speechssl.data.manifests import available_splits

    if not Path(cfg.data).is_dir():
        return  # the runner's own message covers a missing data directory
    splits = available_splits(cfg.data)
    if cfg.train_split not in splits:
        shots = sorted(s.removeprefix("train_") for s in splits if s.startswith("train_"))
        hint = (f"this corpus has shots {', '.join(shots)}" if shots else
                "this corpus has no few-shot splits (make them with: speechssl corpus datasets SRC --out DIR "
                "--shots 1min,4min)")
        raise ConfigError(f"no split {cfg.train_split!r} in {cfg.data}: {hint}")


def run_dir(cfg: BenchConfig, arch: str, framework: str, regime: str) -> Path:
    """``runs/multilingual/<upstream>/<arch>-<framework>-<regime>-<train split>-seed<N>``."""
    from speechssl.downstream.runner import upstream_slug

    return (Path("runs/multilingual") / upstream_slug(cfg.upstream)
            / f"{arch}-{framework}-{regime}-{cfg.train_split}-seed{cfg.seed}")


def format_summary(result: dict[str, Any]) -> str:
    """ML-SUPERB 2.0's row for one run: macro CER, std across languages, worst-N, widest
    dataset range and LID accuracy; greedy, beam and (if run) LM decoding side by side."""
    m = result["metrics"]

    def pct(v: Any) -> str:
        return "–" if v is None else f"{100 * v:.1f}"

    ranges = m.get("dataset_range") or {}
    widest = max(ranges, key=lambda lang: (ranges[lang], lang), default=None)
    lines = [f"{result['upstream']} · {result['probe']} · {result['regime']} · "
             f"trained on {training_data(result.get('config') or {})}",
             "| decoding | CER | std | worst-N | max dataset range | LID acc |", "|---|---|---|---|---|---|"]
    for label, suffix in (("greedy", ""), ("beam", "_beam"), ("beam + LM", "_lm")):
        if f"cer{suffix}" not in m:
            continue
        lines.append(f"| {label} | {pct(m[f'cer{suffix}'])} | {pct(m.get(f'cer_std{suffix}'))} | "
                     f"{pct(m.get(f'cer_worst{suffix}'))} | "
                     + (f"{pct(ranges[widest])} ({widest})" if widest and not suffix else "–")
                     + f" | {pct(m.get(f'lid_accuracy{suffix}'))} |")
    worst = ", ".join(m.get("worst_languages") or [])
    lines.append(f"worst {m.get('worst_n')} languages (greedy): {worst}; numbers in %")
    return "\n".join(lines)
