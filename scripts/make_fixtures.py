#!/usr/bin/python3
"""Exports the TorchScript fixtures of quell's tests (tests/fixtures/*.pt).

Needs Debian's python3-torch (PyTorch 1.13); quell itself does not. The outputs are small and
committed, so the tests never run Python. Re-run after changing a model here:

    /usr/bin/python3 scripts/make_fixtures.py [OUT_DIR]      (default: tests/fixtures)

The image models take a batch [N, C, H, W] and return logits [N, classes]; the sequence
fixtures (tiny_lm: token ids [N, 8] -> [N, 8, 11]; tiny_lstm: frames [N, 5, 6] -> [N, 3];
tiny_regressor: [N, 4] -> [N, 2] real values) come with their inputs and PyTorch's outputs in
sequence_io.pt (torch.save), and tiny.npz / tiny_fortran.npy are written by NumPy for the tensor
readers. Weights are seeded, so the files are reproducible up to PyTorch's serialisation.
"""
import os
import sys

import torch
import torch.nn as nn

# quell's built-in lenet5-bn with its module names (so its site names): the one the Walking
# Noise bench's PyTorch peer uses.
sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "bench"))
from walk_peer import LeNet5BN  # noqa: E402


def conv3x3(cin, cout, stride=1):
    return nn.Conv2d(cin, cout, 3, stride=stride, padding=1, bias=False)


class BasicBlock(nn.Module):
    """torchvision's ResNet BasicBlock, verbatim in structure (in-place add and ReLU, one ReLU
    module called twice, an optional downsample Sequential)."""

    def __init__(self, cin, cout, stride=1):
        super().__init__()
        self.conv1 = conv3x3(cin, cout, stride)
        self.bn1 = nn.BatchNorm2d(cout)
        self.relu = nn.ReLU(inplace=True)
        self.conv2 = conv3x3(cout, cout)
        self.bn2 = nn.BatchNorm2d(cout)
        self.downsample = None
        if stride != 1 or cin != cout:
            self.downsample = nn.Sequential(
                nn.Conv2d(cin, cout, 1, stride=stride, bias=False), nn.BatchNorm2d(cout))

    def forward(self, x):
        identity = x
        out = self.conv1(x)
        out = self.bn1(out)
        out = self.relu(out)
        out = self.conv2(out)
        out = self.bn2(out)
        if self.downsample is not None:
            identity = self.downsample(x)
        out += identity
        out = self.relu(out)
        return out


class SmallResNet(nn.Module):
    """A torchvision-style ResNet for 3x32x32 input: stem, two stages of one BasicBlock,
    adaptive average pool, flatten, fc."""

    def __init__(self, classes=10):
        super().__init__()
        self.conv1 = nn.Conv2d(3, 8, 3, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(8)
        self.relu = nn.ReLU(inplace=True)
        self.layer1 = nn.Sequential(BasicBlock(8, 8))
        self.layer2 = nn.Sequential(BasicBlock(8, 16, stride=2))
        self.avgpool = nn.AdaptiveAvgPool2d((1, 1))
        self.fc = nn.Linear(16, classes)

    def forward(self, x):
        x = self.relu(self.bn1(self.conv1(x)))
        x = self.layer2(self.layer1(x))
        x = self.avgpool(x)
        x = torch.flatten(x, 1)
        return self.fc(x)


class Attention(nn.Module):
    def __init__(self, dim, heads):
        super().__init__()
        self.heads = heads
        self.scale = (dim // heads) ** -0.5
        self.q = nn.Linear(dim, dim)
        self.k = nn.Linear(dim, dim)
        self.v = nn.Linear(dim, dim)
        self.proj = nn.Linear(dim, dim)

    def forward(self, x):
        b, t, d = x.shape
        h = self.heads
        q = self.q(x).reshape(b, t, h, d // h).transpose(1, 2)
        k = self.k(x).reshape(b, t, h, d // h).transpose(1, 2)
        v = self.v(x).reshape(b, t, h, d // h).transpose(1, 2)
        attn = torch.matmul(q, k.transpose(-2, -1)) * self.scale
        attn = attn.softmax(dim=-1)
        out = torch.matmul(attn, v).transpose(1, 2).reshape(b, t, d)
        return self.proj(out)


class EncoderBlock(nn.Module):
    def __init__(self, dim, heads, hidden):
        super().__init__()
        self.norm1 = nn.LayerNorm(dim)
        self.attn = Attention(dim, heads)
        self.norm2 = nn.LayerNorm(dim)
        self.fc1 = nn.Linear(dim, hidden)
        self.act = nn.GELU()
        self.fc2 = nn.Linear(hidden, dim)

    def forward(self, x):
        x = x + self.attn(self.norm1(x))
        x = x + self.fc2(self.act(self.fc1(self.norm2(x))))
        return x


class TinyViT(nn.Module):
    """A tiny vision transformer for 1x28x28 input: 7x7 patches (16 tokens of 32), one
    pre-norm encoder block with 2 heads, mean over tokens, linear head."""

    def __init__(self, classes=10, dim=32):
        super().__init__()
        self.patch = nn.Conv2d(1, dim, 7, stride=7)
        self.pos = nn.Parameter(torch.randn(1, 16, dim) * 0.02)
        self.block = EncoderBlock(dim, heads=2, hidden=64)
        self.norm = nn.LayerNorm(dim)
        self.head = nn.Linear(dim, classes)

    def forward(self, x):
        x = self.patch(x).flatten(2).transpose(1, 2) + self.pos
        x = self.block(x)
        x = self.norm(x).mean(dim=1)
        return self.head(x)


class Flags(nn.Module):
    """Control flow quell must handle: a residual guarded by a bool attribute (torchvision's
    MobileNetV2 `use_res_connect`: folded, its ops are sites), a branch on the data (its ops
    are listed as inside control flow), and a dropout (listed, not a site)."""

    def __init__(self, classes=10):
        super().__init__()
        self.use_res = True
        self.conv = nn.Conv2d(1, 1, 3, padding=1)
        self.fc = nn.Linear(28 * 28, classes)
        self.drop = nn.Dropout(0.1)

    def forward(self, x):
        if self.use_res:
            x = x + self.conv(x)
        if bool(x.mean() > 100.0):
            x = torch.relu(x)
        return self.fc(self.drop(torch.flatten(x, 1)))


class TwoOutputs(nn.Module):
    """Returns (logits, features): not a classifier quell can evaluate."""

    def __init__(self, classes=10):
        super().__init__()
        self.fc = nn.Linear(28 * 28, classes)

    def forward(self, x):
        f = torch.flatten(x, 1)
        return self.fc(f), f


def randomise_bn(model, gen):
    """Non-trivial BN statistics and affine parameters, so tests see them used."""
    for m in model.modules():
        if isinstance(m, (nn.BatchNorm1d, nn.BatchNorm2d)):
            with torch.no_grad():
                m.running_mean.copy_(torch.randn(m.num_features, generator=gen) * 0.1)
                m.running_var.copy_(torch.rand(m.num_features, generator=gen) + 0.5)
                m.weight.copy_(torch.rand(m.num_features, generator=gen) + 0.5)
                m.bias.copy_(torch.randn(m.num_features, generator=gen) * 0.1)


class TinyLSTM(nn.Module):
    """A keyword-spotting shape: frames [N, T, F] -> LSTM -> the last step's output -> classes."""

    def __init__(self):
        super().__init__()
        self.lstm = nn.LSTM(6, 8, batch_first=True)
        self.fc = nn.Linear(8, 3)

    def forward(self, x):
        out, _ = self.lstm(x)
        return self.fc(out[:, -1])


class TinyGRU(nn.Module):
    def __init__(self):
        super().__init__()
        self.gru = nn.GRU(6, 8, batch_first=True)
        self.fc = nn.Linear(8, 3)

    def forward(self, x):
        out, _ = self.gru(x)
        return self.fc(out.mean(1))


class TinyRegressor(nn.Module):
    def __init__(self):
        super().__init__()
        self.fc1 = nn.Linear(4, 16)
        self.fc2 = nn.Linear(16, 2)

    def forward(self, x):
        return self.fc2(torch.tanh(self.fc1(x)))


def sequence_fixtures(out):
    """The sequence, recurrent and regression fixtures, their reference outputs, NumPy files."""
    import numpy as np
    sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "examples",
                                    "python"))
    from char_lm import CharLM  # noqa: E402
    torch.manual_seed(11)
    lm = CharLM(11, d=16, heads=2, layers=1, context=8).eval()
    lstm = TinyLSTM().eval()
    gru = TinyGRU().eval()
    reg = TinyRegressor().eval()
    torch.jit.script(lm).save(os.path.join(out, "tiny_lm.script.pt"))
    torch.jit.script(lstm).save(os.path.join(out, "tiny_lstm.script.pt"))
    torch.jit.trace(lstm, torch.randn(2, 5, 6)).save(os.path.join(out, "tiny_lstm.trace.pt"))
    torch.jit.script(gru).save(os.path.join(out, "tiny_gru.script.pt"))
    torch.jit.script(reg).save(os.path.join(out, "tiny_regressor.script.pt"))
    gen = torch.Generator().manual_seed(3)
    ids = torch.randint(0, 11, (3, 8), generator=gen)
    frames = torch.randn(3, 5, 6, generator=gen)
    feats = torch.randn(3, 4, generator=gen)
    with torch.no_grad():
        io = {"lm": {"inputs": ids, "outputs": lm(ids)},
              "lstm": {"inputs": frames, "outputs": lstm(frames)},
              "gru": {"inputs": frames, "outputs": gru(frames)},
              "regressor": {"inputs": feats, "outputs": reg(feats)},
              "num_classes": 11}
    torch.save(io, os.path.join(out, "sequence_io.pt"))
    np.savez_compressed(os.path.join(out, "tiny.npz"),
                        x_train=np.arange(24, dtype=np.float32).reshape(4, 2, 3),
                        y_train=np.array([0, 1, 2, 1], dtype=np.int64),
                        x_test=np.arange(6, dtype=np.float64).reshape(1, 2, 3),
                        y_test=np.array([2], dtype=np.int32))
    np.save(os.path.join(out, "tiny_fortran.npy"),
            np.asfortranarray(np.arange(12, dtype=np.int16).reshape(3, 4)))
    return ["tiny_lm.script.pt", "tiny_lstm.script.pt", "tiny_lstm.trace.pt", "tiny_gru.script.pt",
            "tiny_regressor.script.pt", "sequence_io.pt", "tiny.npz", "tiny_fortran.npy"]


def main():
    out = sys.argv[1] if len(sys.argv) > 1 else os.path.join(
        os.path.dirname(os.path.abspath(__file__)), "..", "tests", "fixtures")
    os.makedirs(out, exist_ok=True)
    torch.manual_seed(7)
    gen = torch.Generator().manual_seed(7)
    made = []

    lenet = LeNet5BN().eval()
    randomise_bn(lenet, gen)
    torch.jit.script(lenet).save(os.path.join(out, "lenet5_bn.script.pt"))
    torch.jit.trace(lenet, torch.randn(2, 1, 28, 28)).save(os.path.join(out, "lenet5_bn.trace.pt"))
    made += ["lenet5_bn.script.pt", "lenet5_bn.trace.pt"]

    resnet = SmallResNet().eval()
    randomise_bn(resnet, gen)
    torch.jit.script(resnet).save(os.path.join(out, "resnet_small.script.pt"))
    made.append("resnet_small.script.pt")

    vit = TinyViT().eval()
    torch.jit.script(vit).save(os.path.join(out, "vit_tiny.script.pt"))
    torch.jit.trace(vit, torch.randn(2, 1, 28, 28)).save(os.path.join(out, "vit_tiny.trace.pt"))
    made += ["vit_tiny.script.pt", "vit_tiny.trace.pt"]

    torch.jit.script(Flags().eval()).save(os.path.join(out, "flags.script.pt"))
    torch.jit.script(TwoOutputs().eval()).save(os.path.join(out, "two_outputs.script.pt"))
    made += ["flags.script.pt", "two_outputs.script.pt"]

    # Reference logits for a fixed input, so the C++ side can check its interpreter.
    x = torch.linspace(-1, 1, 2 * 28 * 28).reshape(2, 1, 28, 28)
    x3 = torch.linspace(-1, 1, 2 * 3 * 32 * 32).reshape(2, 3, 32, 32)
    with torch.no_grad():
        refs = {"lenet5_bn": lenet(x), "resnet_small": resnet(x3), "vit_tiny": vit(x)}
    with open(os.path.join(out, "reference_logits.txt"), "w") as f:
        f.write("# logits of each fixture (eval mode) for the input torch.linspace(-1, 1, numel)"
                " reshaped to [2, C, H, W]\n")
        for name, y in refs.items():
            f.write(name + " " + " ".join("%.7g" % v for v in y.flatten().tolist()) + "\n")
    made.append("reference_logits.txt")
    made += sequence_fixtures(out)
    for m in made:
        print(os.path.join(out, m), os.path.getsize(os.path.join(out, m)), "bytes")


if __name__ == "__main__":
    main()
