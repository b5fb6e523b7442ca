//! Renders merged stats the way Envoy's admin does: `/stats` text
//! (`name: value`), `/stats?format=json`, and `/stats/prometheus`.

use std::collections::BTreeMap;
use std::fmt::Write;

use super::{DEFAULT_BUCKETS, HistogramValue, MergedStat, SUPPORTED_QUANTILES, Value};

/// `name: value`, one per line, in the order given (sorted by name). A
/// histogram is `name: P0(interval,cumulative) P25(...) ... P100(...)`, or
/// `name: No recorded values` before its first sample.
pub fn text<'a>(stats: impl IntoIterator<Item = &'a MergedStat>) -> String {
    let mut out = String::new();
    for s in stats {
        match &s.value {
            Value::Histogram(h) => {
                let _ = writeln!(out, "{}: {}", s.key.name, quantile_summary(h));
            }
            v => {
                let _ = writeln!(out, "{}: {}", s.key.name, v.as_i128());
            }
        }
    }
    out
}

/// Envoy's `ParentHistogramImpl::quantileSummary`.
fn quantile_summary(h: &HistogramValue) -> String {
    if !h.used() {
        return "No recorded values".to_string();
    }
    let mut out = String::new();
    for (i, p) in SUPPORTED_QUANTILES.iter().enumerate() {
        if i > 0 {
            out.push(' ');
        }
        let _ = write!(
            out,
            "P{p}({},{})",
            text_number(h.interval.percentile(*p)),
            text_number(h.cumulative.percentile(*p))
        );
    }
    out
}

/// A quantile as Envoy's `fmt` prints a double: `nan` without samples, `0`,
/// `1.05`.
fn text_number(v: Option<f64>) -> String {
    match v {
        Some(v) if v.is_finite() => format!("{v}"),
        _ => "nan".to_string(),
    }
}

/// A quantile in JSON: null without samples (Envoy's NaN), an integer when
/// whole.
fn json_number(v: Option<f64>) -> serde_json::Value {
    match v {
        Some(v) if v.is_finite() && v.fract() == 0.0 && (0.0..=u64::MAX as f64).contains(&v) => (v as u64).into(),
        Some(v) if v.is_finite() => v.into(),
        _ => serde_json::Value::Null,
    }
}

/// `{"stats":[{"name":..., "value":...}]}` as Envoy's `?format=json`. If any
/// histograms are selected, one last element holds them all:
/// `{"histograms":{"supported_quantiles":[0,25,...],"computed_quantiles":
/// [{"name":...,"values":[{"interval":...,"cumulative":...},...]}]}}`.
pub fn text_json<'a>(stats: impl IntoIterator<Item = &'a MergedStat>) -> String {
    let mut list: Vec<serde_json::Value> = Vec::new();
    let mut histograms: Vec<serde_json::Value> = Vec::new();
    for s in stats {
        match &s.value {
            Value::Counter(v) => list.push(serde_json::json!({"name": s.key.name, "value": v})),
            Value::Gauge(v) => list.push(serde_json::json!({"name": s.key.name, "value": v})),
            Value::Histogram(h) => {
                let values: Vec<serde_json::Value> = SUPPORTED_QUANTILES
                    .iter()
                    .map(|p| {
                        serde_json::json!({
                            "interval": json_number(h.interval.percentile(*p)),
                            "cumulative": json_number(h.cumulative.percentile(*p)),
                        })
                    })
                    .collect();
                histograms.push(serde_json::json!({"name": s.key.name, "values": values}));
            }
        }
    }
    if !histograms.is_empty() {
        let supported: Vec<serde_json::Value> = SUPPORTED_QUANTILES.iter().map(|p| json_number(Some(*p))).collect();
        list.push(serde_json::json!({
            "histograms": {"supported_quantiles": supported, "computed_quantiles": histograms}
        }));
    }
    serde_json::json!({ "stats": list }).to_string()
}

/// The Prometheus text exposition format, with Envoy's tag-extracted names.
/// A histogram is Envoy's: cumulative `_bucket{le=...}` counts over
/// `DEFAULT_BUCKETS` and `+Inf`, then `_sum` and `_count`, all from the
/// cumulative samples.
pub fn prometheus<'a>(stats: impl IntoIterator<Item = &'a MergedStat>) -> String {
    let mut families: BTreeMap<&str, (&'static str, Vec<&MergedStat>)> = BTreeMap::new();
    for s in stats {
        let kind = match s.value {
            Value::Counter(_) => "counter",
            Value::Gauge(_) => "gauge",
            Value::Histogram(_) => "histogram",
        };
        families.entry(s.key.prom_name.as_str()).or_insert((kind, Vec::new())).1.push(s);
    }
    let mut out = String::new();
    for (name, (kind, members)) in families {
        let _ = writeln!(out, "# TYPE {name} {kind}");
        for s in members {
            let labels = &s.key.labels;
            if let Value::Histogram(h) = &s.value {
                let all = &h.cumulative;
                for bound in DEFAULT_BUCKETS {
                    let _ = write!(out, "{name}_bucket");
                    write_labels(&mut out, labels, Some(&bound.to_string()));
                    let _ = writeln!(out, " {}", all.count_at_most(bound));
                }
                let _ = write!(out, "{name}_bucket");
                write_labels(&mut out, labels, Some("+Inf"));
                let _ = writeln!(out, " {}", all.count());
                let _ = write!(out, "{name}_sum");
                write_labels(&mut out, labels, None);
                let _ = writeln!(out, " {}", all.sum());
                let _ = write!(out, "{name}_count");
                write_labels(&mut out, labels, None);
                let _ = writeln!(out, " {}", all.count());
            } else {
                out.push_str(name);
                write_labels(&mut out, labels, None);
                let _ = writeln!(out, " {}", s.value.as_i128());
            }
        }
    }
    out
}

/// `{label="value",...}`, with `le="<bound>"` last if given; nothing if
/// there are no labels at all.
fn write_labels(out: &mut String, labels: &[(&'static str, String)], le: Option<&str>) {
    if labels.is_empty() && le.is_none() {
        return;
    }
    out.push('{');
    for (i, (label, value)) in labels.iter().enumerate() {
        if i > 0 {
            out.push(',');
        }
        let _ = write!(out, "{label}=\"{}\"", escape_label(value));
    }
    if let Some(le) = le {
        if !labels.is_empty() {
            out.push(',');
        }
        let _ = write!(out, "le=\"{le}\"");
    }
    out.push('}');
}

fn escape_label(v: &str) -> String {
    v.replace('\\', "\\\\").replace('"', "\\\"").replace('\n', "\\n")
}

#[cfg(test)]
mod tests {
    use super::super::{StatKey, Store, flush_local_histograms};
    use super::*;

    #[test]
    fn prometheus_groups_families_and_labels() {
        let store = Store::new(1);
        let shard = store.worker(0);
        shard.counter(StatKey::cluster("a", "upstream_cx_total")).add(3);
        shard.counter(StatKey::cluster("b\"x", "upstream_cx_total")).inc();
        shard.gauge(StatKey::plain("server.live")).set(1);
        let out = prometheus(&store.merged());
        assert!(out.contains("# TYPE envoy_cluster_upstream_cx_total counter\n"));
        assert!(out.contains("envoy_cluster_upstream_cx_total{envoy_cluster_name=\"a\"} 3\n"));
        assert!(out.contains("envoy_cluster_upstream_cx_total{envoy_cluster_name=\"b\\\"x\"} 1\n"));
        assert!(out.contains("# TYPE envoy_server_live gauge\nenvoy_server_live 1\n"));
        assert_eq!(out.matches("# TYPE envoy_cluster_upstream_cx_total").count(), 1);
    }

    #[test]
    fn histograms_in_text_sort_among_the_other_stats() {
        let store = Store::new(1);
        let shard = store.worker(0);
        shard.counter(StatKey::plain("a")).inc();
        shard.counter(StatKey::plain("z")).inc();
        let h = shard.histogram(StatKey::plain("m"));
        assert_eq!(text(&store.merged()), "a: 1\nm: No recorded values\nz: 1\n");
        h.record(1);
        flush_local_histograms();
        let all_one = "P0(1,1) P25(1,1) P50(1,1) P75(1,1) P90(1,1) P95(1,1) P99(1,1) P99.5(1,1) P99.9(1,1) P100(1,1)";
        assert_eq!(text(&store.merged()), format!("a: 1\nm: {all_one}\nz: 1\n"));
        flush_local_histograms();
        let no_interval = "P0(nan,1) P25(nan,1) P50(nan,1) P75(nan,1) P90(nan,1) P95(nan,1) P99(nan,1) P99.5(nan,1) P99.9(nan,1) P100(nan,1)";
        assert_eq!(text(&store.merged()), format!("a: 1\nm: {no_interval}\nz: 1\n"));
        for v in [0, 0, 2, 4] {
            h.record(v);
        }
        flush_local_histograms();
        let line = text(&store.merged()).lines().nth(1).unwrap().to_string();
        assert!(line.starts_with("m: P0(0,0) P25(0,0) P50(0,1) P75(2,2) "), "{line}");
        assert!(line.ends_with(" P100(4,4)"), "{line}");
    }

    #[test]
    fn number_formats_follow_envoy() {
        assert_eq!(text_number(None), "nan");
        assert_eq!(text_number(Some(0.0)), "0");
        assert_eq!(text_number(Some(1.05)), "1.05");
        assert_eq!(text_number(Some(3600000.0)), "3600000");
        assert_eq!(json_number(None), serde_json::Value::Null);
        assert_eq!(json_number(Some(25.0)).to_string(), "25");
        assert_eq!(json_number(Some(99.5)).to_string(), "99.5");
    }

    #[test]
    fn histograms_in_json_come_last_in_one_element() {
        let store = Store::new(1);
        let shard = store.worker(0);
        shard.counter(StatKey::plain("z")).add(2);
        shard.histogram(StatKey::cluster("c", "upstream_rq_time")).record(1);
        shard.histogram(StatKey::cluster("d", "upstream_rq_time"));
        flush_local_histograms();
        let v: serde_json::Value = serde_json::from_str(&text_json(&store.merged())).unwrap();
        let stats = v["stats"].as_array().unwrap();
        assert_eq!(stats.len(), 2);
        assert_eq!(stats[0], serde_json::json!({"name": "z", "value": 2}));
        let h = &stats[1]["histograms"];
        assert_eq!(h["supported_quantiles"].to_string(), "[0,25,50,75,90,95,99,99.5,99.9,100]");
        let computed = h["computed_quantiles"].as_array().unwrap();
        assert_eq!(computed.len(), 2);
        assert_eq!(computed[0]["name"], "cluster.c.upstream_rq_time");
        let values = computed[0]["values"].as_array().unwrap();
        assert_eq!(values.len(), 10);
        assert!(values.iter().all(|q| *q == serde_json::json!({"interval": 1, "cumulative": 1})), "{values:?}");
        assert_eq!(computed[1]["name"], "cluster.d.upstream_rq_time");
        assert_eq!(computed[1]["values"][9], serde_json::json!({"interval": null, "cumulative": null}));
        // No histograms selected: no histograms element.
        store.worker(0).counter(StatKey::plain("only"));
        let only: Vec<_> = store.merged().into_iter().filter(|s| s.key.name == "only").collect();
        assert_eq!(text_json(&only), r#"{"stats":[{"name":"only","value":0}]}"#);
    }

    #[test]
    fn histograms_in_prometheus_have_cumulative_buckets_sum_and_count() {
        let store = Store::new(2);
        let key = || StatKey::cluster("c", "upstream_rq_time");
        let (h0, h1) = (store.worker(0).histogram(key()), store.worker(1).histogram(key()));
        for v in [0, 1, 7] {
            h0.record(v);
        }
        h1.record(300);
        h1.record(4000);
        store.worker(0).histogram(StatKey::plain("bare_time"));
        flush_local_histograms();
        let out = prometheus(&store.merged());
        let family: Vec<&str> =
            out.lines().skip_while(|l| !l.contains("envoy_cluster_upstream_rq_time histogram")).take(23).collect();
        let expected = [
            "# TYPE envoy_cluster_upstream_rq_time histogram",
            "envoy_cluster_upstream_rq_time_bucket{envoy_cluster_name=\"c\",le=\"0.5\"} 1",
            "envoy_cluster_upstream_rq_time_bucket{envoy_cluster_name=\"c\",le=\"1\"} 2",
            "envoy_cluster_upstream_rq_time_bucket{envoy_cluster_name=\"c\",le=\"5\"} 2",
            "envoy_cluster_upstream_rq_time_bucket{envoy_cluster_name=\"c\",le=\"10\"} 3",
            "envoy_cluster_upstream_rq_time_bucket{envoy_cluster_name=\"c\",le=\"25\"} 3",
            "envoy_cluster_upstream_rq_time_bucket{envoy_cluster_name=\"c\",le=\"50\"} 3",
            "envoy_cluster_upstream_rq_time_bucket{envoy_cluster_name=\"c\",le=\"100\"} 3",
            "envoy_cluster_upstream_rq_time_bucket{envoy_cluster_name=\"c\",le=\"250\"} 3",
            "envoy_cluster_upstream_rq_time_bucket{envoy_cluster_name=\"c\",le=\"500\"} 4",
            "envoy_cluster_upstream_rq_time_bucket{envoy_cluster_name=\"c\",le=\"1000\"} 4",
            "envoy_cluster_upstream_rq_time_bucket{envoy_cluster_name=\"c\",le=\"2500\"} 4",
            "envoy_cluster_upstream_rq_time_bucket{envoy_cluster_name=\"c\",le=\"5000\"} 5",
            "envoy_cluster_upstream_rq_time_bucket{envoy_cluster_name=\"c\",le=\"10000\"} 5",
            "envoy_cluster_upstream_rq_time_bucket{envoy_cluster_name=\"c\",le=\"30000\"} 5",
            "envoy_cluster_upstream_rq_time_bucket{envoy_cluster_name=\"c\",le=\"60000\"} 5",
            "envoy_cluster_upstream_rq_time_bucket{envoy_cluster_name=\"c\",le=\"300000\"} 5",
            "envoy_cluster_upstream_rq_time_bucket{envoy_cluster_name=\"c\",le=\"600000\"} 5",
            "envoy_cluster_upstream_rq_time_bucket{envoy_cluster_name=\"c\",le=\"1800000\"} 5",
            "envoy_cluster_upstream_rq_time_bucket{envoy_cluster_name=\"c\",le=\"3600000\"} 5",
            "envoy_cluster_upstream_rq_time_bucket{envoy_cluster_name=\"c\",le=\"+Inf\"} 5",
            "envoy_cluster_upstream_rq_time_sum{envoy_cluster_name=\"c\"} 4308",
            "envoy_cluster_upstream_rq_time_count{envoy_cluster_name=\"c\"} 5",
        ];
        assert_eq!(family, expected, "{out}");
        assert!(out.contains("# TYPE envoy_bare_time histogram\nenvoy_bare_time_bucket{le=\"0.5\"} 0\n"), "{out}");
        assert!(
            out.contains("envoy_bare_time_bucket{le=\"+Inf\"} 0\nenvoy_bare_time_sum 0\nenvoy_bare_time_count 0\n")
        );
    }

    #[test]
    fn text_and_json() {
        let store = Store::new(1);
        store.worker(0).counter(StatKey::tcp("p", "downstream_cx_total")).add(7);
        assert_eq!(text(&store.merged()), "tcp.p.downstream_cx_total: 7\n");
        let v: serde_json::Value = serde_json::from_str(&text_json(&store.merged())).unwrap();
        assert_eq!(v["stats"][0]["name"], "tcp.p.downstream_cx_total");
        assert_eq!(v["stats"][0]["value"], 7);
    }
}
