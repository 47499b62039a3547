//! The ChunkedWriter under faults, checked by reading its files back: stop in the middle
//! of a rotation, an encoder thread that fails, a stream that goes silent, and a producer
//! far faster than the encoder.

mod common;

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use common::*;
use grabd::recording::probe::inspect;
use grabd::recording::{ErrorCallback, Frame, VideoStreamConfig, WriterOptions};

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

/// A frame of the wrong size kills the rgb encoder thread: `on_error` fires exactly once
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
            ..options(2000)
        },
    );
    // 60 good frames (all of chunk 1 and 10 of chunk 2) on every stream.
    for i in 0..60 {
        rig.push_all(&ALL, i);
    }
    // Frame 60 of rgb has one byte too few: its encoder thread fails on it.
    let size = rgb_config().input_frame_size().unwrap();
    let bad = Frame::new(T0 + 60 * FRAME_US, vec![0u8; size - 1]);
    push_blocking(rig.sender("rgb"), bad);
    rig.push_all(&["depth", "imu"], 60);
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
