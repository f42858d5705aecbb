//! A plugin instance's configuration: the `[plugins.config]` table of its `[[plugins]]` entry in
//! `huddle.toml`, which the host passes to `init` as TOML text.

use serde::de::DeserializeOwned;

use crate::error::Error;

/// The configuration text handed to [`crate::Plugin::init`].
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Config {
    text: String,
}

impl Config {
    /// Configuration from TOML text.
    pub fn new(text: &str) -> Self {
        Config {
            text: text.to_owned(),
        }
    }

    /// Configuration from the bytes `init` received; they must be UTF-8.
    pub fn from_bytes(bytes: &[u8]) -> Result<Self, Error> {
        std::str::from_utf8(bytes)
            .map(Config::new)
            .map_err(|_| Error::InvalidArgument)
    }

    /// The TOML text (possibly empty).
    pub fn text(&self) -> &str {
        &self.text
    }

    /// True when the plugin was given no configuration.
    pub fn is_empty(&self) -> bool {
        self.text.trim().is_empty()
    }

    /// Deserializes the table into the plugin's own config type. An empty configuration reads
    /// as an empty table, so a type whose fields all have `#[serde(default)]` always works.
    /// Errors are [`Error::InvalidConfig`] naming the offending key.
    pub fn parse<T: DeserializeOwned>(&self) -> Result<T, Error> {
        Ok(toml::from_str(&self.text)?)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(serde::Deserialize, Debug, PartialEq)]
    #[serde(deny_unknown_fields)]
    struct C {
        #[serde(default)]
        greeting: Option<String>,
    }

    #[test]
    fn parses_and_reports() {
        assert_eq!(Config::new("").parse::<C>().unwrap(), C { greeting: None });
        assert_eq!(
            Config::new("greeting = \"hi\"")
                .parse::<C>()
                .unwrap()
                .greeting,
            Some("hi".into())
        );
        let err = Config::new("nope = 1").parse::<C>().unwrap_err();
        assert!(matches!(err, Error::InvalidConfig(_)));
        assert!(err.to_string().contains("nope"), "{err}");
        assert_eq!(Config::from_bytes(b"\xff"), Err(Error::InvalidArgument));
    }
}
