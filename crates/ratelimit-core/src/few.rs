//! A short list held inline at its exact length: what a set check's
//! decisions and receipt parts are, one per policy.

use std::hash::{Hash, Hasher};
use std::ops::{Deref, DerefMut};

use smallvec::SmallVec;

/// One to four items inline, in an array of exactly their number, or any
/// other number on the heap (never one to four: each length has one form).
///
/// An array of the exact length is what lets a check of a short set write
/// its answer once, field by field, where the caller receives it: it holds
/// no unused slots to fill, and building it calls nothing that could grow
/// it (a call that would keep it out of registers and in a copy).
#[derive(Clone)]
pub(crate) enum Few<T> {
    One([T; 1]),
    Two([T; 2]),
    Three([T; 3]),
    Four([T; 4]),
    /// No item, or more than four.
    Many(Vec<T>),
}

impl<T> Default for Few<T> {
    fn default() -> Self {
        Self::Many(Vec::new())
    }
}

impl<T: Copy> Few<T> {
    /// The items of `items`, in the form of their number.
    #[inline(always)]
    pub(crate) fn of_slice(items: &[T]) -> Self {
        match *items {
            [a] => Self::One([a]),
            [a, b] => Self::Two([a, b]),
            [a, b, c] => Self::Three([a, b, c]),
            [a, b, c, d] => Self::Four([a, b, c, d]),
            _ => Self::Many(items.to_vec()),
        }
    }

    /// Appends `item`, moving to the form of the next length.
    pub(crate) fn push(&mut self, item: T) {
        *self = match *self {
            Self::One([a]) => Self::Two([a, item]),
            Self::Two([a, b]) => Self::Three([a, b, item]),
            Self::Three([a, b, c]) => Self::Four([a, b, c, item]),
            Self::Four(items) => {
                let mut many = Vec::with_capacity(8);
                many.extend_from_slice(&items);
                many.push(item);
                Self::Many(many)
            }
            Self::Many(ref mut many) if many.is_empty() => Self::One([item]),
            Self::Many(ref mut many) => {
                many.push(item);
                return;
            }
        };
    }
}

impl<T> Deref for Few<T> {
    type Target = [T];

    #[inline]
    fn deref(&self) -> &[T] {
        match self {
            Self::One(items) => items,
            Self::Two(items) => items,
            Self::Three(items) => items,
            Self::Four(items) => items,
            Self::Many(items) => items,
        }
    }
}

impl<T> DerefMut for Few<T> {
    #[inline]
    fn deref_mut(&mut self) -> &mut [T] {
        match self {
            Self::One(items) => items,
            Self::Two(items) => items,
            Self::Three(items) => items,
            Self::Four(items) => items,
            Self::Many(items) => items,
        }
    }
}

impl<T: Copy> FromIterator<T> for Few<T> {
    fn from_iter<I: IntoIterator<Item = T>>(iter: I) -> Self {
        let items: SmallVec<[T; 4]> = iter.into_iter().collect();
        if items.spilled() || items.is_empty() {
            Self::Many(items.into_vec())
        } else {
            Self::of_slice(&items)
        }
    }
}

impl<T: Copy> From<Vec<T>> for Few<T> {
    fn from(items: Vec<T>) -> Self {
        match items.len() {
            1..=4 => Self::of_slice(&items),
            _ => Self::Many(items),
        }
    }
}

impl<T: PartialEq> PartialEq for Few<T> {
    fn eq(&self, other: &Self) -> bool {
        **self == **other
    }
}

impl<T: Eq> Eq for Few<T> {}

impl<T: Hash> Hash for Few<T> {
    fn hash<H: Hasher>(&self, state: &mut H) {
        (**self).hash(state);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_length_reads_back_its_items_whatever_way_it_was_built() {
        for n in 0..10u32 {
            let items: Vec<u32> = (0..n).collect();
            let mut pushed = Few::default();
            for &i in &items {
                pushed.push(i);
            }
            let collected: Few<u32> = items.iter().copied().collect();
            let converted = Few::from(items.clone());
            for few in [&pushed, &collected, &converted] {
                assert_eq!(&**few, &items[..]);
                assert!(matches!(few, Few::Many(_)) == !(1..=4).contains(&n));
            }
            assert!(pushed == collected && collected == converted);
        }
    }
}
