//! The credentials of a request: the `Authorization: Basic` header decoded into user and password
//! without allocating for any realistic credential.

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD_PAD_INDIFFERENT;
use http::{HeaderMap, header};

/// The decoded `user:password` of a `Basic` `Authorization` header: on the stack when it fits (any
/// realistic credential), so the request path does not allocate for it.
pub(super) enum Decoded {
    Inline([u8; Decoded::INLINE], usize),
    Heap(Vec<u8>),
}

impl Decoded {
    const INLINE: usize = 192;

    /// `None` for a header that is missing, repeated, of another scheme, or not base64. Never panics.
    pub(super) fn from_headers(headers: &HeaderMap) -> Option<Decoded> {
        let mut values = headers.get_all(header::AUTHORIZATION).iter();
        let value = values.next()?;
        if values.next().is_some() {
            return None;
        }
        let value = value.as_bytes().trim_ascii();
        let split = value.iter().position(|b| *b == b' ')?;
        let (scheme, token) = value.split_at(split);
        if !scheme.eq_ignore_ascii_case(b"basic") {
            return None;
        }
        let token = token.trim_ascii();
        // Padding is optional in practice (some clients drop it); the alphabet is not.
        if base64::decoded_len_estimate(token.len()) <= Self::INLINE {
            let mut buf = [0u8; Self::INLINE];
            let len = STANDARD_PAD_INDIFFERENT.decode_slice(token, &mut buf).ok()?;
            Some(Decoded::Inline(buf, len))
        } else {
            STANDARD_PAD_INDIFFERENT.decode(token).ok().map(Decoded::Heap)
        }
    }

    /// The user and password, or `None` when they are not UTF-8 (we announce `charset="UTF-8"`),
    /// there is no colon, or the user is empty.
    pub(super) fn split(&self) -> Option<(&str, &str)> {
        let bytes = match self {
            Decoded::Inline(buf, len) => buf.get(..*len)?,
            Decoded::Heap(vec) => vec,
        };
        let (user, password) = std::str::from_utf8(bytes).ok()?.split_once(':')?;
        (!user.is_empty()).then_some((user, password))
    }
}
