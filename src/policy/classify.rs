//! Load classification: which requests to an instance are main-entity loads (counted), child
//! loads (never counted) or anything else, by method and path template.
//!
//! Patterns apply per instance, across flows: a request that matches a main pattern of any
//! flow on its target instance is a main load, whichever flow it names, so naming another
//! flow never dodges a count. Main patterns are matched before child patterns, so a more
//! specific child pattern of one flow never hides a main pattern of another.

use http::Method;

use crate::config::{Entity, Role};

/// What a request is to the meter.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LoadClass {
    /// A main-entity load: counted when the target answers 2xx.
    Main,
    /// A child record load (comment, attachment): never counted.
    Child,
    /// A read or any request no pattern names.
    Other,
}

/// The templates of one role and method; templates that a router cannot hold together
/// (patterns of different flows may overlap) go to another router.
#[derive(Default)]
struct Templates {
    routers: Vec<matchit::Router<()>>,
}

impl Templates {
    fn insert(&mut self, template: &str) {
        for router in &mut self.routers {
            match router.insert(template, ()) {
                Ok(()) => return,
                // The same template from another flow: already held.
                Err(matchit::InsertError::Conflict { with }) if with == template => return,
                Err(_) => {}
            }
        }
        let mut router = matchit::Router::new();
        // Validation has refused templates that a fresh router does not take.
        if router.insert(template, ()).is_ok() {
            self.routers.push(router);
        }
    }

    /// Whether `path` (or `path` without its trailing `/`) matches one of the templates.
    fn matches(&self, path: &str) -> bool {
        let trimmed = path.strip_suffix('/').filter(|p| !p.is_empty());
        self.routers
            .iter()
            .any(|router| router.at(path).is_ok() || trimmed.is_some_and(|p| router.at(p).is_ok()))
    }
}

/// The patterns of every flow on one instance, compiled into routers per method and role.
#[derive(Default)]
pub struct Classifier {
    /// `(method, main templates, child templates)`.
    routes: Vec<(Method, Templates, Templates)>,
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
            let template = if case_insensitive {
                entity.path.to_lowercase()
            } else {
                entity.path.clone()
            };
            let (_, main, child) = &mut classifier.routes[index];
            match entity.role {
                Role::Main => main.insert(&template),
                Role::Child => child.insert(&template),
            }
        }
        classifier
    }

    /// Whether the instance has any pattern at all (most have none: nothing to match).
    pub fn is_empty(&self) -> bool {
        self.routes.is_empty()
    }

    /// Classifies a normalised path (relative to the base URI, without `;parameters`) for
    /// every method the request may mean; a trailing `/` is ignored. Main wins over child.
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
                if main.matches(path) {
                    return LoadClass::Main;
                }
                if child.matches(path) {
                    class = LoadClass::Child;
                }
            }
        }
        class
    }
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
