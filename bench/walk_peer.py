#!/usr/bin/python3
"""The Walking Noise sweep on LeNet-5-BN, written as a plain PyTorch user would write it.

The peer of quell's walk for the benchmark (bench/README-peer.md): the same network (weights
exported from a quell checkpoint by export_weights), the same Fashion-MNIST test set and
normalisation, the same site numbering and early-stop rule; noise injected with forward hooks.

Run with Debian's interpreter, which has torch 1.13 and numpy:

  /usr/bin/python3 bench/walk_peer.py --weights DIR --sigmas 0.01,0.1,1 --repeats 5 \
      --chance-margin 0.02 --threads 2 --out walk.csv --timing timing.json
"""

import argparse
import gzip
import json
import os
import sys
import time

# Debian's torch uses libopenblas0-pthread, whose own threads oversubscribe the cores under
# torch's (docs/bench.md; quell's set_threads does the same). It reads this only when loaded, so
# it must be set before numpy and torch are imported; set it in the environment to override.
os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")

import numpy as np  # noqa: E402
import torch  # noqa: E402
from torch import nn  # noqa: E402

# Fashion-MNIST normalisation of quell (src/data.cpp): x = (u8 / 255 - mean) / std, in float32.
MEAN = 0.2860
STD = 0.3530
NUM_CLASSES = 10


class LeNet5BN(nn.Module):
    """quell's lenet5-bn (src/models/zoo.cpp); attribute names are quell's module names."""

    def __init__(self, num_classes=NUM_CLASSES):
        super().__init__()
        self.conv1 = nn.Conv2d(1, 6, 5, stride=1, padding=2)
        self.bn1 = nn.BatchNorm2d(6)
        self.relu1 = nn.ReLU()
        self.pool1 = nn.MaxPool2d(2, 2)
        self.conv2 = nn.Conv2d(6, 16, 5)
        self.bn2 = nn.BatchNorm2d(16)
        self.relu2 = nn.ReLU()
        self.pool2 = nn.MaxPool2d(2, 2)
        self.fc1 = nn.Linear(16 * 5 * 5, 120)
        self.bn3 = nn.BatchNorm1d(120)
        self.relu3 = nn.ReLU()
        self.fc2 = nn.Linear(120, 84)
        self.bn4 = nn.BatchNorm1d(84)
        self.relu4 = nn.ReLU()
        self.fc3 = nn.Linear(84, num_classes)

    def forward(self, x):
        x = self.pool1(self.relu1(self.bn1(self.conv1(x))))
        x = self.pool2(self.relu2(self.bn2(self.conv2(x))))
        x = torch.flatten(x, 1)
        x = self.relu3(self.bn3(self.fc1(x)))
        x = self.relu4(self.bn4(self.fc2(x)))
        return self.fc3(x)

    def sites(self):
        """(name, module) in quell's site order; site 0 is the input (module None)."""
        names = ["input", "conv1", "bn1", "relu1", "pool1", "conv2", "bn2", "relu2", "pool2",
                 "fc1", "bn3", "relu3", "fc2", "bn4", "relu4", "fc3"]
        return [(n, None if n == "input" else getattr(self, n)) for n in names]


def load_exported(model, weights_dir):
    """Loads weights.{json,bin} written by export_weights into `model` (strict: every name and
    shape must match)."""
    with open(os.path.join(weights_dir, "weights.json")) as f:
        meta = json.load(f)
    if meta.get("format") != "quell-weights":
        raise SystemExit(f"{weights_dir}/weights.json: not a quell-weights export")
    if meta["model"]["name"] != "lenet5-bn":
        raise SystemExit(f"{weights_dir}: holds model {meta['model']['name']}, need lenet5-bn")
    blob = np.fromfile(os.path.join(weights_dir, "weights.bin"), dtype="<f4")
    if blob.nbytes != meta["total_bytes"]:
        raise SystemExit(f"{weights_dir}/weights.bin: {blob.nbytes} bytes, expected "
                         f"{meta['total_bytes']}")
    state = {}
    for t in meta["tensors"]:
        start = t["offset"] // 4
        values = torch.from_numpy(blob[start:start + t["numel"]].copy()).reshape(t["shape"])
        if t["source_dtype"] == "int64":
            values = values.round().to(torch.int64)
        state[t["name"]] = values
    model.load_state_dict(state, strict=True)
    return meta


def read_idx(path, header_bytes):
    with gzip.open(path, "rb") as f:
        return np.frombuffer(f.read(), dtype=np.uint8, offset=header_bytes)


def load_test_set(data_dir):
    images = read_idx(os.path.join(data_dir, "t10k-images-idx3-ubyte.gz"), 16)
    labels = read_idx(os.path.join(data_dir, "t10k-labels-idx1-ubyte.gz"), 8)
    n = labels.size
    x = images.reshape(n, 1, 28, 28).astype(np.float32) / np.float32(255)
    x = (x - np.float32(MEAN)) / np.float32(STD)
    return torch.from_numpy(x), torch.from_numpy(labels.astype(np.int64))


class SiteNoise:
    """Gaussian noise at one site: a forward hook on the site's module (output), or a forward
    pre-hook on the first layer for the input site."""

    def __init__(self, kind):
        self.kind = kind
        self.sigma = 0.0

    def noisy(self, x):
        if self.kind == "add":
            return x + self.sigma * torch.randn_like(x)
        return x * (1 + self.sigma * torch.randn_like(x))

    def attach(self, model, module):
        if module is None:
            return model.conv1.register_forward_pre_hook(
                lambda mod, inputs: (self.noisy(inputs[0]),))
        return module.register_forward_hook(lambda mod, inputs, output: self.noisy(output))


def accuracy(model, images, labels, batch_size):
    correct = 0
    with torch.no_grad():
        for start in range(0, labels.numel(), batch_size):
            logits = model(images[start:start + batch_size])
            correct += (logits.argmax(1) == labels[start:start + batch_size]).sum().item()
    return correct / labels.numel()


def parse_sites(text, names):
    if text is None:
        return list(range(len(names)))
    sites = []
    for token in text.split(","):
        token = token.strip()
        if token.isdigit() and int(token) < len(names):
            sites.append(int(token))
        elif token in names:
            sites.append(names.index(token))
        else:
            raise SystemExit(f"unknown site '{token}' (known: 0-{len(names) - 1} or "
                             f"{', '.join(names)})")
    return sites


def main():
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--weights", required=True, help="directory of weights.{json,bin}")
    p.add_argument("--data-dir", default="/usr/share/datasets/fashion-mnist")
    p.add_argument("--sites", help="comma-separated site indices or names (default: all 16)")
    p.add_argument("--sigmas", required=True, help="comma-separated sigmas, ascending")
    p.add_argument("--repeats", type=int, default=3,
                   help="full passes per grid point (quell walk's default: 3)")
    p.add_argument("--kind", choices=["add", "mul"], default="add")
    p.add_argument("--chance-margin", type=float,
                   help="a grid point is at chance if its mean accuracy <= 1/10 + margin")
    p.add_argument("--no-early-stop", action="store_true")
    p.add_argument("--batch-size", type=int, default=256)
    p.add_argument("--threads", type=int, default=0, help="torch threads (0: torch's default)")
    p.add_argument("--seed", type=int, default=1)
    p.add_argument("--out", required=True, help="CSV: site,name,sigma,repeat,accuracy")
    p.add_argument("--timing", help="JSON with the sweep's wall time")
    a = p.parse_args()
    sigmas = [float(s) for s in a.sigmas.split(",")]
    if sigmas != sorted(sigmas) or any(s < 0 for s in sigmas):
        raise SystemExit("--sigmas must be non-negative and ascending")
    early_stop = not a.no_early_stop
    if early_stop and a.chance_margin is None:
        raise SystemExit("--chance-margin is required unless --no-early-stop")
    if a.repeats < 1 or a.batch_size < 1:
        raise SystemExit("--repeats and --batch-size must be positive")
    if a.threads > 0:
        torch.set_num_threads(a.threads)
    torch.manual_seed(a.seed)

    model = LeNet5BN()
    load_exported(model, a.weights)
    model.eval()
    images, labels = load_test_set(a.data_dir)
    sites = model.sites()
    names = [n for n, _ in sites]
    walk = parse_sites(a.sites, names)

    t0 = time.perf_counter()
    clean = accuracy(model, images, labels, a.batch_size)
    clean_seconds = time.perf_counter() - t0
    print(f"clean accuracy {clean:.4f} ({labels.numel()} samples, {clean_seconds:.3f} s)",
          file=sys.stderr)

    chance = 1.0 / NUM_CLASSES
    rows = ["site,name,sigma,repeat,accuracy"]
    evaluations = 0
    per_site = []
    start = time.perf_counter()
    for site in walk:
        name, module = sites[site]
        noise = SiteNoise(a.kind)
        handle = noise.attach(model, module)
        site_start = time.perf_counter()
        at_chance_run = 0
        stopped = False
        points = 0
        for sigma in sigmas:
            noise.sigma = sigma
            accs = []
            for r in range(a.repeats):
                acc = accuracy(model, images, labels, a.batch_size)
                evaluations += 1
                accs.append(acc)
                rows.append(f"{site},{name},{sigma!r},{r},{acc!r}")
            points += 1
            mean = sum(accs) / len(accs)
            at_chance_run = at_chance_run + 1 if mean <= chance + (a.chance_margin or 0) else 0
            if early_stop and at_chance_run >= 2:
                stopped = True
                break
        handle.remove()
        per_site.append({"site": site, "name": name, "points": points, "early_stopped": stopped,
                         "seconds": time.perf_counter() - site_start})
    seconds = time.perf_counter() - start

    with open(a.out, "w") as f:
        f.write("\n".join(rows) + "\n")
    print(f"sweep: {len(walk)} sites, {evaluations} evaluations, {seconds:.2f} s "
          f"({seconds / max(evaluations, 1):.3f} s per evaluation), threads "
          f"{torch.get_num_threads()}", file=sys.stderr)
    if a.timing:
        with open(a.timing, "w") as f:
            json.dump({"seconds": seconds, "evaluations": evaluations, "clean_accuracy": clean,
                       "clean_seconds": clean_seconds, "threads": torch.get_num_threads(),
                       "batch_size": a.batch_size, "repeats": a.repeats, "kind": a.kind,
                       "sigmas": sigmas, "early_stop": early_stop,
                       "chance_margin": a.chance_margin, "sites": per_site,
                       "openblas_num_threads": os.environ.get("OPENBLAS_NUM_THREADS"),
                       "torch_version": torch.__version__}, f, indent=2)
            f.write("\n")


if __name__ == "__main__":
    main()
