//! What the app asks of WebKitGTK to keep its memory small (issue 18: at
//! most 300 MB PSS for the app and its WebKit processes with 16 tiles).
//! Each setting here was measured on its own; the figures and where the
//! memory goes are in docs/performance.md ("Where the memory goes").
//!
//! Two kinds: environment variables WebKit reads when its processes start
//! ([`WEBKIT_ENV`], set by `main` before GTK, WebKit or any thread starts;
//! the web and network processes inherit them), and settings of the window's
//! WebView ([`MEMORY_SETTINGS`], applied by [`apply`] once the webview exists).

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

/// The WebView settings the app wants, as plain values (what [`apply`] sets
/// and what [`read`] reads back).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct MemorySettings {
    /// WebKit's back/forward page cache keeps whole pages alive for a quick
    /// Back; the app is one page that never navigates.
    pub page_cache: bool,
    /// No view draws with WebGL (a GL context per canvas, in a CPU-painted page).
    pub webgl: bool,
    /// `DocumentViewer`: the smallest memory and disk caches (one local
    /// page, every asset served from the binary).
    pub document_viewer_cache: bool,
}

/// What the app applies to its window's WebView.
pub const MEMORY_SETTINGS: MemorySettings = MemorySettings { page_cache: false, webgl: false, document_viewer_cache: true };

/// Applies `want` to a WebView's settings object.
#[cfg(target_os = "linux")]
pub fn apply_settings(s: &webkit2gtk::Settings, want: &MemorySettings) {
    use webkit2gtk::SettingsExt;
    s.set_enable_page_cache(want.page_cache);
    s.set_enable_webgl(want.webgl);
}

/// Applies `want`'s cache model to a web context.
#[cfg(target_os = "linux")]
pub fn apply_context(ctx: &webkit2gtk::WebContext, want: &MemorySettings) {
    use webkit2gtk::WebContextExt;
    ctx.set_cache_model(if want.document_viewer_cache {
        webkit2gtk::CacheModel::DocumentViewer
    } else {
        webkit2gtk::CacheModel::WebBrowser
    });
}

/// Reads back what [`apply_settings`] sets, and the context's cache model.
#[cfg(target_os = "linux")]
pub fn read(s: &webkit2gtk::Settings, ctx: Option<&webkit2gtk::WebContext>) -> MemorySettings {
    use webkit2gtk::{SettingsExt, WebContextExt};
    MemorySettings {
        page_cache: s.enables_page_cache(),
        webgl: s.enables_webgl(),
        document_viewer_cache: ctx.is_some_and(|c| c.cache_model() == webkit2gtk::CacheModel::DocumentViewer),
    }
}

/// Applies [`MEMORY_SETTINGS`] to the window's WebView and its context.
#[cfg(target_os = "linux")]
pub fn apply(webview: &webkit2gtk::WebView) {
    use webkit2gtk::WebViewExt;
    if let Some(s) = WebViewExt::settings(webview) {
        apply_settings(&s, &MEMORY_SETTINGS);
    }
    if let Some(ctx) = webview.context() {
        apply_context(&ctx, &MEMORY_SETTINGS);
    }
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

    /// An X server of the test's own (Xvfb; WebKit's settings read the
    /// display's fonts and style), ended when dropped.
    #[cfg(target_os = "linux")]
    struct Xvfb(std::process::Child);

    #[cfg(target_os = "linux")]
    impl Xvfb {
        /// Starts Xvfb on a display number it picks; returns it with `:N`.
        fn start() -> (Self, String) {
            use std::io::Read;
            let mut child = std::process::Command::new("Xvfb")
                .args(["-displayfd", "1", "-screen", "0", "640x480x24", "-nolisten", "tcp"])
                .stdout(std::process::Stdio::piped())
                .stderr(std::process::Stdio::null())
                .spawn()
                .expect("Xvfb (apt: xvfb) runs");
            let mut out = child.stdout.take().expect("piped");
            let mut num = String::new();
            let mut b = [0u8; 1];
            while out.read(&mut b).expect("Xvfb says its display") == 1 && b[0] != b'\n' {
                num.push(char::from(b[0]));
            }
            assert!(!num.is_empty(), "Xvfb gave no display number");
            (Self(child), format!(":{num}"))
        }
    }

    #[cfg(target_os = "linux")]
    impl Drop for Xvfb {
        fn drop(&mut self) {
            let _ = self.0.kill();
            let _ = self.0.wait();
        }
    }

    /// The settings and the cache model, set on the real WebKitGTK objects a
    /// window's WebView has, and read back through WebKit.
    #[cfg(target_os = "linux")]
    #[test]
    fn memory_settings_applied_to_webkit_objects_read_back_as_configured() {
        let (_x, display) = Xvfb::start();
        // The only test in this binary that touches the environment.
        std::env::set_var("DISPLAY", &display);
        gtk::init().expect("GTK opens the test's own display");
        let s = webkit2gtk::Settings::new();
        let ctx = webkit2gtk::WebContext::new();
        // First the opposite of every field (what wry sets), so a field
        // `apply` skipped or `read` misread would fail below.
        let opposite = MemorySettings { page_cache: true, webgl: true, document_viewer_cache: false };
        assert_eq!(MEMORY_SETTINGS, MemorySettings { page_cache: false, webgl: false, document_viewer_cache: true });
        apply_settings(&s, &opposite);
        apply_context(&ctx, &opposite);
        assert_eq!(read(&s, Some(&ctx)), opposite);
        apply_settings(&s, &MEMORY_SETTINGS);
        apply_context(&ctx, &MEMORY_SETTINGS);
        assert_eq!(read(&s, Some(&ctx)), MEMORY_SETTINGS);
    }
}
