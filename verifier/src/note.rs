//! C2SP signed-note with Ed25519 (`c2sp.org/signed-note`), compatible with Go's
//! `golang.org/x/mod/sumdb/note`: key strings, key ids, signing and opening.

use crate::hash::sha256;
use base64::Engine;
use base64::engine::general_purpose::STANDARD as B64;
use ed25519_dalek::{Signature, Signer as _, SigningKey, Verifier as _, VerifyingKey};
use std::fmt;
use std::str::FromStr;

/// Signature type byte of Ed25519 keys.
const ALG_ED25519: u8 = 0x01;
/// The em dash that starts a signature line.
const SIG_PREFIX: &str = "\u{2014} ";
/// Go's `note` refuses notes with more signatures than this.
const MAX_SIGNATURES: usize = 100;

/// What is wrong with a key string, a note or a signature.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum NoteError {
    #[error("malformed verifier key")]
    MalformedVerifierKey,
    #[error("malformed private key")]
    MalformedPrivateKey,
    #[error("invalid key name {0:?}: must be non-empty, without spaces or '+'")]
    InvalidName(String),
    #[error("malformed note: {0}")]
    Malformed(&'static str),
    #[error("invalid signature for key {name}+{key_id:08x}")]
    InvalidSignature { name: String, key_id: u32 },
    #[error("note has no signature by a known key")]
    NoVerifiableSignature,
    #[error("could not read randomness from the operating system: {0}")]
    Random(String),
}

fn valid_name(name: &str) -> bool {
    !name.is_empty() && !name.chars().any(|c| c.is_whitespace() || c == '+')
}

/// Key id: the first four bytes of SHA-256(name ‖ '\n' ‖ type ‖ public key),
/// big-endian.
pub fn key_id(name: &str, public_key: &[u8; 32]) -> u32 {
    let h = sha256(&[name.as_bytes(), b"\n", &[ALG_ED25519], public_key]);
    u32::from_be_bytes([h.0[0], h.0[1], h.0[2], h.0[3]])
}

/// A public key that can check signatures on notes: `name+keyid+base64key`.
#[derive(Clone, PartialEq, Eq)]
pub struct NoteVerifier {
    name: String,
    key_id: u32,
    key: VerifyingKey,
}

impl NoteVerifier {
    /// A verifier for an Ed25519 public key under a name.
    pub fn new(name: &str, key: VerifyingKey) -> Result<NoteVerifier, NoteError> {
        if !valid_name(name) {
            return Err(NoteError::InvalidName(name.to_string()));
        }
        Ok(NoteVerifier {
            name: name.to_string(),
            key_id: key_id(name, key.as_bytes()),
            key,
        })
    }
    pub fn name(&self) -> &str {
        &self.name
    }
    pub fn key_id(&self) -> u32 {
        self.key_id
    }
    pub fn public_key(&self) -> &VerifyingKey {
        &self.key
    }
    fn verify(&self, msg: &[u8], sig: &[u8]) -> bool {
        Signature::from_slice(sig).is_ok_and(|s| self.key.verify(msg, &s).is_ok())
    }
}

impl FromStr for NoteVerifier {
    type Err = NoteError;

    /// Parses `name+hex8+base64(0x01 ‖ key)`, checking the key id.
    fn from_str(s: &str) -> Result<NoteVerifier, NoteError> {
        let bad = NoteError::MalformedVerifierKey;
        let (name, rest) = s.split_once('+').ok_or(bad.clone())?;
        let (id_hex, key_b64) = rest.split_once('+').ok_or(bad.clone())?;
        if !valid_name(name) || id_hex.len() != 8 {
            return Err(bad);
        }
        let id = u32::from_str_radix(id_hex, 16).map_err(|_| bad.clone())?;
        if format!("{id:08x}") != id_hex {
            return Err(bad);
        }
        let raw = B64.decode(key_b64).map_err(|_| bad.clone())?;
        let (alg, key) = raw.split_first().ok_or(bad.clone())?;
        if *alg != ALG_ED25519 {
            return Err(bad);
        }
        let key: [u8; 32] = key.try_into().map_err(|_| bad.clone())?;
        if key_id(name, &key) != id {
            return Err(bad);
        }
        let key = VerifyingKey::from_bytes(&key).map_err(|_| bad)?;
        NoteVerifier::new(name, key)
    }
}

impl fmt::Display for NoteVerifier {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut raw = vec![ALG_ED25519];
        raw.extend_from_slice(self.key.as_bytes());
        write!(f, "{}+{:08x}+{}", self.name, self.key_id, B64.encode(raw))
    }
}

impl fmt::Debug for NoteVerifier {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "NoteVerifier({self})")
    }
}

/// A private key that signs notes: `PRIVATE+KEY+name+keyid+base64seed`.
#[derive(Clone)]
pub struct NoteSigner {
    name: String,
    key_id: u32,
    key: SigningKey,
}

impl NoteSigner {
    /// A signer for an Ed25519 seed under a name.
    pub fn from_seed(name: &str, seed: &[u8; 32]) -> Result<NoteSigner, NoteError> {
        if !valid_name(name) {
            return Err(NoteError::InvalidName(name.to_string()));
        }
        let key = SigningKey::from_bytes(seed);
        let key_id = key_id(name, key.verifying_key().as_bytes());
        Ok(NoteSigner {
            name: name.to_string(),
            key_id,
            key,
        })
    }

    /// A fresh key from the operating system's randomness.
    pub fn generate(name: &str) -> Result<NoteSigner, NoteError> {
        let mut seed = [0u8; 32];
        getrandom::fill(&mut seed).map_err(|e| NoteError::Random(e.to_string()))?;
        NoteSigner::from_seed(name, &seed)
    }

    pub fn name(&self) -> &str {
        &self.name
    }
    pub fn key_id(&self) -> u32 {
        self.key_id
    }

    /// The matching verifier.
    pub fn verifier(&self) -> NoteVerifier {
        NoteVerifier {
            name: self.name.clone(),
            key_id: self.key_id,
            key: self.key.verifying_key(),
        }
    }

    /// The private key string, to be stored with care.
    pub fn to_private_key_string(&self) -> String {
        let mut raw = vec![ALG_ED25519];
        raw.extend_from_slice(self.key.as_bytes());
        format!(
            "PRIVATE+KEY+{}+{:08x}+{}",
            self.name,
            self.key_id,
            B64.encode(raw)
        )
    }

    /// Signs note text (lines ending in newline, no blank line) and returns
    /// the full note: text, a blank line, and one signature line.
    pub fn sign(&self, text: &str) -> Result<String, NoteError> {
        check_text(text)?;
        let sig = self.key.sign(text.as_bytes());
        let mut raw = self.key_id.to_be_bytes().to_vec();
        raw.extend_from_slice(&sig.to_bytes());
        Ok(format!(
            "{text}\n{SIG_PREFIX}{} {}\n",
            self.name,
            B64.encode(raw)
        ))
    }
}

impl FromStr for NoteSigner {
    type Err = NoteError;

    fn from_str(s: &str) -> Result<NoteSigner, NoteError> {
        let bad = NoteError::MalformedPrivateKey;
        let rest = s.strip_prefix("PRIVATE+KEY+").ok_or(bad.clone())?;
        let (name, rest) = rest.split_once('+').ok_or(bad.clone())?;
        let (id_hex, key_b64) = rest.split_once('+').ok_or(bad.clone())?;
        if !valid_name(name) || id_hex.len() != 8 {
            return Err(bad);
        }
        let id = u32::from_str_radix(id_hex, 16).map_err(|_| bad.clone())?;
        if format!("{id:08x}") != id_hex {
            return Err(bad);
        }
        let raw = B64.decode(key_b64).map_err(|_| bad.clone())?;
        let (alg, seed) = raw.split_first().ok_or(bad.clone())?;
        if *alg != ALG_ED25519 {
            return Err(bad);
        }
        let seed: [u8; 32] = seed.try_into().map_err(|_| bad.clone())?;
        let signer = NoteSigner::from_seed(name, &seed).map_err(|_| bad.clone())?;
        if signer.key_id != id {
            return Err(bad);
        }
        Ok(signer)
    }
}

impl fmt::Debug for NoteSigner {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "NoteSigner({}+{:08x})", self.name, self.key_id)
    }
}

/// One signature line of a note.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NoteSignature {
    pub name: String,
    pub key_id: u32,
    pub signature: Vec<u8>,
}

/// A note whose signatures were checked against a set of known keys.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OpenedNote {
    /// The signed text, ending in a newline.
    pub text: String,
    /// Signatures by known keys, all valid.
    pub verified: Vec<NoteSignature>,
    /// Signatures by keys not in the set (ignored, as the spec requires).
    pub unverified: Vec<NoteSignature>,
}

fn check_text(text: &str) -> Result<(), NoteError> {
    if text.is_empty() || !text.ends_with('\n') {
        return Err(NoteError::Malformed("text must end in a newline"));
    }
    if text.contains("\n\n") || text.starts_with('\n') {
        return Err(NoteError::Malformed("text must not contain blank lines"));
    }
    if text.chars().any(|c| c != '\n' && c.is_control()) {
        return Err(NoteError::Malformed("text contains control characters"));
    }
    Ok(())
}

/// Parses a signed note and checks every signature by a key in `verifiers`.
/// Fails if the note is malformed, if a known key's signature is invalid, or
/// if no known key signed it.
pub fn open(msg: &str, verifiers: &[NoteVerifier]) -> Result<OpenedNote, NoteError> {
    if msg.chars().any(|c| c != '\n' && c.is_control()) {
        return Err(NoteError::Malformed("note contains control characters"));
    }
    let split = msg
        .rfind("\n\n")
        .ok_or(NoteError::Malformed("no blank line before signatures"))?;
    let text = &msg[..split + 1];
    let sigs = &msg[split + 2..];
    check_text(text)?;
    if sigs.is_empty() || !sigs.ends_with('\n') {
        return Err(NoteError::Malformed(
            "signature block must end in a newline",
        ));
    }
    let mut verified: Vec<NoteSignature> = Vec::new();
    let mut unverified: Vec<NoteSignature> = Vec::new();
    for line in sigs[..sigs.len() - 1].split('\n') {
        let rest = line.strip_prefix(SIG_PREFIX).ok_or(NoteError::Malformed(
            "signature line must start with an em dash",
        ))?;
        let (name, b64) = rest
            .split_once(' ')
            .ok_or(NoteError::Malformed("signature line"))?;
        if !valid_name(name) {
            return Err(NoteError::Malformed("signature key name"));
        }
        let raw = B64
            .decode(b64)
            .map_err(|_| NoteError::Malformed("signature base64"))?;
        if raw.len() < 5 {
            return Err(NoteError::Malformed("signature too short"));
        }
        let key_id = u32::from_be_bytes([raw[0], raw[1], raw[2], raw[3]]);
        let sig = NoteSignature {
            name: name.to_string(),
            key_id,
            signature: raw[4..].to_vec(),
        };
        match verifiers
            .iter()
            .find(|v| v.name == name && v.key_id == key_id)
        {
            Some(v) => {
                if !v.verify(text.as_bytes(), &sig.signature) {
                    return Err(NoteError::InvalidSignature {
                        name: name.to_string(),
                        key_id,
                    });
                }
                if !verified.contains(&sig) {
                    verified.push(sig);
                }
            }
            None => {
                if !unverified.contains(&sig) {
                    unverified.push(sig);
                }
            }
        }
        if verified.len() + unverified.len() > MAX_SIGNATURES {
            return Err(NoteError::Malformed("too many signatures"));
        }
    }
    if verified.is_empty() {
        return Err(NoteError::NoVerifiableSignature);
    }
    Ok(OpenedNote {
        text: text.to_string(),
        verified,
        unverified,
    })
}
