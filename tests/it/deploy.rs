//! The container and orchestration files, linted against the code: ports, variable names,
//! probes, secret mounts. Docker cannot run here, so these tests read the files.

use std::collections::HashSet;

use graph_mailer::settings::{RawSettings, raw::known_variables};
use serde_yaml::Value;

fn root() -> std::path::PathBuf {
    std::path::PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

fn documents(path: &str) -> Vec<Value> {
    let text = std::fs::read_to_string(root().join(path)).unwrap();
    serde_yaml::Deserializer::from_str(&text)
        .map(|doc| serde::Deserialize::deserialize(doc).unwrap_or_else(|e| panic!("{path}: {e}")))
        .collect()
}

fn default_port(addr: &str) -> u64 {
    addr.rsplit_once(':').unwrap().1.parse().unwrap()
}

fn ports() -> (u64, u64) {
    let defaults = RawSettings::default();
    (
        default_port(&defaults.grpc_addr),
        default_port(&defaults.http_addr),
    )
}

fn check_env_names<'a>(names: impl IntoIterator<Item = &'a str>, file: &str) {
    let known: HashSet<String> = known_variables().into_iter().collect();
    let mut seen = 0;
    for name in names.into_iter().filter(|n| n.starts_with("GRAPH_MAILER_")) {
        assert!(
            known.contains(name),
            "{file}: {name} is not a setting graph-mailer reads"
        );
        seen += 1;
    }
    assert!(seen > 3, "{file}: expected GRAPH_MAILER_ variables");
}

fn check_deployment(deployment: &Value, file: &str) {
    let (grpc, http) = ports();
    let pod = &deployment["spec"]["template"]["spec"];
    assert_eq!(
        pod["securityContext"]["runAsNonRoot"],
        Value::Bool(true),
        "{file}"
    );
    let container = &pod["containers"][0];
    let container_ports: Vec<u64> = container["ports"]
        .as_sequence()
        .unwrap()
        .iter()
        .map(|p| p["containerPort"].as_u64().unwrap())
        .collect();
    assert_eq!(
        container_ports[..2],
        [grpc, http],
        "{file}: ports match the defaults"
    );
    let env: Vec<&str> = container["env"]
        .as_sequence()
        .unwrap()
        .iter()
        .map(|e| e["name"].as_str().unwrap())
        .collect();
    check_env_names(env.iter().copied(), file);
    let env_value = |name: &str| {
        container["env"]
            .as_sequence()
            .unwrap()
            .iter()
            .find(|e| e["name"] == name)
            .and_then(|e| e["value"].as_str())
            .map(str::to_owned)
    };
    // With TLS, probes use the plaintext health listener: Kubernetes' gRPC probes cannot speak
    // TLS.
    let probe_port = match env_value("GRAPH_MAILER_TLS_CERT_FILE") {
        Some(_) => {
            let health = env_value("GRAPH_MAILER_HEALTH_ADDR").expect("a health listener");
            let port = default_port(&health);
            assert!(
                container_ports.contains(&port),
                "{file}: the health port is declared"
            );
            port
        }
        None => grpc,
    };
    let readiness = &container["readinessProbe"]["grpc"];
    assert_eq!(
        readiness["port"].as_u64(),
        Some(probe_port),
        "{file}: native gRPC readiness probe"
    );
    assert_eq!(
        readiness["service"].as_str(),
        Some("graphmailer.v1.Mailer"),
        "{file}"
    );
    assert_eq!(
        container["livenessProbe"]["grpc"]["port"].as_u64(),
        Some(probe_port),
        "{file}: native gRPC liveness probe"
    );
    // Graph mode needs callers, from a file the Secret volume provides.
    let callers_file = env_value("GRAPH_MAILER_CALLERS_FILE").expect("a callers file");
    let secret_volume_files: Vec<String> = pod["volumes"]
        .as_sequence()
        .unwrap()
        .iter()
        .filter(|v| v["secret"].is_mapping())
        .flat_map(|v| {
            let mount = container["volumeMounts"]
                .as_sequence()
                .unwrap()
                .iter()
                .find(|m| m["name"] == v["name"])
                .and_then(|m| m["mountPath"].as_str())
                .unwrap_or_default()
                .to_owned();
            v["secret"]["items"]
                .as_sequence()
                .into_iter()
                .flatten()
                .map(move |item| format!("{mount}/{}", item["path"].as_str().unwrap()))
                .collect::<Vec<_>>()
        })
        .collect();
    assert!(
        secret_volume_files.contains(&callers_file),
        "{file}: {callers_file} comes from a Secret ({secret_volume_files:?})"
    );
    assert_eq!(
        container["securityContext"]["readOnlyRootFilesystem"],
        Value::Bool(true),
        "{file}"
    );
    assert!(
        container["resources"]["requests"]["memory"].is_string(),
        "{file}: sized requests"
    );
    // The client secret is a file from a Secret volume mounted as a directory (no subPath), so
    // rotations reach the running pod.
    let secret_file = container["env"]
        .as_sequence()
        .unwrap()
        .iter()
        .find(|e| e["name"] == "GRAPH_MAILER_CLIENT_SECRET_FILE")
        .and_then(|e| e["value"].as_str())
        .expect("GRAPH_MAILER_CLIENT_SECRET_FILE");
    let mounts = container["volumeMounts"].as_sequence().unwrap();
    let mount = mounts
        .iter()
        .find(|m| {
            secret_file.starts_with(m["mountPath"].as_str().unwrap()) && m["mountPath"] != "/data"
        })
        .expect("the secret file's directory is mounted");
    assert!(
        mount.get("subPath").is_none(),
        "{file}: subPath mounts never update"
    );
    let volume = pod["volumes"]
        .as_sequence()
        .unwrap()
        .iter()
        .find(|v| v["name"] == mount["name"])
        .unwrap();
    assert!(
        volume["secret"]["secretName"].is_string(),
        "{file}: mounted from a Secret"
    );
    assert!(
        mounts.iter().any(|m| m["mountPath"] == "/data"),
        "{file}: /data is writable"
    );
}

#[test]
fn the_kubernetes_deployments_match_the_code() {
    for file in [
        "deploy/kubernetes/deployment.yaml",
        "deploy/kubernetes/single-replica-sqlite.yaml",
    ] {
        let docs = documents(file);
        let deployment = docs
            .iter()
            .find(|d| d["kind"] == "Deployment")
            .expect("a Deployment");
        check_deployment(deployment, file);
    }
    let replicated = documents("deploy/kubernetes/deployment.yaml");
    let deployment = replicated
        .iter()
        .find(|d| d["kind"] == "Deployment")
        .unwrap();
    assert!(deployment["spec"]["replicas"].as_u64().unwrap() > 1);
    let env = deployment["spec"]["template"]["spec"]["containers"][0]["env"]
        .as_sequence()
        .unwrap();
    let database = env
        .iter()
        .find(|e| e["name"] == "GRAPH_MAILER_DATABASE_URL")
        .expect("replicas share PostgreSQL");
    assert!(
        database["valueFrom"]["secretKeyRef"].is_mapping(),
        "the database URL comes from a Secret"
    );
    let service = replicated
        .iter()
        .find(|d| d["kind"] == "Service")
        .expect("a Service");
    let (grpc, http) = ports();
    let service_ports: Vec<u64> = service["spec"]["ports"]
        .as_sequence()
        .unwrap()
        .iter()
        .map(|p| p["port"].as_u64().unwrap())
        .collect();
    assert_eq!(service_ports, [grpc, http]);
    let sqlite = documents("deploy/kubernetes/single-replica-sqlite.yaml");
    assert!(sqlite.iter().any(|d| d["kind"] == "PersistentVolumeClaim"));
    let secret = &documents("deploy/kubernetes/secret.yaml")[0];
    for key in [
        "client-secret",
        "callers.toml",
        "encryption-key",
        "database-url",
    ] {
        assert!(
            secret["stringData"][key].is_string(),
            "secret.yaml has {key}"
        );
    }
}

#[test]
fn the_compose_file_runs_the_service_with_postgres() {
    let compose = &documents("deploy/docker-compose.yml")[0];
    let services = &compose["services"];
    assert!(services["postgres"].is_mapping());
    let mailer = &services["graph-mailer"];
    let env = mailer["environment"].as_mapping().unwrap();
    let names: Vec<&str> = env.keys().map(|k| k.as_str().unwrap()).collect();
    check_env_names(names.iter().copied(), "docker-compose.yml");
    assert!(
        env[&Value::from("GRAPH_MAILER_DATABASE_URL")]
            .as_str()
            .unwrap()
            .starts_with("postgres://")
    );
    let (grpc, http) = ports();
    let published: Vec<String> = mailer["ports"]
        .as_sequence()
        .unwrap()
        .iter()
        .map(|p| p.as_str().unwrap().to_owned())
        .collect();
    assert!(published.iter().any(|p| p.ends_with(&format!(":{grpc}"))));
    assert!(published.iter().any(|p| p.ends_with(&format!(":{http}"))));
    assert_eq!(
        mailer["healthcheck"]["test"][1].as_str(),
        Some("graph-mailer")
    );
    assert_eq!(
        mailer["healthcheck"]["test"][2].as_str(),
        Some("healthcheck")
    );
}

#[test]
fn the_dockerfile_is_non_root_stops_on_sigterm_and_checks_health() {
    let text = std::fs::read_to_string(root().join("Dockerfile")).unwrap();
    let instruction = |name: &str| -> Vec<String> {
        text.lines()
            .filter(|l| l.starts_with(&format!("{name} ")))
            .map(|l| l[name.len() + 1..].trim().to_owned())
            .collect()
    };
    let (grpc, http) = ports();
    assert_eq!(instruction("EXPOSE"), [format!("{grpc} {http}")]);
    assert_eq!(instruction("STOPSIGNAL"), ["SIGTERM"]);
    let user = instruction("USER");
    assert!(
        !user.is_empty() && !user[0].starts_with('0') && user[0] != "root",
        "non-root: {user:?}"
    );
    assert!(
        instruction("ENTRYPOINT")[0].starts_with('['),
        "exec-form ENTRYPOINT"
    );
    assert!(
        text.contains("CMD [\"graph-mailer\", \"healthcheck\"]"),
        "HEALTHCHECK runs graph-mailer healthcheck"
    );
    assert!(text.contains("VOLUME [\"/data\"]"));
    assert!(instruction("FROM").len() >= 2, "multi-stage");
    for line in text
        .lines()
        .filter(|l| l.trim_start().starts_with("GRAPH_MAILER_") || l.starts_with("ENV "))
    {
        if let Some(name) = line
            .split_whitespace()
            .find(|w| w.starts_with("GRAPH_MAILER_"))
        {
            let name = name.split('=').next().unwrap();
            assert!(
                known_variables().contains(&name.to_owned()),
                "Dockerfile sets unknown {name}"
            );
        }
    }
    let ignore = std::fs::read_to_string(root().join(".dockerignore")).unwrap();
    assert!(ignore.lines().any(|l| l == "target"));
}

#[test]
fn the_readme_documents_every_setting() {
    let readme = std::fs::read_to_string(root().join("README.md")).unwrap();
    for variable in known_variables() {
        assert!(
            readme.contains(&format!("`{variable}`")),
            "README.md does not document {variable}"
        );
    }
    for command in ["cargo run --release", "cargo test --all-targets"] {
        assert!(
            readme.contains(&format!("\n{command}\n")),
            "README.md lacks `{command}` on its own line"
        );
    }
    let ci = std::fs::read_to_string(root().join(".ci/run")).unwrap();
    assert!(
        ci.lines().any(|l| l.trim() == "cargo test --all-targets"),
        ".ci/run runs the README's test command"
    );
}
