//! Password entries: recognising a hash's scheme at build time and checking a password against it.
//!
//! Argon2 is checked in memory the caller lends ([`Argon2Memory`]): a verification thread keeps one
//! block array and reuses it for every check, so a flood of wrong passwords costs a fixed amount of
//! memory per thread instead of one fresh allocation of `m_cost` KiB per attempt (which glibc's
//! malloc then kept: hundreds of MiB after a burst).

use std::fmt;
use std::str::FromStr;

use argon2::password_hash::PasswordHash;
use argon2::{Algorithm, Argon2, Block, Params, Version};
use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;
use md5::{Digest, Md5};
use sha1::Sha1;
use sha2::Sha256;
use subtle::ConstantTimeEq;

/// The password hash scheme of a user's entry.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum HashScheme {
    /// `$argon2id$`: the recommended scheme (`strata hash-password` makes these).
    Argon2id,
    /// `$argon2i$`.
    Argon2i,
    /// bcrypt: `$2y$`, `$2b$`, `$2a$`.
    Bcrypt,
    /// Apache's `$apr1$` (1 000 rounds of MD5): weak.
    Apr1,
    /// `{SHA}`: one unsalted SHA-1: weak.
    Sha1,
    /// A plaintext password (`allow_plaintext = true`): weak.
    Plaintext,
}

impl HashScheme {
    /// The scheme's usual name: `argon2id`, `argon2i`, `bcrypt`, `apr1`, `{SHA}`, `plaintext`.
    pub fn name(self) -> &'static str {
        match self {
            HashScheme::Argon2id => "argon2id",
            HashScheme::Argon2i => "argon2i",
            HashScheme::Bcrypt => "bcrypt",
            HashScheme::Apr1 => "apr1",
            HashScheme::Sha1 => "{SHA}",
            HashScheme::Plaintext => "plaintext",
        }
    }

    /// Whether passwords stored this way are cheap to brute-force from a stolen file.
    pub fn is_weak(self) -> bool {
        matches!(self, HashScheme::Apr1 | HashScheme::Sha1 | HashScheme::Plaintext)
    }
}

impl fmt::Display for HashScheme {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

const EXPECTED_FORMATS: &str = "expected $argon2id$…, $argon2i$…, bcrypt ($2y$…, $2b$…, $2a$…), $apr1$… (Apache MD5) or {SHA}… (`strata hash-password` makes argon2id)";

/// The memory an argon2 check fills: `m_cost` blocks of 1 KiB. Grown to the largest `m_cost`
/// checked with it, then reused.
pub(super) type Argon2Memory = Vec<Block>;

/// A parsed, ready-to-check password entry.
pub(super) enum Verifier {
    /// A PHC string, decoded at build.
    Argon2(Argon2Hash),
    /// A bcrypt hash string, validated at build.
    Bcrypt {
        hash: String,
        cost: u32,
    },
    Apr1 {
        salt: String,
        digest: [u8; 22],
    },
    Sha1([u8; 20]),
    /// SHA-256 of the password, so the comparison is constant-time whatever the lengths.
    Plain([u8; 32]),
}

/// The largest argon2 memory cost accepted, in KiB (256 MiB: more than ten times the usual 19 MiB).
/// Each verification thread fills this much, and building the layer computes a dummy hash at the
/// entry's cost: a hash beyond these bounds would stall or exhaust the gateway, not protect it.
const MAX_ARGON2_KIB: u32 = 256 * 1024;
/// The largest argon2 time cost (passes) accepted.
const MAX_ARGON2_PASSES: u32 = 64;
/// The largest argon2 parallelism (lanes) accepted.
const MAX_ARGON2_LANES: u32 = 16;
/// The largest bcrypt cost accepted (2^16 rounds: seconds per check).
const MAX_BCRYPT_COST: u32 = 16;

impl Verifier {
    /// Recognises `hash`'s scheme and decodes it; the error says what was expected, never the entry.
    pub(super) fn parse(hash: &str, allow_plaintext: bool) -> Result<(Verifier, HashScheme), String> {
        if hash.starts_with("$argon2") {
            let parsed =
                PasswordHash::new(hash).map_err(|e| format!("invalid argon2 hash ({e}); {EXPECTED_FORMATS}"))?;
            let scheme = match Algorithm::try_from(parsed.algorithm) {
                Ok(Algorithm::Argon2id) => HashScheme::Argon2id,
                Ok(Algorithm::Argon2i) => HashScheme::Argon2i,
                _ => return Err(format!("unsupported argon2 variant `{}`; {EXPECTED_FORMATS}", parsed.algorithm)),
            };
            let decoded = Argon2Hash::decode(&parsed)?;
            let (m, t, p) = (decoded.params.m_cost(), decoded.params.t_cost(), decoded.params.p_cost());
            if m > MAX_ARGON2_KIB || t > MAX_ARGON2_PASSES || p > MAX_ARGON2_LANES {
                return Err(format!(
                    "argon2 cost m={m},t={t},p={p} is beyond what a login may cost (at most m={MAX_ARGON2_KIB} KiB, \
                     t={MAX_ARGON2_PASSES}, p={MAX_ARGON2_LANES}): each check would take that memory and time"
                ));
            }
            return Ok((Verifier::Argon2(decoded), scheme));
        }
        if ["$2y$", "$2b$", "$2a$"].iter().any(|p| hash.starts_with(p)) {
            let parts = bcrypt::HashParts::from_str(hash).map_err(|e| format!("invalid bcrypt hash ({e})"))?;
            if parts.get_cost() > MAX_BCRYPT_COST {
                return Err(format!(
                    "bcrypt cost {} is beyond what a login may cost (at most {MAX_BCRYPT_COST}: each step doubles the time)",
                    parts.get_cost()
                ));
            }
            return Ok((Verifier::Bcrypt { hash: hash.to_string(), cost: parts.get_cost() }, HashScheme::Bcrypt));
        }
        if let Some(rest) = hash.strip_prefix("$apr1$") {
            let (salt, digest) = rest.split_once('$').ok_or("invalid apr1 hash: expected $apr1$SALT$DIGEST")?;
            let digest: [u8; 22] = digest
                .as_bytes()
                .try_into()
                .ok()
                .filter(|d: &[u8; 22]| d.iter().all(|b| CRYPT_ALPHABET.contains(b)))
                .ok_or("invalid apr1 hash: the digest must be 22 characters of [./0-9A-Za-z]")?;
            if salt.is_empty() || salt.len() > 8 {
                return Err("invalid apr1 hash: the salt must be 1 to 8 characters".to_string());
            }
            return Ok((Verifier::Apr1 { salt: salt.to_string(), digest }, HashScheme::Apr1));
        }
        if let Some(b64) = hash.strip_prefix("{SHA}") {
            let digest = STANDARD
                .decode(b64)
                .ok()
                .and_then(|d| <[u8; 20]>::try_from(d).ok())
                .ok_or("invalid {SHA} hash: expected the base64 of a 20-byte SHA-1 digest")?;
            return Ok((Verifier::Sha1(digest), HashScheme::Sha1));
        }
        if hash.starts_with('$') || hash.starts_with('{') {
            let prefix =
                hash.char_indices().skip(1).find(|(_, c)| matches!(c, '$' | '}')).map_or(hash, |(i, _)| &hash[..=i]);
            return Err(format!("unsupported hash format `{prefix}…`; {EXPECTED_FORMATS}"));
        }
        if hash.is_empty() {
            return Err(format!("the password hash is empty; {EXPECTED_FORMATS}"));
        }
        // Never echo the entry: it is a password.
        if !allow_plaintext {
            return Err(format!(
                "the entry is not a recognised hash, so it looks like a plaintext password (or an unsupported crypt(3) DES hash); {EXPECTED_FORMATS}, or set allow_plaintext = true"
            ));
        }
        Ok((Verifier::Plain(Sha256::digest(hash.as_bytes()).into()), HashScheme::Plaintext))
    }

    /// Whether `password` matches, checking argon2 in `memory` (grown when it is too small).
    pub(super) fn verify(&self, password: &[u8], memory: &mut Argon2Memory) -> bool {
        match self {
            Verifier::Argon2(hash) => hash.verify(password, memory),
            // Truncates at 72 bytes like every bcrypt implementation; an error is a mismatch.
            Verifier::Bcrypt { hash, .. } => bcrypt::verify(password, hash).unwrap_or(false),
            Verifier::Apr1 { salt, digest } => apr1_digest(password, salt.as_bytes()).ct_eq(digest).into(),
            Verifier::Sha1(digest) => Sha1::digest(password).as_slice().ct_eq(digest).into(),
            Verifier::Plain(digest) => Sha256::digest(password).as_slice().ct_eq(digest).into(),
        }
    }

    /// Worth a thread hop: argon2 and bcrypt take milliseconds by design, the rest microseconds.
    pub(super) fn is_slow(&self) -> bool {
        matches!(self, Verifier::Argon2(_) | Verifier::Bcrypt { .. })
    }

    /// Orders entries by how long they take to check: scheme first, then its cost parameters.
    pub(super) fn work(&self) -> (u8, u64) {
        match self {
            Verifier::Argon2(hash) => (4, u64::from(hash.params.m_cost()) * u64::from(hash.params.t_cost())),
            Verifier::Bcrypt { cost, .. } => (3, u64::from(*cost)),
            Verifier::Apr1 { .. } => (2, 0),
            Verifier::Sha1(_) => (1, 0),
            Verifier::Plain(_) => (0, 0),
        }
    }

    /// A verifier of the same scheme and cost for a random password nobody knows.
    pub(super) fn dummy_like(&self) -> Result<Verifier, String> {
        let password: [u8; 16] = random()?;
        Ok(match self {
            Verifier::Argon2(hash) => Verifier::Argon2(hash.dummy_like(&password)?),
            Verifier::Bcrypt { cost, .. } => {
                let hash = bcrypt::hash_with_salt(password, *cost, random()?).map_err(|e| e.to_string())?;
                Verifier::Bcrypt { hash: hash.to_string(), cost: *cost }
            }
            Verifier::Apr1 { .. } => {
                let salt: String = random::<8>()?.iter().map(|b| CRYPT_ALPHABET[usize::from(b % 64)] as char).collect();
                let digest = apr1_digest(&password, salt.as_bytes());
                Verifier::Apr1 { salt, digest }
            }
            Verifier::Sha1(_) => Verifier::Sha1(Sha1::digest(password).into()),
            Verifier::Plain(_) => Verifier::Plain(Sha256::digest(password).into()),
        })
    }
}

/// An argon2 hash decoded once at build: a check neither parses nor allocates (beyond growing the
/// lent memory the first time).
pub(super) struct Argon2Hash {
    algorithm: Algorithm,
    version: Version,
    /// Includes the digest's length and any `keyid`/`data` the PHC string carries.
    params: Params,
    salt: Vec<u8>,
    digest: Vec<u8>,
}

impl Argon2Hash {
    fn decode(parsed: &PasswordHash<'_>) -> Result<Argon2Hash, String> {
        let algorithm = Algorithm::try_from(parsed.algorithm).map_err(|e| format!("invalid argon2 hash ({e})"))?;
        let version = match parsed.version {
            Some(v) => Version::try_from(v).map_err(|e| format!("invalid argon2 version ({e})"))?,
            None => Version::default(),
        };
        let params = Params::try_from(parsed).map_err(|e| format!("invalid argon2 parameters ({e})"))?;
        let (Some(salt), Some(digest)) = (&parsed.salt, &parsed.hash) else {
            return Err(format!("the argon2 hash has no salt or no digest; {EXPECTED_FORMATS}"));
        };
        let mut buf = [0u8; 64];
        let salt = salt.decode_b64(&mut buf).map_err(|e| format!("invalid argon2 salt ({e})"))?.to_vec();
        // The one input the argon2 crate checks per call that parsing did not: refuse it now, not
        // at every login.
        if salt.len() < argon2::MIN_SALT_LEN {
            return Err(format!("invalid argon2 hash (the salt is shorter than {} bytes)", argon2::MIN_SALT_LEN));
        }
        Ok(Argon2Hash { algorithm, version, params, salt, digest: digest.as_bytes().to_vec() })
    }

    /// How many 1 KiB blocks a check fills: `m_cost` rounded to the lanes.
    pub(super) fn memory_blocks(&self) -> usize {
        self.params.block_count()
    }

    /// The digest of `password` under this hash's salt and parameters, computed in `memory`: the
    /// first `self.params.output_len()` bytes (the stored digest's length) of the array.
    fn compute(&self, password: &[u8], memory: &mut Argon2Memory) -> Result<[u8; 64], argon2::Error> {
        let blocks = self.memory_blocks();
        if memory.len() < blocks {
            // Every block is written before it is read, so reused memory needs no clearing.
            memory.resize(blocks, Block::default());
        }
        let mut out = [0u8; 64];
        let len = self.output_len();
        Argon2::new(self.algorithm, self.version, self.params.clone()).hash_password_into_with_memory(
            password,
            &self.salt,
            &mut out[..len],
            &mut memory[..blocks],
        )?;
        Ok(out)
    }

    /// Parsing set it to the digest's length, which the password-hash crate keeps within 10..=64.
    fn output_len(&self) -> usize {
        self.params.output_len().unwrap_or(Params::DEFAULT_OUTPUT_LEN).min(64)
    }

    fn verify(&self, password: &[u8], memory: &mut Argon2Memory) -> bool {
        match self.compute(password, memory) {
            Ok(out) => out[..self.output_len()].ct_eq(&self.digest).into(),
            Err(_) => false,
        }
    }

    /// The same algorithm, version and parameters for `password` under a fresh random salt.
    fn dummy_like(&self, password: &[u8]) -> Result<Argon2Hash, String> {
        let mut dummy = Argon2Hash {
            algorithm: self.algorithm,
            version: self.version,
            params: self.params.clone(),
            salt: random::<16>()?.to_vec(),
            digest: Vec::new(),
        };
        let out = dummy.compute(password, &mut Vec::new()).map_err(|e| e.to_string())?;
        dummy.digest = out[..dummy.output_len()].to_vec();
        Ok(dummy)
    }
}

pub(super) fn random<const N: usize>() -> Result<[u8; N], String> {
    let mut bytes = [0u8; N];
    getrandom::fill(&mut bytes).map_err(|e| format!("the OS random source failed: {e}"))?;
    Ok(bytes)
}

/// The alphabet of crypt(3)-style base64.
const CRYPT_ALPHABET: &[u8; 64] = b"./0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz";

/// Apache's `$apr1$` digest: the FreeBSD MD5-crypt algorithm (Poul-Henning Kamp's) with the magic
/// `$apr1$`. No maintained crate implements it, so here it is, checked against Apache's and
/// OpenSSL's output in the tests. Returns the 22-character encoded digest.
pub(super) fn apr1_digest(password: &[u8], salt: &[u8]) -> [u8; 22] {
    let salt = &salt[..salt.len().min(8)];
    let alternate = Md5::new().chain_update(password).chain_update(salt).chain_update(password).finalize();

    let mut ctx = Md5::new().chain_update(password).chain_update(b"$apr1$").chain_update(salt);
    let mut left = password.len();
    while left > 0 {
        let n = left.min(16);
        ctx.update(&alternate[..n]);
        left -= n;
    }
    // The historical quirk: for each bit of the length, a zero byte or the password's first byte.
    let mut bits = password.len();
    while bits > 0 {
        if bits & 1 == 1 {
            ctx.update([0u8]);
        } else {
            ctx.update(&password[..1]);
        }
        bits >>= 1;
    }
    let mut digest: [u8; 16] = ctx.finalize().into();

    // 1 000 rounds, to slow down brute force (by 1990s standards).
    for round in 0..1000 {
        let mut ctx = Md5::new();
        if round & 1 == 1 {
            ctx.update(password);
        } else {
            ctx.update(digest);
        }
        if round % 3 != 0 {
            ctx.update(salt);
        }
        if round % 7 != 0 {
            ctx.update(password);
        }
        if round & 1 == 1 {
            ctx.update(digest);
        } else {
            ctx.update(password);
        }
        digest = ctx.finalize().into();
    }

    let mut out = [0u8; 22];
    let mut at = 0;
    let mut put = |mut v: u32, n: usize| {
        for _ in 0..n {
            out[at] = CRYPT_ALPHABET[(v & 0x3f) as usize];
            at += 1;
            v >>= 6;
        }
    };
    for (a, b, c) in [(0, 6, 12), (1, 7, 13), (2, 8, 14), (3, 9, 15), (4, 10, 5)] {
        put(u32::from(digest[a]) << 16 | u32::from(digest[b]) << 8 | u32::from(digest[c]), 4);
    }
    put(u32::from(digest[11]), 2);
    out
}

/// Hashes for the tests of this module and the layer's.
#[cfg(test)]
pub(super) mod testing {
    use argon2::password_hash::{PasswordHasher, SaltString};
    use argon2::{Algorithm, Argon2, Params, Version};
    use base64::Engine as _;
    use base64::engine::general_purpose::STANDARD;
    use sha1::{Digest as _, Sha1};

    /// A cheap argon2 hash (tests run unoptimised): same code path as production parameters.
    pub(in super::super) fn argon2_hash(algorithm: Algorithm, password: &str) -> String {
        let params = Params::new(64, 1, 1, None).unwrap();
        let salt = SaltString::encode_b64(b"saltsaltsaltsalt").unwrap();
        Argon2::new(algorithm, Version::V0x13, params).hash_password(password.as_bytes(), &salt).unwrap().to_string()
    }

    pub(in super::super) fn bcrypt_hash(password: &str) -> String {
        bcrypt::hash(password, 4).unwrap()
    }

    pub(in super::super) fn sha_hash(password: &str) -> String {
        format!("{{SHA}}{}", STANDARD.encode(Sha1::digest(password.as_bytes())))
    }
}

#[cfg(test)]
mod tests {
    use super::testing::{argon2_hash, bcrypt_hash, sha_hash};
    use super::*;

    #[test]
    fn schemes_are_recognised() {
        let scheme = |hash: String| Verifier::parse(&hash, false).map(|(_, s)| s).unwrap();
        assert_eq!(scheme(argon2_hash(Algorithm::Argon2id, "x")), HashScheme::Argon2id);
        assert_eq!(scheme(argon2_hash(Algorithm::Argon2i, "x")), HashScheme::Argon2i);
        assert_eq!(scheme(bcrypt_hash("x")), HashScheme::Bcrypt);
        assert_eq!(scheme(sha_hash("x")), HashScheme::Sha1);
        assert_eq!(scheme("$apr1$r31.....$HqJZimcKQFAMYayBlzkrA/".into()), HashScheme::Apr1);
    }

    #[test]
    fn apr1_matches_apache_and_openssl_vectors() {
        // `htpasswd -nbm` / `openssl passwd -apr1 -salt SALT PASSWORD` outputs.
        let vectors = [
            ("myPassword", "r31.....", "HqJZimcKQFAMYayBlzkrA/"),
            ("", "saltsalt", "a8ml/vK5HEjiZ5oypDWA7/"),
            ("secret", "abc", "PZF73YJz5hJ9yyI.7OP.R."),
            ("pässwörd:with:colons", "x", "H6Eoq3NVDAePPo6GanQIA0"),
            ("a much longer password that spans several md5 blocks!", "12345678", "IwDOG6ipjywl8tEBYM.qD0"),
        ];
        for (password, salt, expected) in vectors {
            let digest = apr1_digest(password.as_bytes(), salt.as_bytes());
            assert_eq!(std::str::from_utf8(&digest).unwrap(), expected, "password {password:?}");
            let (verifier, _) = Verifier::parse(&format!("$apr1${salt}${expected}"), false).unwrap();
            assert!(verifier.verify(password.as_bytes(), &mut Vec::new()));
            assert!(!verifier.verify(b"nope", &mut Vec::new()));
        }
    }

    #[test]
    fn sha_matches_the_known_vector() {
        let (verifier, scheme) = Verifier::parse("{SHA}W6ph5Mm5Pz8GgiULbPgzG37mj9g=", false).unwrap();
        assert_eq!(scheme, HashScheme::Sha1);
        assert!(verifier.verify(b"password", &mut Vec::new()));
        assert!(!verifier.verify(b"Password", &mut Vec::new()));
    }

    #[test]
    fn hashes_costlier_than_a_login_may_be_are_refused() {
        let huge = phc(Algorithm::Argon2id, Version::V0x13, Params::new(MAX_ARGON2_KIB + 8, 1, 1, None).unwrap(), "pw");
        let e = Verifier::parse(&huge, false).err().unwrap();
        assert!(e.starts_with("argon2 cost m=262152,t=1,p=1 is beyond"), "{e}");
        let at_bound =
            phc(Algorithm::Argon2id, Version::V0x13, Params::new(64, MAX_ARGON2_PASSES, 1, None).unwrap(), "pw");
        assert!(Verifier::parse(&at_bound, false).is_ok());
        // A bcrypt cost of 31 would take days per check; the hash string alone says so.
        let e = Verifier::parse("$2b$31$abcdefghijklmnopqrstuu5nSbJSXhJXNiDp3Kd8Dfz9kEtm8Ku3e", false).err().unwrap();
        assert!(e.starts_with("bcrypt cost 31 is beyond"), "{e}");
    }

    #[test]
    fn only_argon2_and_bcrypt_are_slow() {
        assert!(Verifier::parse(&argon2_hash(Algorithm::Argon2id, "x"), false).unwrap().0.is_slow());
        assert!(Verifier::parse(&bcrypt_hash("x"), false).unwrap().0.is_slow());
        assert!(!Verifier::parse(&sha_hash("x"), false).unwrap().0.is_slow());
        assert!(!Verifier::parse("$apr1$r31.....$HqJZimcKQFAMYayBlzkrA/", false).unwrap().0.is_slow());
    }

    /// A PHC string made by the argon2 crate itself, with any parameters.
    fn phc(algorithm: Algorithm, version: Version, params: Params, password: &str) -> String {
        use argon2::password_hash::{PasswordHasher, SaltString};
        let salt = SaltString::encode_b64(b"another salt 123").unwrap();
        Argon2::new(algorithm, version, params).hash_password(password.as_bytes(), &salt).unwrap().to_string()
    }

    fn with_data() -> Params {
        let data = argon2::AssociatedData::new(b"associated").unwrap();
        argon2::ParamsBuilder::new().m_cost(64).t_cost(1).p_cost(1).data(data).build().unwrap()
    }

    #[test]
    fn argon2_in_reused_memory_agrees_with_the_argon2_crate() {
        use argon2::password_hash::PasswordVerifier;
        let hashes = [
            phc(Algorithm::Argon2id, Version::V0x13, Params::new(256, 2, 1, None).unwrap(), "pw"),
            // Smaller after larger: the memory is longer than needed and full of the last check.
            phc(Algorithm::Argon2id, Version::V0x13, Params::new(64, 1, 1, None).unwrap(), "pw"),
            phc(Algorithm::Argon2i, Version::V0x10, Params::new(128, 3, 2, Some(16)).unwrap(), "pw"),
            phc(Algorithm::Argon2id, Version::V0x13, Params::new(512, 1, 4, Some(64)).unwrap(), "pw"),
            // A data parameter (associated data) is part of the hash.
            phc(Algorithm::Argon2id, Version::V0x13, with_data(), "pw"),
        ];
        let mut memory = Argon2Memory::new();
        for hash in &hashes {
            let reference = PasswordHash::new(hash).unwrap();
            assert!(Argon2::default().verify_password(b"pw", &reference).is_ok(), "{hash}");
            let (verifier, _) = Verifier::parse(hash, false).unwrap();
            let Verifier::Argon2(decoded) = &verifier else { panic!("{hash}") };
            for password in ["pw", "pW", "", "pw "] {
                let expected = Argon2::default().verify_password(password.as_bytes(), &reference).is_ok();
                assert_eq!(verifier.verify(password.as_bytes(), &mut memory), expected, "{hash} / {password:?}");
                assert_eq!(verifier.verify(password.as_bytes(), &mut Vec::new()), expected, "fresh memory");
            }
            assert!(memory.len() >= decoded.memory_blocks());
        }
        assert_eq!(memory.len(), 512, "grown to the largest m_cost, never beyond");
    }

    #[test]
    fn argon2_dummies_keep_the_cost_and_refuse_everything() {
        let hash = phc(Algorithm::Argon2i, Version::V0x13, Params::new(96, 2, 1, Some(20)).unwrap(), "pw");
        let (verifier, _) = Verifier::parse(&hash, false).unwrap();
        let dummy = verifier.dummy_like().unwrap();
        assert_eq!(dummy.work(), verifier.work());
        let (Verifier::Argon2(real), Verifier::Argon2(fake)) = (&verifier, &dummy) else { panic!() };
        assert_eq!((fake.algorithm, fake.version, fake.digest.len()), (real.algorithm, real.version, 20));
        assert_ne!(fake.salt, real.salt);
        for password in ["pw", "", "x"] {
            assert!(!dummy.verify(password.as_bytes(), &mut Vec::new()));
        }
    }

    #[test]
    fn bad_argon2_entries_are_build_errors() {
        for (hash, says) in [
            ("$argon2id$v=19$m=64,t=1,p=1$c2FsdA$aGFzaGhhc2hoYXNo", "salt"),
            ("$argon2id$v=19$m=64,t=1,p=1", "no salt"),
            ("$argon2id$v=19$m=1,t=1,p=1$c29tZXNhbHQxMjM0$aGFzaGhhc2hoYXNo", "parameters"),
            ("$argon2id$v=18$m=64,t=1,p=1$c29tZXNhbHQxMjM0$aGFzaGhhc2hoYXNo", "version"),
        ] {
            let Err(e) = Verifier::parse(hash, false) else { panic!("{hash} was accepted") };
            assert!(e.contains(says), "{hash}: {e}");
        }
    }
}
