//! An identity provider for the JWT tests: signing keys (the test-only PEMs under
//! `tests/fixtures/jwt/`), tokens, and a JWKS document served over HTTPS with the test
//! CA, whose keys a test rotates and which it can take down; it counts its fetches.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{SystemTime, UNIX_EPOCH};

use http::StatusCode;
use jsonwebtoken::jwk::{Jwk, JwkSet};
use jsonwebtoken::{Algorithm, EncodingKey, Header};
use serde_json::{json, Value};

use super::pki::Pki;
use super::{Backend, Reply};

pub const ISSUER: &str = "https://idp.test/";
const FIXTURES: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/fixtures/jwt");

pub fn pem(name: &str) -> Vec<u8> {
    std::fs::read(format!("{FIXTURES}/{name}")).expect("test key")
}

/// A signing key with its `kid`.
pub struct Signer {
    pub kid: &'static str,
    pub alg: Algorithm,
    pub key: EncodingKey,
}

impl Signer {
    pub fn rsa(file: &str, kid: &'static str) -> Signer {
        Signer {
            kid,
            alg: Algorithm::RS256,
            key: EncodingKey::from_rsa_pem(&pem(file)).expect("RSA key"),
        }
    }

    pub fn ec(kid: &'static str) -> Signer {
        Signer {
            kid,
            alg: Algorithm::ES256,
            key: EncodingKey::from_ec_pem(&pem("ec.pem")).expect("EC key"),
        }
    }

    pub fn jwk(&self) -> Jwk {
        let mut jwk = Jwk::from_encoding_key(&self.key, self.alg).expect("public JWK");
        jwk.common.key_id = Some(self.kid.to_owned());
        jwk
    }

    pub fn sign(&self, claims: &Value) -> String {
        let mut header = Header::new(self.alg);
        header.kid = Some(self.kid.to_owned());
        jsonwebtoken::encode(&header, claims, &self.key).expect("signs")
    }
}

pub fn now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .expect("after 1970")
        .as_secs()
}

/// Valid claims for `sub` (issuer [`ISSUER`], audience `api`, ten minutes left), with
/// `extra` merged in.
pub fn claims(sub: &str, extra: Value) -> Value {
    let mut claims = json!({
        "iss": ISSUER,
        "aud": "api",
        "sub": sub,
        "exp": now() + 600,
        "iat": now(),
        "scope": "read:users",
    });
    if let (Some(claims), Value::Object(extra)) = (claims.as_object_mut(), extra) {
        claims.extend(extra);
    }
    claims
}

/// The identity provider: `/jwks.json` over HTTPS.
pub struct Idp {
    pub backend: Backend,
    keys: Arc<Mutex<Vec<Jwk>>>,
    down: Arc<AtomicBool>,
    /// The CA that signed its certificate (for the upstream's `tls.ca`).
    pub ca: std::path::PathBuf,
    _pki: Pki,
}

impl Idp {
    pub async fn start(keys: Vec<Jwk>) -> Idp {
        let pki = Pki::new("idp CA");
        let ca = pki.write_ca();
        let served = Arc::new(Mutex::new(keys));
        let down = Arc::new(AtomicBool::new(false));
        let (keys, is_down) = (served.clone(), down.clone());
        let backend = Backend::start_tls(
            pki.server_config(&["127.0.0.1"], &[], false),
            move |_, _| {
                let (keys, is_down) = (keys.clone(), is_down.clone());
                async move {
                    if is_down.load(Ordering::SeqCst) {
                        return Reply::text(StatusCode::SERVICE_UNAVAILABLE, "down");
                    }
                    let set = JwkSet {
                        keys: keys.lock().expect("lock").clone(),
                    };
                    let mut reply = Reply::ok(serde_json::to_string(&set).expect("serializes"));
                    reply.headers_mut().insert(
                        "cache-control",
                        http::HeaderValue::from_static("public, max-age=3600"),
                    );
                    reply
                }
            },
        )
        .await;
        Idp {
            backend,
            keys: served,
            down,
            ca,
            _pki: pki,
        }
    }

    /// Requests for the document so far.
    pub fn fetches(&self) -> usize {
        self.backend.state.arrived()
    }

    /// Serves `keys` from now on (a rotation).
    pub fn serve(&self, keys: Vec<Jwk>) {
        *self.keys.lock().expect("lock") = keys;
    }

    /// Answers 503 from now on (or again the document).
    pub fn set_down(&self, down: bool) {
        self.down.store(down, Ordering::SeqCst);
    }
}

/// `text` in unpadded base64url (for hand-made tokens).
pub fn base64url(text: &str) -> String {
    const ALPHABET: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";
    let mut out = String::new();
    for chunk in text.as_bytes().chunks(3) {
        let n = chunk
            .iter()
            .enumerate()
            .fold(0u32, |n, (i, b)| n | (u32::from(*b) << (16 - 8 * i)));
        for i in 0..=chunk.len() {
            out.push(char::from(ALPHABET[((n >> (18 - 6 * i)) & 63) as usize]));
        }
    }
    out
}
