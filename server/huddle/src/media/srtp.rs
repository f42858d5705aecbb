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
//!   shared with whatever str0m sent on that stream before; SRTCP counts its own index.
//! * [`SrtpRx`] opens in place and keeps, per SSRC, the RFC 3711 §3.3.1 index estimate and a
//!   128-packet replay window, both moved only by a packet whose tag verified.
//!
//! Nothing here allocates per packet (a new SSRC grows a small table, up to
//! [`MAX_RX_SSRCS`]) and nothing panics on any input: every malformed packet is an
//! [`SrtpError`]. On an error from an unprotect call the buffer's bytes are unspecified
//! (AES-GCM may have decrypted in place before the tag check failed); the caller drops it.
//!
//! # Profiles
//!
//! | profile | master key / salt | RTP trailer | SRTCP trailer |
//! |---|---|---|---|
//! | `AES128_CM_HMAC_SHA1_80` | 16 / 14 | 10-byte HMAC tag | E‖index, 10-byte tag |
//! | `AEAD_AES_128_GCM` | 16 / 12 | 16-byte GCM tag | 16-byte tag, E‖index |
//! | `AEAD_AES_256_GCM` | 32 / 12 | 16-byte GCM tag | 16-byte tag, E‖index |

// The driver's fast path (branch keytap) is this module's first user; until it lands, the
// tests are.
#![allow(dead_code)]

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
pub(crate) enum SrtpProfile {
    /// `SRTP_AES128_CM_HMAC_SHA1_80` (0x0001).
    Aes128CmSha1_80,
    /// `SRTP_AEAD_AES_128_GCM` (0x0007).
    AeadAes128Gcm,
    /// `SRTP_AEAD_AES_256_GCM` (0x0008).
    AeadAes256Gcm,
}

impl SrtpProfile {
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
pub(crate) enum SrtpError {
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
}

/// One leg's SRTP contexts, both directions, as derived from the DTLS keying material.
#[derive(Debug)]
pub(crate) struct LegSrtp {
    /// What we send with.
    pub(crate) tx: SrtpTx,
    /// What we receive with.
    pub(crate) rx: SrtpRx,
}

impl LegSrtp {
    /// Derives both directions' session keys from the DTLS-SRTP exporter output.
    ///
    /// `material` is `client_write_key ‖ server_write_key ‖ client_write_salt ‖
    /// server_write_salt` (RFC 5764 §4.2). `dtls_client` is whether we were the DTLS client
    /// (str0m's `is_active`): the client sends with the client's half, as str0m does.
    pub(crate) fn from_keying_material(
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
pub(crate) struct SrtpTx {
    profile: SrtpProfile,
    rtp: Cipher,
    rtcp: Cipher,
    /// Index of the next SRTCP packet.
    srtcp_index: u32,
}

impl fmt::Debug for SrtpTx {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SrtpTx")
            .field("profile", &self.profile)
            .field("srtcp_index", &self.srtcp_index)
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
        })
    }

    /// The profile these keys are for.
    pub(crate) fn profile(&self) -> SrtpProfile {
        self.profile
    }

    /// Protects the RTP packet in `buf[..len]` in place and returns the SRTP packet's length
    /// (`len + profile.rtp_overhead()`); `buf` must have that room.
    ///
    /// `index` is the packet's 48-bit SRTP index, `ROC << 16 | SEQ`: the extended sequence
    /// number of the outgoing stream. Its low 16 bits must equal the header's sequence number.
    /// The caller must never seal two packets with the same SSRC and index (for AES-GCM that
    /// would reuse a nonce).
    pub(crate) fn protect_rtp(
        &self,
        buf: &mut [u8],
        len: usize,
        index: u64,
    ) -> Result<usize, SrtpError> {
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
    /// The index counts from 0 per `SrtpTx`, whatever the packet's SSRC: one counter per
    /// direction never repeats an (SSRC, index) pair, so no nonce is reused, and receivers keep
    /// a window per SSRC in which a gap is harmless.
    pub(crate) fn protect_rtcp(&mut self, buf: &mut [u8], len: usize) -> Result<usize, SrtpError> {
        let tag_len = self.profile.tag_len();
        let out_len = len
            .checked_add(tag_len + SRTCP_INDEX_LEN)
            .ok_or(SrtpError::BufferTooSmall)?;
        if buf.len() < out_len {
            return Err(SrtpError::BufferTooSmall);
        }
        check_rtcp_header(&buf[..len])?;
        if self.srtcp_index > MAX_RTCP_INDEX {
            return Err(SrtpError::IndexExhausted);
        }
        let index = self.srtcp_index;
        let ssrc = read_u32(buf, 4);
        let e_index = (E_FLAG | index).to_be_bytes();
        match &self.rtcp {
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
        self.srtcp_index += 1;
        Ok(out_len)
    }

    /// The index the next SRTCP packet will carry.
    pub(crate) fn next_srtcp_index(&self) -> u32 {
        self.srtcp_index
    }
}

/// What [`SrtpRx::unprotect_rtp`] found.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct OpenedRtp {
    /// `buf[..len]` is the plain RTP packet (header, payload, any RTP padding).
    pub(crate) len: usize,
    /// Where the payload starts (fixed header, CSRCs and header extension).
    pub(crate) header_len: usize,
    /// The packet's SSRC.
    pub(crate) ssrc: u32,
    /// The packet's 48-bit SRTP index (`ROC << 16 | SEQ`): its extended sequence number.
    pub(crate) index: u64,
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
    /// Whether the packet was encrypted (E flag); an unencrypted one was still authenticated.
    pub(crate) encrypted: bool,
}

/// The receiving half: opens RTP and SRTCP in place, with per-SSRC index and replay state.
pub(crate) struct SrtpRx {
    profile: SrtpProfile,
    rtp: Cipher,
    rtcp: Cipher,
    rtp_streams: Vec<ReplayState>,
    rtcp_streams: Vec<ReplayState>,
}

impl fmt::Debug for SrtpRx {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SrtpRx")
            .field("profile", &self.profile)
            .field("rtp_streams", &self.rtp_streams.len())
            .field("rtcp_streams", &self.rtcp_streams.len())
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
        })
    }

    /// The profile these keys are for.
    pub(crate) fn profile(&self) -> SrtpProfile {
        self.profile
    }

    /// Authenticates and decrypts the SRTP packet `buf` in place.
    ///
    /// The index is estimated from the SSRC's highest authenticated index (RFC 3711 §3.3.1; a
    /// new SSRC starts at ROC 0), checked against the replay window, and only once the tag
    /// verifies does the packet move the estimate and the window.
    pub(crate) fn unprotect_rtp(&mut self, buf: &mut [u8]) -> Result<OpenedRtp, SrtpError> {
        let tag_len = self.profile.tag_len();
        let hlen = rtp_header_len(buf)?;
        if buf.len() < hlen + tag_len {
            return Err(SrtpError::Malformed);
        }
        let seq = u16::from_be_bytes([buf[2], buf[3]]);
        let ssrc = read_u32(buf, 8);
        let slot = self.rtp_streams.iter().position(|s| s.ssrc == ssrc);
        let index = match slot {
            Some(i) => {
                let state = &self.rtp_streams[i];
                let index = estimate_index(state.top, seq).ok_or(SrtpError::TooOld)?;
                state.check(index)?;
                index
            }
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

    /// Authenticates and (if its E flag says so) decrypts the SRTCP packet `buf` in place,
    /// checking the SRTCP index against the sender SSRC's replay window.
    pub(crate) fn unprotect_rtcp(&mut self, buf: &mut [u8]) -> Result<OpenedRtcp, SrtpError> {
        let tag_len = self.profile.tag_len();
        if buf.len() < RTCP_HEADER_LEN + SRTCP_INDEX_LEN + tag_len {
            return Err(SrtpError::Malformed);
        }
        check_rtcp_header(buf)?;
        let ssrc = read_u32(buf, 4);
        let total = buf.len();
        // The E‖index word ends the packet with AES-GCM and precedes the tag with AES-CM.
        let word_at = match self.rtcp {
            Cipher::Cm { .. } => total - tag_len - SRTCP_INDEX_LEN,
            Cipher::Gcm { .. } => total - SRTCP_INDEX_LEN,
        };
        let word = read_u32(buf, word_at);
        let encrypted = word & E_FLAG != 0;
        let index = word & !E_FLAG;
        let slot = self.rtcp_streams.iter().position(|s| s.ssrc == ssrc);
        match slot {
            Some(i) => self.rtcp_streams[i].check(u64::from(index))?,
            None if self.rtcp_streams.len() >= MAX_RX_SSRCS => {
                return Err(SrtpError::TooManySsrcs);
            }
            None => {}
        }
        let len = total - tag_len - SRTCP_INDEX_LEN;
        match &self.rtcp {
            Cipher::Cm { key, auth, salt } => {
                let tag = hmac_sha1(auth, &buf[..len + SRTCP_INDEX_LEN], None);
                aws_lc_rs::constant_time::verify_slices_are_equal(
                    &tag[..HMAC_TAG_LEN],
                    &buf[len + SRTCP_INDEX_LEN..],
                )
                .map_err(|_| SrtpError::AuthFailed)?;
                if encrypted {
                    let iv = cm_iv(salt, ssrc, u64::from(index));
                    ctr_apply(key, iv, &mut buf[RTCP_HEADER_LEN..len])?;
                }
            }
            Cipher::Gcm { key, salt } => {
                let iv = gcm_rtcp_iv(salt, ssrc, index);
                let word = word.to_be_bytes();
                if encrypted {
                    let mut aad = [0u8; RTCP_HEADER_LEN + SRTCP_INDEX_LEN];
                    aad[..RTCP_HEADER_LEN].copy_from_slice(&buf[..RTCP_HEADER_LEN]);
                    aad[RTCP_HEADER_LEN..].copy_from_slice(&word);
                    key.open_in_place(
                        Nonce::assume_unique_for_key(iv),
                        Aad::from(&aad),
                        &mut buf[RTCP_HEADER_LEN..len + GCM_TAG_LEN],
                    )
                    .map_err(|_| SrtpError::AuthFailed)?;
                } else {
                    // RFC 7714 §9.2: unencrypted, the whole packet and the E‖index word are the
                    // AAD and the plaintext is empty. Swapping the tag and the word makes the
                    // AAD one slice without copying the packet.
                    buf[len..].rotate_right(SRTCP_INDEX_LEN);
                    let (aad, tag) = buf.split_at_mut(len + SRTCP_INDEX_LEN);
                    key.open_in_place(Nonce::assume_unique_for_key(iv), Aad::from(&*aad), tag)
                        .map_err(|_| SrtpError::AuthFailed)?;
                }
            }
        }
        match slot {
            Some(i) => self.rtcp_streams[i].accept(u64::from(index)),
            None => self
                .rtcp_streams
                .push(ReplayState::new(ssrc, u64::from(index))),
        }
        Ok(OpenedRtcp {
            len,
            ssrc,
            index,
            encrypted,
        })
    }

    /// Sets the receive state of an RTP stream whose earlier packets were opened elsewhere
    /// (by str0m): `highest_index` is the highest index seen so far, which fixes the ROC the
    /// next packets are estimated against. The replay window starts empty above it.
    pub(crate) fn seed_rtp_index(
        &mut self,
        ssrc: u32,
        highest_index: u64,
    ) -> Result<(), SrtpError> {
        if highest_index > MAX_RTP_INDEX {
            return Err(SrtpError::BadIndex);
        }
        let state = ReplayState {
            ssrc,
            top: highest_index,
            window: 1,
        };
        if let Some(s) = self.rtp_streams.iter_mut().find(|s| s.ssrc == ssrc) {
            *s = state;
        } else if self.rtp_streams.len() >= MAX_RX_SSRCS {
            return Err(SrtpError::TooManySsrcs);
        } else {
            self.rtp_streams.push(state);
        }
        Ok(())
    }

    /// Drops the receive state (RTP and SRTCP) of an SSRC that ended, freeing its slot.
    pub(crate) fn forget_ssrc(&mut self, ssrc: u32) {
        self.rtp_streams.retain(|s| s.ssrc != ssrc);
        self.rtcp_streams.retain(|s| s.ssrc != ssrc);
    }

    /// The highest authenticated RTP index of `ssrc`, if it has state.
    pub(crate) fn rtp_highest_index(&self, ssrc: u32) -> Option<u64> {
        self.rtp_streams
            .iter()
            .find(|s| s.ssrc == ssrc)
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
}

impl ReplayState {
    fn new(ssrc: u32, index: u64) -> ReplayState {
        ReplayState {
            ssrc,
            top: index,
            window: 1,
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

    /// Records an authenticated packet that passed [`ReplayState::check`].
    fn accept(&mut self, index: u64) {
        if index > self.top {
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
            match profile {
                SrtpProfile::Aes128CmSha1_80 => {
                    let mut k = [0u8; 16];
                    let mut a = [0u8; HMAC_KEY_LEN];
                    let mut s = [0u8; CM_SALT_LEN];
                    kdf(master_key, master_salt, key_label, &mut k)?;
                    kdf(master_key, master_salt, auth_label, &mut a)?;
                    kdf(master_key, master_salt, salt_label, &mut s)?;
                    let key = UnboundCipherKey::new(&AES_128, &k)
                        .and_then(EncryptingKey::ctr)
                        .map_err(|_| SrtpError::KeyingMaterialLength)?;
                    let auth = hmac::Key::new(hmac::HMAC_SHA1_FOR_LEGACY_USE_ONLY, &a);
                    Ok(Cipher::Cm { key, auth, salt: s })
                }
                SrtpProfile::AeadAes128Gcm | SrtpProfile::AeadAes256Gcm => {
                    let mut k = [0u8; 32];
                    let k = &mut k[..profile.master_key_len()];
                    let mut s = [0u8; GCM_SALT_LEN];
                    kdf(master_key, master_salt, key_label, k)?;
                    kdf(master_key, master_salt, salt_label, &mut s)?;
                    let alg = if profile == SrtpProfile::AeadAes128Gcm {
                        &AES_128_GCM
                    } else {
                        &AES_256_GCM
                    };
                    let key =
                        UnboundKey::new(alg, k).map_err(|_| SrtpError::KeyingMaterialLength)?;
                    Ok(Cipher::Gcm {
                        key: LessSafeKey::new(key),
                        salt: s,
                    })
                }
            }
        };
        Ok((
            one([LABEL_RTP_KEY, LABEL_RTP_AUTH, LABEL_RTP_SALT])?,
            one([LABEL_RTCP_KEY, LABEL_RTCP_AUTH, LABEL_RTCP_SALT])?,
        ))
    }
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
    fn a_leg_does_not_open_its_own_packets() {
        for profile in ALL {
            let (mut client, _) = pair(profile);
            let mut p = sealed(&client.tx, 1, 1, 100);
            assert_eq!(
                client.rx.unprotect_rtp(&mut p),
                Err(SrtpError::AuthFailed),
                "{profile:?}"
            );
        }
    }
}
