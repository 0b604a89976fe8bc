use super::*;
use std::net::IpAddr;

fn temp_dir(name: &str) -> PathBuf {
    let d = std::env::temp_dir().join(format!("campeer-keystore-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&d);
    d
}

#[test]
fn add_list_revoke_round_trip_with_private_files() {
    let dir = temp_dir("roundtrip");
    let store = KeyStore::new(dir.join("state"));
    assert_eq!(store.load().expect("absent is empty"), StoreFile::default());
    let before = store.fingerprint();
    let k = store.add("phone", Role::View).expect("added");
    assert_eq!(k.secret.len(), 43, "32 random bytes in b64u");
    assert_ne!(store.fingerprint(), before);
    let mode = std::fs::metadata(store.path())
        .expect("file")
        .permissions()
        .mode()
        & 0o777;
    assert_eq!(mode, 0o600);
    let dmode = std::fs::metadata(store.dir())
        .expect("dir")
        .permissions()
        .mode()
        & 0o777;
    assert_eq!(dmode, 0o700);
    assert!(store.add("phone", Role::Control).is_err(), "ids are unique");
    assert!(store.add("Bad id", Role::View).is_err());
    let other = store.add("tablet", Role::Control).expect("added");
    assert_ne!(k.secret, other.secret);
    let file = store.load().expect("loads");
    assert_eq!(file.keys.len(), 2);
    assert_eq!(file.keys[0], k);
    assert!(store.revoke("phone").expect("revoked"));
    assert!(!store.revoke("phone").expect("nothing to revoke"));
    assert_eq!(store.load().expect("loads").keys, vec![other]);
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn an_exposed_key_file_is_refused_by_name() {
    let dir = temp_dir("exposed");
    let store = KeyStore::new(dir.clone());
    store.add("phone", Role::View).expect("added");
    std::fs::set_permissions(store.path(), std::fs::Permissions::from_mode(0o644)).expect("chmod");
    let err = store.load().expect_err("group/other may read it");
    assert!(matches!(err, KeyStoreError::Exposed { .. }), "{err}");
    assert!(err.to_string().contains("keys.toml"), "{err}");
    assert!(err.to_string().contains("chmod 600"), "{err}");
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn the_admin_key_is_made_once_and_only_without_keys() {
    let dir = temp_dir("admin");
    let store = KeyStore::new(dir.clone());
    assert!(
        store.ensure_admin(1).expect("ok").is_none(),
        "configured keys: none made"
    );
    let admin = store.ensure_admin(0).expect("ok").expect("made now");
    assert_eq!(admin.id, ADMIN_KEY);
    assert_eq!(admin.role, Role::Control);
    assert!(store.ensure_admin(0).expect("ok").is_none(), "only once");
    assert!(!store.load().expect("loads").claimed);
    store.mark_claimed().expect("claimed");
    assert!(store.load().expect("loads").claimed);
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn secret_files_must_be_private() {
    let dir = temp_dir("secretfile");
    std::fs::create_dir_all(&dir).expect("dir");
    let path = dir.join("phone.key");
    std::fs::write(&path, "0123456789abcdef0123\r\n").expect("write");
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600)).expect("chmod");
    let access = AccessConfig {
        keys: vec![crate::control::config::AccessKey {
            id: "phone".into(),
            secret: None,
            secret_file: Some(path.clone()),
            role: Role::Control,
        }],
        ..AccessConfig::default()
    };
    let keys = config_keys(&access).expect("private file");
    assert_eq!(keys[0].secret, b"0123456789abcdef0123");
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o640)).expect("chmod");
    let err = config_keys(&access).expect_err("group-readable");
    assert!(err.to_string().contains("phone.key"), "{err}");
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600)).expect("chmod");
    std::fs::write(&path, "short\n").expect("write");
    assert!(config_keys(&access).is_err());
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn configured_keys_win_over_stored_ones() {
    let configured = vec![KeyEntry {
        id: "phone".into(),
        secret: b"configured-secret-0123".to_vec(),
        role: Role::View,
    }];
    let stored = StoreFile {
        claimed: false,
        keys: vec![
            StoredKey {
                id: "phone".into(),
                role: Role::Control,
                secret: "x".repeat(43),
            },
            StoredKey {
                id: "admin".into(),
                role: Role::Control,
                secret: "y".repeat(43),
            },
        ],
        ..StoreFile::default()
    };
    let merged = merged_keys(configured, &stored);
    assert_eq!(merged.len(), 2);
    assert_eq!(merged[0].role, Role::View);
    assert_eq!(merged[1].id, "admin");
}

#[test]
fn state_dir_resolution() {
    assert_eq!(
        state_dir(Some(Path::new("/srv/cam"))).expect("configured"),
        PathBuf::from("/srv/cam")
    );
}

#[test]
fn pairing_link_and_qr() {
    let k = StoredKey {
        id: "admin".into(),
        role: Role::Control,
        secret: "abc_DEF-123".into(),
    };
    let link = pairing_link("http://cam.local:8080/", &k);
    assert_eq!(link, "http://cam.local:8080/#pair=admin.abc_DEF-123");
    let qr = qr_text(&link).expect("encodes");
    assert!(qr.lines().count() > 10, "{qr}");
    assert!(qr.contains('█') || qr.contains('▀') || qr.contains('▄'));
}

#[test]
fn claim_window_in_simulated_time() {
    let lan: IpAddr = "192.168.1.20".parse().expect("ip");
    let public: IpAddr = "8.8.8.8".parse().expect("ip");
    let min = 60_000_000;
    let mut w = ClaimWindow::new(0, Duration::from_secs(600), true);
    assert!(w.is_open(9 * min));
    assert_eq!(w.claim(9 * min, public), ClaimDecision::Refused);
    assert!(w.is_open(9 * min), "a refused claim does not close it");
    assert_eq!(w.claim(9 * min, lan), ClaimDecision::Grant);
    assert_eq!(
        w.claim(9 * min, lan),
        ClaimDecision::Closed,
        "only once: a neighbour comes too late"
    );
    let mut late = ClaimWindow::new(0, Duration::from_secs(600), true);
    assert_eq!(
        late.claim(10 * min, lan),
        ClaimDecision::Closed,
        "the window times out"
    );
    let mut used = ClaimWindow::new(0, Duration::from_secs(600), true);
    used.close();
    assert_eq!(used.claim(1, lan), ClaimDecision::Closed);
    let mut off = ClaimWindow::new(0, Duration::ZERO, true);
    assert_eq!(off.claim(1, lan), ClaimDecision::Closed);
}

#[test]
fn local_addresses() {
    for a in [
        "127.0.0.1",
        "10.1.2.3",
        "172.16.0.9",
        "192.168.0.1",
        "169.254.1.1",
        "::1",
        "fe80::1",
        "fd00::5",
        "::ffff:192.168.1.2",
    ] {
        assert!(is_local_address(a.parse().expect("ip")), "{a}");
    }
    for a in ["8.8.8.8", "2001:db8::1", "::ffff:8.8.8.8", "100.64.0.1"] {
        assert!(!is_local_address(a.parse().expect("ip")), "{a}");
    }
}

#[test]
fn the_claim_window_opens_once_per_device() {
    let dir = temp_dir("window");
    let store = KeyStore::new(dir.clone());
    let made = store.ensure_admin(0).expect("ok").is_some();
    let file = store.load().expect("loads");
    assert!(
        opens_claim_window(made, &file, 0),
        "the first boot opens it"
    );
    assert!(
        !opens_claim_window(made, &file, 1),
        "not with configured keys"
    );
    store.mark_claim_window_opened().expect("recorded");
    // A restart (the admin key exists, nothing made now) never reopens it,
    // nor does a start that made the key but finds the opening recorded.
    let file = store.load().expect("loads");
    assert!(file.claim_window_opened);
    assert!(!opens_claim_window(false, &file, 0));
    assert!(!opens_claim_window(true, &file, 0));
    assert!(!closes_claim_window(&file), "admin only, unclaimed");

    // The owner with root reopens it: a new admin secret, once.
    let old = file.keys[0].secret.clone();
    let admin = store.reopen_claim().expect("reopened");
    assert_ne!(admin.secret, old, "whoever had the old secret loses it");
    let file = store.load().expect("loads");
    assert!(opens_claim_window(false, &file, 0));
    store.mark_claim_window_opened().expect("recorded");
    assert!(!opens_claim_window(false, &store.load().expect("loads"), 0));

    // Another key added by other means closes it and marks the store claimed.
    store.add("phone", Role::View).expect("added");
    let file = store.load().expect("loads");
    assert!(file.claimed && closes_claim_window(&file));
    assert!(
        store.reopen_claim().is_err(),
        "not while other keys exist (the window would close at once)"
    );
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn the_window_stays_shut_when_its_opening_cannot_be_recorded() {
    let dir = temp_dir("readonly");
    let store = KeyStore::new(dir.clone());
    store.ensure_admin(0).expect("ok");
    std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o500)).expect("chmod");
    // Root writes anyway; the test means something only for other users.
    // SAFETY: geteuid has no preconditions.
    if unsafe { libc::geteuid() } != 0 {
        assert!(store.mark_claim_window_opened().is_err());
        assert!(store.mark_claimed().is_err(), "a claim would be refused");
    }
    std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o700)).expect("chmod");
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn tokens_are_stored_hashed_listed_and_revoked_with_or_without_their_key() {
    let dir = temp_dir("tokens");
    let store = KeyStore::new(dir.clone());
    let phone = store.add("phone", Role::View).expect("added");
    let a = store.add_token("phone", 7).expect("token");
    let b = store.add_token("phone", 8).expect("token");
    let text = std::fs::read_to_string(store.path()).expect("file");
    assert!(
        !text.contains(&a.token) && !text.contains(&a.token[17..]),
        "no token on disk"
    );
    assert!(text.contains(&a.stored.sha256));
    let keys = vec![phone.entry()];
    let file = store.load().expect("loads");
    assert_eq!(file.tokens.len(), 2);
    assert_eq!(tokens::check(&file.tokens, &keys, &a.token), Some("phone"));
    assert!(store.revoke_token(&a.stored.id).expect("revoked"));
    assert!(!store.revoke_token(&a.stored.id).expect("nothing to revoke"));
    let file = store.load().expect("loads");
    assert_eq!(tokens::check(&file.tokens, &keys, &a.token), None);
    assert_eq!(tokens::check(&file.tokens, &keys, &b.token), Some("phone"));
    assert_eq!(file.keys.len(), 1, "the key stays");
    assert!(store.revoke("phone").expect("revoked"));
    assert!(
        store.load().expect("loads").tokens.is_empty(),
        "its tokens go with it"
    );
    let _ = std::fs::remove_dir_all(&dir);
}
