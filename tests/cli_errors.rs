//! Issue 13: every mistake gets one right line, and nothing is left behind. Config,
//! encoder and command-line mistakes print one line naming the cause (for a config:
//! `config FILE:LINE:COL: key: what is wrong`); exit codes never hide a failure; a
//! refusal creates no folder.

mod common;

use common::cli::{assert_config_refused, grabd, verify, Rig, Run, CONFIG};

/// `FILE:LINE:COL` of the first `needle` in `text` (1-based, as editors count).
fn position(text: &str, needle: &str) -> String {
    let at = text.find(needle).expect("needle in text");
    let line = text[..at].matches('\n').count() + 1;
    let col = at - text[..at].rfind('\n').map_or(0, |nl| nl + 1) + 1;
    format!("bad.toml:{line}:{col}")
}

/// Issue 13 item 1: TOML mistakes say where they are and which key.
#[test]
fn toml_mistakes_name_file_line_column_and_key() {
    let syntax = "[recording]\n\n[[stream]\nname = \"x\"\n";
    assert_config_refused(Some(syntax.as_bytes()), None, "bad.toml:3:");

    let text = "[recording]\nchunk_length_s = \"ten\"\n";
    let at = position(text, "\"ten\"");
    assert_config_refused(
        Some(text.as_bytes()),
        None,
        &format!("{at}: recording.chunk_length_s: "),
    );

    let text = "[recording]\nchunk_lenght_s = 1.0\n";
    let at = position(text, "chunk_lenght_s");
    assert_config_refused(
        Some(text.as_bytes()),
        None,
        &format!("{at}: recording.chunk_lenght_s: "),
    );

    // Inside a stream (its own fields are read in a second pass).
    let text = CONFIG.replace("bitrate = 300000", "bitrate = -5");
    let at = position(&text, "-5");
    assert_config_refused(
        Some(text.as_bytes()),
        None,
        &format!("{at}: stream \"rgb\".bitrate: "),
    );
    let text = CONFIG.replace(
        "fps = 25\ncodec = \"ffv1\"",
        "fps = 25\ncolour = 1\ncodec = \"ffv1\"",
    );
    let at = position(&text, "colour");
    assert_config_refused(
        Some(text.as_bytes()),
        None,
        &format!("{at}: stream \"depth\".colour: "),
    );

    // A missing key: the stream that lacks it.
    let text = CONFIG.replace("width = 80\n", "");
    let at = position(&text, "[[stream]]\nname = \"depth\"");
    assert_config_refused(
        Some(text.as_bytes()),
        None,
        &format!("{at}: stream \"depth\": missing field `width`"),
    );

    // Values that parse but are out of range point at the value too.
    let text = "[recording]\nchunk_length_s = 0.0\n";
    let at = position(text, "0.0");
    assert_config_refused(
        Some(text.as_bytes()),
        None,
        &format!("{at}: recording.chunk_length_s: "),
    );
    let text = CONFIG.replace("\"libx264\"", "\"nope264\"");
    let at = position(&text, "\"nope264\"");
    assert_config_refused(
        Some(text.as_bytes()),
        None,
        &format!("{at}: stream \"rgb\".codec: "),
    );
}

/// The first line of a refused command line (clap adds its usage block after it).
fn first_error_line(args: &[&str]) -> String {
    let r = grabd(args);
    assert_eq!(r.code, 2, "{args:?}: exit {} ({})", r.code, r.stderr);
    assert!(r.stdout.trim().is_empty(), "{args:?}: stdout {}", r.stdout);
    r.stderr.lines().next().unwrap_or_default().to_owned()
}

/// Issue 13 item 4: messages that say what the limit is, one set of limits for the
/// command line and the config, and clap's first line naming the problem.
#[test]
fn limits_are_named_right_and_shared_by_cli_and_config() {
    let rig = Rig::new();
    let (s, o) = (rig.spool.to_str().unwrap(), rig.output.to_str().unwrap());
    let record = |extra: &[&str]| {
        let mut args = vec!["record", "--spool", s, "--output", o];
        args.extend_from_slice(extra);
        first_error_line(&args)
    };
    let line = record(&["--duration", "1e30"]);
    assert!(
        line.contains("--duration") && line.contains("1e30"),
        "{line}"
    );
    assert!(!line.contains("positive"), "1e30 is positive: {line}");
    assert!(line.contains("..10000000 s"), "the limit: {line}");

    // The config's chunk limit, on the command line too (not "spool is full").
    let line = record(&["--duration", "1", "--chunk-length", "1e6"]);
    assert!(line.contains("--chunk-length"), "{line}");
    assert!(line.contains("86400"), "{line}");
    assert!(!line.contains("full"), "{line}");
    let cli = record(&["--duration", "1", "--chunk-length", "100000"]);
    assert!(cli.contains("0.1..86400"), "{cli}");
    assert_config_refused(
        Some(b"[recording]\nchunk_length_s = 100000\n"),
        None,
        "recording.chunk_length_s: must be 0.1..86400 s, got 100000",
    );
    rig.assert_nothing_left();

    // A range that includes the refused value is no explanation.
    let text = CONFIG.replace("rate_hz = 100", "rate_hz = 0");
    let rig2 = Rig::with_config(&text);
    let r = rig2.run_record("1");
    let line = r.one_line_error();
    assert!(line.contains("rate_hz") && line.contains("got 0"), "{line}");
    assert!(!line.contains("0..10000"), "0 is refused: {line}");

    // clap: the first line says what is missing or wrong.
    let line = first_error_line(&["record"]);
    assert!(
        line.contains("--spool") && line.contains("--output"),
        "{line}"
    );
    let line = first_error_line(&["record", "--spool", s, "--output", o]);
    assert!(line.contains("--duration"), "{line}");
    let line = first_error_line(&["verify"]);
    assert!(line.contains("FILE"), "{line}");
    let line = first_error_line(&[]);
    assert!(line.contains("command"), "{line}");
}

/// Issue 13 item 6: inputs that must be refused with one line, never a panic or a
/// value changed in silence.
#[test]
fn doubtful_settings_are_refused_with_one_line() {
    let recording = |key_value: &str| format!("[recording]\n{key_value}\n");
    for (text, needle) in [
        (
            recording("rotation_grace_s = 1e20"),
            "recording.rotation_grace_s: must be",
        ),
        (
            recording("sync_interval_ms = 5"),
            "recording.sync_interval_ms: must be",
        ),
        (
            recording("cluster_time_limit_ms = 100000"),
            "recording.cluster_time_limit_ms: must be",
        ),
        (
            recording("min_free_mb = 17592186044416"),
            "recording.min_free_mb: must be",
        ),
        (
            recording("max_encoder_queue_size = 0"),
            "recording.max_encoder_queue_size: must be",
        ),
        (
            recording("max_latency_ms = 10"),
            "recording.max_latency_ms: must be",
        ),
        (
            recording("max_queue_mb = 0"),
            "recording.max_queue_mb: must be",
        ),
        ("stream = []\n".to_owned(), "stream: "),
        (
            CONFIG.replace(
                "batch_with = \"rgb\"",
                "batch_with = \"rgb\"\ncodec = \"dvdsub\"",
            ),
            "stream \"imu\".codec: ",
        ),
        (
            CONFIG.replace("batch_with = \"rgb\"", "batch_hz = 0"),
            "stream \"imu\".batch_hz: must be",
        ),
    ] {
        assert_config_refused(Some(text.as_bytes()), None, needle);
    }
}

/// Issue 13 item 5: a refused recording creates nothing, not even the empty folders.
#[test]
fn refusals_create_no_folders() {
    // A config mistake the encoder finds (an odd width for 4:2:0).
    let text = CONFIG.replace("width = 160", "width = 161");
    let rig = Rig::with_config(&text);
    let r = rig.run_record("1");
    assert_eq!(r.code, 2, "{}", r.stderr);
    assert!(!rig.spool.exists() && !rig.output.exists(), "{}", r.stderr);

    // Storage too small for the reserve: refused before any folder is made.
    let rig =
        Rig::with_config(&CONFIG.replace("[recording]", "[recording]\nmin_free_mb = 1000000"));
    let r = rig.run_record("1");
    assert_eq!(r.code, 2, "{}", r.stderr);
    assert!(r.one_line_error().contains("full"), "{}", r.stderr);
    assert!(
        !rig.spool.exists() && !rig.output.exists(),
        "refused for space but made {} or {}",
        rig.spool.display(),
        rig.output.display()
    );
}

/// Issue 13 item 7: `recover` on a spool that does not exist has nothing to do (one line,
/// exit 0); a regular file is no spool (exit 2).
#[test]
fn recover_on_a_missing_or_wrong_spool() {
    let rig = Rig::new();
    let (s, o) = (rig.spool.to_str().unwrap(), rig.output.to_str().unwrap());
    let r = grabd(["recover", "--spool", s, "--output", o]);
    assert_eq!(r.code, 0, "{}", r.stderr);
    assert!(r.stdout.trim().is_empty(), "{}", r.stdout);
    let line = r.one_line_error();
    assert!(
        line.contains("nothing to recover") && line.contains(s),
        "{line}"
    );
    rig.assert_nothing_left();
    assert!(!rig.output.exists(), "recover made {o}");

    std::fs::write(&rig.spool, b"not a folder").unwrap();
    let r = grabd(["recover", "--spool", s, "--output", o]);
    assert_eq!(r.code, 2, "{}", r.stderr);
    let line = r.one_line_error();
    assert!(line.contains(s) && line.contains("not a folder"), "{line}");
    assert!(!rig.output.exists(), "recover made {o}");
}

/// Folders given relative to the working folder are made like any other (the check that
/// creates nothing before it passes must not stumble on the relative path's "" parent).
#[test]
fn relative_spool_and_output_work() {
    let rig = Rig::new();
    let out = std::process::Command::new(common::cli::BIN)
        .current_dir(&rig.root)
        .args(["record", "--config", "grabd.toml", "--spool", "spool"])
        .args(["--output", "out/recordings", "--duration", "0.5"])
        .env_remove("GRABD_LOG")
        .output()
        .unwrap();
    let r = common::cli::Run::from(out);
    assert_eq!(r.code, 0, "{}", r.stderr);
    let mkv = rig.root.join(r.last_line().expect("the final path"));
    assert!(mkv.starts_with(rig.root.join("out/recordings")), "{mkv:?}");
    common::cli::verify(&mkv);
}

/// The test config with its rgb camera changed by `(from, to)` replacements.
fn rgb_changed(changes: &[(&str, &str)]) -> String {
    changes.iter().fold(CONFIG.to_owned(), |text, (from, to)| {
        assert!(text.contains(from), "{from:?} is not in the test config");
        text.replacen(from, to, 1)
    })
}

/// Issue 13 item 2: an encoder that refuses to open is named with libav's own reason,
/// on grabd's one line (libav prints nothing of its own); what can be checked before
/// opening is (chroma-subsampled sizes, x264 presets). mpeg4, which cannot take
/// microseconds, gets a time base it takes and records.
#[test]
fn encoder_refusals_give_libavs_reason_in_one_line() {
    for (changes, needle) in [
        (
            &[
                ("width = 160", "width = 63"),
                ("height = 100", "height = 65"),
            ][..],
            "stream \"rgb\".width: 63 is not a multiple of 2, which yuv420p needs",
        ),
        (
            &[("width = 160", "width = 1"), ("height = 100", "height = 1")],
            "stream \"rgb\".width: 1 is not a multiple of 2",
        ),
        (
            &[
                ("width = 160", "width = 16384"),
                ("height = 100", "height = 16384"),
            ],
            "open encoder libx264: Picture size 16384x16384 is invalid",
        ),
        (
            &[("preset = \"ultrafast\"", "preset = \"warp9\"")],
            "stream \"rgb\".options: libx264 has no preset \"warp9\"",
        ),
        (
            &[("g = \"25\"", "g = \"banana\"")],
            "Unable to parse option value \"banana\"",
        ),
        (
            &[
                ("codec = \"libx264\"", "codec = \"mjpeg\""),
                (
                    "options = { preset = \"ultrafast\", bf = \"0\", g = \"25\" }",
                    "",
                ),
            ],
            "open encoder mjpeg: Non full-range YUV is non-standard",
        ),
    ] {
        assert_config_refused(Some(rgb_changed(changes).as_bytes()), None, needle);
    }

    let rig = Rig::with_config(&rgb_changed(&[
        ("codec = \"libx264\"", "codec = \"mpeg4\""),
        (
            "options = { preset = \"ultrafast\", bf = \"0\", g = \"25\" }",
            "",
        ),
    ]));
    let r = rig.run_record("1.5");
    assert_eq!(r.code, 0, "{}", r.stderr);
    let report = verify(std::path::Path::new(
        r.last_line().expect("the file's path"),
    ));
    assert_eq!(report["ok"], true, "{report}");
    let rgb = &report["streams"][0];
    assert_eq!(rgb["name"], "rgb", "{report}");
    assert!(rgb["frames_decoded"].as_u64().unwrap() >= 25, "{report}");
}

/// Issue 13 item 3: what passed the start-up check and then failed on the first frame
/// ("no frame was recorded; nothing written", exit 0) is refused up front: one line,
/// exit 2, nothing created.
#[test]
fn first_frame_failures_are_refused_up_front() {
    for (changes, needle) in [
        (
            &[
                ("codec = \"libx264\"", "codec = \"rawvideo\""),
                (
                    "output_pixel_format = \"yuv420p\"",
                    "output_pixel_format = \"rgb24\"",
                ),
                (
                    "options = { preset = \"ultrafast\", bf = \"0\", g = \"25\" }",
                    "",
                ),
            ][..],
            "stream \"rgb\": Matroska cannot hold rawvideo: Raw RGB is not supported",
        ),
        (
            &[
                ("width = 160", "width = 63"),
                ("codec = \"libx264\"", "codec = \"ffv1\""),
                (
                    "input_pixel_format = \"rgb24\"",
                    "input_pixel_format = \"yuyv422\"",
                ),
                (
                    "output_pixel_format = \"yuv420p\"",
                    "output_pixel_format = \"yuv422p\"",
                ),
                (
                    "options = { preset = \"ultrafast\", bf = \"0\", g = \"25\" }",
                    "",
                ),
            ],
            "stream \"rgb\".width: 63 is not a multiple of 2, which yuyv422 needs",
        ),
    ] {
        assert_config_refused(Some(rgb_changed(changes).as_bytes()), None, needle);
    }

    // A spool whose name is not UTF-8 (ffmpeg-next's path handling panicked on it in
    // every encoder thread).
    use std::os::unix::ffi::OsStrExt;
    let rig = Rig::new();
    let spool = rig.root.join(std::ffi::OsStr::from_bytes(b"spool-\xff"));
    let r = Run::from(
        rig.record_cmd(&rig.config, &spool, &rig.output, "1")
            .output()
            .unwrap(),
    );
    assert_eq!(r.code, 2, "{}", r.stderr);
    assert!(r.one_line_error().contains("is not UTF-8"), "{}", r.stderr);
    assert!(!spool.exists() && !rig.output.exists(), "{}", r.stderr);
}
