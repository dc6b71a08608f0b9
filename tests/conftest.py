"""Test setup: Triton runs interpreted on CPU tensors when there is no GPU; `cuda` tests skip without one.

TRITON_INTERPRET must be set before any Triton kernel module is imported, hence here, at collection.
"""
import os

import torch

if not torch.cuda.is_available():
    os.environ.setdefault("TRITON_INTERPRET", "1")

import pytest  # noqa: E402


def pytest_collection_modifyitems(config, items):
    if torch.cuda.is_available():
        return
    skip = pytest.mark.skip(reason="needs a CUDA GPU")
    for item in items:
        if "cuda" in item.keywords:
            item.add_marker(skip)
