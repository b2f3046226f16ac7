//! Mosquitto fixtures: a private broker on a free loopback port (plain or
//! TLS with `require_certificate true`), stoppable and restartable on the
//! same port; test PKI made with the openssl CLI; a subscriber that counts
//! messages. Every wait is on a condition with a deadline.
#![allow(clippy::expect_used, clippy::unwrap_used, clippy::panic)]

use std::io::Read;
use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// The machine's plain broker (scripts/services starts it).
pub const SYSTEM_BROKER: &str = "mqtt://127.0.0.1:1883";

/// A free TCP port on 127.0.0.1 (bound, then released).
pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
}

/// Poll `cond` every 20 ms until it holds or `timeout` passes.
pub fn wait_until(timeout: Duration, what: &str, mut cond: impl FnMut() -> bool) {
    let deadline = Instant::now() + timeout;
    while !cond() {
        assert!(Instant::now() < deadline, "timed out after {timeout:?} waiting for {what}");
        std::thread::sleep(Duration::from_millis(20));
    }
}

fn openssl(args: &[&str], dir: &Path) {
    let out = Command::new("openssl").args(args).current_dir(dir).output().expect("openssl runs");
    assert!(out.status.success(), "openssl {args:?}: {}", String::from_utf8_lossy(&out.stderr));
}

/// A certificate and key as PEM files.
#[derive(Clone, Debug)]
pub struct CertFiles {
    pub cert: PathBuf,
    pub key: PathBuf,
}

/// Test PKI in a directory, made with the openssl CLI (P-256 keys).
pub struct Pki {
    pub dir: PathBuf,
}

impl Pki {
    pub fn new(dir: &Path) -> Pki {
        std::fs::create_dir_all(dir).unwrap();
        Pki { dir: dir.to_path_buf() }
    }

    /// A self-signed CA `name` (files `<name>.pem`, `<name>.key`).
    pub fn ca(&self, name: &str) -> CertFiles {
        let (cert, key) = (format!("{name}.pem"), format!("{name}.key"));
        openssl(
            &[
                "req",
                "-x509",
                "-newkey",
                "ec",
                "-pkeyopt",
                "ec_paramgen_curve:P-256",
                "-nodes",
                "-keyout",
                &key,
                "-out",
                &cert,
                "-days",
                "2",
                "-subj",
                &format!("/CN={name}"),
                "-addext",
                "basicConstraints=critical,CA:TRUE",
                "-addext",
                "keyUsage=critical,keyCertSign,cRLSign",
            ],
            &self.dir,
        );
        CertFiles { cert: self.dir.join(cert), key: self.dir.join(key) }
    }

    /// A leaf `name` signed by `ca`: a server (SAN 127.0.0.1, localhost) or a client.
    pub fn leaf(&self, ca: &CertFiles, name: &str, server: bool) -> CertFiles {
        let (cert, key, csr, ext) = (format!("{name}.pem"), format!("{name}.key"), format!("{name}.csr"), format!("{name}.ext"));
        openssl(
            &[
                "req",
                "-newkey",
                "ec",
                "-pkeyopt",
                "ec_paramgen_curve:P-256",
                "-nodes",
                "-keyout",
                &key,
                "-out",
                &csr,
                "-subj",
                &format!("/CN={name}"),
            ],
            &self.dir,
        );
        let extensions = if server {
            "basicConstraints=CA:FALSE\nsubjectAltName=IP:127.0.0.1,DNS:localhost\nextendedKeyUsage=serverAuth\nkeyUsage=digitalSignature\n"
        } else {
            "basicConstraints=CA:FALSE\nextendedKeyUsage=clientAuth\nkeyUsage=digitalSignature\n"
        };
        std::fs::write(self.dir.join(&ext), extensions).unwrap();
        let (ca_cert, ca_key) = (ca.cert.display().to_string(), ca.key.display().to_string());
        openssl(
            &[
                "x509",
                "-req",
                "-in",
                &csr,
                "-CA",
                &ca_cert,
                "-CAkey",
                &ca_key,
                "-CAcreateserial",
                "-out",
                &cert,
                "-days",
                "2",
                "-extfile",
                &ext,
            ],
            &self.dir,
        );
        CertFiles { cert: self.dir.join(cert), key: self.dir.join(key) }
    }
}

/// TLS settings of a test broker.
#[derive(Clone, Debug)]
pub struct BrokerTls {
    /// The CA that client certificates must chain to (mosquitto `cafile`).
    pub client_ca: PathBuf,
    /// The broker's own certificate and key.
    pub server: CertFiles,
}

/// A mosquitto the test owns, on a free loopback port.
pub struct Mosquitto {
    pub port: u16,
    conf: PathBuf,
    child: Option<Child>,
    log: Arc<Mutex<String>>,
    _dir: tempfile::TempDir,
}

impl Mosquitto {
    /// Plain, anonymous.
    pub fn plain() -> Mosquitto {
        Self::start(None, false)
    }

    /// Plain, anonymous, with persistence: a persistent subscriber session
    /// and its queued QoS 1 messages survive [`Mosquitto::stop`] + restart.
    pub fn plain_persistent() -> Mosquitto {
        Self::start(None, true)
    }

    /// TLS with `require_certificate true` and `use_identity_as_username true`.
    pub fn mtls(tls: &BrokerTls) -> Mosquitto {
        Self::start(Some(tls), false)
    }

    /// [`Mosquitto::mtls`] that also checks client certificates against a
    /// CRL (mosquitto `crlfile`, PEM, read at start).
    pub fn mtls_with_crl(tls: &BrokerTls, crl: &Path) -> Mosquitto {
        Self::start_with(Some(tls), false, Some(crl))
    }

    fn start(tls: Option<&BrokerTls>, persistent: bool) -> Mosquitto {
        Self::start_with(tls, persistent, None)
    }

    fn start_with(tls: Option<&BrokerTls>, persistent: bool, crl: Option<&Path>) -> Mosquitto {
        let dir = tempfile::tempdir().unwrap();
        let port = free_port();
        let persistence = if persistent {
            format!("persistence true\npersistence_location {}/\n", dir.path().display())
        } else {
            "persistence false\n".to_string()
        };
        let mut conf =
            format!("per_listener_settings false\nuser root\n{persistence}log_dest stderr\nlog_type all\nlistener {port} 127.0.0.1\n");
        match tls {
            None => conf.push_str("allow_anonymous true\n"),
            Some(t) => conf.push_str(&format!(
                "allow_anonymous true\ncafile {}\ncertfile {}\nkeyfile {}\nrequire_certificate true\nuse_identity_as_username true\n",
                t.client_ca.display(),
                t.server.cert.display(),
                t.server.key.display()
            )),
        }
        if let Some(crl) = crl {
            conf.push_str(&format!("crlfile {}\n", crl.display()));
        }
        let path = dir.path().join("mosquitto.conf");
        std::fs::write(&path, conf).unwrap();
        let mut m = Mosquitto { port, conf: path, child: None, log: Arc::new(Mutex::new(String::new())), _dir: dir };
        m.restart();
        m
    }

    pub fn url(&self, tls: bool) -> String {
        format!("{}://127.0.0.1:{}", if tls { "mqtts" } else { "mqtt" }, self.port)
    }

    /// What mosquitto logged so far.
    pub fn log(&self) -> String {
        self.log.lock().unwrap().clone()
    }

    pub fn is_running(&self) -> bool {
        self.child.is_some()
    }

    /// Start (again) on the same port, and wait until it accepts connections.
    pub fn restart(&mut self) {
        assert!(self.child.is_none(), "already running");
        let mut child = Command::new("/usr/sbin/mosquitto")
            .arg("-c")
            .arg(&self.conf)
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .expect("mosquitto starts");
        let mut err = child.stderr.take().unwrap();
        let log = self.log.clone();
        std::thread::spawn(move || {
            let mut buf = [0u8; 4096];
            while let Ok(n) = err.read(&mut buf) {
                if n == 0 {
                    break;
                }
                log.lock().unwrap().push_str(&String::from_utf8_lossy(&buf[..n]));
            }
        });
        self.child = Some(child);
        let port = self.port;
        wait_until(Duration::from_secs(10), "mosquitto to listen", || TcpStream::connect(("127.0.0.1", port)).is_ok());
    }

    /// Stop it (SIGTERM: mosquitto saves its persistence file) and wait
    /// until it has exited and the port is closed.
    pub fn stop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = Command::new("kill").args(["-TERM", &c.id().to_string()]).status();
            let _ = c.wait();
        }
        let port = self.port;
        wait_until(Duration::from_secs(10), "mosquitto to stop listening", || TcpStream::connect(("127.0.0.1", port)).is_err());
    }
}

impl Drop for Mosquitto {
    fn drop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

/// `mosquitto_sub` on a plain broker, collecting every message (one per line).
pub struct Subscriber {
    child: Child,
    lines: Arc<Mutex<Vec<String>>>,
}

impl Subscriber {
    /// Subscribe at QoS 1 to `topic` on `127.0.0.1:port`; with `persistent`,
    /// in a persistent session (`-c`, fixed client id: messages queue while
    /// it is away; mosquitto_sub reconnects by itself). Returns once
    /// subscribed (a marker message published to the topic has come back).
    pub fn start(port: u16, topic: &str, persistent: bool) -> Subscriber {
        let id = format!("imprint-test-sub-{}", free_port());
        let mut args = vec![
            "-h".to_string(),
            "127.0.0.1".into(),
            "-p".into(),
            port.to_string(),
            "-t".into(),
            topic.into(),
            "-q".into(),
            "1".into(),
            "-v".into(),
            "-i".into(),
            id,
        ];
        if persistent {
            args.push("-c".into());
        }
        let mut child =
            Command::new("mosquitto_sub").args(&args).stdout(Stdio::piped()).stderr(Stdio::null()).spawn().expect("mosquitto_sub starts");
        let mut out = child.stdout.take().unwrap();
        let lines = Arc::new(Mutex::new(Vec::new()));
        let l2 = lines.clone();
        std::thread::spawn(move || {
            let mut acc = Vec::new();
            let mut buf = [0u8; 4096];
            while let Ok(n) = out.read(&mut buf) {
                if n == 0 {
                    break;
                }
                acc.extend_from_slice(&buf[..n]);
                while let Some(i) = acc.iter().position(|b| *b == b'\n') {
                    let line: Vec<u8> = acc.drain(..=i).collect();
                    l2.lock().unwrap().push(String::from_utf8_lossy(&line).trim_end().to_string());
                }
            }
        });
        let s = Subscriber { child, lines };
        let marker = format!("subscriber-ready-{}", free_port());
        wait_until(Duration::from_secs(10), "the subscriber to be subscribed", || {
            let _ = Command::new("mosquitto_pub")
                .args(["-h", "127.0.0.1", "-p", &port.to_string(), "-t", topic, "-q", "1", "-m", &marker])
                .status();
            s.payloads().iter().any(|p| p == &marker)
        });
        s
    }

    /// Payloads received so far (the topic stripped), the ready marker included.
    pub fn payloads(&self) -> Vec<String> {
        self.lines.lock().unwrap().iter().filter_map(|l| l.split_once(' ').map(|(_, p)| p.to_string())).collect()
    }
}

impl Drop for Subscriber {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
