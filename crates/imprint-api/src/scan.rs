//! The barcode grammar: what a scanner (or a typed code) means.
//! `WO:<order>` (or `BATCH:<order>`) sets the work order; `REWORK:<serial>`
//! authorises re-provisioning that device serial (a supervisor's scan,
//! `Permission::Rework`: the same single-use, expiring authorisation as
//! `imprint rework authorise`); anything else is a device label, matched
//! against the devices on the bench.

use crate::{ApiError, ApiResult};
use serde::Serialize;
use ts_rs::TS;

/// A parsed scan.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Scan {
    WorkOrder(String),
    /// Authorise rework of this device serial.
    Rework(String),
    Device(String),
}

/// What a scan did, for the operator.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, TS)]
#[serde(rename_all = "snake_case")]
#[ts(export, export_to = "../../../ui/src/bindings/")]
pub enum ScanKind {
    /// The work order was set.
    WorkOrder,
    /// A rework of the device serial was authorised.
    Rework,
    /// A device on the bench was selected.
    Device,
    /// No device on the bench carries this label.
    Unknown,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, TS)]
#[ts(export, export_to = "../../../ui/src/bindings/")]
pub struct ScanResult {
    pub kind: ScanKind,
    pub message: String,
    /// The port of the device scanned, when it is on the bench.
    pub port: Option<String>,
    /// The work order in effect after the scan.
    pub work_order: Option<String>,
}

/// Longest scan accepted (a label, not a document).
pub const MAX_SCAN: usize = 128;

/// Parse a scan. Case-insensitive prefixes; surrounding whitespace (a
/// scanner's Enter/Tab) is ignored; control characters are refused.
pub fn parse(code: &str) -> ApiResult<Scan> {
    let code = code.trim();
    if code.is_empty() {
        return Err(ApiError::bad_request("empty scan"));
    }
    if code.len() > MAX_SCAN {
        return Err(ApiError::bad_request(format!("a scan is at most {MAX_SCAN} characters; this one has {}", code.len())));
    }
    if code.chars().any(char::is_control) {
        return Err(ApiError::bad_request("the scan holds control characters: check the scanner's suffix settings"));
    }
    for prefix in ["WO:", "BATCH:"] {
        if let Some(order) = strip_prefix_ignore_case(code, prefix) {
            let order = order.trim();
            if order.is_empty() {
                return Err(ApiError::bad_request(format!("{prefix} with no work order after it")));
            }
            return Ok(Scan::WorkOrder(order.to_string()));
        }
    }
    if let Some(serial) = strip_prefix_ignore_case(code, "REWORK:") {
        let serial = serial.trim();
        if serial.is_empty() {
            return Err(ApiError::bad_request("REWORK: with no device serial after it"));
        }
        return Ok(Scan::Rework(serial.to_string()));
    }
    Ok(Scan::Device(code.to_string()))
}

/// `code` without `prefix`, compared ASCII case-insensitively.
fn strip_prefix_ignore_case<'a>(code: &'a str, prefix: &str) -> Option<&'a str> {
    (code.len() >= prefix.len() && code.is_char_boundary(prefix.len()) && code[..prefix.len()].eq_ignore_ascii_case(prefix))
        .then(|| &code[prefix.len()..])
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_scan_grammar() {
        let ok = |s: &str| parse(s).unwrap();
        assert_eq!(ok("WO:42"), Scan::WorkOrder("42".into()));
        assert_eq!(ok(" wo: WO-7 \r\n"), Scan::WorkOrder("WO-7".into()));
        assert_eq!(ok("batch:B1"), Scan::WorkOrder("B1".into()));
        assert_eq!(ok("SIM-0001"), Scan::Device("SIM-0001".into()));
        assert_eq!(ok("Wö"), Scan::Device("Wö".into()));
        assert_eq!(ok("ñ:x"), Scan::Device("ñ:x".into()));
        assert_eq!(ok("REWORK:RW-0001"), Scan::Rework("RW-0001".into()));
        assert_eq!(ok(" rework: RW-0001 \r\n"), Scan::Rework("RW-0001".into()));
        // Not the prefix: a device label.
        assert_eq!(ok("REWORKS:1"), Scan::Device("REWORKS:1".into()));
        assert_eq!(ok("RW-0001"), Scan::Device("RW-0001".into()));
        for bad in ["", "   ", "WO:", "WO:  ", "A\u{1b}B", "REWORK:", "rework:  "] {
            assert_eq!(parse(bad).unwrap_err().code, crate::ErrorCode::BadRequest, "{bad:?}");
        }
        assert!(parse(&"x".repeat(MAX_SCAN + 1)).is_err());
    }
}
