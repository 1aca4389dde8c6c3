//! PostgreSQL over TLS, as managed PostgreSQL (Azure Database for PostgreSQL) requires: a test
//! cluster of its own with `ssl = on` and plaintext refused in `pg_hba.conf`, and the binary's
//! store reaching it with `sslmode=verify-full` and `sslrootcert`.
//!
//! The cluster is made with the PostgreSQL server binaries the machine has (Debian's
//! `/usr/lib/postgresql/<version>/bin`); run as root, they run as the `postgres` user.

use std::{
    os::unix::fs::PermissionsExt,
    path::{Path, PathBuf},
    process::Command,
};

use crate::support::{
    TEST_KEY,
    binary::{Service, free_port},
    certs::TestCa,
    postgres,
};

/// A PostgreSQL cluster that accepts only TLS connections, stopped when dropped.
struct TlsCluster {
    bin: PathBuf,
    data: PathBuf,
    port: u16,
    run_as_postgres: bool,
    _dir: tempfile::TempDir,
}

impl TlsCluster {
    /// Starts one, or `None` when PostgreSQL tests are skipped.
    fn start(ca: &TestCa) -> Option<Self> {
        postgres::server_url()?;
        let bin = server_binaries().expect(
            "PostgreSQL's server binaries (initdb, pg_ctl) are needed for the TLS test: install \
             postgresql, or set GRAPH_MAILER_TEST_SKIP_POSTGRES=1",
        );
        let dir = tempfile::tempdir().unwrap();
        std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
        let data = dir.path().join("pgdata");
        let run_as_postgres = is_root();
        let cluster = Self {
            bin,
            data,
            port: free_port(),
            run_as_postgres,
            _dir: dir,
        };
        std::fs::create_dir(&cluster.data).unwrap();
        std::fs::set_permissions(&cluster.data, std::fs::Permissions::from_mode(0o700)).unwrap();
        cluster.chown();
        cluster.run(
            "initdb",
            &[
                "-D",
                path(&cluster.data),
                "-A",
                "trust",
                "-U",
                "postgres",
                "--no-sync",
            ],
        );
        let server = ca.server();
        std::fs::write(cluster.data.join("server.crt"), &server.cert_pem).unwrap();
        std::fs::write(cluster.data.join("server.key"), &server.key_pem).unwrap();
        std::fs::set_permissions(
            cluster.data.join("server.key"),
            std::fs::Permissions::from_mode(0o600),
        )
        .unwrap();
        let mut conf = std::fs::read_to_string(cluster.data.join("postgresql.conf")).unwrap();
        conf.push_str(&format!(
            "\nlisten_addresses = '127.0.0.1'\nport = {}\nssl = on\nssl_cert_file = 'server.crt'\n\
             ssl_key_file = 'server.key'\nunix_socket_directories = '{}'\nfsync = off\n",
            cluster.port,
            path(&cluster.data)
        ));
        std::fs::write(cluster.data.join("postgresql.conf"), conf).unwrap();
        std::fs::write(
            cluster.data.join("pg_hba.conf"),
            "local all all trust\nhostssl all all 127.0.0.1/32 trust\nhostnossl all all 127.0.0.1/32 reject\n",
        )
        .unwrap();
        cluster.chown();
        let log = cluster.data.join("server.log");
        cluster.run(
            "pg_ctl",
            &["-D", path(&cluster.data), "-l", path(&log), "-w", "start"],
        );
        Some(cluster)
    }

    fn url(&self, query: &str) -> String {
        format!(
            "postgres://postgres@127.0.0.1:{}/postgres?{query}",
            self.port
        )
    }

    /// Gives the data directory to the postgres user, when the server runs as that user.
    fn chown(&self) {
        if self.run_as_postgres {
            let status = Command::new("chown")
                .args(["-R", "postgres:postgres", path(&self.data)])
                .status()
                .unwrap();
            assert!(status.success());
        }
    }

    fn run(&self, program: &str, args: &[&str]) {
        let output = self.command(program, args);
        assert!(
            output.status.success(),
            "{program} failed: {}{}",
            String::from_utf8_lossy(&output.stdout),
            String::from_utf8_lossy(&output.stderr)
        );
    }

    fn command(&self, program: &str, args: &[&str]) -> std::process::Output {
        let binary = self.bin.join(program);
        if self.run_as_postgres {
            Command::new("runuser")
                .args(["-u", "postgres", "--"])
                .arg(&binary)
                .args(args)
                .output()
        } else {
            Command::new(&binary).args(args).output()
        }
        .unwrap()
    }
}

impl Drop for TlsCluster {
    fn drop(&mut self) {
        let data = self.data.display().to_string();
        if self.data.join("postmaster.pid").exists() {
            let _ = self.command("pg_ctl", &["-D", &data, "-m", "immediate", "stop"]);
        }
    }
}

fn path(p: &Path) -> &str {
    p.to_str().unwrap()
}

fn is_root() -> bool {
    Command::new("id")
        .arg("-u")
        .output()
        .map(|o| String::from_utf8_lossy(&o.stdout).trim() == "0")
        .unwrap_or(false)
}

/// The newest `/usr/lib/postgresql/<version>/bin` with initdb, or the directory of an initdb
/// on PATH.
fn server_binaries() -> Option<PathBuf> {
    let mut versions: Vec<PathBuf> = std::fs::read_dir("/usr/lib/postgresql")
        .ok()?
        .filter_map(|e| e.ok().map(|e| e.path().join("bin")))
        .filter(|bin| bin.join("initdb").exists())
        .collect();
    versions.sort();
    versions.pop()
}

fn service_on(url: &str) -> Service {
    Service::spawn(&[
        ("DATABASE_URL", url.to_owned()),
        ("ENCRYPTION_KEY", TEST_KEY.to_owned()),
    ])
}

#[tokio::test]
async fn the_store_reaches_a_postgresql_that_requires_tls_and_verifies_its_certificate() {
    let ca = TestCa::new("PostgreSQL test CA");
    let Some(cluster) = TlsCluster::start(&ca) else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().join("root.crt");
    std::fs::write(&root, ca.pem()).unwrap();

    // verify-full with the right root: the service starts, migrates and answers.
    let url = cluster.url(&format!(
        "sslmode=verify-full&sslrootcert={}",
        root.display()
    ));
    let service = service_on(&url);
    service.wait_ready().await;
    let mut client = service.client().await;
    client
        .send_mail(crate::support::simple_message("noreply@contoso.com"))
        .await
        .expect("a send recorded in the TLS-only database");
    drop(service);

    // Plaintext is refused by the server; the service says so and stops.
    let (code, output) = service_on(&cluster.url("sslmode=disable")).wait();
    assert_eq!(code, Some(1), "{output}");
    assert!(output.contains("cannot open the store"), "{output}");

    // A certificate no trusted root signed is refused by the service.
    let other = dir.path().join("other.crt");
    std::fs::write(&other, TestCa::new("someone else").pem()).unwrap();
    let url = cluster.url(&format!(
        "sslmode=verify-full&sslrootcert={}",
        other.display()
    ));
    let (code, output) = service_on(&url).wait();
    assert_eq!(code, Some(1), "{output}");
}
