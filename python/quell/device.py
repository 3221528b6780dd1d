"""Analog devices: the analog layers' weights held as conductances of a memory technology, with
its programming noise, drift and read noise over time, and the tile's DAC, output noise and ADC
(docs/devices.md).

    pcm = quell.AnalogDevice("pcm", time="1d", compensation=True, tile="aihwkit")
    quell.evaluate(model, test, analog=pcm, chips=10, times=["1s", "1h", "1d", "1y", "10y"],
                   drift_compensation="both")
    quell.walk(model, test, out="runs/device-walk", analog=pcm, sweep="scale")

Every study that takes noise also takes analog= (an AnalogDevice, its dict, or a model name
such as "pcm"); training with it is hardware-aware training (the device in the forward pass).
"""
import json
import math
import os

from . import _quell
from .errors import check_file


def _duration(value, what):
    if isinstance(value, bool):
        raise TypeError(f"{what} must be seconds or a duration such as '1d', got a bool")
    if isinstance(value, (int, float)):
        if math.isnan(value) or value < 0:
            raise ValueError(f"{what} must be >= 0 seconds, got {value}")
        return float(value)
    if isinstance(value, str):
        return _quell.parse_duration(value)
    raise TypeError(f"{what} must be seconds or a duration such as '1d', got {type(value).__name__}")


def _scale(value, what):
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise TypeError(f"{what} must be a number, got {type(value).__name__}")
    if math.isnan(value) or value < 0:
        raise ValueError(f"{what} must be >= 0, got {value}")
    return float(value)


class AnalogDevice:
    """Which analog layers (conv, linear, weight matmul) sit on device tiles, and how.

    model: "pcm" (Nandakumar 2019 / Joshi 2020, as in aihwkit), "reram" (Wan 2022), "ideal",
    a table file (.json / .csv of g, sigma_prog, nu_mean, nu_std, q_s) or a dict of one.
    layers: "all" or a site selector ("conv1,fc1", "1-5"). tile: "ideal", "aihwkit" or
    "dac=8:adc=8:out_bound=10:out_noise=0.04" (or a dict). g_max: uS that max|w| maps to
    (default: the model's). mapping: "layer" or "channel". time: seconds or "1d" since
    programming. compensation: global drift compensation. prog_scale, drift_scale, read_scale:
    aihwkit's scales of the three effects. read_noise: the 1/f read noise drawn once per chip and
    time ("time", as aihwkit) or afresh for every evaluation draw ("draw").
    """

    def __init__(self, model="pcm", *, layers="all", tile=None, g_max=None, mapping="layer",
                 time=0.0, compensation=False, prog_scale=1.0, drift_scale=1.0, read_scale=1.0,
                 read_noise="time"):
        if isinstance(model, os.PathLike):
            model = os.fspath(model)
        if not isinstance(model, (str, dict)):
            raise TypeError(f"model must be a name, a table file or a dict, got {type(model).__name__}")
        if isinstance(model, str) and model.lower().endswith((".json", ".csv")):
            model = check_file(model, "device table")
        if mapping not in ("layer", "channel"):
            raise ValueError(f"mapping '{mapping}': expected layer or channel")
        if read_noise not in ("time", "draw"):
            raise ValueError(f"read_noise '{read_noise}': expected time or draw")
        self.read_noise = read_noise
        if tile is not None and not isinstance(tile, (str, dict)):
            raise TypeError(f"tile must be a string such as 'aihwkit' or a dict, got {type(tile).__name__}")
        self.model, self.layers, self.tile, self.mapping = model, layers, tile, mapping
        self.g_max = None if g_max is None else _scale(g_max, "g_max")
        self.time = _duration(time, "time")
        self.compensation = bool(compensation)
        self.prog_scale = _scale(prog_scale, "prog_scale")
        self.drift_scale = _scale(drift_scale, "drift_scale")
        self.read_scale = _scale(read_scale, "read_scale")

    def to_dict(self):
        """The device as the "device" object of a JSON noise configuration (docs/devices.md)."""
        d = {"model": self.model, "mapping": self.mapping, "time": self.time,
             "compensation": self.compensation, "prog_scale": self.prog_scale,
             "drift_scale": self.drift_scale, "read_scale": self.read_scale,
             "read_noise": self.read_noise, "layers": self.layers}
        if self.tile is not None:
            d["tile"] = self.tile
        if self.g_max is not None:
            d["g_max"] = self.g_max
        return d

    def __repr__(self):
        return f"AnalogDevice({json.dumps(self.to_dict())})"


def device_json(analog):
    """The JSON text of `analog` (an AnalogDevice, a dict or a model name)."""
    if isinstance(analog, AnalogDevice):
        return json.dumps(analog.to_dict())
    if isinstance(analog, dict):
        return json.dumps(analog)
    if isinstance(analog, (str, os.PathLike)):
        return json.dumps(AnalogDevice(os.fspath(analog)).to_dict())
    raise TypeError(f"analog must be a quell.AnalogDevice, a dict or a model name such as 'pcm', "
                    f"got {type(analog).__name__}")
