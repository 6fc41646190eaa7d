//! Load classification: which requests of a flow are main-entity loads (counted), child
//! loads (never counted) or anything else, by method and path template.

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

/// The patterns of one flow on one instance, compiled into a router per method.
#[derive(Default)]
pub struct Classifier {
    routes: Vec<(Method, matchit::Router<Role>)>,
}

impl std::fmt::Debug for Classifier {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_list()
            .entries(self.routes.iter().map(|(method, _)| method))
            .finish()
    }
}

impl Classifier {
    /// Compiles validated entity patterns (config validation rejects conflicting ones).
    pub fn new<'a>(entities: impl IntoIterator<Item = &'a Entity>) -> Classifier {
        let mut classifier = Classifier::default();
        for entity in entities {
            let Ok(method) = Method::from_bytes(entity.method.as_bytes()) else {
                continue;
            };
            let index = match classifier.routes.iter().position(|(m, _)| *m == method) {
                Some(index) => index,
                None => {
                    classifier.routes.push((method, matchit::Router::new()));
                    classifier.routes.len() - 1
                }
            };
            // Validation has already refused templates that do not insert.
            let _ = classifier.routes[index]
                .1
                .insert(entity.path.as_str(), entity.role);
        }
        classifier
    }

    /// Classifies a normalised path relative to the instance's base URI; a trailing `/` is ignored.
    pub fn classify(&self, method: &Method, path: &str) -> LoadClass {
        let Some((_, router)) = self.routes.iter().find(|(m, _)| m == method) else {
            return LoadClass::Other;
        };
        let found = router.at(path).ok().or_else(|| {
            let trimmed = path.strip_suffix('/').filter(|p| !p.is_empty())?;
            router.at(trimmed).ok()
        });
        match found.map(|matched| *matched.value) {
            Some(Role::Main) => LoadClass::Main,
            Some(Role::Child) => LoadClass::Child,
            None => LoadClass::Other,
        }
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
        let classifier = Classifier::new(&entities);
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
            (Method::POST, "/", LoadClass::Other),
        ];
        for (method, path, expected) in cases {
            assert_eq!(
                classifier.classify(&method, path),
                expected,
                "{method} {path}"
            );
        }
    }
}
