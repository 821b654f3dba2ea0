"""Self-supervised pretraining: configs, LR schedules, the trainer, checkpoints, monitors."""

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
