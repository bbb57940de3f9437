//! Recursive-descent parser over the token vector. Lookahead is a few tokens
//! at most; the only backtracking is `(type) term` versus a tuple, which is
//! bounded by the length of one type.

use crate::ast::*;
use crate::error::{ParseError, Position};
use crate::lexer::{parse_iso_duration, tokenize, Sym, Tok, Token};

type Result<T> = std::result::Result<T, ParseError>;

/// Words that can never be identifiers unquoted (Cassandra 4's reserved list,
/// plus the boolean literals, which its lexer never treats as names).
const RESERVED: &[&str] = &[
    "add",
    "allow",
    "alter",
    "and",
    "apply",
    "asc",
    "authorize",
    "batch",
    "begin",
    "by",
    "columnfamily",
    "create",
    "default",
    "delete",
    "desc",
    "describe",
    "drop",
    "entries",
    "execute",
    "false",
    "from",
    "full",
    "grant",
    "if",
    "in",
    "index",
    "infinity",
    "insert",
    "into",
    "is",
    "keyspace",
    "limit",
    "materialized",
    "mbean",
    "mbeans",
    "modify",
    "nan",
    "norecursive",
    "not",
    "null",
    "of",
    "on",
    "or",
    "order",
    "primary",
    "rename",
    "replace",
    "revoke",
    "schema",
    "select",
    "set",
    "table",
    "to",
    "token",
    "true",
    "truncate",
    "unlogged",
    "unset",
    "update",
    "use",
    "using",
    "view",
    "where",
    "with",
];

/// Whether `word` (any case) is a reserved keyword.
pub fn is_reserved_keyword(word: &str) -> bool {
    let lower = word.to_ascii_lowercase();
    RESERVED.binary_search(&lower.as_str()).is_ok()
}

/// Statements Cassandra has and Gyre parses only far enough to name them.
const UNSUPPORTED: &[&[&str]] = &[
    &["create", "materialized", "view"],
    &["create", "or", "replace", "function"],
    &["create", "function"],
    &["create", "or", "replace", "aggregate"],
    &["create", "aggregate"],
    &["create", "trigger"],
    &["create", "role"],
    &["create", "user"],
    &["alter", "materialized", "view"],
    &["alter", "role"],
    &["alter", "user"],
    &["drop", "materialized", "view"],
    &["drop", "function"],
    &["drop", "aggregate"],
    &["drop", "trigger"],
    &["drop", "role"],
    &["drop", "user"],
    &["grant"],
    &["revoke"],
    &["list"],
];

pub(crate) fn parse_all(src: &str) -> Result<Vec<Parsed>> {
    let mut p = Parser {
        src,
        toks: tokenize(src)?,
        i: 0,
        markers: Vec::new(),
        depth: 0,
        type_depth: 0,
    };
    let mut out = Vec::new();
    loop {
        while p.eat(Sym::Semi) {}
        if p.at_eof() {
            return Ok(out);
        }
        let statement = p.statement()?;
        out.push(Parsed {
            statement,
            bind_markers: std::mem::take(&mut p.markers),
        });
        if !p.at_eof() && !p.at(Sym::Semi) {
            return Err(p.mismatched("';' or EOF"));
        }
    }
}

pub(crate) fn parse_one(src: &str) -> Result<Parsed> {
    let mut p = Parser {
        src,
        toks: tokenize(src)?,
        i: 0,
        markers: Vec::new(),
        depth: 0,
        type_depth: 0,
    };
    let statement = p.statement()?;
    while p.eat(Sym::Semi) {}
    if !p.at_eof() {
        return Err(p.mismatched("EOF"));
    }
    Ok(Parsed {
        statement,
        bind_markers: p.markers,
    })
}

struct Parser<'a> {
    src: &'a str,
    toks: Vec<Token>,
    i: usize,
    markers: Vec<BindMarker>,
    /// Current nesting of terms, types and selectors.
    depth: u32,
    /// Current nesting of types alone (the protocol's limit).
    type_depth: usize,
}

/// Deeper nesting is refused rather than risking the stack.
const MAX_DEPTH: u32 = 100;

impl Parser<'_> {
    // ---- token access -------------------------------------------------

    fn tok_at(&self, n: usize) -> &Tok {
        // The vector always ends with Eof, which we never move past.
        let k = (self.i + n).min(self.toks.len() - 1);
        &self.toks[k].tok
    }

    fn peek(&self) -> &Tok {
        self.tok_at(0)
    }

    fn bump(&mut self) {
        if self.i + 1 < self.toks.len() {
            self.i += 1;
        }
    }

    fn at_eof(&self) -> bool {
        matches!(self.peek(), Tok::Eof)
    }

    fn sym_at(&self, n: usize, s: Sym) -> bool {
        matches!(self.tok_at(n), Tok::Sym(x) if *x == s)
    }

    fn at(&self, s: Sym) -> bool {
        self.sym_at(0, s)
    }

    fn eat(&mut self, s: Sym) -> bool {
        let hit = self.at(s);
        if hit {
            self.bump();
        }
        hit
    }

    fn expect(&mut self, s: Sym) -> Result<()> {
        if self.eat(s) {
            Ok(())
        } else {
            Err(self.mismatched(&format!("'{}'", sym_text(s))))
        }
    }

    fn kw_at(&self, n: usize, kw: &str) -> bool {
        matches!(self.tok_at(n), Tok::Word(w) if w.eq_ignore_ascii_case(kw))
    }

    fn is_kw(&self, kw: &str) -> bool {
        self.kw_at(0, kw)
    }

    fn eat_kw(&mut self, kw: &str) -> bool {
        let hit = self.is_kw(kw);
        if hit {
            self.bump();
        }
        hit
    }

    fn expect_kw(&mut self, kw: &str) -> Result<()> {
        if self.eat_kw(kw) {
            Ok(())
        } else {
            Err(self.mismatched(&kw.to_ascii_uppercase()))
        }
    }

    fn eat_kws(&mut self, kws: &[&str]) -> bool {
        let hit = kws.iter().enumerate().all(|(n, kw)| self.kw_at(n, kw));
        if hit {
            for _ in kws {
                self.bump();
            }
        }
        hit
    }

    // ---- errors -------------------------------------------------------

    fn cur_pos(&self) -> Position {
        self.toks[self.i].pos
    }

    fn cur_text(&self) -> String {
        let t = &self.toks[self.i];
        if matches!(t.tok, Tok::Eof) {
            "<EOF>".to_owned()
        } else {
            self.src[t.start..t.end].to_owned()
        }
    }

    fn mismatched(&self, expected: &str) -> ParseError {
        ParseError::Mismatched {
            pos: self.cur_pos(),
            found: self.cur_text(),
            expected: expected.to_owned(),
        }
    }

    fn no_viable(&self) -> ParseError {
        ParseError::NoViableAlternative {
            pos: self.cur_pos(),
            found: self.cur_text(),
        }
    }

    fn invalid(&self, pos: Position, message: String) -> ParseError {
        ParseError::Invalid { pos, message }
    }

    fn nested<T>(&mut self, f: impl FnOnce(&mut Self) -> Result<T>) -> Result<T> {
        if self.depth >= MAX_DEPTH {
            let msg = format!("expression nested more than {MAX_DEPTH} levels deep");
            return Err(self.invalid(self.cur_pos(), msg));
        }
        self.depth += 1;
        let r = f(self);
        self.depth -= 1;
        r
    }

    // ---- names --------------------------------------------------------

    fn is_ident_at(&self, n: usize) -> bool {
        match self.tok_at(n) {
            Tok::Word(w) => !is_reserved_keyword(w),
            Tok::QuotedName(_) => true,
            _ => false,
        }
    }

    fn ident(&mut self) -> Result<String> {
        let name = match self.peek() {
            Tok::Word(w) if !is_reserved_keyword(w) => w.to_ascii_lowercase(),
            Tok::QuotedName(s) => s.clone(),
            _ => return Err(self.mismatched("identifier")),
        };
        self.bump();
        Ok(name)
    }

    fn qualified_name(&mut self) -> Result<QualifiedName> {
        let first = self.ident()?;
        if self.eat(Sym::Dot) {
            let name = self.ident()?;
            Ok(QualifiedName {
                keyspace: Some(first),
                name,
            })
        } else {
            Ok(QualifiedName {
                keyspace: None,
                name: first,
            })
        }
    }

    fn ident_list(&mut self) -> Result<Vec<String>> {
        let mut out = vec![self.ident()?];
        while self.eat(Sym::Comma) {
            out.push(self.ident()?);
        }
        Ok(out)
    }

    fn paren_ident_list(&mut self) -> Result<Vec<String>> {
        self.expect(Sym::LParen)?;
        let out = self.ident_list()?;
        self.expect(Sym::RParen)?;
        Ok(out)
    }

    // ---- statements ---------------------------------------------------

    fn statement(&mut self) -> Result<Statement> {
        let Tok::Word(w) = self.peek() else {
            return Err(self.no_viable());
        };
        match w.to_ascii_lowercase().as_str() {
            "select" => self.select().map(Statement::Select),
            "insert" => self.insert().map(Statement::Insert),
            "update" => self.update().map(Statement::Update),
            "delete" => self.delete().map(Statement::Delete),
            "begin" => self.batch().map(Statement::Batch),
            "use" => {
                self.bump();
                self.ident().map(Statement::Use)
            }
            "truncate" => {
                self.bump();
                let _ = self.eat_kw("table") || self.eat_kw("columnfamily");
                self.qualified_name().map(Statement::Truncate)
            }
            "describe" | "desc" => self.describe().map(Statement::Describe),
            "create" if self.table_kw_at(1) => self.create_table().map(Statement::CreateTable),
            "create" if self.keyspace_kw_at(1) => {
                self.create_keyspace().map(Statement::CreateKeyspace)
            }
            "alter" if self.table_kw_at(1) => self.alter_table().map(Statement::AlterTable),
            "alter" if self.keyspace_kw_at(1) => {
                self.alter_keyspace().map(Statement::AlterKeyspace)
            }
            "drop" if self.table_kw_at(1) => {
                self.bump();
                self.bump();
                let if_exists = self.eat_kws(&["if", "exists"]);
                let name = self.qualified_name()?;
                Ok(Statement::DropTable { name, if_exists })
            }
            "create" if self.kw_at(1, "index") || self.kws_at(1, &["custom", "index"]) => {
                self.create_index().map(Statement::CreateIndex)
            }
            "drop" if self.kw_at(1, "index") => {
                self.bump();
                self.bump();
                let if_exists = self.eat_kws(&["if", "exists"]);
                let name = self.qualified_name()?;
                Ok(Statement::DropIndex { name, if_exists })
            }
            "create" if self.kw_at(1, "type") => self.create_type().map(Statement::CreateType),
            "alter" if self.kw_at(1, "type") => self.alter_type().map(Statement::AlterType),
            "drop" if self.kw_at(1, "type") => {
                self.bump();
                self.bump();
                let if_exists = self.eat_kws(&["if", "exists"]);
                let name = self.qualified_name()?;
                Ok(Statement::DropType { name, if_exists })
            }
            "drop" if self.keyspace_kw_at(1) => {
                self.bump();
                self.bump();
                let if_exists = self.eat_kws(&["if", "exists"]);
                let name = self.ident()?;
                Ok(Statement::DropKeyspace { name, if_exists })
            }
            _ => self.unsupported(),
        }
    }

    fn table_kw_at(&self, n: usize) -> bool {
        self.kw_at(n, "table") || self.kw_at(n, "columnfamily")
    }

    fn keyspace_kw_at(&self, n: usize) -> bool {
        self.kw_at(n, "keyspace") || self.kw_at(n, "schema")
    }

    fn kws_at(&self, n: usize, kws: &[&str]) -> bool {
        kws.iter().enumerate().all(|(i, kw)| self.kw_at(n + i, kw))
    }

    fn create_type(&mut self) -> Result<CreateType> {
        self.bump();
        self.bump();
        let if_not_exists = self.eat_kws(&["if", "not", "exists"]);
        let name = self.qualified_name()?;
        self.expect(Sym::LParen)?;
        let mut fields = Vec::new();
        loop {
            let field = self.ident()?;
            fields.push((field, self.cql_type()?));
            if !self.eat(Sym::Comma) {
                break;
            }
        }
        self.expect(Sym::RParen)?;
        Ok(CreateType {
            name,
            if_not_exists,
            fields,
        })
    }

    fn alter_type(&mut self) -> Result<AlterType> {
        self.bump();
        self.bump();
        let if_exists = self.eat_kws(&["if", "exists"]);
        let name = self.qualified_name()?;
        let action = if self.eat_kw("add") {
            let if_not_exists = self.eat_kws(&["if", "not", "exists"]);
            let field = self.ident()?;
            AlterTypeAction::Add {
                if_not_exists,
                field,
                ty: self.cql_type()?,
            }
        } else if self.eat_kw("rename") {
            let if_exists = self.eat_kws(&["if", "exists"]);
            let mut renames = Vec::new();
            loop {
                let from = self.ident()?;
                self.expect_kw("to")?;
                renames.push((from, self.ident()?));
                if !self.eat_kw("and") {
                    break;
                }
            }
            AlterTypeAction::Rename { if_exists, renames }
        } else if self.eat_kw("alter") {
            let field = self.ident()?;
            self.expect_kw("type")?;
            AlterTypeAction::AlterField {
                field,
                ty: self.cql_type()?,
            }
        } else {
            return Err(self.no_viable());
        };
        Ok(AlterType {
            name,
            if_exists,
            action,
        })
    }

    fn create_index(&mut self) -> Result<CreateIndex> {
        self.bump();
        let custom = self.eat_kw("custom");
        self.expect_kw("index")?;
        let if_not_exists = self.eat_kws(&["if", "not", "exists"]);
        let name = if self.is_kw("on") {
            None
        } else {
            Some(self.ident()?)
        };
        self.expect_kw("on")?;
        let table = self.qualified_name()?;
        self.expect(Sym::LParen)?;
        let mut targets = Vec::new();
        loop {
            let wrapped = |p: &mut Self| -> Result<String> {
                p.bump();
                p.expect(Sym::LParen)?;
                let c = p.ident()?;
                p.expect(Sym::RParen)?;
                Ok(c)
            };
            let target = if self.sym_at(1, Sym::LParen) && self.is_kw("keys") {
                IndexTarget::Keys(wrapped(self)?)
            } else if self.sym_at(1, Sym::LParen) && self.is_kw("values") {
                IndexTarget::Values(wrapped(self)?)
            } else if self.is_kw("entries") {
                IndexTarget::Entries(wrapped(self)?)
            } else if self.is_kw("full") {
                IndexTarget::Full(wrapped(self)?)
            } else {
                IndexTarget::Column(self.ident()?)
            };
            targets.push(target);
            if !self.eat(Sym::Comma) {
                break;
            }
        }
        self.expect(Sym::RParen)?;
        let class = if self.eat_kw("using") {
            match self.constant()? {
                Literal::String(s) => Some(s),
                _ => return Err(self.mismatched("a class name string")),
            }
        } else {
            None
        };
        let properties = if self.eat_kw("with") {
            self.properties()?
        } else {
            Vec::new()
        };
        Ok(CreateIndex {
            name,
            table,
            if_not_exists,
            targets,
            custom,
            class,
            properties,
        })
    }

    fn unsupported(&mut self) -> Result<Statement> {
        let Some(head) = UNSUPPORTED
            .iter()
            .find(|head| head.iter().enumerate().all(|(n, kw)| self.kw_at(n, kw)))
        else {
            // Point at the first word that could not start a statement.
            if UNSUPPORTED.iter().any(|h| self.kw_at(0, h[0])) {
                self.bump();
            }
            return Err(self.no_viable());
        };
        let kind = head
            .iter()
            .filter(|w| !matches!(**w, "or" | "replace" | "custom"))
            .map(|w| w.to_ascii_uppercase())
            .collect::<Vec<_>>()
            .join(" ");
        while !self.at_eof() && !self.at(Sym::Semi) {
            self.bump();
        }
        Ok(Statement::Unsupported { kind })
    }

    // ---- SELECT -------------------------------------------------------

    fn select(&mut self) -> Result<Select> {
        self.expect_kw("select")?;
        let json = self.is_kw("json") && self.modifier_follows() && self.eat_kw("json");
        let distinct = self.is_kw("distinct") && self.modifier_follows() && self.eat_kw("distinct");
        let selection = if self.eat(Sym::Star) {
            Selection::Wildcard
        } else {
            let mut items = vec![self.select_item()?];
            while self.eat(Sym::Comma) {
                items.push(self.select_item()?);
            }
            Selection::Items(items)
        };
        self.expect_kw("from")?;
        let table = self.qualified_name()?;
        let where_clause = if self.eat_kw("where") {
            self.relations()?
        } else {
            Vec::new()
        };
        let mut group_by = Vec::new();
        if self.eat_kws(&["group", "by"]) {
            group_by = self.ident_list()?;
        }
        let mut order_by = Vec::new();
        let mut ann = None;
        if self.eat_kws(&["order", "by"]) {
            loop {
                let col = self.ident()?;
                if self.eat_kws(&["ann", "of"]) {
                    if ann.is_some() {
                        return Err(self.invalid(
                            self.cur_pos(),
                            "Cannot specify more than one ANN ordering".into(),
                        ));
                    }
                    ann = Some((col, self.term()?));
                    if !self.eat(Sym::Comma) {
                        break;
                    }
                    continue;
                }
                order_by.push((col, self.order()));
                if !self.eat(Sym::Comma) {
                    break;
                }
            }
        }
        let per_partition_limit = if self.eat_kws(&["per", "partition", "limit"]) {
            Some(self.term()?)
        } else {
            None
        };
        let limit = if self.eat_kw("limit") {
            Some(self.term()?)
        } else {
            None
        };
        let allow_filtering = self.eat_kws(&["allow", "filtering"]);
        Ok(Select {
            json,
            distinct,
            selection,
            table,
            where_clause,
            group_by,
            order_by,
            ann,
            per_partition_limit,
            limit,
            allow_filtering,
        })
    }

    /// After JSON or DISTINCT: is it a modifier, or a column of that name?
    fn modifier_follows(&self) -> bool {
        !(self.kw_at(1, "from")
            || self.kw_at(1, "as")
            || self.sym_at(1, Sym::Comma)
            || self.sym_at(1, Sym::LParen)
            || self.sym_at(1, Sym::Dot))
    }

    fn order(&mut self) -> Order {
        if self.eat_kw("desc") {
            Order::Desc
        } else {
            self.eat_kw("asc");
            Order::Asc
        }
    }

    fn select_item(&mut self) -> Result<SelectItem> {
        let selector = self.selector()?;
        let alias = if self.eat_kw("as") {
            Some(self.ident()?)
        } else {
            None
        };
        Ok(SelectItem { selector, alias })
    }

    fn selector(&mut self) -> Result<Selector> {
        self.nested(|p| {
            let mut sel = p.selector_inner()?;
            // `addr.city`, `a.b.c`: fields of user-defined type values.
            while p.at(Sym::Dot) && p.is_ident_at(1) {
                p.bump();
                sel = Selector::Field {
                    selector: Box::new(sel),
                    field: p.ident()?,
                };
            }
            Ok(sel)
        })
    }

    fn selector_inner(&mut self) -> Result<Selector> {
        let call = self.function_call_ahead();
        let special = match (call, self.peek()) {
            (Some(1), Tok::Word(w)) => Some(w.to_ascii_lowercase()),
            _ => None,
        };
        if let Some(special) = special {
            let pos = self.cur_pos();
            match special.as_str() {
                "count" if self.sym_at(2, Sym::Star) || matches!(self.tok_at(2), Tok::Int(_)) => {
                    self.bump();
                    self.bump();
                    if let Tok::Int(n) = self.peek() {
                        if n != "1" {
                            let msg = format!("Only COUNT(1) is supported, got COUNT({n})");
                            return Err(self.invalid(pos, msg));
                        }
                    }
                    self.bump();
                    self.expect(Sym::RParen)?;
                    return Ok(Selector::CountRows);
                }
                "writetime" | "ttl" | "maxwritetime" => {
                    let function = match special.as_str() {
                        "ttl" => TimestampFunction::Ttl,
                        "writetime" => TimestampFunction::WriteTime,
                        _ => TimestampFunction::MaxWriteTime,
                    };
                    self.bump();
                    self.bump();
                    let column = self.ident()?;
                    // Cassandra 5.0: `writetime(a.f.g)`, fields of a user type.
                    let mut fields = Vec::new();
                    while self.eat(Sym::Dot) {
                        fields.push(self.ident()?);
                    }
                    self.expect(Sym::RParen)?;
                    return Ok(match (function, fields.is_empty()) {
                        (TimestampFunction::Ttl, true) => Selector::Ttl(column),
                        (TimestampFunction::WriteTime, true) => Selector::WriteTime(column),
                        _ => Selector::Timestamps {
                            function,
                            column,
                            fields,
                        },
                    });
                }
                "cast" => {
                    self.bump();
                    self.bump();
                    let inner = self.selector()?;
                    self.expect_kw("as")?;
                    let ty = self.cql_type()?;
                    self.expect(Sym::RParen)?;
                    return Ok(Selector::Cast {
                        selector: Box::new(inner),
                        ty,
                    });
                }
                _ => {}
            }
        }
        if call.is_some() {
            let name = self.function_name()?;
            self.expect(Sym::LParen)?;
            let mut args = Vec::new();
            if !self.at(Sym::RParen) {
                args.push(self.selector()?);
                while self.eat(Sym::Comma) {
                    args.push(self.selector()?);
                }
            }
            self.expect(Sym::RParen)?;
            return Ok(Selector::Function { name, args });
        }
        if self.is_ident_at(0) {
            return Ok(Selector::Column(self.ident()?));
        }
        self.term().map(Selector::Term)
    }

    /// If a function call starts here, the offset of its `(` (1 for `f(`,
    /// 3 for `ks.f(`).
    fn function_call_ahead(&self) -> Option<usize> {
        let name_at = |n: usize| match self.tok_at(n) {
            Tok::Word(w) => !is_reserved_keyword(w) || w.eq_ignore_ascii_case("token"),
            Tok::QuotedName(_) => true,
            _ => false,
        };
        if !name_at(0) {
            return None;
        }
        if self.sym_at(1, Sym::LParen) {
            return Some(1);
        }
        if self.sym_at(1, Sym::Dot) && name_at(2) && self.sym_at(3, Sym::LParen) {
            return Some(3);
        }
        None
    }

    fn function_name(&mut self) -> Result<QualifiedName> {
        let part = |p: &mut Self| -> Result<String> {
            if p.eat_kw("token") {
                Ok("token".to_owned())
            } else {
                p.ident()
            }
        };
        let first = part(self)?;
        if self.eat(Sym::Dot) {
            let name = part(self)?;
            Ok(QualifiedName {
                keyspace: Some(first),
                name,
            })
        } else {
            Ok(QualifiedName {
                keyspace: None,
                name: first,
            })
        }
    }

    // ---- WHERE --------------------------------------------------------

    fn relations(&mut self) -> Result<Vec<Relation>> {
        let mut out = vec![self.relation()?];
        while self.eat_kw("and") {
            out.push(self.relation()?);
        }
        Ok(out)
    }

    fn relation(&mut self) -> Result<Relation> {
        if self.is_kw("token") && self.sym_at(1, Sym::LParen) {
            self.bump();
            let columns = self.paren_ident_list()?;
            let predicate = self.predicate()?;
            return Ok(Relation::Token { columns, predicate });
        }
        if self.at(Sym::LParen) {
            let columns = self.paren_ident_list()?;
            let predicate = self.predicate()?;
            return Ok(Relation::Tuple { columns, predicate });
        }
        let column = self.ident()?;
        // Cassandra 5.0's grammar has no field relations (`a.city = ?`):
        // its syntax error, with the reason.
        if self.at(Sym::Dot) && self.is_ident_at(1) {
            let pos = self.cur_pos();
            let field = match self.tok_at(1) {
                Tok::Word(w) => w.to_ascii_lowercase(),
                Tok::QuotedName(n) => n.clone(),
                _ => String::new(),
            };
            let msg = format!(
                "no viable alternative at input '.': restrictions on fields of user types \
                 ({}.{}) are not supported in WHERE",
                crate::display::quote_identifier(&column),
                crate::display::quote_identifier(&field)
            );
            return Err(self.invalid(pos, msg));
        }
        if self.eat_kws(&["is", "not", "null"]) {
            return Ok(Relation::IsNotNull { column });
        }
        if self.eat(Sym::LBracket) {
            let key = self.term()?;
            self.expect(Sym::RBracket)?;
            let predicate = self.predicate()?;
            return Ok(Relation::Element {
                column,
                key,
                predicate,
            });
        }
        let predicate = self.predicate()?;
        Ok(Relation::Column { column, predicate })
    }

    fn predicate(&mut self) -> Result<Predicate> {
        if self.eat_kw("in") {
            return self.in_values().map(Predicate::In);
        }
        let op = if self.eat_kw("contains") {
            if self.eat_kw("key") {
                Operator::ContainsKey
            } else {
                Operator::Contains
            }
        } else if self.eat_kw("like") {
            Operator::Like
        } else {
            let op = match self.peek() {
                Tok::Sym(Sym::Eq) => Operator::Eq,
                Tok::Sym(Sym::Lt) => Operator::Lt,
                Tok::Sym(Sym::Lte) => Operator::Lte,
                Tok::Sym(Sym::Gt) => Operator::Gt,
                Tok::Sym(Sym::Gte) => Operator::Gte,
                Tok::Sym(Sym::Neq) => Operator::Neq,
                _ => return Err(self.no_viable()),
            };
            self.bump();
            op
        };
        Ok(Predicate::Compare(op, self.term()?))
    }

    fn in_values(&mut self) -> Result<InValues> {
        if self.at(Sym::QMark) || self.at(Sym::Colon) {
            return self.bind_marker().map(InValues::Marker);
        }
        self.expect(Sym::LParen)?;
        let mut out = Vec::new();
        if !self.at(Sym::RParen) {
            out.push(self.term()?);
            while self.eat(Sym::Comma) {
                out.push(self.term()?);
            }
        }
        self.expect(Sym::RParen)?;
        Ok(InValues::List(out))
    }

    // ---- terms --------------------------------------------------------

    fn bind_marker(&mut self) -> Result<BindMarker> {
        let name = if self.eat(Sym::QMark) {
            None
        } else {
            self.expect(Sym::Colon)?;
            Some(match self.peek() {
                // Any word, as Cassandra's `:ident` does not care about keywords.
                Tok::Word(w) => {
                    let w = w.to_ascii_lowercase();
                    self.bump();
                    w
                }
                _ => self.ident()?,
            })
        };
        let marker = BindMarker {
            index: self.markers.len(),
            name,
        };
        self.markers.push(marker.clone());
        Ok(marker)
    }

    /// A constant, or `None` if none starts here (without consuming input).
    fn literal(&mut self) -> Result<Option<Literal>> {
        let lit = match self.peek() {
            Tok::Int(s) => Literal::Integer(s.clone()),
            Tok::Float(s) => Literal::Float(s.clone()),
            Tok::Str(s) => Literal::String(s.clone()),
            Tok::Blob(b) => Literal::Blob(b.clone()),
            Tok::Uuid(u) => Literal::Uuid(*u),
            Tok::Duration(d) => Literal::Duration(*d),
            Tok::Sym(Sym::Minus) => {
                self.bump();
                let lit = match self.peek() {
                    Tok::Int(s) => Literal::Integer(format!("-{s}")),
                    Tok::Float(s) => Literal::Float(format!("-{s}")),
                    Tok::Duration(d) => Literal::Duration(Duration {
                        months: -d.months,
                        days: -d.days,
                        nanos: -d.nanos,
                    }),
                    Tok::Word(w) if w.eq_ignore_ascii_case("infinity") => {
                        Literal::Float("-Infinity".to_owned())
                    }
                    Tok::Word(w) if parse_iso_duration(w).is_some() => {
                        let d = parse_iso_duration(w).unwrap_or_default();
                        Literal::Duration(Duration {
                            months: -d.months,
                            days: -d.days,
                            nanos: -d.nanos,
                        })
                    }
                    _ => return Err(self.no_viable()),
                };
                self.bump();
                return Ok(Some(lit));
            }
            Tok::Word(w) => match w.to_ascii_lowercase().as_str() {
                "true" => Literal::Bool(true),
                "false" => Literal::Bool(false),
                "null" => Literal::Null,
                "nan" => Literal::Float("NaN".to_owned()),
                "infinity" => Literal::Float("Infinity".to_owned()),
                _ if !self.sym_at(1, Sym::LParen) && !self.sym_at(1, Sym::Dot) => {
                    match parse_iso_duration(w) {
                        Some(d) => Literal::Duration(d),
                        None => return Ok(None),
                    }
                }
                _ => return Ok(None),
            },
            _ => return Ok(None),
        };
        self.bump();
        Ok(Some(lit))
    }

    fn term(&mut self) -> Result<Term> {
        self.nested(Self::term_inner)
    }

    fn term_inner(&mut self) -> Result<Term> {
        if let Some(lit) = self.literal()? {
            return Ok(Term::Literal(lit));
        }
        match self.peek() {
            Tok::Sym(Sym::QMark | Sym::Colon) => self.bind_marker().map(Term::Bind),
            Tok::Sym(Sym::LBracket) => {
                self.bump();
                let items = self.terms_until(Sym::RBracket)?;
                Ok(Term::List(items))
            }
            Tok::Sym(Sym::LBrace) => self.brace_term(),
            Tok::Sym(Sym::LParen) => {
                if let Some(hint) = self.try_type_hint()? {
                    return Ok(hint);
                }
                self.bump();
                let items = self.terms_until(Sym::RParen)?;
                Ok(Term::Tuple(items))
            }
            _ if self.function_call_ahead().is_some() => {
                let name = self.function_name()?;
                self.expect(Sym::LParen)?;
                let args = self.terms_until(Sym::RParen)?;
                Ok(Term::Function { name, args })
            }
            _ => Err(self.no_viable()),
        }
    }

    /// Terms separated by commas up to and including `close`.
    fn terms_until(&mut self, close: Sym) -> Result<Vec<Term>> {
        let mut out = Vec::new();
        if self.eat(close) {
            return Ok(out);
        }
        out.push(self.term()?);
        while self.eat(Sym::Comma) {
            out.push(self.term()?);
        }
        self.expect(close)?;
        Ok(out)
    }

    fn brace_term(&mut self) -> Result<Term> {
        self.expect(Sym::LBrace)?;
        if self.eat(Sym::RBrace) {
            return Ok(Term::Map(Vec::new()));
        }
        // `{name: ...}` with a bare name can only be a UDT literal.
        let udt_field = match self.tok_at(0) {
            Tok::Word(w) => !is_reserved_keyword(w) && parse_iso_duration(w).is_none(),
            Tok::QuotedName(_) => true,
            _ => false,
        };
        if udt_field && self.sym_at(1, Sym::Colon) {
            let mut fields = Vec::new();
            loop {
                let name = self.ident()?;
                self.expect(Sym::Colon)?;
                fields.push((name, self.term()?));
                if !self.eat(Sym::Comma) {
                    break;
                }
            }
            self.expect(Sym::RBrace)?;
            return Ok(Term::Udt(fields));
        }
        let first = self.term()?;
        if self.eat(Sym::Colon) {
            let mut entries = vec![(first, self.term()?)];
            while self.eat(Sym::Comma) {
                let k = self.term()?;
                self.expect(Sym::Colon)?;
                entries.push((k, self.term()?));
            }
            self.expect(Sym::RBrace)?;
            return Ok(Term::Map(entries));
        }
        let mut items = vec![first];
        while self.eat(Sym::Comma) {
            items.push(self.term()?);
        }
        self.expect(Sym::RBrace)?;
        Ok(Term::Set(items))
    }

    /// `(type) term`, or `None` (having consumed nothing) if this `(` opens
    /// a tuple instead.
    fn try_type_hint(&mut self) -> Result<Option<Term>> {
        let save = self.i;
        self.bump();
        let starts_type = matches!(self.peek(), Tok::Word(_) | Tok::QuotedName(_))
            && !self.sym_at(1, Sym::LParen);
        if starts_type {
            if let Ok(ty) = self.cql_type() {
                if self.eat(Sym::RParen) && self.term_starts_here() {
                    let term = self.term()?;
                    return Ok(Some(Term::TypeHint {
                        ty,
                        term: Box::new(term),
                    }));
                }
            }
        }
        self.i = save;
        Ok(None)
    }

    fn term_starts_here(&self) -> bool {
        match self.peek() {
            Tok::Int(_)
            | Tok::Float(_)
            | Tok::Str(_)
            | Tok::Blob(_)
            | Tok::Uuid(_)
            | Tok::Duration(_)
            | Tok::Word(_) => true,
            Tok::Sym(s) => matches!(
                s,
                Sym::Minus | Sym::QMark | Sym::Colon | Sym::LBracket | Sym::LBrace | Sym::LParen
            ),
            _ => false,
        }
    }

    // ---- types --------------------------------------------------------

    fn cql_type(&mut self) -> Result<CqlType> {
        if self.type_depth >= gyre_common::MAX_TYPE_NESTING {
            let msg = format!(
                "type nested more than {} levels deep",
                gyre_common::MAX_TYPE_NESTING
            );
            return Err(self.invalid(self.cur_pos(), msg));
        }
        self.type_depth += 1;
        let r = self.nested(Self::cql_type_inner);
        self.type_depth -= 1;
        r
    }

    fn cql_type_inner(&mut self) -> Result<CqlType> {
        let word = match self.peek() {
            Tok::Str(s) => {
                let ty = CqlType::Custom(s.clone());
                self.bump();
                return Ok(ty);
            }
            Tok::Word(w) => w.to_ascii_lowercase(),
            Tok::QuotedName(_) => return self.qualified_name().map(CqlType::Udt),
            _ => return Err(self.mismatched("type")),
        };
        if let Some(t) = CqlType::native(&word) {
            self.bump();
            return Ok(t);
        }
        let generic = self.sym_at(1, Sym::Lt);
        let ty = match word.as_str() {
            "list" | "set" | "frozen" | "map" | "tuple" | "vector" if generic => {
                self.bump();
                self.bump();
                let first = self.cql_type()?;
                let ty = match word.as_str() {
                    "list" => CqlType::List(Box::new(first)),
                    "set" => CqlType::Set(Box::new(first)),
                    "frozen" => CqlType::Frozen(Box::new(first)),
                    "map" => {
                        self.expect(Sym::Comma)?;
                        CqlType::Map(Box::new(first), Box::new(self.cql_type()?))
                    }
                    "tuple" => {
                        let mut items = vec![first];
                        while self.eat(Sym::Comma) {
                            items.push(self.cql_type()?);
                        }
                        CqlType::Tuple(items)
                    }
                    _ => {
                        self.expect(Sym::Comma)?;
                        let Tok::Int(n) = self.peek() else {
                            return Err(self.mismatched("vector dimension"));
                        };
                        let Ok(n) = n.parse::<u32>() else {
                            return Err(self.mismatched("vector dimension"));
                        };
                        self.bump();
                        // Cassandra freezes vector elements: a collection or
                        // user type inside a vector is frozen.
                        let elem = match first {
                            CqlType::List(_)
                            | CqlType::Set(_)
                            | CqlType::Map(..)
                            | CqlType::Udt(_) => CqlType::Frozen(Box::new(first)),
                            other => other,
                        };
                        CqlType::Vector(Box::new(elem), n)
                    }
                };
                self.expect(Sym::Gt)?;
                ty
            }
            "list" | "set" | "frozen" | "map" | "tuple" => {
                self.bump();
                return Err(self.mismatched("'<'"));
            }
            _ => CqlType::Udt(self.qualified_name()?),
        };
        Ok(ty)
    }

    // ---- INSERT / UPDATE / DELETE / BATCH ----------------------------

    fn insert(&mut self) -> Result<Insert> {
        self.expect_kw("insert")?;
        self.expect_kw("into")?;
        let table = self.qualified_name()?;
        let values = if self.eat_kw("json") {
            let json = self.term()?;
            let default = if self.eat_kw("default") {
                if self.eat_kw("unset") {
                    JsonDefault::Unset
                } else {
                    self.expect_kw("null")?;
                    JsonDefault::Null
                }
            } else {
                JsonDefault::Null
            };
            InsertValues::Json { json, default }
        } else {
            let columns = self.paren_ident_list()?;
            self.expect_kw("values")?;
            self.expect(Sym::LParen)?;
            let values = self.terms_until(Sym::RParen)?;
            InsertValues::Columns { columns, values }
        };
        let if_not_exists = self.eat_kws(&["if", "not", "exists"]);
        let using = self.using(true)?;
        Ok(Insert {
            table,
            values,
            if_not_exists,
            using,
        })
    }

    fn using(&mut self, allow_ttl: bool) -> Result<Using> {
        let mut using = Using::default();
        if !self.eat_kw("using") {
            return Ok(using);
        }
        loop {
            if allow_ttl && self.eat_kw("ttl") {
                using.ttl = Some(self.term()?);
            } else if self.eat_kw("timestamp") {
                using.timestamp = Some(self.term()?);
            } else {
                let expected = if allow_ttl {
                    "TTL or TIMESTAMP"
                } else {
                    "TIMESTAMP"
                };
                return Err(self.mismatched(expected));
            }
            if !self.eat_kw("and") {
                return Ok(using);
            }
        }
    }

    fn update(&mut self) -> Result<Update> {
        self.expect_kw("update")?;
        let table = self.qualified_name()?;
        let using = self.using(true)?;
        self.expect_kw("set")?;
        let mut assignments = vec![self.assignment()?];
        while self.eat(Sym::Comma) {
            assignments.push(self.assignment()?);
        }
        self.expect_kw("where")?;
        let where_clause = self.relations()?;
        let conditions = self.conditions()?;
        Ok(Update {
            table,
            using,
            assignments,
            where_clause,
            conditions,
        })
    }

    fn assignment(&mut self) -> Result<Assignment> {
        let pos = self.cur_pos();
        let column = self.ident()?;
        if self.eat(Sym::LBracket) {
            let key = self.term()?;
            self.expect(Sym::RBracket)?;
            self.expect(Sym::Eq)?;
            let value = self.term()?;
            return Ok(Assignment::SetElement { column, key, value });
        }
        if self.eat(Sym::Dot) {
            let field = self.ident()?;
            self.expect(Sym::Eq)?;
            let value = self.term()?;
            return Ok(Assignment::SetField {
                column,
                field,
                value,
            });
        }
        if self.eat(Sym::PlusEq) {
            let value = self.term()?;
            return Ok(Assignment::Add { column, value });
        }
        if self.eat(Sym::MinusEq) {
            let value = self.term()?;
            return Ok(Assignment::Subtract { column, value });
        }
        self.expect(Sym::Eq)?;
        // `c = c + t` / `c = c - t`: a column name can never be a term.
        let column_rhs = self.is_ident_at(0)
            && (self.sym_at(1, Sym::Plus) || self.sym_at(1, Sym::Minus))
            && !matches!(self.peek(), Tok::Word(w) if parse_iso_duration(w).is_some());
        if column_rhs {
            let other = self.ident()?;
            if other != column {
                let msg = format!(
                    "Only expressions of the form X = X +/- <value> are supported (got {column} = {other} ...)"
                );
                return Err(self.invalid(pos, msg));
            }
            let add = self.eat(Sym::Plus);
            if !add {
                self.expect(Sym::Minus)?;
            }
            let value = self.term()?;
            return Ok(if add {
                Assignment::Add { column, value }
            } else {
                Assignment::Subtract { column, value }
            });
        }
        let value = self.term()?;
        if self.eat(Sym::Plus) {
            let other_pos = self.cur_pos();
            let other = self.ident()?;
            if other != column {
                let msg = format!(
                    "Only expressions of the form X = <value> + X are supported (got {column} = ... + {other})"
                );
                return Err(self.invalid(other_pos, msg));
            }
            return Ok(Assignment::Prepend { column, value });
        }
        Ok(Assignment::Set { column, value })
    }

    fn conditions(&mut self) -> Result<Option<Conditions>> {
        if !self.eat_kw("if") {
            return Ok(None);
        }
        if self.eat_kw("exists") {
            return Ok(Some(Conditions::Exists));
        }
        let mut out = vec![self.condition()?];
        while self.eat_kw("and") {
            out.push(self.condition()?);
        }
        Ok(Some(Conditions::List(out)))
    }

    fn condition(&mut self) -> Result<Condition> {
        let column = self.ident()?;
        if self.eat(Sym::LBracket) {
            let key = self.term()?;
            self.expect(Sym::RBracket)?;
            let predicate = self.predicate()?;
            return Ok(Condition::Element {
                column,
                key,
                predicate,
            });
        }
        if self.eat(Sym::Dot) {
            let field = self.ident()?;
            let predicate = self.predicate()?;
            return Ok(Condition::Field {
                column,
                field,
                predicate,
            });
        }
        let predicate = self.predicate()?;
        Ok(Condition::Column { column, predicate })
    }

    fn delete(&mut self) -> Result<Delete> {
        self.expect_kw("delete")?;
        let mut columns = Vec::new();
        if !self.is_kw("from") {
            loop {
                let column = self.ident()?;
                columns.push(if self.eat(Sym::LBracket) {
                    let key = self.term()?;
                    self.expect(Sym::RBracket)?;
                    Deletion::Element { column, key }
                } else if self.eat(Sym::Dot) {
                    Deletion::Field {
                        column,
                        field: self.ident()?,
                    }
                } else {
                    Deletion::Column(column)
                });
                if !self.eat(Sym::Comma) {
                    break;
                }
            }
        }
        self.expect_kw("from")?;
        let table = self.qualified_name()?;
        let using = self.using(false)?;
        self.expect_kw("where")?;
        let where_clause = self.relations()?;
        let conditions = self.conditions()?;
        Ok(Delete {
            columns,
            table,
            using,
            where_clause,
            conditions,
        })
    }

    fn batch(&mut self) -> Result<Batch> {
        self.expect_kw("begin")?;
        let kind = if self.eat_kw("unlogged") {
            BatchKind::Unlogged
        } else if self.eat_kw("counter") {
            BatchKind::Counter
        } else {
            BatchKind::Logged
        };
        self.expect_kw("batch")?;
        let using = self.using(true)?;
        let mut statements = Vec::new();
        loop {
            while self.eat(Sym::Semi) {}
            if self.eat_kws(&["apply", "batch"]) {
                break;
            }
            statements.push(if self.is_kw("insert") {
                Modification::Insert(self.insert()?)
            } else if self.is_kw("update") {
                Modification::Update(self.update()?)
            } else if self.is_kw("delete") {
                Modification::Delete(self.delete()?)
            } else {
                return Err(self.mismatched("INSERT, UPDATE, DELETE or APPLY BATCH"));
            });
        }
        Ok(Batch {
            kind,
            using,
            statements,
        })
    }

    // ---- DDL ------------------------------------------------------------

    fn create_keyspace(&mut self) -> Result<CreateKeyspace> {
        self.bump();
        self.bump();
        let if_not_exists = self.eat_kws(&["if", "not", "exists"]);
        let name = self.ident()?;
        self.expect_kw("with")?;
        let properties = self.properties()?;
        Ok(CreateKeyspace {
            name,
            if_not_exists,
            properties,
        })
    }

    fn alter_keyspace(&mut self) -> Result<AlterKeyspace> {
        self.bump();
        self.bump();
        let if_exists = self.eat_kws(&["if", "exists"]);
        let name = self.ident()?;
        self.expect_kw("with")?;
        let properties = self.properties()?;
        Ok(AlterKeyspace {
            name,
            if_exists,
            properties,
        })
    }

    fn properties(&mut self) -> Result<Vec<Property>> {
        let mut out = vec![self.property()?];
        while self.eat_kw("and") {
            out.push(self.property()?);
        }
        Ok(out)
    }

    fn property(&mut self) -> Result<Property> {
        let name = self.ident()?;
        self.expect(Sym::Eq)?;
        let value = if self.eat(Sym::LBrace) {
            let mut entries = Vec::new();
            if !self.eat(Sym::RBrace) {
                loop {
                    let k = self.constant()?;
                    self.expect(Sym::Colon)?;
                    entries.push((k, self.constant()?));
                    if !self.eat(Sym::Comma) {
                        break;
                    }
                }
                self.expect(Sym::RBrace)?;
            }
            PropertyValue::Map(entries)
        } else if let Some(lit) = self.literal()? {
            PropertyValue::Constant(lit)
        } else if self.is_ident_at(0) {
            PropertyValue::Identifier(self.ident()?)
        } else {
            return Err(self.no_viable());
        };
        Ok(Property { name, value })
    }

    fn constant(&mut self) -> Result<Literal> {
        match self.literal()? {
            Some(lit) => Ok(lit),
            None => Err(self.mismatched("constant")),
        }
    }

    fn create_table(&mut self) -> Result<CreateTable> {
        self.bump();
        self.bump();
        let if_not_exists = self.eat_kws(&["if", "not", "exists"]);
        let name = self.qualified_name()?;
        self.expect(Sym::LParen)?;
        let mut columns = Vec::new();
        let mut key: Option<(Vec<String>, Vec<String>)> = None;
        loop {
            let pos = self.cur_pos();
            let this_key = if self.eat_kws(&["primary", "key"]) {
                Some(self.primary_key()?)
            } else {
                let (def, inline_key) = self.column_def(true)?;
                let k = inline_key.then(|| (vec![def.name.clone()], Vec::new()));
                columns.push(def);
                k
            };
            if let Some(k) = this_key {
                if key.is_some() {
                    return Err(self.invalid(pos, "Multiple PRIMARY KEYs specified".to_owned()));
                }
                key = Some(k);
            }
            if !self.eat(Sym::Comma) {
                break;
            }
        }
        self.expect(Sym::RParen)?;
        let options = if self.eat_kw("with") {
            self.table_options()?
        } else {
            TableOptions::default()
        };
        let (partition_key, clustering_columns) = key.unwrap_or_default();
        Ok(CreateTable {
            name,
            if_not_exists,
            columns,
            partition_key,
            clustering_columns,
            options,
        })
    }

    /// `name type [STATIC] [PRIMARY KEY]`; returns whether PRIMARY KEY was
    /// given inline.
    fn column_def(&mut self, allow_key: bool) -> Result<(ColumnDef, bool)> {
        let name = self.ident()?;
        let ty = self.cql_type()?;
        let is_static = self.eat_kw("static");
        let key = allow_key && self.eat_kws(&["primary", "key"]);
        Ok((
            ColumnDef {
                name,
                ty,
                is_static,
            },
            key,
        ))
    }

    fn primary_key(&mut self) -> Result<(Vec<String>, Vec<String>)> {
        self.expect(Sym::LParen)?;
        let partition = if self.at(Sym::LParen) {
            self.paren_ident_list()?
        } else {
            vec![self.ident()?]
        };
        let mut clustering = Vec::new();
        while self.eat(Sym::Comma) {
            clustering.push(self.ident()?);
        }
        self.expect(Sym::RParen)?;
        Ok((partition, clustering))
    }

    fn table_options(&mut self) -> Result<TableOptions> {
        let mut opts = TableOptions::default();
        loop {
            if self.eat_kws(&["clustering", "order", "by"]) {
                self.expect(Sym::LParen)?;
                loop {
                    let col = self.ident()?;
                    opts.clustering_order.push((col, self.order()));
                    if !self.eat(Sym::Comma) {
                        break;
                    }
                }
                self.expect(Sym::RParen)?;
            } else if self.eat_kws(&["compact", "storage"]) {
                opts.compact_storage = true;
            } else {
                opts.properties.push(self.property()?);
            }
            if !self.eat_kw("and") {
                return Ok(opts);
            }
        }
    }

    fn alter_table(&mut self) -> Result<AlterTable> {
        self.bump();
        self.bump();
        let if_exists = self.eat_kws(&["if", "exists"]);
        let name = self.qualified_name()?;
        let action = if self.eat_kw("add") {
            let if_not_exists = self.eat_kws(&["if", "not", "exists"]);
            let mut columns = Vec::new();
            if self.eat(Sym::LParen) {
                loop {
                    columns.push(self.column_def(false)?.0);
                    if !self.eat(Sym::Comma) {
                        break;
                    }
                }
                self.expect(Sym::RParen)?;
            } else {
                columns.push(self.column_def(false)?.0);
            }
            AlterTableAction::Add {
                if_not_exists,
                columns,
            }
        } else if self.eat_kw("drop") {
            let if_exists = self.eat_kws(&["if", "exists"]);
            let columns = if self.at(Sym::LParen) {
                self.paren_ident_list()?
            } else {
                vec![self.ident()?]
            };
            let timestamp = if self.eat_kw("using") {
                self.expect_kw("timestamp")?;
                Some(self.term()?)
            } else {
                None
            };
            AlterTableAction::Drop {
                if_exists,
                columns,
                timestamp,
            }
        } else if self.eat_kw("rename") {
            let if_exists = self.eat_kws(&["if", "exists"]);
            let mut renames = Vec::new();
            loop {
                let from = self.ident()?;
                self.expect_kw("to")?;
                renames.push((from, self.ident()?));
                if !self.eat_kw("and") {
                    break;
                }
            }
            AlterTableAction::Rename { if_exists, renames }
        } else if self.eat_kw("alter") {
            let column = self.ident()?;
            self.expect_kw("type")?;
            AlterTableAction::AlterType {
                column,
                ty: self.cql_type()?,
            }
        } else if self.eat_kw("with") {
            AlterTableAction::With(self.properties()?)
        } else {
            return Err(self.no_viable());
        };
        Ok(AlterTable {
            name,
            if_exists,
            action,
        })
    }

    // ---- DESCRIBE -------------------------------------------------------

    fn describe(&mut self) -> Result<Describe> {
        self.bump();
        let follows_name = |p: &Self| p.is_ident_at(1);
        let target = if self.eat_kw("cluster") {
            DescribeTarget::Cluster
        } else if self.eat_kws(&["full", "schema"]) {
            DescribeTarget::Schema { full: true }
        } else if self.eat_kw("schema") {
            DescribeTarget::Schema { full: false }
        } else if self.is_kw("keyspaces") && !self.sym_at(1, Sym::Dot) {
            self.bump();
            DescribeTarget::Keyspaces
        } else if self.is_kw("keyspace") || (self.kw_at(0, "only") && self.kw_at(1, "keyspace")) {
            let only = self.eat_kw("only");
            self.bump();
            let name = if self.is_ident_at(0) {
                Some(self.ident()?)
            } else {
                None
            };
            DescribeTarget::Keyspace { only, name }
        } else if self.is_kw("tables") && !self.sym_at(1, Sym::Dot) {
            self.bump();
            DescribeTarget::Tables
        } else if self.eat_kw("table") || self.eat_kw("columnfamily") {
            DescribeTarget::Table(self.qualified_name()?)
        } else if self.eat_kw("index") {
            DescribeTarget::Index(self.qualified_name()?)
        } else if self.eat_kws(&["materialized", "view"]) {
            DescribeTarget::MaterializedView(self.qualified_name()?)
        } else if self.is_kw("types") && !self.sym_at(1, Sym::Dot) {
            self.bump();
            DescribeTarget::Types
        } else if self.is_kw("type") && follows_name(self) {
            self.bump();
            DescribeTarget::Type(self.qualified_name()?)
        } else if self.is_kw("functions") && !self.sym_at(1, Sym::Dot) {
            self.bump();
            DescribeTarget::Functions
        } else if self.is_kw("function") && follows_name(self) {
            self.bump();
            DescribeTarget::Function(self.qualified_name()?)
        } else if self.is_kw("aggregates") && !self.sym_at(1, Sym::Dot) {
            self.bump();
            DescribeTarget::Aggregates
        } else if self.is_kw("aggregate") && follows_name(self) {
            self.bump();
            DescribeTarget::Aggregate(self.qualified_name()?)
        } else if self.is_ident_at(0) {
            DescribeTarget::Generic(self.qualified_name()?)
        } else {
            return Err(self.no_viable());
        };
        let with_internals = self.eat_kws(&["with", "internals"]);
        Ok(Describe {
            target,
            with_internals,
        })
    }
}

fn sym_text(s: Sym) -> &'static str {
    match s {
        Sym::LParen => "(",
        Sym::RParen => ")",
        Sym::LBracket => "[",
        Sym::RBracket => "]",
        Sym::LBrace => "{",
        Sym::RBrace => "}",
        Sym::Comma => ",",
        Sym::Semi => ";",
        Sym::Colon => ":",
        Sym::Dot => ".",
        Sym::Star => "*",
        Sym::Eq => "=",
        Sym::Lt => "<",
        Sym::Lte => "<=",
        Sym::Gt => ">",
        Sym::Gte => ">=",
        Sym::Neq => "!=",
        Sym::Plus => "+",
        Sym::Minus => "-",
        Sym::PlusEq => "+=",
        Sym::MinusEq => "-=",
        Sym::QMark => "?",
        Sym::Slash => "/",
        Sym::Percent => "%",
    }
}

#[cfg(test)]
mod tests {
    use super::RESERVED;

    #[test]
    fn reserved_list_is_sorted_for_binary_search() {
        assert!(RESERVED.windows(2).all(|w| w[0] < w[1]));
    }
}
