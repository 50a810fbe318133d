//! Runs one workload against a broker: creates the topics, starts consumers then producers,
//! samples the counters every second (status line + time series), and builds the report.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use bytes::Bytes;
use conflux_wire::batch::split_batch;
use conflux_wire::generated::ResponseBody;
use conflux_wire::records::{record_iter, BatchBuilder};
use tokio::sync::Semaphore;

use crate::client::{ClientError, Connection};
use crate::report::{IntervalSample, Report};
use crate::stats::{Clock, Percentiles, Rates, Stats};
use crate::workload::{StartFrom, Workload};

/// How long consumers keep draining after producers stop, at most.
const DRAIN_MAX: Duration = Duration::from_secs(10);
/// Fetch limits: long-poll wait, per-partition and per-response bytes.
const FETCH_WAIT_MS: i32 = 100;
const FETCH_PARTITION_MAX_BYTES: i32 = 4 << 20;
const FETCH_MAX_BYTES: i32 = 32 << 20;
/// Largest decompressed batch a consumer accepts.
const DECOMPRESSED_MAX_BYTES: usize = 128 << 20;

#[derive(Debug, Clone)]
pub struct RunOptions {
    pub bootstrap: SocketAddr,
    /// Topic names are `<prefix>-<n>`; a fresh prefix per run keeps runs independent.
    pub topic_prefix: String,
    /// Print a status line every second to stderr.
    pub progress: bool,
}

fn now_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as i64)
        .unwrap_or(0)
}

/// Runs `workload` and returns its report. Errors are set-up failures; failures during the
/// run are counted in the report.
pub async fn run(workload: &Workload, opts: &RunOptions) -> Result<Report, ClientError> {
    let compression = workload
        .compression()
        .map_err(|e| ClientError::Kafka(e.to_string()))?;
    let admin = Connection::connect(opts.bootstrap).await?;
    let topics: Vec<String> = (0..workload.topics)
        .map(|i| format!("{}-{i}", opts.topic_prefix))
        .collect();
    let configs: Vec<(String, String)> = workload
        .topic_config
        .iter()
        .map(|(k, v)| (k.clone(), v.clone()))
        .collect();
    admin
        .create_topics(&topics, workload.partitions_per_topic, &configs)
        .await?;
    // Wait until metadata shows every partition.
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let counts = admin.partition_counts(&topics).await?;
        let ready = counts.len() == topics.len()
            && counts
                .iter()
                .all(|(_, n)| *n == workload.partitions_per_topic as usize);
        if ready {
            break;
        }
        if Instant::now() > deadline {
            return Err(ClientError::Kafka(
                "topics did not appear in metadata".into(),
            ));
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }

    let clock = Clock::new();
    let stats = Arc::new(Stats::new());
    let producing = Arc::new(AtomicBool::new(true));
    let consuming = Arc::new(AtomicBool::new(true));
    let payload = Bytes::from(
        (0..workload.message_size)
            .map(|i| (i % 251) as u8)
            .collect::<Vec<u8>>(),
    );

    // Consumers first, positioned before any producer writes.
    let mut consumers = Vec::new();
    for topic in &topics {
        let partitions: Vec<i32> = (0..workload.partitions_per_topic as i32).collect();
        for _sub in 0..workload.subscriptions_per_topic {
            let n = workload.consumer_per_subscription as usize;
            for c in 0..n {
                let mine: Vec<i32> = partitions
                    .iter()
                    .copied()
                    .filter(|p| *p as usize % n == c)
                    .collect();
                let conn = Connection::connect(opts.bootstrap).await?;
                let ts = match workload.consumer_start {
                    StartFrom::Earliest => -2,
                    StartFrom::Latest => -1,
                };
                let offsets = conn.list_offsets(topic, &mine, ts).await?;
                consumers.push(tokio::spawn(consume(
                    conn,
                    topic.clone(),
                    offsets,
                    stats.clone(),
                    clock,
                    consuming.clone(),
                    workload.producer_rate > 0,
                    workload.message_size as u64,
                )));
            }
        }
    }

    let producers_total = (workload.topics * workload.producers_per_topic) as u64;
    let rate_per_producer = workload.producer_rate as f64 / producers_total as f64;
    let mut producers = Vec::new();
    for topic in &topics {
        for p in 0..workload.producers_per_topic {
            let conn = Connection::connect(opts.bootstrap).await?;
            let cfg = ProducerConfig {
                topic: topic.clone(),
                partitions: workload.partitions_per_topic as i32,
                first_partition: (p * workload.partitions_per_topic / workload.producers_per_topic)
                    as i32,
                rate: rate_per_producer,
                per_batch: workload.messages_per_batch(),
                linger: Duration::from_millis(workload.linger_ms),
                in_flight: workload.max_in_flight as usize,
                acks: workload.acks.wire(),
                compression,
                payload: payload.clone(),
            };
            producers.push(tokio::spawn(produce(
                conn,
                cfg,
                stats.clone(),
                clock,
                producing.clone(),
            )));
        }
    }

    // Warm-up, then the measured window, sampling once a second.
    let started = Instant::now();
    let warmup = workload.warmup();
    let test = workload.test();
    let mut samples = Vec::new();
    let mut last = stats.counts();
    let mut last_at = started;
    let mut window_start = None;
    let mut window_counts = last;
    if warmup.is_zero() {
        window_start = Some(started);
    }
    let end = warmup + test;
    let mut next_tick = started + Duration::from_secs(1);
    loop {
        let target = if window_start.is_none() {
            next_tick.min(started + warmup)
        } else {
            next_tick.min(started + end)
        };
        tokio::time::sleep_until(tokio::time::Instant::from_std(target)).await;
        let now = Instant::now();
        if window_start.is_none() && now >= started + warmup {
            window_start = Some(now);
            window_counts = stats.counts();
            stats.reset_totals();
        }
        let finished = now >= started + end;
        if now >= next_tick || finished {
            next_tick += Duration::from_secs(1);
            let counts = stats.counts();
            let secs = now.duration_since(last_at).as_secs_f64();
            let delta = counts.since(&last);
            let (publish, e2e) = stats.take_interval();
            let sample = IntervalSample {
                t_s: now.duration_since(started).as_secs_f64(),
                rates: Rates::of(&delta, secs),
                publish: Percentiles::of(&publish),
                end_to_end: Percentiles::of(&e2e),
            };
            if opts.progress {
                eprint!(
                    "\r[{:>5.1}/{:.0} s] {}  pub {:>9.0} msg/s {:>7.1} MB/s  cons {:>9.0} msg/s  p99 pub {:>7.2} ms e2e {:>7.2} ms  errors {}   ",
                    sample.t_s,
                    end.as_secs_f64(),
                    if now < started + warmup { "warm-up" } else { "measure" },
                    sample.rates.publish_msgs_per_s,
                    sample.rates.publish_mb_per_s,
                    sample.rates.consume_msgs_per_s,
                    sample.publish.p99_ms,
                    sample.end_to_end.p99_ms,
                    counts.send_errors + counts.receive_errors,
                );
            }
            samples.push(sample);
            last = counts;
            last_at = now;
        }
        if finished {
            break;
        }
    }
    let window_end = Instant::now();
    let window_secs = window_end
        .duration_since(window_start.unwrap_or(started))
        .as_secs_f64();
    let measured = stats.counts().since(&window_counts);
    let (publish_total, e2e_total) = stats.totals();

    // Stop producers, wait for their in-flight requests, then let consumers catch up.
    producing.store(false, Ordering::Relaxed);
    for p in producers {
        if let Ok(Err(e)) = p.await {
            eprintln!("\nproducer failed: {e}");
            stats.send_errors.fetch_add(1, Ordering::Relaxed);
        }
    }
    let drain_deadline = Instant::now() + DRAIN_MAX;
    loop {
        let c = stats.counts();
        let expected = c.sent_messages * u64::from(workload.subscriptions_per_topic);
        if c.received_messages >= expected || Instant::now() > drain_deadline {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    consuming.store(false, Ordering::Relaxed);
    for c in consumers {
        if let Ok(Err(e)) = c.await {
            eprintln!("\nconsumer failed: {e}");
            stats.receive_errors.fetch_add(1, Ordering::Relaxed);
        }
    }
    if opts.progress {
        eprintln!();
    }
    let all = stats.counts();
    Ok(Report::new(
        workload,
        window_secs,
        measured,
        all,
        Percentiles::of(&publish_total),
        Percentiles::of(&e2e_total),
        samples,
    ))
}

struct ProducerConfig {
    topic: String,
    partitions: i32,
    first_partition: i32,
    /// Messages per second for this producer; 0 is as fast as possible.
    rate: f64,
    per_batch: usize,
    linger: Duration,
    in_flight: usize,
    acks: i16,
    compression: conflux_wire::compression::Compression,
    payload: Bytes,
}

/// The batch being filled for one partition (sticky partitioning, as Kafka's default
/// partitioner does for keyless messages: fill one partition's batch, then move on).
struct OpenBatch {
    partition: i32,
    builder: BatchBuilder,
    created_us: Vec<u64>,
    opened: Instant,
}

impl OpenBatch {
    fn new(partition: i32, compression: conflux_wire::compression::Compression) -> Self {
        OpenBatch {
            partition,
            builder: BatchBuilder::new(now_ms()).with_compression(compression),
            created_us: Vec::new(),
            opened: Instant::now(),
        }
    }
}

struct Sealed {
    partition: i32,
    batch: Bytes,
    created_us: Vec<u64>,
}

async fn produce(
    conn: Connection,
    cfg: ProducerConfig,
    stats: Arc<Stats>,
    clock: Clock,
    running: Arc<AtomicBool>,
) -> Result<(), ClientError> {
    let permits = Arc::new(Semaphore::new(cfg.in_flight));
    let mut partition = cfg.first_partition % cfg.partitions;
    let mut open = OpenBatch::new(partition, cfg.compression);
    let mut sealed: Vec<Sealed> = Vec::new();
    let start_us = clock.now_us();
    let mut generated: u64 = 0;
    let value_len = cfg.payload.len() as u64;
    let seal = |open: &mut OpenBatch, sealed: &mut Vec<Sealed>, partition: &mut i32| {
        let batch = match open.builder.build() {
            Ok(b) => b,
            Err(_) => return,
        };
        sealed.push(Sealed {
            partition: open.partition,
            batch,
            created_us: std::mem::take(&mut open.created_us),
        });
        *partition = (*partition + 1) % cfg.partitions;
        *open = OpenBatch::new(*partition, cfg.compression);
    };
    while running.load(Ordering::Relaxed) {
        // Generate what is due: everything that fits the open batch at max rate, or the
        // messages whose scheduled time has come at a fixed rate.
        let now_us = clock.now_us();
        let due = if cfg.rate > 0.0 {
            let should = ((now_us - start_us) as f64 * cfg.rate / 1e6) as u64;
            should.saturating_sub(generated)
        } else {
            (cfg.per_batch - open.created_us.len()) as u64
        };
        for _ in 0..due {
            // Latency is measured from the message's scheduled time (no coordinated omission).
            let created = if cfg.rate > 0.0 {
                start_us + (generated as f64 * 1e6 / cfg.rate) as u64
            } else {
                now_us
            };
            let ts = now_ms();
            open.builder.append(
                ts,
                Some(Bytes::copy_from_slice(&created.to_be_bytes())),
                Some(cfg.payload.clone()),
                Vec::new(),
            );
            open.created_us.push(created);
            generated += 1;
            if open.created_us.len() >= cfg.per_batch {
                seal(&mut open, &mut sealed, &mut partition);
            }
        }
        if !open.created_us.is_empty() && open.opened.elapsed() >= cfg.linger {
            seal(&mut open, &mut sealed, &mut partition);
        }
        if !sealed.is_empty() {
            let permit = if cfg.rate > 0.0 {
                permits.clone().try_acquire_owned().ok()
            } else {
                permits.clone().acquire_owned().await.ok()
            };
            if let Some(permit) = permit {
                let batches = std::mem::take(&mut sealed);
                let mut created = Vec::new();
                let mut payload = Vec::with_capacity(batches.len());
                for s in batches {
                    created.push(s.created_us);
                    payload.push((s.partition, s.batch));
                }
                let rx = conn.produce(&cfg.topic, cfg.acks, payload).await?;
                let stats = stats.clone();
                tokio::spawn(async move {
                    let result = rx.await;
                    let acked_us = clock.now_us();
                    let ok = match result {
                        Ok(Ok(ResponseBody::Produce(resp))) => resp
                            .responses
                            .iter()
                            .flat_map(|t| t.partition_responses.iter())
                            .all(|p| p.error_code == 0),
                        _ => false,
                    };
                    let n: usize = created.iter().map(Vec::len).sum();
                    if ok {
                        stats.record_sent(
                            n as u64,
                            n as u64 * value_len,
                            created
                                .iter()
                                .flatten()
                                .map(|c| acked_us.saturating_sub(*c)),
                        );
                    } else {
                        stats.send_errors.fetch_add(n as u64, Ordering::Relaxed);
                    }
                    drop(permit);
                });
                continue;
            }
        }
        // Nothing to send now: wait for the next scheduled message or the linger deadline.
        if cfg.rate > 0.0 || !open.created_us.is_empty() {
            let next_msg = if cfg.rate > 0.0 {
                Duration::from_micros(
                    (start_us + ((generated + 1) as f64 * 1e6 / cfg.rate) as u64)
                        .saturating_sub(clock.now_us()),
                )
            } else {
                Duration::ZERO
            };
            let linger_left = if open.created_us.is_empty() {
                cfg.linger
            } else {
                cfg.linger.saturating_sub(open.opened.elapsed())
            };
            let wait = next_msg.min(linger_left);
            if !wait.is_zero() {
                tokio::time::sleep(wait).await;
            } else if !sealed.is_empty() {
                // All permits busy: let responses arrive.
                tokio::task::yield_now().await;
                tokio::time::sleep(Duration::from_micros(200)).await;
            }
        }
    }
    // Wait for every in-flight request to be answered.
    let _ = permits.acquire_many(cfg.in_flight as u32).await;
    Ok(())
}

async fn consume(
    conn: Connection,
    topic: String,
    mut offsets: Vec<(i32, i64)>,
    stats: Arc<Stats>,
    clock: Clock,
    running: Arc<AtomicBool>,
    every_record: bool,
    value_len: u64,
) -> Result<(), ClientError> {
    while running.load(Ordering::Relaxed) {
        let resp = conn
            .fetch(
                &topic,
                &offsets,
                FETCH_WAIT_MS,
                FETCH_PARTITION_MAX_BYTES,
                FETCH_MAX_BYTES,
            )
            .await?;
        let now_us = clock.now_us();
        let mut latencies = Vec::new();
        let (mut messages, mut bytes, mut errors) = (0u64, 0u64, 0u64);
        for t in resp.responses {
            for p in t.partitions {
                if p.error_code != 0 {
                    errors += 1;
                    continue;
                }
                let Some(slot) = offsets.iter_mut().find(|(i, _)| *i == p.partition_index) else {
                    continue;
                };
                let mut records = p.records.unwrap_or_default();
                // A fetch may end in a partial batch; it is fetched again next time.
                while let Ok(Some((header, batch))) = split_batch(&mut records) {
                    if header.last_offset() < slot.1 {
                        continue;
                    }
                    let Ok((_, mut iter)) = record_iter(&batch, DECOMPRESSED_MAX_BYTES) else {
                        errors += 1;
                        break;
                    };
                    let sent_at = |r: &conflux_wire::records::Record| {
                        r.key
                            .as_ref()
                            .and_then(|k| <[u8; 8]>::try_from(&k[..]).ok())
                            .map(|k| now_us.saturating_sub(u64::from_be_bytes(k)))
                    };
                    if !every_record && header.base_offset >= slot.1 {
                        // Max-rate runs: count from the batch header and give every record
                        // of the batch the latency of its first (oldest) record, an upper
                        // bound; decoding every record would make the consumer the bottleneck.
                        let n = u64::from(header.record_count.max(0) as u32);
                        messages += n;
                        bytes += n * value_len;
                        match iter.next() {
                            Some(Ok(first)) => latencies.extend(sent_at(&first).map(|l| (l, n))),
                            _ => errors += 1,
                        }
                    } else {
                        for record in iter {
                            let Ok(record) = record else {
                                errors += 1;
                                break;
                            };
                            let offset = header.base_offset + i64::from(record.offset_delta);
                            if offset < slot.1 {
                                continue;
                            }
                            messages += 1;
                            bytes += record.value.as_ref().map_or(0, |v| v.len() as u64);
                            latencies.extend(sent_at(&record).map(|l| (l, 1)));
                        }
                    }
                    slot.1 = header.last_offset() + 1;
                }
            }
        }
        if errors > 0 {
            stats.receive_errors.fetch_add(errors, Ordering::Relaxed);
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        if messages > 0 {
            stats.record_received(messages, bytes, latencies.into_iter());
        }
    }
    Ok(())
}
