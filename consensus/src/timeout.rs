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

    /// Called after the timeout fired: the next deadline backs off exponentially with jitter.
    pub fn backoff(&mut self, prng: &mut Prng) {
        assert!(self.running);
        self.ticks = 0;
        self.attempts = self.attempts.saturating_add(1);
        let exponent = self.attempts.min(BACKOFF_ATTEMPTS_MAX);
        let ceiling = self.after << exponent;
        self.deadline = prng.range_inclusive(self.after, ceiling).max(1);
    }

    /// What the timeout waits for showed up (a backup heard its primary): the count starts
    /// again from the base interval, and earlier backoff is forgotten. Keeping it would leave
    /// a backup that once timed out in a view (a late heartbeat, a partition that healed)
    /// waiting up to `after << BACKOFF_ATTEMPTS_MAX` ticks to notice the next failure, and a
    /// view change needs the votes of a quorum, so the slowest of them sets the failover
    /// time. A no-op when stopped.
    pub fn reset_if_running(&mut self) {
        if self.running {
            self.ticks = 0;
            self.attempts = 0;
            self.deadline = self.after;
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
        // Backed off twice more, then heard from: the base deadline again.
        timeout.backoff(&mut prng);
        timeout.backoff(&mut prng);
        assert_eq!(timeout.attempts, 3);
        timeout.reset_if_running();
        assert_eq!(timeout.attempts, 0);
        for _ in 0..9 {
            timeout.tick();
            assert!(!timeout.fired());
        }
        timeout.tick();
        assert!(timeout.fired());
        timeout.stop();
        for _ in 0..1000 {
            timeout.tick();
        }
        assert!(!timeout.fired());
    }
}
