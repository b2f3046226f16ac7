//! What the app asks of WebKitGTK to keep its memory small (issue 18: at
//! most 300 MB PSS for the app and its WebKit processes with 16 tiles).
//! Measured lever by lever in docs/performance.md ("Memory with 16 tiles"):
//! environment variables WebKit reads when its processes start, set by
//! `main` before GTK, WebKit or any thread starts (the web and network
//! processes inherit them).

/// Environment for WebKit's processes. A variable already set (by the user,
/// a packager, or a test) is left as it is: these are defaults, not orders.
pub const WEBKIT_ENV: &[(&str, &str)] = &[
    // Paint on the CPU instead of compositing with OpenGL: the web process
    // allocates no GL buffers and textures (Mesa's llvmpipe under Xvfb, a
    // GPU driver on a desktop). The Bench is a grid of text tiles, which
    // the CPU paints fast. Measured: -48 MB PSS with 16 tiles.
    ("WEBKIT_DISABLE_COMPOSITING_MODE", "1"),
    // And no DMA-BUF renderer (GBM buffers shared between the web process
    // and the window): frames reach the window through plain shared
    // memory, and the app process keeps no GL surfaces. Another -5 MB.
    ("WEBKIT_DISABLE_DMABUF_RENDERER", "1"),
];

/// The [`WEBKIT_ENV`] variables that `get` (the environment) does not set yet.
pub fn webkit_env_to_set(get: impl Fn(&str) -> Option<std::ffi::OsString>) -> Vec<(&'static str, &'static str)> {
    WEBKIT_ENV.iter().copied().filter(|(k, _)| get(k).is_none()).collect()
}

/// Sets each [`WEBKIT_ENV`] variable that is not set yet; returns the ones it set.
///
/// Call it first thing in `main`: `std::env::set_var` is only sound while
/// the process has one thread, and WebKit reads these when it starts.
pub fn set_webkit_env() -> Vec<&'static str> {
    let set = webkit_env_to_set(|k| std::env::var_os(k));
    for (k, v) in &set {
        std::env::set_var(k, v);
    }
    set.into_iter().map(|(k, _)| k).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn webkit_env_sets_what_is_unset_and_leaves_what_the_user_set() {
        assert_eq!(WEBKIT_ENV, &[("WEBKIT_DISABLE_COMPOSITING_MODE", "1"), ("WEBKIT_DISABLE_DMABUF_RENDERER", "1")]);
        assert_eq!(webkit_env_to_set(|_| None), WEBKIT_ENV.to_vec());
        // A user who wants compositing back sets the variable (to anything): it stays theirs.
        assert_eq!(
            webkit_env_to_set(|k| (k == "WEBKIT_DISABLE_COMPOSITING_MODE").then(|| "0".into())),
            vec![("WEBKIT_DISABLE_DMABUF_RENDERER", "1")]
        );
    }
}
