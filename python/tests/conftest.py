"""Fixtures of the package's tests: a small synthetic dataset in the Fashion-MNIST layout and
one lenet5-bn trained on it, made once per session (seconds)."""
import os
import shutil
import subprocess

import pytest
import torch

import quell
from quell import _quell


def cli_path():
    """The quell CLI of this build (QUELL_CLI, set by ctest), or the one on PATH."""
    path = os.environ.get("QUELL_CLI") or shutil.which("quell")
    if not path:
        pytest.skip("no quell CLI (set QUELL_CLI)")
    return path


def run_cli(*args):
    return subprocess.run([cli_path(), *map(str, args)], capture_output=True, text=True)


@pytest.fixture(scope="session")
def data_dir(tmp_path_factory):
    d = tmp_path_factory.mktemp("data")
    _quell.write_synthetic_idx(str(d), 1200, 400, 1)
    return str(d)


@pytest.fixture(scope="session")
def train_data(data_dir):
    return quell.load_data("fashion-mnist", dir=data_dir, split="train")


@pytest.fixture(scope="session")
def test_data(data_dir):
    return quell.load_data("fashion-mnist", dir=data_dir, split="test")


@pytest.fixture(scope="session")
def checkpoint(tmp_path_factory, train_data, test_data):
    """A lenet5-bn trained for one epoch, saved as a quell checkpoint."""
    path = str(tmp_path_factory.mktemp("ckpt") / "lenet5-bn.pt")
    model = quell.Model("lenet5-bn", seed=1)
    result = quell.train(model, train_data, test=test_data, epochs=1, batch_size=32,
                         out=path, progress=False)
    assert result.test_accuracy > 0.5
    return path


class SmallCnn(torch.nn.Module):
    """A user's own network: conv, batch norm, ReLU, pool, linear."""

    def __init__(self):
        super().__init__()
        self.conv = torch.nn.Conv2d(1, 4, 3, padding=1)
        self.bn = torch.nn.BatchNorm2d(4)
        self.fc = torch.nn.Linear(4 * 14 * 14, 10)

    def forward(self, x):
        x = torch.nn.functional.max_pool2d(torch.relu(self.bn(self.conv(x))), 2)
        return self.fc(torch.flatten(x, 1))
