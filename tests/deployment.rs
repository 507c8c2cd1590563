//! What an operator deploys stays in step with the binary it runs: the
//! Kubernetes manifests of `deploy/` (rendered by the real `kubectl
//! kustomize`), the `Dockerfile`, and the systemd units. An operator would
//! notice a failure as a pod that never becomes ready, a Service that sends
//! producers nowhere, a configuration the binary refuses at start, a rollout
//! whose SIGKILL cuts a frontend's drain short (browsers lose their place),
//! or an image that does not build the way the README does.
//!
//! The checks read the renderings committed in `deploy/rendered/` (written
//! by `deploy/render`), so they run on any machine; where `kubectl` is
//! installed, each overlay is rendered again and a stale file fails the
//! test. The systemd check needs `systemd-analyze` (`.ci/run` installs
//! it). Neither talks to a cluster or a running systemd.

use meridian_config::{Config, StoreBackend};
use serde_json::Value;
use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::process::Command;
use yaml_rust2::{Yaml, YamlLoader};

/// The overlays an operator applies.
const OVERLAYS: &[&str] = &["overlays/dev", "overlays/summit"];

/// Secrets the manifests use but do not create: the ingest certificate comes
/// from cert-manager or the operator (docs/deployment.md).
const EXTERNAL_SECRETS: &[&str] = &["meridian-ingest-tls"];

fn repo() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

fn deploy() -> PathBuf {
    repo().join("deploy")
}

fn read(path: &Path) -> String {
    std::fs::read_to_string(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

// ---------------------------------------------------------------- rendering

/// The objects of the committed rendering `deploy/rendered/<name>.yaml`
/// of kustomization `dir`; where `kubectl` exists, also renders `dir` and
/// fails if the committed file is stale.
fn render(name: &str, dir: &Path) -> Rendered {
    let committed_path = deploy().join("rendered").join(format!("{name}.yaml"));
    let committed = read(&committed_path);
    let kubectl = Command::new("kubectl").args(["version", "--client"]).output();
    if kubectl.is_ok_and(|o| o.status.success()) {
        let out = Command::new("kubectl")
            .arg("kustomize")
            .arg(dir)
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "kubectl kustomize {} failed:\n{}",
            dir.display(),
            String::from_utf8_lossy(&out.stderr)
        );
        assert!(
            String::from_utf8_lossy(&out.stdout) == committed,
            "{} is stale: run deploy/render after editing deploy/",
            committed_path.display()
        );
    }
    let objects: Vec<Value> = parse_yaml(&committed, &committed_path.display().to_string())
        .into_iter()
        .filter(|v| !v.is_null())
        .collect();
    assert!(!objects.is_empty(), "{} renders nothing", dir.display());
    Rendered {
        name: dir.display().to_string(),
        objects,
    }
}

/// The committed rendering's name of an overlay (`overlays/dev` → `dev`).
fn rendered_name(overlay: &str) -> &str {
    overlay.rsplit('/').next().unwrap_or(overlay)
}

/// Whether an overlay runs on Redis Cluster (the summit's does; dev has one Redis).
fn on_cluster(overlay: &str) -> bool {
    overlay == "overlays/summit"
}

fn parse_yaml(text: &str, what: &str) -> Vec<Value> {
    YamlLoader::load_from_str(text)
        .unwrap_or_else(|e| panic!("{what}: invalid YAML: {e}"))
        .iter()
        .map(to_json)
        .collect()
}

fn to_json(y: &Yaml) -> Value {
    match y {
        Yaml::Real(s) => s.parse::<f64>().map_or(Value::String(s.clone()), Value::from),
        Yaml::Integer(i) => Value::from(*i),
        Yaml::String(s) => Value::String(s.clone()),
        Yaml::Boolean(b) => Value::Bool(*b),
        Yaml::Array(items) => Value::Array(items.iter().map(to_json).collect()),
        Yaml::Hash(map) => Value::Object(
            map.iter()
                .map(|(k, v)| {
                    let key = match k {
                        Yaml::String(s) => s.clone(),
                        Yaml::Integer(i) => i.to_string(),
                        Yaml::Boolean(b) => b.to_string(),
                        other => panic!("unsupported YAML key {other:?}"),
                    };
                    (key, to_json(v))
                })
                .collect(),
        ),
        Yaml::Null => Value::Null,
        Yaml::Alias(_) | Yaml::BadValue => panic!("unsupported YAML node {y:?}"),
    }
}

/// Standard base64, as Kubernetes stores `Secret.data`.
fn base64_decode(text: &str) -> Vec<u8> {
    const ALPHABET: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut out = Vec::new();
    let (mut acc, mut bits) = (0u32, 0u32);
    for c in text.bytes().filter(|c| !c.is_ascii_whitespace() && *c != b'=') {
        let v = ALPHABET.iter().position(|&a| a == c).expect("base64 character") as u32;
        acc = (acc << 6) | v;
        bits += 6;
        if bits >= 8 {
            bits -= 8;
            out.push((acc >> bits) as u8);
        }
    }
    out
}

struct Rendered {
    name: String,
    objects: Vec<Value>,
}

impl Rendered {
    fn of_kind<'a>(&'a self, kind: &'a str) -> impl Iterator<Item = &'a Value> + 'a {
        self.objects.iter().filter(move |o| o["kind"] == kind)
    }

    fn get(&self, kind: &str, name: &str) -> Option<&Value> {
        self.objects
            .iter()
            .find(|o| o["kind"] == kind && o["metadata"]["name"] == name)
    }

    /// Deployments and StatefulSets.
    fn workloads(&self) -> impl Iterator<Item = &Value> {
        self.objects
            .iter()
            .filter(|o| o["kind"] == "Deployment" || o["kind"] == "StatefulSet")
    }

    /// The files of a ConfigMap or Secret (decoded), by key.
    fn files(&self, kind: &str, name: &str) -> BTreeMap<String, String> {
        let object = self
            .get(kind, name)
            .unwrap_or_else(|| panic!("{}: no {kind} {name}", self.name));
        let decode = |v: &Value| match kind {
            "Secret" => String::from_utf8(base64_decode(v.as_str().unwrap())).unwrap(),
            _ => v.as_str().unwrap().to_string(),
        };
        object["data"]
            .as_object()
            .map(|data| data.iter().map(|(k, v)| (k.clone(), decode(v))).collect())
            .unwrap_or_default()
    }

    /// Workloads whose pod template carries every label of `selector`.
    fn selected(&self, selector: &Value) -> Vec<&Value> {
        let selector = selector.as_object().expect("a selector map");
        self.workloads()
            .filter(|w| {
                let labels = &w["spec"]["template"]["metadata"]["labels"];
                selector.iter().all(|(k, v)| &labels[k] == v)
            })
            .collect()
    }
}

fn name(o: &Value) -> String {
    format!(
        "{}/{}",
        o["kind"].as_str().unwrap_or("?"),
        o["metadata"]["name"].as_str().unwrap_or("?")
    )
}

fn containers(workload: &Value) -> &Vec<Value> {
    workload["spec"]["template"]["spec"]["containers"]
        .as_array()
        .unwrap_or_else(|| panic!("{} has no containers", name(workload)))
}

fn is_meridian(container: &Value) -> bool {
    let image = container["image"].as_str().unwrap_or_default();
    let last = image.rsplit('/').next().unwrap_or_default();
    last == "meridian" || last.starts_with("meridian:")
}

fn args(container: &Value) -> Vec<String> {
    container["args"]
        .as_array()
        .map(|a| a.iter().map(|v| v.as_str().unwrap().to_string()).collect())
        .unwrap_or_default()
}

fn flag(args: &[String], flag: &str) -> Option<String> {
    args.iter().position(|a| a == flag).map(|i| args[i + 1].clone())
}

/// A container port matching `port` (a name or a number), with its protocol.
fn container_port<'a>(container: &'a Value, port: &Value) -> Option<&'a Value> {
    container["ports"].as_array()?.iter().find(|p| match port {
        Value::String(s) => p["name"] == s.as_str(),
        n => &p["containerPort"] == n,
    })
}

/// CPU in millicores or memory in bytes, from a Kubernetes quantity.
fn quantity(v: &Value) -> f64 {
    let s = match v {
        Value::Number(n) => return n.as_f64().unwrap(),
        Value::String(s) => s.as_str(),
        other => panic!("not a quantity: {other}"),
    };
    let units: &[(&str, f64)] = &[
        ("Ki", 1024.0),
        ("Mi", 1024.0 * 1024.0),
        ("Gi", 1024.0 * 1024.0 * 1024.0),
        ("m", 0.001),
        ("k", 1e3),
        ("M", 1e6),
        ("G", 1e9),
    ];
    for (suffix, factor) in units {
        if let Some(n) = s.strip_suffix(suffix) {
            return n.parse::<f64>().unwrap_or_else(|_| panic!("quantity {s}")) * factor;
        }
    }
    s.parse().unwrap_or_else(|_| panic!("quantity {s}"))
}

// --------------------------------------------------------- kustomizations

/// Every file a kustomization names (resources, components, generator
/// files, patch files) exists, and every manifest or config file under
/// deploy/ is named by one: nothing is silently left out of a render.
#[test]
fn every_kustomization_names_files_that_exist_and_every_file_is_named() {
    let mut named = BTreeSet::new();
    let mut kustomizations = Vec::new();
    let mut all_files = Vec::new();
    walk(&deploy(), &mut |path| {
        if path.starts_with(deploy().join("rendered")) {
            // deploy/render's output, checked against kubectl where it exists.
        } else if path.file_name().is_some_and(|n| n == "kustomization.yaml") {
            kustomizations.push(path.to_path_buf());
        } else if path.extension().is_some_and(|e| e == "yaml" || e == "toml") {
            all_files.push(path.to_path_buf());
        }
    });
    assert!(
        kustomizations.len() >= 4,
        "base, component and two overlays: {kustomizations:?}"
    );
    for k in &kustomizations {
        let dir = k.parent().unwrap();
        let doc = parse_yaml(&read(k), &k.display().to_string()).remove(0);
        let mut refs: Vec<String> = Vec::new();
        for key in ["resources", "components"] {
            refs.extend(
                doc[key]
                    .as_array()
                    .into_iter()
                    .flatten()
                    .map(|v| v.as_str().unwrap().to_string()),
            );
        }
        for key in ["configMapGenerator", "secretGenerator"] {
            for generator in doc[key].as_array().into_iter().flatten() {
                refs.extend(
                    generator["files"]
                        .as_array()
                        .into_iter()
                        .flatten()
                        .map(|v| v.as_str().unwrap().rsplit('=').next().unwrap().to_string()),
                );
            }
        }
        for patch in doc["patches"].as_array().into_iter().flatten() {
            if let Some(path) = patch["path"].as_str() {
                refs.push(path.to_string());
            }
        }
        for r in refs {
            let path = dir.join(&r);
            assert!(path.exists(), "{} names {r}, which does not exist", k.display());
            named.insert(path.canonicalize().unwrap());
        }
    }
    for file in all_files {
        assert!(
            named.contains(&file.canonicalize().unwrap()),
            "{} is under deploy/ but no kustomization names it",
            file.display()
        );
    }
}

fn walk(dir: &Path, f: &mut dyn FnMut(&Path)) {
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        if path.is_dir() {
            walk(&path, f);
        } else {
            f(&path);
        }
    }
}

// ------------------------------------------------------------- structure

/// Every render: workloads' selectors match their pods, every container is
/// probed and has requests and limits, Meridian containers are probed on
/// /readyz and /healthz of a port they declare, Services, PDBs, the HPA and
/// the ServiceMonitor point at things that exist.
#[test]
fn every_render_has_probed_resourced_workloads_and_services_that_reach_them() {
    let renders: Vec<Rendered> = OVERLAYS
        .iter()
        .map(|o| render(rendered_name(o), &deploy().join(o)))
        .collect();
    for r in &renders {
        check_structure(r);
    }
}

fn check_structure(r: &Rendered) {
    let at = |o: &Value| format!("{}: {}", r.name, name(o));
    for w in r.workloads() {
        let selector = w["spec"]["selector"]["matchLabels"]
            .as_object()
            .expect("matchLabels");
        let labels = &w["spec"]["template"]["metadata"]["labels"];
        for (k, v) in selector {
            assert_eq!(
                &labels[k],
                v,
                "{}: selector {k} does not match the pod template",
                at(w)
            );
        }
        for c in containers(w) {
            let cname = c["name"].as_str().unwrap();
            for probe in ["readinessProbe", "livenessProbe"] {
                assert!(c[probe].is_object(), "{} container {cname}: no {probe}", at(w));
            }
            for (probe, path) in [("readinessProbe", "/readyz"), ("livenessProbe", "/healthz")] {
                if !is_meridian(c) {
                    continue;
                }
                let get = &c[probe]["httpGet"];
                assert_eq!(get["path"], path, "{} container {cname}: {probe} path", at(w));
                assert!(
                    container_port(c, &get["port"]).is_some(),
                    "{} container {cname}: {probe} port {} is not a declared port",
                    at(w),
                    get["port"]
                );
            }
            for which in ["requests", "limits"] {
                for resource in ["cpu", "memory"] {
                    assert!(
                        !c["resources"][which][resource].is_null(),
                        "{} container {cname}: no resources.{which}.{resource}",
                        at(w)
                    );
                }
            }
            for resource in ["cpu", "memory"] {
                assert!(
                    quantity(&c["resources"]["requests"][resource])
                        <= quantity(&c["resources"]["limits"][resource]),
                    "{} container {cname}: {resource} request above its limit",
                    at(w)
                );
            }
        }
        check_volumes(r, w);
    }
    for s in r.of_kind("Service") {
        let pods = r.selected(&s["spec"]["selector"]);
        assert!(!pods.is_empty(), "{} selects no workload", at(s));
        for port in s["spec"]["ports"].as_array().unwrap() {
            let protocol = port["protocol"].as_str().unwrap_or("TCP");
            for p in &pods {
                let found = containers(p)
                    .iter()
                    .filter_map(|c| container_port(c, &port["targetPort"]))
                    .next()
                    .unwrap_or_else(|| {
                        panic!(
                            "{} port {}: {} declares no such port",
                            at(s),
                            port["name"],
                            name(p)
                        )
                    });
                assert_eq!(
                    found["protocol"].as_str().unwrap_or("TCP"),
                    protocol,
                    "{} port {}: protocol differs from {}",
                    at(s),
                    port["name"],
                    name(p)
                );
            }
        }
    }
    for pdb in r.of_kind("PodDisruptionBudget") {
        assert!(
            !r.selected(&pdb["spec"]["selector"]["matchLabels"]).is_empty(),
            "{} selects no workload",
            at(pdb)
        );
    }
    for hpa in r.of_kind("HorizontalPodAutoscaler") {
        let target = &hpa["spec"]["scaleTargetRef"];
        assert!(
            r.get(target["kind"].as_str().unwrap(), target["name"].as_str().unwrap())
                .is_some(),
            "{}: scale target {target} does not exist",
            at(hpa)
        );
    }
    let monitors: Vec<_> = r.of_kind("ServiceMonitor").collect();
    assert_eq!(monitors.len(), 1, "{}: one ServiceMonitor", r.name);
    let monitor = monitors[0];
    let selector = monitor["spec"]["selector"]["matchLabels"].as_object().unwrap();
    let services: Vec<_> = r
        .of_kind("Service")
        .filter(|s| selector.iter().all(|(k, v)| &s["metadata"]["labels"][k] == v))
        .collect();
    let endpoint_ports: Vec<&str> = monitor["spec"]["endpoints"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["port"].as_str().unwrap())
        .collect();
    let port_names = |s: &Value| -> Vec<String> {
        s["spec"]["ports"]
            .as_array()
            .unwrap()
            .iter()
            .map(|p| p["name"].as_str().unwrap_or_default().to_string())
            .collect()
    };
    for port in &endpoint_ports {
        assert!(
            services.iter().any(|s| port_names(s).iter().any(|n| n == port)),
            "{}: ServiceMonitor port {port} is on no selected Service",
            r.name
        );
    }
    for role in ["ingest", "frontend", "producer", "commander"] {
        let scraped = services.iter().any(|s| {
            s["metadata"]["labels"]["app.kubernetes.io/component"] == role
                && port_names(s).iter().any(|n| endpoint_ports.contains(&n.as_str()))
        });
        assert!(scraped, "{}: no Service of role {role} is scraped", r.name);
    }
}

/// Every ConfigMap or Secret a pod mounts exists (or is an expected external
/// Secret), with the keys it mounts.
fn check_volumes(r: &Rendered, w: &Value) {
    for v in w["spec"]["template"]["spec"]["volumes"]
        .as_array()
        .into_iter()
        .flatten()
    {
        let (kind, source) = if v["configMap"].is_object() {
            ("ConfigMap", &v["configMap"]["name"])
        } else if v["secret"].is_object() {
            ("Secret", &v["secret"]["secretName"])
        } else {
            continue;
        };
        let source = source.as_str().unwrap();
        if kind == "Secret" && EXTERNAL_SECRETS.contains(&source) {
            continue;
        }
        let files = r.files(kind, source);
        let spec = if kind == "Secret" {
            &v["secret"]
        } else {
            &v["configMap"]
        };
        for item in spec["items"].as_array().into_iter().flatten() {
            let key = item["key"].as_str().unwrap();
            assert!(
                files.contains_key(key),
                "{}: {kind} {source} has no key {key}",
                r.name
            );
        }
        for c in containers(w) {
            for m in c["volumeMounts"].as_array().into_iter().flatten() {
                if m["name"] == v["name"] {
                    if let Some(sub) = m["subPath"].as_str() {
                        assert!(
                            files.contains_key(sub),
                            "{}: {} mounts {sub} of {kind} {source}, which has no such key",
                            r.name,
                            name(w)
                        );
                    }
                }
            }
        }
    }
}

// ------------------------------------------------------------ configuration

/// The Meridian configuration a container starts with: the file its
/// `--config` names, through its volume mount, from the rendered ConfigMap
/// or Secret.
fn mounted_config(r: &Rendered, w: &Value, c: &Value) -> String {
    let path = flag(&args(c), "--config").unwrap_or_else(|| panic!("{}: no --config", name(w)));
    let mount = c["volumeMounts"]
        .as_array()
        .into_iter()
        .flatten()
        .find(|m| m["mountPath"] == path.as_str())
        .unwrap_or_else(|| panic!("{}: --config {path} is not a mounted file", name(w)));
    let volume = w["spec"]["template"]["spec"]["volumes"]
        .as_array()
        .unwrap()
        .iter()
        .find(|v| v["name"] == mount["name"])
        .unwrap();
    let (kind, source) = if volume["configMap"].is_object() {
        ("ConfigMap", volume["configMap"]["name"].as_str().unwrap())
    } else {
        ("Secret", volume["secret"]["secretName"].as_str().unwrap())
    };
    let key = mount["subPath"]
        .as_str()
        .expect("a config file is mounted with subPath");
    r.files(kind, source).remove(key).unwrap()
}

/// The `--help` text of `meridian <subcommand>`.
fn help(subcommand: &str) -> String {
    let out = Command::new(env!("CARGO_BIN_EXE_meridian"))
        .args([subcommand, "--help"])
        .output()
        .unwrap();
    assert!(out.status.success(), "meridian {subcommand} --help failed");
    String::from_utf8(out.stdout).unwrap()
}

/// Each flag in `args` (after the subcommand) is one `meridian` accepts.
fn check_flags(args: &[String], what: &str) {
    let help = help(&args[0]);
    for a in args.iter().filter(|a| a.starts_with("--")) {
        assert!(
            help.contains(&format!("{a} ")),
            "{what}: `meridian {}` has no flag {a}",
            args[0]
        );
    }
}

/// How one render's Meridian pods are configured.
struct Site {
    /// Role (the pod's component label) → parsed configurations.
    configs: Vec<(String, Config)>,
}

/// Parses every Meridian container's configuration with the real
/// `meridian-config` types and checks it against its pod; `cluster`: the
/// store is the Redis Cluster StatefulSet's nodes.
fn check_configs(r: &Rendered, cluster: bool) -> Site {
    let mut configs = Vec::new();
    for w in r.workloads() {
        for c in containers(w).iter().filter(|c| is_meridian(c)) {
            let args = args(c);
            check_flags(&args, &format!("{}: {}", r.name, name(w)));
            let text = mounted_config(r, w, c);
            let config = if cluster {
                cluster_config(&text, &format!("{}: {}", r.name, name(w)))
            } else {
                Config::from_toml_str(&text)
                    .unwrap_or_else(|e| panic!("{}: {}: the mounted config: {e}", r.name, name(w)))
            };
            let role = w["spec"]["template"]["metadata"]["labels"]["app.kubernetes.io/component"]
                .as_str()
                .unwrap()
                .to_string();
            let port = |name: &str| {
                container_port(c, &Value::from(name))
                    .unwrap_or_else(|| panic!("{}: no port {name}", self::name(w)))["containerPort"]
                    .as_u64()
                    .unwrap()
            };
            match role.as_str() {
                "ingest" => {
                    assert_eq!(flag(&args, "--role").as_deref(), Some("ingest"));
                    assert_eq!(
                        u64::from(config.ingest.listen.port()),
                        port("quic"),
                        "ingest.listen"
                    );
                }
                "frontend" => {
                    assert_eq!(flag(&args, "--role").as_deref(), Some("frontend"));
                    // A deployed frontend is not a development run: it must start.
                    assert_eq!(
                        config.frontend.refuse_dev_token(),
                        None,
                        "{}: frontend.tokens",
                        name(w)
                    );
                    assert_eq!(
                        u64::from(config.frontend.listen.port()),
                        port("http"),
                        "frontend.listen"
                    );
                }
                "commander" => {
                    assert_eq!(
                        config.commander.refuse_dev_token(),
                        None,
                        "{}: commander.tokens",
                        name(w)
                    );
                    assert_eq!(
                        u64::from(config.commander.listen.port()),
                        port("api"),
                        "commander.listen"
                    );
                }
                "producer" => check_producer(r, w, &args, &config),
                other => panic!("{}: unknown role {other}", name(w)),
            }
            if role != "producer" && !cluster {
                assert_eq!(
                    config.store.backend,
                    StoreBackend::Redis,
                    "{}: a shared store",
                    name(w)
                );
                let host_port = config
                    .store
                    .redis_url
                    .trim_start_matches("redis://")
                    .trim_end_matches('/');
                check_service_address(r, host_port, "TCP", &format!("{}: store.redis_url", name(w)));
            }
            configs.push((role, config));
        }
    }
    // Every role that uses the store uses the same one, with the same
    // retention (the ingest writes it, the frontend reads it).
    let stores: BTreeSet<String> = configs
        .iter()
        .filter(|(role, _)| role != "producer")
        .map(|(_, c)| format!("{:?}", c.store))
        .collect();
    assert_eq!(
        stores.len(),
        1,
        "{}: roles disagree on [store]: {stores:?}",
        r.name
    );
    Site { configs }
}

/// `host:port` names a Service of this render with a port of that number
/// and protocol; returns the Service.
fn check_service_address<'a>(r: &'a Rendered, address: &str, protocol: &str, what: &str) -> &'a Value {
    let (host, port) = address
        .rsplit_once(':')
        .unwrap_or_else(|| panic!("{what}: {address} has no port"));
    let service = r
        .get("Service", host)
        .unwrap_or_else(|| panic!("{}: {what}: {host} is not a Service", r.name));
    let port: u64 = port.parse().unwrap();
    assert!(
        service["spec"]["ports"]
            .as_array()
            .unwrap()
            .iter()
            .any(|p| p["port"] == port && p["protocol"].as_str().unwrap_or("TCP") == protocol),
        "{}: {what}: Service {host} has no {protocol} port {port}",
        r.name
    );
    service
}

/// A producer serves the CSC its `--csc` names, alone, and reaches the
/// ingest pool its labels say, through a Service that selects that pool.
fn check_producer(r: &Rendered, w: &Value, args: &[String], config: &Config) {
    let csc = flag(args, "--csc").unwrap_or_else(|| panic!("{}: no --csc", name(w)));
    meridian_config::parse_csc(&csc).unwrap_or_else(|e| panic!("{}: --csc {csc}: {e}", name(w)));
    let labels = &w["spec"]["template"]["metadata"]["labels"];
    assert_eq!(
        labels["meridian.io/csc"],
        csc.replace(':', "-"),
        "{}: csc label",
        name(w)
    );
    assert_eq!(w["spec"]["replicas"], 1, "{}: one producer per CSC", name(w));
    assert_eq!(
        w["spec"]["strategy"]["type"],
        "Recreate",
        "{}: never two at once",
        name(w)
    );
    let mut p = config.producer.clone();
    p.csc = csc.clone();
    for address in p.ingest_addresses() {
        let service = check_service_address(r, address, "UDP", &format!("{}: ingest of {csc}", name(w)));
        assert_eq!(
            service["spec"]["selector"]["meridian.io/pool"],
            labels["meridian.io/pool"],
            "{}: {csc} is labelled for one pool but its config sends it to {address}",
            name(w)
        );
    }
}

/// A configuration on Redis Cluster: it parses with the real types, and a
/// role that uses the store (not a producer) names the cluster's nodes.
fn cluster_config(text: &str, what: &str) -> Config {
    let config = Config::from_toml_str(text).unwrap_or_else(|e| panic!("{what}: {e}"));
    if !text.contains("[store]") {
        return config; // a producer: it never talks to the store
    }
    assert_eq!(
        config.store.backend,
        StoreBackend::Cluster,
        "{what}: store.backend"
    );
    assert!(
        !config.store.cluster_nodes.is_empty(),
        "{what}: store.cluster_nodes"
    );
    for node in &config.store.cluster_nodes {
        let host = node.trim_start_matches("redis://");
        assert!(
            host.starts_with("meridian-redis-cluster-") && host.contains(".meridian-redis-cluster:6379"),
            "{what}: {host} is not a node of the meridian-redis-cluster StatefulSet"
        );
    }
    config
}

/// Every overlay's configuration parses with the real types and agrees with
/// the pods: listen ports are the declared ports, the store is a Service
/// (and the same for every role), each producer's pool is the ingest
/// Service of that pool, and the dedicated pools are what the issue asks:
/// MTM1M3 alone, ScriptQueue (and its Scripts) on three replicas.
#[test]
fn every_meridian_config_parses_and_agrees_with_its_pod() {
    for overlay in OVERLAYS {
        let r = render(rendered_name(overlay), &deploy().join(overlay));
        let site = check_configs(&r, on_cluster(overlay));
        let producer = &site
            .configs
            .iter()
            .find(|(role, _)| role == "producer")
            .expect("producers")
            .1
            .producer;
        let pool_of = |csc: &str| {
            let mut p = producer.clone();
            p.csc = csc.into();
            p.ingest_addresses().to_vec()
        };
        assert_eq!(pool_of("MTM1M3:0"), ["meridian-ingest-m1m3:7400"], "{overlay}");
        assert_eq!(
            pool_of("ScriptQueue:2"),
            ["meridian-ingest-scriptqueue:7400"],
            "{overlay}"
        );
        assert_eq!(
            pool_of("Script:100001"),
            ["meridian-ingest-scriptqueue:7400"],
            "{overlay}"
        );
        assert_eq!(pool_of("ATDome:0"), ["meridian-ingest-shared:7400"], "{overlay}");
        // Fixed pools: no autoscaler on an ingest Deployment.
        for hpa in r.of_kind("HorizontalPodAutoscaler") {
            assert!(!hpa["spec"]["scaleTargetRef"]["name"]
                .as_str()
                .unwrap()
                .contains("ingest"));
        }
        let replicas = |n: &str| {
            r.get("Deployment", n).unwrap()["spec"]["replicas"]
                .as_u64()
                .unwrap()
        };
        assert_eq!(replicas("meridian-ingest-m1m3"), 1, "{overlay}: M1M3 alone");
        if *overlay == "overlays/summit" {
            assert_eq!(
                replicas("meridian-ingest-scriptqueue"),
                3,
                "{overlay}: ScriptQueue x3"
            );
        }
    }
    let r = render("summit", &deploy().join("overlays/summit"));
    assert!(
        r.get("StatefulSet", "meridian-redis").is_none(),
        "the single Redis is replaced"
    );
    let cluster = r.get("StatefulSet", "meridian-redis-cluster").unwrap();
    assert_eq!(
        cluster["spec"]["replicas"], 6,
        "three masters, each with a replica"
    );
}

/// A frontend pod that is terminated (rollout, scale-down) drains: the
/// preStop pause plus `frontend.drain_grace_ms` fit in the grace period, so
/// the kubelet's SIGKILL never cuts it short; the autoscaler owns its count.
#[test]
fn a_terminating_frontend_drains_within_its_grace_period() {
    for overlay in OVERLAYS {
        let r = render(rendered_name(overlay), &deploy().join(overlay));
        let w = r.get("Deployment", "meridian-frontend").unwrap();
        let c = &containers(w)[0];
        let config = Config::from_toml_str(&mounted_config(&r, w, c)).unwrap();
        let pre_stop: Vec<&str> = c["lifecycle"]["preStop"]["exec"]["command"]
            .as_array()
            .expect("a preStop command")
            .iter()
            .map(|v| v.as_str().unwrap())
            .collect();
        assert_eq!(pre_stop[0], "sleep", "{overlay}: preStop pauses");
        let pause_s: f64 = pre_stop[1].parse().unwrap();
        let grace_s = w["spec"]["template"]["spec"]["terminationGracePeriodSeconds"]
            .as_f64()
            .expect("terminationGracePeriodSeconds");
        let drain_s = config.frontend.drain_grace_ms as f64 / 1000.0;
        assert!(
            grace_s >= pause_s + drain_s + 5.0,
            "{overlay}: grace {grace_s} s must exceed preStop {pause_s} s + drain {drain_s} s + 5 s to close"
        );
        assert!(
            w["spec"]["replicas"].is_null(),
            "{overlay}: the HPA owns the frontend's replica count"
        );
        let hpa = r.get("HorizontalPodAutoscaler", "meridian-frontend").unwrap();
        assert_eq!(hpa["spec"]["scaleTargetRef"]["name"], "meridian-frontend");
        assert!(hpa["spec"]["minReplicas"].as_u64().unwrap() >= 1);
        assert!(
            config.frontend.rebalance_factor > 1.0,
            "{overlay}: pods the autoscaler adds get browsers by rebalancing"
        );
    }
}

// ------------------------------------------------------------- Dockerfile

/// The Dockerfile builds with the README's command, copies every workspace
/// member (and only paths that exist and the build context keeps), runs a
/// toolchain at least the workspace's rust-version, and ships the binary
/// the build step wrote.
#[test]
fn the_dockerfile_builds_what_the_readme_says() {
    let dockerfile = read(&repo().join("Dockerfile"));
    // Join continuation lines into one instruction each.
    let instructions: Vec<String> = dockerfile
        .replace("\\\n", " ")
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty() && !l.starts_with('#'))
        .map(String::from)
        .collect();
    let readme = read(&repo().join("README.md"));
    let readme_build: Vec<&str> = readme
        .lines()
        .map(str::trim)
        .filter(|l| l.starts_with("cargo build"))
        .collect();
    assert_eq!(
        readme_build.len(),
        1,
        "the README gives one build command: {readme_build:?}"
    );
    let build_runs: Vec<&String> = instructions
        .iter()
        .filter(|i| i.starts_with("RUN") && i.contains("cargo build"))
        .collect();
    assert_eq!(build_runs.len(), 1, "one cargo build step");
    let command = build_runs[0]
        .split("&&")
        .map(|part| {
            let words: Vec<&str> = part
                .split_whitespace()
                .filter(|w| !w.starts_with("--mount="))
                .collect();
            let words = if words.first() == Some(&"RUN") {
                &words[1..]
            } else {
                &words[..]
            };
            words.join(" ")
        })
        .find(|c| c.starts_with("cargo build"))
        .unwrap();
    assert_eq!(
        command, readme_build[0],
        "the Dockerfile builds as the README says"
    );
    assert!(
        build_runs[0].contains("target/release/meridian"),
        "the build step takes the binary the README's command writes"
    );

    // Toolchain.
    let rust_version = instructions
        .iter()
        .find_map(|i| i.strip_prefix("ARG RUST_VERSION="))
        .expect("ARG RUST_VERSION");
    let workspace: toml::Table = read(&repo().join("Cargo.toml")).parse().unwrap();
    let minimum = workspace["workspace"]["package"]["rust-version"]
        .as_str()
        .unwrap();
    let version = |v: &str| -> Vec<u32> { v.split('.').map(|n| n.parse().unwrap()).collect() };
    assert!(
        version(rust_version) >= version(minimum),
        "RUST_VERSION {rust_version} is below the workspace's rust-version {minimum}"
    );
    assert!(instructions
        .iter()
        .any(|i| i.starts_with("FROM rust:${RUST_VERSION}")));

    // Paths copied from the context exist and are not ignored.
    let ignored: Vec<String> = read(&repo().join(".dockerignore"))
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty() && !l.starts_with('#'))
        .map(|l| l.trim_start_matches("**/").trim_end_matches('/').to_string())
        .collect();
    let mut copied = BTreeSet::new();
    for i in instructions
        .iter()
        .filter(|i| i.starts_with("COPY") && !i.contains("--from="))
    {
        let words: Vec<&str> = i.split_whitespace().skip(1).collect();
        for source in &words[..words.len() - 1] {
            assert!(repo().join(source).exists(), "COPY {source}: no such path");
            let top = source.split('/').next().unwrap();
            assert!(
                !ignored.iter().any(|g| g == top || g == *source),
                "COPY {source}: .dockerignore leaves it out of the context"
            );
            copied.insert(top.to_string());
        }
    }
    for member in workspace["workspace"]["members"].as_array().unwrap() {
        let member = member.as_str().unwrap();
        assert!(
            copied.contains(member),
            "workspace member {member} is not copied into the build"
        );
    }
    for needed in ["Cargo.toml", "Cargo.lock", "src"] {
        assert!(copied.contains(needed), "{needed} is not copied into the build");
    }
    assert!(
        ignored.iter().any(|g| g == "target"),
        "target/ stays out of the build context"
    );

    // The runtime stage ships what the build stage wrote.
    let shipped = instructions
        .iter()
        .find(|i| i.starts_with("COPY --from=build"))
        .expect("the runtime stage copies the binary");
    let installed = build_runs[0].split_whitespace().last().unwrap();
    assert!(
        shipped.contains(installed),
        "the runtime copies {installed}, where the build put it"
    );
    assert!(instructions.iter().any(|i| i == "ENTRYPOINT [\"meridian\"]"));
}

// ---------------------------------------------------------------- systemd

/// The systemd units load without a warning (`systemd-analyze verify`,
/// against the binary this build made), start roles with flags the binary
/// has, one producer per CSC instance (`%i`), and wait long enough for a
/// frontend's drain.
#[test]
fn the_systemd_units_verify_and_start_the_roles_gracefully() {
    let dir = deploy().join("systemd");
    let scratch = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("systemd-units");
    let _ = std::fs::remove_dir_all(&scratch);
    std::fs::create_dir_all(&scratch).unwrap();
    let mut units = Vec::new();
    for entry in std::fs::read_dir(&dir).unwrap() {
        let path = entry.unwrap().path();
        let text = read(&path);
        let file = path.file_name().unwrap().to_string_lossy().into_owned();
        std::fs::write(
            scratch.join(&file),
            text.replace("/usr/local/bin/meridian", env!("CARGO_BIN_EXE_meridian")),
        )
        .unwrap();
        units.push((file, text));
    }
    units.sort();
    let names: Vec<&str> = units.iter().map(|(f, _)| f.as_str()).collect();
    assert_eq!(
        names,
        [
            "meridian-commander.service",
            "meridian-frontend.service",
            "meridian-ingest.service",
            "meridian-producer@.service"
        ]
    );
    let out = Command::new("systemd-analyze")
        .args(["verify", "--man=no"])
        .args(units.iter().map(|(f, _)| scratch.join(f)))
        .output()
        .expect("systemd-analyze must be installed to check deploy/systemd");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        out.status.success() && stderr.trim().is_empty(),
        "systemd-analyze verify: {stderr}"
    );

    let drain_s = Config::from_toml_str(&read(&deploy().join("base/config/frontend.toml")))
        .unwrap()
        .frontend
        .drain_grace_ms
        / 1000;
    for (file, text) in &units {
        let key = |k: &str| -> String {
            text.lines()
                .find_map(|l| l.strip_prefix(&format!("{k}=")))
                .unwrap_or_else(|| panic!("{file}: no {k}="))
                .to_string()
        };
        assert_eq!(key("KillSignal"), "SIGTERM", "{file}");
        let exec: Vec<String> = key("ExecStart").split_whitespace().map(String::from).collect();
        assert_eq!(exec[0], "/usr/local/bin/meridian", "{file}");
        check_flags(&exec[1..], file);
        let stop_s: u64 = key("TimeoutStopSec").parse().unwrap();
        match file.as_str() {
            "meridian-producer@.service" => {
                assert_eq!(
                    flag(&exec, "--csc").as_deref(),
                    Some("%i"),
                    "one instance per CSC"
                );
                assert!(stop_s > meridian_producer::DRAIN_TIMEOUT.as_secs(), "{file}");
            }
            "meridian-frontend.service" => {
                assert_eq!(flag(&exec, "--role").as_deref(), Some("frontend"));
                assert!(
                    stop_s >= drain_s + 5,
                    "{file}: TimeoutStopSec {stop_s} s vs drain {drain_s} s"
                );
            }
            "meridian-ingest.service" => assert_eq!(flag(&exec, "--role").as_deref(), Some("ingest")),
            _ => assert_eq!(exec[1], "commander"),
        }
    }
}
