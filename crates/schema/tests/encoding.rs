//! Clustering encodings order bytes exactly as Cassandra orders values, and
//! decode back.
#![allow(clippy::unwrap_used)]

use std::cmp::Ordering;

use gyre_cql::CqlType;
use gyre_schema::{
    decode_clustering, decode_clustering_key, encode_clustering, encode_clustering_key,
    encode_partition_key, ClusteringOrder,
};
use proptest::prelude::*;

const ASC: ClusteringOrder = ClusteringOrder::Asc;
const DESC: ClusteringOrder = ClusteringOrder::Desc;

/// Checks order agreement in both directions and the round trip.
fn check(ty: &CqlType, a: &[u8], b: &[u8], want: Ordering) {
    for order in [ASC, DESC] {
        let ea = encode_clustering(ty, a, order).unwrap();
        let eb = encode_clustering(ty, b, order).unwrap();
        let w = if order == DESC { want.reverse() } else { want };
        assert_eq!(ea.cmp(&eb), w, "{ty} {a:02x?} vs {b:02x?} ({order})");
        if want != Ordering::Equal {
            assert!(!ea.starts_with(&eb) && !eb.starts_with(&ea), "prefix-free");
        }
        // Trailing bytes (a next component) do not disturb decoding.
        let mut with_tail = ea.clone();
        with_tail.extend_from_slice(&[0x5a, 0xa5]);
        let (back, used) = decode_clustering(ty, &with_tail, order).unwrap();
        assert_eq!(used, ea.len());
        assert_eq!(encode_clustering(ty, &back, order).unwrap(), ea);
    }
}

fn check_exact_round_trip(ty: &CqlType, v: &[u8]) {
    for order in [ASC, DESC] {
        let e = encode_clustering(ty, v, order).unwrap();
        assert_eq!(
            decode_clustering(ty, &e, order).unwrap(),
            (v.to_vec(), e.len())
        );
    }
}

fn varint_bytes(n: i128) -> Vec<u8> {
    let b = n.to_be_bytes();
    let mut s: &[u8] = &b;
    while s.len() > 1 && ((s[0] == 0 && s[1] & 0x80 == 0) || (s[0] == 0xff && s[1] & 0x80 != 0)) {
        s = &s[1..];
    }
    s.to_vec()
}

fn decimal_bytes(unscaled: i64, scale: i32) -> Vec<u8> {
    let mut v = scale.to_be_bytes().to_vec();
    v.extend(varint_bytes(i128::from(unscaled)));
    v
}

fn decimal_cmp(a: (i64, i32), b: (i64, i32)) -> Ordering {
    // a.0 * 10^-a.1 vs b.0 * 10^-b.1, on a common scale.
    let s = a.1.max(b.1);
    let x = i128::from(a.0) * 10i128.pow((s - a.1) as u32);
    let y = i128::from(b.0) * 10i128.pow((s - b.1) as u32);
    x.cmp(&y)
}

fn list_bytes(items: &[Vec<u8>]) -> Vec<u8> {
    let mut v = (items.len() as i32).to_be_bytes().to_vec();
    for i in items {
        v.extend_from_slice(&(i.len() as i32).to_be_bytes());
        v.extend_from_slice(i);
    }
    v
}

/// Cassandra's UUIDType comparison, written from its definition.
fn uuid_cmp(a: &[u8; 16], b: &[u8; 16]) -> Ordering {
    let (va, vb) = (a[6] >> 4, b[6] >> 4);
    if va != vb {
        return va.cmp(&vb);
    }
    if va == 1 {
        let c = v1_time(a).cmp(&v1_time(b));
        if c != Ordering::Equal {
            return c;
        }
    } else {
        let c = a[..8].cmp(&b[..8]);
        if c != Ordering::Equal {
            return c;
        }
    }
    a[8..].cmp(&b[8..])
}

fn v1_time(u: &[u8; 16]) -> u64 {
    let hi = u64::from(u16::from_be_bytes([u[6], u[7]]) & 0x0fff);
    let mid = u64::from(u16::from_be_bytes([u[4], u[5]]));
    let low = u64::from(u32::from_be_bytes([u[0], u[1], u[2], u[3]]));
    (hi << 48) | (mid << 32) | low
}

/// TimeUUIDType: timestamp, then the low half as signed bytes.
fn timeuuid_cmp(a: &[u8; 16], b: &[u8; 16]) -> Ordering {
    v1_time(a).cmp(&v1_time(b)).then_with(|| {
        let sa: Vec<i8> = a[8..].iter().map(|&x| x as i8).collect();
        let sb: Vec<i8> = b[8..].iter().map(|&x| x as i8).collect();
        sa.cmp(&sb)
    })
}

fn java_double_cmp(a: f64, b: f64) -> Ordering {
    let canon = |x: f64| if x.is_nan() { f64::NAN.abs() } else { x };
    canon(a).total_cmp(&canon(b))
}

fn any_f64() -> impl Strategy<Value = f64> {
    prop_oneof![
        proptest::num::f64::ANY,
        Just(0.0),
        Just(-0.0),
        Just(f64::INFINITY),
        Just(f64::NEG_INFINITY),
        Just(f64::NAN),
        Just(-f64::NAN),
        -10.0f64..10.0,
    ]
}

fn uuid_strategy(version: Option<u8>) -> impl Strategy<Value = [u8; 16]> {
    (proptest::array::uniform16(proptest::num::u8::ANY), 0u8..3).prop_map(move |(mut u, v)| {
        let ver = version.unwrap_or([1u8, 4, 3][v as usize]);
        u[6] = (u[6] & 0x0f) | (ver << 4);
        // Small timestamps collide often enough to reach the tie-breaks.
        if u[0] & 1 == 0 {
            u[..6].fill(0);
        }
        u
    })
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(256))]

    #[test]
    fn ints(a in any::<i64>(), b in any::<i64>(), c in any::<i32>(), d in any::<i32>(), e in any::<i16>(), f in any::<i16>(), g in any::<i8>(), h in any::<i8>()) {
        check(&CqlType::Bigint, &a.to_be_bytes(), &b.to_be_bytes(), a.cmp(&b));
        check(&CqlType::Timestamp, &a.to_be_bytes(), &b.to_be_bytes(), a.cmp(&b));
        check(&CqlType::Int, &c.to_be_bytes(), &d.to_be_bytes(), c.cmp(&d));
        check(&CqlType::Smallint, &e.to_be_bytes(), &f.to_be_bytes(), e.cmp(&f));
        check(&CqlType::Tinyint, &g.to_be_bytes(), &h.to_be_bytes(), g.cmp(&h));
        check_exact_round_trip(&CqlType::Bigint, &a.to_be_bytes());
        check_exact_round_trip(&CqlType::Int, &c.to_be_bytes());
    }

    #[test]
    fn date_time_boolean(a in any::<u32>(), b in any::<u32>(), t in 0i64..86_400_000_000_000, u in 0i64..86_400_000_000_000, x in any::<bool>(), y in any::<bool>()) {
        check(&CqlType::Date, &a.to_be_bytes(), &b.to_be_bytes(), a.cmp(&b));
        check(&CqlType::Time, &t.to_be_bytes(), &u.to_be_bytes(), t.cmp(&u));
        check(&CqlType::Boolean, &[u8::from(x)], &[u8::from(y)], x.cmp(&y));
    }

    #[test]
    fn varints(a in any::<i128>(), b in any::<i128>(), small in -300i128..300) {
        let (va, vb, vs) = (varint_bytes(a), varint_bytes(b), varint_bytes(small));
        check(&CqlType::Varint, &va, &vb, a.cmp(&b));
        check(&CqlType::Varint, &va, &vs, a.cmp(&small));
        check_exact_round_trip(&CqlType::Varint, &va);
        check_exact_round_trip(&CqlType::Varint, &vs);
    }

    #[test]
    fn doubles_and_floats(a in any_f64(), b in any_f64()) {
        check(&CqlType::Double, &a.to_be_bytes(), &b.to_be_bytes(), java_double_cmp(a, b));
        let (fa, fb) = (a as f32, b as f32);
        let want = java_double_cmp(f64::from(fa), f64::from(fb));
        check(&CqlType::Float, &fa.to_be_bytes(), &fb.to_be_bytes(), want);
        if !a.is_nan() {
            check_exact_round_trip(&CqlType::Double, &a.to_be_bytes());
        }
    }

    #[test]
    fn text_and_blobs(a in "[a\\x00\\x01\u{ff}é]{0,6}", b in "[a\\x00\\x01\u{ff}é]{0,6}", x in proptest::collection::vec(prop_oneof![Just(0u8), Just(1), Just(0xff), any::<u8>()], 0..8), y in proptest::collection::vec(prop_oneof![Just(0u8), Just(1), Just(0xff), any::<u8>()], 0..8)) {
        check(&CqlType::Text, a.as_bytes(), b.as_bytes(), a.as_bytes().cmp(b.as_bytes()));
        check(&CqlType::Blob, &x, &y, x.cmp(&y));
        check_exact_round_trip(&CqlType::Text, a.as_bytes());
        check_exact_round_trip(&CqlType::Blob, &x);
    }

    #[test]
    fn uuids(a in uuid_strategy(None), b in uuid_strategy(None), c in uuid_strategy(Some(1)), d in uuid_strategy(Some(1))) {
        check(&CqlType::Uuid, &a, &b, uuid_cmp(&a, &b));
        check(&CqlType::Uuid, &c, &d, uuid_cmp(&c, &d));
        check(&CqlType::Timeuuid, &c, &d, timeuuid_cmp(&c, &d));
        check_exact_round_trip(&CqlType::Uuid, &a);
        check_exact_round_trip(&CqlType::Timeuuid, &c);
    }

    #[test]
    fn decimals(a in (any::<i64>(), -6i32..6), b in (-1000i64..1000, -6i32..6)) {
        let (da, db) = (decimal_bytes(a.0, a.1), decimal_bytes(b.0, b.1));
        check(&CqlType::Decimal, &da, &db, decimal_cmp(a, b));
        // The round trip keeps the value (not necessarily the scale).
        let e = encode_clustering(&CqlType::Decimal, &da, ASC).unwrap();
        let (back, _) = decode_clustering(&CqlType::Decimal, &e, ASC).unwrap();
        let scale = i32::from_be_bytes([back[0], back[1], back[2], back[3]]);
        let mut unscaled = [if back[4] & 0x80 != 0 { 0xff } else { 0 }; 16];
        unscaled[16 - (back.len() - 4)..].copy_from_slice(&back[4..]);
        let unscaled = i128::from_be_bytes(unscaled);
        let s = scale.max(a.1);
        let lhs = unscaled * 10i128.pow((s - scale) as u32);
        let rhs = i128::from(a.0) * 10i128.pow((s - a.1) as u32);
        prop_assert_eq!(lhs, rhs);
    }

    #[test]
    fn frozen_lists_and_tuples(a in proptest::collection::vec(any::<i32>(), 0..4), b in proptest::collection::vec(-2i32..2, 0..4), ta in (any::<i32>(), "[ab]{0,3}"), tb in (-1i32..1, "[ab]{0,3}")) {
        let ty = CqlType::Frozen(Box::new(CqlType::List(Box::new(CqlType::Int))));
        let enc = |v: &[i32]| list_bytes(&v.iter().map(|x| x.to_be_bytes().to_vec()).collect::<Vec<_>>());
        check(&ty, &enc(&a), &enc(&b), a.cmp(&b));
        check_exact_round_trip(&ty, &enc(&a));
        let tt = CqlType::Tuple(vec![CqlType::Int, CqlType::Text]);
        let tup = |t: &(i32, String)| {
            let mut v = 4i32.to_be_bytes().to_vec();
            v.extend(t.0.to_be_bytes());
            v.extend((t.1.len() as i32).to_be_bytes());
            v.extend(t.1.as_bytes());
            v
        };
        check(&tt, &tup(&ta), &tup(&tb), ta.cmp(&tb));
        check_exact_round_trip(&tt, &tup(&ta));
    }

    /// A composite key (int ASC, text DESC) orders as the tuple of values
    /// would, and a one-component prefix selects exactly its rows.
    #[test]
    fn composite_keys_and_prefixes(keys in proptest::collection::vec((-3i32..3, "[ab]{0,3}"), 1..12)) {
        let enc = |(i, s): &(i32, String)| encode_clustering_key(&[
            (&CqlType::Int, &i.to_be_bytes(), ASC),
            (&CqlType::Text, s.as_bytes(), DESC),
        ]).unwrap();
        for x in &keys {
            for y in &keys {
                let want = x.0.cmp(&y.0).then_with(|| y.1.cmp(&x.1));
                prop_assert_eq!(enc(x).cmp(&enc(y)), want);
            }
            let cols = [(&CqlType::Int, ASC), (&CqlType::Text, DESC)];
            let back = decode_clustering_key(&cols, &enc(x)).unwrap();
            prop_assert_eq!(back, vec![x.0.to_be_bytes().to_vec(), x.1.as_bytes().to_vec()]);
            let prefix = encode_clustering(&CqlType::Int, &x.0.to_be_bytes(), ASC).unwrap();
            let slice = gyre_common::Slice::prefix(prefix);
            for y in &keys {
                prop_assert_eq!(slice.contains(&enc(y)), y.0 == x.0);
            }
        }
    }
}

#[test]
fn special_values_and_rejections() {
    let d = |x: f64| x.to_be_bytes();
    check(&CqlType::Double, &d(-0.0), &d(0.0), Ordering::Less);
    check(
        &CqlType::Double,
        &d(f64::INFINITY),
        &d(f64::NAN),
        Ordering::Less,
    );
    check(
        &CqlType::Double,
        &d(-f64::NAN),
        &d(f64::NAN),
        Ordering::Equal,
    );
    check(&CqlType::Varint, &[0x00, 0x80], &[0x7f], Ordering::Greater);
    check(&CqlType::Varint, &[0xff, 0x7f], &[0x80], Ordering::Less);
    // Non-minimal varint input is the same value.
    check(
        &CqlType::Varint,
        &[0x00, 0x00, 0x01],
        &[0x01],
        Ordering::Equal,
    );
    check(
        &CqlType::Inet,
        &[10, 0, 0, 1],
        &[10, 0, 0, 2],
        Ordering::Less,
    );
    for (ty, v) in [
        (CqlType::Int, vec![]),
        (CqlType::Int, vec![1, 2, 3]),
        (CqlType::Duration, vec![0, 0, 0]),
        (CqlType::Counter, vec![0; 8]),
        (CqlType::Varint, vec![]),
        (CqlType::Uuid, vec![0; 15]),
    ] {
        assert!(encode_clustering(&ty, &v, ASC).is_err(), "{ty}");
    }
    assert!(decode_clustering(&CqlType::Text, &[b'a', 0], ASC).is_err());
    assert!(decode_clustering_key(&[(&CqlType::Int, ASC)], &[0x80, 0, 0, 1, 7]).is_err());
    assert_eq!(encode_partition_key(&[b"ab"]), b"ab");
    assert_eq!(
        encode_partition_key(&[b"ab", b"c"]),
        vec![0, 2, b'a', b'b', 0, 0, 1, b'c', 0]
    );
}

/// A UDT value as the protocol serializes it: `[bytes]` per field.
fn udt_bytes(fields: &[Option<&[u8]>]) -> Vec<u8> {
    let mut out = Vec::new();
    for f in fields {
        match f {
            Some(v) => {
                out.extend_from_slice(&(v.len() as i32).to_be_bytes());
                out.extend_from_slice(v);
            }
            None => out.extend_from_slice(&(-1i32).to_be_bytes()),
        }
    }
    out
}

#[test]
fn user_types_order_by_field_and_ignore_trailing_nulls() {
    let ty = CqlType::UserType(std::sync::Arc::new(gyre_cql::UserType {
        keyspace: "ks".into(),
        name: "u".into(),
        fields: vec![
            ("a".into(), CqlType::Int),
            ("b".into(), CqlType::Text),
            ("c".into(), CqlType::Int),
        ],
    }));
    let one = 1i32.to_be_bytes();
    let two = 2i32.to_be_bytes();
    let a1 = udt_bytes(&[Some(&one), Some(b"x")]);
    let a2 = udt_bytes(&[Some(&two), Some(b"a")]);
    check(&ty, &a1, &a2, Ordering::Less);
    // Null sorts before any value of its field.
    let null_b = udt_bytes(&[Some(&one), None]);
    check(&ty, &null_b, &a1, Ordering::Less);
    // Trailing nulls (a value written before ALTER TYPE ADD, or after)
    // encode alike, so the same key is found either way.
    let short = encode_clustering(&ty, &a1, ASC).unwrap();
    let long = encode_clustering(&ty, &udt_bytes(&[Some(&one), Some(b"x"), None]), ASC).unwrap();
    assert_eq!(short, long);
    let (back, _) = decode_clustering(&ty, &long, ASC).unwrap();
    assert_eq!(back, a1);
}
