//! Signed webhooks: a sender signs `"{timestamp}.{body}"` with HMAC-SHA256 under a
//! shared secret and sends `t=TIMESTAMP,v1=HEX` (one `v1` per secret while secrets
//! rotate); a [`WebhookVerifier`] accepts a request only if a signature verifies
//! under one of its secrets, its timestamp is within the tolerance of now, and the
//! same signature was not accepted before (replays are refused for as long as the
//! timestamp would still be accepted, so the memory of seen signatures is bounded
//! by the request rate times the tolerance).

use std::collections::{BTreeMap, HashSet};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use hmac::{Hmac, Mac};
use parking_lot::Mutex;
use sha2::Sha256;

/// The header a signature travels in.
pub const SIGNATURE_HEADER: &str = "x-rag-signature";
/// The shortest secret accepted, in bytes.
pub const MIN_WEBHOOK_SECRET: usize = 32;
/// The most signatures remembered at once; past it requests are refused as busy
/// rather than forgetting a signature that could then be replayed.
pub const MAX_REMEMBERED: usize = 1_000_000;

/// Why a webhook request was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum WebhookError {
    /// The signature header is missing or not `t=…,v1=…`.
    #[error("malformed webhook signature header")]
    Malformed,
    /// No `v1` signature verifies under any configured secret.
    #[error("bad webhook signature")]
    BadSignature,
    /// The timestamp is further from now than the tolerance.
    #[error("webhook timestamp is {skew_s} s from now; at most {tolerance_s} s accepted")]
    Stale {
        /// How far from now.
        skew_s: u64,
        /// The tolerance.
        tolerance_s: u64,
    },
    /// This signature was accepted before.
    #[error("webhook replayed")]
    Replayed,
    /// Too many signatures are remembered to accept another safely.
    #[error("too many recent webhooks to check for replays")]
    Busy,
    /// A secret is shorter than [`MIN_WEBHOOK_SECRET`], or none is given.
    #[error("webhook secrets need at least {MIN_WEBHOOK_SECRET} bytes each, and one at least")]
    WeakSecret,
}

/// Verifies signed webhook requests; cheap to share across threads.
pub struct WebhookVerifier {
    secrets: Vec<Vec<u8>>,
    tolerance: Duration,
    seen: Mutex<Seen>,
}

#[derive(Default)]
struct Seen {
    by_time: BTreeMap<u64, HashSet<[u8; 32]>>,
    count: usize,
}

impl std::fmt::Debug for WebhookVerifier {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("WebhookVerifier")
            .field("secrets", &self.secrets.len())
            .field("tolerance", &self.tolerance)
            .finish_non_exhaustive()
    }
}

fn mac(secret: &[u8], timestamp: u64, body: &[u8]) -> Result<Hmac<Sha256>, WebhookError> {
    let mut m = Hmac::<Sha256>::new_from_slice(secret).map_err(|_| WebhookError::WeakSecret)?;
    m.update(timestamp.to_string().as_bytes());
    m.update(b".");
    m.update(body);
    Ok(m)
}

/// The header value that signs `body` at `timestamp` (seconds since the Unix epoch)
/// with `secret`: what a sender (or a test) puts in [`SIGNATURE_HEADER`].
pub fn sign_webhook(secret: &[u8], timestamp: u64, body: &[u8]) -> Result<String, WebhookError> {
    if secret.len() < MIN_WEBHOOK_SECRET {
        return Err(WebhookError::WeakSecret);
    }
    let tag = mac(secret, timestamp, body)?.finalize().into_bytes();
    Ok(format!("t={timestamp},v1={}", hex::encode(tag)))
}

impl WebhookVerifier {
    /// A verifier accepting any of `secrets`, timestamps within `tolerance`
    /// (5 minutes is usual).
    pub fn new(secrets: Vec<Vec<u8>>, tolerance: Duration) -> Result<Self, WebhookError> {
        if secrets.is_empty() || secrets.iter().any(|s| s.len() < MIN_WEBHOOK_SECRET) {
            return Err(WebhookError::WeakSecret);
        }
        Ok(Self {
            secrets,
            tolerance,
            seen: Mutex::new(Seen::default()),
        })
    }

    /// Checks a request's signature header against its raw body, now.
    pub fn verify(&self, header: Option<&str>, body: &[u8]) -> Result<(), WebhookError> {
        self.verify_at(header, body, SystemTime::now())
    }

    /// [`WebhookVerifier::verify`] at a given time.
    pub fn verify_at(
        &self,
        header: Option<&str>,
        body: &[u8],
        now: SystemTime,
    ) -> Result<(), WebhookError> {
        let header = header.ok_or(WebhookError::Malformed)?;
        let mut timestamp = None;
        let mut signatures = Vec::new();
        for part in header.split(',') {
            match part.trim().split_once('=') {
                Some(("t", v)) if timestamp.is_none() => {
                    timestamp = Some(v.parse::<u64>().map_err(|_| WebhookError::Malformed)?);
                }
                Some(("v1", v)) if signatures.len() < 8 => {
                    let mut tag = [0u8; 32];
                    hex::decode_to_slice(v, &mut tag).map_err(|_| WebhookError::Malformed)?;
                    signatures.push(tag);
                }
                Some(_) => {}
                None => return Err(WebhookError::Malformed),
            }
        }
        let timestamp = timestamp.ok_or(WebhookError::Malformed)?;
        if signatures.is_empty() {
            return Err(WebhookError::Malformed);
        }
        let now_s = now.duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs());
        let skew = now_s.abs_diff(timestamp);
        if skew > self.tolerance.as_secs() {
            return Err(WebhookError::Stale {
                skew_s: skew,
                tolerance_s: self.tolerance.as_secs(),
            });
        }
        let valid = signatures.iter().any(|tag| {
            self.secrets.iter().any(|secret| {
                mac(secret, timestamp, body).is_ok_and(|m| m.verify_slice(&tag[..]).is_ok())
            })
        });
        if !valid {
            return Err(WebhookError::BadSignature);
        }
        // A replay is the same signed message, whichever of its signatures comes
        // back (a header stripped to its other secret's `v1` is the same request).
        let tag: [u8; 32] = {
            use sha2::Digest;
            let mut h = Sha256::new();
            h.update(timestamp.to_string().as_bytes());
            h.update(b".");
            h.update(body);
            h.finalize().into()
        };
        let tag = &tag;
        let mut seen = self.seen.lock();
        // Forget what can no longer be replayed: timestamps out of the tolerance.
        let oldest = now_s.saturating_sub(self.tolerance.as_secs());
        let keep = seen.by_time.split_off(&oldest);
        let dropped: usize = seen.by_time.values().map(HashSet::len).sum();
        seen.by_time = keep;
        seen.count -= dropped;
        if seen
            .by_time
            .get(&timestamp)
            .is_some_and(|s| s.contains(tag))
        {
            return Err(WebhookError::Replayed);
        }
        if seen.count >= MAX_REMEMBERED {
            return Err(WebhookError::Busy);
        }
        seen.by_time.entry(timestamp).or_default().insert(*tag);
        seen.count += 1;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const SECRET: &[u8] = b"a webhook secret of thirty-two bytes or more";
    const OLD: &[u8] = b"the previous secret, still accepted while rotating";

    fn at(s: u64) -> SystemTime {
        UNIX_EPOCH + Duration::from_secs(s)
    }

    fn verifier() -> WebhookVerifier {
        WebhookVerifier::new(
            vec![SECRET.to_vec(), OLD.to_vec()],
            Duration::from_secs(300),
        )
        .unwrap()
    }

    #[test]
    fn a_signed_body_is_accepted_once() {
        let v = verifier();
        let body = br#"{"id":"faq","op":"upsert"}"#;
        let h = sign_webhook(SECRET, 1_000_000, body).unwrap();
        v.verify_at(Some(&h), body, at(1_000_010)).unwrap();
        assert_eq!(
            v.verify_at(Some(&h), body, at(1_000_020)),
            Err(WebhookError::Replayed)
        );
        // Signed with the secret being rotated out: accepted too.
        let h = sign_webhook(OLD, 1_000_001, body).unwrap();
        v.verify_at(Some(&h), body, at(1_000_010)).unwrap();
    }

    #[test]
    fn a_replay_stripped_to_its_other_signature_is_still_a_replay() {
        let v = verifier();
        let body = b"{}";
        let new = sign_webhook(SECRET, 1_000_000, body).unwrap();
        let old = sign_webhook(OLD, 1_000_000, body).unwrap();
        let old_v1 = old.split_once(",v1=").unwrap().1;
        let both = format!("{new},v1={old_v1}");
        v.verify_at(Some(&both), body, at(1_000_000)).unwrap();
        assert_eq!(
            v.verify_at(Some(&old), body, at(1_000_001)),
            Err(WebhookError::Replayed)
        );
        assert_eq!(
            v.verify_at(Some(&new), body, at(1_000_001)),
            Err(WebhookError::Replayed)
        );
    }

    #[test]
    fn tampering_staleness_and_junk_are_refused() {
        let v = verifier();
        let body = b"{\"id\":\"faq\"}";
        let h = sign_webhook(SECRET, 1_000_000, body).unwrap();
        assert_eq!(
            v.verify_at(Some(&h), b"{\"id\":\"fax\"}", at(1_000_000)),
            Err(WebhookError::BadSignature)
        );
        let other = sign_webhook(
            b"an attacker's secret of thirty-two bytes..",
            1_000_000,
            body,
        )
        .unwrap();
        assert_eq!(
            v.verify_at(Some(&other), body, at(1_000_000)),
            Err(WebhookError::BadSignature)
        );
        // The timestamp is signed: moving it breaks the signature.
        let moved = h.replace("t=1000000", "t=1000100");
        assert_eq!(
            v.verify_at(Some(&moved), body, at(1_000_100)),
            Err(WebhookError::BadSignature)
        );
        assert!(matches!(
            v.verify_at(Some(&h), body, at(1_000_301)),
            Err(WebhookError::Stale { .. })
        ));
        assert!(matches!(
            v.verify_at(Some(&h), body, at(999_000)),
            Err(WebhookError::Stale { .. })
        ));
        for junk in [
            None,
            Some(""),
            Some("t=abc,v1=00"),
            Some("v1=zz"),
            Some("t=1000000"),
            Some("nonsense"),
        ] {
            assert_eq!(
                v.verify_at(junk, body, at(1_000_000)),
                Err(WebhookError::Malformed),
                "{junk:?}"
            );
        }
    }

    #[test]
    fn replays_are_remembered_for_the_tolerance_and_then_stale() {
        let v = verifier();
        let body = b"x";
        let h = sign_webhook(SECRET, 1_000_000, body).unwrap();
        v.verify_at(Some(&h), body, at(1_000_000)).unwrap();
        // Many later requests prune old entries, but the first is still refused
        // while its timestamp is acceptable, and stale after.
        for t in 1_000_001..1_000_200 {
            let h = sign_webhook(SECRET, t, body).unwrap();
            v.verify_at(Some(&h), body, at(t)).unwrap();
        }
        assert_eq!(
            v.verify_at(Some(&h), body, at(1_000_250)),
            Err(WebhookError::Replayed)
        );
        assert!(matches!(
            v.verify_at(Some(&h), body, at(1_000_400)),
            Err(WebhookError::Stale { .. })
        ));
        assert!(v.seen.lock().count <= 200);
    }

    #[test]
    fn short_secrets_are_refused() {
        assert!(WebhookVerifier::new(vec![b"short".to_vec()], Duration::from_secs(1)).is_err());
        assert!(WebhookVerifier::new(Vec::new(), Duration::from_secs(1)).is_err());
        assert_eq!(
            sign_webhook(b"short", 1, b"x"),
            Err(WebhookError::WeakSecret)
        );
    }
}
