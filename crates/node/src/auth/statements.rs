//! The role and permission statements (CREATE/ALTER/DROP ROLE and USER,
//! GRANT, REVOKE, LIST ...): the CQL parser names them
//! `Statement::Unsupported`, and this small parser of their own grammar
//! (Cassandra's `Parser.g`) reads them from the query text.

use std::collections::BTreeMap;

use super::{Permission, Resource};

/// A role or permission statement.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) enum AuthStatement {
    CreateRole {
        name: String,
        if_not_exists: bool,
        options: RoleOptions,
    },
    AlterRole {
        name: String,
        if_exists: bool,
        options: RoleOptions,
    },
    DropRole {
        name: String,
        if_exists: bool,
    },
    GrantRole {
        role: String,
        grantee: String,
    },
    RevokeRole {
        role: String,
        revokee: String,
    },
    ListRoles {
        of: Option<String>,
        recursive: bool,
    },
    /// LIST USERS: the roles that can log in.
    ListUsers,
    GrantPermissions {
        permissions: Vec<Permission>,
        resource: Resource,
        grantee: String,
    },
    RevokePermissions {
        permissions: Vec<Permission>,
        resource: Resource,
        revokee: String,
    },
    ListPermissions {
        permissions: Vec<Permission>,
        resource: Option<Resource>,
        of: Option<String>,
        recursive: bool,
    },
}

/// `WITH PASSWORD = .. AND LOGIN = .. AND SUPERUSER = .. AND OPTIONS = {..}`.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub(crate) struct RoleOptions {
    pub password: Option<String>,
    pub login: Option<bool>,
    pub superuser: Option<bool>,
    pub options: Option<BTreeMap<String, String>>,
}

impl RoleOptions {
    pub(crate) fn is_empty(&self) -> bool {
        *self == RoleOptions::default()
    }
}

#[derive(Clone, Debug, PartialEq, Eq)]
enum Tok {
    /// An identifier: unquoted ones lower-cased, `"quoted"` ones kept.
    Ident {
        text: String,
        quoted: bool,
    },
    /// A string literal (`'..'` or `$$..$$`).
    Str(String),
    Punct(char),
}

fn tokenize(src: &str) -> Result<Vec<Tok>, String> {
    let mut out = Vec::new();
    let chars: Vec<char> = src.chars().collect();
    let mut i = 0;
    while i < chars.len() {
        let c = chars[i];
        if c.is_whitespace() {
            i += 1;
        } else if c == '-' && chars.get(i + 1) == Some(&'-') {
            while i < chars.len() && chars[i] != '\n' {
                i += 1;
            }
        } else if c == '\'' {
            let mut s = String::new();
            i += 1;
            loop {
                match chars.get(i) {
                    None => return Err("unterminated string literal".into()),
                    Some('\'') if chars.get(i + 1) == Some(&'\'') => {
                        s.push('\'');
                        i += 2;
                    }
                    Some('\'') => {
                        i += 1;
                        break;
                    }
                    Some(&ch) => {
                        s.push(ch);
                        i += 1;
                    }
                }
            }
            out.push(Tok::Str(s));
        } else if c == '$' && chars.get(i + 1) == Some(&'$') {
            let start = i + 2;
            let mut j = start;
            while j + 1 < chars.len() && !(chars[j] == '$' && chars[j + 1] == '$') {
                j += 1;
            }
            if j + 1 >= chars.len() {
                return Err("unterminated $$ string".into());
            }
            out.push(Tok::Str(chars[start..j].iter().collect()));
            i = j + 2;
        } else if c == '"' {
            let mut s = String::new();
            i += 1;
            loop {
                match chars.get(i) {
                    None => return Err("unterminated quoted identifier".into()),
                    Some('"') if chars.get(i + 1) == Some(&'"') => {
                        s.push('"');
                        i += 2;
                    }
                    Some('"') => {
                        i += 1;
                        break;
                    }
                    Some(&ch) => {
                        s.push(ch);
                        i += 1;
                    }
                }
            }
            out.push(Tok::Ident {
                text: s,
                quoted: true,
            });
        } else if c.is_alphanumeric() || c == '_' {
            let start = i;
            while i < chars.len() && (chars[i].is_alphanumeric() || chars[i] == '_') {
                i += 1;
            }
            out.push(Tok::Ident {
                text: chars[start..i].iter().collect::<String>().to_lowercase(),
                quoted: false,
            });
        } else if ",.={}:;()".contains(c) {
            out.push(Tok::Punct(c));
            i += 1;
        } else {
            return Err(format!("unexpected character '{c}'"));
        }
    }
    while out.last() == Some(&Tok::Punct(';')) {
        out.pop();
    }
    Ok(out)
}

struct P {
    toks: Vec<Tok>,
    i: usize,
}

impl P {
    fn peek_kw(&self, kw: &str) -> bool {
        matches!(self.toks.get(self.i), Some(Tok::Ident { text, quoted: false }) if text == kw)
    }

    fn eat_kw(&mut self, kw: &str) -> bool {
        let hit = self.peek_kw(kw);
        if hit {
            self.i += 1;
        }
        hit
    }

    fn expect_kw(&mut self, kw: &str) -> Result<(), String> {
        if self.eat_kw(kw) {
            Ok(())
        } else {
            Err(self.mismatch(&kw.to_uppercase()))
        }
    }

    fn eat_punct(&mut self, c: char) -> bool {
        let hit = self.toks.get(self.i) == Some(&Tok::Punct(c));
        if hit {
            self.i += 1;
        }
        hit
    }

    fn expect_punct(&mut self, c: char) -> Result<(), String> {
        if self.eat_punct(c) {
            Ok(())
        } else {
            Err(self.mismatch(&format!("'{c}'")))
        }
    }

    fn mismatch(&self, expecting: &str) -> String {
        match self.toks.get(self.i) {
            Some(t) => format!("mismatched input '{}' expecting {expecting}", show(t)),
            None => format!("no viable alternative at input '<EOF>' expecting {expecting}"),
        }
    }

    /// A role name: an identifier (lower-cased unless quoted) or a string.
    fn role_name(&mut self) -> Result<String, String> {
        match self.toks.get(self.i).cloned() {
            Some(Tok::Ident { text, .. }) | Some(Tok::Str(text)) => {
                self.i += 1;
                Ok(text)
            }
            _ => Err(self.mismatch("a role name")),
        }
    }

    fn ident(&mut self) -> Result<String, String> {
        match self.toks.get(self.i).cloned() {
            Some(Tok::Ident { text, .. }) => {
                self.i += 1;
                Ok(text)
            }
            _ => Err(self.mismatch("an identifier")),
        }
    }

    fn string(&mut self) -> Result<String, String> {
        match self.toks.get(self.i).cloned() {
            Some(Tok::Str(s)) => {
                self.i += 1;
                Ok(s)
            }
            _ => Err(self.mismatch("a string")),
        }
    }

    fn boolean(&mut self) -> Result<bool, String> {
        if self.eat_kw("true") {
            Ok(true)
        } else if self.eat_kw("false") {
            Ok(false)
        } else {
            Err(self.mismatch("true or false"))
        }
    }

    fn end(&self) -> Result<(), String> {
        match self.toks.get(self.i) {
            None => Ok(()),
            Some(t) => Err(format!("extraneous input '{}' expecting <EOF>", show(t))),
        }
    }

    fn if_not_exists(&mut self) -> Result<bool, String> {
        if self.eat_kw("if") {
            self.expect_kw("not")?;
            self.expect_kw("exists")?;
            Ok(true)
        } else {
            Ok(false)
        }
    }

    fn if_exists(&mut self) -> Result<bool, String> {
        if self.eat_kw("if") {
            self.expect_kw("exists")?;
            Ok(true)
        } else {
            Ok(false)
        }
    }

    /// `WITH opt = v [AND opt = v]*` (the WITH already read).
    fn role_options(&mut self) -> Result<RoleOptions, String> {
        let mut o = RoleOptions::default();
        loop {
            let name = self.ident()?;
            self.expect_punct('=')?;
            let dup = |set: bool| {
                if set {
                    Err(format!("Multiple definition for property {name}"))
                } else {
                    Ok(())
                }
            };
            match name.as_str() {
                "password" => {
                    dup(o.password.is_some())?;
                    o.password = Some(self.string()?);
                }
                "login" => {
                    dup(o.login.is_some())?;
                    o.login = Some(self.boolean()?);
                }
                "superuser" => {
                    dup(o.superuser.is_some())?;
                    o.superuser = Some(self.boolean()?);
                }
                "options" => {
                    dup(o.options.is_some())?;
                    o.options = Some(self.map()?);
                }
                other => return Err(format!("Invalid property {other}")),
            }
            if !self.eat_kw("and") {
                return Ok(o);
            }
        }
    }

    fn map(&mut self) -> Result<BTreeMap<String, String>, String> {
        self.expect_punct('{')?;
        let mut m = BTreeMap::new();
        if self.eat_punct('}') {
            return Ok(m);
        }
        loop {
            let k = self.string()?;
            self.expect_punct(':')?;
            let v = self.string()?;
            m.insert(k, v);
            if self.eat_punct('}') {
                return Ok(m);
            }
            self.expect_punct(',')?;
        }
    }

    /// `ALL [PERMISSIONS]` or one permission `[PERMISSION]`.
    fn permissions(&mut self) -> Result<Vec<Permission>, String> {
        if self.eat_kw("all") {
            self.eat_kw("permissions");
            return Ok(Permission::ALL.to_vec());
        }
        let word = self.ident()?;
        let p = Permission::parse(&word).ok_or_else(|| {
            format!("no viable alternative at input '{word}' expecting a permission")
        })?;
        self.eat_kw("permission");
        Ok(vec![p])
    }

    fn resource(&mut self, keyspace: Option<&str>) -> Result<Resource, String> {
        if self.eat_kw("all") {
            if self.eat_kw("keyspaces") {
                return Ok(Resource::AllKeyspaces);
            }
            if self.eat_kw("roles") {
                return Ok(Resource::AllRoles);
            }
            return Err(self.mismatch("KEYSPACES or ROLES"));
        }
        if self.eat_kw("keyspace") {
            return Ok(Resource::Keyspace(self.ident()?));
        }
        if self.eat_kw("role") {
            return Ok(Resource::Role(self.role_name()?));
        }
        // `TABLE` is optional before a table name, as in Cassandra, unless
        // it is the table's own name.
        if self.peek_kw("table") && matches!(self.toks.get(self.i + 1), Some(Tok::Ident { .. })) {
            self.i += 1;
        }
        let first = self.ident()?;
        if self.eat_punct('.') {
            let table = self.ident()?;
            return Ok(Resource::Table(first, table));
        }
        match keyspace {
            Some(ks) => Ok(Resource::Table(ks.to_owned(), first)),
            None => Err("No keyspace has been specified. USE a keyspace, or explicitly specify keyspace.tablename".into()),
        }
    }
}

fn show(t: &Tok) -> String {
    match t {
        Tok::Ident { text, .. } => text.clone(),
        Tok::Str(s) => format!("'{s}'"),
        Tok::Punct(c) => c.to_string(),
    }
}

/// Parses a role or permission statement; `keyspace` is the connection's
/// (for a bare table name). `Err` is the syntax error's message.
pub(crate) fn parse(src: &str, keyspace: Option<&str>) -> Result<AuthStatement, String> {
    let mut p = P {
        toks: tokenize(src)?,
        i: 0,
    };
    let stmt = if p.eat_kw("create") {
        if p.eat_kw("role") {
            let if_not_exists = p.if_not_exists()?;
            let name = p.role_name()?;
            let options = if p.eat_kw("with") {
                p.role_options()?
            } else {
                RoleOptions::default()
            };
            AuthStatement::CreateRole {
                name,
                if_not_exists,
                options,
            }
        } else {
            p.expect_kw("user")?;
            let if_not_exists = p.if_not_exists()?;
            let name = p.role_name()?;
            let mut options = user_options(&mut p)?;
            options.login = Some(true);
            AuthStatement::CreateRole {
                name,
                if_not_exists,
                options,
            }
        }
    } else if p.eat_kw("alter") {
        if p.eat_kw("role") {
            let if_exists = p.if_exists()?;
            let name = p.role_name()?;
            p.expect_kw("with")?;
            let options = p.role_options()?;
            AuthStatement::AlterRole {
                name,
                if_exists,
                options,
            }
        } else {
            p.expect_kw("user")?;
            let if_exists = p.if_exists()?;
            let name = p.role_name()?;
            let options = user_options(&mut p)?;
            AuthStatement::AlterRole {
                name,
                if_exists,
                options,
            }
        }
    } else if p.eat_kw("drop") {
        if !p.eat_kw("role") {
            p.expect_kw("user")?;
        }
        let if_exists = p.if_exists()?;
        let name = p.role_name()?;
        AuthStatement::DropRole { name, if_exists }
    } else if p.eat_kw("grant") {
        if is_permission_start(&p) {
            let permissions = p.permissions()?;
            p.expect_kw("on")?;
            let resource = p.resource(keyspace)?;
            p.expect_kw("to")?;
            let grantee = p.role_name()?;
            AuthStatement::GrantPermissions {
                permissions,
                resource,
                grantee,
            }
        } else {
            let role = p.role_name()?;
            p.expect_kw("to")?;
            let grantee = p.role_name()?;
            AuthStatement::GrantRole { role, grantee }
        }
    } else if p.eat_kw("revoke") {
        if is_permission_start(&p) {
            let permissions = p.permissions()?;
            p.expect_kw("on")?;
            let resource = p.resource(keyspace)?;
            p.expect_kw("from")?;
            let revokee = p.role_name()?;
            AuthStatement::RevokePermissions {
                permissions,
                resource,
                revokee,
            }
        } else {
            let role = p.role_name()?;
            p.expect_kw("from")?;
            let revokee = p.role_name()?;
            AuthStatement::RevokeRole { role, revokee }
        }
    } else if p.eat_kw("list") {
        if p.eat_kw("roles") {
            let of = if p.eat_kw("of") {
                Some(p.role_name()?)
            } else {
                None
            };
            let recursive = !p.eat_kw("norecursive");
            AuthStatement::ListRoles { of, recursive }
        } else if p.eat_kw("users") {
            AuthStatement::ListUsers
        } else {
            let permissions = p.permissions()?;
            let resource = if p.eat_kw("on") {
                Some(p.resource(keyspace)?)
            } else {
                None
            };
            let of = if p.eat_kw("of") {
                Some(p.role_name()?)
            } else {
                None
            };
            let recursive = !p.eat_kw("norecursive");
            AuthStatement::ListPermissions {
                permissions,
                resource,
                of,
                recursive,
            }
        }
    } else {
        return Err(p.mismatch("a role or permission statement"));
    };
    p.end()?;
    Ok(stmt)
}

/// GRANT/REVOKE of a permission (vs of a role): `ALL` or a permission
/// name followed by `ON` or `PERMISSION(S)`.
fn is_permission_start(p: &P) -> bool {
    if p.peek_kw("all") {
        return true;
    }
    let Some(Tok::Ident {
        text,
        quoted: false,
    }) = p.toks.get(p.i)
    else {
        return false;
    };
    Permission::parse(text).is_some()
        && matches!(p.toks.get(p.i + 1), Some(Tok::Ident { text, quoted: false }) if text == "on" || text == "permission")
}

/// The legacy user options: `[WITH PASSWORD '..'] [SUPERUSER | NOSUPERUSER]`.
fn user_options(p: &mut P) -> Result<RoleOptions, String> {
    let mut o = RoleOptions::default();
    if p.eat_kw("with") {
        p.expect_kw("password")?;
        o.password = Some(p.string()?);
    }
    if p.eat_kw("superuser") {
        o.superuser = Some(true);
    } else if p.eat_kw("nosuperuser") {
        o.superuser = Some(false);
    }
    Ok(o)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn role_statements_parse() {
        assert_eq!(
            parse(
                "CREATE ROLE IF NOT EXISTS Alice WITH PASSWORD = 'it''s' AND LOGIN = true AND SUPERUSER = false AND OPTIONS = {'a': 'b'};",
                None
            ),
            Ok(AuthStatement::CreateRole {
                name: "alice".into(),
                if_not_exists: true,
                options: RoleOptions {
                    password: Some("it's".into()),
                    login: Some(true),
                    superuser: Some(false),
                    options: Some([("a".to_string(), "b".to_string())].into()),
                },
            })
        );
        assert_eq!(
            parse("create user 'Bob' with password 'pw' nosuperuser", None),
            Ok(AuthStatement::CreateRole {
                name: "Bob".into(),
                if_not_exists: false,
                options: RoleOptions {
                    password: Some("pw".into()),
                    login: Some(true),
                    superuser: Some(false),
                    options: None,
                },
            })
        );
        assert_eq!(
            parse("GRANT admin TO \"Bob\"", None),
            Ok(AuthStatement::GrantRole {
                role: "admin".into(),
                grantee: "Bob".into()
            })
        );
        assert_eq!(
            parse("GRANT SELECT ON KEYSPACE ks TO bob", None),
            Ok(AuthStatement::GrantPermissions {
                permissions: vec![Permission::Select],
                resource: Resource::Keyspace("ks".into()),
                grantee: "bob".into()
            })
        );
        assert_eq!(
            parse("REVOKE ALL PERMISSIONS ON t FROM bob", Some("ks")),
            Ok(AuthStatement::RevokePermissions {
                permissions: Permission::ALL.to_vec(),
                resource: Resource::Table("ks".into(), "t".into()),
                revokee: "bob".into()
            })
        );
        assert_eq!(
            parse("LIST ALL PERMISSIONS OF bob NORECURSIVE", None),
            Ok(AuthStatement::ListPermissions {
                permissions: Permission::ALL.to_vec(),
                resource: None,
                of: Some("bob".into()),
                recursive: false
            })
        );
        assert_eq!(
            parse("LIST ROLES", None),
            Ok(AuthStatement::ListRoles {
                of: None,
                recursive: true
            })
        );
        let e = parse("CREATE ROLE r WITH PASWORD = 'x'", None).expect_err("bad property");
        assert!(e.contains("Invalid property pasword"), "{e}");
        assert!(parse("DROP ROLE", None).is_err());
        assert!(parse("GRANT SELECT ON TABLE t TO r", None).is_err());
    }
}
