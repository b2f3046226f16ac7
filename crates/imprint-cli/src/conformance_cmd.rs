//! `imprint conformance`: the protocol conformance suite against the board
//! on a port (docs/conformance.md).

use crate::{json, out, Cli, CmdResult};
use clap::Args;
use imprint_api::conformance::{Broker, ConformanceRequest};
use imprint_api::ApiError;
use std::path::PathBuf;

#[derive(Args)]
pub struct ConformanceArgs {
    /// The port of the board under test.
    #[arg(long)]
    pub port: String,
    /// Link speed (8N1).
    #[arg(long, default_value_t = 115_200)]
    pub baud: u32,
    /// Also commit the LOCK on a blank board: PERMANENT, the board stays locked.
    #[arg(long)]
    pub lock: bool,
    /// Issue the test certificates from this CA certificate (PEM; with --issuer-key), e.g. one your broker trusts.
    #[arg(long, requires = "issuer_key")]
    pub issuer_cert: Option<PathBuf>,
    /// The key of --issuer-cert (PEM).
    #[arg(long, requires = "issuer_cert")]
    pub issuer_key: Option<PathBuf>,
    /// Check CONNECT against this MQTT broker (HOST:PORT, TLS; with --broker-ca).
    #[arg(long, requires = "broker_ca")]
    pub broker: Option<String>,
    /// The broker's server CA (PEM), written to the board as brokerca.
    #[arg(long)]
    pub broker_ca: Option<PathBuf>,
    /// The topic of the CONNECT round trip.
    #[arg(long, default_value = "imprint/conformance")]
    pub topic: String,
    /// Print the report as one JSON object: the board's state before and after, what changed, every check.
    #[arg(long)]
    pub json: bool,
}

/// Exit status: 0 every check passed (warnings and skips included), 1 a check failed.
pub fn conformance_cmd(_cli: &Cli, a: &ConformanceArgs) -> CmdResult {
    let broker = match (&a.broker, &a.broker_ca) {
        (Some(hp), Some(ca)) => {
            let (host, port) = hp.rsplit_once(':').ok_or_else(|| ApiError::bad_request("--broker takes HOST:PORT"))?;
            let port = port.parse().map_err(|_| ApiError::bad_request("--broker: the port is not a number 1..65535"))?;
            Some(Broker { host: host.to_string(), port, topic: a.topic.clone(), ca_pem: ca.clone() })
        }
        _ => None,
    };
    let req = ConformanceRequest {
        port: a.port.clone(),
        baud: a.baud,
        lock: a.lock,
        issuer: a.issuer_cert.clone().zip(a.issuer_key.clone()),
        broker,
    };
    let r = imprint_api::conformance::run(&req)?;
    if a.json {
        json(&r)?;
    } else {
        out(imprint_api::conformance::render(&r).trim_end())?;
    }
    Ok(if r.passed { 0 } else { 1 })
}
