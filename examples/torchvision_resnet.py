#!/usr/bin/python3
"""Bring your own model and data, end to end (docs/byo.md).

1. Writes an image folder in the torchvision ImageFolder layout (OUT/images/{train,val}/<class>/
   *.png) from Debian's Fashion-MNIST, standing in for your own images, and a second one
   (OUT/heldout/{train,val}) whose train split holds training images the network never sees
   (for `quell denoise`: blocks fitted and validated on data the backbone has memorised learn
   little) and whose val split is the same test images.
2. Trains torchvision's resnet18 on it with plain PyTorch (ImageFolder, 3x32x32 inputs).
3. Exports it with torch.jit.script to OUT/resnet18.pt, and prints its test accuracy.

Needs Debian's python3-torch, python3-torchvision and python3-pil (not quell: quell itself
needs no Python). Usage:

    /usr/bin/python3 examples/torchvision_resnet.py OUT [--train N] [--heldout N] [--val N]
                                                        [--epochs E]
"""
import argparse
import gzip
import os

import numpy as np
import torch
import torchvision
from PIL import Image
from torchvision import transforms

CLASSES = ["t-shirt", "trouser", "pullover", "dress", "coat", "sandal", "shirt", "sneaker",
           "bag", "ankle-boot"]
MEAN, STD = [0.2860] * 3, [0.3530] * 3


def read_idx(path):
    with gzip.open(path, "rb") as f:
        data = f.read()
    dims = data[3]
    shape = [int.from_bytes(data[4 + 4 * i:8 + 4 * i], "big") for i in range(dims)]
    return np.frombuffer(data, dtype=np.uint8, offset=4 + 4 * dims).reshape(shape)


def write_folder(out, split, images, labels, n, first=0):
    for c in CLASSES:
        os.makedirs(os.path.join(out, split, c), exist_ok=True)
    for i in range(first, min(first + n, len(labels))):
        path = os.path.join(out, split, CLASSES[labels[i]], "%05d.png" % i)
        if not os.path.exists(path):
            Image.fromarray(images[i]).save(path)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("out")
    ap.add_argument("--data", default="/usr/share/datasets/fashion-mnist")
    ap.add_argument("--train", type=int, default=10000)
    ap.add_argument("--heldout", type=int, default=5000)
    ap.add_argument("--val", type=int, default=2000)
    ap.add_argument("--epochs", type=int, default=2)
    a = ap.parse_args()
    folder = os.path.join(a.out, "images")
    train_images = read_idx(os.path.join(a.data, "train-images-idx3-ubyte.gz"))
    train_labels = read_idx(os.path.join(a.data, "train-labels-idx1-ubyte.gz"))
    write_folder(folder, "train", train_images, train_labels, a.train)
    write_folder(folder, "val", read_idx(os.path.join(a.data, "t10k-images-idx3-ubyte.gz")),
                 read_idx(os.path.join(a.data, "t10k-labels-idx1-ubyte.gz")), a.val)
    heldout = os.path.join(a.out, "heldout")
    write_folder(heldout, "train", train_images, train_labels, a.heldout, first=a.train)
    if not os.path.exists(os.path.join(heldout, "val")):
        os.symlink(os.path.join("..", "images", "val"), os.path.join(heldout, "val"))

    torch.manual_seed(0)
    torch.set_num_threads(os.cpu_count())
    # What quell does with --image-size 32 --mean/--std: RGB, shorter side to 32, centre crop.
    tf = transforms.Compose([transforms.Resize(32), transforms.CenterCrop(32),
                             transforms.ToTensor(), transforms.Normalize(MEAN, STD)])
    train = torchvision.datasets.ImageFolder(os.path.join(folder, "train"), tf)
    val = torchvision.datasets.ImageFolder(os.path.join(folder, "val"), tf)
    loader = torch.utils.data.DataLoader(train, batch_size=128, shuffle=True)
    model = torchvision.models.resnet18(num_classes=len(train.classes))
    opt = torch.optim.Adam(model.parameters(), lr=1e-3)
    for epoch in range(a.epochs):
        model.train()
        for x, y in loader:
            opt.zero_grad()
            torch.nn.functional.cross_entropy(model(x), y).backward()
            opt.step()
        model.eval()
        correct = 0
        with torch.no_grad():
            for x, y in torch.utils.data.DataLoader(val, batch_size=256):
                correct += (model(x).argmax(1) == y).sum().item()
        print("epoch %d: val accuracy %.4f" % (epoch + 1, correct / len(val)))
    path = os.path.join(a.out, "resnet18.pt")
    torch.jit.script(model.eval()).save(path)
    print("wrote", path, "and the image folders", folder, "and", heldout)


if __name__ == "__main__":
    main()
