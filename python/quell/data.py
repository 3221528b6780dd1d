"""Data: (inputs, targets) tensors or arrays, any torch Dataset or DataLoader, or a built-in
dataset by name. Tensors reach the native engine without a copy when they are float32 and
contiguous on the CPU."""
import os

import torch

from . import _quell
from .errors import check_file


def load_data(name="fashion-mnist", *, split="train", dir=None, limit=0, shuffle_seed=0):
    """A built-in dataset read by the native readers (docs/data.md).

    name: "fashion-mnist" (Debian's dataset-fashion-mnist by default), "mnist", "cifar10",
    "cifar100"; dir: the folder of its files (default: $QUELL_DATA_DIR/<name>, else the
    dataset's usual place); split: "train" or "test"; limit: the first N samples (after a
    shuffle with shuffle_seed, 0 = file order; limit 0 = all). Inputs come normalised with the
    dataset's mean and std, as for `quell train`.
    """
    if not isinstance(name, str):
        raise TypeError(f"name must be a dataset name, got {type(name).__name__}")
    known = list(_quell.dataset_names())
    if name not in known:
        raise ValueError(f"unknown dataset '{name}'; known datasets: {', '.join(known)}")
    if split not in ("train", "test"):
        raise ValueError(f"split '{split}': expected train or test")
    if int(limit) < 0:
        raise ValueError(f"limit must be >= 0 (0 = all samples), got {limit}")
    directory = os.fspath(dir) if dir is not None else ""
    if directory:
        check_file(directory, "data directory")
    try:
        return _quell.load_dataset(name, directory, split, int(limit), int(shuffle_seed))
    except RuntimeError as e:
        msg = str(e)
        if "cannot open" in msg or "no such file" in msg.lower() or "not found" in msg:
            raise FileNotFoundError(msg) from None
        raise ValueError(msg) from None


def _tensor(a, what):
    if isinstance(a, torch.Tensor):
        return a
    try:
        import numpy as np
        if isinstance(a, np.ndarray):
            return torch.from_numpy(a)
    except ImportError:  # numpy is optional
        pass
    raise TypeError(f"{what} must be a torch.Tensor or a numpy array, got {type(a).__name__}")


def _from_tensors(x, y, name, num_classes):
    x = _tensor(x, "inputs")
    y = _tensor(y, "targets")
    if x.is_complex() or x.dtype == torch.bool:
        raise TypeError(f"inputs must be floating point or integer token ids, got {x.dtype}")
    if y.is_complex() or y.dtype == torch.bool:
        raise TypeError(f"targets must be integer ids or real values, got {y.dtype}")
    if x.device.type != "cpu" or y.device.type != "cpu":
        raise ValueError(f"data must be on the CPU (quell moves it to the study's device), "
                         f"got {x.device} / {y.device}")
    if x.dim() < 2:
        raise ValueError(f"inputs must be a batch [N, ...] with at least one dimension per "
                         f"sample, got {list(x.shape)}")
    if y.dim() < 1 or y.shape[0] != x.shape[0]:
        raise ValueError(f"targets must have N = {x.shape[0]} samples (the inputs'), got "
                         f"{list(y.shape)}")
    if not y.is_floating_point() and y.dim() > 2:
        raise ValueError(f"integer targets must be [N] class ids or [N, T] ids per position, "
                         f"got {list(y.shape)}")
    try:
        return _quell.dataset_from_tensors(x.detach(), y.detach(), int(num_classes or 0), name)
    except RuntimeError as e:
        raise ValueError(str(e)) from None


def load_tensors(path, *, split="train", limit=0, shuffle_seed=0):
    """A dataset from a tensor file or folder, read by the native reader (docs/data.md, "Tensor
    files"): a torch.save file (.pt/.pth) or NumPy .npz holding both splits ({"train": (x, y),
    "test": (x, y)}, or x_train / y_train / x_test / y_test), or a folder with train.pt and
    test.pt (or .npz, or train_inputs.npy / train_targets.npy). Inputs of any shape (float
    features or int64 token ids); targets class ids [N], ids per position [N, T] or real
    values."""
    check_file(path, "tensor data")
    if split not in ("train", "test"):
        raise ValueError(f"split '{split}': expected train or test")
    try:
        return _quell.load_dataset("tensors", os.fspath(path), split, int(limit), int(shuffle_seed))
    except RuntimeError as e:
        raise ValueError(str(e)) from None


def _collect(loader):
    xs, ys = [], []
    for batch in loader:
        if not isinstance(batch, (tuple, list)) or len(batch) < 2:
            raise TypeError("each batch must be (inputs, targets)")
        xs.append(torch.as_tensor(batch[0]))
        ys.append(torch.as_tensor(batch[1]))
    if not xs:
        raise ValueError("the data holds no samples")
    return torch.cat(xs), torch.cat(ys)


def as_dataset(data, *, what="data", num_classes=None, name="tensors", split="train"):
    """The native dataset of `data`: (x, y) tensors or numpy arrays (inputs [N, ...]: float
    images, features or frames, or int64 token ids; targets: [N] class ids, [N, T] ids per
    position (negative = ignored) or float real values), a torch.utils.data.Dataset or
    DataLoader yielding (input, target), a dataset name (loaded with `split`), or a dataset from
    load_data() / load_tensors()."""
    if isinstance(data, _quell.NativeDataset):
        return data
    if isinstance(data, str):
        return load_data(data, split=split)
    if isinstance(data, (tuple, list)):
        if len(data) != 2:
            raise ValueError(f"{what}: expected (inputs, targets), got {len(data)} items")
        return _from_tensors(data[0], data[1], name, num_classes)
    if isinstance(data, torch.utils.data.DataLoader):
        return _from_tensors(*_collect(data), name, num_classes)
    if isinstance(data, torch.utils.data.Dataset):
        loader = torch.utils.data.DataLoader(data, batch_size=1024, shuffle=False)
        return _from_tensors(*_collect(loader), name, num_classes)
    if data is None:
        raise TypeError(f"{what} is required")
    raise TypeError(f"{what}: expected (inputs, targets) tensors, a torch Dataset or DataLoader, "
                    f"or a dataset name, got {type(data).__name__}")
