//! The ChunkedWriter under faults, checked by reading its files back: stop in the middle
//! of a rotation, an encoder thread that fails, a stream that goes silent, and a producer
//! far faster than the encoder.

mod common;

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use common::*;
use grabd::recording::probe::inspect;
use grabd::recording::{
    recover_spool, ErrorCallback, Frame, InjectedFaults, Recording, StopDeadlines,
    VideoStreamConfig, WriterOptions,
};

const ALL: [&str; 3] = ["rgb", "depth", "imu"];

/// Stop right after some streams crossed a chunk boundary and others did not (the chunk
/// is pending at the barrier, its deadline far away): stop does not wait for the
/// deadline, and the final file holds every accepted frame of every stream.
#[test]
fn stop_during_rotation_keeps_every_accepted_frame() {
    let variants: [&[&'static str]; 3] = [&["depth", "imu"], &["rgb"], &["imu"]];
    for crossing in variants {
        let grace = Duration::from_secs(30);
        let mut rig = Rig::start(
            "midrot",
            standard_specs(),
            WriterOptions {
                rotation_grace: grace,
                ..options(2000)
            },
        );
        // Chunk 1 in full on every stream (frames 0..=49), then 3 frames of chunk 2 on
        // the crossing streams only, and stop at once (frames may still be queued).
        for i in 0..50 {
            rig.push_all(&ALL, i);
        }
        for i in 50..53 {
            rig.push_all(crossing, i);
        }
        let began = Instant::now();
        let report = rig.stop();
        let took = began.elapsed();
        assert!(
            took < grace / 2,
            "{crossing:?}: stop took {took:?}, as if waiting for the rotation deadline"
        );
        assert!(
            report.finalize.errors.is_empty(),
            "{crossing:?}: {:?}",
            report.finalize.errors
        );
        let chunks = rig.chunks();
        let starts: Vec<i64> = chunks.iter().map(|(s, _)| *s).collect();
        assert_eq!(starts, vec![0, 2_000_000], "{crossing:?}: chunks");
        let second = read_tracks(&chunks[1].1);
        let mut in_second = track_names(&second);
        in_second.sort();
        let mut expected_second: Vec<String> = crossing.iter().map(|s| s.to_string()).collect();
        expected_second.sort();
        assert_eq!(in_second, expected_second, "tracks of the cut-short chunk");

        let tracks = read_tracks(&rig.final_path);
        for name in ALL {
            let t = track(&tracks, name);
            assert_eq!(
                t.pts(),
                rig.accepted_media_us(name, T0),
                "{crossing:?}: {name} in the final file"
            );
            if t.medium == "video" {
                for (k, start) in [0, 2_000_000].into_iter().enumerate() {
                    if let Some(p) = t.packets.iter().find(|p| p.pts_us >= start) {
                        assert!(p.key, "{crossing:?}: {name} chunk {k} starts on a keyframe");
                    }
                }
            }
        }
        let decoded = inspect(&rig.final_path, true, None).expect("inspect final");
        assert_eq!(decoded.decode_errors(), 0, "{crossing:?}");
        rig.assert_no_leftovers();
    }
}

/// A codec error kills the rgb encoder thread: `on_error` fires exactly once
/// with "rgb", rgb's queue refuses from then on, depth and imu keep recording through
/// later chunks, stop is clean, and the final file holds depth and imu in full and every
/// rgb frame accepted before the bad one. (x264 with `tune=zerolatency` holds no frame
/// back, so this does not depend on the failed encoder being flushed.)
#[test]
fn encoder_failure_fires_on_error_once_and_others_keep_recording() {
    encoder_failure_scenario(rgb_config().with_option("tune", "zerolatency"));
}

/// The same failure with an encoder that holds frames back (x264 with frame threads, as
/// a hardware encoder does): the frames it had been given before the bad one were
/// accepted and counted as encoded, so they must reach the file too.
#[test]
fn encoder_failure_keeps_the_frames_the_encoder_buffered() {
    encoder_failure_scenario(rgb_config());
}

fn encoder_failure_scenario(rgb: VideoStreamConfig) {
    let calls: Arc<Mutex<Vec<String>>> = Arc::default();
    let seen = Arc::clone(&calls);
    let on_error: ErrorCallback = Arc::new(move |stream: &str| {
        seen.lock().unwrap().push(stream.to_owned());
    });
    let specs = vec![
        Spec::Video("rgb", rgb),
        Spec::Video("depth", depth_config()),
        Spec::Data("imu"),
    ];
    let mut rig = Rig::start(
        "fail",
        specs,
        WriterOptions {
            on_error: Some(on_error),
            faults: InjectedFaults {
                fail_encoder: Some(("rgb".into(), 60)),
                ..InjectedFaults::default()
            },
            ..options(2000)
        },
    );
    // 60 good frames (all of chunk 1 and 10 of chunk 2) on every stream.
    for i in 0..60 {
        rig.push_all(&ALL, i);
    }
    // Encoding rgb's frame 60 fails (a codec error): its encoder thread fails on it.
    rig.push_all(&ALL, 60);
    assert!(
        wait_until(Duration::from_secs(10), || !calls
            .lock()
            .unwrap()
            .is_empty()),
        "on_error was not called after the rgb encoder failed"
    );
    // on_error runs before the dead thread's queue is gone: wait until rgb refuses.
    let probe = rig.spec("rgb").frame(T0 + 61 * FRAME_US, 61);
    assert!(
        wait_until(Duration::from_secs(10), || !rig
            .sender("rgb")
            .push(probe.clone())),
        "the failed stream's queue still takes frames"
    );
    // The others go on for two more chunks; rgb refuses everything now.
    let mut rgb_refused = 0;
    for i in 61..150 {
        rig.push_all(&["depth", "imu"], i);
        let frame = rig.spec("rgb").frame(T0 + i as i64 * FRAME_US, i);
        if !rig.sender("rgb").push(frame) {
            rgb_refused += 1;
        }
    }
    assert_eq!(rgb_refused, 89, "pushes to the failed stream are refused");
    let report = rig.stop();
    std::thread::sleep(Duration::from_millis(200)); // a late second call would show now
    assert_eq!(*calls.lock().unwrap(), ["rgb"], "on_error calls");
    let rgb_stats = report.streams.iter().find(|s| s.name == "rgb").unwrap();
    assert_eq!(
        rgb_stats.frames_encoded, 60,
        "rgb frames handed to the encoder"
    );
    for s in &report.streams {
        assert_eq!(s.failed, s.name == "rgb", "{}: failed flag", s.name);
    }
    assert!(
        report.finalize.errors.is_empty(),
        "{:?}",
        report.finalize.errors
    );
    assert_eq!(rig.chunks().len(), 3);

    let tracks = read_tracks(&rig.final_path);
    for name in ["depth", "imu"] {
        let pts = track(&tracks, name).pts();
        assert_eq!(pts.len(), 150, "{name}: packets in the final file");
        assert_eq!(pts, rig.accepted_media_us(name, T0), "{name}: PTS");
    }
    let rgb = track(&tracks, "rgb").pts();
    let expected: Vec<i64> = (0..60).map(|i| i * FRAME_US).collect();
    assert_eq!(
        rgb,
        expected,
        "rgb in the final file: every frame accepted before the bad one ({} of 60 there)",
        rgb.len()
    );
    rig.assert_final_decodes(&[]);
}

/// depth goes silent after the first chunk while rgb and imu go on for four more: with a
/// short rotation grace, chunks keep completing while recording (generation grows, chunk
/// files appear before stop), and nothing of the active streams is dropped.
#[test]
fn silent_stream_does_not_stall_rotation() {
    let grace = Duration::from_millis(300);
    let mut rig = Rig::start(
        "silent",
        standard_specs(),
        WriterOptions {
            rotation_grace: grace,
            ..options(1000)
        },
    );
    let mut waits = Vec::new();
    for i in 0..125 {
        // 5 s at 1 s chunks; depth only in the first second.
        if i < 25 {
            rig.push_all(&ALL, i);
        } else {
            rig.push_all(&["rgb", "imu"], i);
        }
        if i > 0 && i % 25 == 0 {
            // rgb and imu just passed chunk k-1; depth never will. It must complete
            // anyway, on the deadline, while we are still recording.
            let k = i / 25;
            let began = Instant::now();
            assert!(
                wait_until(grace + Duration::from_secs(10), || rig.writer.generation()
                    >= k),
                "chunk {} never completed while depth was silent (generation {})",
                k - 1,
                rig.writer.generation()
            );
            waits.push(began.elapsed());
            let chunk = rig.spool.join(format!("{:05}.mkv", k - 1));
            assert!(
                wait_until(Duration::from_secs(10), || chunk.exists()),
                "{} not on disk while recording",
                chunk.display()
            );
        }
    }
    assert_eq!(rig.writer.generation(), 4, "4 chunks completed before stop");
    let report = rig.stop_cleanly();
    for s in &report.streams {
        assert_eq!(s.dropped_late, 0, "{}: late drops", s.name);
        assert!(!s.failed);
    }
    let chunks = rig.chunks();
    assert_eq!(chunks.len(), 5);
    let tracks = read_tracks(&rig.final_path);
    for name in ALL {
        let pts = track(&tracks, name).pts();
        assert_eq!(
            pts,
            rig.accepted_media_us(name, T0),
            "{name} in the final file"
        );
    }
    assert_eq!(track(&tracks, "rgb").packets.len(), 125);
    assert_eq!(track(&tracks, "depth").packets.len(), 25);
    rig.assert_final_decodes(&[]);
    eprintln!("rotation waits with a silent stream: {waits:?}");
}

/// The IMU is dead from power-on (it never sends a record) while rgb and depth record
/// 4 s in 1 s chunks: the final file still grows chunk by chunk while recording (its
/// `.tmp` appears after the first chunk and grows with the next ones), stop finishes
/// that very file rather than rebuilding it from the chunks (same inode), the file has
/// the silent stream's track, empty, in the configured order, and it verifies against
/// its manifest.
#[test]
fn final_file_grows_while_a_stream_is_dead_from_power_on() {
    use grabd::recording::StreamConfig;
    use std::os::unix::fs::MetadataExt;
    let tmp = tempfile::tempdir().unwrap();
    let (spool, output) = (tmp.path().join("spool"), tmp.path().join("out"));
    let streams = vec![
        ("rgb".to_owned(), StreamConfig::Video(rgb_config())),
        ("depth".to_owned(), StreamConfig::Video(depth_config())),
        ("imu".to_owned(), StreamConfig::Data(Default::default())),
    ];
    let recording = Recording::start(
        &spool,
        &output,
        streams,
        WriterOptions {
            rotation_grace: Duration::from_millis(300),
            ..options(1000)
        },
    )
    .unwrap();
    let growing = output.join(format!("{}.mkv.tmp", recording.id()));
    let size = |path: &std::path::Path| std::fs::metadata(path).map_or(0, |m| m.len());
    let (rgb, depth) = (
        recording.sender("rgb").unwrap(),
        recording.sender("depth").unwrap(),
    );
    let mut first_size = None;
    for i in 0..100u64 {
        let ts = T0 + i as i64 * FRAME_US;
        push_blocking(&rgb, video_frame(&rgb_config(), ts, i));
        push_blocking(&depth, video_frame(&depth_config(), ts, i));
        if i == 30 {
            assert!(
                wait_until(Duration::from_secs(10), || growing.exists()),
                "no growing final file after the first chunk (generation {})",
                recording.writer().generation()
            );
            first_size = Some(size(&growing));
        }
    }
    let first_size = first_size.expect("sampled");
    assert!(
        wait_until(Duration::from_secs(10), || recording.writer().generation()
            >= 3
            && size(&growing) > first_size),
        "the final file did not grow with later chunks ({} bytes, generation {})",
        size(&growing),
        recording.writer().generation()
    );
    let inode = std::fs::metadata(&growing).expect("growing file").ino();
    let finished = recording
        .stop()
        .expect("stop")
        .finished
        .expect("a final file");
    let mkv = &finished.mkv;
    assert_eq!(
        std::fs::metadata(mkv).expect("final file").ino(),
        inode,
        "stop rebuilt the final file instead of finishing the grown one"
    );
    let tracks = read_tracks(mkv);
    assert_eq!(
        track_names(&tracks),
        ALL,
        "every configured stream, in order"
    );
    assert_eq!(track(&tracks, "imu").medium, "subtitle");
    let counts = ffprobe_packet_counts(mkv);
    assert_eq!(counts["rgb"], 100);
    assert_eq!(counts["depth"], 100);
    assert_eq!(counts["imu"], 0, "the silent stream's track is empty");
    let imu = finished.manifest.streams.iter().find(|s| s.name == "imu");
    assert_eq!(
        imu.map(|s| s.frames_written),
        Some(0),
        "imu in the manifest"
    );
    let v = cli::verify(mkv);
    let decoded: Vec<(&str, u64)> = ["rgb", "depth"]
        .iter()
        .map(|&name| {
            let s = v["streams"]
                .as_array()
                .unwrap()
                .iter()
                .find(|s| s["name"] == name);
            (
                name,
                s.and_then(|s| s["frames_decoded"].as_u64()).unwrap_or(0),
            )
        })
        .collect();
    assert_eq!(decoded, [("rgb", 100), ("depth", 100)], "{v}");
}

/// A camera that starts after the first chunk (a USB webcam that takes a second to
/// stream): the final file opens with the first chunk, its H.264 track declared from
/// the encoder before any packet of it. Every rgb frame must still be in the final file
/// and decode: a track declared with the encoder's Annex B extradata made the muxer
/// re-parse the chunks' length-prefixed packets as Annex B (found under QEMU with two
/// vivid webcams: packets lost, none decodable).
#[test]
fn a_video_stream_that_starts_after_the_first_chunk_decodes_in_the_final_file() {
    let hevc = VideoStreamConfig::new(64, 48, 25.0)
        .and_then(|c| c.with_codec("libx265", "rgb24", "yuv420p"))
        .expect("libx265 config")
        .with_option("preset", "ultrafast");
    for (name, rgb) in [("late_h264", rgb_config()), ("late_hevc", hevc)] {
        let specs = vec![
            Spec::Video("rgb", rgb),
            Spec::Video("depth", depth_config()),
            Spec::Data("imu"),
        ];
        let mut rig = Rig::start(name, specs, options(1000));
        // depth and imu from 0 s, rgb only from 1.6 s (frame 40): chunk 0 holds no rgb.
        for i in 0..100 {
            let names: &[&'static str] = if i < 40 { &["depth", "imu"] } else { &ALL };
            rig.push_all(names, i);
        }
        rig.stop_cleanly();
        let counts = ffprobe_packet_counts(&rig.final_path);
        assert_eq!(counts["rgb"], 60, "{name}: rgb packets in the final file");
        assert_eq!(counts["depth"], 100, "{name}");
        rig.assert_final_decodes(&[("rgb", 60), ("depth", 100)]);
    }
}

/// A burst far faster than the encoder into a queue of 4: push never waits (the burst
/// takes a small fraction of the time the encoder needs for it), refused pushes are
/// counted exactly as `dropped_queue_full`, and the file holds exactly the accepted
/// frames: written + dropped == pushed.
#[test]
fn queue_overflow_drops_and_counts_without_blocking_the_producer() {
    let config = sized_rgb_config(320, 240);
    let mut rig = Rig::start(
        "burst",
        vec![Spec::Video("rgb", config.clone())],
        WriterOptions {
            max_encoder_queue_size: 4,
            ..options(2000)
        },
    );
    let sender = rig.sender("rgb").clone();
    let base = video_frame(&config, 0, 0);
    let frame_at = |i: i64| Frame {
        timestamp_us: T0 + i * FRAME_US,
        data: Arc::clone(&base.data),
    };
    let mut pushes = 0u64;
    let mut refused = 0u64;
    let mut accepted_ts = Vec::new();

    // Calibration: feed 40 frames as fast as the encoder takes them (spinning on a full
    // queue) to measure its throughput.
    let calibration = 40;
    let began = Instant::now();
    for i in 0..calibration {
        loop {
            pushes += 1;
            if sender.push(frame_at(i)) {
                accepted_ts.push(i * FRAME_US);
                break;
            }
            refused += 1;
            std::thread::yield_now();
        }
    }
    let per_frame = began.elapsed() / calibration as u32;

    // The burst: 500 frames, one push each, no retry.
    let burst = 500;
    // Start the burst on an empty queue, so that some of it gets in.
    assert!(wait_until(Duration::from_secs(10), || sender.queued() == 0));
    let mut slowest_push = Duration::ZERO;
    let refused_before_burst = refused;
    let accepted_before_burst = accepted_ts.len();
    let began = Instant::now();
    for i in calibration..calibration + burst {
        let one = Instant::now();
        pushes += 1;
        if sender.push(frame_at(i)) {
            accepted_ts.push(i * FRAME_US);
        } else {
            refused += 1;
        }
        slowest_push = slowest_push.max(one.elapsed());
    }
    let burst_time = began.elapsed();
    let encode_time = per_frame * burst as u32;
    let ratio = burst_time.as_secs_f64() / encode_time.as_secs_f64();
    eprintln!(
        "encoder ~{per_frame:?}/frame; burst of {burst} pushes took {burst_time:?} \
         (slowest {slowest_push:?}), {ratio:.4} of the encode time"
    );
    assert!(
        ratio < 0.1,
        "the burst took {burst_time:?}, {ratio:.3} of the {encode_time:?} the encoder needs: the producer waited"
    );

    let report = rig.stop_cleanly();
    let stats = &report.streams[0];
    assert!(
        refused > refused_before_burst,
        "the burst overflowed nothing"
    );
    assert!(
        accepted_ts.len() > accepted_before_burst,
        "the burst got nothing in"
    );
    assert_eq!(
        stats.dropped_queue_full, refused,
        "dropped_queue_full counts exactly the refused pushes"
    );
    assert_eq!(stats.dropped_late, 0);

    let tracks = read_tracks(&rig.final_path);
    let written = track(&tracks, "rgb").pts();
    assert_eq!(
        written, accepted_ts,
        "the file holds exactly the accepted frames"
    );
    assert_eq!(
        written.len() as u64 + refused,
        pushes,
        "written + dropped == pushed"
    );
    rig.assert_final_decodes(&[]);
}

/// Dropping a running writer without `stop` (the context manager's exit on an early
/// return or a panic) still drains the queues and finishes the final file.
#[test]
fn dropping_a_running_writer_finishes_the_final_file() {
    let mut rig = Rig::start("dropped", standard_specs(), options(1000));
    for i in 0..40 {
        rig.push_all(&ALL, i);
    }
    let Rig {
        writer,
        final_path,
        accepted,
        tmp,
        ..
    } = rig;
    drop(writer);
    assert!(final_path.exists(), "no final file after drop");
    let tracks = read_tracks(&final_path);
    for name in ALL {
        let expected: Vec<i64> = accepted[name].iter().map(|(ts, _)| ts - T0).collect();
        assert_eq!(track(&tracks, name).pts(), expected, "{name}");
    }
    drop(tmp);
}

/// A writer stopped before any frame arrived leaves no final file and no chunk.
#[test]
fn stop_without_frames_leaves_nothing() {
    let mut rig = Rig::start("empty", standard_specs(), options(1000));
    let report = rig.stop();
    assert!(report.finalize.final_output.is_none());
    assert!(report.finalize.chunks.is_empty());
    assert!(report.origin.is_none());
    assert!(!rig.final_path.exists(), "a final file for zero frames");
    let left: Vec<_> = std::fs::read_dir(&rig.spool)
        .unwrap()
        .chain(std::fs::read_dir(&rig.output_dir).unwrap())
        .map(|e| e.unwrap().path())
        .collect();
    assert!(left.is_empty(), "files for zero frames: {left:?}");
}

/// rgb's encoder holds frames of chunk 1 (it was fed past the boundary, then the camera
/// went quiet) when the deadline closes chunk 0 without it: the flush puts those frames
/// in chunk 1's part, which stays open, and when the camera comes back a new encoder
/// goes on in the same part. No frame is lost or misplaced, and the file decodes.
#[test]
fn frames_held_by_the_encoder_of_a_silent_stream_stay_in_their_chunk() {
    let grace = Duration::from_millis(300);
    let mut rig = Rig::start(
        "held",
        rgb_and_imu_specs(deep_rgb_config()),
        WriterOptions {
            rotation_grace: grace,
            ..options(1000)
        },
    );
    for i in 0..30 {
        rig.push_all(&["rgb", "imu"], i); // rgb: 1.16 s, all still inside its encoder
    }
    for i in 30..45 {
        rig.push_all(&["imu"], i); // imu passes chunk 0, not chunk 1
    }
    assert!(
        wait_until(grace + Duration::from_secs(10), || rig.writer.generation()
            >= 1),
        "chunk 0 never completed while rgb was silent"
    );
    for i in 30..45 {
        rig.push_all(&["rgb"], i);
    }
    for i in 45..75 {
        rig.push_all(&["rgb", "imu"], i);
    }
    let report = rig.stop_cleanly();
    for s in &report.streams {
        assert_eq!(s.frames_dropped(), 0, "{}: drops", s.name);
    }
    let rgb = rig.accepted_media_us("rgb", T0);
    let chunks = rig.chunks();
    assert_eq!(chunks.len(), 3);
    for (start, path) in &chunks {
        assert_chunk_track(path, *start, 1_000_000, "rgb", &rgb);
    }
    let tracks = read_tracks(&rig.final_path);
    assert_eq!(
        x264_encoder_starts(track(&tracks, "rgb")),
        2,
        "reopened once, after the silence"
    );
    rig.assert_final_decodes(&[("rgb", 75)]);
}

/// The names of the files in `dir` that end in `suffix`, sorted.
fn files_ending(dir: &std::path::Path, suffix: &str) -> Vec<String> {
    let mut names: Vec<String> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|n| n.ends_with(suffix))
        .collect();
    names.sort();
    names
}

/// `on_error` that records every call, and the list it records into.
fn recording_on_error() -> (ErrorCallback, Arc<Mutex<Vec<String>>>) {
    let calls: Arc<Mutex<Vec<String>>> = Arc::default();
    let seen = Arc::clone(&calls);
    let on_error: ErrorCallback = Arc::new(move |what: &str| {
        seen.lock().unwrap().push(what.to_owned());
    });
    (on_error, calls)
}

/// rgb's encoder thread panics after its 60th frame (mid chunk 2 of 2 s chunks): the
/// panic is caught, `on_error` fires once with "rgb", rgb leaves the barrier so depth
/// and imu keep rotating while recording (chunks complete before stop), stop is clean
/// and quick, and the final file holds every rgb frame encoded before the panic.
#[test]
fn a_panicking_encoder_fires_on_error_once_and_the_others_keep_rotating() {
    let (on_error, calls) = recording_on_error();
    let mut rig = Rig::start(
        "panic",
        vec![
            Spec::Video("rgb", rgb_config().with_option("tune", "zerolatency")),
            Spec::Video("depth", depth_config()),
            Spec::Data("imu"),
        ],
        WriterOptions {
            on_error: Some(on_error),
            faults: InjectedFaults {
                panic_encoder: Some(("rgb".into(), 60)),
                ..InjectedFaults::default()
            },
            ..options(2000)
        },
    );
    for i in 0..60 {
        rig.push_all(&ALL, i);
    }
    assert!(
        wait_until(Duration::from_secs(10), || !calls
            .lock()
            .unwrap()
            .is_empty()),
        "on_error was not called after the rgb encoder panicked"
    );
    for i in 60..150 {
        rig.push_all(&["depth", "imu"], i);
    }
    // Chunks 0 and 1 complete while recording: nobody waits for the dead stream.
    assert!(
        wait_until(Duration::from_secs(10), || rig.writer.generation() >= 2),
        "rotation stalled behind the panicked stream: generation {}",
        rig.writer.generation()
    );
    let began = Instant::now();
    let report = rig.stop_cleanly();
    assert!(
        began.elapsed() < Duration::from_secs(10),
        "stop took {:?}",
        began.elapsed()
    );
    assert!(report.left_running.is_empty(), "{:?}", report.left_running);
    std::thread::sleep(Duration::from_millis(200)); // a late second call would show now
    assert_eq!(*calls.lock().unwrap(), ["rgb"], "on_error calls");
    for s in &report.streams {
        assert_eq!(s.failed, s.name == "rgb", "{}: failed flag", s.name);
    }
    let tracks = read_tracks(&rig.final_path);
    for name in ["depth", "imu"] {
        assert_eq!(
            track(&tracks, name).pts(),
            rig.accepted_media_us(name, T0),
            "{name}: PTS in the final file"
        );
    }
    let expected: Vec<i64> = (0..60).map(|i| i * FRAME_US).collect();
    assert_eq!(track(&tracks, "rgb").pts(), expected, "rgb up to the panic");
    rig.assert_final_decodes(&[]);
}

/// The finalizer panics on its first chunk: `on_error` hears "finalizer" once, the
/// encoders are not held up, stop returns promptly and says the finalizer panicked (the
/// recording's finish then builds the file from what is on disk), and every part is
/// still on disk for that finish: none was deleted without a chunk holding it.
#[test]
fn a_panicking_finalizer_is_reported_once_and_leaves_the_parts() {
    let (on_error, calls) = recording_on_error();
    let mut rig = Rig::start(
        "finpanic",
        standard_specs(),
        WriterOptions {
            on_error: Some(on_error),
            faults: InjectedFaults {
                panic_finalizer: true,
                ..InjectedFaults::default()
            },
            ..options(1000)
        },
    );
    for i in 0..60 {
        rig.push_all(&ALL, i);
    }
    let report = rig.stop();
    assert_eq!(*calls.lock().unwrap(), ["finalizer"], "on_error calls");
    assert!(
        report
            .finalize
            .errors
            .iter()
            .any(|e| e.contains("panicked")),
        "{:?}",
        report.finalize.errors
    );
    assert!(report.left_running.is_empty(), "{:?}", report.left_running);
    let parts = files_ending(&rig.spool, ".mkv.part");
    // 60 frames of 40 ms in 1 s chunks: chunks 0, 1 and 2, three streams each.
    assert_eq!(parts.len(), 9, "parts on disk: {parts:?}");
}

/// Start a writer with `deadlines` and `faults` (a 5 s stall somewhere), push `frames`
/// frames and stop: stop returns at its 1 s deadline, not after the stall, and reports
/// `thread` as still running. The rig comes back with the stalled thread still going.
fn stop_past_a_stall(
    name: &str,
    deadlines: StopDeadlines,
    faults: InjectedFaults,
    frames: u64,
    thread: &str,
) -> Rig {
    let mut rig = Rig::start(
        name,
        standard_specs(),
        WriterOptions {
            stop_deadlines: deadlines,
            faults,
            ..options(1000)
        },
    );
    for i in 0..frames {
        rig.push_all(&ALL, i);
    }
    let began = Instant::now();
    let report = rig.stop();
    let took = began.elapsed();
    assert!(
        took < Duration::from_secs(4),
        "stop waited for the stall: {took:?}"
    );
    assert_eq!(report.left_running, [thread]);
    rig
}

/// rgb's encoder hangs for 5 s at its 30th frame, past a 1 s stop deadline: stop returns
/// at the deadline and reports the thread as still running (so the spool folder is left
/// to recovery), and the hung stream's open part is not deleted.
#[test]
fn a_hung_encoder_is_left_running_at_the_stop_deadline_and_reported() {
    let rig = stop_past_a_stall(
        "hung",
        StopDeadlines {
            encoders: Duration::from_secs(1),
            ..StopDeadlines::default()
        },
        InjectedFaults {
            hang_encoder: Some(("rgb".into(), 30, Duration::from_secs(5))),
            ..InjectedFaults::default()
        },
        40,
        "enc-rgb",
    );
    // Its part of chunk 0 is still open in its thread: no chunk holds it.
    let rgb_parts = files_ending(&rig.spool, ".rgb.mkv.part");
    assert!(!rgb_parts.is_empty(), "rgb's open part is gone");
    std::thread::sleep(Duration::from_secs(5)); // let the hung thread end before the tmp dir goes
}

/// The part syncer's fsync stalls for 5 s; with a 1 s syncer deadline stop returns in
/// time and reports the syncer as still running.
#[test]
fn a_stalled_fsync_cannot_hang_stop() {
    let _rig = stop_past_a_stall(
        "stall",
        StopDeadlines {
            syncer: Duration::from_secs(1),
            ..StopDeadlines::default()
        },
        InjectedFaults {
            stall_sync: Some(Duration::from_secs(5)),
            ..InjectedFaults::default()
        },
        10,
        "part-sync",
    );
    std::thread::sleep(Duration::from_secs(5));
}

/// Closing rgb's part of chunk 0 fails (its trailer is never written): the part still
/// goes to its chunk, whose merge salvages it, so no durable part is left outside every
/// chunk, and the frames of chunk 0 reach the final file up to its last whole cluster.
#[test]
fn a_part_whose_close_failed_still_goes_to_its_chunk() {
    let (on_error, calls) = recording_on_error();
    let mut rig = Rig::start(
        "badclose",
        vec![
            Spec::Video("rgb", rgb_config().with_option("tune", "zerolatency")),
            Spec::Data("imu"),
        ],
        WriterOptions {
            on_error: Some(on_error),
            faults: InjectedFaults {
                fail_part_close: Some("rgb".into()),
                ..InjectedFaults::default()
            },
            ..options(2000)
        },
    );
    for i in 0..80 {
        rig.push_all(&["rgb", "imu"], i);
    }
    let report = rig.stop();
    assert_eq!(*calls.lock().unwrap(), ["rgb"], "on_error calls");
    let first = report.finalize.chunks.first().expect("chunk 0 was merged");
    let in_chunk: Vec<&str> = first
        .summary
        .packets
        .iter()
        .map(|(name, _)| name.as_str())
        .collect();
    assert!(
        in_chunk.contains(&"rgb"),
        "chunk 0 holds no rgb: {in_chunk:?}"
    );
    let parts = files_ending(&rig.spool, ".mkv.part");
    assert!(
        parts.is_empty(),
        "parts left outside every chunk: {parts:?}"
    );
    let rgb = track(&read_tracks(&rig.final_path), "rgb").pts();
    let expected: Vec<i64> = (0..50).map(|i| i * FRAME_US).collect();
    assert!(
        !rgb.is_empty() && rgb.len() <= 50 && rgb[..] == expected[..rgb.len()],
        "rgb in the final file: {rgb:?}"
    );
}

/// The finalizer overruns its stop deadline (each chunk stalls 3 s, the deadline is
/// 0.5 s): the recording is not finished under it, since two writers must never touch
/// one file. Stop fails with "left for recovery", the spool folder stays as it is, and
/// stays claimed, so no recovery in this process touches it.
#[test]
fn a_finalizer_that_overruns_stop_leaves_the_spool_to_recovery() {
    let tmp = tempfile::tempdir().unwrap();
    let (spool, output) = (tmp.path().join("spool"), tmp.path().join("out"));
    let streams = vec![(
        "rgb".to_owned(),
        grabd::recording::StreamConfig::Video(rgb_config()),
    )];
    let recording = Recording::start(
        &spool,
        &output,
        streams,
        WriterOptions {
            stop_deadlines: StopDeadlines {
                finalizer: Duration::from_millis(500),
                ..StopDeadlines::default()
            },
            faults: InjectedFaults {
                stall_finalizer: Some(Duration::from_secs(3)),
                ..InjectedFaults::default()
            },
            ..options(1000)
        },
    )
    .unwrap();
    let dir = recording.spool_dir().to_owned();
    let sender = recording.sender("rgb").unwrap();
    for i in 0..30 {
        push_blocking(
            &sender,
            video_frame(&rgb_config(), T0 + i * FRAME_US, i as u64),
        );
    }
    let began = Instant::now();
    let stopped = recording.stop();
    assert!(
        began.elapsed() < Duration::from_secs(3),
        "stop waited for the finalizer"
    );
    let err = stopped.expect_err("stop must fail while the finalizer runs");
    assert!(err.to_string().contains("left for recovery"), "{err}");
    assert!(dir.is_dir(), "the spool folder went");
    let finals: Vec<_> = std::fs::read_dir(&output)
        .unwrap()
        .map(|e| e.unwrap().file_name())
        .filter(|n| n.to_string_lossy().ends_with(".mkv"))
        .collect();
    assert!(
        finals.is_empty(),
        "a final file while the finalizer runs: {finals:?}"
    );
    // This process keeps the folder claimed: no recovery here finishes it under the
    // finalizer (boot recovery, in the next process, does).
    let report = recover_spool(&spool, &output, Default::default()).unwrap();
    assert_eq!(report.busy, vec![dir], "{report:?}");
    assert!(report.recovered.is_empty(), "{report:?}");
    std::thread::sleep(Duration::from_secs(4)); // let the finalizer end before the tmp dir goes
}

/// A video frame of the wrong size and an empty data record are single bad frames, not
/// broken streams: each is dropped and counted (`dropped_invalid`, in the stats and the
/// manifest), `on_error` never fires, and both streams go on to the end of the file.
#[test]
fn a_wrong_size_frame_and_an_empty_record_are_dropped_and_counted() {
    let (on_error, calls) = recording_on_error();
    let tmp = tempfile::tempdir().unwrap();
    let (spool, output) = (tmp.path().join("spool"), tmp.path().join("out"));
    let streams = vec![
        (
            "rgb".to_owned(),
            grabd::recording::StreamConfig::Video(rgb_config()),
        ),
        (
            "imu".to_owned(),
            grabd::recording::StreamConfig::Data(Default::default()),
        ),
    ];
    let recording = Recording::start(
        &spool,
        &output,
        streams,
        WriterOptions {
            on_error: Some(on_error),
            ..options(1000)
        },
    )
    .unwrap();
    let (rgb, imu) = (
        recording.sender("rgb").unwrap(),
        recording.sender("imu").unwrap(),
    );
    let size = rgb_config().input_frame_size().unwrap();
    for i in 0..60u64 {
        let ts = T0 + i as i64 * FRAME_US;
        if i == 20 {
            push_blocking(&rgb, Frame::new(ts, vec![0u8; size - 1]));
            push_blocking(&imu, Frame::new(ts, Vec::new()));
        } else {
            push_blocking(&rgb, video_frame(&rgb_config(), ts, i));
            push_blocking(&imu, Frame::new(ts, imu_payload(ts, i)));
        }
    }
    let stopped = recording.stop().expect("stop");
    assert!(
        calls.lock().unwrap().is_empty(),
        "on_error: {:?}",
        calls.lock().unwrap()
    );
    for s in &stopped.stats {
        assert_eq!(s.dropped_invalid, 1, "{}: dropped_invalid", s.name);
        assert_eq!(s.frames_encoded, 59, "{}: frames encoded", s.name);
        assert!(!s.failed, "{}: failed", s.name);
    }
    let finished = stopped.finished.expect("a final file");
    for stream in &finished.manifest.streams {
        assert_eq!(stream.dropped_invalid, Some(1), "{}: manifest", stream.name);
        assert_eq!(
            stream.frames_written, 59,
            "{}: frames in the file",
            stream.name
        );
    }
    let decoded = inspect(&finished.mkv, true, None).unwrap();
    assert_eq!(decoded.decode_errors(), 0);
    assert_eq!(decoded.track("rgb").unwrap().frames_decoded, 59);
}

/// Regression test (QEMU rig, grabd capped at 25 % of a guest CPU): the finalizer's
/// merges took a third of grabd's CPU while single frames waited 1.5-2.6 s for their
/// encoders, since a nice level orders only the threads of one CPU and a CPU quota is
/// shared by all. Now, while an encoder is behind its capture (here one that takes
/// 150 ms a frame at 25 fps, always late), the finalizer merges nothing: the chunks it
/// could merge stay parts until the encoders are done, and stop then finishes them all,
/// with every frame the encoders took.
#[test]
fn the_finalizer_waits_while_an_encoder_is_behind_its_capture() {
    let mut rig = Rig::start(
        "behind",
        vec![Spec::Data("imu"), Spec::Data("slow")],
        WriterOptions {
            max_latency: Some(Duration::from_millis(1000)),
            faults: InjectedFaults {
                slow_encoder: Some(("slow".into(), Duration::from_millis(150))),
                ..Default::default()
            },
            ..options(500)
        },
    );
    let mut chunks_while_behind = std::collections::BTreeSet::new();
    let began = grabd::clock::monotonic_us();
    for i in 0..60u64 {
        // Frames in real time, stamped on the monotonic clock as a source stamps them.
        let due = began + i as i64 * FRAME_US;
        let now = grabd::clock::monotonic_us();
        if due > now {
            std::thread::sleep(Duration::from_micros((due - now) as u64));
        }
        for name in ["imu", "slow"] {
            let frame = rig.spec(name).frame(due, i);
            rig.sender(name).push(frame);
        }
        // From 2 s on, chunks 0-2 are complete (both streams went past them).
        if i >= 50 {
            chunks_while_behind.extend(files_ending(&rig.spool, ".mkv"));
        }
    }
    let report = rig.stop_cleanly();
    assert!(
        chunks_while_behind.is_empty(),
        "the finalizer merged chunks while the slow encoder was behind: {chunks_while_behind:?}"
    );
    assert!(
        !report.finalize.waited_for_encoders.is_zero(),
        "the finalizer never waited"
    );
    let encoded: Vec<(&str, u64)> = report
        .streams
        .iter()
        .map(|s| (s.name.as_str(), s.frames_encoded))
        .collect();
    let slow = report.streams.iter().find(|s| s.name == "slow").unwrap();
    assert!(
        slow.dropped_overload > 0 && slow.frames_encoded > 0,
        "the slow stream should shed some frames and keep others: {slow:?}"
    );
    // Everything the encoders took is in the final file, once stop let the finalizer work.
    let tracks = read_tracks(&rig.final_path);
    for (name, frames) in encoded {
        assert_eq!(track(&tracks, name).packets.len() as u64, frames, "{name}");
    }
    assert_eq!(report.finalize.chunks.len(), 5, "chunks of 0.5 s in 2.4 s");
    rig.assert_no_leftovers();
}
