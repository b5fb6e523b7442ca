//! Renders merged stats the way Envoy's admin does: `/stats` text
//! (`name: value`), `/stats?format=json`, and `/stats/prometheus`.

use std::collections::BTreeMap;
use std::fmt::Write;

use super::{MergedStat, Value};

/// `name: value`, one per line, sorted by name.
pub fn text<'a>(stats: impl IntoIterator<Item = &'a MergedStat>) -> String {
    let mut out = String::new();
    for s in stats {
        let _ = writeln!(out, "{}: {}", s.key.name, s.value.as_i128());
    }
    out
}

/// `{"stats":[{"name":..., "value":...}]}` as Envoy's `?format=json`.
pub fn text_json<'a>(stats: impl IntoIterator<Item = &'a MergedStat>) -> String {
    let list: Vec<serde_json::Value> = stats
        .into_iter()
        .map(|s| match s.value {
            Value::Counter(v) => serde_json::json!({"name": s.key.name, "value": v}),
            Value::Gauge(v) => serde_json::json!({"name": s.key.name, "value": v}),
        })
        .collect();
    serde_json::json!({ "stats": list }).to_string()
}

/// The Prometheus text exposition format, with Envoy's tag-extracted names.
pub fn prometheus<'a>(stats: impl IntoIterator<Item = &'a MergedStat>) -> String {
    let mut families: BTreeMap<&str, (&'static str, Vec<&MergedStat>)> = BTreeMap::new();
    for s in stats {
        let kind = match s.value {
            Value::Counter(_) => "counter",
            Value::Gauge(_) => "gauge",
        };
        families.entry(s.key.prom_name.as_str()).or_insert((kind, Vec::new())).1.push(s);
    }
    let mut out = String::new();
    for (name, (kind, members)) in families {
        let _ = writeln!(out, "# TYPE {name} {kind}");
        for s in members {
            out.push_str(name);
            if !s.key.labels.is_empty() {
                out.push('{');
                for (i, (label, value)) in s.key.labels.iter().enumerate() {
                    if i > 0 {
                        out.push(',');
                    }
                    let _ = write!(out, "{label}=\"{}\"", escape_label(value));
                }
                out.push('}');
            }
            let _ = writeln!(out, " {}", s.value.as_i128());
        }
    }
    out
}

fn escape_label(v: &str) -> String {
    v.replace('\\', "\\\\").replace('"', "\\\"").replace('\n', "\\n")
}

#[cfg(test)]
mod tests {
    use super::super::{StatKey, Store};
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
    fn text_and_json() {
        let store = Store::new(1);
        store.worker(0).counter(StatKey::tcp("p", "downstream_cx_total")).add(7);
        assert_eq!(text(&store.merged()), "tcp.p.downstream_cx_total: 7\n");
        let v: serde_json::Value = serde_json::from_str(&text_json(&store.merged())).unwrap();
        assert_eq!(v["stats"][0]["name"], "tcp.p.downstream_cx_total");
        assert_eq!(v["stats"][0]["value"], 7);
    }
}
