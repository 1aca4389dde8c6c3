//! The cost of authenticating one call: the key's SHA-256, a constant-time comparison with every
//! caller's digest, and the caller's rate allowance. Target: under 2 µs per call.
//!
//! `cargo bench --bench auth`

use std::{hint::black_box, sync::Arc};

use criterion::{Criterion, criterion_group, criterion_main};
use graph_mailer::{
    audit::AuditLog,
    callers::{CallerRegistry, Credentials, key},
};

/// A callers file with `count` senders, each with a rate limit.
fn registry(count: usize) -> (CallerRegistry, String, tempfile::TempDir) {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("callers.toml");
    let mut text = String::new();
    let mut last_key = String::new();
    for i in 0..count {
        let key = key::generate();
        text.push_str(&format!(
            "[[caller]]\nname = \"service-{i}\"\nkey_sha256 = \"{}\"\nrole = \"sender\"\n\
             mailboxes = [\"*@contoso.com\"]\nmax_per_minute = 1000000000\n",
            key::hex(&key::digest(&key))
        ));
        last_key = key;
    }
    std::fs::write(&path, text).unwrap();
    let registry = CallerRegistry::load(path, Arc::new(AuditLog::off())).unwrap();
    (registry, last_key, dir)
}

fn authentication(c: &mut Criterion) {
    for count in [1, 20, 100] {
        let (registry, key, _dir) = registry(count);
        let header = format!("Bearer {key}");
        c.bench_function(&format!("authenticate a call among {count} callers"), |b| {
            b.iter(|| {
                let credentials = Credentials {
                    authorization: Some(black_box(&header)),
                    certificate_names: Vec::new(),
                };
                black_box(registry.authenticate(&credentials).unwrap());
            })
        });
    }
}

criterion_group!(benches, authentication);
criterion_main!(benches);
