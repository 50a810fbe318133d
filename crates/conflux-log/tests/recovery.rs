//! Recovery tests: a torn tail is cut back to exactly the batches before the tear; damage
//! followed by valid data, or inside a closed segment, is reported as `Corrupt`.

use std::fs;
use std::path::{Path, PathBuf};

use conflux_log::test_support::{batch_of, decode_all};
use conflux_log::{FlushPolicy, LogConfig, LogError, PartitionLog};

fn config(segment_size_bytes_max: u64) -> LogConfig {
    LogConfig {
        flush: FlushPolicy::None,
        segment_size_bytes_max,
        index_interval_bytes: 100,
        ..Default::default()
    }
}

/// Writes `sizes.len()` one-record batches and returns (dir, end byte of every batch in the
/// last segment file, that file).
fn write_log(dir: &Path, sizes: &[usize], segment_size_bytes_max: u64) -> PathBuf {
    let log = PartitionLog::open(dir, config(segment_size_bytes_max)).unwrap();
    for (i, &s) in sizes.iter().enumerate() {
        log.append_blocking(batch_of(1 + i % 3, s, i as i64), 1)
            .unwrap();
    }
    drop(log); // no close(): the next open is an unclean one
    last_segment(dir)
}

fn segment_files(dir: &Path) -> Vec<PathBuf> {
    let mut files: Vec<PathBuf> = fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "log"))
        .collect();
    files.sort();
    files
}

fn last_segment(dir: &Path) -> PathBuf {
    segment_files(dir).pop().unwrap()
}

fn copy_dir(from: &Path, to: &Path) {
    for e in fs::read_dir(from).unwrap() {
        let p = e.unwrap().path();
        fs::copy(&p, to.join(p.file_name().unwrap())).unwrap();
    }
}

#[test]
fn torn_tail_at_every_byte_recovers_exactly_the_batches_before() {
    let original = tempfile::tempdir().unwrap();
    let sizes = [30, 200, 10, 120, 64, 90, 5];
    let segment = write_log(original.path(), &sizes, 1 << 20);
    let bytes = fs::read(&segment).unwrap();
    let batches = decode_all(&bytes::Bytes::from(bytes.clone()));
    let mut ends = Vec::new();
    let mut pos = 0;
    for (h, _) in &batches {
        pos += h.size_bytes();
        ends.push((pos, h.last_offset() + 1));
    }
    let cut_from = ends[ends.len() - 4].0;
    for cut in cut_from..bytes.len() {
        let dir = tempfile::tempdir().unwrap();
        copy_dir(original.path(), dir.path());
        let file = dir.path().join(segment.file_name().unwrap());
        fs::OpenOptions::new()
            .write(true)
            .open(&file)
            .unwrap()
            .set_len(cut as u64)
            .unwrap();
        let log = PartitionLog::open(dir.path(), config(1 << 20)).unwrap();
        let &(keep_bytes, log_end) = ends.iter().rev().find(|(end, _)| *end <= cut).unwrap();
        assert_eq!(log.log_end_offset(), log_end, "cut at {cut}");
        assert_eq!(
            fs::metadata(&file).unwrap().len(),
            keep_bytes as u64,
            "cut at {cut}"
        );
        let read = log.read(0, 1 << 20).unwrap();
        assert_eq!(&read.records[..], &bytes[..keep_bytes], "cut at {cut}");
        // Appending after recovery continues at the recovered end.
        assert_eq!(
            log.append_blocking(batch_of(1, 3, 0), 1)
                .unwrap()
                .base_offset,
            log_end
        );
    }
}

#[test]
fn garbage_and_zeros_after_the_last_batch_are_a_torn_tail() {
    for tail in [
        vec![0u8; 4096],
        vec![0xFF; 7],
        b"not a batch at all, just junk bytes....................................".to_vec(),
    ] {
        let dir = tempfile::tempdir().unwrap();
        let segment = write_log(dir.path(), &[10, 20, 30], 1 << 20);
        let len = fs::metadata(&segment).unwrap().len();
        let mut bytes = fs::read(&segment).unwrap();
        bytes.extend_from_slice(&tail);
        fs::write(&segment, &bytes).unwrap();
        let log = PartitionLog::open(dir.path(), config(1 << 20)).unwrap();
        assert_eq!(fs::metadata(&segment).unwrap().len(), len);
        assert_eq!(log.log_end_offset(), 6);
    }
}

#[test]
fn bit_flip_followed_by_valid_batches_is_corrupt_not_truncated() {
    let original = tempfile::tempdir().unwrap();
    let segment = write_log(original.path(), &[50, 50, 50, 50, 50], 1 << 20);
    let batches = decode_all(&bytes::Bytes::from(fs::read(&segment).unwrap()));
    let third_end: usize = batches.iter().take(3).map(|(h, _)| h.size_bytes()).sum();
    // Every byte of the first three batches (header fields included): the damage is followed
    // by at least one valid batch, so it must be reported, never dropped.
    for at in 0..third_end {
        let dir = tempfile::tempdir().unwrap();
        copy_dir(original.path(), dir.path());
        let file = dir.path().join(segment.file_name().unwrap());
        let mut bytes = fs::read(&file).unwrap();
        bytes[at] ^= 0x10;
        fs::write(&file, &bytes).unwrap();
        match PartitionLog::open(dir.path(), config(1 << 20)) {
            Err(LogError::Corrupt { .. }) => {}
            Err(e) => panic!("flip at {at}: {e}"),
            Ok(log) => panic!(
                "flip at {at} not detected, log end {}",
                log.log_end_offset()
            ),
        }
        assert_eq!(
            fs::read(&file).unwrap(),
            bytes,
            "nothing is truncated on corruption"
        );
    }
}

#[test]
fn damage_in_a_closed_segment_is_corrupt() {
    let original = tempfile::tempdir().unwrap();
    write_log(original.path(), &[100; 20], 600);
    let files = segment_files(original.path());
    assert!(files.len() > 3);
    let closed = files[1].file_name().unwrap().to_owned();
    // A truncated closed segment: its index no longer matches, the rescan finds a torn batch,
    // and a closed segment never loses a tail silently.
    let dir = tempfile::tempdir().unwrap();
    copy_dir(original.path(), dir.path());
    let f = dir.path().join(&closed);
    let len = fs::metadata(&f).unwrap().len();
    fs::OpenOptions::new()
        .write(true)
        .open(&f)
        .unwrap()
        .set_len(len - 5)
        .unwrap();
    assert!(matches!(
        PartitionLog::open(dir.path(), config(600)),
        Err(LogError::Corrupt { .. })
    ));
    // A payload bit flip in a closed segment the recovery point does not cover (crash right
    // after a roll, before the checkpoint) is found by the CRC scan.
    let dir = tempfile::tempdir().unwrap();
    copy_dir(original.path(), dir.path());
    fs::remove_file(dir.path().join("recovery-point.checkpoint")).unwrap();
    let f = dir.path().join(&closed);
    let mut bytes = fs::read(&f).unwrap();
    bytes[70] ^= 1;
    fs::write(&f, &bytes).unwrap();
    assert!(matches!(
        PartitionLog::open(dir.path(), config(600)),
        Err(LogError::Corrupt { .. })
    ));
}

#[test]
fn damaged_or_missing_indexes_are_rebuilt() {
    let dir = tempfile::tempdir().unwrap();
    write_log(dir.path(), &[100; 30], 700);
    let log = PartitionLog::open(dir.path(), config(700)).unwrap();
    let expected = log.read(0, 1 << 20).unwrap().records;
    let end = log.log_end_offset();
    log.close().unwrap();
    for (i, p) in fs::read_dir(dir.path())
        .unwrap()
        .map(|e| e.unwrap().path())
        .enumerate()
    {
        match p.extension().and_then(|e| e.to_str()) {
            Some("index") if i % 2 == 0 => fs::remove_file(&p).unwrap(),
            Some("index") => fs::write(&p, [0, 0, 0, 0, 0, 0, 0, 99]).unwrap(),
            Some("timeindex") => fs::write(&p, [1, 2, 3]).unwrap(),
            _ => {}
        }
    }
    let log = PartitionLog::open(dir.path(), config(700)).unwrap();
    assert_eq!(log.log_end_offset(), end);
    assert_eq!(log.read(0, 1 << 20).unwrap().records, expected);
    for o in 0..end {
        let r = log.read(o, 1).unwrap();
        let (h, _) = &decode_all(&r.records)[0];
        assert!(h.base_offset <= o && o <= h.last_offset());
    }
    assert_eq!(
        log.offset_for_timestamp(17).unwrap().map(|(_, ts)| ts),
        Some(17)
    );
}
