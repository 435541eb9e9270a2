//! A job's pipeline: the ordered stages that filter, dedupe, enrich and shape a batch's articles
//! in the worker, between the fetch and the publish, so the stream and every subscriber see
//! the shaped articles.
//!
//! Each stage is a pure type behind [`Stage`], in its own file; [`StageSpec`] is the closed
//! list of them, as a job spec carries it (`{"type":"filter",...}`). Adding a stage is one file
//! with a type implementing [`Stage`], one variant of [`StageSpec`] and one arm of
//! [`StageSpec::stage`].
//!
//! [`clean`] runs before any stage, whatever the pipeline: it drops NewsAPI's placeholders of
//! removed articles and decodes HTML entities in titles and descriptions.

use std::collections::{BTreeMap, HashSet};

use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::{Article, ValidationError};

pub mod clean;
pub mod dedupe;
pub mod domains;
pub mod enrich;
pub mod fields;
pub mod filter;
pub mod limit;
mod words;

pub use dedupe::Dedupe;
pub use domains::Domains;
pub use enrich::Enrich;
pub use fields::Fields;
pub use filter::Filter;
pub use limit::Limit;

/// One stage of a pipeline: a pure step from a batch's articles to the ones it keeps.
///
/// A stage never adds an article, and changes a kept one only in the way its documentation
/// says (`enrich` adds `extra`, `fields` nulls fields); everything else is a filter.
pub trait Stage {
    /// Checks the rules serde cannot (ranges, empty lists, names), once, at the edge.
    /// The error says what to fix; the caller names the stage.
    fn check(&self) -> Result<(), String> {
        Ok(())
    }

    /// The articles this stage keeps, in their order, shaped as it says. `memory` holds what
    /// earlier batches of the job published (for `dedupe`).
    fn apply(&self, articles: Vec<Article>, memory: &Memory) -> Vec<Article>;

    /// Whether it must see the whole batch at once (`limit`). A stage that judges each article
    /// on its own runs page by page, so the worker publishes each page as it comes.
    fn whole_batch(&self) -> bool {
        false
    }
}

/// What a job's earlier complete batches published: each batch's article ids (a hash of the
/// URL, see [`crate::ArticleId`]), newest batch first.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Memory {
    /// Article ids of earlier complete batches, newest batch first.
    pub batches: Vec<Vec<String>>,
}

impl Memory {
    /// The article ids of the newest `window` batches.
    pub fn recent(&self, window: usize) -> HashSet<&str> {
        self.batches
            .iter()
            .take(window)
            .flatten()
            .map(String::as_str)
            .collect()
    }

    /// Remembers a newly completed batch's article ids, keeping at most `keep` batches.
    pub fn remember(&mut self, ids: Vec<String>, keep: usize) {
        self.batches.insert(0, ids);
        self.batches.truncate(keep);
    }
}

/// A stage as a job spec carries it: `{"type":"<name>", ...its fields}`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum StageSpec {
    /// Keeps articles matching include phrases, drops those matching exclude phrases.
    Filter(Filter),
    /// Keeps or drops articles by the host of their URL.
    Domains(Domains),
    /// Drops articles published by the job's recent complete batches.
    Dedupe(Dedupe),
    /// Adds computed keys under `extra`.
    Enrich(Enrich),
    /// Nulls fields subscribers do not want.
    Fields(Fields),
    /// Keeps the newest N.
    Limit(Limit),
}

impl StageSpec {
    /// The stage behind this spec, with its `type` (the key its drops are counted under).
    pub fn stage(&self) -> (&'static str, &dyn Stage) {
        match self {
            Self::Filter(stage) => ("filter", stage),
            Self::Domains(stage) => ("domains", stage),
            Self::Dedupe(stage) => ("dedupe", stage),
            Self::Enrich(stage) => ("enrich", stage),
            Self::Fields(stage) => ("fields", stage),
            Self::Limit(stage) => ("limit", stage),
        }
    }
}

/// A job's stages, in order: at most [`Pipeline::MAX_STAGES`], checked when parsed.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
#[serde(transparent)]
pub struct Pipeline(Vec<StageSpec>);

/// What a pipeline did to a batch.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Outcome {
    /// The articles it kept, shaped.
    pub kept: Vec<Article>,
    /// How many each stage type dropped (types that dropped none are absent).
    pub dropped: BTreeMap<String, u32>,
}

impl Pipeline {
    /// The most stages a pipeline may have.
    pub const MAX_STAGES: usize = 16;

    /// Parses a job's `pipeline` field. Each error names the field (`pipeline[2]`) and says
    /// which stage type or field was wrong.
    pub fn parse(value: &Value) -> Result<Self, ValidationError> {
        let Value::Array(items) = value else {
            return Err(ValidationError::new(
                "pipeline",
                "invalid_type",
                "pipeline must be a list of stages",
            ));
        };
        if items.len() > Self::MAX_STAGES {
            return Err(ValidationError::new(
                "pipeline",
                "out_of_range",
                format!(
                    "pipeline is out of range: it may have at most {} stages, got {}",
                    Self::MAX_STAGES,
                    items.len()
                ),
            ));
        }
        items
            .iter()
            .enumerate()
            .map(|(index, item)| parse_stage(index, item))
            .collect::<Result<_, _>>()
            .map(Self)
    }

    /// Whether it has no stage.
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// Its stages, in order.
    pub fn stages(&self) -> &[StageSpec] {
        &self.0
    }

    /// The widest `dedupe` window, the number of batches a worker must remember (0: none).
    pub fn memory_window(&self) -> usize {
        self.0
            .iter()
            .filter_map(|stage| match stage {
                StageSpec::Dedupe(dedupe) => Some(dedupe.window()),
                _ => None,
            })
            .max()
            .unwrap_or(0)
    }

    /// Whether some stage must see the whole batch at once, so the worker fetches every page
    /// before it publishes any.
    pub fn whole_batch(&self) -> bool {
        self.0.iter().any(|spec| spec.stage().1.whole_batch())
    }

    /// Runs every stage in order over `articles`, counting what each stage type drops.
    pub fn run(&self, mut articles: Vec<Article>, memory: &Memory) -> Outcome {
        let mut dropped = BTreeMap::new();
        for spec in &self.0 {
            let (kind, stage) = spec.stage();
            let before = articles.len();
            articles = stage.apply(articles, memory);
            let gone = before.saturating_sub(articles.len());
            if gone > 0 {
                *dropped.entry(kind.to_owned()).or_insert(0) += gone as u32;
            }
        }
        Outcome {
            kept: articles,
            dropped,
        }
    }
}

impl<'de> Deserialize<'de> for Pipeline {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let value = Value::deserialize(deserializer)?;
        Self::parse(&value).map_err(serde::de::Error::custom)
    }
}

fn parse_stage(index: usize, item: &Value) -> Result<StageSpec, ValidationError> {
    let field = format!("pipeline[{index}]");
    let kind = item.get("type").and_then(Value::as_str);
    let named = match kind {
        Some(kind) => format!("{field} ({})", crate::ids::truncate_for_message(kind)),
        None => field.clone(),
    };
    if !item.is_object() {
        return Err(ValidationError::new(
            field,
            "invalid_stage",
            format!("{named} must be an object with a \"type\""),
        ));
    }
    let spec: StageSpec = serde_json::from_value(item.clone()).map_err(|error| {
        let unknown_type = kind.map(|kind| format!("unknown variant `{kind}`"));
        let code = if unknown_type.is_some_and(|start| error.to_string().starts_with(&start)) {
            "unknown_stage"
        } else {
            "invalid_stage"
        };
        ValidationError::new(field.clone(), code, format!("{named}: {error}"))
    })?;
    spec.stage()
        .1
        .check()
        .map_err(|why| ValidationError::new(field, "invalid_stage", format!("{named}: {why}")))?;
    Ok(spec)
}

/// Checks a list of names (phrases, domains) a stage was given: at most `max`, none blank or
/// longer than 200 characters.
fn check_list(name: &str, items: &[String], max: usize) -> Result<(), String> {
    if items.len() > max {
        return Err(format!(
            "{name} may have at most {max} entries, got {}",
            items.len()
        ));
    }
    match items
        .iter()
        .find(|item| item.trim().is_empty() || item.chars().count() > 200)
    {
        Some(bad) => Err(format!(
            "{name} has an entry that is blank or longer than 200 characters: {:?}",
            crate::ids::truncate_for_message(bad)
        )),
        None => Ok(()),
    }
}

#[cfg(test)]
mod tests;
