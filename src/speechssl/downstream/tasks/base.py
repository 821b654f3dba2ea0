"""What a downstream task declares: its labels, loss, metrics and the probe input it needs.

The runner (:mod:`speechssl.downstream.runner`) owns everything else -- features, batching,
optimisation, early stopping -- so a task is a small class and adding one never copies a
training loop (s3prl's copy-pasted task folders are what we avoid).

Labels are read from :func:`speechssl.data.collate.supervision_info` dicts (``text``,
``language``, ``speaker``, ``custom``...), the same shape at preparation time (from cuts)
and in batches.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Iterable, Iterator

from torch import Tensor, nn

from speechssl.data.collate import supervision_info
from speechssl.downstream.config import BenchConfig
from speechssl.errors import ConfigError

LabelGetter = Callable[[dict[str, Any]], Any]


@dataclass
class ProbeBatch:
    """Featurized inputs of one batch plus what is needed to label it."""

    features: Tensor  # [B, T, D]
    lengths: Tensor  # [B]
    cut_ids: list[str]
    supervisions: list[dict[str, Any]]


class Task:
    name: str = ""
    needs: str = "utterance"
    """Probe output kind the task consumes: frames | sequence | utterance | embedding."""
    default_probe: str = ""
    primary_metric: str = ""
    """Dev metric used for early stopping and the best checkpoint."""
    higher_is_better: bool = True
    default_lr: float = 1e-3
    default_epochs: int = 10

    def __init__(self, cfg: BenchConfig, data_dir: Path) -> None:
        self.cfg = cfg
        self.data_dir = data_dir

    # ------------------------------------------------------------ data
    def select(self, cuts: list) -> list:
        """The cuts of a split this task uses (all by default; speech translation keeps its
        source languages), chosen before ``train_hours`` is applied."""
        return cuts

    def prepare(self, splits: dict[str, list]) -> None:
        """Check the splits carry the labels the task needs and build label maps from train."""
        raise NotImplementedError

    @property
    def num_outputs(self) -> int:
        raise NotImplementedError

    def label_state(self) -> dict[str, Any]:
        """The label maps, saved with the probe and the result."""
        return {}

    # ------------------------------------------------------------ training
    def loss(self, probe: nn.Module, batch: ProbeBatch) -> Tensor:
        raise NotImplementedError

    def evaluate(self, probe: nn.Module, batches: Iterable[ProbeBatch], *, final: bool) -> dict[str, Any]:
        """Metrics over a whole split (``final`` = the test pass, where slow decoders run)."""
        raise NotImplementedError

    def tune_decoding(self, probe: nn.Module, dev_batches: Iterable[ProbeBatch]) -> dict[str, Any] | None:
        """Choose decoding settings on dev once training is over (no-op unless a task has some)."""
        return None

    def is_better(self, value: float, best: float | None) -> bool:
        if best is None:
            return True
        return value > best if self.higher_is_better else value < best


def custom_label(key: str) -> LabelGetter:
    """Getter of a field of the supervision's ``custom`` dict (the corpus's extra labels)."""

    def get(info: dict[str, Any]) -> Any:
        return (info.get("custom") or {}).get(key)

    return get


def require_label(splits: dict[str, list], task: str, label: str, getter: LabelGetter) -> None:
    """Refuse data whose cuts lack ``label``, naming the split and an example cut."""
    for split, cuts in splits.items():
        for cut in cuts:
            if getter(supervision_info(cut)) in (None, "", []):
                raise ConfigError(
                    f"task {task} needs a {label} label on every utterance, but cut {cut.id!r} "
                    f"in split {split!r} has none; choose data that carries {label}s or another task"
                )


def label_values(cuts: Iterable, getter: LabelGetter) -> Iterator[str]:
    for cut in cuts:
        yield str(getter(supervision_info(cut)))
