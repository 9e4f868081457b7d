//! Step two of the pipeline: decode images and turn them into features with a frozen ImageNet CNN.
