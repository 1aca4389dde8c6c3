//! The sandbox transport: each message becomes an RFC 5322 `.eml` file under
//! `DATA_DIR/sandbox/<mailbox>/<timestamp>-<message_id>.eml`, built by the same MIME builder the
//! Graph transport uses. Nothing is delivered.

use std::path::{Path, PathBuf};

use chrono::{DateTime, Utc};

use super::{SendError, Transport};
use crate::{
    clock::SharedClock,
    domain::{Mailbox, OutgoingMessage},
    mime::{self, AttachmentSelection, Envelope},
};

/// Writes messages to files.
#[derive(Debug)]
pub struct SandboxTransport {
    root: PathBuf,
    clock: SharedClock,
}

impl SandboxTransport {
    /// A sandbox writing under `data_dir/sandbox`.
    pub fn new(data_dir: &Path, clock: SharedClock) -> Self {
        Self {
            root: data_dir.join("sandbox"),
            clock,
        }
    }

    /// The folder a mailbox's messages go to.
    pub fn mailbox_dir(&self, mailbox: &Mailbox) -> PathBuf {
        self.root.join(safe_file_name(mailbox.as_str()))
    }
}

#[async_trait::async_trait]
impl Transport for SandboxTransport {
    fn name(&self) -> &'static str {
        "sandbox"
    }

    /// Any address may send: nothing is delivered.
    fn needs_connected_mailboxes(&self) -> bool {
        false
    }

    /// Writes the message; the file appears complete or not at all.
    async fn send(
        &self,
        mailbox: &Mailbox,
        message: &OutgoingMessage,
        message_id: &str,
    ) -> Result<DateTime<Utc>, SendError> {
        let now = self.clock.now();
        let dir = self.mailbox_dir(mailbox);
        let file = dir.join(format!(
            "{}-{}.eml",
            now.format("%Y%m%dT%H%M%S%.3fZ"),
            safe_file_name(message_id)
        ));
        let message = message.clone();
        let mailbox = mailbox.clone();
        let message_id = message_id.to_owned();
        tokio::task::spawn_blocking(move || {
            let envelope = Envelope {
                from: &mailbox,
                message_id: &message_id,
                date: now,
            };
            write_atomically(&dir, &file, |writer| {
                mime::write(&message, envelope, AttachmentSelection::All, writer)
            })
        })
        .await
        .map_err(|e| SendError::Internal {
            what: "the sandbox writer",
            reason: e.to_string(),
        })?
        .map_err(SendError::Storage)?;
        Ok(now)
    }

    /// The sandbox's "Sent Items" is its folder: the message's file is there or not.
    async fn find_sent(
        &self,
        mailbox: &Mailbox,
        message_id: &str,
    ) -> Result<Option<bool>, SendError> {
        let suffix = format!("-{}.eml", safe_file_name(message_id));
        let dir = self.mailbox_dir(mailbox);
        let found = tokio::task::spawn_blocking(move || match std::fs::read_dir(&dir) {
            Ok(entries) => entries
                .flatten()
                .any(|entry| entry.file_name().to_string_lossy().ends_with(&suffix)),
            Err(_) => false,
        })
        .await
        .map_err(|e| SendError::Internal {
            what: "the sandbox reader",
            reason: e.to_string(),
        })?;
        Ok(Some(found))
    }
}

/// Writes through `write` into a partial file, then renames it into place.
fn write_atomically(
    dir: &Path,
    file: &Path,
    write: impl FnOnce(&mut std::io::BufWriter<std::fs::File>) -> std::io::Result<()>,
) -> std::io::Result<()> {
    std::fs::create_dir_all(dir)?;
    let partial = file.with_extension("eml.partial");
    let mut writer = std::io::BufWriter::new(std::fs::File::create(&partial)?);
    write(&mut writer)?;
    std::io::Write::flush(&mut writer)?;
    drop(writer);
    std::fs::rename(&partial, file)
}

/// Keeps file names to a harmless alphabet: an address's local part may legally contain `/`.
fn safe_file_name(name: &str) -> String {
    name.chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || "@._+-".contains(c) {
                c
            } else {
                '_'
            }
        })
        .collect::<String>()
        .trim_start_matches('.')
        .to_owned()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn file_names_cannot_escape_the_sandbox() {
        assert_eq!(
            safe_file_name("\"../../etc\"@example.com"),
            "_.._.._etc_@example.com"
        );
        assert_eq!(safe_file_name("..hidden@x.y"), "hidden@x.y");
        assert_eq!(safe_file_name("a/b@x.y"), "a_b@x.y");
    }
}
