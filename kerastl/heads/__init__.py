"""Heads: the trainable top of a model, one builder per task.

Each head knows its loss, output activation and metrics, so `kerastl.build_model`
compiles with the right pairing, and keeps its task in the saved model.
"""

from kerastl.heads.builders import binary, multiclass, multilabel, regression
from kerastl.heads.head_info import find_head, head_info
from kerastl.heads.task_head import HEAD_POOLING, TASKS, TaskHead

__all__ = [
    "HEAD_POOLING",
    "TASKS",
    "TaskHead",
    "binary",
    "find_head",
    "head_info",
    "multiclass",
    "multilabel",
    "regression",
]
