"""Datasets: on-disk layouts, few-shot sampling, transforms and the torch dataset."""
from .base import Datum, DatasetSplits
from .registry import DATASETS, build_dataset

__all__ = ["Datum", "DatasetSplits", "DATASETS", "build_dataset"]
