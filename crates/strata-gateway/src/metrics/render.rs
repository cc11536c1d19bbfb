//! `/metrics` in the Prometheus text format (0.0.4) or OpenMetrics 1.0, and the same figures as
//! JSON for the dashboard.
//!
//! The two text formats differ in a few places, all handled by one writer: OpenMetrics names a
//! counter family without its `_total` suffix (its samples keep it) and ends with `# EOF`.

use std::fmt::Write as _;
use std::sync::Arc;

use serde_json::{Value, json};

use super::instruments::{BUCKETS_NANOS, HistogramSnapshot};
use super::{METHODS, RATE_LIMIT_DECISIONS, RouteMetrics, STATUS_CLASSES, UPSTREAM_OUTCOMES, global};

/// The content type of the Prometheus text format.
pub const PROMETHEUS_TEXT: &str = "text/plain; version=0.0.4; charset=utf-8";
/// The content type of OpenMetrics.
pub const OPENMETRICS_TEXT: &str = "application/openmetrics-text; version=1.0.0; charset=utf-8";

/// One target of an upstream route, as a scrape sees it.
#[derive(Clone, Debug)]
pub struct TargetState {
    /// The route's name.
    pub route: String,
    /// The target's URL.
    pub target: String,
    /// Whether it gets traffic (neither ejected nor down by its health check).
    pub up: bool,
    /// Attempts by [`UPSTREAM_OUTCOMES`].
    pub outcomes: [u64; 5],
}

/// Counts kept outside the registry, given to a scrape by their owners.
#[derive(Clone, Debug, Default)]
pub struct Extra {
    /// Connections open on the public listeners.
    pub connections: Option<u64>,
    /// Spans exported and dropped by the trace exporter, when tracing is on.
    pub spans: Option<(u64, u64)>,
}

/// What one scrape reports: the current routes (in config order, then the unmatched requests)
/// and upstream targets, and the registry's process-wide counts.
pub struct Scrape {
    /// The routes' metrics.
    pub routes: Vec<Arc<RouteMetrics>>,
    /// The upstream targets.
    pub targets: Vec<TargetState>,
    /// Counts owned elsewhere.
    pub extra: Extra,
}

struct Writer {
    out: String,
    open_metrics: bool,
}

impl Writer {
    /// A family's `# HELP` and `# TYPE` lines. `name` is the sample name (counters end in `_total`).
    fn family(&mut self, name: &str, kind: &str, help: &str) {
        let family = if self.open_metrics && kind == "counter" { name.trim_end_matches("_total") } else { name };
        let _ = writeln!(self.out, "# HELP {family} {help}");
        let _ = writeln!(self.out, "# TYPE {family} {kind}");
        if self.open_metrics && family.ends_with("_seconds") {
            let _ = writeln!(self.out, "# UNIT {family} seconds");
        }
    }

    fn sample(&mut self, name: &str, labels: &[(&str, &str)], value: impl std::fmt::Display) {
        self.out.push_str(name);
        if !labels.is_empty() {
            self.out.push('{');
            for (i, (k, v)) in labels.iter().enumerate() {
                if i > 0 {
                    self.out.push(',');
                }
                self.out.push_str(k);
                self.out.push_str("=\"");
                escape_label(&mut self.out, v);
                self.out.push('"');
            }
            self.out.push('}');
        }
        let _ = writeln!(self.out, " {value}");
    }

    fn histogram(&mut self, name: &str, labels: &[(&str, &str)], h: &HistogramSnapshot) {
        let bucket = format!("{name}_bucket");
        for (i, count) in h.cumulative.iter().enumerate() {
            let le = BUCKETS_NANOS.get(i).map_or_else(|| "+Inf".to_string(), |&n| seconds(n));
            let mut with_le: Vec<(&str, &str)> = labels.to_vec();
            with_le.push(("le", &le));
            self.sample(&bucket, &with_le, count);
        }
        self.sample(&format!("{name}_sum"), labels, seconds(h.sum_nanos));
        self.sample(&format!("{name}_count"), labels, h.count());
    }
}

/// Nanoseconds as seconds, without float noise (`0.0025`, `1`).
fn seconds(nanos: u64) -> String {
    let whole = nanos / 1_000_000_000;
    let frac = nanos % 1_000_000_000;
    if frac == 0 {
        return whole.to_string();
    }
    let digits = format!("{frac:09}");
    format!("{whole}.{}", digits.trim_end_matches('0'))
}

/// A label value with `\`, `"` and newlines escaped, as both formats require.
fn escape_label(out: &mut String, value: &str) {
    for c in value.chars() {
        match c {
            '\\' => out.push_str("\\\\"),
            '"' => out.push_str("\\\""),
            '\n' => out.push_str("\\n"),
            c => out.push(c),
        }
    }
}

/// `/metrics`: every family, in the Prometheus text format or OpenMetrics.
pub fn text(scrape: &Scrape, open_metrics: bool) -> String {
    let registry = global();
    let mut w = Writer { out: String::with_capacity(16 * 1024), open_metrics };

    w.family("strata_build_info", "gauge", "The running strata's version (always 1).");
    w.sample("strata_build_info", &[("version", env!("CARGO_PKG_VERSION"))], 1);

    w.family("strata_requests_total", "counter", "Requests answered, by route, method and status class.");
    for route in &scrape.routes {
        let counts = route.requests.values();
        for (m, method) in METHODS.iter().enumerate() {
            for (c, class) in STATUS_CLASSES.iter().enumerate() {
                let n = counts[m * STATUS_CLASSES.len() + c];
                if n > 0 {
                    w.sample(
                        "strata_requests_total",
                        &[("route", &route.name), ("method", method), ("status_class", class)],
                        n,
                    );
                }
            }
        }
    }

    w.family(
        "strata_request_duration_seconds",
        "histogram",
        "Time from a request's arrival to its response head, every layer included, by route.",
    );
    for route in &scrape.routes {
        w.histogram("strata_request_duration_seconds", &[("route", &route.name)], &route.duration.snapshot());
    }

    w.family(
        "strata_layer_duration_seconds",
        "histogram",
        "Time spent in each layer itself, the layers inside it excluded (as Server-Timing), by route and \
         layer; the target is the layer `app`.",
    );
    for route in &scrape.routes {
        for layer in &route.layers {
            let labels = [("route", route.name.as_str()), ("layer", layer.name.as_str())];
            w.histogram("strata_layer_duration_seconds", &labels, &layer.duration.snapshot());
        }
    }

    w.family(
        "strata_layer_responses_total",
        "counter",
        "Responses a layer gave by itself without calling the layers inside it (for `app`: every \
         response that reached the target), by route, layer and status class.",
    );
    for route in &scrape.routes {
        for layer in &route.layers {
            for (c, n) in layer.answered.values().iter().enumerate() {
                if *n > 0 {
                    let labels = [
                        ("route", route.name.as_str()),
                        ("layer", layer.name.as_str()),
                        ("status_class", STATUS_CLASSES[c]),
                    ];
                    w.sample("strata_layer_responses_total", &labels, n);
                }
            }
        }
    }

    w.family("strata_requests_in_flight", "gauge", "Requests between their arrival and their response head.");
    w.sample("strata_requests_in_flight", &[], registry.in_flight.get().max(0));

    if let Some(open) = scrape.extra.connections {
        w.family("strata_connections_open", "gauge", "Client connections open on the public listeners.");
        w.sample("strata_connections_open", &[], open);
    }

    w.family(
        "strata_upstream_requests_total",
        "counter",
        "Attempts on upstream targets (a retried request counts once per attempt), by route, target and outcome.",
    );
    for t in &scrape.targets {
        for (o, outcome) in UPSTREAM_OUTCOMES.iter().enumerate() {
            let labels = [("route", t.route.as_str()), ("target", t.target.as_str()), ("outcome", outcome)];
            w.sample("strata_upstream_requests_total", &labels, t.outcomes[o]);
        }
    }
    w.family(
        "strata_upstream_up",
        "gauge",
        "1 when an upstream target gets traffic, 0 when it is ejected or down by its health check.",
    );
    for t in &scrape.targets {
        w.sample("strata_upstream_up", &[("route", &t.route), ("target", &t.target)], u8::from(t.up));
    }

    w.family("strata_ratelimit_decisions_total", "counter", "Rate-limit decisions, by layer and decision.");
    for (layer, counts) in registry.rate_limit_decisions() {
        for (d, decision) in RATE_LIMIT_DECISIONS.iter().enumerate() {
            w.sample("strata_ratelimit_decisions_total", &[("layer", &layer), ("decision", decision)], counts[d]);
        }
    }
    w.family(
        "strata_auth_failures_total",
        "counter",
        "Requests an authentication layer refused (401 or 403), by layer.",
    );
    for (layer, n) in registry.auth_failure_counts() {
        w.sample("strata_auth_failures_total", &[("layer", &layer)], n);
    }

    w.family("strata_config_reloads_total", "counter", "Config reloads, by result.");
    let reloads = registry.reloads.values();
    w.sample("strata_config_reloads_total", &[("result", "success")], reloads[0]);
    w.sample("strata_config_reloads_total", &[("result", "failure")], reloads[1]);

    if let Some((exported, dropped)) = scrape.extra.spans {
        w.family("strata_trace_spans_exported_total", "counter", "Spans sent to the OTLP collector.");
        w.sample("strata_trace_spans_exported_total", &[], exported);
        w.family(
            "strata_trace_spans_dropped_total",
            "counter",
            "Spans dropped rather than delay requests (queue full, collector down or slow).",
        );
        w.sample("strata_trace_spans_dropped_total", &[], dropped);
    }

    process(&mut w);
    if open_metrics {
        w.out.push_str("# EOF\n");
    }
    w.out
}

/// The standard `process_*` families, from `/proc/self` (Linux).
fn process(w: &mut Writer) {
    let p = ProcessStats::read();
    if let Some(cpu) = p.cpu_seconds {
        w.family("process_cpu_seconds_total", "counter", "User and system CPU time spent, in seconds.");
        w.sample("process_cpu_seconds_total", &[], cpu);
    }
    if let Some(rss) = p.resident_bytes {
        w.family("process_resident_memory_bytes", "gauge", "Resident memory size, in bytes.");
        w.sample("process_resident_memory_bytes", &[], rss);
    }
    if let Some(fds) = p.open_fds {
        w.family("process_open_fds", "gauge", "Open file descriptors.");
        w.sample("process_open_fds", &[], fds);
    }
    if let Some(max) = p.max_fds {
        w.family("process_max_fds", "gauge", "The limit on open file descriptors.");
        w.sample("process_max_fds", &[], max);
    }
    let started = global().started.duration_since(std::time::SystemTime::UNIX_EPOCH).map_or(0, |d| d.as_secs());
    w.family("process_start_time_seconds", "gauge", "When the process started, in seconds since the epoch.");
    w.sample("process_start_time_seconds", &[], started);
}

/// The process's own figures; `None` where the system does not say.
#[derive(Clone, Copy, Debug, Default)]
pub struct ProcessStats {
    /// User + system CPU time.
    pub cpu_seconds: Option<f64>,
    /// Resident set size.
    pub resident_bytes: Option<u64>,
    /// Open file descriptors.
    pub open_fds: Option<u64>,
    /// The soft limit on them.
    pub max_fds: Option<u64>,
}

impl ProcessStats {
    /// Reads `/proc/self` (nothing elsewhere than Linux).
    pub fn read() -> ProcessStats {
        let mut stats = ProcessStats::default();
        // Both /proc figures are in units the kernel fixes: clock ticks (USER_HZ, 100 on every
        // Linux port) and pages (4 KiB here; a larger page size would under-report).
        const TICKS_PER_SECOND: f64 = 100.0;
        const PAGE: u64 = 4096;
        if let Ok(stat) = std::fs::read_to_string("/proc/self/stat") {
            // The command name may hold spaces: fields are counted after its closing parenthesis.
            if let Some(rest) = stat.rsplit_once(')').map(|(_, r)| r) {
                let fields: Vec<&str> = rest.split_whitespace().collect();
                // utime and stime are fields 14 and 15 of the line, 12 and 13 after the name.
                if let (Some(u), Some(s)) = (fields.get(11), fields.get(12))
                    && let (Ok(u), Ok(s)) = (u.parse::<u64>(), s.parse::<u64>())
                {
                    #[allow(clippy::cast_precision_loss)]
                    let ticks = (u + s) as f64;
                    stats.cpu_seconds = Some(ticks / TICKS_PER_SECOND);
                }
            }
        }
        if let Ok(statm) = std::fs::read_to_string("/proc/self/statm")
            && let Some(pages) = statm.split_whitespace().nth(1).and_then(|p| p.parse::<u64>().ok())
        {
            stats.resident_bytes = Some(pages * PAGE);
        }
        if let Ok(dir) = std::fs::read_dir("/proc/self/fd") {
            stats.open_fds = Some(dir.count() as u64);
        }
        stats.max_fds = crate::limits::descriptor_limit();
        stats
    }
}

/// Counts as a JSON object keyed by their names (`{"2xx": 5, …}`).
fn named_counts<const N: usize>(names: &[&str; N], counts: [u64; N]) -> Value {
    Value::Object(names.iter().zip(counts).map(|(name, n)| (name.to_string(), json!(n))).collect())
}

/// The dashboard's figures: the same counts as `/metrics`, shaped for a page that polls them.
pub fn json(scrape: &Scrape) -> Value {
    let registry = global();
    let histogram = |h: &HistogramSnapshot| {
        json!({
            "count": h.count(),
            "sum_seconds": h.sum_nanos as f64 / 1e9,
            "cumulative": h.cumulative.to_vec(),
        })
    };
    let routes: Vec<Value> = scrape
        .routes
        .iter()
        .map(|r| {
            let by_class = r.by_class();
            json!({
                "name": r.name,
                "requests": by_class.iter().sum::<u64>(),
                "by_class": named_counts(&STATUS_CLASSES, by_class),
                "duration": histogram(&r.duration.snapshot()),
                "layers": r.layers.iter().map(|l| {
                    let answered = l.answered.values();
                    json!({
                        "name": l.name,
                        "kind": l.kind,
                        "duration": histogram(&l.duration.snapshot()),
                        "answered": named_counts(&STATUS_CLASSES, answered),
                    })
                }).collect::<Vec<_>>(),
            })
        })
        .collect();
    let targets: Vec<Value> = scrape
        .targets
        .iter()
        .map(|t| {
            json!({
                "route": t.route,
                "target": t.target,
                "up": t.up,
                "outcomes": named_counts(&UPSTREAM_OUTCOMES, t.outcomes),
            })
        })
        .collect();
    let reloads = registry.reloads.values();
    let process = ProcessStats::read();
    json!({
        "version": env!("CARGO_PKG_VERSION"),
        "uptime_seconds": registry.started.elapsed().map_or(0.0, |d| d.as_secs_f64()),
        "bucket_bounds_seconds": BUCKETS_NANOS.iter().map(|&n| n as f64 / 1e9).collect::<Vec<_>>(),
        "in_flight": registry.in_flight.get().max(0),
        "connections": scrape.extra.connections,
        "routes": routes,
        "targets": targets,
        "rate_limits": registry.rate_limit_decisions().into_iter().map(|(layer, c)| json!({
            "layer": layer, "allowed": c[0], "limited": c[1], "error": c[2],
        })).collect::<Vec<_>>(),
        "auth_failures": registry.auth_failure_counts().into_iter().map(|(layer, n)| json!({"layer": layer, "failures": n})).collect::<Vec<_>>(),
        "reloads": {"success": reloads[0], "failure": reloads[1], "last_success_unix": registry.last_reload.load(std::sync::atomic::Ordering::Relaxed)},
        "spans": scrape.extra.spans.map(|(exported, dropped)| json!({"exported": exported, "dropped": dropped})),
        "process": {
            "cpu_seconds": process.cpu_seconds,
            "resident_bytes": process.resident_bytes,
            "open_fds": process.open_fds,
        },
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn seconds_are_written_without_float_noise() {
        assert_eq!(seconds(1_000), "0.000001");
        assert_eq!(seconds(2_500_000), "0.0025");
        assert_eq!(seconds(1_000_000_000), "1");
        assert_eq!(seconds(10_000_000_000), "10");
    }

    #[test]
    fn label_values_are_escaped() {
        let mut out = String::new();
        escape_label(&mut out, "a\"b\\c\nd");
        assert_eq!(out, "a\\\"b\\\\c\\nd");
    }

    #[test]
    fn both_formats_declare_each_family_once_and_openmetrics_ends_with_eof() {
        let scrape = Scrape { routes: Vec::new(), targets: Vec::new(), extra: Extra::default() };
        let prometheus = text(&scrape, false);
        assert!(prometheus.contains("# TYPE strata_requests_total counter\n"), "{prometheus}");
        assert!(!prometheus.contains("# EOF"));
        let open = text(&scrape, true);
        assert!(open.contains("# TYPE strata_requests counter\n"), "{open}");
        assert!(open.contains(
            "# TYPE strata_request_duration_seconds histogram\n# UNIT strata_request_duration_seconds seconds\n"
        ));
        assert!(open.ends_with("# EOF\n"));
        for body in [&prometheus, &open] {
            let types: Vec<&str> = body.lines().filter(|l| l.starts_with("# TYPE ")).collect();
            let mut unique = types.clone();
            unique.sort_unstable();
            unique.dedup();
            assert_eq!(types.len(), unique.len(), "a family declared twice");
        }
    }
}
