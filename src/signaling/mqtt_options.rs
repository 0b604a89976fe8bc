//! The MQTT client options, device and viewer alike: transport (plain TCP,
//! or TLS through rustls with the ring provider), credentials, keep-alive,
//! packet limits and a clean session. The device adds its last will.
//!
//! TLS: the broker's certificate is checked against `mqtt.ca_file` (PEM,
//! replacing the system's roots) or the system's CA certificates, for the
//! URL's host name (or IP address). `mqtt.client_cert` and
//! `mqtt.client_key` (PEM) add a client certificate for mutual TLS. Files
//! are read when the options are built (once per process start): replace a
//! certificate, then restart.
//!
//! Credentials: the user name comes from the URL or `mqtt.username`, the
//! password from the URL or the first line of `mqtt.password_file`. A
//! password is never logged; one given on the command line (`--mqtt
//! mqtts://u:pw@h`) draws a warning, as every local user can read it.
//!
//! Certificate trouble at connect time (wrong CA, wrong name, a clock that
//! makes the certificate look not yet valid or expired, a broker asking for
//! a client certificate that is not configured) is logged here in plain
//! words; the connection error itself goes back to the caller's retry loop.

use crate::config::mqtt::{check_consistency, fail, unbracketed};
pub use crate::config::mqtt::{MqttSetupError, Setting};
use crate::config::{MqttConfig, MqttTarget};
use crate::signaling::mqtt::{MAX_INCOMING_PACKET, MAX_OUTGOING_PACKET};
use rumqttc::{MqttOptions, TlsConfiguration, Transport};
use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::client::{ResolvesClientCert, WebPkiServerVerifier};
use rustls::crypto::CryptoProvider;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName, UnixTime};
use rustls::sign::CertifiedKey;
use rustls::{
    CertificateError, ClientConfig, DigitallySignedStruct, Error as TlsError, RootCertStore,
    SignatureScheme,
};
use std::io::Read;
use std::path::Path;
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::Arc;
use std::time::Duration;
use tracing::{debug, warn};

/// Largest certificate, key or password file read, bytes (a system CA
/// bundle is a few hundred KiB).
const MAX_FILE: u64 = 4 * 1024 * 1024;

/// The client options for `target`: TCP or TLS transport, credentials,
/// keep-alive (`cfg.keepalive_secs`, at least 5 s), packet limits (1 MiB
/// in, 256 KiB out) and a clean session. Reads the TLS and password files.
pub fn mqtt_options(
    cfg: &MqttConfig,
    target: &MqttTarget,
    client_id: &str,
) -> Result<MqttOptions, MqttSetupError> {
    check_consistency(cfg, target)?;
    let credentials = credentials(cfg, target)?;
    let host = if target.tls {
        // rustls takes the server name from the host as given: an IPv6
        // literal without brackets (`::1`) is both a valid IP server name
        // and, as `::1:8883`, an address the resolver accepts.
        unbracketed(&target.host).to_owned()
    } else {
        target.host.clone()
    };
    let mut opts = MqttOptions::new(client_id, host, target.port);
    opts.set_keep_alive(Duration::from_secs(cfg.keepalive_secs.clamp(5, 65_535)));
    opts.set_clean_session(true);
    opts.set_max_packet_size(MAX_INCOMING_PACKET, MAX_OUTGOING_PACKET);
    if target.tls {
        let tls = tls_client_config(cfg, target)?;
        opts.set_transport(Transport::Tls(TlsConfiguration::Rustls(tls)));
    }
    if let Some((user, password)) = credentials {
        opts.set_credentials(user, password);
    }
    if target.password.is_some() && password_in_args(std::env::args_os()) {
        warn!(
            broker = %target,
            "the MQTT password is part of the --mqtt URL on the command line, where every user of this machine can read it (ps, /proc/PID/cmdline): use mqtt.password_file (campeer view: --password-file) or the CAMPEER_MQTT_URL environment variable"
        );
    }
    Ok(opts)
}

/// Checks what [`mqtt_options`] would use, without building a connection:
/// the settings agree with each other and with the URL, and every named
/// file can be read and parsed (certificates, key matching its
/// certificate, a non-empty password); without `ca_file`, that the system
/// has CA certificates. Used by configuration validation, so that the
/// daemon refuses to start rather than failing later.
pub fn check(cfg: &MqttConfig, target: &MqttTarget) -> Result<(), MqttSetupError> {
    check_consistency(cfg, target)?;
    credentials(cfg, target)?;
    if target.tls {
        match &cfg.ca_file {
            Some(path) => read_roots(path)?,
            None => system_roots()?,
        };
        client_identity(cfg, &provider())?;
    }
    Ok(())
}

/// The rustls configuration for an `mqtts://` target (ring provider,
/// TLS 1.2 and 1.3).
pub fn tls_client_config(
    cfg: &MqttConfig,
    target: &MqttTarget,
) -> Result<Arc<ClientConfig>, MqttSetupError> {
    let provider = provider();
    let (roots, trusted) = match &cfg.ca_file {
        Some(path) => (
            read_roots(path)?,
            format!("{} ({})", path.display(), Setting::CaFile.key()),
        ),
        None => (system_roots()?, "the system's CA certificates".to_owned()),
    };
    let inner = WebPkiServerVerifier::builder_with_provider(Arc::new(roots), provider.clone())
        .build()
        .map_err(|e| {
            fail(
                Setting::CaFile,
                format!("cannot use the CA certificates: {e}"),
            )
        })?;
    let verifier = ExplainingVerifier {
        inner,
        broker: target.to_string(),
        trusted,
        failures: AtomicU32::new(0),
    };
    let identity = ClientIdentity {
        key: client_identity(cfg, &provider)?,
        broker: target.to_string(),
        asked: AtomicU32::new(0),
    };
    let config = ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| fail(Setting::Url, format!("TLS set-up: {e}")))?
        // Not dangerous: `ExplainingVerifier` is the standard WebPKI
        // verifier, wrapped only to explain its refusals in the log.
        .dangerous()
        .with_custom_certificate_verifier(Arc::new(verifier))
        .with_client_cert_resolver(Arc::new(identity));
    Ok(Arc::new(config))
}

fn provider() -> Arc<CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

/// User name and password, if any (after [`check_consistency`]).
fn credentials(
    cfg: &MqttConfig,
    target: &MqttTarget,
) -> Result<Option<(String, String)>, MqttSetupError> {
    let user = target.username.clone().or_else(|| cfg.username.clone());
    let password = match &cfg.password_file {
        Some(path) => Some(read_password(path)?),
        None => target.password.clone(),
    };
    Ok(user.map(|u| (u, password.unwrap_or_default())))
}

/// The first line of `path`, without its line ending.
fn read_password(path: &Path) -> Result<String, MqttSetupError> {
    let bytes = read_capped(path, Setting::PasswordFile)?;
    let text = String::from_utf8(bytes).map_err(|_| {
        fail(
            Setting::PasswordFile,
            format!("{} is not UTF-8 text", path.display()),
        )
    })?;
    let line = text.lines().next().unwrap_or("");
    if line.is_empty() {
        return Err(fail(
            Setting::PasswordFile,
            format!(
                "{} is empty: it must hold the password on its first line",
                path.display()
            ),
        ));
    }
    Ok(line.to_owned())
}

fn read_capped(path: &Path, setting: Setting) -> Result<Vec<u8>, MqttSetupError> {
    let cannot = |e: std::io::Error| fail(setting, format!("cannot read {}: {e}", path.display()));
    let file = std::fs::File::open(path).map_err(cannot)?;
    let mut bytes = Vec::new();
    file.take(MAX_FILE + 1)
        .read_to_end(&mut bytes)
        .map_err(cannot)?;
    if bytes.len() as u64 > MAX_FILE {
        return Err(fail(
            setting,
            format!("{} is larger than {MAX_FILE} bytes", path.display()),
        ));
    }
    Ok(bytes)
}

/// Every certificate in a PEM file; an error if there is none.
fn read_certs(
    path: &Path,
    setting: Setting,
) -> Result<Vec<CertificateDer<'static>>, MqttSetupError> {
    let bytes = read_capped(path, setting)?;
    let certs = CertificateDer::pem_slice_iter(&bytes)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| fail(setting, format!("{} is not valid PEM: {e}", path.display())))?;
    if certs.is_empty() {
        return Err(fail(
            setting,
            format!(
                "{} holds no PEM certificate (-----BEGIN CERTIFICATE-----)",
                path.display()
            ),
        ));
    }
    Ok(certs)
}

fn read_roots(path: &Path) -> Result<RootCertStore, MqttSetupError> {
    let mut roots = RootCertStore::empty();
    for (i, cert) in read_certs(path, Setting::CaFile)?.into_iter().enumerate() {
        roots.add(cert).map_err(|e| {
            fail(
                Setting::CaFile,
                format!(
                    "{}: certificate {} is not a usable CA certificate: {e}",
                    path.display(),
                    i + 1
                ),
            )
        })?;
    }
    Ok(roots)
}

fn system_roots() -> Result<RootCertStore, MqttSetupError> {
    let found = rustls_native_certs::load_native_certs();
    for e in &found.errors {
        debug!("system CA certificates: {e}");
    }
    let mut roots = RootCertStore::empty();
    let (added, ignored) = roots.add_parsable_certificates(found.certs);
    debug!(added, ignored, "system CA certificates loaded");
    if roots.is_empty() {
        return Err(fail(
            Setting::CaFile,
            "not set, and no CA certificates were found on this system (install the ca-certificates package, or set it to the CA that signed the broker's certificate)",
        ));
    }
    Ok(roots)
}

/// The client certificate and key, checked to belong together.
fn client_identity(
    cfg: &MqttConfig,
    provider: &CryptoProvider,
) -> Result<Option<Arc<CertifiedKey>>, MqttSetupError> {
    let (Some(cert_path), Some(key_path)) = (&cfg.client_cert, &cfg.client_key) else {
        return Ok(None);
    };
    let chain = read_certs(cert_path, Setting::ClientCert)?;
    let bytes = read_capped(key_path, Setting::ClientKey)?;
    let key = PrivateKeyDer::from_pem_slice(&bytes).map_err(|e| {
        let why = match e {
            rustls::pki_types::pem::Error::NoItemsFound => {
                "holds no PEM private key (PKCS#8, PKCS#1 or SEC1)".to_owned()
            }
            other => format!("is not a valid PEM private key: {other}"),
        };
        fail(Setting::ClientKey, format!("{} {why}", key_path.display()))
    })?;
    let certified = CertifiedKey::from_der(chain, key, provider).map_err(|e| match e {
        TlsError::InconsistentKeys(_) => fail(
            Setting::ClientKey,
            format!(
                "{} does not belong to the certificate in {}",
                key_path.display(),
                cert_path.display()
            ),
        ),
        TlsError::InvalidCertificate(_) => fail(
            Setting::ClientCert,
            format!(
                "{} is not a usable client certificate (X.509 v3 needed): {e}",
                cert_path.display()
            ),
        ),
        other => fail(
            Setting::ClientKey,
            format!(
                "{} (with {}): cannot use this key: {other}",
                key_path.display(),
                cert_path.display()
            ),
        ),
    })?;
    Ok(Some(Arc::new(certified)))
}

/// Whether a command-line argument is an MQTT URL with a password (as
/// `--mqtt URL` or `--mqtt=URL`).
pub fn password_in_args(args: impl IntoIterator<Item = std::ffi::OsString>) -> bool {
    args.into_iter().any(|arg| {
        let Some(arg) = arg.to_str() else {
            return false;
        };
        let url = arg.strip_prefix("--mqtt=").unwrap_or(arg);
        let lower = url.get(..8).unwrap_or(url).to_ascii_lowercase();
        (lower.starts_with("mqtt://") || lower.starts_with("mqtts://"))
            && MqttTarget::parse(url).is_ok_and(|t| t.password.is_some())
    })
}

/// Plain words for a connection error, when the error itself says too
/// little: refused credentials, or a broker that ended the TLS handshake
/// over the client certificate (the alert it sent arrives wrapped in I/O
/// errors). Meant for the lines that log connection failures.
pub fn connection_hint(e: &rumqttc::ConnectionError) -> Option<String> {
    use rumqttc::{ConnectReturnCode as Code, ConnectionError};
    use rustls::AlertDescription as Alert;
    if let ConnectionError::ConnectionRefused(code) = e {
        let hint = match code {
            Code::BadUserNamePassword | Code::NotAuthorized => {
                "the broker refused the credentials: check the user name (in the URL or mqtt.username) and the password (mqtt.password_file), or the client certificate's name; the broker may also not allow this client"
            }
            Code::BadClientId => "the broker refused the client id (mqtt.client_id)",
            Code::ServiceUnavailable => "the broker says it is unavailable",
            Code::RefusedProtocolVersion => "the broker does not accept MQTT 3.1.1",
            Code::Success => return None,
        };
        return Some(hint.to_owned());
    }
    let alert = received_alert(e)?;
    Some(match alert {
        Alert::CertificateRequired => "TLS: the broker requires a client certificate: set mqtt.client_cert and mqtt.client_key (campeer view: --client-cert, --client-key)".to_owned(),
        Alert::UnknownCA
        | Alert::BadCertificate
        | Alert::CertificateUnknown
        | Alert::CertificateExpired
        | Alert::CertificateRevoked
        | Alert::UnsupportedCertificate
        | Alert::AccessDenied => format!(
            "TLS: the broker refused this client's certificate ({alert:?}): is it signed by the CA the broker trusts, and valid now (is the clock right?)"
        ),
        other => format!("TLS: the broker ended the handshake ({other:?})"),
    })
}

/// The TLS alert the broker sent, if that is what `e` comes down to.
fn received_alert(e: &(dyn std::error::Error + 'static)) -> Option<rustls::AlertDescription> {
    let mut current = Some(e);
    while let Some(err) = current {
        if let Some(TlsError::AlertReceived(alert)) = err.downcast_ref::<TlsError>() {
            return Some(*alert);
        }
        // io::Error's source() skips the error it wraps: look inside.
        let inner = err
            .downcast_ref::<std::io::Error>()
            .and_then(|io| io.get_ref())
            .and_then(|inner| inner.downcast_ref::<TlsError>());
        if let Some(TlsError::AlertReceived(alert)) = inner {
            return Some(*alert);
        }
        current = err.source();
    }
    None
}

/// Logs the first failure and then every power of two, like the link's
/// own retry messages.
fn worth_logging(n: u32) -> bool {
    n <= 1 || n.is_power_of_two()
}

/// The standard WebPKI verifier, explaining its refusals in the log.
#[derive(Debug)]
struct ExplainingVerifier {
    inner: Arc<WebPkiServerVerifier>,
    broker: String,
    /// Where the trusted CAs came from, for the log.
    trusted: String,
    failures: AtomicU32,
}

impl ServerCertVerifier for ExplainingVerifier {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        server_name: &ServerName<'_>,
        ocsp_response: &[u8],
        now: UnixTime,
    ) -> Result<ServerCertVerified, TlsError> {
        let result = self.inner.verify_server_cert(
            end_entity,
            intermediates,
            server_name,
            ocsp_response,
            now,
        );
        match &result {
            Ok(_) => self.failures.store(0, Ordering::Relaxed),
            Err(e) => {
                let n = self
                    .failures
                    .fetch_add(1, Ordering::Relaxed)
                    .saturating_add(1);
                let why = explain_certificate_error(e, server_name, &self.trusted, now);
                if worth_logging(n) {
                    warn!(broker = %self.broker, attempt = n, "TLS: {why}");
                } else {
                    debug!(broker = %self.broker, attempt = n, "TLS: {why}");
                }
            }
        }
        result
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, TlsError> {
        self.inner.verify_tls12_signature(message, cert, dss)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, TlsError> {
        self.inner.verify_tls13_signature(message, cert, dss)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.inner.supported_verify_schemes()
    }
}

/// One sentence on why the broker's certificate was refused, with what to
/// do about it.
fn explain_certificate_error(
    e: &TlsError,
    server_name: &ServerName<'_>,
    trusted: &str,
    now: UnixTime,
) -> String {
    let clock = format_unix(now.as_secs());
    let TlsError::InvalidCertificate(ce) = e else {
        return format!("the broker's certificate was refused: {e}");
    };
    match ce {
        CertificateError::NotValidYet => format!(
            "certificate not valid yet: is the clock right? This machine says it is {clock} (a Raspberry Pi has no battery clock: wait for NTP)"
        ),
        CertificateError::NotValidYetContext { not_before, .. } => format!(
            "certificate not valid yet (valid from {}): is the clock right? This machine says it is {clock} (a Raspberry Pi has no battery clock: wait for NTP)",
            format_unix(not_before.as_secs())
        ),
        CertificateError::Expired => format!(
            "certificate expired: renew the broker's certificate, or check the clock (this machine says it is {clock})"
        ),
        CertificateError::ExpiredContext { not_after, .. } => format!(
            "certificate expired on {}: renew the broker's certificate, or check the clock (this machine says it is {clock})",
            format_unix(not_after.as_secs())
        ),
        CertificateError::UnknownIssuer => format!(
            "the broker's certificate is not signed by a CA in {trusted}: is that the CA that signed it? (a private CA needs mqtt.ca_file; campeer view: --ca-file)"
        ),
        CertificateError::NotValidForName | CertificateError::NotValidForNameContext { .. } => {
            format!(
                "the broker's certificate is not valid for {:?}, the host in the broker URL ({ce}); the certificate's subjectAltName must name it",
                server_name.to_str()
            )
        }
        other => format!("the broker's certificate was refused: {other}"),
    }
}

/// An HTTP date (`Tue, 08 Dec 2026 01:44:33 GMT`) for seconds since 1970;
/// times past what the system clock can hold read as the latest it can.
fn format_unix(secs: u64) -> String {
    let t = std::time::UNIX_EPOCH
        .checked_add(std::time::Duration::from_secs(secs.min(253_402_300_799)))
        .unwrap_or(std::time::UNIX_EPOCH);
    httpdate::fmt_http_date(t)
}

/// The client certificate, if any; says so in the log when the broker
/// asks for one that is not configured.
#[derive(Debug)]
struct ClientIdentity {
    key: Option<Arc<CertifiedKey>>,
    broker: String,
    asked: AtomicU32,
}

impl ResolvesClientCert for ClientIdentity {
    fn resolve(
        &self,
        _root_hint_subjects: &[&[u8]],
        _sigschemes: &[SignatureScheme],
    ) -> Option<Arc<CertifiedKey>> {
        if self.key.is_none() {
            let n = self.asked.fetch_add(1, Ordering::Relaxed).saturating_add(1);
            if worth_logging(n) {
                warn!(
                    broker = %self.broker,
                    "TLS: the broker asks for a client certificate, but none is configured (mqtt.client_cert and mqtt.client_key; campeer view: --client-cert and --client-key); it will likely refuse the connection"
                );
            }
        }
        self.key.clone()
    }

    fn has_certs(&self) -> bool {
        self.key.is_some()
    }
}

/// Signaling is a few small messages whose every millisecond counts
/// (offer to first frame): send them at once instead of letting Nagle's
/// algorithm hold a segment for the peer's delayed ACK (~40 ms on Linux).
pub fn send_without_delay(eventloop: &mut rumqttc::EventLoop) {
    let mut net = eventloop.network_options();
    net.set_tcp_nodelay(true);
    eventloop.set_network_options(net);
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::path::PathBuf;
    use std::process::Command;

    struct Dir(PathBuf);

    impl Dir {
        fn new(tag: &str) -> Dir {
            let p = std::env::temp_dir().join(format!(
                "campeer-mqtt-options-{tag}-{}-{}",
                std::process::id(),
                rand::random::<u32>()
            ));
            std::fs::create_dir_all(&p).unwrap();
            Dir(p)
        }
        fn path(&self, name: &str) -> PathBuf {
            self.0.join(name)
        }
        fn write(&self, name: &str, text: &str) -> PathBuf {
            let p = self.path(name);
            std::fs::write(&p, text).unwrap();
            p
        }
    }

    impl Drop for Dir {
        fn drop(&mut self) {
            let _ = std::fs::remove_dir_all(&self.0);
        }
    }

    /// Runs `openssl` with whitespace-separated `args` in `dir`.
    fn openssl(dir: &Dir, args: &str) {
        let args: Vec<&str> = args.split_whitespace().collect();
        let out = Command::new("openssl")
            .args(&args)
            .current_dir(&dir.0)
            .output()
            .expect("openssl is not installed (apt-get install openssl)");
        assert!(
            out.status.success(),
            "openssl {args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }

    /// A self-signed CA (`ca.crt`, `ca.key`), a client certificate signed
    /// by it (`client.crt`, `client.key`), the same as a version 1
    /// certificate (`v1.crt`), and an unrelated key (`other.key`).
    fn pki() -> Dir {
        let d = Dir::new("pki");
        d.write(
            "ext",
            "basicConstraints=CA:FALSE\nextendedKeyUsage=clientAuth\n",
        );
        let ec = "-newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes";
        openssl(
            &d,
            &format!("req -x509 {ec} -keyout ca.key -out ca.crt -days 2 -subj /CN=unit-ca"),
        );
        openssl(
            &d,
            &format!("req {ec} -keyout client.key -out client.csr -subj /CN=cam1"),
        );
        let sign = "x509 -req -in client.csr -CA ca.crt -CAkey ca.key -days 2";
        openssl(
            &d,
            &format!("{sign} -set_serial 7 -extfile ext -out client.crt"),
        );
        // Without extensions openssl makes a version 1 certificate.
        openssl(&d, &format!("{sign} -set_serial 8 -out v1.crt"));
        openssl(
            &d,
            &format!("req {ec} -keyout other.key -out other.csr -subj /CN=other"),
        );
        d
    }

    fn creds(opts: &MqttOptions) -> Option<(String, String)> {
        opts.credentials().map(|l| (l.username, l.password))
    }

    fn target(url: &str) -> MqttTarget {
        MqttTarget::parse(url).unwrap()
    }

    fn err(cfg: &MqttConfig, url: &str) -> MqttSetupError {
        let t = target(url);
        let e = mqtt_options(cfg, &t, "id").expect_err("should fail");
        assert_eq!(check(cfg, &t).expect_err("check should fail too"), e);
        e
    }

    #[test]
    fn plain_tcp_keeps_the_link_settings() {
        let cfg = MqttConfig::default();
        let opts = mqtt_options(&cfg, &target("mqtt://u:p@h:1884"), "campeer-cam1").unwrap();
        assert_eq!(opts.broker_address(), ("h".to_owned(), 1884));
        assert_eq!(opts.client_id(), "campeer-cam1");
        assert_eq!(opts.keep_alive(), Duration::from_secs(30));
        assert!(opts.clean_session());
        assert_eq!(opts.max_packet_size(), MAX_INCOMING_PACKET);
        assert_eq!(creds(&opts), Some(("u".into(), "p".into())));
        assert!(matches!(opts.transport(), Transport::Tcp));
        let opts = mqtt_options(&cfg, &target("mqtt://[::1]:1"), "x").unwrap();
        assert_eq!(opts.broker_address(), ("[::1]".to_owned(), 1));
        assert_eq!(creds(&opts), None);
        let short = MqttConfig {
            keepalive_secs: 1,
            ..MqttConfig::default()
        };
        let opts = mqtt_options(&short, &target("mqtt://h"), "x").unwrap();
        assert_eq!(opts.keep_alive(), Duration::from_secs(5));
    }

    #[test]
    fn tls_with_system_roots_uses_the_url_host() {
        let cfg = MqttConfig::default();
        let opts = mqtt_options(&cfg, &target("mqtts://broker.example"), "x").unwrap();
        assert_eq!(opts.broker_address(), ("broker.example".to_owned(), 8883));
        assert!(matches!(opts.transport(), Transport::Tls(_)));
        // IPv6: unbracketed, so rustls sees an IP server name.
        let opts = mqtt_options(&cfg, &target("mqtts://[::1]:8884"), "x").unwrap();
        assert_eq!(opts.broker_address(), ("::1".to_owned(), 8884));
        assert!(ServerName::try_from("::1").is_ok());
    }

    #[test]
    fn tls_with_ca_file_and_client_certificate() {
        let d = pki();
        let cfg = MqttConfig {
            ca_file: Some(d.path("ca.crt")),
            client_cert: Some(d.path("client.crt")),
            client_key: Some(d.path("client.key")),
            ..MqttConfig::default()
        };
        let t = target("mqtts://127.0.0.1:8883");
        check(&cfg, &t).unwrap();
        let opts = mqtt_options(&cfg, &t, "x").unwrap();
        let Transport::Tls(TlsConfiguration::Rustls(tls)) = opts.transport() else {
            panic!("not rustls")
        };
        assert!(tls.client_auth_cert_resolver.has_certs());
    }

    #[test]
    fn file_errors_name_the_file() {
        let d = pki();
        let missing = d.path("missing.pem");
        let e = err(
            &MqttConfig {
                ca_file: Some(missing.clone()),
                ..MqttConfig::default()
            },
            "mqtts://h",
        );
        assert_eq!(e.setting, Setting::CaFile);
        assert!(e.message.contains(&missing.display().to_string()), "{e}");
        assert!(
            e.to_string().starts_with("mqtt.ca_file: cannot read"),
            "{e}"
        );

        let junk = d.write("junk.pem", "hello\n");
        let e = err(
            &MqttConfig {
                ca_file: Some(junk.clone()),
                ..MqttConfig::default()
            },
            "mqtts://h",
        );
        assert!(
            e.message.contains("junk.pem holds no PEM certificate"),
            "{e}"
        );

        let broken = d.write(
            "broken.pem",
            "-----BEGIN CERTIFICATE-----\nMIIB!!!\n-----END CERTIFICATE-----\n",
        );
        let e = err(
            &MqttConfig {
                ca_file: Some(broken),
                ..MqttConfig::default()
            },
            "mqtts://h",
        );
        assert!(e.message.contains("broken.pem is not valid PEM"), "{e}");

        let e = err(
            &MqttConfig {
                client_cert: Some(d.path("client.crt")),
                client_key: Some(d.path("other.key")),
                ..MqttConfig::default()
            },
            "mqtts://h",
        );
        assert_eq!(e.setting, Setting::ClientKey);
        assert!(
            e.message
                .contains("other.key does not belong to the certificate in")
                && e.message.contains("client.crt"),
            "{e}"
        );
        let e = err(
            &MqttConfig {
                client_cert: Some(d.path("v1.crt")),
                client_key: Some(d.path("client.key")),
                ..MqttConfig::default()
            },
            "mqtts://h",
        );
        assert_eq!(e.setting, Setting::ClientCert);
        assert!(
            e.message
                .contains("v1.crt is not a usable client certificate"),
            "{e}"
        );
        // A certificate where the key should be.
        let e = err(
            &MqttConfig {
                client_cert: Some(d.path("client.crt")),
                client_key: Some(d.path("client.crt")),
                ..MqttConfig::default()
            },
            "mqtts://h",
        );
        assert!(e.message.contains("holds no PEM private key"), "{e}");
        // Key material never shows up in a message.
        let key_text = std::fs::read_to_string(d.path("other.key")).unwrap();
        let body = key_text.lines().nth(1).unwrap();
        let e = err(
            &MqttConfig {
                ca_file: Some(d.path("other.key")),
                ..MqttConfig::default()
            },
            "mqtts://h",
        );
        assert!(!e.to_string().contains(body), "{e}");
    }

    #[test]
    fn inconsistent_settings_are_refused() {
        let with = |f: fn(&mut MqttConfig)| {
            let mut c = MqttConfig::default();
            f(&mut c);
            c
        };
        let e = err(&with(|c| c.ca_file = Some("/x".into())), "mqtt://h");
        assert_eq!(e.setting, Setting::CaFile);
        assert!(e.message.contains("mqtts://"), "{e}");
        let e = err(&with(|c| c.client_cert = Some("/x".into())), "mqtts://h");
        assert_eq!(e.setting, Setting::ClientKey);
        let e = err(&with(|c| c.client_key = Some("/x".into())), "mqtts://h");
        assert_eq!(e.setting, Setting::ClientCert);
        let e = err(&with(|c| c.password_file = Some("/x".into())), "mqtts://h");
        assert_eq!(e.setting, Setting::PasswordFile);
        assert!(e.message.contains("user name"), "{e}");
        let e = err(
            &with(|c| c.password_file = Some("/x".into())),
            "mqtt://u:pw@h",
        );
        assert!(
            e.message.contains("one place") && !e.message.contains("pw"),
            "{e}"
        );
        let e = err(&MqttConfig::default(), "mqtts://a..b");
        assert_eq!(e.setting, Setting::Url);
        assert!(e.message.contains("a..b"), "{e}");
        let e = err(&with(|c| c.username = Some("a".into())), "mqtt://b@h");
        assert_eq!(e.setting, Setting::Username);
        let e = err(&with(|c| c.username = Some(String::new())), "mqtt://h");
        assert_eq!(e.setting, Setting::Username);
        let e = err(&with(|c| c.username = Some("a\nb".into())), "mqtt://h");
        assert!(e.message.contains("control"), "{e}");
        // The same user name twice is fine.
        let c = with(|c| c.username = Some("a".into()));
        mqtt_options(&c, &target("mqtt://a@h"), "x").unwrap();
    }

    #[test]
    fn password_file_gives_the_password() {
        let d = Dir::new("pw");
        let pw = d.write("pw", "s3cret\r\nignored\n");
        let cfg = MqttConfig {
            username: Some("cam1".into()),
            password_file: Some(pw),
            ..MqttConfig::default()
        };
        let opts = mqtt_options(&cfg, &target("mqtt://h"), "x").unwrap();
        assert_eq!(creds(&opts), Some(("cam1".into(), "s3cret".into())));
        // The URL's user name works as well.
        let cfg = MqttConfig {
            username: None,
            ..cfg
        };
        let opts = mqtt_options(&cfg, &target("mqtt://v@h"), "x").unwrap();
        assert_eq!(creds(&opts), Some(("v".into(), "s3cret".into())));

        let empty = d.write("empty", "\nsecond\n");
        let e = err(
            &MqttConfig {
                password_file: Some(empty),
                ..cfg.clone()
            },
            "mqtt://v@h",
        );
        assert!(e.message.contains("is empty"), "{e}");
        let binary = d.path("bin");
        std::fs::write(&binary, [0xff, 0xfe, b'x']).unwrap();
        let e = err(
            &MqttConfig {
                password_file: Some(binary),
                ..cfg.clone()
            },
            "mqtt://v@h",
        );
        assert!(e.message.contains("not UTF-8"), "{e}");
        let e = err(
            &MqttConfig {
                password_file: Some(d.path("nope")),
                ..cfg
            },
            "mqtt://v@h",
        );
        assert!(
            e.message.contains("cannot read") && e.message.contains("nope"),
            "{e}"
        );
    }

    #[test]
    fn a_password_on_the_command_line_is_noticed() {
        let args = |a: &[&str]| a.iter().map(std::ffi::OsString::from).collect::<Vec<_>>();
        assert!(password_in_args(args(&[
            "campeer",
            "run",
            "--mqtt",
            "mqtt://u:p@h"
        ])));
        assert!(password_in_args(args(&[
            "campeer",
            "view",
            "--mqtt=MQTTS://u:p@h:1"
        ])));
        assert!(!password_in_args(args(&[
            "campeer",
            "run",
            "--mqtt",
            "mqtt://u@h"
        ])));
        assert!(!password_in_args(args(&[
            "campeer", "run", "--mqtt", "u:p@h"
        ])));
        assert!(!password_in_args(args(&["campeer", "é", "mqtt://"])));
        assert!(!password_in_args(Vec::new()));
    }

    #[test]
    fn certificate_errors_are_explained() {
        let name = ServerName::try_from("broker.example").unwrap();
        let now = UnixTime::since_unix_epoch(Duration::from_secs(86_400));
        let explain = |ce: CertificateError| {
            explain_certificate_error(&TlsError::InvalidCertificate(ce), &name, "ca.pem", now)
        };
        let m = explain(CertificateError::NotValidYetContext {
            time: now,
            not_before: UnixTime::since_unix_epoch(Duration::from_secs(1_767_225_600)),
        });
        assert!(
            m.starts_with("certificate not valid yet (valid from Thu, 01 Jan 2026 00:00:00 GMT): is the clock right?")
                && m.contains("Fri, 02 Jan 1970 00:00:00 GMT"),
            "{m}"
        );
        assert!(explain(CertificateError::NotValidYet).contains("is the clock right?"));
        assert!(explain(CertificateError::Expired).contains("expired"));
        assert!(explain(CertificateError::UnknownIssuer).contains("not signed by a CA in ca.pem"));
        assert!(explain(CertificateError::NotValidForName).contains("\"broker.example\""));
        let m = explain_certificate_error(&TlsError::General("x".into()), &name, "ca.pem", now);
        assert!(m.contains("refused"), "{m}");
    }

    #[test]
    fn unix_times_format_as_utc_dates() {
        assert_eq!(format_unix(0), "Thu, 01 Jan 1970 00:00:00 GMT");
        assert_eq!(format_unix(951_782_400), "Tue, 29 Feb 2000 00:00:00 GMT");
        assert_eq!(format_unix(4_102_444_799), "Thu, 31 Dec 2099 23:59:59 GMT");
        assert_eq!(
            format_unix(1_709_164_800 + 3661),
            "Thu, 29 Feb 2024 01:01:01 GMT"
        );
        assert_eq!(format_unix(u64::MAX), "Fri, 31 Dec 9999 23:59:59 GMT");
    }

    #[test]
    fn connection_errors_get_hints() {
        use rumqttc::{ConnectReturnCode, ConnectionError, StateError};
        let refused = ConnectionError::ConnectionRefused(ConnectReturnCode::NotAuthorized);
        assert!(connection_hint(&refused).is_some_and(|h| h.contains("refused the credentials")));
        let refused = ConnectionError::ConnectionRefused(ConnectReturnCode::BadUserNamePassword);
        assert!(connection_hint(&refused).is_some_and(|h| h.contains("mqtt.password_file")));
        let alert = |a: rustls::AlertDescription| {
            std::io::Error::new(std::io::ErrorKind::InvalidData, TlsError::AlertReceived(a))
        };
        // As rumqttc reports it when the alert ends the CONNACK read.
        let e = ConnectionError::MqttState(StateError::Deserialization(
            rumqttc::mqttbytes::Error::Io(alert(rustls::AlertDescription::CertificateRequired)),
        ));
        assert!(
            connection_hint(&e).is_some_and(|h| h.contains("requires a client certificate")),
            "{e}"
        );
        let e = ConnectionError::Io(alert(rustls::AlertDescription::UnknownCA));
        assert!(connection_hint(&e)
            .is_some_and(|h| h.contains("refused this client's certificate (UnknownCA)")));
        let e = ConnectionError::Io(std::io::Error::other("connection reset"));
        assert_eq!(connection_hint(&e), None);
        assert_eq!(connection_hint(&ConnectionError::NetworkTimeout), None);
    }

    #[test]
    fn logging_is_thinned_out() {
        let logged: Vec<u32> = (1..=20).filter(|&n| worth_logging(n)).collect();
        assert_eq!(logged, [1, 2, 4, 8, 16]);
    }

    #[test]
    fn setting_names() {
        assert_eq!(Setting::CaFile.key(), "mqtt.ca_file");
        assert_eq!(Setting::CaFile.flag(), "--ca-file");
        assert_eq!(Setting::PasswordFile.flag(), "--password-file");
    }
}
