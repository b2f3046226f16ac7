//! Cloud registration files for the devices a report covers: AWS IoT Core
//! bulk registration, Azure IoT Hub DPS individual enrollments, nRF Cloud
//! device onboarding. Only devices with a passed attempt and a current
//! certificate (issued, not revoked, not superseded by a newer one of the
//! same device) are written; each function returns the file's text.
//!
//! Shapes, as the vendors document them (see docs/reports.md):
//! - AWS `start-thing-registration-task`: a newline-delimited JSON file, one
//!   object of template parameter values per device, and a provisioning
//!   template (`Parameters` + `Resources`: `AWS::IoT::Thing`,
//!   `AWS::IoT::Certificate` with `CertificatePem` + `CACertificatePem`,
//!   optionally an existing `AWS::IoT::Policy` by name).
//! - Azure DPS: the body of the service API's bulk enrollment operation
//!   (`{"mode": "create", "enrollments": [IndividualEnrollment...]}`), each with
//!   `attestation.type = "x509"` and the client certificate as base64 DER under
//!   `x509.clientCertificates.primary.certificate`; `registrationId` is the
//!   certificate's subject CN (the device serial).
//! - nRF Cloud `OnboardDevices`: CSV without a header, one row per device:
//!   `deviceId,subType,tags,fwTypes,"<certificate PEM>"`, tags and firmware
//!   types separated by `|`.

use crate::reports::{superseded, ReportFilter, ReportRow, Source};
use crate::{Actor, ApiError, ApiResult};
use serde_json::json;

/// The rows a cloud may register: passed, certificate issued (not revoked),
/// the device's newest certificate in the report, one row per certificate.
pub fn registrable(rows: &[ReportRow]) -> Vec<&ReportRow> {
    let old = superseded(rows);
    let mut seen = std::collections::BTreeSet::new();
    rows.iter()
        .filter(|r| r.status == "passed" && r.cert_status.as_deref() == Some("issued") && r.cert_der.is_some())
        .filter(|r| match (&r.issuer, &r.cert_serial) {
            (Some(i), Some(c)) => !old.contains(&(i.clone(), c.clone())) && seen.insert((i.clone(), c.clone())),
            _ => false,
        })
        .collect()
}

/// Every row of the filter with its certificate (DER), from either source.
pub fn rows_with_certificates(actor: &Actor, source: &Source<'_>, filter: &ReportFilter) -> ApiResult<Vec<ReportRow>> {
    let mut q = filter.query(time::OffsetDateTime::now_utc())?;
    q.with_der = true;
    crate::reports::rows(actor, source, &q)
}

fn pem_of(der: &[u8]) -> String {
    pem::encode_config(&pem::Pem::new("CERTIFICATE", der.to_vec()), pem::EncodeConfig::new().set_line_ending(pem::LineEnding::LF))
}

fn device_id(r: &ReportRow) -> ApiResult<&str> {
    r.device_serial.as_deref().ok_or_else(|| ApiError::internal(format!("attempt {} has a certificate but no device serial", r.attempt_id)))
}

/// The issuing CA's certificate (PEM) from a chain file's text: its first certificate.
pub fn issuing_ca_pem(chain_pem: &str) -> ApiResult<String> {
    let certs = pem::parse_many(chain_pem).map_err(|e| ApiError::bad_request(format!("the CA chain is not PEM: {e}")))?;
    let first =
        certs.into_iter().find(|p| p.tag() == "CERTIFICATE").ok_or_else(|| ApiError::bad_request("the CA chain holds no certificate"))?;
    Ok(pem_of(first.contents()))
}

/// AWS bulk registration: (the parameter file: JSON lines, the provisioning template).
pub fn aws(rows: &[ReportRow], ca_pem: &str, policy: Option<&str>) -> ApiResult<(String, String)> {
    let mut lines = String::new();
    for r in registrable(rows) {
        let id = device_id(r)?;
        let der = r.cert_der.as_deref().unwrap_or_default();
        let line = json!({
            "ThingName": id,
            "SerialNumber": id,
            "CertificatePem": pem_of(der),
            "CACertificatePem": ca_pem,
        });
        lines.push_str(&line.to_string());
        lines.push('\n');
    }
    let mut resources = json!({
        "thing": {
            "Type": "AWS::IoT::Thing",
            "Properties": {
                "ThingName": {"Ref": "ThingName"},
                "AttributePayload": {"version": "v1", "serialNumber": {"Ref": "SerialNumber"}}
            }
        },
        "certificate": {
            "Type": "AWS::IoT::Certificate",
            "Properties": {
                "CertificatePem": {"Ref": "CertificatePem"},
                "CACertificatePem": {"Ref": "CACertificatePem"},
                "Status": "ACTIVE"
            }
        }
    });
    if let Some(p) = policy {
        resources["policy"] = json!({"Type": "AWS::IoT::Policy", "Properties": {"PolicyName": p}});
    }
    let template = json!({
        "Parameters": {
            "ThingName": {"Type": "String"},
            "SerialNumber": {"Type": "String"},
            "CertificatePem": {"Type": "String"},
            "CACertificatePem": {"Type": "String"}
        },
        "Resources": resources
    });
    let template = serde_json::to_string_pretty(&template).map_err(|e| ApiError::internal(e.to_string()))?;
    Ok((lines, template))
}

/// Azure DPS: the bulk enrollment operation's body (create), one individual
/// enrollment per device with its X.509 client certificate.
pub fn azure(rows: &[ReportRow]) -> ApiResult<String> {
    use base64::Engine as _;
    let mut enrollments = Vec::new();
    for r in registrable(rows) {
        let id = device_id(r)?;
        let der = r.cert_der.as_deref().unwrap_or_default();
        let mut e = json!({
            "registrationId": id,
            "deviceId": id,
            "attestation": {
                "type": "x509",
                "x509": {"clientCertificates": {"primary": {"certificate": base64::engine::general_purpose::STANDARD.encode(der)}}}
            },
            "provisioningStatus": "enabled"
        });
        if let Some(b) = &r.batch {
            e["initialTwin"] = json!({"tags": {"workOrder": b}});
        }
        enrollments.push(e);
    }
    serde_json::to_string_pretty(&json!({"mode": "create", "enrollments": enrollments})).map_err(|e| ApiError::internal(e.to_string()))
}

/// Firmware types nRF Cloud takes for FOTA.
pub const NRF_FW_TYPES: &[&str] = &["APP", "MODEM", "BOOT", "SOFTDEVICE", "BOOTLOADER"];

/// nRF Cloud onboarding CSV (no header): device id, subtype, tags, firmware
/// types, certificate PEM. Tags: the work order, when it is a valid tag.
pub fn nrf(rows: &[ReportRow], sub_type: &str, fw_types: &[String]) -> ApiResult<String> {
    for f in fw_types {
        if !NRF_FW_TYPES.contains(&f.as_str()) {
            return Err(ApiError::bad_request(format!("firmware type {f:?} is not one of: {}", NRF_FW_TYPES.join(", "))));
        }
    }
    let tag_ok = |t: &str| !t.is_empty() && t.chars().all(|c| c.is_ascii_alphanumeric() || "_.@:#-".contains(c));
    let io = |e: csv::Error| ApiError::io("writing the nRF Cloud CSV", e);
    let mut out = csv::WriterBuilder::new().has_headers(false).from_writer(Vec::new());
    for r in registrable(rows) {
        let id = device_id(r)?;
        let tags = r.batch.as_deref().filter(|b| tag_ok(b)).unwrap_or_default();
        let der = r.cert_der.as_deref().unwrap_or_default();
        out.write_record([id, sub_type, tags, &fw_types.join("|"), &pem_of(der)]).map_err(io)?;
    }
    let bytes = out.into_inner().map_err(|e| ApiError::io("writing the nRF Cloud CSV", e.error()))?;
    String::from_utf8(bytes).map_err(|e| ApiError::internal(e.to_string()))
}

/// Which cloud's files to write, with what each needs.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum CloudKind {
    /// AWS IoT Core bulk registration; the CA chain file gives `CACertificatePem`.
    Aws { ca_chain: std::path::PathBuf, policy: Option<String> },
    /// Azure IoT Hub DPS individual enrollments (X.509).
    Azure,
    /// nRF Cloud device onboarding CSV.
    Nrf { sub_type: String, fw_types: Vec<String> },
}

/// What an export wrote.
#[derive(Clone, Debug, serde::Serialize)]
pub struct CloudExport {
    /// Devices written.
    pub devices: usize,
    /// Rows of the filter left out (not passed, no current certificate, revoked, superseded).
    pub left_out: usize,
    pub files: Vec<std::path::PathBuf>,
}

fn write_private(path: &std::path::Path, text: &str) -> ApiResult<()> {
    use std::io::Write as _;
    let mut f = crate::reports::create_export_file(path)?;
    f.write_all(text.as_bytes()).and_then(|_| f.flush()).map_err(|e| ApiError::io(path.display(), e))
}

/// Write a cloud's registration files for a filter's devices into `dir` (files 0600).
pub fn export(
    actor: &Actor,
    source: &Source<'_>,
    filter: &ReportFilter,
    kind: &CloudKind,
    dir: &std::path::Path,
) -> ApiResult<CloudExport> {
    let rows = rows_with_certificates(actor, source, filter)?;
    let devices = registrable(&rows).len();
    let mut files = Vec::new();
    let mut put = |name: &str, text: &str| -> ApiResult<()> {
        let p = dir.join(name);
        write_private(&p, text)?;
        files.push(p);
        Ok(())
    };
    let format = match kind {
        CloudKind::Aws { ca_chain, policy } => {
            let chain = std::fs::read_to_string(ca_chain).map_err(|e| ApiError::io(ca_chain.display(), e))?;
            let (lines, template) = aws(&rows, &issuing_ca_pem(&chain)?, policy.as_deref())?;
            put("aws-bulk-registration.jsonl", &lines)?;
            put("aws-provisioning-template.json", &template)?;
            "aws"
        }
        CloudKind::Azure => {
            put("azure-dps-enrollments.json", &azure(&rows)?)?;
            "azure"
        }
        CloudKind::Nrf { sub_type, fw_types } => {
            put("nrf-cloud-onboarding.csv", &nrf(&rows, sub_type, fw_types)?)?;
            "nrf"
        }
    };
    if let Source::Local { store, .. } = source {
        crate::audit::record(store, Some(actor.id()), crate::audit::AuditKind::Export, None, json!({"format": format, "rows": devices}));
    }
    Ok(CloudExport { devices, left_out: rows.len() - devices, files })
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::Value;

    fn cert_der() -> Vec<u8> {
        let key = rcgen::KeyPair::generate().unwrap();
        let mut p = rcgen::CertificateParams::new(vec![]).unwrap();
        p.distinguished_name.push(rcgen::DnType::CommonName, "SN-1");
        p.self_signed(&key).unwrap().der().to_vec()
    }

    fn row(serial: &str, cert: &str, status: &str, at: &str) -> ReportRow {
        ReportRow {
            station_id: "st".into(),
            attempt_id: format!("{serial}{cert}"),
            started_at: format!("2026-11-30T{at}:00:00.000Z"),
            status: "passed".into(),
            device_serial: Some(serial.into()),
            batch: Some("WO-7".into()),
            cert_serial: Some(cert.into()),
            cert_status: Some(status.into()),
            issuer: Some("CN=CA".into()),
            cert_der: Some(cert_der()),
            ..Default::default()
        }
    }

    fn rows() -> Vec<ReportRow> {
        vec![
            row("SN-1", "02", "issued", "09"),
            row("SN-1", "01", "issued", "08"), // superseded by 02
            row("SN-2", "03", "revoked", "08"),
            row("SN-3", "04", "issued", "08"),
        ]
    }

    const CA: &str = "-----BEGIN CERTIFICATE-----\nMIIB\n-----END CERTIFICATE-----\n";

    #[test]
    fn aws_lines_have_the_template_parameters_and_leave_out_revoked_and_superseded() {
        let (lines, template) = aws(&rows(), CA, Some("DevicePolicy")).unwrap();
        let t: Value = serde_json::from_str(&template).unwrap();
        let params: Vec<&String> = t["Parameters"].as_object().unwrap().keys().collect();
        let lines: Vec<Value> = lines.lines().map(|l| serde_json::from_str(l).unwrap()).collect();
        assert_eq!(lines.len(), 2);
        assert_eq!(lines.iter().map(|l| l["ThingName"].as_str().unwrap()).collect::<Vec<_>>(), ["SN-1", "SN-3"]);
        for l in &lines {
            let keys: Vec<&String> = l.as_object().unwrap().keys().collect();
            assert_eq!(keys, params, "every line gives exactly the template's parameters");
            assert!(l["CertificatePem"].as_str().unwrap().starts_with("-----BEGIN CERTIFICATE-----\n"));
        }
        assert_eq!(t["Resources"]["certificate"]["Type"], "AWS::IoT::Certificate");
        assert_eq!(t["Resources"]["certificate"]["Properties"]["Status"], "ACTIVE");
        assert_eq!(t["Resources"]["thing"]["Type"], "AWS::IoT::Thing");
        assert_eq!(t["Resources"]["policy"]["Properties"]["PolicyName"], "DevicePolicy");
        assert!(template.len() <= 10_240, "the template fits StartThingRegistrationTask's limit");
    }

    #[test]
    fn azure_enrollments_are_x509_with_the_certificate_as_base64_der() {
        use base64::Engine as _;
        let body: Value = serde_json::from_str(&azure(&rows()).unwrap()).unwrap();
        assert_eq!(body["mode"], "create");
        let e = body["enrollments"].as_array().unwrap();
        assert_eq!(e.len(), 2);
        assert_eq!(e[0]["registrationId"], "SN-1");
        assert_eq!(e[0]["attestation"]["type"], "x509");
        let b64 = e[0]["attestation"]["x509"]["clientCertificates"]["primary"]["certificate"].as_str().unwrap();
        let der = base64::engine::general_purpose::STANDARD.decode(b64).unwrap();
        assert!(x509_parser::parse_x509_certificate(&der).is_ok());
        assert_eq!(e[0]["provisioningStatus"], "enabled");
        assert_eq!(e[0]["initialTwin"]["tags"]["workOrder"], "WO-7");
    }

    #[test]
    fn nrf_rows_have_five_fields_pipe_separated_types_and_a_quoted_pem() {
        let text = nrf(&rows(), "", &["APP".into(), "MODEM".into()]).unwrap();
        let mut rdr = csv::ReaderBuilder::new().has_headers(false).from_reader(text.as_bytes());
        let recs: Vec<csv::StringRecord> = rdr.records().map(|r| r.unwrap()).collect();
        assert_eq!(recs.len(), 2);
        for r in &recs {
            assert_eq!(r.len(), 5);
            assert_eq!(&r[3], "APP|MODEM");
            assert_eq!(&r[2], "WO-7");
            assert!(r[4].starts_with("-----BEGIN CERTIFICATE-----\n") && r[4].ends_with("-----END CERTIFICATE-----\n"));
        }
        assert!(text.contains(",\"-----BEGIN CERTIFICATE-----\n"), "the PEM is quoted: {text}");
        assert!(nrf(&rows(), "", &["FIRMWARE".into()]).is_err());
    }
}
