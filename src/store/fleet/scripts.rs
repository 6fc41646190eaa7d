//! The Lua scripts fleet mode runs in Redis. Each runs atomically; redis-rs sends `EVALSHA`
//! and falls back to `EVAL` when Redis answers `NOSCRIPT` (after a restart or a failover), so
//! the scripts need no loading step. Every key a script touches is passed in `KEYS` and shares
//! one hash tag, so a cluster proxy (or a future cluster client) can keep each script in one
//! slot; tollgate itself talks to one endpoint.

use std::sync::LazyLock;

use redis::Script;

/// Settles one sidecar's exchange with a license-month's lease book and grants a block:
/// the transliteration of `book::settle` (a test runs both on the same steps).
///
/// `KEYS[1]`: the book (a hash: `granted`, `hard`, and per node `h:` held, `c:` committed,
/// `s:` last sequence number, `t:` last seen, Redis milliseconds).
/// `ARGV`: node, seq, held (-1 return, -2 keep), committed, ask, hard (-1 none), lease_max,
/// ttl_ms, need (the least grant of any use: a bulk load's batch; a smaller block is raised to
/// it, and nothing is granted where the headroom is smaller).
/// Returns `{0, last_seq}` for a stale exchange, else `{1, grant, held, mine, total, granted,
/// live, now_ms, node1, held1, committed1, seen1, node2, ...}`.
pub const LEASE_SOURCE: &str = r#"
local key = KEYS[1]
local node = ARGV[1]
local seq = tonumber(ARGV[2])
local claim = tonumber(ARGV[3])
local committed = tonumber(ARGV[4])
local ask = tonumber(ARGV[5])
local hard = tonumber(ARGV[6])
local lease_max = tonumber(ARGV[7])
local ttl = tonumber(ARGV[8])
local need = tonumber(ARGV[9] or '0')
local time = redis.call('TIME')
local now = tonumber(time[1]) * 1000 + math.floor(tonumber(time[2]) / 1000)
local flat = redis.call('HGETALL', key)
local h = {}
for i = 1, #flat, 2 do h[flat[i]] = flat[i + 1] end
local last = tonumber(h['s:' .. node] or '0')
if seq <= last then return {0, last} end
local was = tonumber(h['h:' .. node] or '0')
local mine = math.max(tonumber(h['c:' .. node] or '0'), committed)
local held = claim
if claim == -1 then held = mine elseif claim == -2 then held = math.max(was, mine) end
if held < mine then held = mine end
local granted = tonumber(h['granted'] or '0') - was + held
local live = 1
for name, value in pairs(h) do
  if string.sub(name, 1, 2) == 't:' and string.sub(name, 3) ~= node and now - tonumber(value) < ttl then
    live = live + 1
  end
end
local grant = 0
if hard >= 0 and ask > 0 and hard > granted then
  local headroom = hard - granted
  grant = math.floor(headroom / (4 * live))
  if grant < 1 then grant = 1 end
  grant = math.min(grant, ask, lease_max, headroom)
  if need > grant then
    if need <= headroom then grant = need else grant = 0 end
  end
end
granted = granted + grant
held = held + grant
redis.call('HSET', key, 'granted', granted, 'hard', hard, 'h:' .. node, held, 'c:' .. node, mine,
  's:' .. node, seq, 't:' .. node, now)
redis.call('PEXPIRE', key, 34560000000)
h['h:' .. node] = tostring(held)
h['c:' .. node] = tostring(mine)
h['t:' .. node] = tostring(now)
local total = 0
local out = {1, grant, held, mine, 0, granted, live, now}
for name, value in pairs(h) do
  if string.sub(name, 1, 2) == 'h:' then
    local other = string.sub(name, 3)
    local c = tonumber(h['c:' .. other] or '0')
    total = total + c
    table.insert(out, other)
    table.insert(out, tonumber(value))
    table.insert(out, c)
    table.insert(out, tonumber(h['t:' .. other] or '0'))
  end
end
out[5] = total
return out
"#;

/// Claims (or keeps) a node name for this run of a sidecar, so two sidecars configured with
/// the same `node` cannot both write one line of every lease book.
///
/// `KEYS[1]`: the claim; `ARGV`: this run's random incarnation id, the claim's lifetime (ms).
/// Returns 1 when the name is this run's, 0 when another run holds it.
pub static CLAIM_NODE: LazyLock<Script> = LazyLock::new(|| {
    Script::new(
        r#"
local holder = redis.call('GET', KEYS[1])
if holder and holder ~= ARGV[1] then return 0 end
redis.call('SET', KEYS[1], ARGV[1], 'PX', tonumber(ARGV[2]))
return 1
"#,
    )
});

/// Gives a node name back at shutdown, if this run still holds it, so a restart joins at once.
///
/// `KEYS[1]`: the claim; `ARGV`: this run's incarnation id. Returns 1 when it was released.
pub static RELEASE_NODE: LazyLock<Script> = LazyLock::new(|| {
    Script::new(
        r#"
if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('DEL', KEYS[1]) end
return 0
"#,
    )
});

/// See [`LEASE_SOURCE`].
pub static LEASE: LazyLock<Script> = LazyLock::new(|| Script::new(LEASE_SOURCE));

/// Ships one sidecar's per-flow counts of a month and reads everyone's back.
///
/// `KEYS[1]`: the month's flow counts (a hash `node/flow` → committed).
/// `ARGV`: node, then flow, count pairs. A count only ever rises (a retry is harmless).
/// Returns the whole hash, flattened.
pub static FLOW_COUNTS: LazyLock<Script> = LazyLock::new(|| {
    Script::new(
        r#"
local key = KEYS[1]
local node = ARGV[1]
for i = 2, #ARGV, 2 do
  local field = node .. '/' .. ARGV[i]
  local count = tonumber(ARGV[i + 1])
  if count > tonumber(redis.call('HGET', key, field) or '0') then
    redis.call('HSET', key, field, count)
  end
end
if #ARGV > 1 then redis.call('PEXPIRE', key, 34560000000) end
return redis.call('HGETALL', key)
"#,
    )
});

/// Writes flow settings, bumps the fleet's version and tells every sidecar.
///
/// `KEYS[1]`: flow settings (hash flow → JSON); `KEYS[2]`: the version.
/// `ARGV`: the channel, the version the caller last saw, the mode, then flow, JSON pairs. The
/// mode is `set` (write), `seed` (write only where the fleet has no setting yet: the first
/// sidecar of a fleet, or after Redis lost its data), or a version: write only if the
/// settings are still at that version (an operator's change decided on them), else change
/// nothing and return -1. The new version is above
/// the one the caller saw, also when Redis lost the version, so no sidecar mistakes a change
/// after a data loss for one it has seen. Returns the new version.
pub static PUBLISH_FLOWS: LazyLock<Script> = LazyLock::new(|| {
    Script::new(
        r#"
local mode = ARGV[3]
local seed = mode == 'seed'
if mode ~= 'set' and not seed and tonumber(redis.call('GET', KEYS[2]) or '0') ~= tonumber(mode) then
  return -1
end
local changed = 0
for i = 4, #ARGV, 2 do
  if seed then
    changed = changed + redis.call('HSETNX', KEYS[1], ARGV[i], ARGV[i + 1])
  else
    redis.call('HSET', KEYS[1], ARGV[i], ARGV[i + 1])
    changed = changed + 1
  end
end
if changed == 0 then return tonumber(redis.call('GET', KEYS[2]) or '0') end
local version = redis.call('INCR', KEYS[2])
if version <= tonumber(ARGV[2]) then
  version = tonumber(ARGV[2]) + 1
  redis.call('SET', KEYS[2], version)
end
redis.call('PUBLISH', ARGV[1], version)
return version
"#,
    )
});

/// Reads the fleet's flow settings with their version, in one atomic step.
///
/// `KEYS[1]`: flow settings; `KEYS[2]`: the version. Returns `{version, flow1, json1, ...}`.
pub static READ_FLOWS: LazyLock<Script> = LazyLock::new(|| {
    Script::new(
        r#"
local out = {tonumber(redis.call('GET', KEYS[2]) or '0')}
local flat = redis.call('HGETALL', KEYS[1])
for i = 1, #flat do table.insert(out, flat[i]) end
return out
"#,
    )
});

/// Appends audit events to the fleet's trail, once each: two sidecars that journal the same
/// event (both saw a flow stop) within the window write it once.
///
/// `KEYS[1]`: the trail (sorted set by sequence); `KEYS[2]`: the sequence; `KEYS[3..]`: one
/// once-key per event. `ARGV`: the node, the window in ms, then one JSON object per once-key
/// (with at least one member; `seq` and `node` are put in front of its members).
/// Returns how many were written.
pub static APPEND_AUDIT: LazyLock<Script> = LazyLock::new(|| {
    Script::new(
        r#"
local written = 0
for i = 3, #KEYS do
  if redis.call('SET', KEYS[i], '1', 'NX', 'PX', tonumber(ARGV[2])) then
    local seq = redis.call('INCR', KEYS[2])
    local event = '{"seq":' .. seq .. ',"node":' .. cjson.encode(ARGV[1]) .. ',' .. string.sub(ARGV[i], 2)
    redis.call('ZADD', KEYS[1], seq, event)
    written = written + 1
  end
end
redis.call('ZREMRANGEBYRANK', KEYS[1], 0, -100001)
return written
"#,
    )
});

#[cfg(test)]
mod tests {
    use std::net::TcpListener;
    use std::process::{Child, Command, Stdio};
    use std::time::{Duration, Instant};

    use proptest::prelude::*;
    use redis::Value as RedisValue;

    use super::*;
    use crate::store::fleet::book::model::{settle, Ask, Book, Reply};
    use crate::store::fleet::book::{Claim, Settled};

    /// A `redis-server` of the test's own on a free port, stopped (by pid) when dropped.
    struct RedisServer {
        child: Child,
        port: u16,
    }

    impl RedisServer {
        fn start() -> RedisServer {
            let port = TcpListener::bind("127.0.0.1:0")
                .unwrap()
                .local_addr()
                .unwrap()
                .port();
            let child = Command::new("redis-server")
                .args([
                    "--port",
                    &port.to_string(),
                    "--bind",
                    "127.0.0.1",
                    "--save",
                    "",
                    "--appendonly",
                    "no",
                ])
                .stdout(Stdio::null())
                .spawn()
                .expect(
                    "redis-server is installed (Debian package redis-server; .ci/run installs it)",
                );
            let deadline = Instant::now() + Duration::from_secs(10);
            while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
                assert!(Instant::now() < deadline, "redis-server did not start");
                std::thread::sleep(Duration::from_millis(20));
            }
            RedisServer { child, port }
        }
    }

    impl Drop for RedisServer {
        fn drop(&mut self) {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }

    fn encode(ask: &Ask) -> Vec<String> {
        vec![
            ask.node.clone(),
            ask.seq.to_string(),
            ask.claim.encode().to_string(),
            ask.committed.to_string(),
            ask.ask.to_string(),
            ask.hard.map_or(-1, |hard| hard as i64).to_string(),
            ask.lease_max.to_string(),
            ask.ttl_ms.to_string(),
            ask.need.to_string(),
        ]
    }

    fn decode(reply: &[RedisValue]) -> Reply {
        let n = |i: usize| match &reply[i] {
            RedisValue::Int(n) => *n as u64,
            other => panic!("not a number: {other:?}"),
        };
        if n(0) == 0 {
            return Reply::Stale { last: n(1) };
        }
        Reply::Settled(Settled {
            grant: n(1),
            held: n(2),
            mine: n(3),
            total: n(4),
            granted: n(5),
            live: n(6),
        })
    }

    fn claim() -> impl Strategy<Value = Claim> {
        prop_oneof![
            6 => (0u64..40).prop_map(Claim::Exact),
            1 => Just(Claim::Return),
            1 => Just(Claim::Keep),
        ]
    }

    fn asks() -> impl Strategy<Value = Vec<Ask>> {
        let one = (
            0usize..3,
            0u64..4,
            claim(),
            0u64..30,
            0u64..12,
            prop::option::of(0u64..60),
            1u64..9,
            prop_oneof![3 => Just(0u64), 1 => 0u64..30],
        );
        prop::collection::vec(one, 1..60).prop_map(|steps| {
            let mut seqs = [0u64; 3];
            steps
                .into_iter()
                .map(
                    |(node, jump, claim, committed, ask, hard, lease_max, need)| {
                        // Mostly increasing sequence numbers, sometimes a repeat (a late copy).
                        seqs[node] = (seqs[node] + jump).saturating_sub(u64::from(jump == 0));
                        Ask {
                            node: ["a", "b", "c"][node].to_owned(),
                            seq: seqs[node],
                            claim,
                            committed,
                            ask,
                            need,
                            hard,
                            lease_max,
                            ttl_ms: 1_000_000_000,
                        }
                    },
                )
                .collect()
        })
    }

    /// The Lua lease script and its Rust reference model answer every exchange alike and
    /// leave the same book: the properties proved of the model hold of the script.
    #[test]
    fn the_lease_script_agrees_with_its_reference_model() {
        let server = RedisServer::start();
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        let client = redis::Client::open(format!("redis://127.0.0.1:{}/0", server.port)).unwrap();
        let connection = runtime
            .block_on(client.get_multiplexed_async_connection())
            .unwrap();
        let round = std::sync::atomic::AtomicU32::new(0);
        let config = ProptestConfig {
            cases: 96,
            ..ProptestConfig::default()
        };
        proptest!(config, |(asks in asks())| {
            let round = round.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            let key = format!("tollgate:{{test:L:{round}}}:lease");
            let mut connection = connection.clone();
            let mut book = Book::default();
            for ask in &asks {
                let expected = settle(&mut book, ask, 0);
                let mut invocation = LEASE.key(&key);
                for arg in encode(ask) {
                    invocation.arg(arg);
                }
                let reply: Vec<RedisValue> = runtime.block_on(invocation.invoke_async(&mut connection)).unwrap();
                prop_assert_eq!(decode(&reply), expected, "after {:?}", ask);
            }
            let granted: Option<u64> = runtime.block_on(redis::cmd("HGET").arg(&key).arg("granted").query_async(&mut connection)).unwrap();
            prop_assert_eq!(granted.unwrap_or(0), book.granted);
        });
    }
}
