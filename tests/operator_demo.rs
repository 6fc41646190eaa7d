//! Operator experience: `tollgate demo` runs to completion on loopback,
//! shows the console URL, the warning at 100 and the refusal after 110, and a summary in
//! which the hard limit held exactly.

use std::io::Read;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

/// The value cell of a `| label | value |` summary row.
fn summary(stdout: &str, label: &str) -> String {
    stdout
        .lines()
        .find_map(|line| {
            let cells: Vec<&str> = line.split('|').map(str::trim).collect();
            (cells.len() == 4 && cells[1] == label).then(|| cells[2].to_owned())
        })
        .unwrap_or_else(|| panic!("no summary row {label:?}:\n{stdout}"))
}

#[test]
fn demo_runs_to_completion_and_the_hard_limit_holds() {
    let started = Instant::now();
    let mut child = Command::new(env!("CARGO_BIN_EXE_tollgate"))
        .args(["demo", "--pace", "5ms"])
        .env("NO_COLOR", "1")
        .env_remove("RUST_LOG")
        .env_remove("TOLLGATE_NOW")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn tollgate demo");
    let mut out_pipe = child.stdout.take().unwrap();
    let mut err_pipe = child.stderr.take().unwrap();
    let out_reader = std::thread::spawn(move || {
        let mut text = String::new();
        let _ = out_pipe.read_to_string(&mut text);
        text
    });
    let err_reader = std::thread::spawn(move || {
        let mut text = String::new();
        let _ = err_pipe.read_to_string(&mut text);
        text
    });
    let status = loop {
        if let Some(status) = child.try_wait().expect("wait for the demo") {
            break status;
        }
        if started.elapsed() > Duration::from_secs(60) {
            let _ = child.kill();
            let _ = child.wait();
            let (out, err) = (out_reader.join().unwrap(), err_reader.join().unwrap());
            panic!("tollgate demo did not finish within 60 s\nstdout:\n{out}\nstderr:\n{err}");
        }
        std::thread::sleep(Duration::from_millis(50));
    };
    let (out, err) = (out_reader.join().unwrap(), err_reader.join().unwrap());
    let all = format!("stdout:\n{out}\nstderr:\n{err}");
    assert!(status.success(), "tollgate demo exited {status}\n{all}");

    // The console URL, on loopback, while it runs.
    let console = out
        .lines()
        .find_map(|l| l.trim().strip_prefix("console:"))
        .unwrap_or_else(|| panic!("no console line\n{all}"))
        .split_whitespace()
        .next()
        .unwrap_or_default()
        .to_owned();
    let address = console
        .strip_prefix("http://127.0.0.1:")
        .and_then(|rest| rest.strip_suffix('/'))
        .unwrap_or_else(|| panic!("console URL {console:?} is not http://127.0.0.1:PORT/\n{all}"));
    let port: u16 = address
        .parse()
        .unwrap_or_else(|_| panic!("console port {address:?}\n{all}"));
    assert_ne!(port, 0);

    // The warning at 100 and the refusal after 110, in that order.
    let warning = "warning at record 100: Tollgate-Warning: records-limit-reached; used=100; limit=100; hard_limit=110";
    let refusal = "refused after record 110: 429 records-limit-exceeded";
    let lines: Vec<&str> = out.lines().map(str::trim).collect();
    let at_warning = lines
        .iter()
        .position(|l| *l == warning)
        .unwrap_or_else(|| panic!("no line {warning:?}\n{all}"));
    let at_refusal = lines
        .iter()
        .position(|l| *l == refusal)
        .unwrap_or_else(|| panic!("no line {refusal:?}\n{all}"));
    assert!(at_warning < at_refusal, "{all}");
    assert_eq!(
        lines.iter().filter(|l| l.starts_with("warning at")).count(),
        1,
        "{all}"
    );

    // The summary, after the refusal.
    let table_start = lines
        .iter()
        .position(|l| l.starts_with('|'))
        .unwrap_or_else(|| panic!("no summary table\n{all}"));
    assert!(table_start > at_refusal, "{all}");
    assert_eq!(
        summary(&out, "records accepted by Jira (2xx)"),
        "110",
        "{all}"
    );
    assert_eq!(summary(&out, "records counted by tollgate"), "110", "{all}");
    assert_eq!(
        summary(&out, "monthly limit / hard limit"),
        "100 / 110",
        "{all}"
    );
    assert_eq!(
        summary(&out, "warning first seen at record"),
        "100",
        "{all}"
    );
    assert_eq!(summary(&out, "Jira issues created"), "110", "{all}");
    assert_eq!(
        summary(&out, "flow \"incidents\" afterwards"),
        "disabled (records-limit)",
        "{all}"
    );
    let refused: u64 = summary(&out, "loads refused (429 records-limit-exceeded)")
        .parse()
        .unwrap_or_else(|_| panic!("refused count\n{all}"));
    assert!(refused >= 1, "{all}");
    assert_eq!(
        lines.last().copied(),
        Some("demo complete: the hard limit held exactly"),
        "{all}"
    );
    assert!(started.elapsed() < Duration::from_secs(60));
}
