//! `{"type":"fields","drop":["content","url_to_image",...]}`: nulls fields subscribers do not
//! want. `id`, `url`, `job_id`, `batch_id` and `seq` identify an article and cannot be dropped.

use serde::{Deserialize, Serialize};

use super::{Memory, Stage};
use crate::Article;

/// The fields that can be dropped.
pub const DROPPABLE: [&str; 7] = [
    "author",
    "title",
    "description",
    "url_to_image",
    "published_at",
    "content",
    "extra",
];

/// The fields that identify an article (or, for `source` and `fetched_at`, are never null).
const KEPT: [&str; 7] = [
    "id",
    "url",
    "job_id",
    "batch_id",
    "seq",
    "source",
    "fetched_at",
];

/// Nulls the fields it names.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(deny_unknown_fields)]
pub struct Fields {
    /// The fields to null: any of author, title, description, url_to_image, published_at,
    /// content, extra.
    drop: Vec<String>,
}

impl Fields {
    /// A fields stage; [`Stage::check`] says whether it is valid.
    pub fn new(drop: Vec<String>) -> Self {
        Self { drop }
    }
}

impl Stage for Fields {
    fn check(&self) -> Result<(), String> {
        if self.drop.is_empty() {
            return Err(format!(
                "drop must name at least one of {}",
                DROPPABLE.join(", ")
            ));
        }
        for field in &self.drop {
            if KEPT.contains(&field.as_str()) {
                return Err(format!("{field} cannot be dropped"));
            }
            if !DROPPABLE.contains(&field.as_str()) {
                return Err(format!(
                    "unknown field {:?}; drop accepts: {}",
                    crate::ids::truncate_for_message(field),
                    DROPPABLE.join(", ")
                ));
            }
        }
        Ok(())
    }

    fn apply(&self, mut articles: Vec<Article>, _memory: &Memory) -> Vec<Article> {
        for article in &mut articles {
            for field in &self.drop {
                match field.as_str() {
                    "author" => article.author = None,
                    "title" => article.title = None,
                    "description" => article.description = None,
                    "url_to_image" => article.url_to_image = None,
                    "published_at" => article.published_at = None,
                    "content" => article.content = None,
                    "extra" => article.extra = None,
                    // Refused by `check` at the edge.
                    _ => {}
                }
            }
        }
        articles
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::pipeline::tests::article_with;

    #[test]
    fn dropped_fields_become_null_and_the_rest_stay() {
        let mut article = article_with("https://a.test/1", "Title", Some("Desc"));
        article.content = Some("Body".to_owned());
        let stage = Fields::new(vec!["content".to_owned(), "description".to_owned()]);
        let kept = stage.apply(vec![article.clone()], &Memory::default());
        assert_eq!(kept[0].content, None);
        assert_eq!(kept[0].description, None);
        assert_eq!(kept[0].title, article.title);
        assert_eq!(kept[0].url, article.url);
    }

    #[test]
    fn identifying_and_unknown_fields_are_refused() {
        for field in ["id", "url", "job_id", "batch_id", "seq"] {
            let why = Fields::new(vec![field.to_owned()])
                .check()
                .expect_err(field);
            assert!(why.contains("cannot be dropped"), "{why}");
        }
        let why = Fields::new(vec!["colour".to_owned()])
            .check()
            .expect_err("unknown");
        assert!(why.contains("colour"), "{why}");
        assert!(Fields::new(vec![]).check().is_err());
        for field in DROPPABLE {
            assert!(
                Fields::new(vec![field.to_owned()]).check().is_ok(),
                "{field}"
            );
        }
    }
}
