//! Still images as a credential source: a PNG or JPEG of a ticket (an emailed ticket saved to
//! disk, a support agent's screenshot, a test fixture).

use std::path::PathBuf;

use tokio::sync::mpsc;

use crate::qr::decode_image_file;
use crate::{CredentialSource, Payload, Reading, SourceError, now_ms};

/// Decodes each file in turn and sends one reading per readable QR code. Unreadable files and
/// images without a code are logged and skipped: one bad file should not hide the others.
#[derive(Debug, Clone)]
pub struct FileSource {
    name: String,
    paths: Vec<PathBuf>,
}

impl FileSource {
    pub fn new(name: impl Into<String>, paths: impl IntoIterator<Item = PathBuf>) -> Self {
        Self {
            name: name.into(),
            paths: paths.into_iter().collect(),
        }
    }
}

impl CredentialSource for FileSource {
    fn name(&self) -> &str {
        &self.name
    }

    async fn run(self, tx: mpsc::Sender<Reading>) -> Result<(), SourceError> {
        for path in self.paths {
            // Image decoding and the QR ladder are CPU work: keep them off the runtime.
            let shown = path.display().to_string();
            let job = tokio::task::spawn_blocking(move || decode_image_file(&path));
            let decoded = tokio::select! {
                // The decode finishes on its own; nobody waits for its result.
                () = tx.closed() => break,
                d = job => d.map_err(|e| SourceError::Task(e.to_string()))?,
            };
            let text = match decoded {
                Ok(Some(text)) => text,
                Ok(None) => {
                    tracing::warn!(path = %shown, "no readable QR code in image");
                    continue;
                }
                Err(error) => {
                    tracing::warn!(%error, "image skipped");
                    continue;
                }
            };
            let reading = Reading {
                payload: Payload::Text(text),
                t_ms: now_ms(),
                source: self.name.clone(),
            };
            if tx.send(reading).await.is_err() {
                break;
            }
        }
        Ok(())
    }
}
