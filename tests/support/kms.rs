//! A real AWS KMS API on loopback for the KMS signer tests: `moto_server`
//! (PyPI `moto[server]`, installed by scripts/setup) started per test on a
//! free 127.0.0.1 port and stopped on drop, plus a small real HTTP proxy
//! ([`FaultProxy`]) between the SDK and moto for the faults moto cannot make
//! itself: answers slower than the signer's timeout and ThrottlingException.
//!
//! Credentials are static test values, exported once per test process
//! ([`aws_env`]) together with a disabled instance-metadata lookup and empty
//! AWS config files, so nothing reaches outside the machine.
#![allow(clippy::expect_used, clippy::unwrap_used, clippy::panic)]

use std::collections::HashMap;
use std::io::{BufRead, BufReader, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, Instant};

use imprint_core::signer::SigAlg;

/// The region every test key lives in.
pub const REGION: &str = "eu-central-1";
/// The test secret access key: must never appear in output, logs or errors.
pub const TEST_SECRET: &str = "imprintTestSecretKey0123456789NeverLogged";
/// The test access key id.
pub const TEST_ACCESS_KEY: &str = "AKIAIMPRINTTEST00001";

/// Environment for anything that talks to moto: static credentials, no
/// instance metadata, no operator AWS files, no HTTP proxy for loopback.
pub fn aws_env() -> Vec<(&'static str, &'static str)> {
    vec![
        ("AWS_ACCESS_KEY_ID", TEST_ACCESS_KEY),
        ("AWS_SECRET_ACCESS_KEY", TEST_SECRET),
        ("AWS_EC2_METADATA_DISABLED", "true"),
        ("AWS_CONFIG_FILE", "/nonexistent/imprint-tests/aws-config"),
        ("AWS_SHARED_CREDENTIALS_FILE", "/nonexistent/imprint-tests/aws-credentials"),
        ("NO_PROXY", "127.0.0.1,localhost"),
        ("no_proxy", "127.0.0.1,localhost"),
    ]
}

/// Export [`aws_env`] into this test process, once, before any SDK client
/// reads it (tests of one binary share the process; the values are the same
/// for all of them).
pub fn init_process_env() {
    static DONE: OnceLock<()> = OnceLock::new();
    DONE.get_or_init(|| {
        for (k, v) in aws_env() {
            std::env::set_var(k, v);
        }
        std::env::remove_var("AWS_PROFILE");
        std::env::remove_var("AWS_SESSION_TOKEN");
    });
}

/// A free TCP port on 127.0.0.1 (bound and released).
pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
}

fn moto_command() -> Command {
    let on_path = Command::new("sh").args(["-c", "command -v moto_server"]).output().is_ok_and(|o| o.status.success());
    if on_path {
        Command::new("moto_server")
    } else {
        let mut c = Command::new("python3");
        c.args(["-m", "moto.server"]);
        c
    }
}

/// True when moto's server can be started (scripts/setup installs it).
pub fn available() -> bool {
    Command::new("python3").args(["-c", "import moto.server"]).output().is_ok_and(|o| o.status.success())
}

/// One `moto_server` on a free loopback port; killed on drop.
pub struct Moto {
    child: Option<Child>,
    port: u16,
    log: PathBuf,
    _dir: tempfile::TempDir,
}

impl Moto {
    /// Start a moto of this test's own (to stop or kill) and wait until it
    /// answers HTTP (at most 30 s). Killed on drop.
    pub fn start() -> Moto {
        Moto::spawn(false)
    }

    fn spawn(watchdog: bool) -> Moto {
        assert!(available(), "moto[server] is not installed: run scripts/setup");
        init_process_env();
        let dir = tempfile::tempdir().unwrap();
        let log = dir.path().join("moto.log");
        let port = free_port();
        let mut cmd = if watchdog {
            let mut c = Command::new("sh");
            c.args([
                "-c",
                r#"python3 -m moto.server -H 127.0.0.1 -p "$1" & m=$!; while kill -0 "$2" 2>/dev/null; do sleep 0.5; done; kill -9 "$m""#,
                "moto-watchdog",
                &port.to_string(),
                &std::process::id().to_string(),
            ]);
            c
        } else {
            let mut c = moto_command();
            c.args(["-H", "127.0.0.1", "-p", &port.to_string()]);
            c
        };
        let child = cmd
            .stdin(Stdio::null())
            .stdout(std::fs::File::create(&log).unwrap())
            .stderr(std::fs::File::create(dir.path().join("moto.err")).unwrap())
            .spawn()
            .expect("start moto_server");
        let mut m = Moto { child: Some(child), port, log, _dir: dir };
        m.wait_ready(Duration::from_secs(30));
        m
    }

    fn wait_ready(&mut self, limit: Duration) {
        let deadline = Instant::now() + limit;
        loop {
            if let Some(c) = self.child.as_mut() {
                if let Ok(Some(status)) = c.try_wait() {
                    panic!(
                        "moto_server exited at start ({status}): {}",
                        std::fs::read_to_string(self._dir.path().join("moto.err")).unwrap_or_default()
                    );
                }
            }
            if http_get(self.port, "/moto-api/data.json").is_ok() {
                return;
            }
            assert!(Instant::now() < deadline, "moto_server did not answer on port {} within {limit:?}", self.port);
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    pub fn port(&self) -> u16 {
        self.port
    }

    /// `http://127.0.0.1:<port>`.
    pub fn endpoint(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    /// One moto for every test of this process that neither stops nor kills
    /// it (each test makes its own keys): starting a Python server per test
    /// costs more CPU than the tests. It outlives the statics' (missing)
    /// destructors through a watchdog shell that kills it within half a
    /// second of this process ending.
    pub fn shared() -> &'static Moto {
        static SHARED: OnceLock<Moto> = OnceLock::new();
        SHARED.get_or_init(|| Moto::spawn(true))
    }

    /// A handle that can stop and continue this server from another thread
    /// (e.g. a [`FaultProxy::after_answers`] hook).
    pub fn control(&self) -> MotoControl {
        MotoControl { pid: self.child.as_ref().expect("moto is running").id() }
    }

    /// See [`MotoControl::pause`].
    pub fn pause(&self) {
        self.control().pause();
    }

    /// See [`MotoControl::resume`].
    pub fn resume(&self) {
        self.control().resume();
    }

    /// Kill the server (SIGKILL): connections are refused from now on. Its
    /// keys are gone with it (moto keeps them in memory only).
    pub fn kill(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    /// True while the process runs.
    pub fn is_running(&mut self) -> bool {
        self.child.as_mut().is_some_and(|c| c.try_wait().ok().flatten().is_none())
    }

    /// moto's request log (one line per request), for diagnostics.
    pub fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// Create a SIGN_VERIFY key of `alg` through the signer crate's own
    /// `create_key` (the code `imprint ca init --generate-key` runs).
    pub fn create_key(&self, alg: SigAlg) -> KmsKey {
        // Set-up, not the code under test: a moto just started on a loaded
        // machine may miss the signer's 3 s call deadline (seen in CI at load
        // 40), so a transient failure here is tried again a few times.
        let base = format!("awskms:region={REGION};endpoint={}", self.endpoint());
        let mut tries = 0;
        let uri = loop {
            tries += 1;
            match imprint_signer::awskms::create_key(&base, alg) {
                Ok(uri) => break uri,
                Err(e @ imprint_core::signer::SignerError::Transient(_)) if tries < 5 => {
                    eprintln!("moto CreateKey try {tries}: {e}; trying again");
                    std::thread::sleep(std::time::Duration::from_millis(500));
                }
                Err(e) => panic!("create a KMS key in moto: {e:?}"),
            }
        };
        let parsed = imprint_signer::awskms::KmsUri::parse(&uri, true).unwrap();
        KmsKey { arn: parsed.key_id.unwrap(), alg }
    }
}

impl Drop for Moto {
    fn drop(&mut self) {
        if let Some(mut c) = self.child.take() {
            // SIGKILL also ends a stopped process.
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

/// Stops and continues a moto process by pid.
#[derive(Clone, Copy, Debug)]
pub struct MotoControl {
    pid: u32,
}

impl MotoControl {
    fn signal(self, sig: &str) {
        let ok = Command::new("kill").args([sig, &self.pid.to_string()]).status().unwrap().success();
        assert!(ok, "kill {sig} moto");
    }

    /// Stop the server process (SIGSTOP): the kernel still accepts
    /// connections but nothing answers, as when a KMS endpoint is cut off.
    /// Its keys stay in memory: [`MotoControl::resume`] brings it back.
    pub fn pause(self) {
        self.signal("-STOP");
    }

    /// Continue a stopped server (SIGCONT).
    pub fn resume(self) {
        self.signal("-CONT");
    }

    /// Kill the server (SIGKILL): connections are refused from now on, and
    /// its keys are gone (moto keeps them in memory only).
    pub fn kill(self) {
        self.signal("-KILL");
    }
}

/// A key created in moto.
#[derive(Clone, Debug)]
pub struct KmsKey {
    pub arn: String,
    pub alg: SigAlg,
}

impl KmsKey {
    /// The signer URI of this key at `endpoint`, with `extra` attributes
    /// (e.g. `"timeout-ms=400;retries=1"`) appended.
    pub fn uri(&self, endpoint: &str, extra: &str) -> String {
        let mut u = format!("awskms:key-id={};region={REGION};endpoint={endpoint}", self.arn);
        if !extra.is_empty() {
            u.push(';');
            u.push_str(extra);
        }
        u
    }
}

/// One raw KMS JSON call to moto on loopback (`X-Amz-Target:
/// TrentService.<op>`), for what the signer crate never asks KMS: keys of
/// another usage, `DescribeKey` of a key it made. Moto does not check the
/// signature; the credential scope in the Authorization header picks the
/// region. Ok(JSON answer) on 200.
pub fn kms_call(port: u16, op: &str, body: &serde_json::Value) -> std::io::Result<serde_json::Value> {
    use std::io::Read;
    let body = body.to_string();
    let mut s = TcpStream::connect_timeout(&SocketAddr::from(([127, 0, 0, 1], port)), Duration::from_millis(500))?;
    s.set_read_timeout(Some(Duration::from_secs(10)))?;
    write!(
        s,
        "POST / HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nConnection: close\r\nContent-Type: application/x-amz-json-1.1\r\n\
         X-Amz-Target: TrentService.{op}\r\nX-Amz-Date: 20260101T000000Z\r\n\
         Authorization: AWS4-HMAC-SHA256 Credential={TEST_ACCESS_KEY}/20260101/{REGION}/kms/aws4_request, SignedHeaders=host, Signature=0\r\n\
         Content-Length: {}\r\n\r\n{body}",
        body.len()
    )?;
    let mut answer = String::new();
    BufReader::new(s).read_to_string(&mut answer)?;
    let status = answer.split_whitespace().nth(1).unwrap_or_default().to_string();
    let json = answer.split_once("\r\n\r\n").map(|(_, b)| b).unwrap_or_default();
    if status != "200" {
        return Err(std::io::Error::other(format!("{op}: HTTP {status}: {json}")));
    }
    serde_json::from_str(json).map_err(|e| std::io::Error::other(format!("{op}: {e}: {json}")))
}

/// A one-shot HTTP GET on loopback; Ok(status).
pub fn http_get(port: u16, path: &str) -> std::io::Result<u16> {
    let mut s = TcpStream::connect_timeout(&SocketAddr::from(([127, 0, 0, 1], port)), Duration::from_millis(500))?;
    s.set_read_timeout(Some(Duration::from_secs(5)))?;
    write!(s, "GET {path} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nConnection: close\r\n\r\n")?;
    let mut r = BufReader::new(s);
    let mut line = String::new();
    r.read_line(&mut line)?;
    line.split_whitespace().nth(1).and_then(|c| c.parse().ok()).ok_or_else(|| std::io::Error::other(format!("bad status line {line:?}")))
}

/// What the proxy does with a matching request.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Fault {
    /// Wait this long, then forward it (the answer arrives late).
    Delay(Duration),
    /// Answer `400 ThrottlingException` without forwarding it.
    Throttle,
    /// Close the connection without an answer.
    Drop,
}

#[derive(Debug)]
struct Rule {
    /// KMS operation (`Sign`, `DescribeKey`, ...); `None` for every request.
    op: Option<String>,
    fault: Fault,
    /// Matching requests to let through before it applies.
    skip: usize,
    /// How many more requests it applies to; `None`: until cleared.
    remaining: Option<usize>,
}

/// One request the proxy saw.
#[derive(Clone, Debug)]
pub struct Seen {
    /// When its headers arrived.
    pub at: Instant,
    /// The KMS operation, from `X-Amz-Target: TrentService.<Op>`.
    pub op: String,
    /// "passed", "delayed", "throttled", "dropped", or "upstream_failed".
    pub action: &'static str,
    /// `MessageType` of a Sign request ("RAW", "DIGEST"), if any.
    pub message_type: Option<String>,
}

type Hook = Box<dyn FnOnce() + Send>;

#[derive(Default)]
struct ProxyState {
    rules: Vec<Rule>,
    seen: Vec<Seen>,
    answered: HashMap<String, usize>,
    hooks: Vec<(String, usize, Hook)>,
}

/// A real HTTP/1.1 proxy on loopback in front of moto: the SDK talks to it
/// exactly as to KMS. It forwards each request on a fresh upstream
/// connection, or applies the first matching [`Fault`] rule.
pub struct FaultProxy {
    port: u16,
    state: Arc<Mutex<ProxyState>>,
    stop: Arc<AtomicBool>,
    accept: Option<std::thread::JoinHandle<()>>,
}

const THROTTLE_BODY: &str = r#"{"__type":"ThrottlingException","message":"Rate exceeded"}"#;

impl FaultProxy {
    /// Listen on a free loopback port and forward to `upstream_port`.
    pub fn start(upstream_port: u16) -> FaultProxy {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        let state = Arc::new(Mutex::new(ProxyState::default()));
        let stop = Arc::new(AtomicBool::new(false));
        let (st, sp) = (state.clone(), stop.clone());
        let accept = std::thread::Builder::new()
            .name("kms-fault-proxy".into())
            .spawn(move || {
                for conn in listener.incoming() {
                    if sp.load(Ordering::Relaxed) {
                        break;
                    }
                    let Ok(conn) = conn else { continue };
                    let st = st.clone();
                    let _ = std::thread::Builder::new().name("kms-fault-proxy-conn".into()).spawn(move || serve(conn, upstream_port, &st));
                }
            })
            .unwrap();
        FaultProxy { port, state, stop, accept: Some(accept) }
    }

    /// `http://127.0.0.1:<port>`: the endpoint= to give the signer.
    pub fn endpoint(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, ProxyState> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Apply `fault` to the next `count` requests of `op` (all of them while
    /// `count` is `None`), before rules added later.
    pub fn add(&self, op: Option<&str>, fault: Fault, count: Option<usize>) {
        self.add_after(op, 0, fault, count);
    }

    /// Like [`FaultProxy::add`], but the first `skip` matching requests pass
    /// (a fault that starts mid-batch).
    pub fn add_after(&self, op: Option<&str>, skip: usize, fault: Fault, count: Option<usize>) {
        self.lock().rules.push(Rule { op: op.map(str::to_string), fault, skip, remaining: count });
    }

    /// Forward everything again.
    pub fn clear(&self) {
        self.lock().rules.clear();
    }

    /// Run `hook` (once) when the `n`-th successful answer to `op` has come
    /// back from moto, before it is relayed to the client.
    pub fn after_answers(&self, op: &str, n: usize, hook: impl FnOnce() + Send + 'static) {
        self.lock().hooks.push((op.to_string(), n, Box::new(hook)));
    }

    /// Every request seen so far, in arrival order.
    pub fn seen(&self) -> Vec<Seen> {
        self.lock().seen.clone()
    }

    /// Requests of `op` that got `action`.
    pub fn count(&self, op: &str, action: &str) -> usize {
        self.lock().seen.iter().filter(|s| s.op == op && s.action == action).count()
    }
}

impl Drop for FaultProxy {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        // Wake the accept loop.
        let _ = TcpStream::connect(("127.0.0.1", self.port));
        if let Some(t) = self.accept.take() {
            let _ = t.join();
        }
    }
}

/// The value of a top-level `"name":"value"` string in a small JSON body.
fn json_string_field(body: &[u8], name: &str) -> Option<String> {
    let text = std::str::from_utf8(body).ok()?;
    let key = format!("\"{name}\"");
    let after = &text[text.find(&key)? + key.len()..];
    let after = after.trim_start().strip_prefix(':')?.trim_start().strip_prefix('"')?;
    Some(after[..after.find('"')?].to_string())
}

/// An HTTP/1.1 message: head lines and body.
struct Message {
    head: Vec<String>,
    body: Vec<u8>,
}

impl Message {
    fn header(&self, name: &str) -> Option<&str> {
        self.head.iter().skip(1).find_map(|l| {
            let (k, v) = l.split_once(':')?;
            k.trim().eq_ignore_ascii_case(name).then(|| v.trim())
        })
    }
}

/// Read one message; `Ok(None)` on a clean EOF before it. Bodies framed by
/// Content-Length, chunked encoding, or (responses) the end of the stream.
fn read_message(r: &mut impl BufRead, to_eof: bool) -> std::io::Result<Option<Message>> {
    let mut head = Vec::new();
    loop {
        let mut line = String::new();
        if r.read_line(&mut line)? == 0 {
            return if head.is_empty() { Ok(None) } else { Err(std::io::ErrorKind::UnexpectedEof.into()) };
        }
        let line = line.trim_end_matches(['\r', '\n']).to_string();
        if line.is_empty() {
            if head.is_empty() {
                continue;
            }
            break;
        }
        head.push(line);
    }
    let mut m = Message { head, body: Vec::new() };
    if let Some(n) = m.header("content-length").and_then(|v| v.parse::<usize>().ok()) {
        m.body = vec![0; n];
        r.read_exact(&mut m.body)?;
    } else if m.header("transfer-encoding").is_some_and(|v| v.eq_ignore_ascii_case("chunked")) {
        loop {
            let mut size = String::new();
            r.read_line(&mut size)?;
            let n = usize::from_str_radix(size.trim().split(';').next().unwrap_or("0"), 16)
                .map_err(|_| std::io::Error::other("bad chunk size"))?;
            let mut chunk = vec![0; n + 2];
            r.read_exact(&mut chunk)?;
            if n == 0 {
                break;
            }
            m.body.extend_from_slice(&chunk[..n]);
        }
    } else if to_eof {
        r.read_to_end(&mut m.body)?;
    }
    Ok(Some(m))
}

/// Write `m` with a Content-Length body and the given Connection header.
fn write_message(w: &mut impl Write, m: &Message, connection: &str) -> std::io::Result<()> {
    let mut out = format!("{}\r\n", m.head[0]);
    for l in m.head.iter().skip(1) {
        let name = l.split(':').next().unwrap_or_default().trim().to_ascii_lowercase();
        if !["content-length", "transfer-encoding", "connection", "keep-alive"].contains(&name.as_str()) {
            out.push_str(l);
            out.push_str("\r\n");
        }
    }
    out.push_str(&format!("Content-Length: {}\r\nConnection: {connection}\r\n\r\n", m.body.len()));
    w.write_all(out.as_bytes())?;
    w.write_all(&m.body)?;
    w.flush()
}

fn forward(req: &Message, upstream_port: u16) -> std::io::Result<Message> {
    let up = TcpStream::connect(("127.0.0.1", upstream_port))?;
    up.set_read_timeout(Some(Duration::from_secs(120)))?;
    let mut w = up.try_clone()?;
    write_message(&mut w, req, "close")?;
    let mut r = BufReader::new(up);
    read_message(&mut r, true)?.ok_or_else(|| std::io::Error::other("upstream closed without an answer"))
}

fn serve(conn: TcpStream, upstream_port: u16, state: &Mutex<ProxyState>) {
    let Ok(mut w) = conn.try_clone() else { return };
    let mut r = BufReader::new(conn);
    while let Ok(Some(req)) = read_message(&mut r, false) {
        let at = Instant::now();
        let op = req.header("x-amz-target").and_then(|t| t.rsplit('.').next()).unwrap_or("?").to_string();
        let fault = {
            let mut s = state.lock().unwrap_or_else(|p| p.into_inner());
            let mut fault = None;
            for rule in s.rules.iter_mut().filter(|rule| rule.op.as_deref().is_none_or(|o| o == op) && rule.remaining != Some(0)) {
                if rule.skip > 0 {
                    rule.skip -= 1;
                    continue;
                }
                if let Some(n) = rule.remaining.as_mut() {
                    *n -= 1;
                }
                fault = Some(rule.fault);
                break;
            }
            let action = match fault {
                None => "passed",
                Some(Fault::Delay(_)) => "delayed",
                Some(Fault::Throttle) => "throttled",
                Some(Fault::Drop) => "dropped",
            };
            s.seen.push(Seen { at, op: op.clone(), action, message_type: json_string_field(&req.body, "MessageType") });
            fault
        };
        let answer = match fault {
            Some(Fault::Drop) => return,
            Some(Fault::Throttle) => Message {
                head: vec![
                    "HTTP/1.1 400 Bad Request".into(),
                    "Content-Type: application/x-amz-json-1.1".into(),
                    "x-amzn-RequestId: 00000000-0000-0000-0000-fault-proxy".into(),
                ],
                body: THROTTLE_BODY.as_bytes().to_vec(),
            },
            Some(Fault::Delay(d)) => {
                std::thread::sleep(d);
                match forward(&req, upstream_port) {
                    Ok(m) => m,
                    Err(_) => return,
                }
            }
            None => match forward(&req, upstream_port) {
                Ok(m) => m,
                Err(_) => {
                    let mut s = state.lock().unwrap_or_else(|p| p.into_inner());
                    if let Some(last) = s.seen.iter_mut().rev().find(|x| x.at == at) {
                        last.action = "upstream_failed";
                    }
                    return;
                }
            },
        };
        // Hooks run before the client sees the answer, so whatever they do
        // (stop moto) happens before the client's next request.
        let ok = answer.head[0].split_whitespace().nth(1) == Some("200");
        if ok && fault.is_none() {
            let ready: Vec<Hook> = {
                let mut s = state.lock().unwrap_or_else(|p| p.into_inner());
                let n = {
                    let c = s.answered.entry(op.clone()).or_insert(0);
                    *c += 1;
                    *c
                };
                let (fire, keep): (Vec<_>, Vec<_>) =
                    std::mem::take(&mut s.hooks).into_iter().partition(|(o, at_n, _)| *o == op && *at_n == n);
                s.hooks = keep;
                fire.into_iter().map(|(_, _, h)| h).collect()
            };
            for h in ready {
                h();
            }
        }
        if write_message(&mut w, &answer, "keep-alive").is_err() {
            return;
        }
    }
}
