//! Empty: the comparison is `cargo bench` (benches/hot.rs).
