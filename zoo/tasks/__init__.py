"""Evaluation (and training) tasks on data that ships offline: scikit-learn's digits for
vision families, Python's own sources for language families. Users add their own with
`register_task`, or from a plugin's `tasks` modules (loaded on the first unknown name)."""
from .base import Task
from .registry import all_tasks, get_task, register_task

__all__ = ["Task", "all_tasks", "get_task", "register_task"]
