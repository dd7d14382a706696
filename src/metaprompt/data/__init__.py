"""Datasets: on-disk layouts, few-shot sampling, transforms and the torch dataset.

Importing the package imports every reader module, and each registers its datasets in
:mod:`metaprompt.data.registry`.
"""
from . import imagefolder, imagenet, coop, dg  # noqa: F401,I001 - the readers register themselves, in this order
from .base import Datum, DatasetSplits
from .registry import DATASETS, build_dataset

__all__ = ["Datum", "DatasetSplits", "DATASETS", "build_dataset"]
