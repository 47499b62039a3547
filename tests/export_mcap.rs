//! `grabd export --format mcap` (issue 17 item 2): the file passes the mcap crate's
//! reader with its summary and indexes, every packet is there at its absolute time, and
//! the copied H.264 decodes with libavcodec from the messages alone.

mod common;

use std::collections::BTreeMap;
use std::path::PathBuf;

use common::cli::{grabd, Rig};
use foxglove::schemas::CompressedVideo;
use foxglove::Decode;

#[test]
fn mcap_passes_the_readers_checks_and_its_h264_decodes() {
    let rig = Rig::new();
    let r = rig.run_record("2");
    assert_eq!(r.code, 0, "{}", r.stderr);
    let mkv = PathBuf::from(r.last_line().unwrap());
    let out = rig.root.join("mcap");
    let r = grabd([
        "export".as_ref(),
        mkv.as_os_str(),
        "--format".as_ref(),
        "mcap".as_ref(),
        "--out".as_ref(),
        out.as_os_str(),
    ]);
    assert_eq!(r.code, 0, "{}", r.stderr);
    let stem = mkv.file_stem().unwrap().to_string_lossy();
    let file = out.join(format!("{stem}.mcap"));
    let bytes = std::fs::read(&file).unwrap();

    let summary = mcap::Summary::read(&bytes).unwrap().expect("a summary");
    assert!(!summary.chunk_indexes.is_empty(), "no chunk index");
    let stats = summary.stats.clone().expect("statistics");
    let mut read: BTreeMap<String, Vec<(u64, Vec<u8>)>> = BTreeMap::new();
    for message in mcap::MessageStream::new(&bytes).unwrap() {
        let message = message.expect("a message that passes its CRC checks");
        read.entry(message.channel.topic.clone())
            .or_default()
            .push((message.log_time, message.data.into_owned()));
    }
    // The summary's per-channel counts are the messages in the file.
    for (id, count) in &stats.channel_message_counts {
        let topic = &summary.channels[id].topic;
        assert_eq!(read[topic].len() as u64, *count, "{topic}");
    }
    // Every chunk's index points at messages that can be read through it.
    for index in &summary.chunk_indexes {
        let messages = summary.read_message_indexes(&bytes, index).unwrap();
        assert!(!messages.is_empty());
    }

    let tracks = common::read_tracks(&mkv);
    let origin_us: i64 = common::cli::read_json(&mkv.with_file_name(format!("{stem}.json")))
        ["origin_unix_us"]
        .as_i64()
        .unwrap();
    let rgb = common::track(&tracks, "rgb");
    let video = &read["/rgb/video"];
    assert_eq!(video.len(), rgb.packets.len());
    let times: Vec<u64> = rgb
        .pts()
        .iter()
        .map(|pts| ((origin_us + pts) * 1000) as u64)
        .collect();
    assert_eq!(video.iter().map(|(t, _)| *t).collect::<Vec<_>>(), times);
    assert_eq!(
        read["/depth/depth"].len(),
        common::track(&tracks, "depth").packets.len()
    );
    assert!(read["/imu"].len() > 50, "{}", read["/imu"].len());

    // Decode the copied H.264 with nothing but the messages (no extradata): Annex B
    // with SPS/PPS in band.
    ffmpeg_next::init().unwrap();
    let codec = ffmpeg_next::decoder::find(ffmpeg_next::codec::Id::H264).unwrap();
    let mut decoder = ffmpeg_next::codec::Context::new_with_codec(codec)
        .decoder()
        .video()
        .unwrap();
    let mut frame = ffmpeg_next::frame::Video::empty();
    let mut decoded = 0;
    for (_, data) in video {
        let message = CompressedVideo::decode(&data[..]).unwrap();
        assert_eq!(message.format, "h264");
        assert_eq!(&message.data[..4], &[0, 0, 0, 1], "Annex B start code");
        decoder
            .send_packet(&ffmpeg_next::Packet::copy(&message.data))
            .expect("a packet the decoder takes");
        while decoder.receive_frame(&mut frame).is_ok() {
            assert!(!frame.is_corrupt());
            decoded += 1;
        }
    }
    decoder.send_eof().unwrap();
    while decoder.receive_frame(&mut frame).is_ok() {
        decoded += 1;
    }
    assert_eq!(decoded, video.len());
}
