//! Project automation entry point: `cargo xtask codegen [--spec DIR] [--check]`.
//!
//! `codegen` turns Apache Kafka's JSON message definitions into the Rust codec in
//! `crates/conflux-wire/src/generated/`; `--check` only verifies that the committed code is
//! what the generator would write now (and skips, successfully, when the spec is absent).

mod codegen;
mod gen;
mod spec;

use std::path::PathBuf;
use std::process::ExitCode;

fn usage() -> ExitCode {
    eprintln!("usage: cargo xtask codegen [--spec DIR] [--out DIR] [--check]");
    ExitCode::from(2)
}

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let Some((command, rest)) = args.split_first() else {
        return usage();
    };
    if command != "codegen" {
        return usage();
    }
    let root = codegen::workspace_root();
    let mut opts = codegen::Options {
        spec_dir: root.join("../shared/kafka-message-spec"),
        out_dir: root.join("crates/conflux-wire/src/generated"),
        check: false,
    };
    let mut it = rest.iter();
    while let Some(arg) = it.next() {
        match arg.as_str() {
            "--check" => opts.check = true,
            "--spec" => match it.next() {
                Some(dir) => opts.spec_dir = PathBuf::from(dir),
                None => return usage(),
            },
            "--out" => match it.next() {
                Some(dir) => opts.out_dir = PathBuf::from(dir),
                None => return usage(),
            },
            _ => return usage(),
        }
    }
    match codegen::run(&opts) {
        Ok(message) => {
            println!("{message}");
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("codegen: {e}");
            ExitCode::FAILURE
        }
    }
}
