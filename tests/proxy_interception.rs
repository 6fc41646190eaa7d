//! HTTPS interception: engines behind `HTTPS_PROXY` send `CONNECT host:port`; for the
//! authority of a configured instance tollgate answers 200, terminates the engine's TLS
//! with a certificate for the host issued by `server.intercept_ca`, and handles every request
//! inside the tunnel as an absolute-form request to that instance (flow, gate, count,
//! refusals as problem answers), forwarding over TLS verified as usual. Driven with curl and
//! Python `requests` as engines, and with a rustls client to inspect the certificate.

pub mod common;

use std::time::Duration;

use common::*;
use hyper::Method;

const LICENSE: &str = "LIC-1";
const ISSUE: &str = "/rest/api/2/issue";
const MAIN_LINES: [&str; 5] = [
    "[[flows.entities]]",
    "instance = \"jira-1\"",
    "role = \"main\"",
    "method = \"POST\"",
    "path = \"/rest/api/2/issue\"",
];

/// A TLS `jira` target with its own CA, a sidecar intercepting tunnels to it with flows
/// `incidents` (counting POST /rest/api/2/issue) and `paused` (disabled), and the path of the
/// interception CA's certificate.
struct World {
    jira: Upstream,
    tg: Tollgate,
    ca_pem: String,
    ca_file: String,
}

async fn world(server: &[&str], records: u64) -> World {
    let jira = Upstream::tls("jira").await;
    let (mut builder, ca_pem) = intercepting(tollgate());
    for line in server {
        builder = builder.server_option(line);
    }
    builder.file("proxy.token", "pr0xy-t0ken\n");
    let builder = tls_instance(
        builder.instance("servicenow-1", "servicenow", "http://127.0.0.1:9"),
        "jira-1",
        "jira",
        &jira,
    );
    let tg = builder
        .flow_with("incidents", ["servicenow-1", "jira-1"], &MAIN_LINES)
        .flow_with("paused", ["servicenow-1", "jira-1"], &["enabled = false"])
        .license(&with(
            pair_license(LICENSE, "servicenow", "jira", 1),
            "transferred_records",
            records,
        ))
        .start()
        .await;
    let ca_file = tg.dir().join("ca/ca.pem").display().to_string();
    World {
        jira,
        tg,
        ca_pem,
        ca_file,
    }
}

impl World {
    fn url(&self, path: &str) -> String {
        format!("https://{}{path}", self.jira.addr)
    }

    fn proxy(&self, user_password: &str) -> String {
        format!("http://{user_password}@{}", self.tg.engine)
    }

    async fn used(&self) -> u64 {
        self.tg.records(LICENSE).await["used"]
            .as_u64()
            .unwrap_or(u64::MAX)
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn curl_and_python_requests_reach_a_tls_target_through_a_tunnel_in_http1_and_h2() {
    let w = world(&[], 100).await;
    let url = w.url("/rest/api/2/issue/ABC-1");
    let proxy = w.proxy("incidents:x");

    for (flag, version) in [("--http1.1", "1.1"), ("--http2", "2")] {
        let ok = curl(&[flag, "-x", &proxy, "--cacert", &w.ca_file, &url], &[]);
        assert_eq!(
            ok.status, 200,
            "{flag}: {} {} {}",
            ok.head, ok.body, ok.stderr
        );
        assert_eq!(
            ok.version, version,
            "the engine side speaks what ALPN chose"
        );
        assert!(ok.head.contains("x-upstream: jira"), "{}", ok.head);
        let seen = w.jira.last();
        assert_eq!(seen.path, "/rest/api/2/issue/ABC-1");
        assert_eq!(
            seen.version, "HTTP/2.0",
            "tollgate speaks h2 to a target that offers it"
        );
        assert_eq!(seen.header("proxy-authorization"), None);
        assert_eq!(seen.header("tollgate-flow"), None);
        assert_eq!(
            seen.header("host"),
            None,
            "HTTP/2 carries :authority instead"
        );
    }

    // HTTPS_PROXY and CURL_CA_BUNDLE, as an engine configured by its environment.
    let by_env = curl(
        &[&url],
        &[("HTTPS_PROXY", &proxy), ("CURL_CA_BUNDLE", &w.ca_file)],
    );
    assert_eq!(by_env.status, 200, "{} {}", by_env.body, by_env.stderr);

    // Python requests: HTTPS_PROXY and REQUESTS_CA_BUNDLE.
    let python = python_requests(
        "GET",
        &url,
        "",
        &[("HTTPS_PROXY", &proxy), ("REQUESTS_CA_BUNDLE", &w.ca_file)],
    );
    assert_eq!(python.status, 200, "{}", python.body);
    assert!(
        python.body.contains("/rest/api/2/issue/ABC-1"),
        "{}",
        python.body
    );
    assert_eq!(w.jira.hits(), 4);

    // Without the interception CA the engine refuses the certificate: it is tollgate's.
    let untrusted = curl(&["-x", &proxy, &url], &[]);
    assert_eq!(untrusted.status, 200, "curl saw the CONNECT's 200 only");
    assert!(
        untrusted.stderr.contains("certificate"),
        "{}",
        untrusted.stderr
    );
    assert_eq!(w.jira.hits(), 4, "nothing reached the target without TLS");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_main_load_through_a_tunnel_is_counted_and_the_hard_limit_is_a_429_inside_it() {
    // 10 records a month: the hard limit is 11.
    let w = world(&[], 10).await;
    let url = w.url(ISSUE);
    let first = curl(
        &[
            "-x",
            &w.proxy("incidents:x"),
            "--cacert",
            &w.ca_file,
            "-X",
            "POST",
            "-d",
            "{}",
            &url,
        ],
        &[],
    );
    assert_eq!(first.status, 200, "{} {}", first.body, first.stderr);
    assert_eq!(w.used().await, 1, "the POST through the tunnel is counted");

    let python = python_requests(
        "POST",
        &url,
        "{}",
        &[
            ("HTTPS_PROXY", &w.proxy("incidents:x")),
            ("REQUESTS_CA_BUNDLE", &w.ca_file),
        ],
    );
    assert_eq!(python.status, 200, "{}", python.body);
    assert_eq!(w.used().await, 2);

    let engine = TunnelClient {
        engine: w.tg.engine,
        target: w.jira.addr,
        credentials: Some("incidents:x".to_owned()),
        config: client_config(&w.ca_pem, &[b"h2", b"http/1.1"]),
    };
    for n in 3..=11 {
        let resp = engine
            .request(Method::POST, ISSUE, &[], "{}")
            .await
            .unwrap_or_else(|err| panic!("load {n}: {err}\n{}", w.tg.logs()));
        resp.assert_upstream_ok("jira");
    }
    assert_eq!(w.used().await, 11);
    let refused = curl(
        &[
            "-x",
            &w.proxy("incidents:x"),
            "--cacert",
            &w.ca_file,
            "-X",
            "POST",
            "-d",
            "{}",
            &url,
        ],
        &[],
    );
    assert_eq!(
        (refused.status, refused.reason()),
        (429, Some("records-limit-exceeded")),
        "{}",
        refused.body
    );
    assert!(refused
        .head
        .contains("content-type: application/problem+json"));
    assert!(refused.head.contains("retry-after: "), "{}", refused.head);
    assert_eq!(w.used().await, 11, "nothing past the hard limit");
    assert_eq!(w.jira.hits(), 11);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn refusals_inside_a_tunnel_are_problem_answers_and_the_flow_header_overrides_the_proxy_user()
{
    let w = world(&[], 100).await;
    let url = w.url(ISSUE);
    let through = |user: &str, extra: &[&str]| {
        let proxy = w.proxy(user);
        let mut args = vec!["-x", proxy.as_str(), "--cacert", w.ca_file.as_str()];
        args.extend_from_slice(extra);
        args.push(&url);
        curl(&args, &[])
    };

    let unknown = through("nosuchflow:x", &[]);
    assert_eq!(
        (unknown.status, unknown.reason()),
        (403, Some("unknown-flow")),
        "{}",
        unknown.body
    );
    assert!(unknown.body.contains("nosuchflow"), "{}", unknown.body);
    let disabled = through("paused:x", &[]);
    assert_eq!(
        (disabled.status, disabled.reason()),
        (403, Some("flow-disabled")),
        "{}",
        disabled.body
    );
    assert!(
        disabled.body.contains("\"reason\":\"operator\""),
        "{}",
        disabled.body
    );
    let anonymous = curl(
        &[
            "-x",
            &format!("http://{}", w.tg.engine),
            "--cacert",
            &w.ca_file,
            &url,
        ],
        &[],
    );
    assert_eq!(
        (anonymous.status, anonymous.reason()),
        (403, Some("flow-required"))
    );
    assert!(
        anonymous.body.contains("proxy user name"),
        "{}",
        anonymous.body
    );
    let elsewhere = through("incidents:x", &["-H", "Host: other.example"]);
    assert_eq!(
        (elsewhere.status, elsewhere.reason()),
        (400, Some("bad-request")),
        "{}",
        elsewhere.body
    );
    assert_eq!(w.jira.hits(), 0, "refused requests reach nobody");

    // The flow header wins over the proxy user, and neither reaches the target.
    let named = through(
        "nosuchflow:x",
        &["-H", "Tollgate-Flow: incidents", "-X", "POST", "-d", "{}"],
    );
    assert_eq!(named.status, 200, "{}", named.body);
    assert_eq!(
        w.used().await,
        1,
        "counted against the flow the header names"
    );
    let seen = w.jira.last();
    assert_eq!(seen.header("tollgate-flow"), None);
    assert_eq!(seen.header("proxy-authorization"), None);
    let paused = through("incidents:x", &["-H", "Tollgate-Flow: paused"]);
    assert_eq!(paused.reason(), Some("flow-disabled"));
    assert_eq!(w.jira.hits(), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_minted_certificate_names_the_host_chains_to_the_ca_and_sessions_resume() {
    let w = world(&[], 100).await;
    let host = w.jira.addr.ip().to_string();
    let ca = x509_parser::pem::parse_x509_pem(w.ca_pem.as_bytes())
        .expect("ca.pem is PEM")
        .1;
    let ca = ca.parse_x509().expect("ca.pem is a certificate");

    let mut serials = Vec::new();
    let both: [&[u8]; 2] = [b"h2", b"http/1.1"];
    let one: [&[u8]; 1] = [b"http/1.1"];
    for alpn in [&both[..], &one[..]] {
        // A fresh client each time: a full handshake, and the certificate as tollgate keeps it.
        let config = client_config(&w.ca_pem, alpn);
        let stream = connect(w.tg.engine, &w.jira.addr.to_string(), Some("incidents:x"))
            .await
            .expect("CONNECT")
            .stream
            .expect("a tunnel");
        let tls = tls_over(stream, &host, config)
            .await
            .expect("verified against ca.pem");
        let connection = tls.get_ref().1;
        assert_eq!(
            connection.alpn_protocol(),
            Some(alpn[0]),
            "ALPN picks the engine's first choice"
        );
        let der = connection.peer_certificates().expect("a certificate")[0].clone();
        let (_, leaf) = x509_parser::parse_x509_certificate(&der).expect("a certificate");
        assert_eq!(leaf.issuer(), ca.subject(), "issued by the CA's subject");
        let names = &leaf
            .subject_alternative_name()
            .expect("readable")
            .expect("a subject alternative name")
            .value
            .general_names;
        assert_eq!(
            format!("{names:?}"),
            "[IPAddress([127, 0, 0, 1])]",
            "the host, and nothing else"
        );
        serials.push(leaf.raw_serial().to_vec());
        request_over(tls, &w.jira.addr.to_string(), Method::GET, "/x", &[], "")
            .await
            .expect("a request inside")
            .assert_upstream_ok("jira");
    }
    assert_eq!(serials[0], serials[1], "minted once, then kept");

    // One client, two tunnels: the second handshake resumes the first's session.
    let config = client_config(&w.ca_pem, &[b"http/1.1"]);
    let mut kinds = Vec::new();
    for _ in 0..2 {
        let stream = connect(w.tg.engine, &w.jira.addr.to_string(), Some("incidents:x"))
            .await
            .expect("CONNECT")
            .stream
            .expect("a tunnel");
        let tls = tls_over(stream, &host, config.clone()).await.expect("TLS");
        kinds.push(tls.get_ref().1.handshake_kind());
        request_over(tls, &w.jira.addr.to_string(), Method::GET, "/x", &[], "")
            .await
            .expect("a request inside")
            .assert_upstream_ok("jira");
    }
    assert_eq!(
        kinds,
        vec![
            Some(rustls::HandshakeKind::Full),
            Some(rustls::HandshakeKind::Resumed)
        ]
    );
}

/// The `tollgate_requests_total` samples with `decision="unknown-route"`, summed.
async fn unknown_routes(tg: &Tollgate) -> u64 {
    tg.metrics_text()
        .await
        .lines()
        .filter(|line| {
            line.starts_with("tollgate_requests_total{")
                && line.contains("decision=\"unknown-route\"")
        })
        .filter_map(|line| line.rsplit(' ').next()?.parse::<f64>().ok())
        .sum::<f64>() as u64
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connect_to_an_unconfigured_or_shared_authority_is_404_and_opens_nothing() {
    let stranger = Upstream::tls("stranger").await;
    let shared = Upstream::plain("shared").await;
    let jira = Upstream::tls("jira").await;
    let (builder, _) = intercepting(tollgate());
    let tg = tls_instance(builder, "jira-1", "jira", &jira)
        .instance("servicenow-1", "servicenow", &shared.base_uri())
        .instance("servicenow-2", "servicenow", &shared.base_uri())
        .flow("incidents", ["servicenow-1", "jira-1"])
        .license(&pair_license(LICENSE, "servicenow", "jira", 1))
        .start()
        .await;
    let before = unknown_routes(&tg).await;
    let targets = [
        stranger.addr.to_string(),
        shared.addr.to_string(),
        "example.com:443".to_owned(),
        format!("localhost:{}", jira.addr.port()),
        format!("{}:443", jira.addr.ip()),
    ];
    for target in &targets {
        let refused = connect(tg.engine, target, Some("incidents:x"))
            .await
            .expect("an answer");
        assert_eq!(refused.status, 404, "{target}: {}", refused.head);
        assert!(
            refused.head.contains("tollgate-reason: unknown-route"),
            "{}",
            refused.head
        );
        assert!(refused.stream.is_none());
    }
    let counted = unknown_routes(&tg).await;
    assert_eq!(
        counted - before,
        targets.len() as u64,
        "refused CONNECTs are counted like other refusals"
    );
    assert_eq!((stranger.hits(), shared.hits(), jira.hits()), (0, 0, 0));
    // curl gives up on the tunnel and reaches nothing.
    let curled = curl(
        &[
            "-x",
            &format!("http://incidents:x@{}", tg.engine),
            &format!("https://{}/", stranger.addr),
        ],
        &[],
    );
    assert_eq!(curled.status, 404, "{}", curled.stderr);
    assert_eq!(stranger.hits(), 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connect_without_intercept_ca_or_forward_proxy_is_404() {
    let jira = Upstream::tls("jira").await;
    for server in [&["forward_proxy = true"][..], &[][..]] {
        let mut builder = tollgate();
        for line in server {
            builder = builder.server_option(line);
        }
        let tg = tls_instance(builder, "jira-1", "jira", &jira)
            .instance("servicenow-1", "servicenow", "http://127.0.0.1:9")
            .flow("incidents", ["servicenow-1", "jira-1"])
            .license(&pair_license(LICENSE, "servicenow", "jira", 1))
            .start()
            .await;
        let refused = connect(tg.engine, &jira.addr.to_string(), Some("incidents:x"))
            .await
            .expect("an answer");
        assert_eq!(refused.status, 404, "{server:?}: {}", refused.head);
        assert!(refused.head.contains("tollgate-reason: unknown-route"));
    }
    assert_eq!(jira.hits(), 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_wrong_proxy_password_on_connect_is_407_and_opens_no_tunnel() {
    let w = world(&["proxy_token_file = \"proxy.token\""], 100).await;
    let target = w.jira.addr.to_string();
    for credentials in [Some("incidents:wrong"), Some("incidents:pr0xy-t0ke"), None] {
        let refused = connect(w.tg.engine, &target, credentials)
            .await
            .expect("an answer");
        assert_eq!(refused.status, 407, "{credentials:?}: {}", refused.head);
        assert!(
            refused
                .head
                .contains("proxy-authenticate: basic realm=\"tollgate\""),
            "{}",
            refused.head
        );
        assert!(refused
            .head
            .contains("tollgate-reason: proxy-auth-required"));
        assert!(refused.stream.is_none());
    }
    let curled = curl(
        &[
            "-x",
            &w.proxy("incidents:wrong"),
            "--cacert",
            &w.ca_file,
            &w.url("/x"),
        ],
        &[],
    );
    assert_eq!(curled.status, 407, "{}", curled.stderr);
    assert_eq!(w.jira.hits(), 0, "nothing through a refused CONNECT");

    let ok = curl(
        &[
            "-x",
            &w.proxy("incidents:pr0xy-t0ken"),
            "--cacert",
            &w.ca_file,
            &w.url("/x"),
        ],
        &[],
    );
    assert_eq!(ok.status, 200, "{} {}", ok.body, ok.stderr);
    assert_eq!(w.jira.last().header("proxy-authorization"), None);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_request_inside_a_tunnel_in_flight_at_sigterm_is_answered() {
    let mut w = world(&[], 100).await;
    let engine = TunnelClient {
        engine: w.tg.engine,
        target: w.jira.addr,
        credentials: Some("incidents:x".to_owned()),
        config: client_config(&w.ca_pem, &[b"http/1.1"]),
    };
    let in_flight =
        tokio::spawn(async move { engine.request(Method::GET, "/slow/800/x", &[], "").await });
    eventually(
        "the slow request at the target",
        Duration::from_secs(10),
        || async { (w.jira.hits() == 1).then_some(()) },
    )
    .await;
    let status = w.tg.terminate(Duration::from_secs(20)).await;
    assert!(status.success(), "{status}");
    let resp = in_flight
        .await
        .expect("the request task")
        .expect("an answer inside the tunnel");
    resp.assert_upstream_ok("jira");
}

#[test]
fn ca_init_writes_a_ca_openssl_reads_keeps_its_key_private_and_refuses_to_overwrite() {
    let dir = tempfile::tempdir().expect("a scratch directory");
    let out = dir.path().join("ca");
    let run = |extra: &[&str]| {
        let mut args = vec!["ca", "init", "--out", out.to_str().expect("a UTF-8 path")];
        args.extend_from_slice(extra);
        tollgate_output(args)
    };
    let made = run(&[]);
    assert!(made.status.success(), "{}", stderr(&made));
    let said = stdout(&made);
    assert!(
        said.contains("ca.pem") && said.contains("ca.key") && said.contains("intercept_ca"),
        "{said}"
    );
    let (cert, key) = (out.join("ca.pem"), out.join("ca.key"));
    use std::os::unix::fs::PermissionsExt;
    let mode = std::fs::metadata(&key)
        .expect("ca.key")
        .permissions()
        .mode()
        & 0o777;
    assert_eq!(mode, 0o600, "the key is private from its creation");
    let text = std::process::Command::new("openssl")
        .args(["x509", "-noout", "-text", "-in"])
        .arg(&cert)
        .output()
        .expect("openssl is installed");
    let text = String::from_utf8_lossy(&text.stdout);
    assert!(text.contains("CA:TRUE"), "{text}");
    assert!(text.contains("Certificate Sign, CRL Sign"), "{text}");
    assert!(text.contains("CN = tollgate interception CA"), "{text}");
    let key_check = std::process::Command::new("openssl")
        .args(["pkey", "-noout", "-in"])
        .arg(&key)
        .status()
        .expect("openssl is installed");
    assert!(key_check.success(), "openssl reads ca.key");

    let before = std::fs::read(&cert).expect("ca.pem");
    let again = run(&[]);
    assert_eq!(again.status.code(), Some(1));
    let complaint = stderr(&again);
    assert!(
        complaint.contains("already exists") && complaint.trim().lines().count() == 1,
        "{complaint}"
    );
    assert_eq!(
        std::fs::read(&cert).expect("ca.pem"),
        before,
        "nothing was overwritten"
    );
    let forced = run(&["--force"]);
    assert!(forced.status.success(), "{}", stderr(&forced));
    assert_ne!(
        std::fs::read(&cert).expect("ca.pem"),
        before,
        "--force made a new CA"
    );
    let mode = std::fs::metadata(&key)
        .expect("ca.key")
        .permissions()
        .mode()
        & 0o777;
    assert_eq!(mode, 0o600);
    let usage = tollgate_output(["ca", "init"]);
    assert_eq!(
        usage.status.code(),
        Some(2),
        "a missing --out is a usage error"
    );
}

#[test]
fn check_reports_interception_and_names_a_bad_ca_file_by_key_path() {
    let builder = tollgate()
        .server_option("forward_proxy = true")
        .instance("servicenow-1", "servicenow", "https://servicenow.example")
        .instance("jira-1", "jira", "https://jira.example")
        .flow("incidents", ["servicenow-1", "jira-1"])
        .license(&pair_license(LICENSE, "servicenow", "jira", 1));
    ca_init(&builder.dir().join("ca"));
    ca_init(&builder.dir().join("other"));
    builder.file("garbage.pem", "not a certificate\n");
    let check = |cert: &str, key: &str| {
        builder.check_toml(&format!(
            "[server.intercept_ca]\ncert = \"{cert}\"\nkey = \"{key}\"\n"
        ))
    };
    // The [server] table is written first, so intercept_ca goes in as a sub-table.
    let ok = check("ca/ca.pem", "ca/ca.key");
    assert!(ok.status.success(), "{}", stderr(&ok));
    let said = stdout(&ok);
    assert!(
        said.contains("HTTPS interception: on") && said.contains("CN=tollgate interception CA"),
        "{said}"
    );
    for (cert, key, path, says) in [
        (
            "garbage.pem",
            "ca/ca.key",
            "server.intercept_ca.cert",
            "no PEM certificate",
        ),
        (
            "missing.pem",
            "ca/ca.key",
            "server.intercept_ca.cert",
            "cannot read",
        ),
        (
            "ca/ca.pem",
            "other/ca.key",
            "server.intercept_ca.key",
            "is not the private key",
        ),
        (
            "ca/ca.pem",
            "garbage.pem",
            "server.intercept_ca.key",
            "PKCS#8",
        ),
    ] {
        let refused = check(cert, key);
        assert_eq!(refused.status.code(), Some(1), "{cert} {key}");
        let complaint = stderr(&refused);
        assert!(
            complaint.contains(&format!("{path}: ")) && complaint.contains(says),
            "{cert} {key}: {complaint}"
        );
    }
}

#[test]
fn intercept_ca_without_forward_proxy_is_a_config_error_naming_the_key() {
    let builder = tollgate()
        .instance("servicenow-1", "servicenow", "https://servicenow.example")
        .instance("jira-1", "jira", "https://jira.example")
        .flow("incidents", ["servicenow-1", "jira-1"])
        .license(&pair_license(LICENSE, "servicenow", "jira", 1));
    ca_init(&builder.dir().join("ca"));
    let refused =
        builder.check_toml("[server.intercept_ca]\ncert = \"ca/ca.pem\"\nkey = \"ca/ca.key\"\n");
    assert_eq!(refused.status.code(), Some(1));
    let complaint = stderr(&refused);
    assert!(
        complaint.contains("server.intercept_ca: needs server.forward_proxy = true"),
        "{complaint}"
    );
}
