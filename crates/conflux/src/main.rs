//! The `conflux` binary: parses the command line and runs the chosen subcommand.
fn main() {
    eprintln!("conflux: not yet implemented");
    std::process::exit(2);
}
