//! SRTP and SRTCP for the forwarding fast path (RFC 3711, RFC 7714), sans-IO.
//!
//! str0m protects and unprotects every packet it handles itself, but only through its own
//! `Rtc`; the fast path (bench/NOTES.md, "Media: a forwarding fast path outside str0m") moves
//! forwarded streams past it and so needs the same crypto on its own: the leg's keys come from
//! the DTLS keying material str0m's handshake exported (RFC 5764 §4.2), captured by the key tap.
//!
//! # Shape
//!
//! * [`LegSrtp::from_keying_material`] splits the material by DTLS role and derives every
//!   session key once (RFC 3711 §4.3.1, key derivation rate 0). It yields an [`SrtpTx`] and an
//!   [`SrtpRx`], which own nothing in common and can live in different places.
//! * [`SrtpTx`] seals in place. RTP takes the 48-bit index from the caller, who already keeps
//!   the extended sequence number per outgoing stream (the rewriter), so one index space is
//!   shared with whatever str0m sent on that stream before; SRTCP counts its own index, for
//!   one sender SSRC reserved for our own RTCP ([`SrtpTx::reserve_own_rtcp_ssrc`]).
//! * [`SrtpRx`] opens in place and keeps, per SSRC, the RFC 3711 §3.3.1 index estimate and a
//!   128-packet replay window, both moved only by a packet whose tag verified.
//!
//! # Sharing keys with str0m
//!
//! Both halves use the same session keys as str0m's own SRTP context on the leg, and an
//! AES-GCM nonce is only (SSRC, index): sealing two different packets under one (SSRC, index),
//! here and in str0m or twice here, reveals their XOR and lets anyone recover the GHASH key
//! and forge packets for the whole leg (with AES-CM, the keystream repeats). So the fast path
//! seals RTP only on SSRCs str0m never sends on, and SRTCP only for the reserved SSRC
//! (enforced: [`SrtpError::RtcpSsrcNotReserved`]) or, re-sealing str0m's own report, under
//! str0m's index (where the reserved SSRC is refused: [`SrtpError::RtcpSsrcReserved`]).
//!
//! # Errors and the buffer
//!
//! Nothing here allocates per packet (a new SSRC grows a small table, up to
//! [`MAX_RX_SSRCS`]) and nothing panics on any input: every malformed packet is an
//! [`SrtpError`]. Every error leaves the buffer as it was, except [`SrtpError::AuthFailed`]
//! under an AES-GCM profile: aws-lc decrypts in place before it compares the tag, so the bytes
//! are then unspecified and the caller drops them (AES-CM compares the HMAC before it
//! decrypts; every other error is found before any byte is written).
//!
//! # Profiles
//!
//! | profile | master key / salt | RTP trailer | SRTCP trailer |
//! |---|---|---|---|
//! | `AES128_CM_HMAC_SHA1_80` | 16 / 14 | 10-byte HMAC tag | E‖index, 10-byte tag |
//! | `AEAD_AES_128_GCM` | 16 / 12 | 16-byte GCM tag | 16-byte tag, E‖index |
//! | `AEAD_AES_256_GCM` | 32 / 12 | 16-byte GCM tag | 16-byte tag, E‖index |
//!
//! A few methods are `#[cfg(test)]`: tested, but with no caller in the driver yet — SSRC
//! adoption and forgetting (to evict a receive stream without letting it be replayed at ROC 0),
//! SRTCP at a given index. Whoever needs one drops its `cfg`.

use std::fmt;

use aws_lc_rs::aead::{Aad, LessSafeKey, Nonce, UnboundKey, AES_128_GCM, AES_256_GCM};
use aws_lc_rs::cipher::{EncryptingKey, EncryptionContext, UnboundCipherKey, AES_128, AES_256};
use aws_lc_rs::hmac;
use aws_lc_rs::iv::FixedLength;

/// How many SSRCs (each for RTP and for SRTCP) one [`SrtpRx`] keeps state for.
///
/// A WebRTC leg sends a handful (audio, video, their RTX, a few simulcast layers); the cap only
/// bounds what a misbehaving peer can make us hold. When it is reached, packets of further
/// SSRCs are refused ([`SrtpError::TooManySsrcs`]) rather than an old entry evicted: an evicted
/// stream that comes back would restart at ROC 0 (which breaks it for good once its ROC is past
/// 0) and with an empty replay window (which lets its old packets be replayed once). The driver
/// frees entries with [`SrtpRx::forget_ssrc`] when a stream ends.
pub(crate) const MAX_RX_SSRCS: usize = 64;

/// Width of the replay window, in packets (RFC 3711 §3.3.2 asks for at least 64).
const REPLAY_WINDOW: u64 = 128;

/// The largest SRTP packet index (48 bits: ROC ‖ SEQ).
const MAX_RTP_INDEX: u64 = (1 << 48) - 1;
/// The largest SRTCP index (31 bits).
const MAX_RTCP_INDEX: u32 = (1 << 31) - 1;

const RTP_HEADER_LEN: usize = 12;
const RTCP_HEADER_LEN: usize = 8;
/// The E flag and SRTCP index word that ends (or, with AES-GCM, follows the tag of) an SRTCP
/// packet.
const SRTCP_INDEX_LEN: usize = 4;
const E_FLAG: u32 = 1 << 31;

const HMAC_TAG_LEN: usize = 10;
const GCM_TAG_LEN: usize = 16;
const HMAC_KEY_LEN: usize = 20;
const CM_SALT_LEN: usize = 14;
const GCM_SALT_LEN: usize = 12;

// RFC 3711 §4.3.1 key derivation labels.
const LABEL_RTP_KEY: u8 = 0;
const LABEL_RTP_AUTH: u8 = 1;
const LABEL_RTP_SALT: u8 = 2;
const LABEL_RTCP_KEY: u8 = 3;
const LABEL_RTCP_AUTH: u8 = 4;
const LABEL_RTCP_SALT: u8 = 5;

/// A DTLS-SRTP protection profile (RFC 5764 §4.1.2, RFC 7714 §14.2).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum SrtpProfile {
    /// `SRTP_AES128_CM_HMAC_SHA1_80` (0x0001).
    Aes128CmSha1_80,
    /// `SRTP_AEAD_AES_128_GCM` (0x0007).
    AeadAes128Gcm,
    /// `SRTP_AEAD_AES_256_GCM` (0x0008).
    AeadAes256Gcm,
}

impl SrtpProfile {
    /// The profile the DTLS handshake negotiated, as str0m reports it with the keying material
    /// (`DtlsOutput::KeyingMaterial`); `None` for one this module does not implement (dimpl's
    /// enum is non-exhaustive).
    pub fn from_dtls(profile: str0m::crypto::dtls::SrtpProfile) -> Option<SrtpProfile> {
        use str0m::crypto::dtls::SrtpProfile as Dtls;
        match profile {
            Dtls::AES128_CM_SHA1_80 => Some(SrtpProfile::Aes128CmSha1_80),
            Dtls::AEAD_AES_128_GCM => Some(SrtpProfile::AeadAes128Gcm),
            Dtls::AEAD_AES_256_GCM => Some(SrtpProfile::AeadAes256Gcm),
            _ => None,
        }
    }

    /// Length of the master key, in bytes.
    pub(crate) const fn master_key_len(self) -> usize {
        match self {
            SrtpProfile::Aes128CmSha1_80 | SrtpProfile::AeadAes128Gcm => 16,
            SrtpProfile::AeadAes256Gcm => 32,
        }
    }

    /// Length of the master salt, in bytes (also the session salt's).
    pub(crate) const fn master_salt_len(self) -> usize {
        match self {
            SrtpProfile::Aes128CmSha1_80 => CM_SALT_LEN,
            SrtpProfile::AeadAes128Gcm | SrtpProfile::AeadAes256Gcm => GCM_SALT_LEN,
        }
    }

    /// Length of the DTLS exporter output this profile needs (RFC 5764 §4.2): two keys and two
    /// salts.
    pub(crate) const fn keying_material_len(self) -> usize {
        2 * (self.master_key_len() + self.master_salt_len())
    }

    /// Bytes [`SrtpTx::protect_rtp`] appends to an RTP packet (the tag).
    pub(crate) const fn rtp_overhead(self) -> usize {
        self.tag_len()
    }

    /// Bytes [`SrtpTx::protect_rtcp`] appends to an RTCP packet (the tag and the E‖index word).
    pub(crate) const fn rtcp_overhead(self) -> usize {
        self.tag_len() + SRTCP_INDEX_LEN
    }

    const fn tag_len(self) -> usize {
        match self {
            SrtpProfile::Aes128CmSha1_80 => HMAC_TAG_LEN,
            SrtpProfile::AeadAes128Gcm | SrtpProfile::AeadAes256Gcm => GCM_TAG_LEN,
        }
    }
}

/// Why a packet could not be protected or unprotected, or keys not derived.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum SrtpError {
    /// The keying material is not `profile.keying_material_len()` bytes long.
    #[error("keying material has the wrong length for the profile")]
    KeyingMaterialLength,
    /// The packet is shorter than its header and trailer, its version is not 2, or its CSRC
    /// count or header extension runs past its end.
    #[error("malformed SRTP/SRTCP packet")]
    Malformed,
    /// The caller's buffer has no room for the trailer.
    #[error("buffer too small for the SRTP trailer")]
    BufferTooSmall,
    /// The index given to `protect_rtp` is over 48 bits or its low 16 bits are not the
    /// packet's sequence number.
    #[error("SRTP index does not match the packet")]
    BadIndex,
    /// The outgoing SRTCP index is exhausted (2^31 packets): the leg needs new keys.
    #[error("SRTCP index exhausted")]
    IndexExhausted,
    /// The authentication tag does not verify.
    #[error("SRTP authentication failed")]
    AuthFailed,
    /// The packet was received before (its bit in the replay window is set).
    #[error("SRTP replay")]
    Replayed,
    /// The packet is older than the replay window (or from before the stream's start).
    #[error("SRTP packet older than the replay window")]
    TooOld,
    /// [`MAX_RX_SSRCS`] SSRCs already have state; this packet's SSRC is new.
    #[error("too many SRTP streams")]
    TooManySsrcs,
    /// An SRTP packet of an SSRC with no receive state, on an [`SrtpRx`] that refuses those
    /// ([`SrtpRx::refuse_unknown_ssrcs`]) until the driver adopts or seeds the SSRC: its ROC
    /// is unknown, and a guess of 0 would turn a stream past its first wrap into
    /// [`SrtpError::AuthFailed`] forever, indistinguishable from an attack.
    #[error("SRTP packet of an SSRC with no receive state")]
    UnknownSsrc,
    /// An SRTCP packet with E = 0 (authenticated, not encrypted). WebRTC endpoints always
    /// encrypt SRTCP; refusing the rest keeps one layout of the authenticated data.
    #[error("unencrypted SRTCP")]
    Unencrypted,
    /// [`SrtpTx::protect_rtcp`] with a sender SSRC that is not the one reserved for our own
    /// RTCP, or before one was reserved: its own index counter would repeat (SSRC, index)
    /// pairs str0m's context seals on the same key.
    #[error("SRTCP sender SSRC not reserved for our own RTCP")]
    RtcpSsrcNotReserved,
    /// [`SrtpTx::protect_rtcp_at`] (str0m's index) with the SSRC reserved for our own RTCP,
    /// whose indices our counter hands out; or a second, different SSRC to
    /// [`SrtpTx::reserve_own_rtcp_ssrc`].
    #[error("SRTCP sender SSRC reserved for our own RTCP")]
    RtcpSsrcReserved,
}

/// One leg's SRTP contexts, both directions, as derived from the DTLS keying material.
#[derive(Debug)]
pub struct LegSrtp {
    /// What we send with.
    pub tx: SrtpTx,
    /// What we receive with.
    pub rx: SrtpRx,
}

impl LegSrtp {
    /// Derives both directions' session keys from the DTLS-SRTP exporter output.
    ///
    /// `material` is `client_write_key ‖ server_write_key ‖ client_write_salt ‖
    /// server_write_salt` (RFC 5764 §4.2). `dtls_client` is whether we were the DTLS client
    /// (str0m's `is_active`): the client sends with the client's half, as str0m does.
    pub fn from_keying_material(
        profile: SrtpProfile,
        material: &[u8],
        dtls_client: bool,
    ) -> Result<LegSrtp, SrtpError> {
        if material.len() != profile.keying_material_len() {
            return Err(SrtpError::KeyingMaterialLength);
        }
        let kl = profile.master_key_len();
        let sl = profile.master_salt_len();
        let (client_key, rest) = material.split_at(kl);
        let (server_key, rest) = rest.split_at(kl);
        let (client_salt, server_salt) = rest.split_at(sl);
        let (ours, theirs) = if dtls_client {
            ((client_key, client_salt), (server_key, server_salt))
        } else {
            ((server_key, server_salt), (client_key, client_salt))
        };
        Ok(LegSrtp {
            tx: SrtpTx::new(profile, ours.0, ours.1)?,
            rx: SrtpRx::new(profile, theirs.0, theirs.1)?,
        })
    }
}

/// The sending half: seals RTP and SRTCP in place.
pub struct SrtpTx {
    profile: SrtpProfile,
    rtp: Cipher,
    rtcp: Cipher,
    /// Index of the next SRTCP packet of [`SrtpTx::protect_rtcp`].
    srtcp_index: u32,
    /// The one sender SSRC [`SrtpTx::protect_rtcp`] seals for (and
    /// [`SrtpTx::protect_rtcp_at`] refuses).
    own_rtcp_ssrc: Option<u32>,
}

impl fmt::Debug for SrtpTx {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SrtpTx")
            .field("profile", &self.profile)
            .field("srtcp_index", &self.srtcp_index)
            .field("own_rtcp_ssrc", &self.own_rtcp_ssrc)
            .finish_non_exhaustive()
    }
}

impl SrtpTx {
    /// Session keys for one direction from its master key and salt (for tests and for callers
    /// that split the keying material themselves).
    pub(crate) fn new(
        profile: SrtpProfile,
        master_key: &[u8],
        master_salt: &[u8],
    ) -> Result<SrtpTx, SrtpError> {
        let (rtp, rtcp) = Cipher::derive_pair(profile, master_key, master_salt)?;
        Ok(SrtpTx {
            profile,
            rtp,
            rtcp,
            srtcp_index: 0,
            own_rtcp_ssrc: None,
        })
    }

    /// Reserves `ssrc` as the sender SSRC of the RTCP we originate ourselves: the only one
    /// [`SrtpTx::protect_rtcp`] seals for, and one [`SrtpTx::protect_rtcp_at`] refuses.
    ///
    /// str0m's SRTCP context on this leg seals with the same key and its own index from 0, so
    /// the caller must pick an SSRC str0m never sends RTCP from on this leg (none of the leg's
    /// local media SSRCs, nor str0m's RTCP-only one). It is reserved for the life of these
    /// keys: reserving it again is a no-op, another SSRC is [`SrtpError::RtcpSsrcReserved`]
    /// (indices already spent on the first would be free again for str0m's packets).
    pub fn reserve_own_rtcp_ssrc(&mut self, ssrc: u32) -> Result<(), SrtpError> {
        match self.own_rtcp_ssrc {
            Some(own) if own != ssrc => Err(SrtpError::RtcpSsrcReserved),
            _ => {
                self.own_rtcp_ssrc = Some(ssrc);
                Ok(())
            }
        }
    }

    /// The SSRC reserved for our own RTCP, if any.
    #[cfg(test)]
    pub(crate) fn own_rtcp_ssrc(&self) -> Option<u32> {
        self.own_rtcp_ssrc
    }

    /// Protects the RTP packet in `buf[..len]` in place and returns the SRTP packet's length
    /// (`len + profile.rtp_overhead()`); `buf` must have that room.
    ///
    /// `index` is the packet's 48-bit SRTP index, `ROC << 16 | SEQ`: the extended sequence
    /// number of the outgoing stream. Its low 16 bits must equal the header's sequence number.
    ///
    /// Nothing here can check the two rules the nonce depends on, so the caller keeps them:
    /// never seal on an SSRC that str0m also seals on for this leg (str0m has the same key and
    /// its own indices: a stream str0m sent on before is ours only once str0m sends on it no
    /// more, and goes on above str0m's highest index), and never seal the same (SSRC, index)
    /// twice with a different header or payload (a retransmission must be the same bytes, or go out as RTX under its own
    /// SSRC and index). A repeated AES-GCM nonce gives away the plaintexts' XOR and the GHASH
    /// key, with which anyone can forge packets for the leg; AES-CM repeats its keystream.
    /// A refused packet is left as it was.
    pub fn protect_rtp(&self, buf: &mut [u8], len: usize, index: u64) -> Result<usize, SrtpError> {
        let tag_len = self.profile.tag_len();
        let out_len = len.checked_add(tag_len).ok_or(SrtpError::BufferTooSmall)?;
        if buf.len() < out_len {
            return Err(SrtpError::BufferTooSmall);
        }
        let packet = &buf[..len];
        let hlen = rtp_header_len(packet)?;
        let seq = u16::from_be_bytes([packet[2], packet[3]]);
        if index > MAX_RTP_INDEX || index as u16 != seq {
            return Err(SrtpError::BadIndex);
        }
        let ssrc = read_u32(packet, 8);
        let roc = (index >> 16) as u32;
        match &self.rtp {
            Cipher::Cm { key, auth, salt } => {
                let iv = cm_iv(salt, ssrc, index);
                ctr_apply(key, iv, &mut buf[hlen..len])?;
                let tag = rtp_hmac(auth, &buf[..len], roc);
                buf[len..out_len].copy_from_slice(&tag[..HMAC_TAG_LEN]);
            }
            Cipher::Gcm { key, salt } => {
                let iv = gcm_rtp_iv(salt, ssrc, roc, seq);
                let (head, body) = buf.split_at_mut(hlen);
                let (plain, rest) = body.split_at_mut(len - hlen);
                let tag = key
                    .seal_in_place_separate_tag(
                        Nonce::assume_unique_for_key(iv),
                        Aad::from(&*head),
                        plain,
                    )
                    .map_err(|_| SrtpError::Malformed)?;
                rest[..GCM_TAG_LEN].copy_from_slice(tag.as_ref());
            }
        }
        Ok(out_len)
    }

    /// [`SrtpTx::protect_rtp`] on a `Vec` holding exactly the RTP packet; it grows by the tag
    /// (no allocation when its capacity already has the room).
    pub(crate) fn protect_rtp_vec(
        &self,
        packet: &mut Vec<u8>,
        index: u64,
    ) -> Result<(), SrtpError> {
        let len = packet.len();
        packet.resize(len + self.profile.tag_len(), 0);
        match self.protect_rtp(packet, len, index) {
            Ok(_) => Ok(()),
            Err(e) => {
                packet.truncate(len);
                Err(e)
            }
        }
    }

    /// Protects the (compound) RTCP packet in `buf[..len]` in place, encrypted (E = 1), with
    /// the next SRTCP index, and returns the SRTCP packet's length (`len +
    /// profile.rtcp_overhead()`); `buf` must have that room.
    ///
    /// Only for RTCP we originate: its sender SSRC (the first packet's) must be the one
    /// reserved with [`SrtpTx::reserve_own_rtcp_ssrc`], else [`SrtpError::RtcpSsrcNotReserved`]
    /// (also before any was reserved). The index counts from 0 per `SrtpTx`, as str0m's does
    /// on the same key, so the reservation is what keeps the two from sealing one (SSRC,
    /// index) twice. A refused packet is left as it was.
    pub fn protect_rtcp(&mut self, buf: &mut [u8], len: usize) -> Result<usize, SrtpError> {
        let ssrc = rtcp_sender_ssrc(buf, len)?;
        if self.own_rtcp_ssrc != Some(ssrc) {
            return Err(SrtpError::RtcpSsrcNotReserved);
        }
        if self.srtcp_index > MAX_RTCP_INDEX {
            return Err(SrtpError::IndexExhausted);
        }
        let out_len = self
            .rtcp
            .seal_rtcp(self.profile, buf, len, self.srtcp_index)?;
        self.srtcp_index += 1;
        Ok(out_len)
    }

    /// Protects an RTCP packet with a given SRTCP index, leaving the counter alone: for
    /// re-sealing a packet of str0m's on the same leg after [`SrtpTx::open_own_rtcp`] and a
    /// patch (the design's SR rewrite), so the ciphertext replaces the original one under the
    /// same (SSRC, index) and only one of them may ever be sent. The SSRC reserved for our own
    /// RTCP is refused ([`SrtpError::RtcpSsrcReserved`]): its indices are
    /// [`SrtpTx::protect_rtcp`]'s. A refused packet is left as it was.
    #[cfg(test)]
    pub(crate) fn protect_rtcp_at(
        &self,
        buf: &mut [u8],
        len: usize,
        index: u32,
    ) -> Result<usize, SrtpError> {
        if index > MAX_RTCP_INDEX {
            return Err(SrtpError::BadIndex);
        }
        if self.own_rtcp_ssrc == Some(rtcp_sender_ssrc(buf, len)?) {
            return Err(SrtpError::RtcpSsrcReserved);
        }
        self.rtcp.seal_rtcp(self.profile, buf, len, index)
    }

    /// Authenticates and decrypts in place an SRTCP packet sealed with these keys (str0m's
    /// outgoing SRTCP on the same leg, before it is sent), without any replay state: it is our
    /// own output. `index` in the result is what [`SrtpTx::protect_rtcp_at`] re-seals with.
    ///
    /// On [`SrtpError::AuthFailed`] under AES-GCM the datagram's bytes are unspecified: the
    /// caller must drop it, not send it on (or open a copy). Every other error leaves it as
    /// it was.
    #[cfg(test)]
    pub(crate) fn open_own_rtcp(&self, buf: &mut [u8]) -> Result<OpenedRtcp, SrtpError> {
        let trailer = parse_srtcp(self.profile, buf)?;
        self.rtcp.open_rtcp(buf, &trailer)?;
        Ok(trailer)
    }

    /// The index the next SRTCP packet will carry.
    #[cfg(test)]
    pub(crate) fn next_srtcp_index(&self) -> u32 {
        self.srtcp_index
    }
}

/// What [`SrtpRx::unprotect_rtp`] found.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct OpenedRtp {
    /// `buf[..len]` is the plain RTP packet (header, payload, any RTP padding).
    pub len: usize,
    /// Where the payload starts (fixed header, CSRCs and header extension).
    pub header_len: usize,
    /// The packet's SSRC.
    pub ssrc: u32,
    /// The packet's 48-bit SRTP index (`ROC << 16 | SEQ`): its extended sequence number.
    pub index: u64,
}

/// What [`SrtpRx::unprotect_rtcp`] found.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct OpenedRtcp {
    /// `buf[..len]` is the plain (compound) RTCP packet.
    pub(crate) len: usize,
    /// The sender SSRC of the first RTCP packet.
    pub(crate) ssrc: u32,
    /// The SRTCP index.
    pub(crate) index: u32,
    /// Whether the packet was encrypted (E flag): always, since E = 0 is refused
    /// ([`SrtpError::Unencrypted`]).
    pub(crate) encrypted: bool,
}

/// The receiving half: opens RTP and SRTCP in place, with per-SSRC index and replay state.
pub struct SrtpRx {
    profile: SrtpProfile,
    rtp: Cipher,
    rtcp: Cipher,
    rtp_streams: Vec<ReplayState>,
    rtcp_streams: Vec<ReplayState>,
    /// Whether an RTP packet of an SSRC without state is [`SrtpError::UnknownSsrc`] rather
    /// than taken to be at ROC 0.
    refuse_unknown: bool,
}

impl fmt::Debug for SrtpRx {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SrtpRx")
            .field("profile", &self.profile)
            .field("rtp_streams", &self.rtp_streams.len())
            .field("rtcp_streams", &self.rtcp_streams.len())
            .field("refuse_unknown", &self.refuse_unknown)
            .finish_non_exhaustive()
    }
}

impl SrtpRx {
    /// Session keys for one direction from its master key and salt (for tests and for callers
    /// that split the keying material themselves).
    pub(crate) fn new(
        profile: SrtpProfile,
        master_key: &[u8],
        master_salt: &[u8],
    ) -> Result<SrtpRx, SrtpError> {
        let (rtp, rtcp) = Cipher::derive_pair(profile, master_key, master_salt)?;
        Ok(SrtpRx {
            profile,
            rtp,
            rtcp,
            rtp_streams: Vec::with_capacity(8),
            rtcp_streams: Vec::with_capacity(4),
            refuse_unknown: false,
        })
    }

    /// From now on, an SRTP packet of an SSRC with no receive state is
    /// [`SrtpError::UnknownSsrc`] (its buffer left as it was) instead of being opened at ROC
    /// 0, until the driver declares the SSRC: [`SrtpRx::seed_rtp_index`] for a stream str0m
    /// opened before (its ROC is str0m's), [`SrtpRx::adopt_ssrc`] for one that starts with us.
    ///
    /// Off by default, where every new SSRC starts at ROC 0, which is right when this context
    /// sees a stream from its first packet (a check beside str0m), and silently wrong for one
    /// handed over past its first wrap (every packet then fails as `AuthFailed`). A fast path
    /// that takes streams over from str0m turns it on. SRTCP is not affected: its index is in
    /// the clear.
    #[cfg(test)]
    pub(crate) fn refuse_unknown_ssrcs(&mut self, refuse: bool) {
        self.refuse_unknown = refuse;
    }

    /// Declares an RTP stream whose first packet will come to this context (str0m opened none
    /// of it): it starts at ROC 0 with the first packet that authenticates. A no-op for an SSRC
    /// that has state already; [`SrtpError::TooManySsrcs`] when [`MAX_RX_SSRCS`] have.
    #[cfg(test)]
    pub(crate) fn adopt_ssrc(&mut self, ssrc: u32) -> Result<(), SrtpError> {
        if self.rtp_streams.iter().any(|s| s.ssrc == ssrc) {
            return Ok(());
        }
        if self.rtp_streams.len() >= MAX_RX_SSRCS {
            return Err(SrtpError::TooManySsrcs);
        }
        self.rtp_streams.push(ReplayState::adopted(ssrc));
        Ok(())
    }

    /// Authenticates and decrypts the SRTP packet `buf` in place.
    ///
    /// The index is estimated from the SSRC's highest authenticated index (RFC 3711 §3.3.1; a
    /// new SSRC starts at ROC 0, or is [`SrtpError::UnknownSsrc`] after
    /// [`SrtpRx::refuse_unknown_ssrcs`]), checked against the replay window, and only once the
    /// tag verifies does the packet move the estimate and the window. On
    /// [`SrtpError::AuthFailed`] under AES-GCM `buf` is unspecified; every other error leaves
    /// it as it was.
    pub fn unprotect_rtp(&mut self, buf: &mut [u8]) -> Result<OpenedRtp, SrtpError> {
        let tag_len = self.profile.tag_len();
        let hlen = rtp_header_len(buf)?;
        if buf.len() < hlen + tag_len {
            return Err(SrtpError::Malformed);
        }
        let seq = u16::from_be_bytes([buf[2], buf[3]]);
        let ssrc = read_u32(buf, 8);
        let slot = self.rtp_streams.iter().position(|s| s.ssrc == ssrc);
        let index = match slot {
            Some(i) if self.rtp_streams[i].started => {
                let state = &self.rtp_streams[i];
                let index = estimate_index(state.top, seq).ok_or(SrtpError::TooOld)?;
                state.check(index)?;
                index
            }
            // Adopted: its first packet, at ROC 0.
            Some(_) => u64::from(seq),
            None if self.refuse_unknown => return Err(SrtpError::UnknownSsrc),
            None if self.rtp_streams.len() >= MAX_RX_SSRCS => {
                return Err(SrtpError::TooManySsrcs);
            }
            None => u64::from(seq),
        };
        let len = buf.len() - tag_len;
        let roc = (index >> 16) as u32;
        match &self.rtp {
            Cipher::Cm { key, auth, salt } => {
                let tag = rtp_hmac(auth, &buf[..len], roc);
                aws_lc_rs::constant_time::verify_slices_are_equal(
                    &tag[..HMAC_TAG_LEN],
                    &buf[len..],
                )
                .map_err(|_| SrtpError::AuthFailed)?;
                ctr_apply(key, cm_iv(salt, ssrc, index), &mut buf[hlen..len])?;
            }
            Cipher::Gcm { key, salt } => {
                let iv = gcm_rtp_iv(salt, ssrc, roc, seq);
                let (head, body) = buf.split_at_mut(hlen);
                key.open_in_place(Nonce::assume_unique_for_key(iv), Aad::from(&*head), body)
                    .map_err(|_| SrtpError::AuthFailed)?;
            }
        }
        match slot {
            Some(i) => self.rtp_streams[i].accept(index),
            None => self.rtp_streams.push(ReplayState::new(ssrc, index)),
        }
        Ok(OpenedRtp {
            len,
            header_len: hlen,
            ssrc,
            index,
        })
    }

    /// Authenticates and decrypts the SRTCP packet `buf` in place, checking the SRTCP index
    /// against the sender SSRC's replay window; E = 0 is [`SrtpError::Unencrypted`]. On
    /// [`SrtpError::AuthFailed`] under AES-GCM `buf` is unspecified; every other error leaves
    /// it as it was.
    pub(crate) fn unprotect_rtcp(&mut self, buf: &mut [u8]) -> Result<OpenedRtcp, SrtpError> {
        let opened = parse_srtcp(self.profile, buf)?;
        let (ssrc, index) = (opened.ssrc, u64::from(opened.index));
        let slot = self.rtcp_streams.iter().position(|s| s.ssrc == ssrc);
        match slot {
            Some(i) => self.rtcp_streams[i].check(index)?,
            None if self.rtcp_streams.len() >= MAX_RX_SSRCS => {
                return Err(SrtpError::TooManySsrcs);
            }
            None => {}
        }
        self.rtcp.open_rtcp(buf, &opened)?;
        match slot {
            Some(i) => self.rtcp_streams[i].accept(index),
            None => self.rtcp_streams.push(ReplayState::new(ssrc, index)),
        }
        Ok(opened)
    }

    /// Sets the receive state of an RTP stream whose earlier packets were opened elsewhere
    /// (by str0m): `highest_index` is the highest index seen so far, which fixes the ROC the
    /// next packets are estimated against. Every index in the window at and below it counts as
    /// received: we cannot know which of those str0m already took, and dropping a late one at
    /// the hand-over is better than letting a recorded one be replayed.
    ///
    /// A seed never moves a stream backwards: with packets already opened here, the state keeps
    /// the larger of its own highest index and the seed, and the union of both windows. A
    /// seed read from str0m may lag what this context has opened since (a race, not a fault,
    /// so it is not refused), and taking it as is would open again what was accepted above it
    /// and, across a wrap, fix a ROC one too low for good. Only authenticated packets and
    /// seeds move the state, both only forwards.
    pub(crate) fn seed_rtp_index(
        &mut self,
        ssrc: u32,
        highest_index: u64,
    ) -> Result<(), SrtpError> {
        if highest_index > MAX_RTP_INDEX {
            return Err(SrtpError::BadIndex);
        }
        if let Some(s) = self.rtp_streams.iter_mut().find(|s| s.ssrc == ssrc) {
            s.seed(highest_index);
        } else if self.rtp_streams.len() >= MAX_RX_SSRCS {
            return Err(SrtpError::TooManySsrcs);
        } else {
            let mut state = ReplayState::adopted(ssrc);
            state.seed(highest_index);
            self.rtp_streams.push(state);
        }
        Ok(())
    }

    /// Drops the receive state (RTP and SRTCP) of an SSRC that ended, freeing its slot.
    ///
    /// Forget only an SSRC the driver also took out of its routing. Unless
    /// [`SrtpRx::refuse_unknown_ssrcs`] is on, a packet of the SSRC afterwards starts a new
    /// stream at ROC 0 with an empty window, so each recorded packet of the old stream at ROC 0
    /// opens once more (a replay) and would be forwarded if the SSRC were still routed. With it
    /// on, such packets are [`SrtpError::UnknownSsrc`] until the SSRC is adopted again.
    #[cfg(test)]
    pub(crate) fn forget_ssrc(&mut self, ssrc: u32) {
        self.rtp_streams.retain(|s| s.ssrc != ssrc);
        self.rtcp_streams.retain(|s| s.ssrc != ssrc);
    }

    /// The highest authenticated (or seeded) RTP index of `ssrc`; `None` without state or
    /// for an adopted SSRC with no packet yet.
    pub(crate) fn rtp_highest_index(&self, ssrc: u32) -> Option<u64> {
        self.rtp_streams
            .iter()
            .find(|s| s.ssrc == ssrc && s.started)
            .map(|s| s.top)
    }
}

/// Per-SSRC receive state: the highest authenticated index and which of the
/// [`REPLAY_WINDOW`] indices at and below it were received (bit n = `top - n`).
#[derive(Debug, Clone, Copy)]
struct ReplayState {
    ssrc: u32,
    top: u64,
    window: u128,
    /// False for an adopted SSRC with no packet yet (`top` and `window` mean nothing).
    started: bool,
}

impl ReplayState {
    fn new(ssrc: u32, index: u64) -> ReplayState {
        ReplayState {
            ssrc,
            top: index,
            window: 1,
            started: true,
        }
    }

    fn adopted(ssrc: u32) -> ReplayState {
        ReplayState {
            ssrc,
            top: 0,
            window: 0,
            started: false,
        }
    }

    /// Merges a seed (everything in the window at and below `index` received) into the state,
    /// never lowering `top`.
    fn seed(&mut self, index: u64) {
        if !self.started || index > self.top {
            *self = ReplayState {
                ssrc: self.ssrc,
                top: index,
                window: u128::MAX,
                started: true,
            };
            return;
        }
        // Ages at and above `top - index` are the indices at and below the seed.
        let age = self.top - index;
        if age < REPLAY_WINDOW {
            self.window |= u128::MAX << age;
        }
    }

    fn check(&self, index: u64) -> Result<(), SrtpError> {
        if index > self.top {
            return Ok(());
        }
        let age = self.top - index;
        if age >= REPLAY_WINDOW {
            return Err(SrtpError::TooOld);
        }
        if self.window >> age & 1 == 1 {
            return Err(SrtpError::Replayed);
        }
        Ok(())
    }

    /// Records an authenticated packet that passed [`ReplayState::check`] (or, not started,
    /// the first one).
    fn accept(&mut self, index: u64) {
        if !self.started {
            *self = ReplayState::new(self.ssrc, index);
        } else if index > self.top {
            let shift = index - self.top;
            self.window = if shift >= REPLAY_WINDOW {
                0
            } else {
                self.window << shift
            };
            self.window |= 1;
            self.top = index;
        } else {
            self.window |= 1 << (self.top - index);
        }
    }
}

/// RFC 3711 §3.3.1: the index of a packet with sequence number `seq`, given the highest
/// authenticated index `top` (s_l with its ROC): the candidate of ROC - 1, ROC or ROC + 1
/// nearest to it. `None` when that would be before index 0 or past 2^48.
fn estimate_index(top: u64, seq: u16) -> Option<u64> {
    let roc = top >> 16;
    let s_l = top as u16;
    let seq32 = u32::from(seq);
    let s_l32 = u32::from(s_l);
    let v = if s_l < 0x8000 {
        if seq32 > s_l32 && seq32 - s_l32 > 0x8000 {
            roc.checked_sub(1)?
        } else {
            roc
        }
    } else if s_l32 - 0x8000 > seq32 {
        roc + 1
    } else {
        roc
    };
    let index = v << 16 | u64::from(seq);
    (index <= MAX_RTP_INDEX).then_some(index)
}

/// One direction's keys for RTP or for SRTCP.
// Two per direction per leg: boxing the larger variant would save little and add a pointer
// chase per packet.
#[allow(clippy::large_enum_variant)]
enum Cipher {
    Cm {
        key: EncryptingKey,
        auth: hmac::Key,
        salt: [u8; CM_SALT_LEN],
    },
    Gcm {
        key: LessSafeKey,
        salt: [u8; GCM_SALT_LEN],
    },
}

impl Cipher {
    /// One direction's RTP or SRTCP cipher from its session keys (`auth` only for AES-CM).
    fn from_session(
        profile: SrtpProfile,
        key: &[u8],
        auth: &[u8],
        salt: &[u8],
    ) -> Result<Cipher, SrtpError> {
        let bad = |_| SrtpError::KeyingMaterialLength;
        match profile {
            SrtpProfile::Aes128CmSha1_80 => Ok(Cipher::Cm {
                key: UnboundCipherKey::new(&AES_128, key)
                    .and_then(EncryptingKey::ctr)
                    .map_err(bad)?,
                auth: hmac::Key::new(hmac::HMAC_SHA1_FOR_LEGACY_USE_ONLY, auth),
                salt: salt
                    .try_into()
                    .map_err(|_| SrtpError::KeyingMaterialLength)?,
            }),
            SrtpProfile::AeadAes128Gcm | SrtpProfile::AeadAes256Gcm => {
                let alg = if profile == SrtpProfile::AeadAes128Gcm {
                    &AES_128_GCM
                } else {
                    &AES_256_GCM
                };
                Ok(Cipher::Gcm {
                    key: LessSafeKey::new(UnboundKey::new(alg, key).map_err(bad)?),
                    salt: salt
                        .try_into()
                        .map_err(|_| SrtpError::KeyingMaterialLength)?,
                })
            }
        }
    }

    /// Seals the RTCP packet `buf[..len]` in place with SRTCP index `index`, E = 1, and returns
    /// the SRTCP length.
    fn seal_rtcp(
        &self,
        profile: SrtpProfile,
        buf: &mut [u8],
        len: usize,
        index: u32,
    ) -> Result<usize, SrtpError> {
        let tag_len = profile.tag_len();
        let out_len = len
            .checked_add(tag_len + SRTCP_INDEX_LEN)
            .ok_or(SrtpError::BufferTooSmall)?;
        if buf.len() < out_len {
            return Err(SrtpError::BufferTooSmall);
        }
        check_rtcp_header(&buf[..len])?;
        let ssrc = read_u32(buf, 4);
        let e_index = (E_FLAG | index).to_be_bytes();
        match self {
            Cipher::Cm { key, auth, salt } => {
                let iv = cm_iv(salt, ssrc, u64::from(index));
                ctr_apply(key, iv, &mut buf[RTCP_HEADER_LEN..len])?;
                buf[len..len + SRTCP_INDEX_LEN].copy_from_slice(&e_index);
                let tag = hmac_sha1(auth, &buf[..len + SRTCP_INDEX_LEN], None);
                buf[len + SRTCP_INDEX_LEN..out_len].copy_from_slice(&tag[..HMAC_TAG_LEN]);
            }
            Cipher::Gcm { key, salt } => {
                let iv = gcm_rtcp_iv(salt, ssrc, index);
                let mut aad = [0u8; RTCP_HEADER_LEN + SRTCP_INDEX_LEN];
                aad[..RTCP_HEADER_LEN].copy_from_slice(&buf[..RTCP_HEADER_LEN]);
                aad[RTCP_HEADER_LEN..].copy_from_slice(&e_index);
                let tag = key
                    .seal_in_place_separate_tag(
                        Nonce::assume_unique_for_key(iv),
                        Aad::from(&aad),
                        &mut buf[RTCP_HEADER_LEN..len],
                    )
                    .map_err(|_| SrtpError::Malformed)?;
                buf[len..len + GCM_TAG_LEN].copy_from_slice(tag.as_ref());
                buf[len + GCM_TAG_LEN..out_len].copy_from_slice(&e_index);
            }
        }
        Ok(out_len)
    }

    /// Authenticates and decrypts the SRTCP packet `buf` whose trailer [`parse_srtcp`] read
    /// (E = 1: it refuses the rest).
    fn open_rtcp(&self, buf: &mut [u8], trailer: &OpenedRtcp) -> Result<(), SrtpError> {
        let OpenedRtcp {
            len, ssrc, index, ..
        } = *trailer;
        match self {
            Cipher::Cm { key, auth, salt } => {
                let tag = hmac_sha1(auth, &buf[..len + SRTCP_INDEX_LEN], None);
                aws_lc_rs::constant_time::verify_slices_are_equal(
                    &tag[..HMAC_TAG_LEN],
                    &buf[len + SRTCP_INDEX_LEN..],
                )
                .map_err(|_| SrtpError::AuthFailed)?;
                let iv = cm_iv(salt, ssrc, u64::from(index));
                ctr_apply(key, iv, &mut buf[RTCP_HEADER_LEN..len])?;
            }
            Cipher::Gcm { key, salt } => {
                let iv = gcm_rtcp_iv(salt, ssrc, index);
                let mut aad = [0u8; RTCP_HEADER_LEN + SRTCP_INDEX_LEN];
                aad[..RTCP_HEADER_LEN].copy_from_slice(&buf[..RTCP_HEADER_LEN]);
                aad[RTCP_HEADER_LEN..].copy_from_slice(&(E_FLAG | index).to_be_bytes());
                key.open_in_place(
                    Nonce::assume_unique_for_key(iv),
                    Aad::from(&aad),
                    &mut buf[RTCP_HEADER_LEN..len + GCM_TAG_LEN],
                )
                .map_err(|_| SrtpError::AuthFailed)?;
            }
        }
        Ok(())
    }

    /// The RTP and the SRTCP session keys of one direction (RFC 3711 §4.3, RFC 7714 §12).
    fn derive_pair(
        profile: SrtpProfile,
        master_key: &[u8],
        master_salt: &[u8],
    ) -> Result<(Cipher, Cipher), SrtpError> {
        if master_key.len() != profile.master_key_len()
            || master_salt.len() != profile.master_salt_len()
        {
            return Err(SrtpError::KeyingMaterialLength);
        }
        let one = |labels: [u8; 3]| -> Result<Cipher, SrtpError> {
            let [key_label, auth_label, salt_label] = labels;
            let mut key = [0u8; 32];
            let key = &mut key[..profile.master_key_len()];
            let mut auth = [0u8; HMAC_KEY_LEN];
            let mut salt = [0u8; CM_SALT_LEN];
            let salt = &mut salt[..profile.master_salt_len()];
            kdf(master_key, master_salt, key_label, key)?;
            kdf(master_key, master_salt, salt_label, salt)?;
            if profile == SrtpProfile::Aes128CmSha1_80 {
                kdf(master_key, master_salt, auth_label, &mut auth)?;
            }
            Cipher::from_session(profile, key, &auth, salt)
        };
        Ok((
            one([LABEL_RTP_KEY, LABEL_RTP_AUTH, LABEL_RTP_SALT])?,
            one([LABEL_RTCP_KEY, LABEL_RTCP_AUTH, LABEL_RTCP_SALT])?,
        ))
    }
}

/// Reads an SRTCP packet's header and trailer (E flag, index; where they sit depends on the
/// profile) without touching its bytes; E = 0 is refused.
fn parse_srtcp(profile: SrtpProfile, buf: &[u8]) -> Result<OpenedRtcp, SrtpError> {
    let tag_len = profile.tag_len();
    if buf.len() < RTCP_HEADER_LEN + SRTCP_INDEX_LEN + tag_len {
        return Err(SrtpError::Malformed);
    }
    check_rtcp_header(buf)?;
    let total = buf.len();
    let len = total - tag_len - SRTCP_INDEX_LEN;
    // The E‖index word ends the packet with AES-GCM and precedes the tag with AES-CM.
    let word_at = match profile {
        SrtpProfile::Aes128CmSha1_80 => len,
        SrtpProfile::AeadAes128Gcm | SrtpProfile::AeadAes256Gcm => total - SRTCP_INDEX_LEN,
    };
    let word = read_u32(buf, word_at);
    if word & E_FLAG == 0 {
        return Err(SrtpError::Unencrypted);
    }
    Ok(OpenedRtcp {
        len,
        ssrc: read_u32(buf, 4),
        index: word & !E_FLAG,
        encrypted: true,
    })
}

/// The sender SSRC of the RTCP packet `buf[..len]` (the first packet's), for the checks before
/// sealing; `Malformed` as sealing would say for a short or non-v2 packet.
fn rtcp_sender_ssrc(buf: &[u8], len: usize) -> Result<u32, SrtpError> {
    let packet = buf.get(..len).ok_or(SrtpError::BufferTooSmall)?;
    check_rtcp_header(packet)?;
    Ok(read_u32(packet, 4))
}

/// RFC 3711 §4.3.1 with a key derivation rate of 0 (r = 0): the AES-CM keystream under the
/// master key from IV `x * 2^16`, `x` = master salt XOR (label << 48). A 12-byte salt (the
/// AES-GCM profiles, RFC 7714 §12) is the high 96 bits of the 112-bit `x`, as libsrtp and
/// str0m place it.
fn kdf(master_key: &[u8], master_salt: &[u8], label: u8, out: &mut [u8]) -> Result<(), SrtpError> {
    let alg = match master_key.len() {
        16 => &AES_128,
        32 => &AES_256,
        _ => return Err(SrtpError::KeyingMaterialLength),
    };
    if master_salt.len() > CM_SALT_LEN {
        return Err(SrtpError::KeyingMaterialLength);
    }
    let mut iv = [0u8; 16];
    iv[..master_salt.len()].copy_from_slice(master_salt);
    iv[7] ^= label;
    let key = UnboundCipherKey::new(alg, master_key)
        .and_then(EncryptingKey::ctr)
        .map_err(|_| SrtpError::KeyingMaterialLength)?;
    out.fill(0);
    ctr_apply(&key, iv, out)
}

/// XORs `data` with the AES-CM keystream starting at counter block `iv`.
fn ctr_apply(key: &EncryptingKey, iv: [u8; 16], data: &mut [u8]) -> Result<(), SrtpError> {
    key.less_safe_encrypt(data, EncryptionContext::Iv128(FixedLength::from(iv)))
        .map(|_| ())
        .map_err(|_| SrtpError::Malformed)
}

/// RFC 3711 §4.1.1: IV = (salt * 2^16) XOR (SSRC * 2^64) XOR (index * 2^16).
fn cm_iv(salt: &[u8; CM_SALT_LEN], ssrc: u32, index: u64) -> [u8; 16] {
    let mut iv = [0u8; 16];
    iv[4..8].copy_from_slice(&ssrc.to_be_bytes());
    iv[8..14].copy_from_slice(&index.to_be_bytes()[2..8]);
    for (b, s) in iv.iter_mut().zip(salt) {
        *b ^= s;
    }
    iv
}

/// RFC 7714 §8.1: IV = salt XOR (00 00 ‖ SSRC ‖ ROC ‖ SEQ).
fn gcm_rtp_iv(salt: &[u8; GCM_SALT_LEN], ssrc: u32, roc: u32, seq: u16) -> [u8; GCM_SALT_LEN] {
    let mut iv = [0u8; GCM_SALT_LEN];
    iv[2..6].copy_from_slice(&ssrc.to_be_bytes());
    iv[6..10].copy_from_slice(&roc.to_be_bytes());
    iv[10..12].copy_from_slice(&seq.to_be_bytes());
    for (b, s) in iv.iter_mut().zip(salt) {
        *b ^= s;
    }
    iv
}

/// RFC 7714 §9.1: IV = salt XOR (00 00 ‖ SSRC ‖ 00 00 ‖ 0 ‖ SRTCP index).
fn gcm_rtcp_iv(salt: &[u8; GCM_SALT_LEN], ssrc: u32, index: u32) -> [u8; GCM_SALT_LEN] {
    let mut iv = [0u8; GCM_SALT_LEN];
    iv[2..6].copy_from_slice(&ssrc.to_be_bytes());
    iv[8..12].copy_from_slice(&(index & !E_FLAG).to_be_bytes());
    for (b, s) in iv.iter_mut().zip(salt) {
        *b ^= s;
    }
    iv
}

/// RFC 3711 §4.2: HMAC-SHA1 over the authenticated portion and, for RTP, the ROC.
fn rtp_hmac(key: &hmac::Key, packet: &[u8], roc: u32) -> [u8; 20] {
    hmac_sha1(key, packet, Some(roc))
}

fn hmac_sha1(key: &hmac::Key, data: &[u8], roc: Option<u32>) -> [u8; 20] {
    let mut ctx = hmac::Context::with_key(key);
    ctx.update(data);
    if let Some(roc) = roc {
        ctx.update(&roc.to_be_bytes());
    }
    let tag = ctx.sign();
    let mut out = [0u8; 20];
    out.copy_from_slice(&tag.as_ref()[..20]);
    out
}

/// Length of the RTP header (fixed part, CSRCs, header extension), checked against `packet`.
fn rtp_header_len(packet: &[u8]) -> Result<usize, SrtpError> {
    if packet.len() < RTP_HEADER_LEN || packet[0] >> 6 != 2 {
        return Err(SrtpError::Malformed);
    }
    let mut len = RTP_HEADER_LEN + 4 * usize::from(packet[0] & 0x0f);
    if packet[0] & 0x10 != 0 {
        let words = packet.get(len + 2..len + 4).ok_or(SrtpError::Malformed)?;
        len += 4 + 4 * usize::from(u16::from_be_bytes([words[0], words[1]]));
    }
    if len > packet.len() {
        return Err(SrtpError::Malformed);
    }
    Ok(len)
}

fn check_rtcp_header(packet: &[u8]) -> Result<(), SrtpError> {
    if packet.len() < RTCP_HEADER_LEN || packet[0] >> 6 != 2 {
        return Err(SrtpError::Malformed);
    }
    Ok(())
}

/// Callers have checked `at + 4 <= buf.len()`.
fn read_u32(buf: &[u8], at: usize) -> u32 {
    u32::from_be_bytes([buf[at], buf[at + 1], buf[at + 2], buf[at + 3]])
}

#[cfg(test)]
mod tests {
    use super::*;

    const ALL: [SrtpProfile; 3] = [
        SrtpProfile::Aes128CmSha1_80,
        SrtpProfile::AeadAes128Gcm,
        SrtpProfile::AeadAes256Gcm,
    ];

    fn hex(s: &str) -> Vec<u8> {
        let s: String = s.chars().filter(|c| !c.is_whitespace()).collect();
        (0..s.len())
            .step_by(2)
            .map(|i| u8::from_str_radix(&s[i..i + 2], 16).expect("hex"))
            .collect()
    }

    /// Keying material with distinct bytes everywhere, so a swapped half cannot pass.
    fn material(profile: SrtpProfile) -> Vec<u8> {
        (0..profile.keying_material_len())
            .map(|i| (i as u8).wrapping_mul(37).wrapping_add(11))
            .collect()
    }

    /// A client's and a server's contexts from the same DTLS handshake.
    fn pair(profile: SrtpProfile) -> (LegSrtp, LegSrtp) {
        let m = material(profile);
        let client = LegSrtp::from_keying_material(profile, &m, true).expect("client");
        let server = LegSrtp::from_keying_material(profile, &m, false).expect("server");
        (client, server)
    }

    /// Sender and receiver of one direction with the same session keys for RTP and SRTCP, as
    /// the RFC 7714 vectors give them (no key derivation).
    fn from_session(profile: SrtpProfile, key: &[u8], salt: &[u8]) -> (SrtpTx, SrtpRx) {
        let c = || Cipher::from_session(profile, key, &[], salt).expect("session keys");
        let tx = SrtpTx {
            profile,
            rtp: c(),
            rtcp: c(),
            srtcp_index: 0,
            own_rtcp_ssrc: None,
        };
        let rx = SrtpRx {
            profile,
            rtp: c(),
            rtcp: c(),
            rtp_streams: Vec::new(),
            rtcp_streams: Vec::new(),
            refuse_unknown: false,
        };
        (tx, rx)
    }

    fn rtp(ssrc: u32, seq: u16, payload_len: usize) -> Vec<u8> {
        let mut p = vec![0x80, 96];
        p.extend_from_slice(&seq.to_be_bytes());
        p.extend_from_slice(&0x1234_5678u32.to_be_bytes());
        p.extend_from_slice(&ssrc.to_be_bytes());
        p.extend((0..payload_len).map(|i| i as u8));
        p
    }

    fn sealed(tx: &SrtpTx, ssrc: u32, index: u64, payload_len: usize) -> Vec<u8> {
        let mut p = rtp(ssrc, index as u16, payload_len);
        tx.protect_rtp_vec(&mut p, index).expect("protect");
        p
    }

    /// A sender report from `ssrc` with a few bytes of body.
    fn rtcp(ssrc: u32) -> Vec<u8> {
        let mut p = vec![0x80, 200, 0, 6];
        p.extend_from_slice(&ssrc.to_be_bytes());
        p.extend((0..20u8).map(|i| i.wrapping_mul(7)));
        p
    }

    fn open(rx: &mut SrtpRx, packet: &[u8]) -> Result<OpenedRtp, SrtpError> {
        rx.unprotect_rtp(&mut packet.to_vec())
    }

    // ---- Known answers ----

    #[test]
    fn rfc3711_b2_aes_cm_keystream() {
        let salt: [u8; 14] = hex("F0F1F2F3F4F5F6F7F8F9FAFBFCFD")
            .try_into()
            .expect("salt");
        let Cipher::Cm { key, .. } = Cipher::from_session(
            SrtpProfile::Aes128CmSha1_80,
            &hex("2B7E151628AED2A6ABF7158809CF4F3C"),
            &[0; 20],
            &salt,
        )
        .expect("keys") else {
            unreachable!("AES-CM profile")
        };
        // SSRC 0, index 0: the IV is the salt shifted, the RFC's "offset".
        let iv = cm_iv(&salt, 0, 0);
        assert_eq!(iv[..], hex("F0F1F2F3F4F5F6F7F8F9FAFBFCFD0000")[..]);
        let mut stream = vec![0u8; 65282 * 16];
        ctr_apply(&key, iv, &mut stream).expect("ctr");
        let block = |n: usize| stream[n * 16..(n + 1) * 16].to_vec();
        assert_eq!(block(0), hex("E03EAD0935C95E80E166B16DD92B4EB4"));
        assert_eq!(block(1), hex("D23513162B02D0F72A43A2FE4A5F97AB"));
        assert_eq!(block(2), hex("41E95B3BB0A2E8DD477901E4FCA894C0"));
        assert_eq!(block(0xfeff), hex("EC8CDF7398607CB0F2D21675EA9EA1E4"));
        assert_eq!(block(0xff00), hex("362B7C3C6773516318A077D7FC5073AE"));
        assert_eq!(block(0xff01), hex("6A2CC3787889374FBEB4C81B17BA6C44"));
    }

    #[test]
    fn rfc3711_b3_key_derivation() {
        let master = hex("E1F97A0D3E018BE0D64FA32C06DE4139");
        let salt = hex("0EC675AD498AFEEBB6960B3AABE6");
        let mut key = [0u8; 16];
        kdf(&master, &salt, LABEL_RTP_KEY, &mut key).expect("kdf");
        assert_eq!(key[..], hex("C61E7A93744F39EE10734AFE3FF7A087")[..]);
        let mut session_salt = [0u8; 14];
        kdf(&master, &salt, LABEL_RTP_SALT, &mut session_salt).expect("kdf");
        assert_eq!(session_salt[..], hex("30CBBC08863D8C85D49DB34A9AE1")[..]);
        // The RFC derives a 94-octet auth key; SHA1-80 uses its first 20 octets.
        let mut auth = [0u8; 94];
        kdf(&master, &salt, LABEL_RTP_AUTH, &mut auth).expect("kdf");
        let want = hex(
            "CEBE321F6FF7716B6FD4AB49AF256A15 6D38BAA48F0A0ACF3C34E2359E6CDBCE
             E049646C43D9327AD175578EF7227098 6371C10C9A369AC2F94A8C5FBCDDDC25
             6D6E919A48B610EF17C2041E47403576 6B68642C59BBFC2F34DB60DBDFB2",
        );
        assert_eq!(auth[..], want[..]);
    }

    /// libsrtp's reference packets (test/srtp_driver.c, `srtp_validate`), keyed with the RFC
    /// 3711 B.3 master key and salt: the whole AES-CM path, derivation, IV, HMAC and trailer.
    #[test]
    fn libsrtp_reference_packets_aes_cm_sha1_80() {
        let master = hex("E1F97A0D3E018BE0D64FA32C06DE4139");
        let salt = hex("0EC675AD498AFEEBB6960B3AABE6");
        let profile = SrtpProfile::Aes128CmSha1_80;
        let mut tx = SrtpTx::new(profile, &master, &salt).expect("tx");
        let mut rx = SrtpRx::new(profile, &master, &salt).expect("rx");

        let plain = hex("800f1234decafbadcafebabe abababababababababababababababab");
        let want =
            hex("800f1234decafbadcafebabe 4e55dc4ce79978d88ca4d215949d2402 b78d6acc99ea179b8dbb");
        let mut p = plain.clone();
        tx.protect_rtp_vec(&mut p, 0x1234).expect("protect");
        assert_eq!(p, want);
        let opened = rx.unprotect_rtp(&mut p).expect("unprotect");
        assert_eq!(opened.index, 0x1234);
        assert_eq!(p[..opened.len], plain[..]);

        // libsrtp's first SRTCP packet carries index 1.
        let plain = hex("81c8000bcafebabe abababababababababababababababab");
        let want =
            hex("81c8000bcafebabe 7128035be487b9bdbef89041f977a5a8 80000001 993e08cd54d6c1230798");
        tx.srtcp_index = 1;
        tx.reserve_own_rtcp_ssrc(0xcafebabe).expect("reserve");
        let mut buf = plain.clone();
        buf.resize(plain.len() + profile.rtcp_overhead(), 0);
        let n = tx.protect_rtcp(&mut buf, plain.len()).expect("protect");
        assert_eq!(buf[..n], want[..]);
        assert_eq!(tx.next_srtcp_index(), 2);
        let opened = rx.unprotect_rtcp(&mut buf).expect("unprotect");
        assert_eq!(
            opened,
            OpenedRtcp {
                len: plain.len(),
                ssrc: 0xcafebabe,
                index: 1,
                encrypted: true
            }
        );
        assert_eq!(buf[..opened.len], plain[..]);
    }

    /// A browser's SRTCP packet with the DTLS keying material it was sent under, from str0m's
    /// own test suite (str0m 0.25 `rtp/srtp.rs`): the role split on real material, opened as
    /// the DTLS server and sealed back byte for byte by the client's half.
    #[test]
    fn a_captured_aes_cm_srtcp_packet_opens_and_reseals() {
        let mat = hex(
            "2CB02346B42276A672CFD143AEC2D5EEDDDE55F0AD7BCAC22666F1C6386173ED
             6EB25CB7D26A61A1EE2C210ADAE760AAA2FD67B672C41AED105F9D36",
        );
        let srtcp = hex("80C80006 3CD7CC13
             B7C831DCB776CD8DC26FDA1D9BFC8EE6589A1A8A49289CAEB264200C37D2D0A4
             AFAC6385FFC60DEC7D06D4873DD3A8CC
             80000001 B7BB526521D1E73C0FC0");
        let plain = hex(
            "80c800063cd7cc13e2ee35c8604e618c26f32734000000430000140781ca0006
             3cd7cc130110386e46753268576672 4d447247 66346f0000",
        );
        let profile = SrtpProfile::Aes128CmSha1_80;
        let mut server = LegSrtp::from_keying_material(profile, &mat, false).expect("server");
        let mut buf = srtcp.clone();
        let opened = server.rx.unprotect_rtcp(&mut buf).expect("unprotect");
        assert_eq!(opened.index, 1);
        assert_eq!(buf[..opened.len], plain[..]);

        let mut client = LegSrtp::from_keying_material(profile, &mat, true).expect("client");
        client.tx.srtcp_index = 1;
        client
            .tx
            .reserve_own_rtcp_ssrc(0x3cd7cc13)
            .expect("reserve");
        let mut buf = plain.clone();
        buf.resize(plain.len() + profile.rtcp_overhead(), 0);
        let n = client
            .tx
            .protect_rtcp(&mut buf, plain.len())
            .expect("protect");
        assert_eq!(buf[..n], srtcp[..]);
    }

    const RFC7714_SALT: &str = "517569642070726f2071756f";
    const RFC7714_KEY_128: &str = "000102030405060708090a0b0c0d0e0f";
    const RFC7714_KEY_256: &str =
        "000102030405060708090a0b0c0d0e0f 101112131415161718191a1b1c1d1e1f";
    /// §16: the RTP packet (SSRC 0x5501a0b2, SEQ 0xf17b, ROC 0), "Gallia est omnis divisa in
    /// partes tres".
    const RFC7714_RTP: &str = "8040f17b8041f8d35501a0b2
        47616c6c696120657374206f6d6e69732064697669736120696e207061727465732074726573";
    /// §17: the RTCP packet of the subsections (the section's preamble prints another one; the
    /// subsections' vectors are consistent with this).
    const RFC7714_RTCP: &str = "81c8000d4d617273 4e5450314e545032525450200000042a0000e9304c756e61
        deadbeefdeadbeefdeadbeefdeadbeefdeadbeef";

    #[test]
    fn rfc7714_16_srtp_aes_gcm() {
        for (profile, key, want) in [
            (
                SrtpProfile::AeadAes128Gcm,
                RFC7714_KEY_128,
                "8040f17b8041f8d35501a0b2
                 f24de3a3fb34de6cacba861c9d7e4bcabe633bd50d294e6f42a5f47a51c7d19b36de3adf8833
                 899d7f27beb16a9152cf765ee4390cce",
            ),
            (
                SrtpProfile::AeadAes256Gcm,
                RFC7714_KEY_256,
                "8040f17b8041f8d35501a0b2
                 32b1de78a822fe12ef9f78fa332e33aab18012389a58e2f3b50b2a0276ffae0f1ba63799b87b
                 7aa3db36dfffd6b0f9bb7878d7a76c13",
            ),
        ] {
            let (tx, mut rx) = from_session(profile, &hex(key), &hex(RFC7714_SALT));
            let plain = hex(RFC7714_RTP);
            let mut p = plain.clone();
            tx.protect_rtp_vec(&mut p, 0xf17b).expect("protect");
            assert_eq!(p, hex(want), "{profile:?}");
            let opened = rx.unprotect_rtp(&mut p).expect("unprotect");
            assert_eq!(
                opened,
                OpenedRtp {
                    len: plain.len(),
                    header_len: 12,
                    ssrc: 0x5501a0b2,
                    index: 0xf17b
                }
            );
            assert_eq!(p[..opened.len], plain[..]);
        }
    }

    #[test]
    fn rfc7714_17_srtcp_aes_gcm_encrypted_and_tag_only_refused() {
        for (profile, key, encrypted, tagged) in [
            (
                SrtpProfile::AeadAes128Gcm,
                RFC7714_KEY_128,
                "81c8000d4d617273
                 63e94885dcdab67ca727d7662f6b7e997ff5c0f76c06f32dc676a5f1730d6fda4ce09b46
                 86303ded0bb9275b c84aa45896cf4d2fc5abf87245d9eade 800005d4",
                "841dd9683dd78ec92ae58790125f62b3",
            ),
            (
                SrtpProfile::AeadAes256Gcm,
                RFC7714_KEY_256,
                "81c8000d4d617273
                 d50ae4d1f5ce5d304ba297e47d470c282c3ece5dbffe0a50a2eaa5c1110555be8415f658
                 c61de0476f1b6fad 1d1eb30c4446839f57ff6f6cb26ac3be 800005d4",
                "91db4afbfeee5a978fab4393ed2615fe",
            ),
        ] {
            let plain = hex(RFC7714_RTCP);
            // §17.1 / §17.2: sealed, E = 1, index 0x5d4.
            let (mut tx, mut rx) = from_session(profile, &hex(key), &hex(RFC7714_SALT));
            tx.srtcp_index = 0x5d4;
            tx.reserve_own_rtcp_ssrc(0x4d617273).expect("reserve");
            let mut buf = plain.clone();
            buf.resize(plain.len() + profile.rtcp_overhead(), 0);
            let n = tx.protect_rtcp(&mut buf, plain.len()).expect("protect");
            assert_eq!(buf[..n], hex(encrypted)[..], "{profile:?}");
            let opened = rx.unprotect_rtcp(&mut buf).expect("unprotect");
            assert_eq!(
                opened,
                OpenedRtcp {
                    len: plain.len(),
                    ssrc: 0x4d617273,
                    index: 0x5d4,
                    encrypted: true
                }
            );
            assert_eq!(buf[..opened.len], plain[..]);

            // §17.3 / §17.4: authenticated only, E = 0. A genuine packet, refused before any
            // crypto (WebRTC peers always encrypt), its bytes untouched; and it does not
            // count against the index's window.
            let (_, mut rx) = from_session(profile, &hex(key), &hex(RFC7714_SALT));
            let mut buf = plain.clone();
            buf.extend_from_slice(&hex(tagged));
            buf.extend_from_slice(&hex("000005d4"));
            let before = buf.clone();
            assert_eq!(rx.unprotect_rtcp(&mut buf), Err(SrtpError::Unencrypted));
            assert_eq!(buf, before);
            assert!(rx.rtcp_streams.is_empty(), "no state from a refused packet");
            assert_eq!(tx.open_own_rtcp(&mut buf), Err(SrtpError::Unencrypted));
            assert_eq!(buf, before);
        }
    }

    // ---- Keys and roles ----

    #[test]
    fn profile_lengths() {
        assert_eq!(SrtpProfile::Aes128CmSha1_80.keying_material_len(), 60);
        assert_eq!(SrtpProfile::AeadAes128Gcm.keying_material_len(), 56);
        assert_eq!(SrtpProfile::AeadAes256Gcm.keying_material_len(), 88);
        assert_eq!(SrtpProfile::Aes128CmSha1_80.rtp_overhead(), 10);
        assert_eq!(SrtpProfile::AeadAes256Gcm.rtp_overhead(), 16);
        assert_eq!(SrtpProfile::Aes128CmSha1_80.rtcp_overhead(), 14);
        assert_eq!(SrtpProfile::AeadAes128Gcm.rtcp_overhead(), 20);
    }

    #[test]
    fn profiles_map_from_dtls_with_the_same_material_length() {
        for dtls in str0m::crypto::dtls::SrtpProfile::ALL {
            let ours = SrtpProfile::from_dtls(*dtls).expect("every profile dimpl offers");
            assert_eq!(
                ours.keying_material_len(),
                dtls.keying_material_len(),
                "{dtls:?}"
            );
        }
        assert_eq!(
            SrtpProfile::from_dtls(str0m::crypto::dtls::SrtpProfile::AEAD_AES_256_GCM),
            Some(SrtpProfile::AeadAes256Gcm)
        );
    }

    #[test]
    fn keying_material_of_another_length_is_refused() {
        for profile in ALL {
            for len in [
                0,
                profile.keying_material_len() - 1,
                profile.keying_material_len() + 1,
            ] {
                let err = LegSrtp::from_keying_material(profile, &vec![7; len], true).err();
                assert_eq!(
                    err,
                    Some(SrtpError::KeyingMaterialLength),
                    "{profile:?} {len}"
                );
            }
        }
        let err = SrtpTx::new(SrtpProfile::AeadAes128Gcm, &[0; 16], &[0; 14]).err();
        assert_eq!(err, Some(SrtpError::KeyingMaterialLength));
    }

    #[test]
    fn round_trip_every_profile_both_roles() {
        for profile in ALL {
            let (mut client, mut server) = pair(profile);
            for (tx, rx) in [(&client.tx, &mut server.rx), (&server.tx, &mut client.rx)] {
                let plain = rtp(0xabcd, 7, 1200);
                let mut p = plain.clone();
                tx.protect_rtp_vec(&mut p, 7).expect("protect");
                assert_eq!(p.len(), plain.len() + profile.rtp_overhead());
                assert_ne!(
                    p[12..plain.len()],
                    plain[12..],
                    "{profile:?} payload not encrypted"
                );
                assert_eq!(p[..12], plain[..12], "header stays clear");
                let opened = rx.unprotect_rtp(&mut p).expect("unprotect");
                assert_eq!(
                    opened,
                    OpenedRtp {
                        len: plain.len(),
                        header_len: 12,
                        ssrc: 0xabcd,
                        index: 7
                    }
                );
                assert_eq!(p[..opened.len], plain[..]);
            }
        }
    }

    #[test]
    fn srtcp_round_trip_every_profile_both_roles() {
        for profile in ALL {
            let (mut client, mut server) = pair(profile);
            for (tx, rx) in [
                (&mut client.tx, &mut server.rx),
                (&mut server.tx, &mut client.rx),
            ] {
                tx.reserve_own_rtcp_ssrc(0x5151).expect("reserve");
                for i in 0..3u32 {
                    let plain = rtcp(0x5151);
                    let mut buf = plain.clone();
                    buf.resize(plain.len() + profile.rtcp_overhead(), 0);
                    let n = tx.protect_rtcp(&mut buf, plain.len()).expect("protect");
                    assert_eq!(n, buf.len());
                    assert_ne!(
                        buf[8..plain.len()],
                        plain[8..],
                        "{profile:?} body not encrypted"
                    );
                    let opened = rx.unprotect_rtcp(&mut buf).expect("unprotect");
                    assert_eq!(
                        opened,
                        OpenedRtcp {
                            len: plain.len(),
                            ssrc: 0x5151,
                            index: i,
                            encrypted: true
                        }
                    );
                    assert_eq!(buf[..opened.len], plain[..]);
                }
            }
        }
    }

    /// RFC 5764 §4.2: the client writes with the first key and the first salt.
    #[test]
    fn the_dtls_client_sends_with_the_first_key_and_salt() {
        for profile in ALL {
            let m = material(profile);
            let (kl, sl) = (profile.master_key_len(), profile.master_salt_len());
            let client_write = SrtpTx::new(profile, &m[..kl], &m[2 * kl..2 * kl + sl]).expect("c");
            let server_write = SrtpTx::new(profile, &m[kl..2 * kl], &m[2 * kl + sl..]).expect("s");
            let (client, server) = pair(profile);
            for (leg, expected) in [(&client.tx, &client_write), (&server.tx, &server_write)] {
                assert_eq!(
                    sealed(leg, 4, 9, 50),
                    sealed(expected, 4, 9, 50),
                    "{profile:?}"
                );
            }
        }
    }

    #[test]
    fn a_leg_does_not_open_its_own_packets() {
        for profile in ALL {
            let (mut client, _) = pair(profile);
            let p = sealed(&client.tx, 1, 1, 100);
            assert_eq!(
                open(&mut client.rx, &p),
                Err(SrtpError::AuthFailed),
                "{profile:?}"
            );
        }
    }

    #[test]
    fn the_halves_can_move_apart() {
        fn send<T: Send + Sync + 'static>() {}
        send::<SrtpTx>();
        send::<SrtpRx>();
    }

    #[test]
    fn csrcs_and_a_header_extension_are_authenticated_not_encrypted() {
        for profile in ALL {
            let (client, mut server) = pair(profile);
            // X = 1, CC = 2: two CSRCs and a one-byte-header extension of two words.
            let mut plain = vec![0x92, 96, 0, 9];
            plain.extend_from_slice(&[0, 0, 0, 1, 0, 0, 0, 42]);
            plain.extend_from_slice(&[0, 0, 0, 7, 0, 0, 0, 8]);
            plain.extend_from_slice(&[0xbe, 0xde, 0, 2, 0x10, 0xff, 0, 0, 0x22, 1, 2, 3]);
            plain.extend_from_slice(b"payload bytes");
            let header_len = 12 + 8 + 4 + 8;
            let mut p = plain.clone();
            client.tx.protect_rtp_vec(&mut p, 9).expect("protect");
            assert_eq!(p[..header_len], plain[..header_len]);
            let mut tampered = p.clone();
            tampered[header_len - 2] ^= 0x40; // inside the extension
            assert_eq!(open(&mut server.rx, &tampered), Err(SrtpError::AuthFailed));
            let opened = server.rx.unprotect_rtp(&mut p).expect("unprotect");
            assert_eq!(opened.header_len, header_len, "{profile:?}");
            assert_eq!(opened.ssrc, 42);
            assert_eq!(p[..opened.len], plain[..]);
        }
    }

    // ---- Tampering ----

    #[test]
    fn a_flipped_bit_anywhere_fails_and_changes_nothing() {
        for profile in ALL {
            let (client, mut server) = pair(profile);
            let good = sealed(&client.tx, 9, 100, 64);
            // Header (timestamp, and the sequence number: a forged index), payload, tag.
            for at in [5, 3, 12, 40, good.len() - 1] {
                let mut bad = good.clone();
                bad[at] ^= 0x01;
                assert_eq!(
                    open(&mut server.rx, &bad),
                    Err(SrtpError::AuthFailed),
                    "{at}"
                );
                assert_eq!(
                    server.rx.rtp_highest_index(9),
                    None,
                    "no state from a forgery"
                );
            }
            assert_eq!(
                open(&mut server.rx, &good).map(|o| o.index),
                Ok(100),
                "{profile:?}"
            );
            for at in [5, 3, 40, good.len() - 1] {
                let mut bad = good.clone();
                bad[at] ^= 0x80;
                assert!(open(&mut server.rx, &bad).is_err());
            }
            assert_eq!(server.rx.rtp_highest_index(9), Some(100));
        }
    }

    #[test]
    fn a_forged_sequence_jump_does_not_move_the_index_estimate() {
        for profile in ALL {
            let (client, mut server) = pair(profile);
            open(&mut server.rx, &sealed(&client.tx, 9, 60_000, 10)).expect("first");
            // A forgery whose sequence number says the ROC moved on (65535 → 100 would be a
            // wrap); its tag cannot verify.
            let mut forged = sealed(&client.tx, 9, 60_001, 10);
            forged[2..4].copy_from_slice(&100u16.to_be_bytes());
            assert_eq!(open(&mut server.rx, &forged), Err(SrtpError::AuthFailed));
            assert_eq!(server.rx.rtp_highest_index(9), Some(60_000), "{profile:?}");
            // The genuine stream goes on at ROC 0.
            let next = open(&mut server.rx, &sealed(&client.tx, 9, 60_002, 10));
            assert_eq!(next.map(|o| o.index), Ok(60_002));
        }
    }

    #[test]
    fn srtcp_tampering_fails_and_changes_nothing() {
        for profile in ALL {
            let (mut client, mut server) = pair(profile);
            client.tx.reserve_own_rtcp_ssrc(77).expect("reserve");
            let plain = rtcp(77);
            let mut good = plain.clone();
            good.resize(plain.len() + profile.rtcp_overhead(), 0);
            client
                .tx
                .protect_rtcp(&mut good, plain.len())
                .expect("protect");
            for at in [1, 6, 10, good.len() - 1, good.len() - 11, good.len() - 17] {
                let mut bad = good.clone();
                bad[at] ^= 0x01;
                assert_eq!(
                    server.rx.unprotect_rtcp(&mut bad),
                    Err(SrtpError::AuthFailed)
                );
            }
            let opened = server
                .rx
                .unprotect_rtcp(&mut good.clone())
                .expect("genuine");
            assert_eq!(opened.index, 0, "{profile:?}");
            assert_eq!(
                server.rx.unprotect_rtcp(&mut good),
                Err(SrtpError::Replayed)
            );
        }
    }

    // ---- Replay and the index ----

    #[test]
    fn replay_window() {
        for profile in ALL {
            let (client, mut server) = pair(profile);
            let p = |i: u64| sealed(&client.tx, 5, i, 20);
            assert!(open(&mut server.rx, &p(200)).is_ok());
            assert_eq!(open(&mut server.rx, &p(200)), Err(SrtpError::Replayed));
            // Late but inside the window: once.
            assert_eq!(open(&mut server.rx, &p(150)).map(|o| o.index), Ok(150));
            assert_eq!(open(&mut server.rx, &p(150)), Err(SrtpError::Replayed));
            // The window's oldest slot (age 127) and the first one out (age 128).
            assert_eq!(open(&mut server.rx, &p(73)).map(|o| o.index), Ok(73));
            assert_eq!(open(&mut server.rx, &p(72)), Err(SrtpError::TooOld));
            // A jump ahead keeps the bits that are still in the window.
            assert!(open(&mut server.rx, &p(260)).is_ok());
            assert_eq!(open(&mut server.rx, &p(200)), Err(SrtpError::Replayed));
            assert_eq!(open(&mut server.rx, &p(150)), Err(SrtpError::Replayed));
            assert_eq!(open(&mut server.rx, &p(201)).map(|o| o.index), Ok(201));
            // A jump past the window clears it.
            assert!(open(&mut server.rx, &p(1000)).is_ok());
            assert_eq!(open(&mut server.rx, &p(900)).map(|o| o.index), Ok(900));
            assert_eq!(open(&mut server.rx, &p(260)), Err(SrtpError::TooOld));
        }
    }

    #[test]
    fn streams_have_separate_windows() {
        let (client, mut server) = pair(SrtpProfile::AeadAes128Gcm);
        assert!(open(&mut server.rx, &sealed(&client.tx, 1, 10, 5)).is_ok());
        assert!(open(&mut server.rx, &sealed(&client.tx, 2, 10, 5)).is_ok());
        assert_eq!(
            open(&mut server.rx, &sealed(&client.tx, 1, 10, 5)),
            Err(SrtpError::Replayed)
        );
    }

    #[test]
    fn srtcp_replay_window() {
        for profile in ALL {
            let (mut client, mut server) = pair(profile);
            client.tx.reserve_own_rtcp_ssrc(3).expect("reserve");
            let mut sent = Vec::new();
            for _ in 0..200 {
                let plain = rtcp(3);
                let mut buf = plain.clone();
                buf.resize(plain.len() + profile.rtcp_overhead(), 0);
                client
                    .tx
                    .protect_rtcp(&mut buf, plain.len())
                    .expect("protect");
                sent.push(buf);
            }
            assert!(server.rx.unprotect_rtcp(&mut sent[199].clone()).is_ok());
            assert_eq!(
                server.rx.unprotect_rtcp(&mut sent[199].clone()),
                Err(SrtpError::Replayed)
            );
            assert_eq!(
                server
                    .rx
                    .unprotect_rtcp(&mut sent[100].clone())
                    .map(|o| o.index),
                Ok(100)
            );
            assert_eq!(
                server.rx.unprotect_rtcp(&mut sent[100].clone()),
                Err(SrtpError::Replayed)
            );
            assert_eq!(
                server.rx.unprotect_rtcp(&mut sent[71].clone()),
                Err(SrtpError::TooOld)
            );
        }
    }

    #[test]
    fn roc_rolls_over_forward_and_a_late_packet_from_before_the_wrap_opens() {
        for profile in ALL {
            let (client, mut server) = pair(profile);
            let p = |i: u64| sealed(&client.tx, 0x77, i, 30);
            for i in 65_530..=65_533 {
                assert_eq!(open(&mut server.rx, &p(i)).map(|o| o.index), Ok(i));
            }
            // 65534 and 65535 are held back; the stream wraps to ROC 1.
            for i in 65_536..=65_540 {
                assert_eq!(
                    open(&mut server.rx, &p(i)).map(|o| o.index),
                    Ok(i),
                    "{profile:?}"
                );
            }
            assert_eq!(server.rx.rtp_highest_index(0x77), Some(65_540));
            // Late, from before the wrap: estimated at ROC 0 and opened once.
            assert_eq!(
                open(&mut server.rx, &p(65_535)).map(|o| o.index),
                Ok(65_535)
            );
            assert_eq!(
                open(&mut server.rx, &p(65_534)).map(|o| o.index),
                Ok(65_534)
            );
            assert_eq!(open(&mut server.rx, &p(65_535)), Err(SrtpError::Replayed));
            assert_eq!(server.rx.rtp_highest_index(0x77), Some(65_540));
            // And on across the next wrap, far from the first.
            let top = (5 << 16) | 0xfffe;
            server.rx.seed_rtp_index(0x77, top).expect("seed");
            for i in top + 1..top + 4 {
                assert_eq!(open(&mut server.rx, &p(i)).map(|o| o.index), Ok(i));
            }
        }
    }

    #[test]
    fn a_stream_that_starts_just_before_the_wrap() {
        let (client, mut server) = pair(SrtpProfile::AeadAes256Gcm);
        let p = |i: u64| sealed(&client.tx, 3, i, 30);
        assert_eq!(
            open(&mut server.rx, &p(65_535)).map(|o| o.index),
            Ok(65_535)
        );
        assert_eq!(
            open(&mut server.rx, &p(65_536)).map(|o| o.index),
            Ok(65_536)
        );
        // Before the first packet seen and in the window.
        assert_eq!(
            open(&mut server.rx, &p(65_534)).map(|o| o.index),
            Ok(65_534)
        );
    }

    #[test]
    fn a_packet_from_before_index_zero_is_refused_without_work() {
        let (client, mut server) = pair(SrtpProfile::AeadAes128Gcm);
        assert!(open(&mut server.rx, &sealed(&client.tx, 3, 10, 30)).is_ok());
        // SEQ 40000 with s_l = 10 would be ROC - 1 = -1.
        let mut p = rtp(3, 40_000, 30);
        p.resize(p.len() + 16, 0);
        assert_eq!(open(&mut server.rx, &p), Err(SrtpError::TooOld));
    }

    #[test]
    fn index_estimate_matches_rfc3711_3_3_1() {
        // (s_l with ROC, SEQ) → index.
        let cases = [
            (10u64, 11u16, Some(11u64)),
            (10, 40_000, None),
            ((1 << 16) | 10, 65_000, Some(65_000)),
            (65_000, 10, Some((1 << 16) | 10)),
            (65_000, 40_000, Some(40_000)),
            (32_768, 0, Some(0)),
            (32_769, 0, Some(1 << 16)),
            ((7 << 16) | 100, 100, Some((7 << 16) | 100)),
            (MAX_RTP_INDEX, 5, None),
        ];
        for (top, seq, want) in cases {
            assert_eq!(estimate_index(top, seq), want, "top {top:#x} seq {seq}");
        }
    }

    #[test]
    fn seeding_sets_the_roc_of_a_stream_str0m_opened_before() {
        let (client, mut server) = pair(SrtpProfile::AeadAes128Gcm);
        let index = (3 << 16) | 500;
        // Unseeded, the receiver assumes ROC 0 and the tag fails.
        assert_eq!(
            open(&mut server.rx, &sealed(&client.tx, 8, index, 10)),
            Err(SrtpError::AuthFailed)
        );
        server.rx.seed_rtp_index(8, index - 1).expect("seed");
        // What str0m may already have opened is not opened again.
        assert_eq!(
            open(&mut server.rx, &sealed(&client.tx, 8, index - 2, 10)),
            Err(SrtpError::Replayed)
        );
        assert_eq!(
            open(&mut server.rx, &sealed(&client.tx, 8, index, 10)).map(|o| o.index),
            Ok(index)
        );
        assert_eq!(
            server.rx.seed_rtp_index(8, 1 << 48),
            Err(SrtpError::BadIndex)
        );
    }

    // ---- Bounds ----

    #[test]
    fn ssrc_state_is_capped_and_freed_by_forget() {
        let (client, mut server) = pair(SrtpProfile::AeadAes128Gcm);
        for ssrc in 0..MAX_RX_SSRCS as u32 {
            assert!(open(&mut server.rx, &sealed(&client.tx, ssrc, 1, 4)).is_ok());
        }
        let extra = MAX_RX_SSRCS as u32;
        assert_eq!(
            open(&mut server.rx, &sealed(&client.tx, extra, 1, 4)),
            Err(SrtpError::TooManySsrcs)
        );
        // Known streams go on.
        assert!(open(&mut server.rx, &sealed(&client.tx, 0, 2, 4)).is_ok());
        server.rx.forget_ssrc(5);
        assert_eq!(server.rx.rtp_highest_index(5), None);
        assert!(open(&mut server.rx, &sealed(&client.tx, extra, 1, 4)).is_ok());
    }

    #[test]
    fn a_stale_seed_does_not_reopen_what_was_accepted() {
        for profile in ALL {
            let (client, mut server) = pair(profile);
            let p = |i: u64| sealed(&client.tx, 8, i, 10);
            for i in 200..=210 {
                assert!(open(&mut server.rx, &p(i)).is_ok());
            }
            // str0m's view, read before those packets reached us.
            server.rx.seed_rtp_index(8, 150).expect("seed");
            assert_eq!(server.rx.rtp_highest_index(8), Some(210), "{profile:?}");
            for i in [205, 210] {
                assert_eq!(open(&mut server.rx, &p(i)), Err(SrtpError::Replayed), "{i}");
            }
            // The seed's own window joins ours: what str0m may have taken is not opened again,
            // what neither saw still opens once.
            assert_eq!(open(&mut server.rx, &p(140)), Err(SrtpError::Replayed));
            assert_eq!(open(&mut server.rx, &p(180)).map(|o| o.index), Ok(180));
            assert_eq!(open(&mut server.rx, &p(211)).map(|o| o.index), Ok(211));
        }
    }

    #[test]
    fn a_stale_seed_across_a_wrap_keeps_the_roc() {
        for profile in ALL {
            let (client, mut server) = pair(profile);
            let p = |i: u64| sealed(&client.tx, 8, i, 10);
            let top = (1 << 16) | 100;
            server.rx.seed_rtp_index(8, top).expect("seed");
            assert_eq!(
                open(&mut server.rx, &p(top + 1)).map(|o| o.index),
                Ok(top + 1)
            );
            // A stale seed from before the wrap, same SEQ: taken as is it would fix ROC 0.
            server.rx.seed_rtp_index(8, 100).expect("seed");
            for i in top + 2..top + 5 {
                assert_eq!(
                    open(&mut server.rx, &p(i)).map(|o| o.index),
                    Ok(i),
                    "{profile:?}"
                );
            }
            // A later seed still moves it on.
            server.rx.seed_rtp_index(8, top + 1000).expect("seed");
            assert_eq!(server.rx.rtp_highest_index(8), Some(top + 1000));
            assert_eq!(open(&mut server.rx, &p(top + 4)), Err(SrtpError::TooOld));
        }
    }

    #[test]
    fn unknown_ssrcs_are_told_apart_once_refused() {
        for profile in ALL {
            let (client, mut server) = pair(profile);
            server.rx.refuse_unknown_ssrcs(true);
            let past_a_wrap = (3 << 16) | 500;
            let mut p = sealed(&client.tx, 8, past_a_wrap, 10);
            let before = p.clone();
            assert_eq!(
                server.rx.unprotect_rtp(&mut p),
                Err(SrtpError::UnknownSsrc),
                "{profile:?}"
            );
            assert_eq!(p, before, "left as it was");
            assert!(server.rx.rtp_streams.is_empty(), "no state");
            // Seeded with str0m's index, it opens at the right ROC.
            server.rx.seed_rtp_index(8, past_a_wrap - 1).expect("seed");
            assert_eq!(
                server.rx.unprotect_rtp(&mut p).map(|o| o.index),
                Ok(past_a_wrap)
            );
            // Adopted, a new stream starts at ROC 0 with its first packet.
            server.rx.adopt_ssrc(9).expect("adopt");
            assert_eq!(server.rx.rtp_highest_index(9), None);
            assert_eq!(
                open(&mut server.rx, &sealed(&client.tx, 9, 40_000, 10)).map(|o| o.index),
                Ok(40_000)
            );
            assert_eq!(
                open(&mut server.rx, &sealed(&client.tx, 9, 39_999, 10)).map(|o| o.index),
                Ok(39_999)
            );
            assert_eq!(server.rx.rtp_highest_index(9), Some(40_000));
            // Adopting again changes nothing.
            server.rx.adopt_ssrc(9).expect("adopt");
            assert_eq!(
                open(&mut server.rx, &sealed(&client.tx, 9, 40_000, 10)),
                Err(SrtpError::Replayed)
            );
            // Off again: the default, ROC 0 for a new SSRC.
            server.rx.refuse_unknown_ssrcs(false);
            assert_eq!(
                open(&mut server.rx, &sealed(&client.tx, 10, 7, 10)).map(|o| o.index),
                Ok(7)
            );
        }
    }

    #[test]
    fn adopting_counts_against_the_cap() {
        let (_, mut server) = pair(SrtpProfile::AeadAes128Gcm);
        for ssrc in 0..MAX_RX_SSRCS as u32 {
            server.rx.adopt_ssrc(ssrc).expect("adopt");
        }
        assert_eq!(server.rx.adopt_ssrc(1), Ok(()), "known already");
        assert_eq!(
            server.rx.adopt_ssrc(MAX_RX_SSRCS as u32),
            Err(SrtpError::TooManySsrcs)
        );
    }

    /// What `forget_ssrc` documents: by default a forgotten stream's recorded packets at ROC 0
    /// open once more; refusing unknown SSRCs closes that.
    #[test]
    fn a_forgotten_ssrc_is_replayable_once_unless_unknown_ssrcs_are_refused() {
        for refuse in [false, true] {
            let (client, mut server) = pair(SrtpProfile::AeadAes128Gcm);
            server.rx.refuse_unknown_ssrcs(refuse);
            server.rx.adopt_ssrc(4).expect("adopt");
            let recorded = sealed(&client.tx, 4, 10, 10);
            assert!(open(&mut server.rx, &recorded).is_ok());
            assert_eq!(open(&mut server.rx, &recorded), Err(SrtpError::Replayed));
            server.rx.forget_ssrc(4);
            let again = open(&mut server.rx, &recorded);
            if refuse {
                assert_eq!(again, Err(SrtpError::UnknownSsrc));
            } else {
                assert_eq!(
                    again.map(|o| o.index),
                    Ok(10),
                    "the replay the docs warn of"
                );
            }
        }
    }

    /// str0m's SRTCP context on the leg has the same key and counts from 0 too: our counter
    /// may only seal for the reserved SSRC, and str0m's index only for the others.
    #[test]
    fn own_rtcp_is_sealed_only_for_the_reserved_ssrc() {
        for profile in ALL {
            let (mut client, _) = pair(profile);
            let room = |p: &[u8]| {
                let mut b = p.to_vec();
                b.resize(p.len() + profile.rtcp_overhead(), 0);
                b
            };
            let str0ms = rtcp(0x5700);
            let ours = rtcp(0x0e1f);
            // Nothing reserved yet.
            let mut buf = room(&ours);
            assert_eq!(
                client.tx.protect_rtcp(&mut buf, ours.len()),
                Err(SrtpError::RtcpSsrcNotReserved)
            );
            assert_eq!(buf, room(&ours), "left as it was");
            client.tx.reserve_own_rtcp_ssrc(0x0e1f).expect("reserve");
            assert_eq!(client.tx.reserve_own_rtcp_ssrc(0x0e1f), Ok(()));
            assert_eq!(
                client.tx.reserve_own_rtcp_ssrc(0x5700),
                Err(SrtpError::RtcpSsrcReserved)
            );
            assert_eq!(client.tx.own_rtcp_ssrc(), Some(0x0e1f));
            // str0m's SSRC through our counter: the (SSRC, index 0) str0m's first report has.
            let mut buf = room(&str0ms);
            assert_eq!(
                client.tx.protect_rtcp(&mut buf, str0ms.len()),
                Err(SrtpError::RtcpSsrcNotReserved),
                "{profile:?}"
            );
            assert_eq!(buf, room(&str0ms));
            assert_eq!(client.tx.next_srtcp_index(), 0, "no index spent");
            let mut buf = room(&ours);
            assert!(client.tx.protect_rtcp(&mut buf, ours.len()).is_ok());
            // Our SSRC at an index of str0m's choosing: refused, it is our counter's.
            let mut buf = room(&ours);
            assert_eq!(
                client.tx.protect_rtcp_at(&mut buf, ours.len(), 0),
                Err(SrtpError::RtcpSsrcReserved)
            );
            assert_eq!(buf, room(&ours));
            let mut buf = room(&str0ms);
            assert!(client.tx.protect_rtcp_at(&mut buf, str0ms.len(), 0).is_ok());
            // Too short to carry a sender SSRC.
            assert_eq!(
                client.tx.protect_rtcp(&mut [0x80; 40], 4),
                Err(SrtpError::Malformed)
            );
            assert_eq!(
                client.tx.protect_rtcp(&mut [0x80; 10], 12),
                Err(SrtpError::BufferTooSmall)
            );
        }
    }

    /// Every refusal leaves the packet as it was, but a failed AES-GCM tag (decrypted in
    /// place before the compare); AES-CM compares first.
    #[test]
    fn refusals_leave_the_buffer_intact() {
        for profile in ALL {
            let (mut client, mut server) = pair(profile);
            client.tx.reserve_own_rtcp_ssrc(6).expect("reserve");
            let good = sealed(&client.tx, 5, 300, 40);
            let mut cases: Vec<(Vec<u8>, SrtpError)> = vec![
                (good[..11].to_vec(), SrtpError::Malformed),
                (sealed(&client.tx, 5, 100, 40), SrtpError::TooOld),
                (good.clone(), SrtpError::Replayed),
            ];
            assert!(open(&mut server.rx, &good).is_ok());
            let mut tampered = sealed(&client.tx, 5, 301, 40);
            tampered[20] ^= 1;
            let gcm = profile != SrtpProfile::Aes128CmSha1_80;
            for (mut p, want) in cases.drain(..) {
                let before = p.clone();
                assert_eq!(server.rx.unprotect_rtp(&mut p), Err(want), "{profile:?}");
                assert_eq!(p, before, "{profile:?} {want:?}");
            }
            let before = tampered.clone();
            assert_eq!(
                server.rx.unprotect_rtp(&mut tampered),
                Err(SrtpError::AuthFailed)
            );
            assert_eq!(tampered == before, !gcm, "{profile:?}");
            for ssrc in 100..100 + MAX_RX_SSRCS as u32 - 1 {
                server.rx.adopt_ssrc(ssrc).expect("adopt");
            }
            let mut p = sealed(&client.tx, 1, 1, 10);
            let before = p.clone();
            assert_eq!(
                server.rx.unprotect_rtp(&mut p),
                Err(SrtpError::TooManySsrcs)
            );
            assert_eq!(p, before);

            // SRTCP: replayed, E = 0, and a bad tag.
            let plain = rtcp(6);
            let mut srtcp = plain.clone();
            srtcp.resize(plain.len() + profile.rtcp_overhead(), 0);
            client
                .tx
                .protect_rtcp(&mut srtcp, plain.len())
                .expect("protect");
            assert!(server.rx.unprotect_rtcp(&mut srtcp.clone()).is_ok());
            let mut e0 = srtcp.clone();
            let word = if gcm { e0.len() - 4 } else { plain.len() };
            e0[word] &= 0x7f;
            // A fresh index, so the tag is what fails.
            let mut bad = plain.clone();
            bad.resize(srtcp.len(), 0);
            client
                .tx
                .protect_rtcp(&mut bad, plain.len())
                .expect("protect");
            bad[10] ^= 1;
            for (mut p, want) in [
                (srtcp.clone(), SrtpError::Replayed),
                (e0, SrtpError::Unencrypted),
                (bad, SrtpError::AuthFailed),
            ] {
                let before = p.clone();
                assert_eq!(server.rx.unprotect_rtcp(&mut p), Err(want), "{profile:?}");
                assert_eq!(
                    p == before,
                    !(gcm && want == SrtpError::AuthFailed),
                    "{want:?}"
                );
            }
        }
    }

    /// The design's SR rewrite: open the leg's own outgoing SRTCP, patch it, re-seal it under
    /// the same index; the peer opens the patched packet.
    #[test]
    fn own_srtcp_opens_and_reseals_with_the_same_index() {
        for profile in ALL {
            let (mut client, mut server) = pair(profile);
            client.tx.reserve_own_rtcp_ssrc(0x600d).expect("reserve");
            let plain = rtcp(0x0bad_cafe);
            // What str0m sends, with the same key and its own counter (indices 0 and 1).
            let (str0m, _) = pair(profile);
            let mut sent = Vec::new();
            for k in 0..2 {
                let mut buf = plain.clone();
                buf.resize(plain.len() + profile.rtcp_overhead(), 0);
                str0m
                    .tx
                    .protect_rtcp_at(&mut buf, plain.len(), k)
                    .expect("protect");
                sent.push(buf);
            }
            let mut buf = sent[1].clone();
            assert_eq!(
                server.tx.open_own_rtcp(&mut buf.clone()),
                Err(SrtpError::AuthFailed),
                "another direction's keys"
            );
            let opened = client.tx.open_own_rtcp(&mut buf).expect("own");
            assert_eq!(
                opened,
                OpenedRtcp {
                    len: plain.len(),
                    ssrc: 0x0bad_cafe,
                    index: 1,
                    encrypted: true
                }
            );
            assert_eq!(buf[..opened.len], plain[..]);
            buf[8..12].copy_from_slice(&[9, 9, 9, 9]); // the patch (an SR's NTP time)
            let n = client
                .tx
                .protect_rtcp_at(&mut buf, opened.len, opened.index)
                .expect("reseal");
            assert_eq!(n, sent[1].len());
            assert_eq!(client.tx.next_srtcp_index(), 0, "the counter is left alone");
            let got = server
                .rx
                .unprotect_rtcp(&mut buf)
                .expect("peer opens the patch");
            assert_eq!(got.index, 1, "{profile:?}");
            assert_eq!(buf[8..12], [9, 9, 9, 9]);
            assert_eq!(buf[12..got.len], plain[12..]);
            assert_eq!(
                client.tx.protect_rtcp_at(&mut [0; 100], 28, 1 << 31),
                Err(SrtpError::BadIndex)
            );
        }
    }

    #[test]
    fn srtcp_index_exhaustion_is_an_error() {
        let (mut client, _) = pair(SrtpProfile::AeadAes128Gcm);
        client.tx.reserve_own_rtcp_ssrc(1).expect("reserve");
        client.tx.srtcp_index = MAX_RTCP_INDEX;
        let plain = rtcp(1);
        let mut buf = plain.clone();
        buf.resize(plain.len() + 20, 0);
        assert!(client.tx.protect_rtcp(&mut buf, plain.len()).is_ok());
        let mut buf = plain.clone();
        buf.resize(plain.len() + 20, 0);
        assert_eq!(
            client.tx.protect_rtcp(&mut buf, plain.len()),
            Err(SrtpError::IndexExhausted)
        );
    }

    #[test]
    fn protect_refuses_bad_input() {
        for profile in ALL {
            let (client, _) = pair(profile);
            let plain = rtp(1, 10, 8);
            // No room for the tag.
            let mut buf = plain.clone();
            buf.resize(plain.len() + profile.rtp_overhead() - 1, 0);
            assert_eq!(
                client.tx.protect_rtp(&mut buf, plain.len(), 10),
                Err(SrtpError::BufferTooSmall)
            );
            assert_eq!(
                client.tx.protect_rtp(&mut buf, usize::MAX, 10),
                Err(SrtpError::BufferTooSmall)
            );
            // The index must carry the packet's sequence number and fit 48 bits.
            let mut v = plain.clone();
            assert_eq!(
                client.tx.protect_rtp_vec(&mut v, 11),
                Err(SrtpError::BadIndex)
            );
            assert_eq!(v, plain, "a refused Vec is left as it was");
            assert_eq!(
                client.tx.protect_rtp_vec(&mut v, (1 << 48) | 10),
                Err(SrtpError::BadIndex)
            );
            // Malformed headers.
            for bad in [
                &[0x80u8, 0, 0][..],
                &[0x40; 20][..],
                &[0x8f; 20][..],
                &[0x90; 14][..],
            ] {
                let mut v = bad.to_vec();
                assert_eq!(
                    client.tx.protect_rtp_vec(&mut v, 0),
                    Err(SrtpError::Malformed),
                    "{bad:?}"
                );
            }
        }
    }

    #[test]
    fn unprotect_refuses_malformed_packets() {
        for profile in ALL {
            let (_, mut server) = pair(profile);
            let tag = profile.rtp_overhead();
            let mut cases: Vec<Vec<u8>> = (0..12).map(|n| vec![0x80; n]).collect();
            cases.push(vec![0x00; 40]); // version 0
            cases.push(
                [
                    vec![0x80, 0, 0, 1, 0, 0, 0, 0, 0, 0, 0, 1],
                    vec![0; tag - 1],
                ]
                .concat(),
            );
            // CC = 15 runs past the end.
            cases.push([vec![0x8f, 0, 0, 1, 0, 0, 0, 0, 0, 0, 0, 1], vec![0; 30]].concat());
            // X with the extension header cut off, and with a length past the end.
            cases.push(vec![0x90, 0, 0, 1, 0, 0, 0, 0, 0, 0, 0, 1, 0xbe]);
            cases.push(
                [
                    vec![
                        0x90, 0, 0, 1, 0, 0, 0, 0, 0, 0, 0, 1, 0xbe, 0xde, 0xff, 0xff,
                    ],
                    vec![0; 40],
                ]
                .concat(),
            );
            for mut case in cases {
                let before = case.clone();
                assert_eq!(
                    server.rx.unprotect_rtp(&mut case),
                    Err(SrtpError::Malformed),
                    "{before:?}"
                );
            }
            let rtcp_tail = profile.rtcp_overhead();
            let mut cases: Vec<Vec<u8>> = (0..8 + rtcp_tail).map(|n| vec![0x80; n]).collect();
            cases.push(vec![0x40; 60]); // version 1
            for mut case in cases {
                let before = case.clone();
                assert_eq!(
                    server.rx.unprotect_rtcp(&mut case),
                    Err(SrtpError::Malformed),
                    "{before:?}"
                );
            }
        }
    }

    /// Arbitrary bytes (and arbitrary bytes behind a valid-looking header) never panic.
    #[test]
    fn arbitrary_input_never_panics() {
        let mut state = 0x9e37_79b9_7f4a_7c15u64;
        let mut next = move || {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            state
        };
        for profile in ALL {
            let (mut client, mut server) = pair(profile);
            for round in 0..3000 {
                let len = (next() % 120) as usize;
                let mut buf: Vec<u8> = (0..len).map(|_| next() as u8).collect();
                if round % 2 == 0 && len > 0 {
                    buf[0] = (buf[0] & 0x3f) | 0x80;
                }
                let _ = server.rx.unprotect_rtp(&mut buf.clone());
                let _ = server.rx.unprotect_rtcp(&mut buf.clone());
                let cap = buf.len() + 20;
                let mut out = buf.clone();
                out.resize(cap, 0);
                let seq = if len >= 4 {
                    u64::from(u16::from_be_bytes([buf[2], buf[3]]))
                } else {
                    0
                };
                let _ = client.tx.protect_rtp(&mut out, len, seq);
                let _ = client.tx.protect_rtcp(&mut out, len);
            }
        }
    }
}

/// Per-packet cost of the fast path's crypto: open on the ingress leg, seal on the egress leg.
///
/// `cargo test --release -p huddle --lib media::srtp::bench -- --ignored --nocapture`
/// (`SRTP_BENCH_BATCHES` to shorten it and `SRTP_BENCH_PROFILE=AeadAes128Gcm` etc. to pick one
/// profile, e.g. under callgrind with `--toggle-collect='*forward_batch*'`: every collected
/// instruction is then the forwarding of `BATCH` packets per batch, warm-up included).
#[cfg(test)]
mod bench {
    use std::hint::black_box;
    use std::time::Instant;

    use super::*;

    const PAYLOAD: usize = 1200;
    const BATCH: usize = 2000;

    /// Opens each packet with `ingress` and seals it again with `egress`, in place.
    #[inline(never)]
    fn forward_batch(ingress: &mut SrtpRx, egress: &SrtpTx, packets: &mut [Vec<u8>]) {
        for p in packets.iter_mut() {
            let opened = ingress.unprotect_rtp(p).expect("open");
            let n = egress
                .protect_rtp(p, opened.len, opened.index)
                .expect("seal");
            black_box(n);
        }
    }

    #[test]
    #[ignore = "measurement: run in release with --ignored --nocapture"]
    fn forward_cost_per_packet() {
        let batches: usize = std::env::var("SRTP_BENCH_BATCHES")
            .ok()
            .and_then(|v| v.parse().ok())
            .unwrap_or(10);
        for profile in [
            SrtpProfile::AeadAes128Gcm,
            SrtpProfile::AeadAes256Gcm,
            SrtpProfile::Aes128CmSha1_80,
        ] {
            if let Ok(only) = std::env::var("SRTP_BENCH_PROFILE") {
                if !format!("{profile:?}").eq_ignore_ascii_case(&only) {
                    continue;
                }
            }
            let material: Vec<u8> = (0..profile.keying_material_len())
                .map(|i| i as u8)
                .collect();
            let sender = LegSrtp::from_keying_material(profile, &material, true).expect("a");
            let mut ingress = LegSrtp::from_keying_material(profile, &material, false).expect("a");
            let egress =
                LegSrtp::from_keying_material(profile, &[0x5a; 88][..material.len()], false)
                    .expect("b");
            let mut index = 0u64;
            let mut packets: Vec<Vec<u8>> = (0..BATCH)
                .map(|_| Vec::with_capacity(12 + PAYLOAD + 16))
                .collect();
            let mut per_packet = Vec::new();
            // One warm-up batch, then the measured ones.
            for round in 0..=batches {
                for p in packets.iter_mut() {
                    p.clear();
                    p.extend_from_slice(&[0x80, 96]);
                    p.extend_from_slice(&(index as u16).to_be_bytes());
                    p.extend_from_slice(&[0, 0, 0, 1, 0, 0, 0x12, 0x34]);
                    p.resize(12 + PAYLOAD, 0xa5);
                    sender.tx.protect_rtp_vec(p, index).expect("sender");
                    index += 1;
                }
                let start = Instant::now();
                forward_batch(&mut ingress.rx, &egress.tx, &mut packets);
                let ns = start.elapsed().as_nanos() as f64 / BATCH as f64;
                if round > 0 {
                    per_packet.push(ns);
                }
            }
            per_packet.sort_by(f64::total_cmp);
            let median = per_packet[per_packet.len() / 2];
            println!(
                "{profile:?}: open+seal of a {PAYLOAD}-byte payload: median {median:.0} ns, \
                 min {:.0} ns ({batches} batches of {BATCH})",
                per_packet[0]
            );
        }
    }
}
