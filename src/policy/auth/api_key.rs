//! `api_key`: a key read from a header, a query parameter or a cookie, hashed with
//! SHA-256 and compared with every consumer's key digests in constant time: the time a
//! request takes does not depend on which digest (if any) matched, nor where two
//! digests first differ. The cost is one SHA-256 and one 32-byte comparison per
//! configured key; the match is a consumer.

use std::sync::Arc;

use http::HeaderValue;
use subtle::{ConditionallySelectable, ConstantTimeEq};

use super::credentials::{self, MAX_CREDENTIAL_BYTES};
use super::{AuthRequest, Failure, Identity};
use crate::config::auth::sha256;
use crate::config::auth::{ApiKeyConfig, ConsumerConfig, CredentialSource};

/// Marks "no key matched" in the constant-time scan.
const NO_CONSUMER: u32 = u32::MAX;

/// An `api_key` method, compiled for one configuration.
#[derive(Debug)]
pub struct ApiKey {
    from: Box<[CredentialSource]>,
    /// Every consumer's key digests with the consumer's index.
    keys: Box<[([u8; 32], u32)]>,
    /// Consumer names, by index.
    names: Arc<[Arc<str>]>,
    /// Per consumer index: admitted by this method.
    admitted: Option<Box<[bool]>>,
    challenge: HeaderValue,
}

impl ApiKey {
    pub fn new(
        config: &ApiKeyConfig,
        consumers: &[ConsumerConfig],
        names: Arc<[Arc<str>]>,
    ) -> Self {
        let keys = consumers
            .iter()
            .enumerate()
            .flat_map(|(i, c)| c.api_keys.iter().map(move |k| (k.0, i as u32)))
            .collect();
        let admitted = config.consumers.as_ref().map(|list| {
            (0..consumers.len())
                .map(|i| list.contains(&i))
                .collect::<Box<[bool]>>()
        });
        ApiKey {
            from: config.from.clone().into_boxed_slice(),
            keys,
            names,
            admitted,
            challenge: config.challenge.clone(),
        }
    }

    pub fn sources(&self) -> &[CredentialSource] {
        &self.from
    }

    pub fn authenticate(&self, request: &AuthRequest<'_>) -> Result<Identity, Failure> {
        let key = self
            .from
            .iter()
            .find_map(|source| credentials::read(source, request.headers, request.query));
        let Some(key) = key else {
            return Err(Failure::unauthorized(self.challenge.clone(), true));
        };
        if key.is_empty() || key.len() > MAX_CREDENTIAL_BYTES {
            return Err(Failure::unauthorized(self.challenge.clone(), false));
        }
        let digest = sha256(&key);
        let mut found = NO_CONSUMER;
        for (candidate, consumer) in self.keys.iter() {
            let equal = candidate.ct_eq(&digest);
            found = u32::conditional_select(&found, consumer, equal);
        }
        if found == NO_CONSUMER {
            return Err(Failure::unauthorized(self.challenge.clone(), false));
        }
        let index = found as usize;
        if let Some(admitted) = &self.admitted {
            if !admitted.get(index).copied().unwrap_or(false) {
                return Err(Failure::Forbidden);
            }
        }
        Ok(Identity::consumer(self.names.get(index).cloned()))
    }
}
