//! The content hash of a synced record must never change for the same
//! content: the center stores the hash a station computed, and a record that
//! arrives again (a lost acknowledgement) is recognised by (version, hash).
//! These values were computed by the hash code as it was before the record
//! descriptor (`imprint_store::synced`) replaced the per-table code; any
//! change to them would quarantine every record already synced.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use imprint_store::{PendingChange, RecordState, Store};
use std::collections::BTreeMap;

/// Fixed rows, written as raw SQL: every column kind, NULL and empty text,
/// multibyte text, times spelled with and without fractions and offsets.
const FIXTURE: &str = "
INSERT INTO attempts(id, port, started_at, finished_at, status, stage, code, reason, hint, retryable, device_serial, model,
                     hw_rev, fw_version, fw_hash, chip_uid, batch, spki_sha256, certificate_id, resumed, bytes_to_device, bytes_from_device)
VALUES ('0190a1b2-0000-7000-8000-000000000001', '/dev/ttyUSB0', '2026-03-01T10:00:00.123Z', '2026-03-01T10:00:07Z', 'failed',
        'csr', 'csr_bad', 'Ünïcödé reason ✓', 'replug the device', 1, 'SN-1', 'model-x', 'r2', '1.2.3', 'ab12cd', 'chip-9', 'B-7',
        'k1', NULL, 1, 1234, 5678),
       ('0190a1b2-0000-7000-8000-000000000002', 'p', '2026-03-01T12:00:00+02:00', NULL, 'running',
        NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, 0, 0, 0),
       ('0190a1b2-0000-7000-8000-000000000003', '', '2026-03-01T10:00:00.000001Z', '2026-03-01T10:00:00Z', 'passed',
        '', '', '', '', 0, '', '', '', '', '', '', '', '', NULL, 0, -1, 9223372036854775807);
INSERT INTO certificates(id, attempt_id, device_serial, issuer, serial_hex, spki_sha256, spki_der, not_before, not_after,
                         status, cert_der, chain_der, fingerprint_sha256, created_at, issued_at)
VALUES ('0190a1b2-0000-7000-8000-0000000000c1', '0190a1b2-0000-7000-8000-000000000001', 'SN-1', 'CN=Imprint CA,O=Ü', '00ff',
        'k1', x'3059301306', '2026-03-01T10:00:00Z', '2036-03-01T10:00:00.000Z', 'signing', NULL, NULL, NULL,
        '2026-03-01T10:00:01.5Z', NULL),
       ('0190a1b2-0000-7000-8000-0000000000c2', '0190a1b2-0000-7000-8000-000000000003', 'SN-3', 'CN=Imprint CA', '7f01',
        'k3', x'', '2026-03-01T10:00:00Z', '2036-03-01T10:00:00Z', 'issued', x'308201', x'30820a', 'fp3',
        '2026-03-01T10:00:00Z', '2026-03-01T10:00:00.999999Z');
UPDATE attempts SET certificate_id = '0190a1b2-0000-7000-8000-0000000000c1' WHERE id = '0190a1b2-0000-7000-8000-000000000001';
INSERT INTO steps(id, attempt_id, at, stage, kind, detail) VALUES
    (1, '0190a1b2-0000-7000-8000-000000000001', '2026-03-01T10:00:00.000001Z', 'hello', 'started', ''),
    (2, '0190a1b2-0000-7000-8000-000000000001', '2026-03-01T11:00:00+01:00', 'csr', 'console', 'ошибка ✗ line'),
    (7, '0190a1b2-0000-7000-8000-000000000003', '2026-03-01T10:00:00Z', '', '', 'a');
INSERT INTO outbox(entity, entity_id, step_no, changed_at) VALUES
    ('attempt', '0190a1b2-0000-7000-8000-000000000001', 0, 'x'),
    ('attempt', '0190a1b2-0000-7000-8000-000000000002', 0, 'x'),
    ('attempt', '0190a1b2-0000-7000-8000-000000000003', 0, 'x'),
    ('certificate', '0190a1b2-0000-7000-8000-0000000000c1', 0, 'x'),
    ('certificate', '0190a1b2-0000-7000-8000-0000000000c2', 0, 'x'),
    ('step', '0190a1b2-0000-7000-8000-000000000001', 1, 'x'),
    ('step', '0190a1b2-0000-7000-8000-000000000001', 2, 'x'),
    ('step', '0190a1b2-0000-7000-8000-000000000003', 7, 'x');
";

/// Hashes as computed before the descriptor (hex), by record.
const PINNED: &[(&str, &str)] = &[
    ("Stätion ✓|attempt 0190a1b2-0000-7000-8000-000000000001", "c58f0980e0bea098de8c53cced6820bbb1051b6b66c3a0e88f97c1346abcb1a3"),
    ("Stätion ✓|attempt 0190a1b2-0000-7000-8000-000000000002", "572aff6589c3418aa0e2d90bdd55341dc75114dff99aeb5a65015f46b7fe33cd"),
    ("Stätion ✓|attempt 0190a1b2-0000-7000-8000-000000000003", "55fb03d18bf731d6682523cbd1eb46e5cd4019668788121ebe3d7a0dd8054526"),
    ("Stätion ✓|certificate 0190a1b2-0000-7000-8000-0000000000c1", "0e6d499d50a47f6f5c5ba7d7d75506b08bf310ec75b21d59f3c9729cb3a2ddc6"),
    ("Stätion ✓|certificate 0190a1b2-0000-7000-8000-0000000000c2", "ec620775e6892c422364c8fb1eb571f37ba71ab5d2c4b47415351991db0483a2"),
    ("Stätion ✓|step 0190a1b2-0000-7000-8000-000000000001#1", "d0d75f6c96496be4dc9fea6ebdf17a9f75b4ff83380321876008712b4f70ebef"),
    ("Stätion ✓|step 0190a1b2-0000-7000-8000-000000000001#2", "3dae0142c12a0b6aa9c0671abe44fa01cf7575c125d30893807eb6a72398e703"),
    ("Stätion ✓|step 0190a1b2-0000-7000-8000-000000000003#7", "655b7076cdc1067847dbd6cfdb638bb047c91aee842d0838f675b7c13b471414"),
    ("line-1|attempt 0190a1b2-0000-7000-8000-000000000001", "ef14602f60007b57692b94ccb9eef4db71ee631da191021d3e1902d18959b54e"),
    ("line-1|attempt 0190a1b2-0000-7000-8000-000000000002", "a6c895c6aa61c18cd14df50e9dba8d53b5c4093f4dadeaf5ff6593c26a6c57e5"),
    ("line-1|attempt 0190a1b2-0000-7000-8000-000000000003", "a823c3fbcd311f5b5b6bfd8bd790b04913f6ab1ea7ff1c082f24360ccab338e0"),
    ("line-1|certificate 0190a1b2-0000-7000-8000-0000000000c1", "730b33860b904bdaa09cab66b24a5c7e170459d99c6deb46cff7a369532c8777"),
    ("line-1|certificate 0190a1b2-0000-7000-8000-0000000000c2", "d136202e3ba3b46a7a3dd61c9f21f868f44b4a2a11a371e9e3b5f6838856f1dd"),
    ("line-1|step 0190a1b2-0000-7000-8000-000000000001#1", "b9c65dea12c3e436538af34633b9490a4e3ab1a8a9e47e658e58c9bcaef2356e"),
    ("line-1|step 0190a1b2-0000-7000-8000-000000000001#2", "d27219c2766d53bd41ad3bf0926d95359266f7b9f4247a88cd424e58a18f7bb8"),
    ("line-1|step 0190a1b2-0000-7000-8000-000000000003#7", "0a805c6b036d24e07c9f5c43290e28dc8a5f9e4cc09ff2624dfd215815691d0e"),
];

fn hash_of(station: &str, c: &PendingChange) -> [u8; 32] {
    match &c.state {
        RecordState::Present(v) => imprint_sync::hash::record(c.table(), station, v),
        RecordState::Missing => panic!("{} missing", c.key),
    }
}

#[test]
fn content_hashes_of_fixed_rows_stay_what_stations_already_synced() {
    let d = tempfile::tempdir().unwrap();
    let s = Store::open(&d.path().join("station.db")).unwrap();
    s.write(|t| Ok(t.execute_batch(FIXTURE)?)).unwrap();
    let changes = s.pending_changes(100).unwrap();
    assert_eq!(changes.len(), 8);
    let mut got = BTreeMap::new();
    for station in ["line-1", "Stätion ✓"] {
        for c in &changes {
            got.insert(format!("{station}|{}", c.key), hex::encode(hash_of(station, c)));
        }
    }
    let pinned: BTreeMap<String, String> = PINNED.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect();
    assert_eq!(got, pinned);
}
