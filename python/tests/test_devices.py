"""Analog devices from Python: quell.AnalogDevice in evaluate (over time, with and without drift
compensation), walk (device per layer), train (hardware-aware) and denoise; the CLI agrees;
bad input raises Python exceptions."""
import json
import math

import pytest

import quell
from conftest import run_cli

TEN_YEARS = 10 * 365.25 * 86400


def test_evaluate_over_time_with_and_without_compensation(checkpoint, test_data):
    pcm = quell.AnalogDevice("pcm")
    r = quell.evaluate(checkpoint, test_data, analog=pcm, chips=3, times=["1s", "10y"],
                       drift_compensation="both", progress=False)
    rows = [(level["time"], level["compensation"]) for level in r.levels]
    assert rows == [(1.0, False), (1.0, True), (TEN_YEARS, False), (TEN_YEARS, True)]
    mean = [level["chip_accuracy"]["mean"] for level in r.levels]
    # Ten years of drift shrink every layer's weights; compensation restores the response.
    assert mean[3] > mean[2] + 0.05
    frame = r.to_pandas()
    assert list(frame.columns[:3]) == ["level", "time_s", "compensation"]
    assert len(frame) == 4 * 3 * 1  # rows x chips x draws (no dynamic noise: one draw)


def test_the_cli_gives_the_same_numbers(checkpoint, data_dir, test_data, tmp_path):
    out = tmp_path / "eval.json"
    cli = run_cli("eval", "-c", checkpoint, "--data-dir", data_dir, "--device-model", "pcm",
                  "--tile", "aihwkit", "--times", "1h,1y", "--drift-compensation", "on",
                  "--chips", "2", "--draws", "2", "--json", out)
    assert cli.returncode == 0, cli.stderr
    py = quell.evaluate(checkpoint, test_data,
                        analog=quell.AnalogDevice("pcm", tile="aihwkit", compensation=True),
                        times=[3600, "1y"], chips=2, draws=2, progress=False)
    cli_levels = json.loads(out.read_text())["levels"]
    assert [lv["chip_accuracy"]["mean"] for lv in cli_levels] == \
        [lv["chip_accuracy"]["mean"] for lv in py.levels]


def test_device_walk_per_layer(checkpoint, test_data, tmp_path):
    w = quell.walk(checkpoint, test_data, out=tmp_path / "walk", analog="pcm", sweep="scale",
                   grid="1:1e3", per_decade=2, repeats=2, figures=None, progress=False)
    names = [s["name"] for s in w.sites]
    assert names == ["conv1", "conv2", "fc1", "fc2", "fc3"]  # the analog layers of lenet5-bn
    assert w.to_dict()["device_sweep"] == "scale"
    assert any(m is not None and math.isfinite(m) for m in w.midpoints.values())
    t = quell.walk(checkpoint, test_data, out=tmp_path / "time", analog="pcm", grid="1s:1y",
                   per_decade=1, repeats=1, sites="conv1", figures=None, progress=False)
    sigmas = [p["sigma"] for p in t.sites[0]["points"]]
    assert sigmas[0] == 1.0 and sigmas[-1] <= 365.25 * 86400  # in seconds, not past the grid


def test_hardware_aware_training_and_denoising(train_data, test_data, tmp_path):
    model = quell.Model("lenet5-bn", seed=2)
    r = quell.train(model, train_data, epochs=1, batch_size=32, progress=False,
                    analog=quell.AnalogDevice("pcm", tile="aihwkit"))
    assert math.isfinite(r.metrics["epochs"][-1]["loss"])
    d = quell.denoise(model, train_data, test_data, analog=quell.AnalogDevice("pcm", time="1d"),
                      budgets=(5,), search="none", epochs=1, draws=1, chips=2,
                      robustness=(1,), figures=None, progress=False, out=tmp_path / "den")
    assert d.to_dict()["noise"]["device"]["model"]["name"] == "pcm"
    # Programmed conductances are fixed per chip: the blocks are also calibrated per chip.
    assert any(r["model"].endswith(" per chip") for r in d.comparison)


def test_a_transformer_on_tiles_with_bound_management():
    # Imported graph segments read other inputs of the full batch: bound management must rerun
    # whole batches there (a tight out_bound makes it clip).
    import torch
    from test_sequences import TinyLM, counting_language
    torch.manual_seed(0)
    x, y = counting_language(64, seed=1)
    model = quell.Model(TinyLM(), example_input=x[:2])
    for tile in ("aihwkit", "aihwkit:out_bound=0.5"):
        r = quell.evaluate(model, (x, y), analog=quell.AnalogDevice("pcm", tile=tile), chips=2,
                           draws=2, progress=False)
        assert math.isfinite(r.value) and r.value > 1.0  # a perplexity


def test_bad_devices_raise_python_exceptions(checkpoint, test_data, tmp_path):
    with pytest.raises(ValueError, match="unknown device model 'flash'"):
        quell.evaluate(checkpoint, test_data, analog="flash", progress=False)
    with pytest.raises(ValueError, match="time"):
        quell.AnalogDevice("pcm", time=-1)
    with pytest.raises(ValueError, match="unknown unit"):
        quell.AnalogDevice("pcm", time="3 fortnights")
    with pytest.raises(ValueError, match="out_bound"):
        quell.evaluate(checkpoint, test_data, analog=quell.AnalogDevice("pcm", tile="adc=8"),
                       progress=False)
    with pytest.raises(ValueError, match="analog device"):
        quell.evaluate(checkpoint, test_data, times=["1h"], progress=False)
    with pytest.raises(ValueError, match="not an analog layer"):
        quell.walk(checkpoint, test_data, out=tmp_path / "w", analog="pcm", sites="relu1",
                   figures=None, progress=False)
    with pytest.raises(TypeError):
        quell.evaluate(checkpoint, test_data, analog=3, progress=False)
    with pytest.raises(FileNotFoundError, match="missing.csv"):
        quell.AnalogDevice(tmp_path / "missing.csv")
    table = tmp_path / "down.csv"
    table.write_text("g,sigma_prog,nu_mean,nu_std,q_s\n5,1,0,0,0\n2,1,0,0,0\n")
    with pytest.raises(ValueError, match="must increase"):
        quell.evaluate(checkpoint, test_data, analog=quell.AnalogDevice(table), progress=False)
