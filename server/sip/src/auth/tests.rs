//! Whole-flow tests: RFC vectors, a SIPml5-shaped round trip, and garbage that must not panic.

use md5::Md5;
use sha2::{Digest, Sha256};

use super::*;

/// An independent, allocating client-side response computation to check ours against.
fn h(alg: Algorithm, data: &[u8]) -> String {
    match alg {
        Algorithm::Md5 => format!("{:x}", Md5::digest(data)),
        Algorithm::Sha256 => format!("{:x}", Sha256::digest(data)),
    }
}

struct Client<'a> {
    alg: Algorithm,
    user: &'a str,
    realm: &'a str,
    password: &'a str,
    uri: &'a str,
}

impl Client<'_> {
    /// `qop`: `(qop, nc, cnonce)`.
    fn response(
        &self,
        method: &str,
        nonce: &str,
        qop: Option<(&str, &str, &str)>,
        body: &[u8],
    ) -> String {
        let ha1 = h(
            self.alg,
            format!("{}:{}:{}", self.user, self.realm, self.password).as_bytes(),
        );
        let ha2 = match qop {
            Some(("auth-int", _, _)) => h(
                self.alg,
                format!("{method}:{}:{}", self.uri, h(self.alg, body)).as_bytes(),
            ),
            _ => h(self.alg, format!("{method}:{}", self.uri).as_bytes()),
        };
        match qop {
            Some((qop, nc, cnonce)) => h(
                self.alg,
                format!("{ha1}:{nonce}:{nc}:{cnonce}:{qop}:{ha2}").as_bytes(),
            ),
            None => h(self.alg, format!("{ha1}:{nonce}:{ha2}").as_bytes()),
        }
    }

    /// The header value SIPml5 sends (`tsip_auth.js`), in its parameter order.
    fn sipml5_header(&self, method: &str, nonce: &str, nc: u32, cnonce: &str) -> String {
        let nc = format!("{nc:08x}");
        let response = self.response(method, nonce, Some(("auth", &nc, cnonce)), b"");
        format!(
            "Digest username=\"{}\",realm=\"{}\",nonce=\"{nonce}\",uri=\"{}\",response=\"{response}\",algorithm={},cnonce=\"{cnonce}\",qop=auth,nc={nc}",
            self.user, self.realm, self.uri, self.alg
        )
    }
}

#[test]
fn rfc2617_section_3_5_md5_qop_auth() {
    let value = "Digest username=\"Mufasa\",\r\n                 realm=\"testrealm@host.com\",\r\n                 \
                 nonce=\"dcd98b7102dd2f0e8b11d0f600bfb0c093\",\r\n                 uri=\"/dir/index.html\",\r\n                 \
                 qop=auth,\r\n                 nc=00000001,\r\n                 cnonce=\"0a4f113b\",\r\n                 \
                 response=\"6629fae49393a05397450978507c4ef1\",\r\n                 opaque=\"5ccc069c403ebaf9f0171e9517f40e41\"";
    let creds = Credentials::parse(value).unwrap();
    assert_eq!(creds.opaque(), Some("5ccc069c403ebaf9f0171e9517f40e41"));
    let ha1 = ha1(
        "Mufasa",
        "testrealm@host.com",
        "Circle Of Life",
        Algorithm::Md5,
    );
    assert!(verify_response(&creds, "GET", &ha1, None));
    assert!(
        verify_response(&creds, "GET", &ha1.to_uppercase(), None),
        "stored HA1 case is irrelevant"
    );
    assert!(!verify_response(&creds, "POST", &ha1, None));
    let wrong = super::ha1(
        "Mufasa",
        "testrealm@host.com",
        "Circle of Life",
        Algorithm::Md5,
    );
    assert!(!verify_response(&creds, "GET", &wrong, None));
    let sha = super::ha1(
        "Mufasa",
        "testrealm@host.com",
        "Circle Of Life",
        Algorithm::Sha256,
    );
    assert!(
        !verify_response(&creds, "GET", &sha, None),
        "an HA1 for another algorithm never verifies"
    );
    assert!(!verify_response(&creds, "GET", "", None));
    assert!(!verify_response(&creds, "GET", &ha1[..31], None));
}

/// RFC 7616 §3.9.1, both responses, header folded as printed in the RFC.
#[test]
fn rfc7616_section_3_9_1() {
    let cases = [
        (
            Algorithm::Sha256,
            "753927fa0e85d155564e2e272a28d1802ca10daf4496794697cf8db5856cb6c1",
        ),
        (Algorithm::Md5, "8ca523f5e9506fed4657c9700eebdbec"),
    ];
    for (alg, response) in cases {
        let value = format!(
            "Digest username=\"Mufasa\",\r\n       realm=\"http-auth@example.org\",\r\n       \
             uri=\"/dir/index.html\",\r\n       algorithm={alg},\r\n       \
             nonce=\"7ypf/xlj9XXwfDPEoM4URrv/xwf94BcCAzFZH4GiTo0v\",\r\n       nc=00000001,\r\n       \
             cnonce=\"f2/wE4q74E6zIJEtWaHKaf5wv/H5QzzpXusqGemxURZJ\",\r\n       qop=auth,\r\n       \
             response=\"{response}\",\r\n       opaque=\"FQhe/qaU925kfnzjCev0ciny7QMkPqMAFRtzCUYo5tdS\""
        );
        let creds = Credentials::parse(&value).unwrap();
        assert_eq!(creds.algorithm(), alg);
        let ha1 = ha1("Mufasa", "http-auth@example.org", "Circle of Life", alg);
        assert!(verify_response(&creds, "GET", &ha1, None), "{alg}");
        // The claimed response is compared case-insensitively as bytes.
        let upper = value.replace(response, &response.to_uppercase());
        assert!(verify_response(
            &Credentials::parse(&upper).unwrap(),
            "GET",
            &ha1,
            None
        ));
        let other = value.replace("00000001", "00000002");
        assert!(!verify_response(
            &Credentials::parse(&other).unwrap(),
            "GET",
            &ha1,
            None
        ));
    }
}

#[test]
fn sipml5_register_round_trip() {
    let realm = "example.test";
    let now = 1_700_000_000;
    let issuer = NonceIssuer::new([0x5a; 32]);
    let mut counts = NonceCounts::for_issuer(&issuer, 1024);
    let alice = Client {
        alg: Algorithm::Md5,
        user: "alice",
        realm,
        password: "s3cret",
        uri: "sip:example.test",
    };
    // The user record: HA1s only.
    let stored = Algorithm::ALL.map(|alg| (alg, ha1("alice", realm, "s3cret", alg)));
    let lookup = |alg: Algorithm| {
        stored
            .iter()
            .find(|(a, _)| *a == alg)
            .map(|(_, h)| h.as_str())
    };

    let nonce = issuer.issue(now, realm, [3; 16]);
    let www = challenge(realm, &nonce, Algorithm::Md5, false, None);
    assert_eq!(
        www,
        format!("Digest realm=\"example.test\",nonce=\"{nonce}\",algorithm=MD5,qop=\"auth\"")
    );

    for nc in 1..=3 {
        let value = alice.sipml5_header("REGISTER", &nonce, nc, "8511b1c4");
        let creds = Credentials::parse(&value).unwrap();
        assert!(!creds.is_empty());
        assert_eq!(creds.realm(), realm);
        assert_eq!(
            issuer.check(creds.nonce(), realm, now + u64::from(nc)),
            NonceStatus::Valid
        );
        let ha1 = lookup(creds.algorithm()).unwrap();
        assert!(verify_response(&creds, "REGISTER", ha1, None));
        assert!(counts.accept(creds.nonce(), creds.nc(), now + u64::from(nc)));
        // The same request again is a replay.
        assert!(!counts.accept(creds.nonce(), creds.nc(), now + u64::from(nc)));
    }

    // After the lifetime the right password earns `stale=true`, and the retry succeeds.
    let late = now + issuer.lifetime_secs() + 1;
    let value = alice.sipml5_header("REGISTER", &nonce, 4, "8511b1c4");
    let creds = Credentials::parse(&value).unwrap();
    assert!(verify_response(
        &creds,
        "REGISTER",
        lookup(Algorithm::Md5).unwrap(),
        None
    ));
    assert_eq!(issuer.check(creds.nonce(), realm, late), NonceStatus::Stale);
    let fresh = issuer.issue(late, realm, [4; 16]);
    assert!(challenge(realm, &fresh, Algorithm::Md5, true, None).ends_with(",stale=true"));
    let value = alice.sipml5_header("REGISTER", &fresh, 1, "77aa");
    let creds = Credentials::parse(&value).unwrap();
    assert_eq!(issuer.check(creds.nonce(), realm, late), NonceStatus::Valid);
    assert!(verify_response(
        &creds,
        "REGISTER",
        lookup(Algorithm::Md5).unwrap(),
        None
    ));
    assert!(counts.accept(creds.nonce(), creds.nc(), late));

    // The same client configured for SHA-256 verifies against the SHA-256 HA1.
    let sha = Client {
        alg: Algorithm::Sha256,
        ..alice
    };
    let value = sha.sipml5_header("MESSAGE", &fresh, 2, "77aa");
    let creds = Credentials::parse(&value).unwrap();
    assert_eq!(creds.algorithm(), Algorithm::Sha256);
    assert!(verify_response(
        &creds,
        "MESSAGE",
        lookup(Algorithm::Sha256).unwrap(),
        None
    ));
    assert!(!verify_response(
        &creds,
        "MESSAGE",
        lookup(Algorithm::Md5).unwrap(),
        None
    ));
}

#[test]
fn nonce_from_another_realm_or_forged_is_rejected_before_verification() {
    let issuer = NonceIssuer::new([1; 32]);
    let nonce = issuer.issue(10, "a.test", [0; 16]);
    assert_eq!(issuer.check(&nonce, "b.test", 10), NonceStatus::Invalid);
    let mut forged = nonce.clone();
    forged.replace_range(0..1, if nonce.starts_with('B') { "C" } else { "B" });
    assert_eq!(issuer.check(&forged, "a.test", 10), NonceStatus::Invalid);
    assert_eq!(issuer.check(&nonce, "a.test", 10 + 301), NonceStatus::Stale);
    let future = issuer.issue(10 + 60, "a.test", [0; 16]);
    assert_eq!(issuer.check(&future, "a.test", 10), NonceStatus::Invalid);
}

#[test]
fn rfc2069_mode_and_auth_int() {
    let client = Client {
        alg: Algorithm::Md5,
        user: "Mufasa",
        realm: "testrealm@host.com",
        password: "CircleOfLife",
        uri: "/dir/index.html",
    };
    let ha1 = ha1(client.user, client.realm, client.password, Algorithm::Md5);
    let nonce = "dcd98b7102dd2f0e8b11d0f600bfb0c093";

    // RFC 2069's own example response is wrong (it matches neither spelling of the password), so
    // pin RFC 2617 §3.5's inputs without qop to a value computed independently (Python hashlib).
    let fixed = "Digest username=\"Mufasa\",realm=\"testrealm@host.com\",nonce=\"dcd98b7102dd2f0e8b11d0f600bfb0c093\",uri=\"/dir/index.html\",response=\"670fd8c2df070c60b045671b8b24ff02\"";
    let creds = Credentials::parse(fixed).unwrap();
    let rfc2617_ha1 = super::ha1(
        "Mufasa",
        "testrealm@host.com",
        "Circle Of Life",
        Algorithm::Md5,
    );
    assert!(verify_response(&creds, "GET", &rfc2617_ha1, None));

    // RFC 2069: no qop, no cnonce, no nc.
    let response = client.response("GET", nonce, None, b"");
    let value = format!(
        "Digest username=\"Mufasa\", realm=\"testrealm@host.com\", nonce=\"{nonce}\", uri=\"/dir/index.html\", response=\"{response}\""
    );
    let creds = Credentials::parse(&value).unwrap();
    assert_eq!(
        (creds.qop(), creds.nc(), creds.cnonce()),
        (None, None, None)
    );
    assert!(verify_response(&creds, "GET", &ha1, None));
    assert!(!verify_response(&creds, "PUT", &ha1, None));
    let mut counts = NonceCounts::new(4, 300);
    assert!(counts.accept(creds.nonce(), creds.nc(), 0));
    assert!(
        !counts.accept(creds.nonce(), creds.nc(), 0),
        "one use per nonce without qop"
    );

    // auth-int covers the body.
    for alg in Algorithm::ALL {
        let client = Client { alg, ..client };
        let ha1 = super::ha1(client.user, client.realm, client.password, alg);
        let body = b"v=0\r\no=- 0 0 IN IP4 127.0.0.1\r\n";
        let response =
            client.response("INVITE", nonce, Some(("auth-int", "0000002A", "xyz")), body);
        let value = format!(
            "Digest username=\"Mufasa\",realm=\"testrealm@host.com\",nonce=\"{nonce}\",uri=\"/dir/index.html\",response=\"{response}\",algorithm={alg},qop=auth-int,nc=0000002A,cnonce=\"xyz\""
        );
        let creds = Credentials::parse(&value).unwrap();
        assert_eq!(creds.qop(), Some(Qop::AuthInt));
        assert_eq!(creds.nc(), Some(42));
        assert!(verify_response(&creds, "INVITE", &ha1, Some(body)), "{alg}");
        assert!(!verify_response(&creds, "INVITE", &ha1, Some(b"v=1")));
        assert!(!verify_response(&creds, "INVITE", &ha1, None));

        let empty = client.response("BYE", nonce, Some(("auth-int", "00000001", "xyz")), b"");
        let value = format!(
            "Digest username=\"Mufasa\",realm=\"testrealm@host.com\",nonce=\"{nonce}\",uri=\"/dir/index.html\",response=\"{empty}\",algorithm={alg},qop=auth-int,nc=00000001,cnonce=\"xyz\""
        );
        let creds = Credentials::parse(&value).unwrap();
        assert!(
            verify_response(&creds, "BYE", &ha1, None),
            "None is the empty body"
        );
        assert!(verify_response(&creds, "BYE", &ha1, Some(b"")));
    }
}

#[test]
fn ims_empty_credentials_never_verify() {
    let value = r#"Digest username="alice",realm="example.test",nonce="",uri="sip:example.test",response="""#;
    let creds = Credentials::parse(value).unwrap();
    assert!(creds.is_empty());
    let ha1 = ha1("alice", "example.test", "pw", Algorithm::Md5);
    assert!(!verify_response(&creds, "REGISTER", &ha1, None));
    assert_eq!(
        NonceIssuer::new([0; 32]).check(creds.nonce(), "example.test", 0),
        NonceStatus::Invalid
    );
}

/// xorshift64*: a fixed-seed generator so the mutation test is reproducible.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }

    fn below(&mut self, n: usize) -> usize {
        (self.next() % n.max(1) as u64) as usize
    }
}

/// Runs everything that reads wire input on `value`; any panic fails the test.
fn exercise(value: &str, issuer: &NonceIssuer, counts: &mut NonceCounts, ha1s: &[String]) {
    let _ = issuer.check(value, "example.test", 1_000);
    let _ = Algorithm::parse(value);
    if let Ok(creds) = Credentials::parse(value) {
        let _ = creds.is_empty();
        let _ = issuer.check(creds.nonce(), creds.realm(), 1_000);
        for ha1 in ha1s {
            let _ = verify_response(&creds, "REGISTER", ha1, Some(value.as_bytes()));
            let _ = verify_response(&creds, "", ha1, None);
        }
        let _ = counts.accept(creds.nonce(), creds.nc(), 1_000);
        let _ = challenge(
            creds.realm(),
            creds.nonce(),
            creds.algorithm(),
            true,
            creds.opaque(),
        );
    }
}

#[test]
fn truncated_and_mutated_inputs_never_panic() {
    let issuer = NonceIssuer::new([7; 32]);
    let mut counts = NonceCounts::new(64, 300);
    let nonce = issuer.issue(1_000, "example.test", [9; 16]);
    let alice = Client {
        alg: Algorithm::Md5,
        user: "alice",
        realm: "example.test",
        password: "pw",
        uri: "sip:example.test",
    };
    let mut ha1s: Vec<String> = Algorithm::ALL
        .iter()
        .map(|&a| ha1("alice", "example.test", "pw", a))
        .collect();
    ha1s.extend(["".into(), "zz".into(), "é".repeat(16)]);
    let seeds = [
        alice.sipml5_header("REGISTER", &nonce, 1, "8511"),
        Client { alg: Algorithm::Sha256, ..alice }.sipml5_header("INVITE", &nonce, 7, "c\\\"n"),
        r#"Digest username="al\"ice",realm="example.test",nonce="",uri="sip:example.test",response="""#.into(),
        "Digest username=\"a\",\r\n realm=\"r\" ,qop=\"auth-int\",nc=00000001,cnonce=\"é\",opaque=\"o\",x=\"y,z\",response=\"00\",uri=u,nonce=n".into(),
        "NoOneKnowsThisScheme opaque-data=here".into(),
        nonce.clone(),
    ];

    // Every prefix of every seed, at every char boundary.
    for seed in &seeds {
        for end in (0..=seed.len()).filter(|&i| seed.is_char_boundary(i)) {
            exercise(&seed[..end], &issuer, &mut counts, &ha1s);
        }
    }

    // Random byte-level mutations, decoded lossily so that invalid UTF-8 becomes U+FFFD.
    const ALPHABET: &[u8] = b"\"\\,= \t\r\n\0azAZ09-_:/@\xc3\xa9\xff";
    let mut rng = Rng(0x9e37_79b9_7f4a_7c15);
    for _ in 0..20_000 {
        let mut bytes = seeds[rng.below(seeds.len())].clone().into_bytes();
        for _ in 0..=rng.below(4) {
            let at = rng.below(bytes.len() + 1);
            let c = ALPHABET[rng.below(ALPHABET.len())];
            match rng.below(5) {
                0 => bytes.insert(at, c),
                1 if at < bytes.len() => {
                    bytes.remove(at);
                }
                2 if at < bytes.len() => bytes[at] = c,
                3 => bytes.truncate(at),
                _ => {
                    let from = rng.below(bytes.len() + 1);
                    let to = (from + rng.below(16)).min(bytes.len());
                    let chunk = bytes[from..to].to_vec();
                    bytes.splice(at..at, chunk);
                }
            }
        }
        let value = String::from_utf8_lossy(&bytes);
        exercise(&value, &issuer, &mut counts, &ha1s);
    }
    assert!(counts.len() <= counts.capacity());
}

/// One cache through a run of requests whose method, digest-uri, algorithm, qop and body
/// change in every pattern (same as the last, one part different, back again, prefixes of each
/// other): every verdict is the uncached one, for the right HA1, a wrong one and a wrong
/// method, and the right answers verify.
#[test]
fn the_kept_ha2_gives_the_verdicts_of_hashing_it_each_time() {
    let nonce = "dcd98b7102dd2f0e8b11d0f600bfb0c093";
    let methods = ["REGISTER", "INVITE", "INVITE:", "INV", ""];
    let uris = [
        "sip:example.test",
        "sip:bob@example.test",
        ":sip:a",
        "sip:b",
        "",
    ];
    let qops: [Option<&str>; 3] = [Some("auth"), None, Some("auth-int")];
    let mut cache = Ha2Cache::default();
    let mut checked = 0;
    for round in 0..3 {
        for (i, method) in methods.iter().enumerate() {
            for (j, uri) in uris.iter().enumerate() {
                let alg = Algorithm::ALL[(i + j + round) % 2];
                let qop = qops[(i * 3 + j + round) % 3];
                let client = Client {
                    alg,
                    user: "alice",
                    realm: "example.test",
                    password: "pw",
                    uri,
                };
                let body: &[u8] = if j % 2 == 0 { b"v=0" } else { b"" };
                let params = qop.map(|q| (q, "00000001", "0a4f113b"));
                let response = client.response(method, nonce, params, body);
                let qop_part = match qop {
                    Some(q) => format!(",qop={q},nc=00000001,cnonce=\"0a4f113b\""),
                    None => String::new(),
                };
                let value = format!(
                    "Digest username=\"alice\",realm=\"example.test\",nonce=\"{nonce}\",uri=\"{uri}\",response=\"{response}\",algorithm={alg}{qop_part}"
                );
                let creds = Credentials::parse(&value).unwrap();
                let right = ha1("alice", "example.test", "pw", alg);
                let wrong = ha1("alice", "example.test", "pW", alg);
                for ha1 in [&right, &wrong] {
                    for m in [*method, "BYE", *method] {
                        for body in [Some(body), None] {
                            assert_eq!(
                                verify_response_cached(&creds, m, ha1, body, &mut cache),
                                verify_response(&creds, m, ha1, body),
                                "{value} as {m}"
                            );
                            checked += 1;
                        }
                    }
                }
                assert!(verify_response_cached(
                    &creds,
                    method,
                    &right,
                    Some(body),
                    &mut cache
                ));
            }
        }
    }
    assert_eq!(checked, 3 * 25 * 12);
}
