//! Flow tokens: what Huddle writes into the user part of its Record-Route URIs so that an
//! in-dialog request finds the connection a browser registered over (RFC 5626 §5.3 style).
//! The token names the flow and carries a MAC so that a peer cannot steer requests onto
//! another user's connection.

use hmac::{Hmac, Mac};
use sha2::Sha256;

use crate::transport::FlowId;

/// Makes and checks flow tokens with a per-process key.
#[derive(Debug, Clone)]
pub struct FlowTokens {
    key: [u8; 32],
}

const PREFIX: &str = "hf";

impl FlowTokens {
    /// A token maker with this key.
    pub fn new(key: [u8; 32]) -> Self {
        FlowTokens { key }
    }

    fn mac(&self, flow: u64) -> String {
        let mut mac = Hmac::<Sha256>::new_from_slice(&self.key).expect("HMAC takes any key length");
        mac.update(&flow.to_be_bytes());
        let tag = mac.finalize().into_bytes();
        tag[..8].iter().map(|b| format!("{b:02x}")).collect()
    }

    /// The token for a flow: `hf<flow>x<mac>`.
    pub fn encode(&self, flow: FlowId) -> String {
        format!("{PREFIX}{}x{}", flow.get(), self.mac(flow.get()))
    }

    /// The flow named by a token, if the MAC is right.
    pub fn decode(&self, token: &str) -> Option<FlowId> {
        let rest = token.strip_prefix(PREFIX)?;
        let (id, mac) = rest.split_once('x')?;
        let id: u64 = id.parse().ok()?;
        let expected = self.mac(id);
        let same = expected.len() == mac.len()
            && expected
                .bytes()
                .zip(mac.bytes())
                .fold(0u8, |acc, (a, b)| acc | (a ^ b))
                == 0;
        same.then(|| FlowId::from_raw(id))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip_and_forgery() {
        let tokens = FlowTokens::new([7; 32]);
        let flow = FlowId::from_raw(42);
        let t = tokens.encode(flow);
        assert_eq!(tokens.decode(&t), Some(flow));
        assert_eq!(tokens.decode(&t.replace("hf42", "hf43")), None);
        assert_eq!(FlowTokens::new([8; 32]).decode(&t), None);
        assert_eq!(tokens.decode("alice"), None);
    }
}
