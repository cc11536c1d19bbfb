#!/usr/bin/env python3
"""Draws the load scripts' CSV files as SVG charts (Python 3 standard library only).

The CSV files are the ones bench/proxy-load.sh, bench/load.sh and bench/static-load.sh append one
row to per measured round (bench/lib.sh's csv_row):

    date,script,contender,round,duration_s,connections,req_per_s,p99_ms,cpu_us_per_req,loadavg

For each CSV file, SCRIPT being its rows' script name:
    bench-SCRIPT-throughput.svg  median req/s per contender (bars) and median p99 beside it
    bench-SCRIPT-cpu.svg         median CPU time per request per contender (when measured)
and, from a small CSV `layer,ns` (bench/layer-cost.csv by default):
    bench-layers.svg             the cost of each middleware layer, ns per request

Only the last run of each file is drawn unless --all is given: reading back from the end, the run
is the rows before a (contender, round) pair repeats. The machine (CPU model and core count) is read
from /proc/cpuinfo unless --machine says it.

Usage:
    python3 bench/plot.py                     # target/bench/*.csv -> docs/img/bench-*.svg
    python3 bench/plot.py target/bench/proxy-load.csv --out-dir /tmp/plots --machine "laptop"
"""

import argparse
import csv
import math
import os
import statistics
import sys
from xml.sax.saxutils import escape

WIDTH = 700
ROW = 24
FONT = 'font-family="DejaVu Sans, Helvetica, Arial, sans-serif"'
# Bar colours by family, so that strata's contenders stand out from the peers.
FAMILY_COLOURS = [
    ("strata", "#d9480f"),
    ("nginx", "#2b8a3e"),
    ("haproxy", "#1864ab"),
    ("caddy", "#862e9c"),
    ("bare-hyper", "#5c677d"),
    ("axum", "#5c677d"),
]
DEFAULT_COLOUR = "#5c677d"
FIELDS = ["date", "script", "contender", "round", "duration_s", "connections",
          "req_per_s", "p99_ms", "cpu_us_per_req", "loadavg"]


def colour(name):
    """The bar colour of a contender, by the family its name starts with."""
    for prefix, value in FAMILY_COLOURS:
        if name.startswith(prefix):
            return value
    return DEFAULT_COLOUR


def number(text):
    """A CSV cell as a float, or None when empty or not a number."""
    try:
        value = float(text)
    except (TypeError, ValueError):
        return None
    return value if math.isfinite(value) else None


def machine_description():
    """'MODEL, N cores' from /proc/cpuinfo and the cores this process may run on."""
    model = "unknown CPU"
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as cpuinfo:
            for line in cpuinfo:
                if line.startswith("model name"):
                    model = " ".join(line.split(":", 1)[1].split())
                    break
    except OSError:
        pass
    try:
        cores = len(os.sched_getaffinity(0))
    except AttributeError:
        cores = os.cpu_count() or 0
    return f"{model}, {cores} cores"


def read_rows(path):
    """The rows of a bench CSV file, as dicts; the header must hold the expected columns."""
    with open(path, newline="", encoding="utf-8") as file:
        reader = csv.DictReader(file)
        missing = [f for f in FIELDS if f not in (reader.fieldnames or [])]
        if missing:
            raise ValueError(f"{path}: missing columns {', '.join(missing)}")
        return list(reader)


def last_run(rows):
    """The rows of the last run: from the end back to the first (contender, round) seen twice."""
    seen = set()
    start = len(rows)
    for index in range(len(rows) - 1, -1, -1):
        key = (rows[index]["script"], rows[index]["contender"], rows[index]["round"])
        if key in seen:
            break
        seen.add(key)
        start = index
    return rows[start:]


def summarise(rows):
    """Per contender, in first-run order: the rounds and the medians of req/s, p99 and CPU."""
    order = []
    groups = {}
    for row in rows:
        name = row["contender"]
        if name not in groups:
            order.append(name)
            groups[name] = {"req_per_s": [], "p99_ms": [], "cpu_us_per_req": []}
        for field in groups[name]:
            value = number(row[field])
            if value is not None:
                groups[name][field].append(value)
    summary = []
    for name in order:
        values = groups[name]
        summary.append({
            "contender": name,
            "rounds": len(values["req_per_s"]),
            "req_per_s": statistics.median(values["req_per_s"]) if values["req_per_s"] else None,
            "p99_ms": statistics.median(values["p99_ms"]) if values["p99_ms"] else None,
            "cpu_us_per_req": (statistics.median(values["cpu_us_per_req"])
                               if values["cpu_us_per_req"] else None),
        })
    return summary


def run_description(rows):
    """One line saying when and how the rows were measured."""
    dates = sorted(r["date"] for r in rows if r["date"])
    durations = sorted({r["duration_s"] for r in rows if r["duration_s"]})
    connections = sorted({r["connections"] for r in rows if r["connections"]})
    loads = [v for v in (number(r["loadavg"]) for r in rows) if v is not None]
    rounds = max((int(number(r["round"]) or 0) for r in rows), default=0)
    parts = []
    if dates:
        day = dates[0][:10]
        first, last = dates[0][11:16], dates[-1][11:16]
        span = (f"{first}–{last} UTC" if first != last else f"{first} UTC") if len(dates[0]) >= 16 else ""
        parts.append(f"{day} {span}".strip())
    parts.append(f"{rounds} round(s) × {'/'.join(durations)} s, {'/'.join(connections)} connections")
    if loads:
        parts.append(f"load average {min(loads):.1f}–{max(loads):.1f}")
    return "; ".join(parts)


def nice_step(span, ticks=5):
    """A round tick step (1, 2 or 5 times a power of ten) giving about `ticks` ticks over span."""
    if span <= 0:
        return 1.0
    raw = span / ticks
    power = 10 ** math.floor(math.log10(raw))
    for factor in (1, 2, 5, 10):
        if raw <= factor * power:
            return factor * power
    return 10 * power


def format_value(value):
    """A figure with as many digits as it deserves: 12,345 / 123 / 12.3 / 1.23."""
    if value >= 1000:
        return f"{value:,.0f}"
    if value >= 100:
        return f"{value:.0f}"
    if value >= 10:
        return f"{value:.1f}"
    return f"{value:.2f}"


def format_tick(value, step):
    """A tick label with the decimals its step needs: 0, 10,000, 20,000 / 0, 2.5, 5.0."""
    decimals = max(0, -math.floor(math.log10(step))) if step > 0 else 0
    if round(step * 10**decimals, 9) % 1:
        decimals += 1
    return f"{value:,.{decimals}f}"


def format_ns(value):
    """A duration in nanoseconds, in the unit that reads best."""
    if value >= 1e6:
        return f"{value / 1e6:.3g} ms"
    if value >= 1e3:
        return f"{value / 1e3:.3g} µs"
    return f"{value:.0f} ns"


class Svg:
    """A small SVG document built element by element."""

    def __init__(self, height):
        self.height = height
        self.parts = []

    def text(self, x, y, content, size=12, anchor="start", weight="normal", fill="#212529"):
        self.parts.append(
            f'<text x="{x:.1f}" y="{y:.1f}" font-size="{size}" text-anchor="{anchor}" '
            f'font-weight="{weight}" fill="{fill}">{escape(str(content))}</text>')

    def line(self, x1, y1, x2, y2, stroke="#adb5bd", width=1, dash=None):
        dashes = f' stroke-dasharray="{dash}"' if dash else ""
        self.parts.append(
            f'<line x1="{x1:.1f}" y1="{y1:.1f}" x2="{x2:.1f}" y2="{y2:.1f}" '
            f'stroke="{stroke}" stroke-width="{width}"{dashes}/>')

    def rect(self, x, y, width, height, fill, title=None):
        tooltip = f"<title>{escape(title)}</title>" if title else ""
        self.parts.append(
            f'<rect x="{x:.1f}" y="{y:.1f}" width="{max(width, 0):.1f}" height="{height:.1f}" '
            f'fill="{fill}">{tooltip}</rect>')

    def render(self):
        body = "\n".join(self.parts)
        return (f'<svg xmlns="http://www.w3.org/2000/svg" width="{WIDTH}" height="{self.height}" '
                f'viewBox="0 0 {WIDTH} {self.height}" {FONT}>\n'
                f'<rect width="{WIDTH}" height="{self.height}" fill="#ffffff"/>\n{body}\n</svg>\n')


def header(svg, title, subtitles):
    """The title and its smaller lines below; returns the y where the chart may start."""
    svg.text(WIDTH / 2, 22, title, size=15, anchor="middle", weight="bold")
    y = 40
    for line in subtitles:
        svg.text(WIDTH / 2, y, line, size=11, anchor="middle", fill="#495057")
        y += 15
    return y + 8


def bar_panel(svg, left, right, top, names, values, axis_label, log=False, formatter=format_value):
    """Horizontal bars for values (None: no bar, 'n/a') between x=left and x=right, one row per
    name starting at y=top, with a tick axis and its label underneath. Returns the y below it."""
    present = [v for v in values if v is not None and v > 0]
    bottom = top + ROW * len(names)
    if not present:
        svg.text((left + right) / 2, top + 14, "not measured", anchor="middle", fill="#868e96")
        return bottom + 30
    # Room on the right of the longest bar for its figure.
    width = (right - left) * 0.82
    if log:
        low = 10 ** math.floor(math.log10(min(present)))
        high = 10 ** math.ceil(math.log10(max(present)))
        if high <= low:
            high = low * 10

        def scale(v):
            return left + width * (math.log10(v) - math.log10(low)) / (math.log10(high) - math.log10(low))
        ticks = []
        t = low
        while t <= high * 1.0001:
            ticks.append(t)
            t *= 10
    else:
        step = nice_step(max(present), 4)
        high = step * math.ceil(max(present) / step)

        def scale(v):
            return left + width * v / high
        ticks = [step * i for i in range(int(round(high / step)) + 1)]
    for t in ticks:
        x = scale(t)
        svg.line(x, top - 4, x, bottom, stroke="#dee2e6", dash="3,3" if t else None)
        svg.text(x, bottom + 14, formatter(t) if log else format_tick(t, step), size=10, anchor="middle",
                 fill="#495057")
    svg.line(left, bottom, left + width, bottom, stroke="#868e96")
    svg.line(left, top - 4, left, bottom, stroke="#868e96")
    for index, (name, value) in enumerate(zip(names, values)):
        y = top + ROW * index
        if value is None or value <= 0:
            svg.text(left + 4, y + ROW / 2 + 4, "n/a", size=11, fill="#868e96")
            continue
        end = scale(value)
        svg.rect(left, y + 4, end - left, ROW - 8, colour(name), f"{name}: {formatter(value)}")
        svg.text(end + 4, y + ROW / 2 + 4, formatter(value), size=11)
    svg.text(left + width / 2, bottom + 30, axis_label, size=11, anchor="middle", weight="bold")
    return bottom + 38


def labels(svg, top, names, right):
    """The contender names, right-aligned at x=right, one per row."""
    for index, name in enumerate(names):
        svg.text(right, top + ROW * index + ROW / 2 + 4, name, size=12, anchor="end")


def contender_chart(summary, title, subtitles, label_right):
    """A chart with one row per contender: its header and the names, right-aligned at label_right.
    Returns the Svg, the y of the first row and the names."""
    names = [s["contender"] for s in summary]
    svg = Svg(0)
    top = header(svg, title, subtitles)
    labels(svg, top, names, label_right)
    return svg, top, names


def throughput_chart(script, summary, machine, description):
    """Median req/s (left panel) and median p99 (right panel) per contender."""
    label_right = 150
    svg, top, names = contender_chart(summary, f"{script}: throughput and p99 latency per contender (medians)",
                                      [machine, description], label_right)
    bottom = bar_panel(svg, label_right + 8, 470, top, names, [s["req_per_s"] for s in summary],
                       "requests per second (higher is better)")
    bar_panel(svg, 490, WIDTH - 10, top, names, [s["p99_ms"] for s in summary],
              "p99 latency, ms (lower is better)")
    svg.height = int(bottom + 8)
    return svg.render()


def cpu_chart(script, summary, machine, description):
    """Median CPU time per request per contender."""
    label_right = 170
    svg, top, names = contender_chart(summary, f"{script}: CPU time per request (medians, all the server's processes)",
                                      [machine, description], label_right)
    bottom = bar_panel(svg, label_right + 8, WIDTH - 10, top, names,
                       [s["cpu_us_per_req"] for s in summary],
                       "µs of CPU per request, user + system, from /proc/PID/stat (lower is better)")
    svg.height = int(bottom + 8)
    return svg.render()


def read_layers(path):
    """(layer, ns) pairs from a CSV file with the columns layer,ns."""
    with open(path, newline="", encoding="utf-8") as file:
        reader = csv.DictReader(file)
        if not {"layer", "ns"} <= set(reader.fieldnames or []):
            raise ValueError(f"{path}: expected the columns layer,ns")
        layers = []
        for row in reader:
            value = number(row["ns"])
            if row["layer"] and value is not None:
                layers.append((row["layer"], value))
        return layers


def layers_chart(layers, machine, source):
    """The cost of each layer, on a log axis when the figures span more than two decades."""
    names = [name for name, _ in layers]
    values = [value for _, value in layers]
    positive = [v for v in values if v > 0]
    log = bool(positive) and max(positive) / min(positive) > 100
    svg = Svg(0)
    top = header(svg, "strata: cost of each middleware layer",
                 [machine, "one request through a stack holding the layer minus the same stack without it",
                  f"criterion medians, from {source}"])
    label_right = 280
    for index, name in enumerate(names):
        svg.text(label_right, top + ROW * index + ROW / 2 + 4, name, size=11, anchor="end")
    axis = "ns per request" + (" (log scale)" if log else "") + " (lower is better)"
    # Every layer in strata's colour: they are all strata's.
    bottom = bar_panel(svg, label_right + 8, WIDTH - 10, top, ["strata"] * len(names), values, axis,
                       log=log, formatter=format_ns)
    svg.height = int(bottom + 8)
    return svg.render()


def write(path, content):
    os.makedirs(os.path.dirname(path) or ".", exist_ok=True)
    with open(path, "w", encoding="utf-8") as file:
        file.write(content)
    print(f"wrote {path}")


def main(argv=None):
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("csv", nargs="*",
                        help="bench CSV files (default: target/bench/{proxy-load,load,static-load}.csv that exist)")
    parser.add_argument("--out-dir", default=os.path.join(root, "docs", "img"),
                        help="where the SVG files go (default docs/img)")
    parser.add_argument("--layers", default=os.path.join(root, "bench", "layer-cost.csv"),
                        help="CSV file layer,ns for bench-layers.svg (default bench/layer-cost.csv; '' for none)")
    parser.add_argument("--machine", help="the machine named in the titles (default: from /proc/cpuinfo)")
    parser.add_argument("--all", action="store_true", help="every row of each file, not only its last run")
    args = parser.parse_args(argv)

    machine = "machine: " + (args.machine or machine_description())
    paths = args.csv or [p for p in (os.path.join(root, "target", "bench", f"{name}.csv")
                                     for name in ("proxy-load", "load", "static-load")) if os.path.exists(p)]
    if not paths and not args.layers:
        parser.error("no CSV files: run a bench script first or name the files")
    for path in paths:
        rows = read_rows(path)
        if not args.all:
            rows = last_run(rows)
        if not rows:
            print(f"{path}: no rows, skipped", file=sys.stderr)
            continue
        script = rows[-1]["script"] or os.path.splitext(os.path.basename(path))[0]
        summary = summarise(rows)
        description = run_description(rows)
        write(os.path.join(args.out_dir, f"bench-{script}-throughput.svg"),
              throughput_chart(script, summary, machine, description))
        if any(s["cpu_us_per_req"] for s in summary):
            write(os.path.join(args.out_dir, f"bench-{script}-cpu.svg"),
                  cpu_chart(script, summary, machine, description))
    if args.layers:
        if os.path.exists(args.layers):
            source = os.path.relpath(args.layers, root) if args.layers.startswith(root) else args.layers
            write(os.path.join(args.out_dir, "bench-layers.svg"),
                  layers_chart(read_layers(args.layers), machine, source))
        elif args.layers != parser.get_default("layers"):
            parser.error(f"{args.layers}: no such file")
    return 0


if __name__ == "__main__":
    sys.exit(main())
