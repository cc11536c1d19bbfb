//! `Content-Type` from a file name's extension: a small table of the types web sites serve, text
//! types with `charset=utf-8` (browsers otherwise guess the charset of a text file, and guess
//! wrong for UTF-8 without a BOM).

use std::path::Path;

/// The type of a file without a known extension: browsers download it rather than render it.
pub(super) const DEFAULT: &str = "application/octet-stream";

/// The `Content-Type` of the file at `path`, from its extension (any case).
pub(super) fn for_path(path: &Path) -> &'static str {
    let Some(extension) = path.extension().and_then(|e| e.to_str()) else { return DEFAULT };
    // Extensions are short: lower-case on the stack, no allocation.
    let mut buffer = [0u8; 16];
    let Some(lower) = buffer.get_mut(..extension.len()) else { return DEFAULT };
    lower.copy_from_slice(extension.as_bytes());
    lower.make_ascii_lowercase();
    match &*lower {
        b"html" | b"htm" => "text/html; charset=utf-8",
        b"css" => "text/css; charset=utf-8",
        b"js" | b"mjs" | b"cjs" => "text/javascript; charset=utf-8",
        b"txt" | b"text" | b"log" => "text/plain; charset=utf-8",
        b"md" | b"markdown" => "text/markdown; charset=utf-8",
        b"csv" => "text/csv; charset=utf-8",
        b"xml" => "text/xml; charset=utf-8",
        b"vtt" => "text/vtt; charset=utf-8",
        b"json" | b"map" => "application/json",
        b"webmanifest" => "application/manifest+json",
        b"wasm" => "application/wasm",
        b"pdf" => "application/pdf",
        b"zip" => "application/zip",
        b"gz" => "application/gzip",
        b"br" => "application/x-brotli",
        b"zst" => "application/zstd",
        b"tar" => "application/x-tar",
        b"svg" => "image/svg+xml",
        b"png" => "image/png",
        b"apng" => "image/apng",
        b"jpg" | b"jpeg" => "image/jpeg",
        b"gif" => "image/gif",
        b"webp" => "image/webp",
        b"avif" => "image/avif",
        b"ico" => "image/x-icon",
        b"bmp" => "image/bmp",
        b"woff" => "font/woff",
        b"woff2" => "font/woff2",
        b"ttf" => "font/ttf",
        b"otf" => "font/otf",
        b"mp4" | b"m4v" => "video/mp4",
        b"webm" => "video/webm",
        b"ogv" => "video/ogg",
        b"mp3" => "audio/mpeg",
        b"m4a" => "audio/mp4",
        b"ogg" | b"oga" | b"opus" => "audio/ogg",
        b"wav" => "audio/wav",
        b"flac" => "audio/flac",
        _ => DEFAULT,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn types_come_from_the_extension_in_any_case_and_text_says_utf_8() {
        assert_eq!(for_path(Path::new("a/index.html")), "text/html; charset=utf-8");
        assert_eq!(for_path(Path::new("APP.JS")), "text/javascript; charset=utf-8");
        assert_eq!(for_path(Path::new("logo.svg")), "image/svg+xml");
        assert_eq!(for_path(Path::new("font.woff2")), "font/woff2");
        assert_eq!(for_path(Path::new("Makefile")), DEFAULT);
        assert_eq!(for_path(Path::new("x.unknown")), DEFAULT);
        assert_eq!(for_path(Path::new("x.averyveryverylongextension")), DEFAULT);
    }
}
