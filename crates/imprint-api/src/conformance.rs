//! `imprint conformance`: run the protocol conformance suite
//! (docs/conformance.md) against the board on a port. A bench tool for
//! firmware teams: it needs no station, no data dir and no sign-in, and it
//! changes a board only where docs/conformance.md says (a board that was
//! blank is RESET to blank at the end; `--lock` locks it for good).

use crate::{ApiError, ApiResult, ErrorCode};
use imprint_station::conformance::{self as suite, ConformanceError, ConformanceOptions, ConnectTarget, TestIssuer};
use std::path::PathBuf;

pub use imprint_station::conformance::{render, CheckId, CheckReport, CheckResult, ConformanceReport};

/// The broker CONNECT is checked against.
#[derive(Clone, Debug)]
pub struct Broker {
    pub host: String,
    pub port: u16,
    pub topic: String,
    /// The broker's server CA (PEM file), written to the board as `brokerca`.
    pub ca_pem: PathBuf,
}

/// What to run.
#[derive(Clone, Debug, Default)]
pub struct ConformanceRequest {
    pub port: String,
    /// Link speed (baud); 115200 when 0.
    pub baud: u32,
    /// Commit the LOCK on a blank board (permanent).
    pub lock: bool,
    /// Issue the test certificates from this CA (certificate PEM, key PEM),
    /// e.g. the one the broker trusts; a throwaway CA otherwise.
    pub issuer: Option<(PathBuf, PathBuf)>,
    pub broker: Option<Broker>,
}

fn read(path: &PathBuf) -> ApiResult<String> {
    std::fs::read_to_string(path).map_err(|e| ApiError::io(path.display(), e))
}

/// Run the suite on `req.port`; the report says which checks failed.
pub fn run(req: &ConformanceRequest) -> ApiResult<ConformanceReport> {
    let issuer = match &req.issuer {
        Some((cert, key)) => Some(TestIssuer { cert_pem: read(cert)?, key_pem: read(key)? }),
        None => None,
    };
    let connect = match &req.broker {
        Some(b) => Some(ConnectTarget { host: b.host.clone(), port: b.port, topic: b.topic.clone(), broker_ca_pem: read(&b.ca_pem)? }),
        None => None,
    };
    let opts = ConformanceOptions { baud: req.baud, allow_lock: req.lock, issuer, connect };
    suite::run_port(&req.port, &opts).map_err(|e| match e {
        ConformanceError::Port(p) => port_error(p),
        ConformanceError::Issuer(m) => ApiError::new(ErrorCode::BadRequest, format!("the test issuer: {m}")),
    })
}

fn port_error(e: imprint_serial::TransportError) -> ApiError {
    use imprint_serial::TransportError as T;
    let code = match &e {
        T::NotFound(_) => ErrorCode::NotFound,
        T::Busy(_) => ErrorCode::Busy,
        _ => ErrorCode::Io,
    };
    ApiError::new(code, e.to_string())
}
