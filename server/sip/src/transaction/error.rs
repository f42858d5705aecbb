//! The transaction layer's error enum.

use crate::headers::HeaderError;
use crate::message::ParseError;

/// Why the transaction layer refused a message or a TU call.
///
/// Errors reported for a *received* request (in [`super::Event::Rejected`]) map to the
/// response the TU answers with, see [`TransactionError::status`]; the others are TU mistakes
/// and cause no SIP response.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum TransactionError {
    /// The transaction table is full ([`super::LayerConfig::max_transactions`]).
    #[error("too many transactions")]
    Overloaded,
    /// A header the transaction key is built from (Via, CSeq, Call-ID, From, To) is missing
    /// or malformed.
    #[error("cannot identify the transaction: {0}")]
    Header(#[from] HeaderError),
    /// A message handed in by the TU does not parse.
    #[error("unparseable message: {0}")]
    Parse(#[from] ParseError),
    /// A request the TU sends has no top Via branch starting with `z9hG4bK` followed by a
    /// unique value; responses could not be matched to it.
    #[error("top Via branch lacks the RFC 3261 magic cookie or a unique part")]
    NoMagicCookie,
    /// A client transaction with the same branch and method exists.
    #[error("a client transaction with this branch and method exists")]
    DuplicateBranch,
    /// The TU passed a response where a request was expected.
    #[error("not a request")]
    NotARequest,
    /// The TU passed a request where a response was expected.
    #[error("not a response")]
    NotAResponse,
    /// ACK never opens a client transaction: ACK for a non-2xx is sent by the INVITE client
    /// transaction, ACK for a 2xx by the TU (use `send_stateless`).
    #[error("ACK is not sent in a client transaction")]
    AckIsNotATransaction,
    /// No live transaction has this key (it never existed or has terminated).
    #[error("no such transaction")]
    UnknownTransaction,
    /// The server transaction already sent a final response, so this one cannot be sent.
    #[error("a final response was already sent")]
    FinalResponseSent,
    /// The INVITE to cancel already received a final response (RFC 3261 §9.1).
    #[error("the INVITE already received a final response")]
    FinalResponseReceived,
    /// Only INVITE client transactions can be cancelled.
    #[error("only INVITE transactions can be cancelled")]
    NotInvite,
    /// [`super::TimerConfig::validate`] failed.
    #[error("invalid timer configuration")]
    InvalidTimers,
}

impl TransactionError {
    /// The status code the TU answers a received request with when the layer rejects it:
    /// `503` when overloaded, `400` when the request cannot be identified. `None` for errors
    /// that only TU calls produce.
    pub fn status(&self) -> Option<u16> {
        match self {
            TransactionError::Overloaded => Some(503),
            TransactionError::Header(_) | TransactionError::Parse(_) => Some(400),
            _ => None,
        }
    }

    /// A reason phrase for [`TransactionError::status`].
    pub fn reason(&self) -> &'static str {
        match self {
            TransactionError::Overloaded => "Service Unavailable",
            TransactionError::Header(HeaderError::Missing(h)) => match *h {
                "Via" => "Bad Request - Missing Via",
                "CSeq" => "Bad Request - Missing CSeq",
                "Call-ID" => "Bad Request - Missing Call-ID",
                "From" => "Bad Request - Missing From",
                "To" => "Bad Request - Missing To",
                _ => "Bad Request",
            },
            TransactionError::Header(HeaderError::Invalid(h)) => match *h {
                "Via" => "Bad Request - Invalid Via",
                "CSeq" => "Bad Request - Invalid CSeq",
                "address" => "Bad Request - Invalid From or To",
                _ => "Bad Request",
            },
            TransactionError::Parse(_) => "Bad Request",
            _ => "Server Internal Error",
        }
    }
}
