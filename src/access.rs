//! The daemon's side of access: building the authorizer from the
//! configuration and the key store at start, printing the pairing link,
//! noticing key changes while running, and the first-boot claim window.

use crate::config::Config;
use crate::keystore::{
    self, ClaimDecision, ClaimWindow, Fingerprint, KeyStore, StoredKey, StoredToken, ADMIN_KEY,
};
use crate::signaling::auth::{KeyEntry, OfferAuthorizer};
use anyhow::Context;
use std::net::IpAddr;
use std::time::Duration;
use tracing::{info, warn};

/// Keys, their file, and the claim window, while the daemon runs.
pub struct AccessState {
    store: Option<KeyStore>,
    configured: Vec<KeyEntry>,
    /// Every key in force now (configured and stored).
    keys: Vec<KeyEntry>,
    fingerprint: Fingerprint,
    claim: ClaimWindow,
    /// WHEP and snapshot tokens (hashed).
    tokens: Vec<StoredToken>,
}

impl AccessState {
    /// Builds the authorizer: open when the configuration says so,
    /// otherwise signed with the configured and stored keys, creating the
    /// admin key (and printing its pairing link) when there is none.
    pub fn start(config: &Config, now_us: u64) -> anyhow::Result<(OfferAuthorizer, AccessState)> {
        if config.access.open {
            warn!("access.open = true: anyone who can reach this device may watch it and drive its outputs");
            let state = AccessState {
                store: None,
                configured: Vec::new(),
                keys: Vec::new(),
                fingerprint: Fingerprint::default(),
                claim: ClaimWindow::new(now_us, Duration::ZERO, false),
                tokens: Vec::new(),
            };
            return Ok((
                OfferAuthorizer::open(keystore::random_nonce(), now_us),
                state,
            ));
        }
        let configured = keystore::config_keys(&config.access).context("access keys")?;
        let dir = keystore::state_dir(config.access.state_dir.as_deref())?;
        let store = KeyStore::new(dir);
        let made = store
            .ensure_admin(configured.len())
            .context("creating the first access key")?;
        let file = store.load().context("access keys")?;
        let admin = file.keys.iter().find(|k| k.id == ADMIN_KEY).cloned();
        if let Some(k) = &made {
            info!(dir = %store.dir().display(), "no access key yet: made key {:?}", k.id);
        }
        let claimable = config.access.claim_window_secs > 0
            && keystore::opens_claim_window(made.is_some(), &file, configured.len())
            && record_window_opening(&store);
        if let (true, Some(admin)) = (!file.claimed, &admin) {
            announce_pairing(&page_base_url(config), admin, claimable);
        }
        let keys = keystore::merged_keys(configured.clone(), &file);
        info!(keys = keys.len(), store = %store.path().display(), claim_window = claimable, "access: signed");
        let claim = ClaimWindow::new(
            now_us,
            Duration::from_secs(config.access.claim_window_secs),
            claimable,
        );
        let fingerprint = store.fingerprint();
        let authz = OfferAuthorizer::signed(keys.clone(), keystore::random_nonce(), now_us);
        Ok((
            authz,
            AccessState {
                store: Some(store),
                configured,
                keys,
                fingerprint,
                claim,
                tokens: file.tokens,
            },
        ))
    }

    /// The key set when the key file changed since the last look; a file
    /// that cannot be read now keeps the old keys (logged).
    pub fn reload_if_changed(&mut self) -> Option<Vec<KeyEntry>> {
        let store = self.store.as_ref()?;
        let now = store.fingerprint();
        if now == self.fingerprint {
            return None;
        }
        self.fingerprint = now;
        match store.load() {
            Ok(file) => {
                if keystore::closes_claim_window(&file) {
                    self.claim.close();
                }
                if file.tokens != self.tokens {
                    info!(
                        tokens = file.tokens.len(),
                        "WHEP/snapshot tokens changed; reloaded"
                    );
                    self.tokens = file.tokens.clone();
                }
                let keys = keystore::merged_keys(self.configured.clone(), &file);
                if keys == self.keys {
                    return None;
                }
                info!(keys = keys.len(), "access keys changed; reloaded");
                self.keys = keys.clone();
                Some(keys)
            }
            Err(e) => {
                warn!("access keys changed but cannot be read; keeping the previous ones: {e}");
                None
            }
        }
    }

    /// Every key in force now.
    pub fn keys(&self) -> &[KeyEntry] {
        &self.keys
    }

    /// Whether `password` is key `id`'s broker password (the page's
    /// `ice.json` bearer), in constant time.
    pub fn check_password(&self, device_id: &str, id: &str, password: &str) -> bool {
        self.keys.iter().find(|k| k.id == id).is_some_and(|k| {
            crate::signaling::auth::password_matches(&k.secret, device_id, password)
        })
    }

    /// The key a WHEP/snapshot token belongs to, if it is a valid token
    /// of a key in force (`keystore::tokens`).
    pub fn check_token(&self, token: &str) -> Option<String> {
        keystore::tokens::check(&self.tokens, &self.keys, token).map(str::to_owned)
    }

    /// The owner used the admin key: the claim window closes for good.
    pub fn admin_used(&mut self) {
        if let Some(store) = &self.store {
            if self.claim_pending() {
                info!("the admin key is in use; first-boot claiming is closed");
            }
            self.claim.close();
            if let Err(e) = store.mark_claimed() {
                warn!("cannot record that the device is claimed: {e}");
            }
            self.fingerprint = store.fingerprint();
        }
    }

    fn claim_pending(&self) -> bool {
        self.claim.is_open(crate::clock::monotonic_us())
    }

    /// Whether the page may offer the claim button at `now_us`.
    pub fn claimable(&self, now_us: u64) -> bool {
        self.claim.is_open(now_us)
    }

    /// A claim from the page: the admin pairing text (`id.secret`) once.
    /// `from` is the client's address (forwarded headers resolved by the
    /// page server). The claim is recorded before the secret leaves: if it
    /// cannot be, the claim is refused.
    pub fn claim(&mut self, now_us: u64, from: IpAddr) -> (ClaimDecision, Option<String>) {
        let decision = self.claim.check(now_us, from);
        if decision != ClaimDecision::Grant {
            info!(%from, ?decision, "claim refused");
            return (decision, None);
        }
        let Some(store) = &self.store else {
            return (ClaimDecision::Closed, None);
        };
        let file = match store.load() {
            Ok(file) => file,
            Err(e) => {
                warn!("claim refused: cannot read the key store: {e}");
                return (ClaimDecision::Unrecorded, None);
            }
        };
        if keystore::closes_claim_window(&file) {
            // Another key appeared since the last reload.
            self.claim.close();
            info!(%from, "claim refused: the device has other keys or is claimed");
            return (ClaimDecision::Closed, None);
        }
        let admin = file.keys[0].clone();
        if let Err(e) = store.mark_claimed() {
            warn!("claim refused: cannot record it: {e}");
            return (ClaimDecision::Unrecorded, None);
        }
        self.claim.close();
        self.fingerprint = store.fingerprint();
        info!(%from, "device claimed from the page: the admin key was handed over");
        (
            ClaimDecision::Grant,
            Some(format!("{}.{}", admin.id, admin.secret)),
        )
    }
}

/// Writes that the claim window opens now; false (no window) when that
/// cannot be written.
fn record_window_opening(store: &KeyStore) -> bool {
    match store.mark_claim_window_opened() {
        Ok(()) => true,
        Err(e) => {
            warn!("the claim window stays closed: cannot record its opening: {e}");
            false
        }
    }
}

/// How an unclaimed device tells its owner to pair: the link and QR code
/// when standard error is a terminal (a person is looking), otherwise a
/// line without the secret (standard error is a log, e.g. the journal).
pub fn announce_pairing(base_url: &str, key: &StoredKey, claimable: bool) {
    use std::io::IsTerminal;
    if std::io::stderr().is_terminal() {
        print_pairing(base_url, key);
        return;
    }
    let how = if claimable {
        "open the page and press Claim within the claim window, or run `sudo campeer pair` on the device"
    } else {
        "run `sudo campeer pair` on the device (it prints the pairing link and QR code)"
    };
    info!(page = %base_url, "this device is not paired yet: {how}");
}

/// Prints the pairing link and its QR code to standard error: only for a
/// person at a terminal (`campeer pair`, `campeer keys add`, or the
/// daemon when its standard error is one), never to a log.
pub fn print_pairing(base_url: &str, key: &StoredKey) {
    let link = keystore::pairing_link(base_url, key);
    let qr = keystore::qr_text(&link).unwrap_or_default();
    eprintln!(
        "\ncampeer: pair a browser with this device by opening\n\n  {link}\n\n{qr}\n\
         campeer: (`campeer pair` prints this again; keep it private: it grants control)\n"
    );
}

/// `http://<host>:<port>/` of the page: the configured listen address, or
/// `<hostname>.local` when it listens on every address.
pub fn page_base_url(config: &Config) -> String {
    let listen = config.http.listen.as_str();
    let (host, port) = match listen.rsplit_once(':') {
        Some((h, p)) => (h.trim_start_matches('[').trim_end_matches(']'), p),
        None => ("", "8080"),
    };
    let unspecified = host.is_empty()
        || host
            .parse::<IpAddr>()
            .map(|ip| ip.is_unspecified())
            .unwrap_or(false);
    let host = if unspecified {
        std::env::var("CAMPEER_PAIR_HOST")
            .ok()
            .filter(|h| !h.is_empty())
            .unwrap_or_else(|| format!("{}.local", crate::config::default_device_id()))
    } else if host.contains(':') {
        format!("[{host}]")
    } else {
        host.to_owned()
    };
    format!("http://{host}:{port}/")
}
