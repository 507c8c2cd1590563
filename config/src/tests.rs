//! What an operator sees when the file is empty, wrong or out of range.

use super::*;

fn invalid(text: &str) -> Vec<Invalid> {
    match Config::from_toml_str(text) {
        Err(ConfigError::Invalid(problems)) => problems,
        other => panic!("expected Invalid for {text:?}, got {other:?}"),
    }
}

fn parse_error(text: &str) -> String {
    match Config::from_toml_str(text) {
        Err(err @ ConfigError::Parse { .. }) => err.to_string(),
        other => panic!("expected Parse for {text:?}, got {other:?}"),
    }
}

fn keys(problems: &[Invalid]) -> Vec<&str> {
    problems.iter().map(|p| p.key.as_str()).collect()
}

#[test]
fn empty_text_is_all_defaults() {
    let config = Config::from_toml_str("").unwrap();
    assert_eq!(config, Config::default());
    assert_eq!(config.store.backend, StoreBackend::Memory);
    assert_eq!(config.store.redis_url, "redis://127.0.0.1:6379/");
    assert_eq!(config.store.telemetry_maxlen, 10_000);
    assert_eq!(config.store.event_maxlen, 100_000);
    assert_eq!(config.tls.cert, None);
    assert_eq!(config.tls.server_name, "meridian-ingest");
    assert!(config.tls.dev_self_signed);
    assert_eq!(config.ingest.listen.to_string(), "0.0.0.0:7400");
    assert_eq!(config.ingest.batch_max, 512);
    assert_eq!(config.ingest.batch_delay_ms, 5);
    assert_eq!(config.ingest.max_producers, 1024);
    assert_eq!(config.frontend.listen.to_string(), "0.0.0.0:8080");
    assert_eq!(config.frontend.tokens, ["dev-token"]);
    assert_eq!(config.frontend.client_queue, 4096);
    assert_eq!(config.frontend.read_block_ms, 100);
    assert_eq!(config.frontend.read_count, 256);
    assert_eq!(config.producer.csc, "Test:1");
    assert_eq!(config.producer.ingest, ["127.0.0.1:7400"]);
    assert_eq!(config.producer.telemetry_rate_hz, 10.0);
    assert!(config.producer.rates.is_empty());
    assert_eq!(config.producer.batch_max, 256);
    assert_eq!(config.producer.batch_delay_ms, 5);
    assert_eq!(config.commander.listen.to_string(), "0.0.0.0:8081");
    assert_eq!(config.commander.command_timeout_ms, 10_000);
    assert!(config.commander.timeouts_ms.is_empty());
    assert!(config.commander.tokens.is_empty());
    assert_eq!(config.commander.rate_limit_per_s, 5.0);
    assert_eq!(config.commander.rate_limit_burst, 20);
    assert_eq!(config.commander.audit_maxlen, 100_000);
    assert_eq!(
        config.sim.cscs,
        [
            "MTM1M3:0",
            "MTMount:0",
            "ATDome:0",
            "ScriptQueue:1",
            "ScriptQueue:2",
            "ScriptQueue:3",
            "Test:1"
        ]
    );
    assert_eq!(config.sim.rate_multiplier, 1.0);
    assert_eq!(config.log.format, LogFormat::Text);
    assert_eq!(config.log.filter, "info");
    config.validate().unwrap();
}

#[test]
fn defaults_round_trip_through_toml() {
    let mut config = Config::default();
    config.tls.cert = Some("/etc/meridian/ingest.pem".into());
    config.tls.key = Some("/etc/meridian/ingest.key".into());
    config.producer.rates.insert("forceActuatorData".into(), 50.0);
    config
        .commander
        .timeouts_ms
        .insert("MTMount.moveToTarget".into(), 60_000);
    config.commander.tokens.push(commander::CommanderToken {
        name: "ops".into(),
        token: "secret-1".into(),
        cscs: vec!["ATDome".into(), "MTMount:0".into()],
        commands: vec!["*".into()],
        rate_limit_per_s: Some(1.0),
        rate_limit_burst: None,
    });
    let text = toml::to_string(&config).unwrap();
    assert_eq!(Config::from_toml_str(&text).unwrap(), config);
    let text = toml::to_string(&Config::default()).unwrap();
    assert_eq!(Config::from_toml_str(&text).unwrap(), Config::default());
}

#[test]
fn partial_sections_keep_other_defaults() {
    let config = Config::from_toml_str(
        "[store]\nbackend = \"redis\"\n[producer]\ntelemetry_rate_hz = 2\nrates = { forceActuatorData = 50 }\n",
    )
    .unwrap();
    assert_eq!(config.store.backend, StoreBackend::Redis);
    assert_eq!(config.store.event_maxlen, 100_000);
    // Integers are accepted where a rate in Hz is expected.
    assert_eq!(config.producer.telemetry_rate_hz, 2.0);
    assert_eq!(config.producer.rates["forceActuatorData"], 50.0);
    assert_eq!(config.producer.csc, "Test:1");
}

#[test]
fn unknown_key_is_rejected_naming_it() {
    let msg = parse_error("[frontend]\nclient_queu = 10\n");
    assert!(msg.contains("client_queu"), "{msg}");
    assert!(msg.contains("unknown field"), "{msg}");
    assert!(msg.contains("frontend.client_queu"), "{msg}");
    assert!(msg.contains("line 2"), "{msg}");

    let msg = parse_error("[fronted]\n");
    assert!(msg.contains("fronted"), "{msg}");
}

#[test]
fn wrong_type_names_the_key() {
    let msg = parse_error("[frontend]\nlisten = \"0.0.0.0:8080\"\nclient_queue = \"big\"\n");
    assert!(msg.contains("frontend.client_queue"), "{msg}");
    assert!(msg.contains("line 3"), "{msg}");

    let msg = parse_error("store.backend = \"postgres\"\n");
    assert!(msg.contains("store.backend"), "{msg}");
    assert!(msg.contains("postgres"), "{msg}");

    let msg = parse_error("[frontend]\ntokens = [\"a\", 7]\n");
    assert!(msg.contains("frontend.tokens[1]"), "{msg}");

    let msg = parse_error("[ingest]\nlisten = \"localhost\"\n");
    assert!(msg.contains("ingest.listen"), "{msg}");
}

#[test]
fn syntax_error_is_a_parse_error_without_path() {
    let err = Config::from_toml_str("[store\n").unwrap_err();
    assert!(matches!(err, ConfigError::Parse { path: None, .. }), "{err:?}");
    assert!(err.to_string().contains("line 1"), "{err}");
}

#[test]
fn several_invalid_values_are_all_reported() {
    let problems = invalid(
        r#"
        [store]
        redis_url = "http://localhost"
        telemetry_maxlen = 0
        [ingest]
        batch_delay_ms = 1001
        max_producers = 0
        [frontend]
        tokens = ["ok", "", "has space"]
        client_queue = 3
        [producer]
        ingest = ["localhost", "[::1]:7400", "::1:7400", "h:0"]
        telemetry_rate_hz = 0
        rates = { forceActuatorData = 1000.5, "bad.topic" = 5 }
        [commander]
        command_timeout_ms = 0
        [sim]
        cscs = ["Test:1", "MTM1M3", "Test:01", "Bad:x"]
        "#,
    );
    assert_eq!(
        keys(&problems),
        [
            "store.redis_url",
            "store.telemetry_maxlen",
            "ingest.batch_delay_ms",
            "ingest.max_producers",
            "frontend.tokens[1]",
            "frontend.tokens[2]",
            "frontend.client_queue",
            "producer.ingest[0]",
            "producer.ingest[2]",
            "producer.ingest[3]",
            "producer.telemetry_rate_hz",
            "producer.rates.\"bad.topic\"",
            "producer.rates.forceActuatorData",
            "commander.command_timeout_ms",
            "sim.cscs[2]",
            "sim.cscs[3]",
        ]
    );
    let queue = problems
        .iter()
        .find(|p| p.key == "frontend.client_queue")
        .unwrap();
    assert_eq!(
        queue.to_string(),
        "frontend.client_queue: expected an integer from 16 to 1000000, found 3"
    );
    let msg = ConfigError::Invalid(problems.clone()).to_string();
    assert_eq!(msg.lines().count(), problems.len() + 1, "{msg}");
    // Tokens are secrets: never echoed.
    assert!(!msg.contains("has space"), "{msg}");
}

#[test]
fn cert_without_key_names_both() {
    for text in ["[tls]\ncert = \"a.pem\"\n", "[tls]\nkey = \"a.key\"\n"] {
        let problems = invalid(text);
        assert_eq!(problems.len(), 1, "{problems:?}");
        let msg = problems[0].to_string();
        assert!(msg.contains("tls.cert") && msg.contains("tls.key"), "{msg}");
    }
    Config::from_toml_str("[tls]\ncert = \"a.pem\"\nkey = \"a.key\"\nca = \"ca.pem\"\n").unwrap();
}

#[test]
fn bad_producer_csc_names_the_key() {
    for csc in ["", "Test:", "Test:x", "Te-st:1", "Test:1:2", "Test:-1"] {
        let problems = invalid(&format!("[producer]\ncsc = {csc:?}\n"));
        assert_eq!(keys(&problems), ["producer.csc"], "{csc:?}");
        assert!(
            problems[0].found.contains(&format!("{csc:?}")),
            "{:?}",
            problems[0]
        );
    }
    for csc in ["Test", "Test:0", "MTM1M3:4294967295"] {
        Config::from_toml_str(&format!("[producer]\ncsc = {csc:?}\n")).unwrap();
    }
}

#[test]
fn a_browser_queue_smaller_than_one_store_read_is_refused() {
    let problems = invalid("[frontend]\nclient_queue = 100\nread_count = 200\n");
    assert_eq!(keys(&problems), ["frontend.client_queue"]);
    assert!(
        problems[0].expected.contains("frontend.read_count (200)"),
        "{:?}",
        problems[0]
    );
}

#[test]
fn bounds_are_inclusive() {
    Config::from_toml_str(
        "[frontend]
client_queue = 16
read_count = 16
read_block_ms = 10000
[ingest]\nbatch_delay_ms = 0\nbatch_max = 65536\n[producer]\ntelemetry_rate_hz = 1000\n",
    )
    .unwrap();
    let problems = invalid("[producer]\ntelemetry_rate_hz = nan\nrates = { a = inf }\n");
    assert_eq!(
        keys(&problems),
        ["producer.telemetry_rate_hz", "producer.rates.a"]
    );
}

#[test]
fn validate_again_after_overrides() {
    let mut config = Config::from_toml_str("").unwrap();
    config.frontend.tokens.clear();
    config.tls.server_name = "not a name".into();
    let Err(ConfigError::Invalid(problems)) = config.validate() else {
        panic!("expected Invalid");
    };
    assert_eq!(keys(&problems), ["tls.server_name", "frontend.tokens"]);
}

#[test]
fn load_names_the_file() {
    let missing = Path::new("/nonexistent/meridian.toml");
    let err = Config::load(missing).unwrap_err();
    assert!(matches!(err, ConfigError::Read { .. }), "{err:?}");
    assert!(err.to_string().contains("/nonexistent/meridian.toml"), "{err}");

    let dir = std::env::temp_dir().join(format!("meridian-config-test-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let file = dir.join("bad.toml");
    std::fs::write(&file, "[log]\nformat = \"xml\"\n").unwrap();
    let err = Config::load(&file).unwrap_err();
    std::fs::remove_dir_all(&dir).unwrap();
    assert!(
        matches!(&err, ConfigError::Parse { path: Some(p), .. } if *p == file),
        "{err:?}"
    );
    let msg = err.to_string();
    assert!(msg.contains("bad.toml") && msg.contains("log.format"), "{msg}");
}

#[test]
fn a_csc_with_a_dedicated_pool_uses_it_and_others_use_the_default_ingest() {
    let config = Config::from_toml_str(
        "[producer]\ncsc = \"MTM1M3:0\"\ningest = [\"ingest:7400\"]\n[producer.pools]\nMTM1M3 = [\"m1m3-a:7400\", \"m1m3-b:7400\"]\n",
    )
    .unwrap();
    assert_eq!(config.producer.ingest_addresses(), ["m1m3-a:7400", "m1m3-b:7400"]);
    let mut other = config.producer.clone();
    other.csc = "ATDome:0".into();
    assert_eq!(other.ingest_addresses(), ["ingest:7400"]);
    // Scripts are the ScriptQueue's workload: its pool takes them, unless
    // Script has a pool of its own.
    let mut script = config.producer.clone();
    script.csc = "Script".into();
    assert_eq!(script.ingest_addresses(), ["ingest:7400"]);
    script
        .pools
        .insert("ScriptQueue".into(), vec!["queue:7400".into()]);
    assert_eq!(script.ingest_addresses(), ["queue:7400"]);
    script.pools.insert("Script".into(), vec!["scripts:7400".into()]);
    assert_eq!(script.ingest_addresses(), ["scripts:7400"]);
    let err = Config::from_toml_str("[producer.pools]\nMTM1M3 = [\"nohost\"]\n")
        .unwrap_err()
        .to_string();
    assert!(err.contains("producer.pools.MTM1M3[0]"), "{err}");
}

#[test]
fn commander_tokens_timeouts_and_limits() {
    let config = Config::from_toml_str(
        r#"
        [commander]
        command_timeout_ms = 5000
        tokens = [
          { name = "ops", token = "s3cret-ops", cscs = ["*"] },
          { name = "atdome", token = "s3cret-dome", cscs = ["ATDome"], commands = ["moveAzimuth"], rate_limit_burst = 2 },
          { name = "viewer", token = "s3cret-view" },
        ]
        [commander.timeouts_ms]
        "MTMount.moveToTarget" = 60000
        "#,
    )
    .unwrap();
    let c = &config.commander;
    assert_eq!(c.timeout_ms("MTMount", "moveToTarget"), 60_000);
    assert_eq!(c.timeout_ms("MTMount", "stop"), 5000);
    assert_eq!(c.tokens[0].commands, ["*"], "commands default to every command");
    assert!(c.tokens[2].cscs.is_empty(), "no cscs: read-only");
    assert_eq!(c.tokens[1].rate_limit_burst, Some(2));
    // Debug output (panics, failed assertions) never shows a secret.
    assert!(!format!("{config:?}").contains("s3cret"));

    use commander::CscPattern;
    assert_eq!(CscPattern::parse("*"), Ok(CscPattern::Any));
    assert!(CscPattern::parse("ATDome").unwrap().matches("ATDome", 7));
    assert!(!CscPattern::parse("ATDome:1").unwrap().matches("ATDome", 0));
    assert!(!CscPattern::parse("ATDome").unwrap().matches("MTM1M3", 0));
}

#[test]
fn bad_commander_keys_are_named_and_tokens_never_echoed() {
    let problems = invalid(
        r#"
        [commander]
        rate_limit_per_s = 0
        rate_limit_burst = 0
        audit_maxlen = 0
        tokens = [
          { name = "", token = "has space" },
          { name = "ops", token = "dup-secret", cscs = ["AT-Dome"], commands = ["cmd-x"] },
          { name = "ops", token = "dup-secret", rate_limit_per_s = -1.0 },
        ]
        [commander.timeouts_ms]
        "moveToTarget" = 1000
        "MTMount.stop" = 600001
        "#,
    );
    assert_eq!(
        keys(&problems),
        [
            "commander.timeouts_ms.\"MTMount.stop\"",
            "commander.timeouts_ms.moveToTarget",
            "commander.tokens[0].name",
            "commander.tokens[0].token",
            "commander.tokens[1].cscs[0]",
            "commander.tokens[1].commands[0]",
            "commander.tokens[2].rate_limit_per_s",
            "commander.tokens[2].name",
            "commander.tokens[2].token",
            "commander.rate_limit_per_s",
            "commander.rate_limit_burst",
            "commander.audit_maxlen",
        ]
    );
    let msg = ConfigError::Invalid(problems).to_string();
    assert!(!msg.contains("has space") && !msg.contains("dup-secret"), "{msg}");

    let msg = parse_error("[commander]\ntokens = [{ name = \"a\", token = \"b\", scope = \"all\" }]\n");
    assert!(msg.contains("scope"), "{msg}");
}

#[test]
fn a_cluster_store_names_its_seed_nodes() {
    let config = Config::from_toml_str(
        "[store]\nbackend = \"cluster\"\ncluster_nodes = [\"redis://a:7000\", \"rediss://u:p@b:7001/0\"]\ncluster_replica_acks = 1\n",
    )
    .unwrap();
    assert_eq!(config.store.backend, StoreBackend::Cluster);
    assert_eq!(config.store.cluster_nodes.len(), 2);
    assert_eq!(config.store.cluster_replica_acks, 1);

    let problems = invalid("[store]\nbackend = \"cluster\"\n");
    assert_eq!(keys(&problems), ["store.cluster_nodes"]);
    assert!(
        problems[0].to_string().contains("at least one seed URL"),
        "{}",
        problems[0]
    );

    let problems = invalid(
        "[store]\ncluster_nodes = [\"http://a:7000\", \"redis://a:7000/3\", \"redis://b:7000/\"]\ncluster_replica_acks = 6\n",
    );
    assert_eq!(
        keys(&problems),
        [
            "store.cluster_nodes[0]",
            "store.cluster_nodes[1]",
            "store.cluster_replica_acks"
        ]
    );
    assert!(
        problems[1].to_string().contains("only database 0"),
        "{}",
        problems[1]
    );
}

#[test]
fn allowed_origins_name_the_entry_and_dev_tokens_are_refused_outside_a_development_run() {
    let problems = invalid(
        "[frontend]\nallowed_origins = [\"https://ok.example\", \"ok.example\", \"https://x.example/path\", \"*\"]\n",
    );
    assert_eq!(
        keys(&problems),
        ["frontend.allowed_origins[1]", "frontend.allowed_origins[2]"]
    );
    let config = Config::default();
    let refusal = config.frontend.refuse_dev_token().unwrap();
    assert!(refusal.contains("frontend.dev_tokens"), "{refusal}");
    assert!(config
        .commander
        .refuse_dev_token()
        .unwrap()
        .contains("commander.dev_tokens"));
    let dev =
        Config::from_toml_str("[frontend]\ndev_tokens = true\n[commander]\ndev_tokens = true\n").unwrap();
    assert_eq!(dev.frontend.refuse_dev_token(), None);
    assert_eq!(dev.commander.refuse_dev_token(), None);
    let own = Config::from_toml_str("[frontend]\ntokens = [\"a-long-secret\"]\n").unwrap();
    assert_eq!(own.frontend.refuse_dev_token(), None);
}
