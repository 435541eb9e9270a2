//! A job's spec as the registry keeps it between runs: its JSON text and its interval. A
//! parsed [`JobSpec`] costs several times more (its params map alone allocates a B-tree node
//! of about 550 bytes), and 100,000 of them must fit in well under 1 KB each; a run unpacks
//! its own copy.

use std::time::Duration;

use newsflow_core::JobSpec;

/// A spec, packed.
#[derive(Debug, PartialEq, Eq)]
pub struct PackedSpec {
    json: Box<str>,
    interval: Duration,
}

impl PackedSpec {
    /// Packs `spec`. (Serializing a spec, made of strings and numbers, cannot fail; if it
    /// ever did, the text would be empty and every run would say so in the log.)
    pub fn pack(spec: &JobSpec) -> Self {
        let json = serde_json::to_string(spec).unwrap_or_else(|error| {
            tracing::error!(job = %spec.id(), %error, "could not pack a job spec");
            String::new()
        });
        Self {
            json: json.into_boxed_str(),
            interval: spec.interval().duration(),
        }
    }

    /// The spec, parsed again.
    pub fn unpack(&self) -> Result<JobSpec, serde_json::Error> {
        serde_json::from_str(&self.json)
    }

    /// How often the job runs.
    pub fn interval(&self) -> Duration {
        self.interval
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_packed_spec_unpacks_to_the_same_spec() {
        let spec = JobSpec::from_create_request(&serde_json::json!({
            "id": "a", "endpoint": "top-headlines", "params": {"country": "us", "q": "x"},
            "interval_secs": 90, "max_pages": 3, "page_size": 20, "keep_batches": 4,
            "pipeline": [{"type": "limit", "max": 5}]
        }))
        .expect("valid");

        let packed = PackedSpec::pack(&spec);

        assert_eq!(packed.unpack().expect("unpacks"), spec);
        assert_eq!(packed.interval(), Duration::from_secs(90));
        assert_eq!(packed, PackedSpec::pack(&spec.clone()));
    }
}
