"""Sequence models, recurrent layers, regression and metrics other than accuracy, from Python."""
import math

import pytest
import torch
import torch.nn as nn
import torch.nn.functional as F

import quell


def counting_language(n, seed, vocab=11, length=8):
    """token t+1 = (token t + step) mod vocab, the step (1 or 2) fixed per sequence."""
    g = torch.Generator().manual_seed(seed)
    start = torch.randint(0, vocab, (n, 1), generator=g)
    step = torch.randint(1, 3, (n, 1), generator=g)
    seq = (start + step * torch.arange(length + 1)).remainder(vocab)
    return seq[:, :-1].contiguous(), seq[:, 1:].contiguous()


class TinyLM(nn.Module):
    def __init__(self, vocab=11, d=16, context=8):
        super().__init__()
        self.tok = nn.Embedding(vocab, d)
        self.pos = nn.Parameter(torch.zeros(context, d))
        self.q = nn.Linear(d, d)
        self.k = nn.Linear(d, d)
        self.v = nn.Linear(d, d)
        self.ln = nn.LayerNorm(d)
        self.head = nn.Linear(d, vocab)
        self.register_buffer("causal", torch.tril(torch.ones(context, context)).bool())

    def forward(self, ids):
        x = self.tok(ids) + self.pos[: ids.shape[1]]
        scores = torch.matmul(self.q(x), self.k(x).transpose(1, 2)) / 4.0
        scores = scores.masked_fill(~self.causal[: ids.shape[1], : ids.shape[1]], float("-inf"))
        x = x + torch.matmul(torch.softmax(scores, dim=-1), self.v(x))
        return self.head(self.ln(x))


@pytest.fixture(scope="module")
def language_model():
    torch.manual_seed(0)
    model = TinyLM()
    x, y = counting_language(2048, 1)
    opt = torch.optim.Adam(model.parameters(), lr=1e-2)
    for step in range(150):
        b = torch.randint(0, len(x), (64,))
        loss = F.cross_entropy(model(x[b]).reshape(-1, 11), y[b].reshape(-1))
        opt.zero_grad()
        loss.backward()
        opt.step()
    return model.eval()


def test_a_transformer_lm_walks_on_perplexity(language_model, tmp_path):
    x, y = counting_language(256, 2)
    model = quell.Model(language_model, example_input=x[:2])
    assert model.input_shape == (8,) and model.input_dtype == "int64"
    ops = [s.op for s in model.sites]
    assert ops[0] == "input" and "embedding" in ops and ops.count("matmul") == 2
    assert "softmax" in ops and "layernorm" in ops
    with torch.no_grad():
        assert torch.allclose(model(x[:4]), language_model(x[:4]), atol=1e-5)

    clean = quell.evaluate(model, (x, y), progress=False)
    assert clean.metric == "perplexity"
    assert 1.0 < clean.clean < 4.0  # uniform guessing would be 11
    assert clean.to_dict()["clean"]["perplexity"] == clean.clean

    r = quell.walk(model, (x, y), out=str(tmp_path / "walk"), metric="perplexity",
                   grid="0.01:100", per_decade=3, repeats=2, figures=None, progress=False)
    assert r.metric == "perplexity" and r.floor == 11.0
    assert r.threshold == pytest.approx(math.sqrt(r.clean * r.floor), rel=1e-9)
    assert "input" not in r.midpoints  # token ids take no noise
    crossed = [v for v in r.midpoints.values() if v is not None]
    assert len(crossed) >= len(r.midpoints) // 2
    frame = r.to_pandas()
    assert "perplexity" in frame.columns and "accuracy" not in frame.columns
    assert "perplexity" in r.table() and "accuracy" not in r.table()
    # The same sweep measured in cross-entropy halves at the same sigma.
    rc = quell.walk(model, (x, y), out=str(tmp_path / "walk_ce"), metric="cross-entropy",
                    grid="0.01:100", per_decade=3, repeats=2, figures=None, progress=False)
    for name, mid in r.midpoints.items():
        if mid is not None:
            assert rc.midpoints[name] == pytest.approx(mid, rel=1e-6)


def test_token_accuracy_denoising_of_a_language_model(language_model, tmp_path):
    x, y = counting_language(1024, 3)
    tx, ty = counting_language(256, 4)
    model = quell.Model(language_model, example_input=x[:2])
    r = quell.denoise(model, (x, y), (tx, ty), noise="all=add:0.3:rel=std", budgets=(10,),
                      search="none", val_size=128, epochs=2, lr=3e-3, finetune=False,
                      all_sites=False, drop_ranking=False, draws=2, chips=1, robustness=None,
                      figures=None, progress=False)
    assert r.metric == "token-accuracy"
    rows = {row["model"]: row for row in r.comparison}
    assert "unmitigated" in rows, rows.keys()
    taylor = [row for name, row in rows.items() if name.startswith("taylor")]
    assert taylor, rows.keys()
    # No block sits on the token ids (integer values take no noise).
    assert "input" not in {c["name"] for c in r.to_dict()["candidates"]}
    assert taylor[0]["drop_vs_clean_points"] < rows["unmitigated"]["drop_vs_clean_points"], rows
    assert "token accuracy" in r.table()
    with pytest.raises(ValueError, match="maximise an accuracy"):
        quell.denoise(model, (x, y), (tx, ty), noise="all=add:0.3", metric="perplexity",
                      progress=False)


def test_planning_repetitions_for_a_language_model(language_model):
    x, y = counting_language(512, 5)
    tx, ty = counting_language(256, 6)
    model = quell.Model(language_model, example_input=x[:2])
    r = quell.plan(model, (x, y), (tx, ty), noise="all=add:0.3:rel=std", schemes=("uniform",),
                   mean_repeats=(2,), search="none", val_size=128, draws=2, figures=None,
                   progress=False)
    assert r.metric == "token-accuracy"
    assert "clean token accuracy" in r.table() and "accuracy " not in r.table().replace(
        "token accuracy", "")
    assert r.to_dict()["clean_token_accuracy"] > 0.5
    assert "input" not in [s["name"] for s in r.to_dict()["planned_sites"]]


def test_an_lstm_classifier_and_a_regressor():
    g = torch.Generator().manual_seed(5)
    frames = torch.randn(512, 6, 4, generator=g)
    labels = (frames[:, :, 0].mean(1) > 0).long() + (frames[:, :, 1].mean(1) > 0).long()

    class KWS(nn.Module):
        def __init__(self):
            super().__init__()
            self.lstm = nn.LSTM(4, 16, batch_first=True)
            self.fc = nn.Linear(16, 3)

        def forward(self, x):
            out, _ = self.lstm(x)
            return self.fc(out[:, -1])

    torch.manual_seed(1)
    net = KWS()
    opt = torch.optim.Adam(net.parameters(), lr=1e-2)
    for _ in range(120):
        loss = F.cross_entropy(net(frames), labels)
        opt.zero_grad()
        loss.backward()
        opt.step()
    model = quell.Model(net.eval(), example_input=frames[:2])
    lstm = [s for s in model.sites if s.op == "lstm"]
    assert len(lstm) == 1 and lstm[0].shape == [6, 16]
    assert lstm[0].params == 4 * 16 * (4 + 16 + 2)
    clean = quell.evaluate(model, (frames, labels), progress=False)
    assert clean.metric == "accuracy" and clean.clean > 0.8
    noisy = quell.evaluate(model, (frames, labels), noise="lstm=add:1", draws=2, progress=False)
    assert noisy.value < clean.clean

    # Regression: MSE, with relative MSE as 1 - R^2.
    feats = torch.randn(256, 3, generator=g)
    target = torch.stack([feats[:, 0] * 2, feats[:, 1] - feats[:, 2]], 1)
    reg = nn.Sequential(nn.Linear(3, 2))
    with torch.no_grad():
        reg[0].weight.copy_(torch.tensor([[2.0, 0, 0], [0, 1.0, -1.0]]))
        reg[0].bias.zero_()
    qreg = quell.Model(reg, example_input=feats[:2])
    mse = quell.evaluate(qreg, (feats, target), noise="all=add:0.1", draws=3, progress=False)
    assert mse.metric == "mse" and mse.clean == pytest.approx(0.0, abs=1e-10)
    assert mse.value > 0.0
    rel = quell.evaluate(qreg, (feats, target), noise="all=add:0.1", draws=3,
                         metric="relative-mse", progress=False)
    assert rel.value == pytest.approx(mse.value / target.var(unbiased=False).item(), rel=1e-4)


def test_tensor_files_written_by_torch_save_and_numpy(tmp_path):
    import numpy as np
    x, y = counting_language(64, 7)
    torch.save({"inputs": x, "targets": y, "num_classes": 11}, tmp_path / "train.pt")
    torch.save((x[:16], y[:16]), tmp_path / "test.pt")
    train = quell.load_tensors(tmp_path, split="train")
    test = quell.load_tensors(tmp_path, split="test")
    assert torch.equal(train.inputs, x) and torch.equal(test.targets, y[:16])
    assert train.num_classes == 11 and train.target_kind == "per-position ids"
    np.savez(tmp_path / "both.npz", x_train=x.numpy(), y_train=y.numpy(),
             x_test=x[:8].numpy(), y_test=y[:8].numpy())
    assert torch.equal(quell.load_tensors(tmp_path / "both.npz", split="test").inputs, x[:8])
    (tmp_path / "bad.npz").write_bytes(b"PK\x03\x04 nothing")
    with pytest.raises(ValueError, match="bad.npz"):
        quell.load_tensors(tmp_path / "bad.npz")
    with pytest.raises(FileNotFoundError):
        quell.load_tensors(tmp_path / "missing.pt")
