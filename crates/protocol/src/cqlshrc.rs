//! The client settings of a cqlshrc file, as cqlsh reads them (gyresh:
//! `~/.cassandra/cqlshrc` or `--cqlshrc FILE`; gyre-stress: `--cqlshrc
//! FILE`), beside the clients' TLS set-up in this crate: `[authentication]`
//! username and password, `[connection]` hostname, port and ssl, `[ssl]`
//! certfile (the CA), usercert and userkey. Command-line options win over
//! the file. Sections and keys gyresh does not use are ignored, as cqlsh
//! ignores what it does not know.

use std::path::{Path, PathBuf};

/// What one cqlshrc says; `None` where it says nothing.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Cqlshrc {
    pub hostname: Option<String>,
    pub port: Option<u16>,
    pub username: Option<String>,
    pub password: Option<String>,
    pub ssl: bool,
    pub certfile: Option<PathBuf>,
    pub usercert: Option<PathBuf>,
    pub userkey: Option<PathBuf>,
}

impl Cqlshrc {
    /// Parses the INI text of a cqlshrc; relative file names are taken
    /// from `base` (the file's directory). Errors name the line.
    pub fn parse(text: &str, base: &Path) -> Result<Self, String> {
        let mut rc = Cqlshrc::default();
        let mut section = String::new();
        for (i, raw) in text.lines().enumerate() {
            let line = raw.trim();
            if line.is_empty() || line.starts_with('#') || line.starts_with(';') {
                continue;
            }
            if let Some(name) = line.strip_prefix('[').and_then(|l| l.strip_suffix(']')) {
                section = name.trim().to_ascii_lowercase();
                continue;
            }
            let Some((key, value)) = line.split_once(['=', ':']) else {
                return Err(format!("line {}: expected `key = value`: {raw}", i + 1));
            };
            let (key, value) = (key.trim().to_ascii_lowercase(), value.trim().to_string());
            let path = |v: &str| {
                let p = PathBuf::from(v);
                if p.is_relative() {
                    base.join(p)
                } else {
                    p
                }
            };
            match (section.as_str(), key.as_str()) {
                ("authentication", "username") => rc.username = Some(value),
                ("authentication", "password") => rc.password = Some(value),
                ("connection", "hostname") => rc.hostname = Some(value),
                ("connection", "port") => {
                    rc.port = Some(
                        value
                            .parse()
                            .map_err(|_| format!("line {}: port is not a port: {value}", i + 1))?,
                    )
                }
                ("connection", "ssl") => {
                    rc.ssl = matches!(
                        value.to_ascii_lowercase().as_str(),
                        "true" | "yes" | "on" | "1"
                    )
                }
                ("ssl", "certfile") => rc.certfile = Some(path(&value)),
                ("ssl", "usercert") => rc.usercert = Some(path(&value)),
                ("ssl", "userkey") => rc.userkey = Some(path(&value)),
                _ => {}
            }
        }
        Ok(rc)
    }

    /// Reads `path`; a missing default file is no error (`Ok(None)`).
    pub fn load(path: &Path) -> Result<Option<Self>, String> {
        match std::fs::read_to_string(path) {
            Ok(text) => {
                let base = path.parent().unwrap_or(Path::new("."));
                Self::parse(&text, base)
                    .map(Some)
                    .map_err(|e| format!("{}: {e}", path.display()))
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(format!("reading {}: {e}", path.display())),
        }
    }

    /// cqlsh's default location, `~/.cassandra/cqlshrc`.
    pub fn default_path() -> Option<PathBuf> {
        std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".cassandra").join("cqlshrc"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_what_gyrectl_writes_and_what_cqlsh_reads() {
        let text = "\
; a comment
[connection]
hostname = 127.0.9.1
port: 9043
ssl = true

[ssl]
certfile = tls/ca.crt
validate = true
usercert = /abs/client.crt
userkey = /abs/client.key

[authentication]
username = cassandra
password = secret = with equals

[ui]
color = on
";
        let rc = Cqlshrc::parse(text, Path::new("/base")).expect("valid");
        assert_eq!(
            rc,
            Cqlshrc {
                hostname: Some("127.0.9.1".into()),
                port: Some(9043),
                username: Some("cassandra".into()),
                password: Some("secret = with equals".into()),
                ssl: true,
                certfile: Some("/base/tls/ca.crt".into()),
                usercert: Some("/abs/client.crt".into()),
                userkey: Some("/abs/client.key".into()),
            }
        );
    }

    #[test]
    fn bad_lines_are_named_and_a_missing_file_is_none() {
        let err = Cqlshrc::parse("[connection]\nport = many\n", Path::new(".")).expect_err("bad");
        assert!(err.contains("line 2"), "{err}");
        let err = Cqlshrc::parse("[connection]\njunk\n", Path::new(".")).expect_err("bad");
        assert!(err.contains("line 2"), "{err}");
        assert_eq!(
            Cqlshrc::load(Path::new("/nonexistent/gyre/cqlshrc")).expect("ok"),
            None
        );
    }
}
