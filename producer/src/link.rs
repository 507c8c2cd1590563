//! The producer's link to its ingest pool, as a state machine without I/O.
//!
//! It decides when to connect, how long to back off after a failure, when
//! the spool is replayed, when a refusal ends the producer and how a
//! shutdown ends: the producer's loop feeds it what happened ([`Input`]) with
//! the time `now`, and does what it answers ([`Action`]); it sleeps until
//! [`Link::timeout`]. Nothing here touches a socket or a clock, so its tests
//! run in virtual time.

use std::time::{Duration, Instant};

/// Where the link is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Phase {
    /// No connection; the next attempt starts at `retry_at`.
    Disconnected { retry_at: Instant },
    /// An attempt is under way: QUIC and TLS handshakes, then the hello,
    /// to each address of the pool in turn.
    Connecting,
    /// Connected; the events the spool held when the connection came up are
    /// being sent again, up to `up_to_seq`, not yet all acknowledged.
    Replaying { up_to_seq: u64 },
    /// Connected, with nothing left from before the connection.
    Live,
    /// Stopping while connected: the spool goes to the ingest until it is
    /// acknowledged or `deadline` passes.
    Draining { deadline: Instant },
    /// Done: the loop ends.
    Stopped,
}

/// What happened, as the producer's loop tells it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Input {
    /// The attempt ended with a welcome. `spooled_up_to`: the highest
    /// sequence number in the spool, `None` if it is empty.
    Connected { spooled_up_to: Option<u64> },
    /// The attempt failed for a passing reason (unreachable, busy, draining):
    /// retry after a back-off.
    Unreachable,
    /// The ingest refused this producer in the handshake (identity,
    /// version): retrying cannot help.
    Refused(String),
    /// Every event up to `up_to_seq` is stored; `spool_empty` once they left it.
    Acked { up_to_seq: u64, spool_empty: bool },
    /// The ingest refused a batch: reconnect.
    BatchRefused,
    /// The connection or one of its streams was lost: reconnect.
    Lost,
    /// Stop; `spool_empty` when nothing waits for an acknowledgement.
    Shutdown { spool_empty: bool },
    /// The time [`Link::timeout`] named has come.
    Timeout,
}

/// What the producer's loop does next.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Action {
    /// Nothing.
    Nothing,
    /// Start a connection attempt now.
    Connect,
    /// The connection is up: send every unacknowledged event again, from
    /// the first (rewind the spool).
    Replay,
    /// No connection (an attempt failed, or the connection was dropped:
    /// forget it and rewind the spool); the next attempt is at `retry_at`.
    /// `first_failure`: the first since the last good connection, worth
    /// one warning (later ones are quiet).
    Retry { retry_at: Instant, first_failure: bool },
    /// Hand the spool to the ingest and wait for its acknowledgement until `deadline`.
    Drain { deadline: Instant },
    /// Stop now, closing the connection if there is one.
    Stop,
    /// Stop with an error: the ingest refused this producer for `reason`.
    GiveUp(String),
}

/// Exponential back-off from [`Backoff::MIN`] to [`Backoff::MAX`] with
/// ±25 % jitter, so producers restarted together do not reconnect in lockstep.
#[derive(Debug, Clone)]
pub struct Backoff {
    delay: Duration,
    state: u64,
}

impl Backoff {
    pub const MIN: Duration = Duration::from_millis(100);
    pub const MAX: Duration = Duration::from_secs(5);

    /// A back-off whose jitter comes from `seed` (any value).
    pub fn new(seed: u64) -> Self {
        Backoff {
            delay: Self::MIN,
            state: seed | 1,
        }
    }

    /// After a good connection: the next failure waits [`Backoff::MIN`] again.
    pub fn reset(&mut self) {
        self.delay = Self::MIN;
    }

    /// The wait before the next attempt (the nominal delay, jittered), which
    /// doubles the nominal delay up to [`Backoff::MAX`].
    pub fn next_delay(&mut self) -> Duration {
        self.state ^= self.state << 13;
        self.state ^= self.state >> 7;
        self.state ^= self.state << 17;
        let jitter = 0.75 + (self.state % 1000) as f64 / 2000.0;
        let d = self.delay.mul_f64(jitter);
        self.delay = (self.delay * 2).min(Self::MAX);
        d
    }
}

/// The link's state: its [`Phase`], its back-off, and whether the current
/// outage was already reported.
#[derive(Debug, Clone)]
pub struct Link {
    phase: Phase,
    backoff: Backoff,
    drain_timeout: Duration,
    warned: bool,
}

impl Link {
    /// A link whose first attempt the caller starts at once ([`Phase::Connecting`]);
    /// a shutdown while connected drains for at most `drain_timeout`.
    pub fn new(seed: u64, drain_timeout: Duration) -> Self {
        Link {
            phase: Phase::Connecting,
            backoff: Backoff::new(seed),
            drain_timeout,
            warned: false,
        }
    }

    pub fn phase(&self) -> &Phase {
        &self.phase
    }

    /// Whether a connection is up (replaying, live or draining).
    pub fn connected(&self) -> bool {
        matches!(
            self.phase,
            Phase::Replaying { .. } | Phase::Live | Phase::Draining { .. }
        )
    }

    /// When to call [`Link::handle`] with [`Input::Timeout`], if ever.
    pub fn timeout(&self) -> Option<Instant> {
        match self.phase {
            Phase::Disconnected { retry_at } => Some(retry_at),
            Phase::Draining { deadline } => Some(deadline),
            _ => None,
        }
    }

    /// Takes in what happened at `now`; says what to do.
    pub fn handle(&mut self, input: Input, now: Instant) -> Action {
        use Input::*;
        match (&self.phase, input) {
            (Phase::Stopped, _) => Action::Stop,
            (Phase::Draining { deadline }, input) => match input {
                Acked {
                    spool_empty: false, ..
                } => Action::Nothing,
                Timeout if now < *deadline => Action::Nothing,
                // Acknowledged, lost, refused, out of time, or told twice.
                _ => self.stop(),
            },
            (_, Shutdown { spool_empty }) => match self.connected() && !spool_empty {
                true => {
                    let deadline = now + self.drain_timeout;
                    self.phase = Phase::Draining { deadline };
                    Action::Drain { deadline }
                }
                false => self.stop(),
            },
            (Phase::Connecting, Connected { spooled_up_to }) => {
                self.backoff.reset();
                self.warned = false;
                self.phase = match spooled_up_to {
                    Some(up_to_seq) => Phase::Replaying { up_to_seq },
                    None => Phase::Live,
                };
                Action::Replay
            }
            (Phase::Connecting, Unreachable) => {
                let first_failure = !self.warned;
                self.warned = true;
                self.retry(now, first_failure)
            }
            (Phase::Connecting, Refused(reason)) => {
                self.phase = Phase::Stopped;
                Action::GiveUp(reason)
            }
            (Phase::Disconnected { retry_at }, Timeout) if now >= *retry_at => {
                self.phase = Phase::Connecting;
                Action::Connect
            }
            (Phase::Replaying { up_to_seq }, Acked { up_to_seq: acked, .. }) => {
                if acked >= *up_to_seq {
                    self.phase = Phase::Live;
                }
                Action::Nothing
            }
            (Phase::Replaying { .. } | Phase::Live, Lost) => {
                // The loss itself is the warning of this outage.
                self.warned = true;
                self.retry(now, false)
            }
            (Phase::Replaying { .. } | Phase::Live, BatchRefused) => self.retry(now, false),
            // Anything else (a late ack, an early timeout) changes nothing.
            _ => Action::Nothing,
        }
    }

    fn retry(&mut self, now: Instant, first_failure: bool) -> Action {
        let retry_at = now + self.backoff.next_delay();
        self.phase = Phase::Disconnected { retry_at };
        Action::Retry {
            retry_at,
            first_failure,
        }
    }

    fn stop(&mut self) -> Action {
        self.phase = Phase::Stopped;
        Action::Stop
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use meridian_proto::spool::Spool;
    use meridian_proto::OnFull;
    use meridian_proto::{Category, Sample};

    const DRAIN: Duration = Duration::from_secs(5);

    fn ms(n: u64) -> Duration {
        Duration::from_millis(n)
    }

    /// Fails `n` attempts in a row from `now`, each when its retry is due;
    /// returns each wait and the time after the last failure.
    fn fail(link: &mut Link, mut now: Instant, n: usize) -> (Vec<Duration>, Instant) {
        let mut waits = Vec::new();
        for _ in 0..n {
            let Action::Retry { retry_at, .. } = link.handle(Input::Unreachable, now) else {
                panic!("a failed attempt is retried");
            };
            waits.push(retry_at - now);
            now = retry_at;
            assert_eq!(link.handle(Input::Timeout, now), Action::Connect);
        }
        (waits, now)
    }

    fn within_jitter(wait: Duration, nominal: Duration) -> bool {
        wait >= nominal.mul_f64(0.75) && wait <= nominal.mul_f64(1.25)
    }

    #[test]
    fn back_off_doubles_up_to_its_cap_with_jitter() {
        for seed in [1, 42, 0xdead_beef, u64::MAX] {
            let mut link = Link::new(seed, DRAIN);
            let (waits, _) = fail(&mut link, Instant::now(), 10);
            let nominal = [100, 200, 400, 800, 1600, 3200, 5000, 5000, 5000, 5000];
            for (wait, nominal) in waits.iter().zip(nominal) {
                assert!(
                    within_jitter(*wait, ms(nominal)),
                    "seed {seed}: {wait:?} for {nominal} ms"
                );
            }
        }
    }

    #[test]
    fn jitter_differs_between_producers() {
        let t0 = Instant::now();
        let (a, _) = fail(&mut Link::new(1, DRAIN), t0, 5);
        let (b, _) = fail(&mut Link::new(2, DRAIN), t0, 5);
        assert_ne!(a, b, "two producers restarted together do not retry in lockstep");
    }

    #[test]
    fn no_attempt_before_the_retry_time() {
        let t0 = Instant::now();
        let mut link = Link::new(7, DRAIN);
        let Action::Retry { retry_at, .. } = link.handle(Input::Unreachable, t0) else {
            panic!()
        };
        assert_eq!(link.timeout(), Some(retry_at));
        assert_eq!(link.handle(Input::Timeout, retry_at - ms(1)), Action::Nothing);
        assert_eq!(link.handle(Input::Timeout, retry_at), Action::Connect);
        assert_eq!(link.phase(), &Phase::Connecting);
        assert_eq!(link.timeout(), None);
    }

    #[test]
    fn a_good_connection_resets_the_back_off() {
        let mut link = Link::new(3, DRAIN);
        let (_, now) = fail(&mut link, Instant::now(), 6);
        link.handle(Input::Connected { spooled_up_to: None }, now);
        let Action::Retry { retry_at, .. } = link.handle(Input::Lost, now) else {
            panic!("a lost connection is retried")
        };
        assert!(
            within_jitter(retry_at - now, Backoff::MIN),
            "{:?}",
            retry_at - now
        );
    }

    #[test]
    fn only_the_first_failure_of_an_outage_is_reported() {
        let t0 = Instant::now();
        let mut link = Link::new(5, DRAIN);
        let first = link.handle(Input::Unreachable, t0);
        assert!(
            matches!(
                first,
                Action::Retry {
                    first_failure: true,
                    ..
                }
            ),
            "{first:?}"
        );
        let (_, now) = (link.handle(Input::Timeout, t0 + DRAIN), t0 + DRAIN);
        let second = link.handle(Input::Unreachable, now);
        assert!(
            matches!(
                second,
                Action::Retry {
                    first_failure: false,
                    ..
                }
            ),
            "{second:?}"
        );
        // A new outage after a good connection that was lost: the loss was
        // the warning, so its failed attempts are quiet too.
        link.handle(Input::Timeout, now + DRAIN);
        link.handle(Input::Connected { spooled_up_to: None }, now + DRAIN);
        link.handle(Input::Lost, now + DRAIN);
        link.handle(Input::Timeout, now + DRAIN * 2);
        let after_loss = link.handle(Input::Unreachable, now + DRAIN * 2);
        assert!(
            matches!(
                after_loss,
                Action::Retry {
                    first_failure: false,
                    ..
                }
            ),
            "{after_loss:?}"
        );
        // A good connection whose batch was refused, then an unreachable pool: reported.
        link.handle(Input::Timeout, now + DRAIN * 3);
        link.handle(Input::Connected { spooled_up_to: None }, now + DRAIN * 3);
        link.handle(Input::BatchRefused, now + DRAIN * 3);
        link.handle(Input::Timeout, now + DRAIN * 4);
        let after_refusal = link.handle(Input::Unreachable, now + DRAIN * 4);
        assert!(
            matches!(
                after_refusal,
                Action::Retry {
                    first_failure: true,
                    ..
                }
            ),
            "{after_refusal:?}"
        );
    }

    #[test]
    fn a_refused_handshake_gives_up_for_good() {
        let t0 = Instant::now();
        let mut link = Link::new(9, DRAIN);
        let action = link.handle(Input::Refused("certificate names MTM1M3".into()), t0);
        assert_eq!(action, Action::GiveUp("certificate names MTM1M3".into()));
        assert_eq!(link.phase(), &Phase::Stopped);
        assert_eq!(link.timeout(), None, "no retry is scheduled");
        assert_eq!(link.handle(Input::Timeout, t0 + Backoff::MAX), Action::Stop);
    }

    #[test]
    fn a_refused_batch_reconnects() {
        let t0 = Instant::now();
        let mut link = Link::new(11, DRAIN);
        link.handle(Input::Connected { spooled_up_to: None }, t0);
        let action = link.handle(Input::BatchRefused, t0);
        assert!(matches!(action, Action::Retry { .. }), "{action:?}");
        let Some(retry_at) = link.timeout() else { panic!() };
        assert_eq!(link.handle(Input::Timeout, retry_at), Action::Connect);
    }

    fn event(seq: u64) -> Sample {
        Sample {
            topic: "logevent_heartbeat".into(),
            category: Category::Event,
            salindex: None,
            seq,
            source_ts: seq as f64,
            fields: vec![],
        }
    }

    /// What the producer's loop does with the spool on each action.
    fn apply(action: &Action, spool: &mut Spool) {
        if matches!(action, Action::Replay | Action::Retry { .. }) {
            spool.rewind();
        }
    }

    #[test]
    fn reconnect_replays_the_spool_from_the_first_unacked_event() {
        let mut now = Instant::now();
        let mut link = Link::new(13, DRAIN);
        let mut spool = Spool::new(100, 1 << 20, OnFull::Block);
        for seq in 1..=5 {
            spool.push(event(seq));
        }
        let action = link.handle(
            Input::Connected {
                spooled_up_to: Some(5),
            },
            now,
        );
        assert_eq!(action, Action::Replay);
        apply(&action, &mut spool);
        let sent: Vec<u64> = spool.take_unsent(10).iter().map(|s| s.seq).collect();
        assert_eq!(sent, [1, 2, 3, 4, 5]);
        // 1 and 2 stored; 3..5 in flight when the connection is lost.
        spool.ack(2);
        link.handle(
            Input::Acked {
                up_to_seq: 2,
                spool_empty: false,
            },
            now,
        );
        assert_eq!(link.phase(), &Phase::Replaying { up_to_seq: 5 });
        let lost = link.handle(Input::Lost, now);
        apply(&lost, &mut spool);
        spool.push(event(6));
        now = link.timeout().unwrap();
        assert_eq!(link.handle(Input::Timeout, now), Action::Connect);
        let replay = link.handle(
            Input::Connected {
                spooled_up_to: Some(6),
            },
            now,
        );
        apply(&replay, &mut spool);
        let sent: Vec<u64> = spool.take_unsent(10).iter().map(|s| s.seq).collect();
        assert_eq!(
            sent,
            [3, 4, 5, 6],
            "from the first unacknowledged event, in order, once each"
        );
        spool.ack(6);
        link.handle(
            Input::Acked {
                up_to_seq: 6,
                spool_empty: true,
            },
            now,
        );
        assert_eq!(
            link.phase(),
            &Phase::Live,
            "the replay is over once its last event is stored"
        );
    }

    #[test]
    fn shutdown_while_disconnected_ends_at_once() {
        let t0 = Instant::now();
        let mut link = Link::new(17, DRAIN);
        link.handle(Input::Unreachable, t0);
        assert_eq!(
            link.handle(Input::Shutdown { spool_empty: false }, t0),
            Action::Stop
        );
        assert_eq!(link.phase(), &Phase::Stopped);
        assert_eq!(link.timeout(), None, "no retry after a shutdown");
    }

    #[test]
    fn shutdown_while_connecting_ends_at_once() {
        let mut link = Link::new(19, DRAIN);
        assert_eq!(
            link.handle(Input::Shutdown { spool_empty: false }, Instant::now()),
            Action::Stop
        );
    }

    #[test]
    fn shutdown_while_connected_drains_until_acknowledged() {
        let t0 = Instant::now();
        let mut link = Link::new(23, DRAIN);
        link.handle(Input::Connected { spooled_up_to: None }, t0);
        let action = link.handle(Input::Shutdown { spool_empty: false }, t0);
        assert_eq!(action, Action::Drain { deadline: t0 + DRAIN });
        assert!(link.connected());
        let ack = Input::Acked {
            up_to_seq: 3,
            spool_empty: false,
        };
        assert_eq!(link.handle(ack, t0 + ms(10)), Action::Nothing);
        let ack = Input::Acked {
            up_to_seq: 9,
            spool_empty: true,
        };
        assert_eq!(link.handle(ack, t0 + ms(20)), Action::Stop);
    }

    #[test]
    fn shutdown_with_nothing_spooled_stops_without_draining() {
        let t0 = Instant::now();
        let mut link = Link::new(29, DRAIN);
        link.handle(Input::Connected { spooled_up_to: None }, t0);
        assert_eq!(
            link.handle(Input::Shutdown { spool_empty: true }, t0),
            Action::Stop
        );
    }

    #[test]
    fn a_drain_ends_at_its_deadline_or_when_the_connection_is_lost() {
        let t0 = Instant::now();
        let mut link = Link::new(31, DRAIN);
        link.handle(Input::Connected { spooled_up_to: None }, t0);
        link.handle(Input::Shutdown { spool_empty: false }, t0);
        assert_eq!(link.timeout(), Some(t0 + DRAIN));
        assert_eq!(link.handle(Input::Timeout, t0 + DRAIN - ms(1)), Action::Nothing);
        assert_eq!(link.handle(Input::Timeout, t0 + DRAIN), Action::Stop);

        let mut link = Link::new(37, DRAIN);
        link.handle(Input::Connected { spooled_up_to: None }, t0);
        link.handle(Input::Shutdown { spool_empty: false }, t0);
        assert_eq!(
            link.handle(Input::Lost, t0 + ms(5)),
            Action::Stop,
            "no reconnect while stopping"
        );
    }
}
