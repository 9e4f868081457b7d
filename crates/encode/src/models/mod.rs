//! Pretrained CNNs, one file per architecture, each a plain candle implementation that loads the
//! original weights under their original names.

pub mod densenet201;
pub mod efficientnet_lite0;
pub mod inception_v3;
mod layers;
pub mod resnet50;
pub mod vgg16;
