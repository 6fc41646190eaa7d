//! The lease arithmetic of one license and month, as Redis keeps it: what each sidecar holds
//! and has counted, and what the fleet has granted in all. [`settle`] is the reference model
//! of the lease script (`scripts::LEASE` is its transliteration into Lua, and a test runs both
//! on the same steps); the property tests below check its invariants.
//!
//! A sidecar is the authority on what it holds: every exchange tells Redis its `held` (or,
//! just after a restart, asks Redis to settle it from the counts), so an exchange whose answer
//! was lost is corrected by the next one instead of being repeated, and a sequence number
//! makes a late, reordered exchange harmless.

/// What a sidecar claims to hold when it settles with Redis.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Claim {
    /// Exactly this many records (drawn or not) in the month.
    Exact(u64),
    /// Restarted with its counts durable: it holds nothing beyond what it counted, so the
    /// rest of its old lease goes back to the budget.
    Return,
    /// Restarted with counts that may be behind (batched durability): its old lease stays
    /// spent, as nobody can prove which of its records were counted.
    Keep,
}

impl Claim {
    /// The script's encoding: the count, or -1 for `Return`, -2 for `Keep`.
    pub fn encode(self) -> i64 {
        match self {
            Claim::Exact(held) => i64::try_from(held).unwrap_or(i64::MAX),
            Claim::Return => -1,
            Claim::Keep => -2,
        }
    }
}

/// The outcome of a settled exchange.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Settled {
    /// Records granted now.
    pub grant: u64,
    /// What the sidecar holds now.
    pub held: u64,
    /// What the book counts for the sidecar (the larger of its claim and what it had).
    pub mine: u64,
    /// What the whole fleet has counted.
    pub total: u64,
    /// What the fleet has granted in all (the sum of what every sidecar holds).
    pub granted: u64,
    /// Sidecars heard from within the TTL, this one included.
    pub live: u64,
}

/// The reference model of the lease script, for tests: the same arithmetic on a Rust value.
#[cfg(test)]
pub mod model {
    use std::collections::BTreeMap;

    use super::{Claim, Settled};

    /// One exchange of a sidecar with the book.
    #[derive(Debug, Clone, PartialEq, Eq)]
    pub struct Ask {
        /// The sidecar's node name.
        pub node: String,
        /// Its sequence number; an exchange not above the last one seen is ignored.
        pub seq: u64,
        /// What it holds.
        pub claim: Claim,
        /// What it has counted in the month.
        pub committed: u64,
        /// How many more records it would like (0: settle only).
        pub ask: u64,
        /// The least grant that is any use to it (a bulk load's batch beyond what it has
        /// available): a smaller block is raised to it, and none is granted where the headroom
        /// is smaller (0 or 1: any block will do).
        pub need: u64,
        /// The hard limit (none: the license has no records limit).
        pub hard: Option<u64>,
        /// The largest block one sidecar may hold.
        pub lease_max: u64,
        /// How long a sidecar that has not been heard from counts as alive (milliseconds).
        pub ttl_ms: u64,
    }

    /// What the book answered.
    #[derive(Debug, Clone, PartialEq, Eq)]
    pub enum Reply {
        /// The exchange's sequence number was not above the last one seen (a late duplicate):
        /// nothing changed.
        Stale {
            /// The last sequence number the book has seen from the node.
            last: u64,
        },
        /// Settled (and granted, if asked).
        Settled(Settled),
    }

    /// One sidecar's line in the book.
    #[derive(Debug, Clone, Default, PartialEq, Eq)]
    pub struct Line {
        /// Records granted to it this month.
        pub held: u64,
        /// Records it has counted this month.
        pub committed: u64,
        /// Its last sequence number.
        pub seq: u64,
        /// When it was last heard from (milliseconds, Redis' clock).
        pub seen: u64,
    }

    /// One license and month.
    #[derive(Debug, Clone, Default, PartialEq, Eq)]
    pub struct Book {
        /// The sum of every line's `held`.
        pub granted: u64,
        /// Each sidecar's line, by node name.
        pub lines: BTreeMap<String, Line>,
    }

    /// How much of the headroom one sidecar may take at once: a quarter of its share, so the
    /// last records go to whoever asks, one at a time at the very end.
    pub fn block(headroom: u64, live: u64) -> u64 {
        (headroom / (4 * live.max(1))).max(1)
    }

    /// Settles one exchange at Redis time `now`: the reference model of the lease script.
    pub fn settle(book: &mut Book, ask: &Ask, now: u64) -> Reply {
        let line = book.lines.get(&ask.node).cloned().unwrap_or_default();
        if ask.seq <= line.seq {
            return Reply::Stale { last: line.seq };
        }
        let mine = line.committed.max(ask.committed);
        let held = match ask.claim {
            Claim::Exact(held) => held,
            Claim::Return => mine,
            Claim::Keep => line.held.max(mine),
        }
        .max(mine);
        let mut granted = book.granted - line.held + held;
        let live = 1 + book
            .lines
            .iter()
            .filter(|(node, other)| {
                **node != ask.node && now.saturating_sub(other.seen) < ask.ttl_ms
            })
            .count() as u64;
        let grant = match ask.hard {
            Some(hard) if ask.ask > 0 && hard > granted => {
                let headroom = hard - granted;
                let block = block(headroom, live)
                    .min(ask.ask)
                    .min(ask.lease_max)
                    .min(headroom);
                match ask.need {
                    need if need <= block => block,
                    need if need <= headroom => need,
                    _ => 0,
                }
            }
            _ => 0,
        };
        granted += grant;
        let held = held + grant;
        book.granted = granted;
        book.lines.insert(
            ask.node.clone(),
            Line {
                held,
                committed: mine,
                seq: ask.seq,
                seen: now,
            },
        );
        let total = book.lines.values().map(|line| line.committed).sum();
        Reply::Settled(Settled {
            grant,
            held,
            mine,
            total,
            granted,
            live,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::model::*;
    use super::*;

    fn ask(node: &str, seq: u64, claim: Claim, committed: u64, want: u64) -> Ask {
        Ask {
            node: node.to_owned(),
            seq,
            claim,
            committed,
            ask: want,
            need: 0,
            hard: Some(110),
            lease_max: 1000,
            ttl_ms: 30_000,
        }
    }

    fn settled(reply: Reply) -> Settled {
        match reply {
            Reply::Settled(settled) => settled,
            Reply::Stale { last } => panic!("stale (last {last})"),
        }
    }

    #[test]
    fn blocks_shrink_with_the_headroom_and_the_last_records_go_one_at_a_time() {
        let mut book = Book::default();
        let first = settled(settle(&mut book, &ask("a", 1, Claim::Exact(0), 0, 1000), 0));
        assert_eq!(
            first.grant, 27,
            "a quarter of 110 for the only live sidecar"
        );
        let second = settled(settle(&mut book, &ask("b", 1, Claim::Exact(0), 0, 1000), 0));
        assert_eq!(
            second.grant, 10,
            "83 left, shared by two: a quarter of half"
        );
        let mut held = 27;
        let mut seq = 2;
        while book.granted < 110 {
            let reply = settled(settle(
                &mut book,
                &ask("a", seq, Claim::Exact(held), 0, 1000),
                0,
            ));
            assert!(reply.grant >= 1);
            held = reply.held;
            seq += 1;
        }
        assert_eq!(book.granted, 110);
        let none = settled(settle(
            &mut book,
            &ask("a", seq, Claim::Exact(held), 0, 1000),
            0,
        ));
        assert_eq!(none.grant, 0, "nothing beyond the hard limit");
    }

    #[test]
    fn a_batch_gets_a_block_large_enough_for_it_or_none() {
        let mut book = Book::default();
        let need = |seq, held, need| Ask {
            need,
            ..ask("a", seq, Claim::Exact(held), 0, 1000)
        };
        let first = settled(settle(&mut book, &need(1, 0, 50), 0));
        assert_eq!(
            first.grant, 50,
            "a quarter of 110 is 27: raised to the batch"
        );
        let second = settled(settle(&mut book, &need(2, 50, 10), 0));
        assert_eq!(
            second.grant, 15,
            "a block larger than the batch is granted as usual"
        );
        let third = settled(settle(&mut book, &need(3, 65, 50), 0));
        assert_eq!(
            (third.grant, third.granted),
            (0, 65),
            "45 left: a batch of 50 gets nothing rather than part"
        );
        let fourth = settled(settle(&mut book, &need(4, 65, 45), 0));
        assert_eq!((fourth.grant, fourth.granted), (45, 110));
    }

    #[test]
    fn a_lost_answer_is_corrected_by_the_next_exchange_not_repeated() {
        let mut book = Book::default();
        // The grant of 27 is made, but its answer never reaches the sidecar.
        settle(&mut book, &ask("a", 1, Claim::Exact(0), 0, 1000), 0);
        // The sidecar still claims 0: the lost grant goes back.
        let next = settled(settle(&mut book, &ask("a", 2, Claim::Exact(0), 0, 0), 0));
        assert_eq!((next.held, next.granted), (0, 0));
        // A late copy of the first exchange changes nothing.
        assert_eq!(
            settle(&mut book, &ask("a", 1, Claim::Exact(0), 0, 1000), 0),
            Reply::Stale { last: 2 }
        );
        assert_eq!(book.granted, 0);
    }

    #[test]
    fn a_restart_returns_what_was_not_counted_only_when_counts_are_durable() {
        let mut book = Book::default();
        let grant = settled(settle(&mut book, &ask("a", 1, Claim::Exact(0), 0, 1000), 0)).grant;
        settle(&mut book, &ask("a", 2, Claim::Exact(grant), 5, 0), 0);
        let mut kept = book.clone();
        let back = settled(settle(&mut book, &ask("a", 3, Claim::Return, 7, 0), 0));
        assert_eq!((back.held, back.mine, back.granted), (7, 7, 7));
        let keep = settled(settle(&mut kept, &ask("a", 3, Claim::Keep, 3, 0), 0));
        assert_eq!(
            (keep.held, keep.mine),
            (grant, 5),
            "the count never goes down"
        );
    }

    #[test]
    fn sidecars_not_heard_from_within_the_ttl_do_not_share_the_headroom() {
        let mut book = Book::default();
        settle(&mut book, &ask("a", 1, Claim::Exact(0), 0, 0), 0);
        let with_a = settled(settle(&mut book, &ask("b", 1, Claim::Exact(0), 0, 0), 10));
        assert_eq!(with_a.live, 2);
        let later = settled(settle(
            &mut book,
            &ask("b", 2, Claim::Exact(0), 0, 0),
            30_001,
        ));
        assert_eq!(later.live, 1);
    }
}

#[cfg(test)]
mod properties {
    use proptest::prelude::*;

    use super::model::*;
    use super::*;

    /// One sidecar as the model sees it: what it holds and has drawn, and its store.
    #[derive(Debug, Clone, Default)]
    struct Sidecar {
        seq: u64,
        held: u64,
        available: u64,
        /// The batches of the loads in flight, oldest first.
        in_flight: std::collections::VecDeque<u64>,
        /// Counted and durable (strict durability).
        committed: u64,
        alive: bool,
    }

    #[derive(Debug, Clone)]
    enum Step {
        /// Sidecar n asks for a block, needing at least so many (its answer may be lost).
        Lease(usize, bool, u64),
        /// Sidecar n admits a load of so many records (a bulk load's batch) from its lease.
        Draw(usize, u64),
        /// Sidecar n's oldest load is answered 2xx and so many of its records are counted.
        Commit(usize, u64),
        /// Sidecar n's oldest load is refused by the target; its records go back to the lease.
        Release(usize),
        /// Sidecar n returns its idle leftovers.
        Return(usize),
        /// Sidecar n is killed (its in-flight loads die with it) and, later, restarts.
        Crash(usize),
        /// Time passes (sidecars not heard from fall out of the live count).
        Wait,
    }

    fn step() -> impl Strategy<Value = Step> {
        let node = 0usize..3;
        prop_oneof![
            4 => (node.clone(), any::<bool>(), 0u64..12).prop_map(|(n, lost, need)| Step::Lease(n, lost, need)),
            6 => (node.clone(), 1u64..10).prop_map(|(n, records)| Step::Draw(n, records)),
            5 => (node.clone(), 0u64..10).prop_map(|(n, accepted)| Step::Commit(n, accepted)),
            1 => node.clone().prop_map(Step::Release),
            1 => node.clone().prop_map(Step::Return),
            1 => node.prop_map(Step::Crash),
            1 => Just(Step::Wait),
        ]
    }

    #[allow(clippy::too_many_arguments)]
    fn exchange(
        book: &mut Book,
        names: &[&str],
        n: usize,
        sidecar: &mut Sidecar,
        claim: Claim,
        (want, need): (u64, u64),
        hard: u64,
        now: u64,
    ) -> Option<Settled> {
        sidecar.seq += 1;
        let ask = Ask {
            node: names[n].to_owned(),
            seq: sidecar.seq,
            claim,
            committed: sidecar.committed,
            ask: want,
            need,
            hard: Some(hard),
            lease_max: 7,
            ttl_ms: 1_000,
        };
        match settle(book, &ask, now) {
            Reply::Settled(settled) => Some(settled),
            Reply::Stale { .. } => None,
        }
    }

    proptest! {
        #![proptest_config(ProptestConfig { cases: 1024, ..ProptestConfig::default() })]

        /// Whatever the interleaving of leases (answered or lost, with or without a batch to
        /// fit), draws of single loads and batches, commits of all or part of a batch,
        /// releases, returns, crashes and restarts: the fleet never grants past the hard
        /// limit, never counts past it, never counts a record twice, and what it has granted
        /// is exactly what the sidecars hold.
        #[test]
        fn no_interleaving_grants_or_counts_past_the_hard_limit(
            hard in 0u64..40,
            steps in prop::collection::vec(step(), 0..300),
        ) {
            let names = ["a", "b", "c"];
            let mut book = Book::default();
            let mut sidecars = vec![Sidecar { alive: true, ..Sidecar::default() }; 3];
            let mut now = 0u64;
            let mut answered = 0u64;
            for step in steps {
                match step {
                    Step::Lease(n, lost, need) if sidecars[n].alive => {
                        let mut sidecar = sidecars[n].clone();
                        let claim = Claim::Exact(sidecar.held);
                        let want = (7 - sidecar.available.min(7)).max(need);
                        if let Some(settled) = exchange(&mut book, &names, n, &mut sidecar, claim, (want, need), hard, now) {
                            prop_assert!(settled.grant == 0 || settled.grant >= need, "a grant too small for the batch");
                            if !lost {
                                sidecar.held += settled.grant;
                                sidecar.available += settled.grant;
                            }
                        }
                        sidecars[n] = sidecar;
                    }
                    Step::Draw(n, records) if sidecars[n].alive && sidecars[n].available >= records => {
                        sidecars[n].available -= records;
                        sidecars[n].in_flight.push_back(records);
                    }
                    Step::Commit(n, accepted) if !sidecars[n].in_flight.is_empty() => {
                        let reserved = sidecars[n].in_flight.pop_front().unwrap_or(0);
                        let counted = accepted.min(reserved);
                        sidecars[n].committed += counted;
                        sidecars[n].available += reserved - counted;
                        answered += counted;
                    }
                    Step::Release(n) if !sidecars[n].in_flight.is_empty() => {
                        let reserved = sidecars[n].in_flight.pop_front().unwrap_or(0);
                        sidecars[n].available += reserved;
                    }
                    Step::Return(n) if sidecars[n].alive => {
                        let mut sidecar = sidecars[n].clone();
                        let back = sidecar.available;
                        sidecar.available = 0;
                        sidecar.held -= back;
                        let claim = Claim::Exact(sidecar.held);
                        exchange(&mut book, &names, n, &mut sidecar, claim, (0, 0), hard, now);
                        sidecars[n] = sidecar;
                    }
                    Step::Crash(n) => {
                        // Killed: the lease and the loads in flight are gone; the durable count
                        // stays. It restarts at once and settles with `Return`.
                        let mut sidecar = Sidecar {
                            seq: sidecars[n].seq,
                            committed: sidecars[n].committed,
                            alive: true,
                            ..Sidecar::default()
                        };
                        if let Some(settled) = exchange(&mut book, &names, n, &mut sidecar, Claim::Return, (0, 0), hard, now) {
                            sidecar.held = settled.held;
                            sidecar.committed = settled.mine;
                        }
                        sidecars[n] = sidecar;
                    }
                    Step::Wait => now += 600,
                    _ => {}
                }
                let counted: u64 = sidecars.iter().map(|s| s.committed).sum();
                prop_assert!(book.granted <= hard, "granted {} > hard {hard}", book.granted);
                prop_assert!(counted <= hard, "counted {counted} > hard {hard}");
                prop_assert_eq!(counted, answered, "every answered load is counted once");
                for (n, sidecar) in sidecars.iter().enumerate() {
                    let line = book.lines.get(names[n]).cloned().unwrap_or_default();
                    prop_assert!(line.committed <= sidecar.committed, "Redis never counts more than a sidecar did");
                    let in_flight: u64 = sidecar.in_flight.iter().sum();
                    prop_assert!(sidecar.committed + in_flight + sidecar.available <= sidecar.held.max(line.held),
                        "a sidecar spends only what it was granted");
                }
                let held: u64 = book.lines.values().map(|line| line.held).sum();
                prop_assert_eq!(book.granted, held, "granted is the sum of what sidecars hold");
            }
        }
    }
}
