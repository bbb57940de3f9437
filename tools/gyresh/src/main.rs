//! `gyresh [HOST [PORT]]`: the interactive CQL shell (see the library docs).

use std::io::{BufRead, IsTerminal, Write};
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{Context, Result};
use clap::Parser;
use rustyline::completion::Completer;
use rustyline::error::ReadlineError;
use rustyline::highlight::Highlighter;
use rustyline::hint::Hinter;
use rustyline::history::DefaultHistory;
use rustyline::validate::Validator;
use rustyline::{Editor, Helper};
use scylla::client::execution_profile::ExecutionProfile;
use scylla::client::session::Session;
use scylla::client::session_builder::SessionBuilder;
use scylla::errors::{ExecutionError, PrepareError, RequestAttemptError, UseKeyspaceError};
use scylla::response::{PagingState, PagingStateResponse};
use scylla::statement::{Consistency, SerialConsistency, Statement};
use scylla::value::{CqlValue, Row};

use gyre_protocol::cqlshrc::Cqlshrc;
use gyresh::command::{self, Command, PagingArg};
use gyresh::complete::{self, SchemaNames};
use gyresh::format;
use gyresh::input;
use gyresh::render::{self, Cell};
use gyresh::route::ContactNode;

/// Interactive CQL shell for Gyre (works with any CQL v4 server).
#[derive(Parser, Debug)]
#[command(name = "gyresh", version)]
struct Args {
    /// Host to connect to (default: the cqlshrc's `hostname`, else
    /// 127.0.0.1).
    host: Option<String>,
    /// CQL native protocol port (default: the cqlshrc's `port`, else 9042).
    port: Option<u16>,
    /// Read connection, login and TLS settings from this cqlshrc (default:
    /// `~/.cassandra/cqlshrc` when it exists, as cqlsh); options given on
    /// the command line win.
    #[arg(long, value_name = "FILE")]
    cqlshrc: Option<PathBuf>,
    /// Execute the statements and exit.
    #[arg(short = 'e', long = "execute")]
    execute: Option<String>,
    /// Execute the statements in FILE and exit.
    #[arg(short = 'f', long = "file")]
    file: Option<PathBuf>,
    /// Keyspace to USE on connect.
    #[arg(short = 'k', long = "keyspace")]
    keyspace: Option<String>,
    /// Keep going after an error (the exit status is still non-zero).
    #[arg(long)]
    continue_on_error: bool,
    /// Connection timeout in seconds.
    #[arg(long, default_value_t = 5)]
    connect_timeout: u64,
    /// Request timeout in seconds.
    #[arg(long, default_value_t = 12)]
    request_timeout: u64,
    /// Role to log in as (nodes with `auth.authenticator =
    /// "PasswordAuthenticator"`).
    #[arg(short = 'u', long = "username")]
    username: Option<String>,
    /// Password of --username.
    #[arg(short = 'p', long = "password", requires = "username")]
    password: Option<String>,
    /// TLS to the CQL port (nodes with `[client_encryption]`), the node's
    /// certificate verified against --ssl-ca (else the system's CAs).
    #[arg(long)]
    ssl: bool,
    /// PEM CA that signed the nodes' certificates (implies --ssl).
    #[arg(long, value_name = "FILE")]
    ssl_ca: Option<PathBuf>,
    /// PEM client certificate, for nodes that require one (implies --ssl).
    #[arg(long, value_name = "FILE", requires = "ssl_key")]
    ssl_cert: Option<PathBuf>,
    /// PEM private key of --ssl-cert.
    #[arg(long, value_name = "FILE", requires = "ssl_cert")]
    ssl_key: Option<PathBuf>,
}

/// `-u` / `-p`, for every (re)connection.
static CREDENTIALS: std::sync::OnceLock<(String, String)> = std::sync::OnceLock::new();
/// `--ssl`, for every (re)connection.
static TLS: std::sync::OnceLock<scylla::client::session::TlsContext> = std::sync::OnceLock::new();

/// Shared with the line editor's completer.
#[derive(Default)]
struct CompletionState {
    keyspace: Option<String>,
    schema: SchemaNames,
}

struct ShellHelper {
    state: Arc<Mutex<CompletionState>>,
}

impl Completer for ShellHelper {
    type Candidate = String;
    fn complete(
        &self,
        line: &str,
        pos: usize,
        _ctx: &rustyline::Context<'_>,
    ) -> rustyline::Result<(usize, Vec<String>)> {
        let state = self.state.lock().unwrap_or_else(|e| e.into_inner());
        Ok(complete::candidates(
            line,
            pos,
            state.keyspace.as_deref(),
            &state.schema,
        ))
    }
}
impl Hinter for ShellHelper {
    type Hint = String;
}
impl Highlighter for ShellHelper {}
impl Validator for ShellHelper {}
impl Helper for ShellHelper {}

struct Shell {
    addr: String,
    args_connect_timeout: Duration,
    request_timeout: Duration,
    rt: tokio::runtime::Runtime,
    session: Session,
    consistency: Consistency,
    serial: Option<SerialConsistency>,
    expand: bool,
    paging: bool,
    page_size: i32,
    /// `TRACING ON`: statements are traced and their events printed.
    tracing: bool,
    interactive: bool,
    completion: Arc<Mutex<CompletionState>>,
}

/// What running a statement did, for the caller's error policy.
enum Outcome {
    Ok,
    Failed,
    Exit,
}

fn main() {
    let args = Args::parse();
    tracing_subscriber::fmt()
        .with_writer(std::io::stderr)
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                // The driver logs every failed reconnect attempt; the shell
                // reports connection trouble itself.
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("off,gyresh=warn")),
        )
        .init();
    match run(args) {
        Ok(code) => std::process::exit(code),
        Err(e) => {
            eprintln!("error: {e:#}");
            std::process::exit(2);
        }
    }
}

fn run(args: Args) -> Result<i32> {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()?;
    let rc = match &args.cqlshrc {
        Some(path) => Some(
            Cqlshrc::load(path)
                .map_err(anyhow::Error::msg)?
                .with_context(|| format!("{} does not exist", path.display()))?,
        ),
        None => match Cqlshrc::default_path() {
            Some(path) => Cqlshrc::load(&path).map_err(anyhow::Error::msg)?,
            None => None,
        },
    }
    .unwrap_or_default();
    let host = args
        .host
        .clone()
        .or(rc.hostname.clone())
        .unwrap_or_else(|| "127.0.0.1".into());
    let addr = format!("{host}:{}", args.port.or(rc.port).unwrap_or(9042));
    // The command line's login wins as a whole (a user without a password
    // on the command line does not take the file's password).
    let login = match &args.username {
        Some(user) => Some((user.clone(), args.password.clone().unwrap_or_default())),
        None => rc
            .username
            .clone()
            .map(|u| (u, rc.password.clone().unwrap_or_default())),
    };
    if let Some(login) = login {
        let _ = CREDENTIALS.set(login);
    }
    let ca = args.ssl_ca.clone().or(rc.certfile.clone());
    let client = match (&args.ssl_cert, &args.ssl_key) {
        (Some(c), Some(k)) => Some((c.clone(), k.clone())),
        _ => rc.usercert.clone().zip(rc.userkey.clone()),
    };
    if args.ssl || rc.ssl || args.ssl_ca.is_some() || args.ssl_cert.is_some() {
        let _ = TLS.set(ssl_context(
            ca.as_deref(),
            client.as_ref().map(|(c, k)| (c.as_path(), k.as_path())),
        )?);
    }
    let connect_timeout = Duration::from_secs(args.connect_timeout);
    let session = rt
        .block_on(connect(&addr, connect_timeout))
        .with_context(|| format!("connecting to {addr}"))?;
    let script = match (&args.execute, &args.file) {
        (Some(e), _) => Some(e.clone()),
        (None, Some(f)) => {
            Some(std::fs::read_to_string(f).with_context(|| format!("reading {}", f.display()))?)
        }
        // Piped input is a script too, as with cqlsh.
        (None, None) if !std::io::stdin().is_terminal() => {
            let mut s = String::new();
            for line in std::io::stdin().lock().lines() {
                s.push_str(&line?);
                s.push('\n');
            }
            Some(s)
        }
        (None, None) => None,
    };
    let mut shell = Shell {
        addr,
        args_connect_timeout: connect_timeout,
        request_timeout: Duration::from_secs(args.request_timeout),
        rt,
        session,
        consistency: Consistency::One,
        serial: None,
        expand: false,
        paging: script.is_none(),
        page_size: 100,
        tracing: false,
        interactive: script.is_none(),
        completion: Arc::default(),
    };
    if let Some(ks) = &args.keyspace {
        if let Outcome::Failed = shell.run_one(&format!("USE {ks}")) {
            return Ok(1);
        }
    }
    match script {
        Some(text) => Ok(shell.run_script(&text, args.continue_on_error)),
        None => shell.interactive_loop(),
    }
}

async fn connect(addr: &str, timeout: Duration) -> Result<Session> {
    // cqlsh's routing: every request to the node the shell was started
    // on (see `gyresh::route`).
    let contact = tokio::net::lookup_host(addr)
        .await
        .with_context(|| format!("resolving {addr}"))?
        .next()
        .with_context(|| format!("{addr} resolves to no address"))?;
    let profile = ExecutionProfile::builder()
        .load_balancing_policy(ContactNode::policy(contact))
        .build();
    let mut builder = SessionBuilder::new()
        .known_node(addr)
        .default_execution_profile_handle(profile.into_handle())
        .connection_timeout(timeout);
    if let Some((user, password)) = CREDENTIALS.get() {
        builder = builder.user(user, password);
    }
    if let Some(tls) = TLS.get() {
        builder = builder.tls_context(Some(tls.clone()));
    }
    Ok(builder.build().await?)
}

/// The client TLS of `--ssl` (rustls, the ring provider, as the node's
/// own TLS): the node's certificate must verify against `--ssl-ca` and be
/// valid for the node's IP address (the driver checks that); an optional
/// client certificate and key.
fn ssl_context(
    ca: Option<&std::path::Path>,
    client: Option<(&std::path::Path, &std::path::Path)>,
) -> Result<scylla::client::session::TlsContext> {
    let config = gyre_protocol::tls_client_config_from_files(ca, client)?;
    Ok(scylla::client::session::TlsContext::Rustls023(config))
}

impl Shell {
    /// Runs every statement of a script; returns the exit status.
    fn run_script(&mut self, text: &str, continue_on_error: bool) -> i32 {
        let (mut stmts, rest) = input::split_statements(text);
        if !rest.trim().is_empty() {
            // A last statement without `;` still runs, as in cqlsh -e.
            stmts.push(rest.trim().to_string());
        }
        let mut status = 0;
        for stmt in stmts {
            match self.run_one(&stmt) {
                Outcome::Ok => {}
                Outcome::Exit => break,
                Outcome::Failed => {
                    status = 1;
                    if !continue_on_error {
                        break;
                    }
                }
            }
        }
        status
    }

    fn interactive_loop(&mut self) -> Result<i32> {
        let mut editor: Editor<ShellHelper, DefaultHistory> = Editor::new()?;
        editor.set_helper(Some(ShellHelper {
            state: self.completion.clone(),
        }));
        let history = std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".gyresh_history"));
        if let Some(h) = &history {
            // A missing history file is the normal first run.
            let _ = editor.load_history(h);
        }
        println!(
            "Connected to {} (gyresh {}). Type HELP for help, EXIT to leave.",
            self.addr,
            env!("CARGO_PKG_VERSION")
        );
        self.refresh_schema_names();
        let mut buffer = String::new();
        loop {
            let prompt = if buffer.trim().is_empty() {
                let ks = self
                    .session
                    .get_keyspace()
                    .map(|k| format!(":{k}"))
                    .unwrap_or_default();
                format!("gyresh{ks}> ")
            } else {
                "   ... ".to_string()
            };
            let line = match editor.readline(&prompt) {
                Ok(line) => line,
                // Ctrl-C drops the statement being typed, like a shell.
                Err(ReadlineError::Interrupted) => {
                    buffer.clear();
                    continue;
                }
                Err(ReadlineError::Eof) => break,
                Err(e) => return Err(e.into()),
            };
            buffer.push_str(&line);
            buffer.push('\n');
            let (stmts, rest) = input::split_statements(&buffer);
            if !stmts.is_empty() {
                let entry = buffer[..buffer.len() - rest.len()].trim().to_string();
                let _ = editor.add_history_entry(entry);
                if let Some(h) = &history {
                    if let Err(e) = editor.save_history(h) {
                        tracing::warn!("saving history to {}: {e}", h.display());
                    }
                }
            }
            buffer = rest;
            for stmt in stmts {
                if let Outcome::Exit = self.run_one(&stmt) {
                    return Ok(0);
                }
            }
        }
        Ok(0)
    }

    /// Runs one statement or shell command, printing its result or error.
    fn run_one(&mut self, stmt: &str) -> Outcome {
        let cmd = match command::parse(stmt) {
            Ok(c) => c,
            Err(usage) => {
                eprintln!("{usage}");
                return Outcome::Failed;
            }
        };
        match cmd {
            Command::Exit => return Outcome::Exit,
            Command::Help(_) => println!("{}", command::HELP),
            Command::Clear => print!("\x1b[2J\x1b[H"),
            Command::Expand(None) => {
                println!("Expanded output is {}.", on_off(self.expand))
            }
            Command::Expand(Some(on)) => {
                self.expand = on;
                println!(
                    "Now {} expanded output",
                    if on { "Using" } else { "Disabled" }
                );
            }
            Command::Paging(arg) => self.set_paging(arg),
            Command::Tracing(None) => println!("Tracing is {}.", on_off(self.tracing)),
            Command::Tracing(Some(on)) => {
                self.tracing = on;
                // cqlsh 6's words.
                println!("TRACING set to {}", on_off(on));
            }
            Command::Consistency(None) => println!(
                "Current consistency level is {}.",
                command::consistency_name(self.consistency)
            ),
            Command::Consistency(Some(c)) => {
                self.consistency = c;
                println!("Consistency level set to {}.", command::consistency_name(c));
            }
            Command::SerialConsistency(None) => println!(
                "Current serial consistency level is {}.",
                match self.serial {
                    Some(SerialConsistency::LocalSerial) => "LOCAL_SERIAL",
                    _ => "SERIAL",
                }
            ),
            Command::SerialConsistency(Some(s)) => {
                self.serial = Some(s);
                println!("Serial consistency level set to {s:?}.");
            }
            Command::Source(path) => {
                return match std::fs::read_to_string(&path) {
                    Ok(text) => {
                        // Errors inside a sourced file are reported but
                        // only fail the SOURCE itself.
                        if self.run_script(&text, self.interactive) == 0 {
                            Outcome::Ok
                        } else {
                            Outcome::Failed
                        }
                    }
                    Err(e) => {
                        eprintln!("SOURCE: cannot read {path}: {e}");
                        Outcome::Failed
                    }
                };
            }
            Command::Use(ks) => {
                let result = self
                    .rt
                    .block_on(self.session.use_keyspace(ks.clone(), true));
                if let Err(e) = result {
                    let lost = matches!(&e, UseKeyspaceError::RequestError(r) if is_connection_lost_attempt(r));
                    print_use_error(&e);
                    if lost {
                        self.reconnect();
                    }
                    return Outcome::Failed;
                }
                self.completion
                    .lock()
                    .unwrap_or_else(|e| e.into_inner())
                    .keyspace = Some(ks);
            }
            Command::Cql(text) => return self.run_cql(&text),
        }
        let _ = std::io::stdout().flush();
        Outcome::Ok
    }

    fn set_paging(&mut self, arg: PagingArg) {
        match arg {
            PagingArg::Show => println!(
                "Query paging is currently {}.{}",
                on_off(self.paging),
                if self.paging {
                    format!(" Page size: {}", self.page_size)
                } else {
                    String::new()
                }
            ),
            PagingArg::On => {
                self.paging = true;
                println!("Now Query paging is enabled\nPage size: {}", self.page_size);
            }
            PagingArg::Off => {
                self.paging = false;
                println!("Disabled Query paging.");
            }
            PagingArg::Size(n) => {
                self.paging = true;
                self.page_size = n;
                println!("Page size: {n}");
            }
        }
    }

    fn statement(&self, text: &str) -> Statement {
        let page = if self.paging { self.page_size } else { 5000 };
        let mut s = Statement::new(text).with_page_size(page);
        s.set_consistency(self.consistency);
        s.set_serial_consistency(self.serial);
        s.set_request_timeout(Some(self.request_timeout));
        s.set_tracing(self.tracing);
        s
    }

    /// Prints a trace session's events as cqlsh does, once the session row
    /// is complete (trace rows are written asynchronously).
    fn print_trace(&self, id: uuid::Uuid) {
        let deadline = Instant::now() + Duration::from_secs(10);
        let fetched = self.rt.block_on(async {
            loop {
                let session = self
                    .session
                    .query_unpaged(
                        "SELECT client, coordinator, duration, started_at FROM system_traces.sessions WHERE session_id = ?",
                        (id,),
                    )
                    .await
                    .ok()
                    .and_then(|r| r.into_rows_result().ok())
                    .and_then(|r| r.maybe_first_row::<SessionRow>().ok().flatten());
                if let Some((client, coordinator, Some(duration), Some(started))) = session {
                    let events = self
                        .session
                        .query_unpaged(
                            "SELECT activity, event_id, source, source_elapsed FROM system_traces.events WHERE session_id = ?",
                            (id,),
                        )
                        .await
                        .ok()?
                        .into_rows_result()
                        .ok()?;
                    let rows: Vec<EventRow> = events.rows().ok()?.flatten().collect();
                    return Some((client, coordinator, duration, started, rows));
                }
                if Instant::now() > deadline {
                    return None;
                }
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        });
        println!(
            "
Tracing session: {id}
"
        );
        let Some((client, coordinator, duration, started, events)) = fetched else {
            println!("Statement trace did not complete within 10 seconds");
            return;
        };
        let client = client.map(|c| c.to_string()).unwrap_or_default();
        let coordinator = coordinator.map(|c| c.to_string()).unwrap_or_default();
        let text = |s: String| Cell {
            text: s,
            numeric: false,
        };
        let num = |s: String| Cell {
            text: s,
            numeric: true,
        };
        let mut rows = vec![vec![
            text("Execute CQL3 query".into()),
            text(format::format_timestamp(started.0)),
            text(coordinator.clone()),
            num("0".into()),
            text(client.clone()),
        ]];
        for (activity, event_id, source, elapsed) in events {
            rows.push(vec![
                text(activity.unwrap_or_default()),
                text(format::format_timestamp(timeuuid_millis(event_id.as_ref()))),
                text(source.map(|s| s.to_string()).unwrap_or_default()),
                num(elapsed.unwrap_or(0).to_string()),
                text(client.clone()),
            ]);
        }
        rows.push(vec![
            text("Request complete".into()),
            text(format::format_timestamp(
                started.0 + i64::from(duration) / 1000,
            )),
            text(coordinator),
            num(duration.to_string()),
            text(client),
        ]);
        let headers: Vec<String> = [
            "activity",
            "timestamp",
            "source",
            "source_elapsed",
            "client",
        ]
        .iter()
        .map(|h| h.to_string())
        .collect();
        println!("{}\n", render::table(&headers, &rows));
    }

    /// Sends CQL to the server; pages through rows.
    fn run_cql(&mut self, text: &str) -> Outcome {
        let stmt = self.statement(text);
        let mut trace_id = None;
        let outcome = self.run_pages(text, stmt, &mut trace_id);
        if let Some(id) = trace_id {
            self.print_trace(id);
        }
        outcome
    }

    fn run_pages(
        &mut self,
        text: &str,
        stmt: Statement,
        trace_id: &mut Option<uuid::Uuid>,
    ) -> Outcome {
        let started = Instant::now();
        let mut paging_state = PagingState::start();
        let mut total_rows = 0usize;
        let mut waited = Duration::ZERO;
        let mut headers: Vec<String>;
        // Without interactive paging, all pages go into one table.
        let mut pending: Vec<Vec<Cell>> = Vec::new();
        let is_describe = first_word_is(text, &["DESCRIBE", "DESC"]);
        loop {
            let result = self.rt.block_on(self.session.query_single_page(
                stmt.clone(),
                (),
                paging_state.clone(),
            ));
            let (result, next) = match result {
                Ok(r) => r,
                Err(e) => {
                    print_execution_error(&e);
                    if is_connection_lost(&e) {
                        self.reconnect();
                    }
                    return Outcome::Failed;
                }
            };
            for w in result.warnings() {
                eprintln!("Warning: {w}");
            }
            if let Some(id) = result.tracing_id() {
                *trace_id = Some(id);
            }
            let rows = match result.into_rows_result() {
                Ok(rows) => rows,
                // Not a SELECT: nothing to show (as cqlsh).
                Err(_) => {
                    if is_ddl(text) {
                        self.refresh_schema_names();
                    }
                    return Outcome::Ok;
                }
            };
            headers = rows
                .column_specs()
                .iter()
                .map(|c| c.name().to_string())
                .collect();
            let page: Vec<Row> = match rows.rows::<Row>() {
                Ok(iter) => match iter.collect::<Result<Vec<Row>, _>>() {
                    Ok(v) => v,
                    Err(e) => {
                        eprintln!("DeserializationError: {e}");
                        return Outcome::Failed;
                    }
                },
                Err(e) => {
                    eprintln!("DeserializationError: {e}");
                    return Outcome::Failed;
                }
            };
            if is_describe {
                print_describe(&headers, &page);
            } else {
                let cells: Vec<Vec<Cell>> = page.iter().map(row_cells).collect();
                if self.paging && self.interactive {
                    // The server may end with an empty page: nothing to show.
                    if !cells.is_empty() || total_rows == 0 {
                        self.print_rows(&headers, &cells, total_rows + 1);
                    }
                } else {
                    pending.extend(cells);
                }
            }
            total_rows += page.len();
            match next {
                PagingStateResponse::HasMorePages { state } => {
                    paging_state = state;
                    if self.paging && self.interactive && !is_describe {
                        // Time spent reading ---MORE--- is not the query's.
                        let waiting = Instant::now();
                        let more = wait_for_more();
                        waited += waiting.elapsed();
                        if !more {
                            break;
                        }
                    }
                }
                PagingStateResponse::NoMorePages => break,
            }
        }
        if !is_describe {
            if !pending.is_empty() || (total_rows == 0 && !(self.paging && self.interactive)) {
                self.print_rows(&headers, &pending, 1);
            }
            let elapsed = started.elapsed().saturating_sub(waited);
            println!("\n{}\n", render::footer(total_rows, elapsed));
        }
        let _ = std::io::stdout().flush();
        Outcome::Ok
    }

    fn print_rows(&self, headers: &[String], rows: &[Vec<Cell>], first: usize) {
        if self.expand {
            println!("\n{}", render::expanded(headers, rows, first));
        } else {
            println!("\n{}", render::table(headers, rows));
        }
    }

    /// Loads keyspace/table/column names for tab completion (best effort).
    fn refresh_schema_names(&mut self) {
        if !self.interactive {
            return;
        }
        let q = "SELECT keyspace_name, table_name, column_name FROM system_schema.columns";
        let mut names = SchemaNames::default();
        let fetched = self.rt.block_on(async {
            let rows = self
                .session
                .query_unpaged(q, ())
                .await
                .ok()?
                .into_rows_result()
                .ok()?;
            for (ks, table, col) in rows.rows::<(String, String, String)>().ok()?.flatten() {
                names.add_column(&ks, &table, &col);
            }
            let ks_rows = self
                .session
                .query_unpaged("SELECT keyspace_name FROM system_schema.keyspaces", ())
                .await
                .ok()?
                .into_rows_result()
                .ok()?;
            for (ks,) in ks_rows.rows::<(String,)>().ok()?.flatten() {
                names.add_keyspace(&ks);
            }
            Some(())
        });
        if fetched.is_some() {
            self.completion
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .schema = names;
        }
    }

    /// After a lost connection: wait for the node to answer again, with a
    /// fresh session if the old one cannot recover, and say so.
    fn reconnect(&mut self) {
        eprintln!("Connection to {} lost; reconnecting...", self.addr);
        let deadline = Instant::now() + Duration::from_secs(30);
        let keyspace = self.session.get_keyspace().map(|k| k.to_string());
        while Instant::now() < deadline {
            let probe = self.rt.block_on(
                self.session
                    .query_unpaged("SELECT release_version FROM system.local", ()),
            );
            if probe.is_ok() {
                eprintln!("Reconnected to {}.", self.addr);
                return;
            }
            match self
                .rt
                .block_on(connect(&self.addr, self.args_connect_timeout))
            {
                Ok(s) => {
                    if let Some(ks) = &keyspace {
                        // A node still starting may not know the keyspace
                        // yet: keep trying until the deadline.
                        if let Err(e) = self.rt.block_on(s.use_keyspace(ks.clone(), true)) {
                            tracing::debug!("USE {ks} after reconnect: {e}");
                            std::thread::sleep(Duration::from_millis(500));
                            continue;
                        }
                    }
                    self.session = s;
                    eprintln!("Reconnected to {} (new session).", self.addr);
                    return;
                }
                Err(_) => std::thread::sleep(Duration::from_millis(500)),
            }
        }
        eprintln!(
            "Could not reconnect to {} yet; the next statement will try again.",
            self.addr
        );
    }
}

fn on_off(b: bool) -> &'static str {
    if b {
        "ON"
    } else {
        "OFF"
    }
}

fn first_word_is(text: &str, words: &[&str]) -> bool {
    let first = text.split_whitespace().next().unwrap_or("");
    words.iter().any(|w| first.eq_ignore_ascii_case(w))
}

fn is_ddl(text: &str) -> bool {
    first_word_is(text, &["CREATE", "DROP", "ALTER"])
}

/// `system_traces.sessions`: client, coordinator, duration, started_at.
type SessionRow = (
    Option<std::net::IpAddr>,
    Option<std::net::IpAddr>,
    Option<i32>,
    Option<scylla::value::CqlTimestamp>,
);

/// `system_traces.events`: activity, event_id, source, source_elapsed.
type EventRow = (
    Option<String>,
    scylla::value::CqlTimeuuid,
    Option<std::net::IpAddr>,
    Option<i32>,
);

/// The unix milliseconds of a version 1 UUID.
fn timeuuid_millis(u: &uuid::Uuid) -> i64 {
    let (msb, _) = u.as_u64_pair();
    let ticks = ((msb & 0x0fff) << 48) | (((msb >> 16) & 0xffff) << 32) | (msb >> 32);
    (ticks.saturating_sub(0x01B2_1DD2_1381_4000) / 10_000) as i64
}

fn row_cells(row: &Row) -> Vec<Cell> {
    row.columns
        .iter()
        .map(|v| Cell {
            text: format::format_cell(v.as_ref()),
            numeric: v.as_ref().is_some_and(is_numeric),
        })
        .collect()
}

fn is_numeric(v: &CqlValue) -> bool {
    matches!(
        v,
        CqlValue::Int(_)
            | CqlValue::BigInt(_)
            | CqlValue::SmallInt(_)
            | CqlValue::TinyInt(_)
            | CqlValue::Counter(_)
            | CqlValue::Varint(_)
            | CqlValue::Decimal(_)
            | CqlValue::Float(_)
            | CqlValue::Double(_)
    )
}

/// Server-side DESCRIBE answers rows of (keyspace_name, type, name,
/// create_statement); print them as cqlsh does, else fall back to a table.
fn print_describe(headers: &[String], rows: &[Row]) {
    let col = |name: &str| headers.iter().position(|h| h == name);
    let (Some(ks), Some(kind), Some(name), Some(cql)) = (
        col("keyspace_name"),
        col("type"),
        col("name"),
        col("create_statement"),
    ) else {
        let cells: Vec<Vec<Cell>> = rows.iter().map(row_cells).collect();
        println!("\n{}\n", render::table(headers, &cells));
        return;
    };
    let text = |row: &Row, i: usize| match row.columns.get(i) {
        Some(Some(v)) => format::format_value(v, false),
        _ => String::new(),
    };
    let described: Vec<render::Described> = rows
        .iter()
        .map(|r| render::Described {
            keyspace: text(r, ks),
            kind: text(r, kind),
            name: text(r, name),
            create_statement: text(r, cql),
        })
        .collect();
    println!("{}", render::describe(&described));
}

/// `---MORE---`: Enter for the next page, `q` to stop.
fn wait_for_more() -> bool {
    print!("---MORE---");
    let _ = std::io::stdout().flush();
    let mut line = String::new();
    match std::io::stdin().read_line(&mut line) {
        Ok(0) | Err(_) => false,
        Ok(_) => !line.trim().eq_ignore_ascii_case("q"),
    }
}

/// The cqlsh name of a server error (its protocol error class).
fn db_error_name(e: &scylla::errors::DbError) -> &'static str {
    use scylla::errors::DbError as D;
    match e {
        D::SyntaxError => "SyntaxException",
        D::Invalid => "InvalidRequest",
        D::AlreadyExists { .. } => "AlreadyExists",
        D::FunctionFailure { .. } => "FunctionFailure",
        D::AuthenticationError => "AuthenticationFailed",
        D::Unauthorized => "Unauthorized",
        D::ConfigError => "ConfigurationException",
        D::Unavailable { .. } => "Unavailable",
        D::Overloaded => "Overloaded",
        D::IsBootstrapping => "IsBootstrapping",
        D::TruncateError => "TruncateError",
        D::ReadTimeout { .. } => "ReadTimeout",
        D::WriteTimeout { .. } => "WriteTimeout",
        D::ReadFailure { .. } => "ReadFailure",
        D::WriteFailure { .. } => "WriteFailure",
        D::Unprepared { .. } => "Unprepared",
        D::ServerError => "ServerError",
        D::ProtocolError => "ProtocolError",
        _ => "ServerError",
    }
}

fn print_attempt_error(e: &RequestAttemptError) {
    match e {
        RequestAttemptError::DbError(db, msg) => {
            eprintln!("{}: {msg}", db_error_name(db));
        }
        other => eprintln!("ConnectionError: {other}"),
    }
}

fn print_execution_error(e: &ExecutionError) {
    match e {
        ExecutionError::LastAttemptError(a) => print_attempt_error(a),
        ExecutionError::PrepareError(PrepareError::AllAttemptsFailed { first_attempt }) => {
            print_attempt_error(first_attempt)
        }
        ExecutionError::UseKeyspaceError(u) => print_use_error(u),
        ExecutionError::ConnectionPoolError(_) | ExecutionError::EmptyPlan => {
            eprintln!("ConnectionError: {e}")
        }
        ExecutionError::RequestTimeout(_) => eprintln!("ClientTimeout: {e}"),
        other => eprintln!("Error: {other}"),
    }
}

fn print_use_error(e: &UseKeyspaceError) {
    match e {
        UseKeyspaceError::RequestError(a) => print_attempt_error(a),
        other => eprintln!("InvalidRequest: {other}"),
    }
}

fn is_connection_lost_attempt(e: &RequestAttemptError) -> bool {
    matches!(
        e,
        RequestAttemptError::BrokenConnectionError(_) | RequestAttemptError::UnableToAllocStreamId
    )
}

fn is_connection_lost(e: &ExecutionError) -> bool {
    match e {
        ExecutionError::ConnectionPoolError(_) | ExecutionError::EmptyPlan => true,
        ExecutionError::LastAttemptError(a) => is_connection_lost_attempt(a),
        _ => false,
    }
}
