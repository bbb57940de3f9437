//! Every message type survives encode -> frame -> decode, and a few frames
//! match bytes written out by hand from the spec.
#![allow(clippy::unwrap_used)]

use std::collections::BTreeMap;
use std::net::SocketAddr;

use bytes::{Bytes, BytesMut};
use gyre_protocol::*;
use proptest::prelude::*;
use uuid::Uuid;

const MAX: usize = DEFAULT_MAX_FRAME_BYTES;

fn request_round_trip(rf: &RequestFrame, compression: Compression) -> RequestFrame {
    let bytes = rf.to_frame(compression).to_bytes();
    let mut buf = BytesMut::from(&bytes[..]);
    let frame = decode_frame(&mut buf, MAX).unwrap().unwrap();
    assert!(buf.is_empty());
    RequestFrame::decode(&frame, compression, MAX).unwrap()
}

fn response_round_trip(rf: &ResponseFrame, compression: Compression) -> ResponseFrame {
    let bytes = rf.to_frame(compression).to_bytes();
    let mut buf = BytesMut::from(&bytes[..]);
    let frame = decode_frame(&mut buf, MAX).unwrap().unwrap();
    assert_eq!(frame.version, rf.version.response_byte());
    ResponseFrame::decode(&frame, compression, MAX).unwrap()
}

/// What survives a round trip at `rf.version`: v5-only fields vanish in
/// v4, and v5 reports failures as a reason map only.
fn request_as_sent(mut rf: RequestFrame) -> RequestFrame {
    if !rf.version.is_v5() {
        match &mut rf.request {
            Request::Query(q) => {
                q.params.keyspace = None;
                q.params.now_in_seconds = None;
            }
            Request::Execute(e) => {
                e.result_metadata_id = None;
                e.params.keyspace = None;
                e.params.now_in_seconds = None;
            }
            Request::Prepare(p) => p.keyspace = None,
            Request::Batch(b) => {
                b.keyspace = None;
                b.now_in_seconds = None;
            }
            _ => {}
        }
    } else if let Request::Execute(e) = &mut rf.request {
        e.result_metadata_id.get_or_insert_with(Bytes::new);
    }
    rf
}

fn response_as_sent(mut rf: ResponseFrame) -> ResponseFrame {
    let v5 = rf.version.is_v5();
    let v3 = rf.version.is_v3();
    if v3 {
        rf.warnings.clear();
        rf.custom_payload = None;
    }
    let meta = |m: &mut RowsMetadata| {
        if !v5 {
            m.new_metadata_id = None;
        }
    };
    match &mut rf.response {
        Response::Result(CqlResult::Rows(r)) => meta(&mut r.metadata),
        Response::Result(CqlResult::Prepared(p)) => {
            meta(&mut p.result_metadata);
            if !v5 {
                p.result_metadata_id = Bytes::new();
            }
            if v3 {
                p.metadata.pk_indexes.clear();
            }
        }
        Response::Error(e) => match &mut e.kind {
            ErrorKind::ReadFailure {
                num_failures,
                reasons,
                ..
            }
            | ErrorKind::WriteFailure {
                num_failures,
                reasons,
                ..
            } => {
                if v5 {
                    *num_failures = reasons.len() as i32;
                } else {
                    *num_failures = (*num_failures).max(reasons.len() as i32);
                    reasons.clear();
                }
            }
            ErrorKind::CasWriteUnknown {
                consistency,
                received,
                block_for,
            } if !v5 => {
                e.kind = ErrorKind::WriteTimeout {
                    consistency: *consistency,
                    received: *received,
                    block_for: *block_for,
                    write_type: WriteType::Cas,
                }
            }
            _ => {}
        },
        _ => {}
    }
    // v3 lacks the failure codes: timeouts and invalid instead.
    match &mut rf.response {
        Response::Error(e) if v3 => match &e.kind {
            ErrorKind::ReadFailure {
                consistency,
                received,
                block_for,
                data_present,
                ..
            } => {
                e.kind = ErrorKind::ReadTimeout {
                    consistency: *consistency,
                    received: *received,
                    block_for: *block_for,
                    data_present: *data_present,
                }
            }
            ErrorKind::WriteFailure {
                consistency,
                received,
                block_for,
                write_type,
                ..
            } => {
                e.kind = ErrorKind::WriteTimeout {
                    consistency: *consistency,
                    received: *received,
                    block_for: *block_for,
                    write_type: write_type.clone(),
                }
            }
            ErrorKind::FunctionFailure { .. } => e.kind = ErrorKind::Invalid,
            _ => {}
        },
        _ => {}
    }
    rf
}

fn version() -> impl Strategy<Value = ProtocolVersion> {
    proptest::sample::select(vec![
        ProtocolVersion::V3,
        ProtocolVersion::V4,
        ProtocolVersion::V5,
    ])
}

fn reasons() -> impl Strategy<Value = Vec<(std::net::IpAddr, u16)>> {
    proptest::collection::vec((addr().prop_map(|a| a.ip()), any::<u16>()), 0..3)
}

fn name() -> impl Strategy<Value = String> {
    "[a-z_][a-z0-9_é]{0,12}"
}

fn consistency() -> impl Strategy<Value = Consistency> {
    proptest::sample::select(Consistency::ALL_LEVELS.to_vec())
}

fn blob() -> impl Strategy<Value = Bytes> {
    proptest::collection::vec(any::<u8>(), 0..24).prop_map(Bytes::from)
}

fn value() -> impl Strategy<Value = Value> {
    prop_oneof![
        Just(Value::Null),
        Just(Value::Unset),
        blob().prop_map(Value::Bytes)
    ]
}

fn values() -> impl Strategy<Value = Values> {
    prop_oneof![
        proptest::collection::vec(value(), 0..5).prop_map(Values::Positional),
        proptest::collection::vec((name(), value()), 1..5).prop_map(Values::Named),
    ]
}

fn params() -> impl Strategy<Value = QueryParameters> {
    (
        consistency(),
        values(),
        any::<bool>(),
        proptest::option::of(any::<i32>()),
        proptest::option::of(blob()),
        proptest::option::of(consistency()),
        proptest::option::of(any::<i64>()),
        proptest::option::of(name()),
        proptest::option::of(any::<i32>()),
    )
        .prop_map(
            |(
                consistency,
                values,
                skip_metadata,
                page_size,
                paging_state,
                serial_consistency,
                default_timestamp,
                keyspace,
                now_in_seconds,
            )| {
                QueryParameters {
                    consistency,
                    values,
                    skip_metadata,
                    page_size,
                    paging_state,
                    serial_consistency,
                    default_timestamp,
                    keyspace,
                    now_in_seconds,
                }
            },
        )
}

fn event_type() -> impl Strategy<Value = EventType> {
    proptest::sample::select(vec![
        EventType::TopologyChange,
        EventType::StatusChange,
        EventType::SchemaChange,
    ])
}

fn request() -> impl Strategy<Value = Request> {
    let stmt = (
        prop_oneof![
            ".{0,30}".prop_map(BatchStatementKind::Query),
            blob().prop_map(BatchStatementKind::Prepared)
        ],
        proptest::collection::vec(value(), 0..4),
    )
        .prop_map(|(statement, values)| BatchStatement { statement, values });
    let batch = (
        proptest::sample::select(vec![
            BatchType::Logged,
            BatchType::Unlogged,
            BatchType::Counter,
        ]),
        proptest::collection::vec(stmt, 0..4),
        consistency(),
        proptest::option::of(consistency()),
        proptest::option::of(any::<i64>()),
        proptest::option::of(name()),
        proptest::option::of(any::<i32>()),
    )
        .prop_map(
            |(
                batch_type,
                statements,
                consistency,
                serial_consistency,
                default_timestamp,
                keyspace,
                now_in_seconds,
            )| Batch {
                batch_type,
                statements,
                consistency,
                serial_consistency,
                default_timestamp,
                keyspace,
                now_in_seconds,
            },
        );
    prop_oneof![
        proptest::collection::btree_map(name(), ".{0,10}", 0..4).prop_map(Request::Startup),
        proptest::option::of(blob()).prop_map(Request::AuthResponse),
        Just(Request::Options),
        (".{0,40}", params()).prop_map(|(query, params)| Request::Query(Query { query, params })),
        (".{0,40}", proptest::option::of(name()))
            .prop_map(|(query, keyspace)| Request::Prepare(Prepare { query, keyspace })),
        (blob(), proptest::option::of(blob()), params()).prop_map(
            |(id, result_metadata_id, params)| Request::Execute(Execute {
                id,
                result_metadata_id,
                params
            })
        ),
        batch.prop_map(Request::Batch),
        proptest::collection::vec(event_type(), 0..3).prop_map(Request::Register),
    ]
}

fn column_type() -> impl Strategy<Value = ColumnType> {
    let leaf = prop_oneof![
        "[a-z.]{1,20}".prop_map(ColumnType::Custom),
        proptest::sample::select(vec![
            ColumnType::Ascii,
            ColumnType::Bigint,
            ColumnType::Blob,
            ColumnType::Boolean,
            ColumnType::Counter,
            ColumnType::Decimal,
            ColumnType::Double,
            ColumnType::Float,
            ColumnType::Int,
            ColumnType::Timestamp,
            ColumnType::Uuid,
            ColumnType::Varchar,
            ColumnType::Varint,
            ColumnType::Timeuuid,
            ColumnType::Inet,
            ColumnType::Date,
            ColumnType::Time,
            ColumnType::Smallint,
            ColumnType::Tinyint,
            ColumnType::Duration,
        ]),
    ];
    leaf.prop_recursive(3, 16, 3, |inner| {
        prop_oneof![
            inner.clone().prop_map(|t| ColumnType::List(Box::new(t))),
            inner.clone().prop_map(|t| ColumnType::Set(Box::new(t))),
            (inner.clone(), inner.clone())
                .prop_map(|(k, v)| ColumnType::Map(Box::new(k), Box::new(v))),
            proptest::collection::vec(inner.clone(), 0..3).prop_map(ColumnType::Tuple),
            (
                name(),
                name(),
                proptest::collection::vec((name(), inner), 0..3)
            )
                .prop_map(|(keyspace, name, fields)| ColumnType::Udt {
                    keyspace,
                    name,
                    fields
                }),
        ]
    })
}

fn column_specs() -> impl Strategy<Value = Vec<ColumnSpec>> {
    // Either all columns in one table (global spec) or each in its own.
    (
        any::<bool>(),
        proptest::collection::vec((name(), name(), name(), column_type()), 0..4),
    )
        .prop_map(|(global, cols)| {
            cols.into_iter()
                .map(|(ks, t, n, typ)| {
                    if global {
                        ColumnSpec::new("ks", "tbl", n, typ)
                    } else {
                        ColumnSpec::new(ks, t, n, typ)
                    }
                })
                .collect()
        })
}

fn rows_metadata() -> impl Strategy<Value = RowsMetadata> {
    (
        column_specs(),
        any::<bool>(),
        0usize..5,
        proptest::option::of(blob()),
        proptest::option::of(blob()),
    )
        .prop_map(|(cols, no_metadata, count, paging_state, new_id)| {
            let mut m = RowsMetadata::new(cols);
            if no_metadata {
                m = m.without_specs();
                m.columns_count = count;
            } else {
                m.new_metadata_id = new_id;
            }
            m.paging_state = paging_state;
            m
        })
}

fn rows() -> impl Strategy<Value = Rows> {
    (rows_metadata(), 0usize..4).prop_flat_map(|(metadata, n)| {
        let cols = metadata.columns_count;
        proptest::collection::vec(
            proptest::collection::vec(proptest::option::of(blob()), cols),
            n,
        )
        .prop_map(move |rows| Rows {
            metadata: metadata.clone(),
            rows,
        })
    })
}

fn schema_change() -> impl Strategy<Value = SchemaChange> {
    let target = prop_oneof![
        name().prop_map(SchemaChangeTarget::Keyspace),
        (name(), name()).prop_map(|(keyspace, name)| SchemaChangeTarget::Table { keyspace, name }),
        (name(), name()).prop_map(|(keyspace, name)| SchemaChangeTarget::Type { keyspace, name }),
        (name(), name(), proptest::collection::vec(name(), 0..3)).prop_map(
            |(keyspace, name, arg_types)| SchemaChangeTarget::Function {
                keyspace,
                name,
                arg_types
            }
        ),
        (name(), name(), proptest::collection::vec(name(), 0..3)).prop_map(
            |(keyspace, name, arg_types)| SchemaChangeTarget::Aggregate {
                keyspace,
                name,
                arg_types
            }
        ),
    ];
    (
        proptest::sample::select(vec![
            SchemaChangeType::Created,
            SchemaChangeType::Updated,
            SchemaChangeType::Dropped,
        ]),
        target,
    )
        .prop_map(|(change, target)| SchemaChange { change, target })
}

fn addr() -> impl Strategy<Value = SocketAddr> {
    prop_oneof![
        (any::<[u8; 4]>(), any::<u16>()).prop_map(|(ip, port)| SocketAddr::from((ip, port))),
        (any::<[u8; 16]>(), any::<u16>()).prop_map(|(ip, port)| SocketAddr::from((ip, port))),
    ]
}

fn write_type() -> impl Strategy<Value = WriteType> {
    prop_oneof![
        proptest::sample::select(vec![
            WriteType::Simple,
            WriteType::Batch,
            WriteType::UnloggedBatch,
            WriteType::Counter,
            WriteType::BatchLog,
            WriteType::Cas,
            WriteType::View,
            WriteType::Cdc,
        ]),
        "[a-z]{1,8}".prop_map(WriteType::Other),
    ]
}

fn error_kind() -> impl Strategy<Value = ErrorKind> {
    prop_oneof![
        proptest::sample::select(vec![
            ErrorKind::ServerError,
            ErrorKind::Protocol,
            ErrorKind::AuthenticationError,
            ErrorKind::Overloaded,
            ErrorKind::IsBootstrapping,
            ErrorKind::Truncate,
            ErrorKind::Syntax,
            ErrorKind::Unauthorized,
            ErrorKind::Invalid,
            ErrorKind::ConfigError,
            ErrorKind::Other(0x7777),
        ]),
        (consistency(), any::<i32>(), any::<i32>()).prop_map(|(consistency, required, alive)| {
            ErrorKind::Unavailable {
                consistency,
                required,
                alive,
            }
        }),
        (consistency(), any::<i32>(), any::<i32>(), write_type()).prop_map(
            |(consistency, received, block_for, write_type)| ErrorKind::WriteTimeout {
                consistency,
                received,
                block_for,
                write_type
            }
        ),
        (consistency(), any::<i32>(), any::<i32>(), any::<bool>()).prop_map(
            |(consistency, received, block_for, data_present)| ErrorKind::ReadTimeout {
                consistency,
                received,
                block_for,
                data_present
            }
        ),
        (
            consistency(),
            any::<i32>(),
            any::<i32>(),
            any::<i32>(),
            reasons(),
            any::<bool>()
        )
            .prop_map(
                |(consistency, received, block_for, num_failures, reasons, data_present)| {
                    ErrorKind::ReadFailure {
                        consistency,
                        received,
                        block_for,
                        num_failures,
                        reasons,
                        data_present,
                    }
                }
            ),
        (
            consistency(),
            any::<i32>(),
            any::<i32>(),
            any::<i32>(),
            reasons(),
            write_type()
        )
            .prop_map(
                |(consistency, received, block_for, num_failures, reasons, write_type)| {
                    ErrorKind::WriteFailure {
                        consistency,
                        received,
                        block_for,
                        num_failures,
                        reasons,
                        write_type,
                    }
                }
            ),
        (consistency(), any::<i32>(), any::<i32>()).prop_map(
            |(consistency, received, block_for)| ErrorKind::CasWriteUnknown {
                consistency,
                received,
                block_for
            }
        ),
        (name(), name(), proptest::collection::vec(name(), 0..3)).prop_map(
            |(keyspace, function, arg_types)| ErrorKind::FunctionFailure {
                keyspace,
                function,
                arg_types
            }
        ),
        (name(), prop_oneof![Just(String::new()), name()])
            .prop_map(|(keyspace, table)| ErrorKind::AlreadyExists { keyspace, table }),
        blob().prop_map(|id| ErrorKind::Unprepared { id }),
    ]
}

fn response() -> impl Strategy<Value = Response> {
    let prepared = (
        blob(),
        blob(),
        proptest::collection::vec(any::<u16>(), 0..3),
        column_specs(),
        rows_metadata(),
    )
        .prop_map(
            |(id, result_metadata_id, pk_indexes, columns, result_metadata)| {
                CqlResult::Prepared(Prepared {
                    id,
                    result_metadata_id,
                    metadata: PreparedMetadata {
                        pk_indexes,
                        columns,
                    },
                    result_metadata,
                })
            },
        );
    let event = prop_oneof![
        (
            proptest::sample::select(vec![
                TopologyChangeType::NewNode,
                TopologyChangeType::RemovedNode,
                TopologyChangeType::MovedNode
            ]),
            addr()
        )
            .prop_map(|(change, addr)| Event::TopologyChange { change, addr }),
        (
            proptest::sample::select(vec![StatusChangeType::Up, StatusChangeType::Down]),
            addr()
        )
            .prop_map(|(change, addr)| Event::StatusChange { change, addr }),
        schema_change().prop_map(Event::SchemaChange),
    ];
    prop_oneof![
        (error_kind(), ".{0,30}")
            .prop_map(|(kind, message)| Response::Error(CqlError::new(kind, message))),
        Just(Response::Ready),
        name().prop_map(Response::Authenticate),
        proptest::collection::btree_map(name(), proptest::collection::vec(name(), 0..3), 0..3)
            .prop_map(Response::Supported),
        Just(Response::void()),
        rows().prop_map(|r| Response::Result(CqlResult::Rows(r))),
        name().prop_map(|ks| Response::Result(CqlResult::SetKeyspace(ks))),
        prepared.prop_map(Response::Result),
        schema_change().prop_map(|s| Response::Result(CqlResult::SchemaChange(s))),
        event.prop_map(Response::Event),
        proptest::option::of(blob()).prop_map(Response::AuthChallenge),
        proptest::option::of(blob()).prop_map(Response::AuthSuccess),
    ]
}

fn payload() -> impl Strategy<Value = Option<BTreeMap<String, Option<Bytes>>>> {
    proptest::option::of(proptest::collection::btree_map(
        name(),
        proptest::option::of(blob()),
        0..3,
    ))
}

proptest! {
    #[test]
    fn requests_round_trip(
        stream in 0i16..=i16::MAX,
        tracing in any::<bool>(),
        custom_payload in payload(),
        request in request(),
        lz4 in any::<bool>(),
        version in version(),
    ) {
        let rf = RequestFrame { version, stream, tracing, custom_payload, request };
        let compression = if lz4 && !version.is_v5() { Compression::Lz4 } else { Compression::None };
        prop_assert_eq!(request_round_trip(&rf, compression), request_as_sent(rf));
    }

    #[test]
    fn responses_round_trip(
        stream in any::<i16>(),
        tracing_id in proptest::option::of(any::<[u8; 16]>().prop_map(Uuid::from_bytes)),
        warnings in proptest::collection::vec(".{0,10}", 0..3),
        custom_payload in payload(),
        response in response(),
        lz4 in any::<bool>(),
        version in version(),
    ) {
        let rf = ResponseFrame { version, stream, tracing_id, warnings, custom_payload, response };
        let compression = if lz4 && !version.is_v5() { Compression::Lz4 } else { Compression::None };
        prop_assert_eq!(response_round_trip(&rf, compression), response_as_sent(rf));
    }
}

#[test]
fn options_frame_bytes() {
    let bytes = RequestFrame::new(0x0102, Request::Options)
        .to_frame(Compression::None)
        .to_bytes();
    assert_eq!(&bytes[..], &[0x04, 0x00, 0x01, 0x02, 0x05, 0, 0, 0, 0]);
}

#[test]
fn startup_frame_bytes() {
    let opts = BTreeMap::from([("CQL_VERSION".to_string(), "3.0.0".to_string())]);
    // STARTUP is never compressed, even with lz4 negotiated.
    let bytes = RequestFrame::new(1, Request::Startup(opts))
        .to_frame(Compression::Lz4)
        .to_bytes();
    let mut expect = vec![0x04, 0x00, 0x00, 0x01, 0x01, 0, 0, 0, 22, 0, 1, 0, 11];
    expect.extend_from_slice(b"CQL_VERSION");
    expect.extend_from_slice(&[0, 5]);
    expect.extend_from_slice(b"3.0.0");
    assert_eq!(&bytes[..], &expect[..]);
}

#[test]
fn query_parameter_bytes() {
    let q = Query {
        query: "SELECT".into(),
        params: QueryParameters {
            consistency: Consistency::LocalOne,
            values: Values::Positional(vec![
                Value::Null,
                Value::Unset,
                Value::Bytes(Bytes::from_static(&[7])),
            ]),
            skip_metadata: false,
            page_size: Some(5000),
            paging_state: None,
            serial_consistency: Some(Consistency::Serial),
            default_timestamp: Some(1),
            keyspace: None,
            now_in_seconds: None,
        },
    };
    let mut body = BytesMut::new();
    Request::Query(q.clone()).encode_body(&mut body);
    let mut expect = vec![0, 0, 0, 6];
    expect.extend_from_slice(b"SELECT");
    expect.extend_from_slice(&[0x00, 0x0A, 0x35, 0, 3]);
    expect.extend_from_slice(&[
        0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFE, 0, 0, 0, 1, 7,
    ]);
    expect.extend_from_slice(&[0, 0, 0x13, 0x88, 0x00, 0x08, 0, 0, 0, 0, 0, 0, 0, 1]);
    assert_eq!(&body[..], &expect[..]);
    assert_eq!(
        Request::decode(0x07, body.freeze()).unwrap(),
        Request::Query(q)
    );
}

#[test]
fn error_bodies() {
    let e = Response::error(
        ErrorKind::Unavailable {
            consistency: Consistency::Quorum,
            required: 2,
            alive: 1,
        },
        "x",
    );
    let mut body = BytesMut::new();
    e.encode_body(&mut body);
    assert_eq!(
        &body[..],
        &[0, 0, 0x10, 0, 0, 1, b'x', 0, 4, 0, 0, 0, 2, 0, 0, 0, 1]
    );
    let e = Response::error(
        ErrorKind::Unprepared {
            id: Bytes::from_static(&[0xAB]),
        },
        "",
    );
    let mut body = BytesMut::new();
    e.encode_body(&mut body);
    assert_eq!(&body[..], &[0, 0, 0x25, 0, 0, 0, 0, 1, 0xAB]);
}

#[test]
fn rows_with_global_spec_and_paging_bytes() {
    let mut meta = RowsMetadata::new(vec![ColumnSpec::new("k", "t", "c", ColumnType::Int)]);
    meta.paging_state = Some(Bytes::from_static(&[9]));
    let rows = Response::Result(CqlResult::Rows(Rows {
        metadata: meta,
        rows: vec![vec![None]],
    }));
    let mut body = BytesMut::new();
    rows.encode_body(&mut body);
    let expect: &[u8] = &[
        0, 0, 0, 2, // kind Rows
        0, 0, 0, 3, // global spec + has more pages
        0, 0, 0, 1, // one column
        0, 0, 0, 1, 9, // paging state
        0, 1, b'k', 0, 1, b't', // global table spec
        0, 1, b'c', 0, 9, // column c int
        0, 0, 0, 1, // one row
        0xFF, 0xFF, 0xFF, 0xFF, // null
    ];
    assert_eq!(&body[..], expect);
}

#[test]
fn prepared_metadata_bytes() {
    let p = Response::Result(CqlResult::Prepared(Prepared {
        id: Bytes::from_static(&[1, 2]),
        result_metadata_id: Bytes::from_static(&[3]),
        metadata: PreparedMetadata {
            pk_indexes: vec![1, 0],
            columns: vec![
                ColumnSpec::new("k", "t", "a", ColumnType::Varchar),
                ColumnSpec::new("k", "t", "b", ColumnType::Bigint),
            ],
        },
        result_metadata: RowsMetadata::empty(),
    }));
    let mut body = BytesMut::new();
    p.encode_body(&mut body);
    let expect: &[u8] = &[
        0, 0, 0, 4, 0, 2, 1, 2, // kind, id
        0, 0, 0, 1, 0, 0, 0, 2, 0, 0, 0, 2, 0, 1, 0,
        0, // flags, 2 markers, 2 pk indexes [1, 0]
        0, 1, b'k', 0, 1, b't', 0, 1, b'a', 0, 0x0D, 0, 1, b'b', 0, 2, // specs
        0, 0, 0, 4, 0, 0, 0, 0, // result metadata: no_metadata, 0 columns
    ];
    assert_eq!(&body[..], expect);
}

#[test]
fn truncations_of_valid_bodies_are_errors_not_panics() {
    let mut meta = RowsMetadata::new(vec![ColumnSpec::new(
        "k",
        "t",
        "c",
        ColumnType::List(Box::new(ColumnType::Int)),
    )]);
    meta.paging_state = Some(Bytes::from_static(&[1, 2, 3]));
    let rows = Response::Result(CqlResult::Rows(Rows {
        metadata: meta,
        rows: vec![vec![Some(Bytes::from_static(b"abc"))]],
    }));
    let mut body = BytesMut::new();
    rows.encode_body(&mut body);
    let body = body.freeze();
    for cut in 0..body.len() {
        assert!(
            Response::decode(0x08, body.slice(..cut)).is_err(),
            "cut {cut}"
        );
    }
}

#[test]
fn batch_with_names_flag_is_rejected() {
    // type 0, no statements, consistency ONE, flags 0x40.
    let body = Bytes::from_static(&[0, 0, 0, 0, 1, 0x40]);
    assert!(matches!(
        Request::decode(0x0D, body),
        Err(Error::Protocol(_))
    ));
}
