//! Reading the RTCP a host hands to `incoming_rtcp`: key-frame requests (PLI, FIR) for what the
//! plugin sends, and receiver reports about streams the host forwards for it (see the
//! callback's docs in [`crate::abi`]). Only the one question every media plugin asks lives
//! here; a plugin that reads report blocks uses an RTCP crate (the screen-share relay uses
//! `rtcp-types`).

/// RTCP payload-specific feedback (RFC 4585).
const PSFB: u8 = 206;
const FMT_PLI: u8 = 1;
const FMT_FIR: u8 = 4;

/// Whether a (possibly compound) RTCP packet asks for a key frame: a PLI or a FIR in it. A
/// malformed packet ends the walk; what was read before it counts.
pub fn asks_for_keyframe(mut packet: &[u8]) -> bool {
    while packet.len() >= 4 && packet[0] >> 6 == 2 {
        let fmt = packet[0] & 0x1f;
        let len = 4 + 4 * usize::from(u16::from_be_bytes([packet[2], packet[3]]));
        if packet.len() < len {
            return false;
        }
        if packet[1] == PSFB && ((fmt == FMT_PLI && len >= 12) || (fmt == FMT_FIR && len >= 20)) {
            return true;
        }
        packet = &packet[len..];
    }
    false
}

#[cfg(test)]
mod tests {
    use super::*;

    const PLI: [u8; 12] = [0x81, 206, 0, 2, 0, 0, 0, 0, 0, 0, 0, 1];
    const RR: [u8; 32] = {
        let mut rr = [0u8; 32];
        rr[0] = 0x81;
        rr[1] = 201;
        rr[3] = 7;
        rr
    };

    #[test]
    fn key_frame_requests_are_found_in_compound_packets_and_reports_are_not_ones() {
        assert!(asks_for_keyframe(&PLI));
        assert!(!asks_for_keyframe(&RR));
        let compound: Vec<u8> = RR.iter().chain(PLI.iter()).copied().collect();
        assert!(asks_for_keyframe(&compound));
        let mut fir = vec![0x84, 206, 0, 4];
        fir.extend_from_slice(&[0; 16]);
        assert!(asks_for_keyframe(&fir));
        assert!(!asks_for_keyframe(&PLI[..8]), "truncated");
        assert!(!asks_for_keyframe(&[]));
    }
}
