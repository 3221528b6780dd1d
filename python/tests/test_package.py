"""The Python package against the library and the CLI: every study on a small model and
synthetic data, equality with the CLI, in-memory modules against their TorchScript twins, the
error cases, progress, Ctrl-C and resume."""
import _thread
import json
import os
import re

import pytest
import torch

import quell
from conftest import SmallCnn, run_cli


def read(path):
    with open(path) as f:
        return f.read()


# ---- The package ------------------------------------------------------------------------------

def test_version_is_the_clis():
    out = run_cli("--version").stdout
    assert quell.__version__ and quell.__version__ in out
    assert re.match(r"^\d+\.\d+\.\d+$", quell.__version__)


def test_every_public_call_has_a_docstring():
    for name in ["Model", "load_data", "as_dataset", "train", "evaluate", "walk", "denoise",
                 "plan", "cost", "inspect"]:
        doc = getattr(quell, name).__doc__
        assert doc and len(doc) > 80, name
    assert "midpoint" in quell.walk.__doc__


def test_noise_builder_prints_the_cli_grammar():
    n = quell.noise
    assert str(n.add(0.1, rel="std")) == "all=add:0.1:rel=std"
    rule = (n.add(0.25, rel="std", static=True) + n.add(0.125, rel="std")).on("conv1,fc1")
    assert str(rule) == "conv1,fc1=add:0.25:static:rel=std+add:0.125:rel=std"
    assert str(n.muladd(0.2, 0.3).on("all")) == "all=muladd:0.2/0.3"
    with pytest.raises(ValueError, match="negative"):
        n.add(-1)
    with pytest.raises(ValueError, match="NaN"):
        n.mul(float("nan"))
    with pytest.raises(TypeError):
        n.add("0.1")


# ---- Models -----------------------------------------------------------------------------------

def test_models_from_every_source(checkpoint, tmp_path, test_data):
    builtin = quell.Model("lenet5-bn")
    assert len(builtin.sites) == 16 and builtin.sites[1].name == "conv1"
    assert builtin.sites[1].shape == [6, 28, 28]
    loaded = quell.Model(checkpoint)
    assert loaded.calibrated and loaded.meta["dataset"] == "fashion-mnist"
    assert loaded.site_names == builtin.site_names
    x = test_data.inputs[:8]
    assert loaded(x).shape == (8, 10)
    with pytest.raises(ValueError, match="lenet5"):
        quell.Model(checkpoint, expected="mlp")
    # A torch.nn.Module in memory and its saved TorchScript twin: the same sites and outputs.
    torch.manual_seed(0)
    module = SmallCnn().eval()
    ts = str(tmp_path / "small.pt")
    torch.jit.save(torch.jit.script(module), ts)
    mem = quell.Model(module, example_input=x)
    twin = quell.Model(ts, input_shape=(1, 28, 28))
    assert [s.name for s in mem.sites] == [s.name for s in twin.sites]
    assert "conv" in mem.site_names and "fc" in mem.site_names
    assert torch.equal(mem(x), twin(x))
    assert torch.allclose(mem(x), module(x), atol=1e-5)
    traced = quell.Model(module, example_input=x, trace=True)
    assert torch.allclose(traced(x), module(x), atol=1e-5)


def test_in_memory_module_walks_like_its_twin(tmp_path, train_data, test_data):
    torch.manual_seed(0)
    module = SmallCnn().eval()
    ts = str(tmp_path / "small.pt")
    torch.jit.save(torch.jit.script(module), ts)
    x = test_data.inputs[:4]
    results = []
    for i, model in enumerate([quell.Model(module, example_input=x),
                               quell.Model(ts, input_shape=(1, 28, 28))]):
        model.calibrate(train_data)
        r = quell.walk(model, test_data, out=str(tmp_path / f"w{i}"), sites="conv,fc",
                       grid="0.1:10", per_decade=2, repeats=2, figures=None, progress=False)
        results.append(r)
    assert results[0].to_pandas().equals(results[1].to_pandas())
    assert results[0].midpoints == results[1].midpoints


# ---- Studies ----------------------------------------------------------------------------------

def test_walk_equals_the_cli(checkpoint, data_dir, test_data, tmp_path):
    cli_out, py_out = tmp_path / "cli", tmp_path / "py"
    args = ["--sites", "1,5,15", "--grid", "0.1:10", "--per-decade", "2", "--repeats", "2",
            "--figures", "none"]
    r = run_cli("walk", checkpoint, "--data-dir", data_dir, "--out", cli_out, *args)
    assert r.returncode == 0, r.stderr
    result = quell.walk(quell.Model(checkpoint), test_data, out=str(py_out), sites="1,5,15",
                        grid="0.1:10", per_decade=2, repeats=2, figures=None, progress=False)
    # Same evaluations, bit for bit, and the same midpoints and intervals.
    assert read(cli_out / "walk.csv") == read(py_out / "walk.csv")
    cli_json = json.loads(read(cli_out / "walk.json"))
    assert [s["midpoint"] for s in cli_json["sites"]] == [s["midpoint"] for s in result.sites]
    assert cli_json["fingerprint"] == result.to_dict()["fingerprint"]
    frame = result.to_pandas()
    assert set(frame["name"]) == {"conv1", "conv2", "fc3"}
    assert len(result.midpoints_frame()) == 3
    assert "midpoint" in str(result) and result.complete


def test_walk_resumes_after_ctrl_c(checkpoint, test_data, tmp_path):
    model = quell.Model(checkpoint)
    opts = dict(sites="1-4", grid="0.1:10", per_decade=2, repeats=2, figures=None)
    full = quell.walk(model, test_data, out=str(tmp_path / "full"), progress=False, **opts)
    calls = []

    def interrupting(label):
        def bar(done, total, what, loss, acc):
            calls.append(done)
            if len(calls) == 2:
                _thread.interrupt_main()  # what Ctrl-C does: a pending SIGINT
        return bar

    with pytest.raises(KeyboardInterrupt):
        quell.walk(model, test_data, out=str(tmp_path / "cut"), progress=interrupting, **opts)
    journal = read(tmp_path / "cut" / "journal.jsonl").splitlines()
    assert 1 < len(journal) < 1 + len(full.to_pandas())  # some units kept, not all
    resumed = quell.walk(model, test_data, out=str(tmp_path / "cut"), progress=False, **opts)
    key = ["site", "sigma", "repeat"]
    a = full.to_pandas().sort_values(key).reset_index(drop=True)
    b = resumed.to_pandas().sort_values(key).reset_index(drop=True)
    assert a.equals(b)
    assert resumed.midpoints == full.midpoints


def test_train_evaluate_and_their_results(train_data, test_data):
    model = quell.Model("mlp", seed=3)
    r = quell.train(model, (train_data.inputs, train_data.targets), test=test_data, epochs=1,
                    batch_size=32, progress=False)
    assert r.test_accuracy > 0.5 and len(r.to_pandas()) == 1
    e = quell.evaluate(model, test_data, noise=quell.noise.add(1.0, rel="std"), draws=3,
                       levels=[0.5, 1.0], progress=False)
    assert e.clean_accuracy > e.levels[1]["accuracy"]["mean"]
    assert len(e.to_pandas()) == 6
    assert e.to_dict()["provenance"]["device"] == "cpu"
    assert json.loads(e.to_json())["levels"][0]["level"] == 0.5


def test_denoise_plan_cost_inspect(checkpoint, train_data, test_data, tmp_path):
    model = quell.Model(checkpoint)
    noise = "all=add:0.5:rel=std"
    d = quell.denoise(model, train_data, test_data, noise=noise, out=str(tmp_path / "d"),
                      sites="conv1,fc1,fc2", ratios=[4], budgets=[20], val_size=200,
                      search_limit=400, search_width=2, epochs=1, draws=2, chips=1,
                      robustness=[0, 1], figures=None, progress=False)
    assert d.comparison[0]["model"] == "unmitigated"
    assert os.path.exists(tmp_path / "d" / "report.json")
    assert len(d.to_pandas()) == len(d.comparison) + len(d.bounds)
    assert set(d.rankings) == {"taylor", "drop"}
    p = quell.plan(model, train_data, test_data, noise=noise, out=str(tmp_path / "p"),
                   mean_repeats=[2], search="none", val_size=200, draws=2, figures=None,
                   denoise_report=d, progress=False)
    assert p.allocations[0]["method"] == "unmitigated"
    assert len(p.other_mitigations) == len(d.comparison) - 1
    c = quell.cost(model, repeat={"conv1": 4})
    base = quell.cost(model)
    assert c.energy_pj > base.energy_pj > 0
    assert "conv1" in str(c)
    i = quell.inspect(model)
    assert len(i.layers) == 5 and 0 <= i.all["binarization"] <= 1


def test_denoise_calibrates_per_chip_and_reports_bounds(checkpoint, train_data, test_data):
    model = quell.Model(checkpoint)
    noise = "all=add:0.4:static:per=channel:rel=std+add:0.2:rel=std"
    kw = dict(noise=noise, sites="conv1,fc1,fc2", block="channel", budgets=[20], search="none",
              val_size=200, epochs=1, draws=1, chips=2, robustness=None, figures=None,
              progress=False)
    d = quell.denoise(model, train_data, test_data, calibrate=100, calibrate_epochs=1, **kw)
    rows = {r["model"]: r for r in d.comparison}
    assert "all sites per chip" in rows
    cal = rows["all sites per chip"]["calibration"]
    assert cal["samples"] == 80 and cal["held_out"] == 20 and cal["epochs"] == 1
    assert cal["chips"] == 2 and 0 <= cal["chips_kept"] <= 2 and cal["seconds_per_chip"] > 0
    assert {"static only", "dynamic only"} <= {b["name"] for b in d.bounds}
    assert "bound: dynamic only" in set(d.to_pandas()["model"])
    off = quell.denoise(model, train_data, test_data, calibrate=0, bounds=False, **kw)
    assert not any("per chip" in r["model"] for r in off.comparison) and off.bounds == []


def test_figures(checkpoint, test_data, tmp_path):
    from quell import _quell
    if not _quell.gnuplot_available():
        pytest.skip("no gnuplot")
    r = quell.walk(quell.Model(checkpoint), test_data, out=str(tmp_path / "w"), sites="1,2",
                   grid="0.1:10", per_decade=2, repeats=2, figures=None, progress=False)
    files = r.plot(str(tmp_path / "fig"))
    assert any(f.endswith("curves.png") for f in files)
    assert os.path.getsize(tmp_path / "fig" / "curves.png") > 1000


# ---- Bad input --------------------------------------------------------------------------------

def test_bad_input_raises_pythons_exceptions(checkpoint, test_data, tmp_path):
    model = quell.Model(checkpoint)
    x, y = test_data.inputs, test_data.targets
    with pytest.raises(FileNotFoundError, match="missing.pt"):
        quell.Model(str(tmp_path / "missing.pt"))
    # Inputs and targets of other kinds are data too, but not this model's.
    with pytest.raises(ValueError, match="1x28x28 int64"):
        quell.evaluate(model, (x.to(torch.int64), y))
    with pytest.raises(ValueError, match="real values"):
        quell.evaluate(model, (x, y.float()))
    with pytest.raises(ValueError, match="dataset tensors has samples 28x28"):
        quell.evaluate(model, (x[:, 0], y))
    with pytest.raises(TypeError, match="floating point or integer"):
        quell.evaluate(model, (x.bool(), y))
    with pytest.raises(ValueError, match="metric token-accuracy needs per-position ids"):
        quell.evaluate(model, test_data, metric="token-accuracy")
    with pytest.raises(ValueError, match="unknown metric"):
        quell.evaluate(model, test_data, metric="f1")
    with pytest.raises(ValueError, match="targets must have N = "):
        quell.evaluate(model, (x, y[:-1]))
    with pytest.raises(ValueError, match="model expects"):
        quell.evaluate(model, (torch.zeros(4, 3, 32, 32), torch.zeros(4, dtype=torch.long)))
    with pytest.raises(ValueError, match="nosuchsite"):
        quell.evaluate(model, test_data, noise="nosuchsite=add:0.1")
    with pytest.raises(ValueError, match="negative"):
        quell.evaluate(model, test_data, noise="all=add:-0.1")
    with pytest.raises(ValueError, match="noise kind|unknown"):
        quell.walk(model, test_data, out=str(tmp_path / "w"), noise="gauss")
    with pytest.raises(ValueError, match="unknown dataset"):
        quell.load_data("imagenet")
    with pytest.raises(TypeError):
        quell.Model(42)
    with pytest.raises(TypeError, match="quell.Model"):
        quell.evaluate(object(), test_data)
    # A module that is no classifier imports (any output shape), but its output [1, 1, 28, 28]
    # per sample cannot be scored against class ids.

    class NotAClassifier(torch.nn.Module):
        def forward(self, x):
            return x.unsqueeze(1) * 2

    odd = quell.Model(NotAClassifier(), example_input=x[:2])
    with pytest.raises(ValueError, match=r"output \[1, 1, 28, 28\] per sample does not fit class ids"):
        quell.evaluate(odd, test_data)
    # The walk's journal belongs to another sweep: a one-line error, nothing lost.
    quell.walk(model, test_data, out=str(tmp_path / "j"), sites="1", grid="0.1:1",
               per_decade=1, repeats=1, figures=None, progress=False)
    with pytest.raises(quell.QuellError, match="different sweep"):
        quell.walk(model, test_data, out=str(tmp_path / "j"), sites="1", grid="0.1:1",
                   per_decade=1, repeats=2, figures=None, progress=False)


def test_the_gil_is_released_while_the_engine_works(checkpoint, test_data, tmp_path):
    import threading
    import time
    model = quell.Model(checkpoint)
    ticks = []
    done = threading.Event()

    def count():
        while not done.is_set():
            ticks.append(time.monotonic())
            time.sleep(0.005)

    counter = threading.Thread(target=count)
    counter.start()
    start = time.monotonic()
    quell.evaluate(model, test_data, noise="all=add:0.5:rel=std", draws=20, progress=False)
    end = time.monotonic()
    done.set()
    counter.join()
    during = [t for t in ticks if start < t < end]
    # With the GIL held for the whole evaluation the counter could not tick in between.
    assert end - start > 0.05 and len(during) >= 3, (end - start, len(during))


def test_tensors_on_another_device_are_refused(checkpoint):
    model = quell.Model(checkpoint)
    x = torch.empty(4, 1, 28, 28, device="meta")
    y = torch.zeros(4, dtype=torch.long)
    with pytest.raises(ValueError, match="CPU"):
        quell.evaluate(model, (x, y))


def test_data_sources_agree(test_data):
    x, y = test_data.inputs[:64], test_data.targets[:64]
    ds = torch.utils.data.TensorDataset(x, y)
    a = quell.as_dataset((x, y))
    b = quell.as_dataset(ds)
    c = quell.as_dataset(torch.utils.data.DataLoader(ds, batch_size=10))
    d = quell.as_dataset((x.numpy(), y.numpy()))
    for other in (b, c, d):
        assert torch.equal(a.inputs, other.inputs) and torch.equal(a.targets, other.targets)
    # Float32 contiguous CPU tensors are used without a copy.
    assert a.inputs.data_ptr() == x.data_ptr()
