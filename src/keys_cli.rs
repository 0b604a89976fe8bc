//! `campeer pair` and `campeer keys`: the key store from a shell.

use crate::access::{page_base_url, print_pairing};
use crate::cli::{KeysAction, PairArgs, StoreArgs, TokenAction};
use crate::config::Config;
use crate::control::config::Role;
use crate::keystore::{self, KeyStore, ADMIN_KEY};
use anyhow::{bail, Context};
use std::path::PathBuf;
use std::process::ExitCode;

/// The packaged configuration, used when no other is named.
const PACKAGED_CONFIG: &str = "/etc/campeer/campeer.toml";

fn resolve(args: &StoreArgs) -> anyhow::Result<(Config, KeyStore)> {
    let file = args.config.clone().or_else(|| {
        let p = PathBuf::from(PACKAGED_CONFIG);
        p.exists().then_some(p)
    });
    let config = match &file {
        Some(f) => Config::load(f).with_context(|| format!("reading {}", f.display()))?,
        None => Config::default(),
    };
    let dir = match &args.state_dir {
        Some(d) => d.clone(),
        None => keystore::state_dir(config.access.state_dir.as_deref())?,
    };
    Ok((config, KeyStore::new(dir)))
}

/// `campeer pair`: the admin key's pairing link and QR code, for the
/// device's own page or (`--page-url`, `--broker`) a page hosted elsewhere.
pub fn pair(args: &PairArgs) -> anyhow::Result<ExitCode> {
    let (config, store) = resolve(&args.store)?;
    if config.access.open {
        bail!("this device is configured open (access.open = true): there is nothing to pair");
    }
    let file = store.load()?;
    let Some(admin) = file.keys.iter().find(|k| k.id == ADMIN_KEY) else {
        bail!(
            "no admin key in {} (the daemon makes one at its first start when no key is configured); \
             make another with `campeer keys add NAME --role control`",
            store.path().display()
        );
    };
    match (&args.page_url, &args.broker) {
        (Some(page), Some(broker)) => {
            let pair = format!("{}.{}", admin.id, admin.secret);
            let link = hosted_link(page, &pair, &config.device_id, broker, &config.mqtt.prefix)?;
            let qr = keystore::qr_text(&link).unwrap_or_default();
            eprintln!(
                "\ncampeer: pair a browser with this device through the page at {page} by opening\n\n  {link}\n\n{qr}\n\
                 campeer: (keep it private: it grants control; the device's http.allowed_origins \
                 must list the page's origin when the browser connects to the device's own broker)\n"
            );
        }
        _ => print_pairing(&page_base_url(&config), admin),
    }
    Ok(ExitCode::SUCCESS)
}

/// The pairing link for a page hosted off the device (docs/viewer.md):
/// `<page>#pair=<id>.<secret>&device=<id>&broker=<URL-encoded>[&prefix=<URL-encoded>]`.
/// The page must be an http(s) URL without a fragment; the broker a
/// `ws:`/`wss:` URL, and `wss:` when the page is `https:`.
pub fn hosted_link(
    page: &str,
    pair: &str,
    device: &str,
    broker: &str,
    prefix: &str,
) -> anyhow::Result<String> {
    let p = url::Url::parse(page).with_context(|| format!("--page-url {page:?}"))?;
    if !matches!(p.scheme(), "http" | "https") || p.fragment().is_some() {
        bail!("--page-url {page:?}: give the page's http(s) address, without a #fragment");
    }
    let b = url::Url::parse(broker).with_context(|| format!("--broker {broker:?}"))?;
    if !matches!(b.scheme(), "ws" | "wss") || b.host().is_none() {
        bail!("--broker {broker:?}: give the broker's ws:// or wss:// URL as browsers reach it");
    }
    if p.scheme() == "https" && b.scheme() == "ws" {
        bail!("--broker {broker:?} is plain ws:, which an https: page may not open: use wss://");
    }
    let enc = |s: &str| url::form_urlencoded::byte_serialize(s.as_bytes()).collect::<String>();
    let mut link = format!("{p}#pair={pair}&device={device}&broker={}", enc(b.as_str()));
    if prefix != "campeer" {
        link.push_str(&format!("&prefix={}", enc(prefix)));
    }
    Ok(link)
}

/// `campeer keys add|list|revoke`.
pub fn keys(action: &KeysAction, args: &StoreArgs) -> anyhow::Result<ExitCode> {
    let (config, store) = resolve(args)?;
    match action {
        KeysAction::Add { name, role } => {
            let role: Role = role
                .parse()
                .map_err(|()| anyhow::anyhow!("role must be view or control"))?;
            let key = store.add(name, role)?;
            eprintln!(
                "campeer: added key {:?} ({}) to {}",
                key.id,
                role.as_str(),
                store.path().display()
            );
            print_pairing(&page_base_url(&config), &key);
            if key.id == config.homeassistant.key {
                // Home Assistant's MQTT login (docs/homeassistant.md).
                let password =
                    crate::signaling::auth::key_password(key.secret.as_bytes(), &config.device_id);
                println!("homeassistant mqtt username: {}", key.id);
                println!("homeassistant mqtt password: {password}");
            }
        }
        KeysAction::List => {
            let file = store.load()?;
            for k in &config.access.keys {
                println!("{}\t{}\tconfig file", k.id, k.role.as_str());
            }
            for k in &file.keys {
                println!("{}\t{}\t{}", k.id, k.role.as_str(), store.path().display());
            }
            if file.keys.is_empty() && config.access.keys.is_empty() {
                eprintln!(
                    "campeer: no keys yet (the daemon makes an admin key at its first start)"
                );
            }
        }
        KeysAction::Revoke { name } => {
            if !store.revoke(name)? {
                if config.access.keys.iter().any(|k| &k.id == name) {
                    bail!("key {name:?} is in the configuration file; remove it there");
                }
                bail!("no key {name:?} in {}", store.path().display());
            }
            eprintln!("campeer: revoked {name:?}; a running daemon drops it within a second");
        }
        KeysAction::SetRole { name, role } => {
            let role: Role = role
                .parse()
                .map_err(|()| anyhow::anyhow!("role must be view or control"))?;
            if !store.set_role(name, role)? {
                if config.access.keys.iter().any(|k| &k.id == name) {
                    bail!("key {name:?} is in the configuration file; change its role there");
                }
                bail!("no key {name:?} in {}", store.path().display());
            }
            eprintln!(
                "campeer: key {name:?} is now {}; a running daemon ends its sessions above that within a second",
                role.as_str()
            );
        }
        KeysAction::Token { action } => token(action, &config, &store)?,
        KeysAction::ReopenClaim => {
            store.reopen_claim()?;
            eprintln!(
                "campeer: the admin key has a new secret (the old one no longer works); \
                 restart the daemon (systemctl restart campeer) and claim the device from \
                 its page within access.claim_window_secs"
            );
        }
    }
    Ok(ExitCode::SUCCESS)
}

/// `campeer keys token add|list|revoke`.
fn token(action: &TokenAction, config: &Config, store: &KeyStore) -> anyhow::Result<()> {
    match action {
        TokenAction::Add { name } => {
            let keys =
                keystore::merged_keys(keystore::config_keys(&config.access)?, &store.load()?);
            if !keys.iter().any(|k| &k.id == name) {
                bail!(
                    "no key {name:?} in the configuration file or {}",
                    store.path().display()
                );
            }
            let now = std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map(|d| d.as_secs())
                .unwrap_or(0);
            let new = store.add_token(name, now)?;
            eprintln!(
                "campeer: token {} of key {name:?} for WHEP and /snapshot.jpg (view only); \
                 shown only now, use as `Authorization: Bearer <token>`",
                new.stored.id
            );
            println!("{}", new.token);
        }
        TokenAction::List { name } => {
            let file = store.load()?;
            let mut any = false;
            for t in file
                .tokens
                .iter()
                .filter(|t| name.as_ref().is_none_or(|n| &t.key == n))
            {
                println!("{}\t{}\tcreated {}", t.id, t.key, t.created);
                any = true;
            }
            if !any {
                eprintln!("campeer: no tokens");
            }
        }
        TokenAction::Revoke { token_id } => {
            if !store.revoke_token(token_id)? {
                bail!("no token {token_id:?} in {}", store.path().display());
            }
            eprintln!(
                "campeer: revoked token {token_id}; a running daemon refuses it within a second"
            );
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::hosted_link;

    #[test]
    fn a_hosted_link_names_the_device_and_the_broker() {
        let l = hosted_link(
            "https://cams.example.org/",
            "admin.s3cret",
            "cam1",
            "wss://broker.example.org:8884/mqtt",
            "campeer",
        )
        .expect("a link");
        assert_eq!(
            l,
            "https://cams.example.org/#pair=admin.s3cret&device=cam1\
             &broker=wss%3A%2F%2Fbroker.example.org%3A8884%2Fmqtt"
        );
        let l = hosted_link(
            "http://10.0.0.5:8000",
            "admin.x",
            "cam1",
            "ws://10.0.0.5:9001",
            "home/cams",
        )
        .expect("a link");
        assert!(
            l.starts_with("http://10.0.0.5:8000/#pair=admin.x&device=cam1&broker=ws%3A%2F%2F10.0.0.5%3A9001%2F")
                && l.ends_with("&prefix=home%2Fcams"),
            "{l}"
        );
        for (page, broker) in [
            ("https://cams.example.org/", "ws://broker.example.org/mqtt"),
            ("https://cams.example.org/#x", "wss://broker.example.org/"),
            ("ftp://cams.example.org/", "wss://broker.example.org/"),
            ("https://cams.example.org/", "https://broker.example.org/"),
            ("not a url", "wss://broker.example.org/"),
        ] {
            assert!(
                hosted_link(page, "a.b", "cam1", broker, "campeer").is_err(),
                "{page} {broker}"
            );
        }
    }
}
