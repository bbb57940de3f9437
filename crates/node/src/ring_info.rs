//! `nodetool ring`, `describering` and `getendpoints` on the admin
//! endpoint: the token ring as this node sees it, a keyspace's ranges with
//! their replicas, and the replicas of one partition key.

use gyre_cluster::{ReplicaPlan, ReplicationStrategy, TokenMetadata};
use gyre_common::{token_of, Token};
use gyre_cql::CqlType;
use serde::{Deserialize, Serialize};

use crate::membership::{is_alive, keyspaces};
use crate::node::Shared;

/// One token of the ring (`GET /ring`).
#[derive(Debug, Serialize)]
pub(crate) struct RingToken {
    pub token: String,
    pub address: String,
    pub host_id: String,
    pub up: bool,
    /// `Normal`, `Leaving` or `Joining`.
    pub state: &'static str,
}

pub(crate) fn ring(shared: &Shared) -> Vec<RingToken> {
    let ring = shared.ring_view.read().clone();
    let alive = is_alive(shared);
    let entry = |token: Token, host, state| RingToken {
        token: token.to_string(),
        address: ring
            .node(&host)
            .map_or_else(String::new, |n| n.address.ip().to_string()),
        host_id: host.to_string(),
        up: alive(host),
        state,
    };
    let leaving: Vec<_> = ring.leaving().copied().collect();
    let mut out: Vec<(Token, RingToken)> = ring
        .ring()
        .iter()
        .map(|(t, h)| {
            let state = if leaving.contains(h) {
                "Leaving"
            } else {
                "Normal"
            };
            (*t, entry(*t, *h, state))
        })
        .collect();
    for (h, tokens) in ring.bootstrapping() {
        out.extend(tokens.iter().map(|t| (*t, entry(*t, *h, "Joining"))));
    }
    out.sort_by_key(|(t, _)| *t);
    out.into_iter().map(|(_, r)| r).collect()
}

#[derive(Debug, Deserialize)]
struct DescribeRequest {
    keyspace: String,
}

/// One range of a keyspace (`POST /describering`), as nodetool prints it.
#[derive(Debug, Serialize)]
pub(crate) struct TokenRange {
    pub start_token: String,
    pub end_token: String,
    /// Natural replicas, primary first.
    pub endpoints: Vec<String>,
}

fn strategy(shared: &Shared, keyspace: &str) -> Result<ReplicationStrategy, String> {
    let qp = shared.qp.get().ok_or("the node is still starting")?;
    keyspaces(qp)
        .remove(keyspace)
        .map(|(s, _)| s)
        .ok_or_else(|| format!("The keyspace {keyspace}, does not exist"))
}

fn addresses(ring: &TokenMetadata, hosts: &[gyre_cluster::HostId]) -> Vec<String> {
    hosts
        .iter()
        .filter_map(|h| ring.node(h))
        .map(|n| n.address.ip().to_string())
        .collect()
}

pub(crate) fn describe_ring(shared: &Shared, body: &[u8]) -> Result<Vec<TokenRange>, String> {
    let req: DescribeRequest =
        serde_json::from_slice(body).map_err(|e| format!("invalid describering request: {e}"))?;
    let strategy = strategy(shared, &req.keyspace)?;
    let ring = shared.ring_view.read().clone();
    let plan = ReplicaPlan::build(&ring, &strategy);
    Ok(plan
        .ranges()
        .iter()
        .map(|r| TokenRange {
            start_token: r.start.to_string(),
            end_token: r.end.to_string(),
            endpoints: addresses(&ring, &r.natural),
        })
        .collect())
}

#[derive(Debug, Deserialize)]
struct EndpointsRequest {
    keyspace: String,
    table: String,
    key: String,
}

/// The replicas of one partition key (`POST /getendpoints`), natural first
/// then pending, as `nodetool getendpoints`.
#[derive(Debug, Serialize)]
pub(crate) struct Endpoints {
    pub token: String,
    pub natural: Vec<String>,
    pub pending: Vec<String>,
}

pub(crate) fn get_endpoints(shared: &Shared, body: &[u8]) -> Result<Endpoints, String> {
    let req: EndpointsRequest =
        serde_json::from_slice(body).map_err(|e| format!("invalid getendpoints request: {e}"))?;
    let strategy = strategy(shared, &req.keyspace)?;
    let qp = shared.qp.get().ok_or("the node is still starting")?;
    let schema = qp.schema();
    let table = schema
        .table(&req.keyspace, &req.table)
        .ok_or_else(|| format!("Table {}.{} does not exist", req.keyspace, req.table))?;
    let pk = table.partition_key();
    let [column] = pk.as_slice() else {
        return Err(
            "getendpoints supports a partition key of one column (this table's has several)".into(),
        );
    };
    let key = serialize_key(&column.ty, &req.key)?;
    let token = token_of(&key);
    let ring = shared.ring_view.read().clone();
    Ok(Endpoints {
        token: token.to_string(),
        natural: addresses(&ring, &strategy.natural_replicas(&ring, token)),
        pending: addresses(&ring, &ring.pending_replicas_for_token(&strategy, token)),
    })
}

/// A key given as text, serialized as the partition key of type `ty`.
fn serialize_key(ty: &CqlType, key: &str) -> Result<Vec<u8>, String> {
    let bad = |what: &str| format!("{key:?} is not a valid {what}");
    Ok(match ty {
        CqlType::Text | CqlType::Ascii => key.as_bytes().to_vec(),
        CqlType::Int => key
            .parse::<i32>()
            .map_err(|_| bad("int"))?
            .to_be_bytes()
            .to_vec(),
        CqlType::Bigint | CqlType::Counter => key
            .parse::<i64>()
            .map_err(|_| bad("bigint"))?
            .to_be_bytes()
            .to_vec(),
        CqlType::Uuid | CqlType::Timeuuid => key
            .parse::<uuid::Uuid>()
            .map_err(|_| bad("uuid"))?
            .as_bytes()
            .to_vec(),
        CqlType::Blob => {
            let hex = key.strip_prefix("0x").unwrap_or(key);
            // ASCII first: slicing below must not split a character.
            if !hex.is_ascii() || !hex.len().is_multiple_of(2) {
                return Err(bad("blob"));
            }
            (0..hex.len())
                .step_by(2)
                .map(|i| u8::from_str_radix(&hex[i..i + 2], 16).map_err(|_| bad("blob")))
                .collect::<Result<_, _>>()?
        }
        other => {
            return Err(format!(
                "getendpoints supports partition keys of type text, ascii, int, bigint, \
                 uuid, timeuuid or blob, not {other:?}"
            ))
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_serialize_as_cql_values() {
        assert_eq!(serialize_key(&CqlType::Int, "1"), Ok(vec![0, 0, 0, 1]));
        assert_eq!(serialize_key(&CqlType::Bigint, "-1"), Ok(vec![0xff; 8]));
        assert_eq!(serialize_key(&CqlType::Text, "ab"), Ok(b"ab".to_vec()));
        assert_eq!(serialize_key(&CqlType::Blob, "0x0aff"), Ok(vec![10, 255]));
        assert!(serialize_key(&CqlType::Blob, "0xa").is_err());
        assert!(serialize_key(&CqlType::Blob, "0xé1").is_err());
        assert!(serialize_key(&CqlType::Int, "x").is_err());
        assert!(serialize_key(&CqlType::Double, "1").is_err());
    }
}
