//! Writes the large configuration of `benches/scale.sh` into a directory: `tollgate.toml`
//! (10,000 flows over 10,000 instances by default), `licenses/` (100 pair licenses of 100
//! points each, signed with the demo issuer key unless `--key` names another), `issuer.pub`
//! and `admin.token`. `benches/common/scale.rs` says what the configuration holds.
//!
//! `cargo run --release --example scale_config -- --out DIR [--licenses N] [--points N]
//! [--engine ADDR] [--admin ADDR] [--upstream HOST:PORT] [--key FILE]`

use std::path::PathBuf;
use std::process::ExitCode;

use clap::Parser;
use ed25519_dalek::pkcs8::{spki::der::pem::LineEnding, EncodePublicKey};
use tollgate::license::read_signing_key;

#[path = "../benches/common/scale.rs"]
mod scale;

/// Writes a large tollgate configuration with its signed licenses.
#[derive(Parser)]
struct Args {
    /// Directory to write into (created if missing).
    #[arg(long)]
    out: PathBuf,
    /// Pair licenses, each covering its own pair of system types.
    #[arg(long, default_value_t = scale::Scale::ISSUE.licenses)]
    licenses: usize,
    /// Points per license, and flows per license.
    #[arg(long, default_value_t = scale::Scale::ISSUE.points)]
    points: usize,
    /// `server.listen`.
    #[arg(long, default_value = "127.0.0.1:0")]
    engine: String,
    /// `admin.listen`.
    #[arg(long, default_value = "127.0.0.1:0")]
    admin: String,
    /// Where the first license's instances forward (`host:port`); the others get base URIs
    /// under `bench.example`.
    #[arg(long)]
    upstream: Option<String>,
    /// The issuer's private key (PEM, PKCS#8).
    #[arg(long, default_value = concat!(env!("CARGO_MANIFEST_DIR"), "/config/demo/issuer.key"))]
    key: PathBuf,
}

fn main() -> ExitCode {
    let args = Args::parse();
    let scale = scale::Scale {
        licenses: args.licenses,
        points: args.points,
    };
    let addresses = scale::Addresses {
        engine: args.engine,
        admin: args.admin,
        upstream: args.upstream,
    };
    let written = read_signing_key(&args.key)
        .map_err(|err| format!("{}: {err}", args.key.display()))
        .and_then(|key| {
            let public = key
                .verifying_key()
                .to_public_key_pem(LineEnding::LF)
                .map_err(|err| err.to_string())?;
            scale::write(&args.out, scale, &addresses, &key, &public)
        });
    match written {
        Ok(()) => {
            println!(
                "{}: {} flows, {} licenses",
                args.out.display(),
                scale.flows(),
                scale.licenses
            );
            ExitCode::SUCCESS
        }
        Err(err) => {
            eprintln!("scale_config: {err}");
            ExitCode::FAILURE
        }
    }
}
