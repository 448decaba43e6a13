"""Saving and loading: one `.keras` file with metadata, any backend; weights by name; export;
LoRA adapters alone in a small file."""

from kerastl.backbones.weights_by_name import WeightsReport, load_weights_by_name
from kerastl.saving.adapters import load_adapters, save_adapters
from kerastl.saving.export import ExportDependencyError, export
from kerastl.saving.load import load_model, read_metadata
from kerastl.saving.save import save_model

__all__ = [
    "ExportDependencyError",
    "WeightsReport",
    "export",
    "load_adapters",
    "load_model",
    "load_weights_by_name",
    "read_metadata",
    "save_adapters",
    "save_model",
]
