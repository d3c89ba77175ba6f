"""Shared fixtures: real Kodak images (resolved and verified through lic_utils.data)."""
import os

import pytest

# Tests use both cores at most and never touch a GPU, whatever the machine has.
os.environ.setdefault("CUDA_VISIBLE_DEVICES", "")


@pytest.fixture(scope="session")
def kodak_paths():
    from lic_utils import data

    return data.kodak_paths()


@pytest.fixture(scope="session")
def kodim01(kodak_paths):
    from lic_utils import data

    return data.load_rgb(kodak_paths[0])
