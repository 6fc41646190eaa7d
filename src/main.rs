//! The `tollgate` binary: parse the command line and hand over to the library.

use std::process::ExitCode;

use clap::Parser;

/// mimalloc rather than the system allocator: faster for the request path's many short-lived
/// allocations of every size (docs/performance.md measures the difference).
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() -> ExitCode {
    let cli = tollgate::cli::Cli::parse();
    match tollgate::cli::run(cli) {
        Ok(code) => code,
        Err(err) => {
            eprintln!("tollgate: {err}");
            ExitCode::from(1)
        }
    }
}
