"""Results of the studies: the native result's numbers as attributes, to_dict() / to_json()
(the same documents the CLI writes), to_pandas() and plot()."""
import copy
import io
import json
import os


def _frame(csv_text):
    import pandas as pd
    return pd.read_csv(io.StringIO(csv_text))


class Result:
    """Common behaviour: the JSON document, its table, files."""

    def __init__(self, native):
        self._native = native
        self._dict = json.loads(native.to_json()) if hasattr(native, "to_json") else {}

    @property
    def metric(self):
        """What the values measure: "accuracy" unless the study was asked for another metric
        (then the JSON's keys carry its name: clean_perplexity, floor, ...)."""
        return self._dict.get("metric", "accuracy")

    def _key(self):
        from . import _quell
        return _quell.metric_info(self.metric)[1]

    def to_dict(self):
        """The result as plain Python values (a deep copy of the JSON document)."""
        return copy.deepcopy(self._dict)

    def to_json(self, path=None, indent=2):
        """The JSON document as text; with `path`, also written there."""
        text = json.dumps(self._dict, indent=indent) + "\n"
        if path is not None:
            with open(os.fspath(path), "w") as f:
                f.write(text)
        return text

    @property
    def provenance(self):
        """quell version, commit, LibTorch, device, threads, UTC time of the run."""
        return self._dict.get("provenance", {})

    def table(self):
        """The table `quell` prints for this study."""
        return self._native.table()

    def __str__(self):
        return self.table()

    def __repr__(self):
        return f"<{type(self).__name__}>\n{self.table()}"

    def _figures(self, path, formats):
        if formats not in ("png", "svg", "png,svg", "svg,png"):
            raise ValueError(f"formats '{formats}': expected png, svg or png,svg")
        from . import _quell
        if not _quell.gnuplot_available():
            raise RuntimeError("gnuplot is not installed (apt-get install gnuplot-nox)")
        path = os.fspath(path)
        os.makedirs(path, exist_ok=True)
        return self._native.write_figures(path, "png" in formats, "svg" in formats)


class TrainResult(Result):
    """A trained model with its training record.

    model: the trained quell.Model; metrics: epochs (loss, train accuracy, seconds), seconds,
    test_accuracy / test_loss when a test set was given; test_accuracy: or None."""

    def __init__(self, native, model):
        self._native = native
        self._dict = json.loads(native.metrics_json())
        self.model = model
        self.metrics = self._dict
        self.test_accuracy = self._dict.get("test_accuracy")

    def table(self):
        lines = [f"{'epoch':>5} {'loss':>9} {'train acc':>10} {'seconds':>8}"]
        for e in self._dict.get("epochs", []):
            lines.append(f"{e['epoch']:>5} {e['loss']:>9.4f} {e['train_accuracy']:>10.4f} "
                         f"{e['seconds']:>8.2f}")
        if self.test_accuracy is not None:
            lines.append(f"test accuracy {self.test_accuracy:.4f}")
        return "\n".join(lines) + "\n"

    def to_pandas(self):
        """One row per epoch."""
        import pandas as pd
        return pd.DataFrame(self._dict.get("epochs", []))


class EvalResult(Result):
    """The metric under noise (accuracy unless asked otherwise): clean, and per level its mean,
    95% CI and draws. clean_accuracy / accuracy are the same numbers as clean / value."""

    def __init__(self, native):
        super().__init__(native)
        key = self._key()
        #: The clean model's value of the metric.
        self.clean = self._dict["clean"][key]
        self.clean_accuracy = self.clean
        self.levels = self._dict["levels"]
        first = self.levels[0]
        head = first["chip_" + key] if first["ci_over"] == "chips" else first[key]
        #: The first level's mean value and 95% CI (over chips when chips matter).
        self.value = head["mean"]
        self.accuracy = self.value
        self.ci95 = (head["ci95_low"], head["ci95_high"])

    def to_pandas(self):
        """One row per (level, chip, draw): the metric and the loss."""
        return _frame(self._native.csv())


class WalkResult(Result):
    """A Walking Noise sweep: per site its curve and midpoint (where the metric has gone halfway
    from clean to its floor: chance for accuracy, docs/walk.md) with a bootstrap 95% interval;
    written to its output directory. clean / floor are in the metric's units (clean_accuracy /
    chance: the same numbers)."""

    def __init__(self, native, out):
        super().__init__(native)
        self.out = out
        key = self._key()
        self.clean = self._dict["clean_" + key]
        self.floor = self._dict["chance" if key == "accuracy" else "floor"]
        self.clean_accuracy, self.chance = self.clean, self.floor
        self.threshold = self._dict["threshold"]
        self.sites = self._dict["sites"]
        self.complete = self._dict["complete"]
        #: {site name: midpoint sigma} (None where the curve did not cross the threshold).
        self.midpoints = {s["name"]: s["midpoint"]["value"] for s in self.sites}
        self.written = list(native.written)

    def to_pandas(self):
        """One row per evaluation (walk.csv): site, name, noise, sigma, repeat, the metric, loss."""
        return _frame(self._native.csv())

    def midpoints_frame(self):
        """One row per site: index, name, midpoint, ci95_low, ci95_high, status."""
        import pandas as pd
        return pd.DataFrame([{"index": s["index"], "name": s["name"],
                              "midpoint": s["midpoint"]["value"],
                              "ci95_low": s["midpoint"]["ci_low"],
                              "ci95_high": s["midpoint"]["ci_high"],
                              "status": s["midpoint"]["status"]} for s in self.sites])

    def plot(self, path, formats="png"):
        """Draws the walk's figures (curves, midpoints, heatmap) into the folder `path`."""
        return self._figures(path, formats)


class DenoiseResult(Result):
    """The denoising-block study: rankings, searched placements (operating points and Pareto
    front), the comparison on the test set (per-chip calibrated rows carry "calibration") and
    the bounds (the backbone with part of the noise removed)."""

    def __init__(self, native, out):
        super().__init__(native)
        self.out = out
        self.comparison = self._dict["comparison"]
        self.bounds = self._dict.get("bounds", [])
        self.rankings = self._dict["rankings"]
        self.chosen = self._dict["chosen"]
        self.operating_points = self._dict["operating_points"]
        self.pareto_front = self._dict["pareto_front"]
        self.written = list(native.written)

    def to_pandas(self):
        """One row per compared model (report.csv)."""
        return _frame(self._native.report_csv())

    def points_frame(self):
        """Every placement the search evaluated (points.csv)."""
        return _frame(self._native.points_csv())

    def rankings_frame(self):
        """Every ranking's value and rank per site (rankings.csv)."""
        return _frame(self._native.rankings_csv())

    def plot(self, path, formats="png"):
        """Draws the Pareto and robustness figures into the folder `path`."""
        return self._figures(path, formats)


class PlanResult(Result):
    """The multi-execution plan: allocations per scheme and budget, evaluated and costed."""

    def __init__(self, native, out):
        super().__init__(native)
        self.out = out
        self.clean_accuracy = self._dict["clean_" + self._key()]
        self.allocations = self._dict["allocations"]
        self.other_mitigations = self._dict["other_mitigations"]
        self.written = list(native.written)

    def to_pandas(self):
        """One row per allocation and mitigation (allocations.csv)."""
        return _frame(self._native.allocations_csv())

    def points_frame(self):
        """Every allocation the searches evaluated (points.csv)."""
        return _frame(self._native.points_csv())

    def plot(self, path, formats="png"):
        """Draws the accuracy-vs-energy trade-off figure into the folder `path`."""
        return self._figures(path, formats)


class CostResult(Result):
    """Energy, latency and area of one inference, per layer and in total."""

    def __init__(self, json_text, table, csv):
        self._native = None
        self._dict = json.loads(json_text)
        self._table, self._csv = table, csv
        total = self._dict.get("total", {})
        energy = total.get("energy_pj")
        #: Energy of one inference in pJ, latency in ns (totals with repetitions and blocks).
        self.energy_pj = energy.get("total") if isinstance(energy, dict) else energy
        self.latency_ns = total.get("latency_ns")
        self.overhead_pct = self._dict.get("overhead_pct", {})

    def table(self):
        return self._table

    def to_pandas(self):
        """One row per layer and block, then base and total rows."""
        return _frame(self._csv)


class InspectResult(Result):
    """Weight statistics per conv/linear layer and pooled, with the binarisation index."""

    def __init__(self, native):
        super().__init__(native)
        self.layers = self._dict["layers"]
        self.all = self._dict["all"]

    def to_pandas(self):
        return _frame(self._native.csv())
