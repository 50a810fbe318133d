//! Project automation entry point: `cargo xtask codegen`, `cargo xtask tidy`.
fn main() {
    eprintln!("usage: cargo xtask codegen");
    std::process::exit(2);
}
