//! `CqlValue::validate` (what prepared statements check bound values with)
//! refuses exactly what `CqlValue::decode` refuses, with the same message,
//! for every CQL type: wrong lengths, bad UTF-8 and ASCII, out-of-range
//! times, non-v1 timeuuids, malformed collections, tuples and vectors.
#![allow(clippy::unwrap_used)]

use gyre_protocol::{ColumnType, CqlValue};

fn b(t: Box<ColumnType>) -> Box<ColumnType> {
    t
}

/// Every type, with values that are valid and values that are not.
fn cases() -> Vec<(ColumnType, Vec<Vec<u8>>)> {
    use ColumnType as T;
    let lens = |ok: usize| -> Vec<Vec<u8>> {
        let mut v: Vec<Vec<u8>> = vec![vec![], vec![0; ok], vec![0; ok + 1]];
        if ok > 1 {
            v.push(vec![0; ok - 1]);
        }
        v
    };
    let v1 = uuid::Uuid::from_u128(0x1234_5678_1234_1234_8234_1234_5678_9abc); // version 1
    let v4 = uuid::Uuid::from_u128(0x1234_5678_1234_4234_8234_1234_5678_9abc);
    let int_list = |items: &[i32]| {
        let mut out = (items.len() as i32).to_be_bytes().to_vec();
        for i in items {
            out.extend(4i32.to_be_bytes());
            out.extend(i.to_be_bytes());
        }
        out
    };
    let text_list = |items: &[&[u8]]| {
        let mut out = (items.len() as i32).to_be_bytes().to_vec();
        for i in items {
            out.extend((i.len() as i32).to_be_bytes());
            out.extend(*i);
        }
        out
    };
    let mut truncated = int_list(&[1, 2]);
    truncated.pop();
    let mut null_elem = 1i32.to_be_bytes().to_vec();
    null_elem.extend((-1i32).to_be_bytes());
    let huge_count = 1_000_000i32.to_be_bytes().to_vec();
    let negative_count = (-3i32).to_be_bytes().to_vec();
    let collection_bad = vec![
        int_list(&[]),
        int_list(&[1, 2, 3]),
        truncated,
        null_elem,
        huge_count,
        negative_count,
        vec![0, 0],
        text_list(&[b"abc"]),
    ];
    let mut map_ok = 1i32.to_be_bytes().to_vec();
    map_ok.extend(4i32.to_be_bytes());
    map_ok.extend(7i32.to_be_bytes());
    map_ok.extend(2i32.to_be_bytes());
    map_ok.extend(b"hi");
    let mut map_bad_utf8 = 1i32.to_be_bytes().to_vec();
    map_bad_utf8.extend(4i32.to_be_bytes());
    map_bad_utf8.extend(7i32.to_be_bytes());
    map_bad_utf8.extend(2i32.to_be_bytes());
    map_bad_utf8.extend([0xff, 0xfe]);
    let mut tuple_ok = 4i32.to_be_bytes().to_vec();
    tuple_ok.extend(5i32.to_be_bytes());
    tuple_ok.extend((-1i32).to_be_bytes());
    let mut tuple_short_int = 2i32.to_be_bytes().to_vec();
    tuple_short_int.extend([0, 5]);
    let vint = |v: u8| vec![v];
    vec![
        (
            T::Ascii,
            vec![b"abc".to_vec(), vec![], vec![0xc3, 0xa9], vec![200]],
        ),
        (
            T::Varchar,
            vec![
                "héllo".as_bytes().to_vec(),
                vec![],
                vec![0xff],
                vec![0xc3],
                vec![0xed, 0xa0, 0x80],
            ],
        ),
        (T::Blob, vec![vec![], vec![0xff; 3]]),
        (T::Custom("x.Y".into()), vec![vec![], vec![1, 2]]),
        (T::Bigint, lens(8)),
        (T::Counter, lens(8)),
        (T::Timestamp, lens(8)),
        (
            T::Time,
            vec![
                vec![],
                0i64.to_be_bytes().to_vec(),
                86_399_999_999_999i64.to_be_bytes().to_vec(),
                86_400_000_000_000i64.to_be_bytes().to_vec(),
                (-1i64).to_be_bytes().to_vec(),
                vec![0; 4],
            ],
        ),
        (T::Boolean, lens(1)),
        (T::Decimal, vec![vec![], vec![0; 4], vec![0; 5], vec![0; 9]]),
        (T::Double, lens(8)),
        (T::Float, lens(4)),
        (T::Int, lens(4)),
        (T::Smallint, lens(2)),
        (T::Tinyint, lens(1)),
        (T::Date, lens(4)),
        (T::Uuid, lens(16)),
        (
            T::Timeuuid,
            vec![
                vec![],
                v1.as_bytes().to_vec(),
                v4.as_bytes().to_vec(),
                vec![0; 15],
            ],
        ),
        (T::Varint, vec![vec![], vec![1], vec![0xff; 20]]),
        (
            T::Inet,
            vec![vec![], vec![127, 0, 0, 1], vec![0; 16], vec![0; 5]],
        ),
        (
            T::Duration,
            vec![
                vec![],
                [vint(2), vint(4), vint(6)].concat(),
                [vint(2), vint(4)].concat(),
                [vint(2), vint(4), vint(6), vint(0)].concat(),
                vec![0xff],
                // months beyond i32
                [vec![0xf0, 0xff, 0xff, 0xff, 0xfe], vint(0), vint(0)].concat(),
            ],
        ),
        (
            T::List(b(Box::new(T::Int))),
            [vec![int_list(&[1, 2])], collection_bad.clone()].concat(),
        ),
        (
            T::Set(b(Box::new(T::Int))),
            [vec![int_list(&[1])], collection_bad.clone()].concat(),
        ),
        (
            T::List(b(Box::new(T::Varchar))),
            vec![
                text_list(&[b"ok", b""]),
                text_list(&[b"ok", &[0xff]]),
                int_list(&[1]),
            ],
        ),
        (
            T::Map(b(Box::new(T::Int)), b(Box::new(T::Varchar))),
            [vec![map_ok, map_bad_utf8], collection_bad.clone()].concat(),
        ),
        (
            T::Tuple(vec![T::Int, T::Varchar]),
            vec![
                tuple_ok,
                tuple_short_int,
                vec![],
                vec![0, 0, 0, 9, 1],
                4i32.to_be_bytes().to_vec(),
            ],
        ),
        (
            T::Vector(b(Box::new(T::Float)), 2),
            vec![vec![], vec![0; 8], vec![0; 7], vec![0; 12]],
        ),
        (
            T::Vector(b(Box::new(T::Varchar)), 2),
            vec![
                vec![1, b'a', 0],
                vec![1, b'a'],
                vec![1, 0xff, 0],
                vec![1, b'a', 0, 9],
                vec![5, b'a'],
            ],
        ),
        (
            T::Udt {
                keyspace: "ks".into(),
                name: "u".into(),
                fields: vec![("a".into(), T::Int), ("b".into(), T::Varchar)],
            },
            vec![
                vec![0, 0, 0, 4, 0, 0, 0, 1],
                vec![0, 0, 0, 2, 0, 1],
                vec![0, 0, 0, 4, 0, 0, 0, 1, 0, 0, 0, 1, 0xff],
            ],
        ),
    ]
}

#[test]
fn validate_refuses_what_decode_refuses_with_the_same_message() {
    let mut refused = 0;
    for (ty, values) in cases() {
        for v in values {
            let decoded = CqlValue::decode(&ty, &v)
                .map(|_| ())
                .map_err(|e| e.to_string());
            let validated = CqlValue::validate(&ty, &v).map_err(|e| e.to_string());
            assert_eq!(validated, decoded, "{ty:?} {v:?}");
            refused += usize::from(decoded.is_err());
        }
    }
    // The cases do exercise refusals (every type has some).
    assert!(refused > 40, "only {refused} refusals");
}

#[test]
fn wrong_lengths_and_bad_text_have_cassandra_style_messages() {
    let msg = |ty: ColumnType, v: &[u8]| CqlValue::validate(&ty, v).unwrap_err().to_string();
    assert!(msg(ColumnType::Int, &[0; 3]).contains("int needs 4 bytes, got 3"));
    assert!(msg(ColumnType::Bigint, &[0; 9]).contains("bigint needs 8 bytes, got 9"));
    assert!(msg(ColumnType::Uuid, &[0; 4]).contains("uuid needs 16 bytes, got 4"));
    assert!(msg(ColumnType::Varchar, &[0xff]).contains("text is not valid UTF-8"));
    assert!(msg(ColumnType::Ascii, &[0xc3, 0xa9]).contains("ascii value has bytes over 127"));
    assert!(msg(ColumnType::Inet, &[0; 5]).contains("inet needs 4 or 16 bytes, got 5"));
}

#[test]
fn nesting_is_bounded() {
    // A list nested 100 deep: refused, not a stack overflow.
    let mut ty = ColumnType::Int;
    let mut v = 7i32.to_be_bytes().to_vec();
    for _ in 0..100 {
        ty = ColumnType::List(Box::new(ty));
        let mut outer = 1i32.to_be_bytes().to_vec();
        outer.extend((v.len() as i32).to_be_bytes());
        outer.extend(&v);
        v = outer;
    }
    let decoded = CqlValue::decode(&ty, &v)
        .map(|_| ())
        .map_err(|e| e.to_string());
    assert!(decoded.is_err());
    assert_eq!(
        CqlValue::validate(&ty, &v).map_err(|e| e.to_string()),
        decoded
    );
}
