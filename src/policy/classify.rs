//! Load classification: which requests to an instance are main-entity loads (counted), bulk
//! loads (counted by the records in their body), child loads (never counted) or anything
//! else, by method and path template.
//!
//! Patterns apply per instance, across flows: a request that matches a main pattern of any
//! flow on its target instance is a main load, whichever flow it names, so naming another
//! flow never dodges a count. Main patterns are matched before child patterns, so a more
//! specific child pattern of one flow never hides a main pattern of another, and a bulk
//! pattern wins over a plain main pattern the same request matches (its records are counted,
//! not the request).

use std::sync::Arc;

use http::Method;
use rustc_hash::FxHashMap;

use crate::config::{Bulk, Entity, Role};

/// What a request is to the meter.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LoadClass {
    /// A main-entity load: one record, counted when the target answers 2xx.
    Main,
    /// A bulk load: one record per element of an array in its body; the index of its bulk
    /// settings in the instance's classifier ([`Classifier::bulk`]).
    Bulk(u32),
    /// A child record load (comment, attachment): never counted.
    Child,
    /// A read or any request no pattern names.
    Other,
}

impl LoadClass {
    /// Whether the load counts against the records budget.
    pub fn is_counted(self) -> bool {
        matches!(self, LoadClass::Main | LoadClass::Bulk(_))
    }

    /// How much a class counts, for choosing among the methods a request may mean: bulk over
    /// main over child over anything else.
    fn weight(self) -> u8 {
        match self {
            LoadClass::Bulk(_) => 3,
            LoadClass::Main => 2,
            LoadClass::Child => 1,
            LoadClass::Other => 0,
        }
    }

    /// `other` where it counts more than this class, else this one (a tie keeps this one).
    pub fn or_stronger(self, other: LoadClass) -> LoadClass {
        if other.weight() > self.weight() {
            other
        } else {
            self
        }
    }

    /// Whether no other method can make the request count more: it is a bulk load, or a main
    /// load where the instance has no bulk patterns.
    pub fn counts_most(self, instance_has_bulk: bool) -> bool {
        match self {
            LoadClass::Bulk(_) => true,
            LoadClass::Main => !instance_has_bulk,
            LoadClass::Child | LoadClass::Other => false,
        }
    }
}

/// The templates of one role and method, each with its bulk settings (an index, main
/// templates only); templates that a router cannot hold together (patterns of different flows
/// may overlap) go to another router.
#[derive(Default)]
struct Templates {
    routers: Vec<matchit::Router<Option<u32>>>,
}

impl Templates {
    fn insert(&mut self, template: &str, bulk: Option<u32>) {
        for router in &mut self.routers {
            match router.insert(template, bulk) {
                Ok(()) => return,
                // The same template from another flow: already held (validation has checked
                // that every flow counts one pattern the same way).
                Err(matchit::InsertError::Conflict { with }) if with == template => return,
                Err(_) => {}
            }
        }
        let mut router = matchit::Router::new();
        // Validation has refused templates that a fresh router does not take.
        if router.insert(template, bulk).is_ok() {
            self.routers.push(router);
        }
    }

    /// Whether `path` (or `path` without its trailing `/`) matches one of the templates, and
    /// with which bulk settings (a bulk template wins over a plain one).
    fn find(&self, path: &str) -> Option<Option<u32>> {
        let trimmed = path.strip_suffix('/').filter(|p| !p.is_empty());
        let mut found = None;
        for router in &self.routers {
            let matched = router
                .at(path)
                .ok()
                .or_else(|| trimmed.and_then(|p| router.at(p).ok()));
            match matched.map(|m| *m.value) {
                Some(Some(bulk)) => return Some(Some(bulk)),
                Some(None) => found = Some(None),
                None => {}
            }
        }
        found
    }
}

/// The patterns of every flow on one instance, compiled into routers per method and role.
#[derive(Default)]
pub struct Classifier {
    /// `(method, main templates, child templates)`.
    routes: Vec<(Method, Templates, Templates)>,
    /// The distinct bulk settings of the main templates, by the index their routes hold.
    bulk: Vec<Bulk>,
    /// Match without regard to case (the instance's `paths_case_insensitive`).
    case_insensitive: bool,
}

impl std::fmt::Debug for Classifier {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_list()
            .entries(self.routes.iter().map(|(method, _, _)| method))
            .finish()
    }
}

impl Classifier {
    /// Compiles validated entity patterns of one instance (from every flow that has one).
    pub fn new<'a>(
        entities: impl IntoIterator<Item = &'a Entity>,
        case_insensitive: bool,
    ) -> Classifier {
        let mut classifier = Classifier {
            routes: Vec::new(),
            bulk: Vec::new(),
            case_insensitive,
        };
        for entity in entities {
            let Ok(method) = Method::from_bytes(entity.method.as_bytes()) else {
                continue;
            };
            let index = match classifier.routes.iter().position(|(m, _, _)| *m == method) {
                Some(index) => index,
                None => {
                    classifier
                        .routes
                        .push((method, Templates::default(), Templates::default()));
                    classifier.routes.len() - 1
                }
            };
            // A trailing `/` means nothing to classification, in a pattern as in a path.
            let path = crate::config::template_key(&entity.path);
            let template = if case_insensitive {
                path.to_lowercase()
            } else {
                path.to_owned()
            };
            let bulk = entity.bulk().map(|bulk| {
                let at = match classifier.bulk.iter().position(|known| *known == bulk) {
                    Some(at) => at,
                    None => {
                        classifier.bulk.push(bulk);
                        classifier.bulk.len() - 1
                    }
                };
                at as u32
            });
            let (_, main, child) = &mut classifier.routes[index];
            match entity.role {
                Role::Main => main.insert(&template, bulk),
                Role::Child => child.insert(&template, None),
            }
        }
        classifier
    }

    /// The bulk settings a [`LoadClass::Bulk`] of this instance names.
    pub fn bulk(&self, index: u32) -> Option<&Bulk> {
        self.bulk.get(index as usize)
    }

    /// The methods the instance has patterns for.
    pub fn methods(&self) -> impl Iterator<Item = &Method> {
        self.routes.iter().map(|(method, _, _)| method)
    }

    /// Whether any main pattern of the instance is a bulk one.
    pub fn has_bulk(&self) -> bool {
        !self.bulk.is_empty()
    }

    /// Whether the instance has any pattern at all (most have none: nothing to match).
    pub fn is_empty(&self) -> bool {
        self.routes.is_empty()
    }

    /// Classifies a normalised path (relative to the base URI, without `;parameters`) for
    /// every method the request may mean; a trailing `/` is ignored. Bulk wins over main,
    /// main over child.
    pub fn classify<'m>(
        &self,
        methods: impl IntoIterator<Item = &'m Method> + Clone,
        paths: &[&str],
    ) -> LoadClass {
        if self.routes.is_empty() {
            return LoadClass::Other;
        }
        if self.case_insensitive {
            let lowered: Vec<String> = paths.iter().map(|p| p.to_lowercase()).collect();
            let lowered: Vec<&str> = lowered.iter().map(String::as_str).collect();
            return self.classify_exact(methods, &lowered);
        }
        self.classify_exact(methods, paths)
    }

    fn classify_exact<'m>(
        &self,
        methods: impl IntoIterator<Item = &'m Method>,
        paths: &[&str],
    ) -> LoadClass {
        let mut class = LoadClass::Other;
        for method in methods {
            let Some((_, main, child)) = self.routes.iter().find(|(m, _, _)| m == method) else {
                continue;
            };
            for path in paths {
                match main.find(path) {
                    Some(Some(bulk)) => return LoadClass::Bulk(bulk),
                    // Without bulk patterns nothing can beat a main load: done.
                    Some(None) if self.bulk.is_empty() => return LoadClass::Main,
                    Some(None) => class = LoadClass::Main,
                    None if class == LoadClass::Other && child.find(path).is_some() => {
                        class = LoadClass::Child
                    }
                    None => {}
                }
            }
        }
        class
    }
}

/// One classifier per distinct list of patterns: instances of one system type usually have
/// the same patterns (every Jira instance's flows count the same Jira calls), so a large
/// configuration holds a handful of classifiers rather than one per instance.
#[derive(Default)]
pub(super) struct Classifiers {
    by_patterns: FxHashMap<String, Arc<Classifier>>,
}

impl Classifiers {
    /// The classifier of these patterns (in this order), compiled the first time they are seen.
    pub(super) fn get(&mut self, entities: &[&Entity], case_insensitive: bool) -> Arc<Classifier> {
        let mut key = String::with_capacity(64 * entities.len());
        key.push_str(if case_insensitive { "i" } else { "s" });
        for entity in entities {
            // Pointers and templates hold no NUL, so the parts cannot run into each other.
            let main = if matches!(entity.role, Role::Main) {
                "true"
            } else {
                "false"
            };
            for part in [
                main,
                &entity.method,
                &entity.path,
                pointer_text(&entity.records),
                pointer_text(&entity.accepted),
                pointer_text(&entity.accepted_if),
            ] {
                key.push('\0');
                key.push_str(part);
            }
        }
        self.by_patterns
            .entry(key)
            .or_insert_with(|| {
                Arc::new(Classifier::new(entities.iter().copied(), case_insensitive))
            })
            .clone()
    }
}

/// A bulk setting's pointer as written, `-` when absent (a part of a classifier's key).
fn pointer_text(pointer: &Option<Box<crate::config::JsonPointer>>) -> &str {
    pointer.as_deref().map_or("-", |p| p.as_str())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entity(role: Role, method: &str, path: &str) -> Entity {
        Entity {
            instance: "jira-1".into(),
            role,
            method: method.into(),
            path: path.into(),
            records: None,
            accepted: None,
            accepted_if: None,
        }
    }

    fn one(classifier: &Classifier, method: Method, path: &str) -> LoadClass {
        classifier.classify([&method], &[path])
    }

    #[test]
    fn main_child_and_other_by_method_and_template() {
        let entities = [
            entity(Role::Main, "POST", "/rest/api/2/issue"),
            entity(Role::Child, "POST", "/rest/api/2/issue/{key}/comment"),
            entity(
                Role::Child,
                "POST",
                "/rest/api/2/issue/{key}/attachments/{*rest}",
            ),
            entity(Role::Main, "PUT", "/rest/api/2/issue/{key}"),
        ];
        let classifier = Classifier::new(&entities, false);
        let cases = [
            (Method::POST, "/rest/api/2/issue", LoadClass::Main),
            (Method::POST, "/rest/api/2/issue/", LoadClass::Main),
            (Method::PUT, "/rest/api/2/issue/ABC-1", LoadClass::Main),
            (
                Method::POST,
                "/rest/api/2/issue/ABC-1/comment",
                LoadClass::Child,
            ),
            (
                Method::POST,
                "/rest/api/2/issue/ABC-1/attachments/a/b",
                LoadClass::Child,
            ),
            (Method::GET, "/rest/api/2/issue", LoadClass::Other),
            (Method::POST, "/rest/api/2/issues", LoadClass::Other),
            (Method::POST, "/REST/api/2/issue", LoadClass::Other),
            (Method::POST, "/", LoadClass::Other),
        ];
        for (method, path, expected) in cases {
            assert_eq!(
                one(&classifier, method.clone(), path),
                expected,
                "{method} {path}"
            );
        }
    }

    #[test]
    fn a_pattern_written_with_a_trailing_slash_matches_with_or_without_one() {
        let classifier = Classifier::new(&[entity(Role::Main, "POST", "/api/v1/tickets/")], false);
        for path in ["/api/v1/tickets", "/api/v1/tickets/"] {
            assert_eq!(
                one(&classifier, Method::POST, path),
                LoadClass::Main,
                "{path}"
            );
        }
        let root = Classifier::new(&[entity(Role::Main, "POST", "/")], false);
        assert_eq!(one(&root, Method::POST, "/"), LoadClass::Main);
    }

    #[test]
    fn patterns_of_different_flows_that_overlap_all_apply() {
        // One flow counts any issue write; another has the same template and a child pattern
        // that is more specific than the first flow's catch-all.
        let entities = [
            entity(Role::Main, "POST", "/rest/api/2/issue/{*rest}"),
            entity(Role::Main, "POST", "/rest/api/2/issue/{key}"),
            entity(Role::Main, "POST", "/rest/api/2/issue/{id}"),
            entity(Role::Child, "POST", "/rest/api/2/issue/{key}/comment"),
        ];
        let classifier = Classifier::new(&entities, false);
        assert_eq!(
            one(&classifier, Method::POST, "/rest/api/2/issue/A-1/comment"),
            LoadClass::Main,
            "a main pattern of any flow wins over a child pattern"
        );
        assert_eq!(
            one(&classifier, Method::POST, "/rest/api/2/issue/A-1"),
            LoadClass::Main
        );
    }

    #[test]
    fn any_of_several_methods_and_spellings_may_make_a_main_load() {
        let classifier = Classifier::new([&entity(Role::Main, "POST", "/rest/api/2/issue")], false);
        assert_eq!(
            classifier.classify([&Method::GET, &Method::POST], &["/rest/api/2/issue"]),
            LoadClass::Main
        );
        assert_eq!(
            classifier.classify(
                [&Method::POST],
                &["/rest%2Fapi/2/issue", "/rest/api/2/issue"]
            ),
            LoadClass::Main
        );
    }

    fn bulk(method: &str, path: &str, records: &str) -> Entity {
        Entity {
            records: Some(Box::new(
                crate::config::JsonPointer::parse(records).unwrap(),
            )),
            ..entity(Role::Main, method, path)
        }
    }

    #[test]
    fn bulk_patterns_name_their_settings_and_win_over_plain_main_patterns() {
        let entities = [
            entity(Role::Main, "POST", "/rest/api/2/issue/{*rest}"),
            bulk("POST", "/rest/api/2/issue/bulk", "/issueUpdates"),
            bulk("POST", "/composite/sobjects", "/records"),
            bulk("PATCH", "/composite/sobjects", "/records"),
            entity(Role::Child, "POST", "/rest/api/2/issue/{key}/comment"),
        ];
        let classifier = Classifier::new(&entities, false);
        let LoadClass::Bulk(jira) = one(&classifier, Method::POST, "/rest/api/2/issue/bulk") else {
            panic!("a bulk load")
        };
        assert_eq!(
            classifier.bulk(jira).unwrap().records.as_str(),
            "/issueUpdates"
        );
        let LoadClass::Bulk(post) = one(&classifier, Method::POST, "/composite/sobjects/") else {
            panic!("a bulk load")
        };
        let LoadClass::Bulk(patch) = one(&classifier, Method::PATCH, "/composite/sobjects") else {
            panic!("a bulk load")
        };
        assert_eq!(post, patch, "equal settings are held once");
        assert_eq!(
            one(&classifier, Method::POST, "/rest/api/2/issue/A-1"),
            LoadClass::Main
        );
        assert_eq!(
            classifier.classify(
                [&Method::POST],
                &["/rest/api/2/issue/A-1", "/rest/api/2/issue/bulk"]
            ),
            LoadClass::Bulk(jira),
            "a bulk match under any spelling wins"
        );
        assert!(LoadClass::Bulk(jira).is_counted() && LoadClass::Main.is_counted());
        assert!(!LoadClass::Child.is_counted() && !LoadClass::Other.is_counted());
    }

    #[test]
    fn instances_with_the_same_patterns_share_one_classifier() {
        let (jira_1, jira_2) = (
            [
                entity(Role::Main, "POST", "/rest/api/2/issue"),
                entity(Role::Child, "POST", "/rest/api/2/issue/{key}/comment"),
            ],
            [
                Entity {
                    instance: "jira-2".into(),
                    ..entity(Role::Main, "POST", "/rest/api/2/issue")
                },
                Entity {
                    instance: "jira-2".into(),
                    ..entity(Role::Child, "POST", "/rest/api/2/issue/{key}/comment")
                },
            ],
        );
        let mut classifiers = Classifiers::default();
        let first = classifiers.get(&jira_1.iter().collect::<Vec<_>>(), false);
        let same = classifiers.get(&jira_2.iter().collect::<Vec<_>>(), false);
        assert!(
            Arc::ptr_eq(&first, &same),
            "the instance id is not part of a pattern"
        );
        let folded = classifiers.get(&jira_1.iter().collect::<Vec<_>>(), true);
        assert!(
            !Arc::ptr_eq(&first, &folded),
            "case-insensitive matching is another classifier"
        );
        let child_as_main = [
            jira_1[0].clone(),
            entity(Role::Main, "POST", "/rest/api/2/issue/{key}/comment"),
        ];
        let other = classifiers.get(&child_as_main.iter().collect::<Vec<_>>(), false);
        assert_eq!(
            one(&other, Method::POST, "/rest/api/2/issue/A-1/comment"),
            LoadClass::Main
        );
        assert_eq!(
            one(&first, Method::POST, "/rest/api/2/issue/A-1/comment"),
            LoadClass::Child
        );
        let bulk = classifiers.get(&[&bulk("POST", "/rest/api/2/issue", "/issues")], false);
        assert_eq!(
            one(&bulk, Method::POST, "/rest/api/2/issue"),
            LoadClass::Bulk(0),
            "bulk settings are part of a pattern"
        );
    }

    #[test]
    fn case_insensitive_instances_match_without_regard_to_case() {
        let entities = [entity(Role::Main, "POST", "/Api/Records/{Id}")];
        let classifier = Classifier::new(&entities, true);
        assert_eq!(
            one(&classifier, Method::POST, "/API/RECORDS/7"),
            LoadClass::Main
        );
        assert_eq!(
            one(&classifier, Method::POST, "/api/records/7/"),
            LoadClass::Main
        );
        let strict = Classifier::new(&entities, false);
        assert_eq!(
            one(&strict, Method::POST, "/API/RECORDS/7"),
            LoadClass::Other
        );
    }
}
