//! What the region chooser answers: an ordered list of locations, or why there is none.

/// The chooser's answer: every usable location, best first. The engine places in the first and,
/// after a 420, tries the next.
#[derive(Debug, Clone, PartialEq)]
pub struct RegionChoice {
    ranked: Vec<RankedLocation>,
    cap_ms: Option<u32>,
}

/// One usable location and how the match's players fare there.
#[derive(Debug, Clone, PartialEq)]
pub struct RankedLocation {
    /// The Gameye location id.
    pub location: String,
    /// The highest latency of any player who reported latencies (penalties included); `None`
    /// when no player reported any.
    pub worst_ms: Option<u32>,
    /// The mean latency over the same players; `None` when no player reported any.
    pub mean_ms: Option<f64>,
    /// Whether no player exceeds the cap in force here. Always true without latency data or caps.
    pub within_cap: bool,
}

impl RegionChoice {
    /// Builds a choice; `ranked` must not be empty (the chooser fails with [`NoLocation`] instead).
    pub(super) fn new(ranked: Vec<RankedLocation>, cap_ms: Option<u32>) -> Self {
        debug_assert!(!ranked.is_empty(), "a region choice needs a location");
        Self { ranked, cap_ms }
    }

    /// The best location.
    pub fn chosen(&self) -> &RankedLocation {
        &self.ranked[0]
    }

    /// Every usable location, best first; never empty.
    pub fn ranked(&self) -> &[RankedLocation] {
        &self.ranked
    }

    /// The ranked locations, taken out.
    pub fn into_ranked(self) -> Vec<RankedLocation> {
        self.ranked
    }

    /// Whether the chosen location exceeds the cap (possible only in `best_effort` mode).
    pub fn cap_exceeded(&self) -> bool {
        !self.chosen().within_cap
    }

    /// The cap that was in force, in ms; `None` when no caps are configured or no latency data
    /// was given.
    pub fn cap_ms(&self) -> Option<u32> {
        self.cap_ms
    }
}

/// Why no location can take a match.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum NoLocation {
    /// Gameye lists no location for the image.
    #[error("the image is available in no location")]
    NoneAvailable,
    /// The request names locations, and the image is available in none of them.
    #[error("none of the request's locations is available for the image")]
    NoneRequestedAvailable,
    /// Every remaining location is cooling down after answering 420.
    #[error("every candidate location is cooling down after running out of capacity")]
    AllCoolingDown,
    /// Every candidate lacks a latency from at least one player (missing latency: exclude).
    #[error("every candidate location lacks a latency from at least one player")]
    MissingLatency,
    /// Every candidate exceeds the cap in force (on cap exceeded: fail).
    #[error(
        "every candidate location exceeds the latency cap of {cap_ms} ms \
         (the best one has a worst-player latency of {best_worst_ms} ms)"
    )]
    AboveCap {
        /// The cap in force, ms.
        cap_ms: u32,
        /// The lowest worst-player latency among the candidates, ms.
        best_worst_ms: u32,
        /// Whether a looser cap applies to this match later, so asking again may succeed.
        relaxes_later: bool,
    },
}

impl NoLocation {
    /// Whether the same match may find a location if asked again later: cool-downs end and caps
    /// relax, while availability, requested locations and latencies stay as they are.
    pub fn is_transient(&self) -> bool {
        match self {
            Self::AllCoolingDown => true,
            Self::AboveCap { relaxes_later, .. } => *relaxes_later,
            Self::NoneAvailable | Self::NoneRequestedAvailable | Self::MissingLatency => false,
        }
    }
}
