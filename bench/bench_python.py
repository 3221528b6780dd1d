#!/usr/bin/python3
"""The lenet5-bn Walking Noise sweep from Python (import quell) against the quell CLI: the same
checkpoint, data, grid and build, run alternately in the same session (docs/bench.md).

Each round times both sides once, each into a fresh output directory:

  CLI     build/quell walk CKPT --out DIR --figures none        (a process: loads LibTorch,
                                                                 the checkpoint and the data)
  Python  quell.walk(quell.Model(CKPT), quell.load_data("fashion-mnist", split="test"),
                     out=DIR, figures=None, progress=False)     (in this process: the same
                                                                 loading, the package imported once)

and checks that both wrote the same walk.csv, byte for byte. Reported: every time, the medians
and the ratio Python / CLI of the whole call (target <= 1.05), and beside it the sweep alone as
each side reports it ("N evaluations in S s"), without the CLI's process start and LibTorch load
(about half a second, which dominates --quick). The checkpoint is --checkpoint, or trained first
with `quell train --model lenet5-bn --epochs 1` (kept in --out for the next run).

    /usr/bin/python3 bench/bench_python.py                      # default grid 1e-2:1e4, 3 repeats,
                                                                # 10,000 test images, 2 rounds
    /usr/bin/python3 bench/bench_python.py --quick              # grid 0.1:10, 1,000 test images
    /usr/bin/python3 bench/bench_python.py --build build --rounds 5 --checkpoint runs/l5.pt

Exit status 1 when the walk.csv files differ (or a run fails); the ratio is only reported.
"""
import argparse
import filecmp
import json
import os
import re
import shutil
import statistics
import subprocess
import sys
import time


def parse():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--build", default="build", help="build folder: quell and python/quell")
    ap.add_argument("--checkpoint", help="lenet5-bn checkpoint (default: trained into --out)")
    ap.add_argument("--out", default="runs/bench-python", help="output folder")
    ap.add_argument("--rounds", type=int, default=2, help="timed runs of each side")
    ap.add_argument("--grid", help="walk grid (default 1e-2:1e4; --quick 0.1:10)")
    ap.add_argument("--per-decade", type=int, default=4)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--limit", type=int, help="test images (default all; --quick 1000)")
    ap.add_argument("--threads", type=int, default=0, help="threads of both sides (0 = all cores)")
    ap.add_argument("--quick", action="store_true", help="a small grid and test set: a fast check")
    a = ap.parse_args()
    a.grid = a.grid or ("0.1:10" if a.quick else "1e-2:1e4")
    a.limit = a.limit if a.limit is not None else (1000 if a.quick else 0)
    if a.rounds < 1:
        ap.error("--rounds must be >= 1")
    return a


def run(cmd, what):
    r = subprocess.run(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    if r.returncode != 0:
        sys.exit(f"{what} failed (exit {r.returncode}): {' '.join(cmd)}\n{r.stderr[-2000:]}")
    return r


def sweep_seconds(table):
    """The sweep's own time from a walk table's last line: "N evaluations in S s"."""
    m = re.search(r"(\d+) evaluations in ([0-9.]+) s", table)
    return float(m.group(2)) if m else float("nan")


def fresh(path):
    shutil.rmtree(path, ignore_errors=True)
    return path


def main():
    a = parse()
    cli = os.path.join(a.build, "quell")
    if not os.access(cli, os.X_OK):
        sys.exit(f"{cli}: no quell CLI (build it, or give --build)")
    # The package of the same build as the CLI, ahead of any installed copy.
    sys.path.insert(0, os.path.abspath(os.path.join(a.build, "python")))
    import quell
    quell.set_threads(a.threads)
    os.makedirs(a.out, exist_ok=True)

    ckpt = a.checkpoint
    if not ckpt:
        # --quick trains on 5,000 images so as not to leave a weak checkpoint for the full bench.
        ckpt = os.path.join(a.out, "lenet5-bn-quick.pt" if a.quick else "lenet5-bn.pt")
        if not os.path.exists(ckpt):
            print(f"training {ckpt} (quell train --model lenet5-bn --epochs 1)", flush=True)
            run([cli, "train", "--model", "lenet5-bn", "--epochs", "1", "--out", ckpt,
                 "--threads", str(a.threads)] + (["--limit", "5000"] if a.quick else []),
                "quell train")
    elif not os.path.exists(ckpt):
        sys.exit(f"{ckpt}: no such checkpoint")

    sweep = ["--grid", a.grid, "--per-decade", str(a.per_decade), "--repeats", str(a.repeats)]
    cli_cmd = [cli, "walk", ckpt, "--figures", "none", "--threads", str(a.threads), *sweep]
    if a.limit:
        cli_cmd += ["--limit", str(a.limit)]
    print(f"quell {quell.__version__}; {ckpt}; grid {a.grid}, {a.per_decade} per decade, "
          f"{a.repeats} repeats, {a.limit or 'all'} test images, {a.rounds} rounds", flush=True)

    def time_cli(out):
        start = time.perf_counter()
        r = run(cli_cmd + ["--out", fresh(out)], "quell walk")
        return time.perf_counter() - start, sweep_seconds(r.stdout)

    def time_python(out):
        start = time.perf_counter()
        r = quell.walk(quell.Model(ckpt),
                       quell.load_data("fashion-mnist", split="test", limit=a.limit),
                       out=fresh(out), grid=a.grid, per_decade=a.per_decade, repeats=a.repeats,
                       figures=None, progress=False)
        return time.perf_counter() - start, sweep_seconds(str(r))

    times = {"cli": [], "python": []}
    sweeps = {"cli": [], "python": []}
    reference, identical = None, True
    print(f"{'round':>5} {'side':>7} {'seconds':>9} {'sweep s':>8}  walk.csv")
    for i in range(a.rounds):
        # Alternate which side goes first, so that drifting load hits both alike.
        order = ("cli", "python") if i % 2 == 0 else ("python", "cli")
        for side in order:
            out = os.path.join(a.out, f"{side}-{i + 1}")
            seconds, sweep = (time_cli if side == "cli" else time_python)(out)
            times[side].append(seconds)
            sweeps[side].append(sweep)
            csv = os.path.join(out, "walk.csv")
            reference = reference or csv
            same = filecmp.cmp(reference, csv, shallow=False)
            identical &= same
            print(f"{i + 1:>5} {side:>7} {seconds:>9.2f} {sweep:>8.2f}  "
                  f"{'identical' if same else 'DIFFERS from ' + reference}", flush=True)

    cli_median, py_median = statistics.median(times["cli"]), statistics.median(times["python"])
    ratio = py_median / cli_median
    sweep_ratio = statistics.median(sweeps["python"]) / statistics.median(sweeps["cli"])
    with open(reference) as f:
        rows = len(f.read().splitlines()) - 1
    print(f"\nmedian  CLI {cli_median:.2f} s, Python {py_median:.2f} s ({rows} walk.csv rows)")
    print(f"ratio   Python / CLI = {ratio:.3f} (target <= 1.05: "
          f"{'met' if ratio <= 1.05 else 'NOT met'}); the sweeps alone: {sweep_ratio:.3f}")
    print(f"walk.csv: {'identical in every run' if identical else 'DIFFERENT'}")
    with open(os.path.join(a.out, "bench_python.json"), "w") as f:
        json.dump({"checkpoint": ckpt, "grid": a.grid, "per_decade": a.per_decade,
                   "repeats": a.repeats, "limit": a.limit, "threads": a.threads,
                   "version": quell.__version__, "rows": rows, "seconds": times,
                   "sweep_seconds": sweeps, "median_cli": cli_median,
                   "median_python": py_median, "ratio": ratio, "sweep_ratio": sweep_ratio,
                   "target": 1.05, "walk_csv_identical": identical}, f, indent=2)
        f.write("\n")
    return 0 if identical else 1


if __name__ == "__main__":
    sys.exit(main())
