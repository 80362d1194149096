//! Standard Webhooks signatures: `v1,<base64 HMAC-SHA256 of "{id}.{timestamp}.{body}">`.

use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use hmac::{KeyInit, Mac};

/// The key bytes of a secret: a `whsec_` prefix means the rest is base64 of the key; otherwise
/// the secret's UTF-8 bytes are the key. A `whsec_` secret whose rest is not base64 falls back to
/// the bytes of the whole secret rather than failing every delivery.
pub(crate) fn key_bytes(secret: &str) -> Vec<u8> {
    match secret
        .strip_prefix("whsec_")
        .map(|rest| STANDARD.decode(rest))
    {
        Some(Ok(key)) => key,
        _ => secret.as_bytes().to_vec(),
    }
}

/// The `webhook-signature` header value.
pub(crate) fn signature(secret: &str, id: &str, timestamp: i64, body: &[u8]) -> String {
    let mut mac = hmac::Hmac::<sha2::Sha256>::new_from_slice(&key_bytes(secret))
        .expect("HMAC takes keys of any length");
    mac.update(id.as_bytes());
    mac.update(b".");
    mac.update(timestamp.to_string().as_bytes());
    mac.update(b".");
    mac.update(body);
    format!("v1,{}", STANDARD.encode(mac.finalize().into_bytes()))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The example of the Standard Webhooks specification.
    #[test]
    fn standard_webhooks_example() {
        let secret = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw";
        let id = "msg_p5jXN8AQM9LWM0D4loKWxJek";
        let body = br#"{"test": 2432232314}"#;
        assert_eq!(
            signature(secret, id, 1614265330, body),
            "v1,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE="
        );
    }

    #[test]
    fn plain_secrets_use_their_bytes() {
        assert_eq!(key_bytes("hunter2"), b"hunter2");
        assert_eq!(key_bytes("whsec_aGk="), b"hi");
    }
}
