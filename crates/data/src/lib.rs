//! Step one of the pipeline: caption datasets, text normalisation, the vocabulary and batching.
