//! A partition update encoded once: the same bytes are the commitlog
//! record's payload, what the memtable copies, and what a coordinator sends
//! to the other replicas (which append them without re-encoding).

use bytes::Bytes;
use gyre_common::codec::{self, Reader};
use gyre_common::Partition;

use crate::{Error, Result, TableId};

/// An update of one partition of one table, with its encoding: the table id
/// (16 bytes) then the partition in [`gyre_common::codec`] form.
#[derive(Clone, Debug)]
pub struct Mutation {
    table: TableId,
    update: Partition,
    encoded: Bytes,
}

impl Mutation {
    /// Encodes `update` (once; clones share the bytes).
    pub fn new(table: TableId, update: Partition) -> Self {
        let encoded = Bytes::from(encode_record(table, &update));
        Mutation {
            table,
            update,
            encoded,
        }
    }

    /// Decodes a mutation received from another node. The bytes are copied
    /// into an allocation of their own, so what keeps parts of the decoded
    /// update (storage-attached indexes) does not pin the (larger) network
    /// buffer they arrived in.
    pub fn decode(encoded: &[u8]) -> Result<Self> {
        let encoded = Bytes::copy_from_slice(encoded);
        let (table, update) =
            decode_record(&encoded).map_err(|e| Error::Malformed(e.to_string()))?;
        Ok(Mutation {
            table,
            update,
            encoded,
        })
    }

    pub fn table(&self) -> TableId {
        self.table
    }

    pub fn update(&self) -> &Partition {
        &self.update
    }

    pub fn into_update(self) -> Partition {
        self.update
    }

    /// The encoding: table id, then the partition.
    pub fn encoded(&self) -> &Bytes {
        &self.encoded
    }
}

/// The commitlog record payload of an update.
pub(crate) fn encode_record(table: TableId, update: &Partition) -> Vec<u8> {
    let mut out = Vec::with_capacity(update.size_estimate() + 32);
    out.extend_from_slice(table.0.as_bytes());
    codec::encode_partition(&mut out, update);
    out
}

/// Decodes a commitlog record payload (or a received mutation).
pub(crate) fn decode_record(payload: &Bytes) -> codec::DecodeResult<(TableId, Partition)> {
    let mut r = Reader::new(payload);
    r.skip(16)?;
    let mut id = [0u8; 16];
    id.copy_from_slice(&payload[..16]);
    let p = codec::decode_partition(&mut r)?;
    Ok((TableId(uuid::Uuid::from_bytes(id)), p))
}

#[cfg(test)]
mod tests {
    use super::*;
    use gyre_common::{Cell, CellName};

    #[test]
    fn decodes_what_it_encodes_and_refuses_garbage() {
        let table = TableId(uuid::Uuid::from_u128(7));
        let p = Partition::with_key("k").set("r", CellName::simple("v"), Cell::live(3, "x"));
        let m = Mutation::new(table, p.clone());
        let back = Mutation::decode(m.encoded()).expect("decodes");
        assert_eq!(back.table(), table);
        assert_eq!(back.update(), &p);
        assert_eq!(back.encoded(), m.encoded());
        for bad in [
            &b""[..],
            &m.encoded()[..10],
            &m.encoded()[..m.encoded().len() - 1],
        ] {
            assert!(matches!(Mutation::decode(bad), Err(Error::Malformed(_))));
        }
    }
}
