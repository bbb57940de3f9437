//! The node configuration: one TOML file (`conf/gyre.toml`) with one section
//! per concern, plus command-line overrides ([`Overrides`]).
//!
//! Every section rejects unknown keys and [`NodeConfig::validate`] names the
//! offending key, so a typo never silently falls back to a default.

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::path::{Path, PathBuf};

use gyre_storage::SyncMode;
use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};

/// The whole node configuration. Missing sections and keys take their defaults.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct NodeConfig {
    pub cluster: ClusterConfig,
    pub network: NetworkConfig,
    pub storage: StorageConfig,
    pub gossip: GossipSettings,
    pub timeouts: TimeoutsConfig,
    pub hints: HintsConfig,
    pub limits: LimitsConfig,
    pub log: LogConfig,
    pub admin: AdminConfig,
    pub auth: AuthConfig,
    pub client_encryption: ClientEncryptionConfig,
    pub server_encryption: ServerEncryptionConfig,
}

/// Internode TLS, as Cassandra's `server_encryption_options` (PEM files
/// instead of Java keystores): every internode connection, messages and
/// streaming alike, is mutual TLS verified against the cluster's CA.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ServerEncryptionConfig {
    pub internode_encryption: InternodeEncryption,
    /// PEM certificate chain of this node, leaf first; it serves both ends
    /// of a connection.
    pub certificate: PathBuf,
    /// PEM private key of that certificate.
    pub private_key: PathBuf,
    /// PEM CA that signs every node's certificate (the cluster CA).
    pub ca_certificate: PathBuf,
    /// A connecting node must present a certificate of the CA.
    pub require_client_auth: bool,
    /// A node's certificate must be valid for its internode address (an IP
    /// subject alternative name). Cassandra's default is false; Gyre's is
    /// true, so that one node's certificate cannot speak for another.
    pub require_endpoint_verification: bool,
}

impl Default for ServerEncryptionConfig {
    fn default() -> Self {
        Self {
            internode_encryption: InternodeEncryption::None,
            certificate: PathBuf::new(),
            private_key: PathBuf::new(),
            ca_certificate: PathBuf::new(),
            require_client_auth: true,
            require_endpoint_verification: true,
        }
    }
}

/// `server_encryption.internode_encryption` (Cassandra's `dc` and `rack`
/// are not offered).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum InternodeEncryption {
    None,
    All,
}

impl ServerEncryptionConfig {
    /// The internode TLS, read from the PEM files (`None` when off).
    pub fn load(&self) -> Result<Option<gyre_net::InternodeTls>> {
        if self.internode_encryption == InternodeEncryption::None {
            return Ok(None);
        }
        let read = |key: &str, path: &Path| {
            std::fs::read(path).map_err(|source| Error::Io {
                context: format!("server_encryption.{key} {}", path.display()),
                source,
            })
        };
        let cert = read("certificate", &self.certificate)?;
        let key = read("private_key", &self.private_key)?;
        let ca = read("ca_certificate", &self.ca_certificate)?;
        gyre_net::InternodeTls::from_pem(
            &cert,
            &key,
            &ca,
            self.require_client_auth,
            self.require_endpoint_verification,
        )
        .map(Some)
        .map_err(|e| Error::InvalidConfig {
            key: "server_encryption".into(),
            message: e.to_string(),
        })
    }
}

/// TLS on the CQL port, as Cassandra's `client_encryption_options` (PEM
/// files instead of Java keystores).
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ClientEncryptionConfig {
    pub enabled: bool,
    /// Serve TLS and plaintext clients on the one port.
    pub optional: bool,
    /// PEM certificate chain of this node, leaf first.
    pub certificate: PathBuf,
    /// PEM private key of that certificate.
    pub private_key: PathBuf,
    /// Clients must present a certificate signed by `ca_certificate`.
    pub require_client_auth: bool,
    /// PEM CA that signs client certificates.
    pub ca_certificate: PathBuf,
}

impl ClientEncryptionConfig {
    /// The server's TLS, read from the PEM files (`None` when disabled).
    pub fn load(&self) -> Result<Option<gyre_protocol::ServerTls>> {
        if !self.enabled {
            return Ok(None);
        }
        let read = |key: &str, path: &Path| {
            std::fs::read(path).map_err(|source| Error::Io {
                context: format!("client_encryption.{key} {}", path.display()),
                source,
            })
        };
        let cert = read("certificate", &self.certificate)?;
        let key = read("private_key", &self.private_key)?;
        let ca = if self.ca_certificate.as_os_str().is_empty() {
            None
        } else {
            Some(read("ca_certificate", &self.ca_certificate)?)
        };
        let client_auth = if self.require_client_auth {
            gyre_protocol::ClientAuth::Required
        } else if ca.is_some() {
            gyre_protocol::ClientAuth::Optional
        } else {
            gyre_protocol::ClientAuth::None
        };
        gyre_protocol::ServerTls::from_pem(&cert, &key, ca.as_deref(), client_auth, self.optional)
            .map(Some)
            .map_err(|e| Error::InvalidConfig {
                key: "client_encryption".into(),
                message: e.to_string(),
            })
    }
}

/// Who may connect (`authenticator`) and what they may do (`authorizer`),
/// with Cassandra's names.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct AuthConfig {
    pub authenticator: AuthenticatorKind,
    pub authorizer: AuthorizerKind,
    /// How long a role's credentials (its password hash, LOGIN and
    /// SUPERUSER flags, memberships) are cached before they are read again
    /// (Cassandra's `credentials_validity` / `roles_validity`).
    pub credentials_validity_ms: u64,
    /// How long a role's permissions are cached (`permissions_validity`).
    pub permissions_validity_ms: u64,
    /// How long after start-up a node checks for roles and creates the
    /// default superuser `cassandra` when there is none (Cassandra waits
    /// 10 s too, so that a new cluster's ring has settled).
    pub superuser_setup_delay_ms: u64,
}

impl Default for AuthConfig {
    fn default() -> Self {
        Self {
            authenticator: AuthenticatorKind::AllowAll,
            authorizer: AuthorizerKind::AllowAll,
            credentials_validity_ms: 2000,
            permissions_validity_ms: 2000,
            superuser_setup_delay_ms: 10_000,
        }
    }
}

/// `auth.authenticator`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, clap::ValueEnum)]
pub enum AuthenticatorKind {
    /// Anyone may connect, without credentials.
    #[value(name = "AllowAll")]
    AllowAll,
    /// Username and password (SASL PLAIN), checked against
    /// `system_auth.roles`.
    #[value(name = "PasswordAuthenticator")]
    PasswordAuthenticator,
}

/// `auth.authorizer`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, clap::ValueEnum)]
pub enum AuthorizerKind {
    /// Every statement is allowed.
    #[value(name = "AllowAll")]
    AllowAll,
    /// Permissions granted with GRANT, kept in `system_auth.role_permissions`.
    #[value(name = "CassandraAuthorizer")]
    CassandraAuthorizer,
}

/// The admin HTTP endpoint (`/status`, `/metrics`, fault injection, ...).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct AdminConfig {
    /// Address the endpoint binds: loopback by default, so only local
    /// operators (and `gyrectl` on the host) reach it.
    pub listen_address: IpAddr,
    /// When set, every request must carry `Authorization: Bearer <token>`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub token: Option<String>,
    /// Serve `/faults`, `/clock` and `/failpoints` (chaos and fault tests);
    /// off, they answer 403: each can damage data or cut the node off.
    pub allow_fault_injection: bool,
}

impl Default for AdminConfig {
    fn default() -> Self {
        Self {
            listen_address: IpAddr::V4(Ipv4Addr::LOCALHOST),
            token: None,
            allow_fault_injection: false,
        }
    }
}

/// What one client, connection or statement may ask of the node, with
/// Cassandra's names where they exist (see `conf/gyre.toml`).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct LimitsConfig {
    /// Largest CQL frame body accepted.
    pub native_transport_max_frame_size_mb: usize,
    /// CQL connections from one client IP.
    pub native_transport_max_concurrent_connections_per_ip: usize,
    /// Bytes of CQL requests read and not yet answered, node-wide and per
    /// client IP; past them the node stops reading until replies go out.
    pub native_transport_max_request_data_in_flight_mb: usize,
    pub native_transport_max_request_data_in_flight_per_ip_mb: usize,
    /// A connection must complete STARTUP (and authentication) within this.
    pub native_transport_startup_timeout_ms: u64,
    /// A connection silent this long with nothing in flight is closed
    /// (0: never, as in Cassandra; drivers send heartbeats).
    pub native_transport_idle_timeout_ms: u64,
    /// Longest query text accepted, checked before it is tokenized.
    pub max_query_length_kb: usize,
    /// Most primary keys the IN lists of one statement may multiply into.
    pub in_select_cartesian_product_fail_threshold: usize,
    /// Multi-partition batches: a client warning over the first, refused
    /// over the second.
    pub batch_size_warn_threshold_kb: usize,
    pub batch_size_fail_threshold_kb: usize,
    /// Largest mutation accepted; never more than internode messages carry.
    pub max_mutation_size_kb: usize,
    /// Client timestamps further in the future are refused (0: unchecked).
    pub maximum_timestamp_fail_threshold_s: u64,
    /// A SELECT walking over more tombstones gets a client warning.
    pub tombstone_warn_threshold: usize,
    /// A replica read walking over more tombstones fails (ReadFailure).
    pub tombstone_failure_threshold: usize,
}

impl Default for LimitsConfig {
    fn default() -> Self {
        let g = gyre_query::Guardrails::default();
        Self {
            native_transport_max_frame_size_mb: 16,
            native_transport_max_concurrent_connections_per_ip: 1024,
            native_transport_max_request_data_in_flight_mb: 256,
            native_transport_max_request_data_in_flight_per_ip_mb: 64,
            native_transport_startup_timeout_ms: 10_000,
            native_transport_idle_timeout_ms: 0,
            max_query_length_kb: 1024,
            in_select_cartesian_product_fail_threshold: g
                .in_select_cartesian_product_fail_threshold,
            batch_size_warn_threshold_kb: g.batch_size_warn_threshold_bytes >> 10,
            batch_size_fail_threshold_kb: g.batch_size_fail_threshold_bytes >> 10,
            max_mutation_size_kb: g.max_mutation_size_bytes >> 10,
            maximum_timestamp_fail_threshold_s: 0,
            tombstone_warn_threshold: g.tombstone_warn_threshold,
            tombstone_failure_threshold: gyre_coordinator::DEFAULT_TOMBSTONE_FAILURE_THRESHOLD,
        }
    }
}

impl LimitsConfig {
    /// The statement guardrails these limits set.
    pub fn guardrails(&self) -> gyre_query::Guardrails {
        gyre_query::Guardrails {
            in_select_cartesian_product_fail_threshold: self
                .in_select_cartesian_product_fail_threshold,
            batch_size_warn_threshold_bytes: self.batch_size_warn_threshold_kb << 10,
            batch_size_fail_threshold_bytes: self.batch_size_fail_threshold_kb << 10,
            max_mutation_size_bytes: self.max_mutation_size_kb << 10,
            maximum_timestamp_fail_threshold: (self.maximum_timestamp_fail_threshold_s > 0)
                .then(|| std::time::Duration::from_secs(self.maximum_timestamp_fail_threshold_s)),
            tombstone_warn_threshold: self.tombstone_warn_threshold,
        }
    }
}

/// Hinted handoff: writes a replica missed are kept and replayed to it.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct HintsConfig {
    /// Store hints for replicas that are down or do not answer in time.
    pub enabled: bool,
    /// A node down longer than this gets no new hints (Cassandra's
    /// `max_hint_window`, 3 h).
    pub max_hint_window_ms: u64,
    /// Replay pace to a node that came back, in KiB of mutations per second.
    pub throttle_kib_per_sec: u64,
    /// A target's hints go to a new file past this size (Cassandra's
    /// `max_hints_file_size`).
    pub max_file_size_mb: u64,
    /// No more hints for a node whose hints take this much (Cassandra's
    /// `max_hints_size_per_host`); counted in /metrics.
    pub max_size_per_host_mb: u64,
    /// No more hints for any node once all hints take this much.
    pub max_total_size_mb: u64,
}

impl Default for HintsConfig {
    fn default() -> Self {
        Self {
            enabled: true,
            max_hint_window_ms: 3 * 3600 * 1000,
            throttle_kib_per_sec: 1024,
            max_file_size_mb: 32,
            max_size_per_host_mb: 1024,
            max_total_size_mb: 4096,
        }
    }
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ClusterConfig {
    /// Nodes only gossip with nodes of the same cluster name.
    pub name: String,
    /// Seed nodes, as `ip` (internode port assumed) or `ip:port`.
    pub seeds: Vec<String>,
    /// Vnodes owned by this node; only used the first time it starts.
    pub num_tokens: usize,
    /// The replication factor (in this node's datacenter) a new node's
    /// tokens are balanced for when the cluster has no keyspace yet
    /// (Cassandra's `allocate_tokens_for_local_replication_factor`); with
    /// keyspaces, theirs. 1 balances primary ranges only.
    pub allocate_tokens_for_local_replication_factor: usize,
    pub datacenter: String,
    pub rack: String,
    /// A new node joining a cluster that holds keyspaces streams its ranges
    /// before serving (Cassandra's `auto_bootstrap`).
    pub auto_bootstrap: bool,
    /// How long a joining or leaving node waits after announcing it, so that
    /// every coordinator sends writes to the pending replicas before data
    /// moves (Cassandra's RING_DELAY, 30 s).
    pub ring_delay_ms: u64,
    /// Stream each range from the replica that gives it up, refusing when
    /// that replica is down (Cassandra's `cassandra.consistent.rangemovement`).
    /// `false` streams from any live replica, and allows concurrent joins.
    pub consistent_rangemovement: bool,
    /// Streaming throughput cap per session driver, MiB/s (0 = unlimited).
    pub stream_throughput_mb_per_sec: u64,
    /// Pulled ranges (bootstrap, replace, removenode, decommission: the
    /// new owners pull from the leaving node) travel as SSTable
    /// files, imported on arrival: whole when a file lies inside a range,
    /// sections of files otherwise. `false` streams rows applied through the
    /// commitlog and memtable (the slower path the RocksDB engine uses).
    pub stream_sstables: bool,
    /// On the first start only (Cassandra's `replace_address_first_boot`):
    /// join in place of the dead node at this address, taking over its
    /// tokens and streaming its ranges from the other replicas.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub replace_address: Option<IpAddr>,
}

impl Default for ClusterConfig {
    fn default() -> Self {
        Self {
            name: "Gyre Cluster".into(),
            seeds: vec!["127.0.0.1".into()],
            num_tokens: 16,
            allocate_tokens_for_local_replication_factor: 3,
            datacenter: "dc1".into(),
            rack: "rack1".into(),
            auto_bootstrap: true,
            ring_delay_ms: 30_000,
            consistent_rangemovement: true,
            stream_throughput_mb_per_sec: 64,
            stream_sstables: true,
            replace_address: None,
        }
    }
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct NetworkConfig {
    /// Address for internode traffic; also this node's identity in gossip.
    pub listen_address: IpAddr,
    pub internode_port: u16,
    /// CQL (native protocol) address; defaults to `listen_address`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub cql_address: Option<IpAddr>,
    pub cql_port: u16,
    /// Legacy name of `admin.listen_address`; wins when set.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub admin_address: Option<IpAddr>,
    pub admin_port: u16,
    /// CQL requests executing at once, over all connections.
    pub cql_max_concurrent_requests: usize,
    /// CQL requests waiting for an execution slot; beyond, Overloaded.
    pub cql_max_queued_requests: usize,
    /// How long a queued CQL request waits before it is answered Overloaded.
    pub cql_queue_timeout_ms: u64,
    /// Replica requests from other coordinators (mutations until durable,
    /// reads) running at once; beyond, they are refused as overloaded.
    pub replica_max_concurrent_requests: usize,
}

impl Default for NetworkConfig {
    fn default() -> Self {
        Self {
            listen_address: IpAddr::V4(Ipv4Addr::LOCALHOST),
            internode_port: 7000,
            cql_address: None,
            cql_port: 9042,
            admin_address: None,
            admin_port: 9180,
            cql_max_concurrent_requests: 1024,
            cql_max_queued_requests: 4096,
            cql_queue_timeout_ms: 1000,
            replica_max_concurrent_requests: gyre_coordinator::DEFAULT_MAX_REPLICA_REQUESTS,
        }
    }
}

impl NetworkConfig {
    pub fn internode_addr(&self) -> SocketAddr {
        SocketAddr::new(self.listen_address, self.internode_port)
    }

    pub fn cql_addr(&self) -> SocketAddr {
        SocketAddr::new(
            self.cql_address.unwrap_or(self.listen_address),
            self.cql_port,
        )
    }
}

impl NodeConfig {
    /// Where the admin endpoint listens: `admin.listen_address` (or the
    /// legacy `network.admin_address`) and `network.admin_port`.
    pub fn admin_addr(&self) -> SocketAddr {
        SocketAddr::new(
            self.network
                .admin_address
                .unwrap_or(self.admin.listen_address),
            self.network.admin_port,
        )
    }
}

/// When the commitlog is fsynced (see `gyre_storage::SyncMode`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum CommitlogSync {
    Periodic,
    Group,
    Batch,
}

/// What a node does once its commitlog fails (a write or fsync error):
/// Cassandra's `commit_failure_policy`. The log refuses writes from then on
/// in every case (after a failed fsync the page cache cannot be trusted);
/// the policy decides how the node shows it.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum CommitFailurePolicy {
    /// Stop gossip and the CQL server so peers mark the node DOWN (and
    /// hint its writes instead of waiting on it); the process and its admin
    /// endpoint stay up for inspection until an operator restarts it.
    #[default]
    Stop,
    /// Exit the process at once.
    Die,
    /// Stay in the cluster, answering reads and refusing writes.
    Ignore,
}

/// Which storage engine a node runs.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum EngineKind {
    /// Gyre's own LSM engine.
    #[default]
    Native,
    /// RocksDB (the binary must be built with `--features rocksdb`).
    Rocksdb,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct StorageConfig {
    pub engine: EngineKind,
    /// SSTables, plus `node_state.json` (host id, generation, tokens).
    pub data_dir: PathBuf,
    pub commitlog_dir: PathBuf,
    pub commitlog_sync: CommitlogSync,
    /// fsync period for `periodic`.
    pub commitlog_sync_period_ms: u64,
    /// For `group`: the least time between fsync starts under load (0: back
    /// to back; an idle log always fsyncs at once).
    pub commitlog_sync_group_window_ms: u64,
    pub commit_failure_policy: CommitFailurePolicy,
    /// Snapshot a table before DROP TABLE and TRUNCATE delete its data
    /// (Cassandra's `auto_snapshot`; native engine only).
    pub auto_snapshot: bool,
    /// MiB per second a compaction may write (0: no limit; Cassandra's
    /// `compaction_throughput`, 64 by default).
    pub compaction_throughput_mb_per_sec: u64,
    /// Background compaction threads (Cassandra's `concurrent_compactors`);
    /// a table compacts one merge at a time, so more help with several
    /// busy tables.
    pub concurrent_compactors: usize,
    /// MiB of decompressed SSTable blocks cached for reads, shared by all
    /// tables (0: none; native engine only).
    pub block_cache_mb: u64,
    /// Memtable flush threads (Cassandra's `memtable_flush_writers`): as
    /// many switched-out memtables flush at once, and writers are held back
    /// only when all of them are busy and the active memtables are full.
    pub memtable_flush_writers: usize,
}

impl Default for StorageConfig {
    fn default() -> Self {
        Self {
            engine: EngineKind::Native,
            data_dir: PathBuf::from("var/data"),
            commitlog_dir: PathBuf::from("var/commitlog"),
            commitlog_sync: CommitlogSync::Group,
            commitlog_sync_period_ms: 10_000,
            commitlog_sync_group_window_ms: 0,
            commit_failure_policy: CommitFailurePolicy::Stop,
            auto_snapshot: true,
            compaction_throughput_mb_per_sec: 64,
            concurrent_compactors: 2,
            block_cache_mb: 32,
            memtable_flush_writers: 2,
        }
    }
}

impl StorageConfig {
    pub fn sync_mode(&self) -> SyncMode {
        match self.commitlog_sync {
            CommitlogSync::Periodic => SyncMode::Periodic {
                period_ms: self.commitlog_sync_period_ms,
            },
            CommitlogSync::Group => SyncMode::Group {
                window_ms: self.commitlog_sync_group_window_ms,
            },
            CommitlogSync::Batch => SyncMode::Batch,
        }
    }
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct GossipSettings {
    /// Gossip round and heartbeat period.
    pub interval_ms: u64,
    /// Phi-accrual conviction threshold (Cassandra's `phi_convict_threshold`).
    pub phi_convict_threshold: f64,
    /// Heartbeat gaps longer than this are not learned by the failure detector.
    pub fd_max_interval_ms: u64,
    /// How long a new node waits for a seed's ring before giving up.
    pub seed_wait_ms: u64,
    /// How long the shutdown announcement gets to leave before the node stops.
    pub shutdown_announce_ms: u64,
}

impl Default for GossipSettings {
    fn default() -> Self {
        Self {
            interval_ms: 300,
            phi_convict_threshold: 8.0,
            fd_max_interval_ms: 2000,
            seed_wait_ms: 30_000,
            shutdown_announce_ms: 500,
        }
    }
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct TimeoutsConfig {
    /// Establishing an internode connection.
    pub connect_ms: u64,
    /// Coordinator reads: ReadTimeout after this.
    pub read_request_ms: u64,
    /// Coordinator writes: WriteTimeout after this.
    pub write_request_ms: u64,
    /// Any other internode request.
    pub request_ms: u64,
    /// Lightweight transactions retry under contention this long, then
    /// fail with a CAS WriteTimeout (Cassandra's `cas_contention_timeout`).
    pub cas_contention_ms: u64,
}

impl Default for TimeoutsConfig {
    fn default() -> Self {
        Self {
            connect_ms: 2000,
            read_request_ms: 5000,
            write_request_ms: 2000,
            request_ms: 10_000,
            cas_contention_ms: 1000,
        }
    }
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct LogConfig {
    /// A tracing filter (`info`, `debug`, `gyre_cluster=debug,info`, ...);
    /// `RUST_LOG`, when set, wins.
    pub level: String,
}

impl Default for LogConfig {
    fn default() -> Self {
        Self {
            level: "info".into(),
        }
    }
}

/// Command-line overrides; `None` keeps the file's value.
#[derive(Clone, Debug, Default, clap::Args)]
pub struct Overrides {
    #[arg(long)]
    pub cluster_name: Option<String>,
    #[arg(long)]
    pub listen_address: Option<IpAddr>,
    #[arg(long)]
    pub internode_port: Option<u16>,
    #[arg(long)]
    pub cql_address: Option<IpAddr>,
    #[arg(long)]
    pub cql_port: Option<u16>,
    /// `admin.listen_address`.
    #[arg(long)]
    pub admin_address: Option<IpAddr>,
    /// `admin.token`: the bearer token admin requests must carry.
    #[arg(long)]
    pub admin_token: Option<String>,
    /// `admin.allow_fault_injection` (`true` / `false`).
    #[arg(long)]
    pub allow_fault_injection: Option<bool>,
    #[arg(long)]
    pub admin_port: Option<u16>,
    #[arg(long)]
    pub cql_max_concurrent_requests: Option<usize>,
    #[arg(long)]
    pub cql_max_queued_requests: Option<usize>,
    #[arg(long)]
    pub cql_queue_timeout_ms: Option<u64>,
    #[arg(long)]
    pub replica_max_concurrent_requests: Option<usize>,
    /// Comma-separated seeds (`ip` or `ip:port`).
    #[arg(long, value_delimiter = ',')]
    pub seeds: Option<Vec<String>>,
    #[arg(long)]
    pub data_dir: Option<PathBuf>,
    #[arg(long)]
    pub commitlog_dir: Option<PathBuf>,
    #[arg(long)]
    pub num_tokens: Option<usize>,
    #[arg(long)]
    pub datacenter: Option<String>,
    #[arg(long)]
    pub rack: Option<String>,
    #[arg(long, value_enum)]
    pub commitlog_sync: Option<CommitlogSyncArg>,
    #[arg(long)]
    pub phi_convict_threshold: Option<f64>,
    #[arg(long)]
    pub gossip_interval_ms: Option<u64>,
    #[arg(long)]
    pub connect_timeout_ms: Option<u64>,
    #[arg(long)]
    pub request_timeout_ms: Option<u64>,
    #[arg(long)]
    pub read_request_timeout_ms: Option<u64>,
    #[arg(long)]
    pub write_request_timeout_ms: Option<u64>,
    /// Store and replay hints (`true` / `false`).
    #[arg(long)]
    pub hints_enabled: Option<bool>,
    /// Hints kept per target node, MiB (`hints.max_size_per_host_mb`).
    #[arg(long)]
    pub hints_max_size_per_host_mb: Option<u64>,
    #[arg(long)]
    pub log_level: Option<String>,
    /// Any configuration key, as `section.key=value` (a TOML value; bare
    /// words are strings); repeatable, applied after the other flags.
    #[arg(long = "set", value_name = "SECTION.KEY=VALUE")]
    pub set: Vec<String>,
    /// `cluster.auto_bootstrap`.
    #[arg(long)]
    pub auto_bootstrap: Option<bool>,
    /// `cluster.ring_delay_ms`.
    #[arg(long)]
    pub ring_delay_ms: Option<u64>,
    /// `cluster.consistent_rangemovement`.
    #[arg(long)]
    pub consistent_rangemovement: Option<bool>,
    /// `cluster.stream_throughput_mb_per_sec`.
    #[arg(long)]
    pub stream_throughput_mb_per_sec: Option<u64>,
    /// `cluster.stream_sstables`.
    #[arg(long)]
    pub stream_sstables: Option<bool>,
    /// `cluster.replace_address`.
    #[arg(long)]
    pub replace_address: Option<IpAddr>,
    /// `auth.authenticator`: AllowAll or PasswordAuthenticator.
    #[arg(long, value_enum)]
    pub authenticator: Option<AuthenticatorKind>,
    /// `auth.authorizer`: AllowAll or CassandraAuthorizer.
    #[arg(long, value_enum)]
    pub authorizer: Option<AuthorizerKind>,
    /// `auth.superuser_setup_delay_ms`.
    #[arg(long)]
    pub superuser_setup_delay_ms: Option<u64>,
}

/// `CommitlogSync` for clap (kept apart so the config type stays serde-only).
#[derive(Clone, Copy, Debug, clap::ValueEnum)]
pub enum CommitlogSyncArg {
    Periodic,
    Group,
    Batch,
}

impl From<CommitlogSyncArg> for CommitlogSync {
    fn from(a: CommitlogSyncArg) -> Self {
        match a {
            CommitlogSyncArg::Periodic => Self::Periodic,
            CommitlogSyncArg::Group => Self::Group,
            CommitlogSyncArg::Batch => Self::Batch,
        }
    }
}

impl NodeConfig {
    /// Parses and validates TOML text; `origin` names it in errors.
    pub fn from_toml(text: &str, origin: &str) -> Result<Self> {
        let cfg: NodeConfig = toml::from_str(text).map_err(|e| Error::ConfigParse {
            origin: origin.to_string(),
            message: e.to_string(),
        })?;
        cfg.validate()?;
        Ok(cfg)
    }

    /// Reads, parses and validates a TOML file.
    pub fn load(path: &Path) -> Result<Self> {
        let text = std::fs::read_to_string(path).map_err(|source| Error::Io {
            context: format!("reading {}", path.display()),
            source,
        })?;
        Self::from_toml(&text, &path.display().to_string())
    }

    /// The config file (or defaults when `path` is `None`) with `o` applied, validated.
    pub fn resolve(path: Option<&Path>, o: &Overrides) -> Result<Self> {
        let mut cfg = match path {
            Some(p) => Self::load(p)?,
            None => Self::default(),
        };
        cfg.apply(o);
        let cfg = cfg.with_settings(&o.set)?;
        cfg.validate()?;
        Ok(cfg)
    }

    /// Applies `section.key=value` settings by way of the TOML form, so
    /// they are checked exactly as the file's keys are.
    pub fn with_settings(self, settings: &[String]) -> Result<Self> {
        if settings.is_empty() {
            return Ok(self);
        }
        let origin = || "--set".to_string();
        let parse_err = |message: String| Error::ConfigParse {
            origin: origin(),
            message,
        };
        let mut root: toml::Table =
            toml::from_str(&self.to_toml()?).map_err(|e| parse_err(e.to_string()))?;
        for setting in settings {
            let (key, value) = setting
                .split_once('=')
                .ok_or_else(|| parse_err(format!("{setting:?} is not SECTION.KEY=VALUE")))?;
            let (section, name) = key
                .trim()
                .split_once('.')
                .ok_or_else(|| parse_err(format!("{key:?} is not SECTION.KEY")))?;
            let value = toml::from_str::<toml::Table>(&format!("v = {value}"))
                .ok()
                .and_then(|mut t| t.remove("v"))
                .unwrap_or_else(|| toml::Value::String(value.trim().to_string()));
            let table = root
                .entry(section.to_string())
                .or_insert_with(|| toml::Value::Table(toml::Table::new()));
            let Some(table) = table.as_table_mut() else {
                return Err(parse_err(format!("{section:?} is not a section")));
            };
            table.insert(name.to_string(), value);
        }
        Self::from_toml(
            &toml::to_string(&root).map_err(|e| parse_err(e.to_string()))?,
            "--set",
        )
    }

    pub fn apply(&mut self, o: &Overrides) {
        fn set<T: Clone>(dst: &mut T, v: &Option<T>) {
            if let Some(v) = v {
                *dst = v.clone();
            }
        }
        set(&mut self.cluster.name, &o.cluster_name);
        set(&mut self.cluster.seeds, &o.seeds);
        set(&mut self.cluster.num_tokens, &o.num_tokens);
        set(&mut self.cluster.datacenter, &o.datacenter);
        set(&mut self.cluster.rack, &o.rack);
        set(&mut self.cluster.auto_bootstrap, &o.auto_bootstrap);
        set(&mut self.cluster.ring_delay_ms, &o.ring_delay_ms);
        set(
            &mut self.cluster.consistent_rangemovement,
            &o.consistent_rangemovement,
        );
        set(
            &mut self.cluster.stream_throughput_mb_per_sec,
            &o.stream_throughput_mb_per_sec,
        );
        set(&mut self.cluster.stream_sstables, &o.stream_sstables);
        if o.replace_address.is_some() {
            self.cluster.replace_address = o.replace_address;
        }
        set(&mut self.network.listen_address, &o.listen_address);
        set(&mut self.network.internode_port, &o.internode_port);
        if o.cql_address.is_some() {
            self.network.cql_address = o.cql_address;
        }
        set(&mut self.network.cql_port, &o.cql_port);
        if let Some(a) = o.admin_address {
            self.admin.listen_address = a;
            self.network.admin_address = None;
        }
        if o.admin_token.is_some() {
            self.admin.token = o.admin_token.clone();
        }
        set(
            &mut self.admin.allow_fault_injection,
            &o.allow_fault_injection,
        );
        set(&mut self.network.admin_port, &o.admin_port);
        set(
            &mut self.network.cql_max_concurrent_requests,
            &o.cql_max_concurrent_requests,
        );
        set(
            &mut self.network.cql_max_queued_requests,
            &o.cql_max_queued_requests,
        );
        set(
            &mut self.network.cql_queue_timeout_ms,
            &o.cql_queue_timeout_ms,
        );
        set(
            &mut self.network.replica_max_concurrent_requests,
            &o.replica_max_concurrent_requests,
        );
        set(&mut self.storage.data_dir, &o.data_dir);
        set(&mut self.storage.commitlog_dir, &o.commitlog_dir);
        if let Some(s) = o.commitlog_sync {
            self.storage.commitlog_sync = s.into();
        }
        set(
            &mut self.gossip.phi_convict_threshold,
            &o.phi_convict_threshold,
        );
        set(&mut self.gossip.interval_ms, &o.gossip_interval_ms);
        set(&mut self.hints.enabled, &o.hints_enabled);
        set(
            &mut self.hints.max_size_per_host_mb,
            &o.hints_max_size_per_host_mb,
        );
        set(&mut self.timeouts.connect_ms, &o.connect_timeout_ms);
        set(&mut self.timeouts.request_ms, &o.request_timeout_ms);
        set(
            &mut self.timeouts.read_request_ms,
            &o.read_request_timeout_ms,
        );
        set(
            &mut self.timeouts.write_request_ms,
            &o.write_request_timeout_ms,
        );
        set(&mut self.log.level, &o.log_level);
        set(&mut self.auth.authenticator, &o.authenticator);
        set(&mut self.auth.authorizer, &o.authorizer);
        set(
            &mut self.auth.superuser_setup_delay_ms,
            &o.superuser_setup_delay_ms,
        );
    }

    /// Seeds as socket addresses (a bare IP gets this node's internode port).
    pub fn seed_addrs(&self) -> Result<Vec<SocketAddr>> {
        self.cluster
            .seeds
            .iter()
            .map(|s| parse_seed(s, self.network.internode_port))
            .collect()
    }

    /// Checks every value; the error names the key.
    pub fn validate(&self) -> Result<()> {
        let c = &self.cluster;
        if c.name.trim().is_empty() {
            return invalid("cluster.name", "must not be empty");
        }
        if c.seeds.is_empty() {
            return invalid(
                "cluster.seeds",
                "needs at least one seed (list this node to start a new cluster)",
            );
        }
        self.seed_addrs()?;
        if !(1..=1536).contains(&c.num_tokens) {
            return invalid("cluster.num_tokens", "must be between 1 and 1536");
        }
        if !(1..=16).contains(&c.allocate_tokens_for_local_replication_factor) {
            return invalid(
                "cluster.allocate_tokens_for_local_replication_factor",
                "must be between 1 and 16",
            );
        }
        if c.datacenter.trim().is_empty() {
            return invalid("cluster.datacenter", "must not be empty");
        }
        if c.rack.trim().is_empty() {
            return invalid("cluster.rack", "must not be empty");
        }
        let n = &self.network;
        for (key, port) in [
            ("network.internode_port", n.internode_port),
            ("network.cql_port", n.cql_port),
            ("network.admin_port", n.admin_port),
        ] {
            if port == 0 {
                return invalid(key, "must be a port between 1 and 65535");
            }
        }
        if n.internode_addr() == n.cql_addr() || n.internode_addr() == self.admin_addr() {
            return invalid(
                "network.internode_port",
                "must differ from network.cql_port and network.admin_port",
            );
        }
        if n.cql_addr() == self.admin_addr() {
            return invalid("network.admin_port", "must differ from network.cql_port");
        }
        if n.cql_max_concurrent_requests == 0 {
            return invalid("network.cql_max_concurrent_requests", "must be positive");
        }
        let e = &self.client_encryption;
        if e.enabled {
            if e.certificate.as_os_str().is_empty() || e.private_key.as_os_str().is_empty() {
                return invalid(
                    "client_encryption.certificate",
                    "and client_encryption.private_key are needed when enabled",
                );
            }
            if e.require_client_auth && e.ca_certificate.as_os_str().is_empty() {
                return invalid(
                    "client_encryption.ca_certificate",
                    "is needed to verify client certificates (require_client_auth)",
                );
            }
        }
        let e = &self.server_encryption;
        if e.internode_encryption != InternodeEncryption::None
            && (e.certificate.as_os_str().is_empty()
                || e.private_key.as_os_str().is_empty()
                || e.ca_certificate.as_os_str().is_empty())
        {
            return invalid(
                "server_encryption.certificate",
                "private_key and ca_certificate are needed when internode_encryption is on",
            );
        }
        let l = &self.limits;
        if !(1..=256).contains(&l.native_transport_max_frame_size_mb) {
            return invalid(
                "limits.native_transport_max_frame_size_mb",
                "must be between 1 and 256",
            );
        }
        for (key, v) in [
            (
                "limits.native_transport_max_concurrent_connections_per_ip",
                l.native_transport_max_concurrent_connections_per_ip,
            ),
            (
                "limits.native_transport_max_request_data_in_flight_mb",
                l.native_transport_max_request_data_in_flight_mb,
            ),
            (
                "limits.native_transport_max_request_data_in_flight_per_ip_mb",
                l.native_transport_max_request_data_in_flight_per_ip_mb,
            ),
            (
                "limits.in_select_cartesian_product_fail_threshold",
                l.in_select_cartesian_product_fail_threshold,
            ),
            ("limits.max_mutation_size_kb", l.max_mutation_size_kb),
            ("limits.max_query_length_kb", l.max_query_length_kb),
        ] {
            if v == 0 {
                return invalid(key, "must be positive");
            }
        }
        if l.native_transport_startup_timeout_ms == 0 {
            return invalid(
                "limits.native_transport_startup_timeout_ms",
                "must be positive",
            );
        }
        let internode_kb = gyre_query::DEFAULT_MAX_MUTATION_SIZE >> 10;
        if l.max_mutation_size_kb > internode_kb {
            return invalid(
                "limits.max_mutation_size_kb",
                &format!("must be at most {internode_kb} (what one internode message carries)"),
            );
        }
        if l.batch_size_fail_threshold_kb < l.batch_size_warn_threshold_kb
            || l.batch_size_fail_threshold_kb > l.max_mutation_size_kb
        {
            return invalid(
                "limits.batch_size_fail_threshold_kb",
                "must be between batch_size_warn_threshold_kb and max_mutation_size_kb",
            );
        }
        if l.tombstone_failure_threshold < l.tombstone_warn_threshold {
            return invalid(
                "limits.tombstone_failure_threshold",
                "must be at least tombstone_warn_threshold",
            );
        }
        let s = &self.storage;
        if s.engine == EngineKind::Rocksdb && !gyre_storage_rocksdb::AVAILABLE {
            return invalid(
                "storage.engine",
                "\"rocksdb\" needs a gyre binary built with `--features rocksdb` (see README)",
            );
        }
        if s.data_dir.as_os_str().is_empty() {
            return invalid("storage.data_dir", "must not be empty");
        }
        if s.commitlog_dir.as_os_str().is_empty() {
            return invalid("storage.commitlog_dir", "must not be empty");
        }
        if !(1..=64).contains(&s.concurrent_compactors) {
            return invalid("storage.concurrent_compactors", "must be between 1 and 64");
        }
        if s.block_cache_mb > 1 << 20 {
            return invalid("storage.block_cache_mb", "must be at most 1048576 (1 TiB)");
        }
        if !(1..=64).contains(&s.memtable_flush_writers) {
            return invalid("storage.memtable_flush_writers", "must be between 1 and 64");
        }
        if s.commitlog_sync_period_ms == 0 {
            return invalid("storage.commitlog_sync_period_ms", "must be positive");
        }
        let g = &self.gossip;
        if !(10..=60_000).contains(&g.interval_ms) {
            return invalid("gossip.interval_ms", "must be between 10 and 60000");
        }
        if !g.phi_convict_threshold.is_finite() || g.phi_convict_threshold <= 0.0 {
            return invalid("gossip.phi_convict_threshold", "must be a positive number");
        }
        if g.fd_max_interval_ms < g.interval_ms {
            return invalid(
                "gossip.fd_max_interval_ms",
                "must be at least gossip.interval_ms",
            );
        }
        if g.shutdown_announce_ms > 60_000 {
            return invalid("gossip.shutdown_announce_ms", "must be at most 60000");
        }
        let t = &self.timeouts;
        for (key, v) in [
            ("timeouts.connect_ms", t.connect_ms),
            ("timeouts.read_request_ms", t.read_request_ms),
            ("timeouts.write_request_ms", t.write_request_ms),
            ("timeouts.request_ms", t.request_ms),
            ("timeouts.cas_contention_ms", t.cas_contention_ms),
        ] {
            if v == 0 {
                return invalid(key, "must be positive");
            }
        }
        if self.auth.authorizer == AuthorizerKind::CassandraAuthorizer
            && self.auth.authenticator == AuthenticatorKind::AllowAll
        {
            // Cassandra refuses this too: every user would be anonymous.
            return invalid(
                "auth.authorizer",
                "CassandraAuthorizer needs auth.authenticator = \"PasswordAuthenticator\"",
            );
        }
        if let Some(t) = &self.admin.token {
            // Sent in a header: printable ASCII without spaces.
            if t.len() < 16 || !t.bytes().all(|b| b.is_ascii_graphic()) {
                return invalid(
                    "admin.token",
                    "must be at least 16 printable ASCII characters without spaces",
                );
            }
        }
        if let Err(e) = tracing_subscriber::EnvFilter::try_new(&self.log.level) {
            return invalid("log.level", &format!("not a valid filter: {e}"));
        }
        Ok(())
    }

    /// TOML text of this configuration (what `gyrectl` stores per node).
    pub fn to_toml(&self) -> Result<String> {
        toml::to_string(self).map_err(|e| Error::ConfigParse {
            origin: "serializing configuration".into(),
            message: e.to_string(),
        })
    }
}

fn invalid(key: &str, message: &str) -> Result<()> {
    Err(Error::InvalidConfig {
        key: key.to_string(),
        message: message.to_string(),
    })
}

fn parse_seed(s: &str, default_port: u16) -> Result<SocketAddr> {
    let s = s.trim();
    if let Ok(a) = s.parse::<SocketAddr>() {
        return Ok(a);
    }
    s.parse::<IpAddr>()
        .map(|ip| SocketAddr::new(ip, default_port))
        .map_err(|_| Error::InvalidConfig {
            key: "cluster.seeds".into(),
            message: format!("`{s}` is not an IP address or ip:port"),
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn err_of(text: &str) -> String {
        match NodeConfig::from_toml(text, "test.toml") {
            Ok(c) => panic!("accepted: {c:?}"),
            Err(e) => e.to_string(),
        }
    }

    #[test]
    fn defaults_are_valid_and_round_trip() {
        let cfg = NodeConfig::default();
        cfg.validate().expect("defaults valid");
        let text = cfg.to_toml().expect("serializes");
        assert_eq!(NodeConfig::from_toml(&text, "x").expect("parses"), cfg);
        assert_eq!(NodeConfig::from_toml("", "x").expect("empty file"), cfg);
    }

    #[test]
    fn template_parses_to_defaults() {
        let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../conf/gyre.toml");
        let cfg = NodeConfig::load(&path).expect("template parses");
        assert_eq!(cfg, NodeConfig::default());
    }

    #[test]
    fn internode_encryption_needs_its_files() {
        let e = err_of("[server_encryption]\ninternode_encryption = \"all\"\n");
        assert!(e.contains("server_encryption.certificate"), "{e}");
        let e = err_of("[server_encryption]\ninternode_encryption = \"dc\"\n");
        assert!(e.contains("internode_encryption"), "{e}");
        let cfg = NodeConfig::from_toml(
            "[server_encryption]\ninternode_encryption = \"all\"\ncertificate = \"n.crt\"\n\
             private_key = \"n.key\"\nca_certificate = \"ca.crt\"\n",
            "x",
        )
        .expect("valid");
        assert!(cfg.server_encryption.require_client_auth);
        assert!(cfg.server_encryption.require_endpoint_verification);
        // Missing files are named when the node loads them.
        let e = cfg
            .server_encryption
            .load()
            .expect_err("no such file")
            .to_string();
        assert!(e.contains("server_encryption.certificate"), "{e}");
    }

    #[test]
    fn unknown_keys_are_rejected_with_their_name() {
        let e = err_of("[cluster]\nnmae = \"x\"\n");
        assert!(e.contains("nmae"), "{e}");
        let e = err_of("[clutser]\nname = \"x\"\n");
        assert!(e.contains("clutser"), "{e}");
    }

    #[test]
    fn rocksdb_engine_needs_the_feature() {
        let text = "[storage]\nengine = \"rocksdb\"\n";
        if gyre_storage_rocksdb::AVAILABLE {
            assert!(NodeConfig::from_toml(text, "test.toml").is_ok());
        } else {
            let e = err_of(text);
            assert!(
                e.contains("storage.engine") && e.contains("--features rocksdb"),
                "{e}"
            );
        }
        let e = err_of("[storage]\nengine = \"leveldb\"\n");
        assert!(e.contains("engine"), "{e}");
    }

    #[test]
    fn set_overrides_any_key_and_checks_it() {
        let set = |s: &[&str]| {
            NodeConfig::default()
                .with_settings(&s.iter().map(|x| x.to_string()).collect::<Vec<_>>())
        };
        let cfg = set(&[
            "limits.native_transport_max_concurrent_connections_per_ip=3",
            "cluster.rack = r9",
        ])
        .expect("valid settings");
        assert_eq!(
            cfg.limits
                .native_transport_max_concurrent_connections_per_ip,
            3
        );
        assert_eq!(cfg.cluster.rack, "r9");
        let e = set(&["limits.no_such_key=1"])
            .expect_err("unknown key")
            .to_string();
        assert!(e.contains("no_such_key"), "{e}");
        let e = set(&["limits.max_mutation_size_kb=999999"])
            .expect_err("over the internode limit")
            .to_string();
        assert!(e.contains("limits.max_mutation_size_kb"), "{e}");
        assert!(set(&["nokey"]).is_err());
    }

    #[test]
    fn invalid_values_name_the_key() {
        let e = err_of("[cluster]\nnum_tokens = 0\n");
        assert!(e.contains("cluster.num_tokens"), "{e}");
        let e = err_of("[gossip]\nphi_convict_threshold = -1.0\n");
        assert!(e.contains("gossip.phi_convict_threshold"), "{e}");
        let e = err_of("[cluster]\nseeds = [\"not-an-ip\"]\n");
        assert!(e.contains("cluster.seeds"), "{e}");
        let e = err_of("[storage]\ncommitlog_sync = \"sometimes\"\n");
        assert!(e.contains("commitlog_sync"), "{e}");
        let e = err_of("[network]\ninternode_port = 70000\n");
        assert!(e.contains("internode_port"), "{e}");
        let e = err_of("[log]\nlevel = \"info,,=[\"\n");
        assert!(e.contains("log.level"), "{e}");
    }

    #[test]
    fn auth_kinds_parse_with_cassandras_names() {
        let cfg = NodeConfig::from_toml(
            "[auth]\nauthenticator = \"PasswordAuthenticator\"\nauthorizer = \"CassandraAuthorizer\"\n",
            "x",
        )
        .expect("valid");
        assert_eq!(
            cfg.auth.authenticator,
            AuthenticatorKind::PasswordAuthenticator
        );
        let e = err_of("[auth]\nauthorizer = \"CassandraAuthorizer\"\n");
        assert!(e.contains("auth.authorizer"), "{e}");
        let e = err_of("[auth]\nauthenticator = \"Password\"\n");
        assert!(e.contains("authenticator"), "{e}");
    }

    #[test]
    fn admin_binds_loopback_unless_configured() {
        let o = Overrides {
            listen_address: Some("10.1.2.3".parse().expect("ip")),
            ..Overrides::default()
        };
        let cfg = NodeConfig::resolve(None, &o).expect("valid");
        assert_eq!(cfg.admin_addr().to_string(), "127.0.0.1:9180");
        assert!(!cfg.admin.allow_fault_injection);
        let cfg =
            NodeConfig::from_toml("[admin]\nlisten_address = \"10.1.2.3\"\n", "x").expect("valid");
        assert_eq!(cfg.admin_addr().to_string(), "10.1.2.3:9180");
        // The legacy key still works.
        let cfg =
            NodeConfig::from_toml("[network]\nadmin_address = \"10.1.2.4\"\n", "x").expect("valid");
        assert_eq!(cfg.admin_addr().to_string(), "10.1.2.4:9180");
        let e = err_of("[admin]\ntoken = \"short\"\n");
        assert!(e.contains("admin.token"), "{e}");
    }

    #[test]
    fn overrides_win_and_seeds_get_default_port() {
        let o = Overrides {
            listen_address: Some("127.0.0.2".parse().expect("ip")),
            internode_port: Some(7100),
            seeds: Some(vec!["127.0.0.1".into(), "127.0.0.3:7200".into()]),
            commitlog_sync: Some(CommitlogSyncArg::Batch),
            ..Overrides::default()
        };
        let cfg = NodeConfig::resolve(None, &o).expect("valid");
        assert_eq!(cfg.network.internode_addr().to_string(), "127.0.0.2:7100");
        let seeds: Vec<String> = cfg
            .seed_addrs()
            .expect("seeds")
            .iter()
            .map(|s| s.to_string())
            .collect();
        assert_eq!(seeds, ["127.0.0.1:7100", "127.0.0.3:7200"]);
        assert_eq!(cfg.storage.sync_mode(), SyncMode::Batch);
        assert_eq!(cfg.network.cql_addr().to_string(), "127.0.0.2:9042");
    }
}
