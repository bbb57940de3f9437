//! The decoders never panic: random bytes, mutated valid frames, and the
//! checked-in corpus in `fuzz_corpus/` (inputs that once mattered or cover
//! edge cases) go through every decoding entry point.
#![allow(clippy::unwrap_used)]

use std::collections::BTreeMap;

use bytes::{Bytes, BytesMut};
use gyre_protocol::*;
use proptest::prelude::*;

const MAX: usize = 1 << 20;

/// Feeds `input` to the frame decoder and then to every body decoder, the
/// way the server and a client would. Returns how many frames decoded.
fn exercise(input: &[u8]) -> usize {
    let mut buf = BytesMut::from(input);
    let mut frames = 0;
    while let Ok(Some(frame)) = decode_frame(&mut buf, MAX) {
        frames += 1;
        for compression in [Compression::None, Compression::Lz4] {
            let _ = RequestFrame::decode(&frame, compression, MAX);
            let _ = ResponseFrame::decode(&frame, compression, MAX);
        }
        // Also treat the body as a value of a few nested types.
        for t in [
            ColumnType::Map(
                Box::new(ColumnType::Varchar),
                Box::new(ColumnType::List(Box::new(ColumnType::Duration))),
            ),
            ColumnType::Tuple(vec![
                ColumnType::Decimal,
                ColumnType::Inet,
                ColumnType::Varint,
            ]),
        ] {
            let _ = CqlValue::decode(&t, &frame.body);
        }
    }
    frames
}

fn valid_frames() -> Vec<Bytes> {
    let params = QueryParameters {
        consistency: Consistency::LocalQuorum,
        values: Values::Named(vec![
            ("a".into(), Value::Bytes(Bytes::from_static(&[0, 0, 0, 1]))),
            ("b".into(), Value::Unset),
        ]),
        skip_metadata: true,
        page_size: Some(100),
        paging_state: Some(Bytes::from_static(b"ps")),
        serial_consistency: Some(Consistency::LocalSerial),
        default_timestamp: Some(1_700_000_000_000_000),
        keyspace: Some("ks".into()),
        now_in_seconds: Some(1_700_000_000),
    };
    let requests = [
        Request::Startup(BTreeMap::from([("CQL_VERSION".into(), "3.4.7".into())])),
        Request::Options,
        Request::Query(Query {
            query: "SELECT * FROM t WHERE k = :a".into(),
            params: params.clone(),
        }),
        Request::Execute(Execute {
            id: Bytes::from_static(&[1; 16]),
            result_metadata_id: Some(Bytes::from_static(&[2; 16])),
            params,
        }),
        Request::Register(vec![EventType::SchemaChange]),
    ];
    let mut out: Vec<Bytes> = [ProtocolVersion::V4, ProtocolVersion::V5]
        .into_iter()
        .flat_map(|version| {
            requests.iter().map(move |r| {
                RequestFrame {
                    version,
                    stream: 1,
                    tracing: true,
                    custom_payload: None,
                    request: r.clone(),
                }
                .to_frame(Compression::None)
                .to_bytes()
            })
        })
        .collect();
    let meta = RowsMetadata::new(vec![
        ColumnSpec::new(
            "ks",
            "t",
            "m",
            ColumnType::Map(Box::new(ColumnType::Varchar), Box::new(ColumnType::Int)),
        ),
        ColumnSpec::new(
            "ks",
            "t",
            "u",
            ColumnType::Udt {
                keyspace: "ks".into(),
                name: "u".into(),
                fields: vec![(
                    "f".into(),
                    ColumnType::Tuple(vec![ColumnType::Int, ColumnType::Duration]),
                )],
            },
        ),
    ]);
    let rows = Response::Result(CqlResult::Rows(Rows {
        metadata: meta,
        rows: vec![vec![Some(Bytes::from_static(&[0, 0, 0, 0])), None]],
    }));
    let mut rf = ResponseFrame::new(2, rows);
    rf.warnings = vec!["w".into()];
    out.push(rf.to_frame(Compression::None).to_bytes());
    out.push(rf.to_frame(Compression::Lz4).to_bytes());
    rf.version = ProtocolVersion::V5;
    out.push(rf.to_frame(Compression::None).to_bytes());
    out
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 512, ..ProptestConfig::default() })]

    #[test]
    fn random_bytes_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..256)) {
        exercise(&bytes);
        // Also with a valid v4 header in front of random bodies.
        for opcode in 0u8..=0x10 {
            let mut f = vec![4, 0, 0, 1, opcode];
            f.extend_from_slice(&(bytes.len() as u32).to_be_bytes());
            f.extend_from_slice(&bytes);
            prop_assert_eq!(exercise(&f), 1);
        }
    }

    #[test]
    fn v5_deframer_never_panics(
        bytes in proptest::collection::vec(any::<u8>(), 0..512),
        lz4 in any::<bool>(),
        valid_header in any::<bool>(),
        self_contained in any::<bool>(),
    ) {
        // Random bytes, or random bytes behind a valid frame header and
        // trailer (so the envelope parsing is what gets exercised).
        let mut buf = if valid_header {
            let mut out = BytesMut::new();
            let payload = &bytes[..bytes.len().min(MAX_PAYLOAD)];
            encode_segment(payload, self_contained, lz4, &mut out);
            out
        } else {
            BytesMut::from(&bytes[..])
        };
        let mut d = Deframer::new(lz4, 4096);
        while let Ok(Some(frame)) = d.decode(&mut buf) {
            let _ = RequestFrame::decode(&frame, Compression::None, MAX);
        }
    }

    #[test]
    fn mutated_valid_frames_never_panic(
        which in any::<prop::sample::Index>(),
        edits in proptest::collection::vec((any::<prop::sample::Index>(), any::<u8>()), 1..8),
        cut in any::<prop::sample::Index>(),
        flags in any::<u8>(),
    ) {
        let frames = valid_frames();
        let mut f = frames[which.index(frames.len())].to_vec();
        for (at, byte) in edits {
            // Leave the version byte mostly intact so bodies get parsed.
            let i = 1 + at.index(f.len() - 1);
            f[i] = byte;
        }
        exercise(&f);
        f[1] = flags;
        exercise(&f);
        let len = cut.index(f.len());
        exercise(&f[..len]);
    }
}

#[test]
fn corpus_replays_without_panic() {
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("fuzz_corpus");
    let mut n = 0;
    for entry in std::fs::read_dir(dir).unwrap() {
        let bytes = std::fs::read(entry.unwrap().path()).unwrap();
        exercise(&bytes);
        for cut in 0..bytes.len().min(64) {
            exercise(&bytes[..cut]);
        }
        n += 1;
    }
    assert!(n >= 10, "corpus has {n} files");
}

#[test]
fn valid_frames_decode() {
    for f in valid_frames() {
        assert_eq!(exercise(&f), 1);
    }
}
