//! The daemon's side of access: building the authorizer from the
//! configuration and the key store at start, printing the pairing link,
//! noticing key changes while running, and the first-boot claim window.

use crate::config::Config;
use crate::keystore::{
    self, ClaimDecision, ClaimWindow, Fingerprint, KeyStore, StoredKey, ADMIN_KEY,
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
        let claimable =
            !file.claimed && admin.is_some() && file.keys.len() == 1 && configured.is_empty();
        if let Some(k) = &made {
            info!(dir = %store.dir().display(), "no access key yet: made key {:?}", k.id);
        }
        if let (true, Some(admin)) = (!file.claimed, &admin) {
            print_pairing(&page_base_url(config), admin);
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
                if !file.keys.iter().any(|k| k.id == ADMIN_KEY) || file.claimed {
                    self.claim.close();
                }
                let keys = keystore::merged_keys(self.configured.clone(), &file);
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
    pub fn claim(&mut self, now_us: u64, from: IpAddr) -> (ClaimDecision, Option<String>) {
        let decision = self.claim.claim(now_us, from);
        if decision != ClaimDecision::Grant {
            info!(%from, ?decision, "claim refused");
            return (decision, None);
        }
        let Some(store) = &self.store else {
            return (ClaimDecision::Closed, None);
        };
        let admin = match store.load() {
            Ok(file) => file.keys.into_iter().find(|k| k.id == ADMIN_KEY),
            Err(e) => {
                warn!("claim: cannot read the key store: {e}");
                None
            }
        };
        let Some(admin) = admin else {
            return (ClaimDecision::Closed, None);
        };
        if let Err(e) = store.mark_claimed() {
            warn!("cannot record the claim: {e}");
        }
        self.fingerprint = store.fingerprint();
        info!(%from, "device claimed from the page: the admin key was handed over");
        (
            ClaimDecision::Grant,
            Some(format!("{}.{}", admin.id, admin.secret)),
        )
    }
}

/// Prints the pairing link and its QR code to standard error, where a
/// person starting the daemon (or the journal) sees it.
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
