//! The `tollgate` binary: parse the command line and hand over to the library.

use std::process::ExitCode;

use clap::Parser;

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
