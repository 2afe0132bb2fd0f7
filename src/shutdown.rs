//! Graceful stop of a node on SIGTERM or SIGINT: the signals are blocked in every thread and
//! taken by one thread with `sigwait`; it asks the shards to hand over the leadership of the
//! groups they lead, waits until none leads a group of more than one replica (or
//! `HAND_OVER_TIMEOUT` passes), and ends the process. A second signal ends it at once.
//! Nothing here is needed for safety: every acknowledged write is already durable.

use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// How often a shard checks for a stop request and reports the groups it still leads.
pub const POLL_INTERVAL: Duration = Duration::from_millis(50);
/// The longest a stop waits for the leadership to move.
const HAND_OVER_TIMEOUT: Duration = Duration::from_secs(5);
/// Not reported yet.
const UNKNOWN: usize = usize::MAX;

pub struct Shutdown {
    requested: AtomicBool,
    /// Per shard: the groups it still leads since the stop began.
    led: Vec<AtomicUsize>,
}

impl Shutdown {
    /// Blocks SIGTERM and SIGINT in the calling thread (and so in every thread it starts
    /// after) and starts the thread that takes them. Call before starting any other thread.
    pub fn install(shards: u16) -> std::io::Result<Arc<Shutdown>> {
        assert!(shards >= 1);
        let shutdown = Arc::new(Shutdown {
            requested: AtomicBool::new(false),
            led: (0..shards).map(|_| AtomicUsize::new(UNKNOWN)).collect(),
        });
        let signals = stop_signals();
        // SAFETY: `signals` is an initialised set; a null old-set pointer is allowed.
        let blocked =
            unsafe { libc::pthread_sigmask(libc::SIG_BLOCK, &signals, std::ptr::null_mut()) };
        if blocked != 0 {
            return Err(std::io::Error::from_raw_os_error(blocked));
        }
        let waiter = shutdown.clone();
        std::thread::Builder::new()
            .name("galgo-shutdown".to_string())
            .spawn(move || waiter.wait_for_signals(signals))?;
        Ok(shutdown)
    }

    pub fn requested(&self) -> bool {
        self.requested.load(Ordering::Acquire)
    }

    /// Shard `shard` leads `groups` groups of more than one replica now.
    pub fn report_led(&self, shard: u16, groups: usize) {
        assert!(groups != UNKNOWN);
        self.led[usize::from(shard)].store(groups, Ordering::Release);
    }

    fn still_led(&self) -> Option<usize> {
        let mut total = 0usize;
        for led in &self.led {
            match led.load(Ordering::Acquire) {
                UNKNOWN => return None,
                groups => total += groups,
            }
        }
        Some(total)
    }

    fn wait_for_signals(&self, signals: libc::sigset_t) {
        let signal = take_signal(&signals);
        println!("galgo: signal {signal}: handing over leadership, then stopping");
        self.requested.store(true, Ordering::Release);
        let deadline = Instant::now() + HAND_OVER_TIMEOUT;
        // A second signal while the leadership moves ends the process at once.
        let impatient = std::thread::Builder::new()
            .name("galgo-shutdown-second".to_string())
            .spawn(move || {
                let signal = take_signal(&signals);
                println!("galgo: signal {signal} again: stopping now");
                std::process::exit(1);
            });
        if impatient.is_err() {
            eprintln!("galgo: a second signal will not cut the hand-over short");
        }
        loop {
            match self.still_led() {
                Some(0) => {
                    println!("galgo: no group led here any more; stopped");
                    std::process::exit(0);
                }
                led if Instant::now() >= deadline => {
                    let led = led.map_or("an unknown number of".to_string(), |n| n.to_string());
                    println!(
                        "galgo: {led} groups still led after {HAND_OVER_TIMEOUT:?}; stopped anyway"
                    );
                    std::process::exit(0);
                }
                _ => std::thread::sleep(POLL_INTERVAL),
            }
        }
    }
}

fn stop_signals() -> libc::sigset_t {
    // SAFETY: sigemptyset initialises the zeroed set before sigaddset reads it.
    unsafe {
        let mut set: libc::sigset_t = std::mem::zeroed();
        libc::sigemptyset(&mut set);
        libc::sigaddset(&mut set, libc::SIGTERM);
        libc::sigaddset(&mut set, libc::SIGINT);
        set
    }
}

/// Waits for one of `signals` (blocked in this thread) and returns it.
fn take_signal(signals: &libc::sigset_t) -> i32 {
    loop {
        let mut signal: i32 = 0;
        // SAFETY: `signals` is initialised and `signal` is a valid place to write.
        let result = unsafe { libc::sigwait(signals, &mut signal) };
        if result == 0 {
            return signal;
        }
        // EINTR cannot happen for sigwait on Linux; anything else is retried after a pause.
        std::thread::sleep(POLL_INTERVAL);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_stop_waits_for_every_shard() {
        let shutdown = Shutdown {
            requested: AtomicBool::new(false),
            led: (0..3).map(|_| AtomicUsize::new(UNKNOWN)).collect(),
        };
        assert_eq!(shutdown.still_led(), None);
        shutdown.report_led(0, 2);
        shutdown.report_led(1, 0);
        assert_eq!(shutdown.still_led(), None, "shard 2 has not reported");
        shutdown.report_led(2, 1);
        assert_eq!(shutdown.still_led(), Some(3));
        shutdown.report_led(0, 0);
        shutdown.report_led(2, 0);
        assert_eq!(shutdown.still_led(), Some(0));
    }
}
