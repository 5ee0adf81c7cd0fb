//! When a hash table that grew large and then lost most of its entries gives its room back.
//!
//! A `HashMap` never shrinks by itself, and its `capacity()` cannot tell when it should:
//! removals leave tombstones that lower what it reports, so a rule on `capacity()` depends on
//! where the hashes fell. [`Room`] keeps the peak entry count instead. It does not own the
//! tables: a caller shrinks its own (often several kept in step) when told to.

/// The most entries a table held since it last shrank. Housekeeping, not part of the value
/// of what holds it: two compare equal whatever they hold.
#[derive(Clone, Copy, Debug, Default)]
pub struct Room {
    peak: usize,
}

impl Room {
    /// Notes the table's entry count after an insertion.
    pub fn grew(&mut self, len: usize) {
        self.peak = self.peak.max(len);
    }

    /// After a removal that left `len` entries: whether to shrink the table now, that is when
    /// half of the peak went (shrunk then, the table's room stays under four times what is
    /// left). Counts from `len` again when it says so.
    pub fn shrink_now(&mut self, len: usize) -> bool {
        let now = len.max(8) * 2 < self.peak;
        if now {
            self.peak = len;
        }
        now
    }
}

impl PartialEq for Room {
    fn eq(&self, _: &Room) -> bool {
        true
    }
}

impl Eq for Room {}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;

    #[test]
    fn a_drained_table_keeps_under_four_times_its_entries() {
        for seed in 0..20u64 {
            let mut m: HashMap<u64, u64> = HashMap::new();
            let mut room = Room::default();
            for i in 0..300 {
                m.insert(i * 7919 + seed, i);
                room.grew(m.len());
            }
            for i in 20..300 {
                m.remove(&(i * 7919 + seed));
                if room.shrink_now(m.len()) {
                    m.shrink_to_fit();
                }
            }
            assert_eq!(m.len(), 20);
            assert!(m.capacity() < 4 * 20, "capacity {}", m.capacity());
        }
    }
}
