//! Standard output for the CLI verbs. `println!` panics when stdout is closed early (as by
//! `tollgate usage | head`); here a closed pipe ends the process quietly with success, the
//! way Unix tools behave, and any other write error ends it with a message and exit 1.

use std::fmt;
use std::io::{ErrorKind, Write};

/// Writes one line (`say!` is the `println!` of the CLI).
pub fn line(args: fmt::Arguments<'_>) {
    let mut out = std::io::stdout().lock();
    let written = out.write_fmt(args).and_then(|()| out.write_all(b"\n"));
    if let Err(err) = written.and_then(|()| out.flush()) {
        if err.kind() == ErrorKind::BrokenPipe {
            std::process::exit(0);
        }
        eprintln!("tollgate: cannot write to standard output: {err}");
        std::process::exit(1);
    }
}

/// `println!` for the CLI: a closed standard output is not a panic.
macro_rules! say {
    () => {
        $crate::cli::output::line(format_args!(""))
    };
    ($($arg:tt)*) => {
        $crate::cli::output::line(format_args!($($arg)*))
    };
}

pub(crate) use say;
