//! Pretrained CNNs, one file per architecture, each a plain candle implementation that loads the
//! original weights under their original names.

pub mod efficientnet_lite0;
