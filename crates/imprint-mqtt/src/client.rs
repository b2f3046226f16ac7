//! Connect, round-trip, publish: one blocking connection at a time, over
//! rumqttc's synchronous client (MQTT 3.1.1 or 5), with deadlines.

use crate::config::{BrokerUrl, Protocol};
use crate::tls::TlsMaterial;
use crate::{random_hex, MqttError};
use std::time::{Duration, Instant};

/// How to reach the broker: address, protocol, TLS material (None: plain TCP).
#[derive(Clone, Debug)]
pub struct Endpoint {
    pub broker: BrokerUrl,
    pub protocol: Protocol,
    /// Required for `mqtts://`.
    pub tls: Option<TlsMaterial>,
    /// MQTT client id; empty: a random one.
    pub client_id: String,
    /// Deadline for connecting, and for each round trip after it.
    pub timeout: Duration,
}

impl Endpoint {
    /// The transport name for reports: `tcp`, `tls` or `mtls`.
    pub fn transport(&self) -> &'static str {
        match &self.tls {
            None => "tcp",
            Some(t) if t.client_key.is_some() && !t.client_chain.is_empty() => "mtls",
            Some(_) => "tls",
        }
    }

    /// The endpoint a [`crate::MqttConfig`] describes, reading its PEM files.
    pub fn from_config(cfg: &crate::MqttConfig, client_id: &str) -> Result<Endpoint, MqttError> {
        let broker = cfg.broker()?;
        let tls = if broker.tls {
            let ca = cfg.server_ca_path().ok_or_else(|| MqttError::Config("mqtts:// needs ca_bundle or server_ca".into()))?;
            let mut m = TlsMaterial { server_roots: crate::load_certs_pem(ca)?, ..Default::default() };
            if let (Some(c), Some(k)) = (&cfg.client_cert, &cfg.client_key) {
                m.client_chain = crate::load_certs_pem(c)?;
                m.client_key = Some(crate::load_key_pem(k)?);
            }
            Some(m)
        } else {
            None
        };
        Ok(Endpoint { broker, protocol: cfg.protocol, tls, client_id: client_id.into(), timeout: cfg.timeout() })
    }
}

/// A successful health check.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Report {
    pub broker: String,
    /// `tcp`, `tls` or `mtls`.
    pub transport: &'static str,
    pub protocol: Protocol,
    /// TCP + TLS + CONNECT/CONNACK.
    pub connect: Duration,
    /// PUBLISH (QoS 1) until the broker delivered it back to our subscription.
    pub round_trip: Duration,
}

/// What [`publish_qos1`] achieved: the number of leading payloads the broker
/// acknowledged (PUBACK), and the error that stopped it, if any.
#[derive(Debug)]
pub struct Published {
    pub acked: usize,
    pub error: Option<MqttError>,
}

/// Connect, subscribe to a fresh topic under `topic_prefix`, publish one
/// QoS 1 message to it, and wait for it to come back.
pub fn check(ep: &Endpoint, topic_prefix: &str) -> Result<Report, MqttError> {
    let id = if ep.client_id.is_empty() { format!("imprint-health-{}", random_hex(6)) } else { ep.client_id.clone() };
    let topic = format!("{}/{}", topic_prefix.trim_end_matches('/'), id);
    let t0 = Instant::now();
    let mut c = Conn::open(ep, &id)?;
    c.wait_for(ep.timeout, "CONNACK", |e| matches!(e, Ev::ConnAck).then_some(()))?;
    let connect = t0.elapsed();
    c.subscribe(&topic)?;
    c.wait_for(ep.timeout, "SUBACK", |e| match e {
        Ev::SubAck { ok: true } => Some(Ok(())),
        Ev::SubAck { ok: false } => Some(Err(MqttError::Refused(format!("subscription to {topic} not authorized")))),
        _ => None,
    })??;
    let probe = format!("imprint-probe-{}", random_hex(8));
    let t1 = Instant::now();
    c.publish(&topic, probe.as_bytes().to_vec())?;
    c.wait_for(ep.timeout, "the probe message", |e| match e {
        Ev::Publish { topic: t, payload } if *t == topic && payload.as_slice() == probe.as_bytes() => Some(()),
        _ => None,
    })?;
    let round_trip = t1.elapsed();
    c.close();
    tracing::debug!(broker = %ep.broker, transport = ep.transport(), ?connect, ?round_trip, "MQTT health check passed");
    Ok(Report { broker: ep.broker.to_string(), transport: ep.transport(), protocol: ep.protocol, connect, round_trip })
}

/// Publish `(topic, payload)` messages at QoS 1 over one connection, one at
/// a time, each only after the previous one's PUBACK. Stops at the first
/// failure; [`Published::acked`] says how many leading messages were acked.
pub fn publish_qos1(ep: &Endpoint, messages: &[(String, Vec<u8>)]) -> Published {
    let id = if ep.client_id.is_empty() { format!("imprint-pub-{}", random_hex(6)) } else { ep.client_id.clone() };
    let mut acked = 0;
    let run = |acked: &mut usize| -> Result<(), MqttError> {
        let mut c = Conn::open(ep, &id)?;
        c.wait_for(ep.timeout, "CONNACK", |e| matches!(e, Ev::ConnAck).then_some(()))?;
        for (topic, p) in messages {
            c.publish(topic, p.clone())?;
            let mut pkid = None;
            c.wait_for(ep.timeout, "PUBACK", |e| match e {
                Ev::OutPublish(id) => {
                    pkid = Some(*id);
                    None
                }
                Ev::PubAck { pkid: id, ok } if pkid.is_none_or(|p| p == *id) => {
                    Some(if *ok { Ok(()) } else { Err(MqttError::Refused(format!("publish to {topic} not authorized"))) })
                }
                _ => None,
            })??;
            *acked += 1;
        }
        c.close();
        Ok(())
    };
    let error = run(&mut acked).err();
    Published { acked, error }
}

/// Events of either protocol version, reduced to what we act on.
#[derive(Debug)]
enum Ev {
    ConnAck,
    SubAck { ok: bool },
    Publish { topic: String, payload: Vec<u8> },
    OutPublish(u16),
    PubAck { pkid: u16, ok: bool },
    Other,
}

/// One connection of either protocol version (short-lived, one at a time:
/// the size difference between the variants does not matter).
#[allow(clippy::large_enum_variant)]
enum Conn {
    V4(rumqttc::Client, rumqttc::Connection),
    V5(rumqttc::v5::Client, rumqttc::v5::Connection),
}

impl Conn {
    fn open(ep: &Endpoint, client_id: &str) -> Result<Conn, MqttError> {
        let tls = match (&ep.tls, ep.broker.tls) {
            (Some(m), true) => Some(rumqttc::TlsConfiguration::Rustls(m.client_config()?)),
            (None, true) => return Err(MqttError::Config("mqtts:// without TLS material".into())),
            _ => None,
        };
        let keep_alive = Duration::from_secs(30);
        Ok(match ep.protocol {
            Protocol::V311 => {
                let mut o = rumqttc::MqttOptions::new(client_id, ep.broker.host.clone(), ep.broker.port);
                o.set_keep_alive(keep_alive).set_clean_session(true);
                if let Some(t) = tls {
                    o.set_transport(rumqttc::Transport::tls_with_config(t));
                }
                let (c, conn) = rumqttc::Client::new(o, 16);
                Conn::V4(c, conn)
            }
            Protocol::V5 => {
                let mut o = rumqttc::v5::MqttOptions::new(client_id, ep.broker.host.clone(), ep.broker.port);
                o.set_keep_alive(keep_alive).set_clean_start(true);
                if let Some(t) = tls {
                    o.set_transport(rumqttc::Transport::tls_with_config(t));
                }
                let (c, conn) = rumqttc::v5::Client::new(o, 16);
                Conn::V5(c, conn)
            }
        })
    }

    /// The next event, `Ok(None)` when `timeout` passed without one.
    fn next(&mut self, timeout: Duration) -> Result<Option<Ev>, MqttError> {
        use rumqttc::v5::mqttbytes::v5 as p5;
        match self {
            Conn::V4(_, conn) => match conn.recv_timeout(timeout) {
                Err(_) => Ok(None),
                Ok(Err(e)) => Err(classify_v4(e)),
                Ok(Ok(ev)) => Ok(Some(match ev {
                    rumqttc::Event::Incoming(rumqttc::Packet::ConnAck(_)) => Ev::ConnAck,
                    rumqttc::Event::Incoming(rumqttc::Packet::SubAck(s)) => {
                        Ev::SubAck { ok: s.return_codes.iter().all(|c| matches!(c, rumqttc::SubscribeReasonCode::Success(_))) }
                    }
                    rumqttc::Event::Incoming(rumqttc::Packet::Publish(p)) => Ev::Publish { topic: p.topic, payload: p.payload.to_vec() },
                    rumqttc::Event::Incoming(rumqttc::Packet::PubAck(a)) => Ev::PubAck { pkid: a.pkid, ok: true },
                    rumqttc::Event::Outgoing(rumqttc::Outgoing::Publish(id)) => Ev::OutPublish(id),
                    _ => Ev::Other,
                })),
            },
            Conn::V5(_, conn) => match conn.recv_timeout(timeout) {
                Err(_) => Ok(None),
                Ok(Err(e)) => Err(classify_v5(e)),
                Ok(Ok(ev)) => Ok(Some(match ev {
                    rumqttc::v5::Event::Incoming(p5::Packet::ConnAck(_)) => Ev::ConnAck,
                    rumqttc::v5::Event::Incoming(p5::Packet::SubAck(s)) => {
                        Ev::SubAck { ok: s.return_codes.iter().all(|c| matches!(c, p5::SubscribeReasonCode::Success(_))) }
                    }
                    rumqttc::v5::Event::Incoming(p5::Packet::Publish(p)) => {
                        Ev::Publish { topic: String::from_utf8_lossy(&p.topic).into_owned(), payload: p.payload.to_vec() }
                    }
                    rumqttc::v5::Event::Incoming(p5::Packet::PubAck(a)) => Ev::PubAck {
                        pkid: a.pkid,
                        ok: matches!(a.reason, p5::PubAckReason::Success | p5::PubAckReason::NoMatchingSubscribers),
                    },
                    rumqttc::v5::Event::Outgoing(rumqttc::Outgoing::Publish(id)) => Ev::OutPublish(id),
                    _ => Ev::Other,
                })),
            },
        }
    }

    /// Read events until `pick` accepts one, or fail at the deadline.
    fn wait_for<T>(&mut self, timeout: Duration, what: &str, mut pick: impl FnMut(&Ev) -> Option<T>) -> Result<T, MqttError> {
        let deadline = Instant::now() + timeout;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return Err(MqttError::Timeout(format!("no {what} within {} ms", timeout.as_millis())));
            }
            match self.next(left)? {
                None => return Err(MqttError::Timeout(format!("no {what} within {} ms", timeout.as_millis()))),
                Some(ev) => {
                    if let Some(v) = pick(&ev) {
                        return Ok(v);
                    }
                }
            }
        }
    }

    fn subscribe(&self, topic: &str) -> Result<(), MqttError> {
        let r = match self {
            Conn::V4(c, _) => c.subscribe(topic, rumqttc::QoS::AtLeastOnce).map_err(|e| e.to_string()),
            Conn::V5(c, _) => c.subscribe(topic, rumqttc::v5::mqttbytes::QoS::AtLeastOnce).map_err(|e| e.to_string()),
        };
        r.map_err(|e| MqttError::Other(format!("subscribe: {e}")))
    }

    fn publish(&self, topic: &str, payload: Vec<u8>) -> Result<(), MqttError> {
        let r = match self {
            Conn::V4(c, _) => c.publish(topic, rumqttc::QoS::AtLeastOnce, false, payload).map_err(|e| e.to_string()),
            Conn::V5(c, _) => c.publish(topic, rumqttc::v5::mqttbytes::QoS::AtLeastOnce, false, payload).map_err(|e| e.to_string()),
        };
        r.map_err(|e| MqttError::Other(format!("publish: {e}")))
    }

    /// Send DISCONNECT and give the event loop a moment to flush it.
    fn close(mut self) {
        let _ = match &self {
            Conn::V4(c, _) => c.disconnect().map_err(|e| e.to_string()),
            Conn::V5(c, _) => c.disconnect().map_err(|e| e.to_string()),
        };
        let deadline = Instant::now() + Duration::from_millis(500);
        while Instant::now() < deadline {
            match self.next(Duration::from_millis(100)) {
                Ok(Some(_)) => continue,
                _ => break,
            }
        }
    }
}

fn classify_v4(e: rumqttc::ConnectionError) -> MqttError {
    use rumqttc::ConnectionError as E;
    match e {
        E::Io(io) => classify_io(&io),
        E::Tls(t) => classify_tls(t),
        E::ConnectionRefused(code) => MqttError::Refused(format!("CONNACK {code:?}")),
        E::NetworkTimeout | E::FlushTimeout => MqttError::Timeout(e.to_string()),
        E::MqttState(rumqttc::StateError::Io(io)) => classify_io(&io),
        E::MqttState(rumqttc::StateError::ConnectionAborted) => closed_by_peer(),
        E::MqttState(rumqttc::StateError::Deserialization(rumqttc::mqttbytes::Error::Io(io))) => classify_io(&io),
        other => MqttError::Other(other.to_string()),
    }
}

fn classify_v5(e: rumqttc::v5::ConnectionError) -> MqttError {
    use rumqttc::v5::ConnectionError as E;
    match e {
        E::Io(io) => classify_io(&io),
        E::Tls(t) => classify_tls(t),
        E::ConnectionRefused(code) => MqttError::Refused(format!("CONNACK {code:?}")),
        E::Timeout(_) => MqttError::Timeout(e.to_string()),
        E::MqttState(rumqttc::v5::StateError::Io(io)) => classify_io(&io),
        E::MqttState(rumqttc::v5::StateError::ConnectionAborted) => closed_by_peer(),
        E::MqttState(rumqttc::v5::StateError::Deserialization(rumqttc::v5::mqttbytes::Error::Io(io))) => classify_io(&io),
        other => MqttError::Other(other.to_string()),
    }
}

fn closed_by_peer() -> MqttError {
    MqttError::Refused("the broker closed the connection (with mTLS this is how a refused client certificate often shows)".into())
}

fn classify_tls(e: rumqttc::TlsError) -> MqttError {
    match e {
        rumqttc::TlsError::Io(io) => classify_io(&io),
        rumqttc::TlsError::TLS(r) => classify_rustls(&r),
        other => MqttError::Config(format!("TLS: {other}")),
    }
}

fn classify_io(io: &std::io::Error) -> MqttError {
    use std::io::ErrorKind as K;
    if let Some(r) = io.get_ref().and_then(|i| i.downcast_ref::<rustls::Error>()) {
        return classify_rustls(r);
    }
    match io.kind() {
        K::ConnectionRefused | K::NotFound | K::AddrNotAvailable | K::HostUnreachable | K::NetworkUnreachable => {
            MqttError::Unreachable(io.to_string())
        }
        K::TimedOut => MqttError::Timeout(io.to_string()),
        K::ConnectionReset | K::ConnectionAborted | K::UnexpectedEof | K::BrokenPipe => closed_by_peer(),
        _ => MqttError::Other(io.to_string()),
    }
}

fn classify_rustls(r: &rustls::Error) -> MqttError {
    use rustls::AlertDescription as A;
    match r {
        rustls::Error::InvalidCertificate(c) => MqttError::TlsVerification(format!("the broker's certificate: {c:?}")),
        rustls::Error::AlertReceived(
            a @ (A::BadCertificate
            | A::UnknownCA
            | A::CertificateExpired
            | A::CertificateRevoked
            | A::CertificateUnknown
            | A::UnsupportedCertificate
            | A::DecryptError
            | A::AccessDenied
            | A::HandshakeFailure
            | A::CertificateRequired),
        ) => MqttError::Refused(format!("the broker rejected the client certificate (TLS alert {a:?})")),
        other => MqttError::Other(format!("TLS: {other}")),
    }
}
