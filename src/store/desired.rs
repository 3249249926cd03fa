//! What the store holds as an app's desired state, as far as deciding what to
//! write needs it.

/// The fields of `canopy:<ns>:app:{<app>}:desired` that decide whether an app
/// must be written again.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoredDesired {
    /// `None` for a pruned app (its hash is a tombstone that keeps the generation).
    pub digest: Option<String>,
    pub config_digest: Option<String>,
    pub generation: u64,
}

impl StoredDesired {
    /// The fields [`StoredDesired::from_values`] expects, in order (for HMGET).
    pub const FIELDS: [&'static str; 3] = ["digest", "config_digest", "generation"];

    /// `None` when the hash does not exist.
    pub fn from_values(values: Vec<Option<String>>) -> Result<Option<StoredDesired>, String> {
        let [digest, config_digest, generation]: [Option<String>; 3] = values
            .try_into()
            .map_err(|v: Vec<_>| format!("{} fields instead of 3", v.len()))?;
        let Some(generation) = generation else {
            return Ok(None);
        };
        let generation = generation
            .parse()
            .map_err(|_| format!("generation {generation:?} is not a number"))?;
        Ok(Some(StoredDesired {
            digest,
            config_digest,
            generation,
        }))
    }
}
