"""The public functional API: one module per op (validation, backend dispatch, custom-op registration)."""
from .data_consistency import data_consistency, dunsa_data_consistency

__all__ = ["data_consistency", "dunsa_data_consistency"]
