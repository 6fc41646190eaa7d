//! Heap allocations per request on tollgate's request path: `cargo run --release --example
//! allocations`.
//!
//! Runs, in this one process, a small HTTP upstream, `tollgate run --worker-threads 1` (one
//! thread runs every connection and request of the sidecar) on the benchmark configuration
//! `benches/proxy-overhead.toml` (adapted to free ports and a fresh state directory), and a
//! client with kept-alive connections. A counting global allocator counts the allocations
//! made on the sidecar's runtime thread only, and the example prints the allocations (and
//! bytes) per request for an uncounted `GET` and a counted `POST` (strict durability; the
//! store's writer thread is not counted, the request path's part of counting is).
//! docs/performance.md keeps the figures.

// A global allocator implements an unsafe trait: the one place in the repository with
// `unsafe`, and it only forwards to the system allocator.
#![allow(unsafe_code)]

use std::alloc::{GlobalAlloc, Layout, System};
use std::cell::Cell;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use bytes::Bytes;
use clap::Parser;
use http_body_util::{BodyExt, Full};
use hyper::{Request, Response};
use hyper_util::rt::TokioIo;

/// Counts allocations made on threads that opted in.
struct Counting;

static ALLOCATIONS: AtomicU64 = AtomicU64::new(0);
static BYTES: AtomicU64 = AtomicU64::new(0);
/// Allocations by size: bucket `i` holds sizes in `[2^i, 2^(i+1))`.
static BY_SIZE: [AtomicU64; 32] = [const { AtomicU64::new(0) }; 32];

thread_local! {
    /// Whether this thread's allocations are counted (the sidecar's runtime thread).
    static COUNTED: Cell<bool> = const { Cell::new(false) };
}

fn note(size: usize) {
    if COUNTED.try_with(Cell::get).unwrap_or(false) {
        ALLOCATIONS.fetch_add(1, Ordering::Relaxed);
        BYTES.fetch_add(size as u64, Ordering::Relaxed);
        let bucket = (usize::BITS - size.max(1).leading_zeros() - 1) as usize;
        BY_SIZE[bucket.min(31)].fetch_add(1, Ordering::Relaxed);
    }
}

// SAFETY: every call is passed on to the system allocator unchanged; counting touches only
// atomics and a const-initialised thread-local.
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        note(layout.size());
        // SAFETY: the caller's contract is passed on unchanged.
        unsafe { System.alloc(layout) }
    }
    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        note(layout.size());
        // SAFETY: as above.
        unsafe { System.alloc_zeroed(layout) }
    }
    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        note(new_size);
        // SAFETY: as above.
        unsafe { System.realloc(ptr, layout, new_size) }
    }
    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        // SAFETY: as above.
        unsafe { System.dealloc(ptr, layout) }
    }
}

#[global_allocator]
static GLOBAL: Counting = Counting;

#[derive(Parser)]
struct Args {
    /// Requests measured per method (after as many unmeasured ones).
    #[arg(long, default_value_t = 20_000)]
    requests: u64,
    /// Kept-alive client connections.
    #[arg(long, default_value_t = 8)]
    connections: usize,
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|listener| listener.local_addr())
        .map(|addr| addr.port())
        .expect("a free loopback port")
}

/// The upstream: 200 to a GET, 201 to a POST, a small JSON body each.
async fn upstream(listener: tokio::net::TcpListener) {
    loop {
        let Ok((stream, _)) = listener.accept().await else {
            continue;
        };
        tokio::spawn(async move {
            let service =
                hyper::service::service_fn(|req: Request<hyper::body::Incoming>| async move {
                    let post = req.method() == hyper::Method::POST;
                    let _ = req.into_body().collect().await;
                    let mut response = Response::new(Full::new(Bytes::from_static(
                        b"{\"id\":\"REC-1\",\"status\":\"ok\"}",
                    )));
                    if post {
                        *response.status_mut() = hyper::StatusCode::CREATED;
                    }
                    Ok::<_, std::convert::Infallible>(response)
                });
            let _ = hyper::server::conn::http1::Builder::new()
                .serve_connection(TokioIo::new(stream), service)
                .await;
        });
    }
}

/// Sends `count` requests of `method` over `connections` kept-alive connections.
async fn load(engine: SocketAddr, method: hyper::Method, count: u64, connections: usize) {
    let per = count.div_ceil(connections as u64);
    let mut tasks = Vec::new();
    for _ in 0..connections {
        let method = method.clone();
        tasks.push(tokio::spawn(async move {
            let stream = tokio::net::TcpStream::connect(engine)
                .await
                .expect("connect to tollgate");
            let (mut sender, connection) =
                hyper::client::conn::http1::handshake(TokioIo::new(stream))
                    .await
                    .expect("HTTP/1.1 handshake with tollgate");
            tokio::spawn(connection);
            for _ in 0..per {
                let req = Request::builder()
                    .method(method.clone())
                    .uri("/bench-upstream/records")
                    .header("host", "tollgate.bench")
                    .header("tollgate-flow", "bench")
                    .body(Full::new(Bytes::from_static(b"{\"fields\":{}}")))
                    .expect("a request");
                let response = sender.send_request(req).await.expect("an answer");
                assert!(response.status().is_success(), "{}", response.status());
                let _ = response.into_body().collect().await;
            }
        }));
    }
    for task in tasks {
        task.await.expect("a client task");
    }
}

fn main() {
    let args = Args::parse();
    let root = PathBuf::from(env!("CARGO_MANIFEST_DIR"));
    let work = std::env::temp_dir().join(format!("tollgate-allocations-{}", std::process::id()));
    std::fs::create_dir_all(&work).expect("a scratch directory");
    let (up_port, engine_port, admin_port) = (free_port(), free_port(), free_port());
    let config = std::fs::read_to_string(root.join("benches/proxy-overhead.toml"))
        .expect("benches/proxy-overhead.toml")
        .replace("127.0.0.1:18090", &format!("127.0.0.1:{engine_port}"))
        .replace("127.0.0.1:18091", &format!("127.0.0.1:{admin_port}"))
        .replace("127.0.0.1:18080", &format!("127.0.0.1:{up_port}"))
        .replace("\"../config/", &format!("\"{}/config/", root.display()))
        .replace(
            "\"licenses\"",
            &format!("\"{}/benches/licenses\"", root.display()),
        )
        .replace(
            "\"../target/bench-state\"",
            &format!("\"{}\"", work.join("state").display()),
        );
    let config_path = work.join("tollgate.toml");
    std::fs::write(&config_path, config).expect("write the config");

    let client_runtime = tokio::runtime::Runtime::new().expect("a runtime");
    let listener = client_runtime
        .block_on(tokio::net::TcpListener::bind(("127.0.0.1", up_port)))
        .expect("bind the upstream");
    client_runtime.spawn(upstream(listener));

    let ready = work.join("ready.json");
    let cli = tollgate::cli::Cli::parse_from([
        "tollgate".as_ref(),
        "run".as_ref(),
        "--worker-threads".as_ref(),
        "1".as_ref(),
        "--config".as_ref(),
        config_path.as_os_str(),
        "--ready-file".as_ref(),
        ready.as_os_str(),
    ]);
    std::env::set_var("RUST_LOG", "warn");
    std::thread::spawn(move || {
        COUNTED.with(|counted| counted.set(true));
        if let Err(err) = tollgate::cli::run(cli) {
            eprintln!("tollgate: {err}");
            std::process::exit(1);
        }
    });
    while !ready.exists() {
        std::thread::sleep(Duration::from_millis(20));
    }
    let engine: SocketAddr = ([127, 0, 0, 1], engine_port).into();
    println!(
        "allocations on the sidecar's runtime thread, per request ({} requests, {} connections):",
        args.requests, args.connections
    );
    for method in [hyper::Method::GET, hyper::Method::POST] {
        client_runtime.block_on(load(
            engine,
            method.clone(),
            args.requests,
            args.connections,
        ));
        let (count0, bytes0) = (
            ALLOCATIONS.load(Ordering::Relaxed),
            BYTES.load(Ordering::Relaxed),
        );
        let sizes0: Vec<u64> = BY_SIZE.iter().map(|n| n.load(Ordering::Relaxed)).collect();
        client_runtime.block_on(load(
            engine,
            method.clone(),
            args.requests,
            args.connections,
        ));
        let count = ALLOCATIONS.load(Ordering::Relaxed) - count0;
        let bytes = BYTES.load(Ordering::Relaxed) - bytes0;
        let what = if method == hyper::Method::GET {
            "GET (not counted)"
        } else {
            "POST (counted, strict)"
        };
        println!(
            "  {what:24} {:6.1} allocations, {:7.0} bytes",
            count as f64 / args.requests as f64,
            bytes as f64 / args.requests as f64
        );
        let sizes: Vec<String> = BY_SIZE
            .iter()
            .zip(&sizes0)
            .enumerate()
            .map(|(i, (n, before))| (i, n.load(Ordering::Relaxed) - before))
            .filter(|(_, n)| *n > 0)
            .map(|(i, n)| format!("{}B+: {:.2}", 1u64 << i, n as f64 / args.requests as f64))
            .collect();
        println!("  {:24} by size: {}", "", sizes.join(", "));
    }
    let _ = std::fs::remove_dir_all(&work);
    std::process::exit(0);
}
