//! The one retry policy of the project: capped exponential backoff with jitter (`backon`).
//!
//! Every caller that retries (Graph requests, batch items) takes its delays from here, and
//! decides *whether* to retry with the one classification function of its layer
//! (`GraphError::is_retryable`). Waits imposed by the server (throttling) are not retried in
//! place: the target's next poll moves instead.

use std::time::Duration;

use backon::{BackoffBuilder, ExponentialBuilder};

#[derive(Debug, Clone, Copy, PartialEq)]
pub struct RetryPolicy {
    /// The first wait; each later one doubles, up to `max_delay`.
    pub min_delay: Duration,
    pub max_delay: Duration,
    /// How many retries after the first attempt.
    pub max_times: usize,
}

impl Default for RetryPolicy {
    fn default() -> Self {
        RetryPolicy {
            min_delay: Duration::from_millis(500),
            max_delay: Duration::from_secs(8),
            max_times: 3,
        }
    }
}

impl RetryPolicy {
    /// A policy with tiny waits, for tests and the simulator-backed demo.
    pub fn fast() -> Self {
        RetryPolicy {
            min_delay: Duration::from_millis(5),
            max_delay: Duration::from_millis(40),
            max_times: 3,
        }
    }

    /// The backon builder every retry loop uses.
    pub fn builder(&self) -> ExponentialBuilder {
        ExponentialBuilder::default()
            .with_jitter()
            .with_factor(2.0)
            .with_min_delay(self.min_delay)
            .with_max_delay(self.max_delay)
            .with_max_times(self.max_times)
    }

    /// The successive waits of this policy, for loops that retry a subset of work (batch items)
    /// rather than a single future.
    pub fn delays(&self) -> impl Iterator<Item = Duration> {
        self.builder().build()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn delays_are_capped_and_bounded_in_number() {
        let p = RetryPolicy {
            min_delay: Duration::from_millis(100),
            max_delay: Duration::from_millis(300),
            max_times: 5,
        };
        let d: Vec<_> = p.delays().collect();
        assert_eq!(d.len(), 5);
        // Jitter adds up to one min_delay on top of the capped value.
        assert!(d.iter().all(|x| *x <= Duration::from_millis(600)), "{d:?}");
        assert!(d[0] >= Duration::from_millis(100));
    }
}
