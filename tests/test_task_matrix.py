"""Every (task, probe) pair: compatible ones train two steps and score; the rest are refused.

Features are random tensors standing in for an upstream (the runner's feature path is
tested in test_downstream.py); what is under test is the task <-> probe contract: targets,
losses, decoders and metrics over the whole matrix.
"""

from __future__ import annotations

import pytest
import torch

from speechssl.config import load_config
from speechssl.data.collate import supervision_info
from speechssl.data.manifests import load_cuts
from speechssl.downstream.config import BenchConfig
from speechssl.downstream.probes import COMPATIBLE, PROBES, build_probe, check_probe
from speechssl.downstream.tasks import TASKS, ProbeBatch
from speechssl.errors import ConfigError

FEATURE_DIM = 8
TINY_PROBE = ["probe_cfg.hidden=16", "probe_cfg.heads=2", "probe_cfg.num_layers=1", "probe_cfg.embed_dim=8",
              "probe_cfg.decoder_layers=1", "probe_cfg.kernel_size=3", "asr.beam_size=2", "ast.source=*"]


def _pairs(compatible: bool) -> list[tuple[str, str]]:
    return [(t, p) for t, cls in sorted(TASKS.items()) for p, spec in sorted(PROBES.items())
            if (spec.output_kind in COMPATIBLE[cls.needs]) == compatible]


@pytest.fixture(scope="module")
def prepared(tiny_corpus):
    """Each task prepared once on the tiny corpus (label maps, tokenizers)."""
    cfg = load_config(BenchConfig, None, [f"data={tiny_corpus}", *TINY_PROBE])
    splits = {role: list(load_cuts(tiny_corpus, role)) for role in ("train", "dev", "test")}
    tasks = {}
    for name, cls in TASKS.items():
        task = cls(cfg, tiny_corpus)
        chosen = {role: task.select(cuts) for role, cuts in splits.items()}
        task.prepare(chosen)
        tasks[name] = (task, chosen)
    return cfg, tasks


def _batch(task, cuts, seed: int) -> ProbeBatch:
    """Random features long enough for every CTC target (4 frames per target symbol)."""
    infos = [supervision_info(c) for c in cuts]
    symbols = getattr(task, "ctc_symbols", None)
    lengths = [4 * len(symbols(i)) if symbols else 20 for i in infos]
    generator = torch.Generator().manual_seed(seed)
    features = torch.randn(len(cuts), max(lengths), FEATURE_DIM, generator=generator)
    return ProbeBatch(features, torch.tensor(lengths), [c.id for c in cuts], infos)


@pytest.mark.parametrize(("task_name", "probe_name"), _pairs(True))
def test_compatible_pair_trains_and_scores(task_name, probe_name, prepared):
    cfg, tasks = prepared
    task, splits = tasks[task_name]
    torch.manual_seed(0)
    probe = build_probe(probe_name, needs=task.needs, in_dim=FEATURE_DIM, num_outputs=task.num_outputs,
                        cfg=cfg.probe_cfg)
    batch = _batch(task, splits["train"][:3], seed=1)
    if PROBES[probe_name].trainable:
        optimizer = torch.optim.Adam(probe.parameters(), lr=1e-3)
        for _ in range(2):
            loss = task.loss(probe, batch)
            assert torch.isfinite(loss)
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
    else:
        assert sum(p.numel() for p in probe.parameters()) == 0
    probe.eval()
    # ASV scores trials, which need the whole split; the other tasks score any subset.
    cuts = splits["test"] if task_name == "asv" else splits["test"][:3]
    with torch.no_grad():
        metrics = task.evaluate(probe, [_batch(task, cuts, seed=2)], final=True)
    value = metrics[task.primary_metric]
    assert isinstance(value, float) and value == value  # a number, not NaN


@pytest.mark.parametrize(("task_name", "probe_name"), _pairs(False))
def test_incompatible_pair_is_refused(task_name, probe_name):
    with pytest.raises(ConfigError, match="this task needs"):
        check_probe(probe_name, TASKS[task_name].needs)


def test_matrix_covers_every_task_with_two_probe_families():
    for name, cls in TASKS.items():
        fitting = [p for p, s in PROBES.items() if s.output_kind in COMPATIBLE[cls.needs]]
        assert len(fitting) >= 2, name
        assert cls.default_probe in fitting, name
