//! Compiling Sieve tests (RFC 5228 §5 and the extensions' tests) into [`Test`] values;
//! called "conditions" here so the file is not mistaken for unit tests.
//!
//! Trusts the parser's tree shape; every argument is checked against the test's
//! signature and reported with `line:column`. Nesting of tests is bounded by
//! `max_nesting`; a test that fails validation yields `None` after reporting.

use super::*;

impl Compiler<'_, '_> {
    pub(crate) fn test(&mut self, node: &TestNode, depth: usize) -> Option<Test> {
        let name = node.name.as_str();
        let pos = node.pos;
        if depth > self.cfg.max_nesting {
            self.err(pos, "tests nested too deeply");
            return None;
        }
        match name {
            "not" => {
                if !node.args.is_empty() || node.tests.len() != 1 || node.test_list {
                    self.err(
                        pos,
                        "the not test requires exactly one sub-test and no arguments",
                    );
                    return None;
                }
                return Some(Test::Not(Box::new(self.test(&node.tests[0], depth + 1)?)));
            }
            "allof" | "anyof" => {
                if !node.args.is_empty() || !node.test_list || node.tests.is_empty() {
                    self.err(
                        pos,
                        format!("the {name} test requires a list of sub-tests and no arguments"),
                    );
                    return None;
                }
                let mut ts = Vec::new();
                let mut ok = true;
                for t in &node.tests {
                    match self.test(t, depth + 1) {
                        Some(t) => ts.push(t),
                        None => ok = false,
                    }
                }
                if !ok {
                    return None;
                }
                return Some(if name == "allof" {
                    Test::AllOf(ts)
                } else {
                    Test::AnyOf(ts)
                });
            }
            _ => {}
        }
        if self.has("vnd.dovecot.testsuite")
            && let Some(r) = crate::testsuite::compile_test(self, node)
        {
            return r;
        }
        let known = match name {
            "true" | "false" | "address" | "header" | "exists" | "size" => true,
            "envelope" => self.has("envelope"),
            "body" => self.has("body"),
            "date" | "currentdate" => self.has("date"),
            "string" => self.has("variables"),
            "hasflag" => self.has("imap4flags"),
            "mailboxexists" => self.has("mailbox"),
            "specialuse_exists" => self.has("special-use"),
            "environment" => self.has("environment"),
            "ihave" => self.has("ihave"),
            "duplicate" => self.has("duplicate"),
            "spamtest" => self.has("spamtest"),
            "virustest" => self.has("virustest"),
            "valid_notify_method" | "notify_method_capability" => self.has("enotify"),
            "metadata" | "metadataexists" => self.has("mboxmetadata"),
            "filter" => self.has("vnd.dovecot.filter"),
            "execute" => self.has("vnd.dovecot.execute"),
            "servermetadata" | "servermetadataexists" => self.has("servermetadata"),
            _ => false,
        };
        if !known {
            self.err(
                pos,
                format!("unknown test '{name}' (possibly a missing require)"),
            );
            return None;
        }
        if !self.no_tests(name, "test", pos, &node.tests) {
            return None;
        }
        let args = &node.args;
        let cm: &[&[TagSpec]] = &[validate::COMPARATOR, validate::MATCH];
        match name {
            "true" | "false" => {
                let s = self.split(name, "test", pos, args, &[])?;
                if !self.positional(name, "test", pos, &s, &[]) {
                    return None;
                }
                Some(if name == "true" {
                    Test::True
                } else {
                    Test::False
                })
            }
            "address" => {
                let s = self.split(
                    name,
                    "test",
                    pos,
                    args,
                    &[
                        validate::COMPARATOR,
                        validate::MATCH,
                        validate::ADDRESS_PART,
                        validate::INDEX,
                        validate::MIME,
                    ],
                )?;
                if !self.positional(
                    name,
                    "test",
                    pos,
                    &s,
                    &[(Kind::StrList, "header list"), (Kind::StrList, "key list")],
                ) {
                    return None;
                }
                let m = self.matcher(name, &s)?;
                let part = self.address_part(&s);
                let index = self.index(&s);
                let mime = self.mime_opts(name, &s, false);
                let headers = self.values(&s.positional[0]);
                for (v, lit) in headers.iter().zip(validate::strings(&s.positional[0])) {
                    if let Some(c) = v.constant() {
                        if !valid_field_name(&c) {
                            self.err(
                                lit.pos,
                                format!(
                                    "the address test: specified header field name '{c}' is invalid"
                                ),
                            );
                        } else if !is_address_header(&c) && !self.cfg.lenient_address_headers {
                            self.err(lit.pos, format!("the address test: specified header '{c}' is not allowed for the address test (not an address header)"));
                        }
                    }
                }
                let keys = self.values(&s.positional[1]);
                self.check_keys(&m, &keys, pos);
                Some(Test::Address {
                    m,
                    part,
                    headers,
                    keys,
                    mime,
                    index,
                })
            }
            "envelope" => {
                let s = self.split(
                    name,
                    "test",
                    pos,
                    args,
                    &[
                        validate::COMPARATOR,
                        validate::MATCH,
                        validate::ADDRESS_PART,
                    ],
                )?;
                if !self.positional(
                    name,
                    "test",
                    pos,
                    &s,
                    &[
                        (Kind::StrList, "envelope part"),
                        (Kind::StrList, "key list"),
                    ],
                ) {
                    return None;
                }
                let m = self.matcher(name, &s)?;
                let part = self.address_part(&s);
                let fields = self.values(&s.positional[0]);
                for f in &fields {
                    if let Some(c) = f.constant()
                        && !matches!(
                            c.to_ascii_lowercase().as_str(),
                            "from" | "to" | "auth" | "orig_to"
                        )
                    {
                        self.err(pos, format!("envelope test: unknown envelope part '{c}'"));
                    }
                }
                let keys = self.values(&s.positional[1]);
                self.check_keys(&m, &keys, pos);
                Some(Test::Envelope {
                    m,
                    part,
                    fields,
                    keys,
                })
            }
            "header" => {
                let s = self.split(
                    name,
                    "test",
                    pos,
                    args,
                    &[
                        validate::COMPARATOR,
                        validate::MATCH,
                        validate::INDEX,
                        validate::MIME,
                    ],
                )?;
                if !self.positional(
                    name,
                    "test",
                    pos,
                    &s,
                    &[(Kind::StrList, "header names"), (Kind::StrList, "key list")],
                ) {
                    return None;
                }
                let m = self.matcher(name, &s)?;
                let index = self.index(&s);
                let mime = self.mime_opts(name, &s, true);
                let headers = self.header_names(&s.positional[0], name);
                let keys = self.values(&s.positional[1]);
                self.check_keys(&m, &keys, pos);
                Some(Test::Header {
                    m,
                    headers,
                    keys,
                    mime,
                    index,
                })
            }
            "exists" => {
                let s = self.split(name, "test", pos, args, &[validate::MIME])?;
                if !self.positional(name, "test", pos, &s, &[(Kind::StrList, "header names")]) {
                    return None;
                }
                let mime = self.mime_opts(name, &s, false);
                let headers = self.header_names(&s.positional[0], name);
                Some(Test::Exists { headers, mime })
            }
            "size" => {
                let s = self.split(name, "test", pos, args, &[SIZE])?;
                if !self.positional(name, "test", pos, &s, &[(Kind::Num, "limit")]) {
                    return None;
                }
                let over = s.has("over");
                if over == s.has("under") {
                    self.err(
                        pos,
                        "the size test requires exactly one of the :over or :under tags",
                    );
                    return None;
                }
                let Some(Arg::Number(limit, _)) = s.positional.first() else {
                    return None;
                };
                Some(Test::Size {
                    over,
                    limit: *limit,
                })
            }
            "body" => {
                let s = self.split(
                    name,
                    "test",
                    pos,
                    args,
                    &[validate::COMPARATOR, validate::MATCH, BODY],
                )?;
                if !self.positional(name, "test", pos, &s, &[(Kind::StrList, "key list")]) {
                    return None;
                }
                let m = self.matcher(name, &s)?;
                let mut transform = BodyTransform::Text;
                let mut seen = 0;
                for tag in &s.tags {
                    match tag.name.as_str() {
                        "raw" => transform = BodyTransform::Raw,
                        "text" => transform = BodyTransform::Text,
                        "content" => {
                            transform = BodyTransform::Content(
                                tag.arg.as_ref().map(|a| self.values(a)).unwrap_or_default(),
                            )
                        }
                        _ => continue,
                    }
                    seen += 1;
                }
                if seen > 1 {
                    self.err(pos, "the body test: multiple body transforms specified");
                    return None;
                }
                let keys = self.values(&s.positional[0]);
                self.check_keys(&m, &keys, pos);
                Some(Test::Body { m, transform, keys })
            }
            "date" | "currentdate" => {
                let is_date = name == "date";
                let groups: &[&[TagSpec]] = if is_date {
                    &[validate::COMPARATOR, validate::MATCH, ZONE, validate::INDEX]
                } else {
                    &[validate::COMPARATOR, validate::MATCH, ZONE_CUR]
                };
                let s = self.split(name, "test", pos, args, groups)?;
                let slots: &[(Kind, &str)] = if is_date {
                    &[
                        (Kind::Str, "header name"),
                        (Kind::Str, "date part"),
                        (Kind::StrList, "key list"),
                    ]
                } else {
                    &[(Kind::Str, "date part"), (Kind::StrList, "key list")]
                };
                if !self.positional(name, "test", pos, &s, slots) {
                    return None;
                }
                let m = self.matcher(name, &s)?;
                if s.has("zone") && s.has("originalzone") {
                    self.err(
                        pos,
                        format!(
                            "the {name} test: :zone and :originalzone cannot both be specified"
                        ),
                    );
                    return None;
                }
                let zone = match (s.get("zone"), s.has("originalzone")) {
                    (Some(t), _) => {
                        let v = self.str_value(t.arg.as_ref());
                        if let Some(c) = v.constant()
                            && crate::date::parse_zone(&c).is_none()
                        {
                            self.diag
                                .warn(t.pos, format!("{name} test: invalid :zone argument '{c}'"));
                        }
                        Zone::Fixed(v)
                    }
                    (None, true) => Zone::Original,
                    _ => Zone::Local,
                };
                let off = usize::from(is_date);
                let part = self.str_value(s.positional.get(off));
                if let Some(c) = part.constant()
                    && !crate::date::DATE_PARTS.contains(&c.to_ascii_lowercase().as_str())
                {
                    self.err(pos, format!("{name} test: invalid date part '{c}'"));
                    return None;
                }
                let keys = s
                    .positional
                    .get(off + 1)
                    .map(|a| self.values(a))
                    .unwrap_or_default();
                self.check_keys(&m, &keys, pos);
                if is_date {
                    let header = self.str_value(s.positional.first());
                    let index = self.index(&s);
                    Some(Test::Date {
                        m,
                        zone,
                        header,
                        part,
                        keys,
                        index,
                    })
                } else {
                    Some(Test::CurrentDate {
                        m,
                        zone,
                        part,
                        keys,
                    })
                }
            }
            "string" => {
                let s = self.split(name, "test", pos, args, cm)?;
                if !self.positional(
                    name,
                    "test",
                    pos,
                    &s,
                    &[(Kind::StrList, "source"), (Kind::StrList, "key list")],
                ) {
                    return None;
                }
                let m = self.matcher(name, &s)?;
                let sources = self.values(&s.positional[0]);
                let keys = self.values(&s.positional[1]);
                self.check_keys(&m, &keys, pos);
                Some(Test::String { m, sources, keys })
            }
            "hasflag" => {
                let s = self.split(name, "test", pos, args, cm)?;
                let m = self.matcher(name, &s)?;
                match s.positional.len() {
                    1 => {
                        if !self.positional(name, "test", pos, &s, &[(Kind::StrList, "flag list")])
                        {
                            return None;
                        }
                        let keys = self.values(&s.positional[0]);
                        Some(Test::HasFlag {
                            m,
                            vars: Vec::new(),
                            keys,
                        })
                    }
                    _ => {
                        if !self.positional(
                            name,
                            "test",
                            pos,
                            &s,
                            &[
                                (Kind::StrList, "variable list"),
                                (Kind::StrList, "flag list"),
                            ],
                        ) {
                            return None;
                        }
                        if !self.has("variables") {
                            self.err(
                                pos,
                                "hasflag: variable list requires the variables extension",
                            );
                            return None;
                        }
                        let vars = self.values(&s.positional[0]);
                        let keys = self.values(&s.positional[1]);
                        Some(Test::HasFlag { m, vars, keys })
                    }
                }
            }
            "mailboxexists" => {
                let s = self.split(name, "test", pos, args, &[])?;
                if !self.positional(name, "test", pos, &s, &[(Kind::StrList, "mailbox names")]) {
                    return None;
                }
                Some(Test::MailboxExists(self.values(&s.positional[0])))
            }
            "specialuse_exists" => {
                let s = self.split(name, "test", pos, args, &[])?;
                match s.positional.len() {
                    1 => {
                        if !self.positional(
                            name,
                            "test",
                            pos,
                            &s,
                            &[(Kind::StrList, "special-use flags")],
                        ) {
                            return None;
                        }
                        Some(Test::SpecialUseExists {
                            mailbox: None,
                            uses: self.values(&s.positional[0]),
                        })
                    }
                    _ => {
                        if !self.positional(
                            name,
                            "test",
                            pos,
                            &s,
                            &[(Kind::Str, "mailbox"), (Kind::StrList, "special-use flags")],
                        ) {
                            return None;
                        }
                        let mailbox = Some(self.str_value(s.positional.first()));
                        Some(Test::SpecialUseExists {
                            mailbox,
                            uses: self.values(&s.positional[1]),
                        })
                    }
                }
            }
            "environment" => {
                let s = self.split(name, "test", pos, args, cm)?;
                if !self.positional(
                    name,
                    "test",
                    pos,
                    &s,
                    &[(Kind::Str, "name"), (Kind::StrList, "key list")],
                ) {
                    return None;
                }
                let m = self.matcher(name, &s)?;
                let ename = self.str_value(s.positional.first());
                let keys = self.values(&s.positional[1]);
                self.check_keys(&m, &keys, pos);
                Some(Test::Environment {
                    m,
                    name: ename,
                    keys,
                })
            }
            "ihave" => {
                let s = self.split(name, "test", pos, args, &[])?;
                if !self.positional(name, "test", pos, &s, &[(Kind::StrList, "capabilities")]) {
                    return None;
                }
                let mut all = true;
                let caps: Vec<String> = validate::strings(&s.positional[0])
                    .into_iter()
                    .map(|l| l.value.to_ascii_lowercase())
                    .collect();
                for c in &caps {
                    let restricted = matches!(
                        c.as_str(),
                        "encoded-character" | "variables" | "vnd.dovecot.testsuite"
                    );
                    if restricted || !self.known_extension(c) {
                        all = false;
                    }
                }
                if all {
                    for c in caps {
                        for i in validate::implied(&c) {
                            self.exts.insert((*i).to_string());
                        }
                        self.exts.insert(c);
                    }
                }
                Some(Test::Ihave(all))
            }
            "duplicate" => {
                let s = self.split(name, "test", pos, args, &[DUPLICATE])?;
                if !self.positional(name, "test", pos, &s, &[]) {
                    return None;
                }
                if s.has("header") && s.has("uniqueid") {
                    self.err(
                        pos,
                        "duplicate test: :header and :uniqueid cannot both be specified",
                    );
                    return None;
                }
                let handle = s.get("handle").map(|t| self.str_value(t.arg.as_ref()));
                let header = s.get("header").map(|t| self.str_value(t.arg.as_ref()));
                let uniqueid = s.get("uniqueid").map(|t| self.str_value(t.arg.as_ref()));
                let seconds = s.get("seconds").and_then(|t| match t.arg {
                    Some(Arg::Number(n, _)) => Some(n),
                    _ => None,
                });
                Some(Test::Duplicate(Box::new(DuplicateTest {
                    handle,
                    header,
                    uniqueid,
                    seconds,
                    last: s.has("last"),
                })))
            }
            "spamtest" | "virustest" => {
                let groups: &[&[TagSpec]] = if name == "spamtest" {
                    &[validate::COMPARATOR, validate::MATCH, PERCENT]
                } else {
                    &[validate::COMPARATOR, validate::MATCH]
                };
                let s = self.split(name, "test", pos, args, groups)?;
                if !self.positional(name, "test", pos, &s, &[(Kind::Str, "value")]) {
                    return None;
                }
                let mut m = self.matcher(name, &s)?;
                if !s.has("comparator") {
                    m.comparator = Comparator::AsciiNumeric;
                }
                let key = self.str_value(s.positional.first());
                if name == "spamtest" {
                    Some(Test::SpamTest {
                        m,
                        percent: s.has("percent"),
                        key,
                    })
                } else {
                    Some(Test::VirusTest { m, key })
                }
            }
            "filter" | "execute" => {
                Some(Test::Program(self.program_call(name, "test", pos, args)?))
            }
            "metadata" | "servermetadata" => {
                let s = self.split(name, "test", pos, args, cm)?;
                let server = name == "servermetadata";
                let slots: &[(Kind, &str)] = if server {
                    &[(Kind::Str, "annotation-name"), (Kind::StrList, "key-list")]
                } else {
                    &[
                        (Kind::Str, "mailbox"),
                        (Kind::Str, "annotation-name"),
                        (Kind::StrList, "key-list"),
                    ]
                };
                if !self.positional(name, "test", pos, &s, slots) {
                    return None;
                }
                let m = self.matcher(name, &s)?;
                let mailbox = if server {
                    None
                } else {
                    Some(self.str_value(s.positional.first()))
                };
                let off = usize::from(!server);
                let aname = self.str_value(s.positional.get(off));
                if let Some(c) = aname.constant()
                    && !valid_annotation(&c)
                {
                    self.diag
                        .warn(pos, format!("{name} test: invalid annotation name '{c}'"));
                }
                let keys = s
                    .positional
                    .get(off + 1)
                    .map(|a| self.values(a))
                    .unwrap_or_default();
                self.check_keys(&m, &keys, pos);
                Some(Test::Metadata {
                    m,
                    mailbox,
                    name: aname,
                    keys,
                })
            }
            "metadataexists" | "servermetadataexists" => {
                let s = self.split(name, "test", pos, args, &[])?;
                let server = name == "servermetadataexists";
                let slots: &[(Kind, &str)] = if server {
                    &[(Kind::StrList, "annotation-names")]
                } else {
                    &[(Kind::Str, "mailbox"), (Kind::StrList, "annotation-names")]
                };
                if !self.positional(name, "test", pos, &s, slots) {
                    return None;
                }
                let mailbox = if server {
                    None
                } else {
                    Some(self.str_value(s.positional.first()))
                };
                let names = s
                    .positional
                    .last()
                    .map(|a| self.values(a))
                    .unwrap_or_default();
                Some(Test::MetadataExists { mailbox, names })
            }
            "valid_notify_method" => {
                let s = self.split(name, "test", pos, args, &[])?;
                if !self.positional(
                    name,
                    "test",
                    pos,
                    &s,
                    &[(Kind::StrList, "notification uris")],
                ) {
                    return None;
                }
                Some(Test::ValidNotifyMethod(self.values(&s.positional[0])))
            }
            "notify_method_capability" => {
                let s = self.split(name, "test", pos, args, cm)?;
                if !self.positional(
                    name,
                    "test",
                    pos,
                    &s,
                    &[
                        (Kind::Str, "notification uri"),
                        (Kind::Str, "notification capability"),
                        (Kind::StrList, "key list"),
                    ],
                ) {
                    return None;
                }
                let m = self.matcher(name, &s)?;
                let uri = self.str_value(s.positional.first());
                let capability = self.str_value(s.positional.get(1));
                let keys = self.values(&s.positional[2]);
                Some(Test::NotifyMethodCapability {
                    m,
                    uri,
                    capability,
                    keys,
                })
            }
            _ => None,
        }
    }
}
