//! Issue 13: every mistake gets one right line, and nothing is left behind. Config,
//! encoder and command-line mistakes print one line naming the cause (for a config:
//! `config FILE:LINE:COL: key: what is wrong`); exit codes never hide a failure; a
//! refusal creates no folder.

mod common;

use common::cli::{assert_config_refused, CONFIG};

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
