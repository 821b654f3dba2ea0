"""Downstream tasks by name."""

from __future__ import annotations

from speechssl.downstream.tasks.asr import SpeechRecognition
from speechssl.downstream.tasks.asv import SpeakerVerification
from speechssl.downstream.tasks.base import ProbeBatch, Task
from speechssl.downstream.tasks.lid import LanguageID
from speechssl.errors import ConfigError

TASKS: dict[str, type[Task]] = {t.name: t for t in (SpeechRecognition, LanguageID, SpeakerVerification)}


def task_class(name: str) -> type[Task]:
    if name not in TASKS:
        raise ConfigError(f"unknown task {name!r}; known: {', '.join(sorted(TASKS))}")
    return TASKS[name]


__all__ = ["TASKS", "ProbeBatch", "Task", "task_class"]
