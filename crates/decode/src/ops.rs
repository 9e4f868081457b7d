//! Candle custom ops (see crate docs).
