//! V4L2 cameras through the `v4l` crate (mmap streaming, single-planar capture).
//!
//! [`V4l2Camera::open`] negotiates the configured format, size and rate and reads back
//! what the driver really set: a driver that snaps them (vivid turns 320x240 into
//! 320x180 without a word) is refused unless the config allows it, and then reported.
//! A capture thread (role `cap`) only dequeues, copies `bytesused` bytes and requeues;
//! MJPEG is decoded with libavcodec's decoder on the caller's thread, off the capture
//! thread. Frames carry the buffer's timestamp when the driver flags it
//! CLOCK_MONOTONIC (the clock every grabd source uses), else the time of dequeue,
//! which [`V4l2Camera::timestamps`] says so that the manifest can.
//!
//! Loss: POLLERR/POLLHUP, an ioctl error (ENODEV after an unplug, EINVAL after an
//! unbind) or no frame for the configured timeout ends the stream with an error
//! naming the device. The camera is opened afresh for every recording, so one that
//! comes back works for the next without a restart.

use std::mem::ManuallyDrop;
use std::os::fd::BorrowedFd;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicI64, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use crossbeam_channel::{bounded, Receiver, RecvTimeoutError};
use ffmpeg_next as ffmpeg;
use v4l::io::traits::{CaptureStream, Stream as _};
use v4l::video::Capture;

use super::m2m::{c_string, enum_formats, fourcc};
use super::{CaptureError, FrameSource};
use crate::clock::monotonic_us;
use crate::recording::Frame;

/// Pixel formats grabd captures, by their V4L2 fourcc.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CaptureFormat {
    Yuyv,
    Nv12,
    Grey,
    Y16,
    Mjpeg,
}

impl CaptureFormat {
    pub const NAMES: &'static str = "YUYV, NV12, GREY, Y16, MJPG";

    pub fn from_name(name: &str) -> Option<Self> {
        Some(match name {
            "YUYV" => CaptureFormat::Yuyv,
            "NV12" => CaptureFormat::Nv12,
            "GREY" => CaptureFormat::Grey,
            "Y16" | "Y16 " => CaptureFormat::Y16,
            "MJPG" | "MJPEG" => CaptureFormat::Mjpeg,
            _ => return None,
        })
    }

    pub fn fourcc(self) -> [u8; 4] {
        match self {
            CaptureFormat::Yuyv => *b"YUYV",
            CaptureFormat::Nv12 => *b"NV12",
            CaptureFormat::Grey => *b"GREY",
            CaptureFormat::Y16 => *b"Y16 ",
            CaptureFormat::Mjpeg => *b"MJPG",
        }
    }

    /// The fourcc as V4L2 tools print it (`YUYV`, `Y16`).
    pub fn fourcc_name(self) -> String {
        fourcc(u32::from_le_bytes(self.fourcc()))
    }

    /// The libav pixel format of the packed frames this source hands on (MJPEG is
    /// decoded and converted to yuv420p).
    pub fn pixel_format(self) -> &'static str {
        match self {
            CaptureFormat::Yuyv => "yuyv422",
            CaptureFormat::Nv12 => "nv12",
            CaptureFormat::Grey => "gray",
            CaptureFormat::Y16 => "gray16le",
            CaptureFormat::Mjpeg => "yuv420p",
        }
    }

    /// Bytes of one packed row of luma (the whole row for packed formats).
    fn row_bytes(self, width: u32) -> usize {
        let width = width as usize;
        match self {
            CaptureFormat::Yuyv | CaptureFormat::Y16 => width * 2,
            CaptureFormat::Nv12 | CaptureFormat::Grey => width,
            CaptureFormat::Mjpeg => 0,
        }
    }

    /// Rows of `row_bytes` in one frame (NV12's chroma plane adds half as many again).
    fn rows(self, height: u32) -> usize {
        let height = height as usize;
        match self {
            CaptureFormat::Nv12 => height + height.div_ceil(2),
            _ => height,
        }
    }
}

/// What one camera stream is set to.
#[derive(Debug, Clone, PartialEq)]
pub struct V4l2Config {
    /// As configured: `/dev/videoN` or a stable `/dev/v4l/by-id|by-path/...` link.
    pub device: PathBuf,
    pub format: CaptureFormat,
    pub width: u32,
    pub height: u32,
    pub fps: f64,
    /// mmap buffers (at least 2: UVC halves its rate with one).
    pub buffers: u32,
    /// Record at what the driver snapped the size or rate to, instead of refusing.
    pub allow_snap: bool,
    /// No frame for this long ends the stream.
    pub timeout: Duration,
}

pub const DEFAULT_BUFFERS: u32 = 4;
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(2);

impl V4l2Config {
    pub fn new(
        device: impl Into<PathBuf>,
        format: CaptureFormat,
        width: u32,
        height: u32,
        fps: f64,
    ) -> Self {
        V4l2Config {
            device: device.into(),
            format,
            width,
            height,
            fps,
            buffers: DEFAULT_BUFFERS,
            allow_snap: false,
            timeout: DEFAULT_TIMEOUT,
        }
    }

    pub fn validate(&self) -> Result<(), String> {
        if self.buffers < 2 {
            return Err(format!("buffers {}: at least 2 are needed", self.buffers));
        }
        if self.buffers > 32 {
            return Err(format!("buffers {}: at most 32", self.buffers));
        }
        if self.timeout < Duration::from_millis(100) {
            return Err(format!(
                "timeout_ms {}: at least 100",
                self.timeout.as_millis()
            ));
        }
        Ok(())
    }
}

/// Where frame timestamps come from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TimestampSource {
    /// The driver's buffer timestamp, on CLOCK_MONOTONIC.
    Buffer,
    /// The time of dequeue: the driver's buffer clock is not CLOCK_MONOTONIC.
    Dequeue,
}

impl TimestampSource {
    /// From a buffer's flags (V4L2_BUF_FLAG_TIMESTAMP_MASK).
    pub fn from_flags(flags: u32) -> Self {
        if flags & 0xe000 == 0x2000 {
            TimestampSource::Buffer
        } else {
            TimestampSource::Dequeue
        }
    }

    /// The manifest's words for it.
    pub fn describe(self) -> &'static str {
        match self {
            TimestampSource::Buffer => "buffer (CLOCK_MONOTONIC)",
            TimestampSource::Dequeue => {
                "dequeue (the driver's buffer clock is not CLOCK_MONOTONIC)"
            }
        }
    }
}

/// Compare what the driver set with what was asked. `Err` names the difference when
/// it is not allowed; `Ok(Some(..))` names an allowed one (to be logged).
pub fn check_negotiated(
    wanted: &V4l2Config,
    width: u32,
    height: u32,
    fps: f64,
) -> Result<Option<String>, String> {
    let mut changes = Vec::new();
    if (width, height) != (wanted.width, wanted.height) {
        changes.push(format!(
            "size {}x{} became {width}x{height}",
            wanted.width, wanted.height
        ));
    }
    if (fps - wanted.fps).abs() > wanted.fps * 0.001 {
        changes.push(format!("rate {} fps became {fps:.3} fps", wanted.fps));
    }
    if changes.is_empty() {
        return Ok(None);
    }
    let what = format!("the driver snapped {}", changes.join(" and "));
    if wanted.allow_snap {
        Ok(Some(what))
    } else {
        Err(format!(
            "{what} (set allow_snap = true to record it anyway)"
        ))
    }
}

/// `/dev/v4l/by-id/...` and other links, resolved to the `/dev/videoN` node.
pub fn resolve_device(path: &Path) -> Result<PathBuf, String> {
    std::fs::canonicalize(path).map_err(|e| format!("{}: {e}", path.display()))
}

/// Frames a driver numbered but grabd never got, from the buffers' sequence numbers:
/// the driver dropped them (it ran late, or every buffer was still with grabd).
#[derive(Debug, Default)]
struct SequenceGaps {
    last: Option<u32>,
    missed: u64,
}

impl SequenceGaps {
    /// A jump this large is a renumbering (a driver restarting its count), not a loss.
    const RENUMBERED: u32 = 1 << 16;

    /// Note a dequeued buffer's sequence number; the frames missed just before it.
    fn see(&mut self, sequence: u32) -> u32 {
        let gap = match self.last {
            Some(last) => sequence.wrapping_sub(last).wrapping_sub(1),
            None => 0,
        };
        self.last = Some(sequence);
        let gap = if gap >= Self::RENUMBERED { 0 } else { gap };
        self.missed += u64::from(gap);
        gap
    }
}

/// What one camera's capture thread saw, logged when the camera is closed (a loaded
/// system shows here as frames the driver numbered but never delivered).
#[derive(Debug, Default)]
struct CaptureCounts {
    delivered: AtomicU64,
    /// Sequence gaps: dropped by the driver before grabd saw them.
    missed_by_driver: AtomicU64,
    /// Dequeued, but the consumer was that far behind.
    dropped_lagging: AtomicU64,
    /// The first and the last delivered frame's time (µs): with the rate, how many
    /// frames were due, to hold `delivered + missed_by_driver` against.
    first_us: AtomicI64,
    last_us: AtomicI64,
}

/// One captured buffer as the capture thread hands it on.
struct Captured {
    timestamp_us: i64,
    data: Vec<u8>,
}

/// A streaming V4L2 camera.
pub struct V4l2Camera {
    name: String,
    node: PathBuf,
    config: V4l2Config,
    frames: Receiver<Result<Captured, String>>,
    stop: Arc<AtomicBool>,
    capture: Option<crate::thread::Handle<()>>,
    /// Starts streaming; taken by the first `next_frame`.
    go: Option<crossbeam_channel::Sender<()>>,
    timestamps: TimestampSource,
    snapped: Option<String>,
    width: u32,
    height: u32,
    fps: f64,
    mjpeg: Option<MjpegDecoder>,
    counts: Arc<CaptureCounts>,
}

impl V4l2Camera {
    /// Open and configure the camera and start streaming. `name` is the stream's name
    /// (for the thread and messages).
    pub fn open(name: &str, config: &V4l2Config) -> Result<Self, CaptureError> {
        let fail = |reason: String| CaptureError::Failed {
            source_name: format!("{name} ({})", config.device.display()),
            reason,
        };
        config.validate().map_err(&fail)?;
        let node = resolve_device(&config.device).map_err(&fail)?;
        let device = v4l::Device::with_path(&node)
            .map_err(|e| fail(format!("open {}: {e}", node.display())))?;
        let fd = device.handle().fd();
        check_capture_device(fd).map_err(&fail)?;
        let offered = enum_formats(fd, 1);
        let wanted = config.format.fourcc();
        let wanted_name = fourcc(u32::from_le_bytes(wanted));
        if !offered.contains(&wanted_name) {
            return Err(fail(format!(
                "does not offer {wanted_name} (offers {})",
                if offered.is_empty() {
                    "none".into()
                } else {
                    offered.join(", ")
                }
            )));
        }
        let format = device
            .set_format(&v4l::Format::new(
                config.width,
                config.height,
                v4l::FourCC::new(&wanted),
            ))
            .map_err(|e| fail(format!("set format: {e}")))?;
        if format.fourcc.repr != wanted {
            return Err(fail(format!(
                "asked for {wanted_name}, the driver set {}",
                fourcc(u32::from_le_bytes(format.fourcc.repr))
            )));
        }
        // The rate as a frame interval: 1000 / (fps * 1000) keeps 12.5 or 29.97 fps.
        let interval = v4l::Fraction::new(1000, (config.fps * 1000.0).round() as u32);
        let params = device
            .set_params(&v4l::video::capture::Parameters::new(interval))
            .map_err(|e| fail(format!("set frame rate: {e}")))?;
        let fps = if params.interval.numerator == 0 {
            0.0
        } else {
            f64::from(params.interval.denominator) / f64::from(params.interval.numerator)
        };
        let snapped = check_negotiated(config, format.width, format.height, fps).map_err(&fail)?;
        if let Some(what) = &snapped {
            tracing::warn!(stream = name, device = %node.display(), "{what}; recording it as allowed");
        }
        let mut stream = v4l::io::mmap::Stream::with_buffers(
            &device,
            v4l::buffer::Type::VideoCapture,
            config.buffers,
        )
        .map_err(|e| fail(format!("allocate {} buffers: {e}", config.buffers)))?;
        stream.set_timeout(config.timeout);
        let timestamps = TimestampSource::from_flags(
            query_buffer_flags(fd).map_err(|e| fail(format!("query buffer: {e}")))?,
        );
        let layout = Layout {
            format: config.format,
            width: format.width,
            height: format.height,
            stride: format.stride as usize,
        };
        let (tx, frames) = bounded(config.buffers as usize);
        // Streaming starts with the first `next_frame`, not here: frames from before the
        // recording started must not reach it.
        let (go, go_rx) = bounded::<()>(1);
        let stop = Arc::new(AtomicBool::new(false));
        let thread_stop = Arc::clone(&stop);
        let timeout = config.timeout;
        let label = node.display().to_string();
        let counts = Arc::new(CaptureCounts::default());
        let thread_counts = Arc::clone(&counts);
        let capture = crate::thread::spawn("cap", name, None, move |heartbeat| {
            let mut stream = GuardedStream(ManuallyDrop::new(stream));
            loop {
                match go_rx.recv_timeout(Duration::from_millis(100)) {
                    Ok(()) => break,
                    Err(RecvTimeoutError::Timeout) if !thread_stop.load(Ordering::Acquire) => {}
                    Err(_) => return,
                }
            }
            let result = capture_loop(
                &device,
                &mut stream.0,
                layout,
                timestamps,
                timeout,
                &thread_stop,
                heartbeat,
                &thread_counts,
                |c| {
                    // Full means the consumer lags; dropping here keeps the camera's
                    // buffers cycling (the writer counts its own drops downstream).
                    if tx.try_send(Ok(c)).is_err() {
                        thread_counts
                            .dropped_lagging
                            .fetch_add(1, Ordering::Relaxed);
                    }
                },
            );
            if let Err(e) = result {
                let _ = tx.send_timeout(Err(format!("{label}: {e}")), Duration::from_secs(1));
            }
            drop(stream);
            drop(device);
        })
        .map_err(|e| fail(format!("start the capture thread: {e}")))?;
        let mjpeg = match config.format {
            CaptureFormat::Mjpeg => {
                Some(MjpegDecoder::new(format.width, format.height).map_err(&fail)?)
            }
            _ => None,
        };
        tracing::info!(
            stream = name,
            device = %node.display(),
            width = format.width,
            height = format.height,
            fps,
            timestamps = timestamps.describe(),
            "camera streaming"
        );
        Ok(V4l2Camera {
            name: name.to_owned(),
            node,
            config: config.clone(),
            frames,
            stop,
            capture: Some(capture),
            go: Some(go),
            timestamps,
            snapped,
            width: format.width,
            height: format.height,
            fps,
            mjpeg,
            counts,
        })
    }

    pub fn timestamps(&self) -> TimestampSource {
        self.timestamps
    }

    /// What the driver snapped, when the config allowed it.
    pub fn snapped(&self) -> Option<&str> {
        self.snapped.as_deref()
    }

    /// Size and rate as the driver set them.
    pub fn negotiated(&self) -> (u32, u32, f64) {
        (self.width, self.height, self.fps)
    }

    fn failed(&self, reason: String) -> CaptureError {
        CaptureError::Failed {
            source_name: format!("{} ({})", self.name, self.config.device.display()),
            reason,
        }
    }
}

impl FrameSource for V4l2Camera {
    fn next_frame(&mut self) -> Result<Frame, CaptureError> {
        if let Some(go) = self.go.take() {
            let _ = go.send(());
        }
        // The capture thread itself gives up after `timeout`; the margin covers its poll.
        let wait = self.config.timeout + Duration::from_secs(1);
        let captured = match self.frames.recv_timeout(wait) {
            Ok(Ok(captured)) => captured,
            Ok(Err(reason)) => return Err(self.failed(reason)),
            Err(RecvTimeoutError::Timeout) => {
                return Err(self.failed(format!("no frame for {} ms", wait.as_millis())))
            }
            Err(RecvTimeoutError::Disconnected) => {
                return Err(self.failed("the capture thread ended".into()))
            }
        };
        let data = match &mut self.mjpeg {
            Some(decoder) => decoder.decode(&captured.data).map_err(|e| self.failed(e))?,
            None => captured.data,
        };
        Ok(Frame::new(captured.timestamp_us, data))
    }

    fn describe(&self) -> String {
        format!(
            "v4l2 {} ({}x{} @ {} fps)",
            self.node.display(),
            self.width,
            self.height,
            self.fps
        )
    }
}

impl Drop for V4l2Camera {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Release);
        if let Some(capture) = self.capture.take() {
            // The thread polls in short steps: it sees the flag within ~100 ms.
            let _ = capture.join_within(self.config.timeout + Duration::from_secs(1));
        }
        let count = |c: &AtomicU64| c.load(Ordering::Relaxed);
        tracing::info!(
            stream = %self.name,
            device = %self.node.display(),
            frames = count(&self.counts.delivered),
            missed_by_driver = count(&self.counts.missed_by_driver),
            dropped_lagging = count(&self.counts.dropped_lagging),
            first_us = self.counts.first_us.load(Ordering::Relaxed),
            last_us = self.counts.last_us.load(Ordering::Relaxed),
            "camera closed"
        );
    }
}

/// The crate's stream panics in `Drop` when STREAMOFF fails with anything but ENODEV
/// (an unbound device gives EINVAL). Stop it here first; if that fails, leak it
/// (its buffers are unmapped when the process ends) instead of panicking.
struct GuardedStream(ManuallyDrop<v4l::io::mmap::Stream<'static>>);

impl Drop for GuardedStream {
    fn drop(&mut self) {
        match self.0.stop() {
            // SAFETY: `self.0` is dropped exactly once, here, and never used after.
            Ok(()) => unsafe { ManuallyDrop::drop(&mut self.0) },
            Err(e) if e.raw_os_error() == Some(nix::errno::Errno::ENODEV as i32) => {
                // SAFETY: as above; the crate's Drop ignores ENODEV.
                unsafe { ManuallyDrop::drop(&mut self.0) }
            }
            Err(e) => tracing::warn!(error = %e, "STREAMOFF failed; leaving the buffers mapped"),
        }
    }
}

/// How a captured buffer is laid out, to pack it without row padding.
#[derive(Debug, Clone, Copy)]
struct Layout {
    format: CaptureFormat,
    width: u32,
    height: u32,
    /// bytesperline as the driver set it.
    stride: usize,
}

impl Layout {
    /// The frame packed as the recording takes it (rows without padding); MJPEG as is.
    fn pack(&self, bytes: &[u8]) -> Result<Vec<u8>, String> {
        let row = self.format.row_bytes(self.width);
        if row == 0 {
            return Ok(bytes.to_vec());
        }
        let rows = self.format.rows(self.height);
        let stride = self.stride.max(row);
        if stride == row {
            let size = row * rows;
            return bytes.get(..size).map(<[u8]>::to_vec).ok_or_else(|| {
                format!(
                    "a buffer of {} bytes holds less than one frame ({size})",
                    bytes.len()
                )
            });
        }
        let mut packed = Vec::with_capacity(row * rows);
        for r in 0..rows {
            let line = bytes
                .get(r * stride..r * stride + row)
                .ok_or_else(|| format!("a buffer of {} bytes ends at row {r}", bytes.len()))?;
            packed.extend_from_slice(line);
        }
        Ok(packed)
    }
}

#[allow(clippy::too_many_arguments)]
fn capture_loop(
    device: &v4l::Device,
    stream: &mut v4l::io::mmap::Stream<'static>,
    layout: Layout,
    timestamps: TimestampSource,
    timeout: Duration,
    stop: &AtomicBool,
    heartbeat: &crate::thread::Heartbeat,
    counts: &CaptureCounts,
    mut deliver: impl FnMut(Captured),
) -> Result<(), String> {
    let fd = device.handle().fd();
    let mut gaps = SequenceGaps::default();
    let mut last_frame = Instant::now();
    let mut started = false;
    while !stop.load(Ordering::Acquire) {
        heartbeat.beat();
        if started {
            // Wait in short steps so that a stop is seen quickly; the crate's own poll
            // (inside `next`) then returns at once.
            match wait_readable(fd, Duration::from_millis(100))? {
                true => {}
                false if last_frame.elapsed() >= timeout => {
                    return Err(format!("no frame for {} ms", timeout.as_millis()))
                }
                false => continue,
            }
        }
        let (bytes, meta) = stream.next().map_err(|e| format!("capture: {e}"))?;
        started = true;
        let dequeued_us = monotonic_us();
        last_frame = Instant::now();
        let missed = gaps.see(meta.sequence);
        if missed > 0 {
            counts
                .missed_by_driver
                .fetch_add(u64::from(missed), Ordering::Relaxed);
        }
        if meta.flags.contains(v4l::buffer::Flags::ERROR) {
            tracing::warn!("the driver marked a buffer as corrupt; skipped");
            continue;
        }
        let used = (meta.bytesused as usize).min(bytes.len());
        let timestamp_us = match timestamps {
            TimestampSource::Buffer => meta.timestamp.sec * 1_000_000 + meta.timestamp.usec,
            TimestampSource::Dequeue => dequeued_us,
        };
        if counts.delivered.fetch_add(1, Ordering::Relaxed) == 0 {
            counts.first_us.store(timestamp_us, Ordering::Relaxed);
        }
        counts.last_us.store(timestamp_us, Ordering::Relaxed);
        deliver(Captured {
            timestamp_us,
            data: layout.pack(&bytes[..used])?,
        });
    }
    Ok(())
}

/// Poll `fd` for a frame; POLLERR/POLLHUP (the device went away) is an error.
fn wait_readable(fd: i32, step: Duration) -> Result<bool, String> {
    use nix::poll::{poll, PollFd, PollFlags, PollTimeout};
    // SAFETY: `fd` belongs to the device, which outlives this call.
    let borrowed = unsafe { BorrowedFd::borrow_raw(fd) };
    let mut fds = [PollFd::new(borrowed, PollFlags::POLLIN)];
    let millis = u16::try_from(step.as_millis()).unwrap_or(u16::MAX);
    match poll(&mut fds, PollTimeout::from(millis)) {
        Ok(0) => Ok(false),
        Ok(_) => {
            let revents = fds[0].revents().unwrap_or(PollFlags::empty());
            if revents.intersects(PollFlags::POLLERR | PollFlags::POLLHUP | PollFlags::POLLNVAL) {
                Err(format!(
                    "the device reported {revents:?} (unplugged or unbound?)"
                ))
            } else {
                Ok(revents.contains(PollFlags::POLLIN))
            }
        }
        Err(nix::errno::Errno::EINTR) => Ok(false),
        Err(e) => Err(format!("poll: {e}")),
    }
}

const CAP_VIDEO_CAPTURE: u32 = 0x0000_0001;
const CAP_STREAMING: u32 = 0x0400_0000;
const CAP_DEVICE_CAPS: u32 = 0x8000_0000;

/// What QUERYCAP says about a camera node (for `grabd probe` too).
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct CameraInfo {
    pub driver: String,
    pub card: String,
    pub bus: String,
    pub caps: u32,
}

pub fn query_camera(fd: i32) -> std::io::Result<CameraInfo> {
    // SAFETY: v4l2_capability is plain data (zero is valid); QUERYCAP fills it; `fd` is
    // an open V4L2 node.
    let cap: v4l::v4l_sys::v4l2_capability = unsafe {
        let mut cap: v4l::v4l_sys::v4l2_capability = std::mem::zeroed();
        v4l::v4l2::ioctl(
            fd,
            v4l::v4l2::vidioc::VIDIOC_QUERYCAP,
            std::ptr::addr_of_mut!(cap).cast(),
        )?;
        cap
    };
    Ok(CameraInfo {
        driver: c_string(&cap.driver),
        card: c_string(&cap.card),
        bus: c_string(&cap.bus_info),
        caps: if cap.capabilities & CAP_DEVICE_CAPS != 0 {
            cap.device_caps
        } else {
            cap.capabilities
        },
    })
}

fn check_capture_device(fd: i32) -> Result<(), String> {
    let info = query_camera(fd).map_err(|e| format!("QUERYCAP: {e}"))?;
    if info.caps & CAP_VIDEO_CAPTURE == 0 {
        return Err(format!(
            "{} ({}) is not a single-planar video capture device",
            info.card, info.driver
        ));
    }
    if info.caps & CAP_STREAMING == 0 {
        return Err(format!(
            "{} ({}) has no streaming I/O",
            info.card, info.driver
        ));
    }
    Ok(())
}

/// The flags of buffer 0 (after REQBUFS): the timestamp type the queue uses.
fn query_buffer_flags(fd: i32) -> std::io::Result<u32> {
    // SAFETY: v4l2_buffer is plain data; QUERYBUF reads type, memory and index and fills
    // the rest; `fd` is an open node whose buffers were just requested.
    unsafe {
        let mut buffer: v4l::v4l_sys::v4l2_buffer = std::mem::zeroed();
        buffer.type_ = 1; // V4L2_BUF_TYPE_VIDEO_CAPTURE
        buffer.memory = 1; // V4L2_MEMORY_MMAP
        buffer.index = 0;
        v4l::v4l2::ioctl(
            fd,
            v4l::v4l2::vidioc::VIDIOC_QUERYBUF,
            std::ptr::addr_of_mut!(buffer).cast(),
        )?;
        Ok(buffer.flags)
    }
}

/// libavcodec's MJPEG decoder, converting each picture to packed yuv420p.
struct MjpegDecoder {
    decoder: ffmpeg::decoder::Video,
    scaler: Option<(ffmpeg::format::Pixel, ffmpeg::software::scaling::Context)>,
    width: u32,
    height: u32,
}

// SAFETY: the decoder and SwsContext have no thread affinity; the decoder is used by
// one thread at a time (it lives in the camera, which is not Sync).
unsafe impl Send for MjpegDecoder {}

impl MjpegDecoder {
    fn new(width: u32, height: u32) -> Result<Self, String> {
        crate::recording::media::ensure_init();
        let codec = ffmpeg::decoder::find(ffmpeg::codec::Id::MJPEG)
            .ok_or("this libavcodec has no MJPEG decoder")?;
        let decoder = ffmpeg::codec::context::Context::new_with_codec(codec)
            .decoder()
            .video()
            .map_err(|e| format!("open the MJPEG decoder: {e}"))?;
        Ok(MjpegDecoder {
            decoder,
            scaler: None,
            width,
            height,
        })
    }

    fn decode(&mut self, jpeg: &[u8]) -> Result<Vec<u8>, String> {
        let packet = ffmpeg::Packet::copy(jpeg);
        self.decoder
            .send_packet(&packet)
            .map_err(|e| format!("decode MJPEG: {e}"))?;
        let mut picture = ffmpeg::frame::Video::empty();
        self.decoder
            .receive_frame(&mut picture)
            .map_err(|e| format!("decode MJPEG: {e}"))?;
        if (picture.width(), picture.height()) != (self.width, self.height) {
            return Err(format!(
                "an MJPEG frame of {}x{} in a {}x{} stream",
                picture.width(),
                picture.height(),
                self.width,
                self.height
            ));
        }
        let target = ffmpeg::format::Pixel::YUV420P;
        let converted;
        let out = if picture.format() == target {
            &picture
        } else {
            if self.scaler.as_ref().map(|(f, _)| *f) != Some(picture.format()) {
                let scaler = ffmpeg::software::scaling::Context::get(
                    picture.format(),
                    self.width,
                    self.height,
                    target,
                    self.width,
                    self.height,
                    ffmpeg::software::scaling::Flags::BILINEAR,
                )
                .map_err(|e| format!("convert MJPEG pictures: {e}"))?;
                self.scaler = Some((picture.format(), scaler));
            }
            let mut frame = ffmpeg::frame::Video::new(target, self.width, self.height);
            if let Some((_, scaler)) = self.scaler.as_mut() {
                scaler
                    .run(&picture, &mut frame)
                    .map_err(|e| format!("convert MJPEG pictures: {e}"))?;
            }
            converted = frame;
            &converted
        };
        Ok(pack_planes(out))
    }
}

/// A yuv420p picture as one packed buffer (planes back to back, rows without padding).
fn pack_planes(frame: &ffmpeg::frame::Video) -> Vec<u8> {
    let (w, h) = (frame.width() as usize, frame.height() as usize);
    let dims = [
        (w, h),
        (w.div_ceil(2), h.div_ceil(2)),
        (w.div_ceil(2), h.div_ceil(2)),
    ];
    let mut packed = Vec::with_capacity(w * h * 3 / 2 + 2);
    for (plane, (pw, ph)) in dims.iter().enumerate() {
        let stride = frame.stride(plane);
        let data = frame.data(plane);
        for row in 0..*ph {
            packed.extend_from_slice(&data[row * stride..row * stride + pw]);
        }
    }
    packed
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A driver numbers every frame it was due to capture, also those it dropped (late,
    /// or no free buffer): the gaps are the frames lost before grabd saw them.
    #[test]
    fn sequence_gaps_count_the_frames_the_driver_never_delivered() {
        let mut gaps = SequenceGaps::default();
        assert_eq!(gaps.see(7), 0, "the first frame has nothing before it");
        assert_eq!(gaps.see(8), 0);
        assert_eq!(gaps.see(11), 2);
        assert_eq!(
            gaps.see(u32::MAX),
            0,
            "a restart of the numbering is no loss"
        );
        assert_eq!(gaps.see(1), 1, "the numbering wraps");
        assert_eq!(gaps.missed, 3);
    }

    #[test]
    fn vivid_snapping_320x240_to_320x180_is_refused_unless_allowed() {
        let mut config = V4l2Config::new("/dev/video0", CaptureFormat::Yuyv, 320, 240, 30.0);
        let err = check_negotiated(&config, 320, 180, 30.0).unwrap_err();
        assert_eq!(
            err,
            "the driver snapped size 320x240 became 320x180 (set allow_snap = true to record it anyway)"
        );
        config.allow_snap = true;
        assert_eq!(
            check_negotiated(&config, 320, 180, 25.0)
                .unwrap()
                .as_deref(),
            Some(
                "the driver snapped size 320x240 became 320x180 and rate 30 fps became 25.000 fps"
            )
        );
        assert_eq!(check_negotiated(&config, 320, 240, 29.9999), Ok(None));
    }

    #[test]
    fn only_monotonic_buffer_timestamps_are_used() {
        assert_eq!(
            TimestampSource::from_flags(0x2000 | 0x1),
            TimestampSource::Buffer
        );
        assert_eq!(
            TimestampSource::from_flags(0x4000),
            TimestampSource::Dequeue
        );
        assert_eq!(TimestampSource::from_flags(0), TimestampSource::Dequeue);
    }

    #[test]
    fn buffers_are_sliced_and_row_padding_removed() {
        let layout = Layout {
            format: CaptureFormat::Yuyv,
            width: 2,
            height: 2,
            stride: 4,
        };
        assert_eq!(
            layout.pack(&[1, 2, 3, 4, 5, 6, 7, 8, 9, 9]).unwrap(),
            vec![1, 2, 3, 4, 5, 6, 7, 8]
        );
        let padded = Layout {
            stride: 6,
            ..layout
        };
        assert_eq!(
            padded.pack(&[1, 2, 3, 4, 0, 0, 5, 6, 7, 8, 0, 0]).unwrap(),
            vec![1, 2, 3, 4, 5, 6, 7, 8]
        );
        let nv12 = Layout {
            format: CaptureFormat::Nv12,
            width: 2,
            height: 2,
            stride: 2,
        };
        assert_eq!(
            nv12.pack(&[1, 2, 3, 4, 5, 6, 0]).unwrap(),
            vec![1, 2, 3, 4, 5, 6]
        );
        assert!(layout.pack(&[1, 2, 3]).is_err());
        let mjpeg = Layout {
            format: CaptureFormat::Mjpeg,
            ..layout
        };
        assert_eq!(mjpeg.pack(&[0xff, 0xd8]).unwrap(), vec![0xff, 0xd8]);
    }

    #[test]
    fn format_names_and_settings_are_checked() {
        assert_eq!(CaptureFormat::from_name("Y16"), Some(CaptureFormat::Y16));
        assert_eq!(CaptureFormat::from_name("RGB3"), None);
        let mut config = V4l2Config::new("/dev/video0", CaptureFormat::Yuyv, 320, 180, 30.0);
        config.buffers = 1;
        assert_eq!(
            config.validate().unwrap_err(),
            "buffers 1: at least 2 are needed"
        );
    }

    /// An MJPEG picture (made here with libavcodec's encoder) decodes to packed yuv420p.
    #[test]
    fn mjpeg_frames_decode_to_packed_yuv420p() {
        crate::recording::media::ensure_init();
        let codec = ffmpeg::encoder::find(ffmpeg::codec::Id::MJPEG).expect("mjpeg encoder");
        let mut video = ffmpeg::codec::context::Context::new_with_codec(codec)
            .encoder()
            .video()
            .unwrap();
        video.set_width(32);
        video.set_height(16);
        video.set_format(ffmpeg::format::Pixel::YUVJ422P);
        video.set_time_base(ffmpeg::Rational(1, 25));
        let mut encoder = video.open().unwrap();
        let mut picture = ffmpeg::frame::Video::new(ffmpeg::format::Pixel::YUVJ422P, 32, 16);
        for plane in 0..3 {
            picture
                .data_mut(plane)
                .fill(if plane == 0 { 200 } else { 128 });
        }
        picture.set_pts(Some(0));
        encoder.send_frame(&picture).unwrap();
        encoder.send_eof().unwrap();
        let mut jpeg = ffmpeg::Packet::empty();
        encoder.receive_packet(&mut jpeg).unwrap();

        let mut decoder = MjpegDecoder::new(32, 16).unwrap();
        let packed = decoder.decode(jpeg.data().unwrap()).unwrap();
        assert_eq!(packed.len(), 32 * 16 * 3 / 2);
        let luma = packed[..32 * 16].iter().map(|&v| i32::from(v)).sum::<i32>() / (32 * 16);
        // Full-range (JPEG) 200 is 16 + 200 * 219 / 255 = 188 in yuv420p's video range.
        assert!((luma - 188).abs() < 4, "mean luma {luma}");
        assert!(decoder.decode(&[0xff, 0xd8, 0x00]).is_err());
    }
}
