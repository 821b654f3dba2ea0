"""Self-supervised pretraining: configs, LR schedules, the trainer, checkpoints, monitors.

This package is also the Python API's ``speechssl.pretrain``: calling it,
``speechssl.pretrain("configs/pretrain/w2v2_tiny.yaml", out_dir="runs/tiny")``, runs
:func:`speechssl.api.pretrain` (YAML/mapping config + dotted overrides -> a run). The
package and the function share one name, so the package is made callable rather than
hidden by the function (``import speechssl.pretrain.trainer`` and the like keep working).
"""

import sys
import types

from speechssl.pretrain.config import OptimConfig, PretrainConfig, PretrainDataConfig
from speechssl.pretrain.schedules import lr_at
from speechssl.pretrain.trainer import PretrainResult, TrainingDiverged, TrainState, pretrain, read_metrics

__all__ = [
    "OptimConfig",
    "PretrainConfig",
    "PretrainDataConfig",
    "PretrainResult",
    "TrainState",
    "TrainingDiverged",
    "lr_at",
    "pretrain",
    "read_metrics",
]


class _CallablePackage(types.ModuleType):
    """The type of this package: a module that calls :func:`speechssl.api.pretrain`."""

    def __call__(self, *args, **kwargs):  # type: ignore[no-untyped-def]
        from speechssl.api import pretrain as api_pretrain

        return api_pretrain(*args, **kwargs)


sys.modules[__name__].__class__ = _CallablePackage
