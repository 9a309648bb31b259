//! The daemon: load and attach, then ring buffer -> bounded channel -> verdicts -> stdout, until
//! SIGINT or SIGTERM. Enforcement happens in the kernel; this loop only reports it, so a slow
//! consumer costs ring-buffer drops (counted per event kind), never a missed decision.
use std::{
    io::{self, Write as _},
    sync::{
        Arc,
        atomic::{AtomicU64, Ordering},
    },
};

use anyhow::Context as _;
use tokio::{io::unix::AsyncFd, signal::unix::SignalKind, sync::mpsc};

use crate::{
    cli::daemon::DaemonArgs,
    correlate::Correlator,
    events::{self, Event},
    loader, lock, paths,
    policy::compile::Compiled,
};

/// Events buffered between the ring-buffer reader and the verdict writer. When full, the reader
/// waits, and the kernel's ring buffer (which counts its drops) absorbs the burst.
const CHANNEL_DEPTH: usize = 4096;

pub async fn run(policy: Compiled, args: &DaemonArgs) -> anyhow::Result<()> {
    let _lock = lock::acquire()?;
    for w in &policy.warnings {
        tracing::warn!("{w}");
    }
    let cgroup_root = paths::cgroup2_root()?;
    let loaded = loader::load(&cgroup_root, &args.load_options(), &policy).context("starting enforcement")?;
    let ring = loaded.events()?;
    // SAFETY: the ring buffer owns its map fd and keeps it open, unchanged, for as long as the
    // AsyncFd owns the ring buffer.
    let mut ring = unsafe { AsyncFd::register(ring) }
        .map_err(|e| e.into_parts().1)
        .context("polling the event ring buffer")?;

    let (source, hash) = (policy.source.clone(), policy.hash.clone());
    let mut builder = Correlator::new(policy, cgroup_root.clone(), &loaded.registrations);
    tracing::info!(
        tier = loader::TIER,
        pinned = %loaded.generation.dir.display(),
        adopted = loaded.adopted,
        replaced_generations = loaded.replaced,
        programs = ?loader::PROGRAMS,
        cgroups = ?loaded.registrations.iter().map(|r| r.path.as_str()).collect::<Vec<_>>(),
        policy = %source,
        policy_hash = %hash,
        "ready: enforcing"
    );

    let (tx, mut rx) = mpsc::channel::<Event>(CHANNEL_DEPTH);
    // Records that were not events (never expected from our own programs): counted, reported.
    let undecodable = Arc::new(AtomicU64::new(0));
    let bad = Arc::clone(&undecodable);
    let reader = tokio::spawn(async move {
        loop {
            let mut guard = match ring.readable_mut().await {
                Ok(g) => g,
                Err(e) => {
                    tracing::error!(error = %e, "event ring buffer poll failed");
                    return;
                }
            };
            let ring = guard.get_inner_mut();
            while let Some(item) = ring.next() {
                match events::decode(&item) {
                    Ok(ev) => {
                        drop(item);
                        if tx.send(ev).await.is_err() {
                            return;
                        }
                    }
                    Err(e) => {
                        bad.fetch_add(1, Ordering::Relaxed);
                        tracing::warn!(error = %e, "undecodable event");
                    }
                }
            }
            guard.clear_ready();
        }
    });

    let writer = tokio::spawn(async move {
        let stdout = io::stdout();
        let mut write_errors = 0u64;
        while let Some(ev) = rx.recv().await {
            let mut out = stdout.lock();
            let mut batch = vec![ev];
            while let Ok(more) = rx.try_recv() {
                batch.push(more);
                if batch.len() >= 256 {
                    break;
                }
            }
            for ev in batch {
                let Some(verdict) = builder.handle(&ev) else { continue };
                // stdout failing (closed pipe, full disk) must not stop the daemon: enforcement
                // lives as long as the daemon does. Count and go on.
                if writeln!(out, "{}", verdict.to_ocsf()).is_err() {
                    write_errors += 1;
                }
            }
            if out.flush().is_err() {
                write_errors += 1;
            }
        }
        (write_errors, builder.process_table_len())
    });

    let mut sigterm = tokio::signal::unix::signal(SignalKind::terminate())?;
    let mut sigint = tokio::signal::unix::signal(SignalKind::interrupt())?;
    tokio::select! {
        _ = sigterm.recv() => tracing::info!("SIGTERM: stopping"),
        _ = sigint.recv() => tracing::info!("SIGINT: stopping"),
    }
    reader.abort();
    let (write_errors, process_table) = writer.await.unwrap_or_default();
    let drops = loaded.drops()?;
    let undecodable = undecodable.load(Ordering::Relaxed);
    if args.detach_on_exit {
        tracing::info!(?drops, undecodable, stdout_write_errors = write_errors, process_table, "stopped; detaching programs");
        loaded.detach(&args.pin_dir, &cgroup_root)?;
    } else {
        tracing::info!(
            ?drops,
            undecodable,
            stdout_write_errors = write_errors,
            process_table,
            pinned = %loaded.generation.dir.display(),
            "stopped; enforcement stays attached (`guard-agent detach` removes it)"
        );
    }
    Ok(())
}

