//! The run's token and the challenge-response that proves an agent (and the coordinator)
//! holds it. The token is 32 random bytes, written hex-encoded and readable by its owner only
//! (0600) into the run folder, which agents see on the shared file system; it never crosses
//! the wire. Each side sends a fresh nonce and proves the token with a keyed BLAKE3 hash over
//! both nonces and its role, so a recorded proof is worthless on another connection and
//! neither side's proof can be reflected back as the other's.

use fs_err::os::unix::fs::OpenOptionsExt;
use std::io::{Read, Write};
use std::path::Path;

/// Why the token could not be made or read.
#[derive(Debug, thiserror::Error)]
pub(crate) enum TokenError {
    /// Reading or writing its file (or the system's random source) failed.
    #[error(transparent)]
    Io(#[from] std::io::Error),
    /// The file does not hold a token.
    #[error("{path} does not hold a stepgraph agent token (64 hex digits)")]
    Malformed {
        /// The file.
        path: String,
    },
}

/// The secret shared by a run's coordinator and agents.
#[derive(Clone)]
pub(crate) struct Token {
    key: [u8; 32],
}

impl std::fmt::Debug for Token {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Token(..)")
    }
}

/// `n` bytes from the system's random source.
pub(crate) fn random_bytes<const N: usize>() -> Result<[u8; N], std::io::Error> {
    let mut out = [0u8; N];
    fs_err::File::open("/dev/urandom")?.read_exact(&mut out)?;
    Ok(out)
}

/// A fresh nonce, hex.
pub(crate) fn nonce() -> Result<String, std::io::Error> {
    Ok(hex(&random_bytes::<32>()?))
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

fn unhex(text: &str) -> Option<Vec<u8>> {
    let text = text.trim();
    if !text.len().is_multiple_of(2) || !text.is_ascii() {
        return None;
    }
    (0..text.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(&text[i..i + 2], 16).ok())
        .collect()
}

/// Which side a proof comes from (a proof is never valid for the other side).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Role {
    /// `stepgraph run`.
    Coordinator,
    /// `stepgraph agent`.
    Agent,
}

impl Token {
    /// A fresh token, written to `path` (created 0600; an existing file is replaced).
    pub(crate) fn create(path: &Path) -> Result<Token, TokenError> {
        let secret = random_bytes::<32>()?;
        let _ = fs_err::remove_file(path);
        let mut f = fs_err::OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .open(path)?;
        f.write_all(hex(&secret).as_bytes())?;
        f.write_all(b"\n")?;
        f.sync_all()?;
        Ok(Token::from_secret(&secret))
    }

    /// The token in `path`.
    pub(crate) fn read(path: &Path) -> Result<Token, TokenError> {
        let text = fs_err::read_to_string(path)?;
        match unhex(&text) {
            Some(secret) if secret.len() == 32 => Ok(Token::from_secret(&secret)),
            _ => Err(TokenError::Malformed {
                path: path.display().to_string(),
            }),
        }
    }

    fn from_secret(secret: &[u8]) -> Token {
        Token {
            key: blake3::derive_key("stepgraph agent authentication v1", secret),
        }
    }

    fn mac(&self, role: Role, agent_nonce: &str, coordinator_nonce: &str) -> blake3::Hash {
        let mut h = blake3::Hasher::new_keyed(&self.key);
        h.update(match role {
            Role::Coordinator => b"coordinator\0",
            Role::Agent => b"agent\0\0\0\0\0\0\0",
        });
        for n in [agent_nonce, coordinator_nonce] {
            h.update(&(n.len() as u64).to_be_bytes());
            h.update(n.as_bytes());
        }
        h.finalize()
    }

    /// `role`'s proof over both nonces, hex.
    pub(crate) fn prove(&self, role: Role, agent_nonce: &str, coordinator_nonce: &str) -> String {
        self.mac(role, agent_nonce, coordinator_nonce)
            .to_hex()
            .to_string()
    }

    /// Whether `proof` is `role`'s proof over both nonces (compared in constant time).
    pub(crate) fn verify(
        &self,
        role: Role,
        agent_nonce: &str,
        coordinator_nonce: &str,
        proof: &str,
    ) -> bool {
        match blake3::Hash::from_hex(proof.trim()) {
            Ok(given) => given == self.mac(role, agent_nonce, coordinator_nonce),
            Err(_) => false,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;

    #[test]
    fn the_token_file_is_private_and_reads_back() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("agent-token");
        let t = Token::create(&path).expect("create");
        let mode = fs_err::metadata(&path).expect("meta").permissions().mode();
        assert_eq!(mode & 0o777, 0o600);
        let back = Token::read(&path).expect("read");
        let p = t.prove(Role::Agent, "a", "c");
        assert!(back.verify(Role::Agent, "a", "c", &p));
    }

    #[test]
    fn a_proof_is_bound_to_its_nonces_role_and_token() {
        let dir = tempfile::tempdir().expect("tempdir");
        let t = Token::create(&dir.path().join("t1")).expect("t1");
        let other = Token::create(&dir.path().join("t2")).expect("t2");
        let p = t.prove(Role::Agent, "na", "nc");
        assert!(t.verify(Role::Agent, "na", "nc", &p));
        assert!(!t.verify(Role::Agent, "na", "other", &p));
        assert!(!t.verify(Role::Agent, "other", "nc", &p));
        assert!(!t.verify(Role::Coordinator, "na", "nc", &p));
        assert!(!other.verify(Role::Agent, "na", "nc", &p));
        assert!(!t.verify(Role::Agent, "na", "nc", "not hex"));
        // Nonces are length-prefixed: moving bytes between them changes the proof.
        assert!(!t.verify(Role::Agent, "nan", "c", &p));
    }

    #[test]
    fn a_malformed_token_file_is_an_error() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("t");
        fs_err::write(&path, "zz").expect("write");
        assert!(matches!(
            Token::read(&path),
            Err(TokenError::Malformed { .. })
        ));
    }
}
