/// A 1-based line and column (columns count characters, not bytes).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Position {
    pub line: u32,
    pub column: u32,
}

/// Every way parsing can fail. The text follows Cassandra's ANTLR wording so
/// that clients and humans see familiar messages; servers map all of these to
/// the protocol's syntax error (0x2000).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ParseError {
    #[error("line {}:{} unterminated string literal", .pos.line, .pos.column)]
    UnterminatedString { pos: Position },
    #[error("line {}:{} unterminated quoted identifier", .pos.line, .pos.column)]
    UnterminatedIdentifier { pos: Position },
    #[error("line {}:{} unterminated comment", .pos.line, .pos.column)]
    UnterminatedComment { pos: Position },
    #[error("line {}:{} bad number '{text}'", .pos.line, .pos.column)]
    BadNumber { pos: Position, text: String },
    #[error("line {}:{} invalid character '{ch}'", .pos.line, .pos.column)]
    InvalidCharacter { pos: Position, ch: char },
    #[error("line {}:{} mismatched input '{found}' expecting {expected}", .pos.line, .pos.column)]
    Mismatched {
        pos: Position,
        found: String,
        expected: String,
    },
    #[error("line {}:{} no viable alternative at input '{found}'", .pos.line, .pos.column)]
    NoViableAlternative { pos: Position, found: String },
    /// Syntactically well-formed tokens that Cassandra's parser still rejects
    /// (e.g. `count(2)`, two PRIMARY KEY clauses).
    #[error("line {}:{} {message}", .pos.line, .pos.column)]
    Invalid { pos: Position, message: String },
}

impl ParseError {
    /// Where the error was found.
    pub fn position(&self) -> Position {
        match self {
            ParseError::UnterminatedString { pos }
            | ParseError::UnterminatedIdentifier { pos }
            | ParseError::UnterminatedComment { pos }
            | ParseError::BadNumber { pos, .. }
            | ParseError::InvalidCharacter { pos, .. }
            | ParseError::Mismatched { pos, .. }
            | ParseError::NoViableAlternative { pos, .. }
            | ParseError::Invalid { pos, .. } => *pos,
        }
    }
}
