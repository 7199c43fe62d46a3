"""The fixtures shared by the test modules; the helpers they use live in helpers.py."""

import pytest
import torch
from helpers import make_tiny_store

# One thread per test process keeps timings steady and results reproducible; the machine's cores
# go to pytest-xdist's workers instead (`pytest -n auto`, the README's command: one per core).
torch.set_num_threads(1)


@pytest.fixture
def tiny_store(tmp_path):
    return make_tiny_store(tmp_path / "store")
