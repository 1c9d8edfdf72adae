//! Tests of the connection table, the limits and basic auth.

use std::{net::IpAddr, sync::atomic::Ordering, time::Instant};

use axum::http::{HeaderMap, HeaderValue, header};

use super::{
    auth::{base64_decode, basic_credentials},
    table::{BUSY, FRESH, IDLE, STARTED},
    *,
};

#[test]
fn decodes_basic_credentials() {
    // "prometheus:s3cr:et" (the password may hold colons).
    assert_eq!(
        basic_credentials(b"Basic cHJvbWV0aGV1czpzM2NyOmV0"),
        Some(("prometheus".into(), b"s3cr:et".to_vec()))
    );
    assert_eq!(
        basic_credentials(b"basic YTpi"),
        Some(("a".into(), b"b".to_vec()))
    );
    assert_eq!(
        basic_credentials(b"Basic YTo="),
        Some(("a".into(), b"".to_vec()))
    );
    for bad in [
        &b"Bearer YTpi"[..],
        b"Basic",
        b"Basic YWI=",
        b"Basic YTpi=",
        b"Basic Y=pi",
        b"Basic \xff\xfe",
    ] {
        assert_eq!(basic_credentials(bad), None, "{bad:?}");
    }
}

#[test]
fn base64_round_trips_every_length() {
    use base64::Engine as _;
    let enc = |d: &[u8]| base64::engine::general_purpose::STANDARD.encode(d);
    let data: Vec<u8> = (0..=255).collect();
    for n in 0..20 {
        assert_eq!(base64_decode(&enc(&data[..n])).unwrap(), &data[..n]);
    }
}

/// The ids open from `source`, oldest first.
fn ids(t: &Table, source: &str) -> Vec<u64> {
    let open = t.open.lock().unwrap();
    open.by_source
        .get(&source.parse::<IpAddr>().unwrap())
        .map_or(Vec::new(), |c| c.keys().copied().collect())
}

#[test]
fn the_table_sheds_the_silent_then_the_unfinished_then_the_idle_never_the_busy() {
    let t = Table::new(100, 4);
    let a: IpAddr = "10.0.0.1".parse().unwrap();
    let admit = |state| {
        let (id, slot) = t.admit(a, -1).unwrap();
        slot.state.store(state, Ordering::Release);
        id
    };
    // Oldest first within a state: two silent ones, the older goes.
    let (busy, idle, silent, started) = (admit(BUSY), admit(IDLE), admit(FRESH), admit(STARTED));
    assert_eq!(ids(&t, "10.0.0.1"), [busy, idle, silent, started]);
    let newer_silent = admit(FRESH);
    assert_eq!(ids(&t, "10.0.0.1"), [busy, idle, started, newer_silent]);
    let b1 = admit(BUSY);
    assert_eq!(ids(&t, "10.0.0.1"), [busy, idle, started, b1]);
    let b2 = admit(BUSY);
    assert_eq!(ids(&t, "10.0.0.1"), [busy, idle, b1, b2]);
    let b3 = admit(BUSY);
    assert_eq!(ids(&t, "10.0.0.1"), [busy, b1, b2, b3]);
    // All busy: the next one is refused, and other addresses are not affected.
    assert!(t.admit(a, -1).is_none());
    assert!(t.admit("10.0.0.2".parse().unwrap(), -1).is_some());
    // A connection that ends makes room.
    t.remove(&a, b2);
    assert!(t.admit(a, -1).is_some());
    assert_eq!(t.open.lock().unwrap().count, 5);
}

#[test]
fn a_connection_whose_bytes_wait_unread_is_not_taken_for_silent() {
    use std::{io::Write as _, os::fd::AsRawFd as _};
    let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let mut client = std::net::TcpStream::connect(l.local_addr().unwrap()).unwrap();
    let (accepted, _) = l.accept().unwrap();
    client.write_all(b"GET").unwrap();
    // Wait (blocking) until the bytes are there, without taking them.
    accepted.peek(&mut [0u8; 1]).unwrap();
    let t = Table::new(100, 2);
    let a: IpAddr = "10.0.0.1".parse().unwrap();
    let (spoke, slot) = t.admit(a, accepted.as_raw_fd()).unwrap();
    let (silent, _) = t.admit(a, -1).unwrap();
    let (newest, _) = t.admit(a, -1).unwrap();
    assert_eq!(ids(&t, "10.0.0.1"), [spoke, newest]);
    assert_eq!(slot.state.load(Ordering::Acquire), STARTED);
    assert!(silent < newest);
}

#[test]
fn a_full_table_sheds_from_the_address_with_the_most() {
    let t = Table::new(4, 100);
    let (many, few): (IpAddr, IpAddr) = ("10.0.0.1".parse().unwrap(), "10.0.0.2".parse().unwrap());
    let first_many = t.admit(many, -1).unwrap().0;
    t.admit(few, -1).unwrap();
    t.admit(many, -1).unwrap();
    t.admit(many, -1).unwrap();
    t.admit(few, -1).unwrap();
    assert_eq!(ids(&t, "10.0.0.2").len(), 2);
    assert_eq!(ids(&t, "10.0.0.1").len(), 2);
    assert!(!ids(&t, "10.0.0.1").contains(&first_many));
    // Out of file descriptors: the same choice.
    assert!(t.shed_one());
    assert_eq!(t.open.lock().unwrap().count, 3);
}

#[test]
fn the_connection_cap_leaves_room_for_everything_else() {
    assert_eq!(connection_cap(4096, 1_048_576, 100), 4096);
    assert_eq!(connection_cap(4096, 1024, 100), 1024 - 100 - FD_SPARE);
    assert_eq!(connection_cap(4096, 100, 100), 16);
}

/// A wrong password for a user with a cheap hash takes as long as one for an unknown
/// user, whose check runs the decoy made at the dearest cost.
#[tokio::test]
async fn a_wrong_password_takes_as_long_whatever_the_users_cost() {
    let cheap = bcrypt::hash("right", 4).unwrap();
    let dear = bcrypt::hash("right", 10).unwrap();
    let auth =
        BasicAuth::new([("cheap".to_string(), cheap), ("dear".to_string(), dear)].into()).unwrap();
    let floor = auth.failure_floor;
    // A cost-10 hash takes tens of times what a cost-4 one does.
    let t = Instant::now();
    bcrypt::verify("wrong", &bcrypt::hash("right", 4).unwrap()).unwrap();
    let cost4 = t.elapsed();
    assert!(
        floor > cost4 * 4,
        "floor {floor:?}, one cost-4 check {cost4:?}"
    );
    let with = |v: &str| {
        let mut h = HeaderMap::new();
        h.insert(header::AUTHORIZATION, HeaderValue::from_str(v).unwrap());
        h
    };
    // cheap:wrong, nobody:wrong, dear:wrong
    for creds in ["Y2hlYXA6d3Jvbmc=", "bm9ib2R5Ondyb25n", "ZGVhcjp3cm9uZw=="] {
        let t = Instant::now();
        assert!(!auth.allows(&with(&format!("Basic {creds}"))).await);
        assert!(
            t.elapsed() >= floor,
            "{creds}: {:?} < {floor:?}",
            t.elapsed()
        );
    }
}

#[tokio::test]
async fn basic_auth_verifies_once_then_remembers() {
    let hash = bcrypt::hash("right", 4).unwrap();
    let auth = BasicAuth::new([("alice".to_string(), hash)].into()).unwrap();
    let with = |v: &str| {
        let mut h = HeaderMap::new();
        h.insert(header::AUTHORIZATION, HeaderValue::from_str(v).unwrap());
        h
    };
    // alice:right, alice:wrong, bob:right
    assert!(!auth.allows(&HeaderMap::new()).await);
    assert!(!auth.allows(&with("Basic YWxpY2U6d3Jvbmc=")).await);
    assert!(!auth.allows(&with("Basic Ym9iOnJpZ2h0")).await);
    assert!(auth.cache.lock().unwrap().is_empty());
    assert!(auth.allows(&with("Basic YWxpY2U6cmlnaHQ=")).await);
    assert_eq!(auth.cache.lock().unwrap().len(), 1);
    assert!(auth.allows(&with("Basic YWxpY2U6cmlnaHQ=")).await);
    assert!(!auth.allows(&with("Basic YWxpY2U6d3Jvbmc=")).await);
}
