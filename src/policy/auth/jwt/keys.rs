//! A JWKS document turned into the keys tokens are verified with: each key with the
//! algorithms it may verify, decided by its own type and curve (and its `alg` when it
//! names one), never by a token. Symmetric (`oct`) keys, encryption keys and keys of
//! unknown types are skipped: a public document has no business holding them.

use jsonwebtoken::jwk::{AlgorithmParameters, EllipticCurve, Jwk, PublicKeyUse};
use jsonwebtoken::{Algorithm, DecodingKey};
use serde::Deserialize;

use crate::config::jwt::JwtAlgorithm;

/// Keys kept from one document at most: a token without `kid` is tried against each
/// key that fits its algorithm, so the list bounds the work one token can cause.
pub const MAX_KEYS: usize = 32;

/// One verification key.
pub struct Key {
    pub kid: Option<String>,
    /// What it may verify.
    pub algorithms: &'static [Algorithm],
    /// Its own `alg`, when the document names one: then only that.
    pub only: Option<Algorithm>,
    pub key: DecodingKey,
}

impl Key {
    pub fn verifies(&self, algorithm: Algorithm) -> bool {
        self.only.is_none_or(|only| only == algorithm) && self.algorithms.contains(&algorithm)
    }
}

impl std::fmt::Debug for Key {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Key")
            .field("kid", &self.kid)
            .field("algorithms", &self.algorithms)
            .finish_non_exhaustive()
    }
}

/// Why a document gave no keys.
#[derive(Debug, thiserror::Error)]
pub enum KeysError {
    #[error("not a JWKS document: {0}")]
    Syntax(String),
    #[error("no usable signature key among its {0} keys")]
    NoUsableKey(usize),
}

#[derive(Deserialize)]
struct Document {
    keys: Vec<serde_json::Value>,
}

/// The usable keys of `body` (at most [`MAX_KEYS`]) and how many were skipped.
pub fn parse_document(body: &[u8]) -> Result<(Vec<Key>, usize), KeysError> {
    let document: Document =
        serde_json::from_slice(body).map_err(|e| KeysError::Syntax(e.to_string()))?;
    let total = document.keys.len();
    let keys: Vec<Key> = document
        .keys
        .into_iter()
        .filter_map(|value| serde_json::from_value::<Jwk>(value).ok())
        .filter_map(|jwk| key_of(&jwk))
        .take(MAX_KEYS)
        .collect();
    if keys.is_empty() {
        return Err(KeysError::NoUsableKey(total));
    }
    let skipped = total - keys.len();
    Ok((keys, skipped))
}

fn key_of(jwk: &Jwk) -> Option<Key> {
    if matches!(
        jwk.common.public_key_use,
        Some(PublicKeyUse::Encryption | PublicKeyUse::Other(_))
    ) {
        return None;
    }
    let algorithms: &'static [Algorithm] = match &jwk.algorithm {
        AlgorithmParameters::RSA(_) => &[
            Algorithm::RS256,
            Algorithm::RS384,
            Algorithm::RS512,
            Algorithm::PS256,
            Algorithm::PS384,
            Algorithm::PS512,
        ],
        AlgorithmParameters::EllipticCurve(ec) => match ec.curve {
            EllipticCurve::P256 => &[Algorithm::ES256],
            EllipticCurve::P384 => &[Algorithm::ES384],
            _ => return None,
        },
        AlgorithmParameters::OctetKeyPair(okp) if okp.curve == EllipticCurve::Ed25519 => {
            &[Algorithm::EdDSA]
        }
        _ => return None,
    };
    let only = match jwk.common.key_algorithm {
        None => None,
        Some(alg) => match Algorithm::try_from(alg) {
            Ok(alg) if algorithms.contains(&alg) => Some(alg),
            // An `alg` that does not fit the key's type, or that is no signature
            // algorithm: the key is not used at all.
            _ => return None,
        },
    };
    let key = DecodingKey::from_jwk(jwk).ok()?;
    Some(Key {
        kid: jwk.common.key_id.clone(),
        algorithms,
        only,
        key,
    })
}

/// The crate's name for a configured algorithm.
pub fn algorithm(configured: JwtAlgorithm) -> Algorithm {
    match configured {
        JwtAlgorithm::RS256 => Algorithm::RS256,
        JwtAlgorithm::RS384 => Algorithm::RS384,
        JwtAlgorithm::RS512 => Algorithm::RS512,
        JwtAlgorithm::PS256 => Algorithm::PS256,
        JwtAlgorithm::PS384 => Algorithm::PS384,
        JwtAlgorithm::PS512 => Algorithm::PS512,
        JwtAlgorithm::ES256 => Algorithm::ES256,
        JwtAlgorithm::ES384 => Algorithm::ES384,
        JwtAlgorithm::EdDSA => Algorithm::EdDSA,
        JwtAlgorithm::HS256 => Algorithm::HS256,
        JwtAlgorithm::HS384 => Algorithm::HS384,
        JwtAlgorithm::HS512 => Algorithm::HS512,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const RSA_N: &str = "sXchDaQebHnPiGvyDOAT4saGEUetSyo9MKLOoWFsueri23bOdgWp4Dy1WlUzewbgBHod5pcM9H95GQRV3JDXboIRROSBigeC5yjU1hGzHHyXss8UDprecbAYxknTcQkhslANGRUZmdTOQ5qTRsLAt6BTYuyvVRdhS8exSZEy_c4gs_7svlJJQ4H9_NxsiIoLwAEk7-Q3UXERGYw_75IDrGA84-lA_-Ct4eTlXHBIY2EaV7t7LjJaynVJCpkv4LKjTTAumiGUIuQhrNhZLuF_RJLqHpM2kgWFLU7-VTdL1VbC2tejvcI2BlMkEpk1BzBZI0KQB0GaDWFLN-aEAw3vRw";

    #[test]
    fn keys_get_the_algorithms_of_their_type() {
        let body = format!(
            r#"{{"keys":[
                {{"kty":"RSA","kid":"r1","n":"{RSA_N}","e":"AQAB"}},
                {{"kty":"RSA","kid":"r2","alg":"PS256","n":"{RSA_N}","e":"AQAB"}},
                {{"kty":"RSA","kid":"enc","use":"enc","n":"{RSA_N}","e":"AQAB"}},
                {{"kty":"RSA","kid":"wrong-alg","alg":"ES256","n":"{RSA_N}","e":"AQAB"}},
                {{"kty":"oct","kid":"secret","k":"c2VjcmV0"}},
                {{"kty":"XYZ","kid":"unknown"}}
            ]}}"#
        );
        let (keys, skipped) = parse_document(body.as_bytes()).expect("two usable keys");
        assert_eq!(skipped, 4);
        assert_eq!(keys[0].kid.as_deref(), Some("r1"));
        assert!(keys[0].verifies(Algorithm::RS256));
        assert!(keys[0].verifies(Algorithm::PS512));
        assert!(
            !keys[0].verifies(Algorithm::HS256),
            "never an HMAC algorithm"
        );
        assert!(!keys[0].verifies(Algorithm::ES256));
        assert!(keys[1].verifies(Algorithm::PS256));
        assert!(!keys[1].verifies(Algorithm::RS256), "its alg restricts it");
    }

    #[test]
    fn a_document_without_usable_keys_is_an_error() {
        assert!(matches!(
            parse_document(br#"{"keys":[{"kty":"oct","k":"c2VjcmV0"}]}"#),
            Err(KeysError::NoUsableKey(1))
        ));
        assert!(matches!(
            parse_document(b"<html>"),
            Err(KeysError::Syntax(_))
        ));
        assert!(matches!(
            parse_document(br#"{"keys":[]}"#),
            Err(KeysError::NoUsableKey(0))
        ));
    }
}
