//! Message access for tests: header fields with `:index` and `:mime`, content-header
//! options, address parts, body transforms (RFC 5173), and the match machinery that sets
//! match variables (RFC 5229 §3.2).
//!
//! Trusts nothing in the message; matching is charged against the step budget by the
//! size of value and key, so costly patterns cannot run without bound.

use super::*;

impl Runtime<'_> {
    /// The parts in scope for a `:mime` test: the current part (or top), plus its
    /// descendants with `:anychild`.
    pub(super) fn scope_parts<'t>(&self, tree: &'t Part, anychild: bool) -> Vec<&'t Part> {
        let Some(cur) = crate::message::part_at(tree, &self.part_path) else {
            return Vec::new();
        };
        if anychild { cur.flatten() } else { vec![cur] }
    }

    /// Positions in the message header of the named fields, name by name, honouring
    /// `:index` (one field per name).
    pub fn field_indices<S: AsRef<str>>(
        &self,
        names: &[S],
        index: Option<&IndexOpt>,
    ) -> Vec<usize> {
        let mut out = Vec::new();
        for n in names {
            let n = n.as_ref();
            let start = out.len();
            out.extend(
                self.message
                    .headers
                    .iter()
                    .enumerate()
                    .filter(|(_, h)| h.name.eq_ignore_ascii_case(n))
                    .map(|(i, _)| i),
            );
            if let Some(ix) = index {
                let picked = out.get(start..).and_then(|p| select_index(p, ix));
                out.truncate(start);
                out.extend(picked);
            }
        }
        out
    }

    /// Values of the named header fields (decoded), honouring `:index` and `:mime`.
    pub fn header_fields<S: AsRef<str>>(
        &mut self,
        names: &[S],
        mime: &MimeOpts,
        index: Option<&IndexOpt>,
    ) -> Vec<Rc<str>> {
        if mime.mime {
            let mut out = Vec::new();
            let tree = self.mime_tree();
            for p in self.scope_parts(&tree, mime.anychild) {
                for n in names {
                    out.extend(
                        p.headers
                            .iter()
                            .filter(|h| h.name.eq_ignore_ascii_case(n.as_ref()))
                            .map(|h| Rc::from(h.decoded())),
                    );
                }
            }
            return out;
        }
        let idx = self.field_indices(names, index);
        idx.into_iter().map(|i| self.field_decoded(i)).collect()
    }

    pub(super) fn content_header_values<S: AsRef<str>>(
        &mut self,
        frame: &Frame<'_>,
        names: &[S],
        mime: &MimeOpts,
        opt: &MimeOption,
    ) -> Vec<String> {
        let tree = self.mime_tree();
        let params: Vec<String> = match opt {
            MimeOption::Param(p) => self.expand_all(frame, p),
            _ => Vec::new(),
        };
        let mut out = Vec::new();
        for p in self.scope_parts(&tree, mime.anychild) {
            for n in names {
                for h in p
                    .headers
                    .iter()
                    .filter(|h| h.name.eq_ignore_ascii_case(n.as_ref()))
                {
                    let v = h.decoded();
                    let (main, ps) = crate::message::split_params(&v);
                    match opt {
                        MimeOption::Type | MimeOption::Subtype | MimeOption::ContentType => {
                            let (t, st) = main.split_once('/').unwrap_or((main.as_str(), ""));
                            out.push(match opt {
                                MimeOption::Type => t.trim().to_string(),
                                MimeOption::Subtype => st.trim().to_string(),
                                _ => main.clone(),
                            });
                        }
                        MimeOption::Param(_) => {
                            for (pn, pv) in &ps {
                                if params.iter().any(|x| x.eq_ignore_ascii_case(pn)) {
                                    out.push(pv.clone());
                                }
                            }
                        }
                    }
                }
            }
        }
        out
    }

    pub(super) fn address_part<'a>(
        &self,
        a: &'a Address,
        part: AddressPart,
    ) -> Option<Cow<'a, str>> {
        match a {
            Address::Mailbox { local, domain } => {
                let sep = self.cfg.subaddress_separator.as_str();
                match part {
                    AddressPart::All => Some(Cow::Owned(a.addr_spec())),
                    AddressPart::LocalPart => Some(Cow::Borrowed(local)),
                    AddressPart::Domain => domain.as_deref().map(Cow::Borrowed),
                    AddressPart::User | AddressPart::Detail => {
                        // Any character of the separator setting separates (Dovecot's
                        // recipient_delimiter semantics); the first one found wins.
                        let cut = if sep.is_empty() {
                            None
                        } else {
                            local.find(|c: char| sep.contains(c))
                        };
                        match (part, cut) {
                            (AddressPart::User, Some(i)) => {
                                Some(Cow::Borrowed(local.get(..i).unwrap_or("")))
                            }
                            (AddressPart::User, None) => Some(Cow::Borrowed(local)),
                            (_, Some(i)) => {
                                let skip = local
                                    .get(i..)
                                    .and_then(|r| r.chars().next())
                                    .map_or(1, char::len_utf8);
                                Some(Cow::Borrowed(local.get(i + skip..).unwrap_or("")))
                            }
                            (_, None) => None,
                        }
                    }
                }
            }
            Address::Null => Some(Cow::Borrowed("")),
            Address::Invalid(s) => match part {
                AddressPart::All => Some(Cow::Borrowed(s)),
                _ => None,
            },
        }
    }

    pub(super) fn body_texts(
        &mut self,
        frame: &Frame<'_>,
        transform: &BodyTransform,
    ) -> Vec<String> {
        if !self.message.has_body {
            return Vec::new();
        }
        match transform {
            BodyTransform::Raw => vec![String::from_utf8_lossy(self.message.body()).into_owned()],
            BodyTransform::Text => self.content_texts(
                &["text".to_string(), "application/xhtml+xml".to_string()],
                true,
            ),
            BodyTransform::Content(types) => {
                let t = self.expand_all(frame, types);
                self.content_texts(&t, false)
            }
        }
    }

    pub(super) fn content_texts(&mut self, types: &[String], as_text: bool) -> Vec<String> {
        let tree = self.mime_tree();
        let mut out = Vec::new();
        for p in tree.flatten() {
            let ct = &p.content_type;
            let matches = types.iter().any(|t| {
                let t = t.trim().to_ascii_lowercase();
                match t.split_once('/') {
                    None => t.is_empty() || t == ct.kind,
                    Some((k, s)) => !s.contains('/') && k == ct.kind && s == ct.subtype,
                }
            });
            if !matches {
                continue;
            }
            if ct.kind == "multipart" {
                // Prologue and epilogue text of the multipart.
                if !as_text {
                    out.push(crate::message::multipart_outside_text(p));
                }
            } else if ct.kind == "message" && ct.subtype == "rfc822" {
                if as_text {
                    continue;
                }
                if let Some(c) = p.children.first() {
                    let hdr: String = c
                        .headers
                        .iter()
                        .map(|h| format!("{}:{}\r\n", h.name, String::from_utf8_lossy(&h.raw)))
                        .collect();
                    out.push(hdr);
                }
            } else {
                let Some(text) = p.text() else { continue };
                let html = ct.subtype == "html" || ct.subtype == "xhtml+xml";
                out.push(if as_text && html {
                    html_to_text(&text)
                } else {
                    text
                });
            }
        }
        out
    }

    // ------------------------------------------------------------ matching

    pub(super) fn regex(
        &mut self,
        pattern: &str,
        cmp: Comparator,
        pos: Pos,
    ) -> Result<Rc<regex::Regex>, RuntimeError> {
        let key = (pattern.to_string(), cmp);
        if let Some(r) = self.regex_cache.get(&key) {
            return Ok(r.clone());
        }
        let re = Rc::new(matching::compile_regex(pattern, cmp).map_err(|e| err(pos, e))?);
        if self.regex_cache.len() < 256 {
            self.regex_cache.insert(key, re.clone());
        }
        Ok(re)
    }

    /// Match `values` against `keys`; sets match variables on success when `capture`.
    pub fn match_strings<V: AsRef<str>>(
        &mut self,
        frame: &mut Frame<'_>,
        m: &Matcher,
        values: &[V],
        keys: &[Value],
        capture: bool,
        pos: Pos,
    ) -> Result<bool, RuntimeError> {
        let keys = self.expand_all_cow(frame, keys);
        let capture = capture && frame.script.requires("variables");
        let cmp = m.comparator;
        match m.match_type {
            MatchType::Count(op) => {
                let n = values.len().to_string();
                Ok(keys.iter().any(|k| op.holds(cmp.compare(&n, k))))
            }
            MatchType::Value(op) => Ok(values
                .iter()
                .any(|v| keys.iter().any(|k| op.holds(cmp.compare(v.as_ref(), k))))),
            MatchType::Is => Ok(values
                .iter()
                .any(|v| keys.iter().any(|k| cmp.equals(v.as_ref(), k)))),
            MatchType::Contains => Ok(values
                .iter()
                .any(|v| keys.iter().any(|k| cmp.contains(v.as_ref(), k)))),
            MatchType::Matches => {
                if values.is_empty() {
                    return Ok(false);
                }
                let globs: Vec<matching::Glob> =
                    keys.iter().map(|k| matching::Glob::new(k, cmp)).collect();
                for v in values {
                    let v = v.as_ref();
                    for (k, g) in keys.iter().zip(&globs) {
                        self.charge(
                            pos,
                            1 + (v.len() as u64).saturating_mul(k.len() as u64) / 1024,
                        )?;
                        if !capture {
                            if g.is_match(v) {
                                return Ok(true);
                            }
                            continue;
                        }
                        if let Some(caps) = g.captures(v) {
                            frame.match_vars =
                                caps.into_iter().take(self.cfg.max_match_values).collect();
                            return Ok(true);
                        }
                    }
                }
                Ok(false)
            }
            MatchType::Regex => {
                for k in &keys {
                    // An invalid pattern made at runtime does not match (and is not fatal).
                    let re = match self.regex(k, cmp, pos) {
                        Ok(re) => re,
                        Err(e) => {
                            if self.warnings.len() < 100 {
                                self.warnings.push(e.message);
                            }
                            continue;
                        }
                    };
                    for v in values {
                        let v = v.as_ref();
                        self.charge(
                            pos,
                            1 + (v.len() as u64).saturating_mul(k.len() as u64) / 256,
                        )?;
                        if !capture {
                            if re.is_match(v) {
                                return Ok(true);
                            }
                            continue;
                        }
                        if let Some(caps) = matching::regex_captures(&re, v) {
                            if capture {
                                frame.match_vars =
                                    caps.into_iter().take(self.cfg.max_match_values).collect();
                            }
                            return Ok(true);
                        }
                    }
                }
                Ok(false)
            }
        }
    }
}
