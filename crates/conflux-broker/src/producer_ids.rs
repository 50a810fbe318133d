//! Producer id allocation: ids are handed out from blocks whose end is persisted before any id
//! of the block is used, so ids are never reused across restarts (even after `kill -9`).

use std::path::{Path, PathBuf};

use parking_lot::Mutex;

use crate::error::{BrokerError, Result};

/// Ids reserved per persisted block.
const BLOCK_SIZE: i64 = 1_000;

#[derive(Debug)]
struct State {
    next: i64,
    block_end: i64,
}

/// Allocates unique producer ids.
#[derive(Debug)]
pub struct ProducerIdAllocator {
    path: PathBuf,
    state: Mutex<State>,
}

impl ProducerIdAllocator {
    pub fn open(meta_dir: &Path) -> Result<Self> {
        let path = meta_dir.join("producer_id_block");
        let block_end = match std::fs::read_to_string(&path) {
            Ok(s) => s
                .trim()
                .parse::<i64>()
                .map_err(|e| BrokerError::Storage(format!("{}: {e}", path.display())))?,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => 0,
            Err(e) => return Err(BrokerError::Storage(format!("{}: {e}", path.display()))),
        };
        // Everything below the persisted block end may have been handed out.
        Ok(ProducerIdAllocator {
            path,
            state: Mutex::new(State {
                next: block_end,
                block_end,
            }),
        })
    }

    /// The next unused producer id. Blocking (may fsync a new block).
    pub fn next(&self) -> Result<i64> {
        let mut s = self.state.lock();
        if s.next >= s.block_end {
            let end = s.next + BLOCK_SIZE;
            let tmp = self.path.with_extension("tmp");
            let io = |e: std::io::Error| BrokerError::Storage(format!("producer id block: {e}"));
            std::fs::write(&tmp, end.to_string()).map_err(io)?;
            std::fs::File::open(&tmp)
                .and_then(|f| f.sync_all())
                .map_err(io)?;
            std::fs::rename(&tmp, &self.path).map_err(io)?;
            s.block_end = end;
        }
        let id = s.next;
        s.next += 1;
        Ok(id)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_are_unique_across_reopen() {
        let dir = tempfile::tempdir().unwrap();
        let a = ProducerIdAllocator::open(dir.path()).unwrap();
        let first: Vec<i64> = (0..3).map(|_| a.next().unwrap()).collect();
        assert_eq!(first, vec![0, 1, 2]);
        drop(a);
        let b = ProducerIdAllocator::open(dir.path()).unwrap();
        assert!(b.next().unwrap() >= BLOCK_SIZE);
    }
}
