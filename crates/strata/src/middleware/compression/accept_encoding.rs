//! Choosing the coding: the client's `Accept-Encoding` weights (RFC 9110 §12.5.3) against the
//! server's order of preference.

use http::header::{self, HeaderMap};

use crate::http::headers::{Weighted, is_tchar, weighted_list};

use super::Algorithm;

/// q-values in thousandths, as the client gave them.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
struct AcceptEncoding {
    br: Option<u16>,
    zstd: Option<u16>,
    gzip: Option<u16>,
    identity: Option<u16>,
    any: Option<u16>,
}

impl AcceptEncoding {
    /// Parses every `Accept-Encoding` line; `None` when there is none or one does not parse.
    fn parse(headers: &HeaderMap) -> Option<Self> {
        let mut seen = false;
        let mut accept = AcceptEncoding::default();
        for value in headers.get_all(header::ACCEPT_ENCODING) {
            seen = true;
            let value = value.to_str().ok()?;
            for element in weighted_list(value) {
                let Weighted { value: coding, has_parameters, q, has_extensions } = element?;
                if coding.is_empty() || !coding.bytes().all(is_tchar) || has_parameters || has_extensions {
                    return None; // Content codings take no parameters besides the weight.
                }
                let slot = if coding.eq_ignore_ascii_case("br") {
                    &mut accept.br
                } else if coding.eq_ignore_ascii_case("zstd") {
                    &mut accept.zstd
                } else if coding.eq_ignore_ascii_case("gzip") || coding.eq_ignore_ascii_case("x-gzip") {
                    &mut accept.gzip
                } else if coding.eq_ignore_ascii_case("identity") {
                    &mut accept.identity
                } else if coding == "*" {
                    &mut accept.any
                } else {
                    continue; // deflate, compress, …: valid, just not offered here.
                };
                // Listed twice (`gzip` and `x-gzip`): the more favourable weight counts.
                *slot = Some(slot.map_or(q, |old| old.max(q)));
            }
        }
        seen.then_some(accept)
    }

    fn q(&self, algorithm: Algorithm) -> u16 {
        let explicit = match algorithm {
            Algorithm::Br => self.br,
            Algorithm::Zstd => self.zstd,
            Algorithm::Gzip => self.gzip,
        };
        // `*` covers every coding the client did not name; unnamed and no `*` means not acceptable.
        explicit.or(self.any).unwrap_or(0)
    }
}

/// Picks the coding for a response: among the offered codings the client accepts (q > 0), those
/// with the client's highest q; among those, the one listed first in `algorithms`. `None` (send
/// identity) when the header is absent or unparseable, nothing offered is acceptable, or the client
/// weights `identity` (or `*`, which covers it) strictly higher than every acceptable coding.
pub(super) fn negotiate(headers: &HeaderMap, algorithms: &[(Algorithm, i32)]) -> Option<(Algorithm, i32)> {
    let accept = AcceptEncoding::parse(headers)?;
    let mut best: Option<((Algorithm, i32), u16)> = None;
    for &(algorithm, level) in algorithms {
        let q = accept.q(algorithm);
        if q > 0 && best.is_none_or(|(_, best_q)| q > best_q) {
            best = Some(((algorithm, level), q));
        }
    }
    let (choice, q) = best?;
    let identity_q = accept.identity.or(accept.any).unwrap_or(0);
    if identity_q > q { None } else { Some(choice) }
}
