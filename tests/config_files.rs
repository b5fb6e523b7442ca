//! Every example config parses; no mangled config makes ringway panic.

#![allow(clippy::unwrap_used, clippy::expect_used, reason = "a test should fail loudly")]

use std::path::Path;

fn yaml_files(dir: &Path, out: &mut Vec<std::path::PathBuf>) {
    let Ok(entries) = std::fs::read_dir(dir) else { return };
    for e in entries.flatten() {
        let p = e.path();
        if p.is_dir() {
            yaml_files(&p, out);
        } else if matches!(p.extension().and_then(|x| x.to_str()), Some("yaml" | "yml")) {
            out.push(p);
        }
    }
}

fn example_configs() -> Vec<std::path::PathBuf> {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let mut files = Vec::new();
    yaml_files(&root.join("config"), &mut files);
    yaml_files(&root.join("perf/configs"), &mut files);
    files.sort();
    files
}

#[test]
fn every_example_config_validates() {
    let files = example_configs();
    assert!(files.iter().any(|f| f.ends_with("quickstart.yaml")), "{files:?}");
    for f in files {
        let text = std::fs::read_to_string(&f).unwrap();
        if let Err(e) = ringway::config::check_str(&text, 1) {
            panic!("{}: {e}", f.display());
        }
    }
}

/// Seeded mutations of the example configs (byte flips, deletions, duplicated
/// and swapped slices, truncation, odd scalars): every one must come back as
/// Ok or a ConfigError, never a panic.
#[test]
fn mutated_configs_never_panic() {
    let seeds: Vec<String> = example_configs().iter().map(|f| std::fs::read_to_string(f).unwrap()).collect();
    let replacements: &[&[u8]] = &[
        b"-1",
        b"99999999999999999999",
        b"0s",
        b"1e9s",
        b"~",
        b"[]",
        b"{}",
        b"\"\"",
        b"&a",
        b"*a",
        b"<<: *a",
        b"!!binary",
        b"\t",
        b"\x00",
        b"\xff",
        b"STRICT_DNS",
        b"::",
        b"[::1]",
        b"0.0.0.0",
        b"@type",
        b"- ",
    ];
    let mut rng = 0x2545_F491_4F6C_DD1Du64;
    let mut next = move |n: usize| {
        rng ^= rng << 13;
        rng ^= rng >> 7;
        rng ^= rng << 17;
        (rng % n.max(1) as u64) as usize
    };
    let mut accepted = 0;
    let mut rejected = 0;
    for round in 0..4000 {
        let seed = seeds[round % seeds.len()].as_bytes();
        let mut bytes = seed.to_vec();
        for _ in 0..1 + next(4) {
            let len = bytes.len();
            let at = next(len);
            match next(6) {
                0 => {
                    if len > 0 {
                        bytes[at] ^= 1 << next(8);
                    }
                }
                1 => {
                    let end = (at + next(40)).min(len);
                    bytes.drain(at..end);
                }
                2 => {
                    let end = (at + next(80)).min(len);
                    let slice = bytes[at..end].to_vec();
                    let to = next(bytes.len());
                    bytes.splice(to..to, slice);
                }
                3 => bytes.truncate(at),
                4 => {
                    let r = replacements[next(replacements.len())];
                    let end = (at + next(12)).min(len);
                    bytes.splice(at..end, r.iter().copied());
                }
                _ => {
                    // Re-indent a line: YAML structure errors.
                    let to = next(bytes.len());
                    bytes.splice(to..to, b"\n  ".iter().copied());
                }
            }
        }
        let text = String::from_utf8_lossy(&bytes);
        // check_str resolves no names: mutated host names never reach DNS.
        match ringway::config::check_str(&text, 1) {
            Ok(_) => accepted += 1,
            Err(e) => {
                assert!(!e.to_string().is_empty());
                rejected += 1;
            }
        }
    }
    // The mutations must actually exercise both outcomes.
    assert!(rejected > 1000 && accepted > 10, "accepted {accepted}, rejected {rejected}");
}
