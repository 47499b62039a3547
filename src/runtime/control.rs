//! The control socket (`/run/grabd/control`, mode 0660): one line in, one JSON line
//! out. `grabd ctl` is its client; tests, scripts and a laptop user drive the service
//! through it as the button would.

use std::io::{BufRead, BufReader, Read, Write};
use std::os::unix::fs::PermissionsExt;
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use crossbeam_channel::{bounded, Sender};

use crate::thread::{Handle, Heartbeat};

/// What a client may ask.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Request {
    Status,
    Press,
    Start,
    Stop,
    Mark,
}

impl Request {
    pub const NAMES: [&'static str; 5] = ["status", "press", "start", "stop", "mark"];

    pub fn parse(word: &str) -> Option<Request> {
        Some(match word {
            "status" => Request::Status,
            "press" => Request::Press,
            "start" => Request::Start,
            "stop" => Request::Stop,
            "mark" => Request::Mark,
            _ => return None,
        })
    }
}

pub type Reply = serde_json::Value;

/// How long the service may take to answer (a start opens the encoders).
const REPLY_TIMEOUT: Duration = Duration::from_secs(10);

/// The listening socket's thread; dropping it stops listening and removes the socket.
pub struct ControlServer {
    path: PathBuf,
    stop: Arc<AtomicBool>,
    handle: Option<Handle<()>>,
    beat: Heartbeat,
}

impl ControlServer {
    pub fn heartbeat(&self) -> Heartbeat {
        self.beat.clone()
    }
}

impl Drop for ControlServer {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Release);
        if let Some(h) = self.handle.take() {
            let _ = h.join_within(Duration::from_secs(2));
        }
        let _ = std::fs::remove_file(&self.path);
    }
}

/// Listen on `path`; each request goes to `dispatch` with a sender for the reply
/// (`dispatch` returns false when the service cannot take it now).
pub fn serve(
    path: &Path,
    dispatch: impl Fn(Request, Sender<Reply>) -> bool + Send + 'static,
) -> std::io::Result<ControlServer> {
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir)?;
    }
    // A socket left by a killed service refuses new binds.
    match std::fs::remove_file(path) {
        Err(e) if e.kind() != std::io::ErrorKind::NotFound => return Err(e),
        _ => {}
    }
    let listener = UnixListener::bind(path)?;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o660))?;
    listener.set_nonblocking(true)?;
    let stop = Arc::new(AtomicBool::new(false));
    let stopping = Arc::clone(&stop);
    let handle = crate::thread::spawn("control", "", None, move |beat| {
        while !stopping.load(Ordering::Acquire) {
            beat.beat();
            match listener.accept() {
                Ok((stream, _)) => {
                    if let Err(e) = answer(stream, &dispatch) {
                        tracing::warn!(error = %e, "control client");
                    }
                }
                Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {
                    std::thread::sleep(Duration::from_millis(20));
                }
                Err(e) => {
                    tracing::warn!(error = %e, "control socket accept");
                    std::thread::sleep(Duration::from_millis(100));
                }
            }
        }
    })?;
    Ok(ControlServer {
        path: path.to_owned(),
        stop,
        beat: handle.heartbeat(),
        handle: Some(handle),
    })
}

fn answer(
    stream: UnixStream,
    dispatch: &impl Fn(Request, Sender<Reply>) -> bool,
) -> std::io::Result<()> {
    stream.set_nonblocking(false)?;
    stream.set_read_timeout(Some(Duration::from_secs(2)))?;
    let mut line = String::new();
    BufReader::new((&stream).take(256)).read_line(&mut line)?;
    let word = line.trim();
    let reply = match Request::parse(word) {
        None => serde_json::json!({
            "ok": false,
            "error": format!("unknown request {word:?} (known: {})", Request::NAMES.join(", ")),
        }),
        Some(request) => {
            let (tx, rx) = bounded(1);
            if dispatch(request, tx) {
                rx.recv_timeout(REPLY_TIMEOUT).unwrap_or_else(|_| {
                    serde_json::json!({ "ok": false, "error": "the service did not answer in time" })
                })
            } else {
                serde_json::json!({ "ok": false, "error": "the service is busy" })
            }
        }
    };
    let mut stream = stream;
    writeln!(stream, "{reply}")
}

/// The client: send `request`, return the service's JSON reply.
pub fn request(path: &Path, request: &str) -> std::io::Result<Reply> {
    let mut stream = UnixStream::connect(path)?;
    stream.set_read_timeout(Some(REPLY_TIMEOUT + Duration::from_secs(2)))?;
    writeln!(stream, "{request}")?;
    let mut line = String::new();
    BufReader::new(&stream).read_line(&mut line)?;
    serde_json::from_str(&line).map_err(|e| std::io::Error::new(std::io::ErrorKind::InvalidData, e))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::FileTypeExt;

    #[test]
    fn requests_reach_the_service_and_replies_come_back() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("run/control");
        let server = serve(&path, |request, reply| {
            let _ = reply.send(serde_json::json!({ "ok": true, "got": format!("{request:?}") }));
            true
        })
        .unwrap();
        let meta = std::fs::metadata(&path).unwrap();
        assert!(meta.file_type().is_socket());
        assert_eq!(meta.permissions().mode() & 0o777, 0o660);
        assert_eq!(request(&path, "mark").unwrap()["got"], "Mark");
        let bad = request(&path, "explode").unwrap();
        assert_eq!(bad["ok"], false);
        assert!(bad["error"].as_str().unwrap().contains("explode"));
        drop(server);
        assert!(!path.exists());
        assert!(request(&path, "status").is_err());
    }
}
