"""The studies, one function each, over the native library calls (quell/*_study.h). Keyword
arguments carry the CLI's options with the same defaults (docs/cli.md); the work runs in the
native engine with the GIL released."""
import json
import os

from . import _quell
from .data import as_dataset
from .device import device_json
from .errors import QuellError, check_file
from .models import Model
from .noise import rules
from .progress import factory
from .results import (CostResult, DenoiseResult, EvalResult, InspectResult, PlanResult,
                      TrainResult, WalkResult)


def set_threads(threads=0):
    """Threads of the native engine (0 = all cores). Returns the count set."""
    if int(threads) < 0:
        raise ValueError(f"threads must be >= 0, got {threads}")
    return _quell.set_threads(int(threads))


# quell uses every core unless told otherwise (LibTorch starts with one thread here).
set_threads(0)


def _model(model):
    if isinstance(model, Model):
        return model
    if isinstance(model, str) and os.path.exists(model):
        return Model(model)
    raise TypeError(f"model must be a quell.Model (or a checkpoint path), got {type(model).__name__}")


def _noise(model, noise, adc=None, repeat=None, weight_noise=None, noise_seed=1,
           noise_config=None, analog=None):
    """The NoiseConfig of the CLI's --noise/--adc/--repeat/--weight-noise/--noise-config and
    device flags (analog: a quell.AnalogDevice, its dict or a model name)."""
    names = model.site_names
    as_list = lambda v: [v] if isinstance(v, str) else list(v or [])
    if isinstance(noise, _quell.NoiseConfig):
        return noise
    config = _quell.NoiseConfig()
    if noise_config is not None:
        import json
        if isinstance(noise_config, dict):
            text = json.dumps(noise_config)
        else:
            with open(check_file(os.fspath(noise_config), "noise configuration")) as f:
                text = f.read()
        config = _quell.NoiseConfig.from_json(text, names)
    config.apply_rules(rules(noise), as_list(adc), as_list(repeat), names)
    if weight_noise:
        config.set_weight_noise(str(weight_noise))
    if analog is not None:
        config.set_device(device_json(analog), names)
    if noise_config is None or noise_seed is not None:
        config.seed = int(noise_seed if noise_seed is not None else 1)
    return config


# Note: o.train, o.eval, o.walk of an options object are references into it (pybind11), so
# `t = o.train; t.epochs = 3` sets the option.


def _analog_name(analog):
    model = json.loads(device_json(analog)).get("model", "pcm")
    return model if isinstance(model, str) else model.get("name", "table")


def _monitor(progress, verbose=False):
    message = (lambda line: print(line)) if verbose else None
    return factory(progress), message


def _metric(metric):
    if metric is None:
        return ""
    if not isinstance(metric, str):
        raise TypeError(f"metric must be a name such as 'perplexity', got {type(metric).__name__}")
    try:
        return _quell.metric_info(metric)[0]
    except (ValueError, RuntimeError) as e:
        raise ValueError(str(e)) from None


def _calibrate_if_needed(model, data):
    # An imported model is calibrated on the training data, as the CLI does.
    if not model.calibrated:
        model._native.calibrate(data.inputs, 2048)


def _calibrated_for(model, data):
    # A study without training data (evaluate, walk) calibrates an uncalibrated model on its own
    # data in a copy: the model itself stays uncalibrated until a study with training data.
    if model.calibrated:
        return model
    model = model.copy()
    model._native.calibrate(data.inputs, 2048)
    return model


def _walk_json(walk):
    """The walk.json of a WalkResult or a path."""
    if isinstance(walk, WalkResult):
        return os.path.join(walk.out, "walk.json")
    return check_file(os.fspath(walk), "walk result")


def _call(fn, *args):
    try:
        return fn(*args)
    except RuntimeError as e:
        msg = str(e)
        if "no such file" in msg.lower() or "cannot open" in msg or "does not exist" in msg:
            raise FileNotFoundError(msg) from None
        raise QuellError(msg) from None


def train(model, data, *, test=None, epochs=10, batch_size=128, optimizer="adam", lr=1e-3,
          momentum=0.9, weight_decay=0.0, cosine=True, seed=1, noise=None, adc=None,
          repeat=None, weight_noise=None, noise_seed=1, analog=None, calib_samples=2048,
          out=None, device="cpu", progress=True):
    """Trains `model` in place (clean, or noise-aware with `noise`) and returns a TrainResult.

    data / test: (x, y) tensors, a torch Dataset/DataLoader or a dataset name (see
    quell.as_dataset); with `test` the clean test accuracy is measured. Options as `quell
    train`: epochs, batch_size, optimizer ("adam" | "sgd"), lr, momentum (sgd), weight_decay,
    cosine (learning-rate annealing), seed (shuffling), noise (rules or quell.noise values,
    drawn fresh every step), analog (a quell.AnalogDevice: hardware-aware training, the
    device's weights drawn afresh every step), calib_samples (images that calibrate the sites). out: also write
    a checkpoint there. The model keeps its initialisation (Model(..., seed=) sets it).
    """
    model = _model(model)
    train_set = as_dataset(data, what="training data")
    test_set = as_dataset(test, what="test data", split="test") if test is not None else None
    if optimizer not in ("adam", "sgd"):
        raise ValueError(f"optimizer '{optimizer}': expected adam or sgd")
    if int(epochs) < 0 or int(batch_size) < 1 or not float(lr) > 0:
        raise ValueError("epochs must be >= 0, batch_size >= 1 and lr > 0")
    o = _quell.TrainStudyOptions()
    t = o.train
    t.epochs, t.batch_size, t.optimizer, t.lr = int(epochs), int(batch_size), optimizer, float(lr)
    t.momentum, t.weight_decay, t.cosine, t.seed = float(momentum), float(weight_decay), bool(cosine), int(seed)
    t.calib_samples = int(calib_samples)
    t.noise = _noise(model, noise, adc, repeat, weight_noise, noise_seed, analog=analog)
    o.out = os.fspath(out) if out else ""
    o.set_device(device)
    o.set_dataset(train_set.name)
    native = _call(_quell.run_train_study, model._native, train_set, test_set, o,
                   *_monitor(progress))
    return TrainResult(native, model)


def evaluate(model, data, *, noise=None, adc=None, repeat=None, weight_noise=None,
             noise_config=None, noise_seed=1, analog=None, times=None, drift_compensation=None,
             levels=(1.0,), draws=5, chips=1, batch_size=256, metric=None, device="cpu",
             progress=True):
    """The metric of `model` on `data` under noise: once clean, then at each level (every sigma
    times the level), over `chips` chip instances x `draws` noise draws, with mean, std and 95%
    CI (as `quell eval`). metric: "accuracy", "top5", "token-accuracy", "cross-entropy",
    "perplexity", "mse", "relative-mse"; None = the task's usual one (accuracy for class ids,
    perplexity for ids per position, mse for real targets). analog: a quell.AnalogDevice (or
    its dict, or "pcm"); times: evaluate it at each time since programming (seconds or "1d");
    drift_compensation: "on", "off" or "both" (each time twice). Returns an EvalResult."""
    model = _model(model)
    dataset = as_dataset(data, split="test")
    if int(draws) < 1 or int(chips) < 1 or int(batch_size) < 1:
        raise ValueError("draws, chips and batch_size must be >= 1")
    model = _calibrated_for(model, dataset)
    o = _quell.EvalStudyOptions()
    if drift_compensation not in (None, "on", "off", "both"):
        raise ValueError(f"drift_compensation '{drift_compensation}': expected on, off or both")
    if (times is not None or drift_compensation is not None) and analog is None \
            and noise_config is None:
        raise ValueError("times and drift_compensation need an analog device (analog=...)")
    o.noise = _noise(model, noise, adc, repeat, weight_noise, noise_seed, noise_config, analog)
    if drift_compensation in ("on", "off"):
        cfg = json.loads(o.noise.to_json(model.site_names))
        if "device" in cfg:
            cfg["device"]["compensation"] = drift_compensation == "on"
            o.noise.set_device(json.dumps(cfg["device"]), model.site_names)
    o.both_compensations = drift_compensation == "both"
    if times is not None:
        o.times = [_quell.parse_duration(t) if isinstance(t, str) else float(t)
                   for t in ([times] if isinstance(times, (str, int, float)) else times)]
    o.levels = [float(level) for level in levels]
    o.metric = _metric(metric)
    e = o.eval
    e.draws, e.chips, e.batch_size = int(draws), int(chips), int(batch_size)
    o.source = model.source
    o.noise_description = " ".join(rules(noise) + (["device " + _analog_name(analog)]
                                                   if analog is not None else [])) or "configured"
    o.set_device(device)
    return EvalResult(_call(_quell.run_eval_study, model._native, dataset, o, *_monitor(progress)))


def walk(model, data, *, out, sites="all", noise="add", grid=None, per_decade=4,
         analog=None, sweep=None,
         metric=None, repeats=3, global_curve=False, early_stop=True, chance=0.0, chance_margin=-1.0,
         max_extend=40, adaptive=False, tolerance=0.05, seed=1, batch_size=256,
         prefix_cache=True, cache_mb=1024, shard=None, merge=(), restart=False, figures="png,svg",
         train=None, epochs=5, lr=1e-3, train_batch=128, train_limit=0, eval_draws=1,
         save_models=False, device="cpu", progress=True):
    """Walking Noise (as `quell walk`): noise at one site at a time over a sigma grid; each
    site's midpoint with a bootstrap 95% interval. metric: what is measured (as in evaluate;
    the midpoint is where it has gone halfway from clean to its floor, docs/walk.md). Resumable: a walk interrupted (Ctrl-C) and
    called again with the same `out` continues from its journal; shard="I/N" runs one shard
    and merge=[dirs] merges shards. With train=(training data) the noisy-training setting:
    a fresh model per (site, sigma, repeat) trained with the noise on (epochs, lr,
    train_batch, eval_draws). figures: "png,svg", "png", "svg" or None. grid default
    "1e-2:1e4". Device walk: analog=quell.AnalogDevice(...) walks the device on one analog layer
    at a time, sweeping sweep="time" (grid of times since programming, default "1:1e9" seconds,
    units allowed: "1s:10y") or sweep="scale" (its noise scale, default grid "0.1:100").
    Returns a WalkResult.
    """
    model = _model(model)
    test = as_dataset(data, split="test")
    train_set = as_dataset(train, what="training data") if train is not None else None
    if not out:
        raise ValueError("out: the walk needs an output directory (its journal makes it resumable)")
    if train_set is not None:
        _calibrate_if_needed(model, train_set)
    else:
        model = _calibrated_for(model, test)
    o = _quell.WalkStudyOptions()
    w = o.walk
    w.set_noise(str(noise))
    if analog is None and sweep is not None:
        raise ValueError("sweep needs an analog device to walk (analog=...)")
    if analog is not None:
        sweep = sweep or "time"
        w.set_device(device_json(analog), model.site_names, str(sweep))
        if grid is None:
            grid = "1:1e9" if sweep == "time" else "0.1:100"
        if sweep == "time":
            grid = _quell.durations_as_seconds(str(grid))
    w.set_grid(str(grid if grid is not None else "1e-2:1e4"), int(per_decade))
    w.repeats, w.global_curve, w.early_stop = int(repeats), bool(global_curve), bool(early_stop)
    w.chance, w.chance_margin, w.max_extend = float(chance), float(chance_margin), int(max_extend)
    w.adaptive, w.tolerance, w.seed = bool(adaptive), float(tolerance), int(seed)
    w.batch_size, w.prefix_cache = int(batch_size), bool(prefix_cache)
    w.cache_bytes = int(cache_mb) * (1 << 20)
    if shard:
        try:
            index, count = (int(p) for p in str(shard).split("/"))
        except ValueError:
            raise ValueError(f"shard '{shard}': expected I/N with 1 <= I <= N, e.g. 2/4") from None
        if not 1 <= index <= count:
            raise ValueError(f"shard '{shard}': expected I/N with 1 <= I <= N, e.g. 2/4")
        w.shard_index, w.shard_count = index - 1, count
        o.shard_text = str(shard)
    o.sites = str(sites)
    o.metric = _metric(metric)
    o.out = os.fspath(out)
    o.restart = bool(restart)
    o.merge = [os.fspath(m) for m in merge]
    o.set_figures(figures or "none")
    if train_set is not None:
        o.noisy_training = True
        t = o.train_options
        t.epochs, t.lr, t.batch_size = int(epochs), float(lr), int(train_batch)
        o.train_limit, o.eval_draws, o.save_models = int(train_limit), int(eval_draws), bool(save_models)
    o.source = model.source
    o.model_digest = model._digest
    o.set_data(test.name, 0, 0)
    o.set_device(device)
    native = _call(_quell.run_walk_study, model._native, test, train_set, o, *_monitor(progress))
    return WalkResult(native, o.out)


def denoise(model, train, test, *, noise=None, out=None, adc=None, weight_noise=None,
            noise_config=None, noise_seed=1, analog=None, sites="all", block="auto", ratios=(4, 16),
            budgets=(2.0, 5.0), search="greedy", walk=None, drop_ranking=True, all_sites=True,
            finetune=True, finetune_lr=1e-4, train_limit=0, val_size=5000, search_limit=10000,
            search_epochs=1, search_width=4, search_draws=2, taylor_samples=2048, min_gain=0.0,
            epochs=3, lr=1e-3, batch_size=128, feature_weight=0.0, scale_range=(1.0, 1.0),
            seed=1, draws=5, chips=5, calibrate=1000, calibrate_epochs=5, calibrate_lr=1e-2,
            calibrate_feature_weight=1.0, calibrate_holdout=0.2,
            bounds=True, robustness=(0, 0.25, 0.5, 0.75, 1, 1.25, 1.5, 1.75, 2),
            robust_draws=2, metric=None, figures="png,svg", device="cpu", progress=True,
            verbose=False):
    """Denoising blocks in the frozen `model` (as `quell denoise`): sites ranked (Taylor,
    measured drops, a walk's midpoints with walk=walk.json or a WalkResult), placements
    searched under the parameter budgets (% of the model's parameters), the chosen blocks
    trained, compared on `test` with no mitigation, blocks everywhere and noise-aware
    fine-tuning. For noise fixed per chip, calibrate=N also fine-tunes the chosen blocks on each
    test chip with N training samples (calibrate_epochs, calibrate_lr, calibrate_feature_weight;
    0 or None = off), keeping a chip's calibration only where it lowers the loss on the
    calibrate_holdout fraction of those samples held out (0 = no check), and
    bounds=True evaluates the backbone without the noise at the chosen sites and with only the
    static or only the dynamic part of the noise (DenoiseResult.bounds). metric: what the
    search maximises ("accuracy", "topK", "token-accuracy";
    None = accuracy, or token-accuracy for ids per position). With `out`, writes
    report.json/csv, points.csv, rankings.csv, robustness.csv, checkpoints with the blocks and
    figures there. Returns a DenoiseResult."""
    model = _model(model)
    train_set = as_dataset(train, what="training data")
    test_set = as_dataset(test, what="test data", split="test")
    _calibrate_if_needed(model, train_set)
    o = _quell.DenoiseStudyOptions()
    o.noise = _noise(model, noise, adc, None, weight_noise, noise_seed, noise_config, analog)
    if o.noise.empty():
        raise ValueError("no noise to mitigate: give noise=")
    o.sites, o.block = str(sites), str(block)
    o.metric = _metric(metric)
    o.ratios = [int(r) for r in ratios]
    o.budgets = [float(b) for b in budgets]
    o.search = str(search)
    if walk is not None:
        o.walk_json = _walk_json(walk)
    o.drop_ranking, o.all_sites, o.finetune = bool(drop_ranking), bool(all_sites), bool(finetune)
    o.finetune_lr, o.train_limit, o.val_size = float(finetune_lr), int(train_limit), int(val_size)
    o.search_limit, o.search_epochs = int(search_limit), int(search_epochs)
    o.search_width, o.search_draws = int(search_width), int(search_draws)
    o.taylor_samples, o.min_gain = int(taylor_samples), float(min_gain)
    t = o.train
    t.epochs, t.lr, t.batch_size, t.seed = int(epochs), float(lr), int(batch_size), int(seed)
    t.feature_weight = float(feature_weight)
    lo, hi = (scale_range, scale_range) if isinstance(scale_range, (int, float)) else scale_range
    t.scale_lo, t.scale_hi = float(lo), float(hi)
    e = o.eval
    e.draws, e.chips = int(draws), int(chips)
    o.calibrate = bool(calibrate)
    if calibrate:
        c = o.calibration
        c.samples, c.epochs, c.lr = int(calibrate), int(calibrate_epochs), float(calibrate_lr)
        c.feature_weight = float(calibrate_feature_weight)
        c.holdout = float(calibrate_holdout)
        c.seed = int(seed)
        o.calibration = c
    o.bounds = bool(bounds)
    o.robustness_levels = [float(level) for level in (robustness or [])]
    o.robust_draws = int(robust_draws)
    o.out = os.fspath(out) if out else ""
    o.set_figures(figures or "none")
    o.source = model.source
    o.set_device(device)
    native = _call(_quell.run_denoise_study, model._native, train_set, test_set, o,
                   *_monitor(progress, verbose))
    return DenoiseResult(native, o.out)


def plan(model, train, test, *, noise=None, out=None, adc=None, weight_noise=None,
         noise_config=None, noise_seed=1, analog=None, sites="all", walk=None,
         schemes=("uniform", "inverse_lin", "inverse_sqrt", "inverse_square"), mean_repeats=(),
         energy_budget=(), target=0.0, max_mean=16.0, search="greedy", search_width=4,
         search_draws=2, val_size=5000, min_gain=0.0, hardware="isaac", set=(),
         denoise_report=None, draws=5, chips=1, metric=None, figures="png,svg", device="cpu",
         progress=True, verbose=False):
    """Multi-execution planning (as `quell plan`): repetitions per site under mean-repeat or
    energy budgets or an accuracy target, per scheme and by a measured greedy search, each
    evaluated on `test` and costed with the hardware model; a denoise report (a path or a
    DenoiseResult) joins the comparison. metric: as for denoise. Returns a PlanResult."""
    model = _model(model)
    train_set = as_dataset(train, what="training data")
    test_set = as_dataset(test, what="test data", split="test")
    _calibrate_if_needed(model, train_set)
    o = _quell.PlanStudyOptions()
    o.noise = _noise(model, noise, adc, None, weight_noise, noise_seed, noise_config, analog)
    o.sites = str(sites)
    o.metric = _metric(metric)
    if walk is not None:
        o.walk_json = _walk_json(walk)
    o.schemes = [str(s) for s in schemes]
    o.mean_repeats = [float(k) for k in mean_repeats]
    o.energy_budgets = [float(e) for e in energy_budget]
    o.target, o.max_mean, o.search = float(target), float(max_mean), str(search)
    o.search_width, o.search_draws = int(search_width), int(search_draws)
    o.val_size, o.min_gain = int(val_size), float(min_gain)
    o.set_hardware(str(hardware), [str(s) for s in set])
    if denoise_report is not None:
        if isinstance(denoise_report, DenoiseResult):
            if not denoise_report.out:
                raise ValueError("denoise_report: that DenoiseResult was not written (give it out=)")
            o.denoise_report = os.path.join(denoise_report.out, "report.json")
        else:
            o.denoise_report = check_file(os.fspath(denoise_report), "denoise report")
    e = o.eval
    e.draws, e.chips = int(draws), int(chips)
    o.out = os.fspath(out) if out else ""
    o.set_figures(figures or "none")
    o.source = model.source
    o.set_device(device)
    native = _call(_quell.run_plan_study, model._native, train_set, test_set, o,
                   *_monitor(progress, verbose))
    return PlanResult(native, o.out)


def cost(model, *, hardware="isaac", set=(), node=0.0, repeat=None, denoisers="", analog=None):
    """Energy, latency and area of one inference on a mixed-signal accelerator (as `quell
    cost`): hardware preset or JSON file, set=["FIELD=VALUE", ...] overrides, node (nm),
    repeat={"site": k} or rules ["conv1=4"], denoisers (a placement label; default: the
    model's own blocks), analog (a quell.AnalogDevice: its tile's DAC, ADC and array size replace
    the preset's, before `set`). Returns a CostResult."""
    model = _model(model)
    names = model.site_names
    repeats = []
    if repeat:
        rule_list = [f"{s}={k}" for s, k in repeat.items()] if isinstance(repeat, dict) else \
            ([repeat] if isinstance(repeat, str) else list(repeat))
        config = _quell.NoiseConfig.build([], [], rule_list, "", 1, names)
        import json
        k = {r["name"]: r["repeats"] for r in json.loads(config.to_json(names))["rules"]}
        repeats = [int(k.get(n, 1)) for n in names]
    return CostResult(*_quell.estimate_cost(model._native, str(hardware), [str(s) for s in set],
                                            float(node), repeats, str(denoisers),
                                            device_json(analog) if analog is not None else ""))


def inspect(model):
    """Weight statistics of the conv/linear layers: mean|w|, rms, max|w|, binarisation index
    (as `quell inspect`). Returns an InspectResult."""
    model = _model(model)
    dataset = model.meta.get("dataset", "") if isinstance(model.meta, dict) else ""
    return InspectResult(_quell.inspect_model(model._native, model.source, dataset))
