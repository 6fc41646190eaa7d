//! Texts that repeat across a config's entities, read once. A configuration of thousands of
//! flows names the same few methods and path templates in every flow, and each instance id
//! in every entity on it; while a config is read, each distinct text is allocated once and
//! every entity holds a reference to it. Outside a read (a test building an entity by hand),
//! each text is its own allocation.

use std::cell::RefCell;
use std::fmt;
use std::sync::Arc;

use rustc_hash::FxHashSet;
use serde::de::{Deserializer, Visitor};

thread_local! {
    /// The texts read so far on this thread while a [`Sharing`] is alive.
    static TEXTS: RefCell<Option<FxHashSet<Arc<str>>>> = const { RefCell::new(None) };
}

/// While alive, equal texts read on this thread share one allocation.
pub(super) struct Sharing {
    /// What an enclosing read had collected, restored on drop.
    outer: Option<FxHashSet<Arc<str>>>,
}

impl Sharing {
    /// Starts sharing texts read on this thread until the value is dropped.
    pub(super) fn begin() -> Sharing {
        let outer = TEXTS.with(|texts| texts.replace(Some(FxHashSet::default())));
        Sharing { outer }
    }
}

impl Drop for Sharing {
    fn drop(&mut self) {
        let outer = self.outer.take();
        TEXTS.with(|texts| *texts.borrow_mut() = outer);
    }
}

/// `text` as a shared string: the one read before when sharing, a new one otherwise.
pub(super) fn share(text: &str) -> Arc<str> {
    TEXTS.with(|texts| match texts.borrow_mut().as_mut() {
        Some(seen) => match seen.get(text) {
            Some(known) => known.clone(),
            None => {
                let new: Arc<str> = text.into();
                seen.insert(new.clone());
                new
            }
        },
        None => text.into(),
    })
}

/// serde `deserialize_with` for a string field whose text repeats across entities.
pub(super) fn deserialize<'de, D: Deserializer<'de>>(
    deserializer: D,
) -> Result<Arc<str>, D::Error> {
    struct Text;
    impl Visitor<'_> for Text {
        type Value = Arc<str>;
        fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
            f.write_str("a string")
        }
        fn visit_str<E: serde::de::Error>(self, text: &str) -> Result<Arc<str>, E> {
            Ok(share(text))
        }
    }
    deserializer.deserialize_str(Text)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn equal_texts_share_one_allocation_while_sharing() {
        let sharing = Sharing::begin();
        let (a, b) = (share("/rest/api/2/issue"), share("/rest/api/2/issue"));
        assert!(Arc::ptr_eq(&a, &b));
        assert!(!Arc::ptr_eq(&a, &share("/rest/api/2/issue/bulk")));
        drop(sharing);
        let (c, d) = (share("/rest/api/2/issue"), share("/rest/api/2/issue"));
        assert!(!Arc::ptr_eq(&c, &d), "no sharing outside a read");
        assert_eq!(&*c, "/rest/api/2/issue");
    }

    #[test]
    fn a_nested_read_restores_the_outer_one() {
        let _outer = Sharing::begin();
        let a = share("POST");
        drop(Sharing::begin());
        assert!(Arc::ptr_eq(&a, &share("POST")));
    }
}
