//! The viewer page's files, embedded at build time by build.rs from
//! web/dist (or a placeholder page when it was not built).

/// One embedded file.
#[derive(Debug)]
pub struct Asset {
    /// Path below the site root, without a leading `/`: `index.html`, `app.js`.
    pub path: &'static str,
    /// The `Content-Type` it is served with.
    pub content_type: &'static str,
    /// A strong ETag (quoted), a hash of the bytes.
    pub etag: &'static str,
    /// The bytes.
    pub body: &'static [u8],
}

include!(concat!(env!("OUT_DIR"), "/web_assets.rs"));

/// The embedded file at `path` (no leading `/`), if there is one.
pub fn find(path: &str) -> Option<&'static Asset> {
    ASSETS.iter().find(|a| a.path == path)
}

/// Whether the real page is embedded (false: the placeholder).
pub fn page_built() -> bool {
    !PLACEHOLDER
}
