//! Authentication, roles and permissions, as Cassandra's
//! `PasswordAuthenticator`, `CassandraRoleManager` and
//! `CassandraAuthorizer` do them.
//!
//! Roles live in the built-in, replicated `system_auth` tables (`roles`,
//! `role_members`, `role_permissions`, Cassandra's columns), read and
//! written with ordinary CQL through this node's query processor and so
//! through the coordinator: QUORUM for the default superuser `cassandra`,
//! ONE for other roles, as Cassandra does. Passwords are stored as salted
//! bcrypt hashes (`$2a$`, work factor 10: Cassandra's default). A role's
//! row and its permissions are cached per node for
//! `auth.credentials_validity_ms` / `auth.permissions_validity_ms`, so a
//! change made through another node is seen here within that time.
//!
//! The CQL server asks [`PasswordAuthenticator`] to check each connection's
//! SASL PLAIN token; the CQL handler hands the role statements to
//! [`Auth::execute`] and every other statement to [`Auth::authorize`].

pub(crate) mod statements;

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::fmt;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use gyre_common::Consistency;
use gyre_cql::{Modification, Statement};
use gyre_protocol::{async_trait, ColumnType, Value};
use gyre_query::{QueryError, QueryParams, QueryProcessor, QueryResult};
use parking_lot::Mutex;
use tokio::sync::watch;
use tracing::{info, warn};

use crate::config::{AuthConfig, AuthenticatorKind, AuthorizerKind};
use statements::{AuthStatement, RoleOptions};

/// Whether a `Statement::Unsupported` kind is one [`Auth::execute`] runs.
pub(crate) fn is_auth_statement(kind: &str) -> bool {
    matches!(
        kind,
        "CREATE ROLE"
            | "CREATE USER"
            | "ALTER ROLE"
            | "ALTER USER"
            | "DROP ROLE"
            | "DROP USER"
            | "GRANT"
            | "REVOKE"
            | "LIST"
    )
}

/// The class AUTHENTICATE names (drivers pick their SASL mechanism by it).
pub const PASSWORD_AUTHENTICATOR: &str = "org.apache.cassandra.auth.PasswordAuthenticator";
/// The superuser a new cluster gets when it has no role at all.
pub const DEFAULT_SUPERUSER: &str = "cassandra";
/// bcrypt work factor (Cassandra's default `auth_bcrypt_gensalt_log2_rounds`).
pub const BCRYPT_COST: u32 = 10;

/// A permission, with Cassandra's names.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub(crate) enum Permission {
    Create,
    Alter,
    Drop,
    Select,
    Modify,
    Authorize,
    Describe,
}

impl Permission {
    pub(crate) const ALL: [Permission; 7] = [
        Permission::Create,
        Permission::Alter,
        Permission::Drop,
        Permission::Select,
        Permission::Modify,
        Permission::Authorize,
        Permission::Describe,
    ];

    pub(crate) fn parse(word: &str) -> Option<Permission> {
        Permission::ALL
            .into_iter()
            .find(|p| p.name().eq_ignore_ascii_case(word))
    }

    pub(crate) fn name(self) -> &'static str {
        match self {
            Permission::Create => "CREATE",
            Permission::Alter => "ALTER",
            Permission::Drop => "DROP",
            Permission::Select => "SELECT",
            Permission::Modify => "MODIFY",
            Permission::Authorize => "AUTHORIZE",
            Permission::Describe => "DESCRIBE",
        }
    }
}

/// What a permission is on, with Cassandra's resource names (`data/ks/t`,
/// `roles/r`) as stored in `role_permissions.resource`.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub(crate) enum Resource {
    AllKeyspaces,
    Keyspace(String),
    Table(String, String),
    AllRoles,
    Role(String),
}

impl Resource {
    pub(crate) fn name(&self) -> String {
        match self {
            Resource::AllKeyspaces => "data".into(),
            Resource::Keyspace(k) => format!("data/{k}"),
            Resource::Table(k, t) => format!("data/{k}/{t}"),
            Resource::AllRoles => "roles".into(),
            Resource::Role(r) => format!("roles/{r}"),
        }
    }

    fn from_name(name: &str) -> Option<Resource> {
        let mut parts = name.splitn(3, '/');
        Some(match (parts.next()?, parts.next(), parts.next()) {
            ("data", None, None) => Resource::AllKeyspaces,
            ("data", Some(k), None) => Resource::Keyspace(k.into()),
            ("data", Some(k), Some(t)) => Resource::Table(k.into(), t.into()),
            ("roles", None, None) => Resource::AllRoles,
            ("roles", Some(r), None) => Resource::Role(r.into()),
            _ => return None,
        })
    }

    fn parent(&self) -> Option<Resource> {
        match self {
            Resource::Table(k, _) => Some(Resource::Keyspace(k.clone())),
            Resource::Keyspace(_) => Some(Resource::AllKeyspaces),
            Resource::Role(_) => Some(Resource::AllRoles),
            Resource::AllKeyspaces | Resource::AllRoles => None,
        }
    }

    /// The permissions that mean something on this resource (Cassandra's
    /// `applicablePermissions`).
    fn applicable(&self) -> &'static [Permission] {
        use Permission::*;
        match self {
            Resource::AllKeyspaces | Resource::Keyspace(_) => {
                &[Create, Alter, Drop, Select, Modify, Authorize]
            }
            Resource::Table(..) => &[Alter, Drop, Select, Modify, Authorize],
            Resource::AllRoles => &[Create, Alter, Drop, Authorize, Describe],
            Resource::Role(_) => &[Alter, Drop, Authorize],
        }
    }

    fn kind_name(&self) -> &'static str {
        match self {
            Resource::AllKeyspaces | Resource::Keyspace(_) | Resource::Table(..) => "DataResource",
            Resource::AllRoles | Resource::Role(_) => "RoleResource",
        }
    }
}

impl fmt::Display for Resource {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Resource::AllKeyspaces => write!(f, "<all keyspaces>"),
            Resource::Keyspace(k) => write!(f, "<keyspace {k}>"),
            Resource::Table(k, t) => write!(f, "<table {k}.{t}>"),
            Resource::AllRoles => write!(f, "<all roles>"),
            Resource::Role(r) => write!(f, "<role {r}>"),
        }
    }
}

/// A row of `system_auth.roles`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct Role {
    pub name: String,
    pub can_login: bool,
    pub is_superuser: bool,
    pub member_of: BTreeSet<String>,
    pub salted_hash: Option<String>,
}

type Permissions = BTreeMap<Resource, BTreeSet<Permission>>;
/// A role looked up (or found missing) at an instant.
type CachedRole = (Instant, Option<Arc<Role>>);

/// The node's authentication and authorization state.
pub(crate) struct Auth {
    qp: Arc<QueryProcessor>,
    cfg: AuthConfig,
    roles: Mutex<HashMap<String, CachedRole>>,
    permissions: Mutex<HashMap<String, (Instant, Arc<Permissions>)>>,
    /// bcrypt checks running at once: one per core, so a flood of logins
    /// queues here instead of filling the blocking pool.
    hashing: tokio::sync::Semaphore,
}

impl fmt::Debug for Auth {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Auth").field("cfg", &self.cfg).finish()
    }
}

fn unauthorized(message: impl Into<String>) -> QueryError {
    QueryError::Unauthorized(message.into())
}

fn invalid(message: impl Into<String>) -> QueryError {
    QueryError::Invalid(message.into())
}

fn text(v: &str) -> Value {
    Value::Bytes(Bytes::copy_from_slice(v.as_bytes()))
}

fn boolean(v: bool) -> Value {
    Value::Bytes(Bytes::from(vec![u8::from(v)]))
}

fn text_set(items: &[&str]) -> Value {
    let mut b = Vec::new();
    b.extend_from_slice(&(items.len() as i32).to_be_bytes());
    for i in items {
        b.extend_from_slice(&(i.len() as i32).to_be_bytes());
        b.extend_from_slice(i.as_bytes());
    }
    Value::Bytes(Bytes::from(b))
}

fn decode_text(v: &Option<Bytes>) -> Option<String> {
    v.as_ref().map(|b| String::from_utf8_lossy(b).into_owned())
}

fn decode_bool(v: &Option<Bytes>) -> bool {
    v.as_ref()
        .is_some_and(|b| b.first().is_some_and(|x| *x != 0))
}

/// A `set<text>` cell (v3+ encoding: int count, then int length + bytes).
fn decode_text_set(v: &Option<Bytes>) -> BTreeSet<String> {
    let mut out = BTreeSet::new();
    let Some(b) = v else { return out };
    let int = |at: usize| -> Option<usize> {
        let s = b.get(at..at + 4)?;
        usize::try_from(i32::from_be_bytes([s[0], s[1], s[2], s[3]])).ok()
    };
    let Some(n) = int(0) else { return out };
    let mut at = 4;
    for _ in 0..n {
        let Some(len) = int(at) else { break };
        let Some(item) = b.get(at + 4..at + 4 + len) else {
            break;
        };
        out.insert(String::from_utf8_lossy(item).into_owned());
        at += 4 + len;
    }
    out
}

fn rows_of(r: QueryResult) -> Vec<Vec<Option<Bytes>>> {
    match r {
        QueryResult::Rows { rows, .. } => rows,
        _ => Vec::new(),
    }
}

/// Cassandra's `consistencyForRole`.
fn consistency_for(role: &str) -> Consistency {
    if role == DEFAULT_SUPERUSER {
        Consistency::Quorum
    } else {
        Consistency::One
    }
}

/// Splits a SASL PLAIN token (`[authzid] NUL authcid NUL password`), as
/// Cassandra's `PlainTextSaslAuthenticator.decodeCredentials`.
fn decode_plain(token: &[u8]) -> Result<(String, String), String> {
    let mut parts = token.rsplitn(3, |b| *b == 0);
    let password = parts.next().filter(|p| !p.is_empty());
    let user = parts.next().filter(|u| !u.is_empty());
    let Some(password) = password else {
        return Err("Password must not be null".into());
    };
    let Some(user) = user else {
        return Err("Authentication ID must not be null".into());
    };
    Ok((
        String::from_utf8_lossy(user).into_owned(),
        String::from_utf8_lossy(password).into_owned(),
    ))
}

/// A bcrypt hash (`$2a$`, like jBCrypt's, which Cassandra stores).
fn hash_password(password: &str) -> Result<String, QueryError> {
    bcrypt::hash_with_result(password, BCRYPT_COST)
        .map(|h| h.format_for_version(bcrypt::Version::TwoA))
        .map_err(|e| QueryError::Server(format!("hashing the password failed: {e}")))
}

impl Auth {
    pub(crate) fn new(qp: Arc<QueryProcessor>, cfg: AuthConfig) -> Self {
        Auth {
            qp,
            cfg,
            roles: Mutex::new(HashMap::new()),
            permissions: Mutex::new(HashMap::new()),
            hashing: tokio::sync::Semaphore::new(
                std::thread::available_parallelism().map_or(2, |n| n.get()),
            ),
        }
    }

    pub(crate) fn authenticating(&self) -> bool {
        self.cfg.authenticator == AuthenticatorKind::PasswordAuthenticator
    }

    fn authorizing(&self) -> bool {
        self.cfg.authorizer == AuthorizerKind::CassandraAuthorizer
    }

    /// One internal statement through the query processor (and so the
    /// coordinator).
    async fn query(
        &self,
        cql: &str,
        values: Vec<Value>,
        consistency: Consistency,
    ) -> Result<QueryResult, QueryError> {
        let params = QueryParams {
            values,
            consistency,
            ..QueryParams::default()
        };
        self.qp.execute(cql, &params).await
    }

    /// Reads a role's row, uncached.
    async fn read_role(&self, name: &str) -> Result<Option<Role>, QueryError> {
        let rows = rows_of(
            self.query(
                "SELECT role, can_login, is_superuser, member_of, salted_hash \
                 FROM system_auth.roles WHERE role = ?",
                vec![text(name)],
                consistency_for(name),
            )
            .await?,
        );
        Ok(rows.into_iter().next().map(|r| Role {
            name: name.to_owned(),
            can_login: decode_bool(&r[1]),
            is_superuser: decode_bool(&r[2]),
            member_of: decode_text_set(&r[3]),
            salted_hash: decode_text(&r[4]),
        }))
    }

    /// A role, from the cache while it is valid.
    async fn role(&self, name: &str) -> Result<Option<Arc<Role>>, QueryError> {
        let validity = Duration::from_millis(self.cfg.credentials_validity_ms);
        if let Some((at, r)) = self.roles.lock().get(name) {
            if at.elapsed() < validity {
                return Ok(r.clone());
            }
        }
        let r = self.read_role(name).await?.map(Arc::new);
        let mut cache = self.roles.lock();
        // Bounded: a client trying many names cannot grow it without end.
        if cache.len() >= 10_000 {
            cache.retain(|_, (at, _)| at.elapsed() < validity);
            if cache.len() >= 10_000 {
                cache.clear();
            }
        }
        cache.insert(name.to_owned(), (Instant::now(), r.clone()));
        Ok(r)
    }

    /// After a change made through this node: forget what it cached (other
    /// nodes see it when their entries expire).
    fn invalidate(&self) {
        self.roles.lock().clear();
        self.permissions.lock().clear();
    }

    async fn require_role(&self, name: &str) -> Result<Arc<Role>, QueryError> {
        self.role(name)
            .await?
            .ok_or_else(|| invalid(format!("{name} doesn't exist")))
    }

    /// Checks a username and password; `Ok` is the role logged in.
    pub(crate) async fn login(&self, user: &str, password: &str) -> Result<String, String> {
        let incorrect = || format!("Provided username {user} and/or password are incorrect");
        let role = self
            .role(user)
            .await
            .map_err(|e| format!("Unable to perform authentication: {e}"))?;
        let Some(role) = role else {
            return Err(incorrect());
        };
        let Some(hash) = role.salted_hash.clone() else {
            return Err(incorrect());
        };
        let password = password.to_owned();
        let _permit = self
            .hashing
            .acquire()
            .await
            .map_err(|e| format!("Unable to perform authentication: {e}"))?;
        // bcrypt takes tens of milliseconds by design: off the async workers.
        let ok = tokio::task::spawn_blocking(move || bcrypt::verify(password, &hash))
            .await
            .map_err(|e| format!("Unable to perform authentication: {e}"))?
            .unwrap_or(false);
        if !ok {
            return Err(incorrect());
        }
        if !role.can_login {
            return Err(format!("{user} is not permitted to log in"));
        }
        Ok(role.name.clone())
    }

    /// Creates the default superuser `cassandra`/`cassandra` once the
    /// cluster has no role at all, after `superuser_setup_delay_ms`
    /// (retrying while the cluster cannot answer at QUORUM). Written at
    /// timestamp 0, as Cassandra does, so that any real change to it wins
    /// and nodes doing it at once converge.
    pub(crate) async fn setup_default_superuser(self: Arc<Self>, mut stop: watch::Receiver<bool>) {
        let mut delay = Duration::from_millis(self.cfg.superuser_setup_delay_ms);
        loop {
            tokio::select! {
                _ = tokio::time::sleep(delay) => {}
                _ = stop.changed() => return,
            }
            match self.create_default_superuser().await {
                Ok(()) => return,
                Err(e) => {
                    info!(error = %e, "default superuser setup: will retry");
                    delay = Duration::from_secs(1);
                }
            }
        }
    }

    async fn create_default_superuser(&self) -> Result<(), QueryError> {
        let exists = !rows_of(
            self.query(
                "SELECT role FROM system_auth.roles LIMIT 1",
                vec![],
                Consistency::Quorum,
            )
            .await?,
        )
        .is_empty();
        if exists {
            return Ok(());
        }
        let hash = tokio::task::spawn_blocking(|| hash_password(DEFAULT_SUPERUSER))
            .await
            .map_err(|e| QueryError::Server(e.to_string()))??;
        self.query(
            "INSERT INTO system_auth.roles (role, is_superuser, can_login, salted_hash) \
             VALUES (?, true, true, ?) USING TIMESTAMP 0",
            vec![text(DEFAULT_SUPERUSER), text(&hash)],
            Consistency::Quorum,
        )
        .await?;
        warn!(
            "created the default superuser role '{DEFAULT_SUPERUSER}' (password \
             '{DEFAULT_SUPERUSER}'): create your own superuser and drop it, or at least \
             change its password"
        );
        Ok(())
    }

    /// The names of [`Self::granted_roles`].
    async fn granted_role_names<T: FromIterator<String>>(
        &self,
        role: &Role,
    ) -> Result<T, QueryError> {
        let roles = self.granted_roles(role).await?;
        Ok(roles.iter().map(|g| g.name.clone()).collect())
    }

    /// Whether `me` holds the role `name` (itself or through grants).
    async fn holds_role(&self, me: &Role, name: &str) -> Result<bool, QueryError> {
        Ok(self.granted_roles(me).await?.iter().any(|g| g.name == name))
    }

    /// The roles `role` holds, itself included, through grants (Cassandra's
    /// `getRoles(role, true)`).
    async fn granted_roles(&self, role: &Role) -> Result<Vec<Arc<Role>>, QueryError> {
        let mut seen = BTreeSet::from([role.name.clone()]);
        let mut out = vec![Arc::new(role.clone())];
        let mut todo: Vec<String> = role.member_of.iter().cloned().collect();
        while let Some(name) = todo.pop() {
            if !seen.insert(name.clone()) {
                continue;
            }
            if let Some(r) = self.role(&name).await? {
                todo.extend(r.member_of.iter().cloned());
                out.push(r);
            }
        }
        Ok(out)
    }

    async fn is_super(&self, role: &Role) -> Result<bool, QueryError> {
        Ok(self
            .granted_roles(role)
            .await?
            .iter()
            .any(|r| r.is_superuser))
    }

    /// A role's own grants (`role_permissions` rows), cached.
    async fn own_permissions(&self, role: &str) -> Result<Arc<Permissions>, QueryError> {
        let validity = Duration::from_millis(self.cfg.permissions_validity_ms);
        if let Some((at, p)) = self.permissions.lock().get(role) {
            if at.elapsed() < validity {
                return Ok(p.clone());
            }
        }
        let rows = rows_of(
            self.query(
                "SELECT resource, permissions FROM system_auth.role_permissions WHERE role = ?",
                vec![text(role)],
                Consistency::One,
            )
            .await?,
        );
        let mut perms = Permissions::new();
        for r in rows {
            let Some(resource) = decode_text(&r[0]).as_deref().and_then(Resource::from_name) else {
                continue;
            };
            let set = decode_text_set(&r[1])
                .iter()
                .filter_map(|p| Permission::parse(p))
                .collect();
            perms.insert(resource, set);
        }
        let perms = Arc::new(perms);
        let mut cache = self.permissions.lock();
        if cache.len() >= 10_000 {
            cache.clear();
        }
        cache.insert(role.to_owned(), (Instant::now(), perms.clone()));
        Ok(perms)
    }

    /// The logged-in role, or Cassandra's refusal for an anonymous one.
    async fn current(&self, user: Option<&str>) -> Result<Arc<Role>, QueryError> {
        let Some(user) = user else {
            return Err(unauthorized("You have not logged in"));
        };
        self.role(user)
            .await?
            .ok_or_else(|| unauthorized(format!("User {user} doesn't exist")))
    }

    /// Whether `user` holds `perm` on `resource` or one of its parents.
    async fn has_permission(
        &self,
        user: &Role,
        perm: Permission,
        resource: &Resource,
    ) -> Result<bool, QueryError> {
        if !self.authorizing() {
            return Ok(true);
        }
        let roles = self.granted_roles(user).await?;
        if roles.iter().any(|r| r.is_superuser) {
            return Ok(true);
        }
        for r in &roles {
            let perms = self.own_permissions(&r.name).await?;
            let mut at = Some(resource.clone());
            while let Some(res) = at {
                if perms.get(&res).is_some_and(|s| s.contains(&perm)) {
                    return Ok(true);
                }
                at = res.parent();
            }
        }
        Ok(false)
    }

    async fn ensure(
        &self,
        user: &Role,
        perm: Permission,
        resource: &Resource,
    ) -> Result<(), QueryError> {
        if self.has_permission(user, perm, resource).await? {
            Ok(())
        } else {
            Err(unauthorized(format!(
                "User {} has no {} permission on {resource} or any of its parents",
                user.name,
                perm.name()
            )))
        }
    }

    /// Checks that the connection's role may run `statement` (with
    /// `CassandraAuthorizer`; everything passes with `AllowAll`). SELECTs
    /// of `system`, `system_schema` and `system_virtual_schema`, which
    /// drivers read, always pass.
    pub(crate) async fn authorize(
        &self,
        user: Option<&str>,
        statement: &Statement,
        keyspace: Option<&str>,
    ) -> Result<(), QueryError> {
        if !self.authorizing() {
            return Ok(());
        }
        let ks = |q: &gyre_cql::QualifiedName| -> Result<String, QueryError> {
            q.keyspace
                .clone()
                .or_else(|| keyspace.map(str::to_owned))
                .ok_or_else(|| {
                    invalid("No keyspace has been specified. USE a keyspace, or explicitly specify keyspace.tablename")
                })
        };
        let table = |q: &gyre_cql::QualifiedName| -> Result<Resource, QueryError> {
            Ok(Resource::Table(ks(q)?, q.name.clone()))
        };
        let mut checks: Vec<(Permission, Resource)> = Vec::new();
        match statement {
            Statement::Select(s) => {
                // The node's own tables, which drivers read on connect.
                if crate::system_tables::is_virtual_keyspace(&ks(&s.table)?) {
                    return Ok(());
                }
                checks.push((Permission::Select, table(&s.table)?));
            }
            Statement::Insert(i) => checks.push((Permission::Modify, table(&i.table)?)),
            Statement::Update(u) => checks.push((Permission::Modify, table(&u.table)?)),
            Statement::Delete(d) => checks.push((Permission::Modify, table(&d.table)?)),
            Statement::Batch(b) => {
                for m in &b.statements {
                    let t = match m {
                        Modification::Insert(i) => &i.table,
                        Modification::Update(u) => &u.table,
                        Modification::Delete(d) => &d.table,
                    };
                    let r = table(t)?;
                    if !checks.iter().any(|(_, x)| *x == r) {
                        checks.push((Permission::Modify, r));
                    }
                }
            }
            Statement::Truncate(q) => checks.push((Permission::Modify, table(q)?)),
            Statement::CreateKeyspace(_) => {
                checks.push((Permission::Create, Resource::AllKeyspaces));
            }
            Statement::AlterKeyspace(a) => {
                checks.push((Permission::Alter, Resource::Keyspace(a.name.clone())));
            }
            Statement::DropKeyspace { name, .. } => {
                checks.push((Permission::Drop, Resource::Keyspace(name.clone())));
            }
            Statement::CreateTable(c) => {
                checks.push((Permission::Create, Resource::Keyspace(ks(&c.name)?)));
            }
            Statement::AlterTable(a) => checks.push((Permission::Alter, table(&a.name)?)),
            Statement::DropTable { name, .. } => checks.push((Permission::Drop, table(name)?)),
            // Cassandra: an index is a change to its table (ALTER on it).
            Statement::CreateIndex(c) => checks.push((Permission::Alter, table(&c.table)?)),
            // The index's table is not named here; ALTER on its keyspace.
            Statement::DropIndex { name, .. } => {
                checks.push((Permission::Alter, Resource::Keyspace(ks(name)?)));
            }
            // Cassandra: CREATE / DROP on all tables of the keyspace,
            // ALTER on the keyspace.
            Statement::CreateType(c) => {
                checks.push((Permission::Create, Resource::Keyspace(ks(&c.name)?)));
            }
            Statement::AlterType(a) => {
                checks.push((Permission::Alter, Resource::Keyspace(ks(&a.name)?)));
            }
            Statement::DropType { name, .. } => {
                checks.push((Permission::Drop, Resource::Keyspace(ks(name)?)));
            }
            Statement::Use(_) | Statement::Describe(_) | Statement::Unsupported { .. } => {}
        }
        if checks.is_empty() {
            return Ok(());
        }
        let me = self.current(user).await?;
        for (perm, resource) in &checks {
            self.ensure(&me, *perm, resource).await?;
        }
        Ok(())
    }

    /// After a successful CREATE KEYSPACE or CREATE TABLE: its creator gets
    /// every permission on it, as with Cassandra.
    pub(crate) async fn grant_to_creator(
        &self,
        user: Option<&str>,
        statement: &Statement,
        keyspace: Option<&str>,
    ) -> Result<(), QueryError> {
        if !self.authorizing() {
            return Ok(());
        }
        let Some(user) = user else { return Ok(()) };
        let resource = match statement {
            Statement::CreateKeyspace(c) => Resource::Keyspace(c.name.clone()),
            Statement::CreateTable(c) => {
                let Some(k) = c.name.keyspace.as_deref().or(keyspace) else {
                    return Ok(());
                };
                Resource::Table(k.to_owned(), c.name.name.clone())
            }
            _ => return Ok(()),
        };
        let perms = resource.applicable().to_vec();
        self.write_grant(user, &perms, &resource, true).await
    }

    /// Deletes every grant on `resource` (and, for a keyspace, on its
    /// tables): after the role, keyspace or table is dropped. Scans
    /// `role_permissions`, which holds one row per role and resource.
    async fn revoke_all_on(&self, resource: &Resource) -> Result<(), QueryError> {
        let name = resource.name();
        let nested = format!("{name}/");
        let rows = rows_of(
            self.query(
                "SELECT role, resource FROM system_auth.role_permissions",
                vec![],
                Consistency::One,
            )
            .await?,
        );
        for r in rows {
            let (Some(role), Some(res)) = (decode_text(&r[0]), decode_text(&r[1])) else {
                continue;
            };
            if res == name || res.starts_with(&nested) {
                self.query(
                    "DELETE FROM system_auth.role_permissions WHERE role = ? AND resource = ?",
                    vec![text(&role), text(&res)],
                    Consistency::One,
                )
                .await?;
            }
        }
        self.invalidate();
        Ok(())
    }

    /// After a successful DROP KEYSPACE or DROP TABLE: the grants on it go.
    pub(crate) async fn revoke_on_drop(
        &self,
        statement: &Statement,
        keyspace: Option<&str>,
    ) -> Result<(), QueryError> {
        if !self.authorizing() {
            return Ok(());
        }
        let resource = match statement {
            Statement::DropKeyspace { name, .. } => Resource::Keyspace(name.clone()),
            Statement::DropTable { name, .. } => {
                let Some(k) = name.keyspace.as_deref().or(keyspace) else {
                    return Ok(());
                };
                Resource::Table(k.to_owned(), name.name.clone())
            }
            _ => return Ok(()),
        };
        self.revoke_all_on(&resource).await
    }

    async fn write_grant(
        &self,
        role: &str,
        perms: &[Permission],
        resource: &Resource,
        grant: bool,
    ) -> Result<(), QueryError> {
        let names: Vec<&str> = perms.iter().map(|p| p.name()).collect();
        let op = if grant { "+" } else { "-" };
        self.query(
            &format!(
                "UPDATE system_auth.role_permissions SET permissions = permissions {op} ? \
                 WHERE role = ? AND resource = ?"
            ),
            vec![text_set(&names), text(role), text(&resource.name())],
            Consistency::One,
        )
        .await?;
        self.invalidate();
        Ok(())
    }

    /// Runs a role or permission statement for the connection's role.
    pub(crate) async fn execute(
        &self,
        user: Option<&str>,
        query: &str,
        keyspace: Option<&str>,
    ) -> Result<QueryResult, QueryError> {
        let stmt = statements::parse(query, keyspace)
            .map_err(|m| QueryError::Syntax(format!("line 1:0 {m}")))?;
        let me = self.current(user).await?;
        let result = self.run(&me, stmt).await;
        self.invalidate();
        result
    }

    async fn run(&self, me: &Role, stmt: AuthStatement) -> Result<QueryResult, QueryError> {
        match stmt {
            AuthStatement::CreateRole {
                name,
                if_not_exists,
                options,
            } => self.create_role(me, &name, if_not_exists, options).await,
            AuthStatement::AlterRole {
                name,
                if_exists,
                options,
            } => self.alter_role(me, &name, if_exists, options).await,
            AuthStatement::DropRole { name, if_exists } => {
                self.drop_role(me, &name, if_exists).await
            }
            AuthStatement::GrantRole { role, grantee } => {
                self.grant_role(me, &role, &grantee).await
            }
            AuthStatement::RevokeRole { role, revokee } => {
                self.revoke_role(me, &role, &revokee).await
            }
            AuthStatement::ListRoles { of, recursive } => {
                self.list_roles(me, of.as_deref(), recursive, false).await
            }
            AuthStatement::ListUsers => self.list_roles(me, None, true, true).await,
            AuthStatement::GrantPermissions {
                permissions,
                resource,
                grantee,
            } => {
                self.grant_permissions(me, &permissions, &resource, &grantee, true)
                    .await
            }
            AuthStatement::RevokePermissions {
                permissions,
                resource,
                revokee,
            } => {
                self.grant_permissions(me, &permissions, &resource, &revokee, false)
                    .await
            }
            AuthStatement::ListPermissions {
                permissions,
                resource,
                of,
                recursive,
            } => {
                self.list_permissions(
                    me,
                    &permissions,
                    resource.as_ref(),
                    of.as_deref(),
                    recursive,
                )
                .await
            }
        }
    }

    async fn create_role(
        &self,
        me: &Role,
        name: &str,
        if_not_exists: bool,
        options: RoleOptions,
    ) -> Result<QueryResult, QueryError> {
        self.ensure(me, Permission::Create, &Resource::AllRoles)
            .await?;
        if options.superuser == Some(true) && !self.is_super(me).await? {
            return Err(unauthorized(
                "Only superusers can create a role with superuser status",
            ));
        }
        if name.is_empty() {
            return Err(invalid("Role name can't be an empty string"));
        }
        if self.read_role(name).await?.is_some() {
            if if_not_exists {
                return Ok(QueryResult::Void);
            }
            return Err(invalid(format!("{name} already exists")));
        }
        let hash = match options.password {
            Some(p) => Some(
                tokio::task::spawn_blocking(move || hash_password(&p))
                    .await
                    .map_err(|e| QueryError::Server(e.to_string()))??,
            ),
            None => None,
        };
        self.query(
            "INSERT INTO system_auth.roles (role, is_superuser, can_login, salted_hash) \
             VALUES (?, ?, ?, ?)",
            vec![
                text(name),
                boolean(options.superuser.unwrap_or(false)),
                boolean(options.login.unwrap_or(false)),
                hash.as_deref().map_or(Value::Null, text),
            ],
            consistency_for(name),
        )
        .await?;
        // The creator gets every permission on the new role (Cassandra).
        if self.authorizing() {
            let r = Resource::Role(name.to_owned());
            self.write_grant(&me.name, r.applicable(), &r, true).await?;
        }
        Ok(QueryResult::Void)
    }

    async fn alter_role(
        &self,
        me: &Role,
        name: &str,
        if_exists: bool,
        options: RoleOptions,
    ) -> Result<QueryResult, QueryError> {
        if options.is_empty() {
            return Err(invalid("ALTER [ROLE|USER] can't be empty"));
        }
        let Some(target) = self.read_role(name).await? else {
            if if_exists {
                return Ok(QueryResult::Void);
            }
            return Err(invalid(format!("{name} doesn't exist")));
        };
        let me_super = self.is_super(me).await?;
        if options.superuser.is_some() {
            if !me_super {
                return Err(unauthorized(
                    "Only superusers are allowed to alter superuser status",
                ));
            }
            let mine = self.granted_roles(me).await?;
            if mine.iter().any(|r| r.name == target.name) {
                return Err(unauthorized(
                    "You aren't allowed to alter your own superuser status or that of a role granted to you",
                ));
            }
        }
        // Anyone may change their own password; the rest takes ALTER on
        // the role (Cassandra's AlterRoleStatement.checkAccess).
        let own_password_only = me.name == target.name
            && options.login.is_none()
            && options.superuser.is_none()
            && options.options.is_none();
        if !own_password_only {
            if target.is_superuser && !me_super {
                return Err(unauthorized(
                    "Only superusers are allowed to alter superuser roles",
                ));
            }
            self.ensure(me, Permission::Alter, &Resource::Role(name.to_owned()))
                .await?;
        }
        let mut sets = Vec::new();
        let mut values = Vec::new();
        if let Some(p) = options.password {
            let hash = tokio::task::spawn_blocking(move || hash_password(&p))
                .await
                .map_err(|e| QueryError::Server(e.to_string()))??;
            sets.push("salted_hash = ?");
            values.push(text(&hash));
        }
        if let Some(l) = options.login {
            sets.push("can_login = ?");
            values.push(boolean(l));
        }
        if let Some(s) = options.superuser {
            sets.push("is_superuser = ?");
            values.push(boolean(s));
        }
        if !sets.is_empty() {
            values.push(text(name));
            self.query(
                &format!(
                    "UPDATE system_auth.roles SET {} WHERE role = ?",
                    sets.join(", ")
                ),
                values,
                consistency_for(name),
            )
            .await?;
        }
        Ok(QueryResult::Void)
    }

    async fn drop_role(
        &self,
        me: &Role,
        name: &str,
        if_exists: bool,
    ) -> Result<QueryResult, QueryError> {
        if me.name == name {
            return Err(invalid("Cannot DROP primary role for current login"));
        }
        self.ensure(me, Permission::Drop, &Resource::Role(name.to_owned()))
            .await?;
        let Some(target) = self.read_role(name).await? else {
            if if_exists {
                return Ok(QueryResult::Void);
            }
            return Err(invalid(format!("{name} doesn't exist")));
        };
        if target.is_superuser && !self.is_super(me).await? {
            return Err(unauthorized(
                "Only superusers can drop a role with superuser status",
            ));
        }
        // Its memberships both ways, then the role and its permissions.
        for granted in &target.member_of {
            self.query(
                "DELETE FROM system_auth.role_members WHERE role = ? AND member = ?",
                vec![text(granted), text(name)],
                consistency_for(granted),
            )
            .await?;
        }
        let members = rows_of(
            self.query(
                "SELECT member FROM system_auth.role_members WHERE role = ?",
                vec![text(name)],
                consistency_for(name),
            )
            .await?,
        );
        for m in members.iter().filter_map(|r| decode_text(&r[0])) {
            self.query(
                "UPDATE system_auth.roles SET member_of = member_of - ? WHERE role = ?",
                vec![text_set(&[name]), text(&m)],
                consistency_for(&m),
            )
            .await?;
        }
        for cql in [
            "DELETE FROM system_auth.role_members WHERE role = ?",
            "DELETE FROM system_auth.role_permissions WHERE role = ?",
            "DELETE FROM system_auth.roles WHERE role = ?",
        ] {
            self.query(cql, vec![text(name)], consistency_for(name))
                .await?;
        }
        // Nobody keeps permissions on it (a new role of that name starts
        // clean), as Cassandra's authorizer.revokeAllOn.
        self.revoke_all_on(&Resource::Role(name.to_owned())).await?;
        Ok(QueryResult::Void)
    }

    async fn grant_role(
        &self,
        me: &Role,
        role: &str,
        grantee: &str,
    ) -> Result<QueryResult, QueryError> {
        self.ensure(me, Permission::Authorize, &Resource::Role(role.to_owned()))
            .await?;
        let granted = self.require_role(role).await?;
        let to = self.require_role(grantee).await?;
        if granted.is_superuser && !self.is_super(me).await? {
            return Err(unauthorized(
                "Only superusers can grant a role with superuser status",
            ));
        }
        if to.member_of.contains(role) {
            return Err(invalid(format!("{grantee} is a member of {role}")));
        }
        // No cycles: the granted role must not already hold the grantee.
        if grantee == role
            || self
                .granted_roles(&granted)
                .await?
                .iter()
                .any(|r| r.name == grantee)
        {
            return Err(invalid(format!("{role} is a member of {grantee}")));
        }
        self.query(
            "UPDATE system_auth.roles SET member_of = member_of + ? WHERE role = ?",
            vec![text_set(&[role]), text(grantee)],
            consistency_for(grantee),
        )
        .await?;
        self.query(
            "INSERT INTO system_auth.role_members (role, member) VALUES (?, ?)",
            vec![text(role), text(grantee)],
            consistency_for(role),
        )
        .await?;
        Ok(QueryResult::Void)
    }

    async fn revoke_role(
        &self,
        me: &Role,
        role: &str,
        revokee: &str,
    ) -> Result<QueryResult, QueryError> {
        self.ensure(me, Permission::Authorize, &Resource::Role(role.to_owned()))
            .await?;
        self.require_role(role).await?;
        let from = self.require_role(revokee).await?;
        if !from.member_of.contains(role) {
            return Err(invalid(format!("{revokee} is not a member of {role}")));
        }
        self.query(
            "UPDATE system_auth.roles SET member_of = member_of - ? WHERE role = ?",
            vec![text_set(&[role]), text(revokee)],
            consistency_for(revokee),
        )
        .await?;
        self.query(
            "DELETE FROM system_auth.role_members WHERE role = ? AND member = ?",
            vec![text(role), text(revokee)],
            consistency_for(role),
        )
        .await?;
        Ok(QueryResult::Void)
    }

    /// LIST ROLES (`role`, `super`, `login`, `options`) or LIST USERS
    /// (`name`, `super`: the roles that can log in).
    async fn list_roles(
        &self,
        me: &Role,
        of: Option<&str>,
        recursive: bool,
        users: bool,
    ) -> Result<QueryResult, QueryError> {
        let may_describe = self
            .has_permission(me, Permission::Describe, &Resource::AllRoles)
            .await?;
        let names: BTreeSet<String> = match of {
            Some(r) => {
                let role = self.require_role(r).await?;
                if !may_describe && !self.holds_role(me, &role.name).await? {
                    return Err(unauthorized(format!(
                        "You are not authorized to view roles granted to {r} "
                    )));
                }
                if recursive {
                    self.granted_role_names(&role).await?
                } else {
                    let mut s = role.member_of.clone();
                    s.insert(role.name.clone());
                    s
                }
            }
            None if may_describe => rows_of(
                self.query(
                    "SELECT role FROM system_auth.roles",
                    vec![],
                    Consistency::Quorum,
                )
                .await?,
            )
            .iter()
            .filter_map(|r| decode_text(&r[0]))
            .collect(),
            // Without DESCRIBE on all roles: the roles one holds.
            None => self.granted_role_names(me).await?,
        };
        let mut rows = Vec::new();
        for n in names {
            let Some(r) = self.read_role(&n).await? else {
                continue;
            };
            if users {
                if r.can_login {
                    rows.push(vec![
                        Some(Bytes::from(n.into_bytes())),
                        Some(Bytes::from(vec![u8::from(r.is_superuser)])),
                    ]);
                }
            } else {
                rows.push(vec![
                    Some(Bytes::from(n.into_bytes())),
                    Some(Bytes::from(vec![u8::from(r.is_superuser)])),
                    Some(Bytes::from(vec![u8::from(r.can_login)])),
                    // An empty map<text, text>.
                    Some(Bytes::from_static(&[0, 0, 0, 0])),
                ]);
            }
        }
        let columns = if users {
            vec![
                ("name".into(), ColumnType::Varchar),
                ("super".into(), ColumnType::Boolean),
            ]
        } else {
            vec![
                ("role".into(), ColumnType::Varchar),
                ("super".into(), ColumnType::Boolean),
                ("login".into(), ColumnType::Boolean),
                (
                    "options".into(),
                    ColumnType::Map(Box::new(ColumnType::Varchar), Box::new(ColumnType::Varchar)),
                ),
            ]
        };
        Ok(QueryResult::Rows {
            columns,
            rows,
            paging_state: None,
        })
    }

    async fn check_resource_exists(&self, resource: &Resource) -> Result<(), QueryError> {
        let schema = self.qp.schema();
        match resource {
            Resource::Keyspace(k) if schema.keyspace(k).is_none() => {
                Err(invalid(format!("{resource} doesn't exist")))
            }
            Resource::Table(k, t) if schema.table(k, t).is_none() => {
                Err(invalid(format!("{resource} doesn't exist")))
            }
            Resource::Role(r) if self.read_role(r).await?.is_none() => {
                Err(invalid(format!("{resource} doesn't exist")))
            }
            _ => Ok(()),
        }
    }

    async fn grant_permissions(
        &self,
        me: &Role,
        permissions: &[Permission],
        resource: &Resource,
        role: &str,
        grant: bool,
    ) -> Result<QueryResult, QueryError> {
        self.check_resource_exists(resource).await?;
        // ALL means those that apply; a named one must apply.
        let perms: Vec<Permission> = if permissions.len() == Permission::ALL.len() {
            resource.applicable().to_vec()
        } else {
            let bad: Vec<&str> = permissions
                .iter()
                .filter(|p| !resource.applicable().contains(p))
                .map(|p| p.name())
                .collect();
            if !bad.is_empty() {
                return Err(invalid(format!(
                    "Resource type {} does not support any of the requested permissions",
                    resource.kind_name()
                )));
            }
            permissions.to_vec()
        };
        // Cassandra: AUTHORIZE on the resource, and the granter must hold
        // what it grants.
        self.ensure(me, Permission::Authorize, resource).await?;
        for p in &perms {
            self.ensure(me, *p, resource).await?;
        }
        if !self.authorizing() {
            return Err(invalid(
                "GRANT/REVOKE of permissions needs auth.authorizer = \"CassandraAuthorizer\"",
            ));
        }
        self.require_role(role).await?;
        self.write_grant(role, &perms, resource, grant).await?;
        Ok(QueryResult::Void)
    }

    async fn list_permissions(
        &self,
        me: &Role,
        permissions: &[Permission],
        resource: Option<&Resource>,
        of: Option<&str>,
        recursive: bool,
    ) -> Result<QueryResult, QueryError> {
        if !self.authorizing() {
            return Err(invalid(
                "LIST PERMISSIONS needs auth.authorizer = \"CassandraAuthorizer\"",
            ));
        }
        if let Some(r) = resource {
            self.check_resource_exists(r).await?;
        }
        let me_super = self.is_super(me).await?;
        let roles: Vec<String> = match of {
            Some(r) => {
                let role = self.require_role(r).await?;
                if !me_super && !self.holds_role(me, &role.name).await? {
                    return Err(unauthorized(format!(
                        "You are not authorized to view {r}'s permissions"
                    )));
                }
                if recursive {
                    self.granted_role_names(&role).await?
                } else {
                    vec![role.name.clone()]
                }
            }
            None if me_super => rows_of(
                self.query(
                    "SELECT role FROM system_auth.roles",
                    vec![],
                    Consistency::Quorum,
                )
                .await?,
            )
            .iter()
            .filter_map(|r| decode_text(&r[0]))
            .collect(),
            None => self.granted_role_names(me).await?,
        };
        // The resource and, recursively, its parents (Cassandra lists the
        // grants that apply to it).
        let wanted: Option<Vec<Resource>> = resource.map(|r| {
            let mut v = vec![r.clone()];
            if recursive {
                let mut at = r.parent();
                while let Some(p) = at {
                    at = p.parent();
                    v.push(p);
                }
            }
            v
        });
        let mut rows = Vec::new();
        for role in roles {
            let perms = self.own_permissions(&role).await?;
            for (res, set) in perms.iter() {
                if wanted.as_ref().is_some_and(|w| !w.contains(res)) {
                    continue;
                }
                for p in set.iter().filter(|p| permissions.contains(p)) {
                    rows.push(vec![
                        Some(Bytes::from(role.clone().into_bytes())),
                        Some(Bytes::from(role.clone().into_bytes())),
                        Some(Bytes::from(res.to_string().into_bytes())),
                        Some(Bytes::from(p.name().as_bytes().to_vec())),
                    ]);
                }
            }
        }
        Ok(QueryResult::Rows {
            columns: vec![
                ("role".into(), ColumnType::Varchar),
                ("username".into(), ColumnType::Varchar),
                ("resource".into(), ColumnType::Varchar),
                ("permission".into(), ColumnType::Varchar),
            ],
            rows,
            paging_state: None,
        })
    }
}

/// The CQL server's view of [`Auth`]: checks SASL PLAIN tokens.
#[derive(Debug)]
pub(crate) struct PasswordAuthenticator(pub Arc<Auth>);

#[async_trait]
impl gyre_protocol::Authenticator for PasswordAuthenticator {
    fn class_name(&self) -> String {
        PASSWORD_AUTHENTICATOR.to_owned()
    }

    async fn authenticate(
        &self,
        _peer: SocketAddr,
        token: Option<&[u8]>,
    ) -> Result<String, String> {
        let (user, password) = decode_plain(token.unwrap_or_default())?;
        self.0.login(&user, &password).await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sasl_plain_tokens_split_like_cassandra() {
        assert_eq!(
            decode_plain(b"\0alice\0secret"),
            Ok(("alice".into(), "secret".into()))
        );
        assert_eq!(
            decode_plain(b"authz\0alice\0secret"),
            Ok(("alice".into(), "secret".into()))
        );
        assert_eq!(
            decode_plain(b"\0alice\0"),
            Err("Password must not be null".into())
        );
        assert_eq!(
            decode_plain(b"\0\0pw"),
            Err("Authentication ID must not be null".into())
        );
        assert!(decode_plain(b"").is_err());
    }

    #[test]
    fn resources_round_trip_and_nest() {
        for r in [
            Resource::AllKeyspaces,
            Resource::Keyspace("ks".into()),
            Resource::Table("ks".into(), "t".into()),
            Resource::AllRoles,
            Resource::Role("r".into()),
        ] {
            assert_eq!(Resource::from_name(&r.name()), Some(r.clone()));
        }
        let t = Resource::Table("ks".into(), "t".into());
        assert_eq!(t.to_string(), "<table ks.t>");
        assert_eq!(t.parent(), Some(Resource::Keyspace("ks".into())));
        assert_eq!(
            t.parent().and_then(|k| k.parent()),
            Some(Resource::AllKeyspaces)
        );
    }

    #[test]
    fn text_sets_decode() {
        let Value::Bytes(b) = text_set(&["a", "bc"]) else {
            panic!("bytes")
        };
        assert_eq!(
            decode_text_set(&Some(b)),
            BTreeSet::from(["a".to_string(), "bc".to_string()])
        );
    }

    #[test]
    fn hashes_are_salted_bcrypt_2a() {
        let a = hash_password("pw").expect("hash");
        let b = hash_password("pw").expect("hash");
        assert!(a.starts_with("$2a$10$"), "{a}");
        assert_ne!(a, b);
        assert!(bcrypt::verify("pw", &a).expect("verify"));
        assert!(!bcrypt::verify("px", &a).expect("verify"));
    }
}
