//! Test certificates made with rcgen: a certificate authority no system trusts, the server and
//! client certificates it signs, and a ready-made set of PEM files for TLS upstreams.

use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime};

use base64::Engine as _;
use rcgen::{
    BasicConstraints, CertificateParams, CertifiedIssuer, DnType, ExtendedKeyUsagePurpose, IsCa, KeyPair,
    KeyUsagePurpose, PublicKeyData,
};
use sha2::{Digest, Sha256};

/// A test certificate authority.
pub struct TestCa {
    issuer: CertifiedIssuer<'static, KeyPair>,
}

/// A certificate and its key, PEM.
pub struct Leaf {
    pub cert: String,
    pub key: String,
    /// The base64 SHA-256 of the certificate's SubjectPublicKeyInfo, the form Chromium's
    /// `--ignore-certificate-errors-spki-list` takes.
    pub spki_sha256: String,
}

impl Leaf {
    fn signed(params: CertificateParams, ca: &TestCa) -> Leaf {
        let key = KeyPair::generate().unwrap();
        let cert = params.signed_by(&key, &ca.issuer).unwrap();
        let spki_sha256 =
            base64::engine::general_purpose::STANDARD.encode(Sha256::digest(key.subject_public_key_info()));
        Leaf { cert: cert.pem(), key: key.serialize_pem(), spki_sha256 }
    }
}

impl TestCa {
    pub fn new() -> TestCa {
        let mut params = CertificateParams::new(Vec::<String>::new()).unwrap();
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        params.distinguished_name.push(DnType::CommonName, "strata test CA");
        params.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
        TestCa { issuer: CertifiedIssuer::self_signed(params, KeyPair::generate().unwrap()).unwrap() }
    }

    /// The CA's own certificate, PEM: what a client trusts.
    pub fn pem(&self) -> String {
        self.issuer.pem()
    }

    /// A server certificate for `names` (DNS names, or IP addresses written as such), with
    /// `common_name` as its subject, valid from an hour ago for `days`.
    pub fn leaf(&self, common_name: &str, names: &[&str], days: u64) -> Leaf {
        let mut params = CertificateParams::new(names.iter().map(|n| (*n).to_string()).collect::<Vec<_>>()).unwrap();
        params.distinguished_name.push(DnType::CommonName, common_name);
        params.not_before = (SystemTime::now() - Duration::from_secs(3600)).into();
        params.not_after = (SystemTime::now() + Duration::from_secs(days * 24 * 3600)).into();
        Leaf::signed(params, self)
    }

    /// A client certificate for mTLS.
    pub fn client(&self, common_name: &str) -> Leaf {
        let mut params = CertificateParams::new(Vec::new()).unwrap();
        params.distinguished_name.push(DnType::CommonName, common_name);
        params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ClientAuth];
        Leaf::signed(params, self)
    }
}

/// Writes `leaf` as `NAME.pem` and `NAME.key` into `dir`.
pub fn write_leaf(dir: &Path, name: &str, leaf: &Leaf) {
    std::fs::write(dir.join(format!("{name}.pem")), &leaf.cert).unwrap();
    std::fs::write(dir.join(format!("{name}.key")), &leaf.key).unwrap();
}

/// A CA and a leaf certificate it issued (SANs `localhost`, `upstream.test`, IP 127.0.0.1), as
/// PEM files in a temporary directory: `ca.pem`, `cert.pem`, `key.pem`.
pub struct TestPki {
    dir: tempfile::TempDir,
}

impl TestPki {
    pub fn new() -> TestPki {
        let ca = TestCa::new();
        let leaf = ca.leaf("upstream.test", &["localhost", "upstream.test", "127.0.0.1"], 30);
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("ca.pem"), ca.pem()).unwrap();
        std::fs::write(dir.path().join("cert.pem"), &leaf.cert).unwrap();
        std::fs::write(dir.path().join("key.pem"), &leaf.key).unwrap();
        TestPki { dir }
    }

    /// The path of the file `name` in the PKI's directory.
    pub fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }
}
