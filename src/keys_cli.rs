//! `campeer pair` and `campeer keys`: the key store from a shell.

use crate::access::{page_base_url, print_pairing};
use crate::cli::{KeysAction, StoreArgs, TokenAction};
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

/// `campeer pair`: the admin key's pairing link and QR code.
pub fn pair(args: &StoreArgs) -> anyhow::Result<ExitCode> {
    let (config, store) = resolve(args)?;
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
    print_pairing(&page_base_url(&config), admin);
    Ok(ExitCode::SUCCESS)
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
