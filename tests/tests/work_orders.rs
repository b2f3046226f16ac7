//! Work orders with enforced quotas (issue 13, steps 1 and 2): a work order
//! of N issues exactly N certificates, the next device ends `quota_exhausted`;
//! resume, re-send, unplug and kill -9 never count a certificate twice;
//! failed attempts consume nothing; unknown, closed and expired work orders
//! are refused; `[work_orders] required = true` starts no device without one.
#![allow(clippy::expect_used, clippy::unwrap_used, clippy::panic)]

use imprint_proto::Outcome;
use imprint_store::{NewWorkOrder, Store, Timestamp};
use imprint_tests::station::{imprint_bin, path_of, sim, work_order, TestStation};
use std::process::{Command, Output};

fn failed_code(r: &imprint_station::AttemptResult) -> (String, String, bool) {
    match &r.outcome {
        Outcome::Failed(f) => (f.code.as_str().to_string(), f.stage.as_str().to_string(), f.retryable),
        other => panic!("expected a failure, got {other:?}"),
    }
}

#[test]
fn a_work_order_of_three_issues_exactly_three_certificates_and_the_fourth_device_fails_quota_exhausted() {
    let ts = TestStation::new();
    let st = ts.open();
    work_order(st.store(), "WO-3", 3);
    st.set_batch(Some("WO-3".into()));
    let devs: Vec<_> = (1..=4).map(|i| sim(&format!("QUOTA-{i:04}"), "")).collect();
    // Three at once (they race for the quota), then the fourth.
    let ports: Vec<String> = devs[..3].iter().map(path_of).collect();
    for r in st.provision_all(&ports, None) {
        let r = r.unwrap();
        assert!(r.passed(), "{:?}", r.outcome);
    }
    let fourth = st.provision(&path_of(&devs[3]), None).unwrap();
    assert_eq!(failed_code(&fourth), ("quota_exhausted".into(), "issue".into(), false));
    let row = st.store().attempt(&fourth.attempt_id).unwrap().unwrap();
    assert!(row.reason.as_deref().unwrap_or_default().contains("WO-3 is used up"), "{row:?}");
    assert!(row.hint.as_deref().unwrap_or_default().contains("quantity is used up"), "{row:?}");
    assert!(devs[3].snapshot().cert_der.is_none(), "the refused device holds no certificate");
    assert_eq!(st.store().certificates().unwrap().len(), 3, "exactly the quantity");
    let w = st.store().work_order("WO-3").unwrap().unwrap();
    assert_eq!((w.issued, w.certified, w.remaining(), w.overproduced()), (3, 3, 0, false));
    // A device already certified under the used-up work order still passes (re-check, no new certificate).
    let again = st.provision(&path_of(&devs[0]), None).unwrap();
    assert!(again.passed(), "{:?}", again.outcome);
    assert_eq!(st.store().work_order("WO-3").unwrap().unwrap().issued, 3);
    // The refusal is an audited outcome like every other.
    assert!(st.store().verify_audit(None).unwrap().ok());
}

#[test]
fn an_unplug_after_issuance_resumes_with_the_same_certificate_and_counts_once() {
    let ts = TestStation::new();
    let st = ts.open();
    work_order(st.store(), "WO-R", 1);
    st.set_batch(Some("WO-R".into()));
    // Request 12 falls after issuance (during read-back); the device comes back on a new pty.
    let dev = sim("WO-RESUME-1", "unplug-at=12,replug-after-ms=200");
    let first = st.provision(&path_of(&dev), None).unwrap();
    assert_eq!(failed_code(&first).0, "unplugged");
    assert_eq!(st.store().work_order("WO-R").unwrap().unwrap().issued, 1);
    let path = dev.wait_plugged(std::time::Duration::from_secs(5)).expect("re-plugged");
    // The quantity (1) is used up, yet the device resumes: re-sending its certificate costs nothing.
    let second = st.provision(&path.display().to_string(), None).unwrap();
    let Outcome::Passed { resumed, .. } = &second.outcome else { panic!("{:?}", second.outcome) };
    assert!(resumed);
    let w = st.store().work_order("WO-R").unwrap().unwrap();
    assert_eq!((w.issued, w.certified), (1, 1));
}

#[test]
fn failed_attempts_consume_nothing() {
    let ts = TestStation::new();
    let st = ts.open();
    work_order(st.store(), "WO-F", 1);
    st.set_batch(Some("WO-F".into()));
    for (serial, fault, code) in
        [("WO-FAIL-1", "weak-key", "key_not_allowed"), ("WO-FAIL-2", "silent", "no_response"), ("WO-FAIL-3", "unplug-at=5", "unplugged")]
    {
        let r = st.provision(&path_of(&sim(serial, fault)), None).unwrap();
        assert_eq!(failed_code(&r).0, code, "{serial}");
    }
    assert_eq!(st.store().work_order("WO-F").unwrap().unwrap().issued, 0, "no failure consumed quota");
    let good = st.provision(&path_of(&sim("WO-FAIL-4", "")), None).unwrap();
    assert!(good.passed(), "the whole quantity is still there: {:?}", good.outcome);
}

#[test]
fn unknown_closed_and_expired_work_orders_issue_nothing() {
    let ts = TestStation::new();
    let st = ts.open();
    let past = Timestamp::from(time::OffsetDateTime::now_utc() - time::Duration::days(1));
    st.store()
        .add_work_order(
            &NewWorkOrder {
                id: "WO-OLD".into(),
                product: "p".into(),
                quantity: 5,
                valid_from: None,
                valid_until: Some(past),
                stations: None,
            },
            None,
        )
        .unwrap();
    work_order(st.store(), "WO-SHUT", 5);
    st.store().close_work_order("WO-SHUT", Some("sup")).unwrap();
    for (wo, words) in [("WO-NONE", "unknown"), ("WO-OLD", "expired"), ("WO-SHUT", "closed")] {
        // Set behind the API's back (a config `batch`, or closed after the scan): refused where it is journaled.
        st.set_batch(Some(wo.into()));
        let r = st.provision(&path_of(&sim(&format!("{wo}-1"), "")), None).unwrap();
        let (code, stage, retryable) = failed_code(&r);
        assert_eq!((code.as_str(), stage.as_str(), retryable), ("work_order_refused", "issue", true), "{wo}");
        let reason = st.store().attempt(&r.attempt_id).unwrap().unwrap().reason.unwrap_or_default();
        assert!(reason.contains(words), "{wo}: {reason}");
    }
    assert!(st.store().certificates().unwrap().is_empty());
}

#[test]
fn a_station_that_requires_a_work_order_starts_no_device_without_one() {
    let mut ts = TestStation::new();
    ts.cfg.work_orders.required = true;
    let st = ts.open();
    let dev = sim("WO-REQ-1", "");
    let r = st.provision(&path_of(&dev), None).unwrap();
    assert_eq!(failed_code(&r), ("work_order_required".into(), "hello".into(), true));
    assert!(dev.snapshot().public_key_spki.is_none(), "the device was not touched: no key made");
    work_order(st.store(), "WO-REQ", 1);
    st.set_batch(Some("WO-REQ".into()));
    let r = st.provision(&path_of(&dev), None).unwrap();
    assert!(r.passed(), "{:?}", r.outcome);
}

fn imprint(ts: &TestStation, args: &[&str], env: &[(&str, &str)]) -> Output {
    Command::new(imprint_bin()).envs(ts.env()).envs(env.iter().copied()).args(args).output().expect("run imprint")
}

fn text(o: &Output) -> String {
    format!("{}{}", String::from_utf8_lossy(&o.stdout), String::from_utf8_lossy(&o.stderr))
}

#[test]
fn killed_mid_issuance_the_resumed_device_counts_once_and_the_quota_still_stops_the_next() {
    let ts = TestStation::new();
    let o = imprint(&ts, &["work-orders", "add", "WO-KILL", "--product", "sensor", "--quantity", "2"], &[]);
    assert!(o.status.success(), "{}", text(&o));
    let batch = [("IMPRINT_BATCH", "WO-KILL")];
    // Each device of the quantity killed at a point where the journal and
    // the count could part (right after the journal commit; after issuance,
    // before LOCK), then re-attached: counted once each.
    let points = ["after_journal", "send:LOCK"];
    let devs: Vec<_> = (1..=3).map(|i| sim(&format!("WO-KILL-{i}"), "")).collect();
    for (dev, point) in devs.iter().zip(points) {
        let port = path_of(dev);
        let mut env = batch.to_vec();
        env.push(("IMPRINT_TEST_CRASH_AT", point));
        let o = imprint(&ts, &["provision", "--port", &port], &env);
        assert_eq!(o.status.code(), None, "{point}: the station must die by signal: {}", text(&o));
        let o = imprint(&ts, &["provision", "--port", &port], &batch);
        assert!(o.status.success(), "{point}: the re-attached device passes: {}", text(&o));
    }
    // The third device finds the quantity used up: journaled nothing.
    let o = imprint(&ts, &["provision", "--port", &path_of(&devs[2])], &batch);
    assert_eq!(o.status.code(), Some(1), "{}", text(&o));
    assert!(text(&o).contains("quota_exhausted"), "{}", text(&o));
    assert!(devs[2].snapshot().cert_der.is_none());
    let store = Store::open(&ts.cfg.store_path()).unwrap();
    let w = store.work_order("WO-KILL").unwrap().unwrap();
    assert_eq!((w.issued, w.certified), (2, 2));
    assert_eq!(store.certificates().unwrap().len(), 2);
    drop(store);
    // The CLI shows it.
    let o = imprint(&ts, &["work-orders", "show", "WO-KILL", "--json"], &[]);
    let v: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap_or_else(|_| panic!("{}", text(&o)));
    assert_eq!((v["issued"].as_u64(), v["quantity"].as_u64(), v["remaining"].as_u64()), (Some(2), Some(2), Some(0)));
    let o = imprint(&ts, &["work-orders", "close", "WO-KILL"], &[]);
    assert!(o.status.success() && text(&o).contains("closed"), "{}", text(&o));
    let o = imprint(&ts, &["work-orders", "close", "WO-KILL"], &[]);
    assert_eq!(o.status.code(), Some(2), "closing twice: {}", text(&o));
    assert!(text(&o).contains("work_order_refused"), "{}", text(&o));
}
