"""Pure-PyTorch references of every op: the single source of truth for what an op computes."""
from .data_consistency import data_consistency

__all__ = ["data_consistency"]
