"""Downstream tasks by name."""

from __future__ import annotations

from speechssl.downstream.tasks.asv import SpeakerVerification
from speechssl.downstream.tasks.base import ProbeBatch, Task
from speechssl.downstream.tasks.classification import EmotionRecognition, IntentClassification, LanguageID
from speechssl.downstream.tasks.sequence import (
    JointRecognition,
    PhoneRecognition,
    SlotFilling,
    SpeechRecognition,
    SpeechTranslation,
    SyntacticAnalysis,
)
from speechssl.errors import ConfigError

TASKS: dict[str, type[Task]] = {
    t.name: t
    for t in (SpeechRecognition, JointRecognition, PhoneRecognition, LanguageID, SpeakerVerification, EmotionRecognition,
              IntentClassification, SlotFilling, SpeechTranslation, SyntacticAnalysis)
}


def task_class(name: str) -> type[Task]:
    if name not in TASKS:
        raise ConfigError(f"unknown task {name!r}; known: {', '.join(sorted(TASKS))}")
    return TASKS[name]


__all__ = ["TASKS", "ProbeBatch", "Task", "task_class"]
