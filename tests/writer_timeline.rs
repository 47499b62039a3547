//! The ChunkedWriter's timeline, checked by reading its files back: exact chunk counts
//! and boundaries, one origin shared by every stream, a continuous and complete final
//! file, IMU packets on their frames' times with byte-identical payloads, chunk ids from
//! `start_chunk_callback`, and nothing temporary left behind.

mod common;

use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};

use common::*;
use grabd::recording::probe::inspect;
use grabd::recording::{StartChunkCallback, VideoStreamConfig, WriterOptions};
use grabd::thread::{ENCODER_NICE, FINALIZER_NICE};

const ALL: [&str; 3] = ["rgb", "depth", "imu"];

/// 5.5 s of 25 fps at 2 s chunks: exactly 3 chunks starting at 0, 2 s and 4 s; the frame
/// at exactly 2.000 s opens chunk 2 at PTS 0; every chunk starts with a keyframe on every
/// video track and decodes on its own.
#[test]
fn five_and_a_half_seconds_make_exactly_three_chunks() {
    let mut rig = Rig::start("three", standard_specs(), options(2000));
    // Frames 0..=137 at 0, 40, ..., 5480 ms: 5.5 s of video.
    for i in 0..138 {
        rig.push_all(&ALL, i);
    }
    let report = rig.stop_cleanly();
    assert_eq!(report.origin.map(|o| o.monotonic_us), Some(T0));

    let chunks = rig.chunks();
    let starts: Vec<i64> = chunks.iter().map(|(s, _)| *s).collect();
    assert_eq!(
        starts,
        vec![0, 2_000_000, 4_000_000],
        "chunk start tags on disk"
    );
    let ids = chunk_ids(&report);
    assert_eq!(ids, ["00000", "00001", "00002"]);
    for (info, (start, path)) in report.finalize.chunks.iter().zip(&chunks) {
        assert_eq!(&info.path, path);
        assert_eq!(info.start_us, *start);
        assert_eq!(path, &rig.spool.join(format!("{}.mkv", info.id)));
    }

    for (k, (start, path)) in chunks.iter().enumerate() {
        let tracks = read_tracks(path);
        assert_eq!(
            track_names(&tracks),
            ALL,
            "chunk {k}: tracks in configured order"
        );
        // The frames of chunk k are exactly those with media time in [k·2 s, (k+1)·2 s),
        // at PTS relative to the chunk's start.
        let expected: Vec<i64> = (0..138)
            .map(|i| i * FRAME_US)
            .filter(|t| t / 2_000_000 == k as i64)
            .map(|t| t - start)
            .collect();
        for name in ALL {
            let t = track(&tracks, name);
            assert_eq!(t.pts(), expected, "chunk {k} track {name}: PTS");
            if name != "imu" {
                assert!(
                    t.packets[0].key,
                    "chunk {k} track {name}: first packet is not a keyframe"
                );
            }
        }
        if k == 1 {
            // The frame stamped exactly 2.000 s after the origin (frame 50) opens chunk 2.
            let rgb = track(&tracks, "rgb");
            assert_eq!(rgb.packets[0].pts_us, 0);
            assert_eq!(rgb.packets.len(), 50);
        }
        let summary = inspect(path, true, None).expect("inspect chunk");
        for name in ["rgb", "depth"] {
            let t = summary.track(name).expect("video track");
            assert_eq!(t.decode_errors, 0, "chunk {k} {name} decode errors");
            assert_eq!(
                t.frames_decoded, t.packets,
                "chunk {k} {name}: every packet decodes on its own"
            );
        }
    }
    rig.assert_no_leftovers();
}

/// Frames a hair either side of a boundary: 1.999 s stays in chunk 1, 2.000 s opens
/// chunk 2 with a keyframe, 4.000 s opens chunk 3.
#[test]
fn frames_on_and_around_boundaries_land_in_the_right_chunk() {
    let mut rig = Rig::start("edges", rgb_and_imu_specs(rgb_config()), options(2000));
    let times_ms = [0, 1000, 1999, 2000, 2001, 3999, 4000];
    for (i, ms) in times_ms.iter().enumerate() {
        rig.push("rgb", T0 + ms * 1000, i as u64);
        rig.push("imu", T0 + ms * 1000, i as u64);
    }
    rig.stop_cleanly();
    let chunks = rig.chunks();
    let starts: Vec<i64> = chunks.iter().map(|(s, _)| *s).collect();
    assert_eq!(starts, vec![0, 2_000_000, 4_000_000]);
    let expected_ms: [&[i64]; 3] = [&[0, 1000, 1999], &[0, 1, 1999], &[0]];
    for ((k, (_, path)), expected) in chunks.iter().enumerate().zip(expected_ms) {
        let tracks = read_tracks(path);
        let expected: Vec<i64> = expected.iter().map(|ms| ms * 1000).collect();
        for name in ["rgb", "imu"] {
            assert_eq!(track(&tracks, name).pts(), expected, "chunk {k} {name}");
        }
        assert!(
            track(&tracks, "rgb").packets[0].key,
            "chunk {k}: rgb starts with a keyframe"
        );
    }
    let final_tracks = read_tracks(&rig.final_path);
    let all: Vec<i64> = times_ms.iter().map(|ms| ms * 1000).collect();
    assert_eq!(track(&final_tracks, "rgb").pts(), all);
    assert_eq!(track(&final_tracks, "imu").pts(), all);
    rig.assert_no_leftovers();
}

/// Streams starting at different times share one origin, set by the earliest processed
/// frame: a frame older than it is dropped (never a negative PTS), a stream joining late
/// starts at its true offset, every stream's first PTS in each later chunk is within one
/// frame period of the others, and the final file keeps every offset exactly.
#[test]
fn streams_share_one_origin() {
    let mut rig = Rig::start("origin", standard_specs(), options(2000));
    // depth's frame at T0 is processed first and defines media time 0.
    rig.push("depth", T0, 0);
    assert!(
        wait_until(Duration::from_secs(10), || rig.writer.origin().is_some()),
        "no origin after the first frame"
    );
    assert_eq!(rig.writer.origin().map(|o| o.monotonic_us), Some(T0));
    // An rgb frame from before the origin: dropped as late, not written at a negative PTS.
    assert!(rig
        .sender("rgb")
        .push(rig.spec("rgb").frame(T0 - FRAME_US, 0)));

    // depth every 40 ms from 0, imu from 10 ms, rgb joins at 1020 ms; up to 5 s.
    let mut events: Vec<(i64, &'static str)> = Vec::new();
    for k in 1..125 {
        events.push((k * FRAME_US, "depth"));
    }
    for k in 0..125 {
        events.push((10_000 + k * FRAME_US, "imu"));
    }
    for k in 0..100 {
        events.push((1_020_000 + k * FRAME_US, "rgb"));
    }
    events.sort();
    for (n, (media_us, name)) in events.into_iter().enumerate() {
        rig.push(name, T0 + media_us, n as u64);
    }
    let report = rig.stop_cleanly();
    let rgb_stats = report.streams.iter().find(|s| s.name == "rgb").unwrap();
    assert_eq!(rgb_stats.dropped_late, 1, "the pre-origin rgb frame");

    let chunks = rig.chunks();
    assert_eq!(chunks.len(), 3);
    let mut firsts = Vec::new();
    for (k, (_, path)) in chunks.iter().enumerate() {
        let tracks = read_tracks(path);
        let first = |name| track(&tracks, name).packets[0].pts_us;
        let f = [first("depth"), first("imu"), first("rgb")];
        if k > 0 {
            let spread = f.iter().max().unwrap() - f.iter().min().unwrap();
            assert!(
                spread < FRAME_US,
                "chunk {k}: first PTS {f:?} (depth, imu, rgb) spread more than one frame"
            );
        }
        firsts.push(f);
    }
    assert_eq!(
        firsts,
        vec![
            [0, 10_000, 1_020_000],
            [0, 10_000, 20_000],
            [0, 10_000, 20_000]
        ],
        "first PTS per chunk (depth, imu, rgb)"
    );

    // The final file: every packet exactly at (timestamp − origin), no stream rebased.
    let tracks = read_tracks(&rig.final_path);
    for name in ALL {
        let pts = track(&tracks, name).pts();
        assert_eq!(pts, rig.accepted_media_us(name, T0), "final {name}: PTS");
        assert!(pts.iter().all(|&p| p >= 0));
    }
    rig.assert_no_leftovers();
}

/// The final file across five chunk joins: PTS strictly increasing with no gap over one
/// frame period, every pushed frame present (counted by libavformat and by ffprobe), and
/// every video packet decodes without error.
#[test]
fn final_file_is_continuous_complete_and_decodable() {
    let mut rig = Rig::start("final", standard_specs(), options(1000));
    let frames = 115; // 4.6 s at 1 s chunks: 5 chunks.
    for i in 0..frames {
        rig.push_all(&ALL, i);
    }
    let report = rig.stop_cleanly();
    assert_eq!(rig.chunks().len(), 5);
    let (path, summary) = report.finalize.final_output.clone().expect("final file");
    assert_eq!(path, rig.final_path);

    let tracks = read_tracks(&rig.final_path);
    assert_eq!(track_names(&tracks), ALL);
    let counts = ffprobe_packet_counts(&rig.final_path);
    for name in ALL {
        let pts = track(&tracks, name).pts();
        assert_continuous(&format!("final {name}"), &pts, FRAME_US);
        assert_eq!(
            pts.len() as u64,
            frames,
            "{name}: packets in the final file"
        );
        assert_eq!(pts, rig.accepted_media_us(name, T0), "{name}: PTS");
        assert_eq!(counts.get(name), Some(&frames), "{name}: ffprobe's count");
        let claimed = summary.packets.iter().find(|(n, _)| n == name).map(|x| x.1);
        assert_eq!(claimed, Some(frames), "{name}: the finalizer's own count");
    }
    let decoded = inspect(&rig.final_path, true, None).expect("inspect final");
    assert!(!decoded.truncated);
    assert_eq!(decoded.decode_errors(), 0);
    for name in ["rgb", "depth"] {
        let t = decoded.track(name).unwrap();
        assert_eq!(t.frames_decoded, frames, "{name}: decoded frames");
        assert!(t.keyframes >= 5, "{name}: a keyframe per chunk at least");
    }
    rig.assert_no_leftovers();
}

/// IMU records pushed with their video frames' timestamps sit at exactly those frames'
/// times in every chunk (after the merge) and in the final file (after the concat), and
/// their payload bytes come back identical.
#[test]
fn imu_packets_sit_on_their_frames_times_with_identical_payloads() {
    let mut rig = Rig::start("imu", rgb_and_imu_specs(rgb_config()), options(1000));
    let frames = 80; // 3.2 s: 4 chunks
    for i in 0..frames {
        rig.push_all(&["rgb", "imu"], i);
    }
    rig.stop_cleanly();
    let chunks = rig.chunks();
    assert_eq!(chunks.len(), 4);
    let pushed = rig.accepted["imu"].clone();
    let mut next = 0;
    for (k, (start, path)) in chunks.iter().enumerate() {
        let tracks = read_tracks(path);
        let (rgb, imu) = (track(&tracks, "rgb"), track(&tracks, "imu"));
        assert_eq!(imu.medium, "subtitle");
        assert_eq!(imu.pts(), rgb.pts(), "chunk {k}: imu times = frame times");
        for p in &imu.packets {
            let (ts, data) = &pushed[next];
            assert_eq!(p.pts_us, ts - T0 - start, "chunk {k}: imu packet {next}");
            assert_eq!(&p.data, data, "chunk {k}: imu payload {next}");
            next += 1;
        }
    }
    assert_eq!(next, pushed.len(), "every imu record is in a chunk");

    let tracks = read_tracks(&rig.final_path);
    let (rgb, imu) = (track(&tracks, "rgb"), track(&tracks, "imu"));
    assert_eq!(imu.pts(), rgb.pts(), "final: imu times = frame times");
    assert_eq!(imu.packets.len(), pushed.len());
    for (p, (ts, data)) in imu.packets.iter().zip(&pushed) {
        assert_eq!(p.pts_us, ts - T0);
        assert_eq!(
            p.data,
            *data,
            "final: payload at {} ms differs: {:?}",
            p.pts_us / 1000,
            String::from_utf8_lossy(&p.data)
        );
    }
    rig.assert_no_leftovers();
}

/// `start_chunk_callback` names the chunk files (and parts): called once per chunk with
/// the writer's name, "mkv", and start times exactly one chunk length apart.
#[test]
fn start_chunk_callback_ids_name_the_chunk_files() {
    let calls: Arc<Mutex<Vec<(String, SystemTime, String)>>> = Arc::default();
    let seen = Arc::clone(&calls);
    let callback: StartChunkCallback = Arc::new(move |name: &str, at: SystemTime, ext: &str| {
        let mut calls = seen.lock().unwrap();
        calls.push((name.to_owned(), at, ext.to_owned()));
        format!("{name}_part{:02}", calls.len() - 1)
    });
    let mut rig = Rig::start(
        "cam7",
        standard_specs(),
        WriterOptions {
            start_chunk_callback: Some(callback),
            ..options(1000)
        },
    );
    for i in 0..70 {
        rig.push_all(&ALL, i); // 2.8 s: 3 chunks
    }
    let report = rig.stop_cleanly();

    let calls = calls.lock().unwrap().clone();
    assert_eq!(calls.len(), 3, "one callback per chunk");
    for (name, _, ext) in &calls {
        assert_eq!((name.as_str(), ext.as_str()), ("cam7", "mkv"));
    }
    for w in calls.windows(2) {
        assert_eq!(
            w[1].1.duration_since(w[0].1).ok(),
            Some(Duration::from_secs(1)),
            "chunk start times one chunk length apart"
        );
    }
    let mut on_disk: Vec<String> = std::fs::read_dir(&rig.spool)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|n| n.ends_with(".mkv"))
        .collect();
    on_disk.sort();
    assert_eq!(
        on_disk,
        ["cam7_part00.mkv", "cam7_part01.mkv", "cam7_part02.mkv"]
    );
    let ids = chunk_ids(&report);
    assert_eq!(ids, ["cam7_part00", "cam7_part01", "cam7_part02"]);
    let tracks = read_tracks(&rig.final_path);
    for name in ALL {
        assert_eq!(track(&tracks, name).packets.len(), 70);
    }
    rig.assert_no_leftovers();
}

/// Codec options pass through, B-frames included: with `bf=2` the chunks hold every
/// frame, and so must the final file (all frames, decodable). Packets of a B-frame stream
/// come back from Matroska in decode order, with PTS out of order and no DTS on the
/// first ones of each chunk.
#[test]
fn b_frames_survive_merge_and_concat() {
    assert_b_frames_survive("bframes", rgb_config().with_option("bf", "2"));
}

/// The same for HEVC (libx265 ultrafast, 3 B-frames, as its preset has by default). One
/// encoder serves every chunk, so a chunk's packets may decode before the chunk starts.
#[test]
fn hevc_b_frames_survive_merge_and_concat() {
    let hevc = VideoStreamConfig::new(160, 96, 25.0)
        .and_then(|c| c.with_codec("libx265", "rgb24", "yuv420p"))
        .expect("libx265 config")
        .with_option("preset", "ultrafast")
        .with_option("bf", "3");
    assert_b_frames_survive("hevc_bframes", hevc);
}

/// Record 3 s of `rgb` (a codec with B-frames) and imu in 1 s chunks: every chunk holds
/// exactly its rgb frames, and the final file all of them, decoding without an error
/// (with error detection on).
fn assert_b_frames_survive(name: &str, rgb: VideoStreamConfig) {
    let mut rig = Rig::start(name, rgb_and_imu_specs(rgb), options(1000));
    let frames = 75; // 3 s: 3 chunks
    for i in 0..frames {
        rig.push_all(&["rgb", "imu"], i);
    }
    let report = rig.stop();
    let expected = rig.accepted_media_us("rgb", T0);
    let chunks = rig.chunks();
    assert_eq!(chunks.len(), 3);
    for (k, (start, path)) in chunks.iter().enumerate() {
        let mut pts = track(&read_tracks(path), "rgb").pts();
        pts.sort_unstable();
        let mine: Vec<i64> = expected
            .iter()
            .filter(|t| (*t - start) >= 0 && (*t - start) < 1_000_000)
            .map(|t| t - start)
            .collect();
        assert_eq!(pts, mine, "chunk {k}: every rgb frame");
    }
    assert!(
        report.finalize.errors.is_empty(),
        "{:?}",
        report.finalize.errors
    );
    let tracks = read_tracks(&rig.final_path);
    let mut pts = track(&tracks, "rgb").pts();
    pts.sort_unstable();
    assert_eq!(pts, expected, "final: every rgb frame");
    assert_eq!(
        track(&tracks, "imu").pts(),
        rig.accepted_media_us("imu", T0)
    );
    rig.assert_final_decodes(&[("rgb", frames)]);
}

/// An encoder that holds 1.6 s of frames (B-frames, lookahead) across 1 s chunks is kept
/// for the whole recording: x264 announces itself once, not once per chunk. Its packets
/// still land in the chunk of their timestamp, and every chunk starts with the keyframe
/// the writer forced, including FFV1's (that encoder is reopened per chunk instead).
#[test]
fn one_h264_encoder_serves_every_chunk_and_each_starts_on_a_forced_keyframe() {
    let specs = vec![
        Spec::Video("rgb", deep_rgb_config()),
        Spec::Video("depth", depth_config()),
        Spec::Data("imu"),
    ];
    let mut rig = Rig::start("deep", specs, options(1000));
    let frames = 100; // 4 chunks
    for i in 0..frames {
        rig.push_all(&ALL, i);
    }
    rig.stop_cleanly();
    let chunks = rig.chunks();
    assert_eq!(chunks.len(), 4);
    for (start, path) in &chunks {
        for name in ["rgb", "depth"] {
            assert_chunk_track(
                path,
                *start,
                1_000_000,
                name,
                &rig.accepted_media_us(name, T0),
            );
        }
    }
    let tracks = read_tracks(&rig.final_path);
    assert_eq!(
        x264_encoder_starts(track(&tracks, "rgb")),
        1,
        "one x264 encoder"
    );
    rig.assert_final_decodes(&[("rgb", frames)]);
}

/// Every thread of this process: (name, nice value), from /proc.
fn threads_and_nice() -> Vec<(String, i32)> {
    let mut out = Vec::new();
    for task in std::fs::read_dir("/proc/self/task").expect("read /proc/self/task") {
        let Ok(stat) = std::fs::read_to_string(task.expect("task entry").path().join("stat"))
        else {
            continue; // the thread ended meanwhile
        };
        let (Some(open), Some(close)) = (stat.find('('), stat.rfind(')')) else {
            continue;
        };
        let name = stat[open + 1..close].to_owned();
        // After ") ": state is field 3; nice is field 19 of stat(5).
        let fields: Vec<&str> = stat[close + 2..].split(' ').collect();
        let nice: i32 = fields[16].parse().expect("nice field");
        out.push((name, nice));
    }
    out
}

fn own_nice() -> i32 {
    let stat = std::fs::read_to_string("/proc/thread-self/stat").expect("stat");
    let close = stat.rfind(')').expect(")");
    stat[close + 2..]
        .split(' ')
        .nth(16)
        .expect("nice")
        .parse()
        .expect("nice value")
}

/// What is wrong with the threads' priorities, if anything.
fn check(threads: &[(String, i32)], base: i32) -> Result<(), String> {
    let nice_of = |name: &str| -> Vec<i32> {
        threads
            .iter()
            .filter(|(n, _)| n == name)
            .map(|(_, nice)| *nice)
            .collect()
    };
    let (encoder, finalizer) = (base + ENCODER_NICE, base + FINALIZER_NICE);
    let rgb = nice_of("enc-rgb");
    // The stream's thread and libx264's workers, which take the name (and priority) of
    // the thread that opened the codec.
    let want = [
        (
            "enc-rgb",
            !rgb.is_empty() && rgb.iter().all(|&n| n == encoder),
        ),
        ("finalize", nice_of("finalize") == [finalizer]),
        ("enc-imu", nice_of("enc-imu") == [base]),
        ("part-sync", nice_of("part-sync") == [base]),
    ];
    match want.iter().find(|(_, ok)| !ok) {
        None => Ok(()),
        Some((name, _)) => Err(format!(
            "{name}: want video encoding at nice {encoder}, the finalizer at {finalizer}, \
             the rest at {base}; threads {threads:?}"
        )),
    }
}

/// The CPU is shared out by how late work may be: video encoding (and the codec's own
/// worker threads) runs below the process's priority and the finalizer below that, so
/// that on a board that cannot keep up capture, the data streams and the fsyncs still
/// run on time and the encoders are what sheds.
#[test]
fn video_encoders_and_their_codec_threads_run_below_the_data_streams_and_the_syncer() {
    let base = own_nice();
    let mut rig = Rig::start("prio", rgb_and_imu_specs(threaded_rgb()), options(1000));
    for i in 0..10 {
        rig.push_all(&["rgb", "imu"], i);
    }
    // Each thread names itself and sets its priority as it starts: wait for that.
    wait_until(Duration::from_secs(20), || {
        check(&threads_and_nice(), base).is_ok()
    });
    let result = check(&threads_and_nice(), base);
    rig.stop_cleanly();
    result.unwrap();
    assert_eq!(own_nice(), base, "the caller's own priority is unchanged");
}

/// The test rgb stream with libx264 on two threads of its own.
fn threaded_rgb() -> VideoStreamConfig {
    rgb_config().with_option("threads", "2")
}

/// After a stall a source may deliver frames under 1 ms apart (a camera draining its
/// buffers, a paced source catching up). Matroska stores whole milliseconds, so the
/// writer keeps one frame per millisecond and counts the rest as late: every track of
/// the final file has strictly increasing timestamps, and the file decodes.
#[test]
fn a_burst_after_a_stall_keeps_timestamps_strictly_increasing_in_the_file() {
    let mut rig = Rig::start("burst", rgb_and_imu_specs(rgb_config()), options(1000));
    // 20 frames 40 ms apart, a 2 s stall, 10 frames 300 µs apart, 10 frames 40 ms apart.
    let resume = T0 + 20 * FRAME_US + 2_000_000;
    let mut stamps: Vec<i64> = (0..20).map(|i| T0 + i * FRAME_US).collect();
    stamps.extend((0..10).map(|j| resume + j * 300));
    stamps.extend((1..=10).map(|k| resume + 2_700 + k * FRAME_US));
    for (i, &ts) in stamps.iter().enumerate() {
        rig.push("rgb", ts, i as u64);
        rig.push("imu", ts, i as u64);
    }
    let report = rig.stop_cleanly();
    // The burst's milliseconds (rounded as libav does): 0 0 1 1 1 2 2 2 2 3 from the
    // resume: four of its ten frames stay.
    for s in &report.streams {
        assert_eq!(s.dropped_late, 6, "{}: frames dropped as late", s.name);
        assert_eq!(s.frames_encoded, 34, "{}: frames encoded", s.name);
    }
    let tracks = read_tracks(&rig.final_path);
    for name in ["rgb", "imu"] {
        let mut pts = track(&tracks, name).pts();
        assert_eq!(pts.len(), 34, "{name}: packets in the final file");
        pts.sort_unstable();
        assert!(
            pts.windows(2).all(|w| w[1] - w[0] >= 1000),
            "{name}: two packets within one millisecond: {pts:?}"
        );
    }
    rig.assert_final_decodes(&[("rgb", 34)]);
}

/// Packets of `path` as far as it reads now (it may be growing), or `None` while it
/// cannot be opened.
fn packets_so_far(path: &std::path::Path) -> Option<usize> {
    use ffmpeg_next as ff;
    ff::init().ok()?;
    let mut input = ff::format::input(&path).ok()?;
    let mut n = 0;
    while ff::Packet::empty().read(&mut input).is_ok() {
        n += 1;
    }
    Some(n)
}

/// Regression test (issue 12 item 1, the `slow` load): a stream that sheds keeps only
/// a frame now and then, so its gaps already take most of the loss bound, and holding
/// each kept frame in its cluster for `cluster_time_limit` + 100 ms of real time added
/// up to 350 ms more. Once a stream has shed a frame, a cluster is ended as soon as it
/// holds a packet. A 10 s cluster limit makes the difference plain: the kept record
/// reaches its part long before the hold would end.
#[test]
fn a_frame_kept_by_a_stream_that_sheds_reaches_its_part_at_once() {
    let mut options = WriterOptions {
        max_latency: Some(Duration::from_secs(20)),
        ..options(60_000)
    };
    options.muxer.cluster_time_limit_ms = 10_000;
    let mut rig = Rig::start("sheds", vec![Spec::Data("imu")], options);
    let now = grabd::clock::monotonic_us();
    // Waited 15 s when taken: more than the 9.55 s a frame may wait here, so it is shed.
    rig.push("imu", now - 15_000_000, 0);
    rig.push("imu", grabd::clock::monotonic_us(), 1);
    let part = rig.spool.join("00000.imu.mkv.part");
    let pushed = std::time::Instant::now();
    while packets_so_far(&part) != Some(1) {
        assert!(
            pushed.elapsed() < Duration::from_secs(5),
            "the kept record did not reach {} within 5 s (the cluster hold is 10.1 s)",
            part.display()
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    rig.stop_cleanly();
    let tracks = read_tracks(&rig.final_path);
    assert_eq!(
        track(&tracks, "imu").packets.len(),
        1,
        "the old record was shed"
    );
}

/// Regression test (issue 12 item 1): the muxer held a cluster in memory until it
/// spanned `cluster_time_limit` of media, so the newest frame of a stream that runs
/// slowly or sheds frames stayed off the card for as long as no later frame came. Under
/// a latency budget a cluster is ended once its oldest packet was captured
/// `cluster_time_limit` + 100 ms ago: a lone frame reaches its part on its own.
#[test]
fn under_a_latency_budget_a_lone_frame_reaches_its_part_without_a_next_one() {
    let options = WriterOptions {
        max_latency: Some(Duration::from_secs(1)),
        ..options(60_000)
    };
    let mut rig = Rig::start("lone", vec![Spec::Data("imu")], options);
    rig.push("imu", grabd::clock::monotonic_us(), 0);
    let part = rig.spool.join("00000.imu.mkv.part");
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    while packets_so_far(&part) != Some(1) {
        assert!(
            std::time::Instant::now() < deadline,
            "the frame did not reach {} within 20 s",
            part.display()
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    rig.stop_cleanly();
    let tracks = read_tracks(&rig.final_path);
    assert_eq!(track(&tracks, "imu").packets.len(), 1);
}
