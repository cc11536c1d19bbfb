//! TLS to `https://` upstreams: which certificates are trusted, which name is verified, and the
//! connectors that speak it.
//!
//! - **Trust.** By default the upstream's certificate must chain to one of the system's roots
//!   (read once per process by `rustls-native-certs`: the roots the operator's OS keeps up to date,
//!   which is where an internal CA is usually installed too). A route's `tls_ca_file` replaces
//!   them: only the CAs in that PEM bundle are trusted for that route.
//! - **Name.** The name sent as SNI and verified is the upstream URL's host, or the route's
//!   `tls_server_name` (for an upstream reached by an address its certificate does not name). An
//!   IP address is verified against the certificate's IP SANs.
//! - **`insecure_skip_verify`** accepts any certificate. The handshake's signatures are still
//!   checked against the certificate's key (so the session is at least with the holder of that key),
//!   but nothing says who that is: `strata check` and the server's log warn about it.
//! - **Crypto** is rustls with *ring*, through [`crypto_provider`], everywhere in the gateway.
//! - **ALPN** offers exactly the protocol the route speaks: `h2` for `http2 = true`, else
//!   `http/1.1`, so a server that speaks both never picks the one the connection is not ready for.

use std::path::Path;
use std::sync::{Arc, OnceLock};

use hyper_rustls::{FixedServerNameResolver, HttpsConnector};
use hyper_util::client::legacy::connect::HttpConnector;
use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::crypto::CryptoProvider;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
use rustls::{ClientConfig, DigitallySignedStruct, RootCertStore, SignatureScheme};
use tokio::net::TcpStream;
use tokio_rustls::TlsConnector;
use tokio_rustls::client::TlsStream;

use crate::config::UpstreamTlsOptions;

pub use crate::tls::crypto_provider;

/// The system's trusted roots, read once per process (a reload does not read them again).
fn system_roots() -> Arc<RootCertStore> {
    static ROOTS: OnceLock<Arc<RootCertStore>> = OnceLock::new();
    ROOTS
        .get_or_init(|| {
            let found = rustls_native_certs::load_native_certs();
            let mut roots = RootCertStore::empty();
            let (added, ignored) = roots.add_parsable_certificates(found.certs);
            for error in &found.errors {
                tracing::warn!(%error, "could not read some of the system's trusted certificates");
            }
            if added == 0 {
                // Every https upstream without `tls_ca_file` will then fail its handshake, each
                // failure saying `UnknownIssuer`: this line says why.
                tracing::warn!(
                    ignored,
                    "no trusted root certificates found on this system; https upstreams need `tls_ca_file`"
                );
            }
            Arc::new(roots)
        })
        .clone()
}

/// The CA certificates of a PEM bundle, as a root store; an error names the file and what is
/// wrong with it (unreadable, not PEM, no certificate, a certificate that does not parse).
pub fn load_ca_file(path: &Path) -> Result<RootCertStore, String> {
    let shown = path.display();
    let pem = std::fs::read(path).map_err(|e| format!("`tls_ca_file`: cannot read `{shown}`: {e}"))?;
    let mut roots = RootCertStore::empty();
    for (index, cert) in CertificateDer::pem_slice_iter(&pem).enumerate() {
        let cert = cert.map_err(|e| format!("`tls_ca_file`: `{shown}` is not a valid PEM file: {e}"))?;
        roots
            .add(cert)
            .map_err(|e| format!("`tls_ca_file`: certificate {} in `{shown}` is not usable: {e}", index + 1))?;
    }
    if roots.is_empty() {
        return Err(format!("`tls_ca_file`: `{shown}` holds no `BEGIN CERTIFICATE` block"));
    }
    Ok(roots)
}

/// A `tls_server_name` (or an upstream's host) as the name TLS sends and verifies: a DNS name, or
/// an IP address (with or without the brackets of a URL's IPv6 host).
pub fn parse_server_name(name: &str) -> Result<ServerName<'static>, String> {
    let bare = name.strip_prefix('[').and_then(|n| n.strip_suffix(']')).unwrap_or(name);
    ServerName::try_from(bare.to_string())
        .map_err(|_| format!("`{name}`: expected a DNS name (e.g. \"api.internal\") or an IP address"))
}

/// How one route's connections to its `https://` upstream are made: the client configuration
/// (trust, ALPN) and the name verified. Built once with the route, shared by its connections.
pub struct UpstreamTls {
    config: Arc<ClientConfig>,
    server_name: ServerName<'static>,
    /// Whether `server_name` is the route's `tls_server_name` (the same for every target) rather
    /// than this target's host.
    name_fixed: bool,
}

impl std::fmt::Debug for UpstreamTls {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("UpstreamTls")
            .field("server_name", &self.server_name)
            .field("alpn", &self.config.alpn_protocols)
            .finish()
    }
}

impl UpstreamTls {
    /// The TLS of a route whose upstream's host is `host`: `options` say what is trusted and which
    /// name is verified (a relative `tls_ca_file` is found in `base_dir`), `http2` which protocol
    /// ALPN offers. An error is a sentence about `tls_ca_file` or the name, for a config error.
    pub fn new(host: &str, options: &UpstreamTlsOptions, base_dir: &Path, http2: bool) -> Result<UpstreamTls, String> {
        let server_name = parse_server_name(options.server_name.as_deref().unwrap_or(host))?;
        let builder = ClientConfig::builder_with_provider(crypto_provider())
            .with_safe_default_protocol_versions()
            .map_err(|e| format!("TLS: {e}"))?;
        let mut config = if options.insecure_skip_verify {
            builder
                .dangerous()
                .with_custom_certificate_verifier(Arc::new(AnyCertificate(crypto_provider())))
                .with_no_client_auth()
        } else {
            let roots = match &options.ca_file {
                Some((path, _)) => {
                    let path = if path.is_absolute() { path.clone() } else { base_dir.join(path) };
                    Arc::new(load_ca_file(&path)?)
                }
                None => system_roots(),
            };
            builder.with_root_certificates(roots).with_no_client_auth()
        };
        config.alpn_protocols = vec![if http2 { b"h2".to_vec() } else { b"http/1.1".to_vec() }];
        Ok(UpstreamTls { config: Arc::new(config), server_name, name_fixed: options.server_name.is_some() })
    }

    /// Runs the TLS handshake over a connected `tcp`: the certificate is verified and ALPN agreed,
    /// or the error says why not (e.g. `invalid peer certificate: UnknownIssuer`).
    pub async fn handshake(&self, tcp: TcpStream) -> std::io::Result<TlsStream<TcpStream>> {
        TlsConnector::from(self.config.clone()).connect(self.server_name.clone(), tcp).await
    }

    /// A connector for hyper-util's client that speaks this TLS, and only TLS, over `http`. It
    /// serves every target of the route: the name verified is `tls_server_name` when set, else
    /// each request's own host.
    pub fn connector(&self, http: HttpConnector) -> HttpsConnector<HttpConnector> {
        if self.name_fixed {
            let resolver = Arc::new(FixedServerNameResolver::new(self.server_name.clone()));
            HttpsConnector::new(http, self.config.clone(), true, resolver)
        } else {
            let resolver = Arc::new(hyper_rustls::DefaultServerNameResolver::default());
            HttpsConnector::new(http, self.config.clone(), true, resolver)
        }
    }
}

/// A connector for hyper-util's client to a plain `http://` upstream: the same connector type as
/// [`UpstreamTls::connector`]'s, whose TLS side is never used (it trusts nothing, so it could
/// not connect anywhere if it were).
pub fn plain_connector(http: HttpConnector) -> HttpsConnector<HttpConnector> {
    static TRUSTS_NOTHING: OnceLock<Arc<ClientConfig>> = OnceLock::new();
    let config = TRUSTS_NOTHING.get_or_init(|| {
        let config = ClientConfig::builder_with_provider(crypto_provider())
            .with_safe_default_protocol_versions()
            .map(|b| b.with_root_certificates(RootCertStore::empty()).with_no_client_auth());
        // The ring provider supports the default versions: this cannot fail.
        Arc::new(config.expect("ring supports TLS 1.2 and 1.3"))
    });
    HttpsConnector::new(http, config.clone(), false, Arc::new(hyper_rustls::DefaultServerNameResolver::default()))
}

/// The verifier of `insecure_skip_verify = true`: any certificate, for any name, is accepted. The
/// handshake's signatures are still verified with the certificate's key.
#[derive(Debug)]
struct AnyCertificate(Arc<CryptoProvider>);

impl ServerCertVerifier for AnyCertificate {
    fn verify_server_cert(
        &self,
        _end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp_response: &[u8],
        _now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        Ok(ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(message, cert, dss, &self.0.signature_verification_algorithms)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(message, cert, dss, &self.0.signature_verification_algorithms)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.0.signature_verification_algorithms.supported_schemes()
    }
}

/// The client middlewares send their own requests with (an auth service's, a JWKS endpoint's):
/// `http://` and `https://`, HTTP/1.1, certificates checked against the system's trusted roots.
/// One per process, so its connection pool is shared by every layer and outlives reloads.
pub fn services_client() -> Arc<dyn strata::http::client::HttpClient> {
    static CLIENT: OnceLock<Arc<dyn strata::http::client::HttpClient>> = OnceLock::new();
    CLIENT
        .get_or_init(|| {
            let config = ClientConfig::builder_with_provider(crypto_provider())
                .with_safe_default_protocol_versions()
                .map(|b| b.with_root_certificates(system_roots()).with_no_client_auth());
            // The ring provider supports the default versions: this cannot fail.
            let mut config = config.expect("ring supports TLS 1.2 and 1.3");
            config.alpn_protocols = vec![b"http/1.1".to_vec()];
            let mut http = HttpConnector::new();
            http.enforce_http(false);
            http.set_nodelay(true);
            let resolver = Arc::new(hyper_rustls::DefaultServerNameResolver::default());
            let connector = HttpsConnector::new(http, Arc::new(config), false, resolver);
            let client = hyper_util::client::legacy::Client::builder(hyper_util::rt::TokioExecutor::new())
                .build::<_, strata::http::Body>(connector);
            Arc::new(move |req: http::Request<strata::http::Body>| {
                let sent = client.request(req);
                async move { Ok(sent.await?.map(strata::http::Body::from)) }
            })
        })
        .clone()
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::path::PathBuf;

    /// A new self-signed CA certificate (made each time: a fixed one would expire).
    fn ca_cert() -> rcgen::Certificate {
        let mut params = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap();
        params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
        params.self_signed(&rcgen::KeyPair::generate().unwrap()).unwrap()
    }

    fn ca_pem() -> String {
        ca_cert().pem()
    }

    fn options(ca_file: Option<&Path>, server_name: Option<&str>, insecure: bool) -> UpstreamTlsOptions {
        UpstreamTlsOptions {
            ca_file: ca_file.map(|p| (p.to_path_buf(), 0..0)),
            server_name: server_name.map(str::to_string),
            insecure_skip_verify: insecure,
        }
    }

    #[test]
    fn server_names_are_dns_names_or_ip_addresses() {
        assert!(matches!(parse_server_name("api.internal"), Ok(ServerName::DnsName(_))));
        assert!(matches!(parse_server_name("127.0.0.1"), Ok(ServerName::IpAddress(_))));
        assert!(matches!(parse_server_name("[::1]"), Ok(ServerName::IpAddress(_))), "a URL's IPv6 host");
        for bad in ["", "not a name", "api..internal", "http://api"] {
            let e = parse_server_name(bad).unwrap_err();
            assert!(e.contains("expected a DNS name"), "{bad}: {e}");
        }
    }

    #[test]
    fn a_ca_file_is_read_whole_and_its_problems_name_it() {
        let dir = tempfile::tempdir().unwrap();
        let bundle = dir.path().join("bundle.pem");
        std::fs::write(&bundle, format!("# two CAs\n{}{}", ca_pem(), ca_pem())).unwrap();
        assert_eq!(load_ca_file(&bundle).unwrap().len(), 2);

        let missing = dir.path().join("missing.pem");
        let e = load_ca_file(&missing).unwrap_err();
        assert!(e.starts_with("`tls_ca_file`: cannot read `") && e.contains("missing.pem"), "{e}");
        let empty = dir.path().join("empty.pem");
        std::fs::write(&empty, "").unwrap();
        assert!(load_ca_file(&empty).unwrap_err().contains("holds no `BEGIN CERTIFICATE` block"));
        let garbage = dir.path().join("garbage.pem");
        std::fs::write(&garbage, "-----BEGIN CERTIFICATE-----\nnot base64!\n-----END CERTIFICATE-----\n").unwrap();
        let e = load_ca_file(&garbage).unwrap_err();
        assert!(e.contains("garbage.pem"), "{e}");
    }

    #[test]
    fn a_relative_ca_file_is_found_beside_the_config() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("ca.pem"), ca_pem()).unwrap();
        let relative = options(Some(Path::new("ca.pem")), None, false);
        assert!(UpstreamTls::new("h", &relative, dir.path(), false).is_ok());
        let e = UpstreamTls::new("h", &relative, &PathBuf::from("/nonexistent-dir"), false).unwrap_err();
        assert!(e.contains("/nonexistent-dir/ca.pem"), "{e}");
    }

    #[test]
    fn alpn_offers_the_routes_one_protocol_and_the_name_can_be_overridden() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("ca.pem"), ca_pem()).unwrap();
        let ca = options(Some(Path::new("ca.pem")), None, false);
        let h1 = UpstreamTls::new("10.0.0.5", &ca, dir.path(), false).unwrap();
        assert_eq!(h1.config.alpn_protocols, [b"http/1.1".to_vec()]);
        assert!(matches!(h1.server_name, ServerName::IpAddress(_)), "the URL's host, an IP");
        let h2 = UpstreamTls::new("10.0.0.5", &ca, dir.path(), true).unwrap();
        assert_eq!(h2.config.alpn_protocols, [b"h2".to_vec()]);
        let named = options(Some(Path::new("ca.pem")), Some("api.internal"), false);
        let tls = UpstreamTls::new("10.0.0.5", &named, dir.path(), false).unwrap();
        assert_eq!(tls.server_name.to_str(), "api.internal");
    }

    #[test]
    fn insecure_skip_verify_accepts_any_certificate_for_any_name() {
        // No CA file is read, whatever the directory.
        assert!(UpstreamTls::new("h", &options(None, None, true), Path::new("/nonexistent-dir"), false).is_ok());
        let cert = ca_cert();
        let name = ServerName::try_from("anything.example").unwrap();
        let verifier = AnyCertificate(crypto_provider());
        assert!(verifier.verify_server_cert(cert.der(), &[], &name, &[], UnixTime::now()).is_ok());
        // Whereas the same certificate, trusted by nobody, is refused by the usual verifier.
        let usual = rustls::client::WebPkiServerVerifier::builder_with_provider(
            Arc::new(load_ca_file_from_pem(&ca_pem())),
            crypto_provider(),
        )
        .build()
        .unwrap();
        let e = usual.verify_server_cert(cert.der(), &[], &name, &[], UnixTime::now()).unwrap_err();
        assert!(e.to_string().contains("invalid peer certificate"), "{e}");
        assert!(!verifier.supported_verify_schemes().is_empty(), "handshake signatures are still checked");
    }

    fn load_ca_file_from_pem(pem: &str) -> RootCertStore {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("ca.pem"), pem).unwrap();
        load_ca_file(&dir.path().join("ca.pem")).unwrap()
    }
}
