//! Header helpers shared by the middlewares: list merging and RFC 9110 grammar pieces.

use http::{HeaderMap, HeaderValue, header};

/// Adds `name` to the response's `Vary` list, keeping what is there as one merged line: no
/// duplicate (compared case-insensitively), and nothing at all when `Vary: *` already says "varies
/// on everything".
pub fn add_vary(headers: &mut HeaderMap, name: &str) {
    let mut tokens: Vec<&[u8]> = Vec::new();
    for value in headers.get_all(header::VARY) {
        for token in value.as_bytes().split(|b| *b == b',') {
            let token = token.trim_ascii();
            if token == b"*" || token.eq_ignore_ascii_case(name.as_bytes()) {
                return;
            }
            if !token.is_empty() && !tokens.iter().any(|t| t.eq_ignore_ascii_case(token)) {
                tokens.push(token);
            }
        }
    }
    let mut merged = tokens.join(&b", "[..]);
    if !merged.is_empty() {
        merged.extend_from_slice(b", ");
    }
    merged.extend_from_slice(name.as_bytes());
    // Every part came from a valid header value or a header name, so this cannot fail; if it
    // somehow did, leaving Vary as it was beats panicking on the request path.
    if let Ok(value) = HeaderValue::from_bytes(&merged) {
        headers.insert(header::VARY, value);
    }
}

/// `qvalue = ( "0" [ "." 0*3DIGIT ] ) / ( "1" [ "." 0*3("0") ] )` (RFC 9110 §12.4.2), in thousandths.
pub fn parse_qvalue(s: &str) -> Option<u16> {
    let (int, frac) = match s.split_once('.') {
        Some((int, frac)) => (int, frac),
        None => (s, ""),
    };
    if frac.len() > 3 || !frac.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    let mut thousandths: u16 = 0;
    for (i, digit) in frac.bytes().enumerate() {
        thousandths += u16::from(digit - b'0') * [100, 10, 1][i];
    }
    match int {
        "0" => Some(thousandths),
        "1" if thousandths == 0 => Some(1000),
        _ => None,
    }
}

/// One element of a weighted list such as `Accept` or `Accept-Encoding` (RFC 9110 §12.4.2).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Weighted<'a> {
    /// The element without its parameters and optional whitespace: a coding, a media range.
    pub value: &'a str,
    /// Whether parameters other than the weight come before it (`text/html;level=1;q=0.5`).
    pub has_parameters: bool,
    /// The weight in thousandths; 1000 when the element has none.
    pub q: u16,
    /// Whether parameters follow the weight (accept-extensions, which RFC 7231 allowed). They are
    /// not parsed: a list whose elements may not carry them rejects the element.
    pub has_extensions: bool,
}

/// The elements of one weighted-list header value, in order, empty elements skipped (RFC 9110
/// §5.6.1). An element is `None` when a parameter before its weight has no `=` or its weight is
/// not a qvalue. The element's value is not checked: each list has its own grammar for it.
pub fn weighted_list(value: &str) -> impl Iterator<Item = Option<Weighted<'_>>> {
    value.split(',').map(|element| element.trim_matches(is_ows)).filter(|element| !element.is_empty()).map(|element| {
        let mut params = element.split(';');
        let value = params.next().unwrap_or_default().trim_matches(is_ows);
        let mut weighted = Weighted { value, has_parameters: false, q: 1000, has_extensions: false };
        while let Some(param) = params.next() {
            let param = param.trim_matches(is_ows);
            if param.is_empty() {
                continue;
            }
            let (name, value) = param.split_once('=')?;
            if name.trim_matches(is_ows).eq_ignore_ascii_case("q") {
                weighted.q = parse_qvalue(value.trim_matches(is_ows))?;
                weighted.has_extensions = params.any(|p| !p.trim_matches(is_ows).is_empty());
                break;
            }
            weighted.has_parameters = true;
        }
        Some(weighted)
    })
}

/// RFC 9110 token characters.
pub fn is_tchar(b: u8) -> bool {
    TCHAR[usize::from(b)]
}

/// [`is_tchar`] as a table: it runs per character of header values on the request path.
const TCHAR: [bool; 256] = {
    let mut table = [false; 256];
    let mut b = 0;
    while b < 256 {
        let c = b as u8;
        table[b] = c.is_ascii_alphanumeric()
            || matches!(
                c,
                b'!' | b'#' | b'$' | b'%' | b'&' | b'\'' | b'*' | b'+' | b'-' | b'.' | b'^' | b'_' | b'`' | b'|' | b'~'
            );
        b += 1;
    }
    table
};

/// Optional whitespace (RFC 9110 §5.6.3): space and horizontal tab.
pub fn is_ows(c: char) -> bool {
    c == ' ' || c == '\t'
}

#[cfg(test)]
mod tests {
    use super::*;

    fn vary(lines: &[&'static str], add: &str) -> Vec<String> {
        let mut headers = HeaderMap::new();
        for line in lines {
            headers.append(header::VARY, HeaderValue::from_static(line));
        }
        add_vary(&mut headers, add);
        headers.get_all(header::VARY).iter().map(|v| v.to_str().unwrap().to_string()).collect()
    }

    #[test]
    fn vary_lists_merge_without_duplicates() {
        assert_eq!(vary(&[], "Origin"), ["Origin"]);
        assert_eq!(vary(&["Accept-Encoding"], "Origin"), ["Accept-Encoding, Origin"]);
        assert_eq!(vary(&["accept, origin", "Cookie"], "Origin"), ["accept, origin", "Cookie"]);
        assert_eq!(vary(&["Accept", "accept, Cookie"], "Origin"), ["Accept, Cookie, Origin"]);
        assert_eq!(vary(&["*"], "Origin"), ["*"]);
    }

    #[test]
    fn token_characters_are_rfc_9110s() {
        let tchars: String = (0u8..=255).filter(|b| is_tchar(*b)).map(char::from).collect();
        assert_eq!(tchars, "!#$%&'*+-.0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZ^_`abcdefghijklmnopqrstuvwxyz|~");
    }

    fn weighted(value: &str) -> Vec<Option<(&str, bool, u16, bool)>> {
        weighted_list(value).map(|e| e.map(|e| (e.value, e.has_parameters, e.q, e.has_extensions))).collect()
    }

    #[test]
    fn weighted_lists_split_into_values_and_weights() {
        assert_eq!(weighted("gzip, br;q=0.9"), [Some(("gzip", false, 1000, false)), Some(("br", false, 900, false))]);
        assert_eq!(
            weighted(" GZip \t; Q = 0.8 ,, deflate "),
            [Some(("GZip", false, 800, false)), Some(("deflate", false, 1000, false))]
        );
        assert_eq!(weighted("text/html;level=1;q=0.5"), [Some(("text/html", true, 500, false))]);
        assert_eq!(weighted("text/html;charset=utf-8"), [Some(("text/html", true, 1000, false))]);
        assert_eq!(weighted("a;q=0.5;ext=1, b;q=1;"), [Some(("a", false, 500, true)), Some(("b", false, 1000, false))]);
        assert!(weighted("").is_empty() && weighted(" , ,").is_empty());
    }

    #[test]
    fn weighted_list_mistakes_are_reported_per_element() {
        assert_eq!(weighted("gzip;q=1.5, br"), [None, Some(("br", false, 1000, false))]);
        assert_eq!(weighted("gzip;q"), [None]);
        assert_eq!(weighted("gzip;level"), [None]);
        // What follows the weight is not parsed, mistakes included.
        assert_eq!(weighted("gzip;q=0;junk"), [Some(("gzip", false, 0, true))]);
    }

    #[test]
    fn qvalues_follow_the_grammar() {
        assert_eq!(parse_qvalue("1"), Some(1000));
        assert_eq!(parse_qvalue("1.000"), Some(1000));
        assert_eq!(parse_qvalue("0.5"), Some(500));
        assert_eq!(parse_qvalue("0.125"), Some(125));
        assert_eq!(parse_qvalue("0"), Some(0));
        assert_eq!(parse_qvalue("0."), Some(0));
        assert_eq!(parse_qvalue("0.25"), Some(250));
        assert_eq!(parse_qvalue("1.00"), Some(1000));
        for bad in ["1.5", "2", "0.1234", "-1", "", ".5", "0.x", "1.001", "-0", "0.5x", "01", " 1"] {
            assert_eq!(parse_qvalue(bad), None, "{bad}");
        }
    }
}
