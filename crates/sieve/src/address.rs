//! RFC 5322 address lists as the address, envelope and redirect code needs them: groups,
//! display names, comments, quoted local parts, angle brackets and source routes.
//!
//! Trusts nothing: header values are arbitrary text. A part that cannot be parsed as an
//! address is returned as [`Address::Invalid`] with its text, so tests can still match
//! it with `:all`; nothing here fails.

/// One address from a header or envelope.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Address {
    /// A mailbox with a local part and (usually) a domain.
    Mailbox {
        /// The local part, unquoted.
        local: String,
        /// The domain, if there was an `@`.
        domain: Option<String>,
    },
    /// The null address `<>`.
    Null,
    /// Text that is not an address.
    Invalid(String),
}

impl Address {
    /// The addr-spec, quoting the local part when it needs it.
    pub fn addr_spec(&self) -> String {
        match self {
            Address::Mailbox { local, domain } => {
                let l = quote_local(local);
                match domain {
                    Some(d) => format!("{l}@{d}"),
                    None => l,
                }
            }
            Address::Null => String::new(),
            Address::Invalid(s) => s.clone(),
        }
    }
}

fn is_atext(c: char) -> bool {
    c.is_ascii_alphanumeric() || "!#$%&'*+-/=?^_`{|}~".contains(c) || !c.is_ascii()
}

/// Quote a local part unless it is a dot-atom.
pub fn quote_local(local: &str) -> String {
    let dot_atom = !local.is_empty()
        && !local.starts_with('.')
        && !local.ends_with('.')
        && !local.contains("..")
        && local.chars().all(|c| is_atext(c) || c == '.');
    if dot_atom {
        local.to_string()
    } else {
        let mut s = String::from("\"");
        for c in local.chars() {
            if c == '"' || c == '\\' {
                s.push('\\');
            }
            s.push(c);
        }
        s.push('"');
        s
    }
}

/// Remove comments, keeping quoted strings intact.
fn strip_comments(s: &str) -> String {
    let mut out = String::new();
    let mut depth = 0usize;
    let mut in_q = false;
    let mut esc = false;
    for c in s.chars() {
        if esc {
            if depth == 0 {
                out.push(c);
            }
            esc = false;
            continue;
        }
        match c {
            '\\' if in_q || depth > 0 => {
                esc = true;
                if depth == 0 {
                    out.push(c);
                }
            }
            '"' if depth == 0 => {
                in_q = !in_q;
                out.push(c);
            }
            '(' if !in_q => {
                depth += 1;
            }
            ')' if !in_q && depth > 0 => {
                depth -= 1;
                if depth == 0 {
                    out.push(' ');
                }
            }
            c if depth == 0 => out.push(c),
            _ => {}
        }
    }
    out
}

/// Split at `sep` characters outside quotes and angle brackets.
fn split_top(s: &str, seps: &[char]) -> Vec<(String, Option<char>)> {
    let mut out = Vec::new();
    let mut cur = String::new();
    let mut in_q = false;
    let mut esc = false;
    let mut angle = 0usize;
    for c in s.chars() {
        if esc {
            cur.push(c);
            esc = false;
            continue;
        }
        match c {
            '\\' if in_q => {
                esc = true;
                cur.push(c);
            }
            '"' => {
                in_q = !in_q;
                cur.push(c);
            }
            '<' if !in_q => {
                angle += 1;
                cur.push(c);
            }
            '>' if !in_q => {
                angle = angle.saturating_sub(1);
                cur.push(c);
            }
            c if !in_q && angle == 0 && seps.contains(&c) => {
                out.push((std::mem::take(&mut cur), Some(c)));
            }
            c => cur.push(c),
        }
    }
    out.push((cur, None));
    out
}

/// Parse a header value holding an address list.
pub fn parse_list(value: &str) -> Vec<Address> {
    let clean = strip_comments(value);
    let mut out = Vec::new();
    // Groups: "name: a, b;" — the colon before any address opens a group.
    for (piece, _) in split_top(&clean, &[',', ';']) {
        let mut p = piece.trim().to_string();
        if let Some(idx) = group_colon(&p) {
            p = p.get(idx + 1..).unwrap_or("").trim().to_string();
        }
        if p.is_empty() {
            continue;
        }
        out.push(parse_one(&p));
        if out.len() >= 10_000 {
            break;
        }
    }
    out
}

/// Position of a group's colon: outside quotes and before any `<` or `@`.
fn group_colon(s: &str) -> Option<usize> {
    let mut in_q = false;
    let mut esc = false;
    for (i, c) in s.char_indices() {
        if esc {
            esc = false;
            continue;
        }
        match c {
            '\\' if in_q => esc = true,
            '"' => in_q = !in_q,
            '<' | '@' if !in_q => return None,
            ':' if !in_q => return Some(i),
            _ => {}
        }
    }
    None
}

/// Parse a single address (with or without display name).
pub fn parse_one(s: &str) -> Address {
    let clean = strip_comments(s);
    let t = clean.trim();
    let spec = match (t.rfind('<'), t.rfind('>')) {
        (Some(a), Some(b)) if a < b => {
            let inner = t.get(a + 1..b).unwrap_or("").trim();
            // Drop a source route "@a,@b:".
            if inner.starts_with('@') {
                inner.split_once(':').map_or(inner, |(_, r)| r).trim()
            } else {
                inner
            }
        }
        (None, None) => t,
        _ => return Address::Invalid(t.to_string()),
    };
    if spec.is_empty() {
        return if t.contains('<') {
            Address::Null
        } else {
            Address::Invalid(t.to_string())
        };
    }
    parse_addr_spec(spec).unwrap_or_else(|| Address::Invalid(t.to_string()))
}

/// Parse `local@domain` (local may be quoted).
pub fn parse_addr_spec(spec: &str) -> Option<Address> {
    let spec = spec.trim();
    let (local_raw, domain) = match spec.rfind('@') {
        Some(i) => (spec.get(..i)?, Some(spec.get(i + 1..)?)),
        None => (spec, None),
    };
    let local_raw = local_raw.trim();
    let local = if local_raw.starts_with('"') {
        if !local_raw.ends_with('"') || local_raw.len() < 2 {
            return None;
        }
        let mut out = String::new();
        let mut esc = false;
        for c in local_raw.get(1..local_raw.len() - 1)?.chars() {
            if esc {
                out.push(c);
                esc = false;
            } else if c == '\\' {
                esc = true;
            } else if c == '"' {
                return None;
            } else {
                out.push(c);
            }
        }
        out
    } else {
        let words: Vec<&str> = local_raw.split_whitespace().collect();
        let joins_on_dots = words.windows(2).all(|w| {
            w.first().is_some_and(|a| a.ends_with('.'))
                || w.get(1).is_some_and(|b| b.starts_with('.'))
        });
        if !joins_on_dots {
            return None;
        }
        let l: String = words.concat();
        if l.is_empty() || !l.chars().all(|c| is_atext(c) || c == '.') {
            return None;
        }
        l
    };
    let domain = match domain {
        Some(d) => {
            let d: String = d.chars().filter(|c| !c.is_whitespace()).collect();
            let ok = !d.is_empty()
                && (d.starts_with('[') && d.ends_with(']')
                    || d.split('.')
                        .all(|l| !l.is_empty() && l.chars().all(is_atext)));
            if !ok {
                return None;
            }
            Some(d)
        }
        None => None,
    };
    Some(Address::Mailbox { local, domain })
}

fn smtp_domain_ok(d: &str) -> bool {
    if d.starts_with('[') {
        return d.ends_with(']') && d.len() > 2;
    }
    !d.is_empty()
        && d.split('.').all(|l| {
            !l.is_empty()
                && l.chars()
                    .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_' || !c.is_ascii())
        })
}

/// Parse an SMTP path (RFC 5321 §4.1.2) as given in MAIL FROM / RCPT TO, with or without
/// angle brackets; source routes are dropped. `None` when it is not a valid path.
pub fn parse_smtp_path(raw: &str) -> Option<Address> {
    let t = raw.trim();
    let inner = if let Some(r) = t.strip_prefix('<') {
        r.strip_suffix('>')?
    } else {
        if t.ends_with('>') {
            return None;
        }
        t
    };
    if inner.contains(['<', '>']) {
        return None;
    }
    if inner.is_empty() {
        return Some(Address::Null);
    }
    let mut rest = inner;
    if inner.starts_with('@') {
        let (route, r) = inner.split_once(':')?;
        for hop in route.split(',') {
            let d = hop.strip_prefix('@')?;
            if !smtp_domain_ok(d) {
                return None;
            }
        }
        rest = r;
    }
    let (local, domain) = if rest.starts_with('"') {
        let mut esc = false;
        let mut end = None;
        for (i, c) in rest.char_indices().skip(1) {
            if esc {
                esc = false;
            } else if c == '\\' {
                esc = true;
            } else if c == '"' {
                end = Some(i);
                break;
            }
        }
        let end = end?;
        let q = rest.get(1..end)?;
        let mut l = String::new();
        let mut e = false;
        for c in q.chars() {
            if e {
                l.push(c);
                e = false;
            } else if c == '\\' {
                e = true;
            } else {
                l.push(c);
            }
        }
        let after = rest.get(end + 1..)?;
        match after.strip_prefix('@') {
            Some(d) => (l, Some(d)),
            None if after.is_empty() => (l, None),
            None => return None,
        }
    } else {
        match rest.split_once('@') {
            Some((l, d)) => (l.to_string(), Some(d)),
            None => (rest.to_string(), None),
        }
    };
    if local.is_empty() && !rest.starts_with('"') {
        return None;
    }
    if !rest.starts_with('"') && !local.chars().all(|c| is_atext(c) || c == '.') {
        return None;
    }
    let domain = match domain {
        Some(d) => {
            if !smtp_domain_ok(d) {
                return None;
            }
            Some(d.to_string())
        }
        None => None,
    };
    Some(Address::Mailbox { local, domain })
}

/// The addr-spec of an envelope path: `Some("")` for the null path, `None` if invalid.
pub fn envelope_spec(raw: &str) -> Option<String> {
    match parse_smtp_path(raw)? {
        Address::Null => Some(String::new()),
        a => Some(a.addr_spec()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn mb(l: &str, d: &str) -> Address {
        Address::Mailbox {
            local: l.into(),
            domain: Some(d.into()),
        }
    }

    #[test]
    fn table() {
        let cases: Vec<(&str, Vec<Address>)> = vec![
            ("a@b.c", vec![mb("a", "b.c")]),
            (
                "\"Joe\" <j@x.org>, k@y.org",
                vec![mb("j", "x.org"), mb("k", "y.org")],
            ),
            (
                "group: a@b, c@d;, e@f",
                vec![mb("a", "b"), mb("c", "d"), mb("e", "f")],
            ),
            ("undisclosed-recipients:;", vec![]),
            ("a@b (comment)", vec![mb("a", "b")]),
            ("<@r1,@r2:u@d>", vec![mb("u", "d")]),
            ("\"S[r]us\"@example.net", vec![mb("S[r]us", "example.net")]),
            ("<>", vec![Address::Null]),
            (
                "not an address",
                vec![Address::Invalid("not an address".into())],
            ),
        ];
        for (i, want) in cases {
            assert_eq!(parse_list(i), want, "{i}");
        }
        assert_eq!(
            mb("S[r]us", "example.net").addr_spec(),
            "\"S[r]us\"@example.net"
        );
        assert_eq!(
            mb("Sirius", "example.net").addr_spec(),
            "Sirius@example.net"
        );
    }
}
