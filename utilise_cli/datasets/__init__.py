"""Datasets: reading sources, screening frames, the dataset file, gap simulation and the torch Dataset."""

from .prepare import prepare
from .screening import ScreeningRule
from .series import Series
from .simulate import simulate
from .sources import READERS
from .store import DatasetFile
from .torch_data import SequenceDataset, collate

__all__ = ["prepare", "simulate", "ScreeningRule", "Series", "READERS", "DatasetFile", "SequenceDataset", "collate"]
