//! grabd benchmarks (issue 6): grabd side by side with the bare encoder, the ffmpeg CLI
//! segment pipeline and the disk, every figure a ratio measured in the same run.
//!
//! ```text
//! bash benches/run [--quick] [--only 1,2,3,4,5,6] [--workloads W1,W2,W3] [--reps N]
//! cargo bench --bench recorder -- [same flags]
//! ```
//!
//! Writes `target/bench/results.json` and `target/bench/results.md` and prints the
//! markdown table. Every measurement runs in a fresh child process (this binary again,
//! `--child TASK JSON`), so CPU time (getrusage) and RSS (/proc) belong to that one
//! measurement; frames are generated in the child before anything is measured, wrapped
//! in `Arc<[u8]>` once and cloned per push.
//!
//! Workloads: W1 the reference device (`grabd::config::DEFAULT_CONFIG`: rgb 1280x800@25
//! libx264 from rgb24, depth 640x400@25 FFV1 gray16le, IMU 100 Hz batched per frame);
//! W2 one 1920x1080@30 libx264 from yuyv422 + IMU; W3 three 1280x720@30 libx264 from
//! yuyv422 + IMU. Frames are the synthetic device's patterns plus a little sensor noise
//! (so the encoders and the disk see realistic bit rates), one second of distinct frames
//! per camera, cycled.

use std::collections::{BTreeMap, HashSet};
use std::fs;
use std::io::{Read, Write};
use std::os::raw::{c_int, c_long};
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::thread;
use std::time::{Duration, Instant};

use anyhow::{anyhow, bail, Context, Result};
use ffmpeg_next as ffmpeg;
use serde_json::{json, Value};

use grabd::capture::{SyntheticPattern, SyntheticVideo};
use grabd::config::Config;
use grabd::recording::encoder::StreamEncoder;
use grabd::recording::media::{
    open_input, read_packet, rescale, MuxerSettings, MICROS, TAG_CHUNK_START_US, TAG_ORIGIN_UNIX_US,
};
use grabd::recording::part::PartWriter;
use grabd::recording::{
    merge_recording_chunks, merge_stream_files, probe, DataStreamConfig, DataStreamEncoder, Frame,
    ReadMode, Recording, StreamConfig, StreamSender, VideoStreamConfig, VideoStreamEncoder,
    WriterOptions,
};
use grabd::sensors::{encode_batch, SyntheticImu};

const GRABD_BIN: &str = env!("CARGO_BIN_EXE_grabd");
const MB: f64 = 1e6;

// ---------------------------------------------------------------------------------------
// Process metrics: getrusage (CPU, children's peak RSS) and /proc (RSS over time).

#[repr(C)]
#[derive(Default)]
struct Timeval {
    sec: c_long,
    usec: c_long,
}

/// `struct rusage` of Linux/glibc: two timevals, then 14 longs starting with ru_maxrss.
#[repr(C)]
#[derive(Default)]
struct Rusage {
    utime: Timeval,
    stime: Timeval,
    maxrss_kb: c_long,
    other: [c_long; 13],
}

#[cfg(target_pointer_width = "64")]
const _: () = assert!(std::mem::size_of::<Rusage>() == 144);

extern "C" {
    fn getrusage(who: c_int, usage: *mut Rusage) -> c_int;
}

const RUSAGE_SELF: c_int = 0;
const RUSAGE_CHILDREN: c_int = -1;

#[derive(Debug, Clone, Copy, Default)]
struct Usage {
    user_s: f64,
    sys_s: f64,
    maxrss_mb: f64,
}

impl Usage {
    fn now(who: c_int) -> Usage {
        let mut r = Rusage::default();
        // SAFETY: `r` is a valid, writable `struct rusage` of the C layout (checked by
        // the size assertion above); getrusage only writes into it.
        let rc = unsafe { getrusage(who, &mut r) };
        if rc != 0 {
            return Usage::default();
        }
        let t = |tv: &Timeval| tv.sec as f64 + tv.usec as f64 / 1e6;
        Usage {
            user_s: t(&r.utime),
            sys_s: t(&r.stime),
            maxrss_mb: r.maxrss_kb as f64 * 1024.0 / MB,
        }
    }

    fn cpu_s(&self) -> f64 {
        self.user_s + self.sys_s
    }

    fn since(&self, earlier: &Usage) -> Value {
        json!({
            "cpu_s": self.cpu_s() - earlier.cpu_s(),
            "user_s": self.user_s - earlier.user_s,
            "sys_s": self.sys_s - earlier.sys_s,
        })
    }
}

/// A `/proc/<pid>/status` field in MB (`None`: this process).
fn proc_status_mb(pid: Option<u32>, key: &str) -> Option<f64> {
    let path = match pid {
        Some(p) => format!("/proc/{p}/status"),
        None => "/proc/self/status".to_owned(),
    };
    let text = fs::read_to_string(path).ok()?;
    text.lines().find_map(|line| {
        let kb: f64 = line
            .strip_prefix(key)?
            .trim()
            .strip_suffix("kB")?
            .trim()
            .parse()
            .ok()?;
        Some(kb * 1024.0 / MB)
    })
}

fn rss_mb(pid: Option<u32>) -> Option<f64> {
    proc_status_mb(pid, "VmRSS:")
}

/// Samples a process's RSS every `every` on its own thread.
struct Sampler {
    stop: Arc<AtomicBool>,
    handle: thread::JoinHandle<Vec<[f64; 2]>>,
}

impl Sampler {
    fn start(pid: Option<u32>, every: Duration) -> Sampler {
        let stop = Arc::new(AtomicBool::new(false));
        let flag = Arc::clone(&stop);
        let handle = thread::spawn(move || {
            let t0 = Instant::now();
            let mut samples = Vec::new();
            let mut next = t0;
            loop {
                let now = Instant::now();
                if now >= next {
                    if let Some(mb) = rss_mb(pid) {
                        samples.push([round3(now.duration_since(t0).as_secs_f64()), mb]);
                    }
                    next += every;
                }
                if flag.load(Ordering::Acquire) {
                    if let Some(mb) = rss_mb(pid) {
                        samples.push([round3(t0.elapsed().as_secs_f64()), mb]);
                    }
                    return samples;
                }
                thread::sleep(Duration::from_millis(20).min(every));
            }
        });
        Sampler { stop, handle }
    }

    fn finish(self) -> Vec<[f64; 2]> {
        self.stop.store(true, Ordering::Release);
        self.handle.join().unwrap_or_default()
    }
}

fn round3(x: f64) -> f64 {
    (x * 1000.0).round() / 1000.0
}

fn peak(samples: &[[f64; 2]]) -> f64 {
    samples.iter().map(|s| s[1]).fold(0.0, f64::max)
}

/// Least-squares slope of RSS (MB per minute) over the samples in `[from_s, to_s]`.
fn drift_mb_per_min(samples: &[[f64; 2]], from_s: f64, to_s: f64) -> Option<f64> {
    let pts: Vec<&[f64; 2]> = samples
        .iter()
        .filter(|s| s[0] >= from_s && s[0] <= to_s)
        .collect();
    if pts.len() < 3 {
        return None;
    }
    let n = pts.len() as f64;
    let mx = pts.iter().map(|s| s[0]).sum::<f64>() / n;
    let my = pts.iter().map(|s| s[1]).sum::<f64>() / n;
    let sxy: f64 = pts.iter().map(|s| (s[0] - mx) * (s[1] - my)).sum();
    let sxx: f64 = pts.iter().map(|s| (s[0] - mx).powi(2)).sum();
    (sxx > 0.0).then(|| sxy / sxx * 60.0)
}

fn sleep_until(t: Instant) {
    let now = Instant::now();
    if t > now {
        thread::sleep(t - now);
    }
}

// ---------------------------------------------------------------------------------------
// Workloads and their pre-generated frames.

#[derive(Clone)]
struct Workload {
    id: String,
    fps: f64,
    videos: Vec<(String, VideoStreamConfig)>,
    imu: Option<(String, DataStreamConfig)>,
}

fn h264(width: u32, height: u32, fps: f64, input: &str, bitrate: u64) -> Result<VideoStreamConfig> {
    Ok(VideoStreamConfig::new(width, height, fps)?
        .with_codec("libx264", input, "yuv420p")?
        .with_bitrate(bitrate)
        .with_option("preset", "superfast")
        .with_option("profile", "baseline")
        .with_option("bf", "0")
        .with_option("g", &format!("{}", fps.round() as u32))
        .with_option("tune", "zerolatency"))
}

fn workload(id: &str) -> Result<Workload> {
    let imu = Some(("imu".to_owned(), DataStreamConfig::default()));
    match id {
        "W1" | "tiny" => {
            // The reference device exactly as `grabd record` runs it.
            let config = Config::default_synthetic()?;
            let mut videos = Vec::new();
            let mut imu = None;
            for (name, stream) in config.stream_configs() {
                match stream {
                    StreamConfig::Video(v) => videos.push((name, v)),
                    StreamConfig::Data(d) => imu = Some((name, d)),
                }
            }
            if id == "tiny" {
                // The same streams at a quarter of the size each way: fast to encode, so
                // long recordings can be pushed faster than real time.
                for (_, v) in &mut videos {
                    v.width /= 4;
                    v.height /= 4;
                }
            }
            Ok(Workload {
                id: id.to_owned(),
                fps: 25.0,
                videos,
                imu,
            })
        }
        "W2" => Ok(Workload {
            id: id.to_owned(),
            fps: 30.0,
            videos: vec![(
                "cam".to_owned(),
                h264(1920, 1080, 30.0, "yuyv422", 8_000_000)?,
            )],
            imu,
        }),
        "W3" => Ok(Workload {
            id: id.to_owned(),
            fps: 30.0,
            videos: (0..3)
                .map(|i| {
                    Ok((
                        format!("cam{i}"),
                        h264(1280, 720, 30.0, "yuyv422", 4_000_000)?,
                    ))
                })
                .collect::<Result<_>>()?,
            imu,
        }),
        other => bail!("unknown workload {other:?}"),
    }
}

fn describe(w: &Workload) -> String {
    let mut parts: Vec<String> = Vec::new();
    for (name, v) in &w.videos {
        let rate = if v.bitrate > 0 {
            format!(" {} Mb/s", v.bitrate as f64 / 1e6)
        } else {
            String::new()
        };
        let text = format!(
            "{}x{}@{} {} from {}{rate}",
            v.width, v.height, v.fps, v.codec, v.input_pixel_format
        );
        let same = w.videos.iter().filter(|(_, o)| o == v).count();
        if same > 1 {
            let label = format!("{same} × {text}");
            if !parts.contains(&label) {
                parts.push(label);
            }
        } else {
            parts.push(format!("{name} {text}"));
        }
    }
    if let Some((name, _)) = &w.imu {
        parts.push(format!("{name} 100 Hz JSON batched per frame"));
    }
    parts.join(" + ")
}

impl Workload {
    fn streams(&self) -> Vec<(String, StreamConfig)> {
        let mut streams: Vec<(String, StreamConfig)> = self
            .videos
            .iter()
            .map(|(n, v)| (n.clone(), StreamConfig::Video(v.clone())))
            .collect();
        if let Some((n, d)) = &self.imu {
            streams.push((n.clone(), StreamConfig::Data(d.clone())));
        }
        streams
    }

    fn names(&self) -> Vec<String> {
        self.streams().into_iter().map(|(n, _)| n).collect()
    }
}

/// Media time of frame `i`, µs.
fn ts_us(i: usize, fps: f64) -> i64 {
    (i as f64 * 1e6 / fps).round() as i64
}

/// One camera's cycle of distinct frames.
type FrameSet = Arc<Vec<Arc<[u8]>>>;

/// Frames of every stream of a workload, generated before anything is measured.
struct Frames {
    /// Per video stream: its cycle of distinct frames (streams of the same format share
    /// one cycle at different offsets).
    video: Vec<FrameSet>,
    offsets: Vec<usize>,
    /// One JSON batch per frame.
    imu: Vec<Arc<[u8]>>,
}

impl Frames {
    fn generate(w: &Workload, n: usize) -> Result<Frames> {
        let cycle = (w.fps.round() as usize).max(1);
        let mut cache: BTreeMap<(u32, u32, String), FrameSet> = BTreeMap::new();
        let mut video = Vec::new();
        let mut offsets = Vec::new();
        for (_, v) in &w.videos {
            let key = (v.width, v.height, v.input_pixel_format.clone());
            let reused = cache.contains_key(&key);
            let set = match cache.get(&key) {
                Some(set) => Arc::clone(set),
                None => {
                    let pattern = SyntheticPattern::for_pixel_format(&v.input_pixel_format)
                        .ok_or_else(|| anyhow!("no pattern for {}", v.input_pixel_format))?;
                    let source = SyntheticVideo::new(pattern, v.width, v.height, v.fps);
                    let set: Vec<Arc<[u8]>> = (0..cycle)
                        .map(|k| {
                            let mut buf = source.render(k as u64);
                            add_noise(&mut buf, &v.input_pixel_format, k as u64 + 1);
                            Arc::from(buf)
                        })
                        .collect();
                    if set[0].len() != v.input_frame_size()? {
                        bail!("generated frame has the wrong size");
                    }
                    let set = Arc::new(set);
                    cache.insert(key, Arc::clone(&set));
                    set
                }
            };
            offsets.push(if reused {
                video.len() * cycle / w.videos.len()
            } else {
                0
            });
            video.push(set);
        }
        let mut imu = Vec::with_capacity(n);
        if w.imu.is_some() {
            let mut sensor = SyntheticImu::new(100.0);
            let mut next_sample = 0i64;
            for i in 0..n {
                let until = ts_us(i, w.fps);
                let mut batch = Vec::new();
                while next_sample * 10_000 <= until {
                    batch.push(sensor.sample_at(next_sample * 10_000));
                    next_sample += 1;
                }
                // Sample times start at 0, the recording's origin.
                imu.push(Arc::from(encode_batch(&batch, 0)));
            }
        }
        Ok(Frames {
            video,
            offsets,
            imu,
        })
    }

    /// Frame `i` of stream `s` (videos first, then the IMU), an `Arc` clone.
    fn data(&self, s: usize, i: usize) -> Arc<[u8]> {
        match self.video.get(s) {
            Some(set) => Arc::clone(&set[(i + self.offsets[s]) % set.len()]),
            None => Arc::clone(&self.imu[i]),
        }
    }
}

/// Sensor noise: ±3 levels on 8-bit samples, ±2 mm on depth.
fn add_noise(buf: &mut [u8], pixel_format: &str, seed: u64) {
    let mut s = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
    let mut next = move || {
        s ^= s << 13;
        s ^= s >> 7;
        s ^= s << 17;
        s
    };
    if pixel_format == "gray16le" {
        for px in buf.chunks_exact_mut(2) {
            let d = (next() % 5) as i32 - 2;
            let v = u16::from_le_bytes([px[0], px[1]]) as i32 + d;
            px.copy_from_slice(&(v.clamp(0, 65535) as u16).to_le_bytes());
        }
    } else {
        for chunk in buf.chunks_mut(8) {
            let r = next();
            for (j, b) in chunk.iter_mut().enumerate() {
                let d = ((r >> (j * 8)) & 0xff) as i16 % 7 - 3;
                *b = (*b as i16 + d).clamp(0, 255) as u8;
            }
        }
    }
}

// ---------------------------------------------------------------------------------------
// Child tasks. Each gets a JSON object of parameters and returns a JSON result.

fn p_str<'a>(p: &'a Value, k: &str) -> Result<&'a str> {
    p[k].as_str()
        .ok_or_else(|| anyhow!("parameter {k} missing"))
}
fn p_f64(p: &Value, k: &str) -> Result<f64> {
    p[k].as_f64()
        .ok_or_else(|| anyhow!("parameter {k} missing"))
}
fn p_usize(p: &Value, k: &str) -> Result<usize> {
    p[k].as_u64()
        .map(|v| v as usize)
        .ok_or_else(|| anyhow!("parameter {k} missing"))
}

fn run_task(task: &str, p: &Value) -> Result<Value> {
    match task {
        "bare" => task_bare(p),
        "grabd" => task_grabd(p),
        "ffmpeg" => task_ffmpeg(p),
        "latency" => task_latency(p),
        "merge" => task_merge(p),
        "fsync" => task_fsync(p),
        other => bail!("unknown task {other}"),
    }
}

type EncodeResult = Result<(f64, u64, u64)>;

/// The bare encoders: `VideoStreamEncoder`/`DataStreamEncoder` on the same frames, one
/// thread per stream, no queue, muxer, rotation or file.
fn task_bare(p: &Value) -> Result<Value> {
    let w = workload(p_str(p, "workload")?)?;
    let n = p_usize(p, "frames")?;
    let paced = p["paced"].as_bool().unwrap_or(false);
    let frames = Arc::new(Frames::generate(&w, n)?);
    let base_rss = rss_mb(None).unwrap_or(0.0);
    let u0 = Usage::now(RUSAGE_SELF);
    let sampler = Sampler::start(None, Duration::from_secs_f64(p_f64(p, "sample_s")?));
    // Paced threads start on a common tick a little ahead; unpaced ones at once (the
    // clock must not start after they do).
    let t0 = Instant::now() + Duration::from_millis(if paced { 20 } else { 0 });
    let mut handles: Vec<thread::JoinHandle<EncodeResult>> = Vec::new();
    for (s, (name, cfg)) in w.videos.iter().enumerate() {
        let (frames, cfg, fps) = (Arc::clone(&frames), cfg.clone(), w.fps);
        handles.push(
            thread::Builder::new()
                .name(format!("bare-{name}"))
                .spawn(move || {
                    let mut encoder = VideoStreamEncoder::new(&cfg)?;
                    let (mut bytes, mut packets) = (0u64, 0u64);
                    for i in 0..n {
                        let pts = ts_us(i, fps);
                        if paced {
                            sleep_until(t0 + Duration::from_micros(pts as u64));
                        }
                        for pkt in encoder.encode(&frames.data(s, i), pts, false)? {
                            bytes += pkt.size() as u64;
                            packets += 1;
                        }
                    }
                    for pkt in encoder.flush()? {
                        bytes += pkt.size() as u64;
                        packets += 1;
                    }
                    Ok((t0.elapsed().as_secs_f64(), bytes, packets))
                })?,
        );
    }
    if let Some((name, cfg)) = &w.imu {
        let (frames, cfg, fps, s) = (Arc::clone(&frames), cfg.clone(), w.fps, w.videos.len());
        handles.push(
            thread::Builder::new()
                .name(format!("bare-{name}"))
                .spawn(move || {
                    let mut encoder = DataStreamEncoder::new(&cfg)?;
                    let (mut bytes, mut packets) = (0u64, 0u64);
                    for i in 0..n {
                        let pts = ts_us(i, fps);
                        if paced {
                            sleep_until(t0 + Duration::from_micros(pts as u64));
                        }
                        for pkt in encoder.encode(&frames.data(s, i), pts, false)? {
                            bytes += pkt.size() as u64;
                            packets += 1;
                        }
                    }
                    Ok((t0.elapsed().as_secs_f64(), bytes, packets))
                })?,
        );
    }
    let mut streams = Vec::new();
    let mut wall = 0.0f64;
    for (handle, name) in handles.into_iter().zip(w.names()) {
        let (t, bytes, packets) = handle
            .join()
            .map_err(|_| anyhow!("encoder thread panicked"))??;
        wall = wall.max(t);
        streams.push(json!({"name": name, "seconds": t, "bytes": bytes, "packets": packets}));
    }
    let u1 = Usage::now(RUSAGE_SELF);
    let samples = sampler.finish();
    let media_s = ts_us(n, w.fps) as f64 / 1e6;
    Ok(json!({
        "frames": n,
        "media_s": media_s,
        "wall_s": wall,
        "fps": n as f64 / wall,
        "cpu": u1.since(&u0),
        "cpu_per_media_s": (u1.cpu_s() - u0.cpu_s()) / media_s,
        "base_rss_mb": base_rss,
        "peak_rss_mb": peak(&samples),
        "added_rss_mb": peak(&samples) - base_rss,
        "rss": samples,
        "streams": streams,
    }))
}

/// What the producer did.
struct Fed {
    accepted: Vec<u64>,
    rejected: Vec<u64>,
    waits: u64,
}

/// Push `n` frames of every stream, frame by frame across streams as cameras would.
/// Paced: each frame at its timestamp, a full queue is a drop. Unpaced: as fast as the
/// queues take them (a full queue is waited out, so nothing is dropped).
fn feed(
    senders: &[StreamSender],
    frames: &Frames,
    n: usize,
    fps: f64,
    base_ts: i64,
    pace_from: Option<Instant>,
    queue_size: usize,
) -> Fed {
    let mut fed = Fed {
        accepted: vec![0; senders.len()],
        rejected: vec![0; senders.len()],
        waits: 0,
    };
    for i in 0..n {
        let media = ts_us(i, fps);
        if let Some(t0) = pace_from {
            sleep_until(t0 + Duration::from_micros(media as u64));
        }
        for (s, sender) in senders.iter().enumerate() {
            let frame = Frame {
                timestamp_us: base_ts + media,
                data: frames.data(s, i),
            };
            let accepted = if pace_from.is_some() {
                sender.push(frame)
            } else {
                let give_up = Instant::now() + Duration::from_secs(60);
                loop {
                    if sender.queued() < queue_size && sender.push(frame.clone()) {
                        break true;
                    }
                    if Instant::now() > give_up {
                        break false;
                    }
                    // A full queue holds 200 frames (over a second of encoding): a
                    // 10 ms nap cannot starve it, and a camera does not spin either
                    // (a 1 ms nap cost the encoders about 1 % in context switches).
                    fed.waits += 1;
                    thread::sleep(Duration::from_millis(10));
                }
            };
            if accepted {
                fed.accepted[s] += 1;
            } else {
                fed.rejected[s] += 1;
            }
        }
    }
    fed
}

fn wait_encoded(rec: &Recording, want: &[u64], timeout: Duration) -> Result<()> {
    let deadline = Instant::now() + timeout;
    loop {
        let stats = rec.writer().stats();
        if stats.iter().any(|s| s.failed) {
            bail!("a stream failed: {stats:?}");
        }
        if stats.iter().zip(want).all(|(s, &w)| s.frames_encoded >= w) {
            return Ok(());
        }
        if Instant::now() > deadline {
            bail!("frames not encoded in time: {stats:?}");
        }
        thread::sleep(Duration::from_millis(5));
    }
}

fn writer_options(chunk_s: f64, paced: bool) -> WriterOptions {
    let mut options = WriterOptions {
        chunk_length: Duration::from_millis((chunk_s * 1000.0).round() as u64),
        ..WriterOptions::default()
    };
    if !paced {
        // The rotation grace is a wall-clock deadline for silent streams. Fed faster than
        // real time, the cheap IMU stream runs a queue's length (8 s of media) ahead of
        // the cameras, which could trip it; real time it never does.
        options.rotation_grace = Duration::from_secs(600);
    }
    options
}

/// grabd itself: `Recording` (chunked writer, finalizer growing the final file, stop
/// with manifest), fed by one producer thread.
fn task_grabd(p: &Value) -> Result<Value> {
    let w = workload(p_str(p, "workload")?)?;
    let n = p_usize(p, "frames")?;
    let chunk_s = p_f64(p, "chunk_s")?;
    let paced = p["paced"].as_bool().unwrap_or(false);
    let scratch = PathBuf::from(p_str(p, "scratch")?);
    let frames = Arc::new(Frames::generate(&w, n)?);
    let options = writer_options(chunk_s, paced);
    let queue_size = options.max_encoder_queue_size;
    let names = w.names();

    let base_rss = rss_mb(None).unwrap_or(0.0);
    let u0 = Usage::now(RUSAGE_SELF);
    let sampler = Sampler::start(None, Duration::from_secs_f64(p_f64(p, "sample_s")?));
    let t0 = Instant::now();
    let rec = Recording::start(
        &scratch.join("spool"),
        &scratch.join("out"),
        w.streams(),
        options,
    )?;
    let start_s = t0.elapsed().as_secs_f64();
    let senders: Vec<StreamSender> = names
        .iter()
        .map(|name| {
            rec.sender(name)
                .ok_or_else(|| anyhow!("no sender for {name}"))
        })
        .collect::<Result<_>>()?;
    let base_ts = grabd::clock::monotonic_us();
    let fps = w.fps;
    let pace_from = paced.then(|| t0 + Duration::from_millis(20));
    let producer = {
        let frames = Arc::clone(&frames);
        thread::Builder::new()
            .name("producer".into())
            .spawn(move || feed(&senders, &frames, n, fps, base_ts, pace_from, queue_size))?
    };
    let mut encoded_s = None;
    if !paced {
        wait_encoded(
            &rec,
            &vec![n as u64; names.len()],
            Duration::from_secs(1200),
        )?;
        encoded_s = Some(t0.elapsed().as_secs_f64());
    }
    let fed = producer.join().map_err(|_| anyhow!("producer panicked"))?;
    let t_stop = Instant::now();
    let stopped = rec.stop()?;
    let stop_s = t_stop.elapsed().as_secs_f64();
    let wall = t0.elapsed().as_secs_f64();
    let u1 = Usage::now(RUSAGE_SELF);
    let samples = sampler.finish();
    let finished = stopped.finished.ok_or_else(|| anyhow!("no final file"))?;
    let file_bytes = fs::metadata(&finished.mkv)?.len();
    let readback = read_back(
        &finished.mkv,
        &names,
        &fed.accepted,
        (chunk_s * 1e6).round() as i64,
    )?;
    let media_s = ts_us(n, w.fps) as f64 / 1e6;
    let result = json!({
        "frames": n,
        "media_s": media_s,
        "chunk_s": chunk_s,
        "chunks": stopped.chunks,
        "wall_s": wall,
        "encoded_s": encoded_s,
        "fps_encoded": encoded_s.map(|t| n as f64 / t),
        "fps_end_to_end": n as f64 / wall,
        "start_s": start_s,
        "stop_s": stop_s,
        "cpu": u1.since(&u0),
        "cpu_per_media_s": (u1.cpu_s() - u0.cpu_s()) / media_s,
        "base_rss_mb": base_rss,
        "peak_rss_mb": peak(&samples),
        "added_rss_mb": peak(&samples) - base_rss,
        "rss": samples,
        "pushed": fed.accepted,
        "rejected": fed.rejected,
        "producer_waits": fed.waits,
        "dropped_by_writer": stopped.stats.iter().map(|s| s.dropped_late).collect::<Vec<_>>(),
        "errors": stopped.errors,
        "file_mb": file_bytes as f64 / MB,
        "readback": readback,
    });
    fs::remove_dir_all(&scratch).ok();
    Ok(result)
}

/// Read a final file back (`probe::inspect`): frames lost per stream, and per chunk the
/// spread of the streams' first PTS and whether every video track starts with a keyframe.
fn read_back(mkv: &Path, names: &[String], pushed: &[u64], chunk_us: i64) -> Result<Value> {
    let mut pts: Vec<Vec<i64>> = Vec::new();
    let summary = probe::inspect(mkv, false, Some(&mut pts))?;
    let mut lost = Vec::new();
    for (name, &sent) in names.iter().zip(pushed) {
        let read = summary.track(name).map_or(0, |t| t.packets);
        lost.push(json!({"stream": name, "pushed": sent, "read_back": read, "lost": sent as i64 - read as i64}));
    }
    let last = pts.iter().flatten().copied().max().unwrap_or(0);
    let chunks = last / chunk_us + 1;
    let mut skews = Vec::new();
    for k in 0..chunks {
        let (lo, hi) = (k * chunk_us, (k + 1) * chunk_us);
        let firsts: Vec<i64> = pts
            .iter()
            .filter_map(|track| track.iter().copied().filter(|&t| t >= lo && t < hi).min())
            .map(|t| t - lo)
            .collect();
        let spread = match (firsts.iter().max(), firsts.iter().min()) {
            (Some(a), Some(b)) => a - b,
            _ => 0,
        };
        skews.push(spread);
    }
    let (key_checked, key_missing) = chunk_start_keyframes(mkv, chunk_us)?;
    Ok(json!({
        "tracks": summary.tracks.iter().map(|t| json!({"name": t.name, "packets": t.packets, "first_pts_us": t.first_pts_us, "last_pts_us": t.last_pts_us})).collect::<Vec<_>>(),
        "lost": lost,
        "total_lost": lost.iter().map(|l| l["lost"].as_i64().unwrap_or(0).abs()).sum::<i64>(),
        "chunk_first_pts_skew_us": skews,
        "worst_skew_us": skews.iter().copied().max().unwrap_or(0),
        "chunk_starts_checked": key_checked,
        "chunk_starts_without_keyframe": key_missing,
        "truncated": summary.truncated,
    }))
}

/// For every video track and chunk, whether the chunk's first packet is a keyframe.
fn chunk_start_keyframes(mkv: &Path, chunk_us: i64) -> Result<(u64, u64)> {
    let mut input = open_input(mkv)?;
    let tracks: Vec<(ffmpeg::Rational, bool)> = input
        .streams()
        .map(|s| {
            (
                s.time_base(),
                s.parameters().medium() == ffmpeg::media::Type::Video,
            )
        })
        .collect();
    let mut seen = HashSet::new();
    let (mut checked, mut missing) = (0u64, 0u64);
    while let Some(packet) = read_packet(&mut input, mkv, false)? {
        let Some(&(tb, true)) = tracks.get(packet.stream()) else {
            continue;
        };
        let us = rescale(packet.pts().or(packet.dts()).unwrap_or(0), tb, MICROS);
        if seen.insert((packet.stream(), us / chunk_us)) {
            checked += 1;
            if !packet.is_key() {
                missing += 1;
            }
        }
    }
    Ok((checked, missing))
}

fn srt_time(us: i64) -> String {
    let ms = us / 1000;
    format!(
        "{:02}:{:02}:{:02},{:03}",
        ms / 3_600_000,
        ms / 60_000 % 60,
        ms / 1000 % 60,
        ms % 1000
    )
}

/// `-k:v:j v` for each codec option of output video stream `j`, as a user would write.
fn ffmpeg_video_args(j: usize, v: &VideoStreamConfig) -> Vec<String> {
    let mut args = vec![format!("-c:v:{j}"), v.codec.clone()];
    for (k, val) in &v.stream_options {
        args.push(format!("-{k}:v:{j}"));
        args.push(val.clone());
    }
    if v.bitrate > 0 {
        args.push(format!("-b:v:{j}"));
        args.push(v.bitrate.to_string());
    }
    args.push(format!("-pix_fmt:v:{j}"));
    args.push(v.output_pixel_format.clone());
    args
}

fn run_cmd(cmd: &mut Command, what: &str) -> Result<()> {
    let out = cmd
        .stdin(Stdio::null())
        .output()
        .with_context(|| format!("run {what}"))?;
    if !out.status.success() {
        let err = String::from_utf8_lossy(&out.stderr);
        bail!("{what} failed ({}): {}", out.status, err.trim());
    }
    Ok(())
}

/// The ffmpeg CLI pipeline a user would write: rawvideo from one FIFO per camera (fed by
/// this process), IMU batches as a subtitle file, `-f segment` into Matroska segments
/// with an ffconcat list, then `-f concat -c copy` and a `sync` of the final file.
fn task_ffmpeg(p: &Value) -> Result<Value> {
    let w = workload(p_str(p, "workload")?)?;
    let n = p_usize(p, "frames")?;
    let seg_s = p_f64(p, "chunk_s")?;
    let paced = p["paced"].as_bool().unwrap_or(false);
    let scratch = PathBuf::from(p_str(p, "scratch")?);
    fs::create_dir_all(&scratch)?;
    let frames = Arc::new(Frames::generate(&w, n)?);

    let mut args: Vec<String> = ["-hide_banner", "-nostdin", "-loglevel", "error", "-y"]
        .map(String::from)
        .to_vec();
    let mut fifos = Vec::new();
    for (j, (_, v)) in w.videos.iter().enumerate() {
        let fifo = scratch.join(format!("in{j}.fifo"));
        run_cmd(Command::new("mkfifo").arg(&fifo), "mkfifo")?;
        args.extend([
            "-f".into(),
            "rawvideo".into(),
            "-pixel_format".into(),
            v.input_pixel_format.clone(),
            "-video_size".into(),
            format!("{}x{}", v.width, v.height),
            "-framerate".into(),
            format!("{}", v.fps),
            "-i".into(),
            fifo.display().to_string(),
        ]);
        fifos.push(fifo);
    }
    if w.imu.is_some() {
        let srt = scratch.join("imu.srt");
        let mut text = String::new();
        for (i, batch) in frames.imu.iter().enumerate() {
            text.push_str(&format!(
                "{}\n{} --> {}\n{}\n\n",
                i + 1,
                srt_time(ts_us(i, w.fps)),
                srt_time(ts_us(i + 1, w.fps)),
                String::from_utf8_lossy(batch)
            ));
        }
        fs::write(&srt, text)?;
        args.extend(["-i".into(), srt.display().to_string()]);
    }
    for j in 0..w.videos.len() {
        args.extend(["-map".into(), format!("{j}:v")]);
    }
    if w.imu.is_some() {
        args.extend(["-map".into(), format!("{}:s", w.videos.len())]);
    }
    for (j, (_, v)) in w.videos.iter().enumerate() {
        args.extend(ffmpeg_video_args(j, v));
    }
    if w.imu.is_some() {
        args.extend(["-c:s".into(), "copy".into()]);
    }
    let list = scratch.join("list.ffconcat");
    args.extend([
        "-sws_flags".into(),
        "bilinear".into(),
        "-f".into(),
        "segment".into(),
        "-segment_format".into(),
        "matroska".into(),
        "-segment_time".into(),
        format!("{seg_s}"),
        "-reset_timestamps".into(),
        "1".into(),
        "-segment_list".into(),
        list.display().to_string(),
        "-segment_list_type".into(),
        "ffconcat".into(),
        scratch.join("seg%05d.mkv").display().to_string(),
    ]);

    let base_rss = rss_mb(None).unwrap_or(0.0);
    let u0 = Usage::now(RUSAGE_SELF);
    let c0 = Usage::now(RUSAGE_CHILDREN);
    let t0 = Instant::now();
    let log = fs::File::create(scratch.join("ffmpeg.log"))?;
    let mut child = Command::new("ffmpeg")
        .args(&args)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(log)
        .spawn()
        .context("run ffmpeg")?;
    let sampler = Sampler::start(
        Some(child.id()),
        Duration::from_secs_f64(p_f64(p, "sample_s")?),
    );
    let pace_from = paced.then(|| t0 + Duration::from_millis(20));
    let mut feeders = Vec::new();
    for (j, fifo) in fifos.iter().enumerate() {
        let (frames, fifo, fps) = (Arc::clone(&frames), fifo.clone(), w.fps);
        feeders.push(thread::spawn(move || -> Result<()> {
            let mut out = fs::OpenOptions::new().write(true).open(&fifo)?;
            for i in 0..n {
                if let Some(t0) = pace_from {
                    sleep_until(t0 + Duration::from_micros(ts_us(i, fps) as u64));
                }
                out.write_all(&frames.data(j, i))?;
            }
            Ok(())
        }));
    }
    let status = child.wait()?;
    let seg_s_wall = t0.elapsed().as_secs_f64();
    let samples = sampler.finish();
    // If ffmpeg died early, a feeder may still block opening its FIFO: open the read end
    // once so it gets EPIPE instead.
    for fifo in &fifos {
        let _ = fs::OpenOptions::new()
            .read(true)
            .custom_flags(0o4000) // O_NONBLOCK
            .open(fifo);
    }
    let feeder_errors: Vec<String> = feeders
        .into_iter()
        .filter_map(|f| match f.join() {
            Ok(Ok(())) => None,
            Ok(Err(e)) => Some(e.to_string()),
            Err(_) => Some("feeder panicked".into()),
        })
        .collect();
    if !status.success() || !feeder_errors.is_empty() {
        let log = fs::read_to_string(scratch.join("ffmpeg.log")).unwrap_or_default();
        bail!("ffmpeg segment pipeline failed ({status}): {feeder_errors:?} {log}");
    }
    let c1 = Usage::now(RUSAGE_CHILDREN);
    let final_mkv = scratch.join("final.mkv");
    let t1 = Instant::now();
    run_cmd(
        Command::new("ffmpeg")
            .args(["-hide_banner", "-nostdin", "-loglevel", "error", "-y"])
            .args(["-f", "concat", "-safe", "0", "-i"])
            .arg(&list)
            .args(["-map", "0", "-c", "copy"])
            .arg(&final_mkv),
        "ffmpeg concat",
    )?;
    let concat_s = t1.elapsed().as_secs_f64();
    let c2 = Usage::now(RUSAGE_CHILDREN);
    let t2 = Instant::now();
    run_cmd(Command::new("sync").arg(&final_mkv), "sync")?;
    let sync_s = t2.elapsed().as_secs_f64();
    let wall = t0.elapsed().as_secs_f64();
    let c3 = Usage::now(RUSAGE_CHILDREN);
    let u1 = Usage::now(RUSAGE_SELF);
    let segments = fs::read_to_string(&list)?
        .lines()
        .filter(|l| l.starts_with("file "))
        .count();
    let mut names: Vec<String> = w.videos.iter().map(|(n, _)| n.clone()).collect();
    if w.imu.is_some() {
        names.push("imu".into());
    }
    let summary = probe::inspect(&final_mkv, false, None)?;
    let packets: Vec<u64> = summary.tracks.iter().map(|t| t.packets).collect();
    let media_s = ts_us(n, w.fps) as f64 / 1e6;
    let cpu_s = c3.cpu_s() - c0.cpu_s();
    let result = json!({
        "frames": n,
        "media_s": media_s,
        "segment_s": seg_s,
        "segments": segments,
        "wall_s": wall,
        "segment_wall_s": seg_s_wall,
        "concat_wall_s": concat_s,
        "sync_wall_s": sync_s,
        "fps_end_to_end": n as f64 / wall,
        "cpu": c3.since(&c0),
        "cpu_s": cpu_s,
        "segment_cpu_s": c1.cpu_s() - c0.cpu_s(),
        "concat_cpu_s": c2.cpu_s() - c1.cpu_s(),
        "cpu_per_media_s": cpu_s / media_s,
        "feeder_cpu_s": u1.cpu_s() - u0.cpu_s(),
        "feeder_base_rss_mb": base_rss,
        "peak_rss_mb": peak(&samples).max(c3.maxrss_mb),
        "sampled_peak_rss_mb": peak(&samples),
        "rss": samples,
        "file_mb": fs::metadata(&final_mkv)?.len() as f64 / MB,
        "packets": packets,
        "frames_lost": packets.iter().map(|&p| (n as i64 - p as i64).abs()).sum::<i64>(),
    });
    fs::remove_dir_all(&scratch).ok();
    Ok(result)
}

/// Wait until the finalizer has caught up: only the open chunk's parts remain, every
/// earlier chunk is merged, and the growing final file has stopped growing.
fn wait_finalizer_idle(
    spool_dir: &Path,
    final_tmp: &Path,
    streams: usize,
    merged_chunks: usize,
    timeout: Duration,
) -> Result<()> {
    let deadline = Instant::now() + timeout;
    let mut last_size = None;
    let mut stable_since = Instant::now();
    loop {
        let (mut parts, mut chunks) = (0, 0);
        for entry in fs::read_dir(spool_dir)? {
            let name = entry?.file_name().to_string_lossy().into_owned();
            if name.ends_with(".mkv.part") {
                parts += 1;
            } else if name.ends_with(".mkv") {
                chunks += 1;
            }
        }
        let size = fs::metadata(final_tmp).ok().map(|m| m.len());
        if size != last_size {
            last_size = size;
            stable_since = Instant::now();
        }
        if parts <= streams
            && chunks >= merged_chunks
            && stable_since.elapsed() >= Duration::from_millis(200)
        {
            return Ok(());
        }
        if Instant::now() > deadline {
            bail!("finalizer did not catch up ({parts} parts, {chunks} chunks)");
        }
        thread::sleep(Duration::from_millis(20));
    }
}

/// Stop-to-final-file latency of a recording of `chunks` chunks (small streams pushed
/// faster than real time, then the finalizer allowed to catch up, as it does in real
/// time): how long `Recording::stop` takes until the final MKV and manifest are durable.
fn task_latency(p: &Value) -> Result<Value> {
    let w = workload("tiny")?;
    let chunks = p_usize(p, "chunks")?;
    let chunk_s = p_f64(p, "chunk_s")?;
    let scratch = PathBuf::from(p_str(p, "scratch")?);
    let n = (chunks as f64 * chunk_s * w.fps).round() as usize;
    let frames = Frames::generate(&w, n)?;
    let options = writer_options(chunk_s, false);
    let queue_size = options.max_encoder_queue_size;
    // Warm up (libraries loaded, code paged in) with a 2-chunk recording, so that the
    // first stop of the process is not the one measured.
    {
        let warm = Recording::start(
            &scratch.join("warm-spool"),
            &scratch.join("warm-out"),
            w.streams(),
            options.clone(),
        )?;
        let senders: Vec<StreamSender> = w
            .names()
            .iter()
            .map(|name| {
                warm.sender(name)
                    .ok_or_else(|| anyhow!("no sender for {name}"))
            })
            .collect::<Result<_>>()?;
        let warm_n = (2.0 * chunk_s * w.fps).round() as usize;
        let fed = feed(&senders, &frames, warm_n.min(n), w.fps, 0, None, queue_size);
        wait_encoded(&warm, &fed.accepted, Duration::from_secs(120))?;
        warm.stop()?;
    }
    let out = scratch.join("out");
    let rec = Recording::start(&scratch.join("spool"), &out, w.streams(), options)?;
    let senders: Vec<StreamSender> = w
        .names()
        .iter()
        .map(|name| {
            rec.sender(name)
                .ok_or_else(|| anyhow!("no sender for {name}"))
        })
        .collect::<Result<_>>()?;
    let t0 = Instant::now();
    let fed = feed(
        &senders,
        &frames,
        n,
        w.fps,
        grabd::clock::monotonic_us(),
        None,
        queue_size,
    );
    wait_encoded(&rec, &fed.accepted, Duration::from_secs(600))?;
    let encoded_s = t0.elapsed().as_secs_f64();
    let spool_dir = rec.spool_dir().to_owned();
    let final_tmp = out.join(format!("{}.mkv.tmp", rec.id()));
    wait_finalizer_idle(
        &spool_dir,
        &final_tmp,
        senders.len(),
        chunks.saturating_sub(1),
        Duration::from_secs(600),
    )?;
    let idle_s = t0.elapsed().as_secs_f64() - encoded_s;
    // When the final MKV appears under its name, and then its manifest (each is
    // renamed into place once fsynced). `stop` returns after that, once the spool
    // folder (its chunks) is removed too.
    let final_mkv = out.join(format!("{}.mkv", rec.id()));
    let manifest = out.join(format!("{}.json", rec.id()));
    let watching = Arc::new(AtomicBool::new(true));
    let t_stop = Instant::now();
    let watcher = {
        let watching = Arc::clone(&watching);
        thread::spawn(move || {
            let mut seen = [None, None];
            while watching.load(Ordering::Acquire) && seen[1].is_none() {
                for (at, path) in seen.iter_mut().zip([&final_mkv, &manifest]) {
                    if at.is_none() && path.exists() {
                        *at = Some(t_stop.elapsed().as_secs_f64());
                    }
                }
                thread::sleep(Duration::from_micros(500));
            }
            seen
        })
    };
    let stopped = rec.stop()?;
    let stop_s = t_stop.elapsed().as_secs_f64();
    watching.store(false, Ordering::Release);
    let [final_visible_s, manifest_visible_s] = watcher.join().unwrap_or([None, None]);
    let finished = stopped.finished.ok_or_else(|| anyhow!("no final file"))?;
    // For comparison: what reading the whole final file back (packets, SHA-256) costs;
    // the manifest no longer does it at stop (the writer counts and hashes as it appends).
    let t = Instant::now();
    let summary = probe::inspect(&finished.mkv, false, None)?;
    let inspect_s = t.elapsed().as_secs_f64();
    let t = Instant::now();
    probe::sha256_file(&finished.mkv)?;
    let sha_s = t.elapsed().as_secs_f64();
    let result = json!({
        "chunks": chunks,
        "chunk_s": chunk_s,
        "chunks_rotated": stopped.chunks,
        "frames": n,
        "encoded_s": encoded_s,
        "finalizer_catch_up_s": idle_s,
        "stop_s": stop_s,
        "final_visible_s": final_visible_s,
        "manifest_visible_s": manifest_visible_s,
        "readback_inspect_s": inspect_s,
        "readback_sha256_s": sha_s,
        "final_mb": fs::metadata(&finished.mkv)?.len() as f64 / MB,
        "packets": summary.tracks.iter().map(|t| t.packets).sum::<u64>(),
    });
    fs::remove_dir_all(&scratch).ok();
    Ok(result)
}

fn dir_files(dir: &Path) -> Result<Vec<PathBuf>> {
    let mut files: Vec<PathBuf> = fs::read_dir(dir)?
        .map(|e| e.map(|e| e.path()))
        .collect::<std::io::Result<_>>()?;
    files.sort();
    Ok(files)
}

fn bytes_of(paths: &[PathBuf]) -> Result<u64> {
    paths
        .iter()
        .map(|p| Ok(fs::metadata(p)?.len()))
        .sum::<Result<u64>>()
}

/// `cp` the files into `dir` and `sync` the copies: the disk's physical limit for
/// writing the same bytes. Returns seconds.
fn cp_sync(files: &[PathBuf], dir: &Path) -> Result<f64> {
    fs::create_dir_all(dir)?;
    let t = Instant::now();
    run_cmd(Command::new("cp").args(files).arg(dir), "cp")?;
    let copies: Vec<PathBuf> = files
        .iter()
        .filter_map(|f| f.file_name().map(|n| dir.join(n)))
        .collect();
    run_cmd(Command::new("sync").args(&copies), "sync")?;
    let secs = t.elapsed().as_secs_f64();
    fs::remove_dir_all(dir)?;
    Ok(secs)
}

/// Merge (parts → chunk) and concat (chunks → recording) throughput on real files made
/// by grabd's own encoders and part writer, against `cp` + `sync` of the same bytes and
/// `ffmpeg -f concat -c copy` + `sync`.
fn task_merge(p: &Value) -> Result<Value> {
    let w = workload("W1")?;
    let chunks = p_usize(p, "chunks")?;
    let chunk_s = p_f64(p, "chunk_s")?;
    let reps = p_usize(p, "reps")?.max(1);
    let scratch = PathBuf::from(p_str(p, "scratch")?);
    let per_chunk = (chunk_s * w.fps).round() as usize;
    let frames = Frames::generate(&w, per_chunk * chunks)?;
    let (parts_dir, chunks_dir, out_dir) = (
        scratch.join("parts"),
        scratch.join("chunks"),
        scratch.join("out"),
    );
    for d in [&parts_dir, &chunks_dir, &out_dir] {
        fs::create_dir_all(d)?;
    }
    let streams = w.streams();
    let origin_unix = grabd::clock::unix_us().to_string();
    let mut chunk_parts: Vec<Vec<PathBuf>> = Vec::new();
    for k in 0..chunks {
        let start_us = ts_us(k * per_chunk, w.fps);
        let mut paths = Vec::new();
        for (s, (name, config)) in streams.iter().enumerate() {
            let (mut encoder, tags) = match config {
                StreamConfig::Video(v) => (
                    StreamEncoder::Video(Box::new(VideoStreamEncoder::new(v)?)),
                    v.metadata.clone(),
                ),
                StreamConfig::Data(d) => (
                    StreamEncoder::Data(DataStreamEncoder::new(d)?),
                    d.metadata.clone(),
                ),
            };
            let path = parts_dir.join(format!("{k:05}.{name}.mkv.part"));
            let mut part = PartWriter::new(
                path.clone(),
                name,
                &tags,
                vec![
                    (TAG_CHUNK_START_US.into(), start_us.to_string()),
                    (TAG_ORIGIN_UNIX_US.into(), origin_unix.clone()),
                ],
                MuxerSettings::default(),
                None,
            );
            for i in k * per_chunk..(k + 1) * per_chunk {
                let packets =
                    encoder.encode(&frames.data(s, i), ts_us(i, w.fps) - start_us, false)?;
                part.write(&encoder, packets, ts_us(i, w.fps))?;
            }
            let packets = encoder.flush()?;
            // No latency budget here: the capture time only matters to `end_cluster`.
            part.write(&encoder, packets, 0)?;
            part.close().1?;
            paths.push(path);
        }
        chunk_parts.push(paths);
    }
    // Parts are fresh in the page cache, as they are when the finalizer merges them.
    let (mut merge_s, mut merge_bytes, mut cp_s, mut cp_bytes) = (0.0, 0u64, 0.0, 0u64);
    for (k, parts) in chunk_parts.iter().enumerate() {
        let chunk = chunks_dir.join(format!("{k:05}.mkv"));
        let mut do_merge = || -> Result<()> {
            let t = Instant::now();
            merge_stream_files(parts, &chunk, ReadMode::Strict, MuxerSettings::default())?
                .summary
                .ok_or_else(|| anyhow!("empty merge"))?;
            merge_s += t.elapsed().as_secs_f64();
            merge_bytes += fs::metadata(&chunk)?.len();
            Ok(())
        };
        if k % 2 == 0 {
            do_merge()?;
            cp_s += cp_sync(parts, &out_dir.join("cp"))?;
        } else {
            cp_s += cp_sync(parts, &out_dir.join("cp"))?;
            do_merge()?;
        }
        cp_bytes += bytes_of(parts)?;
    }
    let chunk_files = dir_files(&chunks_dir)?;
    let chunk_bytes = bytes_of(&chunk_files)?;
    let list = out_dir.join("list.ffconcat");
    let mut list_text = String::from("ffconcat version 1.0\n");
    for f in &chunk_files {
        list_text.push_str(&format!("file '{}'\n", f.display()));
    }
    fs::write(&list, list_text)?;
    let mut concat = Vec::new();
    for rep in 0..reps {
        let mut row = BTreeMap::new();
        for step in 0..3 {
            match (rep + step) % 3 {
                0 => {
                    let dest = out_dir.join("grabd.mkv");
                    let t = Instant::now();
                    merge_recording_chunks(
                        &chunks_dir,
                        &dest,
                        &[],
                        &[],
                        &[],
                        MuxerSettings::default(),
                        ReadMode::Strict,
                    )?
                    .ok_or_else(|| anyhow!("no chunks"))?;
                    let secs = t.elapsed().as_secs_f64();
                    let bytes = fs::metadata(&dest)?.len();
                    fs::remove_file(&dest)?;
                    row.insert("grabd_mbps", bytes as f64 / MB / secs);
                    row.insert("grabd_bytes", bytes as f64);
                }
                1 => {
                    let secs = cp_sync(&chunk_files, &out_dir.join("cp"))?;
                    row.insert("cp_mbps", chunk_bytes as f64 / MB / secs);
                }
                _ => {
                    let dest = out_dir.join("ffmpeg.mkv");
                    let t = Instant::now();
                    run_cmd(
                        Command::new("ffmpeg")
                            .args(["-hide_banner", "-nostdin", "-loglevel", "error", "-y"])
                            .args(["-f", "concat", "-safe", "0", "-i"])
                            .arg(&list)
                            .args(["-map", "0", "-c", "copy"])
                            .arg(&dest),
                        "ffmpeg concat",
                    )?;
                    run_cmd(Command::new("sync").arg(&dest), "sync")?;
                    let secs = t.elapsed().as_secs_f64();
                    let bytes = fs::metadata(&dest)?.len();
                    fs::remove_file(&dest)?;
                    row.insert("ffmpeg_mbps", bytes as f64 / MB / secs);
                }
            }
        }
        concat.push(row);
    }
    let result = json!({
        "chunks": chunks,
        "chunk_s": chunk_s,
        "merge": {
            "bytes": merge_bytes,
            "seconds": merge_s,
            "grabd_mbps": merge_bytes as f64 / MB / merge_s,
            "cp_bytes": cp_bytes,
            "cp_seconds": cp_s,
            "cp_mbps": cp_bytes as f64 / MB / cp_s,
        },
        "concat": concat,
        "chunk_bytes": chunk_bytes,
    });
    fs::remove_dir_all(&scratch).ok();
    Ok(result)
}

/// A TOML config for `grabd record` with the workload's streams.
fn workload_toml(w: &Workload) -> String {
    let mut t = String::new();
    for (name, v) in &w.videos {
        let options: Vec<String> = v
            .stream_options
            .iter()
            .map(|(k, val)| format!("{k} = \"{val}\""))
            .collect();
        t.push_str(&format!(
            "[[stream]]\nname = \"{name}\"\nkind = \"video\"\nwidth = {}\nheight = {}\nfps = {}\ncodec = \"{}\"\nbitrate = {}\ninput_pixel_format = \"{}\"\noutput_pixel_format = \"{}\"\noptions = {{ {} }}\n\n",
            v.width, v.height, v.fps, v.codec, v.bitrate, v.input_pixel_format, v.output_pixel_format, options.join(", ")
        ));
    }
    if let Some((name, _)) = &w.imu {
        t.push_str(&format!(
            "[[stream]]\nname = \"{name}\"\nkind = \"data\"\nrate_hz = 100\nbatch_with = \"{}\"\n",
            w.videos[0].0
        ));
    }
    t
}

/// fsync/fdatasync calls of a real `grabd record` (synthetic sources, real time), counted
/// by `strace -f -c`.
fn task_fsync(p: &Value) -> Result<Value> {
    let w = workload(p_str(p, "workload")?)?;
    let secs = p_f64(p, "secs")?;
    let chunk_s = p_f64(p, "chunk_s")?;
    let scratch = PathBuf::from(p_str(p, "scratch")?);
    fs::create_dir_all(&scratch)?;
    let trace = scratch.join("strace.txt");
    let mut cmd = Command::new("strace");
    cmd.args([
        "-f",
        "-c",
        "--seccomp-bpf",
        "-e",
        "trace=fsync,fdatasync",
        "-o",
    ])
    .arg(&trace)
    .arg(GRABD_BIN)
    .arg("record");
    if w.id != "W1" {
        // W1 is the built-in device: no config file, exactly what `grabd record` does.
        let config = scratch.join("config.toml");
        fs::write(&config, workload_toml(&w))?;
        cmd.arg("--config").arg(config);
    }
    cmd.arg("--spool")
        .arg(scratch.join("spool"))
        .arg("--output")
        .arg(scratch.join("out"))
        .arg("--duration")
        .arg(secs.to_string())
        .arg("--chunk-length")
        .arg(chunk_s.to_string())
        .env("GRABD_LOG", "warn");
    let out = cmd.stdin(Stdio::null()).output().context("run strace")?;
    if !out.status.success() {
        bail!(
            "grabd record under strace failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    let stdout = String::from_utf8_lossy(&out.stdout);
    let mkv = PathBuf::from(
        stdout
            .lines()
            .last()
            .ok_or_else(|| anyhow!("grabd printed no path"))?
            .trim(),
    );
    let manifest: Value = serde_json::from_slice(&fs::read(mkv.with_extension("json"))?)?;
    let duration_s = manifest["duration_s"].as_f64().unwrap_or(secs);
    let mut calls = BTreeMap::new();
    for line in fs::read_to_string(&trace)?.lines() {
        let tokens: Vec<&str> = line.split_whitespace().collect();
        if let (Some(&name), true) = (tokens.last(), tokens.len() >= 5) {
            if name == "fsync" || name == "fdatasync" {
                calls.insert(name.to_owned(), tokens[3].parse::<u64>().unwrap_or(0));
            }
        }
    }
    let total: u64 = calls.values().sum();
    let dropped: u64 = manifest["streams"]
        .as_array()
        .map(|s| s.iter().filter_map(|s| s["frames_dropped"].as_u64()).sum())
        .unwrap_or(0);
    let result = json!({
        "secs": secs,
        "chunk_s": chunk_s,
        "recorded_s": duration_s,
        "calls": calls,
        "total": total,
        "per_recorded_minute": total as f64 * 60.0 / duration_s,
        "frames_dropped": dropped,
    });
    fs::remove_dir_all(&scratch).ok();
    Ok(result)
}

// ---------------------------------------------------------------------------------------
// The orchestrator: runs the children, computes the ratios, writes JSON and markdown.

struct Plan {
    quick: bool,
    reps: usize,
    figures: Vec<u32>,
    workloads: Vec<String>,
    tp_media_s: f64,
    tp_chunk_s: f64,
    rt_s: f64,
    rt_chunk_s: f64,
    rt_sample_s: f64,
    stress_chunks: usize,
    lat_chunks: Vec<usize>,
    lat_chunk_s: f64,
    lat_reps: usize,
    merge_chunks: usize,
    merge_chunk_s: f64,
    fsync_s: f64,
    fsync_chunk_s: f64,
}

impl Plan {
    fn new(quick: bool) -> Plan {
        if quick {
            Plan {
                quick,
                reps: 1,
                figures: vec![1, 2, 3, 4, 5, 6],
                workloads: vec!["W1".into(), "W2".into(), "W3".into()],
                tp_media_s: 4.0,
                tp_chunk_s: 2.0,
                rt_s: 6.0,
                rt_chunk_s: 2.0,
                rt_sample_s: 0.5,
                stress_chunks: 20,
                lat_chunks: vec![1, 5, 20, 60],
                lat_chunk_s: 1.0,
                lat_reps: 1,
                merge_chunks: 2,
                merge_chunk_s: 3.0,
                fsync_s: 6.0,
                fsync_chunk_s: 2.0,
            }
        } else {
            Plan {
                quick,
                reps: 5,
                figures: vec![1, 2, 3, 4, 5, 6],
                workloads: vec!["W1".into(), "W2".into(), "W3".into()],
                tp_media_s: 16.0,
                tp_chunk_s: 5.0,
                rt_s: 30.0,
                rt_chunk_s: 10.0,
                rt_sample_s: 1.0,
                stress_chunks: 150,
                lat_chunks: vec![1, 5, 20, 60],
                lat_chunk_s: 1.0,
                lat_reps: 3,
                merge_chunks: 3,
                merge_chunk_s: 12.0,
                fsync_s: 30.0,
                fsync_chunk_s: 10.0,
            }
        }
    }

    fn json(&self) -> Value {
        json!({
            "quick": self.quick, "reps": self.reps, "figures": self.figures,
            "workloads": self.workloads, "throughput_media_s": self.tp_media_s,
            "throughput_chunk_s": self.tp_chunk_s, "realtime_s": self.rt_s,
            "realtime_chunk_s": self.rt_chunk_s, "realtime_sample_s": self.rt_sample_s, "rss_stress_chunks": self.stress_chunks,
            "latency_chunks": self.lat_chunks, "latency_chunk_s": self.lat_chunk_s,
            "latency_reps": self.lat_reps, "merge_chunks": self.merge_chunks,
            "merge_chunk_s": self.merge_chunk_s, "fsync_s": self.fsync_s,
            "fsync_chunk_s": self.fsync_chunk_s,
        })
    }
}

struct Runner {
    scratch_root: PathBuf,
    counter: usize,
}

impl Runner {
    /// Run one task in a fresh child process; an error becomes `{"error": ...}`.
    fn run(&mut self, task: &str, mut params: Value, timeout: Duration) -> Value {
        self.counter += 1;
        let scratch =
            self.scratch_root
                .join(format!("{task}-{}-{}", std::process::id(), self.counter));
        params["scratch"] = json!(scratch.display().to_string());
        let label = format!("{task} {}", params_label(&params));
        eprintln!("bench: {label} ...");
        let t = Instant::now();
        let result = self.spawn(task, &params, timeout);
        let _ = fs::remove_dir_all(&scratch);
        match result {
            Ok(v) => {
                eprintln!("bench: {label} done in {:.1} s", t.elapsed().as_secs_f64());
                v
            }
            Err(e) => {
                eprintln!("bench: {label} FAILED: {e:#}");
                json!({"error": format!("{e:#}")})
            }
        }
    }

    fn spawn(&self, task: &str, params: &Value, timeout: Duration) -> Result<Value> {
        let exe = std::env::current_exe()?;
        let mut child = Command::new(exe)
            .arg("--child")
            .arg(task)
            .arg(params.to_string())
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()?;
        let mut stdout = child.stdout.take().ok_or_else(|| anyhow!("no stdout"))?;
        let reader = thread::spawn(move || {
            let mut s = String::new();
            let _ = stdout.read_to_string(&mut s);
            s
        });
        let deadline = Instant::now() + timeout;
        let status = loop {
            if let Some(status) = child.try_wait()? {
                break status;
            }
            if Instant::now() > deadline {
                let _ = child.kill();
                let _ = child.wait();
                bail!("timed out after {} s", timeout.as_secs());
            }
            thread::sleep(Duration::from_millis(50));
        };
        let out = reader.join().unwrap_or_default();
        let line = out
            .lines()
            .rev()
            .find_map(|l| l.strip_prefix("RESULT "))
            .ok_or_else(|| anyhow!("child exited with {status} and no result"))?;
        let value: Value = serde_json::from_str(line)?;
        if let Some(e) = value.get("error") {
            bail!("{}", e.as_str().unwrap_or("error"));
        }
        Ok(value)
    }
}

fn params_label(p: &Value) -> String {
    let mut parts = Vec::new();
    if let Some(obj) = p.as_object() {
        for (k, v) in obj {
            if k != "scratch" && k != "sample_s" {
                parts.push(format!("{k}={v}"));
            }
        }
    }
    parts.join(" ")
}

fn median(mut v: Vec<f64>) -> Option<f64> {
    v.retain(|x| x.is_finite());
    if v.is_empty() {
        return None;
    }
    v.sort_by(|a, b| a.total_cmp(b));
    let m = v.len() / 2;
    Some(if v.len() % 2 == 1 {
        v[m]
    } else {
        (v[m - 1] + v[m]) / 2.0
    })
}

fn spread(v: &[f64]) -> Value {
    let finite: Vec<f64> = v.iter().copied().filter(|x| x.is_finite()).collect();
    json!({
        "median": median(finite.clone()),
        "min": finite.iter().copied().reduce(f64::min),
        "max": finite.iter().copied().reduce(f64::max),
        "all": finite,
    })
}

fn num(v: &Value, path: &[&str]) -> Option<f64> {
    let mut cur = v;
    for k in path {
        cur = cur.get(k)?;
    }
    cur.as_f64()
}

/// Per-rep paired ratio `a/b` of two fields.
fn paired(reps: &[Value], a: (&str, &[&str]), b: (&str, &[&str])) -> Vec<f64> {
    reps.iter()
        .filter_map(|r| Some(num(&r[a.0], a.1)? / num(&r[b.0], b.1)?))
        .collect()
}

fn machine() -> Value {
    let cmd = |c: &str, args: &[&str]| {
        Command::new(c)
            .args(args)
            .output()
            .ok()
            .map(|o| String::from_utf8_lossy(&o.stdout).into_owned())
            .unwrap_or_default()
    };
    let lscpu: Vec<String> = cmd("lscpu", &[])
        .lines()
        .take(10)
        .map(|l| l.split_whitespace().collect::<Vec<_>>().join(" "))
        .collect();
    let model = lscpu
        .iter()
        .find_map(|l| l.strip_prefix("Model name: "))
        .unwrap_or("?")
        .to_owned();
    json!({
        "nproc": thread::available_parallelism().map(|n| n.get()).unwrap_or(0),
        "cpu_model": model,
        "lscpu_head": lscpu,
        "kernel": cmd("uname", &["-r"]).trim(),
        "ffmpeg": cmd("ffmpeg", &["-hide_banner", "-version"]).split_whitespace().take(3).collect::<Vec<_>>().join(" "),
        "mem_total_mb": proc_meminfo_mb("MemTotal:"),
    })
}

fn proc_meminfo_mb(key: &str) -> Option<f64> {
    let text = fs::read_to_string("/proc/meminfo").ok()?;
    text.lines().find_map(|l| {
        let kb: f64 = l
            .strip_prefix(key)?
            .trim()
            .strip_suffix("kB")?
            .trim()
            .parse()
            .ok()?;
        Some(kb * 1024.0 / MB)
    })
}

fn orchestrate(plan: &Plan, out_dir: &Path) -> Result<Value> {
    fs::create_dir_all(out_dir)?;
    let mut runner = Runner {
        scratch_root: out_dir.join("tmp"),
        counter: 0,
    };
    let started = Instant::now();
    let has = |f: u32| plan.figures.contains(&f);
    let mut results = json!({
        "mode": if plan.quick { "quick" } else { "full" },
        "started_unix_s": grabd::clock::unix_us() / 1_000_000,
        "machine": machine(),
        "plan": plan.json(),
        "workloads": {},
    });
    let fast_timeout = Duration::from_secs(if plan.quick { 300 } else { 900 });

    for wid in &plan.workloads {
        let w = workload(wid)?;
        let mut wres = json!({"description": describe(&w), "fps": w.fps});
        let n_tp = (plan.tp_media_s * w.fps).round() as usize;
        // Figures 1, 3 (as fast as possible) and 6 (read back of grabd's files).
        if has(1) || has(3) || has(6) {
            let mut reps = Vec::new();
            for rep in 0..plan.reps {
                let mut row = json!({});
                let kinds = ["bare", "grabd", "ffmpeg"];
                for step in 0..3 {
                    let kind = kinds[(rep + step) % 3];
                    if kind == "bare" && !has(1) || kind == "ffmpeg" && !has(3) {
                        continue;
                    }
                    let params = json!({"workload": wid, "frames": n_tp, "chunk_s": plan.tp_chunk_s, "paced": false, "sample_s": 1.0});
                    row[kind] = runner.run(kind, params, fast_timeout);
                }
                reps.push(row);
            }
            wres["fast"] = summarize_fast(&reps);
            wres["fast_reps"] = json!(reps);
        }
        // Figures 2 and 3 at real time.
        if has(2) || has(3) {
            let n_rt = (plan.rt_s * w.fps).round() as usize;
            let mut row = json!({});
            for kind in ["bare", "grabd", "ffmpeg"] {
                if kind == "ffmpeg" && !has(3) {
                    continue;
                }
                let params = json!({"workload": wid, "frames": n_rt, "chunk_s": plan.rt_chunk_s, "paced": true, "sample_s": plan.rt_sample_s});
                row[kind] = runner.run(
                    kind,
                    params,
                    Duration::from_secs_f64(plan.rt_s * 4.0 + 120.0),
                );
            }
            wres["realtime"] = summarize_realtime(&row, plan.rt_chunk_s);
            wres["realtime_runs"] = row;
        }
        if has(5) {
            let params =
                json!({"workload": wid, "secs": plan.fsync_s, "chunk_s": plan.fsync_chunk_s});
            wres["fsync"] = runner.run(
                "fsync",
                params,
                Duration::from_secs_f64(plan.fsync_s * 4.0 + 120.0),
            );
        }
        results["workloads"][wid] = wres;
    }
    if has(2) {
        // RSS across many rotations: W1 with 1 s chunks, fed as fast as it goes.
        let w = workload("W1")?;
        let frames = (plan.stress_chunks as f64 * w.fps).round() as usize;
        let params = json!({"workload": "W1", "frames": frames, "chunk_s": 1.0, "paced": false, "sample_s": 0.25});
        let r = runner.run("grabd", params, fast_timeout);
        results["rss_stress"] = summarize_stress(r);
    }
    if has(4) {
        let mut runs = BTreeMap::new();
        for rep in 0..plan.lat_reps {
            // Alternate the order so that drift on a noisy machine does not favour a size.
            let mut sizes = plan.lat_chunks.clone();
            if rep % 2 == 1 {
                sizes.reverse();
            }
            for &chunks in &sizes {
                let params = json!({"chunks": chunks, "chunk_s": plan.lat_chunk_s});
                let r = runner.run("latency", params, Duration::from_secs(900));
                runs.entry(chunks).or_insert_with(Vec::new).push(r);
            }
        }
        results["latency"] = summarize_latency(&runs);
    }
    if has(5) {
        let params =
            json!({"chunks": plan.merge_chunks, "chunk_s": plan.merge_chunk_s, "reps": plan.reps});
        let r = runner.run("merge", params, Duration::from_secs(900));
        results["merge"] = summarize_merge(r);
    }
    results["elapsed_s"] = json!(started.elapsed().as_secs_f64());
    let _ = fs::remove_dir_all(out_dir.join("tmp"));
    Ok(results)
}

fn summarize_fast(reps: &[Value]) -> Value {
    let col = |kind: &str, path: &[&str]| -> Vec<f64> {
        reps.iter().filter_map(|r| num(&r[kind], path)).collect()
    };
    let cpu_total = |r: &Value| -> Option<f64> {
        Some(num(&r["ffmpeg"], &["cpu_s"])? + num(&r["ffmpeg"], &["feeder_cpu_s"])?)
    };
    let grabd_cpu_vs_ffmpeg: Vec<f64> = reps
        .iter()
        .filter_map(|r| Some(num(&r["grabd"], &["cpu", "cpu_s"])? / num(&r["ffmpeg"], &["cpu_s"])?))
        .collect();
    let grabd_cpu_vs_ffmpeg_feeder: Vec<f64> = reps
        .iter()
        .filter_map(|r| Some(num(&r["grabd"], &["cpu", "cpu_s"])? / cpu_total(r)?))
        .collect();
    let rb = |path: &[&str]| -> Vec<f64> {
        reps.iter()
            .filter_map(|r| num(&r["grabd"]["readback"], path))
            .collect()
    };
    json!({
        "bare_fps": spread(&col("bare", &["fps"])),
        "grabd_fps_encoded": spread(&col("grabd", &["fps_encoded"])),
        "grabd_fps_end_to_end": spread(&col("grabd", &["fps_end_to_end"])),
        "grabd_over_bare": spread(&paired(reps, ("grabd", &["fps_encoded"]), ("bare", &["fps"]))),
        "grabd_e2e_over_bare": spread(&paired(reps, ("grabd", &["fps_end_to_end"]), ("bare", &["fps"]))),
        "grabd_wall_s": spread(&col("grabd", &["wall_s"])),
        "ffmpeg_wall_s": spread(&col("ffmpeg", &["wall_s"])),
        "grabd_wall_over_ffmpeg": spread(&paired(reps, ("grabd", &["wall_s"]), ("ffmpeg", &["wall_s"]))),
        "grabd_cpu_s": spread(&col("grabd", &["cpu", "cpu_s"])),
        "bare_cpu_s": spread(&col("bare", &["cpu", "cpu_s"])),
        "ffmpeg_cpu_s": spread(&col("ffmpeg", &["cpu_s"])),
        "ffmpeg_feeder_cpu_s": spread(&col("ffmpeg", &["feeder_cpu_s"])),
        "grabd_cpu_over_ffmpeg": spread(&grabd_cpu_vs_ffmpeg),
        "grabd_cpu_over_ffmpeg_with_feeder": spread(&grabd_cpu_vs_ffmpeg_feeder),
        "grabd_cpu_over_bare": spread(&paired(reps, ("grabd", &["cpu", "cpu_s"]), ("bare", &["cpu", "cpu_s"]))),
        "grabd_stop_s": spread(&col("grabd", &["stop_s"])),
        "grabd_file_mbps": spread(&reps.iter().filter_map(|r| Some(num(&r["grabd"], &["file_mb"])? / num(&r["grabd"], &["media_s"])?)).collect::<Vec<_>>()),
        "frames_lost": rb(&["total_lost"]).into_iter().fold(0.0, f64::max),
        "worst_skew_us": rb(&["worst_skew_us"]).into_iter().fold(0.0, f64::max),
        "chunk_starts_checked": rb(&["chunk_starts_checked"]).into_iter().sum::<f64>(),
        "chunk_starts_without_keyframe": rb(&["chunk_starts_without_keyframe"]).into_iter().sum::<f64>(),
        "ffmpeg_frames_lost": col("ffmpeg", &["frames_lost"]).into_iter().fold(0.0, f64::max),
        "errors": reps.iter().flat_map(|r| ["bare", "grabd", "ffmpeg"].into_iter().filter_map(move |k| r[k].get("error").cloned())).collect::<Vec<_>>(),
    })
}

fn summarize_realtime(row: &Value, chunk_s: f64) -> Value {
    let g = &row["grabd"];
    let b = &row["bare"];
    let f = &row["ffmpeg"];
    let ratio = |x: Option<f64>, y: Option<f64>| match (x, y) {
        (Some(x), Some(y)) if y > 0.0 => Some(x / y),
        _ => None,
    };
    let samples = |v: &Value| -> Vec<[f64; 2]> {
        v["rss"]
            .as_array()
            .map(|a| {
                a.iter()
                    .filter_map(|s| Some([s[0].as_f64()?, s[1].as_f64()?]))
                    .collect()
            })
            .unwrap_or_default()
    };
    // Steady state: once the first chunk has been rotated and merged (which allocates
    // the finalizer's buffers once), or from half the run, until recording ends (stop
    // frees memory, which is not drift).
    let media_s = num(g, &["media_s"]).unwrap_or(0.0);
    let warmup = (1.5 * chunk_s).min(media_s * 0.5);
    let end = media_s - 0.25;
    let dropped: f64 = g["rejected"]
        .as_array()
        .map(|a| a.iter().filter_map(Value::as_f64).sum())
        .unwrap_or(0.0);
    json!({
        "bare_cpu_per_s": num(b, &["cpu_per_media_s"]),
        "grabd_cpu_per_s": num(g, &["cpu_per_media_s"]),
        "ffmpeg_cpu_per_s": num(f, &["cpu_per_media_s"]),
        "ffmpeg_feeder_cpu_per_s": ratio(num(f, &["feeder_cpu_s"]), num(f, &["media_s"])),
        "grabd_cpu_over_bare": ratio(num(g, &["cpu_per_media_s"]), num(b, &["cpu_per_media_s"])),
        "grabd_cpu_over_ffmpeg": ratio(num(g, &["cpu_per_media_s"]), num(f, &["cpu_per_media_s"])),
        "bare_added_rss_mb": num(b, &["added_rss_mb"]),
        "grabd_added_rss_mb": num(g, &["added_rss_mb"]),
        "grabd_peak_rss_mb": num(g, &["peak_rss_mb"]),
        "ffmpeg_peak_rss_mb": num(f, &["peak_rss_mb"]),
        "grabd_added_over_ffmpeg_peak": ratio(num(g, &["added_rss_mb"]), num(f, &["peak_rss_mb"])),
        "writer_rss_mb": match (num(g, &["added_rss_mb"]), num(b, &["added_rss_mb"])) {
            (Some(x), Some(y)) => Some(x - y),
            _ => None,
        },
        "grabd_rss_drift_mb_per_min": drift_mb_per_min(&samples(g), warmup, end),
        "bare_rss_drift_mb_per_min": drift_mb_per_min(&samples(b), warmup, end),
        "ffmpeg_rss_drift_mb_per_min": drift_mb_per_min(&samples(f), warmup, end),
        "grabd_frames_dropped": dropped,
        "grabd_frames_lost": num(g, &["readback", "total_lost"]),
        "grabd_worst_skew_us": num(g, &["readback", "worst_skew_us"]),
        "grabd_stop_s": num(g, &["stop_s"]),
        "errors": (["bare", "grabd", "ffmpeg"].iter().filter_map(|k| row[*k].get("error").cloned()).collect::<Vec<_>>()),
    })
}

fn summarize_stress(r: Value) -> Value {
    if r.get("error").is_some() {
        return r;
    }
    let end = num(&r, &["encoded_s"]).unwrap_or(f64::MAX);
    let samples: Vec<[f64; 2]> = r["rss"]
        .as_array()
        .map(|a| {
            a.iter()
                .filter_map(|s| Some([s[0].as_f64()?, s[1].as_f64()?]))
                .filter(|s| s[0] <= end)
                .collect()
        })
        .unwrap_or_default();
    let max_in = |from: f64, to: f64| {
        samples
            .iter()
            .filter(|s| s[0] >= from && s[0] < to)
            .map(|s| s[1])
            .fold(f64::NAN, f64::max)
    };
    let chunks = num(&r, &["chunks"]).unwrap_or(0.0);
    let (first_half, last_quarter) = (max_in(0.0, end / 2.0), max_in(end * 0.75, f64::MAX));
    json!({
        "chunks": chunks,
        "encoded_s": end,
        "base_rss_mb": num(&r, &["base_rss_mb"]),
        "peak_first_half_mb": first_half,
        "peak_second_half_mb": max_in(end / 2.0, f64::MAX),
        "peak_last_quarter_mb": last_quarter,
        // Peaks rather than a fitted slope: a sample taken just after a large buffer
        // was unmapped dips, and a few dips tilt a least-squares line.
        "peak_growth_mb": last_quarter - first_half,
        "frames_lost": num(&r, &["readback", "total_lost"]),
        "samples": samples,
    })
}

fn summarize_latency(runs: &BTreeMap<usize, Vec<Value>>) -> Value {
    let mut by_size = serde_json::Map::new();
    for (chunks, rs) in runs {
        let col = |k: &str| -> Vec<f64> { rs.iter().filter_map(|r| num(r, &[k])).collect() };
        by_size.insert(
            chunks.to_string(),
            json!({
                "stop_s": spread(&col("stop_s")),
                "final_visible_s": spread(&col("final_visible_s")),
                "manifest_visible_s": spread(&col("manifest_visible_s")),
                "readback_inspect_s": spread(&col("readback_inspect_s")),
                "readback_sha256_s": spread(&col("readback_sha256_s")),
                "final_mb": spread(&col("final_mb")),
                "finalizer_catch_up_s": spread(&col("finalizer_catch_up_s")),
                "runs": rs,
            }),
        );
    }
    let (first, last) = (runs.keys().next(), runs.keys().last());
    // Median of `key` with the most chunks over that with the fewest.
    let growth_of = |key: &str| -> Option<f64> {
        let median = |k: &usize| num(&by_size.get(&k.to_string())?[key], &["median"]);
        match (first.and_then(median), last.and_then(median)) {
            (Some(a), Some(b)) if a > 0.0 => Some(b / a),
            _ => None,
        }
    };
    let growth = growth_of("stop_s");
    let growth_visible = growth_of("final_visible_s");
    let growth_manifest = growth_of("manifest_visible_s");
    json!({
        "by_chunks": by_size,
        "growth_factor": growth,
        "growth_factor_final_visible": growth_visible,
        "growth_factor_manifest_visible": growth_manifest,
        "growth_between": [first, last],
    })
}

fn summarize_merge(r: Value) -> Value {
    if r.get("error").is_some() {
        return r;
    }
    let concat = r["concat"].as_array().cloned().unwrap_or_default();
    let col = |k: &str| -> Vec<f64> { concat.iter().filter_map(|c| c[k].as_f64()).collect() };
    let paired_ratio = |a: &str, b: &str| -> Vec<f64> {
        concat
            .iter()
            .filter_map(|c| Some(c[a].as_f64()? / c[b].as_f64()?))
            .collect()
    };
    json!({
        "merge_mbps": num(&r, &["merge", "grabd_mbps"]),
        "merge_cp_mbps": num(&r, &["merge", "cp_mbps"]),
        "merge_over_cp": match (num(&r, &["merge", "grabd_mbps"]), num(&r, &["merge", "cp_mbps"])) {
            (Some(a), Some(b)) => Some(a / b),
            _ => None,
        },
        "concat_mbps": spread(&col("grabd_mbps")),
        "concat_cp_mbps": spread(&col("cp_mbps")),
        "concat_ffmpeg_mbps": spread(&col("ffmpeg_mbps")),
        "concat_over_cp": spread(&paired_ratio("grabd_mbps", "cp_mbps")),
        "concat_over_ffmpeg": spread(&paired_ratio("grabd_mbps", "ffmpeg_mbps")),
        "raw": r,
    })
}

// ---------------------------------------------------------------------------------------
// Markdown.

fn fmt(v: Option<f64>, digits: usize) -> String {
    match v {
        Some(x) if x.is_finite() => format!("{x:.digits$}"),
        _ => "–".into(),
    }
}

/// Two figures side by side, "a / b", with the same precision.
fn pair(a: Option<f64>, b: Option<f64>, digits: usize) -> String {
    format!("{} / {}", fmt(a, digits), fmt(b, digits))
}

fn med(v: &Value, path: &[&str]) -> Option<f64> {
    let mut p: Vec<&str> = path.to_vec();
    p.push("median");
    num(v, &p)
}

/// "median (min–max)" when there are several reps.
fn med_range(v: &Value, path: &[&str], digits: usize) -> String {
    let mut cur = v;
    for k in path {
        cur = &cur[*k];
    }
    let m = fmt(cur["median"].as_f64(), digits);
    match (
        cur["min"].as_f64(),
        cur["max"].as_f64(),
        cur["all"].as_array().map(Vec::len),
    ) {
        (Some(a), Some(b), Some(n)) if n > 1 => {
            format!("{m} ({}–{})", fmt(Some(a), digits), fmt(Some(b), digits))
        }
        _ => m,
    }
}

fn verdict(ok: Option<bool>) -> &'static str {
    match ok {
        Some(true) => " ✅",
        Some(false) => " ❌",
        None => "",
    }
}

fn markdown(results: &Value) -> String {
    let mut md = String::new();
    let m = &results["machine"];
    let plan = &results["plan"];
    md.push_str(&format!(
        "### grabd benchmarks ({} mode)\n\nMachine: {}, {} CPUs, {:.0} MB RAM, kernel {}, {}. Shared and noisy: compare the ratios (both sides measured in the same run), not absolute numbers.\n\n",
        results["mode"].as_str().unwrap_or("?"),
        m["cpu_model"].as_str().unwrap_or("?"),
        m["nproc"],
        m["mem_total_mb"].as_f64().unwrap_or(0.0),
        m["kernel"].as_str().unwrap_or("?"),
        m["ffmpeg"].as_str().unwrap_or("?"),
    ));
    let wids: Vec<String> = results["workloads"]
        .as_object()
        .map(|o| o.keys().cloned().collect())
        .unwrap_or_default();
    for wid in &wids {
        md.push_str(&format!(
            "- **{wid}**: {}\n",
            results["workloads"][wid]["description"]
                .as_str()
                .unwrap_or("")
        ));
    }
    md.push_str(&format!(
        "\nFast runs: {} s of media per run, {} s chunks, {} rep(s) (median, range in brackets). Real-time runs: {} s, {} s chunks.\n\n",
        plan["throughput_media_s"], plan["throughput_chunk_s"], plan["reps"], plan["realtime_s"], plan["realtime_chunk_s"]
    ));
    if results["mode"] == "quick" {
        md.push_str("Quick mode checks that everything runs: one rep of a few seconds with 2 s chunks (rotation costs weigh 5× more than in the full mode), so ✅/❌ here are not the claim; run the full mode for that.\n\n");
    }
    md.push_str("| # | Figure | ");
    md.push_str(&wids.join(" | "));
    md.push_str(" | Target |\n|---|---|");
    md.push_str(&"---|".repeat(wids.len()));
    md.push_str("---|\n");
    type Cell<'a> = Box<dyn Fn(&str, &Value) -> String + 'a>;
    let rows: Vec<(&str, &str, Cell, &str)> = vec![
        (
            "1",
            "bare encoder, frames/s per stream",
            Box::new(|_: &str, w: &Value| med_range(w, &["fast", "bare_fps"], 1)),
            "",
        ),
        (
            "1",
            "grabd until all encoded, frames/s",
            Box::new(|_: &str, w: &Value| med_range(w, &["fast", "grabd_fps_encoded"], 1)),
            "",
        ),
        (
            "1",
            "**grabd ÷ bare encoder (throughput)**",
            Box::new(|_: &str, w: &Value| {
                let r = med(w, &["fast", "grabd_over_bare"]);
                format!(
                    "{}{}",
                    med_range(w, &["fast", "grabd_over_bare"], 3),
                    verdict(r.map(|r| r >= 0.97))
                )
            }),
            "≥ 0.97 (overhead ≤ 3 %)",
        ),
        (
            "1",
            "grabd incl. stop + final file, frames/s (÷ bare)",
            Box::new(|_: &str, w: &Value| {
                format!(
                    "{} ({})",
                    med_range(w, &["fast", "grabd_fps_end_to_end"], 1),
                    fmt(med(w, &["fast", "grabd_e2e_over_bare"]), 3)
                )
            }),
            "",
        ),
        (
            "1",
            "CPU s, grabd ÷ bare (same frames)",
            Box::new(|_: &str, w: &Value| med_range(w, &["fast", "grabd_cpu_over_bare"], 3)),
            "",
        ),
        (
            "2",
            "CPU s per recorded s at real time: bare / grabd",
            Box::new(|_: &str, w: &Value| pair(num(w, &["realtime", "bare_cpu_per_s"]), num(w, &["realtime", "grabd_cpu_per_s"]), 3)),
            "",
        ),
        (
            "2",
            "**CPU per recorded s, grabd ÷ bare**",
            Box::new(|_: &str, w: &Value| fmt(num(w, &["realtime", "grabd_cpu_over_bare"]), 3)),
            "≈ 1",
        ),
        (
            "2",
            "RSS added over the frames, MB: bare / grabd",
            Box::new(|_: &str, w: &Value| pair(num(w, &["realtime", "bare_added_rss_mb"]), num(w, &["realtime", "grabd_added_rss_mb"]), 0)),
            "",
        ),
        (
            "2",
            "**writer RSS (grabd − bare), MB**",
            Box::new(|id: &str, w: &Value| {
                let v = num(w, &["realtime", "writer_rss_mb"]);
                let target = if id == "W1" { v.map(|v| v <= 64.0) } else { None };
                format!("{}{}", fmt(v, 1), verdict(target))
            }),
            "≤ 64 (W1)",
        ),
        (
            "2",
            "RSS slope at real time once the 1st chunk is merged, MB/min: bare / grabd (see rotations note below)",
            Box::new(|_: &str, w: &Value| pair(num(w, &["realtime", "bare_rss_drift_mb_per_min"]), num(w, &["realtime", "grabd_rss_drift_mb_per_min"]), 1)),
            "≈ 0 (flat)",
        ),
        (
            "2",
            "frames dropped at real time (grabd)",
            Box::new(|_: &str, w: &Value| fmt(num(w, &["realtime", "grabd_frames_dropped"]), 0)),
            "0",
        ),
        (
            "3",
            "wall to final file, fast, s: grabd / ffmpeg",
            Box::new(|_: &str, w: &Value| pair(med(w, &["fast", "grabd_wall_s"]), med(w, &["fast", "ffmpeg_wall_s"]), 2)),
            "",
        ),
        (
            "3",
            "**wall, grabd ÷ ffmpeg pipeline**",
            Box::new(|_: &str, w: &Value| {
                let r = med(w, &["fast", "grabd_wall_over_ffmpeg"]);
                format!(
                    "{}{}",
                    med_range(w, &["fast", "grabd_wall_over_ffmpeg"], 3),
                    verdict(r.map(|r| r <= 1.0))
                )
            }),
            "≤ 1",
        ),
        (
            "3",
            "CPU s, fast: grabd / ffmpeg (+ feeder)",
            Box::new(|_: &str, w: &Value| {
                format!(
                    "{} / {} (+{})",
                    fmt(med(w, &["fast", "grabd_cpu_s"]), 2),
                    fmt(med(w, &["fast", "ffmpeg_cpu_s"]), 2),
                    fmt(med(w, &["fast", "ffmpeg_feeder_cpu_s"]), 2)
                )
            }),
            "",
        ),
        (
            "3",
            "**CPU, grabd ÷ ffmpeg (fast)**",
            Box::new(|_: &str, w: &Value| {
                let r = med(w, &["fast", "grabd_cpu_over_ffmpeg"]);
                format!(
                    "{}{}",
                    med_range(w, &["fast", "grabd_cpu_over_ffmpeg"], 3),
                    verdict(r.map(|r| r < 1.0))
                )
            }),
            "< 1",
        ),
        (
            "3",
            "**CPU per recorded s at real time, grabd ÷ ffmpeg**",
            Box::new(|_: &str, w: &Value| {
                let r = num(w, &["realtime", "grabd_cpu_over_ffmpeg"]);
                format!("{}{}", fmt(r, 3), verdict(r.map(|r| r < 1.0)))
            }),
            "< 1",
        ),
        (
            "3",
            "peak RSS at real time, MB: grabd (excl. its input frames) / ffmpeg process (÷)",
            Box::new(|_: &str, w: &Value| {
                format!(
                    "{} / {} ({})",
                    fmt(num(w, &["realtime", "grabd_added_rss_mb"]), 0),
                    fmt(num(w, &["realtime", "ffmpeg_peak_rss_mb"]), 0),
                    fmt(num(w, &["realtime", "grabd_added_over_ffmpeg_peak"]), 2)
                )
            }),
            "",
        ),
        (
            "5",
            "fsync + fdatasync per recorded minute (`grabd record`)",
            Box::new(|_: &str, w: &Value| {
                let f = &w["fsync"];
                format!(
                    "{} ({} chunks of {} s)",
                    fmt(num(f, &["per_recorded_minute"]), 0),
                    fmt(
                        num(f, &["recorded_s"])
                            .zip(num(f, &["chunk_s"]))
                            .map(|(a, b)| (a / b).ceil()),
                        0
                    ),
                    fmt(num(f, &["chunk_s"]), 0)
                )
            }),
            "",
        ),
        (
            "6",
            "**frames lost at rotation (pushed − read back)**",
            Box::new(|_: &str, w: &Value| {
                let v = num(w, &["fast", "frames_lost"]);
                format!("{}{}", fmt(v, 0), verdict(v.map(|v| v == 0.0)))
            }),
            "0",
        ),
        (
            "6",
            "worst inter-stream first-PTS skew per chunk, ms",
            Box::new(|_: &str, w: &Value| fmt(num(w, &["fast", "worst_skew_us"]).map(|u| u / 1000.0), 1)),
            "≤ 1 frame",
        ),
        (
            "6",
            "chunk starts without keyframe / checked",
            Box::new(|_: &str, w: &Value| pair(num(w, &["fast", "chunk_starts_without_keyframe"]), num(w, &["fast", "chunk_starts_checked"]), 0)),
            "0",
        ),
    ];
    for (fig, name, cell, target) in &rows {
        md.push_str(&format!("| {fig} | {name} | "));
        for wid in &wids {
            md.push_str(&cell(wid, &results["workloads"][wid]));
            md.push_str(" | ");
        }
        md.push_str(&format!("{target} |\n"));
    }

    if let Some(lat) = results.get("latency") {
        md.push_str("\n**4. Stop-to-final-file latency** (from `Recording::stop`: the final MKV under its name, then its manifest, each fsynced before its rename; `stop` returns once the spool folder and its chunk files are removed too; `tiny` = W1's streams at ¼ size, 1 s chunks, finalizer caught up before stop)\n\n| chunks | final MKV visible, ms | manifest visible, ms | stop returns, ms | a whole-file read-back (not done at stop): inspect + SHA-256, ms | final file, MB |\n|---|---|---|---|---|---|\n");
        if let Some(by) = lat["by_chunks"].as_object() {
            let mut keys: Vec<(usize, &String)> =
                by.keys().map(|k| (k.parse().unwrap_or(0), k)).collect();
            keys.sort();
            for (_, k) in keys {
                let r = &by[k];
                md.push_str(&format!(
                    "| {k} | {} | {} | {} | {} + {} | {} |\n",
                    fmt(med(r, &["final_visible_s"]).map(|s| s * 1000.0), 1),
                    fmt(med(r, &["manifest_visible_s"]).map(|s| s * 1000.0), 1),
                    fmt(med(r, &["stop_s"]).map(|s| s * 1000.0), 1),
                    fmt(med(r, &["readback_inspect_s"]).map(|s| s * 1000.0), 1),
                    fmt(med(r, &["readback_sha256_s"]).map(|s| s * 1000.0), 1),
                    fmt(med(r, &["final_mb"]), 1),
                ));
            }
        }
        let g = lat["growth_factor"].as_f64();
        let gv = lat["growth_factor_final_visible"].as_f64();
        let gm = lat["growth_factor_manifest_visible"].as_f64();
        md.push_str(&format!(
            "\nGrowth factor, {} chunks ÷ {} chunk: until the final MKV is visible **{}**{}; until its manifest is **{}**{} (target: flat, ≤ 1.5); until `stop` returns, spool folder removed, {}\n",
            lat["growth_between"][1],
            lat["growth_between"][0],
            fmt(gv, 2),
            verdict(gv.map(|g| g <= 1.5)),
            fmt(gm, 2),
            verdict(gm.map(|g| g <= 1.5)),
            fmt(g, 2),
        ));
    }
    if let Some(mg) = results.get("merge") {
        md.push_str("\n**5. Merge and concat throughput** (W1 chunk files written by grabd's encoders and part writer; output fsynced; page cache warm for every contender)\n\n");
        if let Some(e) = mg.get("error") {
            md.push_str(&format!("error: {e}\n"));
        } else {
            let c = &mg["raw"]["merge"];
            md.push_str(&format!(
                "| operation | grabd MB/s | `cp` + `sync` MB/s | grabd ÷ cp | ffmpeg `-f concat -c copy` + sync MB/s | grabd ÷ ffmpeg |\n|---|---|---|---|---|---|\n| merge parts → chunk (`merge_stream_files`, {} chunks, {:.0} MB) | {} | {} | {} | – | – |\n| concat chunks → recording (`merge_recording_chunks`, {:.0} MB) | {} | {} | {} | {} | {} |\n",
                mg["raw"]["chunks"],
                c["bytes"].as_f64().unwrap_or(0.0) / MB,
                fmt(num(mg, &["merge_mbps"]), 0),
                fmt(num(mg, &["merge_cp_mbps"]), 0),
                fmt(num(mg, &["merge_over_cp"]), 2),
                mg["raw"]["chunk_bytes"].as_f64().unwrap_or(0.0) / MB,
                med_range(mg, &["concat_mbps"], 0),
                med_range(mg, &["concat_cp_mbps"], 0),
                med_range(mg, &["concat_over_cp"], 2),
                med_range(mg, &["concat_ffmpeg_mbps"], 0),
                med_range(mg, &["concat_over_ffmpeg"], 2),
            ));
        }
    }
    md.push_str("\n**2. RSS over time at real time** (MB, whole process; grabd / bare encoder / ffmpeg process)\n\n");
    for wid in &wids {
        let runs = &results["workloads"][wid]["realtime_runs"];
        for kind in ["grabd", "bare", "ffmpeg"] {
            if let Some(samples) = runs[kind]["rss"].as_array() {
                let picked = downsample(samples, 9);
                md.push_str(&format!("- {wid} {kind}: {picked}\n"));
            }
        }
    }
    if let Some(st) = results.get("rss_stress") {
        md.push_str(&format!(
            "\nRSS across many rotations (W1, 1 s chunks, fed as fast as it goes, {} chunks in {:.0} s): peak {} MB in the first half, {} MB in the second half, {} MB in the last quarter (frames alone: {} MB); **peak growth, last quarter − first half: {} MB** (target ≈ 0); frames lost {}.\n",
            fmt(num(st, &["chunks"]), 0),
            num(st, &["encoded_s"]).unwrap_or(0.0),
            fmt(num(st, &["peak_first_half_mb"]), 0),
            fmt(num(st, &["peak_second_half_mb"]), 0),
            fmt(num(st, &["peak_last_quarter_mb"]), 0),
            fmt(num(st, &["base_rss_mb"]), 0),
            fmt(num(st, &["peak_growth_mb"]), 1),
            fmt(num(st, &["frames_lost"]), 0),
        ));
        if let Some(samples) = st["samples"].as_array() {
            md.push_str(&format!(
                "- W1 grabd, 1 s chunks: {}\n",
                downsample(samples, 12)
            ));
        }
    }
    let mut errors = Vec::new();
    collect_errors(results, "", &mut errors);
    if !errors.is_empty() {
        md.push_str("\nErrors:\n");
        for e in errors {
            md.push_str(&format!("- {e}\n"));
        }
    }
    md.push_str(&format!(
        "\nTotal bench time {:.0} s.\n",
        results["elapsed_s"].as_f64().unwrap_or(0.0)
    ));
    md
}

fn downsample(samples: &[Value], k: usize) -> String {
    if samples.is_empty() {
        return String::new();
    }
    let n = samples.len();
    let idx: Vec<usize> = if n <= k {
        (0..n).collect()
    } else {
        (0..k).map(|i| i * (n - 1) / (k - 1)).collect()
    };
    idx.iter()
        .map(|&i| {
            format!(
                "{:.0}s {:.0}",
                samples[i][0].as_f64().unwrap_or(0.0),
                samples[i][1].as_f64().unwrap_or(0.0)
            )
        })
        .collect::<Vec<_>>()
        .join(" · ")
}

fn collect_errors(v: &Value, path: &str, out: &mut Vec<String>) {
    match v {
        Value::Object(o) => {
            for (k, val) in o {
                if k == "error" {
                    if let Some(s) = val.as_str() {
                        out.push(format!("{path}: {s}"));
                    }
                } else if k != "fast" && k != "realtime" {
                    // Summaries repeat the errors of the runs they summarise.
                    collect_errors(val, &format!("{path}/{k}"), out);
                }
            }
        }
        Value::Array(a) => {
            for (i, val) in a.iter().enumerate() {
                collect_errors(val, &format!("{path}/{i}"), out);
            }
        }
        _ => {}
    }
}

// ---------------------------------------------------------------------------------------

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    if args.first().map(String::as_str) == Some("--child") {
        // The allocator setting the grabd binary applies at start-up, for every
        // measured process alike (the bare encoders' too).
        grabd::runtime::process::keep_heap_flat();
        let task = args.get(1).cloned().unwrap_or_default();
        let params: Value = args
            .get(2)
            .and_then(|s| serde_json::from_str(s).ok())
            .unwrap_or(Value::Null);
        let result =
            run_task(&task, &params).unwrap_or_else(|e| json!({"error": format!("{e:#}")}));
        println!("RESULT {result}");
        return;
    }
    if let Err(e) = parent(&args) {
        eprintln!("bench: {e:#}");
        std::process::exit(2);
    }
}

fn parent(args: &[String]) -> Result<()> {
    let quick = args.iter().any(|a| a == "--quick");
    let mut plan = Plan::new(quick);
    let target = std::env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| Path::new(env!("CARGO_MANIFEST_DIR")).join("target"));
    let mut out_dir = target.join("bench");
    let mut it = args.iter();
    while let Some(a) = it.next() {
        let mut value = || {
            it.next()
                .cloned()
                .ok_or_else(|| anyhow!("{a} needs a value"))
        };
        match a.as_str() {
            "--quick" | "--full" | "--bench" => {}
            "--only" => {
                plan.figures = value()?
                    .split(',')
                    .map(|f| f.trim().parse().context("--only takes figure numbers 1-6"))
                    .collect::<Result<_>>()?;
            }
            "--workloads" => {
                plan.workloads = value()?.split(',').map(|s| s.trim().to_owned()).collect();
                for w in &plan.workloads {
                    workload(w)?;
                }
            }
            "--reps" => plan.reps = value()?.parse().context("--reps")?,
            "--out" => out_dir = PathBuf::from(value()?),
            "--render" => {
                // Re-print the table of an earlier run's results.json.
                let results: Value = serde_json::from_slice(&fs::read(value()?)?)?;
                println!("{}", markdown(&results));
                return Ok(());
            }
            "-h" | "--help" => {
                println!("usage: recorder [--quick|--full] [--only 1,2,3,4,5,6] [--workloads W1,W2,W3] [--reps N] [--out DIR] | --render results.json");
                return Ok(());
            }
            // cargo bench passes filters and flags of its own; ignore them.
            _ => {}
        }
    }
    let results = orchestrate(&plan, &out_dir)?;
    let md = markdown(&results);
    fs::write(
        out_dir.join("results.json"),
        serde_json::to_vec_pretty(&results)?,
    )?;
    fs::write(out_dir.join("results.md"), &md)?;
    println!("{md}");
    eprintln!(
        "bench: wrote {} and {}",
        out_dir.join("results.json").display(),
        out_dir.join("results.md").display()
    );
    Ok(())
}
