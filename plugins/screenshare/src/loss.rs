//! Each viewer's reception as its RTCP receiver reports tell it (RFC 3550 §6.4): the latest
//! fraction lost, the cumulative count, and whether the viewer is above the loss threshold
//! (`loss_warn_percent`). Sans-IO: RTCP bytes in, a threshold crossing out.
//!
//! The relay forwards what arrives and never slows the presenter for a viewer: a viewer's
//! reports describe its own leg, so they are accounted here for the operator (admin state,
//! a log line on crossing) and go nowhere else. Parsing is `rtcp-types` (the GStreamer
//! developers' RTCP crate, no dependencies besides thiserror): compound packets, SR and RR
//! report blocks, with length checks we would otherwise write again.

use rtcp_types::{Compound, Packet, ReportBlock};

/// A viewer's reception so far.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ViewerLoss {
    /// The latest report's fraction lost, in 1/256 (the worst block of the report).
    pub fraction_lost: u8,
    /// Packets lost since the viewer started receiving (the sum over the report's blocks;
    /// negative when duplicates outnumber losses, as RFC 3550 allows).
    pub cumulative_lost: i64,
    /// Reports with at least one report block accounted.
    pub reports: u64,
    /// Whether the viewer is above the threshold (until it falls below half of it).
    pub lossy: bool,
}

/// A change of a viewer's state worth a log line.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Crossing {
    /// The fraction lost reached the threshold.
    Above,
    /// The fraction lost fell below half the threshold again.
    Below,
}

/// A 24-bit two's complement value as the report block carries it.
fn signed_24(value: u32) -> i64 {
    let v = i64::from(value & 0x00ff_ffff);
    if v & 0x0080_0000 != 0 {
        v - 0x0100_0000
    } else {
        v
    }
}

impl ViewerLoss {
    /// The fraction lost in percent, rounded down.
    pub fn percent(&self) -> u32 {
        u32::from(self.fraction_lost) * 100 / 256
    }

    /// Accounts one (possibly compound) RTCP packet from the viewer; `threshold` is the fraction
    /// (in 1/256) at which the viewer counts as lossy. Packets without report blocks (feedback
    /// only), and packets that do not parse, change nothing.
    pub fn observe(&mut self, packet: &[u8], threshold: u8) -> Option<Crossing> {
        let compound = Compound::parse(packet).ok()?;
        let mut worst: Option<u8> = None;
        let mut cumulative = 0i64;
        let mut account = |block: ReportBlock<'_>| {
            worst = Some(worst.unwrap_or(0).max(block.fraction_lost()));
            cumulative += signed_24(block.cumulative_lost());
        };
        for p in compound {
            match p {
                Ok(Packet::Rr(rr)) => rr.report_blocks().for_each(&mut account),
                Ok(Packet::Sr(sr)) => sr.report_blocks().for_each(&mut account),
                Ok(_) => {}
                Err(_) => break,
            }
        }
        let fraction = worst?;
        self.fraction_lost = fraction;
        self.cumulative_lost = cumulative;
        self.reports += 1;
        let threshold = threshold.max(1);
        if !self.lossy && fraction >= threshold {
            self.lossy = true;
            return Some(Crossing::Above);
        }
        if self.lossy && fraction < threshold / 2 {
            self.lossy = false;
            return Some(Crossing::Below);
        }
        None
    }
}

/// `loss_warn_percent` (1..=100) as a fraction in 1/256, or what is wrong with it.
pub fn threshold_of(percent: u32) -> Result<u8, String> {
    if !(1..=100).contains(&percent) {
        return Err(format!(
            "loss_warn_percent {percent} must be between 1 and 100"
        ));
    }
    Ok(u8::try_from((percent * 256).div_ceil(100).min(255)).unwrap_or(u8::MAX))
}

#[cfg(test)]
mod tests {
    use super::*;
    use rtcp_types::{
        Compound, PayloadFeedback, Pli, ReceiverReport, ReportBlock, RtcpPacketWriterExt,
    };

    /// A receiver report (with a PLI after it, as browsers send them) with these blocks of
    /// (fraction lost, cumulative lost).
    fn report(blocks: &[(u8, u32)]) -> Vec<u8> {
        let mut rr = ReceiverReport::builder(0x1111);
        for (i, &(fraction, cumulative)) in blocks.iter().enumerate() {
            rr = rr.add_report_block(
                ReportBlock::builder(0x2000 + i as u32)
                    .fraction_lost(fraction)
                    .cumulative_lost(cumulative),
            );
        }
        let pli = PayloadFeedback::builder_owned(Pli::builder())
            .sender_ssrc(0x1111)
            .media_ssrc(0x2000);
        let compound = Compound::builder().add_packet(rr).add_packet(pli);
        let mut buf = vec![0; 256];
        let n = compound
            .write_into(&mut buf)
            .expect("a valid compound packet");
        buf.truncate(n);
        buf
    }

    #[test]
    fn thresholds_are_percent_in_256ths() {
        assert_eq!(threshold_of(5), Ok(13));
        assert_eq!(threshold_of(100), Ok(255));
        assert_eq!(threshold_of(1), Ok(3));
        assert!(threshold_of(0).unwrap_err().contains("loss_warn_percent"));
        assert!(threshold_of(101).is_err());
    }

    #[test]
    fn a_viewer_crosses_the_threshold_up_then_down_with_hysteresis() {
        let threshold = threshold_of(10).unwrap(); // 26/256
        let mut v = ViewerLoss::default();
        assert_eq!(v.observe(&report(&[(0, 0)]), threshold), None);
        assert_eq!(
            v.observe(&report(&[(30, 40)]), threshold),
            Some(Crossing::Above)
        );
        assert_eq!(
            (v.fraction_lost, v.cumulative_lost, v.percent()),
            (30, 40, 11)
        );
        assert!(v.lossy);
        // Still lossy, no second line.
        assert_eq!(v.observe(&report(&[(40, 90)]), threshold), None);
        // Below the threshold but not below half of it: still lossy.
        assert_eq!(v.observe(&report(&[(20, 95)]), threshold), None);
        assert!(v.lossy);
        assert_eq!(
            v.observe(&report(&[(5, 96)]), threshold),
            Some(Crossing::Below)
        );
        assert!(!v.lossy);
        assert_eq!(v.reports, 5);
    }

    #[test]
    fn the_worst_block_and_the_sum_of_cumulative_losses_count() {
        let mut v = ViewerLoss::default();
        v.observe(&report(&[(2, 10), (50, 5)]), 255);
        assert_eq!((v.fraction_lost, v.cumulative_lost), (50, 15));
        // Duplicates may make the cumulative count negative (24-bit two's complement).
        v.observe(&report(&[(0, 0x00ff_fffe)]), 255);
        assert_eq!(v.cumulative_lost, -2);
    }

    #[test]
    fn feedback_without_reports_and_garbage_change_nothing() {
        let mut v = ViewerLoss::default();
        let empty = report(&[]);
        assert_eq!(v.observe(&empty, 1), None);
        for garbage in [&b""[..], b"\x80", b"\x81\xc9\x00\x07abcd", &[0xff; 40]] {
            assert_eq!(v.observe(garbage, 1), None);
        }
        assert_eq!(v, ViewerLoss::default());
    }
}
