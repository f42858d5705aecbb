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

    /// The first 8 bytes of the flow's HMAC, in lower-case hex.
    fn mac(&self, flow: u64) -> [u8; 16] {
        let mut mac = Hmac::<Sha256>::new_from_slice(&self.key).expect("HMAC takes any key length");
        mac.update(&flow.to_be_bytes());
        let tag = mac.finalize().into_bytes();
        let mut hex = [0u8; 16];
        for (pair, b) in hex.chunks_exact_mut(2).zip(&tag[..8]) {
            pair[0] = HEX[usize::from(b >> 4)];
            pair[1] = HEX[usize::from(b & 0xf)];
        }
        hex
    }

    /// The token for a flow: `hf<flow>x<mac>`.
    pub fn encode(&self, flow: FlowId) -> String {
        let mut out = String::with_capacity(PREFIX.len() + 20 + 1 + 16);
        self.encode_into(flow, &mut out);
        out
    }

    /// [`FlowTokens::encode`], appended to `out`.
    pub fn encode_into(&self, flow: FlowId, out: &mut String) {
        out.push_str(PREFIX);
        out.push_str(itoa::Buffer::new().format(flow.get()));
        out.push('x');
        // Hex digits: ASCII.
        out.push_str(std::str::from_utf8(&self.mac(flow.get())).unwrap_or_default());
    }

    /// The flow named by a token, if the MAC is right.
    pub fn decode(&self, token: &str) -> Option<FlowId> {
        let rest = token.strip_prefix(PREFIX)?;
        let (id, mac) = rest.split_once('x')?;
        let id: u64 = id.parse().ok()?;
        let expected = self.mac(id);
        let same = expected.len() == mac.len()
            && expected
                .iter()
                .zip(mac.bytes())
                .fold(0u8, |acc, (a, b)| acc | (a ^ b))
                == 0;
        same.then(|| FlowId::from_raw(id))
    }
}

const HEX: &[u8; 16] = b"0123456789abcdef";

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

    #[test]
    fn token_is_the_flow_and_the_mac_prefix_in_hex() {
        let tokens = FlowTokens::new([7; 32]);
        let mut mac = Hmac::<Sha256>::new_from_slice(&[7; 32]).unwrap();
        mac.update(&1234u64.to_be_bytes());
        let tag = mac.finalize().into_bytes();
        let hex: String = tag[..8].iter().map(|b| format!("{b:02x}")).collect();
        let t = tokens.encode(FlowId::from_raw(1234));
        assert_eq!(t, format!("hf1234x{hex}"));
        assert_eq!(
            tokens.decode(&t.to_ascii_uppercase().replace("HF", "hf").replace('X', "x")),
            None
        );
        assert_eq!(tokens.decode(&t[..t.len() - 1]), None);
    }
}
