//! Replay of an internal topic's records from its partition logs, for the stores that keep
//! an in-memory index over a compacted topic (`__consumer_offsets`, `_schemas`).

use crate::error::{BrokerError, Result};
use crate::topics::Topic;

/// Largest decompressed batch read back during replay.
const REPLAY_BATCH_SIZE_BYTES_MAX: usize = 64 * 1024 * 1024;
/// How much of a log one read returns.
const REPLAY_READ_SIZE_BYTES: usize = 1024 * 1024;

/// Calls `apply(key, value)` for every record of every partition of `topic`, in offset order
/// within each partition. Blocking.
pub fn replay_records(
    topic: &Topic,
    mut apply: impl FnMut(Option<&[u8]>, Option<&[u8]>),
) -> Result<()> {
    let name = &topic.name;
    for partition in topic.partitions() {
        let log = &partition.log;
        let mut next = log.log_start_offset();
        while next < log.high_watermark() {
            let read = log.read(next, REPLAY_READ_SIZE_BYTES)?;
            let mut chunk = read.records;
            if chunk.is_empty() {
                break;
            }
            while let Some((header, batch)) = conflux_wire::batch::split_batch(&mut chunk)
                .map_err(|e| BrokerError::Storage(format!("{name}: {e}")))?
            {
                next = header.last_offset() + 1;
                let records =
                    conflux_wire::records::decode_records(&batch, REPLAY_BATCH_SIZE_BYTES_MAX)
                        .map_err(|e| BrokerError::Storage(format!("{name}: {e}")))?;
                for r in records {
                    apply(r.key.as_deref(), r.value.as_deref());
                }
            }
        }
    }
    Ok(())
}
