//! Print the wire transcript of one happy-path provisioning session: the
//! real host session (imprint_proto::Session) against a simulated device,
//! with a throwaway CA. docs/protocol.md section 8 was produced with it.
//!
//! ```text
//! cargo run -p imprint-devsim --example transcript
//! ```

use imprint_devsim::{Device, SimConfig};
use imprint_proto::codec::{crc16, Decoded, Decoder, Direction};
use imprint_proto::session::{Action, Input, IssuedChain, Session, SessionConfig};
use rcgen::{BasicConstraints, CertificateParams, CertifiedIssuer, DnType, IsCa, KeyPair};

fn main() -> Result<(), Box<dyn std::error::Error>> {
    println!("# CRC-16/CCITT-FALSE check value: {:04X}", crc16(b"123456789"));
    let covered = "@> 1 HELLO proto=1 ";
    println!("# CRC of {covered:?}: {:04X}", crc16(covered.as_bytes()));

    let mut rp = CertificateParams::new(Vec::<String>::new())?;
    rp.distinguished_name.push(DnType::CommonName, "Example Root");
    rp.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    let root = CertifiedIssuer::self_signed(rp, KeyPair::generate()?)?;

    let mut dev = Device::new(&SimConfig::new("SIM-0001"));
    let mut cfg = SessionConfig::new(
        (0x10..0x20).collect(), // CSR nonce, 16 bytes
        (0x20..0x30).collect(), // PoP nonce, 16 bytes
    );
    cfg.first_rid = 1;
    let mut s = Session::new(cfg);
    let mut dev_dec = Decoder::new(Direction::Request);
    let mut host_dec = Decoder::new(Direction::Response);
    let mut action = s.start();
    loop {
        action = match action {
            Action::Send { frame, timeout_ms } => {
                let line = frame.encode();
                print!("{}", String::from_utf8_lossy(&line));
                println!("#   (deadline {timeout_ms} ms)");
                let mut input = Input::Timeout;
                for d in dev_dec.feed(&line) {
                    if let Decoded::Frame(req) = d {
                        let wire = dev.handle(&req).wire();
                        print!("{}", String::from_utf8_lossy(&wire));
                        for d in host_dec.feed(&wire) {
                            if let Decoded::Frame(f) = d {
                                input = Input::Frame(f);
                            }
                        }
                    }
                }
                s.handle(input)
            }
            Action::KeepWaiting => s.handle(Input::Timeout),
            Action::Wait { .. } => s.handle(Input::Waited),
            Action::Lookup { .. } => {
                println!("# host: no certificate on record for this serial and key");
                s.handle(Input::Lookup(Ok(None)))
            }
            Action::Issue { identity, keygen_spki_der, .. } => {
                println!("# host: CSR checked, certificate issued");
                let mut p = CertificateParams::new(Vec::<String>::new())?;
                p.distinguished_name.push(DnType::CommonName, identity.serial.as_str());
                let pk = rcgen::SubjectPublicKeyInfo::from_der(&keygen_spki_der)?;
                let cert = p.signed_by(&pk, &root)?;
                s.handle(Input::Issued(Ok(IssuedChain {
                    cert_der: cert.der().to_vec(),
                    chain_der: root.der().to_vec(),
                    serial_hex: "01".into(),
                    resumed: false,
                })))
            }
            Action::Write { what, .. } => return Err(format!("the native session wrote raw bytes ({what})").into()),
            Action::CheckProof { .. } => {
                println!("# host: proof of possession verified");
                s.handle(Input::ProofChecked(Ok(())))
            }
            Action::Finish(outcome) => {
                println!("# outcome: {outcome:?}");
                return Ok(());
            }
        }
    }
}
