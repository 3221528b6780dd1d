"""Models: a built-in architecture by name, a quell checkpoint, a TorchScript file, or your own
torch.nn.Module (scripted or traced here, then run by the native engine)."""
import io
import json
import os
from collections import namedtuple

import torch

from . import _quell
from .errors import check_file

#: One row of a model's site table (a point of the forward pass where noise acts).
SiteInfo = namedtuple("SiteInfo", ["index", "name", "op", "shape", "numel", "params"])

_GEOMETRY = {"fashion-mnist": (1, 28, 28, 10), "mnist": (1, 28, 28, 10),
             "cifar10": (3, 32, 32, 10), "cifar100": (3, 32, 32, 100)}


def model_names():
    """Names of the built-in architectures (mlp, mlp-bn, lenet5, lenet5-bn, vgg-s, resnet20)."""
    return list(_quell.model_names())


def _dtype_name(t):
    return "float32" if t.is_floating_point() else "int64"


def _shape_of(example_input, input_shape, input_dtype=None):
    """(per-sample shape, "float32" | "int64") from an example batch or a given shape, or None."""
    if example_input is not None:
        if not isinstance(example_input, torch.Tensor):
            raise TypeError(f"example_input must be a torch.Tensor, got {type(example_input).__name__}")
        if example_input.dim() < 2:
            raise ValueError("example_input must be a batch [N, ...] with at least one dimension "
                             f"per sample, got {list(example_input.shape)}")
        if example_input.is_complex() or example_input.dtype == torch.bool:
            raise TypeError(f"example_input must be floating point or integer token ids, got "
                            f"{example_input.dtype}")
        return tuple(int(s) for s in example_input.shape[1:]), _dtype_name(example_input)
    if input_shape is not None:
        if isinstance(input_shape, int):
            input_shape = (input_shape,)
        shape = tuple(int(s) for s in input_shape)
        if not shape or min(shape) < 1:
            raise ValueError(f"input_shape must hold positive sizes, e.g. (1, 28, 28) or (64,), "
                             f"got {input_shape}")
        dtype = input_dtype or "float32"
        if dtype in (torch.int64, torch.long, "long", "int64"):
            dtype = "int64"
        elif dtype in (torch.float32, torch.float, "float", "float32"):
            dtype = "float32"
        else:
            raise ValueError(f"input_dtype must be float32 or int64 (token ids), got {input_dtype}")
        return shape, dtype
    return None


class Model:
    """A network whose every op output is a noise site, run by quell's native engine.

    Model(source, *, example_input=None, input_shape=None, input_dtype=None, num_classes=None,
          dataset=None, expected=None, seed=1, trace=False)

    source:
      - a built-in name ("lenet5-bn"; see quell.model_names()): a fresh model, initialised with
        `seed`, for the geometry of `dataset` (default "fashion-mnist": 1x28x28, 10 classes) or
        of input_shape=(C, H, W) / example_input and num_classes;
      - a path to a quell checkpoint (`quell train --out`), with its weights and calibration;
        `expected` checks its architecture's name;
      - a path to a TorchScript file, or a torch.nn.Module (scripted with torch.jit.script, or
        traced with example_input when trace=True or scripting fails): needs example_input or
        input_shape; num_classes defaults to the model's output width. Its sites are found in
        the graph and named after the module hierarchy (docs/models.md). Studies calibrate an
        imported model on their training data when it has no calibration yet.

    model.sites is the site table; model(x) gives the clean logits.
    """

    def __init__(self, source, *, example_input=None, input_shape=None, input_dtype=None,
                 num_classes=None, dataset=None, expected=None, seed=1, trace=False):
        self.source = ""      # the file it came from ("" in memory)
        self.meta = {}        # the checkpoint's record (dataset, training, metrics)
        self._digest = ""     # the file's digest: a resumed walk must use the same file
        shape = _shape_of(example_input, input_shape, input_dtype)
        classes = 0 if num_classes is None else int(num_classes)
        if classes < 0:
            raise ValueError(f"num_classes must be >= 0, got {num_classes}")
        if isinstance(source, Model):
            self._native = source._native.clone()
            self.source, self.meta, self._digest = source.source, dict(source.meta), source._digest
        elif isinstance(source, torch.nn.Module):
            self._native = self._import_module(source, example_input, shape, classes, trace)
        elif isinstance(source, (str, os.PathLike)):
            source = os.fspath(source)
            if source in _quell.model_names():
                self._native = self._builtin(source, shape, classes, dataset, seed)
            else:
                self._load_file(source, shape, classes, expected)
        elif hasattr(source, "_native") and isinstance(source._native, _quell.NativeModel):
            self._native = source._native
        else:
            raise TypeError("Model(source): expected a model name, a file path or a torch.nn.Module, "
                            f"got {type(source).__name__}")

    # -- construction ---------------------------------------------------------------------------
    @staticmethod
    def _builtin(name, shape, classes, dataset, seed):
        c, h, w, k = _GEOMETRY.get(dataset or "fashion-mnist", (None, None, None, None))
        if dataset is not None and dataset not in _GEOMETRY:
            raise ValueError(f"dataset '{dataset}' has no fixed geometry (known: "
                             f"{', '.join(_GEOMETRY)}); give input_shape and num_classes")
        if shape is not None:
            if len(shape[0]) != 3 or shape[1] != "float32":
                raise ValueError(f"model {name} takes images (C, H, W) of float32, not "
                                 f"{shape[0]} {shape[1]}; import your own model for other inputs")
            c, h, w = shape[0]
        return _quell.make_model(name, c, h, w, classes or k, int(seed))

    def _load_file(self, path, shape, classes, expected):
        check_file(path, "model")
        if _quell.is_torchscript_model(path):
            if expected:
                raise ValueError(f"{path}: a TorchScript model, but model '{expected}' was expected")
            if shape is None:
                raise ValueError(f"{path}: a TorchScript model; give example_input or input_shape "
                                 "(e.g. (1, 28, 28), or (64,) with input_dtype='int64') to import it")
            try:
                self._native = _quell.load_script(path, list(shape[0]), shape[1], classes)
            except RuntimeError as e:
                raise ValueError(str(e)) from None
            self.meta = {"train_config": {"imported": path}}
        else:
            try:
                self._native, meta = _quell.load_model(path, expected or "")
            except RuntimeError as e:
                raise ValueError(str(e)) from None
            self.meta = json.loads(meta)
        self.source = path
        self._digest = _quell.file_digest(path)

    @staticmethod
    def _import_module(module, example_input, shape, classes, trace):
        if shape is None:
            raise ValueError("a torch.nn.Module needs example_input (a batch [N, ...]) or "
                             "input_shape (per sample, e.g. (C, H, W) or (T,) with input_dtype)")
        was_training = module.training
        module.eval()
        try:
            if isinstance(module, torch.jit.ScriptModule):
                scripted = module
            elif trace:
                if example_input is None:
                    raise ValueError("trace=True needs example_input")
                scripted = torch.jit.trace(module, example_input)
            else:
                try:
                    scripted = torch.jit.script(module)
                except Exception as e:  # scripting needs annotations; tracing only an input
                    if example_input is None:
                        raise ValueError(f"torch.jit.script failed ({str(e).splitlines()[0]}); "
                                         "give example_input to trace the module instead") from None
                    scripted = torch.jit.trace(module, example_input)
            buf = io.BytesIO()
            torch.jit.save(scripted, buf)
        finally:
            module.train(was_training)
        name = type(module).__name__ + ".pt"
        try:
            return _quell.load_script_bytes(buf.getvalue(), name, list(shape[0]), shape[1], classes)
        except RuntimeError as e:
            raise ValueError(str(e)) from None

    # -- what it is -----------------------------------------------------------------------------
    @property
    def name(self):
        """The architecture: a registry name, or the imported file's name."""
        return self.spec["name"]

    @property
    def spec(self):
        """{"name", "in_channels", "height", "width", "num_classes"} (+ "input_shape",
        "input_dtype" for inputs other than float images)."""
        return json.loads(self._native.spec())

    @property
    def sites(self):
        """The site table: a list of SiteInfo(index, name, op, shape, numel, params)."""
        return [SiteInfo(**s) for s in self._native.sites()]

    @property
    def site_names(self):
        return list(self._native.site_names())

    @property
    def num_params(self):
        """Parameters of the network without denoising blocks."""
        return self._native.num_params()

    @property
    def denoisers(self):
        """The denoising blocks present: [{"site", "name", "block", "params"}]."""
        return list(self._native.denoisers())

    @property
    def calibrated(self):
        """Whether the sites have their clean statistics (needed for noise relative to them)."""
        return self._native.is_calibrated()

    def sites_frame(self):
        """The site table as a pandas DataFrame."""
        import pandas as pd
        return pd.DataFrame([s._asdict() for s in self.sites])

    def calibrate(self, data, max_samples=2048):
        """Measures every site's clean statistics on the inputs of `data` (tensors or a dataset)."""
        from .data import as_dataset
        ds = as_dataset(data, what="calibration data")
        self._native.calibrate(ds.inputs, int(max_samples))
        return self

    @property
    def input_shape(self):
        """The input per sample, e.g. (1, 28, 28) or (64,)."""
        spec = self.spec
        if spec.get("input_shape"):
            return tuple(spec["input_shape"])
        return (spec["in_channels"], spec["height"], spec["width"])

    @property
    def input_dtype(self):
        """"float32", or "int64" for token ids."""
        return self.spec.get("input_dtype", "float32")

    def __call__(self, x):
        """The clean output of the batch x [N, *input_shape] (eval mode, no noise, no gradient)."""
        if not isinstance(x, torch.Tensor):
            raise TypeError(f"expected a torch.Tensor, got {type(x).__name__}")
        want = list(self.input_shape)
        if x.dim() != len(want) + 1 or list(x.shape[1:]) != want:
            raise ValueError(f"expected input [N, {', '.join(str(d) for d in want)}], got {list(x.shape)}")
        if self.input_dtype == "int64":
            if x.is_floating_point() or x.is_complex() or x.dtype == torch.bool:
                raise TypeError(f"expected integer token ids, got {x.dtype}")
            return self._native.forward(x.long())
        if not x.is_floating_point():
            raise TypeError(f"expected a floating-point input, got {x.dtype}")
        return self._native.forward(x.float())

    def save(self, path, meta=None):
        """Writes a quell checkpoint (weights, calibration, blocks, `meta` merged into the record)."""
        record = dict(self.meta)
        record.update(meta or {})
        self._native.save(os.fspath(path), json.dumps(record))
        return path

    def copy(self):
        """An independent copy (same weights, calibration and blocks)."""
        return Model(self)

    def __repr__(self):
        spec = self.spec
        shape = "x".join(str(d) for d in self.input_shape)
        if self.input_dtype != "float32":
            shape += " " + self.input_dtype
        return (f"quell.Model('{spec['name']}', {shape} -> {spec['num_classes']} outputs, "
                f"{len(self.site_names)} sites, "
                f"{self.num_params} parameters)")
