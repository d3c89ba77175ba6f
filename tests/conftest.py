"""Shared fixtures: real Kodak images (resolved and verified through lic_utils.data)."""
import os

import pytest

# Tests use both cores at most and never touch a GPU, whatever the machine has.
os.environ.setdefault("CUDA_VISIBLE_DEVICES", "")


@pytest.fixture(scope="module")
def one_thread():
    """Torch on one thread for a module: the 2 cores are shared, and one thread avoids OpenMP barrier
    stalls when another process is busy (tiny models gain nothing from two)."""
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture(scope="session")
def kodak_paths():
    from lic_utils import data

    return data.kodak_paths()


@pytest.fixture(scope="session")
def kodim01(kodak_paths):
    from lic_utils import data

    return data.load_rgb(kodak_paths[0])
