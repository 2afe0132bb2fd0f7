//! Deliberate bugs, compiled in only with the `bug-injection` feature (simulator builds), so the
//! simulator can prove each of its checkers fires. Without the feature every query is `false`.

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Bug {
    /// Send PrepareOk (or count the primary's own ack) when the write is issued, not durable.
    AckBeforeDurable,
    /// Truncate an uncommitted op on a single nack instead of a nack quorum.
    TruncateWithoutNackQuorum,
    /// Commit on the primary's own ack, without a replication quorum.
    CommitWithoutQuorum,
    /// Recovery truncates the log at the first corrupt entry (no protocol-aware recovery).
    TruncateAtFirstCorrupt,
    /// Count PrepareOks from an older view, matched by op alone.
    CountOldViewPrepareOks,
    /// At every open from a checkpoint installed from a peer, cut the log to start after its
    /// op, even when the log already does or holds acknowledged ops above it.
    CutLogAtEveryInstalledOpen,
}

impl Bug {
    pub const ALL: [Bug; 6] = [
        Bug::AckBeforeDurable,
        Bug::TruncateWithoutNackQuorum,
        Bug::CommitWithoutQuorum,
        Bug::TruncateAtFirstCorrupt,
        Bug::CountOldViewPrepareOks,
        Bug::CutLogAtEveryInstalledOpen,
    ];

    pub fn name(self) -> &'static str {
        match self {
            Bug::AckBeforeDurable => "ack-before-durable",
            Bug::TruncateWithoutNackQuorum => "truncate-without-nack-quorum",
            Bug::CommitWithoutQuorum => "commit-without-quorum",
            Bug::TruncateAtFirstCorrupt => "truncate-at-first-corrupt",
            Bug::CountOldViewPrepareOks => "count-old-view-prepare-oks",
            Bug::CutLogAtEveryInstalledOpen => "cut-log-at-every-installed-open",
        }
    }

    pub fn description(self) -> &'static str {
        match self {
            Bug::AckBeforeDurable => "send PrepareOk before the prepare is durable",
            Bug::TruncateWithoutNackQuorum => {
                "truncate uncommitted ops on fewer than a nack quorum"
            }
            Bug::CommitWithoutQuorum => "commit without a replication quorum of PrepareOks",
            Bug::TruncateAtFirstCorrupt => {
                "truncate the log at the first corrupt entry on recovery (no PAR)"
            }
            Bug::CountOldViewPrepareOks => {
                "count PrepareOks from an older view (matched by op alone)"
            }
            Bug::CutLogAtEveryInstalledOpen => {
                "cut the log at every open from a peer's checkpoint (acknowledged ops above it go)"
            }
        }
    }

    pub fn from_name(name: &str) -> Option<Bug> {
        Bug::ALL.into_iter().find(|bug| bug.name() == name)
    }
}

#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Bugs {
    #[cfg(feature = "bug-injection")]
    enabled: Option<Bug>,
}

impl Bugs {
    pub fn none() -> Bugs {
        Bugs::default()
    }

    #[cfg(feature = "bug-injection")]
    pub fn inject(bug: Bug) -> Bugs {
        Bugs { enabled: Some(bug) }
    }

    #[inline]
    pub fn has(&self, bug: Bug) -> bool {
        #[cfg(feature = "bug-injection")]
        {
            self.enabled == Some(bug)
        }
        #[cfg(not(feature = "bug-injection"))]
        {
            let _ = bug;
            false
        }
    }
}
