//! TLS termination: the certificates of `[server.tls]`, picked per handshake by SNI, and the
//! rustls server configuration the TLS listener hands each new connection.
//!
//! - **One crypto provider**, chosen in [`crypto_provider`] (ring): every rustls object here is
//!   built from it, so a change of provider is a change of one function.
//! - **Certificates by name.** A [`CertificateStore`] indexes each certificate under the DNS names
//!   of its subjectAltName: an exact name wins over a `*.` wildcard, which covers one label only
//!   (`*.example.com` matches `a.example.com`, not `example.com` nor `b.a.example.com`); names
//!   compare without regard to case. A handshake without SNI, or naming none of them, gets the
//!   first certificate of the config (the default).
//! - **Replaceable at run time.** The store sits behind an atomic pointer in a
//!   [`CertificateResolver`]: [`CertificateResolver::replace`] swaps it without a lock, and new
//!   handshakes use the new certificates while open connections keep theirs. A reload of the
//!   config builds a new resolver with the rest of the gateway (see [`crate::server`]); a
//!   certificate provider running beside the config (ACME) would hold the resolver and call
//!   `replace` when it renews.
//! - **TLS-ALPN-01** (RFC 8737): a handshake offering only the `acme-tls/1` protocol is answered
//!   from the resolver's challenge certificates ([`CertificateResolver::set_challenge`]), never
//!   with a site certificate. Nothing sets one yet; an ACME provider would also add
//!   [`ACME_TLS_ALPN`] to the server configuration's ALPN list.
//!
//! Files are read when the gateway is built, so a bad file is a config error located at its
//! `cert` or `key` value (a reload keeps the running certificates). Private keys are secrets: no
//! message ever includes a key file's contents, only its name.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use arc_swap::ArcSwap;
use rustls::crypto::CryptoProvider;
use rustls::server::{ClientHello, ResolvesServerCert, WebPkiClientVerifier};
use rustls::sign::CertifiedKey;
use rustls::{RootCertStore, ServerConfig};
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer};

use crate::config::{CertificateFiles, ConfigError, Source, TlsSettings};

/// The ALPN protocol of ACME TLS-ALPN-01 challenge handshakes (RFC 8737).
pub const ACME_TLS_ALPN: &[u8] = b"acme-tls/1";

/// `strata check` and the server warn about certificates expiring within this time.
pub const EXPIRY_WARNING: Duration = Duration::from_secs(14 * 24 * 3600);

/// The cryptography of every TLS connection the gateway accepts or makes (see
/// [`crate::tls_client`]): rustls's *ring* provider, made once. The one place to change provider.
pub fn crypto_provider() -> Arc<CryptoProvider> {
    static PROVIDER: std::sync::OnceLock<Arc<CryptoProvider>> = std::sync::OnceLock::new();
    PROVIDER.get_or_init(|| Arc::new(rustls::crypto::ring::default_provider())).clone()
}

/// Certificates indexed by the DNS names they are valid for, with a default.
#[derive(Debug)]
pub struct CertificateStore {
    /// Exact names, lowercase.
    exact: HashMap<String, Arc<CertifiedKey>>,
    /// `*.example.com` under `example.com`, lowercase.
    wildcard: HashMap<String, Arc<CertifiedKey>>,
    /// For handshakes without SNI or with a name no certificate has.
    default: Arc<CertifiedKey>,
}

impl CertificateStore {
    /// A store of `certificates`, each with its DNS names; the first is the default. A name two
    /// certificates share goes to the first. `None` when `certificates` is empty.
    pub fn new(certificates: Vec<(Arc<CertifiedKey>, Vec<String>)>) -> Option<Self> {
        let default = certificates.first()?.0.clone();
        let mut store = CertificateStore { exact: HashMap::new(), wildcard: HashMap::new(), default };
        for (key, names) in certificates {
            for name in names {
                let name = normalize(&name);
                let index = match name.strip_prefix("*.") {
                    Some(parent) => (&mut store.wildcard, parent.to_string()),
                    None => (&mut store.exact, name),
                };
                index.0.entry(index.1).or_insert_with(|| key.clone());
            }
        }
        Some(store)
    }

    /// The certificate for `server_name` (the client's SNI): an exact name, then a wildcard one
    /// label up, then the default.
    pub fn find(&self, server_name: Option<&str>) -> Arc<CertifiedKey> {
        server_name.and_then(|name| self.matching(&normalize(name))).unwrap_or(&self.default).clone()
    }

    fn matching(&self, name: &str) -> Option<&Arc<CertifiedKey>> {
        self.exact.get(name).or_else(|| {
            // `*` stands for one whole label, never an empty one.
            let (label, parent) = name.split_once('.')?;
            if label.is_empty() { None } else { self.wildcard.get(parent) }
        })
    }
}

/// Lowercase, without a trailing dot (an absolute DNS name is the same name).
fn normalize(name: &str) -> String {
    name.strip_suffix('.').unwrap_or(name).to_ascii_lowercase()
}

/// Answers each handshake's certificate from a replaceable [`CertificateStore`].
#[derive(Debug)]
pub struct CertificateResolver {
    store: ArcSwap<CertificateStore>,
    /// TLS-ALPN-01 challenge certificates by lowercase name.
    challenges: ArcSwap<HashMap<String, Arc<CertifiedKey>>>,
}

impl CertificateResolver {
    /// Serves `store` until it is replaced.
    pub fn new(store: CertificateStore) -> Self {
        CertificateResolver { store: ArcSwap::from_pointee(store), challenges: ArcSwap::from_pointee(HashMap::new()) }
    }

    /// New handshakes get their certificates from `store`; established connections are untouched.
    pub fn replace(&self, store: CertificateStore) {
        self.store.store(Arc::new(store));
    }

    /// Answers `acme-tls/1` handshakes for `name` with `certificate` (the challenge certificate
    /// of RFC 8737 §3), until [`Self::clear_challenge`].
    pub fn set_challenge(&self, name: &str, certificate: Arc<CertifiedKey>) {
        self.challenges.rcu(|current| {
            let mut next = HashMap::clone(current);
            next.insert(normalize(name), certificate.clone());
            next
        });
    }

    /// Stops answering `acme-tls/1` handshakes for `name`.
    pub fn clear_challenge(&self, name: &str) {
        self.challenges.rcu(|current| {
            let mut next = HashMap::clone(current);
            next.remove(&normalize(name));
            next
        });
    }

    /// The certificate for a handshake naming `server_name` and, when `acme` is set, asking for
    /// the `acme-tls/1` protocol: only a challenge certificate answers those (none refuses the
    /// handshake), so a validation server never sees a site certificate.
    pub fn pick(&self, server_name: Option<&str>, acme: bool) -> Option<Arc<CertifiedKey>> {
        if acme {
            return server_name.and_then(|name| self.challenges.load().get(&normalize(name)).cloned());
        }
        Some(self.store.load().find(server_name))
    }
}

impl ResolvesServerCert for CertificateResolver {
    fn resolve(&self, client_hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        let acme = client_hello.alpn().is_some_and(|mut protocols| protocols.any(|p| p == ACME_TLS_ALPN));
        self.pick(client_hello.server_name(), acme)
    }
}

/// What `strata check` reports about one loaded certificate.
#[derive(Clone, Debug)]
pub struct CertificateInfo {
    /// The certificate file, as resolved from the config's directory.
    pub file: PathBuf,
    /// The DNS names of its subjectAltName.
    pub names: Vec<String>,
    /// Its `notAfter`, in seconds since the Unix epoch.
    pub not_after: i64,
    /// Its `notAfter` as a date, `YYYY-MM-DD` (UTC).
    pub not_after_date: String,
}

impl CertificateInfo {
    /// A warning when the certificate has expired at `now` or expires within [`EXPIRY_WARNING`].
    pub fn expiry_warning(&self, now: SystemTime) -> Option<String> {
        let now =
            now.duration_since(SystemTime::UNIX_EPOCH).map_or(0, |d| i64::try_from(d.as_secs()).unwrap_or(i64::MAX));
        let left = self.not_after.saturating_sub(now);
        let file = self.file.display();
        let date = &self.not_after_date;
        if left <= 0 {
            Some(format!("certificate {file} expired on {date}"))
        } else if left < i64::try_from(EXPIRY_WARNING.as_secs()).unwrap_or(i64::MAX) {
            // Rounded: a certificate made for two days says two days, not one, a second later.
            let when = match (left + 12 * 3600) / (24 * 3600) {
                0 => "under a day".to_string(),
                1 => "1 day".to_string(),
                days => format!("{days} days"),
            };
            Some(format!("certificate {file} expires on {date} (in {when})"))
        } else {
            None
        }
    }
}

/// The TLS side of a built gateway: the configuration handshakes use, and what was loaded.
#[derive(Clone, Debug)]
pub struct TlsSetup {
    /// The rustls configuration of new handshakes.
    pub server_config: Arc<ServerConfig>,
    /// Its certificate resolver, to replace certificates without a reload.
    pub resolver: Arc<CertificateResolver>,
    /// Each certificate's file, names and expiry, in config order.
    pub certificates: Vec<CertificateInfo>,
}

/// Reads the certificates, keys and client CA bundle of `settings` (paths relative to
/// `base_dir`) and builds the rustls configuration: TLS 1.2 and 1.3, ALPN `h2` then `http/1.1`
/// (`http/1.1` alone without `http2`). Every unreadable or inconsistent file is an error at its
/// value in the config.
pub fn build(
    settings: &TlsSettings,
    http2: bool,
    source: Source<'_>,
    base_dir: &Path,
) -> Result<TlsSetup, Vec<ConfigError>> {
    let provider = crypto_provider();
    let mut errors = Vec::new();
    let mut loaded = Vec::new();
    let mut certificates = Vec::new();
    for files in &settings.certificates {
        match load_pair(files, &provider, source, base_dir) {
            Ok((key, info)) => {
                loaded.push((key, info.names.clone()));
                certificates.push(info);
            }
            Err(e) => errors.extend(e),
        }
    }
    let verifier = settings.client_auth.as_ref().and_then(|auth| {
        let path = base_dir.join(&auth.ca);
        let error =
            |message: String| source.error(auth.ca_span.clone(), format!("`client_ca`: {}: {message}", path.display()));
        let certs = match read_certificates(&path) {
            Ok(certs) => certs,
            Err(message) => {
                errors.push(error(message));
                return None;
            }
        };
        let mut roots = RootCertStore::empty();
        let (_, rejected) = roots.add_parsable_certificates(certs);
        if rejected > 0 || roots.is_empty() {
            errors.push(error("expected PEM CA certificates that parse as X.509".to_string()));
            return None;
        }
        let builder = WebPkiClientVerifier::builder_with_provider(Arc::new(roots), provider.clone());
        let builder = if auth.required { builder } else { builder.allow_unauthenticated() };
        builder.build().map_err(|e| errors.push(error(format!("cannot verify clients with it: {e}")))).ok()
    });
    if !errors.is_empty() {
        return Err(errors);
    }
    let Some(store) = CertificateStore::new(loaded) else {
        // Parsing refuses an empty `certificates`.
        return Err(vec![source.error(0..0, "`[server.tls]` has no certificates")]);
    };
    let resolver = Arc::new(CertificateResolver::new(store));
    let config_error = |e: rustls::Error| vec![source.error(0..0, format!("`[server.tls]`: {e}"))];
    let builder = ServerConfig::builder_with_provider(provider)
        .with_protocol_versions(&[&rustls::version::TLS13, &rustls::version::TLS12])
        .map_err(config_error)?;
    let builder = match verifier {
        Some(verifier) => builder.with_client_cert_verifier(verifier),
        None => builder.with_no_client_auth(),
    };
    let mut server_config = builder.with_cert_resolver(resolver.clone());
    server_config.alpn_protocols =
        if http2 { vec![b"h2".to_vec(), b"http/1.1".to_vec()] } else { vec![b"http/1.1".to_vec()] };
    Ok(TlsSetup { server_config: Arc::new(server_config), resolver, certificates })
}

/// One certificate chain and its key, checked against each other.
fn load_pair(
    files: &CertificateFiles,
    provider: &CryptoProvider,
    source: Source<'_>,
    base_dir: &Path,
) -> Result<(Arc<CertifiedKey>, CertificateInfo), Vec<ConfigError>> {
    let cert_path = base_dir.join(&files.cert);
    let key_path = base_dir.join(&files.key);
    let cert_error =
        |message: String| source.error(files.cert_span.clone(), format!("`cert`: {}: {message}", cert_path.display()));
    let key_error =
        |message: String| source.error(files.key_span.clone(), format!("`key`: {}: {message}", key_path.display()));
    let chain = read_certificates(&cert_path).map_err(cert_error);
    let key = read_private_key(&key_path, provider).map_err(key_error);
    let (chain, key) = match (chain, key) {
        (Ok(chain), Ok(key)) => (chain, key),
        (chain, key) => return Err(chain.err().into_iter().chain(key.err()).collect()),
    };
    let info = describe(&cert_path, &chain[0]).map_err(|m| vec![cert_error(m)])?;
    let certified = CertifiedKey::new(chain, key);
    // A key that cannot tell its public half (`Unknown`) is left to the first handshake.
    if let Err(rustls::Error::InconsistentKeys(rustls::InconsistentKeys::KeyMismatch)) = certified.keys_match() {
        return Err(vec![key_error(format!("the key does not match the certificate in {}", cert_path.display()))]);
    }
    Ok((Arc::new(certified), info))
}

/// The certificates of a PEM file, in order.
fn read_certificates(path: &Path) -> Result<Vec<CertificateDer<'static>>, String> {
    let bytes = std::fs::read(path).map_err(|e| format!("cannot read the file: {e}"))?;
    let certs: Vec<CertificateDer<'static>> =
        CertificateDer::pem_slice_iter(&bytes).collect::<Result<_, _>>().map_err(|_| {
            "expected PEM certificates (`-----BEGIN CERTIFICATE-----`); the file is not valid PEM".to_string()
        })?;
    if certs.is_empty() {
        return Err("no PEM certificate (`-----BEGIN CERTIFICATE-----`) in the file".to_string());
    }
    Ok(certs)
}

/// The private key of a PEM file, loaded by the crypto provider. The messages never quote the
/// file: its contents are a secret.
fn read_private_key(path: &Path, provider: &CryptoProvider) -> Result<Arc<dyn rustls::sign::SigningKey>, String> {
    let bytes = std::fs::read(path).map_err(|e| format!("cannot read the file: {e}"))?;
    let key = PrivateKeyDer::from_pem_slice(&bytes).map_err(|e| match e {
        rustls_pki_types::pem::Error::NoItemsFound => {
            "no PEM private key (PKCS#8 `PRIVATE KEY`, `RSA PRIVATE KEY` or `EC PRIVATE KEY`) in the file".to_string()
        }
        _ => "expected a PEM private key; the file is not valid PEM".to_string(),
    })?;
    provider
        .key_provider
        .load_private_key(key)
        .map_err(|_| "the private key cannot be used: expected an RSA, ECDSA (P-256, P-384) or Ed25519 key".to_string())
}

/// The leaf certificate's DNS names and expiry.
fn describe(path: &Path, leaf: &CertificateDer<'_>) -> Result<CertificateInfo, String> {
    let (_, cert) = x509_parser::parse_x509_certificate(leaf.as_ref())
        .map_err(|e| format!("the first certificate is not valid X.509: {e}"))?;
    let names = match cert.subject_alternative_name() {
        Ok(Some(san)) => san
            .value
            .general_names
            .iter()
            .filter_map(|name| match name {
                x509_parser::extensions::GeneralName::DNSName(dns) => Some((*dns).to_string()),
                _ => None,
            })
            .collect(),
        Ok(None) => Vec::new(),
        Err(e) => return Err(format!("its subjectAltName cannot be read: {e}")),
    };
    let not_after = cert.validity().not_after;
    Ok(CertificateInfo {
        file: path.to_path_buf(),
        names,
        not_after: not_after.timestamp(),
        not_after_date: not_after.to_datetime().date().to_string(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A certified key whose certificate is `label` (the tests compare certificates, not keys).
    fn key(label: &str) -> Arc<CertifiedKey> {
        let signing = rcgen::KeyPair::generate().unwrap();
        let der = rustls_pki_types::PrivatePkcs8KeyDer::from(signing.serialize_der());
        let signer = crypto_provider().key_provider.load_private_key(der.into()).unwrap();
        Arc::new(CertifiedKey::new(vec![CertificateDer::from(label.as_bytes().to_vec())], signer))
    }

    fn label(key: &CertifiedKey) -> &str {
        std::str::from_utf8(key.cert[0].as_ref()).unwrap()
    }

    fn store() -> CertificateStore {
        CertificateStore::new(vec![
            (key("site"), vec!["example.com".into(), "www.example.com".into()]),
            (key("api"), vec!["API.example.com".into()]),
            (key("wild"), vec!["*.example.com".into()]),
            (key("late"), vec!["example.com".into()]),
        ])
        .unwrap()
    }

    #[test]
    fn exact_names_win_over_wildcards() {
        let store = store();
        assert_eq!(label(&store.find(Some("example.com"))), "site");
        assert_eq!(label(&store.find(Some("www.example.com"))), "site");
        assert_eq!(label(&store.find(Some("api.example.com"))), "api");
        assert_eq!(label(&store.find(Some("other.example.com"))), "wild");
    }

    #[test]
    fn a_wildcard_covers_one_label_only() {
        let store = store();
        assert_eq!(label(&store.find(Some("b.a.example.com"))), "site", "two labels deep: the default");
        let only_wild =
            CertificateStore::new(vec![(key("fallback"), vec![]), (key("wild"), vec!["*.example.com".into()])])
                .unwrap();
        assert_eq!(label(&only_wild.find(Some("example.com"))), "fallback", "the wildcard's parent is not covered");
        assert_eq!(label(&only_wild.find(Some("a.example.com"))), "wild");
        assert_eq!(label(&only_wild.find(Some(".example.com"))), "fallback");
    }

    #[test]
    fn names_compare_without_case_or_trailing_dot() {
        let store = store();
        assert_eq!(label(&store.find(Some("API.Example.COM"))), "api");
        assert_eq!(label(&store.find(Some("api.example.com."))), "api");
        assert_eq!(label(&store.find(Some("Other.EXAMPLE.com"))), "wild");
    }

    #[test]
    fn no_sni_or_an_unknown_name_gets_the_first_certificate() {
        let store = store();
        assert_eq!(label(&store.find(None)), "site");
        assert_eq!(label(&store.find(Some("example.org"))), "site");
        assert_eq!(label(&store.find(Some("localhost"))), "site");
        assert!(CertificateStore::new(Vec::new()).is_none());
    }

    #[test]
    fn acme_handshakes_get_only_challenge_certificates() {
        let resolver = CertificateResolver::new(store());
        assert!(resolver.pick(Some("example.com"), true).is_none(), "no challenge: refused, not a site certificate");
        resolver.set_challenge("Example.com", key("challenge"));
        assert_eq!(label(&resolver.pick(Some("example.com"), true).unwrap()), "challenge");
        assert_eq!(label(&resolver.pick(Some("example.com"), false).unwrap()), "site");
        resolver.clear_challenge("example.com");
        assert!(resolver.pick(Some("example.com"), true).is_none());
    }

    #[test]
    fn a_replaced_store_serves_new_handshakes() {
        let resolver = CertificateResolver::new(store());
        resolver.replace(CertificateStore::new(vec![(key("renewed"), vec!["example.com".into()])]).unwrap());
        assert_eq!(label(&resolver.pick(Some("example.com"), false).unwrap()), "renewed");
    }

    #[test]
    fn expiry_warnings_start_two_weeks_ahead() {
        let now = SystemTime::UNIX_EPOCH + Duration::from_secs(1_000_000_000);
        let info = |days: i64| CertificateInfo {
            file: PathBuf::from("site.pem"),
            names: Vec::new(),
            not_after: 1_000_000_000 + days * 24 * 3600 + 60,
            not_after_date: "2001-09-09".into(),
        };
        assert_eq!(info(30).expiry_warning(now), None);
        assert_eq!(info(14).expiry_warning(now), None);
        assert_eq!(info(5).expiry_warning(now).unwrap(), "certificate site.pem expires on 2001-09-09 (in 5 days)");
        assert_eq!(info(-2).expiry_warning(now).unwrap(), "certificate site.pem expired on 2001-09-09");
    }
}
