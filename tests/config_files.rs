//! Every example config parses; no mangled config makes ringway panic.
//!
//! Examples that read certificates from `./certs/` (made by
//! `config/examples/make-test-ca.sh`) are validated against certificates
//! made here with rcgen in a temporary directory, the paths rewritten to it.

#![allow(clippy::unwrap_used, clippy::expect_used, reason = "a test should fail loudly")]

use std::path::{Path, PathBuf};

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

/// The certificates `make-test-ca.sh` makes, with the same names and SANs,
/// in a directory of their own that is removed when this is dropped.
struct TestCerts {
    dir: PathBuf,
}

impl TestCerts {
    fn new(test: &str) -> Self {
        use rcgen::{
            BasicConstraints, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa, Issuer, KeyPair,
            KeyUsagePurpose, SanType,
        };
        let dir = std::env::temp_dir().join(format!("ringway-{test}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        let write = |name: &str, text: String| std::fs::write(dir.join(name), text).unwrap();

        let ca_key = KeyPair::generate().unwrap();
        let mut ca = CertificateParams::new(Vec::<String>::new()).unwrap();
        ca.distinguished_name.push(DnType::CommonName, "ringway test CA");
        ca.is_ca = IsCa::Ca(BasicConstraints::Constrained(0));
        ca.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
        write("ca.pem", ca.self_signed(&ca_key).unwrap().pem());
        write("ca.key", ca_key.serialize_pem());
        let issuer = Issuer::new(ca, ca_key);

        let leaves: [(&str, ExtendedKeyUsagePurpose, Vec<SanType>); 3] = [
            (
                "server",
                ExtendedKeyUsagePurpose::ServerAuth,
                vec![
                    SanType::DnsName("server.ringway.test".try_into().unwrap()),
                    SanType::IpAddress([127, 0, 0, 1].into()),
                ],
            ),
            (
                "client",
                ExtendedKeyUsagePurpose::ClientAuth,
                vec![
                    SanType::URI("spiffe://ringway.test/client".try_into().unwrap()),
                    SanType::DnsName("client.ringway.test".try_into().unwrap()),
                ],
            ),
            (
                "intruder",
                ExtendedKeyUsagePurpose::ClientAuth,
                vec![SanType::URI("spiffe://ringway.test/intruder".try_into().unwrap())],
            ),
        ];
        for (name, usage, sans) in leaves {
            let key = KeyPair::generate().unwrap();
            let mut params = CertificateParams::new(Vec::<String>::new()).unwrap();
            params.distinguished_name.push(DnType::CommonName, format!("{name}.ringway.test"));
            params.subject_alt_names = sans;
            params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
            params.extended_key_usages = vec![usage];
            params.use_authority_key_identifier_extension = true;
            write(&format!("{name}.pem"), params.signed_by(&key, &issuer).unwrap().pem());
            write(&format!("{name}.key"), key.serialize_pem());
        }
        TestCerts { dir }
    }

    /// `text` with every `./certs/` path (the examples) and `certs/` file
    /// name (the perf configs, relative to their scratch dir) pointing into
    /// this directory.
    fn rewrite(&self, text: &str) -> String {
        let dir = format!("{}/", self.dir.display());
        text.replace("./certs/", &dir).replace("filename: certs/", &format!("filename: {dir}"))
    }
}

impl Drop for TestCerts {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// Every example config's text, certificate paths rewritten to `certs`.
fn example_texts(certs: &TestCerts) -> Vec<(PathBuf, String)> {
    example_configs()
        .into_iter()
        .map(|f| {
            let text = std::fs::read_to_string(&f).unwrap();
            (f, certs.rewrite(&text))
        })
        .collect()
}

#[test]
fn every_example_config_validates() {
    let certs = TestCerts::new("examples");
    let files = example_texts(&certs);
    let names: Vec<_> = files.iter().map(|(f, _)| f).collect();
    assert!(files.iter().any(|(f, _)| f.ends_with("quickstart.yaml")), "{names:?}");
    let mut with_tls = Vec::new();
    for (f, text) in &files {
        match ringway::config::check_str(text, 1) {
            Ok(snapshot) => {
                let listeners =
                    snapshot.listeners.iter().filter(|l| l.filter_chains.iter().any(|c| c.tls.is_some())).count();
                let clusters = snapshot.clusters.iter().filter(|c| c.tls.is_some()).count();
                if listeners + clusters > 0 {
                    with_tls.push(f.file_name().unwrap().to_string_lossy().into_owned());
                }
            }
            Err(e) => panic!("{}: {e}", f.display()),
        }
    }
    // The double proxy's two halves really configure TLS: one listener side,
    // one cluster side.
    for half in ["double-proxy-client.yaml", "double-proxy-server.yaml"] {
        assert!(with_tls.iter().any(|f| f == half), "{half} has no TLS: {with_tls:?}");
    }
}

/// Seeded mutations of the example configs (byte flips, deletions, duplicated
/// and swapped slices, truncation, odd scalars): every one must come back as
/// Ok or a ConfigError, never a panic.
#[test]
fn mutated_configs_never_panic() {
    // With the certificates in place, mutations reach the TLS checks too.
    let certs = TestCerts::new("mutations");
    let seeds: Vec<String> = example_texts(&certs).into_iter().map(|(_, text)| text).collect();
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
