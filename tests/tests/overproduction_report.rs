//! Overproduction in the report (issue 14; issue 13 item 4): a store
//! tampered to hold more certificates for a work order than its quantity
//! (what a restored backup or a hand edit leaves) makes every report of it
//! say so loudly: first in the text and on stderr, in the JSON summary, in
//! red in the PDF (and the Reports view, tested by vitest).
#![allow(clippy::expect_used, clippy::unwrap_used, clippy::panic)]

use imprint_tests::station::{imprint_bin, TestStation};
use std::process::{Command, Output};

fn run(ts: &TestStation, args: &[&str]) -> Output {
    Command::new(imprint_bin()).envs(ts.env()).env_remove("IMPRINT_PG_PASSWORD").args(args).output().unwrap()
}

fn text(o: &Output) -> String {
    format!("{}{}", String::from_utf8_lossy(&o.stdout), String::from_utf8_lossy(&o.stderr))
}

/// Two work orders of 2; three devices under WO-OVER (the third refused
/// `quota_exhausted`), then a certificate row added behind the quota for
/// the refused attempt; WO-OK stays within its quantity.
fn tampered_station() -> TestStation {
    let ts = TestStation::new();
    for id in ["WO-OVER", "WO-OK"] {
        let o = run(&ts, &["work-orders", "add", id, "--product", "sensor", "--quantity", "2"]);
        assert!(o.status.success(), "{}", text(&o));
    }
    let o = run(&ts, &["station", "--simulate", "3", "--max", "3", "--batch", "WO-OVER"]);
    assert_eq!(o.status.code(), Some(1), "the third device fails quota_exhausted: {}", text(&o));
    let o = run(&ts, &["station", "--simulate", "1", "--max", "1", "--batch", "WO-OK"]);
    assert!(o.status.success(), "{}", text(&o));
    let c = rusqlite::Connection::open(ts.cfg.store_path()).unwrap();
    let refused: String = c
        .query_row("SELECT id FROM attempts WHERE batch = 'WO-OVER' AND code = 'quota_exhausted'", [], |r| r.get(0))
        .expect("the refused attempt");
    let n = c
        .execute(
            "INSERT INTO certificates(id, attempt_id, device_serial, issuer, serial_hex, spki_sha256, spki_der, cert_der, not_before, not_after, status, created_at)
             SELECT 'tampered-1', ?1, 'SIM-0003', issuer, 'dead01', 'tampered-key', spki_der, cert_der, not_before, not_after, status, created_at
             FROM certificates LIMIT 1",
            [&refused],
        )
        .unwrap();
    assert_eq!(n, 1);
    ts
}

/// Pixels (RGB) of the first page rendered at 100 dpi, past the PPM header.
fn first_page_red_pixels(ts: &TestStation, pdf: &std::path::Path, name: &str) -> usize {
    let prefix = ts.dir.path().join(name);
    let o = Command::new("pdftoppm")
        .args(["-r", "100", "-f", "1", "-l", "1", pdf.to_str().unwrap(), prefix.to_str().unwrap()])
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", text(&o));
    let page = std::fs::read_dir(ts.dir.path())
        .unwrap()
        .map(|e| e.unwrap().path())
        .find(|p| p.extension().is_some_and(|e| e == "ppm") && p.file_name().unwrap().to_string_lossy().starts_with(name))
        .unwrap();
    let ppm = std::fs::read(page).unwrap();
    // "P6\n<w> <h>\n255\n": the pixels follow the third newline.
    let start = ppm.iter().enumerate().filter(|(_, b)| **b == b'\n').nth(2).unwrap().0 + 1;
    ppm[start..].chunks_exact(3).filter(|p| p[0] > 150 && p[1] < 90 && p[2] < 90).count()
}

#[test]
fn a_tampered_store_with_more_certificates_than_the_quantity_is_loud_in_every_report() {
    let ts = tampered_station();
    // The text: the warning first (stdout) and on stderr; the summary counts it.
    let o = run(&ts, &["report"]);
    assert!(o.status.success(), "{}", text(&o));
    let out = String::from_utf8_lossy(&o.stdout).to_string();
    let want = "OVERPRODUCTION: work order WO-OVER has 3 certificates for a quantity of 2 (1 too many)";
    assert!(String::from_utf8_lossy(&o.stderr).contains(want), "{}", text(&o));
    let first = out.lines().position(|l| l.contains(want)).expect("the warning in the text");
    let attempts = out.lines().position(|l| l.starts_with("station")).expect("the attempts table");
    assert!(first < attempts, "the warning comes before the rows:\n{out}");
    assert!(out.contains("OVERPRODUCTION: more certificates than the work order's quantity"), "{out}");
    assert!(out.lines().any(|l| l.split_whitespace().collect::<Vec<_>>() == ["overproduced", "work", "orders", "1"]), "{out}");
    assert!(!out.contains("work order WO-OK has"), "WO-OK is within its quantity:\n{out}");

    // JSON: in the summary.
    let o = run(&ts, &["report", "--json"]);
    let j: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap_or_else(|e| panic!("{e}: {}", text(&o)));
    assert_eq!(j["summary"]["overproduction"], serde_json::json!([{"work_order": "WO-OVER", "quantity": 2, "certificates": 3}]));
    // A report of the other work order only: nothing to say.
    let o = run(&ts, &["report", "--batch", "WO-OK", "--json"]);
    let j: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(j["summary"]["overproduction"], serde_json::json!([]));
    assert!(!String::from_utf8_lossy(&o.stderr).contains("OVERPRODUCTION"), "{}", text(&o));
    // CSV has no summary: the rows stay clean on stdout, the warning goes to stderr.
    let o = run(&ts, &["report", "--csv", "--batch", "WO-OVER"]);
    assert!(o.status.success(), "{}", text(&o));
    assert!(!String::from_utf8_lossy(&o.stdout).contains("OVERPRODUCTION"));
    assert!(String::from_utf8_lossy(&o.stderr).contains(want), "{}", text(&o));

    // PDF: the table, in red, before the summary.
    let pdf = ts.dir.path().join("over.pdf");
    let o = run(&ts, &["report", "--batch", "WO-OVER", "--pdf", pdf.to_str().unwrap()]);
    assert!(o.status.success(), "{}", text(&o));
    let t = Command::new("pdftotext").args(["-layout", pdf.to_str().unwrap(), "-"]).output().expect("pdftotext (poppler-utils)");
    let t = String::from_utf8_lossy(&t.stdout).to_string();
    let over = t.find("OVERPRODUCTION").unwrap_or_else(|| panic!("no overproduction in the PDF:\n{t}"));
    assert!(over < t.find("first-pass yield").unwrap(), "{t}");
    assert!(t.lines().any(|l| l.split_whitespace().collect::<Vec<_>>() == ["WO-OVER", "2", "3", "1"]), "{t}");
    let red = first_page_red_pixels(&ts, &pdf, "over");
    assert!(red > 50, "the overproduction is not drawn red ({red} red pixels)");
}

/// The same PDF without overproduction has no red at all: the red above is the warning's.
#[test]
fn a_report_within_the_quantity_has_no_red_in_its_pdf() {
    let ts = TestStation::new();
    let o = run(&ts, &["work-orders", "add", "WO-FINE", "--product", "sensor", "--quantity", "2"]);
    assert!(o.status.success(), "{}", text(&o));
    let o = run(&ts, &["station", "--simulate", "2", "--max", "2", "--batch", "WO-FINE"]);
    assert!(o.status.success(), "{}", text(&o));
    let pdf = ts.dir.path().join("fine.pdf");
    let o = run(&ts, &["report", "--pdf", pdf.to_str().unwrap()]);
    assert!(o.status.success(), "{}", text(&o));
    assert!(!String::from_utf8_lossy(&o.stderr).contains("OVERPRODUCTION"));
    assert_eq!(first_page_red_pixels(&ts, &pdf, "fine"), 0);
}
