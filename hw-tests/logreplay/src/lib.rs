//! Reader and replayer for the Linux `dm-log-writes` write log.
//!
//! The kernel's `log-writes` device-mapper target passes every write through to
//! a data device and appends a copy of it to a log device once it has been
//! flushed (FUA writes at once). Replaying the log onto a byte-identical copy of
//! the data device as it was when logging began reproduces the device as it was
//! after any entry: the state a power cut at that moment would have left.
//!
//! Layout (all integers little-endian), with `S` = `sectorsize` (the data
//! device's logical block size):
//!
//! * bytes `0..S`: [`Super`]: magic `u64`, version `u64`, nr_entries `u64`,
//!   sectorsize `u32`. `nr_entries` is rewritten only after FUA and mark entries
//!   and at removal, so after a crash valid entries can follow it.
//! * then per entry: one `S`-byte header ([`Entry`]: sector `u64`, nr_sectors
//!   `u64`, flags `u64`, data_len `u64`; a mark's name inline at byte 32),
//!   followed by `nr_sectors * S` bytes of written data (none for discards,
//!   marks and empty flushes).
//!
//! Main types: [`LogReader`] parses and iterates entries ([`LogReader::entries`]);
//! [`replay`] applies a range of entries onto a target image; [`Flags`] names
//! the entry flag bits.

use std::fmt;
use std::io::{self, Read, Seek, SeekFrom, Write};

/// Magic number in the log's first sector.
pub const MAGIC: u64 = 0x006a_7366_7773_6872;
/// The only log format version the kernel writes.
pub const VERSION: u64 = 1;
/// Size of the fixed part of an entry header; a mark's name follows it.
pub const ENTRY_HEADER_LEN: usize = 32;

/// Flag bits of a log entry (`LOG_*_FLAG` in `drivers/md/dm-log-writes.c`).
#[derive(Clone, Copy, PartialEq, Eq, Default)]
pub struct Flags(pub u64);

impl Flags {
    /// The write carried REQ_PREFLUSH: everything before it was durable.
    pub const FLUSH: u64 = 1;
    /// The write carried REQ_FUA: it was durable when it completed.
    pub const FUA: u64 = 2;
    /// A discard: the range's contents became undefined (replayed as zeros).
    pub const DISCARD: u64 = 4;
    /// A user mark (`dmsetup message DEV 0 mark NAME`); no data.
    pub const MARK: u64 = 8;
    /// The write carried REQ_META.
    pub const METADATA: u64 = 16;
    const KNOWN: u64 = Self::FLUSH | Self::FUA | Self::DISCARD | Self::MARK | Self::METADATA;

    /// True when every bit of `bits` is set.
    pub fn has(self, bits: u64) -> bool {
        self.0 & bits == bits
    }

    /// True for the entries after which the device promised durability:
    /// flushes and FUA writes.
    pub fn is_durability_point(self) -> bool {
        self.0 & (Self::FLUSH | Self::FUA) != 0
    }
}

impl fmt::Display for Flags {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let names = [
            (Self::FLUSH, "FLUSH"),
            (Self::FUA, "FUA"),
            (Self::DISCARD, "DISCARD"),
            (Self::MARK, "MARK"),
            (Self::METADATA, "META"),
        ];
        let mut first = true;
        for (bit, name) in names {
            if self.0 & bit != 0 {
                if !first {
                    f.write_str("|")?;
                }
                f.write_str(name)?;
                first = false;
            }
        }
        if first {
            f.write_str("WRITE")?;
        }
        Ok(())
    }
}

impl fmt::Debug for Flags {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Flags({self})")
    }
}

/// The log's first sector.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Super {
    /// Format version, always [`VERSION`].
    pub version: u64,
    /// Entries counted at the last FUA, mark or clean removal.
    pub nr_entries: u64,
    /// Logical block size of the logged device, in bytes.
    pub sectorsize: u32,
}

/// One parsed log entry.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Entry {
    /// Position in the log, from 0.
    pub index: u64,
    /// Flag bits.
    pub flags: Flags,
    /// First written sector on the data device, in `sectorsize` units.
    pub sector: u64,
    /// Number of sectors written (or discarded), in `sectorsize` units.
    pub nr_sectors: u64,
    /// Byte length of the inline payload (a mark's name).
    pub data_len: u64,
    /// The mark's name, for mark entries.
    pub mark: Option<String>,
    /// Byte offset in the log of this entry's written data.
    pub data_offset: u64,
    /// True when the entry lies past the superblock's `nr_entries` and was
    /// accepted only because its header validated.
    pub past_count: bool,
}

impl Entry {
    /// Bytes of written data stored in the log after the header.
    pub fn stored_len(&self, sectorsize: u32) -> u64 {
        if self.flags.has(Flags::DISCARD) || self.flags.has(Flags::MARK) {
            0
        } else {
            self.nr_sectors * u64::from(sectorsize)
        }
    }
}

/// Errors of this crate; the text is the message.
#[derive(Debug)]
pub enum Error {
    /// I/O on the log or the target failed.
    Io(io::Error),
    /// The first sector does not hold the log-writes magic number.
    BadMagic(u64),
    /// A log version this reader does not know.
    BadVersion(u64),
    /// A sector size that is not a power of two of at least 512.
    BadSectorSize(u32),
    /// An entry within `nr_entries` failed validation.
    BadEntry {
        /// The entry's index.
        index: u64,
        /// What was wrong.
        reason: &'static str,
    },
    /// The log ends inside an entry counted by `nr_entries`.
    Truncated(u64),
    /// A requested entry index or mark does not exist.
    NotFound(String),
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Error::Io(e) => write!(f, "I/O error: {e}"),
            Error::BadMagic(m) => write!(f, "not a dm-log-writes log (magic {m:#x})"),
            Error::BadVersion(v) => write!(f, "unsupported log version {v}"),
            Error::BadSectorSize(s) => write!(f, "invalid sector size {s}"),
            Error::BadEntry { index, reason } => write!(f, "entry {index} is invalid: {reason}"),
            Error::Truncated(i) => write!(f, "log ends inside entry {i}"),
            Error::NotFound(what) => write!(f, "not in the log: {what}"),
        }
    }
}

impl std::error::Error for Error {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            Error::Io(e) => Some(e),
            _ => None,
        }
    }
}

impl From<io::Error> for Error {
    fn from(e: io::Error) -> Self {
        Error::Io(e)
    }
}

fn le_u64(b: &[u8], at: usize) -> u64 {
    let mut a = [0u8; 8];
    a.copy_from_slice(&b[at..at + 8]);
    u64::from_le_bytes(a)
}

fn le_u32(b: &[u8], at: usize) -> u32 {
    let mut a = [0u8; 4];
    a.copy_from_slice(&b[at..at + 4]);
    u32::from_le_bytes(a)
}

/// Parses a dm-log-writes log from any seekable reader.
pub struct LogReader<R> {
    inner: R,
    sup: Super,
    len: u64,
    device_sectors: Option<u64>,
}

impl<R: Read + Seek> LogReader<R> {
    /// Reads and checks the superblock.
    pub fn new(mut inner: R) -> Result<Self, Error> {
        let len = inner.seek(SeekFrom::End(0))?;
        inner.seek(SeekFrom::Start(0))?;
        let mut head = [0u8; 28];
        inner
            .read_exact(&mut head)
            .map_err(|_| Error::Truncated(0))?;
        let magic = le_u64(&head, 0);
        if magic != MAGIC {
            return Err(Error::BadMagic(magic));
        }
        let version = le_u64(&head, 8);
        if version != VERSION {
            return Err(Error::BadVersion(version));
        }
        let sectorsize = le_u32(&head, 24);
        if sectorsize < 512 || !sectorsize.is_power_of_two() {
            return Err(Error::BadSectorSize(sectorsize));
        }
        let sup = Super {
            version,
            nr_entries: le_u64(&head, 16),
            sectorsize,
        };
        Ok(Self {
            inner,
            sup,
            len,
            device_sectors: None,
        })
    }

    /// Lets validation reject entries that reach past a data device of
    /// `bytes` bytes.
    pub fn with_device_size(mut self, bytes: u64) -> Self {
        self.device_sectors = Some(bytes / u64::from(self.sup.sectorsize));
        self
    }

    /// The superblock.
    pub fn superblock(&self) -> Super {
        self.sup
    }

    /// Reads every entry: the `nr_entries` counted ones (an invalid one is an
    /// error), then, when `scan_past` is set, further entries for as long as
    /// their headers validate and their data lies inside the log (what a crash
    /// before the next superblock update leaves).
    pub fn entries(&mut self, scan_past: bool) -> Result<Vec<Entry>, Error> {
        let ss = u64::from(self.sup.sectorsize);
        let mut out = Vec::new();
        let mut pos = ss;
        let mut index = 0u64;
        let mut header = vec![0u8; usize::try_from(ss).unwrap_or(512)];
        loop {
            let counted = index < self.sup.nr_entries;
            if !counted && !scan_past {
                break;
            }
            if pos + ss > self.len {
                if counted {
                    return Err(Error::Truncated(index));
                }
                break;
            }
            self.inner.seek(SeekFrom::Start(pos))?;
            self.inner.read_exact(&mut header)?;
            match self.parse_header(&header, index, pos + ss) {
                Ok(mut e) => {
                    let end = e.data_offset + e.stored_len(self.sup.sectorsize);
                    if end > self.len {
                        if counted {
                            return Err(Error::Truncated(index));
                        }
                        break;
                    }
                    e.past_count = !counted;
                    pos = end;
                    out.push(e);
                }
                Err(reason) => {
                    if counted {
                        return Err(Error::BadEntry { index, reason });
                    }
                    break;
                }
            }
            index += 1;
        }
        Ok(out)
    }

    fn parse_header(&self, h: &[u8], index: u64, data_offset: u64) -> Result<Entry, &'static str> {
        let sector = le_u64(h, 0);
        let nr_sectors = le_u64(h, 8);
        let flags = Flags(le_u64(h, 16));
        let data_len = le_u64(h, 24);
        if flags.0 & !Flags::KNOWN != 0 {
            return Err("unknown flag bits");
        }
        if flags.0 == 0 && nr_sectors == 0 {
            return Err("empty entry (end of log)");
        }
        let mut mark = None;
        if flags.has(Flags::MARK) {
            let max = h.len() - ENTRY_HEADER_LEN;
            let n = usize::try_from(data_len).map_err(|_| "mark too long")?;
            if n == 0 || n > max || nr_sectors != 0 {
                return Err("malformed mark");
            }
            let name = &h[ENTRY_HEADER_LEN..ENTRY_HEADER_LEN + n];
            mark = Some(
                std::str::from_utf8(name)
                    .map_err(|_| "mark name is not UTF-8")?
                    .to_owned(),
            );
        } else if data_len != 0 {
            return Err("inline data on a non-mark entry");
        }
        if let Some(dev) = self.device_sectors {
            match sector.checked_add(nr_sectors) {
                Some(end) if end <= dev => {}
                _ => return Err("range beyond the device"),
            }
        }
        Ok(Entry {
            index,
            flags,
            sector,
            nr_sectors,
            data_len,
            mark,
            data_offset,
            past_count: false,
        })
    }

    /// Copies the written data of `entry` into `target` at its sector (or
    /// zeroes a discarded range). Marks and empty flushes change nothing.
    pub fn apply<W: Write + Seek>(&mut self, entry: &Entry, target: &mut W) -> Result<(), Error> {
        let ss = u64::from(self.sup.sectorsize);
        if entry.flags.has(Flags::MARK) || entry.nr_sectors == 0 {
            return Ok(());
        }
        target.seek(SeekFrom::Start(entry.sector * ss))?;
        let mut left = entry.nr_sectors * ss;
        let mut buf = vec![0u8; 1 << 20];
        if entry.flags.has(Flags::DISCARD) {
            while left > 0 {
                let n = usize::try_from(left.min(buf.len() as u64)).unwrap_or(buf.len());
                target.write_all(&buf[..n])?;
                left -= n as u64;
            }
            return Ok(());
        }
        self.inner.seek(SeekFrom::Start(entry.data_offset))?;
        while left > 0 {
            let n = usize::try_from(left.min(buf.len() as u64)).unwrap_or(buf.len());
            self.inner.read_exact(&mut buf[..n])?;
            target.write_all(&buf[..n])?;
            left -= n as u64;
        }
        Ok(())
    }
}

/// Applies `entries[from..=to]` (by position in the slice) onto `target`.
/// Returns the number of entries that changed data.
pub fn replay<R: Read + Seek, W: Write + Seek>(
    log: &mut LogReader<R>,
    entries: &[Entry],
    from: usize,
    to: usize,
    target: &mut W,
) -> Result<usize, Error> {
    if to >= entries.len() {
        return Err(Error::NotFound(format!("entry {to}")));
    }
    let mut changed = 0;
    for e in entries.iter().take(to + 1).skip(from) {
        log.apply(e, target)?;
        if e.nr_sectors > 0 && !e.flags.has(Flags::MARK) {
            changed += 1;
        }
    }
    target.flush()?;
    Ok(changed)
}

/// Finds the index of the first mark named `name`.
pub fn find_mark(entries: &[Entry], name: &str) -> Result<usize, Error> {
    entries
        .iter()
        .position(|e| e.mark.as_deref() == Some(name))
        .ok_or_else(|| Error::NotFound(format!("mark {name:?}")))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Cursor;

    /// Builds a log the way the kernel lays it out.
    struct LogBuilder {
        ss: usize,
        buf: Vec<u8>,
        count: u64,
    }

    impl LogBuilder {
        fn new(ss: usize) -> Self {
            Self {
                ss,
                buf: vec![0u8; ss],
                count: 0,
            }
        }

        fn header(&mut self, sector: u64, nr: u64, flags: u64, inline: &[u8]) {
            let mut h = vec![0u8; self.ss];
            h[0..8].copy_from_slice(&sector.to_le_bytes());
            h[8..16].copy_from_slice(&nr.to_le_bytes());
            h[16..24].copy_from_slice(&flags.to_le_bytes());
            h[24..32].copy_from_slice(&(inline.len() as u64).to_le_bytes());
            h[32..32 + inline.len()].copy_from_slice(inline);
            self.buf.extend_from_slice(&h);
            self.count += 1;
        }

        fn write(&mut self, sector: u64, data: &[u8], flags: u64) -> &mut Self {
            assert_eq!(data.len() % self.ss, 0);
            self.header(sector, (data.len() / self.ss) as u64, flags, &[]);
            self.buf.extend_from_slice(data);
            self
        }

        fn flush(&mut self) -> &mut Self {
            self.header(0, 0, Flags::FLUSH, &[]);
            self
        }

        fn discard(&mut self, sector: u64, nr: u64) -> &mut Self {
            self.header(sector, nr, Flags::DISCARD, &[]);
            self
        }

        fn mark(&mut self, name: &str) -> &mut Self {
            self.header(0, 0, Flags::MARK, name.as_bytes());
            self
        }

        /// Finishes with `nr_entries` = the first `counted` entries.
        fn finish(&mut self, counted: u64) -> Vec<u8> {
            let mut out = self.buf.clone();
            out[0..8].copy_from_slice(&MAGIC.to_le_bytes());
            out[8..16].copy_from_slice(&VERSION.to_le_bytes());
            out[16..24].copy_from_slice(&counted.to_le_bytes());
            out[24..28].copy_from_slice(&(self.ss as u32).to_le_bytes());
            out
        }
    }

    fn sample(ss: usize) -> (Vec<u8>, u64) {
        let mut b = LogBuilder::new(ss);
        b.write(2, &vec![0xaa; ss * 2], 0)
            .flush()
            .mark("first")
            .write(1, &vec![0xbb; ss], Flags::FUA | Flags::METADATA)
            .discard(2, 1)
            .write(5, &vec![0xcc; ss], Flags::FLUSH | Flags::FUA)
            .mark("second");
        let n = b.count;
        (b.finish(n), n)
    }

    #[test]
    fn parses_super_and_entries() {
        let (log, n) = sample(512);
        let mut r = LogReader::new(Cursor::new(log)).unwrap();
        assert_eq!(
            r.superblock(),
            Super {
                version: 1,
                nr_entries: n,
                sectorsize: 512
            }
        );
        let e = r.entries(true).unwrap();
        assert_eq!(e.len(), 7);
        assert_eq!(e[0].flags, Flags(0));
        assert_eq!((e[0].sector, e[0].nr_sectors), (2, 2));
        assert_eq!(e[0].data_offset, 1024);
        assert!(e[1].flags.is_durability_point());
        assert_eq!(e[2].mark.as_deref(), Some("first"));
        assert_eq!(e[3].flags.to_string(), "FUA|META");
        assert!(e[4].flags.has(Flags::DISCARD));
        // A discard stores no data: the next header follows directly.
        assert_eq!(e[5].data_offset, e[4].data_offset + 512);
        assert_eq!(e[6].mark.as_deref(), Some("second"));
        assert!(e.iter().all(|x| !x.past_count));
    }

    #[test]
    fn replays_up_to_an_entry_and_zeroes_discards() {
        let (log, _) = sample(512);
        let mut r = LogReader::new(Cursor::new(log)).unwrap();
        let e = r.entries(true).unwrap();
        let mut img = Cursor::new(vec![0x11u8; 512 * 8]);
        let upto = find_mark(&e, "first").unwrap();
        assert_eq!(replay(&mut r, &e, 0, upto, &mut img).unwrap(), 1);
        let d = img.get_ref().clone();
        assert!(d[1024..2048].iter().all(|&b| b == 0xaa));
        assert!(d[512..1024].iter().all(|&b| b == 0x11));
        // Continue incrementally to the end.
        replay(&mut r, &e, upto + 1, e.len() - 1, &mut img).unwrap();
        let d = img.into_inner();
        assert!(d[512..1024].iter().all(|&b| b == 0xbb));
        assert!(d[1024..1536].iter().all(|&b| b == 0), "discarded sector");
        assert!(d[1536..2048].iter().all(|&b| b == 0xaa));
        assert!(d[2560..3072].iter().all(|&b| b == 0xcc));
        assert!(d[3072..].iter().all(|&b| b == 0x11));
    }

    #[test]
    fn scans_valid_entries_past_the_count_after_a_crash() {
        let (log, _) = sample(512);
        // Superblock last rewritten after entry 3 (the FUA write).
        let mut crashed = log.clone();
        crashed[16..24].copy_from_slice(&4u64.to_le_bytes());
        // Unwritten tail of the log device: zeros.
        crashed.extend_from_slice(&[0u8; 4096]);
        let mut r = LogReader::new(Cursor::new(crashed.clone())).unwrap();
        let e = r.entries(true).unwrap();
        assert_eq!(e.len(), 7);
        assert_eq!(e.iter().filter(|x| x.past_count).count(), 3);
        let mut r = LogReader::new(Cursor::new(crashed)).unwrap();
        assert_eq!(r.entries(false).unwrap().len(), 4);
    }

    #[test]
    fn stops_scanning_at_garbage_and_at_a_torn_tail() {
        let (mut log, n) = sample(512);
        let mut junk = vec![0u8; 512];
        junk[16] = 0x80; // unknown flag
        log.extend_from_slice(&junk);
        let mut r = LogReader::new(Cursor::new(log.clone())).unwrap();
        assert_eq!(r.entries(true).unwrap().len() as u64, n);
        // A header whose data runs past the end of the log is not taken.
        let mut torn = log[..log.len() - 512].to_vec();
        let mut h = vec![0u8; 512];
        h[8] = 4; // 4 sectors of data that are not there
        torn.extend_from_slice(&h);
        torn.extend_from_slice(&[0x55; 512]);
        let mut r = LogReader::new(Cursor::new(torn)).unwrap();
        assert_eq!(r.entries(true).unwrap().len() as u64, n);
    }

    #[test]
    fn rejects_bad_counted_entries_and_bad_super() {
        let (mut log, _) = sample(512);
        log[512 + 16] = 0x40;
        let mut r = LogReader::new(Cursor::new(log.clone())).unwrap();
        assert!(matches!(
            r.entries(true),
            Err(Error::BadEntry { index: 0, .. })
        ));
        log[0] ^= 1;
        assert!(matches!(
            LogReader::new(Cursor::new(log)),
            Err(Error::BadMagic(_))
        ));
        let (mut log, _) = sample(512);
        log.truncate(600);
        let mut r = LogReader::new(Cursor::new(log)).unwrap();
        assert!(matches!(r.entries(true), Err(Error::Truncated(0))));
    }

    #[test]
    fn device_size_bounds_entries() {
        let (log, _) = sample(512);
        let mut r = LogReader::new(Cursor::new(log))
            .unwrap()
            .with_device_size(512 * 4);
        // Entry 5 writes sector 5 of a 4-sector device.
        assert!(matches!(
            r.entries(true),
            Err(Error::BadEntry { index: 5, .. })
        ));
    }

    #[test]
    fn handles_4k_sectors() {
        let (log, _) = sample(4096);
        let mut r = LogReader::new(Cursor::new(log)).unwrap();
        let e = r.entries(true).unwrap();
        assert_eq!(e.len(), 7);
        assert_eq!(e[0].data_offset, 8192);
        let mut img = Cursor::new(vec![0u8; 4096 * 8]);
        replay(&mut r, &e, 0, e.len() - 1, &mut img).unwrap();
        assert!(img.get_ref()[5 * 4096..6 * 4096].iter().all(|&b| b == 0xcc));
    }
}
