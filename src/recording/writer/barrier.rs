//! The rotation barrier, as a pure state machine: stream progress and the time in,
//! finished chunks out. No threads, no I/O, no clock of its own (every call takes
//! `now`), so gaps, late starts, dead streams and streams that join late are tested
//! here without an encoder.
//!
//! Each stream reports `closed_before`, the first chunk it has not finished, with the
//! part it closed. When every stream has passed chunk `k` the chunk is complete and
//! comes out as a [`ChunkJob`] (in chunk order). A stream that has not finished a chunk
//! `grace` after the first stream passed it is [`overdue`](Barrier::overdue): its
//! thread then closes the chunk without it (if it is silent), so one dead camera
//! cannot hold up the others.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use crate::recording::finalizer::ChunkJob;
use crate::recording::part::ClosedPart;

/// `closed_before` of a stream that has ended: it holds up no chunk.
pub(super) const ENDED: u64 = u64::MAX;

pub(super) struct Barrier {
    chunk_length_us: i64,
    grace: Duration,
    /// Chunks completed so far.
    generation: u64,
    /// Per stream: the first chunk index it has not finished ([`ENDED`] once it ended).
    closed_before: Vec<u64>,
    /// Chunks with an id, not yet complete, by index.
    pending: BTreeMap<u64, PendingChunk>,
    /// Ids handed out so far (the default id is this sequence number).
    ids_made: u64,
}

struct PendingChunk {
    id: String,
    parts: Vec<ClosedPart>,
    /// When the first stream passed this chunk's end (starts the grace period).
    first_passed: Option<Instant>,
}

/// What one [`Barrier::advance`] produced.
#[derive(Debug, Default)]
pub(super) struct Advanced {
    /// Chunks every stream has now passed, in order, for the finalizer.
    pub complete: Vec<ChunkJob>,
    /// A part for a chunk that is no longer pending (it was completed without this
    /// stream): no chunk holds it, so it must stay on disk for recovery.
    pub orphan: Option<ClosedPart>,
}

impl Barrier {
    pub fn new(streams: usize, chunk_length_us: i64, grace: Duration) -> Self {
        Barrier {
            chunk_length_us,
            grace,
            generation: 0,
            closed_before: vec![0; streams],
            pending: BTreeMap::new(),
            ids_made: 0,
        }
    }

    /// µs of media time from the origin at which chunk `index` starts.
    pub fn chunk_start_us(&self, index: u64) -> i64 {
        i64::try_from(index).unwrap_or(i64::MAX / 2) * self.chunk_length_us
    }

    /// Chunks completed so far.
    pub fn generation(&self) -> u64 {
        self.generation
    }

    /// The id of chunk `index`, creating its pending entry on first use with
    /// `make_id(sequence number)`.
    pub fn chunk_id(
        &mut self,
        index: u64,
        now: Instant,
        make_id: impl FnOnce(u64) -> String,
    ) -> String {
        if let Some(chunk) = self.pending.get(&index) {
            return chunk.id.clone();
        }
        let id = make_id(self.ids_made);
        self.ids_made += 1;
        let already_passed = self.closed_before.iter().any(|&c| c > index);
        self.pending.insert(
            index,
            PendingChunk {
                id: id.clone(),
                parts: Vec::new(),
                first_passed: already_passed.then_some(now),
            },
        );
        id
    }

    /// Stream `stream` has finished every chunk before `closed_before` ([`ENDED`]: it
    /// has ended), handing over the part of chunk `index` it closed, if any.
    pub fn advance(
        &mut self,
        stream: usize,
        closed_before: u64,
        closed: Option<(u64, ClosedPart)>,
        now: Instant,
    ) -> Advanced {
        let mut advanced = Advanced::default();
        if let Some((index, part)) = closed {
            match self.pending.get_mut(&index) {
                Some(chunk) => chunk.parts.push(part),
                None => advanced.orphan = Some(part),
            }
        }
        let mine = &mut self.closed_before[stream];
        *mine = (*mine).max(closed_before);
        for (_, chunk) in self.pending.range_mut(..closed_before) {
            chunk.first_passed.get_or_insert(now);
        }
        let slowest = self.closed_before.iter().copied().min().unwrap_or(ENDED);
        let done: Vec<u64> = self.pending.range(..slowest).map(|(k, _)| *k).collect();
        for index in done {
            if let Some(chunk) = self.pending.remove(&index) {
                self.generation += 1;
                advanced.complete.push(ChunkJob {
                    id: chunk.id,
                    start_us: self.chunk_start_us(index),
                    parts: chunk.parts,
                });
            }
        }
        advanced
    }

    /// If a chunk `stream` has not finished was passed by another stream at least the
    /// grace period before `now`, the index to close through (exclusive).
    pub fn overdue(&self, stream: usize, now: Instant) -> Option<u64> {
        let mine = self.closed_before[stream];
        self.pending
            .range(mine..)
            .filter(|(_, c)| {
                c.first_passed
                    .is_some_and(|t| now.saturating_duration_since(t) >= self.grace)
            })
            .map(|(k, _)| k + 1)
            .next_back()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::path::PathBuf;

    const GRACE: Duration = Duration::from_secs(2);

    fn part(stream: &str, index: u64) -> ClosedPart {
        ClosedPart {
            stream: stream.into(),
            path: PathBuf::from(format!("{index:05}.{stream}.mkv.part")),
            packets: 1,
        }
    }

    fn id(n: u64) -> String {
        format!("{n:05}")
    }

    /// Streams by index; each `close` opens the chunk (as a first packet would) and
    /// closes it, handing over its part.
    struct Rig {
        barrier: Barrier,
        names: Vec<&'static str>,
        t0: Instant,
        completed: Vec<ChunkJob>,
    }

    impl Rig {
        fn new(names: &[&'static str]) -> Self {
            Rig {
                barrier: Barrier::new(names.len(), 1_000_000, GRACE),
                names: names.to_vec(),
                t0: Instant::now(),
                completed: Vec::new(),
            }
        }

        fn at(&self, secs: f64) -> Instant {
            self.t0 + Duration::from_secs_f64(secs)
        }

        /// Some stream wrote the first packet of chunk `index` at `secs`.
        fn open(&mut self, index: u64, secs: f64) {
            let now = self.at(secs);
            self.barrier.chunk_id(index, now, id);
        }

        /// Stream `s` closed its part of chunk `index` and moved on to `next`.
        fn close(&mut self, s: usize, index: u64, next: u64, secs: f64) -> Option<ClosedPart> {
            let now = self.at(secs);
            let closed = Some((index, part(self.names[s], index)));
            let advanced = self.barrier.advance(s, next, closed, now);
            self.completed.extend(advanced.complete);
            advanced.orphan
        }

        /// Stream `s` passed up to `next` without a part (silent, or ended).
        fn pass(&mut self, s: usize, next: u64, secs: f64) {
            let now = self.at(secs);
            let advanced = self.barrier.advance(s, next, None, now);
            assert!(advanced.orphan.is_none());
            self.completed.extend(advanced.complete);
        }

        fn completed(&self) -> Vec<(i64, Vec<String>)> {
            self.completed
                .iter()
                .map(|job| {
                    let mut streams: Vec<String> =
                        job.parts.iter().map(|p| p.stream.clone()).collect();
                    streams.sort();
                    (job.start_us, streams)
                })
                .collect()
        }
    }

    fn streams(names: &[&str]) -> Vec<String> {
        names.iter().map(|s| s.to_string()).collect()
    }

    #[test]
    fn a_hundred_rotations_complete_each_chunk_once_in_order() {
        let mut rig = Rig::new(&["depth", "imu", "rgb"]);
        for k in 0..100u64 {
            let t = k as f64;
            rig.open(k, t);
            // Arrival order at the boundary varies.
            for s in [k as usize % 3, (k as usize + 1) % 3, (k as usize + 2) % 3] {
                rig.close(s, k, k + 1, t + 1.0);
            }
            assert_eq!(rig.barrier.generation(), k + 1);
        }
        let completed = rig.completed();
        assert_eq!(completed.len(), 100);
        for (k, (start, names)) in completed.iter().enumerate() {
            assert_eq!(*start, k as i64 * 1_000_000);
            assert_eq!(*names, streams(&["depth", "imu", "rgb"]));
        }
        assert!(rig.barrier.pending.is_empty());
    }

    #[test]
    fn a_chunk_waits_for_the_slowest_stream() {
        let mut rig = Rig::new(&["rgb", "imu"]);
        rig.open(0, 0.0);
        rig.open(0, 0.0);
        rig.close(0, 0, 1, 1.0);
        assert!(rig.completed.is_empty());
        assert_eq!(
            rig.barrier.overdue(1, rig.at(1.5)),
            None,
            "within the grace"
        );
        rig.close(1, 0, 1, 1.5);
        assert_eq!(rig.completed(), vec![(0, streams(&["imu", "rgb"]))]);
    }

    #[test]
    fn a_gap_in_one_stream_skips_its_part_of_those_chunks() {
        // imu delivers nothing during chunks 1 and 2, then carries on in chunk 3.
        let mut rig = Rig::new(&["rgb", "imu"]);
        for k in 0..4 {
            rig.open(k, k as f64);
        }
        rig.open(0, 0.0);
        rig.close(0, 0, 1, 1.0);
        rig.close(1, 0, 3, 1.0); // its next frame is in chunk 3
        rig.close(0, 1, 2, 2.0);
        rig.close(0, 2, 3, 3.0);
        rig.open(3, 3.0);
        rig.close(0, 3, 4, 4.0);
        rig.close(1, 3, 4, 4.0);
        assert_eq!(
            rig.completed(),
            vec![
                (0, streams(&["imu", "rgb"])),
                (1_000_000, streams(&["rgb"])),
                (2_000_000, streams(&["rgb"])),
                (3_000_000, streams(&["imu", "rgb"])),
            ]
        );
    }

    #[test]
    fn a_dead_stream_is_overdue_after_the_grace_and_then_holds_nothing() {
        let mut rig = Rig::new(&["rgb", "imu"]);
        rig.open(0, 0.0);
        rig.close(0, 0, 1, 1.0);
        assert_eq!(rig.barrier.overdue(1, rig.at(2.9)), None);
        assert_eq!(rig.barrier.overdue(1, rig.at(3.0)), Some(1));
        // Its thread closes the chunk without it.
        rig.pass(1, 1, 3.0);
        assert_eq!(rig.completed(), vec![(0, streams(&["rgb"]))]);
        // The next chunk: overdue again one grace after rgb passes it.
        rig.open(1, 1.0);
        rig.close(0, 1, 2, 2.0);
        assert_eq!(rig.barrier.overdue(1, rig.at(3.9)), None);
        assert_eq!(rig.barrier.overdue(1, rig.at(4.0)), Some(2));
    }

    #[test]
    fn an_ended_stream_releases_every_chunk_at_once() {
        let mut rig = Rig::new(&["rgb", "imu"]);
        for k in 0..3 {
            rig.open(k, k as f64);
            rig.close(0, k, k + 1, k as f64 + 1.0);
        }
        assert!(rig.completed.is_empty());
        // imu's thread panicked or hung: it leaves the barrier.
        rig.pass(1, ENDED, 3.5);
        assert_eq!(rig.completed().len(), 3);
        assert_eq!(rig.barrier.generation(), 3);
        // Later chunks no longer wait for it, and it is never overdue.
        rig.open(3, 3.0);
        rig.close(0, 3, 4, 4.0);
        assert_eq!(rig.completed().len(), 4);
        assert_eq!(rig.barrier.overdue(1, rig.at(100.0)), None);
    }

    #[test]
    fn a_part_for_a_chunk_completed_without_it_is_returned_as_an_orphan() {
        let mut rig = Rig::new(&["rgb", "imu"]);
        rig.open(0, 0.0);
        rig.open(0, 0.0);
        rig.close(0, 0, 1, 1.0);
        rig.pass(1, 1, 3.0); // closed without it at the deadline (e.g. it hung)
        assert_eq!(rig.completed(), vec![(0, streams(&["rgb"]))]);
        let orphan = rig.close(1, 0, ENDED, 9.0).expect("an orphan");
        assert_eq!(orphan.stream, "imu");
        assert_eq!(rig.completed().len(), 1, "no chunk made of it");
    }

    #[test]
    fn a_late_starting_stream_holds_the_first_chunk_only_until_its_grace() {
        // depth delivers its first frame in chunk 2 (it joined late).
        let mut rig = Rig::new(&["rgb", "depth"]);
        rig.open(0, 0.0);
        rig.close(0, 0, 1, 1.0);
        assert_eq!(rig.barrier.overdue(1, rig.at(3.0)), Some(1));
        rig.pass(1, 1, 3.0);
        rig.open(1, 1.0);
        rig.close(0, 1, 2, 2.0);
        // Its first frame arrives: it opens chunk 2 and passes everything before.
        rig.open(2, 2.2);
        rig.pass(1, 2, 2.2);
        rig.open(2, 2.0);
        rig.close(0, 2, 3, 3.0);
        rig.close(1, 2, 3, 3.0);
        assert_eq!(
            rig.completed(),
            vec![
                (0, streams(&["rgb"])),
                (1_000_000, streams(&["rgb"])),
                (2_000_000, streams(&["depth", "rgb"])),
            ]
        );
    }

    #[test]
    fn a_chunk_first_opened_after_another_stream_passed_it_starts_its_grace_then() {
        // rgb already moved past chunk 1 without frames in it; imu opens chunk 1 late.
        let mut rig = Rig::new(&["rgb", "imu"]);
        rig.pass(0, 2, 0.0);
        rig.open(1, 5.0);
        assert_eq!(rig.barrier.overdue(1, rig.at(6.9)), None);
        assert_eq!(rig.barrier.overdue(1, rig.at(7.0)), Some(2));
    }

    #[test]
    fn ids_come_from_the_callback_once_per_chunk() {
        let mut barrier = Barrier::new(1, 1_000_000, GRACE);
        let now = Instant::now();
        assert_eq!(barrier.chunk_id(0, now, |n| format!("c{n}")), "c0");
        assert_eq!(barrier.chunk_id(0, now, |_| unreachable!()), "c0");
        assert_eq!(barrier.chunk_id(5, now, |n| format!("c{n}")), "c1");
    }
}
