//! Handshake patterns as token lists (Noise rev 34, sections 7 and 9).

use core::fmt;

use crate::{Error, Result};

/// A handshake token (Noise section 7.1; `psk` from section 9).
#[expect(
    clippy::exhaustive_enums,
    reason = "the token set is fixed by the Noise specification"
)]
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Token {
    /// `e`: the sender's ephemeral public key.
    E,
    /// `s`: the sender's static public key (encrypted once a key exists).
    S,
    /// `ee`: DH between both ephemeral keys.
    Ee,
    /// `es`: DH between the initiator's ephemeral and the responder's static key.
    Es,
    /// `se`: DH between the initiator's static and the responder's ephemeral key.
    Se,
    /// `ss`: DH between both static keys.
    Ss,
    /// `psk`: mixes the next pre-shared symmetric key.
    Psk,
}

impl Token {
    fn parse(s: &str) -> Result<Self> {
        Ok(match s {
            "e" => Self::E,
            "s" => Self::S,
            "ee" => Self::Ee,
            "es" => Self::Es,
            "se" => Self::Se,
            "ss" => Self::Ss,
            "psk" => Self::Psk,
            _ => return Err(Error::InvalidPattern),
        })
    }
}

/// A handshake pattern: pre-messages and message token lists.
///
/// Message `i` (from 0) is written by the initiator when `i` is even and by
/// the responder when `i` is odd.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Pattern {
    name: String,
    initiator_pre: Vec<Token>,
    responder_pre: Vec<Token>,
    messages: Vec<Vec<Token>>,
}

/// (name, initiator pre-message, responder pre-message, messages).
type Row = (
    &'static str,
    &'static str,
    &'static str,
    &'static [&'static str],
);

/// Every named pattern of Noise rev 34: one-way (7.4), interactive (7.5) and
/// deferred (7.6). Tokens are separated by `", "`.
const PATTERNS: &[Row] = &[
    ("N", "", "s", &["e, es"]),
    ("K", "s", "s", &["e, es, ss"]),
    ("X", "", "s", &["e, es, s, ss"]),
    ("NN", "", "", &["e", "e, ee"]),
    ("NK", "", "s", &["e, es", "e, ee"]),
    ("NX", "", "", &["e", "e, ee, s, es"]),
    ("KN", "s", "", &["e", "e, ee, se"]),
    ("KK", "s", "s", &["e, es, ss", "e, ee, se"]),
    ("KX", "s", "", &["e", "e, ee, se, s, es"]),
    ("XN", "", "", &["e", "e, ee", "s, se"]),
    ("XK", "", "s", &["e, es", "e, ee", "s, se"]),
    ("XX", "", "", &["e", "e, ee, s, es", "s, se"]),
    ("IN", "", "", &["e, s", "e, ee, se"]),
    ("IK", "", "s", &["e, es, s, ss", "e, ee, se"]),
    ("IX", "", "", &["e, s", "e, ee, se, s, es"]),
    ("NK1", "", "s", &["e", "e, ee, es"]),
    ("NX1", "", "", &["e", "e, ee, s", "es"]),
    ("X1N", "", "", &["e", "e, ee", "s", "se"]),
    ("X1K", "", "s", &["e, es", "e, ee", "s", "se"]),
    ("XK1", "", "s", &["e", "e, ee, es", "s, se"]),
    ("X1K1", "", "s", &["e", "e, ee, es", "s", "se"]),
    ("X1X", "", "", &["e", "e, ee, s, es", "s", "se"]),
    ("XX1", "", "", &["e", "e, ee, s", "es, s, se"]),
    ("X1X1", "", "", &["e", "e, ee, s", "es, s", "se"]),
    ("K1N", "s", "", &["e", "e, ee", "se"]),
    ("K1K", "s", "s", &["e, es", "e, ee", "se"]),
    ("KK1", "s", "s", &["e", "e, ee, se, es"]),
    ("K1K1", "s", "s", &["e", "e, ee, es", "se"]),
    ("K1X", "s", "", &["e", "e, ee, s, es", "se"]),
    ("KX1", "s", "", &["e", "e, ee, se, s", "es"]),
    ("K1X1", "s", "", &["e", "e, ee, s", "se, es"]),
    ("I1N", "", "", &["e, s", "e, ee", "se"]),
    ("I1K", "", "s", &["e, es, s", "e, ee", "se"]),
    ("IK1", "", "s", &["e, s", "e, ee, se, es"]),
    ("I1K1", "", "s", &["e, s", "e, ee, es", "se"]),
    ("I1X", "", "", &["e, s", "e, ee, s, es", "se"]),
    ("IX1", "", "", &["e, s", "e, ee, se, s", "es"]),
    ("I1X1", "", "", &["e, s", "e, ee, s", "se, es"]),
];

fn parse_tokens(list: &str) -> Result<Vec<Token>> {
    if list.is_empty() {
        return Ok(Vec::new());
    }
    list.split(", ").map(Token::parse).collect()
}

impl Pattern {
    /// A custom pattern from token lists.
    ///
    /// `name` is what appears in the protocol name
    /// (`Noise_<name>_25519_ChaChaPoly_SHA256` or `..._AESGCM_SHA256`), which
    /// is hashed into the handshake, so both sides must agree on it.
    ///
    /// # Errors
    ///
    /// [`Error::InvalidPattern`] if a pre-message holds a token other than
    /// `e` or `s`, there are no messages, or a message is empty.
    pub fn new(
        name: impl Into<String>,
        initiator_pre: Vec<Token>,
        responder_pre: Vec<Token>,
        messages: Vec<Vec<Token>>,
    ) -> Result<Self> {
        let pre_ok = |pre: &[Token]| pre.iter().all(|t| matches!(t, Token::E | Token::S));
        if !pre_ok(&initiator_pre)
            || !pre_ok(&responder_pre)
            || messages.is_empty()
            || messages.iter().any(Vec::is_empty)
        {
            return Err(Error::InvalidPattern);
        }
        Ok(Self {
            name: name.into(),
            initiator_pre,
            responder_pre,
            messages,
        })
    }

    /// A named pattern with optional `pskN` modifiers joined by `+`,
    /// e.g. `"XX"`, `"IKpsk2"`, `"X1X1"`, `"NNpsk0+psk2"`.
    ///
    /// # Errors
    ///
    /// [`Error::InvalidPattern`] for unknown names or out-of-range modifiers.
    pub fn from_name(name: &str) -> Result<Self> {
        let (base, modifiers) = match name.find("psk") {
            Some(at) => name.split_at(at),
            None => (name, ""),
        };
        let &(_, ipre, rpre, msgs) = PATTERNS
            .iter()
            .find(|row| row.0 == base)
            .ok_or(Error::InvalidPattern)?;
        let mut messages = msgs
            .iter()
            .map(|m| parse_tokens(m))
            .collect::<Result<Vec<_>>>()?;
        if !modifiers.is_empty() {
            for modifier in modifiers.split('+') {
                let position: usize = modifier
                    .strip_prefix("psk")
                    .and_then(|n| n.parse().ok())
                    .ok_or(Error::InvalidPattern)?;
                match position.checked_sub(1) {
                    None => messages
                        .first_mut()
                        .ok_or(Error::InvalidPattern)?
                        .insert(0, Token::Psk),
                    Some(index) => {
                        messages
                            .get_mut(index)
                            .ok_or(Error::InvalidPattern)?
                            .push(Token::Psk);
                    }
                }
            }
        }
        Self::new(name, parse_tokens(ipre)?, parse_tokens(rpre)?, messages)
    }

    /// Parses a full protocol name, `Noise_<pattern>_25519_ChaChaPoly_SHA256`.
    ///
    /// For the AESGCM suite as well, use
    /// [`Protocol::from_name`](super::Protocol::from_name), which keeps the cipher.
    ///
    /// # Errors
    ///
    /// [`Error::UnsupportedProtocol`] for another suite (AESGCM included),
    /// else as [`from_name`](Self::from_name).
    pub fn from_protocol_name(protocol: &str) -> Result<Self> {
        let name = protocol
            .strip_prefix("Noise_")
            .and_then(|rest| rest.strip_suffix("_25519_ChaChaPoly_SHA256"))
            .ok_or(Error::UnsupportedProtocol)?;
        Self::from_name(name)
    }

    /// `XX`, the default pattern of netproto sessions.
    pub fn xx() -> Self {
        use Token::{E, Ee, Es, S, Se};
        let messages = vec![vec![E], vec![E, Ee, S, Es], vec![S, Se]];
        Self {
            name: "XX".into(),
            initiator_pre: Vec::new(),
            responder_pre: Vec::new(),
            messages,
        }
    }

    /// `IK`: the initiator knows the responder's static key in advance.
    pub fn ik() -> Self {
        use Token::{E, Ee, Es, S, Se, Ss};
        let messages = vec![vec![E, Es, S, Ss], vec![E, Ee, Se]];
        Self {
            name: "IK".into(),
            initiator_pre: Vec::new(),
            responder_pre: vec![S],
            messages,
        }
    }

    /// The pattern name, e.g. `XXpsk3`.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The full protocol name hashed into the handshake with the default
    /// cipher, ChaChaPoly. See [`Protocol::name`](super::Protocol::name) for
    /// AESGCM.
    pub fn protocol_name(&self) -> String {
        format!("Noise_{}_25519_ChaChaPoly_SHA256", self.name)
    }

    /// Tokens of the initiator's pre-message (`->` before `...`).
    pub fn initiator_pre_message(&self) -> &[Token] {
        &self.initiator_pre
    }

    /// Tokens of the responder's pre-message (`<-` before `...`).
    pub fn responder_pre_message(&self) -> &[Token] {
        &self.responder_pre
    }

    /// Token lists of the handshake messages, in order.
    pub fn messages(&self) -> &[Vec<Token>] {
        &self.messages
    }

    /// Whether the pattern has a `psk` token (and so runs in PSK mode).
    pub fn has_psk(&self) -> bool {
        self.messages.iter().flatten().any(|t| *t == Token::Psk)
    }

    /// Whether only the initiator sends (patterns N, K, X and their PSK variants).
    pub fn is_one_way(&self) -> bool {
        self.messages.len() == 1
    }
}

impl fmt::Display for Pattern {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.name)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_table_row_parses() {
        for row in PATTERNS {
            let pattern = Pattern::from_name(row.0).unwrap();
            assert_eq!(pattern.name(), row.0);
            assert!(!pattern.has_psk());
        }
        assert_eq!(PATTERNS.len(), 3 + 12 + 23);
    }

    #[test]
    fn psk_modifiers_place_tokens() {
        let p = Pattern::from_name("NNpsk0+psk2").unwrap();
        assert_eq!(p.messages()[0], vec![Token::Psk, Token::E]);
        assert_eq!(p.messages()[1], vec![Token::E, Token::Ee, Token::Psk]);
        assert!(p.has_psk());
        assert!(Pattern::from_name("NNpsk3").is_err());
        assert!(Pattern::from_name("NNpskx").is_err());
        assert!(Pattern::from_name("ZZ").is_err());
        assert!(Pattern::from_protocol_name("Noise_XX_448_AESGCM_BLAKE2b").is_err());
        assert_eq!(
            Pattern::xx().protocol_name(),
            "Noise_XX_25519_ChaChaPoly_SHA256"
        );
        assert_eq!(Pattern::xx(), Pattern::from_name("XX").unwrap());
        assert_eq!(Pattern::ik(), Pattern::from_name("IK").unwrap());
    }

    #[test]
    fn custom_patterns_are_validated() {
        assert!(Pattern::new("bad", vec![Token::Ee], vec![], vec![vec![Token::E]]).is_err());
        assert!(Pattern::new("bad", vec![], vec![], vec![]).is_err());
        assert!(Pattern::new("bad", vec![], vec![], vec![vec![]]).is_err());
        assert!(Pattern::new("ok", vec![], vec![], vec![vec![Token::E]]).is_ok());
    }
}
