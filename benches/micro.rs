//! Micro-benchmarks for the per-connection decisions: load balancer picks,
//! stat updates, and config loading. `cargo bench` prints ns per operation.
//! (Plain timing loops, no framework: these are for spotting regressions.)

use std::hint::black_box;
use std::time::Instant;

use ringway::config::LbKind;
use ringway::stats::{StatKey, Store};
use ringway::upstream::lb::LoadBalancer;

fn bench(name: &str, iters: u64, mut f: impl FnMut()) {
    for _ in 0..iters / 10 {
        f();
    }
    let start = Instant::now();
    for _ in 0..iters {
        f();
    }
    let ns = start.elapsed().as_nanos() as f64 / iters as f64;
    println!("{name:<40} {ns:>10.1} ns/op");
}

fn main() {
    let equal = LoadBalancer::new(LbKind::RoundRobin, &[1; 16], 1);
    bench("lb round_robin pick (16 equal hosts)", 10_000_000, || {
        black_box(equal.pick());
    });
    let weighted = LoadBalancer::new(LbKind::RoundRobin, &[5, 1, 3, 1, 7, 2], 1);
    bench("lb round_robin pick (weighted)", 10_000_000, || {
        black_box(weighted.pick());
    });
    let random = LoadBalancer::new(LbKind::Random, &[5, 1, 3, 1, 7, 2, 1, 1], 1);
    bench("lb random pick (8 weighted hosts)", 10_000_000, || {
        black_box(random.pick());
    });

    let store = Store::new(1);
    let counter = store.worker(0).counter(StatKey::cluster("c", "upstream_cx_total"));
    bench("stats counter inc (single writer)", 50_000_000, || counter.inc());

    let yaml =
        std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/config/quickstart.yaml")).unwrap_or_default();
    bench("config check quickstart.yaml", 2_000, || {
        black_box(ringway::config::check_str(&yaml, 1).is_ok());
    });
    for _ in 0..4 {
        counter.inc();
    }
    bench("stats merge (1 shard)", 20_000, || {
        black_box(store.merged());
    });
}
