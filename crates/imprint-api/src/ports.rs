//! Serial ports: list them with their USB identity, select them for a run,
//! and ask devices who they are (HELLO + IDENT, nothing written).

use imprint_station::StationConfig;
use serde::Serialize;

pub use imprint_serial::PortInfo;

/// Every port matching `globs` (and the OS's ports with `system`).
pub fn list(globs: &[String], system: bool) -> Vec<PortInfo> {
    imprint_serial::list_ports(globs, system)
}

/// The ports a run works on: those named, plus (with `all`) every port
/// matching the config's and the extra globs.
pub fn select(cfg: &StationConfig, named: &[String], all: bool, globs: &[String], system: bool) -> Vec<String> {
    let mut ports = named.to_vec();
    if all {
        let mut g = cfg.port_globs.clone();
        g.extend(globs.iter().cloned());
        for p in imprint_serial::list_ports(&g, system || cfg.system_ports) {
            if !ports.contains(&p.path) {
                ports.push(p.path);
            }
        }
    }
    ports
}

/// Who a device says it is.
#[derive(Clone, Debug, Serialize)]
pub struct DeviceIdent {
    pub serial: String,
    pub model: String,
    pub hw: String,
    pub fw: String,
    pub state: String,
}

#[derive(Clone, Debug, Serialize)]
pub struct Identified {
    pub port: String,
    #[serde(flatten)]
    pub result: IdentResult,
}

#[derive(Clone, Debug, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum IdentResult {
    Device(DeviceIdent),
    Error(String),
}

/// Identify the device on each port, one after another.
pub fn identify(ports: &[String], baud: u32) -> Vec<Identified> {
    ports
        .iter()
        .map(|p| Identified {
            port: p.clone(),
            result: match imprint_station::driver::identify(p, baud) {
                Ok(id) => IdentResult::Device(DeviceIdent {
                    serial: id.serial,
                    model: id.model,
                    hw: id.hw_rev,
                    fw: id.fw_version,
                    state: id.state.as_str().to_string(),
                }),
                Err(e) => IdentResult::Error(e),
            },
        })
        .collect()
}
