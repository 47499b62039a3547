//! The callbacks through which the writer, its finalizer and its part syncer tell their
//! owner what happened. They live here, apart from all three, so none of them imports
//! another just for a callback type.

use std::sync::Arc;
use std::time::SystemTime;

/// Chooses a chunk's id: `(writer name, chunk start wall time, file extension) -> id`.
pub type StartChunkCallback = Arc<dyn Fn(&str, SystemTime, &str) -> String + Send + Sync>;

/// Told the name of whatever failed: a stream whose encoder thread failed or panicked,
/// `"finalizer"`, or `"part-sync (<what>)"`. Runs on its own thread or on the failing
/// one, never on a capture thread; called at most once per stream.
pub type ErrorCallback = Arc<dyn Fn(&str) + Send + Sync>;
