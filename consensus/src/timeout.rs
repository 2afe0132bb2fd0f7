//! Tick-driven timeouts with attempts, exponential backoff and jitter drawn from a seeded PRNG.

use crate::prng::Prng;

#[derive(Clone, Debug)]
pub struct Timeout {
    pub name: &'static str,
    /// Base interval in ticks.
    pub after: u64,
    ticks: u64,
    deadline: u64,
    pub attempts: u32,
    pub running: bool,
}

const BACKOFF_ATTEMPTS_MAX: u32 = 4;

impl Timeout {
    pub fn new(name: &'static str, after: u64) -> Timeout {
        assert!(after > 0);
        Timeout {
            name,
            after,
            ticks: 0,
            deadline: after,
            attempts: 0,
            running: false,
        }
    }

    pub fn start(&mut self) {
        self.ticks = 0;
        self.attempts = 0;
        self.deadline = self.after;
        self.running = true;
    }

    /// Starts with a deadline drawn uniformly from [after/2, 3·after/2].
    pub fn start_with_jitter(&mut self, prng: &mut Prng) {
        self.start();
        self.deadline = prng
            .range_inclusive(self.after.div_ceil(2), self.after + self.after / 2)
            .max(1);
    }

    pub fn stop(&mut self) {
        self.running = false;
        self.ticks = 0;
        self.attempts = 0;
    }

    /// Restarts the count (e.g. on a heartbeat) without resetting attempts.
    pub fn reset(&mut self) {
        assert!(self.running);
        self.ticks = 0;
    }

    /// Called after the timeout fired: the next deadline backs off exponentially with jitter.
    pub fn backoff(&mut self, prng: &mut Prng) {
        assert!(self.running);
        self.ticks = 0;
        self.attempts = self.attempts.saturating_add(1);
        let exponent = self.attempts.min(BACKOFF_ATTEMPTS_MAX);
        let ceiling = self.after << exponent;
        self.deadline = prng.range_inclusive(self.after, ceiling).max(1);
    }

    /// Like `reset`, but a no-op when stopped.
    pub fn reset_if_running(&mut self) {
        if self.running {
            self.ticks = 0;
        }
    }

    pub fn tick(&mut self) {
        if self.running {
            self.ticks += 1;
        }
    }

    pub fn fired(&self) -> bool {
        self.running && self.ticks >= self.deadline
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fires_after_deadline_and_backs_off() {
        let mut prng = Prng::from_seed(3);
        let mut timeout = Timeout::new("t", 10);
        timeout.start();
        for _ in 0..9 {
            timeout.tick();
            assert!(!timeout.fired());
        }
        timeout.tick();
        assert!(timeout.fired());
        timeout.backoff(&mut prng);
        assert!(!timeout.fired());
        assert_eq!(timeout.attempts, 1);
        timeout.stop();
        for _ in 0..1000 {
            timeout.tick();
        }
        assert!(!timeout.fired());
    }
}
