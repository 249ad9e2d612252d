//! A few low-priority threads for background work that must give way to
//! ingest: building the mirror's objects (reading entries and payloads back,
//! encoding bundles and tiles) and a directory mirror's file writes. On a
//! busy machine the work waits for idle CPU, as RocksDB's niced flushes do,
//! so publishing lags a little further behind instead of slowing acks; the
//! lag is a metric. Work that must not wait any longer (the mirror when it
//! is about to fall out of its in-memory feed, see `mirror::Mirror`) runs on
//! as many threads beside them at normal priority.

use std::sync::mpsc;

type Job = Box<dyn FnOnce() + Send>;

/// A pool of threads at a lower CPU priority (a higher nice value), and as
/// many at normal priority for urgent jobs.
pub struct Niced {
    jobs: mpsc::Sender<Job>,
    urgent: mpsc::Sender<Job>,
}

/// Starts `threads` threads named `<name><i>` taking jobs from one queue,
/// at nice `nice` if given.
fn start(name: &str, threads: usize, nice: Option<i32>) -> std::io::Result<mpsc::Sender<Job>> {
    let (jobs, rx) = mpsc::channel::<Job>();
    let rx = std::sync::Arc::new(std::sync::Mutex::new(rx));
    for i in 0..threads.max(1) {
        let rx = rx.clone();
        std::thread::Builder::new()
            .name(format!("{name}{i}"))
            .spawn(move || {
                if let Some(nice) = nice {
                    lower_priority(nice);
                }
                loop {
                    let job = match rx.lock() {
                        Ok(rx) => rx.recv(),
                        Err(_) => return,
                    };
                    match job {
                        Ok(job) => job(),
                        Err(_) => return, // The pool is gone.
                    }
                }
            })?;
    }
    Ok(jobs)
}

impl Niced {
    /// Starts `threads` threads named `<name>-<i>` at nice `nice` (on Linux;
    /// elsewhere at normal priority), and `threads` named `<name>-now-<i>`
    /// at normal priority.
    pub fn new(name: &str, threads: usize, nice: i32) -> std::io::Result<Niced> {
        Ok(Niced {
            jobs: start(&format!("{name}-"), threads, Some(nice))?,
            urgent: start(&format!("{name}-now-"), threads, None)?,
        })
    }

    /// Runs `f` on the pool's niced threads; None if it panicked or the
    /// pool is gone.
    pub async fn run<T: Send + 'static>(
        &self,
        f: impl FnOnce() -> T + Send + 'static,
    ) -> Option<T> {
        self.run_at(false, f).await
    }

    /// Runs `f` on the pool: on its normal-priority threads if `urgent`,
    /// else on its niced ones. None if it panicked or the pool is gone.
    pub async fn run_at<T: Send + 'static>(
        &self,
        urgent: bool,
        f: impl FnOnce() -> T + Send + 'static,
    ) -> Option<T> {
        let (tx, rx) = tokio::sync::oneshot::channel();
        let job: Job = Box::new(move || {
            // A panic is answered as None; the thread lives on.
            if let Ok(v) = std::panic::catch_unwind(std::panic::AssertUnwindSafe(f)) {
                let _ = tx.send(v);
            }
        });
        if urgent { &self.urgent } else { &self.jobs }
            .send(job)
            .ok()?;
        rx.await.ok()
    }
}

#[cfg(target_os = "linux")]
fn lower_priority(nice: i32) {
    // On Linux a thread id names one thread to setpriority(2).
    let tid = rustix::thread::gettid();
    if let Err(e) = rustix::process::setpriority_process(Some(tid), nice) {
        tracing::debug!(error = %e, "cannot lower the priority of a background thread");
    }
}

#[cfg(not(target_os = "linux"))]
fn lower_priority(_nice: i32) {}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn jobs_run_at_the_lower_priority_unless_urgent_and_survive_a_panic() {
        let pool = Niced::new("test-niced", 1, 10).unwrap();
        #[cfg(target_os = "linux")]
        {
            let nice = pool
                .run(|| rustix::process::getpriority_process(Some(rustix::thread::gettid())))
                .await
                .unwrap()
                .unwrap();
            assert_eq!(nice, 10);
        }
        assert_eq!(
            pool.run(|| -> u32 { panic!("a job that panics") }).await,
            None
        );
        assert_eq!(pool.run(|| 2 + 2).await, Some(4), "the thread lives on");
        #[cfg(target_os = "linux")]
        {
            let nice = pool
                .run_at(true, || {
                    rustix::process::getpriority_process(Some(rustix::thread::gettid()))
                })
                .await
                .unwrap()
                .unwrap();
            let own = rustix::process::getpriority_process(Some(rustix::thread::gettid())).unwrap();
            assert_eq!(nice, own, "urgent jobs run at the process's priority");
        }
    }
}
