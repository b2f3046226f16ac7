//! The AWS KMS backend: a CA key that lives in AWS KMS (or any server that
//! speaks its API, such as `moto_server` in the tests), through the official
//! AWS SDK for Rust and its standard credential chain (environment, profile,
//! SSO, credential process, web identity, ECS/EC2 instance roles).
//!
//! URI: `awskms:key-id=<id, ARN or alias/name>[;region=<r>][;endpoint=<url>]
//! [;profile=<p>][;rps=<n>][;timeout-ms=<n>][;retries=<n>]`. The region comes
//! from the URI, else from a key ARN, else from the SDK's region chain
//! (`AWS_REGION`, the profile). Credentials never go in the URI: an attribute
//! that looks like one is refused without being echoed.
//!
//! The [`Signer`] trait is synchronous and the station calls it from its one
//! signer thread, so [`KmsSigner`] owns a current-thread tokio runtime and
//! blocks on it inside `sign`; it refuses to run inside another runtime
//! rather than panic. Every request (Sign, GetPublicKey, DescribeKey) goes
//! through one client-side rate limiter (`rps`), has its own deadline
//! (`timeout-ms`) and is retried with capped exponential backoff and full
//! jitter on throttling and transient failures (`retries`). The SDK's own
//! retries are off so every attempt is paced and counted here. Once a call
//! has failed for a transient cause the signer is "degraded": later calls make
//! a single attempt until one succeeds, so a station with KMS down does not
//! spend the whole retry budget on every device.
//!
//! Messages up to 4096 bytes (every TBS certificate we build) are signed as
//! `MessageType=RAW`, which AWS KMS and moto both accept; longer (and empty)
//! messages are hashed here and signed as `DIGEST`. KMS returns a DER
//! ECDSA-Sig-Value, which is what X.509 carries.
//!
//! The public key is fetched once (GetPublicKey has a low request quota) and
//! cached for the signer's life; the station compares it with the CA
//! certificate at start-up (`imprint_core::ca::check_ca_matches_signer`).

use std::future::Future;
use std::time::{Duration, Instant};

use aws_config::retry::RetryConfig;
use aws_config::timeout::TimeoutConfig;
use aws_config::{BehaviorVersion, Region};
use aws_sdk_kms::error::{ProvideErrorMetadata, SdkError};
use aws_sdk_kms::primitives::Blob;
use aws_sdk_kms::types::{KeySpec, KeyState, KeyUsageType, MessageType, SigningAlgorithmSpec};
use aws_sdk_kms::Client;
use imprint_core::signer::{SigAlg, Signer, SignerError, SignerInfo};
use ring::rand::{SecureRandom, SystemRandom};

/// Largest message AWS KMS signs as `MessageType=RAW`.
pub const RAW_MESSAGE_MAX: usize = 4096;
/// Default client-side request rate. AWS's ECC Sign quota is a few hundred
/// requests/s shared by the account and region; a 16-port station needs
/// ~40/s at most (about 0.4 s per device).
pub const DEFAULT_RPS: f64 = 50.0;
/// Default deadline of one request attempt.
pub const DEFAULT_TIMEOUT_MS: u64 = 3000;
/// Default number of retries after a throttled or transient failure.
pub const DEFAULT_RETRIES: u32 = 3;
/// First backoff step; doubled per retry, capped at [`BACKOFF_CAP`], full jitter.
const BACKOFF_BASE: Duration = Duration::from_millis(100);
const BACKOFF_CAP: Duration = Duration::from_secs(2);

/// True when a message of `len` bytes is hashed here and sent as
/// `MessageType=DIGEST` (KMS takes RAW messages of 1..=4096 bytes).
pub fn sends_digest(len: usize) -> bool {
    len == 0 || len > RAW_MESSAGE_MAX
}

/// A parsed `awskms:` URI. Holds no secret: credentials come from the AWS
/// credential chain, never from the URI.
#[derive(Clone, Debug, PartialEq)]
pub struct KmsUri {
    /// Key id, key ARN, alias name (`alias/...`) or alias ARN. `None` only
    /// when creating a key.
    pub key_id: Option<String>,
    pub region: Option<String>,
    /// Endpoint override (`https://...`, or `http://` on loopback only).
    pub endpoint: Option<String>,
    /// Named profile of the shared AWS config files.
    pub profile: Option<String>,
    /// Client-side limit on requests per second (all KMS calls together).
    pub rps: f64,
    /// Deadline of one request attempt.
    pub timeout: Duration,
    /// Retries after throttling or a transient failure.
    pub retries: u32,
}

fn bad(msg: impl Into<String>) -> SignerError {
    SignerError::BadUri(msg.into())
}

/// Attribute names that would carry a credential: refused, value not echoed.
/// The shared rule ([`imprint_core::secrets::secret_word`]: decoded, case-
/// and separator-insensitive), plus anything naming a token or a PIN: no
/// `awskms:` attribute legitimately does.
pub(crate) fn looks_secret(name: &str) -> bool {
    let decoded = percent_encoding::percent_decode_str(name).decode_utf8_lossy();
    let n = decoded.to_ascii_lowercase().replace('_', "-");
    imprint_core::secrets::is_secret_name(&decoded) || ["token", "credential", "pin"].iter().any(|w| n.contains(w))
}

const CREDENTIALS_REFUSED: &str = "awskms: credentials never go in the signer URI; use the AWS credential chain \
     (environment, ~/.aws profiles, SSO, instance role)";

const ATTRS: &str = "key-id, region, endpoint, profile, rps, timeout-ms, retries";

impl KmsUri {
    /// Parse `awskms:...`; `key-id` is required unless `need_key` is false
    /// (creating a key). Errors name attributes, never their values.
    pub fn parse(uri: &str, need_key: bool) -> Result<Self, SignerError> {
        let rest = uri.strip_prefix("awskms:").ok_or_else(|| bad("an AWS KMS signer URI starts with awskms:"))?;
        let mut out = KmsUri {
            key_id: None,
            region: None,
            endpoint: None,
            profile: None,
            rps: DEFAULT_RPS,
            timeout: Duration::from_millis(DEFAULT_TIMEOUT_MS),
            retries: DEFAULT_RETRIES,
        };
        let mut seen = Vec::new();
        // Names first, all of them: a credential anywhere refuses the URI
        // before any value is looked at. `?`/`&` separate nothing here, but a
        // pkcs11-style `?secret=` must not slip through inside a value.
        let parts: Vec<&str> = rest.split(';').filter(|p| !p.trim().is_empty()).collect();
        for part in &parts {
            let names = part.split(['?', '&']).map(|a| a.split(['=', ':', ' ']).next().unwrap_or_default());
            if names.into_iter().any(looks_secret) {
                return Err(bad(CREDENTIALS_REFUSED));
            }
        }
        for (i, part) in parts.into_iter().enumerate() {
            let Some((name, value)) = part.split_once('=') else {
                // Never echoed: a malformed attribute may be a value.
                return Err(bad(format!(
                    "awskms: attribute #{} has no value; expected name=value pairs separated by ';' ({ATTRS})",
                    i + 1
                )));
            };
            let name = name.trim();
            if seen.contains(&name.to_string()) {
                return Err(bad(format!("awskms: attribute {name} appears twice")));
            }
            seen.push(name.to_string());
            let value = value.trim();
            if value.is_empty() {
                return Err(bad(format!("awskms: {name}= is empty")));
            }
            if value.contains(['?', '&', ' ']) {
                return Err(bad(format!("awskms: {name}= contains '?', '&' or a space; attributes are separated by ';'")));
            }
            match name {
                "key-id" => out.key_id = Some(value.to_string()),
                "region" => {
                    if !value.chars().all(|c| c.is_ascii_alphanumeric() || c == '-') {
                        return Err(bad("awskms: region= must look like eu-central-1"));
                    }
                    out.region = Some(value.to_string())
                }
                "endpoint" => out.endpoint = Some(check_endpoint(value)?),
                "profile" => out.profile = Some(value.to_string()),
                "rps" => {
                    let n: f64 = value.parse().map_err(|_| bad("awskms: rps= must be a number of requests per second"))?;
                    if !(n.is_finite() && n > 0.0 && n <= 10_000.0) {
                        return Err(bad("awskms: rps= must be above 0 and at most 10000"));
                    }
                    out.rps = n;
                }
                "timeout-ms" => {
                    let n: u64 = value.parse().map_err(|_| bad("awskms: timeout-ms= must be a whole number of milliseconds"))?;
                    if !(10..=600_000).contains(&n) {
                        return Err(bad("awskms: timeout-ms= must be between 10 and 600000"));
                    }
                    out.timeout = Duration::from_millis(n);
                }
                "retries" => {
                    let n: u32 = value.parse().map_err(|_| bad("awskms: retries= must be a whole number"))?;
                    if n > 10 {
                        return Err(bad("awskms: retries= must be at most 10"));
                    }
                    out.retries = n;
                }
                other => return Err(bad(format!("awskms: unknown attribute {other:?}; known: {ATTRS}"))),
            }
        }
        if need_key && out.key_id.is_none() {
            return Err(bad("awskms: key-id= is required (a key id, key ARN or alias/name), \
                 e.g. awskms:key-id=alias/imprint-ca;region=eu-central-1"));
        }
        if out.region.is_none() {
            out.region = out.key_id.as_deref().and_then(region_of_arn);
        }
        Ok(out)
    }

    /// The URI with every attribute in a fixed order (nothing secret to hide).
    pub fn to_uri(&self) -> String {
        let mut parts = Vec::new();
        if let Some(k) = &self.key_id {
            parts.push(format!("key-id={k}"));
        }
        if let Some(r) = &self.region {
            parts.push(format!("region={r}"));
        }
        if let Some(e) = &self.endpoint {
            parts.push(format!("endpoint={e}"));
        }
        if let Some(p) = &self.profile {
            parts.push(format!("profile={p}"));
        }
        if self.rps != DEFAULT_RPS {
            parts.push(format!("rps={}", self.rps));
        }
        if self.timeout != Duration::from_millis(DEFAULT_TIMEOUT_MS) {
            parts.push(format!("timeout-ms={}", self.timeout.as_millis()));
        }
        if self.retries != DEFAULT_RETRIES {
            parts.push(format!("retries={}", self.retries));
        }
        format!("awskms:{}", parts.join(";"))
    }

    fn key(&self) -> &str {
        self.key_id.as_deref().unwrap_or("(none)")
    }
}

/// `arn:aws:kms:<region>:<account>:key/<id>` (or `:alias/...`) -> region.
fn region_of_arn(key_id: &str) -> Option<String> {
    let mut it = key_id.split(':');
    match (it.next(), it.next(), it.next(), it.next()) {
        (Some("arn"), Some(_partition), Some("kms"), Some(region)) if !region.is_empty() => Some(region.to_string()),
        _ => None,
    }
}

/// An endpoint must be https, or http to a loopback address (a local test
/// server); user info (`user:pass@`) is refused.
fn check_endpoint(url: &str) -> Result<String, SignerError> {
    let (scheme, rest) =
        url.split_once("://").ok_or_else(|| bad("awskms: endpoint= must be a URL such as https://kms.eu-central-1.amazonaws.com"))?;
    let authority = rest.split('/').next().unwrap_or_default();
    if authority.contains('@') {
        return Err(bad("awskms: endpoint= must not carry user info; credentials come from the AWS credential chain"));
    }
    let host = if let Some(v6) = authority.strip_prefix('[') {
        v6.split(']').next().unwrap_or_default()
    } else {
        authority.rsplit_once(':').map_or(authority, |(h, _)| h)
    };
    if host.is_empty() {
        return Err(bad("awskms: endpoint= has no host"));
    }
    match scheme {
        "https" => Ok(url.to_string()),
        "http" if host == "localhost" || host == "::1" || host.starts_with("127.") => Ok(url.to_string()),
        "http" => Err(bad("awskms: endpoint= may use plain http only on loopback (127.0.0.1, localhost); use https")),
        _ => Err(bad("awskms: endpoint= must be an https:// URL")),
    }
}

/// Spaces request starts at least `1/rps` apart, plus [`RATE_MARGIN`]: with
/// one signer thread, no window of one second holds more than `rps` requests,
/// even at the server when the network delays one request up to ~50 ms more
/// than another.
#[derive(Debug)]
struct RateLimiter {
    interval: Duration,
    next: Option<Instant>,
}

/// Pace 5 % below the configured rate (see [`RateLimiter`]).
const RATE_MARGIN: f64 = 1.05;

impl RateLimiter {
    fn new(rps: f64) -> Self {
        RateLimiter { interval: Duration::from_secs_f64(RATE_MARGIN / rps), next: None }
    }

    /// Block until the next request may start, and book the slot.
    fn acquire(&mut self) {
        let now = Instant::now();
        let start = match self.next {
            Some(t) if t > now => {
                std::thread::sleep(t - now);
                t
            }
            _ => now,
        };
        self.next = Some(start + self.interval);
    }
}

/// Why one attempt failed, before it becomes a [`SignerError`].
#[derive(Debug)]
enum Fault {
    /// Throttled or a transient failure: worth another attempt.
    Retry(String),
    /// Retrying will not help (the key, the credentials, the request).
    Final(SignerError),
}

fn classify<E>(op: &str, key: &str, timeout: Duration, e: SdkError<E>) -> Fault
where
    E: ProvideErrorMetadata + std::error::Error + Send + Sync + 'static,
{
    // The cause chain, for causes below the SDK (connection refused, TLS).
    // It carries no credential: those stay inside the request signer.
    let chain = chain_text(&e);
    if let Some(ce) = credentials_error(&e) {
        use aws_credential_types::provider::error::CredentialsError;
        let text = format!("KMS {op}: cannot load AWS credentials: {}", chain_text(ce));
        return match ce {
            CredentialsError::ProviderTimedOut(_) => Fault::Retry(text),
            _ => Fault::Final(SignerError::Failed(format!(
                "{text}; set up the AWS credential chain (AWS_PROFILE and `aws sso login`, \
                 environment variables, or an instance role)"
            ))),
        };
    }
    match e {
        SdkError::ServiceError(ctx) => {
            let status = ctx.raw().status().as_u16();
            let err = ctx.err();
            let code = err.code().unwrap_or("unknown").to_string();
            let message = err.message().unwrap_or("").to_string();
            let what = format!(
                "KMS {op} on key {key}: {code} (HTTP {status}){}",
                if message.is_empty() { String::new() } else { format!(": {message}") }
            );
            match code.as_str() {
                "ThrottlingException"
                | "TooManyRequestsException"
                | "RequestLimitExceeded"
                | "LimitExceededException"
                | "KMSInternalException"
                | "DependencyTimeoutException"
                | "KeyUnavailableException"
                | "InternalFailure"
                | "ServiceUnavailable"
                | "ServiceUnavailableException"
                | "RequestTimeout"
                | "RequestTimeoutException" => Fault::Retry(what),
                "NotFoundException" => {
                    Fault::Final(SignerError::KeyNotFound(format!("{what}: check key-id= and region= in the signer URI")))
                }
                "DisabledException" | "KMSInvalidStateException" => {
                    Fault::Final(SignerError::KeyNotFound(format!("{what}: the key is disabled or pending deletion; enable it in KMS")))
                }
                "AccessDeniedException"
                | "UnrecognizedClientException"
                | "InvalidSignatureException"
                | "IncompleteSignature"
                | "MissingAuthenticationToken"
                | "ExpiredTokenException"
                | "InvalidClientTokenId"
                | "SignatureDoesNotMatch" => Fault::Final(SignerError::Failed(format!(
                    "{what}: AWS rejected this station's credentials or they lack kms:{op} on the key; \
                     check the credential chain (AWS_PROFILE, SSO login, instance role) and the key policy"
                ))),
                _ if status >= 500 => Fault::Retry(what),
                _ => Fault::Final(SignerError::Failed(what)),
            }
        }
        SdkError::TimeoutError(_) => Fault::Retry(format!("KMS {op}: no answer within {} ms", timeout.as_millis())),
        SdkError::DispatchFailure(d) => {
            let text = format!("KMS {op}: the request could not be sent: {chain}");
            if d.is_user() {
                Fault::Final(SignerError::Failed(text))
            } else {
                Fault::Retry(text)
            }
        }
        SdkError::ResponseError(_) => Fault::Retry(format!("KMS {op}: unreadable answer: {chain}")),
        // Credentials that cannot be loaded surface here: not retryable.
        _ => Fault::Final(SignerError::Failed(format!("KMS {op}: {chain}"))),
    }
}

/// The Display of an error and its sources, joined by ": ", with a source
/// that repeats its parent's text left out (the SDK nests such wrappers).
fn chain_text(e: &(dyn std::error::Error + 'static)) -> String {
    let mut parts: Vec<String> = Vec::new();
    let mut cur = Some(e);
    while let Some(x) = cur {
        let t = x.to_string();
        if !parts.last().is_some_and(|p| p.contains(&t)) {
            parts.push(t);
        }
        cur = x.source();
    }
    parts.join(": ")
}

/// The credential provider's error, if that is what stopped the request.
fn credentials_error<'a>(e: &'a (dyn std::error::Error + 'static)) -> Option<&'a aws_credential_types::provider::error::CredentialsError> {
    let mut cur = Some(e);
    while let Some(x) = cur {
        if let Some(ce) = x.downcast_ref::<aws_credential_types::provider::error::CredentialsError>() {
            return Some(ce);
        }
        cur = x.source();
    }
    None
}

/// Per-call policy and the state it keeps between calls.
#[derive(Debug)]
struct Caller {
    timeout: Duration,
    retries: u32,
    limiter: RateLimiter,
    rng: SystemRandom,
    /// Set after a transient failure; cleared by the next success.
    degraded: bool,
}

impl Caller {
    fn backoff(&self, retry: u32) -> Duration {
        let ceiling = BACKOFF_BASE.saturating_mul(1u32 << retry.min(10)).min(BACKOFF_CAP);
        let mut b = [0u8; 4];
        let frac = match self.rng.fill(&mut b) {
            Ok(()) => f64::from(u32::from_le_bytes(b)) / f64::from(u32::MAX),
            Err(_) => 0.5,
        };
        // Full jitter, with a floor so a retry never fires at once.
        ceiling.mul_f64(frac).max(Duration::from_millis(10))
    }

    /// Run one KMS request with the rate limit, a deadline per attempt and
    /// retries. `single` forces one attempt (health checks).
    fn call<T, E, F, Fut>(&mut self, rt: &tokio::runtime::Runtime, op: &str, key: &str, single: bool, f: F) -> Result<T, SignerError>
    where
        F: Fn() -> Fut,
        Fut: Future<Output = Result<T, SdkError<E>>>,
        E: ProvideErrorMetadata + std::error::Error + Send + Sync + 'static,
    {
        if tokio::runtime::Handle::try_current().is_ok() {
            return Err(SignerError::Failed(
                "the KMS signer was called from inside an async runtime; call it from a blocking \
                 thread (the station's signer worker, or spawn_blocking)"
                    .into(),
            ));
        }
        let attempts = if single || self.degraded { 1 } else { self.retries + 1 };
        let mut last = String::new();
        for attempt in 1..=attempts {
            self.limiter.acquire();
            let started = Instant::now();
            // The SDK has its own deadline per attempt; this one also covers
            // credential loading and is the one the operator configured.
            let r = rt.block_on(async { tokio::time::timeout(self.timeout, f()).await });
            let fault = match r {
                Ok(Ok(v)) => {
                    if self.degraded {
                        tracing::info!(op, "KMS answers again");
                    }
                    self.degraded = false;
                    return Ok(v);
                }
                Ok(Err(e)) => classify(op, key, self.timeout, e),
                Err(_) => Fault::Retry(format!("KMS {op}: no answer within {} ms", self.timeout.as_millis())),
            };
            match fault {
                Fault::Final(e) => return Err(e),
                Fault::Retry(text) => {
                    last = text;
                    if attempt < attempts {
                        let pause = self.backoff(attempt - 1);
                        tracing::warn!(op, attempt, of = attempts, elapsed_ms = started.elapsed().as_millis() as u64,
                            retry_in_ms = pause.as_millis() as u64, error = %last, "KMS request failed; retrying");
                        std::thread::sleep(pause);
                    }
                }
            }
        }
        self.degraded = true;
        tracing::warn!(op, attempts, error = %last, "KMS unreachable or throttled");
        Err(SignerError::Transient(format!("{last} (after {attempts} attempt{})", if attempts == 1 { "" } else { "s" })))
    }
}

fn runtime() -> Result<tokio::runtime::Runtime, SignerError> {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .thread_name("imprint-kms")
        .build()
        .map_err(|e| SignerError::Failed(format!("cannot start the KMS client runtime: {e}")))
}

/// Build the SDK client: standard credential and region chains, our
/// endpoint/profile/timeouts, SDK retries off (we retry), rustls on ring.
fn client(rt: &tokio::runtime::Runtime, uri: &KmsUri) -> Result<Client, SignerError> {
    use aws_smithy_http_client::tls::{rustls_provider::CryptoMode, Provider};
    if tokio::runtime::Handle::try_current().is_ok() {
        return Err(SignerError::Failed("the KMS signer must be opened outside an async runtime (use spawn_blocking)".into()));
    }
    let http = aws_smithy_http_client::Builder::new().tls_provider(Provider::Rustls(CryptoMode::Ring)).build_https();
    let mut loader = aws_config::defaults(BehaviorVersion::latest())
        .http_client(http)
        .retry_config(RetryConfig::disabled())
        .timeout_config(TimeoutConfig::builder().connect_timeout(uri.timeout).operation_attempt_timeout(uri.timeout).build());
    if let Some(p) = &uri.profile {
        loader = loader.profile_name(p);
    }
    if let Some(r) = &uri.region {
        loader = loader.region(Region::new(r.clone()));
    }
    if let Some(e) = &uri.endpoint {
        loader = loader.endpoint_url(e);
    }
    let conf = rt.block_on(loader.load());
    if conf.region().is_none() {
        return Err(bad("awskms: no region: add region=<r> to the URI (or use a key ARN, or set AWS_REGION / the profile's region)"));
    }
    Ok(Client::new(&conf))
}

/// The algorithm of a KMS key spec name (`KeySpec`, or the older
/// `CustomerMasterKeySpec` that some servers, moto among them, still send).
fn alg_of(spec: &str) -> Result<(SigAlg, SigningAlgorithmSpec), SignerError> {
    match spec {
        "ECC_NIST_P256" => Ok((SigAlg::EcdsaP256Sha256, SigningAlgorithmSpec::EcdsaSha256)),
        "ECC_NIST_P384" => Ok((SigAlg::EcdsaP384Sha384, SigningAlgorithmSpec::EcdsaSha384)),
        other => Err(SignerError::Failed(format!("the KMS key is {other}: only ECC_NIST_P256 and ECC_NIST_P384 CA keys are supported"))),
    }
}

fn spec_of(alg: SigAlg) -> Result<KeySpec, SignerError> {
    match alg {
        SigAlg::EcdsaP256Sha256 => Ok(KeySpec::EccNistP256),
        SigAlg::EcdsaP384Sha384 => Ok(KeySpec::EccNistP384),
        #[allow(unreachable_patterns)]
        other => Err(SignerError::Failed(format!("{} keys cannot be created in KMS by imprint", other.name()))),
    }
}

/// A CA key in AWS KMS. Sign-only; the private key never leaves KMS.
pub struct KmsSigner {
    uri: KmsUri,
    shown_uri: String,
    /// The key's ARN as KMS reports it (for logs and health).
    key_arn: String,
    alg: SigAlg,
    signing_alg: SigningAlgorithmSpec,
    /// Cached DER SubjectPublicKeyInfo from GetPublicKey.
    spki: Vec<u8>,
    client: Client,
    caller: Caller,
    // Dropped last: the client's connections belong to it.
    rt: tokio::runtime::Runtime,
}

impl std::fmt::Debug for KmsSigner {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "KmsSigner({})", self.shown_uri)
    }
}

impl KmsSigner {
    /// Open the KMS key a URI names: build the client, fetch and cache the
    /// public key, check it is an ECC P-256/P-384 SIGN_VERIFY key.
    pub fn open(uri: &str) -> Result<Self, SignerError> {
        let uri = KmsUri::parse(uri, true)?;
        let rt = runtime()?;
        let client = client(&rt, &uri)?;
        let mut caller = Caller {
            timeout: uri.timeout,
            retries: uri.retries,
            limiter: RateLimiter::new(uri.rps),
            rng: SystemRandom::new(),
            degraded: false,
        };
        let key = uri.key().to_string();
        let out = caller.call(&rt, "GetPublicKey", &key, false, || client.get_public_key().key_id(&key).send())?;
        if out.key_usage() != Some(&KeyUsageType::SignVerify) {
            return Err(SignerError::Failed(format!(
                "KMS key {key} has key usage {}: a CA key must be SIGN_VERIFY",
                out.key_usage().map_or("unknown", |u| u.as_str())
            )));
        }
        #[allow(deprecated)] // moto sends only the older CustomerMasterKeySpec
        let spec = out
            .key_spec()
            .map(|k| k.as_str().to_string())
            .or_else(|| out.customer_master_key_spec().map(|k| k.as_str().to_string()))
            .ok_or_else(|| SignerError::Failed(format!("KMS did not say which key spec {key} has")))?;
        let (alg, signing_alg) = alg_of(&spec)?;
        if !out.signing_algorithms().is_empty() && !out.signing_algorithms().contains(&signing_alg) {
            return Err(SignerError::Failed(format!("KMS key {key} does not offer {}", signing_alg.as_str())));
        }
        let spki = out
            .public_key()
            .map(|b| b.as_ref().to_vec())
            .ok_or_else(|| SignerError::Failed(format!("KMS returned no public key for {key}")))?;
        check_spki(alg, &spki)?;
        let key_arn = out.key_id().unwrap_or(&key).to_string();
        let shown_uri = uri.to_uri();
        tracing::info!(uri = %shown_uri, key_arn = %key_arn, alg = alg.name(), "KMS CA key opened");
        Ok(KmsSigner { uri, shown_uri, key_arn, alg, signing_alg, spki, client, caller, rt })
    }

    /// The key's ARN as KMS reported it.
    pub fn key_arn(&self) -> &str {
        &self.key_arn
    }
}

/// The SPKI KMS returned parses and is on the curve its key spec says.
fn check_spki(alg: SigAlg, spki: &[u8]) -> Result<(), SignerError> {
    let point = imprint_core::signer::spki_subject_key_bits(spki).map_err(|e| SignerError::Failed(format!("KMS public key: {e}")))?;
    // Re-encoding the point must give back the same SPKI (named curve, uncompressed).
    let expect = crate::ec_spki(alg, &point)?;
    if expect != spki {
        return Err(SignerError::Failed(format!("KMS public key is not a named-curve {} key", alg.name())));
    }
    Ok(())
}

impl Signer for KmsSigner {
    fn info(&self) -> SignerInfo {
        SignerInfo { kind: "awskms", uri: self.shown_uri.clone(), development: false }
    }

    fn algorithm(&self) -> SigAlg {
        self.alg
    }

    fn public_key_spki(&self) -> &[u8] {
        &self.spki
    }

    fn sign(&mut self, msg: &[u8]) -> Result<Vec<u8>, SignerError> {
        let (message, kind) =
            if sends_digest(msg.len()) { (self.alg.digest(msg), MessageType::Digest) } else { (msg.to_vec(), MessageType::Raw) };
        let key = self.uri.key().to_string();
        let client = &self.client;
        let alg = self.signing_alg.clone();
        let out = self.caller.call(&self.rt, "Sign", &key, false, || {
            client.sign().key_id(&key).message(Blob::new(message.clone())).message_type(kind.clone()).signing_algorithm(alg.clone()).send()
        })?;
        let sig =
            out.signature().map(|b| b.as_ref().to_vec()).ok_or_else(|| SignerError::Failed("KMS Sign returned no signature".into()))?;
        if sig.first() != Some(&0x30) || sig.len() < 8 {
            return Err(SignerError::Failed("KMS Sign returned something that is not a DER ECDSA signature".into()));
        }
        Ok(sig)
    }

    /// One DescribeKey round trip: KMS reachable, credentials accepted, key
    /// present, enabled and still a SIGN_VERIFY key.
    fn check(&mut self) -> Result<(), SignerError> {
        let key = self.uri.key().to_string();
        let client = &self.client;
        let out = self.caller.call(&self.rt, "DescribeKey", &key, true, || client.describe_key().key_id(&key).send())?;
        let meta = out.key_metadata().ok_or_else(|| SignerError::Failed("KMS DescribeKey returned no key metadata".into()))?;
        match meta.key_state() {
            Some(KeyState::Enabled) | None => {}
            Some(other) => {
                return Err(SignerError::KeyNotFound(format!(
                    "KMS key {key} is {}: enable it (or cancel its deletion) in KMS",
                    other.as_str()
                )))
            }
        }
        Ok(())
    }
}

/// Create an ECC SIGN_VERIFY key of `alg` in KMS for the URI's region and
/// endpoint. With `key-id=alias/<name>` the alias is created too and the URI
/// is returned as given; without a key-id the returned URI names the new
/// key's ARN. Refuses a key-id that is not an alias (it would be ignored).
pub fn create_key(uri: &str, alg: SigAlg) -> Result<String, SignerError> {
    let mut parsed = KmsUri::parse(uri, false)?;
    let alias = match parsed.key_id.as_deref() {
        None => None,
        Some(a) if a.starts_with("alias/") => Some(a.to_string()),
        Some(_) => return Err(bad("awskms: to create a key, give key-id=alias/<name> (the alias is created too) or no key-id")),
    };
    let spec = spec_of(alg)?;
    let rt = runtime()?;
    let client = client(&rt, &parsed)?;
    let mut caller = Caller {
        timeout: parsed.timeout,
        retries: parsed.retries,
        limiter: RateLimiter::new(parsed.rps),
        rng: SystemRandom::new(),
        degraded: false,
    };
    let what = alias.clone().unwrap_or_else(|| "(new key)".into());
    if let Some(a) = &alias {
        // An alias that already names a key must not be moved silently.
        let existing = caller.call(&rt, "DescribeKey", a, false, || client.describe_key().key_id(a).send());
        match existing {
            Ok(_) => {
                return Err(SignerError::Failed(format!(
                    "KMS alias {a} already names a key: refusing to create another; choose a new alias"
                )))
            }
            Err(SignerError::KeyNotFound(_)) => {}
            Err(e) => return Err(e),
        }
    }
    // CreateKey is not idempotent: one attempt, so a lost answer never makes two keys.
    let out = caller.call(&rt, "CreateKey", &what, true, || {
        client.create_key().key_spec(spec.clone()).key_usage(KeyUsageType::SignVerify).description("Imprint device CA signing key").send()
    })?;
    let meta = out.key_metadata().ok_or_else(|| SignerError::Failed("KMS CreateKey returned no key metadata".into()))?;
    let arn = meta.arn().unwrap_or(meta.key_id()).to_string();
    tracing::info!(key_arn = %arn, alg = alg.name(), "KMS CA key created");
    match alias {
        Some(a) => {
            caller.call(&rt, "CreateAlias", &a, true, || client.create_alias().alias_name(&a).target_key_id(&arn).send())?;
            tracing::info!(alias = %a, key_arn = %arn, "KMS alias created");
        }
        None => parsed.key_id = Some(arn),
    }
    if parsed.region.is_none() {
        parsed.region = parsed.key_id.as_deref().and_then(region_of_arn);
    }
    Ok(parsed.to_uri())
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod tests {
    use super::*;

    #[test]
    fn parses_every_attribute_and_prints_them_back() {
        let u = KmsUri::parse(
            "awskms:key-id=alias/ca;region=eu-central-1;endpoint=http://127.0.0.1:5000;profile=factory;rps=12.5;timeout-ms=800;retries=1",
            true,
        )
        .unwrap();
        assert_eq!(u.key_id.as_deref(), Some("alias/ca"));
        assert_eq!(u.region.as_deref(), Some("eu-central-1"));
        assert_eq!(u.endpoint.as_deref(), Some("http://127.0.0.1:5000"));
        assert_eq!(u.profile.as_deref(), Some("factory"));
        assert_eq!(u.rps, 12.5);
        assert_eq!(u.timeout, Duration::from_millis(800));
        assert_eq!(u.retries, 1);
        assert_eq!(KmsUri::parse(&u.to_uri(), true).unwrap(), u);
    }

    #[test]
    fn region_comes_from_a_key_arn() {
        let u = KmsUri::parse("awskms:key-id=arn:aws:kms:us-west-2:111122223333:key/1234abcd-12ab-34cd-56ef-1234567890ab", true).unwrap();
        assert_eq!(u.region.as_deref(), Some("us-west-2"));
        let u = KmsUri::parse("awskms:key-id=1234abcd", true).unwrap();
        assert_eq!(u.region, None);
        assert_eq!(u.to_uri(), "awskms:key-id=1234abcd");
    }

    #[test]
    fn credentials_in_the_uri_are_refused_without_echo() {
        for uri in [
            "awskms:key-id=k;secret-access-key=wJalrXUtnFEMI",
            "awskms:key-id=k;aws_secret_access_key=wJalrXUtnFEMI",
            "awskms:key-id=k;access-key-id=AKIAwJalrXUtnFEMI",
            "awskms:key-id=k;session-token=wJalrXUtnFEMI",
            "awskms:key-id=k?secret=wJalrXUtnFEMI",
            "awskms:key-id=k;endpoint=https://user:wJalrXUtnFEMI@kms.example.com",
        ] {
            let e = KmsUri::parse(uri, true).unwrap_err();
            assert!(matches!(e, SignerError::BadUri(_)), "{uri}: {e:?}");
            assert!(!e.to_string().contains("wJalrXUtnFEMI"), "{e}");
        }
    }

    #[test]
    fn bad_uris_are_clear() {
        let cases = [
            ("awskms:region=eu-west-1", "key-id= is required"),
            ("awskms:key-id=k;colour=blue", "unknown attribute"),
            ("awskms:key-id=k;rps=0", "rps="),
            ("awskms:key-id=k;timeout-ms=abc", "timeout-ms="),
            ("awskms:key-id=k;key-id=j", "twice"),
            ("awskms:key-id=k;endpoint=http://kms.example.com", "loopback"),
            ("awskms:key-id=k;endpoint=ftp://127.0.0.1", "https"),
            ("awskms:key-id", "no value"),
            ("pkcs11:token=x", "awskms:"),
        ];
        for (uri, want) in cases {
            let e = KmsUri::parse(uri, true).unwrap_err();
            assert!(e.to_string().contains(want), "{uri}: {e}");
        }
        assert!(KmsUri::parse("awskms:endpoint=https://[::1]:8443", false).is_ok());
        assert!(KmsUri::parse("awskms:key-id=k;endpoint=http://localhost:4566", true).is_ok());
    }

    #[test]
    fn raw_up_to_4096_bytes_digest_above_and_for_empty() {
        assert!(sends_digest(0));
        assert!(!sends_digest(1));
        assert!(!sends_digest(RAW_MESSAGE_MAX));
        assert!(sends_digest(RAW_MESSAGE_MAX + 1));
    }

    #[test]
    fn rate_limiter_spaces_requests() {
        let mut l = RateLimiter::new(100.0);
        let start = Instant::now();
        for _ in 0..11 {
            l.acquire();
        }
        // 11 requests at 100/s: the 11th starts no earlier than 100 ms in.
        assert!(start.elapsed() >= Duration::from_millis(100), "{:?}", start.elapsed());
    }

    #[test]
    fn backoff_is_capped_and_jittered() {
        let c = Caller {
            timeout: Duration::from_secs(1),
            retries: 3,
            limiter: RateLimiter::new(10.0),
            rng: SystemRandom::new(),
            degraded: false,
        };
        let mut seen = std::collections::BTreeSet::new();
        for retry in 0..12 {
            let b = c.backoff(retry);
            assert!(b <= BACKOFF_CAP && b >= Duration::from_millis(10), "{b:?}");
            seen.insert(b);
        }
        assert!(seen.len() > 3, "jitter varies the pauses: {seen:?}");
    }

    #[test]
    fn arn_region_parsing() {
        assert_eq!(region_of_arn("arn:aws:kms:eu-west-1:1:alias/x").as_deref(), Some("eu-west-1"));
        assert_eq!(region_of_arn("alias/x"), None);
    }
}
