//! AT response lines (3GPP TS 27.007 as the nRF91 speaks it): line splitting,
//! classification and field parsing. Pure functions over device text, so
//! they are fuzzed (`fuzz/fuzz_targets/at_parser.rs`): nothing here panics,
//! allocates without bound or trusts a length.

/// Longest line kept, in bytes: a KEYGEN answer (CSR + COSE in Base64Url) is
/// about 700 bytes; anything past this is cut and fails its parse.
pub const MAX_AT_LINE: usize = 4096;

/// One response line, classified.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum AtLine {
    /// `OK`: the command is done.
    Ok,
    /// `ERROR`: the command failed, no reason given.
    Error,
    /// `+CME ERROR: <n>` (numeric mode, `AT+CMEE=1`).
    CmeError(u16),
    /// `+CME ERROR: <text>` (verbose mode) or an unreadable number.
    CmeText(String),
    /// `<prefix>: <body>` with a `+` or `%` prefix: an information response
    /// of the command, or an unsolicited result code (URC) of another.
    Response { prefix: String, body: String },
    /// Anything else: an information text (the IMEI of `AT+CGSN`, the
    /// version of `AT+CGMR`), an echo, or console noise.
    Text(String),
}

/// Classify one line (without its line end).
pub fn classify(line: &str) -> AtLine {
    let l = line.trim();
    match l {
        "OK" => return AtLine::Ok,
        "ERROR" => return AtLine::Error,
        _ => {}
    }
    if let Some(rest) = l.strip_prefix("+CME ERROR:") {
        let rest = rest.trim();
        return match rest.parse::<u16>() {
            Ok(n) if !rest.starts_with('+') => AtLine::CmeError(n),
            _ => AtLine::CmeText(rest.to_string()),
        };
    }
    if l.starts_with('+') || l.starts_with('%') {
        if let Some((prefix, body)) = l.split_once(':') {
            let name = &prefix[1..];
            if !name.is_empty() && name.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_') {
                return AtLine::Response { prefix: prefix.to_string(), body: body.trim().to_string() };
            }
        }
    }
    AtLine::Text(l.to_string())
}

/// The comma-separated parameters of a response body; quoted strings are
/// unquoted (a comma inside quotes belongs to the string). `None` for an
/// unterminated quote or a quote in the middle of a bare value.
pub fn fields(body: &str) -> Option<Vec<String>> {
    let mut out = Vec::new();
    let mut cur = String::new();
    let mut quoted = false;
    let mut was_quoted = false;
    for c in body.chars() {
        match (c, quoted) {
            ('"', false) => {
                if !cur.trim().is_empty() || was_quoted {
                    return None;
                }
                cur.clear();
                quoted = true;
            }
            ('"', true) => {
                quoted = false;
                was_quoted = true;
            }
            (',', false) => {
                out.push(if was_quoted { std::mem::take(&mut cur) } else { std::mem::take(&mut cur).trim().to_string() });
                was_quoted = false;
            }
            (c, true) => cur.push(c),
            (c, false) => {
                if was_quoted && !c.is_whitespace() {
                    return None;
                }
                if !was_quoted {
                    cur.push(c);
                }
            }
        }
        if out.len() > 64 {
            return None;
        }
    }
    if quoted {
        return None;
    }
    out.push(if was_quoted { cur } else { cur.trim().to_string() });
    Some(out)
}

/// Splits the bytes of a port into lines (LF ends a line, a CR before it is
/// dropped); a line longer than [`MAX_AT_LINE`] is cut there and the rest
/// of it discarded. Bytes that are not UTF-8 become U+FFFD.
#[derive(Debug, Default)]
pub struct LineSplitter {
    buf: Vec<u8>,
    overflow: bool,
}

impl LineSplitter {
    pub fn new() -> Self {
        Self::default()
    }

    /// Complete lines in `bytes` (with what was held back before), without
    /// line ends; empty lines are dropped.
    pub fn feed(&mut self, bytes: &[u8]) -> Vec<String> {
        let mut out = Vec::new();
        for &b in bytes {
            if b == b'\n' {
                let mut line = std::mem::take(&mut self.buf);
                if line.last() == Some(&b'\r') {
                    line.pop();
                }
                self.overflow = false;
                let text = String::from_utf8_lossy(&line).trim_matches(|c: char| c == '\r' || c == '\0').to_string();
                if !text.trim().is_empty() {
                    out.push(text);
                }
            } else if self.buf.len() < MAX_AT_LINE {
                self.buf.push(b);
            } else {
                self.overflow = true;
            }
        }
        out
    }
}

/// The meaning of a `+CME ERROR` number in Nordic's reference, for the record.
pub fn cme_meaning(n: u16) -> &'static str {
    match n {
        513 => "not found",
        514 => "not allowed",
        515 => "memory full",
        518 => "not allowed in active state",
        519 => "already exists",
        520 => "authentication failed",
        523 => "key generation failed",
        524 => "key generation not allowed",
        527 => "invalid content",
        528 => "not allowed when power off warning is active",
        _ => "unknown to this station",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lines_are_classified_as_the_reference_writes_them() {
        assert_eq!(classify("OK"), AtLine::Ok);
        assert_eq!(classify(" ERROR\r"), AtLine::Error);
        assert_eq!(classify("+CME ERROR: 518"), AtLine::CmeError(518));
        assert_eq!(classify("+CME ERROR: not allowed"), AtLine::CmeText("not allowed".into()));
        assert_eq!(classify("+CME ERROR: +5"), AtLine::CmeText("+5".into()));
        assert_eq!(classify("%CMNG: 16842753,0,\"2C43\""), AtLine::Response { prefix: "%CMNG".into(), body: "16842753,0,\"2C43\"".into() });
        assert_eq!(classify("+CEREG: 2"), AtLine::Response { prefix: "+CEREG".into(), body: "2".into() });
        assert_eq!(classify("352656100367872"), AtLine::Text("352656100367872".into()));
        assert_eq!(classify("+: x"), AtLine::Text("+: x".into()));
        assert_eq!(classify("%a b: x"), AtLine::Text("%a b: x".into()));
    }

    #[test]
    fn fields_unquote_strings_and_refuse_broken_quotes() {
        assert_eq!(fields("16842753,0,\"AB,CD\""), Some(vec!["16842753".into(), "0".into(), "AB,CD".into()]));
        assert_eq!(fields("\"x\""), Some(vec!["x".into()]));
        assert_eq!(fields(" 1 , 2 "), Some(vec!["1".into(), "2".into()]));
        assert_eq!(fields("\"x"), None);
        assert_eq!(fields("a\"x\""), None);
        assert_eq!(fields("\"x\"y"), None);
        assert_eq!(fields(""), Some(vec![String::new()]));
    }

    #[test]
    fn the_splitter_cuts_overlong_lines_and_keeps_partial_ones() {
        let mut s = LineSplitter::new();
        assert_eq!(s.feed(b"OK\r\n\r\n+CME ER"), vec!["OK".to_string()]);
        assert_eq!(s.feed(b"ROR: 514\r\n"), vec!["+CME ERROR: 514".to_string()]);
        let long = vec![b'A'; MAX_AT_LINE * 2];
        let mut out = s.feed(&long);
        out.extend(s.feed(b"\nOK\n"));
        assert_eq!(out.len(), 2);
        assert_eq!(out[0].len(), MAX_AT_LINE);
        assert_eq!(out[1], "OK");
        assert_eq!(s.feed(b"\xff\xfe\n"), vec!["\u{fffd}\u{fffd}".to_string()]);
    }
}
