#!/usr/bin/python3
"""Your own PyTorch network through quell, end to end (docs/python.md).

1. Loads Fashion-MNIST as tensors (quell's reader: normalised like `quell train`).
2. Trains a small CNN with batch norm in plain PyTorch (Adam).
3. Hands it to quell: Walking Noise (which site is fragile?), then denoising blocks under
   parameter budgets of 2% and 5% for static plus dynamic noise relative to each site's std.
4. Prints the tables and midpoints and draws the figures (gnuplot) into --out.

Run with Debian's interpreter (it has python3-torch):

    /usr/bin/python3 examples/python/walk_denoise.py --out runs/python-example
    /usr/bin/python3 examples/python/walk_denoise.py --quick     # smoke test, a minute or two
"""
import argparse
import time
from pathlib import Path

import torch
from torch import nn

import quell  # import it before training: it also sets torch's and OpenBLAS's thread counts


class SmallCnn(nn.Module):
    """Two conv blocks (conv, batch norm, ReLU, max-pool) and two linear layers. quell names
    its noise sites after these attributes (conv1, bn1, relu1, ...)."""

    def __init__(self, classes=10):
        super().__init__()
        self.conv1, self.bn1 = nn.Conv2d(1, 16, 3, padding=1), nn.BatchNorm2d(16)
        self.conv2, self.bn2 = nn.Conv2d(16, 32, 3, padding=1), nn.BatchNorm2d(32)
        self.relu1, self.relu2, self.relu3 = nn.ReLU(), nn.ReLU(), nn.ReLU()
        self.pool1, self.pool2 = nn.MaxPool2d(2), nn.MaxPool2d(2)
        self.fc1, self.fc2 = nn.Linear(32 * 7 * 7, 64), nn.Linear(64, classes)

    def forward(self, x):
        x = self.pool1(self.relu1(self.bn1(self.conv1(x))))   # 16 x 14 x 14
        x = self.pool2(self.relu2(self.bn2(self.conv2(x))))   # 32 x 7 x 7
        return self.fc2(self.relu3(self.fc1(torch.flatten(x, 1))))


def train_cnn(cnn, x, y, epochs, batch=128, lr=1e-3):
    """Plain PyTorch: Adam, cross-entropy, a new random order every epoch."""
    opt = torch.optim.Adam(cnn.parameters(), lr=lr)
    for epoch in range(epochs):
        cnn.train()
        order, total, start = torch.randperm(len(y)), 0.0, time.monotonic()
        for i in range(0, len(y), batch):
            idx = order[i:i + batch]
            loss = nn.functional.cross_entropy(cnn(x[idx]), y[idx])
            opt.zero_grad()
            loss.backward()
            opt.step()
            total += loss.item() * len(idx)
        print(f"epoch {epoch + 1}: loss {total / len(y):.4f} ({time.monotonic() - start:.1f} s)")
    return cnn.eval()


@torch.no_grad()
def accuracy(predict, x, y):
    return sum((predict(x[i:i + 1000]).argmax(1) == y[i:i + 1000]).sum().item()
               for i in range(0, len(y), 1000)) / len(y)


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--out", type=Path, default=Path("runs/python-example"))
    ap.add_argument("--limit", type=int, default=10000, help="training images of the CNN")
    ap.add_argument("--epochs", type=int, default=3)
    ap.add_argument("--quick", action="store_true", help="tiny settings, for a smoke test")
    a = ap.parse_args()
    if a.quick:
        a.limit, a.epochs = 1000, 1
    start = time.monotonic()
    torch.manual_seed(0)

    # 1. Data. load_data returns the native dataset; .inputs [N, 1, 28, 28] float32 and .targets
    # [N] int64 are ordinary tensors. The CNN trains on the first `limit` (shuffled) training
    # images; the next `limit` are held out for the denoising blocks, which learn little on
    # images the backbone has memorised (docs/byo.md).
    train_all = quell.load_data("fashion-mnist", split="train", limit=2 * a.limit, shuffle_seed=1)
    x, y = train_all.inputs[:a.limit], train_all.targets[:a.limit]
    heldout = (train_all.inputs[a.limit:], train_all.targets[a.limit:])
    test_set = quell.load_data("fashion-mnist", split="test", limit=2000 if a.quick else 0,
                               shuffle_seed=1)
    test = (test_set.inputs, test_set.targets)
    print(f"data: {len(y)} training, {len(heldout[1])} held-out, {len(test[1])} test images")

    # 2. Train in plain PyTorch.
    cnn = train_cnn(SmallCnn(), x, y, a.epochs)
    print(f"PyTorch test accuracy {accuracy(cnn, *test):.4f}")

    # 3. Into quell: scripted with TorchScript and imported; every op output is a noise site.
    # An imported model has no calibration yet (each site's clean statistics, which the noise
    # relative to the std, rel=std, needs): the first study given training data calibrates it.
    model = quell.Model(cnn, example_input=x[:8])
    print(model)
    print(model.sites_frame().to_string(index=False))
    print(f"quell clean test accuracy {accuracy(model, *test):.4f} (the same network)")

    # 4. Walking Noise: additive noise at one site at a time over a log grid of absolute sigma;
    # each site's midpoint is the sigma where accuracy falls halfway from clean to chance.
    # Resumable: run the script again after Ctrl-C and the walk continues from its journal.
    walk_opts = dict(grid="0.1:10", per_decade=2, repeats=2) if a.quick else {}
    walk = quell.walk(model, test, out=a.out / "walk", figures=None, **walk_opts)
    print(walk)
    print("midpoints (larger = more robust):")
    for name, mid in sorted(walk.midpoints.items(), key=lambda kv: kv[1] or float("inf")):
        print(f"  {name:8s} {'not crossed' if mid is None else f'{mid:.3g}'}")

    # 5. Denoising blocks against static (per chip) plus dynamic (per pass) noise, both relative
    # to each site's std, under budgets of 2% and 5% of the network's parameters. The walk's
    # midpoints join the rankings; the blocks are fitted on the held-out training images.
    noise = "all=add:0.25:static:rel=std+add:0.125:rel=std"
    if a.quick:
        denoise_opts = dict(search_limit=500, val_size=200, epochs=1, draws=2, chips=2,
                            robustness=None)
    else:  # the validation split may take at most a fifth of the training images
        denoise_opts = dict(val_size=min(5000, len(heldout[1]) // 5))
    result = quell.denoise(model, heldout, test, noise=noise, out=a.out / "denoise",
                           budgets=[2, 5], walk=walk, figures=None, **denoise_opts)
    print(result)
    base = result.comparison[0]  # "unmitigated": the network as trained, under the noise
    for row in result.comparison[1:]:
        gain = 100 * (row["noisy"]["mean"] - base["noisy"]["mean"])
        print(f"  {row['model']:22s} {row['overhead_pct']:6.2f}% more parameters: "
              f"{gain:+5.1f} points of noisy accuracy")

    # 6. Figures (need gnuplot): walk curves, midpoints, heatmap; Pareto front (and robustness).
    try:
        for r, folder in ((walk, a.out / "walk" / "figures"), (result, a.out / "denoise" / "figures")):
            print("wrote", ", ".join(str(f) for f in r.plot(folder)))
    except RuntimeError as e:
        print(f"no figures: {e}")
    print(f"done in {time.monotonic() - start:.0f} s; results in {a.out}")


if __name__ == "__main__":
    main()
