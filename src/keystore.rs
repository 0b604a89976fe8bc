//! Access keys kept in the state directory, the pairing link, and the
//! first-boot claim window.
//!
//! A device is paired by default: with no key configured anywhere, the
//! first start creates an `admin` key (32 random bytes) in `keys.toml` in
//! the state directory (systemd's `StateDirectory` for the unit, else
//! `$XDG_STATE_HOME/campeer`) and prints its pairing link. `campeer keys`
//! adds, lists and revokes keys there; a running daemon notices the file
//! change and reloads.
//!
//! Invariants: the file and any `secret_file` must not be readable by group
//! or other (refused otherwise, naming the file); writes are atomic (temp
//! file, fsync, rename) and keep the directory owner's ownership, so
//! `sudo campeer keys add` does not lock the daemon's user out; no secret
//! reaches a log line.

use crate::control::config::{is_valid_key_id, AccessConfig, Role, MIN_SECRET_LEN};
use crate::signaling::auth::KeyEntry;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine as _;
use rand::RngCore;
use serde::{Deserialize, Serialize};
use std::os::unix::fs::{DirBuilderExt, MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::time::Duration;

pub mod tokens;
pub use tokens::{NewToken, StoredToken};

/// The key file's name inside the state directory.
pub const KEYS_FILE: &str = "keys.toml";
/// The id of the key made at first start.
pub const ADMIN_KEY: &str = "admin";
/// Random bytes in a generated secret (256 bits).
pub const GENERATED_SECRET_BYTES: usize = 32;
/// A hand-written secret shorter than this (22 base64 characters = 128
/// bits) gets a warning naming the key.
pub const SHORT_SECRET_WARNING: usize = 22;

/// Why keys could not be read or written.
#[derive(Debug, thiserror::Error)]
pub enum KeyStoreError {
    #[error("{}: {source}", path.display())]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{} is readable by group or other (mode {mode:o}); run: chmod 600 {}", path.display(), path.display())]
    Exposed { path: PathBuf, mode: u32 },
    #[error("{}: {message}", path.display())]
    Format { path: PathBuf, message: String },
    #[error("access key {id:?}: {message}")]
    Key { id: String, message: String },
    #[error("no state directory: set access.state_dir, STATE_DIRECTORY, XDG_STATE_HOME or HOME")]
    NoStateDir,
}

fn io(path: &Path) -> impl FnOnce(std::io::Error) -> KeyStoreError + '_ {
    move |source| KeyStoreError::Io {
        path: path.to_owned(),
        source,
    }
}

/// The state directory: `configured` (access.state_dir), else systemd's
/// `$STATE_DIRECTORY`, else `$XDG_STATE_HOME/campeer`, else
/// `~/.local/state/campeer`.
pub fn state_dir(configured: Option<&Path>) -> Result<PathBuf, KeyStoreError> {
    if let Some(p) = configured {
        return Ok(p.to_owned());
    }
    let env = |k: &str| std::env::var_os(k).filter(|v| !v.is_empty());
    if let Some(d) = env("STATE_DIRECTORY") {
        // systemd may list several, separated by ':'; ours is the first.
        let first = d
            .to_string_lossy()
            .split(':')
            .next()
            .unwrap_or("")
            .to_owned();
        return Ok(PathBuf::from(first));
    }
    if let Some(d) = env("XDG_STATE_HOME") {
        return Ok(PathBuf::from(d).join("campeer"));
    }
    env("HOME")
        .map(|h| PathBuf::from(h).join(".local/state/campeer"))
        .ok_or(KeyStoreError::NoStateDir)
}

/// One stored key.
#[derive(Clone, Serialize, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct StoredKey {
    pub id: String,
    pub role: Role,
    pub secret: String,
}

impl std::fmt::Debug for StoredKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("StoredKey")
            .field("id", &self.id)
            .field("role", &self.role)
            .finish_non_exhaustive()
    }
}

impl StoredKey {
    pub fn entry(&self) -> KeyEntry {
        KeyEntry {
            id: self.id.clone(),
            secret: self.secret.as_bytes().to_vec(),
            role: self.role,
        }
    }
}

/// The contents of `keys.toml`.
#[derive(Clone, Debug, Default, Serialize, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields, default)]
pub struct StoreFile {
    /// Whether the owner has taken the first key (by the claim button, by
    /// using it, or by adding another key): the claim window is then
    /// closed for good.
    pub claimed: bool,
    /// Written before the first-boot claim window opens: a restart never
    /// opens it again.
    pub claim_window_opened: bool,
    /// Set by `campeer keys reopen-claim`: the next start opens the window
    /// once more (and clears this).
    pub reopen_claim: bool,
    pub keys: Vec<StoredKey>,
    /// WHEP and snapshot tokens, hashed (`tokens`).
    pub tokens: Vec<StoredToken>,
}

/// What the store file looks like on disk now (to notice changes).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Fingerprint {
    mtime_ns: i128,
    len: u64,
    ino: u64,
}

/// The key file in one state directory.
#[derive(Clone, Debug)]
pub struct KeyStore {
    dir: PathBuf,
}

impl KeyStore {
    pub fn new(dir: PathBuf) -> Self {
        KeyStore { dir }
    }

    pub fn dir(&self) -> &Path {
        &self.dir
    }

    pub fn path(&self) -> PathBuf {
        self.dir.join(KEYS_FILE)
    }

    /// The stored keys; an absent file is an empty store.
    pub fn load(&self) -> Result<StoreFile, KeyStoreError> {
        let path = self.path();
        let text = match read_private(&path) {
            Ok(t) => t,
            Err(KeyStoreError::Io { source, .. })
                if source.kind() == std::io::ErrorKind::NotFound =>
            {
                return Ok(StoreFile::default())
            }
            Err(e) => return Err(e),
        };
        let file: StoreFile = toml::from_str(&text).map_err(|e| KeyStoreError::Format {
            path: path.clone(),
            message: e.to_string(),
        })?;
        for t in &file.tokens {
            tokens::check_stored(t).map_err(|message| KeyStoreError::Key {
                id: t.key.clone(),
                message,
            })?;
        }
        for (i, k) in file.keys.iter().enumerate() {
            check_stored(k)?;
            if file.keys[..i].iter().any(|o| o.id == k.id) {
                return Err(KeyStoreError::Key {
                    id: k.id.clone(),
                    message: format!("appears twice in {}", path.display()),
                });
            }
        }
        Ok(file)
    }

    /// Writes `file` atomically, mode 0600, owned like the directory.
    pub fn save(&self, file: &StoreFile) -> Result<(), KeyStoreError> {
        create_private_dir(&self.dir)?;
        let path = self.path();
        let text = format!(
            "# campeer access keys, managed by `campeer keys`. Keep this file private (0600).\n{}",
            toml::to_string(file).map_err(|e| KeyStoreError::Format {
                path: path.clone(),
                message: e.to_string(),
            })?
        );
        let dir = std::fs::metadata(&self.dir).map_err(io(&self.dir))?;
        // Only root can give a file away; for anyone else it is theirs already.
        // SAFETY: geteuid has no preconditions.
        let owner = (unsafe { libc::geteuid() } == 0).then(|| (dir.uid(), dir.gid()));
        crate::private_file::write_private(&path, text.as_bytes(), owner).map_err(io(&path))?;
        Ok(())
    }

    /// Adds a key with a generated secret. Any key but the admin key
    /// marks the store claimed: a key added by other means closes the
    /// claim window.
    pub fn add(&self, id: &str, role: Role) -> Result<StoredKey, KeyStoreError> {
        if !is_valid_key_id(id) {
            return Err(KeyStoreError::Key {
                id: id.into(),
                message: "an id must match [a-z0-9][a-z0-9_-]{0,62}".into(),
            });
        }
        let mut file = self.load()?;
        if file.keys.iter().any(|k| k.id == id) {
            return Err(KeyStoreError::Key {
                id: id.into(),
                message: "exists already (revoke it first to replace it)".into(),
            });
        }
        let key = StoredKey {
            id: id.into(),
            role,
            secret: generate_secret(),
        };
        file.keys.push(key.clone());
        if id != ADMIN_KEY {
            file.claimed = true;
            file.reopen_claim = false;
        }
        self.save(&file)?;
        Ok(key)
    }

    /// Removes key `id` and its tokens; false when there was none.
    pub fn revoke(&self, id: &str) -> Result<bool, KeyStoreError> {
        let mut file = self.load()?;
        let before = file.keys.len();
        file.keys.retain(|k| k.id != id);
        if file.keys.len() == before {
            return Ok(false);
        }
        file.tokens.retain(|t| t.key != id);
        self.save(&file)?;
        Ok(true)
    }

    /// Gives key `id` the highest role `role`; false when there is no
    /// such stored key. The running daemon ends its sessions above it.
    pub fn set_role(&self, id: &str, role: Role) -> Result<bool, KeyStoreError> {
        let mut file = self.load()?;
        let Some(k) = file.keys.iter_mut().find(|k| k.id == id) else {
            return Ok(false);
        };
        if k.role == role {
            return Ok(true);
        }
        k.role = role;
        self.save(&file)?;
        Ok(true)
    }

    /// Marks the store claimed (the claim window closes for good).
    pub fn mark_claimed(&self) -> Result<(), KeyStoreError> {
        let mut file = self.load()?;
        if !file.claimed || file.reopen_claim {
            file.claimed = true;
            file.reopen_claim = false;
            self.save(&file)?;
        }
        Ok(())
    }

    /// Records that the claim window opens now (before it opens: if this
    /// fails, no window).
    pub fn mark_claim_window_opened(&self) -> Result<(), KeyStoreError> {
        let mut file = self.load()?;
        file.claim_window_opened = true;
        file.reopen_claim = false;
        self.save(&file)
    }

    /// `campeer keys reopen-claim`: the admin key gets a new secret (so
    /// whoever took the old one loses it), its tokens go, and the next
    /// start opens the claim window once more. Refused while keys other
    /// than the admin key exist (the window would close at once).
    pub fn reopen_claim(&self) -> Result<StoredKey, KeyStoreError> {
        let mut file = self.load()?;
        if let Some(other) = file.keys.iter().find(|k| k.id != ADMIN_KEY) {
            return Err(KeyStoreError::Key {
                id: other.id.clone(),
                message: "other keys exist: revoke them first, or pair with `campeer pair` instead"
                    .into(),
            });
        }
        file.keys = vec![StoredKey {
            id: ADMIN_KEY.into(),
            role: Role::Control,
            secret: generate_secret(),
        }];
        file.tokens.retain(|t| t.key != ADMIN_KEY);
        file.claimed = false;
        file.claim_window_opened = false;
        file.reopen_claim = true;
        self.save(&file)?;
        Ok(file.keys[0].clone())
    }

    /// A new WHEP/snapshot token for key `key`: stored hashed, returned
    /// whole (shown once). The caller checks that the key exists.
    pub fn add_token(&self, key: &str, now_unix: u64) -> Result<NewToken, KeyStoreError> {
        let mut file = self.load()?;
        if file.tokens.len() >= tokens::MAX_TOKENS {
            return Err(KeyStoreError::Key {
                id: key.into(),
                message: format!(
                    "the store holds {} tokens already; revoke some",
                    tokens::MAX_TOKENS
                ),
            });
        }
        let new = tokens::generate(key, now_unix);
        file.tokens.push(new.stored.clone());
        self.save(&file)?;
        Ok(new)
    }

    /// Removes token `id`; false when there was none.
    pub fn revoke_token(&self, id: &str) -> Result<bool, KeyStoreError> {
        let mut file = self.load()?;
        let before = file.tokens.len();
        file.tokens.retain(|t| t.id != id);
        if file.tokens.len() == before {
            return Ok(false);
        }
        self.save(&file)?;
        Ok(true)
    }

    /// Creates the admin key when neither the store nor the configuration
    /// has any key. Returns it when it was made now.
    pub fn ensure_admin(&self, configured: usize) -> Result<Option<StoredKey>, KeyStoreError> {
        let file = self.load()?;
        if configured > 0 || !file.keys.is_empty() {
            return Ok(None);
        }
        self.add(ADMIN_KEY, Role::Control).map(Some)
    }

    /// The file's current fingerprint (default when absent).
    pub fn fingerprint(&self) -> Fingerprint {
        match std::fs::metadata(self.path()) {
            Ok(m) => Fingerprint {
                mtime_ns: m.mtime() as i128 * 1_000_000_000 + m.mtime_nsec() as i128,
                len: m.len(),
                ino: m.ino(),
            },
            Err(_) => Fingerprint::default(),
        }
    }
}

fn check_stored(k: &StoredKey) -> Result<(), KeyStoreError> {
    if !is_valid_key_id(&k.id) {
        return Err(KeyStoreError::Key {
            id: k.id.clone(),
            message: "an id must match [a-z0-9][a-z0-9_-]{0,62}".into(),
        });
    }
    if k.secret.len() < MIN_SECRET_LEN {
        return Err(KeyStoreError::Key {
            id: k.id.clone(),
            message: format!("secret shorter than {MIN_SECRET_LEN} bytes"),
        });
    }
    Ok(())
}

/// 32 random bytes, base64url without padding (43 characters).
pub fn generate_secret() -> String {
    let mut bytes = [0u8; GENERATED_SECRET_BYTES];
    rand::rngs::OsRng.fill_bytes(&mut bytes);
    URL_SAFE_NO_PAD.encode(bytes)
}

/// 16 random bytes for a device nonce.
pub fn random_nonce() -> [u8; 16] {
    let mut bytes = [0u8; 16];
    rand::rngs::OsRng.fill_bytes(&mut bytes);
    bytes
}

fn create_private_dir(dir: &Path) -> Result<(), KeyStoreError> {
    if !dir.exists() {
        std::fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(dir)
            .map_err(io(dir))?;
    }
    Ok(())
}

/// Reads a file that must not be readable by group or other.
fn read_private(path: &Path) -> Result<String, KeyStoreError> {
    let meta = std::fs::metadata(path).map_err(io(path))?;
    let mode = meta.permissions().mode() & 0o777;
    if mode & 0o077 != 0 {
        return Err(KeyStoreError::Exposed {
            path: path.to_owned(),
            mode,
        });
    }
    std::fs::read_to_string(path).map_err(io(path))
}

/// The configured keys (`[[access.keys]]`), secrets read now. A
/// `secret_file` readable by group or other is refused; a short inline
/// secret is accepted with a warning naming the key.
pub fn config_keys(access: &AccessConfig) -> Result<Vec<KeyEntry>, KeyStoreError> {
    access.validate().map_err(|e| KeyStoreError::Key {
        id: String::new(),
        message: e.to_string(),
    })?;
    let mut keys = Vec::with_capacity(access.keys.len());
    for key in &access.keys {
        let secret = match (&key.secret, &key.secret_file) {
            (Some(secret), _) => {
                if secret.len() < SHORT_SECRET_WARNING {
                    tracing::warn!(key = %key.id, "access key {:?}: its secret is short ({} characters); use `campeer keys add` for a generated 256-bit one", key.id, secret.len());
                }
                secret.as_bytes().to_vec()
            }
            (None, Some(path)) => {
                let text = read_private(path)?;
                let trimmed = text
                    .strip_suffix('\n')
                    .map(|t| t.strip_suffix('\r').unwrap_or(t))
                    .unwrap_or(&text);
                if trimmed.len() < MIN_SECRET_LEN {
                    return Err(KeyStoreError::Key {
                        id: key.id.clone(),
                        message: format!(
                            "secret_file {} holds fewer than {MIN_SECRET_LEN} bytes",
                            path.display()
                        ),
                    });
                }
                trimmed.as_bytes().to_vec()
            }
            (None, None) => unreachable!("validate() requires exactly one secret source"),
        };
        keys.push(KeyEntry {
            id: key.id.clone(),
            secret,
            role: key.role,
        });
    }
    Ok(keys)
}

/// Every key the device accepts: the configured ones, then the stored ones
/// (a stored key with a configured key's id is skipped, with a warning).
pub fn merged_keys(configured: Vec<KeyEntry>, stored: &StoreFile) -> Vec<KeyEntry> {
    let mut keys = configured;
    for k in &stored.keys {
        if keys.iter().any(|c| c.id == k.id) {
            tracing::warn!(key = %k.id, "a stored key has the id of a configured key; the configured one wins");
            continue;
        }
        keys.push(k.entry());
    }
    keys
}

/// `<base>#pair=<id>.<secret>` (docs/protocol.md#authorization-protocol-version-2, pairing link).
pub fn pairing_link(base_url: &str, key: &StoredKey) -> String {
    format!("{base_url}#pair={}.{}", key.id, key.secret)
}

/// `link` as a QR code drawn with Unicode half blocks, for a terminal.
pub fn qr_text(link: &str) -> Option<String> {
    use qrcode::render::unicode::Dense1x2;
    let code = qrcode::QrCode::new(link.as_bytes()).ok()?;
    Some(
        code.render::<Dense1x2>()
            .dark_color(Dense1x2::Light)
            .light_color(Dense1x2::Dark)
            .quiet_zone(true)
            .build(),
    )
}

/// The first-boot claim window, decided without I/O: the owner of a
/// headless device takes the admin key from the page within `length` of
/// the daemon's start, from a local address, once.
#[derive(Clone, Debug)]
pub struct ClaimWindow {
    started_us: u64,
    length: Duration,
    open: bool,
}

/// What a claim attempt gets.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ClaimDecision {
    /// Hand over the admin key (once the claim is recorded).
    Grant,
    /// The window is closed (claimed already, or timed out).
    Closed,
    /// Not from a local network address.
    Refused,
    /// The claim could not be recorded, so it was refused (the window
    /// stays as it was).
    Unrecorded,
}

/// Whether this start opens the claim window: only the start that made
/// the admin key (`made_admin`), or the next start after `campeer keys
/// reopen-claim`, and only while the admin key is the only key anywhere
/// and the device is unclaimed. The caller records the opening before
/// the window opens.
pub fn opens_claim_window(made_admin: bool, file: &StoreFile, configured: usize) -> bool {
    let first = made_admin && !file.claim_window_opened;
    (first || file.reopen_claim) && !closes_claim_window(file) && configured == 0
}

/// Whether the store, as read now, closes an open claim window: claimed,
/// no admin key, or any other key (added by other means).
pub fn closes_claim_window(file: &StoreFile) -> bool {
    file.claimed || file.keys.len() != 1 || file.keys[0].id != ADMIN_KEY
}

impl ClaimWindow {
    /// A window opened at `started_us`; `open` is false when the store is
    /// claimed already, holds other keys, or claiming is disabled.
    pub fn new(started_us: u64, length: Duration, open: bool) -> Self {
        ClaimWindow {
            started_us,
            length,
            open: open && !length.is_zero(),
        }
    }

    /// Whether the page should offer the claim button at `now_us`.
    pub fn is_open(&self, now_us: u64) -> bool {
        self.open && now_us.saturating_sub(self.started_us) < self.length.as_micros() as u64
    }

    /// Whether a claim from `from` at `now_us` may be granted; the caller
    /// records it and then [`ClaimWindow::close`]s the window.
    pub fn check(&self, now_us: u64, from: std::net::IpAddr) -> ClaimDecision {
        if !self.is_open(now_us) {
            return ClaimDecision::Closed;
        }
        if !is_local_address(from) {
            return ClaimDecision::Refused;
        }
        ClaimDecision::Grant
    }

    /// A claim from `from` at `now_us`, closing the window when granted.
    pub fn claim(&mut self, now_us: u64, from: std::net::IpAddr) -> ClaimDecision {
        let d = self.check(now_us, from);
        if d == ClaimDecision::Grant {
            self.open = false;
        }
        d
    }

    /// Claimed, the admin key used or revoked, or another key added:
    /// close for good.
    pub fn close(&mut self) {
        self.open = false;
    }
}

/// Loopback, private (RFC 1918, unique local) or link-local.
pub fn is_local_address(ip: std::net::IpAddr) -> bool {
    match ip {
        std::net::IpAddr::V4(v4) => v4.is_loopback() || v4.is_private() || v4.is_link_local(),
        std::net::IpAddr::V6(v6) => {
            if let Some(v4) = v6.to_ipv4_mapped() {
                return is_local_address(std::net::IpAddr::V4(v4));
            }
            let s = v6.segments()[0];
            v6.is_loopback() || (s & 0xfe00) == 0xfc00 || (s & 0xffc0) == 0xfe80
        }
    }
}

#[cfg(test)]
mod tests;
