//! PostgreSQL fixtures: a database of its own per test (created, migrated by
//! the admin path, dropped), station login roles, and the set comparison
//! every sync test ends with: the center's records of a station, with their
//! content re-hashed from what the center holds, equal the station's local
//! records at their latest versions.
#![allow(clippy::expect_used, clippy::unwrap_used, clippy::panic)]

use imprint_store::synced::{Kind, Value, TABLES};
use imprint_store::{RecordKey, Store};
use imprint_sync::{hash, record, CentralConfig};
use sqlx::postgres::{PgConnectOptions, PgConnection};
use sqlx::{ConnectOptions, Connection};
use std::collections::BTreeMap;
use std::process::Command;
use std::str::FromStr;
use std::sync::atomic::{AtomicU16, AtomicU32, Ordering};

/// The cluster every test uses (trust auth on 127.0.0.1): the machine's
/// shared one.
pub const PG_HOST: &str = "127.0.0.1";
pub const PG_PORT: u16 = 5432;

static PORT: AtomicU16 = AtomicU16::new(PG_PORT);

/// The port this process's fixtures (`psql`, `TestDb`) talk to: `PG_PORT`
/// unless a private cluster was chosen with [`use_cluster_port`].
pub fn pg_port() -> u16 {
    PORT.load(Ordering::SeqCst)
}

/// Send every later `psql`, `try_psql` and `TestDb` of this process to the
/// cluster on `port` (a [`PrivateCluster`]).
pub fn use_cluster_port(port: u16) {
    PORT.store(port, Ordering::SeqCst);
}

/// Run SQL as the superuser with psql; stdout, trimmed (`-At`).
pub fn psql(db: &str, sql: &str) -> String {
    let out = Command::new("psql")
        .args(["-h", PG_HOST, "-p", &pg_port().to_string(), "-U", "postgres", "-d", db, "-v", "ON_ERROR_STOP=1", "-Atq", "-c", sql])
        .output()
        .expect("psql runs (apt install postgresql-client)");
    assert!(out.status.success(), "psql {sql:?}: {}", String::from_utf8_lossy(&out.stderr));
    String::from_utf8_lossy(&out.stdout).trim().to_string()
}

/// Run a psql script as the superuser (its text on stdin, `vars` as `-v
/// name=value`, stopping at the first error) in `db`, on this process's cluster.
pub fn psql_script(db: &str, script: &str, vars: &[(&str, String)]) {
    use std::io::Write;
    let mut c = Command::new("psql");
    c.args(["-h", PG_HOST, "-p", &pg_port().to_string(), "-U", "postgres", "-d", db, "-q", "-v", "ON_ERROR_STOP=1"]);
    for (k, v) in vars {
        c.args(["-v", &format!("{k}={v}")]);
    }
    let mut child = c.stdin(std::process::Stdio::piped()).spawn().expect("psql runs (apt install postgresql-client)");
    child.stdin.take().unwrap().write_all(script.as_bytes()).unwrap();
    assert!(child.wait().unwrap().success(), "psql script failed in {db}");
}

/// The central database of `imprint-report-bench`: `n` attempts over 2026
/// across 10 sites, with certificates, QA verdicts and work orders
/// (`tests/bench/report_generate.sql`, run into a migrated database).
pub const REPORT_GENERATE_SQL: &str = include_str!("../bench/report_generate.sql");

/// EXPERIMENTAL (benchmarks only): `attempts` and `attempt_steps`
/// partitioned by month in place (`tests/bench/partition_by_month.sql`).
pub const PARTITION_BY_MONTH_SQL: &str = include_str!("../bench/partition_by_month.sql");

/// Partition `db`'s attempts and attempt steps by month, 2025-01 to 2027-12 and a default partition.
pub fn partition_by_month(db: &str) {
    psql_script(db, PARTITION_BY_MONTH_SQL, &[("from", "2025-01-01".into()), ("months", "36".into())]);
}

/// psql that may fail (e.g. while the server restarts).
pub fn try_psql(db: &str, sql: &str) -> Result<String, String> {
    let out = Command::new("psql")
        .args(["-h", PG_HOST, "-p", &pg_port().to_string(), "-U", "postgres", "-d", db, "-Atq", "-c", sql])
        .output()
        .map_err(|e| e.to_string())?;
    if out.status.success() {
        Ok(String::from_utf8_lossy(&out.stdout).trim().to_string())
    } else {
        Err(String::from_utf8_lossy(&out.stderr).to_string())
    }
}

/// A current-thread runtime for the async parts of a test.
pub fn rt() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap()
}

fn unique_suffix() -> String {
    static N: AtomicU32 = AtomicU32::new(0);
    let mut b = [0u8; 4];
    getrandom::fill(&mut b).unwrap();
    format!("{}_{}_{}", std::process::id(), N.fetch_add(1, Ordering::SeqCst), hex::encode(b))
}

/// A lock shared by every PostgreSQL test on the machine (a file lock, so it
/// holds across processes: two `cargo test` runs at once). Tests that stop or
/// restart the server hold it exclusively; all others hold it shared for as
/// long as their database lives.
pub struct PgLock {
    _file: std::fs::File,
    exclusive: bool,
}

static EXCLUSIVE_HERE: std::sync::atomic::AtomicBool = std::sync::atomic::AtomicBool::new(false);

fn lock_file() -> std::fs::File {
    std::fs::OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(std::env::temp_dir().join("imprint-pg-tests.lock"))
        .expect("lock file")
}

impl PgLock {
    /// For a test that restarts or stops PostgreSQL: waits until no other
    /// PostgreSQL test runs on this machine, in any process.
    pub fn exclusive() -> PgLock {
        let f = lock_file();
        f.lock().expect("exclusive lock");
        EXCLUSIVE_HERE.store(true, Ordering::SeqCst);
        PgLock { _file: f, exclusive: true }
    }

    fn shared() -> Option<PgLock> {
        if pg_port() != PG_PORT {
            return None; // a private cluster: nobody restarts it under us
        }
        if EXCLUSIVE_HERE.load(Ordering::SeqCst) {
            return None; // this process holds it exclusively: the restarting test's own database
        }
        let f = lock_file();
        f.lock_shared().expect("shared lock");
        Some(PgLock { _file: f, exclusive: false })
    }
}

impl Drop for PgLock {
    fn drop(&mut self) {
        // The file lock goes with the file; the flag with the exclusive holder.
        if self.exclusive {
            EXCLUSIVE_HERE.store(false, Ordering::SeqCst);
        }
    }
}

/// A migrated database of this test's own, dropped (with its roles) on drop.
pub struct TestDb {
    pub name: String,
    roles: Vec<String>,
    pub dir: tempfile::TempDir,
    _lock: Option<PgLock>,
}

impl TestDb {
    /// Create `imprint_t_<unique>` and migrate it as the administrator would.
    pub fn new() -> TestDb {
        let lock = PgLock::shared();
        let name = format!("imprint_t_{}", unique_suffix());
        psql("postgres", &format!("CREATE DATABASE {name}"));
        let db = TestDb { name, roles: Vec::new(), dir: tempfile::tempdir().unwrap(), _lock: lock };
        let v = rt().block_on(imprint_sync::migrate(&db.admin_options())).expect("migrate");
        assert_eq!(v, imprint_sync::required_version());
        db
    }

    /// An empty database (no schema), for schema-check tests.
    pub fn empty() -> TestDb {
        let lock = PgLock::shared();
        let name = format!("imprint_t_{}", unique_suffix());
        psql("postgres", &format!("CREATE DATABASE {name}"));
        TestDb { name, roles: Vec::new(), dir: tempfile::tempdir().unwrap(), _lock: lock }
    }

    pub fn admin_url(&self) -> String {
        format!("postgres://postgres@{PG_HOST}:{}/{}?sslmode=disable", pg_port(), self.name)
    }

    pub fn admin_options(&self) -> PgConnectOptions {
        PgConnectOptions::from_str(&self.admin_url()).unwrap().log_statements(log::LevelFilter::Off)
    }

    pub fn psql(&self, sql: &str) -> String {
        psql(&self.name, sql)
    }

    /// Register `station` with a login role of its own; the returned config
    /// syncs as that role, its password in a file (never in the config).
    pub fn add_station(&mut self, station: &str) -> CentralConfig {
        let role: String = format!("{}_{}", self.name, station.to_ascii_lowercase().replace(|c: char| !c.is_ascii_alphanumeric(), "_"));
        let role: String = role.chars().take(63).collect();
        let mut b = [0u8; 12];
        getrandom::fill(&mut b).unwrap();
        let password = hex::encode(b);
        rt().block_on(imprint_sync::add_station(&self.admin_options(), station, &role, &password)).expect("add station");
        self.roles.push(role.clone());
        let pw_file = self.dir.path().join(format!("{role}.pw"));
        std::fs::write(&pw_file, format!("{password}\n")).unwrap();
        CentralConfig {
            url: format!("postgres://{PG_HOST}:{}/{}", pg_port(), self.name),
            sslmode: Some("disable".into()),
            role: Some(role),
            password_file: Some(pw_file),
            batch_size: 500,
            interval_ms: 100,
            retry_min_ms: 50,
            retry_max_ms: 1000,
            timeout_ms: 5000,
            ..CentralConfig::default()
        }
    }

    /// `cfg` (a station's, from [`TestDb::add_station`]) with a supervisor
    /// login role beside it, made as an administrator would, through
    /// `imprint db add-supervisor` (dropped with the database).
    pub fn add_supervisor(&mut self, cfg: CentralConfig) -> CentralConfig {
        let role = format!("{}_sup", self.name);
        let pw = self.dir.path().join("sup.pw");
        std::fs::write(&pw, "sup-secret-4711\n").unwrap();
        self.track_role(&role);
        let scratch = crate::station::TestStation::new();
        let o = Command::new(crate::station::imprint_bin())
            .envs(scratch.env())
            .env_remove("IMPRINT_PG_PASSWORD")
            .env_remove("IMPRINT_SUPERVISOR_PG_PASSWORD")
            .args(["db", "add-supervisor", "--url", &self.admin_url(), "--role", &role, "--role-password-file", pw.to_str().unwrap()])
            .output()
            .expect("run imprint db add-supervisor");
        assert!(o.status.success(), "{}{}", String::from_utf8_lossy(&o.stdout), String::from_utf8_lossy(&o.stderr));
        CentralConfig { supervisor_role: Some(role), supervisor_password_file: Some(pw), ..cfg }
    }

    /// Drop this role with the database (for roles made outside `add_station`).
    pub fn track_role(&mut self, role: &str) {
        self.roles.push(role.to_string());
    }

    /// Backends of this database's station roles (not the admin's).
    pub fn kill_station_connections(&self) -> usize {
        try_psql(
            "postgres",
            &format!(
                "SELECT count(*) FROM (SELECT pg_terminate_backend(pid) FROM pg_stat_activity
                 WHERE datname = '{}' AND usename <> 'postgres') t",
                self.name
            ),
        )
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(0)
    }
}

impl Default for TestDb {
    fn default() -> Self {
        Self::new()
    }
}

impl Drop for TestDb {
    fn drop(&mut self) {
        let _ = try_psql("postgres", &format!("DROP DATABASE IF EXISTS {} WITH (FORCE)", self.name));
        for r in &self.roles {
            let _ = try_psql("postgres", &format!("DROP ROLE IF EXISTS {r}"));
        }
    }
}

/// A record's identity, its version, and its content hash (hex).
pub type RecordSet = BTreeMap<String, (i64, String)>;

/// Every record of a station's local store at its latest version, hashed
/// from the raw values the outbox reader sends (`imprint_store::synced`).
pub fn local_set(store: &Store, station: &str) -> RecordSet {
    let mut out = RecordSet::new();
    let versions: BTreeMap<(String, String, i64), i64> = store
        .read(|c| {
            let mut s = c.prepare("SELECT entity, entity_id, step_no, max(seq) FROM outbox GROUP BY 1, 2, 3")?;
            let rows = s.query_map([], |r| Ok(((r.get(0)?, r.get(1)?, r.get(2)?), r.get(3)?)))?.collect::<Result<BTreeMap<_, _>, _>>()?;
            Ok(rows)
        })
        .unwrap();
    for table in TABLES {
        for (k, values) in store.synced_records(table).unwrap() {
            let v =
                *versions.get(&(k.entity.as_str().to_string(), k.id.clone(), k.step_no)).unwrap_or_else(|| panic!("{k} has no outbox row"));
            out.insert(record_name(&k), (v, hex::encode(hash::record(table, station, &values))));
        }
    }
    out
}

fn record_name(k: &RecordKey) -> String {
    match k.entity {
        imprint_store::Entity::Step => format!("step:{}#{}", k.id, k.step_no),
        e => format!("{}:{}", e.as_str(), k.id),
    }
}

/// A station's records as the center holds them, each hash **recomputed from
/// the center's columns** (so content, not just the stored hash, is compared),
/// and checked against the hash the center stored.
pub fn central_set(db: &TestDb, station: &str) -> RecordSet {
    rt().block_on(async {
        let mut c: PgConnection = db.admin_options().connect().await.unwrap();
        let mut out = RecordSet::new();
        for table in TABLES {
            let sql = format!("SELECT {} FROM {} c WHERE c.station_id = $1", record::central_select(table), table.central);
            for r in sqlx::query(sqlx::AssertSqlSafe(sql)).bind(station).fetch_all(&mut c).await.unwrap() {
                let (values, version, stored) = record::central_values(table, &r).unwrap();
                let k = table.record_key(&values).unwrap();
                let h = hex::encode(hash::record(table, station, &values));
                assert_eq!(h, hex::encode(stored), "{k}: stored hash matches stored content");
                out.insert(record_name(&k), (version, h));
            }
        }
        let _ = c.close().await;
        out
    })
}

/// How a central table differs from its record descriptor
/// (`imprint_store::synced`): columns missing or extra, of another type or
/// nullability (`information_schema.columns`), and columns whose UPDATE grant
/// to `imprint_station` disagrees with the descriptor's `Mutable` (the
/// station may update exactly the mutable columns and, where there are
/// any, the sync's own version, hash and arrival time). Empty: no drift.
pub fn central_drift(db: &TestDb, table: &imprint_store::synced::Table) -> Vec<String> {
    use imprint_store::synced::{Change, CENTRAL_SYNC_COLUMNS};
    use std::collections::BTreeSet;
    let rows = db.psql(&format!(
        "SELECT column_name || ' ' || data_type || ' ' || is_nullable || ' '
                || has_column_privilege('imprint_station', 'public.' || table_name, column_name, 'UPDATE')
         FROM information_schema.columns WHERE table_schema = 'public' AND table_name = '{}'",
        table.central
    ));
    let actual: BTreeSet<String> = rows.lines().map(str::to_string).collect();
    let mut expected: BTreeSet<String> = table
        .columns
        .iter()
        .map(|c| {
            let null = if c.nullable { "YES" } else { "NO" };
            format!("{} {} {null} {}", c.name, record::information_schema_type(c.kind), c.change == Change::Mutable)
        })
        .collect();
    // A record that never changes (steps) grants no UPDATE at all.
    let updatable = table.columns.iter().any(|c| c.change == Change::Mutable);
    for (name, ty) in CENTRAL_SYNC_COLUMNS.iter().zip(["text", "bigint", "bytea"]) {
        expected.insert(format!("{name} {ty} NO {}", updatable && *name != "station_id"));
    }
    if table.received_at {
        expected.insert(format!("received_at timestamp with time zone NO {updatable}"));
    }
    let mut drift: Vec<String> = expected.difference(&actual).map(|e| format!("{}: descriptor has `{e}`", table.central)).collect();
    drift.extend(actual.difference(&expected).map(|a| format!("{}: center has `{a}`", table.central)));
    drift
}

/// Assert the center holds exactly the station's local records (nothing
/// lost, nothing duplicated, nothing altered) and return how many.
pub fn assert_center_equals_local(db: &TestDb, store: &Store, station: &str) -> usize {
    let local = local_set(store, station);
    let central = central_set(db, station);
    if local != central {
        let missing: Vec<_> = local.keys().filter(|k| !central.contains_key(*k)).take(5).collect();
        let extra: Vec<_> = central.keys().filter(|k| !local.contains_key(*k)).take(5).collect();
        let differ: Vec<_> = local.iter().filter(|(k, v)| central.get(*k).is_some_and(|c| c != *v)).take(5).collect();
        panic!(
            "station {station}: local {} records, central {}; missing at the center {missing:?}; extra {extra:?}; differing {differ:?}",
            local.len(),
            central.len()
        );
    }
    local.len()
}

/// Total rows of one station at the center (attempts + steps + certificates + audit entries + QA verdicts).
pub fn central_count(db: &TestDb, station: &str) -> i64 {
    db.psql(&format!(
        "SELECT (SELECT count(*) FROM attempts WHERE station_id = '{station}') + (SELECT count(*) FROM attempt_steps WHERE station_id = '{station}')
              + (SELECT count(*) FROM certificates WHERE station_id = '{station}') + (SELECT count(*) FROM audit_trail WHERE station_id = '{station}')
              + (SELECT count(*) FROM qa_verdicts WHERE station_id = '{station}')"
    ))
    .parse()
    .unwrap()
}

/// Restart the cluster (for tests that prove the worker resumes by itself).
pub fn restart_postgres() {
    let version = std::fs::read_dir("/etc/postgresql")
        .ok()
        .and_then(|mut d| d.next())
        .and_then(|e| e.ok())
        .map(|e| e.file_name().to_string_lossy().to_string())
        .unwrap_or_else(|| "15".into());
    let out = Command::new("pg_ctlcluster")
        .args(["--skip-systemctl-redirect", "-m", "fast", &version, "main", "restart"])
        .output()
        .expect("pg_ctlcluster");
    assert!(out.status.success(), "restart: {}", String::from_utf8_lossy(&out.stderr));
}

/// Wait until the cluster answers.
pub fn wait_for_postgres() {
    for _ in 0..200 {
        if try_psql("postgres", "SELECT 1").is_ok() {
            return;
        }
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
    panic!("PostgreSQL did not come back");
}

/// Record `attempts` provisioning attempts through the store's public API
/// (what a station writes), each with `steps` steps, a journaled and issued
/// certificate and a finish, from `threads` threads at once (the writer
/// group-commits them). Returns the number of records (attempts + steps +
/// certificates + audit entries: one provisioning outcome each). Serials start with `prefix`.
pub fn fill(store: &std::sync::Arc<Store>, prefix: &str, attempts: usize, steps: usize, threads: usize) -> usize {
    use imprint_store::{new_id, now_text, AttemptEnd, DeviceFacts, Intent, StepRow};
    let per = attempts.div_ceil(threads.max(1));
    // The work order the filled attempts are under, with room for any fill: a
    // fixture row written directly, so the records (and the audit entries)
    // counted below are only the filled ones.
    store
        .write(|t| {
            t.execute(
                "INSERT OR IGNORE INTO work_orders(id, product, quantity, status, created_at) VALUES ('WO-BENCH', 'bench', 1000000000000, 'open', ?1)",
                [now_text()],
            )?;
            Ok(())
        })
        .unwrap();
    std::thread::scope(|s| {
        for t in 0..threads.max(1) {
            let store = store.clone();
            s.spawn(move || {
                for i in (t * per)..((t + 1) * per).min(attempts) {
                    let serial = format!("{prefix}-{i:06}");
                    let a = store.begin_attempt(&format!("/dev/ttySIM{t}"), Some("WO-BENCH")).unwrap();
                    store
                        .set_device(
                            &a,
                            &DeviceFacts {
                                serial: serial.clone(),
                                model: "IMP-1".into(),
                                hw_rev: "B".into(),
                                fw_version: "1.2.3".into(),
                                fw_hash: "ab".repeat(32),
                                chip_uid: format!("UID{i:08}"),
                            },
                        )
                        .unwrap();
                    let half = steps / 2;
                    let mk = |k: usize| StepRow {
                        at: now_text(),
                        stage: ["identify", "keygen", "csr", "issue", "write", "prove", "lock"][k % 7].into(),
                        kind: "completed".into(),
                        detail: format!("step {k} of {serial}: ok in {} ms", 10 + k),
                    };
                    store.record_steps(&a, (0..half).map(mk).collect()).unwrap();
                    let mut key = [0u8; 32];
                    getrandom::fill(&mut key).unwrap();
                    let spki = hex::encode(key);
                    store.set_key(&a, &spki).unwrap();
                    let cert = new_id();
                    let mut serial_bytes = [0u8; 16];
                    getrandom::fill(&mut serial_bytes).unwrap();
                    store
                        .journal_intent(&Intent {
                            id: cert.clone(),
                            attempt_id: a.clone(),
                            device_serial: serial.clone(),
                            issuer: "CN=Imprint Test CA".into(),
                            serial_hex: hex::encode(serial_bytes),
                            spki_sha256: spki,
                            spki_der: vec![0x30; 91],
                            not_before: imprint_store::Timestamp::now(),
                            not_after: imprint_store::Timestamp::parse("2036-01-01T00:00:00.000Z").expect("a valid time"),
                        })
                        .unwrap();
                    let mut der = vec![0u8; 480];
                    getrandom::fill(&mut der).unwrap();
                    store.mark_issued(&cert, &der, b"chain", &hex::encode(&der[..32])).unwrap();
                    store.record_steps(&a, (half..steps).map(mk).collect()).unwrap();
                    store.finish_attempt(&a, AttemptEnd::Passed { resumed: false }, 4504, 2100).unwrap();
                }
            });
        }
    });
    // Each attempt: itself, its steps, its certificate and its provisioning
    // outcome in the audit trail.
    attempts * (steps + 3)
}

/// COPY text-format field.
fn copy_field(out: &mut String, s: &str) {
    for ch in s.chars() {
        match ch {
            '\\' => out.push_str("\\\\"),
            '\t' => out.push_str("\\t"),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            c => out.push(c),
        }
    }
}

/// One value as a COPY text cell of the column's kind.
fn copy_cell(out: &mut String, kind: Kind, v: &Value) {
    match (kind, v) {
        (_, Value::Null) => out.push_str("\\N"),
        (Kind::Bool, Value::Int(b)) => out.push(if *b != 0 { 't' } else { 'f' }),
        (_, Value::Int(n)) => out.push_str(&n.to_string()),
        (_, Value::Text(s)) => copy_field(out, s),
        (_, Value::Blob(b)) => {
            out.push_str("\\\\x");
            out.push_str(&hex::encode(b));
        }
    }
}

/// The rows the sync sends for `station`, as COPY text: (table, columns,
/// data, rows), built from the same record descriptors (the COPY floor of
/// the sync benchmarks).
pub fn copy_rows(store: &Store, station: &str) -> Vec<(&'static str, String, String, usize)> {
    let versions: std::collections::HashMap<(String, String, i64), i64> = store
        .read(|c| {
            let mut s = c.prepare("SELECT entity, entity_id, step_no, max(seq) FROM outbox GROUP BY 1, 2, 3")?;
            let rows = s.query_map([], |r| Ok(((r.get(0)?, r.get(1)?, r.get(2)?), r.get(3)?)))?.collect::<Result<_, _>>()?;
            Ok(rows)
        })
        .unwrap();
    let mut out = Vec::new();
    for table in TABLES {
        let mut cols: Vec<&str> = table.columns.iter().map(|c| c.name).collect();
        cols.extend(["station_id", "version", "content_sha256"]);
        let (mut text, mut n) = (String::new(), 0);
        for (k, values) in store.synced_records(table).unwrap() {
            let h = hash::record(table, station, &values);
            for (c, v) in table.columns.iter().zip(&values) {
                copy_cell(&mut text, c.kind, v);
                text.push('\t');
            }
            let version = versions[&(k.entity.as_str().to_string(), k.id.clone(), k.step_no)];
            text.push_str(station);
            text.push('\t');
            text.push_str(&version.to_string());
            text.push('\t');
            copy_cell(&mut text, Kind::Bytes, &Value::Blob(h.to_vec()));
            text.push('\n');
            n += 1;
        }
        out.push((table.central, cols.join(", "), text, n));
    }
    out
}

/// A PostgreSQL cluster of this process's own (`imprint-stations-bench
/// --own-cluster`): Debian's `initdb` + `postgres` from
/// `/usr/lib/postgresql/<newest>/bin`, in a temporary directory, listening on
/// a free loopback port only (no Unix socket), trust auth, superuser
/// `postgres`, every other setting initdb's default (as the machine's shared
/// cluster: `fsync`, `synchronous_commit` on, 128 MB shared buffers). Run as
/// the system user `postgres` when this process is root (the server refuses
/// root), as this process's user otherwise. The server is in a process group
/// of its own, so a Ctrl-C at the terminal reaches the bench and its stations
/// first and the bench stops the server itself ([`PrivateCluster::stop`]: a
/// fast shutdown, then the directory removed), also on drop.
pub struct PrivateCluster {
    pub port: u16,
    pub max_connections: usize,
    pub bin: std::path::PathBuf,
    server: Option<std::process::Child>,
    bouncer: Option<std::process::Child>,
    dir: Option<tempfile::TempDir>,
    ids: Option<(u32, u32)>,
}

impl PrivateCluster {
    /// Create, start and wait for a cluster allowing `max_connections`.
    pub fn start(max_connections: usize) -> PrivateCluster {
        use std::os::unix::fs::MetadataExt;
        use std::os::unix::process::CommandExt;
        let bin = std::fs::read_dir("/usr/lib/postgresql")
            .expect("/usr/lib/postgresql (apt install postgresql)")
            .filter_map(|e| e.ok())
            .filter_map(|e| Some((e.file_name().to_string_lossy().parse::<u32>().ok()?, e.path().join("bin"))))
            .filter(|(_, b)| b.join("initdb").exists() && b.join("postgres").exists())
            .max()
            .map(|(_, b)| b)
            .expect("initdb and postgres under /usr/lib/postgresql/*/bin");
        // The server refuses to run as root: as `postgres` then.
        let root = std::fs::metadata("/proc/self").map(|m| m.uid() == 0).unwrap_or(false);
        let ids = root.then(|| {
            let id = |flag: &str| -> u32 {
                let out = Command::new("id").args([flag, "postgres"]).output().expect("id");
                assert!(out.status.success(), "no system user `postgres` to run the private cluster as");
                String::from_utf8_lossy(&out.stdout).trim().parse().unwrap()
            };
            (id("-u"), id("-g"))
        });
        let dir = tempfile::Builder::new().prefix("imprint-pg-").tempdir().unwrap();
        if let Some((uid, gid)) = ids {
            std::os::unix::fs::chown(dir.path(), Some(uid), Some(gid)).unwrap();
        }
        let as_user = |c: &mut Command| {
            c.current_dir(dir.path());
            if let Some((uid, gid)) = ids {
                c.uid(uid).gid(gid);
            }
        };
        let data = dir.path().join("data");
        let mut initdb = Command::new(bin.join("initdb"));
        initdb.arg("-D").arg(&data).args(["-U", "postgres", "-A", "trust", "-E", "UTF8", "--locale=C", "--no-sync"]);
        as_user(&mut initdb);
        let out = initdb.output().expect("initdb runs");
        assert!(out.status.success(), "initdb: {}", String::from_utf8_lossy(&out.stderr));

        let log_path = dir.path().join("server.log");
        for _ in 0..5 {
            // A free loopback port (another process may take it before the server does: retried).
            let port = std::net::TcpListener::bind((PG_HOST, 0)).unwrap().local_addr().unwrap().port();
            let log = std::fs::File::create(&log_path).unwrap();
            if let Some((uid, gid)) = ids {
                std::os::unix::fs::chown(&log_path, Some(uid), Some(gid)).unwrap();
            }
            let mut server = Command::new(bin.join("postgres"));
            server.arg("-D").arg(&data);
            for (k, v) in [
                ("port", port.to_string()),
                ("listen_addresses", PG_HOST.to_string()),
                ("unix_socket_directories", String::new()),
                ("max_connections", max_connections.to_string()),
            ] {
                server.arg("-c").arg(format!("{k}={v}"));
            }
            as_user(&mut server);
            server.process_group(0).stdin(std::process::Stdio::null()).stdout(log.try_clone().unwrap()).stderr(log);
            let mut child = server.spawn().expect("postgres runs");
            let t = std::time::Instant::now();
            let up = loop {
                if let Some(st) = child.try_wait().unwrap() {
                    eprintln!("private cluster on port {port} exited {st}: {}", std::fs::read_to_string(&log_path).unwrap_or_default());
                    break false;
                }
                let ok = Command::new("psql")
                    .args(["-h", PG_HOST, "-p", &port.to_string(), "-U", "postgres", "-d", "postgres", "-Atqc", "SELECT 1"])
                    .output()
                    .map(|o| o.status.success())
                    .unwrap_or(false);
                if ok {
                    break true;
                }
                assert!(t.elapsed() < std::time::Duration::from_secs(60), "the private cluster did not answer within 60 s");
                std::thread::sleep(std::time::Duration::from_millis(100));
            };
            if up {
                return PrivateCluster { port, max_connections, bin, server: Some(child), bouncer: None, dir: Some(dir), ids };
            }
        }
        panic!("the private cluster did not start (server log above)");
    }

    /// Start Debian's PgBouncer (`/usr/sbin/pgbouncer`) in front of this
    /// cluster, as the cluster's user, on a free loopback port (returned):
    /// every database, `pool_mode` `mode`, at most `server_connections` to
    /// the cluster in all (`max_db_connections`), `per_user` per login role
    /// (`default_pool_size`: pools are per database and role, and every
    /// station has a role of its own), `max_clients` clients. `trust` auth
    /// for the `users` listed (the cluster itself trusts loopback).
    pub fn start_pgbouncer(&mut self, mode: &str, server_connections: usize, per_user: usize, max_clients: usize, users: &[String]) -> u16 {
        use std::os::unix::process::CommandExt;
        let dir = self.dir.as_ref().unwrap().path().to_path_buf();
        let port = std::net::TcpListener::bind((PG_HOST, 0)).unwrap().local_addr().unwrap().port();
        let auth: String = users.iter().chain(std::iter::once(&"postgres".to_string())).map(|u| format!("\"{u}\" \"\"\n")).collect();
        std::fs::write(dir.join("userlist.txt"), auth).unwrap();
        let ini = format!(
            "[databases]\n* = host={PG_HOST} port={}\n[pgbouncer]\nlisten_addr = {PG_HOST}\nlisten_port = {port}\nunix_socket_dir =\n\
             auth_type = trust\nauth_file = {}\npool_mode = {mode}\nmax_db_connections = {server_connections}\n\
             default_pool_size = {per_user}\nmax_client_conn = {max_clients}\nignore_startup_parameters = extra_float_digits,options\n\
             logfile = {}\nlog_connections = 0\nlog_disconnections = 0\n",
            self.port,
            dir.join("userlist.txt").display(),
            dir.join("pgbouncer.log").display()
        );
        std::fs::write(dir.join("pgbouncer.ini"), ini).unwrap();
        let mut c = Command::new("/usr/sbin/pgbouncer");
        c.arg(dir.join("pgbouncer.ini")).current_dir(&dir).process_group(0);
        c.stdin(std::process::Stdio::null()).stdout(std::process::Stdio::null()).stderr(std::process::Stdio::null()); // its log: pgbouncer.log
        if let Some((uid, gid)) = self.ids {
            for f in ["userlist.txt", "pgbouncer.ini"] {
                std::os::unix::fs::chown(dir.join(f), Some(uid), Some(gid)).unwrap();
            }
            c.uid(uid).gid(gid);
        }
        let mut child = c.spawn().expect("pgbouncer runs (apt install pgbouncer)");
        let t = std::time::Instant::now();
        while std::net::TcpStream::connect((PG_HOST, port)).is_err() {
            if let Some(st) = child.try_wait().unwrap() {
                panic!("pgbouncer exited {st}: {}", std::fs::read_to_string(dir.join("pgbouncer.log")).unwrap_or_default());
            }
            assert!(t.elapsed() < std::time::Duration::from_secs(30), "pgbouncer did not listen within 30 s");
            std::thread::sleep(std::time::Duration::from_millis(50));
        }
        self.bouncer = Some(child);
        port
    }

    /// The server's log so far (`ERROR:` lines: what the stations were refused).
    pub fn server_log(&self) -> String {
        self.dir.as_ref().and_then(|d| std::fs::read_to_string(d.path().join("server.log")).ok()).unwrap_or_default()
    }

    /// Stop PgBouncer (if started: SIGTERM, immediate), then the server: a
    /// fast shutdown (SIGINT: sessions ended, a checkpoint, exit), SIGKILL
    /// after 30 s; then the directory removed. Idempotent.
    pub fn stop(&mut self) {
        if let Some(mut child) = self.bouncer.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
        if let Some(mut child) = self.server.take() {
            let _ = Command::new("kill").args(["-INT", &child.id().to_string()]).status();
            let t = std::time::Instant::now();
            while child.try_wait().ok().flatten().is_none() {
                if t.elapsed() > std::time::Duration::from_secs(30) {
                    let _ = child.kill();
                    let _ = child.wait();
                    break;
                }
                std::thread::sleep(std::time::Duration::from_millis(50));
            }
        }
        if let Some(dir) = self.dir.take() {
            let _ = dir.close();
        }
    }
}

impl Drop for PrivateCluster {
    fn drop(&mut self) {
        self.stop();
    }
}
