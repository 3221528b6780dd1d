#!/usr/bin/python3
"""A recurrent keyword spotter for quell, on spoken words made here (docs/models.md).

Ten command words (yes, no, up, down, left, right, on, off, stop, go: the classes of the
Speech Commands task of the Walking Noise paper) are synthesised with Debian's espeak-ng
(apt-get install espeak-ng) in several English voices and voice variants, speeds and pitches,
with random gain, time shift and background noise, and turned into log-mel frames (25 ms
windows, 20 ms hop, 40 bands: [N, 50, 40] per one-second clip). The test split holds the
utterances at a speed the training split never has. An LSTM (40 -> 64) reads the frames and a
linear layer classifies its last output. Writes into OUT:

  kws_lstm.ts    TorchScript: float frames [N, 50, 40] -> logits [N, 10]
  train.pt       {"inputs": [N, 50, 40] float32, "targets": [N] int64, "num_classes": 10}
  test.pt        the same for the held-out speed
  words.json     the class names

Then, for example:

  quell walk OUT/kws_lstm.ts --dataset tensors --data-dir OUT --out OUT/walk
  quell denoise OUT/kws_lstm.ts --dataset tensors --data-dir OUT --noise 'all=add:0.3:rel=std' ...
"""
import argparse
import json
import math
import os
import subprocess
import tempfile
import time
import wave

import torch
import torch.nn as nn
import torch.nn.functional as F

WORDS = ["yes", "no", "up", "down", "left", "right", "on", "off", "stop", "go"]
VOICES = ["en-us", "en-gb", "en-gb-scotland", "en-gb-x-rp", "en-029"]
VARIANTS = ["", "+m3", "+f2", "+f4"]
TRAIN_SPEEDS = [110, 140, 190, 220]
TEST_SPEED = 165
PITCHES = [30, 70]
RATE = 16000


class KeywordLSTM(nn.Module):
    def __init__(self, bands=40, hidden=64, classes=10):
        super().__init__()
        self.norm = nn.LayerNorm(bands)
        self.lstm = nn.LSTM(bands, hidden, batch_first=True)
        self.fc = nn.Linear(hidden, classes)

    def forward(self, frames):
        out, _ = self.lstm(self.norm(frames))
        return self.fc(out[:, -1])


def synthesise(word, voice, speed, pitch, path):
    subprocess.run(["espeak-ng", "-v", voice, "-s", str(speed), "-p", str(pitch), "-w", path, word],
                   check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    with wave.open(path) as w:
        rate, n = w.getframerate(), w.getnframes()
        pcm = torch.frombuffer(bytearray(w.readframes(n)), dtype=torch.int16).float() / 32768.0
    # Resample to 16 kHz by linear interpolation (espeak-ng writes 22050 Hz).
    m = max(1, round(n * RATE / rate))
    return F.interpolate(pcm.view(1, 1, -1), size=m, mode="linear", align_corners=False).view(-1)


def mel_filters(bands, n_fft):
    def mel(f):
        return 2595.0 * math.log10(1.0 + f / 700.0)

    def hz(m):
        return 700.0 * (10 ** (m / 2595.0) - 1.0)

    bins = torch.linspace(0, RATE / 2, n_fft // 2 + 1)
    edges = [hz(m) for m in torch.linspace(mel(20.0), mel(RATE / 2), bands + 2).tolist()]
    fb = torch.zeros(bands, n_fft // 2 + 1)
    for b in range(bands):
        lo, mid, hi = edges[b], edges[b + 1], edges[b + 2]
        up = (bins - lo) / (mid - lo)
        down = (hi - bins) / (hi - mid)
        fb[b] = torch.clamp(torch.minimum(up, down), min=0.0)
    return fb


def log_mel(clip, fb, n_fft=400, hop=320):
    spec = torch.stft(clip, n_fft, hop_length=hop, window=torch.hann_window(n_fft),
                      return_complex=True).abs().pow(2)
    return torch.log(fb @ spec + 1e-6).t()[:50]  # [frames, bands]


def place(audio, gen, length=RATE):
    """The word at a random offset in one second, with gain and background noise."""
    clip = torch.zeros(length)
    audio = audio[:length]
    start = int(torch.randint(0, length - len(audio) + 1, (1,), generator=gen))
    gain = 10 ** (float(torch.empty(1).uniform_(-0.5, 0.3, generator=gen)))
    clip[start:start + len(audio)] = audio * gain
    snr_db = float(torch.empty(1).uniform_(5, 30, generator=gen))
    power = clip.pow(2).mean().clamp_min(1e-8)
    noise = torch.randn(length, generator=gen) * torch.sqrt(power / 10 ** (snr_db / 10))
    return clip + noise


def main():
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--out", default="runs/kws")
    p.add_argument("--copies", type=int, default=2, help="augmented copies of each utterance")
    p.add_argument("--epochs", type=int, default=40)
    p.add_argument("--seed", type=int, default=1)
    a = p.parse_args()
    torch.manual_seed(a.seed)
    gen = torch.Generator().manual_seed(a.seed)
    torch.set_num_threads(os.cpu_count() or 1)
    os.makedirs(a.out, exist_ok=True)
    fb = mel_filters(40, 400)
    start = time.time()
    splits = {"train": ([], []), "test": ([], [])}
    with tempfile.TemporaryDirectory() as tmp:
        wav = os.path.join(tmp, "w.wav")
        for label, word in enumerate(WORDS):
            for voice in VOICES:
                for variant in VARIANTS:
                    for speed in TRAIN_SPEEDS + [TEST_SPEED]:
                        test = speed == TEST_SPEED
                        for pitch in PITCHES:
                            audio = synthesise(word, voice + variant, speed, pitch, wav)
                            xs, ys = splits["test" if test else "train"]
                            for _ in range(1 if test else a.copies):
                                xs.append(log_mel(place(audio, gen), fb))
                                ys.append(label)
    data = {k: (torch.stack(xs), torch.tensor(ys)) for k, (xs, ys) in splits.items()}
    print(f"synthesised and featurised in {time.time() - start:.0f} s: "
          f"{len(data['train'][1])} training clips, {len(data['test'][1])} test clips")

    model = KeywordLSTM()
    x, y = data["train"]
    opt = torch.optim.Adam(model.parameters(), lr=3e-3)
    sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, a.epochs)
    for epoch in range(a.epochs):
        model.train()
        perm = torch.randperm(len(y))
        for b in range(0, len(y), 64):
            idx = perm[b:b + 64]
            loss = F.cross_entropy(model(x[idx]), y[idx])
            opt.zero_grad()
            loss.backward()
            opt.step()
        sched.step()
        if (epoch + 1) % 10 == 0:
            model.eval()
            with torch.no_grad():
                tx, ty = data["test"]
                acc = (model(tx).argmax(1) == ty).float().mean().item()
            print(f"epoch {epoch + 1}: loss {loss.item():.3f}, test accuracy {acc:.3f}", flush=True)
    model.eval()
    torch.jit.script(model).save(os.path.join(a.out, "kws_lstm.ts"))
    for k, (xs, ys) in data.items():
        torch.save({"inputs": xs, "targets": ys, "num_classes": len(WORDS)},
                   os.path.join(a.out, k + ".pt"))
    with open(os.path.join(a.out, "words.json"), "w") as f:
        json.dump(WORDS, f)
    print(f"wrote {a.out}/kws_lstm.ts, train.pt, test.pt, words.json")


if __name__ == "__main__":
    main()
