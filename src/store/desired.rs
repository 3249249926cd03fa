//! What the store holds about an app, as far as deciding what to write needs it.

/// The fields of `canopy:<ns>:app:{<app>}:desired` that decide whether an app
/// must be written again, and the generation its child last reported.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoredDesired {
    /// `None` for a pruned app (its hash is a tombstone that keeps the generation)
    /// or when only the child's report is left.
    pub digest: Option<String>,
    pub config_digest: Option<String>,
    /// The desired hash's generation; 0 when there is none.
    pub generation: u64,
    /// Parent and wave as last written, for a prune's signal (the app is gone
    /// from Git, so only the store still knows them).
    pub parent: Option<String>,
    pub wave: i32,
    /// The generation in the child's `observed` hash (0: none). A new generation
    /// must exceed it too, or the child's next report would be refused as stale
    /// after Redis lost the desired hash but kept the report.
    pub observed_generation: u64,
}

impl StoredDesired {
    /// The fields of the desired hash [`StoredDesired::from_values`] expects, in
    /// order (for HMGET).
    pub const FIELDS: [&'static str; 5] =
        ["digest", "config_digest", "generation", "parent", "wave"];

    /// `None` when neither the desired hash nor a report exists.
    pub fn from_values(
        desired: Vec<Option<String>>,
        observed_generation: Option<String>,
    ) -> Result<Option<StoredDesired>, String> {
        let [digest, config_digest, generation, parent, wave]: [Option<String>; 5] = desired
            .try_into()
            .map_err(|v: Vec<_>| format!("{} fields instead of 5", v.len()))?;
        if generation.is_none() && observed_generation.is_none() {
            return Ok(None);
        }
        let number = |what: &str, text: Option<String>| -> Result<u64, String> {
            text.map_or(Ok(0), |t| {
                t.parse()
                    .map_err(|_| format!("{what} generation {t:?} is not a number"))
            })
        };
        Ok(Some(StoredDesired {
            digest,
            config_digest,
            generation: number("desired", generation)?,
            parent: parent.filter(|p| !p.is_empty()),
            wave: wave.and_then(|w| w.parse().ok()).unwrap_or(0),
            observed_generation: number("observed", observed_generation)?,
        }))
    }

    /// The generation of the next write: above everything stored and reported.
    pub fn next_generation(&self) -> u64 {
        self.generation.max(self.observed_generation) + 1
    }
}
