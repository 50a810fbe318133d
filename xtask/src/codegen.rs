//! The `codegen` command: selects messages from the spec directory, renders, formats with
//! rustfmt, and writes (or, with `--check`, compares) the generated modules.

use std::collections::BTreeMap;
use std::fs;
use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use crate::gen::{self, Api, Msg};
use crate::spec::{self, MessageSpec};

pub struct Options {
    pub spec_dir: PathBuf,
    pub out_dir: PathBuf,
    pub check: bool,
}

pub fn workspace_root() -> PathBuf {
    let manifest = PathBuf::from(env!("CARGO_MANIFEST_DIR"));
    manifest.parent().map(Path::to_path_buf).unwrap_or(manifest)
}

/// Which messages we generate: requests served by a broker, their responses, the headers, and
/// the `data` structures (consumer protocol and friends).
fn select(specs: &[MessageSpec]) -> Vec<&MessageSpec> {
    let broker_keys: Vec<i16> = specs
        .iter()
        .filter(|s| s.kind == "request" && s.listeners.iter().any(|l| l == "broker"))
        .filter_map(|s| s.api_key)
        .collect();
    specs
        .iter()
        .filter(|s| match s.kind.as_str() {
            "request" | "response" => s.api_key.is_some_and(|k| broker_keys.contains(&k)),
            "header" | "data" => true,
            _ => false,
        })
        .collect()
}

pub fn load_specs(dir: &Path) -> Result<Vec<MessageSpec>, String> {
    let mut paths: Vec<PathBuf> = fs::read_dir(dir)
        .map_err(|e| format!("reading {}: {e}", dir.display()))?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.extension().is_some_and(|x| x == "json"))
        .collect();
    paths.sort();
    paths
        .iter()
        .map(|p| {
            let src = fs::read_to_string(p).map_err(|e| format!("{}: {e}", p.display()))?;
            spec::parse_message(&src).map_err(|e| format!("{}: {e}", p.display()))
        })
        .collect()
}

/// Renders every output file (name → formatted contents).
pub fn render_all(
    specs: &[MessageSpec],
    rustfmt_config: Option<&Path>,
) -> Result<BTreeMap<String, String>, String> {
    let mut msgs: Vec<Msg> = select(specs)
        .into_iter()
        .map(gen::build)
        .collect::<Result<_, _>>()?;
    msgs.sort_by(|a, b| a.module.cmp(&b.module));
    let mut requests: Vec<&Msg> = msgs.iter().filter(|m| m.kind == "request").collect();
    requests.sort_by_key(|m| m.api_key);
    let mut apis = Vec::new();
    for request in requests {
        let response = msgs
            .iter()
            .find(|m| m.kind == "response" && m.api_key == request.api_key)
            .ok_or_else(|| format!("{} has no response", request.name))?;
        apis.push(Api { request, response });
    }
    let mut files = BTreeMap::new();
    for m in &msgs {
        files.insert(
            format!("{}.rs", m.module),
            rustfmt(&m.render(), rustfmt_config)?,
        );
    }
    files.insert(
        "mod.rs".to_string(),
        rustfmt(&gen::render_mod(&msgs, &apis), rustfmt_config)?,
    );
    Ok(files)
}

fn rustfmt(src: &str, config: Option<&Path>) -> Result<String, String> {
    let mut cmd = Command::new(std::env::var("RUSTFMT").unwrap_or_else(|_| "rustfmt".into()));
    cmd.args(["--edition", "2021", "--emit", "stdout"]);
    if let Some(config) = config {
        cmd.arg("--config-path").arg(config);
    }
    let mut child = cmd
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(|e| format!("running rustfmt: {e}"))?;
    let mut stdin = child.stdin.take().ok_or("rustfmt stdin")?;
    let input = src.to_string();
    let writer = std::thread::spawn(move || stdin.write_all(input.as_bytes()));
    let output = child
        .wait_with_output()
        .map_err(|e| format!("rustfmt: {e}"))?;
    writer
        .join()
        .map_err(|_| "rustfmt writer panicked")?
        .map_err(|e| e.to_string())?;
    if !output.status.success() {
        return Err(format!(
            "rustfmt failed: {}",
            String::from_utf8_lossy(&output.stderr)
        ));
    }
    String::from_utf8(output.stdout).map_err(|e| e.to_string())
}

pub fn run(opts: &Options) -> Result<String, String> {
    if !opts.spec_dir.is_dir() {
        let msg = format!(
            "spec directory {} not found; skipping codegen",
            opts.spec_dir.display()
        );
        if opts.check {
            return Ok(msg);
        }
        return Err(msg);
    }
    let specs = load_specs(&opts.spec_dir)?;
    let config = workspace_root().join("rustfmt.toml");
    let files = render_all(&specs, config.is_file().then_some(config.as_path()))?;
    let existing: Vec<String> = fs::read_dir(&opts.out_dir)
        .map(|rd| {
            rd.filter_map(|e| e.ok())
                .map(|e| e.file_name().to_string_lossy().into_owned())
                .filter(|n| n.ends_with(".rs"))
                .collect()
        })
        .unwrap_or_default();
    if opts.check {
        let mut stale = Vec::new();
        for (name, contents) in &files {
            if fs::read_to_string(opts.out_dir.join(name)).ok().as_deref()
                != Some(contents.as_str())
            {
                stale.push(name.clone());
            }
        }
        stale.extend(existing.iter().filter(|n| !files.contains_key(*n)).cloned());
        if stale.is_empty() {
            return Ok(format!(
                "generated code is up to date ({} files)",
                files.len()
            ));
        }
        return Err(format!(
            "generated code is out of date, run `cargo xtask codegen`: {}",
            stale.join(", ")
        ));
    }
    fs::create_dir_all(&opts.out_dir).map_err(|e| e.to_string())?;
    for name in existing.iter().filter(|n| !files.contains_key(*n)) {
        fs::remove_file(opts.out_dir.join(name)).map_err(|e| e.to_string())?;
    }
    for (name, contents) in &files {
        let path = opts.out_dir.join(name);
        if fs::read_to_string(&path).ok().as_deref() != Some(contents.as_str()) {
            fs::write(&path, contents).map_err(|e| format!("{}: {e}", path.display()))?;
        }
    }
    Ok(format!(
        "wrote {} files to {}",
        files.len(),
        opts.out_dir.display()
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    const REQUEST: &str = r#"
    // A synthetic request exercising the features the generator handles.
    {
      "apiKey": 99, "type": "request", "listeners": ["broker"], "name": "FrobRequest",
      "validVersions": "0-3", "flexibleVersions": "2+",
      "fields": [
        { "name": "GroupId", "type": "string", "versions": "0+", "nullableVersions": "1+",
          "default": "null", "about": "The group // not a comment." },
        { "name": "TimeoutMs", "type": "int32", "versions": "1+", "default": "0x7fffffff" },
        { "name": "Type", "type": "int8", "versions": "0+", "default": "-1" },
        { "name": "Topics", "type": "[]FrobTopic", "versions": "0+", "fields": [
          { "name": "Name", "type": "string", "versions": "0+" },
          { "name": "Partitions", "type": "[]int32", "versions": "0-2" }
        ]},
        { "name": "Leader", "type": "LeaderIdAndEpoch", "versions": "2+", "tag": 0,
          "taggedVersions": "2+", "fields": [
          { "name": "LeaderId", "type": "int32", "versions": "0+", "default": "-1" }
        ]},
        { "name": "Verbose", "type": "bool", "versions": "3+", "default": "true",
          "tag": "1", "taggedVersions": "3+" }
      ]
    }"#;
    const RESPONSE: &str = r#"{ "apiKey": 99, "type": "response", "name": "FrobResponse",
      "validVersions": "0-3", "flexibleVersions": "2+",
      "fields": [ { "name": "ErrorCode", "type": "int16", "versions": "0+" } ] }"#;
    const CONTROLLER_ONLY: &str = r#"{ "apiKey": 98, "type": "request", "listeners": ["controller"],
      "name": "OtherRequest", "validVersions": "0", "flexibleVersions": "0+", "fields": [] }"#;

    fn render_synthetic() -> BTreeMap<String, String> {
        let specs: Vec<MessageSpec> = [REQUEST, RESPONSE, CONTROLLER_ONLY]
            .iter()
            .map(|s| spec::parse_message(s).unwrap())
            .collect();
        render_all(&specs, None).unwrap()
    }

    #[test]
    fn synthetic_spec_produces_the_expected_shape() {
        let files = render_synthetic();
        let names: Vec<&str> = files.keys().map(String::as_str).collect();
        assert_eq!(names, ["frob_request.rs", "frob_response.rs", "mod.rs"]);
        let req = &files["frob_request.rs"];
        for expected in [
            "//! generated by `cargo xtask codegen`, do not edit.",
            "pub const FLEXIBLE_MIN_VERSION: i16 = 2;",
            "pub struct FrobRequest {",
            "pub group_id: Option<String>,",
            "pub timeout_ms: i32,",
            "pub r#type: i8,",
            "pub topics: Vec<FrobTopic>,",
            "pub leader: LeaderIdAndEpoch,",
            "pub unknown_tagged_fields: Vec<(u32, Bytes)>,",
            "pub struct FrobTopic {",
            "pub partitions: Vec<i32>,",
            "pub struct LeaderIdAndEpoch {",
            "group_id: None,",
            "timeout_ms: 2147483647,",
            "r#type: -1,",
            "verbose: true,",
            "leader_id: -1,",
            "this.group_id = field::read_opt(r, version, flexible, version >= 1)?;",
            "if version <= 2 {",
            "0 if version >= 2 => this.leader = Field::read(sub, version, true)?,",
            "1 if version >= 3 => this.verbose = Field::read(sub, version, true)?,",
            "const VERSIONS: (i16, i16) = (0, 3);",
            "pub const API_KEY: i16 = 99;",
        ] {
            assert!(req.contains(expected), "missing {expected:?} in:\n{req}");
        }
        let m = &files["mod.rs"];
        for expected in [
            "pub mod frob_request;",
            "pub use frob_request::FrobRequest;",
            "Frob = 99,",
            "ApiKey::Frob => (0, 3),",
            "ApiKey::Frob => Some(2),",
            "Frob(FrobRequest),",
            "Frob(FrobResponse),",
            "type Response = FrobResponse;",
        ] {
            assert!(m.contains(expected), "missing {expected:?} in mod.rs");
        }
        assert!(!m.contains("Other"), "controller-only APIs are skipped");
    }

    #[test]
    fn snake_case_handles_acronyms() {
        assert_eq!(gen::snake_case("ThrottleTimeMs"), "throttle_time_ms");
        assert_eq!(
            gen::snake_case("KRaftVersionFeature"),
            "k_raft_version_feature"
        );
        assert_eq!(
            gen::snake_case("ApiVersionsRequest"),
            "api_versions_request"
        );
        assert_eq!(gen::snake_case("IPAddress"), "ip_address");
        assert_eq!(gen::snake_case("Topic2Id"), "topic2_id");
    }

    /// The committed generated code matches what the generator writes from the spec now.
    #[test]
    fn committed_generated_code_is_up_to_date() {
        let root = workspace_root();
        let opts = Options {
            spec_dir: root.join("../shared/kafka-message-spec"),
            out_dir: root.join("crates/conflux-wire/src/generated"),
            check: true,
        };
        if !opts.spec_dir.is_dir() {
            eprintln!("skipping: no spec directory at {}", opts.spec_dir.display());
            return;
        }
        if let Err(e) = run(&opts) {
            panic!("{e}");
        }
    }
}
