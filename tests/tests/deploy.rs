//! The deployment artefacts under deploy/ stay valid and in step with the code: every JSON parses,
//! the dashboard and the alerts use only metrics lark-sink exports, every YAML parses, the configs
//! inside the manifests and the Helm values are valid connector configs, the unit starts the
//! binary. No broker needed. The Helm chart is rendered only where `helm` is installed.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::process::Command;

use lark_sink::config::ConnectorConfig;
use lark_sink::telemetry::METRICS;
use serde::Deserialize;
use serde_json::Value;

fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..")
}

fn deploy() -> PathBuf {
    root().join("deploy")
}

fn read(path: &Path) -> String {
    std::fs::read_to_string(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

/// Every file under `dir` (recursively) whose name ends with one of `exts`.
fn files(dir: &Path, exts: &[&str]) -> Vec<PathBuf> {
    let mut out = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        for entry in std::fs::read_dir(&d).unwrap_or_else(|e| panic!("{}: {e}", d.display())) {
            let path = entry.unwrap().path();
            if path.is_dir() {
                stack.push(path);
            } else if path
                .file_name()
                .and_then(|n| n.to_str())
                .is_some_and(|n| exts.iter().any(|e| n.ends_with(e)))
            {
                out.push(path);
            }
        }
    }
    out.sort();
    out
}

/// All documents of a YAML file, as JSON values.
fn yaml_docs(path: &Path) -> Vec<Value> {
    let text = read(path);
    serde_norway::Deserializer::from_str(&text)
        .map(|doc| {
            let v = serde_norway::Value::deserialize(doc)
                .unwrap_or_else(|e| panic!("{} is not valid YAML: {e}", path.display()));
            serde_json::to_value(v).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
        })
        .filter(|v| !v.is_null())
        .collect()
}

fn yaml(path: &Path) -> Value {
    let mut docs = yaml_docs(path);
    assert_eq!(
        docs.len(),
        1,
        "{}: expected one YAML document",
        path.display()
    );
    docs.remove(0)
}

/// Every string under a key named `key`, anywhere in `v`.
fn strings_under(v: &Value, key: &str, out: &mut Vec<String>) {
    match v {
        Value::Object(m) => {
            for (k, v) in m {
                if k == key {
                    if let Value::String(s) = v {
                        out.push(s.clone());
                    }
                }
                strings_under(v, key, out);
            }
        }
        Value::Array(a) => a.iter().for_each(|v| strings_under(v, key, out)),
        _ => {}
    }
}

/// The `lark_sink_*` names a PromQL expression mentions.
fn metric_names(expr: &str) -> Vec<String> {
    let mut names = Vec::new();
    let bytes = expr.as_bytes();
    let mut i = 0;
    while let Some(pos) = expr[i..].find("lark_sink_") {
        let start = i + pos;
        let boundary = start == 0 || {
            let c = bytes[start - 1];
            !(c.is_ascii_alphanumeric() || c == b'_')
        };
        let mut end = start + "lark_sink_".len();
        while end < bytes.len() && (bytes[end].is_ascii_lowercase() || bytes[end] == b'_') {
            end += 1;
        }
        if boundary {
            names.push(expr[start..end].to_string());
        }
        i = end;
    }
    names
}

/// Resolves a name used in a query to the metric of METRICS it belongs to, or `None`.
fn exported(name: &str) -> Option<&'static str> {
    for &(metric, kind, _) in METRICS {
        if name == metric {
            return Some(metric);
        }
        if kind == "histogram" {
            for suffix in ["_bucket", "_sum", "_count"] {
                if name.strip_suffix(suffix) == Some(metric) {
                    return Some(metric);
                }
            }
        }
    }
    None
}

/// Checks the metric names in `exprs`; returns the METRICS entries they cover.
fn check_exprs(what: &str, exprs: &[String]) -> BTreeSet<&'static str> {
    let mut used = BTreeSet::new();
    for expr in exprs {
        for name in metric_names(expr) {
            match exported(&name) {
                Some(m) => {
                    used.insert(m);
                }
                None => panic!("{what}: '{name}' is not a metric lark-sink exports (telemetry::METRICS): {expr}"),
            }
        }
    }
    used
}

/// Sets the environment variables the deploy configs reference, so substitution succeeds.
fn secret_env() {
    std::env::set_var("LARK_APP_ID", "cli_test");
    std::env::set_var("LARK_APP_SECRET", "test-secret");
    std::env::set_var("LARK_SINK_ADMIN_TOKEN", "test-token");
    std::env::set_var("KAFKA_PASSWORD", "test-password");
}

fn connector_config(what: &str, json: &Value) -> ConnectorConfig {
    secret_env();
    ConnectorConfig::from_json(json)
        .unwrap_or_else(|e| panic!("{what}: not a valid connector config: {e}"))
}

#[test]
fn metric_names_are_found_in_expressions() {
    assert_eq!(
        metric_names("sum(rate(lark_sink_a_total{x=\"y\"}[5m])) / foo_lark_sink_b"),
        vec!["lark_sink_a_total"]
    );
    assert_eq!(
        exported("lark_sink_delivery_latency_seconds_bucket"),
        Some("lark_sink_delivery_latency_seconds")
    );
    assert_eq!(exported("lark_sink_records_received_total_sum"), None);
    assert_eq!(exported("lark_sink_nope"), None);
}

#[test]
fn every_json_file_under_deploy_parses() {
    let all = files(&deploy(), &[".json"]);
    assert!(
        all.len() >= 4,
        "expected the examples and the dashboard: {all:?}"
    );
    for path in &all {
        serde_json::from_str::<Value>(&read(path))
            .unwrap_or_else(|e| panic!("{} is not valid JSON: {e}", path.display()));
    }
    for path in files(&deploy(), &[".jsonl"]) {
        for (n, line) in read(&path).lines().enumerate() {
            if !line.trim().is_empty() {
                serde_json::from_str::<Value>(line).unwrap_or_else(|e| {
                    panic!("{}:{}: not valid JSON: {e}", path.display(), n + 1)
                });
            }
        }
    }
}

#[test]
fn the_dashboard_is_built_on_exported_metrics_only() {
    let path = deploy().join("grafana/lark-sink-dashboard.json");
    let dash: Value = serde_json::from_str(&read(&path)).unwrap();
    assert!(dash["schemaVersion"].as_u64().unwrap() >= 36);
    // The data source is chosen at import (__inputs) or with the template variable.
    assert!(dash["templating"]["list"]
        .as_array()
        .unwrap()
        .iter()
        .any(|v| v["name"] == "DS_PROMETHEUS" && v["type"] == "datasource"));
    let mut exprs = Vec::new();
    strings_under(&dash, "expr", &mut exprs);
    assert!(exprs.len() >= 15, "{exprs:?}");
    let used = check_exprs("dashboard", &exprs);
    let missing: Vec<_> = METRICS
        .iter()
        .map(|m| m.0)
        .filter(|m| !used.contains(m))
        .collect();
    assert!(
        missing.is_empty(),
        "metrics without a dashboard panel: {missing:?}"
    );
    for panel in dash["panels"].as_array().unwrap() {
        if panel["type"] != "row" {
            assert_eq!(
                panel["datasource"]["uid"], "${DS_PROMETHEUS}",
                "{}",
                panel["title"]
            );
        }
    }
    // The 1000/min ceiling is drawn on the delivery panel.
    assert!(read(&path).contains("\"value\": 1000"));
}

#[test]
fn the_alerts_are_valid_rules_on_exported_metrics() {
    let path = deploy().join("prometheus/alerts.yaml");
    let rules = yaml(&path);
    let mut exprs = Vec::new();
    let mut names = BTreeSet::new();
    for group in rules["groups"].as_array().expect("groups") {
        assert!(group["name"].is_string());
        for rule in group["rules"].as_array().expect("rules") {
            let name = rule["alert"].as_str().expect("every rule is an alert");
            assert!(names.insert(name.to_string()), "alert {name} defined twice");
            let expr = rule["expr"]
                .as_str()
                .unwrap_or_else(|| panic!("{name}: expr"));
            assert!(
                rule["labels"]["severity"].is_string(),
                "{name}: severity label"
            );
            assert!(
                rule["annotations"]["summary"].is_string(),
                "{name}: summary"
            );
            exprs.push(expr.to_string());
        }
    }
    let used = check_exprs("alerts", &exprs);
    for metric in [
        "lark_sink_consumer_lag",
        "lark_sink_dead_letters_total",
        "lark_sink_lark_responses_total",
        "lark_sink_paused_partitions",
        "lark_sink_token_refreshes_total",
    ] {
        assert!(used.contains(metric), "no alert on {metric}");
    }
    assert!(exprs.iter().any(|e| e.contains("code=~\"10003|10014\"")));
    for file in files(&deploy().join("prometheus"), &[".yaml", ".yml"]) {
        assert!(!yaml_docs(&file).is_empty(), "{}", file.display());
    }
    // promtool (Debian package prometheus; scripts/test.sh installs it) checks the PromQL and
    // runs the rules' unit tests, alerts.test.yaml.
    match Command::new("promtool").arg("--version").output() {
        Ok(_) => {
            for args in [
                ["check", "rules", "alerts.yaml"],
                ["test", "rules", "alerts.test.yaml"],
            ] {
                let out = Command::new("promtool")
                    .args(args)
                    .current_dir(deploy().join("prometheus"))
                    .output()
                    .unwrap();
                assert!(
                    out.status.success(),
                    "promtool {}:\n{}{}",
                    args.join(" "),
                    String::from_utf8_lossy(&out.stdout),
                    String::from_utf8_lossy(&out.stderr)
                );
            }
        }
        Err(_) => eprintln!("promtool is not installed: the rules' PromQL was not checked"),
    }
    // The chart's PrometheusRule ships the same rules.
    assert_eq!(
        read(&path),
        read(&deploy().join("helm/lark-sink/files/alerts.yaml")),
        "deploy/helm/lark-sink/files/alerts.yaml must be a copy of deploy/prometheus/alerts.yaml"
    );
}

#[test]
fn the_operations_guide_documents_every_metric() {
    let guide = read(&root().join("docs/operations.md"));
    for (name, _, _) in METRICS {
        assert!(
            guide.contains(&format!("`{name}`")),
            "docs/operations.md does not document {name}"
        );
    }
}

#[test]
fn the_kubernetes_manifests_are_valid() {
    let dir = deploy().join("kubernetes");
    let all = files(&dir, &[".yaml", ".yml"]);
    assert!(all.len() >= 5, "{all:?}");
    let mut kinds = BTreeSet::new();
    for path in &all {
        for doc in yaml_docs(path) {
            let kind = doc["kind"]
                .as_str()
                .unwrap_or_else(|| panic!("{}: kind", path.display()));
            assert!(
                doc["apiVersion"].is_string(),
                "{}: apiVersion",
                path.display()
            );
            if kind != "Kustomization" {
                assert_eq!(doc["metadata"]["name"], "lark-sink", "{}", path.display());
            }
            kinds.insert(kind.to_string());
        }
    }
    for kind in [
        "ConfigMap",
        "Secret",
        "Deployment",
        "Service",
        "ServiceMonitor",
    ] {
        assert!(kinds.contains(kind), "no {kind} in deploy/kubernetes");
    }

    // The config in the ConfigMap is a valid connector config, listening for probes.
    let cm = yaml(&dir.join("configmap.yaml"));
    let json: Value = serde_json::from_str(cm["data"]["connector.json"].as_str().unwrap())
        .expect("connector.json in the ConfigMap is JSON");
    let cfg = connector_config("configmap.yaml", &json);
    assert_eq!(cfg.admin.listener, Some("0.0.0.0:8083".parse().unwrap()));
    let timeout = cfg.shutdown_timeout.as_secs();

    let dep = yaml(&dir.join("deployment.yaml"));
    let spec = &dep["spec"]["template"]["spec"];
    assert!(spec["terminationGracePeriodSeconds"].as_u64().unwrap() > timeout);
    assert_eq!(spec["securityContext"]["runAsNonRoot"], true);
    let c = &spec["containers"][0];
    assert_eq!(c["ports"][0]["containerPort"], 8083);
    assert_eq!(c["ports"][0]["name"], "admin");
    assert_eq!(c["livenessProbe"]["httpGet"]["path"], "/healthz");
    assert_eq!(c["readinessProbe"]["httpGet"]["path"], "/readyz");
    let args: Vec<&str> = c["args"]
        .as_array()
        .unwrap()
        .iter()
        .map(|a| a.as_str().unwrap())
        .collect();
    assert_eq!(
        &args[args.len() - 3..],
        ["run", "--config", "/etc/lark-sink/connector.json"]
    );
    // Every ${env:NAME} of the config is set by the pod.
    let env: Vec<&str> = c["env"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["name"].as_str().unwrap())
        .collect();
    for var in env_refs(&json) {
        assert!(
            env.contains(&var.as_str()),
            "deployment.yaml does not set {var}"
        );
    }
    let svc = yaml(&dir.join("service.yaml"));
    assert_eq!(svc["spec"]["ports"][0]["name"], "admin");
    assert_eq!(svc["spec"]["ports"][0]["port"], 8083);
    let sm = yaml(&dir.join("servicemonitor.yaml"));
    assert_eq!(sm["apiVersion"], "monitoring.coreos.com/v1");
    assert_eq!(sm["spec"]["endpoints"][0]["port"], "admin");
    assert_eq!(sm["spec"]["endpoints"][0]["path"], "/metrics");
}

/// The NAMEs of `${env:NAME}` references in a connector config.
fn env_refs(json: &Value) -> Vec<String> {
    let mut out = Vec::new();
    for v in json["config"].as_object().unwrap().values() {
        let mut s = v.as_str().unwrap_or_default();
        while let Some(i) = s.find("${env:") {
            let rest = &s[i + 6..];
            let end = rest.find('}').unwrap();
            out.push(rest[..end].to_string());
            s = &rest[end..];
        }
    }
    out
}

#[test]
fn the_helm_chart_is_valid() {
    let dir = deploy().join("helm/lark-sink");
    let chart = yaml(&dir.join("Chart.yaml"));
    assert_eq!(chart["apiVersion"], "v2");
    assert_eq!(chart["name"], "lark-sink");
    for key in ["version", "appVersion"] {
        assert!(chart[key].is_string(), "Chart.yaml: {key}");
    }
    let values = yaml(&dir.join("values.yaml"));
    assert_eq!(values["replicaCount"], 2);
    assert_eq!(values["podSecurityContext"]["runAsNonRoot"], true);
    assert_eq!(values["serviceMonitor"]["enabled"], false);
    // The default config, with the keys the chart sets, is a valid connector config.
    let mut config = values["connector"]["config"].clone();
    config["admin.listener"] = "0.0.0.0:8083".into();
    config["lark.app.secret"] = "${env:LARK_APP_SECRET}".into();
    let json = serde_json::json!({"name": values["connector"]["name"], "config": config});
    connector_config("values.yaml", &json);
    for t in [
        "_helpers.tpl",
        "configmap.yaml",
        "secret.yaml",
        "deployment.yaml",
        "service.yaml",
        "servicemonitor.yaml",
        "pdb.yaml",
        "NOTES.txt",
    ] {
        assert!(dir.join("templates").join(t).is_file(), "templates/{t}");
    }

    // Rendering needs helm, which is not installed everywhere (not in Debian's archive).
    let Ok(out) = Command::new("helm").arg("version").output() else {
        eprintln!("helm is not installed: the chart's templates were not rendered");
        return;
    };
    assert!(out.status.success());
    let lint = Command::new("helm").arg("lint").arg(&dir).output().unwrap();
    assert!(
        lint.status.success(),
        "helm lint:\n{}",
        String::from_utf8_lossy(&lint.stdout)
    );
    let out = Command::new("helm")
        .args(["template", "t", dir.to_str().unwrap()])
        .args(["--set", "serviceMonitor.enabled=true,podDisruptionBudget.enabled=true,prometheusRule.enabled=true"])
        .args(["--set", "secrets.larkAppSecret=s,secrets.adminToken=t"])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "helm template:\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let text = String::from_utf8(out.stdout).unwrap();
    let mut kinds = BTreeSet::new();
    for doc in serde_norway::Deserializer::from_str(&text) {
        let doc = serde_json::to_value(serde_norway::Value::deserialize(doc).unwrap()).unwrap();
        if doc.is_null() {
            continue;
        }
        let kind = doc["kind"].as_str().unwrap().to_string();
        if kind == "ConfigMap" {
            let json: Value =
                serde_json::from_str(doc["data"]["connector.json"].as_str().unwrap()).unwrap();
            let cfg = connector_config("rendered ConfigMap", &json);
            assert_eq!(cfg.admin.listener, Some("0.0.0.0:8083".parse().unwrap()));
            assert!(cfg.admin.token.is_some());
        }
        kinds.insert(kind);
    }
    for kind in [
        "ConfigMap",
        "Secret",
        "Deployment",
        "Service",
        "ServiceMonitor",
        "PodDisruptionBudget",
        "PrometheusRule",
    ] {
        assert!(
            kinds.contains(kind),
            "helm template rendered no {kind}: {kinds:?}"
        );
    }
}

#[test]
fn the_systemd_unit_runs_the_connector() {
    let unit = read(&deploy().join("systemd/lark-sink.service"));
    let lines: Vec<&str> = unit.lines().map(str::trim).collect();
    for line in [
        "ExecStart=/usr/local/bin/lark-sink run --config /etc/lark-sink/connector.json",
        "EnvironmentFile=-/etc/lark-sink/env",
        "Restart=on-failure",
        "KillSignal=SIGTERM",
        "TimeoutStopSec=45",
        "NoNewPrivileges=yes",
        "ProtectSystem=strict",
        "ProtectHome=yes",
        "PrivateTmp=yes",
    ] {
        assert!(lines.contains(&line), "lark-sink.service lacks {line}");
    }
    for section in ["[Unit]", "[Service]", "[Install]"] {
        assert!(
            lines.contains(&section),
            "lark-sink.service lacks {section}"
        );
    }
}

#[test]
fn the_dockerfile_builds_and_runs_the_binary() {
    let file = read(&deploy().join("docker/Dockerfile"));
    assert!(file.contains("FROM rust:${RUST_VERSION}-bookworm AS builder"));
    assert!(file.contains("FROM debian:bookworm-slim"));
    assert!(file.contains("cargo build --release --locked -p lark-sink"));
    assert!(file.contains("USER 10001:10001"));
    assert!(file.contains("EXPOSE 8083"));
    assert!(file.contains(r#"ENTRYPOINT ["/usr/local/bin/lark-sink"]"#));
    assert!(file.contains(r#"CMD ["run", "--config", "/etc/lark-sink/connector.json"]"#));
    // The builder's Rust is at least the workspace's rust-version.
    let want = read(&root().join("Cargo.toml"))
        .lines()
        .find_map(|l| {
            l.strip_prefix("rust-version = \"")
                .map(|v| v.trim_end_matches('"').to_string())
        })
        .unwrap();
    let have = file
        .lines()
        .find_map(|l| l.strip_prefix("ARG RUST_VERSION="))
        .unwrap()
        .to_string();
    let parse = |v: &str| -> Vec<u32> { v.split('.').map(|p| p.parse().unwrap()).collect() };
    assert!(
        parse(&have) >= parse(&want),
        "rust:{have} is older than rust-version {want}"
    );
    let ignore = read(&root().join(".dockerignore"));
    for entry in ["target/", ".git/"] {
        assert!(
            ignore.lines().any(|l| l.trim() == entry),
            ".dockerignore lacks {entry}"
        );
    }
}
