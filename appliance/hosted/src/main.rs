//! The `understudy` command-line program.
fn main() {}
