//! The station's config parser with arbitrary text (TOML syntax, the secret
//! check by key name, the settings). Checks, beyond "no panic": with a secret
//! planted under a secret key name after the fuzzed text, no error message
//! repeats the secret value (errors name line, column and key, never a value).
#![no_main]
use imprint_station::config::StationConfig;
use libfuzzer_sys::fuzz_target;

const SECRET: &str = "S3CR3Tv4lue";

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else { return };
    let _ = StationConfig::parse(text);
    let planted = format!("{text}\n[signer_secrets]\npin = \"{SECRET}\"\n");
    match StationConfig::parse(&planted) {
        Ok(_) => {}
        Err(e) => assert!(!e.contains(SECRET), "the secret was echoed: {e}"),
    }
});
