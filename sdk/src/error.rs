//! The SDK's error type: one variant per ABI status code, so that an error crosses the boundary
//! as its `HUDDLE_ERR_*` code and comes back as the same variant.

use crate::abi;

/// An error from the host, from a plugin, or from the boundary between them.
///
/// Every variant maps to one `HUDDLE_ERR_*` code ([`Error::code`], [`Error::from_code`]).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// The other side failed for a reason of its own (it logged the detail).
    #[error("internal error")]
    Internal,
    /// A null pointer, text that is not UTF-8, bytes that are not the expected SIP message, an
    /// invalid claim or pattern.
    #[error("invalid argument")]
    InvalidArgument,
    /// No such key, timer, watch or media session.
    #[error("not found")]
    NotFound,
    /// A compare-and-swap found another value.
    #[error("compare-and-swap conflict")]
    Conflict,
    /// A response for a transaction that does not exist or has already been answered finally.
    #[error("unknown or finished transaction")]
    UnknownTransaction,
    /// The host does not provide this function (its capability is absent).
    #[error("not supported by this host")]
    NotSupported,
    /// A namespace the plugin may not read or write, or a reserved claim.
    #[error("permission denied")]
    PermissionDenied,
    /// A key, value or message larger than the host accepts.
    #[error("too large")]
    TooLarge,
    /// Overloaded; try again later. A request refused this way is answered 503.
    #[error("busy")]
    Busy,
    /// Called at the wrong time (a claim outside `init`, any call after `destroy`).
    #[error("called at the wrong time")]
    BadState,
    /// A plugin callback panicked; the panic was caught at the boundary.
    #[error("the plugin panicked")]
    Panic,
    /// The other side speaks an incompatible ABI version or lacks a mandatory entry.
    #[error("incompatible ABI")]
    Incompatible,
    /// The plugin refused its configuration.
    #[error("invalid configuration: {0}")]
    InvalidConfig(ConfigError),
    /// A plugin-specific failure (the plugin logs the detail).
    #[error("plugin failure")]
    Plugin,
    /// `media_answer` refused the offer: answer the INVITE with this status and reason
    /// (400 for malformed SDP, 488 for SDP the host cannot answer).
    #[error("offer refused: {} {}", .0.status, .0.reason)]
    Sdp(Box<SdpRefusal>),
    /// A status code this SDK does not know (from a newer peer).
    #[error("unknown status code {0}")]
    Unknown(i32),
}

/// Why the host's media engine refused an SDP offer, as the SIP answer to send.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SdpRefusal {
    /// 400 (malformed) or 488 (not acceptable).
    pub status: u16,
    /// The reason phrase, naming the fault (`Not Acceptable Here - WebRTC Media Only`).
    pub reason: String,
    /// The text of a `Warning: 399 <host> "..."` header, when the host has advice.
    pub warning: Option<String>,
}

impl SdpRefusal {
    /// Parses what the host wrote to `out_answer` with an SDP error code.
    pub fn from_host(code: i32, text: Option<&[u8]>) -> SdpRefusal {
        let status = if code == abi::HUDDLE_ERR_SDP_MALFORMED {
            400
        } else {
            488
        };
        let text = text.map(String::from_utf8_lossy).unwrap_or_default();
        let mut lines = text.splitn(2, '\n');
        let reason = lines.next().filter(|r| !r.is_empty()).map_or_else(
            || {
                if status == 400 {
                    "Bad Request - Malformed SDP".to_owned()
                } else {
                    "Not Acceptable Here".to_owned()
                }
            },
            str::to_owned,
        );
        let warning = lines.next().filter(|w| !w.is_empty()).map(str::to_owned);
        SdpRefusal {
            status,
            reason,
            warning,
        }
    }

    /// The text the host writes to `out_answer`.
    pub fn to_host(&self) -> Vec<u8> {
        match &self.warning {
            Some(w) => format!("{}\n{w}", self.reason).into_bytes(),
            None => self.reason.clone().into_bytes(),
        }
    }
}

/// Why a plugin's configuration was refused: the TOML parser's or deserializer's error.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error(transparent)]
pub struct ConfigError(#[from] Box<toml::de::Error>);

impl ConfigError {
    /// A configuration error the plugin found itself (a value out of range, a missing file).
    pub fn custom(message: impl std::fmt::Display) -> Self {
        ConfigError(Box::new(<toml::de::Error as serde::de::Error>::custom(
            message,
        )))
    }
}

impl From<toml::de::Error> for Error {
    fn from(e: toml::de::Error) -> Self {
        Error::InvalidConfig(ConfigError(Box::new(e)))
    }
}

impl Error {
    /// The ABI status code for this error.
    pub fn code(&self) -> i32 {
        match self {
            Error::Internal => abi::HUDDLE_ERR_INTERNAL,
            Error::InvalidArgument => abi::HUDDLE_ERR_INVALID_ARGUMENT,
            Error::NotFound => abi::HUDDLE_ERR_NOT_FOUND,
            Error::Conflict => abi::HUDDLE_ERR_CONFLICT,
            Error::UnknownTransaction => abi::HUDDLE_ERR_UNKNOWN_TRANSACTION,
            Error::NotSupported => abi::HUDDLE_ERR_NOT_SUPPORTED,
            Error::PermissionDenied => abi::HUDDLE_ERR_PERMISSION_DENIED,
            Error::TooLarge => abi::HUDDLE_ERR_TOO_LARGE,
            Error::Busy => abi::HUDDLE_ERR_BUSY,
            Error::BadState => abi::HUDDLE_ERR_BAD_STATE,
            Error::Panic => abi::HUDDLE_ERR_PANIC,
            Error::Incompatible => abi::HUDDLE_ERR_INCOMPATIBLE,
            Error::InvalidConfig(_) => abi::HUDDLE_ERR_INVALID_CONFIG,
            Error::Plugin => abi::HUDDLE_ERR_PLUGIN,
            Error::Sdp(r) if r.status == 400 => abi::HUDDLE_ERR_SDP_MALFORMED,
            Error::Sdp(_) => abi::HUDDLE_ERR_SDP_NOT_ACCEPTABLE,
            // A positive or unknown code is passed on as it is; 0 would mean success, so it is
            // reported as an internal error instead.
            Error::Unknown(0) => abi::HUDDLE_ERR_INTERNAL,
            Error::Unknown(code) => *code,
        }
    }

    /// `Ok(())` for [`abi::HUDDLE_OK`], otherwise the error for `code`. A configuration error
    /// loses its detail when crossing (the plugin logs it before returning).
    pub fn from_code(code: i32) -> Result<(), Error> {
        Err(match code {
            abi::HUDDLE_OK => return Ok(()),
            abi::HUDDLE_ERR_INTERNAL => Error::Internal,
            abi::HUDDLE_ERR_INVALID_ARGUMENT => Error::InvalidArgument,
            abi::HUDDLE_ERR_NOT_FOUND => Error::NotFound,
            abi::HUDDLE_ERR_CONFLICT => Error::Conflict,
            abi::HUDDLE_ERR_UNKNOWN_TRANSACTION => Error::UnknownTransaction,
            abi::HUDDLE_ERR_NOT_SUPPORTED => Error::NotSupported,
            abi::HUDDLE_ERR_PERMISSION_DENIED => Error::PermissionDenied,
            abi::HUDDLE_ERR_TOO_LARGE => Error::TooLarge,
            abi::HUDDLE_ERR_BUSY => Error::Busy,
            abi::HUDDLE_ERR_BAD_STATE => Error::BadState,
            abi::HUDDLE_ERR_PANIC => Error::Panic,
            abi::HUDDLE_ERR_INCOMPATIBLE => Error::Incompatible,
            abi::HUDDLE_ERR_INVALID_CONFIG => {
                Error::InvalidConfig(ConfigError::custom("refused by the plugin (see its log)"))
            }
            abi::HUDDLE_ERR_PLUGIN => Error::Plugin,
            abi::HUDDLE_ERR_SDP_MALFORMED | abi::HUDDLE_ERR_SDP_NOT_ACCEPTABLE => {
                Error::Sdp(Box::new(SdpRefusal::from_host(code, None)))
            }
            other => Error::Unknown(other),
        })
    }

    /// The SIP status a request gets when its handler fails with this error: 503 for
    /// [`Error::Busy`], 500 otherwise.
    pub fn sip_status(&self) -> (u16, &'static str) {
        match self {
            Error::Busy => (503, "Service Unavailable"),
            _ => (500, "Server Internal Error"),
        }
    }
}

/// Shorthand for results carrying [`Error`].
pub type Result<T, E = Error> = std::result::Result<T, E>;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn codes_round_trip() {
        for code in -16..=0 {
            match Error::from_code(code) {
                Ok(()) => assert_eq!(code, 0),
                Err(e) => assert_eq!(e.code(), code, "{e}"),
            }
        }
        assert_eq!(Error::from_code(-99), Err(Error::Unknown(-99)));
        assert_eq!(Error::Unknown(0).code(), abi::HUDDLE_ERR_INTERNAL);
    }
}
