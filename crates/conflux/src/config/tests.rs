//! Unit tests for config loading: defaults, precedence, rejection of unknown or bad input.

use super::*;

fn env(pairs: &[(&str, &str)]) -> Vec<(String, String)> {
    pairs
        .iter()
        .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
        .collect()
}

#[test]
fn empty_file_gives_defaults() {
    let config = Config::from_toml("").unwrap();
    assert_eq!(config, Config::default());
    assert_eq!(config.server.data_dir, PathBuf::from("./data"));
    assert_eq!(config.kafka.listen, addr("0.0.0.0:9092"));
    assert_eq!(config.amqp.listen.port(), 5672);
    assert_eq!(config.nats.listen.port(), 4222);
    assert_eq!(config.aws.listen.port(), 9324);
    assert_eq!(config.registry.listen.port(), 8081);
    assert_eq!(config.http.listen.port(), 8080);
    assert_eq!(config.kafka.request_size_bytes_max, 100 * MIB);
    assert_eq!(config.kafka.topic_defaults.message_size_bytes_max, MIB);
    assert_eq!(config.kafka.topic_defaults.retention_ms, 604_800_000);
    assert_eq!(config.kafka.topic_defaults.segment_size_bytes, GIB);
    assert_eq!(
        config.kafka.topic_defaults.flush_policy,
        FlushPolicy::Always
    );
    config.validate().unwrap();
}

#[test]
fn management_api_listens_on_15672_with_amqp_only() {
    let port = |c: &Config| {
        c.enabled_listeners()
            .into_iter()
            .find(|(name, _)| *name == "management")
            .map(|(_, a)| a)
    };
    let mut config = Config::default();
    assert_eq!(port(&config), Some(addr("0.0.0.0:15672")));
    config
        .apply_env(env(&[("CONFLUX_AMQP_MANAGEMENT_LISTEN", "127.0.0.1:0")]))
        .unwrap();
    assert_eq!(port(&config), Some(addr("127.0.0.1:0")));
    config.amqp.enabled = false;
    assert_eq!(port(&config), None, "no management API without AMQP");
    config.amqp.enabled = true;
    config
        .apply_env(env(&[("CONFLUX_AMQP_MANAGEMENT_ENABLED", "false")]))
        .unwrap();
    assert_eq!(port(&config), None);
    let mut clash = Config::default();
    clash.http.listen = addr("0.0.0.0:15672");
    let err = clash.validate().unwrap_err().to_string();
    assert!(err.contains("amqp.management_listen"), "{err}");
}

#[test]
fn partial_section_keeps_its_own_default_port() {
    let config = Config::from_toml("[amqp]\nenabled = false\n").unwrap();
    assert!(!config.amqp.enabled);
    assert_eq!(config.amqp.listen.port(), 5672);
}

#[test]
fn unknown_key_is_rejected_by_name() {
    let err = Config::from_toml("[kafka]\nlisten_adress = \"127.0.0.1:1\"\n").unwrap_err();
    assert!(err.contains("listen_adress"), "{err}");
    let err = Config::from_toml("[kafak]\n").unwrap_err();
    assert!(err.contains("kafak"), "{err}");
    let err = Config::from_toml("[kafka.topic_defaults]\nretention = 1\n").unwrap_err();
    assert!(err.contains("retention"), "{err}");
}

#[test]
fn bad_value_in_file_is_rejected() {
    let err = Config::from_toml("[kafka]\nlisten = \"nowhere\"\n").unwrap_err();
    assert!(err.contains("listen"), "{err}");
    let err = Config::from_toml("[server]\nlog_format = \"xml\"\n").unwrap_err();
    assert!(err.contains("xml"), "{err}");
}

#[test]
fn precedence_is_file_then_env_then_flag() {
    use crate::cli::ServeArgs;
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("conflux.toml");
    std::fs::write(
        &path,
        "[server]\ndata_dir = \"/from/file\"\nlog_level = \"debug\"\nnode_id = 3\n\
         [kafka]\nlisten = \"127.0.0.1:1000\"\nnum_partitions = 2\n",
    )
    .unwrap();
    let args = ServeArgs {
        config: Some(path),
        data_dir: Some(PathBuf::from("/from/flag")),
        ..ServeArgs::default()
    };
    let vars = env(&[
        ("CONFLUX_DATA_DIR", "/from/env"),
        ("CONFLUX_LOG_LEVEL", "warn"),
        ("CONFLUX_KAFKA_LISTEN", "127.0.0.1:2000"),
        ("CONFLUX_KAFKA_ENABLED", "false"),
        ("PATH", "/bin"),
    ]);
    let config = args.load_config(vars.clone()).unwrap();
    assert_eq!(config.server.data_dir, PathBuf::from("/from/flag"));
    assert_eq!(config.server.log_level, "warn");
    let no_flags = ServeArgs {
        config: args.config.clone(),
        ..ServeArgs::default()
    };
    let from_env = no_flags.load_config(vars).unwrap();
    assert_eq!(from_env.server.data_dir, PathBuf::from("/from/env"));
    assert_eq!(config.kafka.listen, addr("127.0.0.1:2000"));
    assert!(!config.kafka.enabled);
    assert_eq!(config.kafka.num_partitions, 2);
    assert_eq!(config.server.node_id, 3);
}

#[test]
fn unknown_env_var_is_rejected_by_name() {
    let mut config = Config::default();
    for name in ["CONFLUX_KAFKA_LISTN", "CONFLUX_SERVER_DATA_DIR"] {
        let err = config.apply_env(env(&[(name, "x")])).unwrap_err();
        assert!(err.to_string().contains(name), "{err}");
    }
    // Variables read elsewhere are not config keys and not errors.
    config
        .apply_env(env(&[
            ("CONFLUX_CONFIG", "x.toml"),
            ("CONFLUX_BIN", "/x"),
            ("CONFLUX_KAFKA", "localhost:9092"),
        ]))
        .unwrap();
}

#[test]
fn bad_env_value_names_variable_key_and_value() {
    let cases = [
        ("CONFLUX_KAFKA_ENABLED", "maybe", "kafka.enabled"),
        ("CONFLUX_KAFKA_LISTEN", "nowhere:x", "kafka.listen"),
        ("CONFLUX_KAFKA_NUM_PARTITIONS", "-1", "kafka.num_partitions"),
        ("CONFLUX_LOG_FORMAT", "xml", "server.log_format"),
        (
            "CONFLUX_KAFKA_ADVERTISED_PORT",
            "70000",
            "kafka.advertised_port",
        ),
    ];
    for (name, value, key) in cases {
        let mut config = Config::default();
        let err = config
            .apply_env(env(&[(name, value)]))
            .unwrap_err()
            .to_string();
        assert!(err.contains(name), "{err}");
        assert!(err.contains(key), "{err}");
        assert!(err.contains(value), "{err}");
    }
}

#[test]
fn env_sets_optional_and_nested_keys() {
    let mut config = Config::default();
    config
        .apply_env(env(&[
            ("CONFLUX_KAFKA_ADVERTISED_HOST", "broker.local"),
            ("CONFLUX_KAFKA_ADVERTISED_PORT", "19092"),
            ("CONFLUX_KAFKA_TOPIC_DEFAULTS_FLUSH_POLICY", "interval"),
            ("CONFLUX_HTTP_ENABLED", "0"),
            ("CONFLUX_LOG_LEVEL", "conflux=debug,warn"),
        ]))
        .unwrap();
    assert_eq!(
        config.kafka.advertised_host.as_deref(),
        Some("broker.local")
    );
    assert_eq!(config.kafka.advertised_port, Some(19092));
    assert_eq!(
        config.kafka.topic_defaults.flush_policy,
        FlushPolicy::Interval
    );
    assert!(!config.http.enabled);
    config.validate().unwrap();
}

#[test]
fn validation_names_the_key() {
    let cases: [(&str, &str); 8] = [
        ("[kafka]\nnum_partitions = 0", "kafka.num_partitions"),
        (
            "[kafka]\nrequest_size_bytes_max = 0",
            "kafka.request_size_bytes_max",
        ),
        (
            "[kafka]\nrequest_size_bytes_max = 4294967296",
            "kafka.request_size_bytes_max",
        ),
        (
            "[kafka.topic_defaults]\nretention_ms = 0",
            "kafka.topic_defaults.retention_ms",
        ),
        (
            "[kafka.topic_defaults]\nmessage_size_bytes_max = 209715200",
            "kafka.topic_defaults.message_size_bytes_max",
        ),
        ("[server]\nlog_level = \"[[\"", "server.log_level"),
        ("[server]\nnode_id = -1", "server.node_id"),
        ("[http]\nlisten = \"0.0.0.0:9092\"", "http.listen"),
    ];
    for (text, key) in cases {
        let config = Config::from_toml(text).unwrap();
        let err = config.validate().unwrap_err().to_string();
        assert!(err.contains(key), "{text}: {err}");
    }
}

#[test]
fn offsets_retention_is_checked_and_reaches_the_broker() {
    assert_eq!(
        Config::default().broker_config().offsets_retention_ms,
        conflux_broker::broker::OFFSETS_RETENTION_MS_DEFAULT
    );
    let config = Config::from_toml("[kafka]\noffsets_retention_ms = 3000").unwrap();
    config.validate().unwrap();
    assert_eq!(config.broker_config().offsets_retention_ms, 3000);
    for bad in ["0", "128849018820001"] {
        let text = format!("[kafka]\noffsets_retention_ms = {bad}");
        let err = Config::from_toml(&text).unwrap().validate().unwrap_err();
        assert!(
            err.to_string().contains("kafka.offsets_retention_ms"),
            "{err}"
        );
    }
}

/// Every leaf of a fully populated `Config`, as dotted paths.
fn struct_keys() -> Vec<String> {
    fn walk(prefix: &str, value: &toml::Value, out: &mut Vec<String>) {
        match value {
            toml::Value::Table(table) => {
                for (k, v) in table {
                    let path = if prefix.is_empty() {
                        k.clone()
                    } else {
                        format!("{prefix}.{k}")
                    };
                    walk(&path, v, out);
                }
            }
            _ => out.push(prefix.to_owned()),
        }
    }
    let mut config = Config::default();
    config.kafka.advertised_host = Some("h".to_owned());
    config.kafka.advertised_port = Some(1);
    config.nats.user = Some("u".to_owned());
    config.nats.password = Some("p".to_owned());
    config.nats.token = Some("t".to_owned());
    let mut out = Vec::new();
    walk("", &toml::Value::try_from(&config).unwrap(), &mut out);
    out.sort();
    out
}

#[test]
fn key_table_matches_struct() {
    let mut listed: Vec<String> = KEYS.iter().map(|(k, _)| (*k).to_owned()).collect();
    listed.sort();
    assert_eq!(listed, struct_keys());
}

#[test]
fn every_key_is_documented_with_its_env_var() {
    let docs = include_str!("../../../../docs/configuration.md");
    for (key, _) in KEYS {
        let leaf = key.rsplit('.').next().unwrap();
        assert!(
            docs.contains(&format!("`{leaf}`")),
            "docs/configuration.md lacks `{key}`"
        );
        assert!(docs.contains(&env_name(key)), "docs lack {}", env_name(key));
    }
}

#[test]
fn example_file_is_valid_and_matches_defaults() {
    let text = include_str!("../../../../conflux.example.toml");
    let config = Config::from_toml(text).unwrap();
    config.validate().unwrap();
    assert_eq!(config, Config::default());
}

#[test]
fn amqp_vhosts_come_from_a_comma_separated_env_list() {
    let mut config = Config::default();
    assert!(config.amqp.vhosts.is_empty());
    config
        .apply_env(env(&[("CONFLUX_AMQP_VHOSTS", "staging, dev,,prod/eu")]))
        .unwrap();
    assert_eq!(config.amqp.vhosts, ["staging", "dev", "prod/eu"]);
    config.validate().unwrap();
    let file = Config::from_toml("[amqp]\nvhosts = [\"a\", \"b\"]\n").unwrap();
    assert_eq!(file.amqp.vhosts, ["a", "b"]);
    config.amqp.vhosts.push("x".repeat(101));
    let err = config.validate().unwrap_err().to_string();
    assert!(
        err.contains("amqp.vhosts") && err.contains("too long"),
        "{err}"
    );
}
