"""What ``tui-trainer view`` costs on a big log: time to first plot, to the
full plot, and peak memory.

    python benchmarks/bench_view.py [--records 1000000] [--repeat 3] [--path /tmp/bench_view.jsonl]

Writes a log of N train records in our own format (full-precision floats, as
the engine writes them; an eval and a sample every 1000 steps), then, each in
a fresh process so ru_maxrss is that run's own peak, interleaved:

  load    logs.load_series: read and parse the whole file into a RunSeries
  view    the real viewer app, headless at 120x36: from process start to the
          first frame with a curve (the sampled preview on a big file) and to
          the frame drawn from the complete series, as wall time and as the
          process's CPU time (all threads; the fairer figure on a loaded machine)
  small   the same on a 100-line log: the fixed cost (Python, imports, Textual)
  parse   stdlib json vs orjson vs msgspec, line by line, on the first 200k lines

``--code DIR`` (repeatable) runs load and view against another copy of the
package too (e.g. ``git archive HEAD tui_trainer | tar -x -C /tmp/base``),
interleaved with this tree's, so before/after come from one run.

Prints medians and spread.  Timings on a shared machine are noisy: compare
numbers from one run only.
"""
from __future__ import annotations

import argparse
import json
import os
import random
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def write_log(path: Path, n: int) -> None:
    rnd = random.Random(0)
    t0 = 1764105047.123456
    with open(path, "w") as f:
        f.write(json.dumps({"type": "run_start", "step": 0, "time": t0, "run_name": "bench", "config": {},
                            "n_params": 1, "device": "cpu", "total_steps": n, "resumed": False}) + "\n")
        buf = []
        for s in range(1, n + 1):
            loss = 4.0 * 0.5 ** (s / 2e5) + rnd.random() * 0.1
            buf.append(f'{{"type":"train","step":{s},"time":{t0 + s * 0.0123!r},"train_loss":{loss!r},'
                       f'"lr":{3e-3 * rnd.random()!r},"tokens_per_sec":{12000 + rnd.random()!r},'
                       f'"grad_norm":{rnd.random()!r},"elapsed_s":{s * 0.0123!r},"tokens":{s * 4096}}}\n')
            if s % 1000 == 0:
                buf.append(json.dumps({"type": "eval", "step": s, "time": t0, "val_loss": loss + 0.1,
                                       "train_loss": loss, "elapsed_s": s * 0.0123, "forced": False}) + "\n")
                buf.append(json.dumps({"type": "sample", "step": s, "time": t0, "prompt": "def ",
                                       "text": "def f(x):\n    return x" * 4}) + "\n")
                f.writelines(buf)
                buf = []
        f.writelines(buf)
        f.write(json.dumps({"type": "run_end", "step": n, "time": t0, "status": "finished",
                            "elapsed_s": n * 0.0123, "val_loss": 1.0, "error": None}) + "\n")


LOAD = r"""
import resource, sys, time
from pathlib import Path
try:
    from tui_trainer.logs import load_series
except ImportError:  # a tree from before tui_trainer/logs/ (--code against an older checkout)
    from tui_trainer.logsource import load_series
t = time.perf_counter(); c = time.process_time()
series, counts = load_series(Path(sys.argv[1]))
print(time.perf_counter() - t, time.process_time() - c,
      resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, len(series.loss), counts.bad)
"""

VIEW = r"""
import resource, sys, time
from pathlib import Path
from tui_trainer.ui.plot import CurvePlot
try:
    from tui_trainer.ui.app import DashboardApp as App  # one app class, given its source
    from tui_trainer.ui.viewer import FileSource
    def make(src): return Timed(src, src.runs)
except ImportError:
    pass
try:  # a tree from before the one app class (--code against an older checkout)
    from tui_trainer.ui.viewer import FileSource, ViewerApp as App
    def make(src): return Timed(src)
except ImportError:
    pass

marks = {}

class Timed(App):
    def on_mount(self):  # Textual calls the base class's on_mount too (handlers run along the MRO)
        self.set_interval(0.01, self.check)

    def check(self):
        plot = self.query_one("#loss", CurvePlot)
        drawn = plot._key is not None and any(0x2800 < ord(ch) < 0x2900 for ch in plot._text.plain)
        if drawn and "first" not in marks:
            marks["first"] = time.time()
            marks["first_cpu"] = time.process_time()
        full = (self.source.done and self.runs[0].detail != "preview"
                and plot._key[0] == tuple(r.version for r in self.runs))
        if drawn and full:
            marks["full"] = time.time()
            marks["full_cpu"] = time.process_time()
            marks["points"] = len(self.runs[0].loss)
            self.exit()

src = FileSource([Path(sys.argv[1])])
src.prepare()
make(src).run(headless=True, size=(120, 36))
src.close()
print(marks["first"], marks["full"], marks["first_cpu"], marks["full_cpu"],
      resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, marks["points"])
"""

PARSE = r"""
import itertools, json, sys, time
import msgspec, orjson
with open(sys.argv[1], "rb") as f:
    lines = list(itertools.islice(f, 200_000))
res = {"json": [], "orjson": [], "msgspec": []}
for _ in range(3):
    for name, loads in (("json", json.loads), ("orjson", orjson.loads), ("msgspec", msgspec.json.decode)):
        t = time.process_time()
        for raw in lines:
            loads(raw)
        res[name].append(time.process_time() - t)
print(min(res["json"]), min(res["orjson"]), min(res["msgspec"]), len(lines))
"""


def run(code: str, path: Path, root: Path = ROOT) -> tuple[float, list[float]]:
    env = dict(os.environ, PYTHONPATH=str(root) + os.pathsep + os.environ.get("PYTHONPATH", ""))
    script = Path(tempfile.gettempdir()) / f"bench_view_{os.getpid()}.py"  # a file: Textual resolves CSS by it
    script.write_text(code)
    t0 = time.time()
    out = subprocess.run([sys.executable, str(script), str(path)], capture_output=True, text=True, env=env,
                         timeout=600)
    script.unlink()
    if out.returncode:
        raise SystemExit(out.stderr)
    return t0, [float(x) for x in out.stdout.split()[-6:]]


def spread(xs: list[float], fmt: str = "{:.2f}") -> str:
    return f"median {fmt.format(statistics.median(xs))} (min {fmt.format(min(xs))}, max {fmt.format(max(xs))})"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--records", type=int, default=1_000_000)
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--path", default="/tmp/bench_view.jsonl")
    ap.add_argument("--code", action="append", default=[], metavar="DIR",
                    help="also measure the tui_trainer package found in DIR (interleaved)")
    ap.add_argument("--no-parse", action="store_true", help="skip the parser comparison")
    args = ap.parse_args()
    path = Path(args.path)
    marker = path.with_suffix(".n")
    if not (path.exists() and marker.exists() and marker.read_text() == str(args.records)):
        t = time.perf_counter()
        write_log(path, args.records)
        marker.write_text(str(args.records))
        print(f"wrote {path}: {args.records:,} train records in {time.perf_counter() - t:.1f} s")
    small = path.with_name(path.stem + "_small.jsonl")
    write_log(small, 100)
    size = path.stat().st_size
    print(f"log: {path}, {size / 1e6:.0f} MB, {args.records:,} train records; load avg {os.getloadavg()[0]:.1f} "
          f"on {os.cpu_count()} cores")
    roots = [("this tree", ROOT)] + [(d, Path(d).resolve()) for d in args.code]
    res: dict[str, dict[str, list[float]]] = {name: {} for name, _ in roots}

    def add(name: str, **kv: float) -> None:
        for k, v in kv.items():
            res[name].setdefault(k, []).append(v)

    for _ in range(args.repeat):
        for name, root in roots:
            w, c, rss, pts, bad = run(LOAD, path, root)[1][-5:]
            add(name, load_wall=w, load_cpu=c, load_rss=rss)
            t0, out = run(VIEW, path, root)
            t_first, t_full, c_first, c_full, rss, _ = out
            add(name, first=t_first - t0, full=t_full - t0, first_cpu=c_first, full_cpu=c_full, view_rss=rss)
            t0, out = run(VIEW, small, root)
            add(name, small_first=out[0] - t0, small_cpu=out[2], small_rss=out[4])
    labels = [
        ("load_wall", "load (read + parse + series), wall s", "{:.2f}"),
        ("load_cpu", "load, CPU s", "{:.2f}"),
        ("load_rss", "load, peak RSS MB", "{:.0f}"),
        ("first", "view: start to first plot, wall s", "{:.2f}"),
        ("first_cpu", "view: start to first plot, CPU s", "{:.2f}"),
        ("full", "view: start to full plot, wall s", "{:.2f}"),
        ("full_cpu", "view: start to full plot, CPU s", "{:.2f}"),
        ("view_rss", "view: peak RSS MB", "{:.0f}"),
        ("small_first", "view 100-line log: first plot, wall s", "{:.2f}"),
        ("small_cpu", "view 100-line log: first plot, CPU s", "{:.2f}"),
        ("small_rss", "view 100-line log: peak RSS MB", "{:.0f}"),
    ]
    for name, _ in roots:
        print(f"-- {name}")
        for key, label, fmt in labels:
            print(f"{label + ':':42s}{spread(res[name][key], fmt)}")
    if not args.no_parse:
        j, o, m, n = run(PARSE, path)[1][-4:]
        print(f"parse {int(n):,} lines, CPU s: json {j:.2f}, orjson {o:.2f}, msgspec {m:.2f}; "
              f"per line {j / n * 1e6:.2f} / {o / n * 1e6:.2f} / {m / n * 1e6:.2f} us")
    print(f"load avg now {os.getloadavg()[0]:.1f}")


if __name__ == "__main__":
    main()
