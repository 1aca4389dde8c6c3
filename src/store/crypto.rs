//! Encryption of tokens at rest: AES-256-GCM under the operator's key.
//!
//! Each value gets a fresh random nonce and is bound (as associated data) to its mailbox and
//! column, so a ciphertext copied into another row or column fails to decrypt instead of
//! silently yielding another mailbox's token.

use std::{fs, io::Write, path::Path};

use aes_gcm::{
    Aes256Gcm, Key, KeyInit,
    aead::{Aead, Nonce, Payload},
};
use base64::{Engine, engine::general_purpose::STANDARD};
use rand::RngCore;
use secrecy::{ExposeSecret, SecretBox, SecretString};

use crate::{settings::KeySource, variables};

/// Format version prepended to every ciphertext, so the scheme can change later.
const VERSION: u8 = 1;
const NONCE_LEN: usize = 12;

/// Why the key could not be loaded.
#[derive(Debug, thiserror::Error)]
pub enum KeyError {
    #[error(
        "{origin}: the encryption key must be 32 random bytes, base64-encoded (44 characters) or \
         hex (64 characters); generate one with `openssl rand -base64 32`"
    )]
    Malformed { origin: String },
    #[error("cannot read the encryption key from {path}: {source}")]
    Read {
        path: String,
        source: std::io::Error,
    },
    #[error("cannot write a new encryption key to {path}: {source}")]
    Write {
        path: String,
        source: std::io::Error,
    },
}

/// A ciphertext that does not open under the configured key.
#[derive(Debug, thiserror::Error)]
#[error("a stored value cannot be decrypted with the configured encryption key")]
pub struct DecryptError;

/// Encrypts and decrypts stored secrets.
pub struct TokenCipher {
    cipher: Aes256Gcm,
}

impl std::fmt::Debug for TokenCipher {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("TokenCipher([REDACTED])")
    }
}

/// How the key was obtained, for the start-up log.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum KeyOrigin {
    Configured,
    ExistingFile(String),
    GeneratedFile(String),
}

impl TokenCipher {
    /// A cipher under a raw 32-byte key.
    pub fn new(key: &SecretBox<[u8; 32]>) -> Self {
        let key = Key::<Aes256Gcm>::from(*key.expose_secret());
        Self {
            cipher: Aes256Gcm::new(&key),
        }
    }

    /// Loads (or, for [`KeySource::Generated`], creates) the key.
    pub fn load(source: &KeySource) -> Result<(Self, KeyOrigin), KeyError> {
        match source {
            KeySource::Value(value) => {
                let key = decode_key(value.expose_secret(), variables::ENCRYPTION_KEY)?;
                Ok((Self::new(&key), KeyOrigin::Configured))
            }
            KeySource::File(path) => {
                let key = read_key_file(path)?;
                Ok((Self::new(&key), KeyOrigin::Configured))
            }
            KeySource::Generated(path) if path.exists() => {
                let key = read_key_file(path)?;
                Ok((
                    Self::new(&key),
                    KeyOrigin::ExistingFile(path.display().to_string()),
                ))
            }
            KeySource::Generated(path) => {
                let key = generate_key_file(path)?;
                Ok((
                    Self::new(&key),
                    KeyOrigin::GeneratedFile(path.display().to_string()),
                ))
            }
        }
    }

    /// Encrypts `plaintext` bound to `context` (such as `mailbox|refresh_token`).
    pub fn encrypt(&self, context: &str, plaintext: &[u8]) -> Vec<u8> {
        let mut nonce_bytes = [0u8; NONCE_LEN];
        rand::rng().fill_bytes(&mut nonce_bytes);
        let nonce = Nonce::<Aes256Gcm>::from(nonce_bytes);
        let payload = Payload {
            msg: plaintext,
            aad: context.as_bytes(),
        };
        // AES-GCM fails only for plaintexts over 64 GiB; tokens are a few kilobytes.
        let ciphertext = self.cipher.encrypt(&nonce, payload).unwrap_or_default();
        let mut out = Vec::with_capacity(1 + NONCE_LEN + ciphertext.len());
        out.push(VERSION);
        out.extend_from_slice(&nonce_bytes);
        out.extend_from_slice(&ciphertext);
        out
    }

    /// Decrypts what [`TokenCipher::encrypt`] produced for the same `context`.
    pub fn decrypt(&self, context: &str, stored: &[u8]) -> Result<Vec<u8>, DecryptError> {
        if stored.len() < 1 + NONCE_LEN || stored[0] != VERSION {
            return Err(DecryptError);
        }
        let nonce =
            Nonce::<Aes256Gcm>::try_from(&stored[1..1 + NONCE_LEN]).map_err(|_| DecryptError)?;
        let payload = Payload {
            msg: &stored[1 + NONCE_LEN..],
            aad: context.as_bytes(),
        };
        self.cipher
            .decrypt(&nonce, payload)
            .map_err(|_| DecryptError)
    }

    /// Encrypts a secret string.
    pub fn seal(&self, context: &str, secret: &SecretString) -> Vec<u8> {
        self.encrypt(context, secret.expose_secret().as_bytes())
    }

    /// Decrypts a secret string.
    pub fn open(&self, context: &str, stored: &[u8]) -> Result<SecretString, DecryptError> {
        let plain = self.decrypt(context, stored)?;
        String::from_utf8(plain)
            .map(SecretString::from)
            .map_err(|_| DecryptError)
    }
}

fn decode_key(text: &str, origin: &str) -> Result<SecretBox<[u8; 32]>, KeyError> {
    let text = text.trim();
    let bytes = if text.len() == 64 && text.chars().all(|c| c.is_ascii_hexdigit()) {
        (0..32)
            .map(|i| u8::from_str_radix(&text[2 * i..2 * i + 2], 16))
            .collect::<Result<Vec<u8>, _>>()
            .ok()
    } else {
        STANDARD
            .decode(text)
            .or_else(|_| base64::engine::general_purpose::URL_SAFE.decode(text))
            .ok()
    };
    let malformed = || KeyError::Malformed {
        origin: origin.to_owned(),
    };
    let bytes: [u8; 32] = bytes
        .ok_or_else(malformed)?
        .try_into()
        .map_err(|_| malformed())?;
    Ok(SecretBox::new(Box::new(bytes)))
}

fn read_key_file(path: &Path) -> Result<SecretBox<[u8; 32]>, KeyError> {
    let text = fs::read_to_string(path).map_err(|source| KeyError::Read {
        path: path.display().to_string(),
        source,
    })?;
    decode_key(&text, &path.display().to_string())
}

/// Creates the key file atomically: the key is written and synced under a temporary name, then
/// linked to its real name, which fails if the name exists. A crash at any point leaves either
/// no key file or a complete one, never an empty one; two processes starting at once end up
/// with the same key (the loser reads the winner's).
fn generate_key_file(path: &Path) -> Result<SecretBox<[u8; 32]>, KeyError> {
    let write_error = |source| KeyError::Write {
        path: path.display().to_string(),
        source,
    };
    let parent = path
        .parent()
        .filter(|p| !p.as_os_str().is_empty())
        .unwrap_or(Path::new("."));
    fs::create_dir_all(parent).map_err(write_error)?;
    let mut bytes = [0u8; 32];
    rand::rng().fill_bytes(&mut bytes);
    let temporary = parent.join(format!(
        ".{}.{}.tmp",
        path.file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default(),
        std::process::id()
    ));
    let written = (|| {
        let mut options = fs::OpenOptions::new();
        options.write(true).create(true).truncate(true);
        #[cfg(unix)]
        std::os::unix::fs::OpenOptionsExt::mode(&mut options, 0o600);
        let mut file = options.open(&temporary)?;
        writeln!(file, "{}", STANDARD.encode(bytes))?;
        file.sync_all()?;
        fs::hard_link(&temporary, path)
    })();
    let _ = fs::remove_file(&temporary);
    match written {
        Ok(()) => {
            // The new name must survive a crash too.
            if let Ok(directory) = fs::File::open(parent) {
                let _ = directory.sync_all();
            }
            Ok(SecretBox::new(Box::new(bytes)))
        }
        // Another process created it first: use its key.
        Err(error) if error.kind() == std::io::ErrorKind::AlreadyExists => read_key_file(path),
        Err(error) => Err(write_error(error)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cipher() -> TokenCipher {
        TokenCipher::new(&SecretBox::new(Box::new([7u8; 32])))
    }

    #[test]
    fn values_round_trip_and_are_not_stored_in_clear() {
        let cipher = cipher();
        let sealed = cipher.encrypt("a@b.c|refresh_token", b"0.AAAA-refresh");
        assert!(!sealed.windows(8).any(|w| w == b"0.AAAA-r"));
        assert_eq!(
            cipher.decrypt("a@b.c|refresh_token", &sealed).unwrap(),
            b"0.AAAA-refresh"
        );
    }

    #[test]
    fn a_value_moved_to_another_row_or_key_does_not_decrypt() {
        let sealed = cipher().encrypt("a@b.c|refresh_token", b"token");
        assert!(cipher().decrypt("x@b.c|refresh_token", &sealed).is_err());
        let other = TokenCipher::new(&SecretBox::new(Box::new([8u8; 32])));
        assert!(other.decrypt("a@b.c|refresh_token", &sealed).is_err());
    }

    #[test]
    fn keys_are_accepted_as_base64_or_hex_and_anything_else_is_refused() {
        let b64 = STANDARD.encode([1u8; 32]);
        assert!(decode_key(&b64, "test").is_ok());
        assert!(decode_key(&"ab".repeat(32), "test").is_ok());
        assert!(matches!(
            decode_key("short", "test"),
            Err(KeyError::Malformed { .. })
        ));
    }

    #[test]
    fn a_key_file_created_meanwhile_by_another_process_is_used_not_replaced() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("encryption.key");
        let theirs = STANDARD.encode([9u8; 32]);
        fs::write(&path, format!("{theirs}\n")).unwrap();
        let key = generate_key_file(&path).unwrap();
        assert_eq!(key.expose_secret(), &[9u8; 32]);
        assert_eq!(fs::read_to_string(&path).unwrap().trim(), theirs);
        let leftovers: Vec<_> = fs::read_dir(dir.path()).unwrap().collect();
        assert_eq!(leftovers.len(), 1, "no temporary file is left behind");
    }

    #[test]
    fn a_generated_key_file_is_private_and_reused() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("data/encryption.key");
        let source = KeySource::Generated(path.clone());
        let (first, origin) = TokenCipher::load(&source).unwrap();
        assert!(matches!(origin, KeyOrigin::GeneratedFile(_)));
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            let mode = fs::metadata(&path).unwrap().permissions().mode();
            assert_eq!(mode & 0o777, 0o600);
        }
        let sealed = first.encrypt("ctx", b"v");
        let (second, origin) = TokenCipher::load(&source).unwrap();
        assert!(matches!(origin, KeyOrigin::ExistingFile(_)));
        assert_eq!(second.decrypt("ctx", &sealed).unwrap(), b"v");
    }
}
