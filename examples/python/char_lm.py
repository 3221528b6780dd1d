#!/usr/bin/python3
"""A character-level transformer language model for quell (docs/models.md, "Sequence models").

Trains a small decoder-only transformer (token and position embeddings, pre-LayerNorm blocks of
causal self-attention and a GELU MLP, a linear head) on real English text: Debian's `fortunes`
collection (apt-get install fortunes fortunes-min). Writes into OUT:

  char_lm.ts       the model as TorchScript: int64 token ids [N, T] -> logits [N, T, V]
  train.pt         {"inputs": [N, T] int64, "targets": [N, T] int64, "num_classes": V}
  test.pt          the same for held-out text (the last 10% of the corpus)
  vocab.json       the characters, index = id

Then, for example:

  quell sites --model OUT/char_lm.ts --dataset tensors --input-shape 64 --input-dtype int64
  quell walk OUT/char_lm.ts --dataset tensors --data-dir OUT --metric perplexity --out OUT/walk
  quell denoise OUT/char_lm.ts --dataset tensors --data-dir OUT --metric token-accuracy ...
  quell cost OUT/char_lm.ts --dataset tensors --input-shape 64 --input-dtype int64

The attention is written out (q, k, v projections, the two matrix products, the softmax) so that
every product and nonlinearity of the transformer is a quell site.
"""
import argparse
import glob
import json
import math
import os
import time

import torch
import torch.nn as nn
import torch.nn.functional as F


class Attention(nn.Module):
    def __init__(self, d, heads, context):
        super().__init__()
        self.heads = heads
        self.q = nn.Linear(d, d)
        self.k = nn.Linear(d, d)
        self.v = nn.Linear(d, d)
        self.proj = nn.Linear(d, d)
        self.register_buffer("causal", torch.tril(torch.ones(context, context)).bool())

    def forward(self, x):
        n, t, d = x.shape
        h = self.heads
        q = self.q(x).view(n, t, h, d // h).transpose(1, 2)
        k = self.k(x).view(n, t, h, d // h).transpose(1, 2)
        v = self.v(x).view(n, t, h, d // h).transpose(1, 2)
        scores = torch.matmul(q, k.transpose(-2, -1)) / math.sqrt(d // h)
        scores = scores.masked_fill(~self.causal[:t, :t], float("-inf"))
        weights = torch.softmax(scores, dim=-1)
        out = torch.matmul(weights, v).transpose(1, 2).reshape(n, t, d)
        return self.proj(out)


class Block(nn.Module):
    def __init__(self, d, heads, context):
        super().__init__()
        self.ln1 = nn.LayerNorm(d)
        self.attn = Attention(d, heads, context)
        self.ln2 = nn.LayerNorm(d)
        self.fc1 = nn.Linear(d, 4 * d)
        self.fc2 = nn.Linear(4 * d, d)

    def forward(self, x):
        x = x + self.attn(self.ln1(x))
        return x + self.fc2(F.gelu(self.fc1(self.ln2(x))))


class CharLM(nn.Module):
    def __init__(self, vocab, d=128, heads=4, layers=2, context=64):
        super().__init__()
        self.tok = nn.Embedding(vocab, d)
        self.pos = nn.Parameter(torch.zeros(context, d))
        self.blocks = nn.ModuleList([Block(d, heads, context) for _ in range(layers)])
        self.ln = nn.LayerNorm(d)
        self.head = nn.Linear(d, vocab)

    def forward(self, ids):
        x = self.tok(ids) + self.pos[: ids.shape[1]]
        for block in self.blocks:
            x = block(x)
        return self.head(self.ln(x))


def corpus(directory):
    files = sorted(f for f in glob.glob(os.path.join(directory, "*"))
                   if os.path.isfile(f) and not f.endswith((".dat", ".u8")))
    if not files:
        raise SystemExit(f"no fortune files in {directory}: apt-get install fortunes fortunes-min")
    text = ""
    for f in files:
        with open(f, encoding="utf-8", errors="replace") as fh:
            text += fh.read().replace("\n%\n", "\n\n")
    return text


def windows(ids, context, stride):
    starts = torch.arange(0, ids.numel() - context - 1, stride)
    x = torch.stack([ids[s:s + context] for s in starts.tolist()])
    y = torch.stack([ids[s + 1:s + context + 1] for s in starts.tolist()])
    return x, y


def main():
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--out", default="runs/char_lm")
    p.add_argument("--fortunes", default="/usr/share/games/fortunes")
    p.add_argument("--steps", type=int, default=3000)
    p.add_argument("--batch", type=int, default=64)
    p.add_argument("--context", type=int, default=64)
    p.add_argument("--width", type=int, default=128)
    p.add_argument("--layers", type=int, default=2)
    p.add_argument("--train-windows", type=int, default=16384,
                   help="training windows written to train.pt (a random subset)")
    p.add_argument("--test-windows", type=int, default=2048,
                   help="held-out windows written to test.pt")
    p.add_argument("--seed", type=int, default=1)
    a = p.parse_args()
    torch.manual_seed(a.seed)
    torch.set_num_threads(os.cpu_count() or 1)
    os.makedirs(a.out, exist_ok=True)

    text = corpus(a.fortunes)
    # Printable ASCII, newline and one id for everything else.
    chars = ["\n"] + [chr(c) for c in range(32, 127)] + ["\ufffd"]
    index = {c: i for i, c in enumerate(chars)}
    ids = torch.tensor([index.get(c, len(chars) - 1) for c in text], dtype=torch.long)
    cut = int(0.9 * ids.numel())
    train_x, train_y = windows(ids[:cut], a.context, a.context // 2)
    # The model trains on every window; quell's studies (noise-aware training of denoisers, the
    # Taylor ranking) need far fewer, so train.pt keeps a random subset.
    keep = torch.randperm(len(train_x))[:a.train_windows]
    test_x, test_y = windows(ids[cut:], a.context, a.context)
    test_x, test_y = test_x[:a.test_windows], test_y[:a.test_windows]
    print(f"corpus {len(text)} characters, vocabulary {len(chars)}; "
          f"{len(train_x)} training windows, {len(test_x)} test windows of {a.context}")

    model = CharLM(len(chars), a.width, 4, a.layers, a.context)
    opt = torch.optim.AdamW(model.parameters(), lr=3e-3, weight_decay=0.01)
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=3e-3, total_steps=a.steps)
    start = time.time()
    for step in range(1, a.steps + 1):
        batch = torch.randint(0, len(train_x), (a.batch,))
        logits = model(train_x[batch])
        loss = F.cross_entropy(logits.reshape(-1, len(chars)), train_y[batch].reshape(-1))
        opt.zero_grad()
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        sched.step()
        if step % 250 == 0 or step == a.steps:
            print(f"step {step}: train loss {loss.item():.3f} ({time.time() - start:.0f} s)",
                  flush=True)
    model.eval()
    with torch.no_grad():
        logits = model(test_x[:512])
        ce = F.cross_entropy(logits.reshape(-1, len(chars)), test_y[:512].reshape(-1)).item()
    print(f"test cross-entropy {ce:.3f} nats, perplexity {math.exp(ce):.2f} "
          f"(uniform: {len(chars)})")

    torch.jit.script(model).save(os.path.join(a.out, "char_lm.ts"))
    torch.save({"inputs": train_x[keep], "targets": train_y[keep], "num_classes": len(chars)},
               os.path.join(a.out, "train.pt"))
    torch.save({"inputs": test_x, "targets": test_y, "num_classes": len(chars)},
               os.path.join(a.out, "test.pt"))
    with open(os.path.join(a.out, "vocab.json"), "w") as f:
        json.dump(chars, f)
    print(f"wrote {a.out}/char_lm.ts, train.pt, test.pt, vocab.json")


if __name__ == "__main__":
    main()
