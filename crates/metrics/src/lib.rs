//! Caption evaluation identical to the COCO caption evaluation code (pycocoevalcap), in pure Rust.
