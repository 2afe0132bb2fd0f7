//! GetSnapshotFile (code 11): a zip archive of diagnostics about this gateway and the cluster
//! it fronts, one text file per requested snapshot type. The archive is written here, entries
//! stored uncompressed (valid for every zip reader, whatever compression the client named);
//! each entry carries its CRC-32. A gateway holds no data, logs only to stderr and sees only
//! its own process, and the files say so where a type asks for more than that.

use std::fmt::Write;

use galgo_replica::metadata::Metadata;

use crate::codes::ERROR_INVALID_FORMAT;
use crate::server::Shared;
use crate::wire::WireError;

/// Snapshot type codes of protocol 0.11.0.
pub const TYPE_FILESYSTEM_OVERVIEW: u8 = 1;
pub const TYPE_PROCESS_LIST: u8 = 2;
pub const TYPE_RESOURCE_USAGE: u8 = 3;
pub const TYPE_TEST: u8 = 4;
pub const TYPE_SERVER_LOGS: u8 = 5;
pub const TYPE_SERVER_CONFIG: u8 = 6;
pub const TYPE_ALL: u8 = 100;
/// Compression codes 1 (stored) to 6 (xz); any is answered with stored entries.
const COMPRESSION_MAX: u8 = 6;
/// Entries and bytes one archive may hold: far above what the texts need.
const ENTRIES_MAX: usize = 16;
const ARCHIVE_BYTES_MAX: usize = 4 << 20;

/// What a snapshot reports, gathered by the caller (the connection).
pub struct SnapshotSources {
    /// Streams, topics and partitions the replicated metadata holds.
    pub metadata_tree: String,
    /// `/proc/self/status` of the gateway process.
    pub process_status: String,
    /// Memory, threads, run time, load.
    pub resource_usage: String,
    /// The gateway's effective configuration (no secrets).
    pub config: String,
    /// Seconds since the Unix epoch, for the entries' modification time.
    pub now_unix_seconds: u64,
}

/// What this gateway reports now, with `metadata` as the replicated metadata.
pub fn gather(shared: &Shared, metadata: &Metadata) -> SnapshotSources {
    let mut tree = String::new();
    for stream in metadata.streams.values() {
        let _ = writeln!(tree, "stream {} {}", stream.id, stream.name);
        for topic in stream.topics.values() {
            let _ = writeln!(
                tree,
                "  topic {} {}: {} partitions, replication factor {}, {} consumer groups",
                topic.id,
                topic.name,
                topic.partitions.len(),
                topic.replication_factor,
                topic.groups.len()
            );
            for (index, partition) in topic.partitions.iter().enumerate() {
                let _ = writeln!(
                    tree,
                    "    partition {index}: group {}, replicas {:?}, preferred primary {}",
                    partition.group,
                    partition.placement.members,
                    partition.placement.preferred_primary()
                );
            }
        }
    }
    if tree.is_empty() {
        tree.push_str("(no streams)\n");
    }
    let process = shared.process_stats();
    let load = std::fs::read_to_string("/proc/loadavg").unwrap_or_default();
    let resource_usage = format!(
        "memory_usage_bytes = {}\ntotal_memory_bytes = {}\navailable_memory_bytes = {}\n\
         threads = {}\nrun_time_us = {}\nconnections = {}\nload_average = {}\n\
         hostname = {}\nos_version = {}\nversion = {}\n",
        process.memory_usage,
        process.total_memory,
        process.available_memory,
        process.threads,
        process.run_time_us,
        process.clients,
        load.trim(),
        process.hostname,
        process.os_version,
        process.server_version,
    );
    SnapshotSources {
        metadata_tree: tree,
        process_status: std::fs::read_to_string("/proc/self/status").unwrap_or_default(),
        resource_usage,
        config: shared.config_summary.clone(),
        now_unix_seconds: std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_secs()),
    }
}

/// Parses `[compression u8][count u8][type u8 × count]`; the sorted, deduplicated types
/// (`All` expanded).
pub fn parse_request(body: &[u8]) -> Result<Vec<u8>, WireError> {
    let bad = |why: String| WireError::new(ERROR_INVALID_FORMAT, format!("snapshot: {why}"));
    let [compression, count, types @ ..] = body else {
        return Err(bad(format!("{} bytes", body.len())));
    };
    if !(1..=COMPRESSION_MAX).contains(compression) {
        return Err(bad(format!("unknown compression {compression}")));
    }
    if types.len() != usize::from(*count) || types.is_empty() {
        return Err(bad(format!(
            "{count} types announced, {} sent",
            types.len()
        )));
    }
    let mut chosen = Vec::new();
    for kind in types {
        match *kind {
            TYPE_ALL => chosen.extend(TYPE_FILESYSTEM_OVERVIEW..=TYPE_SERVER_CONFIG),
            TYPE_FILESYSTEM_OVERVIEW..=TYPE_SERVER_CONFIG => chosen.push(*kind),
            other => return Err(bad(format!("unknown snapshot type {other}"))),
        }
    }
    chosen.sort_unstable();
    chosen.dedup();
    Ok(chosen)
}

/// The archive for `types`, from `sources`.
pub fn archive(types: &[u8], sources: &SnapshotSources) -> Vec<u8> {
    assert!(!types.is_empty() && types.len() <= ENTRIES_MAX);
    let mut zip = ZipWriter::new(sources.now_unix_seconds);
    for kind in types {
        let (name, text) = match *kind {
            TYPE_FILESYSTEM_OVERVIEW => (
                "filesystem_overview.txt",
                format!(
                    "A Galgo gateway stores nothing on disk: partitions live on the replicas' \
                     data directories. What the replicated metadata records:\n\n{}",
                    sources.metadata_tree
                ),
            ),
            TYPE_PROCESS_LIST => (
                "process_list.txt",
                format!(
                    "The gateway process (a gateway sees only itself):\n\n{}",
                    sources.process_status
                ),
            ),
            TYPE_RESOURCE_USAGE => ("resource_usage.txt", sources.resource_usage.clone()),
            TYPE_TEST => ("test.txt", "test\n".to_string()),
            TYPE_SERVER_LOGS => (
                "server_logs.txt",
                "The gateway keeps no log files: it writes to stderr (with --verbose, every \
                 refusal and error), which its supervisor collects (docker logs, journalctl).\n"
                    .to_string(),
            ),
            TYPE_SERVER_CONFIG => ("server_config.txt", sources.config.clone()),
            other => unreachable!("parse_request admits no type {other}"),
        };
        zip.add(name, text.as_bytes());
    }
    let bytes = zip.finish();
    assert!(bytes.len() <= ARCHIVE_BYTES_MAX);
    bytes
}

/// A zip archive of stored (uncompressed) entries, built in memory.
struct ZipWriter {
    out: Vec<u8>,
    central: Vec<u8>,
    entries: u16,
    dos_time: u16,
    dos_date: u16,
}

const LOCAL_HEADER_SIGNATURE: u32 = 0x0403_4b50;
const CENTRAL_HEADER_SIGNATURE: u32 = 0x0201_4b50;
const END_SIGNATURE: u32 = 0x0605_4b50;
/// Version 1.0: stored entries need nothing newer.
const VERSION_NEEDED: u16 = 10;
/// Made by Unix (3), version 2.0.
const VERSION_MADE_BY: u16 = (3 << 8) | 20;
/// Bit 11: names are UTF-8.
const FLAG_UTF8: u16 = 1 << 11;
/// Regular file, rw-r--r--, in the high half of the external attributes (Unix).
const UNIX_FILE_MODE: u32 = 0o100644 << 16;

impl ZipWriter {
    fn new(now_unix_seconds: u64) -> ZipWriter {
        let (dos_date, dos_time) = dos_date_time(now_unix_seconds);
        ZipWriter {
            out: Vec::new(),
            central: Vec::new(),
            entries: 0,
            dos_time,
            dos_date,
        }
    }

    fn add(&mut self, name: &str, data: &[u8]) {
        assert!(!name.is_empty() && name.len() <= 255);
        assert!(data.len() <= ARCHIVE_BYTES_MAX);
        assert!(usize::from(self.entries) < ENTRIES_MAX);
        let crc = crc32fast::hash(data);
        let size = u32::try_from(data.len()).expect("bounded above");
        let offset = u32::try_from(self.out.len()).expect("bounded archive");
        let name_len = name.len() as u16;
        let out = &mut self.out;
        put32(out, LOCAL_HEADER_SIGNATURE);
        for value in [VERSION_NEEDED, FLAG_UTF8, 0, self.dos_time, self.dos_date] {
            put16(out, value);
        }
        for value in [crc, size, size] {
            put32(out, value);
        }
        put16(out, name_len);
        put16(out, 0);
        out.extend_from_slice(name.as_bytes());
        out.extend_from_slice(data);
        let central = &mut self.central;
        put32(central, CENTRAL_HEADER_SIGNATURE);
        for value in [
            VERSION_MADE_BY,
            VERSION_NEEDED,
            FLAG_UTF8,
            0,
            self.dos_time,
            self.dos_date,
        ] {
            put16(central, value);
        }
        for value in [crc, size, size] {
            put32(central, value);
        }
        // Name length, extra, comment, disk number, internal attributes.
        for value in [name_len, 0, 0, 0, 0] {
            put16(central, value);
        }
        put32(central, UNIX_FILE_MODE);
        put32(central, offset);
        central.extend_from_slice(name.as_bytes());
        self.entries += 1;
    }

    fn finish(mut self) -> Vec<u8> {
        let central_offset = u32::try_from(self.out.len()).expect("bounded archive");
        let central_size = u32::try_from(self.central.len()).expect("bounded archive");
        self.out.extend_from_slice(&self.central);
        let out = &mut self.out;
        put32(out, END_SIGNATURE);
        for value in [0, 0, self.entries, self.entries] {
            put16(out, value);
        }
        put32(out, central_size);
        put32(out, central_offset);
        put16(out, 0);
        self.out
    }
}

fn put16(out: &mut Vec<u8>, value: u16) {
    out.extend_from_slice(&value.to_le_bytes());
}

fn put32(out: &mut Vec<u8>, value: u32) {
    out.extend_from_slice(&value.to_le_bytes());
}

/// MS-DOS (date, time) of a Unix time, UTC; clamped to 1980..=2107, the format's range.
fn dos_date_time(unix_seconds: u64) -> (u16, u16) {
    let days = unix_seconds / 86_400;
    let seconds_of_day = unix_seconds % 86_400;
    let (year, month, day) = civil_from_days(days);
    if year < 1980 {
        return ((1 << 5) | 1, 0);
    }
    let year = year.min(2107);
    let date = (((year - 1980) as u16) << 9) | ((month as u16) << 5) | day as u16;
    let hour = (seconds_of_day / 3600) as u16;
    let minute = (seconds_of_day / 60 % 60) as u16;
    let second = (seconds_of_day % 60) as u16;
    (date, (hour << 11) | (minute << 5) | (second / 2))
}

/// (year, month 1..=12, day 1..=31) of a count of days since 1970-01-01 (proleptic
/// Gregorian): counted in 400-year eras starting on March 1st, so leap days end a year.
fn civil_from_days(days: u64) -> (u64, u64, u64) {
    let shifted = days + 719_468; // Days from 0000-03-01 to 1970-01-01.
    let era = shifted / 146_097;
    let day_of_era = shifted % 146_097;
    let year_of_era =
        (day_of_era - day_of_era / 1460 + day_of_era / 36_524 - day_of_era / 146_096) / 365;
    let day_of_year = day_of_era - (365 * year_of_era + year_of_era / 4 - year_of_era / 100);
    let month_from_march = (5 * day_of_year + 2) / 153;
    let day = day_of_year - (153 * month_from_march + 2) / 5 + 1;
    let month = if month_from_march < 10 {
        month_from_march + 3
    } else {
        month_from_march - 9
    };
    let year = year_of_era + era * 400 + u64::from(month <= 2);
    (year, month, day)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sources() -> SnapshotSources {
        SnapshotSources {
            metadata_tree: "stream 1 orders\n  topic 1 events: 3 partitions\n".into(),
            process_status: "Name:\tgalgo\n".into(),
            resource_usage: "memory_bytes 1234\n".into(),
            config: "listen = 127.0.0.1:8090\n".into(),
            now_unix_seconds: 1_796_342_400, // 2026-12-04 00:00:00 UTC
        }
    }

    #[test]
    fn days_map_to_calendar_dates() {
        assert_eq!(civil_from_days(0), (1970, 1, 1));
        assert_eq!(civil_from_days(59), (1970, 3, 1));
        assert_eq!(civil_from_days(11_016), (2000, 2, 29));
        assert_eq!(civil_from_days(1_796_342_400 / 86_400), (2026, 12, 4));
        let (date, time) = dos_date_time(1_796_342_400 + 13 * 3600 + 7 * 60 + 31);
        assert_eq!(date, (46 << 9) | (12 << 5) | 4);
        assert_eq!(time, (13 << 11) | (7 << 5) | 15);
        assert_eq!(dos_date_time(0), ((1 << 5) | 1, 0));
    }

    #[test]
    fn requests_are_parsed_and_bad_ones_refused() {
        assert_eq!(parse_request(&[1, 1, TYPE_TEST]).unwrap(), vec![TYPE_TEST]);
        assert_eq!(
            parse_request(&[2, 2, TYPE_ALL, TYPE_TEST]).unwrap(),
            (1..=6).collect::<Vec<u8>>()
        );
        for bad in [
            &[][..],
            &[1],
            &[0, 1, TYPE_TEST],
            &[7, 1, TYPE_TEST],
            &[1, 0],
            &[1, 2, TYPE_TEST],
            &[1, 1, 7],
            &[1, 1, TYPE_TEST, TYPE_TEST],
        ] {
            assert_eq!(
                parse_request(bad).unwrap_err().code,
                ERROR_INVALID_FORMAT,
                "{bad:?}"
            );
        }
    }

    /// Runs Python's zipfile (an independent reader) on `bytes`: it checks the structure and
    /// every entry's CRC, then lists the entries and prints test.txt.
    fn python_reads(bytes: &[u8], tag: &str) -> (bool, String) {
        let dir = std::env::temp_dir().join(format!("galgo-snapshot-{}-{tag}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("snapshot.zip");
        std::fs::write(&path, bytes).unwrap();
        let script = "import sys, zipfile\n\
                      z = zipfile.ZipFile(sys.argv[1])\n\
                      assert z.testzip() is None, z.testzip()\n\
                      for i in z.infolist(): print(i.filename, i.file_size, i.date_time[:3])\n\
                      print(z.read('test.txt').decode(), end='')\n";
        let output = std::process::Command::new("python3")
            .args(["-c", script])
            .arg(&path)
            .output()
            .expect("python3 runs");
        std::fs::remove_dir_all(&dir).unwrap();
        let text = format!(
            "{}{}",
            String::from_utf8_lossy(&output.stdout),
            String::from_utf8_lossy(&output.stderr)
        );
        (output.status.success(), text)
    }

    #[test]
    fn python_reads_the_archive_and_a_damaged_entry_fails_its_crc() {
        let bytes = archive(&parse_request(&[1, 1, TYPE_ALL]).unwrap(), &sources());
        let (ok, text) = python_reads(&bytes, "intact");
        assert!(ok, "{text}");
        for name in [
            "filesystem_overview.txt",
            "process_list.txt",
            "resource_usage.txt",
            "test.txt",
            "server_logs.txt",
            "server_config.txt",
        ] {
            assert!(text.contains(&format!("{name} ")), "{text}");
        }
        assert!(text.contains("(2026, 12, 4)"), "{text}");
        assert!(text.ends_with("test\n"), "{text}");
        // One flipped bit in an entry's data: the reader's CRC check refuses the archive.
        let mut broken = bytes.clone();
        let at = broken.windows(5).position(|w| w == b"test\n").unwrap();
        broken[at] ^= 1;
        let (ok, text) = python_reads(&broken, "damaged");
        assert!(!ok, "{text}");
        assert!(text.contains("test.txt"), "{text}");
    }
}
