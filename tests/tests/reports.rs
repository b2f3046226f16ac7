//! Reports and exports through the `imprint` binary: one filter, one column
//! set, local and central alike; CSV that a spreadsheet cannot run; the
//! cloud registration files.
#![allow(clippy::expect_used, clippy::unwrap_used, clippy::panic)]

use imprint_devsim::{SimConfig, SimDevice};
use imprint_tests::pg::TestDb;
use imprint_tests::station::{imprint_bin, TestStation};
use std::process::{Command, Output};

fn run(env: &[(String, String)], args: &[&str]) -> Output {
    Command::new(imprint_bin()).envs(env.iter().cloned()).env_remove("IMPRINT_PG_PASSWORD").args(args).output().unwrap()
}

/// Attempts run under a work order the store knows (an unknown one is refused `work_order_refused`).
fn add_work_order(env: &[(String, String)], id: &str) {
    let o = run(env, &["work-orders", "add", id, "--product", "sensor", "--quantity", "100"]);
    assert!(o.status.success(), "{}", text(&o));
}

fn text(o: &Output) -> String {
    format!("{}{}", String::from_utf8_lossy(&o.stdout), String::from_utf8_lossy(&o.stderr))
}

fn json(o: &Output) -> serde_json::Value {
    assert!(o.status.success(), "{}", text(o));
    serde_json::from_slice(&o.stdout).unwrap_or_else(|e| panic!("{e}: {}", text(o)))
}

/// Regression (issue 14): device-supplied text reached the CSV as it came,
/// so a model `=HYPERLINK(...)` ran as a formula in a spreadsheet.
#[test]
fn model_and_firmware_text_beginning_with_formula_characters_is_neutralised_in_every_csv() {
    let ts = TestStation::new();
    let links = ts.dir.path().join("by-id");
    std::fs::create_dir_all(&links).unwrap();
    let texts =
        [("=HYPERLINK(\"http://evil\",\"x\")", "=1+2"), ("+SUM(A1:A9)", "+1.0"), ("-2+3", "-cmd|' /C calc'!A0"), ("@SUM(1)", "@fw")];
    let devs: Vec<_> = texts
        .iter()
        .enumerate()
        .map(|(i, (model, fw))| {
            SimDevice::spawn(SimConfig::new(format!("CSV-{i:04}")).with_link_dir(&links).with_identity(*model, *fw)).unwrap()
        })
        .collect();
    let glob = format!("{}/*", links.display());
    add_work_order(&ts.env(), "WO-CSV");
    let o = run(&ts.env(), &["watch", "--glob", &glob, "--max", "4", "--batch", "WO-CSV"]);
    assert!(o.status.success(), "{}", text(&o));

    let out = ts.dir.path().join("export.csv");
    let o = run(&ts.env(), &["export", "csv", "--batch", "WO-CSV", "--out", out.to_str().unwrap()]);
    assert!(o.status.success(), "{}", text(&o));
    let export = std::fs::read_to_string(&out).unwrap();
    let o = run(&ts.env(), &["report", "--csv", "--work-order", "WO-CSV"]);
    assert!(o.status.success(), "{}", text(&o));
    let report = String::from_utf8(o.stdout).unwrap();
    assert_eq!(export, report, "`export csv` and `report --csv` write the same columns and rows");

    let mut rdr = csv::Reader::from_reader(export.as_bytes());
    let headers = rdr.headers().unwrap().clone();
    let col = |name: &str| headers.iter().position(|h| h == name).unwrap();
    let recs: Vec<csv::StringRecord> = rdr.records().map(|r| r.unwrap()).collect();
    assert_eq!(recs.len(), 4, "{export}");
    for (model, fw) in texts {
        let r = recs.iter().find(|r| r[col("model")].ends_with(model)).unwrap_or_else(|| panic!("{model} missing: {export}"));
        assert_eq!(&r[col("model")], format!("'{model}"), "{export}");
        assert_eq!(&r[col("fw_version")], format!("'{fw}"), "{export}");
    }
    for r in &recs {
        for cell in r.iter() {
            assert!(!cell.starts_with(['=', '+', '-', '@', '\t', '\r']), "a cell a spreadsheet would run: {cell:?}");
        }
        assert_eq!(&r[col("dev_ca")], "true", "the development CA is flagged");
        assert!(r[col("issuer")].contains("DEVELOPMENT"), "{export}");
        assert_eq!(&r[col("station_id")], "test-station");
    }
    drop(devs);
}

fn write_config(ts: &TestStation, central: &imprint_api::CentralConfig) {
    std::fs::write(
        ts.dir.path().join("station.toml"),
        format!(
            "port_globs = []\nstation_id = \"test-station\"\n\n[central]\nurl = \"{}\"\nsslmode = \"disable\"\nrole = \"{}\"\npassword_file = \"{}\"\n",
            central.url,
            central.role.as_deref().unwrap(),
            central.password_file.as_ref().unwrap().display()
        ),
    )
    .unwrap();
}

/// The same records, reported from the station's store and from the center
/// after a sync, give the same rows and the same summary for every filter.
#[test]
fn local_and_central_reports_of_the_same_records_agree() {
    let mut db = TestDb::new();
    let ts = TestStation::new();
    add_work_order(&ts.env(), "WO-9");
    let o =
        run(&ts.env(), &["station", "--simulate", "4", "--fault", "2:weak-key", "--fault", "3:bad-proof", "--max", "4", "--batch", "WO-9"]);
    assert_eq!(o.status.code(), Some(1), "two devices fail: {}", text(&o));
    let o = run(&ts.env(), &["revoke", "--device", "SIM-0004", "--reason", "keyCompromise", "--comment", "test"]);
    assert!(o.status.success(), "{}", text(&o));
    let central = db.add_station("test-station");
    write_config(&ts, &central);
    let o = run(&ts.env(), &["sync", "now"]);
    assert!(o.status.success(), "{}", text(&o));

    let today = time::OffsetDateTime::now_utc().date().to_string();
    let filters: Vec<Vec<&str>> = vec![
        vec![],
        vec!["--batch", "WO-9"],
        vec!["--status", "failed"],
        vec!["--code", "key_not_allowed"],
        vec!["--since", &today],
        vec!["--since", "7d", "--until", &today],
        vec!["--qa", "none", "--by", "demo-admin"],
        vec!["--station", "test-station", "--limit", "2", "--offset", "1"],
        vec!["--station", "elsewhere"],
    ];
    for f in &filters {
        let mut args = vec!["report", "--json"];
        args.extend(f);
        let mut local = json(&run(&ts.env(), &args));
        args.push("--central");
        let mut center = json(&run(&ts.env(), &args));
        for r in [&mut local, &mut center] {
            let o = r.as_object_mut().unwrap();
            o.remove("generated_at");
            o.remove("source");
        }
        assert_eq!(local, center, "filter {f:?}");
        // The CSV export streams its rows (one in memory at a time): from
        // either source it is the same file, a line per row of the report.
        let csv_of = |central: bool| {
            let out = ts.dir.path().join(format!("export-{central}.csv"));
            let mut args = vec!["export", "csv", "--out", out.to_str().unwrap()];
            args.extend(f);
            if central {
                args.push("--central");
            }
            let o = run(&ts.env(), &args);
            assert!(o.status.success(), "{}", text(&o));
            std::fs::read_to_string(out).unwrap()
        };
        let (csv_local, csv_center) = (csv_of(false), csv_of(true));
        assert_eq!(csv_local, csv_center, "filter {f:?}");
        assert_eq!(csv_local.lines().count(), 1 + local["rows"].as_array().unwrap().len(), "filter {f:?}: {csv_local}");
        if f.is_empty() {
            let s = &local["summary"];
            assert_eq!((s["attempts"].as_u64(), s["devices"].as_u64(), s["passed"].as_u64()), (Some(4), Some(4), Some(2)), "{s:#}");
            assert_eq!(s["revoked"], 1, "{s:#}");
            assert_eq!(s["pareto"].as_array().unwrap().len(), 2, "{s:#}");
            assert_eq!(local["total"], 4);
        }
    }
    // An export to a file is whole or not at all: with the center gone, the
    // earlier file of that name is left as it was and no partial file stays.
    let kept = ts.dir.path().join("kept.csv");
    std::fs::write(&kept, "an earlier export\n").unwrap();
    let good = std::fs::read_to_string(ts.dir.path().join("station.toml")).unwrap();
    let gone = good.replace(central.url.as_str(), "postgres://127.0.0.1:1/test");
    assert_ne!(gone, good);
    std::fs::write(ts.dir.path().join("station.toml"), &gone).unwrap();
    let o = run(&ts.env(), &["export", "csv", "--central", "--out", kept.to_str().unwrap()]);
    assert!(!o.status.success(), "{}", text(&o));
    assert_eq!(std::fs::read_to_string(&kept).unwrap(), "an earlier export\n");
    let left: Vec<_> = std::fs::read_dir(ts.dir.path())
        .unwrap()
        .flatten()
        .map(|e| e.file_name())
        .filter(|n| n.to_string_lossy().ends_with(".tmp"))
        .collect();
    assert!(left.is_empty(), "no temporary file left: {left:?}");
    std::fs::write(ts.dir.path().join("station.toml"), &good).unwrap();
    let o = run(&ts.env(), &["export", "csv", "--central", "--out", kept.to_str().unwrap()]);
    assert!(o.status.success(), "{}", text(&o));
    assert_eq!(std::fs::read_to_string(&kept).unwrap().lines().count(), 5, "replaced by the whole export");
    {
        use std::os::unix::fs::PermissionsExt;
        assert_eq!(std::fs::metadata(&kept).unwrap().permissions().mode() & 0o777, 0o600);
    }

    let page = json(&run(&ts.env(), &["report", "--json", "--limit", "2", "--offset", "1"]));
    assert_eq!((page["total"].as_u64(), page["rows"].as_array().unwrap().len()), (Some(4), 2), "paged, with the total");

    // Plain text: a header row, the rows, totals and the summary tables.
    let o = run(&ts.env(), &["report", "--limit", "3"]);
    let t = text(&o);
    assert!(o.status.success(), "{t}");
    assert!(t.contains("station") && t.contains("started") && t.contains("device"), "{t}");
    assert!(t.contains("rows 1-3 of 4"), "{t}");
    assert!(t.contains("first-pass yield") && t.contains("Failures by stage and code") && t.contains("QA coverage"), "{t}");
    for (args, word) in [
        (vec!["report", "--since", "yesterday"], "--since \"yesterday\""),
        (vec!["report", "--central", "--since", "2026-11-01x"], "--since \"2026-11-01x\""),
        (vec!["report", "--status", "pass"], "--status \"pass\""),
        (vec!["export", "csv", "--code", "nope"], "--code \"nope\""),
    ] {
        let o = run(&ts.env(), &args);
        assert_eq!(o.status.code(), Some(2), "{args:?} is refused: {}", text(&o));
        assert!(text(&o).contains(word), "{}", text(&o));
    }
}

/// The cloud registration files: revoked and superseded certificates left out,
/// each file in its vendor's shape.
#[test]
fn cloud_exports_register_current_certificates_only() {
    let ts = TestStation::new();
    add_work_order(&ts.env(), "WO-C");
    let o = run(&ts.env(), &["station", "--simulate", "3", "--max", "3", "--batch", "WO-C"]);
    assert!(o.status.success(), "{}", text(&o));
    let o = run(&ts.env(), &["revoke", "--device", "SIM-0002", "--reason", "keyCompromise", "--comment", "test"]);
    assert!(o.status.success(), "{}", text(&o));
    let dir = ts.dir.path().join("cloud");
    std::fs::create_dir_all(&dir).unwrap();
    let d = dir.to_str().unwrap();
    for cloud in ["aws", "azure", "nrf"] {
        let o = run(&ts.env(), &["export", cloud, "--batch", "WO-C", "--out-dir", d]);
        assert!(o.status.success(), "{cloud}: {}", text(&o));
        assert!(text(&o).contains("exported 2 devices"), "{}", text(&o));
    }
    let read = |n: &str| {
        let p = dir.join(n);
        use std::os::unix::fs::PermissionsExt;
        assert_eq!(std::fs::metadata(&p).unwrap().permissions().mode() & 0o777, 0o600, "{n} is private");
        std::fs::read_to_string(p).unwrap()
    };
    let lines: Vec<serde_json::Value> = read("aws-bulk-registration.jsonl").lines().map(|l| serde_json::from_str(l).unwrap()).collect();
    let template: serde_json::Value = serde_json::from_str(&read("aws-provisioning-template.json")).unwrap();
    let mut names: Vec<&str> = lines.iter().map(|l| l["ThingName"].as_str().unwrap()).collect();
    names.sort();
    assert_eq!(names, ["SIM-0001", "SIM-0003"]);
    for l in &lines {
        for (k, _) in template["Parameters"].as_object().unwrap() {
            assert!(l[k].is_string(), "{k} in every line");
        }
        let pem = l["CertificatePem"].as_str().unwrap();
        let der = pem::parse(pem).unwrap().into_contents();
        let (_, cert) = x509_parser::parse_x509_certificate(&der).unwrap();
        assert_eq!(cert.subject().iter_common_name().next().unwrap().as_str().unwrap(), l["ThingName"].as_str().unwrap());
        assert!(l["CACertificatePem"].as_str().unwrap().starts_with("-----BEGIN CERTIFICATE-----"));
    }
    let azure: serde_json::Value = serde_json::from_str(&read("azure-dps-enrollments.json")).unwrap();
    assert_eq!(azure["mode"], "create");
    assert_eq!(azure["enrollments"].as_array().unwrap().len(), 2);
    assert!(azure["enrollments"].as_array().unwrap().iter().all(|e| e["attestation"]["type"] == "x509"));
    let nrf = read("nrf-cloud-onboarding.csv");
    let recs: Vec<csv::StringRecord> =
        csv::ReaderBuilder::new().has_headers(false).from_reader(nrf.as_bytes()).records().map(|r| r.unwrap()).collect();
    assert_eq!(recs.len(), 2);
    assert!(recs.iter().all(|r| r.len() == 5 && &r[3] == "APP|MODEM" && r[4].starts_with("-----BEGIN CERTIFICATE-----")));
    assert!(!nrf.contains("SIM-0002"), "the revoked device is left out");
}

/// The PDF: a header with station, filters and export time, the summary,
/// the charts (drawn: the bars' colour is on the rendered page), the device
/// list and page numbers; rendered by poppler's `pdftoppm`, read back by `pdftotext`.
#[test]
fn the_pdf_report_renders_with_header_summary_chart_device_list_and_page_numbers() {
    let ts = TestStation::new();
    add_work_order(&ts.env(), "WO-PDF");
    let o = run(&ts.env(), &["station", "--simulate", "5", "--fault", "2:weak-key", "--max", "5", "--batch", "WO-PDF"]);
    assert_eq!(o.status.code(), Some(1), "{}", text(&o));
    let pdf = ts.dir.path().join("report.pdf");
    let o = run(&ts.env(), &["report", "--batch", "WO-PDF", "--pdf", pdf.to_str().unwrap()]);
    assert!(o.status.success(), "{}", text(&o));
    use std::os::unix::fs::PermissionsExt;
    assert_eq!(std::fs::metadata(&pdf).unwrap().permissions().mode() & 0o777, 0o600);

    let t = Command::new("pdftotext").args(["-layout", pdf.to_str().unwrap(), "-"]).output().expect("pdftotext (poppler-utils)");
    assert!(t.status.success());
    let t = String::from_utf8_lossy(&t.stdout).to_string();
    for want in [
        "Imprint provisioning report",
        "Station / site: test-station",
        "Filters: work order WO-PDF",
        "Exported at: ",
        "first-pass yield",
        "Failure Pareto",
        "key_not_allowed",
        "Yield over time",
        "QA coverage",
        "SIM-0001",
        "SIM-0005",
        "page 1 of ",
    ] {
        assert!(t.contains(want), "{want:?} missing from the PDF text:\n{t}");
    }
    let pages: usize = t.split("page 1 of ").nth(1).unwrap().split_whitespace().next().unwrap().parse().unwrap();
    assert!(t.contains(&format!("page {pages} of {pages}")), "{t}");

    let prefix = ts.dir.path().join("page");
    let o = Command::new("pdftoppm").args(["-r", "40", pdf.to_str().unwrap(), prefix.to_str().unwrap()]).output().unwrap();
    assert!(o.status.success(), "{}", text(&o));
    let mut rendered: Vec<_> = std::fs::read_dir(ts.dir.path())
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "ppm"))
        .collect();
    rendered.sort();
    assert_eq!(rendered.len(), pages, "every page renders");
    // The charts' bars: their fill colour (51, 107, 178) is on the rendered pages.
    let bar = rendered.iter().any(|page| {
        let ppm = std::fs::read(page).unwrap();
        ppm.chunks_exact(3).any(|p| p[0].abs_diff(51) < 12 && p[1].abs_diff(107) < 12 && p[2].abs_diff(178) < 12)
    });
    assert!(bar, "no chart bar drawn");
}

/// One crafted attempt, written the same into a local store and the center.
struct Crafted {
    id: &'static str,
    at: &'static str,
    status: &'static str,
    stage: Option<&'static str>,
    code: Option<&'static str>,
    serial: Option<&'static str>,
    batch: Option<&'static str>,
    operator: Option<&'static str>,
    /// (issuer, serial, status)
    cert: Option<(&'static str, &'static str, &'static str)>,
}

#[allow(clippy::too_many_arguments)]
fn crafted(
    id: &'static str,
    at: &'static str,
    status: &'static str,
    failure: Option<(&'static str, Option<&'static str>)>,
    serial: Option<&'static str>,
    batch: Option<&'static str>,
    operator: Option<&'static str>,
    cert: Option<(&'static str, &'static str, &'static str)>,
) -> Crafted {
    Crafted { id, at, status, stage: failure.map(|f| f.0), code: failure.and_then(|f| f.1), serial, batch, operator, cert }
}

/// The edge cases of every count: a retry that passed, a rework (a device's
/// second certificate supersedes its first), two certificates of one
/// device started at the same millisecond (the newest by issuer, bytewise:
/// "CN=B" before "CN=a"), a revoked certificate, a device still running,
/// an interrupted attempt without a code, an attempt without a serial, two
/// attempts of one device at the same time (the first by id), attempts
/// without a work order or an operator, QA verdicts (the newest counts).
fn crafted_records() -> (Vec<Crafted>, Vec<(&'static str, &'static str, &'static str)>) {
    const DEV: &str = "CN=Imprint DEVELOPMENT CA";
    let u = |n: u8| -> &'static str { Box::leak(format!("0190a000-0000-7000-8000-0000000000{n:02x}").into_boxed_str()) };
    let attempts = vec![
        crafted(
            u(1),
            "2026-11-30T08:00:00.000Z",
            "failed",
            Some(("csr", Some("key_not_allowed"))),
            Some("D1"),
            Some("WO-1"),
            Some("ann"),
            None,
        ),
        crafted(u(2), "2026-11-30T08:05:00.000Z", "passed", None, Some("D1"), Some("WO-1"), Some("ann"), Some((DEV, "c1", "issued"))),
        crafted(u(3), "2026-11-30T08:10:00.000Z", "passed", None, Some("D2"), Some("WO-1"), Some("bob"), Some((DEV, "c2", "superseded"))),
        crafted(u(4), "2026-11-30T09:10:00.000Z", "passed", None, Some("D2"), Some("WO-2"), Some("bob"), Some((DEV, "c3", "issued"))),
        crafted(u(5), "2026-11-30T09:20:00.000Z", "passed", None, Some("D3"), Some("WO-2"), None, Some(("CN=Prod CA", "c4", "revoked"))),
        crafted(u(6), "2026-11-30T09:30:00.000Z", "running", None, Some("D4"), Some("WO-2"), Some("ann"), None),
        crafted(u(7), "2026-11-30T09:40:00.000Z", "interrupted", Some(("identify", None)), Some("D5"), None, Some("ann"), None),
        crafted(u(8), "2026-11-30T10:00:00.000Z", "failed", Some(("hello", Some("timeout"))), None, Some("WO-1"), Some("bob"), None),
        // Same start: the first attempt is the lower id (failed), so no first pass.
        crafted(u(10), "2026-11-30T10:30:00.000Z", "passed", None, Some("D6"), Some("WO-1"), Some("bob"), Some(("CN=a", "c5", "issued"))),
        crafted(u(9), "2026-11-30T10:30:00.000Z", "failed", Some(("csr", Some("weak_key"))), Some("D6"), Some("WO-1"), Some("bob"), None),
        // Two certificates at the same millisecond: "CN=a" sorts after "CN=B", so c6 is superseded.
        crafted(u(11), "2026-11-30T11:00:00.000Z", "passed", None, Some("D7"), None, Some("ann"), Some(("CN=B", "c6", "issued"))),
        crafted(u(12), "2026-11-30T11:00:00.000Z", "passed", None, Some("D7"), None, Some("ann"), Some(("CN=a", "c7", "issued"))),
        crafted(u(13), "2026-11-30T11:05:00.000Z", "failed", Some(("csr", Some("key_not_allowed"))), Some("D8"), Some("WO-2"), None, None),
    ];
    let verdicts = vec![
        ("D1", "2026-11-30T12:00:00.000Z", "pass"),
        ("D3", "2026-11-30T12:00:00.000Z", "pass"),
        ("D3", "2026-11-30T12:30:00.000Z", "fail"),
        ("D7", "2026-11-30T12:40:00.000Z", "pass"),
    ];
    (attempts, verdicts)
}

fn write_crafted_local(path: &std::path::Path, attempts: &[Crafted], verdicts: &[(&str, &str, &str)]) {
    let c = rusqlite::Connection::open(path).unwrap();
    // An attempt and its certificate name each other; the rows are crafted, not provisioned.
    c.execute_batch("PRAGMA foreign_keys = OFF").unwrap();
    for (i, a) in attempts.iter().enumerate() {
        let cert_id = a.cert.map(|_| format!("cert-{i}"));
        c.execute(
            "INSERT INTO attempts (id, port, started_at, finished_at, status, stage, code, device_serial, batch, operator, certificate_id)
             VALUES (?1, '/dev/ttyUSB0', ?2, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9)",
            rusqlite::params![a.id, a.at, a.status, a.stage, a.code, a.serial, a.batch, a.operator, cert_id],
        )
        .unwrap();
        if let (Some((issuer, serial, status)), Some(id)) = (a.cert, cert_id) {
            c.execute(
                "INSERT INTO certificates (id, attempt_id, device_serial, issuer, serial_hex, spki_sha256, spki_der, not_before, not_after,
                                           status, cert_der, created_at)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?1, x'00', ?6, '2036-11-30T00:00:00.000Z', ?7, x'00', ?6)",
                rusqlite::params![id, a.id, a.serial.unwrap_or("-"), issuer, serial, a.at, status],
            )
            .unwrap();
        }
    }
    for (i, (serial, at, verdict)) in verdicts.iter().enumerate() {
        c.execute(
            "INSERT INTO qa_verdicts (id, at, port, device_serial, verdict, checks) VALUES (?1, ?2, '/dev/ttyUSB1', ?3, ?4, '[]')",
            rusqlite::params![format!("qa-{i}"), at, serial, verdict],
        )
        .unwrap();
    }
}

fn write_crafted_central(db: &TestDb, station: &str, attempts: &[Crafted], verdicts: &[(&str, &str, &str)]) {
    let q = |v: Option<&str>| v.map(|s| format!("'{}'", s.replace('\'', "''"))).unwrap_or_else(|| "NULL".into());
    let mut sql = format!("INSERT INTO stations (id, db_role) VALUES ('{station}', 'crafted_{}');\n", station.replace('-', "_"));
    for (i, a) in attempts.iter().enumerate() {
        let cert_id = a.cert.map(|_| format!("0190a000-0000-7000-8000-1000000000{i:02x}"));
        sql += &format!(
            "INSERT INTO attempts (id, station_id, port, started_at, finished_at, status, stage, code, device_serial, batch, operator,
                                   certificate_id, resumed, bytes_to_device, bytes_from_device, version, content_sha256)
             VALUES ('{}', '{station}', '/dev/ttyUSB0', '{}', '{}', '{}', {}, {}, {}, {}, {}, {}, false, 0, 0, 1, '\\x00');\n",
            a.id,
            a.at,
            a.at,
            a.status,
            q(a.stage),
            q(a.code),
            q(a.serial),
            q(a.batch),
            q(a.operator),
            q(cert_id.as_deref()),
        );
        if let (Some((issuer, serial, status)), Some(id)) = (a.cert, &cert_id) {
            sql += &format!(
                "INSERT INTO certificates (id, station_id, attempt_id, device_serial, issuer, serial_hex, spki_sha256, spki_der, not_before,
                                           not_after, status, cert_der, created_at, version, content_sha256)
                 VALUES ('{id}', '{station}', '{}', {}, {}, '{serial}', '{id}', '\\x00', '{}', '2036-11-30T00:00:00Z', '{status}', '\\x00', '{}', 1, '\\x00');\n",
                a.id,
                q(Some(a.serial.unwrap_or("-"))),
                q(Some(issuer)),
                a.at,
                a.at,
            );
        }
    }
    for (i, (serial, at, verdict)) in verdicts.iter().enumerate() {
        sql += &format!(
            "INSERT INTO qa_verdicts (id, station_id, at, port, device_serial, verdict, checks, version, content_sha256)
             VALUES ('0190a000-0000-7000-8000-2000000000{i:02x}', '{station}', '{at}', '/dev/ttyUSB1', '{serial}', '{verdict}', '[]', 1, '\\x00');\n"
        );
    }
    db.psql(&sql);
}

/// Regression (issue 14, item 6): a report pulled every matching row into
/// the client to count its summary (22 s for a month of one site among 10
/// million attempts). The summary is now counted by the database with one
/// query text per dialect (`imprint_sync::summary_sql`); over the same
/// records, the local store's counts, the center's counts and the
/// row-by-row definition (`reports::summarize`) give the same summary for
/// every filter, and both give the same page of rows.
#[test]
fn the_summary_counted_in_sql_is_the_summary_counted_row_by_row() {
    use imprint_api::reports::{summarize, Summary};
    let (attempts, verdicts) = crafted_records();
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("station.db");
    let store = imprint_store::Store::open(&path).unwrap();
    write_crafted_local(&path, &attempts, &verdicts);
    let db = TestDb::new();
    write_crafted_central(&db, "st-1", &attempts, &verdicts);
    let opts = db.admin_options();
    let rt = imprint_tests::pg::rt();

    let q = |f: fn(&mut imprint_sync::ReportQuery)| {
        let mut q = imprint_sync::ReportQuery::default();
        f(&mut q);
        q
    };
    let filters = [
        q(|_| {}),
        q(|q| q.batch = Some("WO-1".into())),
        q(|q| q.status = Some("passed".into())),
        q(|q| q.qa_verdict = Some("none".into())),
        q(|q| q.qa_verdict = Some("fail".into())),
        q(|q| q.since = Some("2026-11-30T09:00:00.000Z".into())),
        q(|q| q.until = Some("2026-11-30T10:30:00.000Z".into())),
        q(|q| q.operator = Some("bob".into())),
        q(|q| q.code = Some("key_not_allowed".into())),
        q(|q| q.station = Some("st-1".into())),
        q(|q| q.station = Some("elsewhere".into())),
    ];
    let plan = imprint_station::config::QaConfig { sample_every: Some(2), sample_count: None };
    for f in &filters {
        let local_rows = imprint_sync::local_rows(&store, "st-1", f).unwrap();
        let central_rows = rt.block_on(imprint_sync::central_rows(&opts, f)).unwrap();
        assert_eq!(local_rows, central_rows, "{f:?}");
        let reference = summarize(&local_rows, Some(&plan));
        let local = imprint_sync::local_summary(&store, "st-1", f).unwrap();
        let central = rt.block_on(imprint_sync::central_summary(&opts, f)).unwrap();
        assert_eq!(Summary::from_counts(&local, Some(&plan)), reference, "local, {f:?}");
        assert_eq!(Summary::from_counts(&central, Some(&plan)), reference, "central, {f:?}");
        let mut batches: Vec<_> = local_rows.iter().filter_map(|r| r.batch.clone()).collect();
        batches.sort();
        batches.dedup();
        for mut b in [local.batches, central.batches] {
            b.sort();
            assert_eq!(b, batches, "{f:?}");
        }
        // The page: the same rows, newest first, as a slice of all of them.
        let paged = imprint_sync::ReportQuery { limit: Some(3), offset: Some(2), ..f.clone() };
        let (lc, lp) = imprint_sync::local_report(&store, "st-1", &paged).unwrap();
        let (cc, cp) = rt.block_on(imprint_sync::central_report(&opts, &paged)).unwrap();
        assert_eq!(lp, cp, "{f:?}");
        assert_eq!(lp, local_rows.iter().skip(2).take(3).cloned().collect::<Vec<_>>(), "{f:?}");
        assert_eq!((lc.attempts, cc.attempts), (local_rows.len() as u64, local_rows.len() as u64), "the summary ignores the page");
        let tail = imprint_sync::ReportQuery { offset: Some(4), ..f.clone() };
        assert_eq!(imprint_sync::local_rows(&store, "st-1", &tail).unwrap(), local_rows.iter().skip(4).cloned().collect::<Vec<_>>());
        assert_eq!(rt.block_on(imprint_sync::central_rows(&opts, &tail)).unwrap(), local_rows.iter().skip(4).cloned().collect::<Vec<_>>());
    }
    // The crafted edge cases are all there.
    let s = summarize(&imprint_sync::local_rows(&store, "st-1", &filters[0]).unwrap(), Some(&plan));
    assert_eq!((s.attempts, s.devices, s.passed, s.failed, s.running, s.attempts_without_serial), (13, 8, 5, 2, 1, 1), "{s:#?}");
    assert_eq!((s.certificates, s.revoked, s.superseded, s.dev_ca), (7, 1, 2, 3), "{s:#?}");
    assert_eq!(
        s.first_pass_yield,
        Some(37.5),
        "D2, D3 and D7 of 8; not D6 (of its two attempts at one time, the first by id failed): {s:#?}"
    );
}

/// The overproduction check at the center (`work_orders::overproduced`)
/// counts every certificate row whose attempt is under the work order, from
/// every station, including a certificate its attempt does not point to (a
/// tampered or restored store) and a second certificate of one attempt; a
/// work order at exactly its quantity is not overproduced. Regression for
/// 0015 (the count now reads `certificates_by_attempt`, and counts rows
/// instead of distinct ids: a certificate joins one attempt by its key).
#[test]
fn overproduction_at_the_center_counts_every_station_s_certificates_of_the_work_order() {
    let db = TestDb::new();
    let mut sql =
        String::from("INSERT INTO work_orders (id, product, quantity) VALUES ('WO-A', 'p', 2), ('WO-B', 'p', 3), ('WO-C', 'p', 1);\n");
    // (attempt, station, work order, its certificates, whether the attempt points to its first one)
    let rows: [(u32, &str, &str, u32, bool); 6] = [
        (1, "st-1", "WO-A", 1, true),
        (2, "st-2", "WO-A", 1, true),
        (3, "st-2", "WO-A", 1, false), // a certificate its attempt does not point to
        (4, "st-1", "WO-B", 2, true),  // two certificates of one attempt (a renewal)
        (5, "st-2", "WO-B", 1, true),
        (6, "st-1", "WO-C", 0, false), // failed: no certificate
    ];
    for (i, station, wo, certs, linked) in rows {
        let attempt = format!("0190b000-0000-7000-8000-0000000000{i:02x}");
        let first = format!("0190b000-0000-7000-8000-1000000000{i:02x}");
        let status = if certs > 0 { "passed" } else { "failed" };
        let link = if linked { format!("'{first}'") } else { "NULL".into() };
        sql += &format!(
            "INSERT INTO attempts (id, station_id, port, started_at, status, device_serial, batch, certificate_id, resumed,
                                   bytes_to_device, bytes_from_device, version, content_sha256)
             VALUES ('{attempt}', '{station}', '/dev/ttyUSB0', '2026-11-30T10:00:0{i}Z', '{status}', 'D{i}', '{wo}', {link}, false, 0, 0, 1, '\\x00');\n"
        );
        for k in 0..certs {
            let id = if k == 0 { first.clone() } else { format!("0190b000-0000-7000-8000-2000000000{i:02x}") };
            sql += &format!(
                "INSERT INTO certificates (id, station_id, attempt_id, device_serial, issuer, serial_hex, spki_sha256, spki_der,
                                           not_before, not_after, status, cert_der, created_at, version, content_sha256)
                 VALUES ('{id}', '{station}', '{attempt}', 'D{i}', 'CN=CA', '{i:02x}{k:02x}', 'key-{i}-{k}', '\\x00', '2026-11-30T10:00:00Z',
                         '2036-11-30T00:00:00Z', '{}', '\\x00', '2026-11-30T10:00:00Z', 1, '\\x00');\n",
                if k + 1 < certs { "superseded" } else { "issued" }
            );
        }
    }
    db.psql(&sql);
    let opts = db.admin_options();
    let rt = imprint_tests::pg::rt();
    let ids = |v: &[&str]| v.iter().map(|s| s.to_string()).collect::<Vec<_>>();
    let over = rt.block_on(imprint_sync::work_orders::overproduced(&opts, &ids(&["WO-A", "WO-B", "WO-C", "WO-NONE"]))).unwrap();
    assert_eq!(over, vec![("WO-A".to_string(), 2, 3)], "WO-B holds exactly its 3, WO-C none");
    // One more certificate under WO-B, from a third station: now it is over too.
    db.psql(
        "INSERT INTO attempts (id, station_id, port, started_at, status, device_serial, batch, resumed, bytes_to_device, bytes_from_device, version, content_sha256)
         VALUES ('0190b000-0000-7000-8000-0000000000ff', 'st-3', '/dev/ttyUSB0', '2026-11-30T11:00:00Z', 'passed', 'D9', 'WO-B', false, 0, 0, 1, '\\x00');
         INSERT INTO certificates (id, station_id, attempt_id, device_serial, issuer, serial_hex, spki_sha256, spki_der, not_before, not_after,
                                   status, cert_der, created_at, version, content_sha256)
         VALUES ('0190b000-0000-7000-8000-1000000000ff', 'st-3', '0190b000-0000-7000-8000-0000000000ff', 'D9', 'CN=CA', 'ff00', 'key-9', '\\x00',
                 '2026-11-30T11:00:00Z', '2036-11-30T00:00:00Z', 'issued', '\\x00', '2026-11-30T11:00:00Z', 1, '\\x00');",
    );
    let over = rt.block_on(imprint_sync::work_orders::overproduced(&opts, &ids(&["WO-B", "WO-A"]))).unwrap();
    assert_eq!(over, vec![("WO-A".to_string(), 2, 3), ("WO-B".to_string(), 3, 4)]);
    assert!(rt.block_on(imprint_sync::work_orders::overproduced(&opts, &[])).unwrap().is_empty());
}

/// Regression (issue 14 item 6; migrations/postgres/0015_report_scale.sql):
/// at 10 million attempts a site's month took 1.2-1.9 s because each of its
/// 82,000 rows was read from a heap page of its own, attempts and
/// certificates alike. The summary now reads them from covering indexes
/// only, and the overproduction check reads two indexes. A column added to
/// the summary (or a filter) without adding it to the index fails here.
/// (Sequential and bitmap scans are turned off so the tiny table's plan
/// shows which index the query can be answered from.)
#[test]
fn a_site_month_summary_at_the_center_reads_only_covering_indexes() {
    use imprint_tests::pg::{psql_script, REPORT_GENERATE_SQL};
    use sqlx::{ConnectOptions, Connection, Row};
    let db = TestDb::new();
    psql_script(&db.name, REPORT_GENERATE_SQL, &[("n", "20000".into())]);
    let rt = imprint_tests::pg::rt();
    let plan = |sql: String, args: Vec<Option<String>>, array: Option<Vec<String>>| -> String {
        rt.block_on(async {
            let mut c = db.admin_options().connect().await.unwrap();
            for s in ["SET enable_seqscan = off", "SET enable_bitmapscan = off", "SET jit = off"] {
                sqlx::query(s).execute(&mut c).await.unwrap();
            }
            let mut q = sqlx::query(sqlx::AssertSqlSafe(format!("EXPLAIN {sql}")));
            for a in args {
                q = q.bind(a);
            }
            if let Some(a) = array {
                q = q.bind(a);
            }
            let lines: Vec<String> = q.fetch_all(&mut c).await.unwrap().iter().map(|r| r.get::<String, _>(0)).collect();
            let _ = c.close().await;
            lines.join("\n")
        })
    };
    let month = |f: fn(&mut imprint_sync::ReportQuery)| {
        let mut q = imprint_sync::ReportQuery {
            station: Some("site-3".into()),
            since: Some("2026-06-01T00:00:00.000Z".into()),
            until: Some("2026-07-01T00:00:00.000Z".into()),
            ..Default::default()
        };
        f(&mut q);
        q
    };
    // The month, and the month with the filters the summary takes (the QA verdict filter reads qa_verdicts too;
    // a device's serial goes to attempts_by_device instead: a handful of rows).
    for q in [
        month(|_| {}),
        month(|q| q.batch = Some("WO-1".into())),
        month(|q| q.operator = Some("op-1".into())),
        month(|q| q.status = Some("failed".into())),
        month(|q| q.code = Some("timeout".into())),
        month(|q| q.qa_verdict = Some("pass".into())),
    ] {
        let (sql, args) = imprint_sync::summary_sql(imprint_sync::Dialect::Postgres, &q, "");
        let p = plan(sql, args, None);
        assert!(p.contains("Index Only Scan using attempts_by_station_covering on attempts"), "{q:?}\n{p}");
        assert!(p.contains("Index Only Scan using certificates_report on certificates"), "{q:?}\n{p}");
        for heap in ["Index Scan using attempts", "Seq Scan on attempts", "Index Scan using certificates", "Seq Scan on certificates"] {
            assert!(!p.contains(heap), "{heap} in {q:?}\n{p}");
        }
    }
    // The overproduction check reads the counts 0017 keeps, never the work orders' attempts or certificates.
    let p = plan(imprint_sync::work_orders::OVERPRODUCED_SQL.to_string(), Vec::new(), Some(vec!["WO-1".into(), "WO-2".into()]));
    assert!(p.contains("on work_order_certificates"), "{p}");
    assert!(!p.contains("on attempts") && !p.contains("on certificates"), "{p}");
}

/// Migration 0017 keeps `work_order_certificates` (per work order and
/// station, the certificates whose attempt is under the work order) for the
/// overproduction check. Pinned against the count the check made before
/// (every certificate row joined to its attempt), as stations send rows:
/// certificates before their attempts, batches sent again with `ON CONFLICT
/// DO NOTHING` (nothing counted twice), a statement mixing rows already there
/// and new ones, several stations and a second certificate of one attempt;
/// a certificate and its attempt inserted by two transactions at once (the
/// second trigger waits for the first transaction and then sees its row);
/// a station reads its own counts only; a deleted certificate is subtracted;
/// an attempt's work order cannot change under the count.
#[test]
fn work_order_certificate_counts_match_the_certificates_whatever_order_and_however_often_rows_arrive() {
    use sqlx::{ConnectOptions, Connection, Row};
    let mut db = TestDb::new();
    let st1 = db.add_station("st-1").connect_options().unwrap();
    let st2 = db.add_station("st-2").connect_options().unwrap();
    db.psql("INSERT INTO work_orders (id, product, quantity) VALUES ('WO-A', 'p', 4), ('WO-B', 'p', 10)");
    let attempt_id = |i: u32| format!("0190b000-0000-7000-8000-0000000000{i:02x}");
    // Rows as a station's push inserts them: one multi-row statement per table, ON CONFLICT DO NOTHING.
    let attempts = |station: &str, rows: &[(u32, &str)]| -> String {
        let v: Vec<String> = rows
            .iter()
            .map(|(i, wo)| {
                format!(
                    "('{}', '{station}', '/dev/ttyUSB0', '2026-11-30T10:00:{i:02}Z', 'passed', 'D{i}', '{wo}', false, 0, 0, 1, '\\x00')",
                    attempt_id(*i)
                )
            })
            .collect();
        format!(
            "INSERT INTO attempts (id, station_id, port, started_at, status, device_serial, batch, resumed, bytes_to_device,
                                   bytes_from_device, version, content_sha256) VALUES {} ON CONFLICT DO NOTHING",
            v.join(", ")
        )
    };
    // (attempt, k-th certificate of that attempt)
    let certificates = |station: &str, rows: &[(u32, u32)]| -> String {
        let v: Vec<String> = rows
            .iter()
            .map(|(i, k)| {
                format!(
                    "('0190b000-0000-7000-8000-1000000{k:01x}00{i:02x}', '{station}', '{}', 'D{i}', 'CN=CA', '{i:02x}{k:02x}', 'key-{i}-{k}',
                      '\\x00', '2026-11-30T10:00:00Z', '2036-11-30T00:00:00Z', '{}', '\\x00', '2026-11-30T10:00:00Z', 1, '\\x00')",
                    attempt_id(*i),
                    if *k == 0 && rows.contains(&(*i, 1)) { "superseded" } else { "issued" }
                )
            })
            .collect();
        format!(
            "INSERT INTO certificates (id, station_id, attempt_id, device_serial, issuer, serial_hex, spki_sha256, spki_der,
                                       not_before, not_after, status, cert_der, created_at, version, content_sha256)
             VALUES {} ON CONFLICT DO NOTHING",
            v.join(", ")
        )
    };
    let rt = imprint_tests::pg::rt();
    let exec = |opts: &sqlx::postgres::PgConnectOptions, statements: Vec<String>| {
        rt.block_on(async {
            let mut c = opts.connect().await.unwrap();
            let mut tx = c.begin().await.unwrap();
            for s in statements {
                sqlx::query(sqlx::AssertSqlSafe(s)).execute(&mut *tx).await.unwrap();
            }
            tx.commit().await.unwrap();
            let _ = c.close().await;
        })
    };
    let counts = || {
        db.psql(
            "SELECT string_agg(work_order_id || ' ' || station_id || ' ' || certificates, ', ' ORDER BY work_order_id, station_id) FROM work_order_certificates",
        )
    };
    // What OVERPRODUCED_SQL counted before 0017, from the rows themselves.
    let truth = || {
        db.psql(
            "SELECT string_agg(x, ', ' ORDER BY x) FROM (SELECT a.batch || ' ' || c.station_id || ' ' || count(*) AS x
             FROM certificates c JOIN attempts a ON a.id = c.attempt_id WHERE a.batch IS NOT NULL GROUP BY a.batch, c.station_id) t",
        )
    };
    let check = |expected: &str, what: &str| {
        assert_eq!(counts().trim(), expected, "{what}");
        assert_eq!(truth().trim(), expected, "{what}: the rows themselves");
    };

    // st-1: the certificates of attempts 1 and 2 arrive before their attempts (another batch, before them).
    let batch1 = vec![certificates("st-1", &[(1, 0), (2, 0)])];
    exec(&st1, batch1.clone());
    check("", "certificates without their attempts count nothing yet");
    let batch2 = vec![attempts("st-1", &[(1, "WO-A"), (2, "WO-A"), (3, "WO-B")])];
    exec(&st1, batch2.clone());
    check("WO-A st-1 2", "the attempts bring their certificates' count");
    // Both batches sent again (a lost acknowledgement): nothing counts twice.
    exec(&st1, batch1);
    exec(&st1, batch2);
    check("WO-A st-1 2", "a batch sent again");
    exec(&st1, vec![certificates("st-1", &[(3, 0)])]);
    check("WO-A st-1 2, WO-B st-1 1", "a certificate after its attempt");
    // st-2 in one transaction: attempts, then their certificates (a renewal: two of attempt 5).
    exec(&st2, vec![attempts("st-2", &[(4, "WO-A"), (5, "WO-B")]), certificates("st-2", &[(4, 0), (5, 0), (5, 1)])]);
    check("WO-A st-1 2, WO-A st-2 1, WO-B st-1 1, WO-B st-2 2", "a second station, a second certificate of one attempt");
    // A statement with a row already there and a new one whose attempt comes later.
    exec(&st2, vec![certificates("st-2", &[(4, 0), (6, 0)])]);
    check("WO-A st-1 2, WO-A st-2 1, WO-B st-1 1, WO-B st-2 2", "only the new row, and its attempt is not there yet");
    exec(&st2, vec![attempts("st-2", &[(4, "WO-A"), (6, "WO-A")])]);
    check("WO-A st-1 2, WO-A st-2 2, WO-B st-1 1, WO-B st-2 2", "the late attempt, beside one sent again");

    // A certificate and its attempt in two transactions at once: the attempt's trigger waits for
    // the certificate's transaction (an advisory lock per station), then sees its row.
    rt.block_on(async {
        let mut admin = db.admin_options().connect().await.unwrap();
        let mut a = st1.connect().await.unwrap();
        let mut b = st1.connect().await.unwrap();
        let b_pid: i32 = sqlx::query("SELECT pg_backend_pid()").fetch_one(&mut b).await.unwrap().get(0);
        let mut ta = a.begin().await.unwrap();
        sqlx::query(sqlx::AssertSqlSafe(certificates("st-1", &[(7, 0)]))).execute(&mut *ta).await.unwrap();
        let attempt = attempts("st-1", &[(7, "WO-A")]);
        let insert_b = async {
            let mut tb = b.begin().await.unwrap();
            sqlx::query(sqlx::AssertSqlSafe(attempt)).execute(&mut *tb).await.unwrap();
            tb.commit().await.unwrap();
        };
        let commit_a = async {
            // Commit the certificate only once the attempt's statement waits for it.
            loop {
                let waiting: bool =
                    sqlx::query("SELECT wait_event_type = 'Lock' AND wait_event = 'advisory' FROM pg_stat_activity WHERE pid = $1")
                        .bind(b_pid)
                        .fetch_one(&mut admin)
                        .await
                        .unwrap()
                        .get::<Option<bool>, _>(0)
                        .unwrap_or(false);
                if waiting {
                    break;
                }
                tokio::time::sleep(std::time::Duration::from_millis(10)).await;
            }
            ta.commit().await.unwrap();
        };
        tokio::join!(insert_b, commit_a);
    });
    check("WO-A st-1 3, WO-A st-2 2, WO-B st-1 1, WO-B st-2 2", "a certificate and its attempt in two transactions at once");

    // The check: WO-A holds 5 certificates for a quantity of 4.
    let ids = vec!["WO-A".to_string(), "WO-B".to_string()];
    assert_eq!(rt.block_on(imprint_sync::work_orders::overproduced(&db.admin_options(), &ids)).unwrap(), vec![("WO-A".to_string(), 4, 5)]);
    // A station reads its own counts only, as it reads its own certificates.
    let own: Vec<(String, String, i64)> = rt.block_on(async {
        let mut c = st2.connect().await.unwrap();
        let r = sqlx::query("SELECT work_order_id, station_id, certificates FROM work_order_certificates ORDER BY 1")
            .fetch_all(&mut c)
            .await
            .unwrap();
        r.iter().map(|r| (r.get(0), r.get(1), r.get(2))).collect()
    });
    assert_eq!(own, vec![("WO-A".into(), "st-2".into(), 2), ("WO-B".into(), "st-2".into(), 2)]);
    // A certificate removed at the center (an administrator's repair) is subtracted.
    db.psql("DELETE FROM certificates WHERE attempt_id = '0190b000-0000-7000-8000-000000000001'");
    check("WO-A st-1 2, WO-A st-2 2, WO-B st-1 1, WO-B st-2 2", "a deleted certificate");
    // An attempt's work order never changes under the count.
    let e = imprint_tests::pg::try_psql(&db.name, "UPDATE attempts SET batch = 'WO-B' WHERE id = '0190b000-0000-7000-8000-000000000002'")
        .unwrap_err();
    assert!(e.contains("attempts.batch never changes"), "{e}");
}
