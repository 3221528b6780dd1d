"""quell: how much the noise of analog / mixed-signal hardware hurts a neural network, where it
hurts, and how to make it stop hurting -- from Python, on the native engine (libquell).

    import quell
    model = quell.Model("lenet5-bn")                  # or a checkpoint, a TorchScript file,
                                                      # or your torch.nn.Module
    train = quell.load_data("fashion-mnist", split="train")
    test = quell.load_data("fashion-mnist", split="test")
    quell.train(model, train, epochs=5)
    result = quell.walk(model, test, out="runs/walk") # Walking Noise midpoints per site
    print(result)                                     # the table the CLI prints
    result.to_pandas()                                # one row per evaluation

Studies: train, evaluate, walk, denoise, plan, cost, inspect. Each takes the CLI's options as
keyword arguments and returns a result with attributes, to_dict(), to_json(), to_pandas() and
plot(). Noise is given as the CLI's rule strings ("all=add:0.1:rel=std") or built with
quell.noise; analog hardware (PCM, ReRAM, your own device table, DAC/ADC) with
quell.AnalogDevice (docs/devices.md). See docs/python.md.
"""
from ._quell import __version__ as _native_version
from . import noise
from .data import load_data, load_tensors, as_dataset
from .device import AnalogDevice
from .errors import QuellError
from .models import Model, SiteInfo, model_names
from .results import (CostResult, DenoiseResult, EvalResult, InspectResult, PlanResult,
                      TrainResult, WalkResult)
from .studies import cost, denoise, evaluate, inspect, plan, set_threads, train, walk

#: The version of quell, the same as ``quell --version`` prints (without the commit).
__version__ = _native_version.split(" ")[0]
#: The git commit the native engine was built from.
__commit__ = _native_version.split("(")[-1].rstrip(")") if "(" in _native_version else ""

__all__ = [
    "Model", "SiteInfo", "AnalogDevice", "model_names", "load_data", "load_tensors", "as_dataset", "noise", "QuellError",
    "train", "evaluate", "walk", "denoise", "plan", "cost", "inspect", "set_threads",
    "TrainResult", "EvalResult", "WalkResult", "DenoiseResult", "PlanResult", "CostResult",
    "InspectResult", "__version__",
]
