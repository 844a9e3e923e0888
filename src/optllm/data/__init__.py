"""Data: the `Outcomes` type, loaders and the dataset registry, splits, synthetic instances."""
from optllm.data.outcomes import Outcomes
from optllm.data.paths import data_dir
from optllm.data.registry import DatasetInfo, datasets, load, register
from optllm.data.split import Split, split
from optllm.data.synthetic import synthetic
from optllm.data.wide import load_long, load_wide

__all__ = [
    "Outcomes", "DatasetInfo", "Split", "data_dir", "datasets", "load", "load_long",
    "load_wide", "register", "split", "synthetic",
]
