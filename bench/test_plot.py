"""Tests of bench/plot.py: python3 -m unittest discover -s bench -p 'test_plot.py'"""

import contextlib
import io
import os
import tempfile
import unittest
import xml.etree.ElementTree as ElementTree

import plot

SVG = "{http://www.w3.org/2000/svg}"
HEADER = "date,script,contender,round,duration_s,connections,req_per_s,p99_ms,cpu_us_per_req,loadavg\n"


def row(contender, round_, rps, p99="1.0", cpu="50.0", date="2026-11-28T08:00:00Z", script="proxy-load"):
    return f"{date},{script},{contender},{round_},4,32,{rps},{p99},{cpu},1.5\n"


def bar_titles(svg_text):
    """The tooltips of the bars of an SVG document, which also proves it is well-formed XML."""
    root = ElementTree.fromstring(svg_text)
    return [title.text for title in root.iter(f"{SVG}title")]


class PlotTests(unittest.TestCase):
    def setUp(self):
        self.dir = tempfile.TemporaryDirectory()
        self.addCleanup(self.dir.cleanup)

    def write_csv(self, name, lines):
        path = os.path.join(self.dir.name, name)
        with open(path, "w", encoding="utf-8") as file:
            file.write(HEADER + "".join(lines))
        return path

    def run_main(self, *args):
        with contextlib.redirect_stdout(io.StringIO()):
            return plot.main(list(args))

    def test_last_run_stops_where_a_contender_and_round_repeat(self):
        path = self.write_csv("p.csv", [
            row("strata", 1, 100), row("nginx-bare", 1, 200),
            row("strata", 1, 300), row("nginx-bare", 1, 400), row("nginx-bare", 2, 500), row("strata", 2, 600),
        ])
        rows = plot.last_run(plot.read_rows(path))
        self.assertEqual([r["req_per_s"] for r in rows], ["300", "400", "500", "600"])

    def test_summary_takes_medians_and_keeps_the_first_order(self):
        rows = plot.read_rows(self.write_csv("p.csv", [
            row("strata", 1, 100, p99="2", cpu="10"), row("caddy", 1, 50, p99="-", cpu=""),
            row("caddy", 2, 70, p99="9", cpu=""), row("strata", 2, 300, p99="4", cpu="30"),
            row("strata", 3, 200, p99="3", cpu="20"),
        ]))
        summary = plot.summarise(rows)
        self.assertEqual([s["contender"] for s in summary], ["strata", "caddy"])
        self.assertEqual((summary[0]["req_per_s"], summary[0]["p99_ms"], summary[0]["cpu_us_per_req"]),
                         (200, 3, 20))
        self.assertEqual((summary[1]["rounds"], summary[1]["req_per_s"], summary[1]["p99_ms"]), (2, 60, 9))
        self.assertIsNone(summary[1]["cpu_us_per_req"])

    def test_a_csv_without_the_columns_is_refused(self):
        path = os.path.join(self.dir.name, "bad.csv")
        with open(path, "w", encoding="utf-8") as file:
            file.write("contender,req_per_s\nstrata,1\n")
        with self.assertRaises(ValueError):
            plot.read_rows(path)

    def test_main_draws_throughput_and_cpu_of_the_last_run_and_the_layers(self):
        csv_path = self.write_csv("proxy-load.csv", [
            row("strata", 1, 1111), row("strata", 1, 18543, p99="4.32", cpu="61.0"),
            row("haproxy-bare", 1, 22487, p99="8.89", cpu="39.5"),
        ])
        layers = os.path.join(self.dir.name, "layers.csv")
        with open(layers, "w", encoding="utf-8") as file:
            file.write("layer,ns\nip_filter,235\njwt RS256,329425\n")
        out = os.path.join(self.dir.name, "img")
        self.assertEqual(self.run_main(csv_path, "--out-dir", out, "--layers", layers, "--machine", "test box"), 0)
        self.assertEqual(sorted(os.listdir(out)),
                         ["bench-layers.svg", "bench-proxy-load-cpu.svg", "bench-proxy-load-throughput.svg"])
        with open(os.path.join(out, "bench-proxy-load-throughput.svg"), encoding="utf-8") as file:
            throughput = file.read()
        # The earlier run's 1111 req/s is not drawn; req/s and p99 bars for both contenders are.
        self.assertEqual(bar_titles(throughput),
                         ["strata: 18,543", "haproxy-bare: 22,487", "strata: 4.32", "haproxy-bare: 8.89"])
        self.assertIn("machine: test box", throughput)
        self.assertIn('width="700"', throughput)
        with open(os.path.join(out, "bench-proxy-load-cpu.svg"), encoding="utf-8") as file:
            self.assertEqual(bar_titles(file.read()), ["strata: 61.0", "haproxy-bare: 39.5"])
        with open(os.path.join(out, "bench-layers.svg"), encoding="utf-8") as file:
            layers_svg = file.read()
        self.assertEqual(bar_titles(layers_svg), ["strata: 235 ns", "strata: 329 µs"])
        # Three decades apart: a log axis, said on the axis.
        self.assertIn("log scale", layers_svg)

    def test_no_cpu_chart_when_no_round_measured_cpu(self):
        csv_path = self.write_csv("load.csv", [row("strata-empty", 1, 100, cpu="", script="load")])
        out = os.path.join(self.dir.name, "img")
        self.run_main(csv_path, "--out-dir", out, "--layers", "")
        self.assertEqual(os.listdir(out), ["bench-load-throughput.svg"])

    def test_names_are_escaped(self):
        svg = plot.throughput_chart("x", [{"contender": "a<b&c", "rounds": 1, "req_per_s": 5.0, "p99_ms": None,
                                           "cpu_us_per_req": None}], "m", "d")
        self.assertEqual(bar_titles(svg), ["a<b&c: 5.00"])

    def test_ticks_read_as_round_numbers(self):
        self.assertEqual(plot.format_tick(20000, 10000), "20,000")
        self.assertEqual(plot.format_tick(7.5, 2.5), "7.5")
        self.assertEqual(plot.format_tick(0.6, 0.2), "0.6")


if __name__ == "__main__":
    unittest.main()
