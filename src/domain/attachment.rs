//! The rules of attachments that need no I/O: file names, content types decided from the bytes,
//! which types a browser may show inline, and the `Content-Disposition` a download carries.

use unicode_normalization::UnicodeNormalization;

/// Most attachments one message may carry.
pub const MAX_PER_MESSAGE: usize = 10;

/// Longest file name kept, in bytes of UTF-8 (the common file-system limit).
pub const MAX_NAME_BYTES: usize = 255;

/// Bytes of the start of a file read to decide its type.
pub const SNIFF_BYTES: usize = 8192;

/// The name a file is stored and offered under: the last component of what the client sent
/// (browsers on Windows send whole paths), in NFC, without control characters, bidirectional
/// overrides (which can make `exe.txt` read as `txt.exe`) or characters Windows forbids in file
/// names; leading and trailing dots and spaces removed; cut to [`MAX_NAME_BYTES`] keeping the
/// extension; `file` when nothing is left.
pub fn sanitize_name(raw: &str) -> String {
    let last = raw.rsplit(['/', '\\']).next().unwrap_or("");
    let cleaned: String = last
        .nfc()
        .filter(|c| {
            !c.is_control()
                && !matches!(c, '\u{202A}'..='\u{202E}' | '\u{2066}'..='\u{2069}' | '\u{200E}' | '\u{200F}' | '\u{061C}')
                && !matches!(c, '<' | '>' | ':' | '"' | '|' | '?' | '*')
        })
        .collect();
    let trimmed = cleaned.trim_matches(|c: char| c == '.' || c.is_whitespace());
    if trimmed.is_empty() {
        return "file".to_owned();
    }
    if trimmed.len() <= MAX_NAME_BYTES {
        return trimmed.to_owned();
    }
    // Keep a short extension; cut the stem on a character boundary.
    let (stem, extension) = match trimmed.rfind('.') {
        Some(dot) if trimmed.len() - dot <= 16 => (&trimmed[..dot], &trimmed[dot..]),
        _ => (trimmed, ""),
    };
    let mut end = MAX_NAME_BYTES - extension.len();
    while !stem.is_char_boundary(end) {
        end -= 1;
    }
    format!("{}{extension}", &stem[..end])
}

/// The content type of a file whose first bytes are `head` (up to [`SNIFF_BYTES`]): from its
/// magic number when it has one (the `infer` crate's list), SVG told apart from other XML, then
/// `text/plain` for UTF-8 text, and `application/octet-stream` for anything else.
pub fn sniff(head: &[u8]) -> String {
    if let Some(kind) = infer::get(head) {
        let mime = kind.mime_type();
        if mime == "text/xml" && looks_like_svg(head) {
            return "image/svg+xml".to_owned();
        }
        return mime.to_owned();
    }
    if looks_like_svg(head) {
        return "image/svg+xml".to_owned();
    }
    if is_text(head) {
        return "text/plain".to_owned();
    }
    "application/octet-stream".to_owned()
}

fn looks_like_svg(head: &[u8]) -> bool {
    let text = String::from_utf8_lossy(head).to_ascii_lowercase();
    text.trim_start_matches('\u{feff}')
        .trim_start()
        .starts_with('<')
        && text.contains("<svg")
}

/// UTF-8 without NUL: a character cut by the end of `head` still counts.
fn is_text(head: &[u8]) -> bool {
    if head.contains(&0) {
        return false;
    }
    match std::str::from_utf8(head) {
        Ok(_) => true,
        Err(err) => err.error_len().is_none() && head.len() - err.valid_up_to() < 4,
    }
}

/// Images every browser shows and none can run script in: these alone are served inline (and
/// get thumbnails). SVG is not among them: it may hold script.
pub fn is_safe_image(content_type: &str) -> bool {
    matches!(
        content_type,
        "image/png" | "image/jpeg" | "image/gif" | "image/webp"
    )
}

/// Whether a client's claim about a file's type is contradicted by its bytes: it claimed an
/// image (by its part's `Content-Type`, or else by its name's extension), and the bytes are not
/// that kind of image. Other claims are not judged: the type is decided from the bytes anyway,
/// but an "image" that is not one is what tricks a reader into opening something else.
pub fn claim_is_spoofed(claimed_type: Option<&str>, name: &str, sniffed: &str) -> bool {
    let claimed = claimed_type
        .map(|t| {
            t.split(';')
                .next()
                .unwrap_or("")
                .trim()
                .to_ascii_lowercase()
        })
        .filter(|t| !t.is_empty() && t != "application/octet-stream")
        .or_else(|| {
            mime_guess::from_path(name)
                .first()
                .map(|m| m.essence_str().to_owned())
        });
    let Some(claimed) = claimed else {
        return false;
    };
    if !claimed.starts_with("image/") {
        return false;
    }
    let same = claimed == sniffed
        || (claimed == "image/jpg" && sniffed == "image/jpeg")
        // HEIC is HEIF's profile: browsers and extension tables name it one way, infer the other.
        || (claimed == "image/heic" && sniffed == "image/heif")
        || (claimed == "image/x-icon" && sniffed == "image/vnd.microsoft.icon");
    !same
}

/// The `Content-Type` a download is served with: the sniffed type, except that types a browser
/// could run as a document (HTML, XML, SVG, script) are served as `application/octet-stream`,
/// and text gets its charset.
pub fn served_type(content_type: &str) -> String {
    let active = content_type.contains("html")
        || content_type.contains("xml")
        || content_type.contains("javascript")
        || content_type.contains("ecmascript")
        || content_type == "text/x-shellscript";
    if active {
        "application/octet-stream".to_owned()
    } else if content_type == "text/plain" {
        "text/plain; charset=utf-8".to_owned()
    } else {
        content_type.to_owned()
    }
}

/// The `Content-Disposition` of a download of `name` (RFC 6266): `inline` for a safe image
/// ([`is_safe_image`]), `attachment` for anything else, so the browser saves it instead of
/// opening it in the server's origin. The name goes as an ASCII fallback and as UTF-8
/// `filename*` (RFC 8187).
pub fn content_disposition(name: &str, content_type: &str) -> String {
    let kind = if is_safe_image(content_type) {
        "inline"
    } else {
        "attachment"
    };
    let fallback: String = name
        .chars()
        .map(|c| {
            if c.is_ascii_graphic() && c != '"' && c != '\\' && c != '%' || c == ' ' {
                c
            } else {
                '_'
            }
        })
        .collect();
    let encoded = percent_encoding::utf8_percent_encode(name, RFC_8187_ATTR_CHAR);
    format!("{kind}; filename=\"{fallback}\"; filename*=UTF-8''{encoded}")
}

/// Everything but RFC 8187's `attr-char`s is percent-encoded.
const RFC_8187_ATTR_CHAR: &percent_encoding::AsciiSet = &percent_encoding::NON_ALPHANUMERIC
    .remove(b'!')
    .remove(b'#')
    .remove(b'$')
    .remove(b'&')
    .remove(b'+')
    .remove(b'-')
    .remove(b'.')
    .remove(b'^')
    .remove(b'_')
    .remove(b'`')
    .remove(b'|')
    .remove(b'~');

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_lose_paths_controls_and_overrides() {
        assert_eq!(sanitize_name("C:\\Users\\me\\photo.png"), "photo.png");
        assert_eq!(sanitize_name("../../etc/passwd"), "passwd");
        assert_eq!(sanitize_name("a\u{0}b\nc.txt"), "abc.txt");
        assert_eq!(sanitize_name("invoice\u{202E}gpj.exe"), "invoicegpj.exe");
        assert_eq!(sanitize_name(" ..hidden. "), "hidden");
        assert_eq!(sanitize_name("..."), "file");
        assert_eq!(sanitize_name(""), "file");
        assert_eq!(sanitize_name("what?.txt"), "what.txt");
        // NFC: a decomposed é becomes one character.
        assert_eq!(sanitize_name("cafe\u{301}.txt"), "caf\u{e9}.txt");
        let long = format!("{}.jpeg", "é".repeat(300));
        let cut = sanitize_name(&long);
        assert!(cut.len() <= MAX_NAME_BYTES);
        assert!(cut.ends_with("é.jpeg"));
    }

    #[test]
    fn types_come_from_the_bytes() {
        assert_eq!(sniff(b"\x89PNG\r\n\x1a\n\0\0\0\rIHDR"), "image/png");
        assert_eq!(sniff(b"<!DOCTYPE html><html><script>"), "text/html");
        assert_eq!(
            sniff(b"<?xml version=\"1.0\"?><svg xmlns=\"http://www.w3.org/2000/svg\">"),
            "image/svg+xml"
        );
        assert_eq!(sniff(b"<svg onload=alert(1)>"), "image/svg+xml");
        assert_eq!(sniff("plain words, é".as_bytes()), "text/plain");
        // A multi-byte character cut by the end of the sniffed part is still text.
        assert_eq!(sniff(&"é".as_bytes()[..1]), "text/plain");
        assert_eq!(sniff(b"\x00\x01\x02binary"), "application/octet-stream");
    }

    #[test]
    fn a_claimed_image_must_be_that_image() {
        assert!(claim_is_spoofed(Some("image/png"), "x.png", "text/html"));
        assert!(claim_is_spoofed(None, "cat.png", "text/html"));
        assert!(claim_is_spoofed(
            Some("application/octet-stream"),
            "cat.gif",
            "image/png"
        ));
        assert!(!claim_is_spoofed(Some("image/png"), "x", "image/png"));
        assert!(!claim_is_spoofed(Some("image/jpg"), "x", "image/jpeg"));
        assert!(!claim_is_spoofed(None, "IMG_1234.heic", "image/heif"));
        assert!(!claim_is_spoofed(
            Some("text/plain"),
            "notes.txt",
            "text/html"
        ));
        assert!(!claim_is_spoofed(None, "archive", "application/zip"));
    }

    #[test]
    fn only_safe_images_are_inline() {
        assert!(content_disposition("a.png", "image/png").starts_with("inline;"));
        assert!(content_disposition("a.svg", "image/svg+xml").starts_with("attachment;"));
        assert!(content_disposition("a.html", "text/html").starts_with("attachment;"));
        assert_eq!(served_type("image/svg+xml"), "application/octet-stream");
        assert_eq!(served_type("text/html"), "application/octet-stream");
        assert_eq!(served_type("image/png"), "image/png");
        assert_eq!(
            content_disposition("résumé \"v2\".pdf", "application/pdf"),
            "attachment; filename=\"r_sum_ _v2_.pdf\"; filename*=UTF-8''r%C3%A9sum%C3%A9%20%22v2%22.pdf"
        );
    }
}
