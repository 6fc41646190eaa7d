//! A real `redis-server` for the fleet tests: started on a free loopback port with a data
//! directory of its own, answered PING before it is handed out, stopped, frozen
//! (`SIGSTOP`), thawed (`SIGCONT`), restarted on the same port and directory (so an
//! append-only file survives, while an in-memory data set is lost) and killed, all by the
//! process id of the child it started. [`RedisServer::command`] speaks RESP over a raw TCP
//! connection for assertions; the tests use no Redis client crate.

use std::fs::File;
use std::io::{BufRead, BufReader, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// The binary, as Debian's `redis-server` package installs it (found on `PATH`).
const REDIS_SERVER: &str = "redis-server";
/// How long redis-server may take to answer PING after it is started.
const START_TIMEOUT: Duration = Duration::from_secs(15);
/// How long a graceful stop (SIGTERM) may take before the process is killed.
const STOP_TIMEOUT: Duration = Duration::from_secs(5);
/// Bound on one exchange of [`RedisServer::command`] and on each PING.
const IO_TIMEOUT: Duration = Duration::from_secs(5);

/// How the server keeps its data.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub enum Persistence {
    /// `--save "" --appendonly no`: nothing survives a restart.
    None,
    /// `--appendonly yes --appendfsync always`: every write is on disk before it is
    /// answered, so the data set survives a restart (even after `kill -9`).
    AppendOnly,
}

/// A `redis-server` child process on `127.0.0.1:<port>` (see the module docs).
pub struct RedisServer {
    port: u16,
    dir: tempfile::TempDir,
    persistence: Persistence,
    password: Option<String>,
    child: Option<Child>,
    /// How many times it was started (names the log file of each run).
    runs: usize,
}

impl Drop for RedisServer {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            // A frozen process still dies of SIGKILL.
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

impl RedisServer {
    /// A running server without persistence.
    pub fn start() -> RedisServer {
        let mut server = RedisServer::stopped(Persistence::None, None);
        server.launch();
        server
    }

    /// A running server with `--appendonly yes --appendfsync always`.
    pub fn start_aof() -> RedisServer {
        let mut server = RedisServer::stopped(Persistence::AppendOnly, None);
        server.launch();
        server
    }

    /// A running server without persistence that requires `password` (`--requirepass`).
    pub fn start_with_password(password: &str) -> RedisServer {
        let mut server = RedisServer::stopped(Persistence::None, Some(password));
        server.launch();
        server
    }

    /// A server that is not running yet: its port is chosen (nothing listens on it) and its
    /// directory made; [`RedisServer::restart`] starts it there.
    pub fn not_started(persistence: Persistence) -> RedisServer {
        RedisServer::stopped(persistence, None)
    }

    fn stopped(persistence: Persistence, password: Option<&str>) -> RedisServer {
        let dir = tempfile::tempdir().expect("create a directory for redis-server");
        RedisServer {
            port: free_port(),
            dir,
            persistence,
            password: password.map(str::to_owned),
            child: None,
            runs: 0,
        }
    }

    /// `redis://127.0.0.1:PORT/0`.
    pub fn url(&self) -> String {
        format!("redis://127.0.0.1:{}/0", self.port)
    }

    /// The port it listens on (the same across restarts).
    pub fn port(&self) -> u16 {
        self.port
    }

    /// `127.0.0.1:PORT`.
    pub fn addr(&self) -> SocketAddr {
        ([127, 0, 0, 1], self.port).into()
    }

    /// Its data directory (the append-only file, the logs of each run).
    pub fn dir(&self) -> &Path {
        self.dir.path()
    }

    /// Whether the process it started is still running (a frozen one is).
    pub fn is_running(&mut self) -> bool {
        match &mut self.child {
            Some(child) => matches!(child.try_wait(), Ok(None)),
            None => false,
        }
    }

    /// Everything redis-server logged in its runs so far.
    pub fn logs(&self) -> String {
        let mut text = String::new();
        for run in 1..=self.runs {
            let path = self.log_path(run);
            text.push_str(&format!("--- {}\n", path.display()));
            text.push_str(&std::fs::read_to_string(&path).unwrap_or_default());
        }
        text
    }

    fn log_path(&self, run: usize) -> PathBuf {
        self.dir.path().join(format!("redis-{run}.log"))
    }

    /// Starts redis-server on the port and directory and waits until it answers PING.
    fn launch(&mut self) {
        assert!(self.child.is_none(), "redis-server is already running");
        self.runs += 1;
        let log = File::create(self.log_path(self.runs)).expect("create the redis-server log");
        let log_err = log.try_clone().expect("clone the redis-server log handle");
        let mut command = Command::new(REDIS_SERVER);
        command
            .arg("--bind")
            .arg("127.0.0.1")
            .arg("--port")
            .arg(self.port.to_string())
            .arg("--dir")
            .arg(self.dir.path())
            .arg("--daemonize")
            .arg("no")
            .arg("--save")
            .arg("");
        match self.persistence {
            Persistence::None => {
                command.arg("--appendonly").arg("no");
            }
            Persistence::AppendOnly => {
                command
                    .arg("--appendonly")
                    .arg("yes")
                    .arg("--appendfsync")
                    .arg("always");
            }
        }
        if let Some(password) = &self.password {
            command.arg("--requirepass").arg(password);
        }
        command
            .stdin(Stdio::null())
            .stdout(Stdio::from(log))
            .stderr(Stdio::from(log_err));
        let child = command.spawn().unwrap_or_else(|err| {
            panic!("spawn {REDIS_SERVER} (is the redis-server package installed?): {err}")
        });
        self.child = Some(child);
        let start = Instant::now();
        loop {
            if self.ping() {
                return;
            }
            if !self.is_running() {
                panic!(
                    "redis-server on port {} exited before answering PING; log:\n{}",
                    self.port,
                    self.logs()
                );
            }
            if start.elapsed() > START_TIMEOUT {
                panic!(
                    "redis-server on port {} did not answer PING within {START_TIMEOUT:?}; log:\n{}",
                    self.port,
                    self.logs()
                );
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// Whether it answers `PING` with `+PONG` now (an inline command on a fresh
    /// connection, after `AUTH` when it has a password).
    fn ping(&self) -> bool {
        let Ok(stream) = TcpStream::connect_timeout(&self.addr(), IO_TIMEOUT) else {
            return false;
        };
        let _ = stream.set_read_timeout(Some(IO_TIMEOUT));
        let _ = stream.set_write_timeout(Some(IO_TIMEOUT));
        let mut reader = BufReader::new(stream);
        if let Some(password) = &self.password {
            if reader
                .get_mut()
                .write_all(&encode(&["AUTH", password]))
                .is_err()
            {
                return false;
            }
            if !matches!(read_reply(&mut reader), Ok(Reply::Simple(_))) {
                return false;
            }
        }
        if reader.get_mut().write_all(b"PING\r\n").is_err() {
            return false;
        }
        let mut line = String::new();
        reader.read_line(&mut line).is_ok() && line == "+PONG\r\n"
    }

    /// Sends `signal` (`STOP`, `CONT`, `TERM`, `KILL`) to the running server by pid.
    fn signal(&self, signal: &str) {
        let child = self
            .child
            .as_ref()
            .unwrap_or_else(|| panic!("redis-server is not running (to send SIG{signal})"));
        let status = Command::new("kill")
            .arg(format!("-{signal}"))
            .arg(child.id().to_string())
            .status()
            .expect("run kill");
        assert!(status.success(), "kill -{signal} {} failed", child.id());
    }

    /// Freezes the server (`SIGSTOP`): connections stay open, nothing is answered.
    pub fn freeze(&self) {
        self.signal("STOP");
    }

    /// Lets a frozen server run again (`SIGCONT`).
    pub fn thaw(&self) {
        self.signal("CONT");
    }

    /// Stops the server gracefully (`SIGCONT` in case it is frozen, then `SIGTERM`; killed
    /// if it has not exited within 5 s) and waits for the exit. Without persistence the
    /// data set is gone.
    pub fn stop(&mut self) {
        if self.child.is_none() {
            return;
        }
        self.signal("CONT");
        self.signal("TERM");
        let mut child = self.child.take().expect("a running redis-server");
        let start = Instant::now();
        loop {
            match child.try_wait() {
                Ok(Some(_)) => return,
                Ok(None) if start.elapsed() < STOP_TIMEOUT => {
                    std::thread::sleep(Duration::from_millis(20))
                }
                _ => {
                    let _ = child.kill();
                    let _ = child.wait();
                    return;
                }
            }
        }
    }

    /// Kills the server with `SIGKILL` (`kill -9`) and reaps it.
    pub fn kill9(&mut self) {
        if self.child.is_none() {
            return;
        }
        self.signal("KILL");
        let mut child = self.child.take().expect("a running redis-server");
        let _ = child.wait();
    }

    /// Stops the server if it runs, then starts it again on the same port and directory
    /// and waits until it answers PING (a server from [`RedisServer::not_started`] starts
    /// for the first time).
    pub fn restart(&mut self) {
        self.stop();
        self.launch();
    }

    /// Sends one command (`["HGETALL", "key"]`) on a fresh connection (after `AUTH` when
    /// the server has a password) and returns the reply as text: a status or bulk string
    /// as itself, an integer in decimal, nil as `(nil)`, an error as `ERR …` prefixed
    /// with `-`, an array as its elements, one per line (nested arrays flattened).
    pub fn command(&self, args: &[&str]) -> String {
        let stream = TcpStream::connect_timeout(&self.addr(), IO_TIMEOUT)
            .unwrap_or_else(|err| panic!("connect to redis-server on {}: {err}", self.addr()));
        stream
            .set_read_timeout(Some(IO_TIMEOUT))
            .expect("set a read timeout");
        let mut reader = BufReader::new(stream);
        if let Some(password) = &self.password {
            reader
                .get_mut()
                .write_all(&encode(&["AUTH", password]))
                .expect("send AUTH to redis-server");
            read_reply(&mut reader).expect("read the AUTH reply");
        }
        reader
            .get_mut()
            .write_all(&encode(args))
            .unwrap_or_else(|err| panic!("send {args:?} to redis-server: {err}"));
        let reply = read_reply(&mut reader)
            .unwrap_or_else(|err| panic!("read the reply to {args:?}: {err}"));
        let mut lines = Vec::new();
        reply.render(&mut lines);
        lines.join("\n")
    }

    /// The keys of the data set (`KEYS *`), sorted.
    pub fn keys(&self) -> Vec<String> {
        let mut keys: Vec<String> = self
            .command(&["KEYS", "*"])
            .lines()
            .filter(|line| !line.is_empty())
            .map(str::to_owned)
            .collect();
        keys.sort();
        keys
    }
}

impl RedisServer {
    /// Every key with its type and (the first 20 items of) its value, one key a line, for
    /// failure messages.
    pub fn dump(&self) -> String {
        let mut text = String::new();
        for key in self.keys() {
            let kind = self.command(&["TYPE", &key]);
            let value = match kind.as_str() {
                "string" => self.command(&["GET", &key]),
                "hash" => self.command(&["HGETALL", &key]),
                "list" => self.command(&["LRANGE", &key, "0", "19"]),
                "set" => self.command(&["SMEMBERS", &key]),
                "zset" => self.command(&["ZRANGE", &key, "0", "19", "WITHSCORES"]),
                _ => String::new(),
            };
            text.push_str(&format!("{key} ({kind}): {}\n", value.replace('\n', " | ")));
        }
        text
    }
}

/// A loopback port nothing listens on (bound, then released).
fn free_port() -> u16 {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind a loopback port");
    listener
        .local_addr()
        .expect("the address of a bound loopback port")
        .port()
}

/// A command as a RESP array of bulk strings.
fn encode(args: &[&str]) -> Vec<u8> {
    let mut out = format!("*{}\r\n", args.len()).into_bytes();
    for arg in args {
        out.extend_from_slice(format!("${}\r\n", arg.len()).as_bytes());
        out.extend_from_slice(arg.as_bytes());
        out.extend_from_slice(b"\r\n");
    }
    out
}

/// One RESP2 reply.
enum Reply {
    Simple(String),
    Error(String),
    Integer(i64),
    Bulk(Option<String>),
    Array(Option<Vec<Reply>>),
}

impl Reply {
    fn render(&self, lines: &mut Vec<String>) {
        match self {
            Reply::Simple(text) => lines.push(text.clone()),
            Reply::Error(text) => lines.push(format!("-{text}")),
            Reply::Integer(n) => lines.push(n.to_string()),
            Reply::Bulk(Some(text)) => lines.push(text.clone()),
            Reply::Bulk(None) | Reply::Array(None) => lines.push("(nil)".to_owned()),
            Reply::Array(Some(items)) => {
                for item in items {
                    item.render(lines);
                }
            }
        }
    }
}

fn read_line(reader: &mut impl BufRead) -> std::io::Result<String> {
    let mut line = String::new();
    if reader.read_line(&mut line)? == 0 {
        return Err(std::io::Error::new(
            std::io::ErrorKind::UnexpectedEof,
            "redis-server closed the connection",
        ));
    }
    Ok(line.trim_end_matches("\r\n").to_owned())
}

fn bad(what: String) -> std::io::Error {
    std::io::Error::new(std::io::ErrorKind::InvalidData, what)
}

fn read_reply(reader: &mut impl BufRead) -> std::io::Result<Reply> {
    let line = read_line(reader)?;
    let (kind, rest) = line.split_at(line.len().min(1));
    let number = |rest: &str| -> std::io::Result<i64> {
        rest.parse()
            .map_err(|_| bad(format!("not a RESP number: {line:?}")))
    };
    match kind {
        "+" => Ok(Reply::Simple(rest.to_owned())),
        "-" => Ok(Reply::Error(rest.to_owned())),
        ":" => Ok(Reply::Integer(number(rest)?)),
        "$" => {
            let len = number(rest)?;
            if len < 0 {
                return Ok(Reply::Bulk(None));
            }
            let mut data = vec![0; len as usize + 2];
            reader.read_exact(&mut data)?;
            data.truncate(len as usize);
            Ok(Reply::Bulk(Some(
                String::from_utf8_lossy(&data).into_owned(),
            )))
        }
        "*" => {
            let len = number(rest)?;
            if len < 0 {
                return Ok(Reply::Array(None));
            }
            let items = (0..len)
                .map(|_| read_reply(reader))
                .collect::<std::io::Result<Vec<Reply>>>()?;
            Ok(Reply::Array(Some(items)))
        }
        _ => Err(bad(format!("not a RESP reply: {line:?}"))),
    }
}

/// A TCP forwarder in front of a Redis server that can cut one sidecar off: while it is
/// blocked, bytes in both directions are held back (as on a partitioned network, nothing
/// is refused or reset); unblocked, what was held is delivered and forwarding resumes.
pub struct Partition {
    addr: SocketAddr,
    blocked: std::sync::Arc<std::sync::atomic::AtomicBool>,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for Partition {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl Partition {
    /// A forwarder on a free loopback port to `redis` (on the tokio runtime of the test).
    pub async fn to(redis: &RedisServer) -> Partition {
        use std::sync::atomic::AtomicBool;
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind the partition forwarder");
        let addr = listener.local_addr().expect("the forwarder's address");
        let blocked = std::sync::Arc::new(AtomicBool::new(false));
        let target = redis.addr();
        let flag = blocked.clone();
        let task = tokio::spawn(async move {
            while let Ok((inbound, _)) = listener.accept().await {
                let flag = flag.clone();
                tokio::spawn(async move {
                    let Ok(outbound) = tokio::net::TcpStream::connect(target).await else {
                        return;
                    };
                    let (in_read, in_write) = inbound.into_split();
                    let (out_read, out_write) = outbound.into_split();
                    let up = tokio::spawn(pump(in_read, out_write, flag.clone()));
                    let down = tokio::spawn(pump(out_read, in_write, flag));
                    let _ = tokio::join!(up, down);
                });
            }
        });
        Partition {
            addr,
            blocked,
            task,
        }
    }

    /// `redis://127.0.0.1:PORT/0` through the forwarder.
    pub fn url(&self) -> String {
        format!("redis://{}/0", self.addr)
    }

    /// Holds back every byte from now on.
    pub fn block(&self) {
        self.blocked
            .store(true, std::sync::atomic::Ordering::SeqCst);
    }

    /// Delivers what was held back and forwards again.
    pub fn heal(&self) {
        self.blocked
            .store(false, std::sync::atomic::Ordering::SeqCst);
    }
}

/// Copies `from` to `to`, holding each chunk back while `blocked` is set.
async fn pump(
    mut from: tokio::net::tcp::OwnedReadHalf,
    mut to: tokio::net::tcp::OwnedWriteHalf,
    blocked: std::sync::Arc<std::sync::atomic::AtomicBool>,
) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut buf = vec![0u8; 16 * 1024];
    loop {
        while blocked.load(std::sync::atomic::Ordering::SeqCst) {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        let n = match from.read(&mut buf).await {
            Ok(0) | Err(_) => return,
            Ok(n) => n,
        };
        while blocked.load(std::sync::atomic::Ordering::SeqCst) {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        if to.write_all(&buf[..n]).await.is_err() {
            return;
        }
    }
}
