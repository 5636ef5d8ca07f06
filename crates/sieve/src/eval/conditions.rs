//! Evaluating Sieve tests (RFC 5228 §5 and the extensions' tests); called "conditions"
//! here so the file is not mistaken for unit tests.
//!
//! Trusts the compiled tree; trusts nothing in the message. Every test is charged
//! against the step budget; a test that cannot be decided (unparseable date, missing
//! header) is false, and only host or limit failures are errors.

use super::*;

impl Runtime<'_> {
    pub fn test(
        &mut self,
        frame: &mut Frame<'_>,
        t: &Test,
        pos: Pos,
    ) -> Result<bool, RuntimeError> {
        self.step(pos)?;
        match t {
            Test::True => Ok(true),
            Test::False => Ok(false),
            Test::Not(t) => Ok(!self.test(frame, t, pos)?),
            Test::AllOf(ts) => {
                for t in ts {
                    if !self.test(frame, t, pos)? {
                        return Ok(false);
                    }
                }
                Ok(true)
            }
            Test::AnyOf(ts) => {
                for t in ts {
                    if self.test(frame, t, pos)? {
                        return Ok(true);
                    }
                }
                Ok(false)
            }
            Test::Address {
                m,
                part,
                headers,
                keys,
                mime,
                index,
            } => {
                let names = self.expand_all_cow(frame, headers);
                // Each field's address list is parsed once per evaluation (cached).
                let lists: Vec<Rc<[Address]>> = if mime.mime {
                    self.header_fields(&names, mime, index.as_ref())
                        .iter()
                        .map(|hv| Rc::from(address::parse_list(hv)))
                        .collect()
                } else {
                    self.field_indices(&names, index.as_ref())
                        .into_iter()
                        .map(|i| self.field_addresses(i))
                        .collect()
                };
                let values: Vec<Cow<'_, str>> = lists
                    .iter()
                    .flat_map(|l| l.iter())
                    .filter_map(|a| self.address_part(a, *part))
                    .collect();
                self.match_strings(frame, m, &values, keys, true, pos)
            }
            Test::Envelope {
                m,
                part,
                fields,
                keys,
            } => {
                let fields = self.expand_all_cow(frame, fields);
                let addrs: Vec<Rc<Address>> = fields
                    .iter()
                    .filter_map(|f| self.envelope_parsed(f))
                    .collect();
                let values: Vec<Cow<'_, str>> = addrs
                    .iter()
                    .filter_map(|a| self.address_part(a, *part))
                    .collect();
                self.match_strings(frame, m, &values, keys, true, pos)
            }
            Test::Header {
                m,
                headers,
                keys,
                mime,
                index,
            } => {
                let names = self.expand_all_cow(frame, headers);
                let values: Vec<Rc<str>> = match &mime.option {
                    Some(opt) if mime.mime => self
                        .content_header_values(frame, &names, mime, opt)
                        .into_iter()
                        .map(Rc::from)
                        .collect(),
                    _ => self.header_fields(&names, mime, index.as_ref()),
                };
                self.match_strings(frame, m, &values, keys, true, pos)
            }
            Test::Exists { headers, mime } => {
                let names = self.expand_all_cow(frame, headers);
                if mime.anychild {
                    let tree = self.mime_tree();
                    let parts = self.scope_parts(&tree, true);
                    return Ok(names.iter().all(|n| {
                        parts.iter().any(|p| {
                            p.headers
                                .iter()
                                .any(|h| h.name.eq_ignore_ascii_case(n.as_ref()))
                        })
                    }));
                }
                for n in &names {
                    let present = if mime.mime {
                        !self
                            .header_fields(std::slice::from_ref(n), mime, None)
                            .is_empty()
                    } else {
                        self.message
                            .headers
                            .iter()
                            .any(|h| h.name.eq_ignore_ascii_case(n))
                    };
                    if !present {
                        return Ok(false);
                    }
                }
                Ok(true)
            }
            Test::Size { over, limit } => {
                let size = self.message.size() as u64;
                Ok(if *over { size > *limit } else { size < *limit })
            }
            Test::Body { m, transform, keys } => {
                let texts = self.body_texts(frame, transform);
                self.match_strings(frame, m, &texts, keys, false, pos)
            }
            Test::Date {
                m,
                zone,
                header,
                part,
                keys,
                index,
            } => {
                let hname = self.expand(frame, header);
                let part_name = self.expand(frame, part);
                let fields = self.header_fields(
                    std::slice::from_ref(&hname),
                    &MimeOpts::default(),
                    index.as_ref(),
                );
                let Some(raw) = fields.first() else {
                    return self.match_strings(frame, m, &[] as &[&str], keys, false, pos);
                };
                let text = if hname.eq_ignore_ascii_case("received") {
                    raw.rsplit(';').next().unwrap_or("").to_string()
                } else {
                    raw.to_string()
                };
                let Some(dt) = date::parse_rfc5322(&text) else {
                    return Ok(false);
                };
                let Some(dt) = self.apply_zone(frame, zone, dt) else {
                    return Ok(false);
                };
                let Some(value) = date::date_part(dt, &part_name) else {
                    return Ok(false);
                };
                self.match_strings(frame, m, &[value], keys, true, pos)
            }
            Test::CurrentDate {
                m,
                zone,
                part,
                keys,
            } => {
                let part_name = self.expand(frame, part);
                let now = self.host.now();
                let Some(dt) = self.apply_zone(frame, zone, now) else {
                    return Ok(false);
                };
                let Some(value) = date::date_part(dt, &part_name) else {
                    return Ok(false);
                };
                self.match_strings(frame, m, &[value], keys, true, pos)
            }
            Test::String { m, sources, keys } => {
                let mut vals = self.expand_all(frame, sources);
                if matches!(m.match_type, MatchType::Count(_)) {
                    vals.retain(|v| !v.is_empty());
                }
                self.match_strings(frame, m, &vals, keys, true, pos)
            }
            Test::HasFlag { m, vars, keys } => {
                let flags = if vars.is_empty() {
                    self.flags.clone()
                } else {
                    let names = self.expand_all(frame, vars);
                    let vals: Vec<String> = names
                        .iter()
                        .map(|n| {
                            self.lookup(frame, &n.to_ascii_lowercase())
                                .unwrap_or_default()
                        })
                        .collect();
                    split_flags(&vals)
                };
                if matches!(m.match_type, MatchType::Count(_)) {
                    return self.match_strings(frame, m, &flags, keys, true, pos);
                }
                let key_strs = self.expand_all(frame, keys);
                let key_flags: Vec<Value> =
                    split_flags(&key_strs).into_iter().map(Value::lit).collect();
                self.match_strings(frame, m, &flags, &key_flags, true, pos)
            }
            Test::MailboxExists(names) => {
                let names = self.expand_all(frame, names);
                for n in names {
                    if let Some(exists) = crate::testsuite::mailbox_exists(self, &n) {
                        if !exists {
                            return Ok(false);
                        }
                        continue;
                    }
                    if !self.host.mailbox_exists(&n) {
                        return Ok(false);
                    }
                }
                Ok(true)
            }
            Test::SpecialUseExists { mailbox, uses } => {
                let mb = mailbox.as_ref().map(|m| self.expand(frame, m));
                let uses = self.expand_all(frame, uses);
                Ok(self.host.special_use_exists(mb.as_deref(), &uses))
            }
            Test::Environment { m, name, keys } => {
                let n = self.expand(frame, name).to_ascii_lowercase();
                let Some(v) = self.environment_item(&n) else {
                    return Ok(false);
                };
                self.match_strings(frame, m, &[v], keys, true, pos)
            }
            Test::Ihave(b) => Ok(*b),
            Test::Duplicate(d) => self.duplicate(frame, d),
            Test::SpamTest { m, percent, key } => {
                let v = crate::response::spamtest_value(self, *percent);
                self.match_strings(frame, m, &[v], std::slice::from_ref(key), true, pos)
            }
            Test::VirusTest { m, key } => {
                let v = crate::response::virustest_value(self);
                self.match_strings(frame, m, &[v], std::slice::from_ref(key), true, pos)
            }
            Test::ValidNotifyMethod(uris) => {
                let uris = self.expand_all(frame, uris);
                Ok(!uris.is_empty()
                    && uris
                        .iter()
                        .all(|u| crate::actions::check_notify_uri(u).is_ok()))
            }
            Test::NotifyMethodCapability {
                m,
                uri,
                capability,
                keys,
            } => {
                let uri = self.expand(frame, uri);
                let cap = self.expand(frame, capability);
                if crate::actions::check_notify_uri(&uri).is_err()
                    || !cap.eq_ignore_ascii_case("online")
                {
                    return Ok(false);
                }
                self.match_strings(frame, m, &["maybe".to_string()], keys, true, pos)
            }
            Test::Metadata {
                m,
                mailbox,
                name,
                keys,
            } => {
                let mb = mailbox.as_ref().map(|v| self.expand(frame, v));
                let n = self.expand(frame, name);
                if !crate::compile::valid_annotation(&n)
                    || mb.as_deref().is_some_and(|b| b.contains('\u{fffd}'))
                {
                    return Ok(false);
                }
                let v = self.metadata(mb.as_deref(), &n);
                let vals: Vec<String> = v.into_iter().collect();
                self.match_strings(frame, m, &vals, keys, true, pos)
            }
            Test::MetadataExists { mailbox, names } => {
                let mb = mailbox.as_ref().map(|v| self.expand(frame, v));
                if mb.as_deref().is_some_and(|b| b.contains('\u{fffd}')) {
                    return Ok(false);
                }
                let names = self.expand_all(frame, names);
                for n in names {
                    if !crate::compile::valid_annotation(&n)
                        || self.metadata(mb.as_deref(), &n).is_none()
                    {
                        return Ok(false);
                    }
                }
                Ok(true)
            }
            Test::Program(call) => self.run_program(frame, call, pos),
            Test::Testsuite(t) => crate::testsuite::exec_test(self, frame, t, pos),
        }
    }

    pub(super) fn check_program(
        &self,
        program: &str,
        args: &[String],
        pos: Pos,
    ) -> Result<(), RuntimeError> {
        if !crate::program::valid_program_name(program) {
            return Err(err(
                pos,
                format!("invalid program name '{}'", program.escape_default()),
            ));
        }
        if let Some(a) = args.iter().find(|a| !crate::program::valid_program_arg(a)) {
            return Err(err(
                pos,
                format!("invalid program argument '{}'", a.escape_default()),
            ));
        }
        Ok(())
    }

    /// Run filter/execute; `Ok(false)` when the program failed (the test form's value).
    pub(super) fn run_program(
        &mut self,
        frame: &mut Frame<'_>,
        call: &ProgramCall,
        pos: Pos,
    ) -> Result<bool, RuntimeError> {
        let program = self.expand(frame, &call.program);
        let args = self.expand_all(frame, &call.args);
        self.check_program(&program, &args, pos)?;
        let kind = call.kind;
        let input: Option<Vec<u8>> = match (kind, &call.input) {
            (crate::program::ProgramKind::Filter, _) => Some(self.message.to_bytes()),
            (_, Some(v)) => {
                let text = self.expand(frame, v);
                let eol = self
                    .cfg
                    .settings
                    .get("sieve_execute_input_eol")
                    .cloned()
                    .unwrap_or_else(|| "crlf".into());
                Some(crate::program::convert_eol(text.as_bytes(), &eol))
            }
            (_, None) if call.pipe => Some(self.message.to_bytes()),
            _ => None,
        };
        self.charge(pos, 100)?;
        let env = self.envelope.clone();
        let settings = self.cfg.settings.clone();
        let req = crate::program::ProgramRequest {
            kind,
            name: &program,
            args: &args,
            input: input.as_deref(),
            envelope: &env,
            settings: &settings,
        };
        let out = match self.host.run_program(&req) {
            Ok(o) => o,
            Err(_) => return Ok(false),
        };
        match kind {
            crate::program::ProgramKind::Filter => {
                if self.original_message.is_none() {
                    self.original_message = Some(self.message.to_bytes());
                }
                *self.message = Message::parse(&out);
                self.edited = true;
                self.message_changed();
            }
            _ => {
                if let Some(var) = &call.output {
                    let text = String::from_utf8_lossy(&out).into_owned();
                    self.assign(frame, var, text, pos)?;
                }
            }
        }
        Ok(true)
    }

    pub(super) fn metadata(&mut self, mailbox: Option<&str>, name: &str) -> Option<String> {
        if let Some(v) = crate::testsuite::metadata(self, mailbox, name) {
            return v;
        }
        self.host.metadata(mailbox, name)
    }

    pub(super) fn apply_zone(
        &mut self,
        frame: &Frame<'_>,
        zone: &Zone,
        dt: date::DateTime,
    ) -> Option<date::DateTime> {
        match zone {
            Zone::Original => Some(dt),
            Zone::Local => {
                let now = self.host.now();
                Some(date::DateTime {
                    offset: now.offset,
                    ..dt
                })
            }
            Zone::Fixed(v) => {
                let z = self.expand(frame, v);
                let off = date::parse_zone(&z)?;
                Some(date::DateTime { offset: off, ..dt })
            }
        }
    }

    pub(super) fn duplicate(
        &mut self,
        frame: &mut Frame<'_>,
        d: &DuplicateTest,
    ) -> Result<bool, RuntimeError> {
        let id = if let Some(u) = &d.uniqueid {
            self.expand(frame, u)
        } else {
            let h = d
                .header
                .as_ref()
                .map_or_else(|| "message-id".to_string(), |h| self.expand(frame, h));
            match self.message.fields(&h).next() {
                Some(f) => f.unfolded(),
                None => return Ok(false),
            }
        };
        let handle = d
            .handle
            .as_ref()
            .map(|h| self.expand(frame, h))
            .unwrap_or_default();
        let key = format!(
            "{}\u{0}{}\u{0}{}",
            handle,
            if d.uniqueid.is_some() { "u" } else { "h" },
            id
        );
        let seen = self.host.duplicate_seen(&key);
        let period = d.seconds.unwrap_or(7 * 86400);
        if !seen || d.last {
            self.host.duplicate_mark(&key, period, d.last);
        }
        Ok(seen)
    }
}
