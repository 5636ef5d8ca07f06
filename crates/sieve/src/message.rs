//! The message under evaluation: an RFC 5322 header/body split, header unfolding and
//! RFC 2047 decoding, and a MIME part tree (RFC 2045/2046) for body, mime and foreverypart.
//!
//! Trusts nothing: the bytes are whatever arrived over SMTP. Line ends are normalised to
//! CRLF (sizes then agree with what a store writes). Malformed structure degrades to
//! "one text part"; MIME nesting and part counts are bounded ([`MAX_MIME_DEPTH`],
//! [`MAX_MIME_PARTS`]) so a hostile message cannot exhaust memory or stack.

use std::cell::OnceCell;

use crate::charset;

/// Deepest MIME nesting we descend into.
pub const MAX_MIME_DEPTH: usize = 16;
/// Most MIME parts we index in one message.
pub const MAX_MIME_PARTS: usize = 512;

/// One header field as it appears in the message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Header {
    /// The field name as written.
    pub name: String,
    /// The raw value after the colon, folding kept, without the final line end.
    pub raw: Vec<u8>,
}

impl Header {
    /// Unfolded value with surrounding white space removed, not decoded.
    pub fn unfolded(&self) -> String {
        let s = String::from_utf8_lossy(&self.raw);
        let mut out = String::with_capacity(s.len());
        for piece in s.split(['\r', '\n']) {
            out.push_str(piece);
        }
        let end = out.trim_end_matches([' ', '\t']).len();
        out.truncate(end);
        let start = out.len() - out.trim_start_matches([' ', '\t']).len();
        out.drain(..start);
        out
    }

    /// Unfolded and RFC 2047 decoded value.
    pub fn decoded(&self) -> String {
        let u = self.unfolded();
        if u.contains("=?") {
            decode_rfc2047(&u)
        } else {
            u
        }
    }
}

/// A message: header fields and body, seen with CRLF line ends.
///
/// The body is kept as received; its CRLF form is made only when something reads it
/// ([`Message::body`]), and [`Message::size`] is computed without making it.
#[derive(Debug, Clone, Default)]
pub struct Message {
    /// Header fields in order.
    pub headers: Vec<Header>,
    /// The body after the empty line, line ends as received.
    raw_body: Vec<u8>,
    /// `Some(crlf)` when the CRLF form differs from `raw_body`; set on first use.
    crlf_body: OnceCell<Option<Vec<u8>>>,
    /// Whether the header was followed by an empty line (a body, maybe empty).
    pub has_body: bool,
}

impl PartialEq for Message {
    fn eq(&self, other: &Self) -> bool {
        self.headers == other.headers
            && self.has_body == other.has_body
            && self.body() == other.body()
    }
}

impl Eq for Message {}

/// Length of `to_crlf(raw)` without making it.
fn crlf_len(raw: &[u8]) -> usize {
    let mut extra = 0;
    let mut prev_cr = false;
    for &b in raw {
        if (b == b'\n' && !prev_cr) || (prev_cr && b != b'\n') {
            extra += 1;
        }
        prev_cr = b == b'\r';
    }
    raw.len() + extra + usize::from(prev_cr)
}

/// Convert bare LF (and bare CR) line ends to CRLF.
pub fn to_crlf(raw: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(raw.len() + raw.len() / 32 + 2);
    let mut rest = raw;
    // Copy whole runs between line-end bytes at once.
    while let Some(p) = rest.iter().position(|&b| b == b'\r' || b == b'\n') {
        out.extend_from_slice(rest.get(..p).unwrap_or_default());
        out.extend_from_slice(b"\r\n");
        let skip = if rest.get(p..p + 2) == Some(b"\r\n".as_slice()) {
            2
        } else {
            1
        };
        rest = rest.get(p + skip..).unwrap_or_default();
    }
    out.extend_from_slice(rest);
    out
}

/// Whether every CR and LF in `raw` is part of a CRLF pair (so [`to_crlf`] would not
/// change it).
pub fn is_crlf(raw: &[u8]) -> bool {
    let mut prev_cr = false;
    for &b in raw {
        match b {
            b'\n' if !prev_cr => return false,
            _ if prev_cr && b != b'\n' => return false,
            _ => {}
        }
        prev_cr = b == b'\r';
    }
    !prev_cr
}

/// Split header lines from a body; returns the fields and the offset of the body.
fn parse_headers(data: &[u8]) -> (Vec<Header>, usize) {
    let (h, at, _) = parse_headers_full(data);
    (h, at)
}

/// Like [`parse_headers`], also saying whether an empty line ended the header.
fn parse_headers_full(data: &[u8]) -> (Vec<Header>, usize, bool) {
    let mut headers: Vec<Header> = Vec::new();
    let mut at = 0;
    while at < data.len() {
        let end = data
            .get(at..)
            .and_then(|r| r.iter().position(|&b| b == b'\n'))
            .map(|p| at + p + 1);
        let line_end = end.unwrap_or(data.len());
        let line = data.get(at..line_end).unwrap_or_default();
        let content = line.strip_suffix(b"\n").unwrap_or(line);
        let content = content.strip_suffix(b"\r").unwrap_or(content);
        if content.is_empty() {
            return (headers, line_end, true);
        }
        if matches!(content.first(), Some(b' ' | b'\t')) {
            if let Some(h) = headers.last_mut() {
                h.raw.extend_from_slice(b"\r\n");
                h.raw.extend_from_slice(content);
            }
        } else if let Some(colon) = content.iter().position(|&b| b == b':') {
            let name = String::from_utf8_lossy(content.get(..colon).unwrap_or_default())
                .trim_end()
                .to_string();
            if !name.is_empty() && !name.contains(' ') {
                headers.push(Header {
                    name,
                    raw: content.get(colon + 1..).unwrap_or_default().to_vec(),
                });
            } else {
                // Not a header line: the header ends here and the rest is body.
                return (headers, at, true);
            }
        } else {
            return (headers, at, true);
        }
        at = line_end;
    }
    (headers, data.len(), false)
}

impl Message {
    /// A message from parsed parts; `body` may have any line ends.
    pub fn new(headers: Vec<Header>, body: Vec<u8>, has_body: bool) -> Message {
        Message {
            headers,
            raw_body: body,
            crlf_body: OnceCell::new(),
            has_body,
        }
    }

    /// The body after the empty line, CRLF line ends (converted on first use).
    pub fn body(&self) -> &[u8] {
        match self.crlf_body.get_or_init(|| {
            if is_crlf(&self.raw_body) {
                None
            } else {
                Some(to_crlf(&self.raw_body))
            }
        }) {
            Some(c) => c,
            None => &self.raw_body,
        }
    }

    /// Length of [`Message::body`].
    pub fn body_len(&self) -> usize {
        match self.crlf_body.get() {
            Some(Some(c)) => c.len(),
            Some(None) => self.raw_body.len(),
            None => crlf_len(&self.raw_body),
        }
    }

    /// Parse raw message bytes (any line ends).
    pub fn parse(raw: &[u8]) -> Message {
        // The header parser accepts any line ends; only the body is kept as bytes, so
        // only the body needs the CRLF form (a bare CR in the header is a line end too,
        // so then the whole message is converted first, as before).
        let (headers, body_at, has_body) = parse_headers_full(raw);
        let head = raw.get(..body_at).unwrap_or_default();
        if head.contains(&b'\r') && !is_crlf(head) {
            let data = to_crlf(raw);
            let (headers, body_at, has_body) = parse_headers_full(&data);
            let body = data.get(body_at..).unwrap_or_default().to_vec();
            return Message::new(headers, body, has_body);
        }
        let body = raw.get(body_at..).unwrap_or_default().to_vec();
        Message::new(headers, body, has_body)
    }

    /// The message as bytes, CRLF line ends.
    pub fn to_bytes(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(self.size());
        for h in &self.headers {
            out.extend_from_slice(h.name.as_bytes());
            out.push(b':');
            out.extend_from_slice(&h.raw);
            out.extend_from_slice(b"\r\n");
        }
        if self.has_body || !self.raw_body.is_empty() {
            out.extend_from_slice(b"\r\n");
        }
        out.extend_from_slice(self.body());
        out
    }

    /// Size in octets of [`Message::to_bytes`].
    pub fn size(&self) -> usize {
        let sep = if self.has_body || !self.raw_body.is_empty() {
            2
        } else {
            0
        };
        self.headers
            .iter()
            .map(|h| h.name.len() + h.raw.len() + 3)
            .sum::<usize>()
            + sep
            + self.body_len()
    }

    /// The fields named `name` (case-insensitive), in order.
    pub fn fields<'a>(&'a self, name: &'a str) -> impl Iterator<Item = &'a Header> + 'a {
        self.headers
            .iter()
            .filter(move |h| h.name.eq_ignore_ascii_case(name))
    }

    /// The decoded values of the fields named `name`.
    pub fn header_values(&self, name: &str) -> Vec<String> {
        self.fields(name).map(Header::decoded).collect()
    }

    /// The MIME part tree of this message.
    pub fn mime_tree(&self) -> Part {
        let mut count = 0;
        build_part(
            self.headers.clone(),
            self.body(),
            0,
            &mut count,
            ContentType::default_text(),
        )
    }
}

/// A parsed Content-Type.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ContentType {
    /// Lower-cased type, e.g. "text".
    pub kind: String,
    /// Lower-cased subtype, e.g. "plain".
    pub subtype: String,
    /// Parameters, names lower-cased.
    pub params: Vec<(String, String)>,
}

impl ContentType {
    fn default_text() -> Self {
        ContentType {
            kind: "text".into(),
            subtype: "plain".into(),
            params: vec![("charset".into(), "us-ascii".into())],
        }
    }

    fn octet_stream() -> Self {
        ContentType {
            kind: "application".into(),
            subtype: "octet-stream".into(),
            params: Vec::new(),
        }
    }

    fn message_rfc822() -> Self {
        ContentType {
            kind: "message".into(),
            subtype: "rfc822".into(),
            params: Vec::new(),
        }
    }

    /// A parameter value by name.
    pub fn param(&self, name: &str) -> Option<&str> {
        self.params
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }

    /// Parse a Content-Type value; `None` when it has no valid type/subtype.
    pub fn parse(value: &str) -> Option<ContentType> {
        let (main, params) = split_params(value);
        let (kind, subtype) = main.split_once('/')?;
        let kind = kind.trim().to_ascii_lowercase();
        let subtype = subtype.trim().to_ascii_lowercase();
        if kind.is_empty() || subtype.is_empty() || !is_token(&kind) || !is_token(&subtype) {
            return None;
        }
        Some(ContentType {
            kind,
            subtype,
            params,
        })
    }
}

fn is_token(s: &str) -> bool {
    s.bytes()
        .all(|b| b.is_ascii_graphic() && !b"()<>@,;:\\\"/[]?=".contains(&b))
}

/// Split "value; a=b; c="d"" into the value and its parameters (comments are not removed
/// beyond the simple cases; quoted strings are unquoted).
pub fn split_params(value: &str) -> (String, Vec<(String, String)>) {
    let mut parts = Vec::new();
    let mut cur = String::new();
    let mut in_quote = false;
    let mut escaped = false;
    for c in value.chars() {
        if escaped {
            cur.push(c);
            escaped = false;
            continue;
        }
        match c {
            '\\' if in_quote => {
                cur.push(c);
                escaped = true;
            }
            '"' => {
                in_quote = !in_quote;
                cur.push(c);
            }
            ';' if !in_quote => parts.push(std::mem::take(&mut cur)),
            c => cur.push(c),
        }
    }
    parts.push(cur);
    let mut it = parts.into_iter();
    let main = strip_comments(&it.next().unwrap_or_default())
        .trim()
        .to_string();
    let mut params = Vec::new();
    for p in it {
        if let Some((n, v)) = p.split_once('=') {
            let n = n.trim().to_ascii_lowercase();
            let v = v.trim();
            let v = if v.len() >= 2 && v.starts_with('"') && v.ends_with('"') {
                unquote(v.get(1..v.len() - 1).unwrap_or(""))
            } else {
                strip_comments(v).trim().to_string()
            };
            if !n.is_empty() {
                params.push((n, v));
            }
        }
    }
    (main, merge_rfc2231(params))
}

/// Join RFC 2231 continuations (`name*0`, `name*1*`) and decode `name*` values.
fn merge_rfc2231(params: Vec<(String, String)>) -> Vec<(String, String)> {
    let mut out: Vec<(String, String)> = Vec::new();
    let mut parts: Vec<(String, u32, bool, String)> = Vec::new();
    for (n, v) in params {
        let Some((base, rest)) = n.split_once('*') else {
            out.push((n, v));
            continue;
        };
        let encoded = rest.ends_with('*') || rest.is_empty();
        let idx: u32 = rest.trim_end_matches('*').parse().unwrap_or(0);
        parts.push((base.to_string(), idx, encoded, v));
    }
    parts.sort_by(|a, b| a.0.cmp(&b.0).then(a.1.cmp(&b.1)));
    let mut i = 0;
    while let Some((base, _, _, _)) = parts.get(i) {
        let base = base.clone();
        let mut charset = String::from("us-ascii");
        let mut bytes: Vec<u8> = Vec::new();
        while let Some((b, idx, enc, v)) = parts.get(i) {
            if *b != base {
                break;
            }
            let mut val = v.as_str();
            if *enc && *idx == 0 {
                let mut it = val.splitn(3, '\'');
                if let (Some(cs), Some(_lang), Some(rest)) = (it.next(), it.next(), it.next()) {
                    charset = cs.to_string();
                    val = rest;
                }
            }
            if *enc {
                bytes.extend(pct_decode_bytes(val));
            } else {
                bytes.extend_from_slice(val.as_bytes());
            }
            i += 1;
        }
        out.push((base, charset::decode(&charset, &bytes)));
    }
    out
}

fn pct_decode_bytes(s: &str) -> Vec<u8> {
    let b = s.as_bytes();
    let mut out = Vec::new();
    let mut i = 0;
    while let Some(&c) = b.get(i) {
        if c == b'%'
            && let Some(v) = b
                .get(i + 1..i + 3)
                .and_then(|h| std::str::from_utf8(h).ok())
                .and_then(|h| u8::from_str_radix(h, 16).ok())
        {
            out.push(v);
            i += 3;
            continue;
        }
        out.push(c);
        i += 1;
    }
    out
}

fn unquote(s: &str) -> String {
    let mut out = String::new();
    let mut esc = false;
    for c in s.chars() {
        if esc {
            out.push(c);
            esc = false;
        } else if c == '\\' {
            esc = true;
        } else {
            out.push(c);
        }
    }
    out
}

fn strip_comments(s: &str) -> String {
    let mut out = String::new();
    let mut depth = 0usize;
    for c in s.chars() {
        match c {
            '(' => depth += 1,
            ')' if depth > 0 => depth -= 1,
            c if depth == 0 => out.push(c),
            _ => {}
        }
    }
    out
}

/// One MIME part.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Part {
    /// The part's own header fields (for the top part, the message header).
    pub headers: Vec<Header>,
    /// Its content type (defaulted per RFC 2045/2046).
    pub content_type: ContentType,
    /// Raw body bytes (still transfer-encoded).
    pub body: Vec<u8>,
    /// Sub-parts of a multipart, or the enclosed message of a message/rfc822.
    pub children: Vec<Part>,
}

fn header_value(headers: &[Header], name: &str) -> Option<String> {
    headers
        .iter()
        .find(|h| h.name.eq_ignore_ascii_case(name))
        .map(Header::unfolded)
}

fn build_part(
    headers: Vec<Header>,
    body: &[u8],
    depth: usize,
    count: &mut usize,
    default: ContentType,
) -> Part {
    *count += 1;
    let content_type = match header_value(&headers, "content-type") {
        Some(v) => ContentType::parse(&v).unwrap_or_else(ContentType::octet_stream),
        None => default,
    };
    let mut part = Part {
        headers,
        content_type,
        body: body.to_vec(),
        children: Vec::new(),
    };
    if depth >= MAX_MIME_DEPTH || *count >= MAX_MIME_PARTS {
        return part;
    }
    if part.content_type.kind == "multipart" {
        if let Some(boundary) = part.content_type.param("boundary").map(str::to_string) {
            let child_default = if part.content_type.subtype == "digest" {
                ContentType::message_rfc822()
            } else {
                ContentType::default_text()
            };
            for chunk in split_multipart(body, boundary.as_bytes()) {
                if *count >= MAX_MIME_PARTS {
                    break;
                }
                let (h, at) = parse_headers(chunk);
                let b = chunk.get(at..).unwrap_or_default();
                part.children
                    .push(build_part(h, b, depth + 1, count, child_default.clone()));
            }
        }
    } else if part.content_type.kind == "message" && part.content_type.subtype == "rfc822" {
        let decoded = decode_transfer(&part.headers, body).unwrap_or_else(|| body.to_vec());
        let (h, at) = parse_headers(&decoded);
        let b = decoded.get(at..).unwrap_or_default().to_vec();
        part.children.push(build_part(
            h,
            &b,
            depth + 1,
            count,
            ContentType::default_text(),
        ));
    }
    part
}

/// The body chunks between `--boundary` lines (preamble and epilogue dropped).
pub fn split_multipart<'a>(body: &'a [u8], boundary: &[u8]) -> Vec<&'a [u8]> {
    let mut out = Vec::new();
    let mut start: Option<usize> = None;
    let mut at = 0;
    while at < body.len() {
        let end = body
            .get(at..)
            .and_then(|r| r.iter().position(|&b| b == b'\n'))
            .map_or(body.len(), |p| at + p + 1);
        let line = body.get(at..end).unwrap_or_default();
        let trimmed = trim_line_end(line);
        if let Some(rest) = trimmed
            .strip_prefix(b"--".as_slice())
            .and_then(|r| r.strip_prefix(boundary))
        {
            let rest = trim_ws(rest);
            let closing = rest.starts_with(b"--");
            if rest.is_empty() || closing {
                if let Some(s) = start {
                    // The line end before the boundary belongs to the boundary.
                    let mut e = at;
                    if e > s && body.get(e - 1) == Some(&b'\n') {
                        e -= 1;
                        if e > s && body.get(e - 1) == Some(&b'\r') {
                            e -= 1;
                        }
                    }
                    out.push(body.get(s..e).unwrap_or_default());
                }
                if closing {
                    return out;
                }
                start = Some(end);
            }
        }
        at = end;
    }
    if let Some(s) = start {
        out.push(body.get(s..).unwrap_or_default());
    }
    out
}

fn trim_line_end(l: &[u8]) -> &[u8] {
    let l = l.strip_suffix(b"\n").unwrap_or(l);
    l.strip_suffix(b"\r").unwrap_or(l)
}

fn trim_ws(mut l: &[u8]) -> &[u8] {
    while let Some((last, rest)) = l.split_last() {
        if *last == b' ' || *last == b'\t' {
            l = rest;
        } else {
            break;
        }
    }
    l
}

/// Undo the Content-Transfer-Encoding of a part body; `None` for an unknown encoding.
pub fn decode_transfer(headers: &[Header], body: &[u8]) -> Option<Vec<u8>> {
    let cte = header_value(headers, "content-transfer-encoding")
        .unwrap_or_default()
        .to_ascii_lowercase();
    match cte.trim() {
        "base64" => Some(charset::base64_decode(body)),
        "quoted-printable" => Some(charset::qp_decode(body, false)),
        "" | "7bit" | "8bit" | "binary" => Some(body.to_vec()),
        _ => None,
    }
}

impl Part {
    /// The decoded content as text (transfer encoding and charset undone); `None` when
    /// the transfer encoding is unknown.
    pub fn text(&self) -> Option<String> {
        let bytes = decode_transfer(&self.headers, &self.body)?;
        let cs = self.content_type.param("charset").unwrap_or("us-ascii");
        Some(charset::decode(cs, &bytes))
    }

    /// Every part in depth-first order (this one first).
    pub fn flatten(&self) -> Vec<&Part> {
        let mut out = Vec::new();
        let mut stack = vec![self];
        while let Some(p) = stack.pop() {
            out.push(p);
            for c in p.children.iter().rev() {
                stack.push(c);
            }
        }
        out
    }
}

/// The part at `path` (child indexes from the top).
pub fn part_at<'a>(tree: &'a Part, path: &[usize]) -> Option<&'a Part> {
    let mut cur = tree;
    for &i in path {
        cur = cur.children.get(i)?;
    }
    Some(cur)
}

/// Paths of `part` (when `include_self`) and all its descendants, depth-first.
pub fn collect_paths(part: &Part, base: Vec<usize>, include_self: bool, out: &mut Vec<Vec<usize>>) {
    if out.len() >= MAX_MIME_PARTS {
        return;
    }
    if include_self {
        out.push(base.clone());
    }
    for (i, c) in part.children.iter().enumerate() {
        let mut p = base.clone();
        p.push(i);
        collect_paths(c, p, true, out);
    }
}

/// The preamble and epilogue of a multipart body (the text outside its parts).
pub fn multipart_outside_text(part: &Part) -> String {
    let Some(boundary) = part.content_type.param("boundary") else {
        return String::from_utf8_lossy(&part.body).into_owned();
    };
    let delim = format!("--{boundary}");
    let body = String::from_utf8_lossy(&part.body).into_owned();
    let pre = body
        .find(&delim)
        .map_or(body.as_str(), |i| body.get(..i).unwrap_or(""));
    let close = format!("--{boundary}--");
    let epi = body
        .rfind(&close)
        .map_or("", |i| body.get(i + close.len()..).unwrap_or(""));
    let epi = epi.strip_prefix("\r\n").unwrap_or(epi);
    format!("{pre}{epi}")
}

/// Decode RFC 2047 encoded words in an unstructured header value.
pub fn decode_rfc2047(s: &str) -> String {
    if !s.contains("=?") {
        return s.to_string();
    }
    let mut out = String::with_capacity(s.len());
    let mut rest = s;
    let mut pending_ws = String::new();
    let mut last_was_encoded = false;
    while !rest.is_empty() {
        if let Some((decoded, consumed)) = try_encoded_word(rest) {
            if !last_was_encoded {
                out.push_str(&pending_ws);
            }
            pending_ws.clear();
            out.push_str(&decoded);
            rest = rest.get(consumed..).unwrap_or("");
            last_was_encoded = true;
            continue;
        }
        let mut chars = rest.chars();
        let c = chars.next().unwrap_or(' ');
        rest = chars.as_str();
        if c == ' ' || c == '\t' {
            pending_ws.push(c);
        } else {
            out.push_str(&pending_ws);
            pending_ws.clear();
            out.push(c);
            last_was_encoded = false;
        }
    }
    out.push_str(&pending_ws);
    out
}

fn try_encoded_word(s: &str) -> Option<(String, usize)> {
    let body = s.strip_prefix("=?")?;
    let q1 = body.find('?')?;
    let charset = body.get(..q1)?;
    let after = body.get(q1 + 1..)?;
    let mut ch = after.chars();
    let enc = ch.next()?.to_ascii_lowercase();
    if ch.next()? != '?' {
        return None;
    }
    let text_start = after.get(2..)?;
    let end = text_start.find("?=")?;
    let text = text_start.get(..end)?;
    if text.contains(' ') {
        return None;
    }
    let charset = charset.split('*').next().unwrap_or(charset);
    let bytes = match enc {
        'b' => charset::base64_decode(text.as_bytes()),
        'q' => charset::qp_decode(text.as_bytes(), true),
        _ => return None,
    };
    let consumed = 2 + q1 + 1 + 2 + end + 2;
    Some((charset::decode(charset, &bytes), consumed))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parse_and_size() {
        let m = Message::parse(b"From: a@b\nSubject: x\n  y\n\nbody\n");
        assert_eq!(m.headers.len(), 2);
        assert_eq!(m.header_values("subject"), vec!["x  y".to_string()]);
        assert_eq!(m.size(), m.to_bytes().len());
        assert_eq!(
            m.to_bytes(),
            b"From: a@b\r\nSubject: x\r\n  y\r\n\r\nbody\r\n".to_vec()
        );
    }

    #[test]
    fn line_ends_table() {
        let cases: &[&[u8]] = &[
            b"A: 1\nB: 2\n\nx\ny\n",
            b"A: 1\r\nB: 2\r\n\r\nx\r\ny\r\n",
            b"A: 1\rB: 2\r\rx\ry",
            b"A: 1\r\nB: 2\n\r\nx\ry\r\n\r",
            b"A: 1\r\n folded\n\tmore\r\n\r\nbody",
            b"A: 1\rx\r\n\r\nbody\n",
            b"A: 1\r\n",
            b"no header line\nbody\r",
            b"",
            b"\r",
            b"\n\n",
        ];
        for raw in cases {
            let data = to_crlf(raw);
            let (headers, at, has_body) = parse_headers_full(&data);
            let want = Message::new(
                headers,
                data.get(at..).unwrap_or_default().to_vec(),
                has_body,
            );
            let got = Message::parse(raw);
            assert_eq!(got.size(), want.size(), "{raw:?}");
            assert_eq!(got, want, "{}", String::from_utf8_lossy(raw));
            assert_eq!(got.body(), want.body(), "{raw:?}");
            assert_eq!(got.size(), got.to_bytes().len(), "{raw:?}");
            assert_eq!(is_crlf(raw), to_crlf(raw) == *raw, "{raw:?}");
        }
    }

    #[test]
    fn rfc2047_table() {
        let cases = [
            ("=?utf-8?q?caf=C3=A9?=", "café"),
            ("=?iso-8859-1?b?Y2Fm6Q==?=", "café"),
            ("=?utf-8?q?a?= =?utf-8?q?b?=", "ab"),
            ("x =?utf-8?q?a_b?= y", "x a b y"),
            ("plain", "plain"),
            ("=?bogus", "=?bogus"),
        ];
        for (i, want) in cases {
            assert_eq!(decode_rfc2047(i), want, "{i}");
        }
    }

    #[test]
    fn multipart_tree() {
        let m = Message::parse(
            b"Content-Type: multipart/mixed; boundary=\"b\"\n\npre\n--b\nContent-Type: text/plain\n\nhello\n--b\nContent-Type: text/html\n\n<p>x</p>\n--b--\nepi\n",
        );
        let t = m.mime_tree();
        assert_eq!(t.children.len(), 2);
        assert_eq!(t.children[0].text().as_deref(), Some("hello"));
        assert_eq!(t.children[1].content_type.subtype, "html");
    }
}
